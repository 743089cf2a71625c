//! The fuzzer's input language: symbolic, well-typed steps for one replica, and their proptest
//! strategies.
//!
//! Views, slots and senders are symbolic (`Installed`, `AruPlus(2)`, `ViewLeader`) and resolved
//! against the replica's status when the step runs, so a generated sequence keeps hitting the
//! replica's current view and window however earlier steps moved it; small absolute values (so
//! that collisions happen) and huge ones are mixed in. Every type's `Debug` output is a Rust
//! expression once `[` becomes `vec![` ([`Case`]'s `Debug` does that), so a shrunk failure
//! prints as a case that can be pasted into a regression test.

// Variant names carry their enum's initial (`VSmall`, `SSmall`, `SrvMe`) so that every name is
// unique under the prelude's glob imports and a printed case pastes as is.
#![allow(clippy::enum_variant_names)]

use proptest::collection::vec;
use proptest::prelude::*;
use std::fmt;

/// A view, resolved at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum V {
    /// An absolute small view.
    VSmall(u8),
    /// `u64::MAX - k`.
    VHuge(u8),
    /// The replica's last installed view.
    Installed,
    /// The replica's last attempted view.
    Attempted,
    /// Last installed plus `k`.
    InstalledPlus(u8),
    /// The `k`-th view above the installed one that this replica leads.
    NextMine(u8),
    /// A view above the installed one that another server leads.
    NextOther(u8),
}

/// A slot, resolved at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum S {
    /// An absolute small slot (0 is invalid on the wire).
    SSmall(u8),
    /// The replica's aru plus `k`.
    AruPlus(u8),
    /// The replica's aru minus `k` (saturating).
    AruMinus(u8),
    /// `u64::MAX - k`.
    SHuge(u8),
}

/// A sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    /// The `k`-th other server (modulo N − 1).
    Peer(u8),
    /// The leader of the view the message names (`Peer(0)` for view-less messages).
    ViewLeader,
    /// The replica itself (invalid: the core must drop it).
    Me,
    /// Id `N + k` (invalid).
    OutOfRange(u8),
}

/// The local server an update names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Srv {
    /// The replica under test.
    SrvMe,
    /// The message's sender (the replica for client steps).
    SrvSender,
    /// The `k`-th other server.
    SrvOther(u8),
    /// A non-member.
    SrvOutOfRange,
}

/// A client update: client 255 is the reserved no-op client; payload is `payload` bytes of value
/// `payload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct U {
    /// Client id (255: `NOOP_CLIENT`).
    pub(crate) client: u8,
    /// Its local server.
    pub(crate) server: Srv,
    /// Timestamp.
    pub(crate) ts: u8,
    /// Payload length and byte.
    pub(crate) payload: u8,
}

/// A PrepareOk data-list entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum D {
    /// An accepted proposal.
    DProposal(S, V, U),
    /// An ordered update.
    DOrdered(S, U),
}

/// A snapshot's application state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum App {
    /// A well-formed ledger snapshot with this count and hash seed.
    AppValid(u8, u8),
    /// `len` pseudo-random bytes from `seed` (the ledger refuses them).
    AppGarbage(u8, u8),
}

/// A message from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum M {
    /// A forwarded client update.
    Fwd(U),
    /// Prepare.
    Prepare { view: V, aru: S },
    /// PrepareOk.
    PrepareOk { view: V, aru: S, data: Vec<D> },
    /// Proposal.
    Proposal { view: V, items: Vec<(S, U)> },
    /// Accept, ranges as (start, end), possibly inverted or huge.
    Accept { view: V, ranges: Vec<(S, S)> },
    /// Alive.
    Alive { aru: S, view: V },
    /// ReconRequest.
    ReconRequest { from: S, to: S },
    /// ReconReply.
    ReconReply {
        updates: Vec<(S, U)>,
        complete: bool,
    },
    /// SnapshotTransfer, clients as (client, last executed timestamp).
    SnapshotTransfer {
        seq: S,
        app: App,
        clients: Vec<(u8, u8)>,
    },
    /// A PSB ViewChange election payload.
    ViewChange(V),
    /// A PSB VcProof election payload.
    VcProof(V),
    /// Election payload of `len` garbage bytes from `seed`.
    ElectionGarbage(u8, u8),
}

