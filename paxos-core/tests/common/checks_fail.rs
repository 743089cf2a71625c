//! The checks no planted bug reaches, fed fabricated replica outputs: each must report its kind
//! (so that none of them is a check that cannot fail).

use super::checks::Checker;
use super::checks::Kind;
use super::steps::prelude::*;
use bytes::Bytes;
use paxos_core::{
    AcceptedProposal, BatchId, ClientId, ClientUpdate, Destination, DurableState, Executed,
    Message, NodeId, OrderedUpdate, PersistBatch, ProposalItem, Seq, ServerState, Status,
    Timestamp, View, ViewRecord,
};

fn status(installed: u64, aru: u64) -> Status {
    Status {
        id: NodeId(0),
        state: ServerState::RegNonLeader,
        last_attempted: View(installed),
        last_installed: View(installed),
        local_aru: Seq(aru),
        last_proposed: Seq(aru),
        leader: None,
        election_leader: None,
        pending: 0,
        queued: 0,
        peer_aru: vec![Seq(0); 3],
        transfer: None,
        sessions: 0,
        log_time: paxos_core::Time::ZERO,
    }
}

fn sync(servers: u8, me: u8) -> Setup {
    Setup {
        servers,
        me,
        durability: DSync,
        aggregation: false,
        separately: false,
        small: false,
        snapshot_every: None,
    }
}

fn checker() -> Checker {
    Checker::new(&sync(3, 0), &DurableState::default(), &status(0, 0))
}

fn upd(c: u64, ts: u64) -> ClientUpdate {
    ClientUpdate {
        client_id: ClientId(c),
        server_id: NodeId(0),
        timestamp: Timestamp(ts),
        payload: Bytes::new(),
    }
}

fn batch(id: u64) -> PersistBatch {
    PersistBatch {
        id: BatchId(id),
        sync: true,
        ..PersistBatch::default()
    }
}

fn accepted(view: u64, seq: u64, u: ClientUpdate) -> AcceptedProposal {
    AcceptedProposal {
        seq: Seq(seq),
        view: View(view),
        update: u,
    }
}

fn kind<T>(r: Result<T, (Kind, String)>) -> Kind {
    match r {
        Ok(_) => panic!("the check passed"),
        Err((k, _)) => k,
    }
}

#[test]
fn batch_ids_and_view_records() {
    let mut c = checker();
    assert_eq!(
        kind(c.handed_out(&batch(2), &status(0, 0))),
        Kind::BatchIdGap
    );
    let mut c2 = checker();
    let mut b = batch(1);
    b.view = Some(ViewRecord {
        last_attempted: View(4),
        last_installed: View(4),
    });
    c2.handed_out(&b, &status(4, 0)).unwrap();
    let mut b = batch(2);
    b.view = Some(ViewRecord {
        last_attempted: View(3),
        last_installed: View(3),
    });
    assert_eq!(
        kind(c2.handed_out(&b, &status(4, 0))),
        Kind::ViewRecordRegressed
    );
    c.status(&status(4, 2)).unwrap();
    assert_eq!(kind(c.status(&status(3, 2))), Kind::InstalledViewRegressed);
    let mut c = checker();
    c.status(&status(4, 2)).unwrap();
    assert_eq!(kind(c.status(&status(4, 1))), Kind::AruRegressed);
}

#[test]
fn accepted_values_and_orders() {
    let mut c = checker();
    let mut b = batch(1);
    b.accepted = vec![accepted(1, 1, upd(1, 1))];
    c.handed_out(&b, &status(1, 0)).unwrap();
    let mut b = batch(2);
    b.accepted = vec![accepted(1, 1, upd(2, 1))];
    assert_eq!(
        kind(c.handed_out(&b, &status(1, 0))),
        Kind::TwoValuesAccepted
    );
    let mut c = checker();
    let order = |id, u| {
        let mut b = batch(id);
        b.ordered = vec![OrderedUpdate {
            seq: Seq(1),
            update: u,
        }];
        b
    };
    c.handed_out(&order(1, upd(1, 1)), &status(1, 0)).unwrap();
    assert_eq!(
        kind(c.handed_out(&order(2, upd(2, 1)), &status(1, 0))),
        Kind::OrderedConflict
    );
    let exec = |seq, u, applied| Executed {
        seq: Seq(seq),
        update: u,
        applied,
        verdict: if applied {
            paxos_core::replica::Verdict::Applied
        } else {
            paxos_core::replica::Verdict::Duplicate
        },
    };
    assert_eq!(
        kind(c.executed(&exec(1, upd(2, 1), true))),
        Kind::ExecutedNotOrdered
    );
    let mut c = checker();
    assert_eq!(
        kind(c.executed(&exec(2, upd(1, 1), true))),
        Kind::ExecutionGap
    );
    let mut c = checker();
    assert_eq!(
        kind(c.executed(&exec(1, upd(1, 1), false))),
        Kind::SkippedExecution
    );
}

#[test]
fn proposals() {
    let proposal = |u| Message::Proposal {
        view: View(0),
        items: vec![ProposalItem {
            seq: Seq(1),
            update: u,
        }],
    };
    let mut c = checker();
    let durable = DurableState::default();
    // View 0 needs no PrepareOk in this fabricated history; the accept is not durable.
    let mut one = Setup {
        servers: 1,
        ..sync(1, 0)
    };
    one.separately = true;
    let mut c1 = Checker::new(&one, &durable, &status(0, 0));
    c1.sent(&Destination::All, &proposal(upd(1, 1)), &durable)
        .unwrap();
    assert_eq!(
        kind(c1.sent(&Destination::All, &proposal(upd(2, 1)), &durable)),
        Kind::ProposalConflict
    );
    assert_eq!(
        kind(c.sent(&Destination::All, &proposal(upd(1, 1)), &durable)),
        Kind::ProposalWithoutPrepareQuorum
    );
    let mut one = sync(1, 0);
    one.servers = 1;
    let mut c = Checker::new(&one, &durable, &status(0, 0));
    assert_eq!(
        kind(c.sent(&Destination::All, &proposal(upd(1, 1)), &durable)),
        Kind::ProposalNotDurable
    );
}
