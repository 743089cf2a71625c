//! The exactly-once table and client sessions [TR Fig 2 `last_executed`; spec §8; Raft
//! dissertation §6.3; docs/architecture.md, "Client sessions"].
//!
//! Without [`SessionRules`] the table is the TR's: one entry per client id, kept forever. With
//! them, a client first registers (an update with timestamp 0); the registration's slot names the
//! session, and only updates of sessions the table holds are applied. Sessions leave the table by
//! three rules, each a function of the executed log alone so that every replica drops the same
//! ones at the same slot:
//!
//! - idle: no update executed for `expire_after` of *log time*, a clock that moves only when a
//!   leader's clock entry executes (by the time that leader measured since its previous entry);
//! - count: registering beyond `max_sessions` drops the least recently active session;
//! - bytes: stored replies beyond `max_result_bytes` drop the least recently active sessions.
//!
//! A session id is never reused (it is a slot number), so an update of a dropped session can only
//! be refused: it is never applied a second time, however late a copy of it arrives.

use super::*;
use crate::config::SessionRules;
use std::collections::BTreeSet;
use std::time::Duration;

/// The first session id: a registration executed at slot `s` opens session `SESSION_ID_BASE + s`.
/// Registrations name a nonce below it.
pub const SESSION_ID_BASE: u64 = 1 << 63;

/// The client id of the leader's clock entries (reserved, like [`NOOP_CLIENT`]).
pub const CLOCK_CLIENT: ClientId = ClientId(u64::MAX - 1);

/// Whether `c` is reserved for entries the core makes itself (no-ops and clock entries).
pub(super) fn is_reserved(c: ClientId) -> bool {
    c.0 >= CLOCK_CLIENT.0
}

/// One client's entry: its last executed update, that update's reply, and when (log time).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Entry {
    ts: Timestamp,
    result: Bytes,
    active: Time,
    /// The registration's nonce, for a session.
    nonce: Option<ClientId>,
}

/// The exactly-once table (see the module docs).
#[derive(Clone, Debug, Default)]
pub(super) struct Sessions {
    table: FxHashMap<ClientId, Entry>,
    /// `(active, client)` of every entry, least recently active first (kept only with rules).
    by_active: BTreeSet<(Time, ClientId)>,
    /// Sum of the stored replies' lengths.
    result_bytes: usize,
    /// The session each open session's registration nonce opened.
    nonces: FxHashMap<ClientId, ClientId>,
    /// The log's clock: the sum of the clock entries executed so far.
    log_time: Time,
    rules: Option<SessionRules>,
}

impl Sessions {
    /// An empty table under `rules`.
    pub(super) fn new(rules: Option<SessionRules>) -> Sessions {
        Sessions {
            rules,
            ..Sessions::default()
        }
    }

