//! # paxos-election
//!
//! Swappable leader-election strategies for paxos-core.
//!
//! Not implemented yet: this crate is filled by issue #5. It exports nothing so that nothing can
//! mistake it for a working component.
