//! What a server reports about itself when a client asks (`ClientRequest::Status`).

use crate::metrics::NodeMetrics;
use crate::protocol::NodeStatus;
use paxos_core::{LeaderElection, Replica, ServerState, StateMachine};

/// The status answer of `replica`, which runs the election strategy `election_name`.
pub(crate) fn node_status<S: StateMachine, E: LeaderElection>(
    replica: &Replica<S, E>,
    election_name: &str,
    metrics: &NodeMetrics,
) -> NodeStatus {
    let st = replica.status();
    let m = replica.metrics();
    NodeStatus {
        id: st.id.0,
        role: match st.state {
            ServerState::LeaderElection => "leader-election",
            ServerState::RegLeader => "leader",
            ServerState::RegNonLeader => "follower",
        }
        .to_owned(),
        leader: st.leader.map(|l| l.0),
        election_leader: st.election_leader.map(|l| l.0),
        view: st.last_installed.0,
        aru: st.local_aru.0,
        peer_aru: st.peer_aru.iter().map(|s| s.0).collect(),
        pending: st.pending as u64,
        election: election_name.to_owned(),
        state_digest: replica.state_machine().state_digest(),
        snapshots_installed: m.snapshots_installed,
        sessions: st.sessions as u64,
        sessions_expired: m.sessions_expired,
        transfer: st.transfer.map(|t| (t.received, t.total)),
        snapshot_bytes_received: m.snapshot_bytes_received,
        snapshots_taken: m.snapshots_taken,
        snapshot_busy: metrics.snapshot_busy() > 0,
        prepare_ok_sent: (m.prepare_ok_bytes_sent, m.prepare_ok_parts_sent),
        snapshot_bytes: replica.latest_snapshot().map_or(0, |s| s.len()),
    }
}