/// How far a tick moves the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Adv {
    /// Nanoseconds.
    Nanos(u16),
    /// Milliseconds.
    Millis(u16),
    /// Seconds.
    Secs(u8),
    /// To a few seconds before `u64::MAX` nanoseconds.
    FarFuture,
}

/// One step of a driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// `handle_message`.
    Msg(Who, M),
    /// `handle_client_update`.
    Client(U),
    /// `handle_tick` after moving the clock.
    Tick(Adv),
    /// Drain `poll_persist` (hand every batch to "storage").
    PollPersist,
    /// Hand out one batch.
    PollPersistOne,
    /// `handle_persisted` for the `k`-th handed-out batch not yet reported (or the last reported).
    Persisted(u8),
    /// Drain `poll_message`.
    PollMessages,
    /// Take one message.
    PollOneMessage,
    /// Drain `poll_client_reply`.
    PollReplies,
    /// Drain `poll_executed`.
    PollExecuted,
    /// Crash and restart from durable state; the first `k` (mod count + 1) handed-out but
    /// unreported batches made it to disk too.
    Crash(u8),
    /// `take_snapshot`.
    TakeSnapshot,
    /// Drive the replica into the view: ViewChange + PrepareOk majority if it leads it, a VcProof
    /// from its leader otherwise (with a full round between).
    Elect(V),
    /// What the node does after a batch of inputs: persist all, report all, send all.
    Round,
}

/// Which [`paxos_core::Durability`] to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dur {
    /// `Durability::Sync`.
    DSync,
    /// `Durability::Async`.
    DAsync,
    /// `Durability::None` (no crash steps: such a server must not rejoin).
    DNone,
}

/// The replica's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Setup {
    /// Cluster size (1..=5).
    pub(crate) servers: u8,
    /// The replica's id (mod `servers`).
    pub(crate) me: u8,
    /// Durability mode.
    pub(crate) durability: Dur,
    /// `Config::aggregation`.
    pub(crate) aggregation: bool,
    /// `Config::leader_accepts_separately`.
    pub(crate) separately: bool,
    /// Window 4, accept window 8, recon chunk 3, queue 4 (instead of the defaults).
    pub(crate) small: bool,
    /// `snapshot_interval` (None: never).
    pub(crate) snapshot_every: Option<u8>,
}

/// A fuzz case: a setup and the steps to run.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Case {
    /// Configuration.
    pub(crate) setup: Setup,
    /// Steps.
    pub(crate) steps: Vec<Step>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Derived Debug with `vec!` for every list: valid Rust with `use common::steps::*`.
        let steps = format!("{:?}", self.steps).replace('[', "vec![");
        write!(f, "Case {{ setup: {:?}, steps: {steps} }}", self.setup)
    }
}

/// Whether views and snapshot slots near `u64::MAX` are generated: on unless
/// `PAXOS_FUZZ_HUGE=0`. The core drops anything above `MAX_WIRE_INDEX` where it comes in; these
/// inputs found overflows before (findings F2 and F3 in docs/simulator.md).
pub(crate) fn huge() -> u32 {
    u32::from(std::env::var("PAXOS_FUZZ_HUGE").map_or(true, |v| v != "0"))
}

fn small_view() -> impl Strategy<Value = V> {
    prop_oneof![
        6 => Just(V::Installed),
        2 => Just(V::Attempted),
        3 => (0u8..4).prop_map(V::InstalledPlus),
        3 => (0u8..3).prop_map(V::NextMine),
        3 => (0u8..3).prop_map(V::NextOther),
        2 => (0u8..10).prop_map(V::VSmall),
        huge() => (0u8..3).prop_map(V::VHuge),
    ]
}

