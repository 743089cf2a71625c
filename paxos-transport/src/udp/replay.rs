//! Replay protection (see the [`udp`](super) module documentation and docs/transport.md, "UDP
//! multicast"): the sender's epoch, chosen at start and strictly increasing within a process, and
//! the receiver's per-sender sliding window over `(epoch, seq)`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Width of the per-sender replay window, in datagrams.
pub const REPLAY_WINDOW: u64 = 1024;

/// A fresh sender epoch: microseconds since the Unix epoch, above any earlier one of this
/// process.
pub(crate) fn new_epoch() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

/// A sender epoch above both the wall clock's ([`new_epoch`]) and the last one recorded in
/// `path`, recorded there (written, fsynced, renamed, directory fsynced) before it is used: epochs
/// increase across restarts even when the clock steps back.
pub fn durable_epoch(path: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Write;
    let last = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not an epoch: {e}", path.display()),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let epoch = new_epoch().max(last.saturating_add(1));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{epoch}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(epoch)
}

/// A per-sender replay window: highest epoch, highest seq and a bitmap of recent seqs.
#[derive(Debug)]
pub(super) struct Window {
    epoch: u64,
    top: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl Window {
    /// A window that has seen exactly `(epoch, seq)`.
    pub(super) fn new(epoch: u64, seq: u64) -> Window {
        let mut w = Window {
            epoch,
            top: seq,
            bits: [0; (REPLAY_WINDOW / 64) as usize],
        };
        w.set(seq);
        w
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % REPLAY_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn set(&mut self, seq: u64) {
        let (w, b) = Window::slot(seq);
        self.bits[w] |= b;
    }

    /// Whether `(epoch, seq)` is new; records it if so.
    pub(super) fn accept(&mut self, epoch: u64, seq: u64) -> bool {
        if epoch < self.epoch {
            return false;
        }
        if epoch > self.epoch {
            *self = Window::new(epoch, seq);
            return true;
        }
        if seq > self.top {
            let advance = seq - self.top;
            if advance >= REPLAY_WINDOW {
                self.bits = [0; (REPLAY_WINDOW / 64) as usize];
            } else {
                for s in self.top + 1..=seq {
                    let (w, b) = Window::slot(s);
                    self.bits[w] &= !b;
                }
            }
            self.top = seq;
            self.set(seq);
            return true;
        }
        if self.top - seq >= REPLAY_WINDOW {
            return false;
        }
        let (w, b) = Window::slot(seq);
        if self.bits[w] & b != 0 {
            return false;
        }
        self.bits[w] |= b;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rejects_replays_and_accepts_new_epochs() {
        let mut w = Window::new(5, 0);
        assert!(!w.accept(5, 0));
        assert!(w.accept(5, 2));
        assert!(w.accept(5, 1));
        assert!(!w.accept(5, 1));
        assert!(w.accept(5, 2000));
        assert!(!w.accept(5, 2));
        assert!(w.accept(5, 1500));
        assert!(!w.accept(5, 1500));
        assert!(!w.accept(4, 3000));
        assert!(w.accept(6, 0));
        assert!(!w.accept(5, 5000));
        assert!(!w.accept(6, 0));
    }

    #[test]
    fn durable_epochs_increase_past_a_clock_that_stepped_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("udp-epoch");
        let a = durable_epoch(&path).unwrap();
        // As if the last run's clock was an hour ahead of this one's.
        let ahead = a + 3_600_000_000;
        std::fs::write(&path, format!("{ahead}\n")).unwrap();
        let b = durable_epoch(&path).unwrap();
        assert_eq!(b, ahead + 1);
        assert_eq!(durable_epoch(&path).unwrap(), ahead + 2);
        std::fs::write(&path, "garbage").unwrap();
        assert!(durable_epoch(&path).is_err());
    }

    #[test]
    fn epochs_increase() {
        let a = new_epoch();
        let b = new_epoch();
        assert!(b > a);
    }
}
