//! The properties checked after every fuzz step, on what one replica hands out and sends.
//!
//! All of them are local: they hold whatever the peers send, because each one is about this
//! replica's own promises, accepts and executions. "Durable" means handed out and reported with
//! `handle_persisted` (or kept by a crash); the durability checks run with `Durability::Sync` only.

use super::resolve::Ctx;
use super::steps::{Dur, Setup};
use paxos_core::{
    ClientId, ClientUpdate, DataItem, Destination, DurableState, Executed, Message, NodeId,
    PersistBatch, Seq, ServerState, Snapshot, Status, Timestamp, View, ViewRecord, CLOCK_CLIENT,
    NOOP_CLIENT,
};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Which property a step broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// The core (or `DurableState::apply`) panicked.
    Panic,
    /// Batch ids are not 1, 2, 3 … within an incarnation.
    BatchIdGap,
    /// A batch's view record is below an earlier one (or below what is durable).
    ViewRecordRegressed,
    /// `status().last_installed` decreased within an incarnation.
    InstalledViewRegressed,
    /// `status().local_aru` decreased within an incarnation.
    AruRegressed,
    /// Two different updates accepted for one (view, slot).
    TwoValuesAccepted,
    /// A batch accepts a proposal of a view below one installed before the batch was built.
    AcceptedBelowPromise,
    /// An Accept(v, s) left without a durable accepted proposal (v, s).
    AcceptNotDurable,
    /// A Prepare, PrepareOk, Proposal or Accept of view v left before a promise of v was durable.
    PromiseNotDurable,
    /// Two Proposal messages name different updates for one (view, slot).
    ProposalConflict,
    /// A Proposal (v, s) left before the leader's own accepted (v, s) was durable (Sync, the
    /// proposal being the leader's accept).
    ProposalNotDurable,
    /// A Proposal of view v left without PrepareOks of v from a majority.
    ProposalWithoutPrepareQuorum,
    /// A PrepareOk(v)'s data list leaves out a slot above its floor that holds a proposal this
    /// replica accepted in a view below v (or names an older proposal than the one accepted).
    DataListIncomplete,
    /// Executed slots are not consecutive (snapshot installs aside).
    ExecutionGap,
    /// An update was applied though its client's table already covers its timestamp.
    DuplicateExecution,
    /// An update was skipped as a duplicate though its client's table does not cover it.
    SkippedExecution,
    /// A slot executed an update other than the one ordered there.
    ExecutedNotOrdered,
    /// Two different updates ordered for one slot within an incarnation.
    OrderedConflict,
}

/// A broken property with the step index and what was seen.
#[derive(Clone, Debug)]
pub(crate) struct Violation {
    /// The property.
    pub(crate) kind: Kind,
    /// Index of the step after which it was seen.
    pub(crate) step: usize,
    /// What was seen.
    pub(crate) detail: String,
}

impl Violation {
    /// What tells two failures apart when bucketing: the kind, and for a panic its location.
    pub(crate) fn bucket(&self) -> String {
        match self.kind {
            Kind::Panic => format!(
                "Panic {}",
                self.detail.rsplit("(at ").next().unwrap_or_default()
            ),
            k => format!("{k:?}"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at step {}: {}", self.kind, self.step, self.detail)
    }
}

/// Coverage counters: how often the interesting states were reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Steps that ended with the replica leader of a view.
    pub(crate) as_leader: u64,
    /// Steps that ended with the replica a non-leader in a view.
    pub(crate) as_non_leader: u64,
    /// Accept messages sent.
    pub(crate) accepts_sent: u64,
    /// Proposal messages sent.
    pub(crate) proposals_sent: u64,
    /// PrepareOk messages sent.
    pub(crate) prepare_oks_sent: u64,
    /// Slots executed (applied or skipped).
    pub(crate) executed: u64,
    /// Snapshots installed from "peers".
    pub(crate) snapshots_installed: u64,
    /// Restarts.
    pub(crate) restarts: u64,
    /// Steps after which `status().last_attempted` was lower than before (allowed: a VcProof for
    /// a view between the installed and the attempted one installs it, as in TR Fig 6).
    pub(crate) attempted_lowered: u64,
}

type Err = (Kind, String);

fn fail<T>(kind: Kind, detail: String) -> Result<T, Err> {
    Err((kind, detail))
}

/// The checker's memory of everything the replica did.
pub(crate) struct Checker {
    sync: bool,
    separately: bool,
    majority: usize,
    /// Across incarnations: (view, slot) → update, from durable batches.
    durable_accepted: BTreeMap<(View, Seq), ClientUpdate>,
    /// This incarnation: (view, slot) → update from every handed-out batch, plus the durable ones.
    accepted: BTreeMap<(View, Seq), ClientUpdate>,
    /// Across incarnations: every Proposal item sent.
    proposed: BTreeMap<(View, Seq), ClientUpdate>,
    /// PrepareOks this replica could have counted: view → sender bit set.
    prepare_oks: BTreeMap<View, u64>,
    /// Highest leader aru of a Prepare(view) fed from the view's leader.
    prepare_arus: BTreeMap<View, Seq>,
    last_batch: u64,
    last_record: ViewRecord,
    installed_at_last_poll: View,
    last_status: Option<(View, Seq, View)>,
    exec_floor: Seq,
    snapshot_jumps: VecDeque<Snapshot>,
    applied: BTreeMap<ClientId, Timestamp>,
    ordered: BTreeMap<Seq, ClientUpdate>,
    executed: BTreeMap<Seq, ClientUpdate>,
    /// Coverage.
    pub(crate) stats: Stats,
}

impl Checker {
    /// A checker for a fresh replica.
    pub(crate) fn new(setup: &Setup, durable: &DurableState, status: &Status) -> Checker {
        let mut c = Checker {
            sync: setup.durability == Dur::DSync,
            separately: setup.separately,
            majority: usize::from(setup.servers) / 2 + 1,
            durable_accepted: BTreeMap::new(),
            accepted: BTreeMap::new(),
            proposed: BTreeMap::new(),
            prepare_oks: BTreeMap::new(),
            prepare_arus: BTreeMap::new(),
            last_batch: 0,
            last_record: ViewRecord::default(),
            installed_at_last_poll: View(0),
            last_status: None,
            exec_floor: Seq(0),
            snapshot_jumps: VecDeque::new(),
            applied: BTreeMap::new(),
            ordered: BTreeMap::new(),
            executed: BTreeMap::new(),
            stats: Stats::default(),
        };
        c.restarted(durable, status);
        c.stats.restarts = 0;
        c
    }

