//! # paxos-election: swappable leader-election strategies for paxos-core
//!
//! Four strategies behind paxos-core's [`LeaderElection`] trait, each a plain sans-IO struct with
//! its own configuration (spec §§15, 16):
//!
//! | [`Strategy`] | struct | idea |
//! |---|---|---|
//! | `psb` | [`PsbViewChange`] | PSB's own view change: move on only when a majority suspects (re-exported from paxos-core) |
//! | `highest-id` | [`HighestIdAlive`] | heartbeats; leader = highest id heard recently |
//! | `omega` | [`Omega`] | heartbeats with epochs, adaptive timeouts; leader = fewest recoveries |
//! | `ble` | [`QuorumBallot`] | OmniPaxos-style ballots; only quorum-connected servers compete |
//!
//! Pick one by name and build it with [`build`]:
//!
//! ```
//! use paxos_election::{build, ElectionConfig, Strategy};
//! use paxos_core::NodeId;
//!
//! let strategy: Strategy = "omega".parse().unwrap();
//! let election = build(strategy, NodeId(0), 5, &ElectionConfig::default());
//! assert_eq!(election.name(), "omega");
//! ```
//!
//! Safety never depends on the strategy: a strategy only asks the core to `Install` or `Suspect`
//! views and answers `accepts_prepare`; Prepare and PrepareOk still carry the promises.
//!
//! The crate also holds the A/B experiment's pure parts: the [`scenario`] library, the
//! [`metrics`] computed from a sampled timeline with their report formats, the generic
//! [`experiment`] loop, and [`memnet`], a small in-memory cluster that runs it without the
//! simulator.

pub mod ble;
pub mod experiment;
pub mod highest_id;
pub mod memnet;
pub mod metrics;
pub mod omega;
mod oracle;
pub mod scenario;

pub use ble::{Ballot, BleConfig, BleMessage, QuorumBallot};
pub use experiment::{run_experiment, run_scenario, ClusterDriver, RunOptions, RunResult};
pub use highest_id::{HighestIdAlive, HighestIdConfig, HighestIdMessage};
pub use metrics::{strip, CellSummary, MetricsConfig, Report, RunMetrics, RunRecord, Sample};
pub use omega::{Omega, OmegaConfig, OmegaMessage};
pub use paxos_core::psb::{PsbConfig, PsbMessage, PsbViewChange};
pub use paxos_core::LeaderElection;
pub use scenario::{Action, Fault, FaultCursor, Scenario, ScenarioParams, Target, TimedFault};

use paxos_core::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

/// The selectable strategies.
///
/// Serialised as its command-line name (so a TOML or JSON configuration can say
/// `election = "omega"`); deserialisation accepts every name [`FromStr`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Strategy {
    /// PSB's view change (spec §5), [`PsbViewChange`]. Name: `psb`.
    PsbViewChange,
    /// Highest-id alive (spec §15.2), [`HighestIdAlive`]. Name: `highest-id`.
    HighestIdAlive,
    /// Ω for crash-recovery (spec §15.3), [`Omega`]. Name: `omega`.
    Omega,
    /// Quorum-connected ballots in the style of OmniPaxos BLE (spec §16.1), [`QuorumBallot`].
    /// Name: `ble`.
    QuorumBallot,
}

impl Strategy {
    /// Every strategy, in table order.
    pub const ALL: [Strategy; 4] = [
        Strategy::PsbViewChange,
        Strategy::HighestIdAlive,
        Strategy::Omega,
        Strategy::QuorumBallot,
    ];

    /// The command-line name: `psb`, `highest-id`, `omega` or `ble`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::PsbViewChange => "psb",
            Strategy::HighestIdAlive => "highest-id",
            Strategy::Omega => "omega",
            Strategy::QuorumBallot => "ble",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Strategy> for String {
    fn from(s: Strategy) -> String {
        s.name().to_string()
    }
}

impl TryFrom<String> for Strategy {
    type Error = ParseStrategyError;

    fn try_from(s: String) -> Result<Strategy, ParseStrategyError> {
        s.parse()
    }
}

/// A strategy name that names no strategy.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown election strategy {0:?} (expected one of: psb, highest-id, omega, ble)")]
pub struct ParseStrategyError(pub String);

impl FromStr for Strategy {
    type Err = ParseStrategyError;

