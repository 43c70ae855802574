//! `tessera ceiling refresh`: refresh-token rotation through the service layer, with no HTTP in
//! front. The HTTP refresh benchmark is compared with it: what it costs is the database statement
//! (one durable commit per refresh), the access token's signature and the tokio tasks that drive
//! it; what the HTTP runs add on top is actix, the JSON, the connections and the HTTP client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Serialize;

use crate::auth::AuthService;
use crate::domain::Email;
use crate::error::ServiceError;
use crate::{AppContext, RequestMeta};

/// How to drive the rotations: `sessions` chains, each signed in once and refreshed with the token
/// its previous refresh returned, for `duration`; closed loop without `rate`, else open loop.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPlan {
    pub sessions: usize,
    pub duration: Duration,
    /// Refreshes per second offered on a fixed schedule: round(rate × duration) refreshes, refresh
    /// k due at start + k / rate and taken by whichever chain is free.
    pub rate: Option<f64>,
}

/// What one run measured; printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshCeiling {
    pub sessions: usize,
    pub rate: Option<f64>,
    /// From the start of the timed part to the last answer.
    pub seconds: f64,
    /// Successful rotations in the timed part.
    pub refreshes: u64,
    /// Refreshes that returned an error (each ends its chain).
    pub failures: u64,
    /// `refreshes / seconds`.
    pub per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Open loop: how late the last scheduled refresh went out (the whole duration if it never
    /// did, its chains having failed); 0 in a closed loop.
    pub behind_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("signing in the ceiling's sessions: {0}")]
    SignIn(ServiceError),
    #[error("the plan needs at least one session, a duration, and a finite positive rate")]
    Plan,
    #[error("a refresh task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// When refreshes go out. Closed loop: each chain sends its next refresh as soon as the previous
/// one is answered, timed from sending. Open loop: refresh k is due at start + k × interval; a
/// chain free before that waits and times it from its wake-up (the timer's granularity is not
/// charged to the service), a chain free only later sends it at once and times it from the due
/// time (the wait for a free chain is) — as the HTTP benchmark's generator does.
#[derive(Debug)]
struct Schedule {
    start: Instant,
    open: Option<OpenLoop>,
    deadline: Instant,
    next: AtomicU64,
    /// Open loop: how late (µs) the last refresh went out, once it has.
    last_late_us: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct OpenLoop {
    total: u64,
    interval: Duration,
}

/// The next refresh a free chain sends. Closed loop: no due time, sent at once and timed from
/// sending. Open loop: `early` ones wait for `due` and are timed from sending, the others go out
/// at once and are timed from `due`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    due: Option<Instant>,
    early: bool,
    /// The schedule's last refresh (its lateness is the run's `behind_ms`).
    last: bool,
}

impl Slot {
    /// What the latency of a refresh sent at `sent` counts from.
    fn counted_from(&self, sent: Instant) -> Instant {
        match self.due {
            Some(due) if !self.early => due,
            _ => sent,
        }
    }
}

impl Schedule {
    fn new(plan: &RefreshPlan, start: Instant) -> Result<Self, CeilingError> {
        if plan.sessions == 0 || plan.duration.is_zero() {
            return Err(CeilingError::Plan);
        }
        let open = match plan.rate {
            None => None,
            Some(rate) if rate.is_finite() && rate > 0.0 => {
                let total = (rate * plan.duration.as_secs_f64()).round();
                // A rate so small that nothing is due, or so large that the interval is below
                // a nanosecond, is not a schedule.
                if !(1.0..=1e12).contains(&total) || 1.0 / rate < 1e-9 {
                    return Err(CeilingError::Plan);
                }
                Some(OpenLoop {
                    total: total as u64,
                    interval: Duration::from_secs_f64(1.0 / rate),
                })
            }
            Some(_) => return Err(CeilingError::Plan),
        };
        Ok(Self {
            start,
            open,
            deadline: start + plan.duration,
            next: AtomicU64::new(0),
            last_late_us: AtomicU64::new(0),
        })
    }

    /// The same schedule, starting at `start` instead.
    fn begin_at(self, start: Instant) -> Self {
        Self {
            deadline: start + (self.deadline - self.start),
            start,
            ..self
        }
    }

    /// The next refresh for a chain free at `now`; `None` once the run is over.
    fn take(&self, now: Instant) -> Option<Slot> {
        let Some(open) = self.open else {
            return (now < self.deadline).then_some(Slot {
                due: None,
                early: false,
                last: false,
            });
        };
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        if k >= open.total {
            return None;
        }
        let due = self.start + open.interval.mul_f64(k as f64);
        Some(Slot {
            due: Some(due),
            early: now < due,
            last: k + 1 == open.total,
        })
    }

    fn behind_ms(&self) -> f64 {
        match self.open {
            None => 0.0,
            Some(open) if self.next.load(Ordering::Relaxed) < open.total => {
                open.interval.mul_f64(open.total as f64).as_secs_f64() * 1e3
            }
            Some(_) => self.last_late_us.load(Ordering::Relaxed) as f64 / 1e3,
        }
    }
}