    /// The replica was rebuilt from `durable`.
    pub(crate) fn restarted(&mut self, durable: &DurableState, status: &Status) {
        self.stats.restarts += 1;
        if !self.sync || self.majority == 1 {
            // Without synced storage a crash may lose promises and accepts (the contract of
            // `Durability::Async`), and a cluster of one needs no PrepareOk, so its promise need
            // not be durable before it proposes (to nobody): a restarted server may propose a
            // slot of a view again.
            self.proposed.clear();
        }
        self.accepted = self.durable_accepted.clone();
        self.last_batch = 0;
        self.last_record = durable.view;
        self.installed_at_last_poll = status.last_installed;
        self.last_status = None;
        self.exec_floor = durable.snapshot_seq();
        self.snapshot_jumps.clear();
        self.applied = durable
            .snapshot
            .iter()
            .flat_map(|s| s.parts().map(|p| p.clients).unwrap_or_default())
            .map(|c| (c.client, c.last_executed))
            .collect();
        self.ordered = durable
            .ordered
            .iter()
            .map(|(s, o)| (*s, o.update.clone()))
            .collect();
        self.executed.clear();
    }

    /// A PrepareOk for `view` from `from` is about to be handled: count it if the replica is
    /// preparing that view (the only case the core counts it in).
    pub(crate) fn prepare_ok_in(&mut self, ctx: &Ctx, from: NodeId, view: View) {
        let s = &ctx.status;
        if s.state == ServerState::LeaderElection
            && s.last_attempted == view
            && s.last_installed == view
            && ctx.leader(view) == ctx.me
            && from != ctx.me
            && from.index() < ctx.n
        {
            *self.prepare_oks.entry(view).or_default() |= 1u64 << from.index();
        }
    }

    /// A Prepare for `view` with the leader's aru is about to be handled.
    pub(crate) fn prepare_in(&mut self, view: View, aru: Seq) {
        let e = self.prepare_arus.entry(view).or_insert(aru);
        *e = (*e).max(aru);
    }

    /// A snapshot from a peer was installed: executions jump over it.
    pub(crate) fn snapshot_installed(&mut self, s: &Snapshot) {
        self.stats.snapshots_installed += 1;
        self.snapshot_jumps.push_back(s.clone());
    }

