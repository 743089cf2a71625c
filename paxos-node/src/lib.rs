//! # paxos-node
//!
//! Composes paxos-core with chosen election, storage and transport components into a running
//! replicated service (issue #6). Today it provides the replicated key-value state machine
//! ([`kv::KvStore`]); the server driver, client library and CLI follow.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod kv;
pub mod metrics;
pub mod node;
pub mod protocol;
