//! Fault mixes: what can go wrong in one seed (swarm testing).
//!
//! Every seed draws its own [`FaultMix`] from a [`FaultProfile`]: each fault type is switched on or
//! off by a coin flip and given its own intensity, so that across seeds some runs hammer one fault
//! alone (and expose bugs that a blend of everything would mask) while others combine them.

use rand::Rng;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How aggressive the per-seed fault mixes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultProfile {
    /// No faults at all: a perfect network and no crashes.
    None,
    /// Each fault type with probability ½, at low intensity.
    Light,
    /// Each fault type with probability ½, at high intensity.
    Heavy,
    /// Every fault type in every seed, at high intensity.
    All,
}

impl FaultProfile {
    /// The profile's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            FaultProfile::None => "none",
            FaultProfile::Light => "light",
            FaultProfile::Heavy => "heavy",
            FaultProfile::All => "all",
        }
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(FaultProfile::None),
            "light" => Ok(FaultProfile::Light),
            "heavy" => Ok(FaultProfile::Heavy),
            "all" => Ok(FaultProfile::All),
            _ => Err(format!(
                "unknown fault profile {s:?} (none|light|heavy|all)"
            )),
        }
    }
}

/// The shapes a network partition can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartitionKind {
    /// One server (often the leader) is cut off from all others, both ways.
    IsolateOne,
    /// The servers split into two groups (a minority and a majority, or two arbitrary sides).
    Split,
    /// One server can send but not receive, or receive but not send (asymmetric).
    OneWay,
    /// A split that heals and re-forms quickly several times.
    Flapping,
}

impl PartitionKind {
    /// Every kind.
    pub const ALL: [PartitionKind; 4] = [
        PartitionKind::IsolateOne,
        PartitionKind::Split,
        PartitionKind::OneWay,
        PartitionKind::Flapping,
    ];
}

/// The faults injected into one seed. All probabilities are per message unless said otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultMix {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message gets extra random delay (so it overtakes or is overtaken).
    pub reorder: f64,
    /// Probability that a message is held for a long time (up to `long_delay_max`).
    pub long_delay: f64,
    /// Upper bound of a long delay.
    pub long_delay_max: Duration,
    /// Servers crash and restart (only with `Durability::Sync`; ignored otherwise).
    pub crashes: bool,
    /// On a crash, a random prefix of the written-but-unsynced batches survives (otherwise all of
    /// them are lost).
    pub torn_writes: bool,
    /// Fsyncs take up to 40 ms instead of up to 2 ms (widens the window for lost writes).
    pub slow_disk: bool,
    /// Partition shapes this seed uses (empty: no partitions).
    pub partitions: Vec<PartitionKind>,
    /// Mean virtual time between two crash or partition events.
    pub fault_interval: Duration,
    /// Probability that a message makes a round trip through the wire codec.
    pub codec_sample: f64,
}

impl FaultMix {
    /// No faults: every message arrives once, nothing crashes.
    pub fn none() -> FaultMix {
        FaultMix {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            long_delay: 0.0,
            long_delay_max: Duration::from_millis(1),
            crashes: false,
            torn_writes: false,
            slow_disk: false,
            partitions: Vec::new(),
            fault_interval: Duration::from_secs(3600),
            codec_sample: 0.0,
        }
    }

    /// A mildly imperfect network and nothing else, for the election experiment
    /// ([`crate::SimCluster`]): 1 % loss, 1 % duplication, 5 % of messages reordered (up to
    /// 20 ms extra), 0.5 % held up to 100 ms, torn writes on (driver) crashes, 1 % of messages
    /// through the codec.
    pub fn network() -> FaultMix {
        FaultMix {
            loss: 0.01,
            duplicate: 0.01,
            reorder: 0.05,
            long_delay: 0.005,
            long_delay_max: Duration::from_millis(100),
            torn_writes: true,
            codec_sample: 0.01,
            ..FaultMix::none()
        }
    }

    /// Every fault type at high intensity (the mix of the `all` profile before randomisation).
    pub fn everything() -> FaultMix {
        FaultMix {
            loss: 0.05,
            duplicate: 0.05,
            reorder: 0.2,
            long_delay: 0.02,
            long_delay_max: Duration::from_millis(400),
            crashes: true,
            torn_writes: true,
            slow_disk: true,
            partitions: PartitionKind::ALL.to_vec(),
            fault_interval: Duration::from_millis(250),
            codec_sample: 0.05,
        }
    }

    /// Draws a mix for one seed.
    pub fn draw(profile: FaultProfile, rng: &mut impl Rng) -> FaultMix {
        let (p_on, scale) = match profile {
            FaultProfile::None => {
                let mut m = FaultMix::none();
                m.codec_sample = if rng.gen_bool(0.5) { 0.05 } else { 0.0 };
                return m;
            }
            FaultProfile::Light => (0.5, 0.25),
            FaultProfile::Heavy => (0.5, 1.0),
            FaultProfile::All => (1.0, 1.0),
        };
        let on = |rng: &mut dyn rand::RngCore| rng.gen_bool(p_on);
        let loss = if on(rng) {
            scale * rng.gen_range(0.005..0.15)
        } else {
            0.0
        };
        let duplicate = if on(rng) {
            scale * rng.gen_range(0.005..0.1)
        } else {
            0.0
        };
        let reorder = if on(rng) {
            scale * rng.gen_range(0.05..0.5)
        } else {
            0.0
        };
        let long_delay = if on(rng) {
            scale * rng.gen_range(0.002..0.05)
        } else {
            0.0
        };
        let crashes = on(rng);
        let torn_writes = rng.gen_bool(0.5);
        let slow_disk = rng.gen_bool(0.5);
        let partitions: Vec<PartitionKind> = if on(rng) {
            let mut v: Vec<PartitionKind> = PartitionKind::ALL
                .iter()
                .copied()
                .filter(|_| rng.gen_bool(0.5))
                .collect();
            if v.is_empty() {
                v.push(PartitionKind::ALL[rng.gen_range(0..PartitionKind::ALL.len())]);
            }
            v
        } else {
            Vec::new()
        };
        let mean_ms = if scale < 1.0 {
            rng.gen_range(400..1500)
        } else {
            rng.gen_range(80..600)
        };
        FaultMix {
            loss,
            duplicate,
            reorder,
            long_delay,
            long_delay_max: Duration::from_millis(rng.gen_range(50..600)),
            crashes,
            torn_writes,
            slow_disk,
            partitions,
            fault_interval: Duration::from_millis(mean_ms),
            codec_sample: if rng.gen_bool(0.5) {
                rng.gen_range(0.01..0.2)
            } else {
                0.0
            },
        }
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.partitions.iter().map(|k| format!("{k:?}")).collect();
        format!(
            "loss={:.3} dup={:.3} reorder={:.2} long_delay={:.3}/{}ms crashes={} torn={} slow_disk={} partitions=[{}] interval={}ms codec={:.2}",
            self.loss,
            self.duplicate,
            self.reorder,
            self.long_delay,
            self.long_delay_max.as_millis(),
            self.crashes,
            self.torn_writes,
            self.slow_disk,
            parts.join(","),
            self.fault_interval.as_millis(),
            self.codec_sample
        )
    }
}