fn seq() -> impl Strategy<Value = S> {
    prop_oneof![
        8 => (0u8..6).prop_map(S::AruPlus),
        2 => (0u8..3).prop_map(S::AruMinus),
        3 => (0u8..12).prop_map(S::SSmall),
        1 => (0u8..3).prop_map(S::SHuge),
    ]
}

/// A snapshot's slot: huge only with [`huge`].
fn snapshot_seq() -> impl Strategy<Value = S> {
    prop_oneof![
        8 => (0u8..6).prop_map(S::AruPlus),
        2 => (0u8..3).prop_map(S::AruMinus),
        3 => (0u8..12).prop_map(S::SSmall),
        huge() => (0u8..3).prop_map(S::SHuge),
    ]
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        10 => Just(Who::ViewLeader),
        8 => (0u8..4).prop_map(Who::Peer),
        1 => Just(Who::Me),
        1 => (0u8..3).prop_map(Who::OutOfRange),
    ]
}

fn srv() -> impl Strategy<Value = Srv> {
    prop_oneof![
        6 => Just(Srv::SrvSender),
        3 => Just(Srv::SrvMe),
        2 => (0u8..4).prop_map(Srv::SrvOther),
        1 => Just(Srv::SrvOutOfRange),
    ]
}

fn update() -> impl Strategy<Value = U> {
    let client = prop_oneof![12 => 0u8..4, 1 => Just(255u8)];
    let payload = prop_oneof![8 => 0u8..4, 1 => any::<u8>()];
    (client, srv(), 0u8..6, payload).prop_map(|(client, server, ts, payload)| U {
        client,
        server,
        ts,
        payload,
    })
}

fn data_item() -> impl Strategy<Value = D> {
    prop_oneof![
        3 => (seq(), small_view(), update()).prop_map(|(s, v, u)| D::DProposal(s, v, u)),
        1 => (seq(), update()).prop_map(|(s, u)| D::DOrdered(s, u)),
    ]
}

fn message() -> impl Strategy<Value = M> {
    prop_oneof![
        3 => update().prop_map(M::Fwd),
        3 => (small_view(), seq()).prop_map(|(view, aru)| M::Prepare { view, aru }),
        5 => (small_view(), seq(), vec(data_item(), 0..4))
            .prop_map(|(view, aru, data)| M::PrepareOk { view, aru, data }),
        10 => (small_view(), vec((seq(), update()), 0..4))
            .prop_map(|(view, items)| M::Proposal { view, items }),
        6 => (small_view(), vec((seq(), seq()), 0..3))
            .prop_map(|(view, ranges)| M::Accept { view, ranges }),
        2 => (seq(), small_view()).prop_map(|(aru, view)| M::Alive { aru, view }),
        2 => (seq(), seq()).prop_map(|(from, to)| M::ReconRequest { from, to }),
        3 => (vec((seq(), update()), 0..4), any::<bool>())
            .prop_map(|(updates, complete)| M::ReconReply { updates, complete }),
        2 => (
            snapshot_seq(),
            prop_oneof![
                3 => (any::<u8>(), any::<u8>()).prop_map(|(c, h)| App::AppValid(c, h)),
                1 => (0u8..24, any::<u8>()).prop_map(|(l, s)| App::AppGarbage(l, s)),
            ],
            vec((0u8..4, 0u8..6), 0..3),
        )
            .prop_map(|(seq, app, clients)| M::SnapshotTransfer { seq, app, clients }),
        4 => small_view().prop_map(M::ViewChange),
        4 => small_view().prop_map(M::VcProof),
        1 => (0u8..12, any::<u8>()).prop_map(|(l, s)| M::ElectionGarbage(l, s)),
    ]
}

fn advance() -> impl Strategy<Value = Adv> {
    prop_oneof![
        2 => any::<u16>().prop_map(Adv::Nanos),
        8 => (0u16..300).prop_map(Adv::Millis),
        2 => (0u8..20).prop_map(Adv::Secs),
        1 => Just(Adv::FarFuture),
    ]
}

