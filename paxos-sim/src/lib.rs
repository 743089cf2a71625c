//! # paxos-sim
//!
//! Deterministic simulation of paxos-core clusters.
//!
//! Not implemented yet: this crate is filled by issue #2. It exports nothing so that nothing can
//! mistake it for a working component.
