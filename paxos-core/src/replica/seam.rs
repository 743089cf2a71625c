//! The election seam: what the strategy sees and how its actions reach the core [spec §15.1].

use super::*;

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    pub(super) fn ctx(&self) -> ElectionContext {
        ElectionContext {
            me: self.me,
            servers: self.n,
            state: self.role.state(),
            last_attempted: self.last_attempted,
            last_installed: self.last_installed,
            max_view_seen: self.max_view_seen,
            leader_announced_view: self.leader_announced_view,
            local_aru: self.local_aru,
            has_outstanding_work: !self.outbox.install_persisting()
                && !self.waits_on_own_storage()
                && (self.clients.has_work() || self.lag_waits_on_leader()),
            incarnation: self.incarnation,
        }
    }

    /// Whether a sync write of this server's has been outstanding for `Config::storage_stall`:
    /// nothing it waits for can progress before it returns, whoever leads.
    fn waits_on_own_storage(&self) -> bool {
        !self.config.storage_stall.is_zero()
            && self
                .outbox
                .storage_wait_since()
                .is_some_and(|t| self.now.saturating_since(t) >= self.config.storage_stall)
    }

    /// Whether slots this server saw ordered but has not executed are work the leader owes it.
    /// (No work at all is owed while this server's own disk writes an installed snapshot, see
    /// `Outbox::install_persisting`: its pending updates cannot even be forwarded until then. A
    /// restarted follower whose 1 GiB install write outlasted the progress timer was left alone
    /// in leader election.)
    /// Not while a state transfer brings them (DERIVED): the lag is then this server's own,
    /// served by a peer with its own timeouts, and suspecting the leader meanwhile left a
    /// restarted follower alone in leader election for good once a 1 GiB transfer outlasted
    /// the progress timer (the others, progressing, never join it).
    fn lag_waits_on_leader(&self) -> bool {
        self.max_seen_seq > self.local_aru
            && !self.transfer.receiving(self.now, self.config.recon_timeout)
    }

    pub(super) fn drain_election(&mut self) {
        loop {
            let mut progressed = false;
            while let Some((to, payload)) = self.election.poll_message() {
                self.send(to, Message::Election(payload));
                progressed = true;
            }
            if let Some(action) = self.election.poll_action() {
                progressed = true;
                let (ElectionAction::Suspect(v) | ElectionAction::Install(v)) = action;
                if v.0 > MAX_WIRE_INDEX {
                    // A strategy relaying a view a peer made up: refuse it, as the wire would.
                    self.metrics.dropped_invalid += 1;
                    continue;
                }
                match action {
                    ElectionAction::Suspect(v) if v <= self.last_installed => {
                        self.metrics.election_actions_ignored += 1;
                    }
                    ElectionAction::Suspect(v) => {
                        if self.role.state() != ServerState::LeaderElection {
                            self.note_suspicion(v);
                        }
                        self.shift_to_leader_election(v)
                    }
                    ElectionAction::Install(v) => self.install(v),
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Keeps what this server saw as it leaves the view it was regular in (`last_suspicion`).
    fn note_suspicion(&mut self, voted: View) {
        let (pending, queued) = self.clients.counts();
        self.last_suspicion = Some(Suspicion {
            at: self.now,
            suspected: self.last_installed,
            voted,
            was: self.role.state(),
            pending,
            oldest_pending_since: self.clients.oldest_pending_since(),
            queued,
            local_aru: self.local_aru,
            max_seen_seq: self.max_seen_seq,
            last_view_progress: self.last_view_progress,
            last_heard_from_leader: self.last_heard[self.installed_leader().index()],
            receiving_snapshot: self.transfer.receiving(self.now, self.config.recon_timeout),
            storage_wait_since: self.outbox.storage_wait_since(),
        });
    }

    pub(super) fn installed_leader(&self) -> NodeId {
        self.last_installed.leader(self.n)
    }

    pub(super) fn see_view(&mut self, v: View) {
        if v > self.max_view_seen {
            self.max_view_seen = v;
        }
    }

    /// `shift_to_leader_election(v)` [TR Fig 6].
    pub(super) fn shift_to_leader_election(&mut self, v: View) {
        if v <= self.last_installed {
            return;
        }
        self.role = Role::Election(None);
        self.clients.forget_enqueued();
        self.last_attempted = v;
        self.see_view(v);
    }

    /// What `Install(v)` means in the current state: the single rule documented on
    /// [`ElectionAction::Install`].
    pub(super) fn install_intent(&self, v: View) -> InstallIntent {
        let electing = self.role.state() == ServerState::LeaderElection;
        if v < self.last_installed || (v == self.last_installed && !electing) {
            return InstallIntent::Ignore; // stale, or the view is already running here
        }
        if v.leader(self.n) != self.me {
            // v == last_installed here means rejoining, after a restart, a view that is still
            // running: the promise for it is durable, so accepting its proposals again is safe.
            return InstallIntent::Join;
        }
        if self.role.preparing().is_some_and(|p| p.view == v) {
            return InstallIntent::Ignore; // already preparing it (pitfall 2: idempotent)
        }
        if v == self.last_installed {
            // A view this server led before a restart: its leader state is gone, never reuse it.
            return InstallIntent::Ignore;
        }
        InstallIntent::Prepare
    }

    /// The strategy asks that view `v` be installed.
    pub(super) fn install(&mut self, v: View) {
        match self.install_intent(v) {
            InstallIntent::Ignore => self.metrics.election_actions_ignored += 1,
            InstallIntent::Prepare => {
                self.shift_to_leader_election(v);
                self.shift_to_prepare_phase();
            }
            InstallIntent::Join => {
                self.role = Role::Election(None);
                self.last_attempted = v;
                self.see_view(v);
                self.shift_to_reg_nonleader();
            }
        }
    }
}

/// The three outcomes of an `Install` action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum InstallIntent {
    /// This server leads the view: attempt it and run the Prepare phase.
    Prepare,
    /// Another server leads it: become a non-leader in it (a rejoin when it is the installed view).
    Join,
    /// Stale, already running or already being prepared, or a view this server led before a
    /// restart.
    Ignore,
}
