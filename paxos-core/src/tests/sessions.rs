//! Client sessions registered through the log and expired by its clock (replica/sessions.rs).

use super::*;
use crate::config::SessionRules;
use crate::message::ReplyOutcome;
use crate::replica::{Verdict, CLOCK_CLIENT, SESSION_ID_BASE};

fn rules(max_sessions: usize) -> SessionRules {
    SessionRules {
        expire_after: Duration::from_millis(500),
        max_sessions,
        max_result_bytes: 1 << 20,
        clock_interval: Duration::from_millis(50),
    }
}

fn net(max_sessions: usize, tune: impl Fn(&mut Config)) -> Net {
    let mut net = Net::with(3, Durability::Sync, |c| {
        c.sessions = Some(rules(max_sessions));
        tune(c);
    });
    net.run(100);
    net
}

/// Registers nonce `nonce` at `server` and returns the session id its reply names.
fn register(net: &mut Net, server: usize, nonce: u64) -> u64 {
    net.submit(server, nonce, 0);
    net.run(50);
    let rep = net.replies[server]
        .iter()
        .rev()
        .find(|r| r.client_id == ClientId(nonce) && r.timestamp == Timestamp(0))
        .expect("registration answered");
    match rep.outcome {
        ReplyOutcome::SessionOpened(id) => id.0,
        o => panic!("registration answered {o:?}"),
    }
}

fn outcome(net: &Net, server: usize, client: u64, ts: u64) -> Option<ReplyOutcome> {
    net.replies[server]
        .iter()
        .rev()
        .find(|r| r.client_id == ClientId(client) && r.timestamp == Timestamp(ts))
        .map(|r| r.outcome)
}

fn applied_count(net: &Net, i: usize, client: u64, ts: u64) -> usize {
    net.executed[i]
        .iter()
        .filter(|e| e.update.id() == upd(client, 0, ts).id() && e.verdict == Verdict::Applied)
        .count()
}

#[test]
fn an_idle_session_expires_at_every_replica_and_its_late_retry_is_refused() {
    let mut net = net(100, |_| {});
    let s = register(&mut net, 0, 7);
    assert!(s >= SESSION_ID_BASE);
    let keep = register(&mut net, 1, 8);
    net.submit(0, s, 1);
    net.run(50);
    assert_eq!(outcome(&net, 0, s, 1), Some(ReplyOutcome::Applied));
    // `keep` stays busy; `s` idles past expire_after (log time moves only by clock entries).
    for ts in 1..=20 {
        net.submit(1, keep, ts);
        net.run(50);
    }
    for i in 0..3 {
        let st = net.nodes[i].as_ref().unwrap().status();
        assert_eq!(st.sessions, 1, "n{i}: only the busy session is left");
        assert!(st.log_time >= Time::from_millis(500), "{st:?}");
    }
    // A late copy of the executed update, and a new update of the expired session: neither runs.
    net.replies[0].clear();
    net.submit(0, s, 1);
    net.submit(0, s, 2);
    net.run(100);
    assert_eq!(outcome(&net, 0, s, 1), Some(ReplyOutcome::SessionExpired));
    assert_eq!(outcome(&net, 0, s, 2), Some(ReplyOutcome::SessionExpired));
    for i in 0..3 {
        assert_eq!(applied_count(&net, i, s, 1), 1, "n{i}");
        assert_eq!(applied_count(&net, i, s, 2), 0, "n{i}");
    }
    let clocks = net.executed[0]
        .iter()
        .filter(|e| e.update.client_id == CLOCK_CLIENT)
        .count();
    assert!(clocks >= 10, "{clocks} clock entries");
    net.assert_agreement();
}

#[test]
fn an_expired_update_still_in_flight_is_answered_at_execution() {
    // The update is pending at server 1 when its session expires (count bound); its resend
    // executes as "expired", everywhere, and the local server answers it.
    let mut net = net(2, |_| {});
    let l = net.leader().expect("a leader");
    let p = (l + 1) % 3;
    let q = 3 - l - p;
    let a = register(&mut net, p, 1);
    net.cut = vec![(p, l), (p, q)];
    net.submit(p, a, 1);
    net.run(20);
    let _b = register(&mut net, l, 2);
    let _c = register(&mut net, l, 3);
    for i in [l, q] {
        assert_eq!(net.nodes[i].as_ref().unwrap().status().sessions, 2);
    }
    net.cut.clear();
    net.run(500);
    assert_eq!(outcome(&net, p, a, 1), Some(ReplyOutcome::SessionExpired));
    for i in 0..3 {
        assert_eq!(applied_count(&net, i, a, 1), 0, "n{i}");
        let e = net.executed[i]
            .iter()
            .find(|e| e.update.id() == upd(a, 0, 1).id())
            .expect("ordered");
        assert_eq!(e.verdict, Verdict::Expired);
        assert!(net.nodes[i].as_ref().unwrap().metrics().sessions_expired >= 1);
    }
    assert_eq!(net.nodes[p].as_ref().unwrap().status().pending, 0);
    net.assert_agreement();
}