    /// Parses a command-line name (case-insensitive); the long names `psb-view-change`,
    /// `highest-id-alive` and `quorum-ballot` are accepted too.
    fn from_str(s: &str) -> Result<Strategy, ParseStrategyError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "psb" | "psb-view-change" => Ok(Strategy::PsbViewChange),
            "highest-id" | "highest-id-alive" => Ok(Strategy::HighestIdAlive),
            "omega" => Ok(Strategy::Omega),
            "ble" | "quorum-ballot" => Ok(Strategy::QuorumBallot),
            _ => Err(ParseStrategyError(s.to_string())),
        }
    }
}

/// Every strategy's timers; [`build`] takes the ones of the strategy it builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ElectionConfig {
    /// PSB view change.
    pub psb: PsbConfig,
    /// Highest-id alive.
    pub highest_id: HighestIdConfig,
    /// Ω.
    pub omega: OmegaConfig,
    /// Quorum-connected ballots.
    pub ble: BleConfig,
}

impl ElectionConfig {
    /// Every strategy tuned to one failure-detection time `timeout`, for fair comparisons:
    /// heartbeats every `timeout / 5`; highest-id's and Ω's initial timeouts, BLE's round and PSB's
    /// base progress timer equal to `timeout` (PSB's cap is `20 × timeout`, Ω's `20 × timeout`);
    /// Prepare stalls retried after `2 × timeout`; PSB resends every `timeout / 5`.
    pub fn uniform(timeout: Duration) -> ElectionConfig {
        let hb = (timeout / 5).max(Duration::from_millis(1));
        ElectionConfig {
            psb: PsbConfig {
                progress_timeout: timeout,
                max_progress_timeout: timeout * 20,
                resend_interval: hb,
            },
            highest_id: HighestIdConfig {
                heartbeat_interval: hb,
                timeout,
                prepare_stall_timeout: timeout * 2,
            },
            omega: OmegaConfig {
                heartbeat_interval: hb,
                initial_timeout: timeout,
                timeout_increment: timeout / 2,
                max_timeout: timeout * 20,
                prepare_stall_timeout: timeout * 2,
            },
            ble: BleConfig {
                election_timeout: timeout,
                prepare_stall_timeout: timeout * 2,
            },
        }
    }
}

/// A strategy timer that cannot work.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ElectionConfigError {
    /// A timer is zero.
    #[error("election timer {field} must be positive")]
    Zero {
        /// The field, as `strategy.field`.
        field: &'static str,
    },
    /// A heartbeat period is not shorter than the timeout it feeds.
    #[error("{field} ({heartbeat:?}) must be shorter than the failure timeout ({timeout:?})")]
    HeartbeatTooSlow {
        /// The heartbeat field, as `strategy.field`.
        field: &'static str,
        /// Its value.
        heartbeat: Duration,
        /// The timeout it must fit in.
        timeout: Duration,
    },
    /// A cap is below the value it caps.
    #[error("{field} must not be below the base value it caps")]
    CapBelowBase {
        /// The cap field, as `strategy.field`.
        field: &'static str,
    },
}

