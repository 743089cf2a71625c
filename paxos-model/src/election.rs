//! The election strategy the checker plays, and the state machine the replicas run.
//!
//! [`CheckerElection`] takes no decision of its own: the model checker's `Elect` action hands it a
//! view through the core's ordinary election seam (an `Election` message, whose payload names the
//! view), and it asks the core to install that view. It also answers every higher Prepare
//! (`accepts_prepare`), as the Prepare-based strategies of `paxos-election` do for their leader.
//! Between them the checker can make any server lead any view, and any server join a view either
//! by a Prepare (highest-id, Ω, BLE) or by being told to install it (PSB's VcProof path). Safety
//! must not depend on who tries to lead, so this is the most adversarial strategy there is; PSB's
//! own view change (its timers and vote counting) is not modelled.

use bytes::Bytes;
use paxos_core::{
    ClientUpdate, CodecError, Destination, ElectionAction, ElectionContext, LeaderElection, NodeId,
    Seq, ServerState, SnapshotError, StateMachine, Time, UpdateId, View,
};

/// The payload of the `Election` message the checker injects: the view to install.
pub fn install_payload(view: View) -> Bytes {
    Bytes::copy_from_slice(&view.0.to_le_bytes())
}

/// A leader-election strategy driven by the model checker (see the module docs).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct CheckerElection {
    /// The view the checker asked for, until the core polls it.
    install: Option<View>,
}

impl LeaderElection for CheckerElection {
    fn name(&self) -> &'static str {
        "model-checker"
    }

    fn handle_start(&mut self, _now: Time, _ctx: &ElectionContext) {}

    fn handle_tick(&mut self, _now: Time, _ctx: &ElectionContext) {}

    fn handle_message(
        &mut self,
        _now: Time,
        _from: NodeId,
        payload: &[u8],
        _ctx: &ElectionContext,
    ) -> Result<(), CodecError> {
        let bytes: [u8; 8] = payload
            .try_into()
            .map_err(|_| CodecError::Malformed(format!("{} bytes, not a view", payload.len())))?;
        self.install = Some(View(u64::from_le_bytes(bytes)));
        Ok(())
    }

    fn accepts_prepare(&self, _from: NodeId, _view: View, _ctx: &ElectionContext) -> bool {
        true
    }

    fn poll_action(&mut self) -> Option<ElectionAction> {
        self.install.take().map(ElectionAction::Install)
    }

    fn poll_message(&mut self) -> Option<(Destination, Bytes)> {
        None
    }

    fn leader(&self, ctx: &ElectionContext) -> Option<NodeId> {
        (ctx.state != ServerState::LeaderElection).then(|| ctx.last_installed.leader(ctx.servers))
    }
}

/// The application: it records which update it applied at which slot, so that exactly-once can be
/// checked on what the state machine actually saw. A crash rebuilds it from the durable prefix.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct RecordingMachine {
    /// Every update applied, in order, with its slot.
    pub applied: Vec<(Seq, UpdateId)>,
}

impl StateMachine for RecordingMachine {
    fn apply(&mut self, seq: Seq, update: &ClientUpdate) -> Bytes {
        self.applied.push((seq, update.id()));
        Bytes::new()
    }

    fn snapshot(&self) -> Bytes {
        // The model never compacts (`snapshot_interval: None`), so no snapshot is ever shipped.
        Bytes::new()
    }

    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), SnapshotError> {
        Err(SnapshotError("the model never takes snapshots".into()))
    }
}