    /// A batch was handed out.
    pub(crate) fn handed_out(&mut self, b: &PersistBatch, status: &Status) -> Result<(), Err> {
        if b.id.0 != self.last_batch + 1 {
            return fail(
                Kind::BatchIdGap,
                format!("batch {} after {}", b.id.0, self.last_batch),
            );
        }
        self.last_batch = b.id.0;
        if let Some(v) = b.view {
            if v.last_attempted < self.last_record.last_attempted
                || v.last_installed < self.last_record.last_installed
            {
                return fail(
                    Kind::ViewRecordRegressed,
                    format!("batch {} has {v:?} after {:?}", b.id.0, self.last_record),
                );
            }
            self.last_record = v;
        }
        for a in &b.accepted {
            if a.view < self.installed_at_last_poll {
                return fail(
                    Kind::AcceptedBelowPromise,
                    format!(
                        "batch {} accepts ({}, {}) though {} was installed before it was built",
                        b.id.0, a.view, a.seq, self.installed_at_last_poll
                    ),
                );
            }
            match self.accepted.get(&(a.view, a.seq)) {
                Some(u) if *u != a.update => {
                    return fail(
                        Kind::TwoValuesAccepted,
                        format!(
                            "({}, {}): {:?} then {:?}",
                            a.view,
                            a.seq,
                            u.id(),
                            a.update.id()
                        ),
                    )
                }
                _ => {
                    self.accepted.insert((a.view, a.seq), a.update.clone());
                }
            }
        }
        for o in &b.ordered {
            if let Some(u) = self.ordered.get(&o.seq).filter(|u| **u != o.update) {
                return fail(
                    Kind::OrderedConflict,
                    format!("slot {}: {:?} then {:?}", o.seq, u.id(), o.update.id()),
                );
            }
            if let Some(u) = self.executed.get(&o.seq).filter(|u| **u != o.update) {
                return fail(
                    Kind::ExecutedNotOrdered,
                    format!(
                        "slot {} executed {:?}, ordered {:?}",
                        o.seq,
                        u.id(),
                        o.update.id()
                    ),
                );
            }
            self.ordered.insert(o.seq, o.update.clone());
        }
        self.installed_at_last_poll = status.last_installed;
        Ok(())
    }

    /// A batch is durable (reported, or kept by a crash).
    pub(crate) fn durable(&mut self, b: &PersistBatch) {
        for a in &b.accepted {
            self.durable_accepted
                .insert((a.view, a.seq), a.update.clone());
        }
    }

