//! # paxos-core: Paxos for System Builders as a sans-IO state machine
//!
//! This crate is the ordering protocol of Kirsch & Amir's *Paxos for System Builders* (PSB) as a
//! deterministic state machine: no sockets, threads, clocks or randomness. Drivers (the simulator,
//! the node) feed it inputs with `handle_*` calls and drain its effects with `poll_*` calls; time
//! comes in as an argument. It also defines the types and traits the other crates implement:
//! messages and their codec, durable state, the [`StateMachine`] the application runs and the
//! [`LeaderElection`] seam.
//!
//! See `docs/architecture.md` for the call order and the deviations from the paper.

pub mod codec;
pub mod config;
pub mod durable;
pub mod election;
pub mod message;
pub mod psb;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use codec::{decode, decode_envelope, encode, encode_envelope, CodecError, WIRE_VERSION};
pub use config::{Config, ConfigError, Durability, SessionRules, LOG_ENTRY_OVERHEAD};
pub use durable::{BatchId, DurableState, PersistBatch, ViewRecord};
pub use election::{ElectionAction, ElectionContext, LeaderElection, ServerState};
pub use message::{
    AcceptedProposal, ClientRecord, ClientReply, ClientUpdate, DataItem, Envelope, Message,
    OrderedUpdate, PrepareOkPart, ProposalItem, ReplyOutcome, SeqRange, Snapshot,
};
pub use snapshot::{Digest, SnapshotJob, SnapshotParts, SnapshotSource};
pub use state_machine::{NullStateMachine, SnapshotError, StateMachine};
pub use types::{
    ClientId, Destination, NodeId, Seq, Time, Timestamp, UpdateId, View, MAX_WIRE_INDEX,
};
pub mod replica;
pub use replica::{ClientUpdateError, Executed, Metrics, Replica, Status, Suspicion};
pub use replica::{CLOCK_CLIENT, NOOP_CLIENT, SESSION_ID_BASE};
mod fxmap;
mod history;
pub use psb::{PsbConfig, PsbViewChange};
#[cfg(test)]
mod tests;
