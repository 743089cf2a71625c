//! A replica's protocol state as a hash, for model checkers that deduplicate states
//! (`paxos-model`).
//!
//! [`Replica`]'s `Hash` covers everything that decides how the replica behaves from now on: roles,
//! views and promises, the history, clients, reconciliation, the open and held durability state and
//! every buffered output. It leaves out what cannot change behaviour: the configuration (fixed for
//! a replica's life), the counters in [`crate::Metrics`] and the absolute clock. Times are hashed
//! relative to the replica's last input time `now`: a deadline in the future by its distance from
//! `now`, one already passed as just "passed". A driver whose clock jumps by more than every timer
//! at each tick (as the model checker's does) then gets the same future from two replicas with
//! equal fingerprints; a driver whose clock creeps may not (two passed deadlines are merged).
//!
//! The struct is destructured field by field: a new field of [`Replica`] does not compile here
//! until it is either hashed or listed as deliberately left out.

use super::Replica;
use crate::election::LeaderElection;
use crate::state_machine::StateMachine;
use crate::types::Time;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// A time relative to `now`: `Some(distance)` for a time at or after `now`, `None` for one before.
fn rel(t: Time, now: Time) -> Option<u64> {
    (t >= now).then(|| t.0 - now.0)
}

impl<S, E> Hash for Replica<S, E>
where
    S: StateMachine + Hash,
    E: LeaderElection + Hash,
{
    fn hash<H: Hasher>(&self, h: &mut H) {
        let Replica {
            config: _,
            me,
            n: _,
            majority: _,
            sm,
            election,
            incarnation,
            now,
            role,
            last_attempted,
            last_installed,
            regular_view,
            max_view_seen,
            leader_announced_view,
            local_aru,
            max_seen_seq,
            history,
            next_proposal_resend,
            clients,
            next_pending_scan,
            next_alive,
            recon,
            next_snapshot_at,
            log_bytes_since_snapshot,
            snapshot_job,
            snapshot_building,
            latest_snapshot,
            transfer,
            outbox,
            executed,
            metrics: _,
            // Diagnosis only: decides nothing, and would split the model's states by the clock.
            last_suspicion: _,
            last_view_progress: _,
            last_heard: _,
        } = self;
        let now = *now;
        me.hash(h);
        sm.hash(h);
        election.hash(h);
        incarnation.hash(h);
        role.hash_at(|t| rel(t, now), h);
        (last_attempted, last_installed, regular_view, max_view_seen).hash(h);
        leader_announced_view.hash(h);
        (local_aru, max_seen_seq).hash(h);
        history.hash(h);
        rel(*next_proposal_resend, now).hash(h);
        clients.hash_at(|t| rel(t, now), h);
        rel(*next_pending_scan, now).hash(h);
        rel(*next_alive, now).hash(h);
        recon.hash_at(|t| rel(t, now), h);
        next_snapshot_at.hash(h);
        // Only decides anything with a minimum log percent; left out otherwise, so that the
        // model's state space does not grow by a counter that changes nothing.
        if self.config.snapshot_min_log_percent > 0 {
            log_bytes_since_snapshot.hash(h);
        }
        snapshot_job.as_ref().map(|j| j.seq()).hash(h);
        snapshot_building.hash(h);
        latest_snapshot.hash(h);
        transfer.hash_at(|t| rel(t, now), h);
        outbox.hash(h);
        executed.hash(h);
    }
}

impl<S, E> Replica<S, E>
where
    S: StateMachine + Hash,
    E: LeaderElection + Hash,
{
    /// A 64-bit digest of the protocol state (see the [`Hash`] impl): equal for two replicas that
    /// behave the same from now on, under a driver whose clock jumps past every timer at a tick.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::durable::DurableState;
    use crate::election::{ElectionAction, ElectionContext, LeaderElection};
    use crate::message::{ClientUpdate, Message};
    use crate::state_machine::NullStateMachine;
    use crate::types::{ClientId, Destination, NodeId, Time, Timestamp, View};
    use crate::{CodecError, Replica};
    use bytes::Bytes;
    use std::time::Duration;

    /// A strategy that never acts (hashable, unlike the timer-driven ones).
    #[derive(Clone, Debug, Hash)]
    struct Idle;

    impl LeaderElection for Idle {
        fn name(&self) -> &'static str {
            "idle"
        }
        fn handle_start(&mut self, _: Time, _: &ElectionContext) {}
        fn handle_tick(&mut self, _: Time, _: &ElectionContext) {}
        fn handle_message(
            &mut self,
            _: Time,
            _: NodeId,
            _: &[u8],
            _: &ElectionContext,
        ) -> Result<(), CodecError> {
            Ok(())
        }
        fn accepts_prepare(&self, _: NodeId, _: View, _: &ElectionContext) -> bool {
            true
        }
        fn poll_action(&mut self) -> Option<ElectionAction> {
            None
        }
        fn poll_message(&mut self) -> Option<(Destination, Bytes)> {
            None
        }
        fn leader(&self, _: &ElectionContext) -> Option<NodeId> {
            None
        }
    }

    fn replica(now: Time) -> Replica<NullStateMachine, Idle> {
        Replica::new(
            Config::new(NodeId(0), 3),
            NullStateMachine,
            Idle,
            DurableState::default(),
            now,
        )
        .unwrap()
    }

    #[test]
    fn equal_states_shifted_in_time_have_equal_fingerprints() {
        let a = replica(Time::from_millis(1_000));
        let b = replica(Time::from_millis(9_000));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.clone().fingerprint(), a.fingerprint());
    }

    #[test]
    fn a_promise_or_a_pending_update_changes_the_fingerprint() {
        let now = Time::from_millis(1_000);
        let fresh = replica(now);
        let mut promised = fresh.clone();
        promised.handle_message(
            now,
            NodeId(1),
            Message::Prepare {
                view: View(1),
                local_aru: crate::Seq(0),
            },
        );
        assert_ne!(fresh.fingerprint(), promised.fingerprint());
        let mut pending = fresh.clone();
        pending
            .handle_client_update(
                now,
                ClientUpdate {
                    client_id: ClientId(1),
                    server_id: NodeId(0),
                    timestamp: Timestamp(1),
                    payload: Bytes::new(),
                },
            )
            .unwrap();
        assert_ne!(fresh.fingerprint(), pending.fingerprint());
        // A tick moves every deadline into the past: the state differs from a fresh one only by
        // the Alive just sent and the timers rearmed from the new time.
        let mut ticked = fresh.clone();
        ticked.handle_tick(now + Duration::from_secs(1_000));
        assert_ne!(fresh.fingerprint(), ticked.fingerprint());
    }
}
