//! Single-replica handler tests: feed messages by hand, inspect what comes out.

use super::*;

#[test]
fn prepare_handler_nonleader_in_leader_election_answers_and_installs() {
    // [TR Fig 8] apply, build PrepareOk(data_list(aru)), shift_to_reg_nonleader, send to leader.
    let mut r = single(0, 3);
    outbox(&mut r);
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::Prepare {
            view: View(1),
            local_aru: Seq(0),
        },
    );
    let out = outbox(&mut r);
    assert!(out.iter().any(|(to, m)| *to == Destination::Node(NodeId(1))
        && matches!(m, Message::PrepareOk { view: View(1), .. })));
    assert_eq!(r.status().state, ServerState::RegNonLeader);
    assert_eq!(r.status().last_installed, View(1));
}

#[test]
fn prepare_retransmission_gets_the_stored_promise_with_its_data_list() {
    // [TR §5.9] receiver-driven retransmission of PrepareOk; data_list carries accepted proposals.
    // Five servers: leader + me is not a majority, so the slot stays a proposal here.
    let mut r = single(0, 5);
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::Prepare {
            view: View(1),
            local_aru: Seq(0),
        },
    );
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::Proposal {
            view: View(1),
            items: vec![ProposalItem {
                seq: Seq(1),
                update: upd(5, 1, 1),
            }],
        },
    );
    outbox(&mut r);
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::Prepare {
            view: View(1),
            local_aru: Seq(0),
        },
    );
    let out = outbox(&mut r);
    let data = out
        .iter()
        .find_map(|(_, m)| match m {
            Message::PrepareOk { data_list, .. } => Some(data_list.clone()),
            _ => None,
        })
        .expect("PrepareOk resent");
    assert!(matches!(
        data.as_slice(),
        [DataItem::Proposal(AcceptedProposal {
            seq: Seq(1),
            view: View(1),
            ..
        })]
    ));
}

#[test]
fn pitfall_1_view_installed_by_vc_proof_still_answers_prepare() {
    // Spec §14.1: a server that installed the view via VcProof builds its PrepareOk on demand.
    let mut r = single(0, 3);
    outbox(&mut r);
    r.handle_message(
        Time::ZERO,
        NodeId(2),
        psb_msg(psb::PsbMessage::VcProof { installed: View(4) }),
    );
    assert_eq!(r.status().state, ServerState::RegNonLeader);
    assert_eq!(r.status().last_installed, View(4));
    outbox(&mut r);
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::Prepare {
            view: View(4),
            local_aru: Seq(0),
        },
    );
    assert!(outbox(&mut r)
        .iter()
        .any(|(_, m)| matches!(m, Message::PrepareOk { view: View(4), .. })));
}

#[test]
fn prepare_ok_majority_makes_leader_that_reproposes_constrained_and_fills_holes() {
    // [TR Fig 9, Fig 10] + spec §14.4 (no-op fill): slot 2 is constrained by a PrepareOk, slot 1
    // is a hole below it.
    let mut r = single(1, 3);
    outbox(&mut r);
    r.handle_message(
        Time::ZERO,
        NodeId(0),
        psb_msg(psb::PsbMessage::ViewChange { attempted: View(1) }),
    );
    assert!(outbox(&mut r)
        .iter()
        .any(|(_, m)| matches!(m, Message::Prepare { view: View(1), .. })));
    let constrained = upd(9, 0, 3);
    r.handle_message(
        Time::ZERO,
        NodeId(0),
        Message::PrepareOk {
            view: View(1),
            local_aru: Seq(0),
            data_list: vec![DataItem::Proposal(AcceptedProposal {
                seq: Seq(2),
                view: View(0),
                update: constrained.clone(),
            })],
            part: crate::message::PrepareOkPart::WHOLE,
        },
    );
    assert_eq!(r.status().state, ServerState::RegLeader);
    let items: Vec<ProposalItem> = outbox(&mut r)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Proposal { items, .. } => Some(items),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].seq, Seq(1));
    assert_eq!(items[0].update.client_id, NOOP_CLIENT);
    assert_eq!(items[1].seq, Seq(2));
    assert_eq!(items[1].update, constrained);
}

