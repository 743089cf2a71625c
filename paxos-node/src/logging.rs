//! What the server writes to stderr: the subscriber (plain text or JSON lines), progress of a
//! snapshot transfer, and refusals of outside input logged without flooding.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;
use thiserror::Error;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The logging subscriber could not be installed.
#[derive(Debug, Error)]
#[error("cannot install the log subscriber: {0}")]
pub struct LoggingError(String);

/// Installs the process's log subscriber on stderr. `default_filter` (an `EnvFilter` directive
/// such as `"info"`) applies unless `RUST_LOG` is set and valid.
pub fn init(format: LogFormat, default_filter: &str) -> Result<(), LoggingError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Escape codes in a file or a pipe are noise to whoever reads it later.
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| LoggingError(e.to_string()))
}

/// Logs how a server catches up, so an operator sees it move without a line per message: a
/// snapshot transfer into it (start, every tenth of the image, end), and a lag behind the highest
/// aru it heard of above [`crate::health::READY_MAX_LAG`] (when it begins and when it ends).
#[derive(Debug, Default)]
pub(crate) struct ProgressLog {
    current: Option<paxos_core::replica::TransferProgress>,
    logged_tenths: u64,
    behind_since_aru: Option<u64>,
}

impl ProgressLog {
    /// Notes what the replica reports after a driver round.
    pub(crate) fn observe(&mut self, st: &paxos_core::Status) {
        self.observe_transfer(st.transfer.as_ref());
        let aru = st.local_aru.0;
        self.observe_lag(aru, st.peer_aru.iter().map(|s| s.0).max().unwrap_or(aru));
    }

    fn observe_lag(&mut self, aru: u64, highest: u64) {
        let lag = highest.saturating_sub(aru);
        match self.behind_since_aru {
            None if lag > crate::health::READY_MAX_LAG => {
                self.behind_since_aru = Some(aru);
                tracing::info!(aru, highest, lag, "catching up");
            }
            Some(from) if lag <= crate::health::READY_MAX_LAG => {
                self.behind_since_aru = None;
                tracing::info!(aru, slots = aru.saturating_sub(from), "caught up");
            }
            _ => {}
        }
    }

    fn observe_transfer(&mut self, now: Option<&paxos_core::replica::TransferProgress>) {
        match (self.current.take(), now) {
            (None, None) => {}
            (Some(was), None) => {
                tracing::info!(
                    seq = was.seq.0,
                    from = was.source.0,
                    bytes = was.total,
                    "snapshot transfer ended"
                );
            }
            (was, Some(t)) => {
                let same = was
                    .as_ref()
                    .is_some_and(|w| w.seq == t.seq && w.source == t.source);
                if !same {
                    self.logged_tenths = 0;
                    tracing::info!(
                        seq = t.seq.0,
                        from = t.source.0,
                        bytes = t.total,
                        "receiving a snapshot"
                    );
                }
                let tenths = t.received.saturating_mul(10) / t.total.max(1);
                if tenths > self.logged_tenths {
                    self.logged_tenths = tenths;
                    tracing::info!(
                        seq = t.seq.0,
                        received = t.received,
                        total = t.total,
                        "snapshot transfer at {}%",
                        tenths.min(10) * 10
                    );
                }
                self.current = Some(*t);
            }
        }
    }
}

/// Process start, the zero of [`LogLimiter`]'s clock.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// At most one line a second for a kind of refusal: outside input (a flood of bad frames, an
/// overloaded server refusing every update) must not turn into a flood of log lines. The lines
/// held back are counted in the next one.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// A limiter that lets its first line through.
    pub(crate) const fn new() -> LogLimiter {
        LogLimiter {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Logs a refused input at info with its reason, through `limiter`.
pub(crate) fn refused(limiter: &LogLimiter, what: &str, reason: &dyn std::fmt::Display) {
    if let Some(suppressed) = limiter.allow() {
        tracing::info!(suppressed, "refused {what}: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_lets_the_first_line_through_and_counts_the_rest() {
        let l = LogLimiter::new();
        assert_eq!(l.allow(), Some(0));
        // Whether or not a second passes meanwhile, every line held back is counted.
        let held = (0..5).filter(|_| l.allow().is_none()).count() as u64;
        assert_eq!(l.suppressed.load(Ordering::Relaxed), held);
    }

    #[test]
    fn progress_log_notes_a_lag_once_and_its_end() {
        let mut log = ProgressLog::default();
        log.observe_lag(0, 10);
        assert_eq!(log.behind_since_aru, None);
        log.observe_lag(5, 5_000);
        assert_eq!(log.behind_since_aru, Some(5));
        log.observe_lag(3_000, 5_000);
        assert_eq!(log.behind_since_aru, Some(5));
        log.observe_lag(4_500, 5_000);
        assert_eq!(log.behind_since_aru, None);
    }

    #[test]
    fn progress_log_follows_one_transfer_to_its_end() {
        let mut log = ProgressLog::default();
        let mut t = paxos_core::replica::TransferProgress {
            seq: paxos_core::Seq(10),
            source: paxos_core::NodeId(1),
            received: 0,
            total: 100,
        };
        log.observe_transfer(Some(&t));
        assert_eq!(log.logged_tenths, 0);
        t.received = 55;
        log.observe_transfer(Some(&t));
        assert_eq!(log.logged_tenths, 5);
        log.observe_transfer(None);
        assert!(log.current.is_none());
    }
}