    /// The rules, if sessions are on.
    pub(super) fn rules(&self) -> Option<&SessionRules> {
        self.rules.as_ref()
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table holds `c`.
    pub(super) fn holds(&self, c: ClientId) -> bool {
        self.table.contains_key(&c)
    }

    /// The log's clock.
    pub(super) fn log_time(&self) -> Time {
        self.log_time
    }

    /// The open session registration `nonce` opened, if it is still open.
    pub(super) fn registered(&self, nonce: ClientId) -> Option<ClientId> {
        self.nonces.get(&nonce).copied()
    }

    /// `c`'s last executed timestamp and its reply.
    pub(super) fn last(&self, c: ClientId) -> Option<(Timestamp, &Bytes)> {
        self.table.get(&c).map(|e| (e.ts, &e.result))
    }

    /// Whether `c` executed an update with timestamp `ts` or later.
    pub(super) fn is_done(&self, c: ClientId, ts: Timestamp) -> bool {
        self.table.get(&c).is_some_and(|e| ts <= e.ts)
    }

    /// Records `c`'s update `ts` executed with `result` now (log time), then applies the count
    /// and bytes bounds to the others. Returns how many sessions that expired.
    pub(super) fn record(&mut self, c: ClientId, ts: Timestamp, result: Bytes) -> u64 {
        let active = self.log_time;
        self.result_bytes += result.len();
        let nonce = self.table.get(&c).and_then(|e| e.nonce);
        let entry = Entry {
            ts,
            result,
            active,
            nonce,
        };
        if let Some(old) = self.table.insert(c, entry) {
            self.result_bytes -= old.result.len();
            if self.rules.is_some() {
                self.by_active.remove(&(old.active, c));
            }
        }
        if self.rules.is_none() {
            return 0;
        }
        self.by_active.insert((active, c));
        self.enforce_bounds(c)
    }

    /// Opens session `id` (registration `nonce` executed).
    pub(super) fn open(&mut self, id: ClientId, nonce: ClientId) -> u64 {
        // `id` is the most recently active now, so the bounds never drop it here.
        let expired = self.record(id, Timestamp(0), Bytes::new());
        if let Some(e) = self.table.get_mut(&id) {
            e.nonce = Some(nonce);
            self.nonces.insert(nonce, id);
        }
        expired
    }

    /// A clock entry executed: the log's clock moves by `elapsed` (capped, see
    /// [`SessionRules::clock_interval`]) and idle sessions expire. Returns how many.
    pub(super) fn advance_clock(&mut self, elapsed: Duration) -> u64 {
        let Some(r) = self.rules else {
            return 0;
        };
        let step = elapsed.min(r.clock_interval.saturating_mul(4));
        self.set_clock(self.log_time + step)
    }

    /// Sets the log clock to `t` if later and expires idle sessions (the planted local-clock bug
    /// calls this with a replica's own time).
    pub(super) fn set_clock(&mut self, t: Time) -> u64 {
        let Some(r) = self.rules else {
            return 0;
        };
        self.log_time = self.log_time.max(t);
        let mut expired = 0;
        while let Some(&(active, c)) = self.by_active.first() {
            if self.log_time.saturating_since(active) <= r.expire_after {
                break;
            }
            self.remove(c);
            expired += 1;
        }
        expired
    }

    /// Drops least recently active sessions other than `keep` while a bound is exceeded.
    fn enforce_bounds(&mut self, keep: ClientId) -> u64 {
        let Some(r) = self.rules else {
            return 0;
        };
        let mut expired = 0;
        while self.table.len() > r.max_sessions || self.result_bytes > r.max_result_bytes {
            // `keep` was just made the most recently active, so this looks at two at most.
            let Some(&(_, c)) = self.by_active.iter().find(|(_, c)| *c != keep) else {
                break;
            };
            self.remove(c);
            expired += 1;
        }
        expired
    }

    fn remove(&mut self, c: ClientId) {
        if let Some(e) = self.table.remove(&c) {
            self.result_bytes -= e.result.len();
            self.by_active.remove(&(e.active, c));
            if let Some(n) = e.nonce {
                self.nonces.remove(&n);
            }
        }
    }

    /// The entries as snapshot records, sorted by client.
    pub(super) fn records(&self) -> Vec<ClientRecord> {
        let mut v: Vec<ClientRecord> = self
            .table
            .iter()
            .map(|(c, e)| ClientRecord {
                client: *c,
                last_executed: e.ts,
                last_result: e.result.clone(),
                last_active: e.active,
                nonce: e.nonce,
            })
            .collect();
        v.sort_by_key(|r| r.client);
        v
    }

    /// Replaces the table with a snapshot's (`log_time`, `records`).
    pub(super) fn restore(&mut self, log_time: Time, records: &[ClientRecord]) {
        self.table.clear();
        self.by_active.clear();
        self.nonces.clear();
        self.result_bytes = 0;
        self.log_time = log_time;
        for r in records {
            self.result_bytes += r.last_result.len();
            self.table.insert(
                r.client,
                Entry {
                    ts: r.last_executed,
                    result: r.last_result.clone(),
                    active: r.last_active,
                    nonce: r.nonce,
                },
            );
            if let Some(n) = r.nonce {
                self.nonces.insert(n, r.client);
            }
            if self.rules.is_some() {
                self.by_active.insert((r.last_active, r.client));
            }
        }
    }

    /// Feeds the table to a fingerprint hasher (log times are replicated state, not local).
    pub(super) fn hash_into<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        let mut entries: Vec<_> = self.table.iter().collect();
        entries.sort_unstable_by_key(|(c, _)| **c);
        entries.hash(h);
        self.log_time.hash(h);
    }
}

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    /// The clock timer: a leader whose table holds sessions orders a clock entry every
    /// `clock_interval`, carrying the time it measured since its previous one (or since it
    /// installed its view, or since the table was last empty; time without a leader is not
    /// counted, so sessions live longer across view changes, never shorter).
    pub(super) fn propose_clock_if_due(&mut self, now: Time) {
        let Some(interval) = self.clients.sessions.rules().map(|r| r.clock_interval) else {
            return;
        };
        let idle = self.clients.sessions.len() == 0;
        let Some(l) = self.role.leading_mut() else {
            return;
        };
        if idle {
            l.clock_mark = now;
            return;
        }
        let elapsed = now.saturating_since(l.clock_mark);
        // One clock entry in the pipeline at a time. Clock entries go to the head of the queue;
        // where ordering a slot takes longer than `clock_interval` (a slow disk, a window of 2),
        // one per interval would take every slot and starve the clients, while the views,
        // which do not count clock entries as progress, were suspected one after another (sim:
        // N = 7 seed 1082, every write slow). The time waited is carried by the next entry.
        if elapsed < interval || l.clock_unexecuted.is_some() {
            return;
        }
        l.clock_mark = now;
        l.clock_unexecuted = Some(Timestamp(now.0));
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.clients.queue_first(ClientUpdate {
            client_id: CLOCK_CLIENT,
            server_id: self.me,
            timestamp: Timestamp(now.0),
            payload: Bytes::copy_from_slice(&nanos.to_le_bytes()),
        });
        self.metrics.clock_entries_proposed += 1;
        self.make_progress();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(max_sessions: usize, max_result_bytes: usize) -> SessionRules {
        SessionRules {
            expire_after: Duration::from_secs(10),
            max_sessions,
            max_result_bytes,
            clock_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn idle_sessions_expire_by_log_time_only() {
        let mut s = Sessions::new(Some(rules(100, 1 << 20)));
        s.open(ClientId(SESSION_ID_BASE + 1), ClientId(1));
        s.open(ClientId(SESSION_ID_BASE + 2), ClientId(2));
        for _ in 0..9 {
            assert_eq!(s.advance_clock(Duration::from_secs(1)), 0);
        }
        s.record(
            ClientId(SESSION_ID_BASE + 2),
            Timestamp(1),
            Bytes::from_static(b"x"),
        );
        // A huge step counts as four intervals: nobody expires at 13 s of log time...
        assert_eq!(s.advance_clock(Duration::from_secs(3600)), 1);
        assert!(!s.holds(ClientId(SESSION_ID_BASE + 1)));
        assert!(s.holds(ClientId(SESSION_ID_BASE + 2)));
        assert_eq!(s.log_time(), Time::ZERO + Duration::from_secs(13));
        assert_eq!(s.advance_clock(Duration::from_secs(4)), 0);
        assert_eq!(s.advance_clock(Duration::from_secs(3)), 1);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn count_and_bytes_bounds_drop_the_least_recently_active() {
        let mut s = Sessions::new(Some(rules(2, 10)));
        let id = |i| ClientId(SESSION_ID_BASE + i);
        s.open(id(1), ClientId(1));
        s.advance_clock(Duration::from_millis(1));
        s.open(id(2), ClientId(2));
        s.advance_clock(Duration::from_millis(1));
        s.record(id(1), Timestamp(1), Bytes::from_static(b"abc"));
        assert_eq!(
            s.open(id(3), ClientId(3)),
            1,
            "the third session drops the idlest"
        );
        assert!(!s.holds(id(2)) && s.holds(id(1)) && s.holds(id(3)));
        assert_eq!(s.registered(ClientId(2)), None);
        assert_eq!(s.registered(ClientId(3)), Some(id(3)));
        assert_eq!(s.record(id(3), Timestamp(1), Bytes::from(vec![0; 9])), 1);
        assert!(!s.holds(id(1)) && s.holds(id(3)));
        // A reply alone over the bound stays: the table keeps the session that produced it.
        assert_eq!(s.record(id(3), Timestamp(2), Bytes::from(vec![0; 50])), 0);
        let recs = s.records();
        let mut t = Sessions::new(Some(rules(2, 10)));
        t.restore(s.log_time(), &recs);
        assert_eq!(t.records(), recs);
        assert_eq!(t.result_bytes, 50);
    }

    #[test]
    fn without_rules_nothing_expires() {
        let mut s = Sessions::new(None);
        for i in 0..100 {
            s.record(ClientId(i), Timestamp(1), Bytes::from_static(b"r"));
        }
        assert_eq!(s.advance_clock(Duration::from_secs(1 << 30)), 0);
        assert_eq!(s.len(), 100);
    }
}
