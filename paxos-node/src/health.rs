//! `/healthz` and `/readyz` on the metrics endpoint: whether the server is alive, and whether it
//! should be sent clients.
//!
//! - healthz: the driver loop is alive, meaning it finished a round within [`ALIVE_WITHIN`] of
//!   the request (it runs one at least every tick, so a live loop answers within milliseconds).
//! - readyz: healthy, a member of an installed view (leader or follower), not receiving a
//!   snapshot, and at most [`READY_MAX_LAG`] slots behind the highest aru it has heard of.
//!
//! Either answers `200 OK` with `ok`, or `503 Service Unavailable` with a one-line reason.

use crate::metrics::NodeMetrics;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long healthz waits for the driver loop to finish a round.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(1);

/// Most slots a ready server may be behind the highest aru announced to it. Four windows at
/// the default window of 256: a follower under load trails the leader by about one pipeline,
/// while a server still catching up after an absence is thousands of slots behind.
pub const READY_MAX_LAG: u64 = 1024;

/// Whether the driver loop is alive: `Err` holds the reason when not.
pub async fn healthz(metrics: &NodeMetrics) -> Result<(), String> {
    let before = metrics.driver_rounds.load(Ordering::Relaxed);
    let advanced = async {
        while metrics.driver_rounds.load(Ordering::Relaxed) == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(ALIVE_WITHIN, advanced)
        .await
        .map_err(|_| {
            format!(
                "driver loop finished no round in {} ms",
                ALIVE_WITHIN.as_millis()
            )
        })
}

/// Whether this server is ready for clients: `Err` holds the reason when not.
pub async fn readyz(metrics: &NodeMetrics) -> Result<(), String> {
    healthz(metrics).await?;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    if g(&metrics.in_view) == 0 {
        return Err("not a member of an installed view (leader election)".into());
    }
    if g(&metrics.receiving_snapshot) != 0 {
        return Err("receiving a snapshot".into());
    }
    let lag = g(&metrics.max_peer_aru).saturating_sub(g(&metrics.aru));
    if lag > READY_MAX_LAG {
        return Err(format!(
            "{lag} slots behind the highest known aru (ready at {READY_MAX_LAG} or fewer)"
        ));
    }
    Ok(())
}

/// The HTTP status line and body of a health answer.
pub(crate) fn answer(r: Result<(), String>) -> (&'static str, String) {
    match r {
        Ok(()) => ("200 OK", "ok\n".into()),
        Err(why) => ("503 Service Unavailable", format!("{why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_driver_is_unhealthy_and_a_server_out_of_view_unready() {
        let m = NodeMetrics::default();
        assert!(healthz(&m).await.unwrap_err().contains("no round"));
        assert!(readyz(&m).await.is_err());
    }

    #[tokio::test]
    async fn readiness_needs_a_view_no_transfer_and_little_lag() {
        let m = std::sync::Arc::new(NodeMetrics::default());
        let driver = {
            let m = m.clone();
            tokio::spawn(async move {
                loop {
                    m.driver_rounds.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        assert_eq!(healthz(&m).await, Ok(()));
        assert!(readyz(&m).await.unwrap_err().contains("installed view"));
        m.in_view.store(1, Ordering::Relaxed);
        assert_eq!(readyz(&m).await, Ok(()));
        m.receiving_snapshot.store(1, Ordering::Relaxed);
        assert!(readyz(&m).await.unwrap_err().contains("snapshot"));
        m.receiving_snapshot.store(0, Ordering::Relaxed);
        m.max_peer_aru.store(READY_MAX_LAG + 1, Ordering::Relaxed);
        assert!(readyz(&m).await.unwrap_err().contains("behind"));
        m.aru.store(1, Ordering::Relaxed);
        assert_eq!(readyz(&m).await, Ok(()));
        driver.abort();
    }
}
