//! # paxos-storage
//!
//! Durable state backends for paxos-core: memory, file WAL, RocksDB.
//!
//! Not implemented yet: this crate is filled by issue #3. It exports nothing so that nothing can
//! mistake it for a working component.
