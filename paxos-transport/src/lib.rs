//! # paxos-transport
//!
//! Message transports for paxos-core: in-memory, UDP multicast, QUIC.
//!
//! Not implemented yet: this crate is filled by issue #4. It exports nothing so that nothing can
//! mistake it for a working component.