    /// A message left the replica; `durable` is what storage holds for sure.
    pub(crate) fn sent(
        &mut self,
        _to: &Destination,
        m: &Message,
        durable: &DurableState,
    ) -> Result<(), Err> {
        let promised = durable.view.last_installed;
        let promise = |v: View, what: &str| -> Result<(), Err> {
            if v > promised {
                fail(
                    Kind::PromiseNotDurable,
                    format!("{what}({v}) left while the durable promise is {promised}"),
                )
            } else {
                Ok(())
            }
        };
        match m {
            Message::Prepare { view, .. } if self.sync => promise(*view, "Prepare")?,
            Message::PrepareOk {
                view,
                local_aru,
                data_list,
                part,
            } => {
                self.stats.prepare_oks_sent += 1;
                if self.sync {
                    promise(*view, "PrepareOk")?;
                }
                self.data_list_complete(*view, *local_aru, data_list, *part)?;
            }
            Message::Accept { view, seqs } => {
                self.stats.accepts_sent += 1;
                if self.sync {
                    promise(*view, "Accept")?;
                    for r in seqs {
                        if r.end.0.saturating_sub(r.start.0) > 1 << 20 {
                            return fail(Kind::AcceptNotDurable, format!("Accept range {r:?}"));
                        }
                        for s in r.iter() {
                            if !self.durable_accepted.contains_key(&(*view, s)) {
                                return fail(
                                    Kind::AcceptNotDurable,
                                    format!(
                                        "Accept({view}) names {s}, not durably accepted in {view}"
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            Message::Proposal { view, items } => {
                self.stats.proposals_sent += 1;
                let oks = self.prepare_oks.get(view).map_or(0, |b| b.count_ones()) as usize;
                if oks + 1 < self.majority {
                    return fail(
                        Kind::ProposalWithoutPrepareQuorum,
                        format!("Proposal({view}) with PrepareOks from {oks} peers"),
                    );
                }
                if self.sync && !self.separately {
                    promise(*view, "Proposal")?;
                }
                for it in items {
                    match self.proposed.get(&(*view, it.seq)) {
                        Some(u) if *u != it.update => {
                            return fail(
                                Kind::ProposalConflict,
                                format!(
                                    "({view}, {}): {:?} then {:?}",
                                    it.seq,
                                    u.id(),
                                    it.update.id()
                                ),
                            )
                        }
                        _ => {
                            self.proposed.insert((*view, it.seq), it.update.clone());
                        }
                    }
                    if self.sync
                        && !self.separately
                        && self.durable_accepted.get(&(*view, it.seq)) != Some(&it.update)
                    {
                        return fail(
                            Kind::ProposalNotDurable,
                            format!(
                                "Proposal({view}) of slot {} before its accept is durable",
                                it.seq
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Every slot above the PrepareOk's floor that holds a proposal accepted in a view below `view`
    /// (made before the PrepareOk was: proposals of `view` itself may be accepted later in the
    /// same round) is in the data list, ordered or as a proposal at least as recent. The floor
    /// taken is the highest leader aru fed in a Prepare(view), so the check never asks for more
    /// than the core was asked for.
    fn data_list_complete(
        &self,
        view: View,
        aru: Seq,
        data: &[DataItem],
        part: paxos_core::PrepareOkPart,
    ) -> Result<(), Err> {
        let Some(leader_aru) = self.prepare_arus.get(&view) else {
            return Ok(());
        };
        // This part covers the slots above `part.after` through `part.through`.
        let floor = aru.max(*leader_aru).max(part.after);
        let through = part.through.unwrap_or(Seq(u64::MAX));
        let listed: BTreeMap<Seq, Option<View>> = data
            .iter()
            .map(|d| match d {
                DataItem::Proposal(p) => (p.seq, Some(p.view)),
                DataItem::Ordered(o) => (o.seq, None),
            })
            .collect();
        for (v, s) in self.accepted.keys() {
            if *s <= floor || *s > through || *v >= view {
                continue;
            }
            match listed.get(s) {
                Some(None) => {}
                Some(Some(pv)) if pv >= v => {}
                other => {
                    return fail(
                        Kind::DataListIncomplete,
                        format!(
                        "PrepareOk({view}) above {floor} lists {s} as {other:?}, accepted in {v}"
                    ),
                    )
                }
            }
        }
        Ok(())
    }

    /// The replica reported an execution.
    pub(crate) fn executed(&mut self, e: &Executed) -> Result<(), Err> {
        self.stats.executed += 1;
        if e.seq != self.exec_floor.next() {
            // Only a snapshot installed from a peer may skip slots: executions resume after it.
            while let Some(s) = self.snapshot_jumps.front() {
                if s.seq() >= e.seq {
                    break;
                }
                let s = self.snapshot_jumps.pop_front().expect("front");
                if s.seq() > self.exec_floor {
                    self.exec_floor = s.seq();
                    // An installed snapshot's table replaces the replica's (it is the whole
                    // exactly-once state at its slot, expired sessions left out).
                    self.applied = s
                        .parts()
                        .map(|p| p.clients)
                        .unwrap_or_default()
                        .iter()
                        .map(|c| (c.client, c.last_executed))
                        .collect();
                }
            }
            if e.seq != self.exec_floor.next() {
                return fail(
                    Kind::ExecutionGap,
                    format!("executed {} after {}", e.seq, self.exec_floor),
                );
            }
        }
        self.exec_floor = e.seq;
        if let Some(u) = self.ordered.get(&e.seq).filter(|u| **u != e.update) {
            return fail(
                Kind::ExecutedNotOrdered,
                format!(
                    "slot {} executed {:?}, ordered {:?}",
                    e.seq,
                    e.update.id(),
                    u.id()
                ),
            );
        }
        self.executed.insert(e.seq, e.update.clone());
        let c = e.update.client_id;
        // Timestamp 0 is a registration: never applied (with or without session rules).
        let covered = c == NOOP_CLIENT
            || c == CLOCK_CLIENT
            || e.update.timestamp == Timestamp(0)
            || self
                .applied
                .get(&c)
                .is_some_and(|ts| e.update.timestamp <= *ts);
        if e.applied && covered {
            return fail(
                Kind::DuplicateExecution,
                format!("slot {} applied {:?} again", e.seq, e.update.id()),
            );
        }
        if !e.applied && !covered {
            return fail(
                Kind::SkippedExecution,
                format!("slot {} skipped {:?}", e.seq, e.update.id()),
            );
        }
        if e.applied {
            self.applied.insert(c, e.update.timestamp);
        }
        Ok(())
    }

    /// After every step: the installed view and the aru never move back within an incarnation.
    pub(crate) fn status(&mut self, s: &Status) -> Result<(), Err> {
        match s.state {
            ServerState::RegLeader => self.stats.as_leader += 1,
            ServerState::RegNonLeader => self.stats.as_non_leader += 1,
            ServerState::LeaderElection => {}
        }
        if let Some((installed, aru, attempted)) = self.last_status {
            if s.last_attempted < attempted {
                self.stats.attempted_lowered += 1;
            }
            if s.last_installed < installed {
                return fail(
                    Kind::InstalledViewRegressed,
                    format!("last_installed {} after {installed}", s.last_installed),
                );
            }
            if s.local_aru < aru {
                return fail(
                    Kind::AruRegressed,
                    format!("aru {} after {aru}", s.local_aru),
                );
            }
        }
        self.last_status = Some((s.last_installed, s.local_aru, s.last_attempted));
        Ok(())
    }
}
