//! The fuzz driver: runs a [`Case`] against one replica, plays storage (in-order batches, a crash
//! keeps every reported batch and any prefix of the rest), and checks the replica's outputs after
//! every step (see [`Kind`] for the properties).

use super::checks::{Checker, Kind, Stats, Violation};
use super::ledger::Ledger;
use super::resolve::Ctx;
use super::steps::{Adv, Case, Dur, Setup, Step, Who, M, S, V};
use paxos_core::{
    BatchId, Config, Durability, DurableState, Message, NodeId, PersistBatch, PsbConfig,
    PsbViewChange, Replica, Time,
};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

type R = Replica<Ledger, PsbViewChange>;

/// A change to the configuration on top of a setup (planted bugs, for instance).
pub(crate) type Tweak = fn(&mut Config);

/// The replica's configuration for a setup.
pub(crate) fn config(s: &Setup, tweak: Tweak) -> Config {
    let n = usize::from(s.servers);
    let mut c = Config::new(NodeId(u32::from(s.me)), n);
    c.durability = match s.durability {
        Dur::DSync => Durability::Sync,
        Dur::DAsync => Durability::Async,
        Dur::DNone => Durability::None,
    };
    c.aggregation = s.aggregation;
    c.leader_accepts_separately = s.separately;
    c.max_message_bytes = 1024;
    c.record_executions = true;
    c.snapshot_interval = s.snapshot_every.map(u64::from);
    c.history_retention = 2;
    if s.small {
        c.window = 4;
        c.accept_window = 8;
        c.recon_chunk = 3;
        c.max_queue = 4;
    }
    tweak(&mut c);
    c
}

fn election(s: &Setup) -> PsbViewChange {
    PsbViewChange::new(
        NodeId(u32::from(s.me)),
        usize::from(s.servers),
        PsbConfig {
            progress_timeout: Duration::from_millis(40),
            max_progress_timeout: Duration::from_millis(400),
            resend_interval: Duration::from_millis(10),
        },
    )
}

/// One replica with its storage and the checker watching it.
pub(crate) struct Harness {
    setup: Setup,
    tweak: Tweak,
    r: R,
    now: Time,
    /// Every reported batch, and the crash survivors: what is on disk for sure.
    durable: DurableState,
    /// Handed out this incarnation and not yet reported, in order.
    unreported: Vec<PersistBatch>,
    reported: u64,
    check: Checker,
}

impl Harness {
    /// A fresh replica.
    pub(crate) fn new(setup: Setup, tweak: Tweak) -> Harness {
        let durable = DurableState {
            incarnation: 1,
            ..DurableState::default()
        };
        let r = R::new(
            config(&setup, tweak),
            Ledger::default(),
            election(&setup),
            durable.clone(),
            Time::ZERO,
        )
        .expect("valid configuration");
        let check = Checker::new(&setup, &durable, &r.status());
        Harness {
            setup,
            tweak,
            r,
            now: Time::ZERO,
            durable,
            unreported: Vec::new(),
            reported: 0,
            check,
        }
    }

    /// The replica (for regression tests).
    pub(crate) fn replica(&self) -> &R {
        &self.r
    }

    /// What is durable for sure.
    pub(crate) fn durable(&self) -> &DurableState {
        &self.durable
    }

