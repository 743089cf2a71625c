//! # paxos-node
//!
//! A replicated service composed from paxos-core and chosen components.
//!
//! Not implemented yet: this crate is filled by issue #6. It exports nothing so that nothing can
//! mistake it for a working component.
