//! # paxos-model: exhaustive model checking of the real `paxos_core::Replica`
//!
//! A [stateright](https://docs.rs/stateright) [`Model`](stateright::Model) whose state is three
//! (or N) instances of the real sans-IO [`paxos_core::Replica`], each with the disk a driver would
//! give it, plus the network and a ghost record. Nothing of the protocol is re-implemented: every
//! transition is one call into the core, or one thing a driver does with the core's outputs
//! (issue #11, item 5).
//!
//! ## What is modelled
//! - **Servers**: `N` replicas with `Durability::Sync`, aggregation on, no compaction
//!   (`snapshot_interval: None`), `record_executions` on, optionally
//!   `leader_accepts_separately`, optionally a planted bug (feature `planted-bugs`).
//! - **Disk**: a drain writes the core's persist batches; they are *unsynced* until a `Persist`
//!   action syncs them all and calls `handle_persisted`. A crash loses unsynced batches.
//! - **Network**: a set of packets in flight (a broadcast is one packet per receiver); any packet
//!   may be delivered next (reordering). Loss needs no action: a packet may never be delivered,
//!   which no safety property can tell from a lost one. Duplication: up to `max_duplicates`
//!   deliveries in a run leave a copy in flight (`None`: every packet stays forever, the network is
//!   everything ever sent). Identical packets in flight are one packet. A delivery the receiver
//!   ignores (nothing changes, nothing is sent) is not explored as a transition.
//! - **Rounds** ([`model::Driver`]): for a *stepwise* server, delivering a packet (or a client
//!   update, an election decision, a tick, a sync report) is an *input* and `Drain` is a separate
//!   action, so it may handle any number of inputs before its driver drains it, as `paxos-node`'s
//!   driver does under load (where the mislabelled Accept of issue #11 lived), and its syncs
//!   complete whenever the checker says. A *synchronous* server drains and syncs after every input,
//!   within the same action (the simulator's driver with an instant disk): fewer states.
//! - **Elections**: the checker plays the strategy ([`election::CheckerElection`]): any server may
//!   be told to prepare a view it leads (up to `max_view`), and every server answers a higher
//!   Prepare, as the Prepare-based strategies do; with `nonleader_install` a non-leader may also be
//!   told to install a view (PSB's VcProof path). PSB's own timers and vote counting are not
//!   modelled: safety must not depend on who tries to lead.
//! - **Time**: a `Tick` moves a server's clock by [`model::TICK`] (1000 s), past every timer, and
//!   runs `handle_tick`. Replicas hash their times relative to their clock
//!   ([`paxos_core::Replica::fingerprint`]), so ticks do not make states distinct by themselves.
//! - **Clients**: each update of the configuration is submitted once to its local server, a
//!   client's next update only once the previous one was answered (optionally retried before).
//! - **Crashes**: at most `max_crashes` crash-restarts; the restarted replica is rebuilt with
//!   `Replica::new` from the durable state (incarnation + 1).
//!
//! ## Properties
//! `always`: **agreement** (no two executions, at any replica or incarnation, of different updates
//! at one slot), **chosen value unique** (ghost record of every Accept sent, and of a leader's
//! Proposal when it doubles as its accept: at most one value per slot is ever backed by a majority
//! of accepts for the proposal of one view, across all views; an Accept names (view, slot) and
//! stands for the value the view's leader proposed there), **one proposal per view and slot**,
//! **validity** (only submitted updates or no-ops are executed, applied or answered), **exactly
//! once** (no state machine applies an update twice). `sometimes`: **value chosen**, **leader
//! change** (a leader of a view above the start state's), **update executed**: the search is not
//! vacuous.
//!
//! ## Bounds
//! Views up to `max_view`, slots up to `max_slot` (states beyond are not explored), at most
//! `max_crashes` crashes, the configured updates, and optionally a scripted start
//! ([`model::Step`]): exploration begins from the state a fixed prefix of actions leads to.
//! [`scenarios`] has the configurations the tests and the example run.

pub mod check;
pub mod election;
pub mod model;
pub mod scenarios;
pub mod state;

pub use check::{check, format_trace, CheckOptions, CheckReport, Discovery};
pub use model::{Action, Driver, ModelConfig, PaxosModel, ScriptError, Step, UpdateSpec};
pub use state::{Ghost, ModelState, Node, Packet};