    /// What the checker counted.
    pub(crate) fn stats(&self) -> &Stats {
        &self.check.stats
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            n: usize::from(self.setup.servers),
            me: self.r.id(),
            status: self.r.status(),
        }
    }

    /// Runs one step and checks everything observable afterwards.
    pub(crate) fn step(&mut self, step: &Step) -> Result<(), (Kind, String)> {
        match step {
            Step::Msg(who, m) => self.message(*who, m)?,
            Step::Client(u) => {
                let u = self.ctx().update(*u, self.r.id());
                let _ = self.r.handle_client_update(self.now, u);
            }
            Step::Tick(adv) => {
                self.now = match *adv {
                    Adv::Nanos(k) => Time(self.now.0.saturating_add(u64::from(k))),
                    Adv::Millis(k) => self.now + Duration::from_millis(u64::from(k)),
                    Adv::Secs(k) => self.now + Duration::from_secs(u64::from(k)),
                    Adv::FarFuture => self.now.max(Time(u64::MAX - 10_000_000_000)),
                };
                self.r.handle_tick(self.now);
            }
            Step::PollPersist => while self.persist_one()? {},
            Step::PollPersistOne => {
                self.persist_one()?;
            }
            Step::Persisted(k) => self.report(Some(*k)),
            Step::PollMessages => while self.message_one()? {},
            Step::PollOneMessage => {
                self.message_one()?;
            }
            Step::PollReplies => while self.r.poll_client_reply().is_some() {},
            Step::PollExecuted => {
                while let Some(e) = self.r.poll_executed() {
                    self.check.executed(&e)?;
                }
            }
            Step::Crash(k) => self.crash(*k),
            Step::TakeSnapshot => self.r.take_snapshot(),
            Step::Elect(v) => self.elect(*v)?,
            Step::Round => self.round()?,
        }
        self.check.status(&self.r.status())
    }

    fn message(&mut self, who: Who, m: &M) -> Result<(), (Kind, String)> {
        let ctx = self.ctx();
        let (from, msg) = ctx.message(who, m);
        match &msg {
            Message::PrepareOk { view, .. } => self.check.prepare_ok_in(&ctx, from, *view),
            Message::Prepare { view, local_aru } if ctx.leader(*view) == from => {
                self.check.prepare_in(*view, *local_aru);
            }
            _ => {}
        }
        let snap = match &msg {
            Message::SnapshotChunk {
                digest,
                total_len,
                offset: 0,
                data,
                ..
            } if data.len() as u64 == *total_len => {
                paxos_core::Snapshot::from_image(data.clone(), Some(*digest)).ok()
            }
            _ => None,
        };
        let installed = self.r.metrics().snapshots_installed;
        self.r.handle_message(self.now, from, msg);
        if let Some(s) = snap {
            if self.r.metrics().snapshots_installed > installed {
                self.check.snapshot_installed(&s);
            }
        }
        Ok(())
    }

    fn persist_one(&mut self) -> Result<bool, (Kind, String)> {
        let Some(b) = self.r.poll_persist() else {
            return Ok(false);
        };
        self.check.handed_out(&b, &self.r.status())?;
        self.unreported.push(b);
        Ok(true)
    }

    /// Reports the `k`-th unreported batch durable (`None`: the last one).
    fn report(&mut self, k: Option<u8>) {
        if self.unreported.is_empty() {
            if self.reported > 0 && k.is_some() {
                // A repeated report: allowed, and must change nothing.
                self.r.handle_persisted(self.now, BatchId(self.reported));
            }
            return;
        }
        let i = k.map_or(self.unreported.len() - 1, |k| {
            usize::from(k) % self.unreported.len()
        });
        let done: Vec<PersistBatch> = self.unreported.drain(..=i).collect();
        for b in &done {
            self.fold(b);
        }
        self.reported = done.last().expect("one at least").id.0;
        self.r.handle_persisted(self.now, BatchId(self.reported));
    }

    fn fold(&mut self, b: &PersistBatch) {
        self.durable.apply(b);
        self.check.durable(b);
    }

    fn message_one(&mut self) -> Result<bool, (Kind, String)> {
        let Some((to, m)) = self.r.poll_message() else {
            return Ok(false);
        };
        self.check.sent(&to, &m, &self.durable)?;
        Ok(true)
    }

    fn crash(&mut self, k: u8) {
        if self.setup.durability == Dur::DNone {
            return; // a server without storage must not rejoin under its old identity
        }
        let keep = usize::from(k) % (self.unreported.len() + 1);
        let survivors: Vec<PersistBatch> = self.unreported.drain(..keep).collect();
        for b in &survivors {
            self.fold(b);
        }
        self.unreported.clear();
        self.reported = 0;
        self.durable.incarnation += 1;
        self.r = R::new(
            config(&self.setup, self.tweak),
            Ledger::default(),
            election(&self.setup),
            self.durable.clone(),
            self.now,
        )
        .expect("valid configuration");
        self.check.restarted(&self.durable, &self.r.status());
    }

    fn elect(&mut self, v: V) -> Result<(), (Kind, String)> {
        let ctx = self.ctx();
        let view = ctx.view(v);
        if ctx.leader(view) == ctx.me {
            // ViewChanges from a majority with this replica, a round (its Prepare leaves), then
            // their PrepareOks.
            let voters = self.setup.servers / 2;
            for k in 0..voters {
                let (from, m) = ctx.message(Who::Peer(k), &M::ViewChange(v));
                self.r.handle_message(self.now, from, m);
            }
            self.round()?;
            let ctx = self.ctx();
            for k in 0..voters {
                let from = ctx.peer(k);
                self.check.prepare_ok_in(&ctx, from, view);
                let m = Message::PrepareOk {
                    view,
                    local_aru: ctx.seq(S::AruPlus(0)),
                    data_list: vec![],
                    part: paxos_core::PrepareOkPart::WHOLE,
                };
                self.r.handle_message(self.now, from, m);
            }
        } else {
            let (from, m) = ctx.message(Who::ViewLeader, &M::VcProof(v));
            self.r.handle_message(self.now, from, m);
        }
        self.round()
    }

    /// What the node's driver does after a round of inputs.
    fn round(&mut self) -> Result<(), (Kind, String)> {
        while self.persist_one()? {}
        self.report(None);
        while self.message_one()? {}
        while self.r.poll_client_reply().is_some() {}
        while let Some(e) = self.r.poll_executed() {
            self.check.executed(&e)?;
        }
        Ok(())
    }
}

thread_local! {
    /// Set while [`run_with`] runs on this thread: panics are recorded, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Where the last quiet panic happened.
    static PANIC_AT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Installs (once per process) a panic hook that records the location of a panic inside
/// [`run_with`] instead of printing it, so shrinking does not print thousands of backtraces.
fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs a whole case; a panic in the core (or in `DurableState::apply`'s assertions) is a
/// [`Kind::Panic`] violation whose detail names the panic's location.
pub(crate) fn run(case: &Case) -> Result<Stats, Violation> {
    run_with(case, |_| {})
}

/// [`run`] with a configuration tweak.
pub(crate) fn run_with(case: &Case, tweak: Tweak) -> Result<Stats, Violation> {
    quiet_panics();
    let mut at = 0;
    QUIET.with(|q| q.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut h = Harness::new(case.setup, tweak);
        for (i, s) in case.steps.iter().enumerate() {
            at = i;
            h.step(s)?;
        }
        Ok(h.stats().clone())
    }));
    QUIET.with(|q| q.set(false));
    match outcome {
        Ok(Ok(stats)) => Ok(stats),
        Ok(Err((kind, detail))) => Err(Violation {
            kind,
            step: at,
            detail,
        }),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let location = PANIC_AT.with(|p| p.borrow().clone());
            Err(Violation {
                kind: Kind::Panic,
                step: at,
                detail: format!("{msg} (at {location})"),
            })
        }
    }
}
