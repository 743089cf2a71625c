//! Identifier and index newtypes, in the paper's vocabulary.
//!
//! Every id and index is its own type so that a view can never be passed where a sequence number is
//! expected. All of them are plain `Copy` integers on the wire.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// The largest view or slot number a server accepts from the wire (2^62). Anything above is
/// dropped as invalid where it comes in, so that no arithmetic on views and slots (`v + 1`,
/// `aru + window`, the next view a server leads) can overflow, whatever a peer sends. A real
/// cluster never gets near it: a view change per millisecond for 100 million years.
pub const MAX_WIRE_INDEX: u64 = 1 << 62;

/// A server's id, `0..N-1` [TR §3].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The id as an index into per-server arrays.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A view (ballot) number. The leader of view `v` is server `v mod N` [TR §5.3].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct View(pub u64);

impl View {
    /// The server that leads this view in a cluster of `n` servers.
    pub fn leader(self, n: usize) -> NodeId {
        debug_assert!(n > 0);
        NodeId((self.0 % n as u64) as u32)
    }

    /// The smallest view strictly above `self` that `node` leads in a cluster of `n` servers.
    pub fn next_led_by(self, node: NodeId, n: usize) -> View {
        let n = n as u64;
        let base = (self.0 / n) * n + u64::from(node.0);
        if base > self.0 {
            View(base)
        } else {
            View(base + n)
        }
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A global sequence number (a slot of the global order). Slots start at 1; an aru of 0 means
/// nothing has been ordered yet.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Seq(pub u64);

impl Seq {
    /// The next slot.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A client's id. Together with a [`Timestamp`] it names an update.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ClientId(pub u64);

/// A client's per-update sequence number; strictly increasing per client [TR §3].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Timestamp(pub u64);

/// The name of a client update: `(client_id, timestamp)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UpdateId {
    /// The client that issued the update.
    pub client: ClientId,
    /// The client's sequence number for it.
    pub timestamp: Timestamp,
}

/// A point in time, in nanoseconds since an arbitrary origin chosen by the driver.
///
/// The core never reads a clock: drivers pass `Time` into every `handle_*` call. The simulator uses
/// virtual time; the node uses a monotonic clock.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// Nanoseconds since the origin.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Builds a time from milliseconds since the origin.
    pub fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1_000_000))
    }

    /// Time elapsed since `earlier`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, other: Time) -> Duration {
        self.saturating_since(other)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.0 / 1_000_000_000,
            (self.0 / 1000) % 1_000_000
        )
    }
}

/// Where an outgoing message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Destination {
    /// Every other server (a multicast where the transport has one).
    All,
    /// One server.
    Node(NodeId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_of_view_is_view_mod_n() {
        assert_eq!(View(7).leader(3), NodeId(1));
        assert_eq!(View(0).leader(5), NodeId(0));
    }

    #[test]
    fn next_led_by_is_smallest_higher_view_for_that_node() {
        for n in 1..8usize {
            for v in 0..40u64 {
                for id in 0..n as u32 {
                    let w = View(v).next_led_by(NodeId(id), n);
                    assert!(w > View(v));
                    assert_eq!(w.leader(n), NodeId(id));
                    assert!(w.0 - v <= n as u64);
                }
            }
        }
    }
}