/// A slot just above the aru: where proposals and accepts make progress.
fn next_seq() -> impl Strategy<Value = S> {
    (1u8..5).prop_map(S::AruPlus)
}

/// Messages that move the protocol forward from wherever the replica is: a proposal of the
/// installed view from its leader, accepts of it from peers, a Prepare for the attempted view from
/// its leader, PrepareOks for it.
fn focused() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => vec((next_seq(), update()), 1..4).prop_map(|items| Step::Msg(
            Who::ViewLeader,
            M::Proposal { view: V::Installed, items }
        )),
        6 => ((0u8..4), vec((next_seq(), next_seq()), 1..3)).prop_map(|(k, ranges)| Step::Msg(
            Who::Peer(k),
            M::Accept { view: V::Installed, ranges }
        )),
        3 => (0u8..2).prop_map(|k| Step::Msg(
            Who::ViewLeader,
            M::Prepare { view: V::Attempted, aru: S::AruPlus(k) }
        )),
        3 => ((0u8..4), (0u8..3), vec(data_item(), 0..3)).prop_map(|(k, a, data)| Step::Msg(
            Who::Peer(k),
            M::PrepareOk { view: V::Attempted, aru: S::AruPlus(a), data }
        )),
    ]
}

/// One step, weighted towards messages and full rounds.
pub(crate) fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        30 => (who(), message()).prop_map(|(w, m)| Step::Msg(w, m)),
        22 => focused(),
        8 => update().prop_map(Step::Client),
        8 => advance().prop_map(Step::Tick),
        3 => Just(Step::PollPersist),
        2 => Just(Step::PollPersistOne),
        4 => (0u8..4).prop_map(Step::Persisted),
        3 => Just(Step::PollMessages),
        2 => Just(Step::PollOneMessage),
        1 => Just(Step::PollReplies),
        2 => Just(Step::PollExecuted),
        2 => any::<u8>().prop_map(Step::Crash),
        1 => Just(Step::TakeSnapshot),
        4 => prop_oneof![
            3 => (0u8..3).prop_map(V::NextMine),
            2 => (0u8..3).prop_map(V::NextOther),
            1 => small_view(),
        ]
        .prop_map(Step::Elect),
        10 => Just(Step::Round),
    ]
}

/// A configuration, mostly `Sync` with 3 or 5 servers.
pub(crate) fn setup() -> impl Strategy<Value = Setup> {
    let servers =
        prop_oneof![1 => Just(1u8), 1 => Just(2u8), 6 => Just(3u8), 1 => Just(4u8), 4 => Just(5u8)];
    let durability =
        prop_oneof![6 => Just(Dur::DSync), 1 => Just(Dur::DAsync), 1 => Just(Dur::DNone)];
    let snapshot_every = prop_oneof![2 => Just(None), 2 => (1u8..6).prop_map(Some)];
    (
        servers,
        0u8..5,
        durability,
        any::<bool>(),
        prop_oneof![3 => Just(false), 1 => Just(true)],
        prop_oneof![1 => Just(false), 2 => Just(true)],
        snapshot_every,
    )
        .prop_map(
            |(servers, me, durability, aggregation, separately, small, snapshot_every)| Setup {
                servers,
                me: me % servers,
                durability,
                aggregation,
                separately,
                small,
                snapshot_every,
            },
        )
}

/// A whole case of up to `max_steps` steps.
pub(crate) fn case(max_steps: usize) -> impl Strategy<Value = Case> {
    (setup(), vec(step(), 1..max_steps)).prop_map(|(setup, steps)| Case { setup, steps })
}

/// Every name a printed case uses: `use common::steps::prelude::*` and paste.
#[allow(unused_imports)]
pub(crate) mod prelude {
    pub(crate) use super::{
        Adv::*, App::*, Case, Dur::*, Setup, Srv::*, Step::*, Who::*, D::*, M::*, S::*, U, V::*,
    };
}