#[test]
fn pitfall_3_an_update_ordered_twice_executes_once() {
    // Spec §14.3(b): execution skips ts <= last_executed but still advances the aru.
    let mut r = single(0, 3);
    let u = upd(4, 2, 1);
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::ReconReply {
            updates: vec![
                OrderedUpdate {
                    seq: Seq(1),
                    update: u.clone(),
                },
                OrderedUpdate {
                    seq: Seq(2),
                    update: u.clone(),
                },
            ],
            complete: true,
        },
    );
    assert_eq!(r.status().local_aru, Seq(2));
    let ex: Vec<Executed> = std::iter::from_fn(|| r.poll_executed()).collect();
    assert_eq!(
        ex.iter().map(|e| e.applied).collect::<Vec<_>>(),
        vec![true, false]
    );
    assert_eq!(r.state_machine().applied.len(), 1);
}

#[test]
fn enqueue_rejects_executed_and_already_enqueued_updates() {
    // [TR Fig 13] enqueue() returns false for ts <= last_executed or ts <= last_enqueued.
    let mut r = single(1, 3);
    r.handle_message(
        Time::ZERO,
        NodeId(0),
        psb_msg(psb::PsbMessage::ViewChange { attempted: View(1) }),
    );
    r.handle_message(
        Time::ZERO,
        NodeId(0),
        Message::PrepareOk {
            view: View(1),
            local_aru: Seq(0),
            data_list: vec![],
            part: crate::message::PrepareOkPart::WHOLE,
        },
    );
    assert_eq!(r.status().state, ServerState::RegLeader);
    outbox(&mut r);
    r.handle_message(Time::ZERO, NodeId(0), Message::ClientUpdate(upd(3, 0, 2)));
    assert_eq!(r.status().last_proposed, Seq(1));
    // The same update forwarded again (a retransmission) is not proposed twice.
    r.handle_message(Time::ZERO, NodeId(0), Message::ClientUpdate(upd(3, 0, 2)));
    // An older one from the same client is refused too.
    r.handle_message(Time::ZERO, NodeId(0), Message::ClientUpdate(upd(3, 0, 1)));
    assert_eq!(r.status().last_proposed, Seq(1));
    // A forwarded update must come from its local server.
    r.handle_message(Time::ZERO, NodeId(2), Message::ClientUpdate(upd(3, 0, 5)));
    assert_eq!(r.status().last_proposed, Seq(1));
    assert_eq!(r.metrics().dropped_invalid, 1);
}

#[test]
fn update_timer_resends_pending_update_to_the_leader() {
    // [TR Fig 13] on update-timer expiry a non-leader resends pending_updates[client].
    let mut r = single(0, 3);
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::Prepare {
            view: View(1),
            local_aru: Seq(0),
        },
    );
    r.handle_client_update(Time::ZERO, upd(8, 0, 1)).unwrap();
    assert!(outbox(&mut r).iter().any(
        |(to, m)| *to == Destination::Node(NodeId(1)) && matches!(m, Message::ClientUpdate(_))
    ));
    r.handle_tick(Time::from_millis(60));
    assert!(!outbox(&mut r)
        .iter()
        .any(|(_, m)| matches!(m, Message::ClientUpdate(_))));
    r.handle_tick(Time::from_millis(160));
    assert!(outbox(&mut r).iter().any(
        |(to, m)| *to == Destination::Node(NodeId(1)) && matches!(m, Message::ClientUpdate(_))
    ));
}