impl ElectionConfig {
    /// Checks every strategy's timers once (call it where the configuration is loaded; [`build`]
    /// assumes a valid configuration but never panics on an invalid one).
    pub fn validate(&self) -> Result<(), ElectionConfigError> {
        use ElectionConfigError::*;
        let positive = [
            ("psb.progress_timeout", self.psb.progress_timeout),
            ("psb.resend_interval", self.psb.resend_interval),
            (
                "highest_id.heartbeat_interval",
                self.highest_id.heartbeat_interval,
            ),
            ("highest_id.timeout", self.highest_id.timeout),
            (
                "highest_id.prepare_stall_timeout",
                self.highest_id.prepare_stall_timeout,
            ),
            ("omega.heartbeat_interval", self.omega.heartbeat_interval),
            ("omega.initial_timeout", self.omega.initial_timeout),
            (
                "omega.prepare_stall_timeout",
                self.omega.prepare_stall_timeout,
            ),
            ("ble.election_timeout", self.ble.election_timeout),
            ("ble.prepare_stall_timeout", self.ble.prepare_stall_timeout),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(Zero { field });
        }
        let heartbeats = [
            (
                "highest_id.heartbeat_interval",
                self.highest_id.heartbeat_interval,
                self.highest_id.timeout,
            ),
            (
                "omega.heartbeat_interval",
                self.omega.heartbeat_interval,
                self.omega.initial_timeout,
            ),
        ];
        for (field, heartbeat, timeout) in heartbeats {
            if heartbeat >= timeout {
                return Err(HeartbeatTooSlow {
                    field,
                    heartbeat,
                    timeout,
                });
            }
        }
        if self.psb.max_progress_timeout < self.psb.progress_timeout {
            return Err(CapBelowBase {
                field: "psb.max_progress_timeout",
            });
        }
        if self.omega.max_timeout < self.omega.initial_timeout {
            return Err(CapBelowBase {
                field: "omega.max_timeout",
            });
        }
        Ok(())
    }
}

/// Builds strategy `strategy` for server `me` of a cluster of `servers`.
///
/// The box is `Send`, so a replica holding it can move between threads; it coerces to
/// `Box<dyn LeaderElection>` where that is wanted.
pub fn build(
    strategy: Strategy,
    me: NodeId,
    servers: usize,
    config: &ElectionConfig,
) -> Box<dyn LeaderElection + Send> {
    match strategy {
        Strategy::PsbViewChange => Box::new(PsbViewChange::new(me, servers, config.psb)),
        Strategy::HighestIdAlive => Box::new(HighestIdAlive::new(me, servers, config.highest_id)),
        Strategy::Omega => Box::new(Omega::new(me, servers, config.omega)),
        Strategy::QuorumBallot => Box::new(QuorumBallot::new(me, servers, config.ble)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_round_trips_names() {
        for s in Strategy::ALL {
            assert_eq!(s.to_string().parse::<Strategy>(), Ok(s));
            assert_eq!(s.name().to_uppercase().parse::<Strategy>(), Ok(s));
        }
        assert_eq!(
            "quorum-ballot".parse::<Strategy>(),
            Ok(Strategy::QuorumBallot)
        );
        for s in Strategy::ALL {
            let bytes = paxos_core::codec::encode(&s).unwrap();
            assert_eq!(paxos_core::codec::decode::<Strategy>(&bytes), Ok(s));
            let name = paxos_core::codec::encode(&s.name().to_string()).unwrap();
            assert_eq!(bytes, name, "serialised as its name");
        }
        let raft = paxos_core::codec::encode(&"raft".to_string()).unwrap();
        assert!(paxos_core::codec::decode::<Strategy>(&raft).is_err());
        assert_eq!(
            "raft".parse::<Strategy>(),
            Err(ParseStrategyError("raft".into()))
        );
    }

    #[test]
    fn config_validation_names_the_field() {
        assert_eq!(ElectionConfig::default().validate(), Ok(()));
        assert_eq!(
            ElectionConfig::uniform(Duration::from_millis(50)).validate(),
            Ok(())
        );
        let mut c = ElectionConfig::default();
        c.ble.election_timeout = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ElectionConfigError::Zero {
                field: "ble.election_timeout"
            })
        );
        let mut c = ElectionConfig::default();
        c.omega.heartbeat_interval = c.omega.initial_timeout;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("omega.heartbeat_interval"));
        let mut c = ElectionConfig::default();
        c.psb.max_progress_timeout = Duration::from_secs(1);
        assert_eq!(
            c.validate(),
            Err(ElectionConfigError::CapBelowBase {
                field: "psb.max_progress_timeout"
            })
        );
    }

    #[test]
    fn build_makes_the_named_strategy() {
        let cfg = ElectionConfig::uniform(Duration::from_millis(500));
        let names: Vec<&str> = Strategy::ALL
            .iter()
            .map(|s| build(*s, NodeId(1), 3, &cfg).name())
            .collect();
        assert_eq!(names, vec!["psb-view-change", "highest-id", "omega", "ble"]);
        let _: Box<dyn LeaderElection> = build(Strategy::Omega, NodeId(0), 3, &cfg);
    }
}