#[test]
fn sessions_and_the_log_clock_travel_in_snapshots() {
    let mut net = net(100, |c| {
        c.snapshot_interval = Some(10);
        c.history_retention = 0;
        c.sessions = Some(SessionRules {
            expire_after: Duration::from_secs(60),
            ..rules(100)
        });
    });
    let s = register(&mut net, 0, 5);
    net.cut = vec![(0, 2), (1, 2)];
    for ts in 1..=30 {
        net.submit(0, s, ts);
        net.run(20);
    }
    net.cut.clear();
    net.run(1000);
    let st0 = net.nodes[0].as_ref().unwrap().status();
    let r2 = net.nodes[2].as_ref().unwrap();
    assert!(r2.metrics().snapshots_installed >= 1);
    assert_eq!(st0.sessions, 1);
    assert_eq!(r2.status().sessions, 1);
    assert!(r2.status().log_time > Time::ZERO);
    // The installed snapshot carried the session and the log's clock.
    let parts = r2.latest_snapshot().and_then(|snap| snap.parts().ok());
    assert!(parts.as_ref().is_some_and(|p| p.log_time > Time::ZERO
        && p.clients
            .iter()
            .any(|c| c.client == ClientId(s) && c.last_active > Time::ZERO)));
    net.assert_agreement();
}

#[test]
fn registrations_and_stale_ids_are_checked_at_the_door() {
    let mut net = net(100, |_| {});
    let now = net.now;
    let r = net.node(0);
    let reg = |c: u64, ts: u64| ClientUpdate {
        client_id: ClientId(c),
        server_id: NodeId(0),
        timestamp: Timestamp(ts),
        payload: Bytes::new(),
    };
    assert_eq!(
        r.handle_client_update(now, reg(SESSION_ID_BASE + 3, 0)),
        Err(ClientUpdateError::RegistrationNamesSession(ClientId(
            SESSION_ID_BASE + 3
        )))
    );
    assert_eq!(
        r.handle_client_update(now, reg(CLOCK_CLIENT.0, 1)),
        Err(ClientUpdateError::ReservedClient(CLOCK_CLIENT))
    );
    // Not a session id at all: answered at once, nothing pending, no log entry.
    r.handle_client_update(now, reg(42, 1)).unwrap();
    assert_eq!(r.status().pending, 0);
    net.drain(0);
    assert_eq!(outcome(&net, 0, 42, 1), Some(ReplyOutcome::SessionExpired));
}

#[test]
fn pending_updates_are_bounded() {
    let mut net = Net::with(3, Durability::Sync, |c| c.max_pending = 2);
    net.run(100);
    let leader = net.leader().unwrap();
    let other = (leader + 1) % 3;
    let now = net.now;
    let r = net.node(other);
    for c in 1..=2 {
        r.handle_client_update(now, upd(c, other as u32, 1))
            .unwrap();
    }
    assert_eq!(
        r.handle_client_update(now, upd(3, other as u32, 1)),
        Err(ClientUpdateError::TooManyPending(2))
    );
    // A retry of a client already pending is still fine.
    r.handle_client_update(now, upd(1, other as u32, 1))
        .unwrap();
}

/// Persists every server's written batches and delivers what that releases: one fdatasync.
fn sync_all(net: &mut Net) {
    for i in 0..net.nodes.len() {
        if let Some(last) = net.unsynced[i].last().map(|b| b.id) {
            for b in std::mem::take(&mut net.unsynced[i]) {
                net.durable[i].apply(&b);
            }
            let now = net.now;
            net.node(i).handle_persisted(now, last);
            net.drain(i);
        }
    }
    net.deliver();
}

#[test]
fn clock_entries_leave_room_for_clients_when_ordering_is_slower_than_the_clock() {
    // A window of 2 and a disk that syncs every 40 ms: a slot takes longer to order than the
    // clock interval (5 ms). Clock entries jump the queue; one per interval took every slot and
    // the client's update never ran (sim: N = 7 seed 1082, every write slow).
    let mut net = net(100, |c| {
        c.window = 2;
        c.accept_window = 2;
        c.sessions = Some(SessionRules {
            expire_after: Duration::from_secs(60),
            clock_interval: Duration::from_millis(5),
            ..rules(100)
        });
    });
    let l = net.leader().expect("a leader");
    let s = register(&mut net, l, 9);
    net.auto_persist = false;
    net.run(40); // the window fills with clock entries
    net.submit(l, s, 1);
    for _ in 0..10 {
        net.run(40);
        sync_all(&mut net);
    }
    assert_eq!(outcome(&net, l, s, 1), Some(ReplyOutcome::Applied));
    let clocks = net.executed[l]
        .iter()
        .filter(|e| e.update.client_id == CLOCK_CLIENT)
        .count();
    assert!(clocks >= 2, "the clock still runs: {clocks} entries");
    net.assert_agreement();
}