#[test]
fn accept_from_same_sender_counts_once_and_majority_orders() {
    // [TR Fig 11] a slot is ordered with its proposal plus floor(N/2) accepts from distinct servers.
    let mut r = single(0, 5);
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        psb_msg(psb::PsbMessage::VcProof { installed: View(1) }),
    );
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::Proposal {
            view: View(1),
            items: vec![ProposalItem {
                seq: Seq(1),
                update: upd(1, 1, 1),
            }],
        },
    );
    // Leader (implicit) + me = 2 of 5; one more distinct accept is needed.
    let acc = |r: &mut R, from: u32| {
        r.handle_message(
            Time::ZERO,
            NodeId(from),
            Message::Accept {
                view: View(1),
                seqs: vec![SeqRange {
                    start: Seq(1),
                    end: Seq(1),
                }],
            },
        )
    };
    acc(&mut r, 2);
    // Same sender again: no change... (2 + 1 = 3 = majority already) so use a 7-node check below.
    assert_eq!(r.status().local_aru, Seq(1));
    let mut r = single(0, 7);
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        psb_msg(psb::PsbMessage::VcProof { installed: View(1) }),
    );
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::Proposal {
            view: View(1),
            items: vec![ProposalItem {
                seq: Seq(1),
                update: upd(1, 1, 1),
            }],
        },
    );
    acc(&mut r, 2);
    acc(&mut r, 2);
    assert_eq!(
        r.status().local_aru,
        Seq(0),
        "a duplicate accept must not count twice"
    );
    acc(&mut r, 3);
    assert_eq!(r.status().local_aru, Seq(1));
}

#[test]
fn durable_view_promise_is_persisted_before_prepare_ok() {
    // [spec §9.1] persist the view before sending a PrepareOk.
    let mut r = R::new(
        config(0, 3, Durability::Sync),
        Log::default(),
        psb(0, 3),
        DurableState::default(),
        Time::ZERO,
    )
    .unwrap();
    while r.poll_persist().is_some() {}
    outbox(&mut r);
    r.handle_message(
        Time::ZERO,
        NodeId(1),
        Message::Prepare {
            view: View(1),
            local_aru: Seq(0),
        },
    );
    assert!(!outbox(&mut r)
        .iter()
        .any(|(_, m)| matches!(m, Message::PrepareOk { .. })));
    let b = r.poll_persist().unwrap();
    assert!(b.sync);
    assert_eq!(b.view.unwrap().last_installed, View(1));
    r.handle_persisted(Time::ZERO, b.id);
    assert!(outbox(&mut r)
        .iter()
        .any(|(_, m)| matches!(m, Message::PrepareOk { .. })));
}

#[test]
fn a_prepare_ok_of_a_full_window_of_1_mib_values_goes_in_parts() {
    // Issue #13, bounded view change: a window of 256 accepted 1 MiB values is 256 MiB of data
    // list, far past the 16 MiB any transport carries. Five servers: leader + me is not a
    // majority, so every slot stays an accepted proposal that the PrepareOk must carry.
    let mut r = single(0, 5);
    let prepare = Message::Prepare {
        view: View(1),
        local_aru: Seq(0),
    };
    r.handle_message(Time::ZERO, NodeId(1), prepare.clone());
    let window = 256u64; // Config::new's window
    for s in 1..=window {
        let mut u = upd(5, 1, s);
        u.payload = Bytes::from(vec![s as u8; 1 << 20]);
        let items = vec![ProposalItem {
            seq: Seq(s),
            update: u,
        }];
        r.handle_message(
            Time::ZERO,
            NodeId(1),
            Message::Proposal {
                view: View(1),
                items,
            },
        );
    }
    outbox(&mut r);
    r.handle_message(Time::ZERO, NodeId(1), prepare);
    let parts: Vec<_> = outbox(&mut r)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::PrepareOk { .. } => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(parts.len() as u64, window, "one 1 MiB value per part");
    let (mut after, mut next, mut total) = (Seq(0), 1u64, 0usize);
    for (k, m) in parts.iter().enumerate() {
        let bytes = crate::codec::encode(m)
            .expect("every part fits a message")
            .len();
        total += bytes;
        let Message::PrepareOk {
            data_list, part, ..
        } = m
        else {
            unreachable!()
        };
        assert_eq!(part.after, after, "part {k} joins the one before");
        for d in data_list {
            let DataItem::Proposal(p) = d else {
                panic!("not a proposal")
            };
            assert_eq!(p.seq, Seq(next));
            assert_eq!(p.update.payload.len(), 1 << 20);
            next += 1;
        }
        match part.through {
            Some(t) => after = t,
            None => assert_eq!(k + 1, parts.len(), "only the last part is open-ended"),
        }
    }
    assert_eq!(next, window + 1, "every accepted value is carried");
    assert!(total > 16 << 20, "{total} bytes would have fit one message");
}