/// Signs `plan.sessions` sessions in as `email`, then rotates their refresh tokens as planned.
pub async fn refresh(
    ctx: &AppContext,
    email: &Email,
    password: &SecretString,
    plan: RefreshPlan,
) -> Result<RefreshCeiling, CeilingError> {
    // Checked before anyone signs in; started once they have.
    let schedule = Schedule::new(&plan, Instant::now())?;
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
    let schedule = Arc::new(schedule.begin_at(start));
    let mut tasks = Vec::with_capacity(chains.len());
    for mut token in chains {
        let (ctx, meta, schedule) = (ctx.clone(), meta.clone(), schedule.clone());
        tasks.push(tokio::spawn(async move {
            let mut chain = Chain::default();
            tokio::time::sleep_until(start.into()).await;
            while let Some(slot) = schedule.take(Instant::now()) {
                if let (Some(due), true) = (slot.due, slot.early) {
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                if let (Some(due), true) = (slot.due, slot.last) {
                    let late = sent.saturating_duration_since(due);
                    schedule
                        .last_late_us
                        .store(late.as_micros() as u64, Ordering::Relaxed);
                }
                let result = AuthService::refresh(&ctx, &meta, &token).await;
                let done = Instant::now();
                chain.last_answer = Some(done);
                match result {
                    Ok(issued) => {
                        let from = slot.counted_from(sent);
                        chain.latencies_us.push((done - from).as_micros() as u64);
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
    let (mut failures, mut last_answer) = (0, start);
    for task in tasks {
        let chain = task.await?;
        latencies.extend(chain.latencies_us);
        failures += chain.failures;
        last_answer = last_answer.max(chain.last_answer.unwrap_or(start));
    }
    let seconds = (last_answer - start).as_secs_f64().max(1e-6);
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
        behind_ms: schedule.behind_ms(),
    })
}

#[derive(Default)]
struct Chain {
    latencies_us: Vec<u64>,
    failures: u64,
    last_answer: Option<Instant>,
}

/// The nearest-rank `q` quantile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: Option<f64>, millis: u64) -> RefreshPlan {
        RefreshPlan {
            sessions: 2,
            duration: Duration::from_millis(millis),
            rate,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), Some(50));
        assert_eq!(percentile(&values, 0.99), Some(99));
        assert_eq!(percentile(&values, 1.0), Some(100));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn closed_loop_sends_at_once_until_the_deadline() {
        let start = Instant::now();
        let s = Schedule::new(&plan(None, 1000), start).expect("plan");
        let slot = s.take(start).expect("a slot");
        assert_eq!((slot.due, slot.early), (None, false));
        let sent = start + Duration::from_millis(3);
        assert_eq!(slot.counted_from(sent), sent);
        assert!(s.take(start + Duration::from_millis(999)).is_some());
        assert!(s.take(start + Duration::from_millis(1000)).is_none());
        assert_eq!(s.behind_ms(), 0.0);
    }

    #[test]
    fn open_loop_waits_when_early_and_counts_from_due_when_late() {
        let start = Instant::now();
        // 10/s for 1 s: ten refreshes, due at 0, 100, …, 900 ms.
        let s = Schedule::new(&plan(Some(10.0), 1000), start).expect("plan");
        let ms = |n| start + Duration::from_millis(n);
        let first = s.take(start).expect("k = 0");
        assert_eq!((first.due, first.early), (Some(start), false), "due now");
        let second = s.take(ms(10)).expect("k = 1");
        assert_eq!((second.due, second.early), (Some(ms(100)), true));
        assert_eq!(second.counted_from(ms(101)), ms(101), "early: from sending");
        let third = s.take(ms(450)).expect("k = 2");
        assert_eq!((third.due, third.early), (Some(ms(200)), false));
        assert_eq!(
            third.counted_from(ms(450)),
            ms(200),
            "late: from its due time"
        );
        let rest: Vec<Slot> = std::iter::from_fn(|| s.take(start)).collect();
        assert_eq!(rest.len(), 7, "round(rate × duration) in all");
        assert!(rest.last().is_some_and(|slot| slot.last));
        assert!(rest.iter().rev().skip(1).all(|slot| !slot.last));
    }

    #[test]
    fn behind_is_the_whole_run_until_the_last_refresh_went_out() {
        let start = Instant::now();
        let s = Schedule::new(&plan(Some(4.0), 1000), start).expect("plan");
        assert_eq!(s.behind_ms(), 1000.0);
        for _ in 0..4 {
            s.take(start);
        }
        s.last_late_us.store(1500, Ordering::Relaxed);
        assert_eq!(s.behind_ms(), 1.5);
    }

    #[test]
    fn plans_that_are_not_schedules_are_refused() {
        let start = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-9, 1e13] {
            assert!(
                matches!(
                    Schedule::new(&plan(Some(rate), 1000), start),
                    Err(CeilingError::Plan)
                ),
                "rate {rate}"
            );
        }
        let no_sessions = RefreshPlan {
            sessions: 0,
            ..plan(None, 1000)
        };
        assert!(Schedule::new(&no_sessions, start).is_err());
        assert!(Schedule::new(&plan(None, 0), start).is_err());
    }

    #[test]
    fn a_schedule_begun_later_keeps_its_length() {
        let early = Instant::now();
        let later = early + Duration::from_secs(5);
        let s = Schedule::new(&plan(None, 1000), early)
            .expect("plan")
            .begin_at(later);
        assert!(s.take(later + Duration::from_millis(999)).is_some());
        assert!(s.take(later + Duration::from_millis(1000)).is_none());
        let s = Schedule::new(&plan(Some(10.0), 1000), early)
            .expect("plan")
            .begin_at(later);
        assert_eq!(s.take(later).and_then(|slot| slot.due), Some(later));
    }
}
