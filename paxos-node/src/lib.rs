//! # paxos-node
//!
//! Composes paxos-core with chosen election, storage and transport components into a running
//! replicated service: [`NodeBuilder`] assembles a server from parts, [`builder::launch`] from a
//! configuration file; [`kv::KvStore`] is the replicated key-value state machine, [`client`] its
//! client library, [`cluster`] runs local multi-process clusters for the demo, tests and benches.

pub mod builder;
pub mod checker;
pub mod client;
pub mod client_port;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod health;
pub mod kv;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod protocol;
mod status;
mod storage_thread;

pub use builder::{launch, NodeBuilder};
