//! A reference model of the session rules (`paxos_core::SessionRules`), run over the canonical
//! order: what each slot's verdict must be, written from the rules' text rather than from the
//! core's table (docs/architecture.md, "Client sessions").
//!
//! A session is open from its registration's slot until it is dropped: idle for longer than
//! `expire_after` of log time (the sum of the clock entries' measured times, each capped at four
//! clock intervals), or the least recently active one when a registration exceeds
//! `max_sessions` or a stored reply exceeds `max_result_bytes`. An update of an open session
//! applies (or is a duplicate); of any other session it is refused as expired. A registration
//! whose nonce opened a session that is still open is a duplicate.

use paxos_core::{replica::Verdict, ClientUpdate, SessionRules, CLOCK_CLIENT, SESSION_ID_BASE};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Bytes of each reply the simulator's state machine stores (its chain value).
const RESULT_BYTES: usize = 8;

pub(crate) struct SessionModel {
    rules: SessionRules,
    /// Open sessions: last active (log nanoseconds), last executed timestamp, stored reply bytes.
    open: HashMap<u64, (u64, u64, usize)>,
    /// Registration nonce of each open session, and back.
    nonce_of: HashMap<u64, u64>,
    session_of: HashMap<u64, u64>,
    by_active: BTreeSet<(u64, u64)>,
    bytes: usize,
    log_time: u64,
}

impl SessionModel {
    pub(crate) fn new(rules: SessionRules) -> SessionModel {
        SessionModel {
            rules,
            open: HashMap::new(),
            nonce_of: HashMap::new(),
            session_of: HashMap::new(),
            by_active: BTreeSet::new(),
            bytes: 0,
            log_time: 0,
        }
    }

    /// The verdict the rules give `u` at `seq`, with the model advanced past it.
    pub(crate) fn step(&mut self, seq: u64, u: &ClientUpdate) -> Verdict {
        let c = u.client_id.0;
        if c == CLOCK_CLIENT.0 {
            let nanos = <[u8; 8]>::try_from(u.payload.as_ref()).map_or(0, u64::from_le_bytes);
            let cap = self.rules.clock_interval.saturating_mul(4);
            let step = Duration::from_nanos(nanos).min(cap);
            self.log_time += step.as_nanos() as u64;
            let horizon = self.rules.expire_after.as_nanos() as u64;
            while let Some(&(active, s)) = self.by_active.first() {
                if self.log_time - active <= horizon {
                    break;
                }
                self.drop_session(s);
            }
            return Verdict::Filler;
        }
        if c == u64::MAX {
            return Verdict::Filler;
        }
        if u.timestamp.0 == 0 {
            if c >= SESSION_ID_BASE {
                return Verdict::Expired;
            }
            if self.session_of.contains_key(&c) {
                return Verdict::Duplicate; // a retry while its session is open
            }
            let id = SESSION_ID_BASE + seq;
            self.nonce_of.insert(id, c);
            self.session_of.insert(c, id);
            self.touch(id, 0, 0);
            return Verdict::Opened(paxos_core::ClientId(id));
        }
        match self.open.get(&c) {
            None => Verdict::Expired,
            Some(&(_, done, _)) if u.timestamp.0 <= done => Verdict::Duplicate,
            Some(_) => {
                self.touch(c, u.timestamp.0, RESULT_BYTES);
                Verdict::Applied
            }
        }
    }

    /// `c` executed `ts` now with a reply of `bytes`; then the bounds drop others.
    fn touch(&mut self, c: u64, ts: u64, bytes: usize) {
        if let Some((active, _, old)) = self.open.remove(&c) {
            self.by_active.remove(&(active, c));
            self.bytes -= old;
        }
        self.open.insert(c, (self.log_time, ts, bytes));
        self.by_active.insert((self.log_time, c));
        self.bytes += bytes;
        while self.open.len() > self.rules.max_sessions || self.bytes > self.rules.max_result_bytes
        {
            let Some(&(_, victim)) = self.by_active.iter().find(|(_, s)| *s != c) else {
                break;
            };
            self.drop_session(victim);
        }
    }

    fn drop_session(&mut self, s: u64) {
        if let Some((active, _, bytes)) = self.open.remove(&s) {
            self.by_active.remove(&(active, s));
            self.bytes -= bytes;
        }
        if let Some(n) = self.nonce_of.remove(&s) {
            self.session_of.remove(&n);
        }
    }
}
