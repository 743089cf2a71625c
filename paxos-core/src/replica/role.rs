//! A server's role and the state only that role has [TR Fig 2; spec §2, §6].
//!
//! TR Fig 2 keeps one flat set of variables for every role; here the leader's per-view state lives
//! in the role that owns it, so a server that is not leading cannot read a stale copy of it: a
//! Prepare phase's PrepareOk tally and floor exist only while it runs, and a leader's proposal
//! position, floor wait and bound-update set only while it leads. Every role change builds the new
//! role's state from scratch.

use crate::election::ServerState;
use crate::fxmap::FxHashSet;
use crate::history::NodeSet;
use crate::types::{Seq, Time, Timestamp, UpdateId, View};
use std::hash::{Hash, Hasher};

/// The Prepare phase of a view this server leads [TR §5.4, Fig 7].
#[derive(Clone, Debug, Hash)]
pub(super) struct Preparing {
    /// The view being prepared.
    pub(super) view: View,
    /// This server's aru when it sent the Prepare (resends repeat it).
    pub(super) aru: Seq,
    /// The servers whose PrepareOk arrived (this one included).
    pub(super) oks: NodeSet,
    /// Slots at or below it are ordered at some PrepareOk sender: the leader never re-proposes
    /// there, it waits to learn them (docs/architecture.md, deviation 15).
    pub(super) floor: Seq,
    /// Per server, the slot through which its PrepareOk parts arrived without a gap (`None`: no
    /// part yet). A server counts in `oks` once its last part joins on.
    pub(super) covered: Vec<Option<Seq>>,
}

impl Preparing {
    /// PrepareOks counted so far.
    pub(super) fn count(&self) -> usize {
        self.oks.count_ones() as usize
    }
}

/// A regular leader's state for the view it leads [TR §5.5, Fig 10].
#[derive(Clone, Debug)]
pub(super) struct Leading {
    /// The Prepare phase's floor (see [`Preparing::floor`]).
    pub(super) floor: Seq,
    /// Since when proposing has waited for slots at or below `floor`.
    pub(super) floor_wait_since: Option<Time>,
    /// Highest slot holding a proposal when the view was prepared (holes below get no-ops).
    pub(super) max_constrained: Seq,
    /// Updates bound to some slot above the aru when this view was installed. Together with the
    /// client table's `last_enqueued` (updates this leader bound during the view) it answers "is
    /// U bound?" without a map update per proposal; execution skips whatever slips through
    /// (pitfall 3b).
    pub(super) bound: FxHashSet<UpdateId>,
    /// Highest slot proposed in this view (or executed, if higher).
    pub(super) last_proposed: Seq,
    /// The aru at the last proposal-resend check: unchanged since means resend.
    pub(super) aru_at_last_resend: Seq,
    /// When this leader's last clock entry measured up to (see `sessions.rs`).
    pub(super) clock_mark: Time,
    /// The timestamp of this leader's clock entry not yet executed here, if any: the next one
    /// waits for it (see `sessions.rs`).
    pub(super) clock_unexecuted: Option<Timestamp>,
}

/// The server's role [TR Fig 2], with its role-only state.
#[derive(Clone, Debug)]
pub(super) enum Role {
    /// `LEADER_ELECTION`: no installed view is trusted. `Some` while this server runs the Prepare
    /// phase of the view it attempted and leads.
    Election(Option<Preparing>),
    /// `REG_NONLEADER` in the installed view.
    NonLeader,
    /// `REG_LEADER` of the installed view.
    Leader(Leading),
}

impl Role {
    /// The role as the election seam names it.
    pub(super) fn state(&self) -> ServerState {
        match self {
            Role::Election(_) => ServerState::LeaderElection,
            Role::NonLeader => ServerState::RegNonLeader,
            Role::Leader(_) => ServerState::RegLeader,
        }
    }

    /// The Prepare phase in progress, if any.
    pub(super) fn preparing(&self) -> Option<&Preparing> {
        match self {
            Role::Election(p) => p.as_ref(),
            _ => None,
        }
    }

    /// The leader's state, if leading.
    pub(super) fn leading(&self) -> Option<&Leading> {
        match self {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// The leader's state, if leading.
    pub(super) fn leading_mut(&mut self) -> Option<&mut Leading> {
        match self {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// Whether `id` was bound to a slot above the aru when the view this server leads was
    /// installed (never, when not leading).
    pub(super) fn bound_at_install(&self, id: &UpdateId) -> bool {
        self.leading().is_some_and(|l| l.bound.contains(id))
    }
}

impl Role {
    /// Feeds the role to a fingerprint hasher, times relative to now (see `fingerprint.rs`).
    pub(super) fn hash_at<H: Hasher>(&self, rel: impl Fn(Time) -> Option<u64>, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match self {
            Role::Election(p) => p.hash(h),
            Role::NonLeader => {}
            Role::Leader(Leading {
                floor,
                floor_wait_since,
                max_constrained,
                bound,
                last_proposed,
                aru_at_last_resend,
                clock_mark,
                clock_unexecuted,
            }) => {
                (floor, max_constrained, last_proposed, aru_at_last_resend).hash(h);
                clock_unexecuted.hash(h);
                floor_wait_since.map(&rel).hash(h);
                rel(*clock_mark).hash(h);
                let mut b: Vec<_> = bound.iter().collect();
                b.sort_unstable();
                b.hash(h);
            }
        }
    }
}
