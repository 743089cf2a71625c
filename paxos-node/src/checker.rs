//! History checkers for the real-process fault tests.
//!
//! [`check_register`] decides whether a concurrent history of operations on one key is
//! linearizable (Wing & Gong's search with memoisation of visited states, as in Lowe's and
//! Porcupine's checkers): some total order exists that respects real time (an operation that
//! completed before another was invoked comes first) and register semantics. Operations whose
//! outcome is unknown (the client timed out) may take effect at any point after their invocation, or
//! never.

use bytes::Bytes;
use std::collections::HashSet;

/// What an operation did to the register, with its observed outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// Set the value (`None`: delete).
    Write(Option<Bytes>),
    /// Read, observing this value (ignored when the outcome is unknown).
    Read(Option<Bytes>),
    /// Compare-and-set; `swapped` is the observed outcome (ignored when unknown).
    Cas {
        /// Value expected.
        expected: Option<Bytes>,
        /// Value to set.
        new: Option<Bytes>,
        /// Whether it applied.
        swapped: bool,
    },
}

/// One operation of a recorded history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryOp {
    /// When the client invoked it (any monotonic unit).
    pub invoke: u64,
    /// When the client saw the answer; `None` when the outcome is unknown.
    pub complete: Option<u64>,
    /// The operation and its observed result.
    pub op: RegisterOp,
}

/// Why a history is not linearizable (or too large to decide).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// No linearization exists.
    #[error("not linearizable: no order of the {ops} operations fits (deepest prefix {deepest})")]
    NotLinearizable {
        /// Number of operations.
        ops: usize,
        /// Longest linearizable prefix found.
        deepest: usize,
    },
    /// The search exceeded its budget.
    #[error("gave up after visiting {0} states")]
    Budget(usize),
}

/// Checks one register's history, starting from `initial`.
pub fn check_register(initial: Option<Bytes>, ops: &[HistoryOp]) -> Result<(), CheckError> {
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let mut visited: HashSet<(Vec<u64>, Option<Bytes>)> = HashSet::new();
    let mut done = vec![0u64; words];
    let mut stack: Vec<(usize, Option<Bytes>)> = Vec::new();
    let mut state = initial;
    let mut deepest = 0usize;
    let budget = 2_000_000usize;
    let is_done = |done: &[u64], i: usize| done[i / 64] & (1u64 << (i % 64)) != 0;
    // The earliest completion among pending completed operations bounds which ops may go next.
    let mut cursor_start = 0usize;
    loop {
        let completed_pending = (0..n).any(|i| !is_done(&done, i) && ops[i].complete.is_some());
        if !completed_pending {
            return Ok(());
        }
        let horizon = (0..n)
            .filter(|&i| !is_done(&done, i))
            .filter_map(|i| ops[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        let mut chosen = None;
        for i in cursor_start..n {
            if is_done(&done, i) || ops[i].invoke > horizon {
                continue;
            }
            let known = ops[i].complete.is_some();
            let next = match (&ops[i].op, known) {
                (RegisterOp::Write(v), _) => Some(v.clone()),
                (RegisterOp::Read(v), true) => (*v == state).then(|| state.clone()),
                (RegisterOp::Read(_), false) => Some(state.clone()),
                (
                    RegisterOp::Cas {
                        expected,
                        new,
                        swapped,
                    },
                    known,
                ) => {
                    let applies = *expected == state;
                    if known && applies != *swapped {
                        None
                    } else if applies {
                        Some(new.clone())
                    } else {
                        Some(state.clone())
                    }
                }
            };
            let Some(next) = next else { continue };
            let mut nd = done.clone();
            nd[i / 64] |= 1u64 << (i % 64);
            if !visited.insert((nd.clone(), next.clone())) {
                continue;
            }
            if visited.len() > budget {
                return Err(CheckError::Budget(visited.len()));
            }
            chosen = Some((i, nd, next));
            break;
        }
        let advanced = chosen.is_some();
        if let Some((i, nd, next)) = chosen {
            stack.push((i, state.clone()));
            done = nd;
            state = next;
            deepest = deepest.max(stack.len());
            cursor_start = 0;
        }
        if !advanced {
            // Backtrack: undo the last choice and try the next candidate after it.
            let Some((i, prev)) = stack.pop() else {
                return Err(CheckError::NotLinearizable { ops: n, deepest });
            };
            done[i / 64] &= !(1u64 << (i % 64));
            state = prev;
            cursor_start = i + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Option<Bytes> {
        Some(Bytes::from(s.to_owned()))
    }
    fn op(invoke: u64, complete: Option<u64>, op: RegisterOp) -> HistoryOp {
        HistoryOp {
            invoke,
            complete,
            op,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            op(0, Some(1), RegisterOp::Write(b("a"))),
            op(2, Some(3), RegisterOp::Read(b("a"))),
            op(
                4,
                Some(5),
                RegisterOp::Cas {
                    expected: b("a"),
                    new: b("b"),
                    swapped: true,
                },
            ),
            op(6, Some(7), RegisterOp::Read(b("b"))),
        ];
        assert!(check_register(None, &h).is_ok());
    }

    #[test]
    fn stale_read_after_completed_write_is_caught() {
        let h = vec![
            op(0, Some(1), RegisterOp::Write(b("a"))),
            op(2, Some(3), RegisterOp::Write(b("b"))),
            op(4, Some(5), RegisterOp::Read(b("a"))),
        ];
        assert!(matches!(
            check_register(None, &h),
            Err(CheckError::NotLinearizable { .. })
        ));
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let h = vec![
            op(0, Some(10), RegisterOp::Write(b("a"))),
            op(1, Some(11), RegisterOp::Write(b("b"))),
            op(12, Some(13), RegisterOp::Read(b("a"))),
        ];
        assert!(check_register(None, &h).is_ok());
    }

    #[test]
    fn unknown_outcome_may_apply_or_not() {
        let applied = vec![
            op(0, None, RegisterOp::Write(b("x"))),
            op(5, Some(6), RegisterOp::Read(b("x"))),
        ];
        assert!(check_register(None, &applied).is_ok());
        let not_applied = vec![
            op(0, None, RegisterOp::Write(b("x"))),
            op(5, Some(6), RegisterOp::Read(None)),
        ];
        assert!(check_register(None, &not_applied).is_ok());
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        let h = vec![
            op(0, Some(1), RegisterOp::Write(b("x"))),
            op(5, Some(6), RegisterOp::Read(None)),
        ];
        assert!(check_register(None, &h).is_err());
    }
}
