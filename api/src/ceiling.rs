//! `tessera ceiling refresh`: refresh-token rotation through the service layer, with no HTTP in
//! front. The HTTP refresh benchmark is compared with it: what is left between the two is actix,
//! the JSON and the connection handling; what it costs itself is the database statement (one
//! durable commit per refresh) and the access token's signature.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Serialize;
use service::auth::AuthService;
use service::domain::Email;
use service::error::ServiceError;
use service::{AppContext, RequestMeta};

/// How to drive the rotations: `sessions` chains, each signed in once and refreshed with the token
/// its previous refresh returned, for `duration`; closed loop without `rate`, else open loop.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPlan {
    pub sessions: usize,
    pub duration: Duration,
    /// Refreshes per second offered on a fixed schedule: refresh k is due at start + k / rate and
    /// taken by whichever chain is free; its latency counts from the due time.
    pub rate: Option<f64>,
}

/// What one run measured; printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshCeiling {
    pub sessions: usize,
    pub rate: Option<f64>,
    pub seconds: f64,
    /// Successful rotations in the timed part.
    pub refreshes: u64,
    /// Refreshes that returned an error (each ends its chain).
    pub failures: u64,
    pub per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Open loop: how late the last refresh started after its due time (0 when on time).
    pub behind_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("signing in the ceiling's sessions: {0}")]
    SignIn(ServiceError),
    #[error("the plan needs at least one session, a duration and a positive rate")]
    Plan,
    #[error("a refresh task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Signs `plan.sessions` sessions in as `email`, then rotates their refresh tokens as planned.
pub async fn refresh(
    ctx: &AppContext,
    email: &Email,
    password: &SecretString,
    plan: RefreshPlan,
) -> Result<RefreshCeiling, CeilingError> {
    if plan.sessions == 0 || plan.duration.is_zero() || plan.rate.is_some_and(|r| r <= 0.0) {
        return Err(CeilingError::Plan);
    }
    let meta = Arc::new(RequestMeta {
        ip: Some("127.0.0.1".into()),
        user_agent: Some("tessera-ceiling".into()),
        request_id: None,
    });
    let mut chains = Vec::with_capacity(plan.sessions);
    for _ in 0..plan.sessions {
        let issued = AuthService::login(ctx, &meta, email, password)
            .await
            .map_err(CeilingError::SignIn)?;
        chains.push(issued.refresh_token);
    }

    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + plan.duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(chains.len());
    for mut token in chains {
        let (ctx, meta, next) = (ctx.clone(), meta.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut chain = Chain::default();
            tokio::time::sleep_until(start.into()).await;
            loop {
                let due = match plan.rate {
                    Some(rate) => {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        start + Duration::from_secs_f64(k as f64 / rate)
                    }
                    None => Instant::now(),
                };
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                chain.behind = Instant::now().saturating_duration_since(due);
                match AuthService::refresh(&ctx, &meta, &token).await {
                    Ok(issued) => {
                        chain.latencies_us.push(due.elapsed().as_micros() as u64);
                        token = issued.refresh_token;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "ceiling refresh failed; its chain ends");
                        chain.failures += 1;
                        break;
                    }
                }
            }
            chain
        }));
    }

    let mut latencies = Vec::new();
    let (mut failures, mut behind) = (0, Duration::ZERO);
    for task in tasks {
        let chain = task.await?;
        latencies.extend(chain.latencies_us);
        failures += chain.failures;
        behind = behind.max(chain.behind);
    }
    let seconds = plan.duration.as_secs_f64();
    latencies.sort_unstable();
    let ms = |q: f64| percentile(&latencies, q).map(|us| us as f64 / 1000.0);
    Ok(RefreshCeiling {
        sessions: plan.sessions,
        rate: plan.rate,
        seconds,
        refreshes: latencies.len() as u64,
        failures,
        per_sec: latencies.len() as f64 / seconds,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        max_ms: latencies.last().map(|us| *us as f64 / 1000.0),
        behind_ms: behind.as_secs_f64() * 1000.0,
    })
}

#[derive(Default)]
struct Chain {
    latencies_us: Vec<u64>,
    failures: u64,
    behind: Duration,
}

/// The nearest-rank `q` quantile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted.get(rank.min(last)).copied()
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), Some(50));
        assert_eq!(percentile(&values, 0.99), Some(99));
        assert_eq!(percentile(&values, 1.0), Some(100));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
