//! Regressions for liveness bugs the simulator found (docs/simulator.md, "Findings").

use super::*;

fn at(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn vc_proof(v: u64) -> Message {
    psb_msg(psb::PsbMessage::VcProof { installed: View(v) })
}

fn view_change(v: u64) -> Message {
    psb_msg(psb::PsbMessage::ViewChange { attempted: View(v) })
}

fn ordered(items: &[(u64, &ClientUpdate)]) -> Message {
    Message::ReconReply {
        updates: items
            .iter()
            .map(|(s, u)| OrderedUpdate {
                seq: Seq(*s),
                update: (*u).clone(),
            })
            .collect(),
        complete: true,
    }
}

fn proposed(out: &[(Destination, Message)]) -> Vec<ProposalItem> {
    out.iter()
        .filter_map(|(_, m)| match m {
            Message::Proposal { items, .. } => Some(items.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Server 1 of 5, non-leader of view 5 (led by 0), holding proposal `(5, stale)` in slot 2; then
/// `before_leading` runs; then its progress timer makes it suspect, servers 0 and 2 vote for view
/// 6, which it leads, and their PrepareOks (reporting `peer_aru`, nothing above) make it leader.
fn leader_of_view_6_with_stale_proposal(
    stale: &ClientUpdate,
    peer_aru: u64,
    before_leading: impl FnOnce(&mut R),
) -> R {
    let mut r = single(1, 5);
    r.handle_message(at(0), NodeId(0), vc_proof(5));
    r.handle_message(
        at(0),
        NodeId(0),
        Message::Proposal {
            view: View(5),
            items: vec![ProposalItem {
                seq: Seq(2),
                update: stale.clone(),
            }],
        },
    );
    assert_eq!(r.status().state, ServerState::RegNonLeader);
    before_leading(&mut r);
    r.handle_tick(at(1));
    r.handle_tick(at(300));
    assert_eq!(r.status().state, ServerState::LeaderElection);
    r.handle_message(at(300), NodeId(0), view_change(6));
    r.handle_message(at(300), NodeId(2), view_change(6));
    for from in [0, 2] {
        r.handle_message(
            at(300),
            NodeId(from),
            Message::PrepareOk {
                view: View(6),
                local_aru: Seq(peer_aru),
                data_list: vec![],
                part: crate::message::PrepareOkPart::WHOLE,
            },
        );
    }
    assert_eq!(r.status().state, ServerState::RegLeader);
    assert_eq!(r.status().last_installed, View(6));
    outbox(&mut r);
    r
}

#[test]
fn stale_proposal_ordered_with_another_update_no_longer_binds_its_update() {
    // A new leader's own stale proposal of U in slot 2 (from view 5) is above its aru when it
    // installs view 6, so U counts as bound. Reconciliation then orders slot 2 with W: U is not
    // bound anywhere any more and must be proposed when its server forwards it again. Before the
    // fix U stayed refused for the whole view (Omega/highest-id/BLE liveness failures).
    let u = upd(7, 2, 1);
    let (x, w) = (upd(8, 0, 1), upd(9, 0, 1));
    let mut r = leader_of_view_6_with_stale_proposal(&u, 2, |_| {});
    r.handle_message(at(300), NodeId(2), Message::ClientUpdate(u.clone()));
    assert!(
        proposed(&outbox(&mut r)).is_empty(),
        "still bound in slot 2"
    );
    r.handle_message(at(301), NodeId(0), ordered(&[(1, &x), (2, &w)]));
    assert_eq!(r.status().local_aru, Seq(2));
    outbox(&mut r);
    r.handle_message(at(302), NodeId(2), Message::ClientUpdate(u.clone()));
    let items = proposed(&outbox(&mut r));
    assert!(
        items.iter().any(|i| i.seq == Seq(3) && i.update == u),
        "U is proposed again: {items:?}"
    );
}

#[test]
fn stale_proposal_covered_by_a_snapshot_no_longer_binds_its_update() {
    // As above, but the leader skips slot 2 by installing a peer's snapshot (its history there is
    // compacted). U was not executed (the snapshot's client table says so): it must be proposed
    // again (simulator: Omega 5/All seed 960, highest-id 5/Light 238 and 1926, 5/All 457).
    let u = upd(7, 2, 1);
    let w = upd(9, 0, 1);
    let mut r = leader_of_view_6_with_stale_proposal(&u, 2, |_| {});
    let applied: Vec<(Seq, UpdateId)> = vec![(Seq(2), w.id())];
    r.handle_message(
        at(301),
        NodeId(0),
        Message::snapshot_chunk(
            &Snapshot::new(
                Seq(2),
                Bytes::from(postcard::to_allocvec(&applied).unwrap()),
                &[ClientRecord {
                    client: w.client_id,
                    last_executed: w.timestamp,
                    last_result: Bytes::new(),
                    last_active: Time::ZERO,
                    nonce: None,
                }],
            ),
            0,
            usize::MAX,
        ),
    );
    assert_eq!(r.status().local_aru, Seq(2));
    outbox(&mut r);
    r.handle_message(at(302), NodeId(2), Message::ClientUpdate(u.clone()));
    let items = proposed(&outbox(&mut r));
    assert!(
        items.iter().any(|i| i.seq == Seq(3) && i.update == u),
        "U is proposed again: {items:?}"
    );
}

#[test]
fn slot_already_ordered_at_install_binds_its_ordered_update_not_a_stale_proposal() {
    // Slot 2 holds the stale proposal U *and* is already ordered with W (learned from a peer)
    // when view 6 is installed; slot 1 is a hole. U is not bound and must be proposed.
    let u = upd(7, 2, 1);
    let w = upd(9, 0, 1);
    let mut r = leader_of_view_6_with_stale_proposal(&u, 0, |r| {
        r.handle_message(at(0), NodeId(0), ordered(&[(2, &w)]));
        assert_eq!(r.status().local_aru, Seq(0));
    });
    r.handle_message(at(300), NodeId(2), Message::ClientUpdate(u.clone()));
    let items = proposed(&outbox(&mut r));
    assert!(
        items.iter().any(|i| i.update == u),
        "U is proposed: {items:?}"
    );
    assert!(
        !items.iter().any(|i| i.seq == Seq(2)),
        "the ordered slot is not re-proposed"
    );
}

#[test]
fn reconciliation_catch_up_is_not_progress_of_the_installed_view() {
    // A lagging non-leader of view 1 learns that a peer suspects the leader (ViewChange for 2)
    // while it catches up slot by slot from a peer. Executing reconciled slots must not reset its
    // progress timer: it has to join the view change (simulator seeds 2249/5 and 95/7).
    let mut r = single(0, 3);
    r.handle_message(at(0), NodeId(1), vc_proof(1));
    assert_eq!(r.status().state, ServerState::RegNonLeader);
    r.handle_message(
        at(0),
        NodeId(1),
        Message::Alive {
            local_aru: Seq(10_000),
            last_installed: View(1),
        },
    );
    r.handle_message(at(0), NodeId(2), view_change(2));
    outbox(&mut r);
    let mut t = 0;
    while t < 600 && r.status().state == ServerState::RegNonLeader {
        t += 5;
        r.handle_tick(at(t));
        let asked = outbox(&mut r)
            .into_iter()
            .find_map(|(to, m)| match (to, m) {
                (Destination::Node(p), Message::ReconRequest { from, .. }) => Some((p, from)),
                _ => None,
            });
        if let Some((p, from)) = asked {
            // One slot per answer: catch-up is slow, but every answer executes something.
            r.handle_message(at(t), p, ordered(&[(from.0, &upd(3, 1, from.0))]));
        }
    }
    assert!(r.status().local_aru > Seq(10), "it was catching up");
    assert_eq!(r.status().state, ServerState::LeaderElection);
    assert_eq!(r.status().last_attempted, View(2));
}

fn recon_requests(r: &mut R) -> Vec<(u32, Seq)> {
    outbox(r)
        .into_iter()
        .filter_map(|(to, m)| match (to, m) {
            (Destination::Node(p), Message::ReconRequest { from, .. }) => Some((p.0, from)),
            _ => None,
        })
        .collect()
}

#[test]
fn reconciliation_keeps_asking_the_peer_that_answers() {
    // Peers 1, 2 and 3 announce they are ahead. The one that answers is asked again at once; one
    // whose request timed out is skipped while another peer ahead has not gone silent.
    let mut r = single(0, 5);
    for p in 1..=3 {
        r.handle_message(
            at(0),
            NodeId(p),
            Message::Alive {
                local_aru: Seq(1000),
                last_installed: View(0),
            },
        );
    }
    r.handle_tick(at(30));
    assert_eq!(recon_requests(&mut r), vec![(1, Seq(1))]);
    // Peer 1 answers: asked again right away (no tick), from where the answer ended.
    let batch: Vec<ClientUpdate> = (1..=10).map(|s| upd(3, 1, s)).collect();
    let items: Vec<(u64, &ClientUpdate)> = batch
        .iter()
        .enumerate()
        .map(|(i, u)| (i as u64 + 1, u))
        .collect();
    r.handle_message(at(31), NodeId(1), ordered(&items));
    assert_eq!(r.status().local_aru, Seq(10));
    assert_eq!(recon_requests(&mut r), vec![(1, Seq(11))]);
    // And at the next ticks nobody else is asked while that request is young.
    r.handle_tick(at(40));
    assert_eq!(recon_requests(&mut r), vec![]);
    // Peer 1 goes silent: 2 is asked; 2 goes silent: 3; peer 2 is heard from again; 3 goes
    // silent: 2 (not 1, which is next in rotation but silent).
    r.handle_tick(at(300));
    assert_eq!(recon_requests(&mut r), vec![(2, Seq(11))]);
    r.handle_tick(at(600));
    assert_eq!(recon_requests(&mut r), vec![(3, Seq(11))]);
    r.handle_message(
        at(700),
        NodeId(2),
        Message::Alive {
            local_aru: Seq(1000),
            last_installed: View(0),
        },
    );
    r.handle_tick(at(900));
    assert_eq!(recon_requests(&mut r), vec![(2, Seq(11))]);
}

#[test]
fn idle_nonleader_of_an_old_view_joins_the_newer_view_on_vc_proof() {
    // Simulator seed 21295/5: a non-leader of view 1 with no work, cut off while the others
    // installed view 4, stayed in view 1 after healing.
    let mut r = single(0, 3);
    r.handle_message(at(0), NodeId(1), vc_proof(1));
    assert_eq!(r.status().last_installed, View(1));
    r.handle_tick(at(10));
    r.handle_message(at(10), NodeId(1), vc_proof(4));
    assert_eq!(r.status().state, ServerState::RegNonLeader);
    assert_eq!(r.status().last_installed, View(4));
    assert_eq!(r.status().leader, Some(NodeId(1)));
}

fn alive_view(r: &mut R) -> Option<View> {
    outbox(r).into_iter().find_map(|(_, m)| match m {
        Message::Alive { last_installed, .. } => Some(last_installed),
        _ => None,
    })
}

#[test]
fn alive_announces_only_a_view_installed_by_a_majority() {
    // Server 1 preparing view 1 has `last_installed = 1` (TR Fig 7) but no PrepareOk majority
    // yet: Alive must not announce view 1 as installed (oracles would treat it as such).
    let mut r = single(1, 3);
    r.handle_message(at(0), NodeId(0), view_change(1));
    assert_eq!(r.status().state, ServerState::LeaderElection);
    assert_eq!(r.status().last_installed, View(1));
    outbox(&mut r);
    r.handle_tick(at(1));
    assert_eq!(alive_view(&mut r), Some(View(0)));
    r.handle_message(
        at(2),
        NodeId(0),
        Message::PrepareOk {
            view: View(1),
            local_aru: Seq(0),
            data_list: vec![],
            part: crate::message::PrepareOkPart::WHOLE,
        },
    );
    assert_eq!(r.status().state, ServerState::RegLeader);
    r.handle_tick(at(150));
    assert_eq!(alive_view(&mut r), Some(View(1)));
}
