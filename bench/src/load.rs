//! The in-crate load generator, for what oha cannot send: a different bearer token per request,
//! unique registrations, refresh tokens chained from each answer. Closed loop (each worker sends
//! its next request when the last is answered: the capacity) or open loop (request k is due at
//! start + k / rate whatever the answers do, and a late request's latency counts from its due
//! time, so queueing is not hidden: where the p99 goals are judged).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const PASSWORD: &str = "correct horse battery staple";

/// What one run measured.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub secs: f64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// p99 of the 2xx answers and of the others (oha's breakdown, for the overload goal).
    pub ok_p99_ms: Option<f64>,
    pub refused_p99_ms: Option<f64>,
    /// Open loop: requests scheduled, and how late the last one went out (ms).
    pub offered: Option<u64>,
    pub behind_ms: Option<f64>,
}

impl Measurement {
    pub fn ok(&self) -> u64 {
        self.statuses.range(200..300).map(|(_, n)| n).sum()
    }

    /// Requests sent: answered with any status, or failed.
    pub fn sent(&self) -> u64 {
        self.statuses.values().chain(self.errors.values()).sum()
    }

    /// 2xx answers per second.
    pub fn rps(&self) -> f64 {
        self.ok() as f64 / self.secs.max(1e-9)
    }

    pub fn answers(&self) -> String {
        let codes = self.statuses.iter().map(|(s, n)| format!("{s}×{n}"));
        let errors = self.errors.iter().map(|(e, n)| format!("{e}×{n}"));
        codes.chain(errors).collect::<Vec<_>>().join(", ")
    }

    /// Why an open loop's p99 cannot be judged: under 99% of the offered requests answered 2xx,
    /// or the generator's last request went out later than 1% of the run after its due time.
    pub fn shortfall(&self, offered: u64) -> Option<String> {
        let ok = self.ok();
        if (ok as f64) < 0.99 * offered as f64 {
            return Some(format!("{ok} of {offered} offered answered 2xx"));
        }
        match self.behind_ms {
            Some(b) if b > 10.0 * self.secs => Some(format!("the generator fell {b:.0} ms behind")),
            _ => None,
        }
    }
}

/// The nearest-rank `q` quantile of sorted values.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// When requests go out.
#[derive(Clone)]
pub enum Pace {
    Closed(Instant),
    Open(Arc<Schedule>),
}

pub struct Schedule {
    next: AtomicU64,
    total: u64,
    interval: Duration,
    start: tokio::time::Instant,
    last_late_us: AtomicU64,
}

impl Pace {
    pub fn closed(run: Duration) -> Self {
        Self::Closed(Instant::now() + run)
    }

    pub fn open(rate: f64, run: Duration) -> Result<Self> {
        if !rate.is_finite() || rate <= 0.0 {
            bail!("an open loop needs a positive rate, not {rate}");
        }
        Ok(Self::Open(Arc::new(Schedule {
            next: AtomicU64::new(0),
            total: (rate * run.as_secs_f64()).round() as u64,
            interval: Duration::from_secs_f64(1.0 / rate),
            start: tokio::time::Instant::now(),
            last_late_us: AtomicU64::new(0),
        })))
    }

    /// Waits for the next request's turn; returns what its latency counts from (the due time
    /// when this worker is late, else the moment it woke, so the timer's granularity is not
    /// charged to the server), or `None` when the run is over.
    pub async fn next(&self) -> Option<Instant> {
        let s = match self {
            Self::Closed(until) => return (Instant::now() < *until).then(Instant::now),
            Self::Open(s) => s,
        };
        let k = s.next.fetch_add(1, Ordering::Relaxed);
        if k >= s.total {
            return None;
        }
        let due = s.start + s.interval.mul_f64(k as f64);
        let now = tokio::time::Instant::now();
        if k + 1 == s.total {
            let late = now.saturating_duration_since(due).as_micros() as u64;
            s.last_late_us.store(late, Ordering::Relaxed);
        }
        if now >= due {
            return Some(due.into_std());
        }
        tokio::time::sleep_until(due).await;
        Some(Instant::now())
    }

    fn finish(&self, m: &mut Measurement) {
        if let Self::Open(s) = self {
            m.offered = Some(s.total);
            let sent = s.next.load(Ordering::Relaxed) >= s.total;
            let whole = s.interval.mul_f64(s.total as f64).as_secs_f64() * 1e3;
            let late = s.last_late_us.load(Ordering::Relaxed) as f64 / 1e3;
            m.behind_ms = Some(if sent { late } else { whole });
        }
    }
}

/// A request's outcome: its status, or the kind of error.
pub type Outcome = Result<u16, String>;

/// Runs one worker per state, each taking turns from `pace` and calling `send` with its state.
pub async fn drive<S, F, Fut>(pace: Pace, states: Vec<S>, send: F) -> Result<(Measurement, Vec<S>)>
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (S, Outcome)> + Send + 'static,
{
    let send = Arc::new(send);
    let started = Instant::now();
    let tasks: Vec<_> = states
        .into_iter()
        .map(|mut state| {
            let (pace, send) = (pace.clone(), send.clone());
            tokio::spawn(async move {
                let (mut lat, mut m) = (Vec::new(), Measurement::default());
                while let Some(since) = pace.next().await {
                    let (next, outcome) = send(state).await;
                    state = next;
                    match outcome {
                        Ok(status) => {
                            lat.push(since.elapsed().as_micros() as u64);
                            *m.statuses.entry(status).or_default() += 1;
                        }
                        Err(kind) => *m.errors.entry(kind).or_default() += 1,
                    }
                }
                (state, lat, m)
            })
        })
        .collect();
    let (mut all, mut total, mut states) = (Vec::new(), Measurement::default(), Vec::new());
    for task in tasks {
        let (state, lat, m) = task.await.context("load task panicked")?;
        states.push(state);
        all.extend(lat);
        for (s, n) in m.statuses {
            *total.statuses.entry(s).or_default() += n;
        }
        for (e, n) in m.errors {
            *total.errors.entry(e).or_default() += n;
        }
    }
    total.secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    total.p50_ms = quantile(&all, 0.50).map(|us| us as f64 / 1e3);
    total.p99_ms = quantile(&all, 0.99).map(|us| us as f64 / 1e3);
    pace.finish(&mut total);
    Ok((total, states))
}

pub fn client(pool: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(pool.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Sends `req` and reads the whole answer.
async fn exchange(req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), String> {
    let kind = |e: reqwest::Error| {
        if e.is_timeout() {
            "timeout".to_owned()
        } else if e.is_connect() {
            "connect error".to_owned()
        } else {
            "request error".to_owned()
        }
    };
    let resp = req.send().await.map_err(kind)?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(kind)?;
    Ok((status, body.to_vec()))
}

/// GET `url` from `workers` workers, each request carrying the next of `tokens` (round-robin over
/// all workers, so one token comes back every `tokens.len()` requests); no token: no header.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    tokens: &[String],
    workers: usize,
    pace: Pace,
) -> Result<Measurement> {
    let auths: Vec<HeaderValue> = tokens
        .iter()
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")).context("token in a header"))
        .collect::<Result<_>>()?;
    let (auths, turn) = (Arc::new(auths), Arc::new(AtomicUsize::new(0)));
    let (client, url) = (client.clone(), url.to_owned());
    let send = move |()| {
        let mut req = client.get(&url);
        if !auths.is_empty() {
            let i = turn.fetch_add(1, Ordering::Relaxed) % auths.len();
            req = req.header(AUTHORIZATION, auths[i].clone());
        }
        async move { ((), exchange(req).await.map(|(s, _)| s)) }
    };
    Ok(drive(pace, vec![(); workers.max(1)], send).await?.0)
}

/// POST `bodies` (JSON, round-robin over all workers) to `url`, with a bearer token if given.
pub async fn post_bodies(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    bodies: &[String],
    workers: usize,
    pace: Pace,
) -> Result<Measurement> {
    let auth = token
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")).context("token in a header"))
        .transpose()?;
    let bodies: Arc<Vec<String>> = Arc::new(bodies.to_vec());
    let turn = Arc::new(AtomicUsize::new(0));
    let (client, url) = (client.clone(), url.to_owned());
    let send = move |()| {
        let i = turn.fetch_add(1, Ordering::Relaxed) % bodies.len().max(1);
        let mut req = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bodies.get(i).cloned().unwrap_or_default());
        if let Some(auth) = &auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        async move { ((), exchange(req).await.map(|(s, _)| s)) }
    };
    Ok(drive(pace, vec![(); workers.max(1)], send).await?.0)
}

/// Registrations with unique emails.
pub async fn register(
    client: &reqwest::Client,
    base: &str,
    run_id: &str,
    workers: usize,
    pace: Pace,
) -> Result<Measurement> {
    let (client, url, run_id) = (
        client.clone(),
        format!("{base}/v1/auth/register"),
        run_id.to_owned(),
    );
    let n = Arc::new(AtomicU64::new(0));
    let send = move |()| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "email": format!("reg-{run_id}-{i}@example.com"), "password": PASSWORD, "display_name": "Bench" });
        let req = client.post(&url).json(&body);
        async move { ((), exchange(req).await.map(|(s, _)| s)) }
    };
    Ok(drive(pace, vec![(); workers.max(1)], send).await?.0)
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
}

/// POSTs `body` until it is answered `want`; 429/503 (the password pool full) are retried.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
    want: u16,
) -> Result<Vec<u8>> {
    for attempt in 1..=6u64 {
        let (status, answer) = exchange(client.post(url).json(&body))
            .await
            .map_err(anyhow::Error::msg)?;
        if status == want {
            return Ok(answer);
        }
        if !matches!(status, 429 | 503) {
            bail!("POST {url}: {status}: {}", String::from_utf8_lossy(&answer));
        }
        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
    }
    bail!("POST {url}: still refused after 6 attempts")
}

pub async fn sign_up(client: &reqwest::Client, base: &str, email: &str) -> Result<()> {
    let body = json!({ "email": email, "password": PASSWORD, "display_name": "Bench" });
    post(client, &format!("{base}/v1/auth/register"), body, 201)
        .await
        .map(drop)
}

pub async fn sign_in(client: &reqwest::Client, base: &str, email: &str) -> Result<TokenPair> {
    let body = json!({ "email": email, "password": PASSWORD });
    let answer = post(client, &format!("{base}/v1/auth/login"), body, 200).await?;
    serde_json::from_slice(&answer).context("login answer")
}

/// `n` new users (`me-<run_id>-<i>`), each registered and signed in once, a few at a time.
pub async fn new_users(
    client: &reqwest::Client,
    base: &str,
    run_id: &str,
    n: usize,
) -> Result<Vec<String>> {
    stream::iter(0..n)
        .map(|i| async move {
            let email = format!("me-{run_id}-{i}@example.com");
            sign_up(client, base, &email).await?;
            Ok::<_, anyhow::Error>(sign_in(client, base, &email).await?.access_token)
        })
        .buffer_unordered(8)
        .try_collect()
        .await
}

/// `n` sessions of `email`.
pub async fn sessions(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    n: usize,
) -> Result<Vec<TokenPair>> {
    stream::iter(0..n)
        .map(|_| sign_in(client, base, email))
        .buffer_unordered(4)
        .try_collect()
        .await
}

/// The single-use check of the refresh scenario.
#[derive(Debug, Default)]
pub struct ReuseCheck {
    pub presented: u64,
    pub races: u64,
    pub replays: u64,
    /// 200 answers for a token already presented, and refresh tokens handed out twice: both 0.
    pub accepted_twice: u64,
    pub issued_twice: u64,
}

struct Chain {
    current: String,
    previous: Option<String>,
    /// Every token presented and whether it was accepted; every refresh token received.
    presented: Vec<(String, bool)>,
    issued: Vec<String>,
}

/// Each session chains refreshes, always presenting the token from its previous answer (a chain
/// whose token's fate is unknown signs in again rather than risk presenting a used token). After
/// the timed part, half the chains present their current token twice at once and the other half
/// replay their previous one: any second acceptance is counted.
pub async fn refresh(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    pairs: Vec<TokenPair>,
    pace: Pace,
) -> Result<(Measurement, ReuseCheck)> {
    let url = format!("{base}/v1/auth/refresh");
    let chains = pairs
        .into_iter()
        .map(|p| Chain {
            current: p.refresh_token.clone(),
            previous: None,
            presented: vec![],
            issued: vec![p.refresh_token],
        })
        .collect();
    let (c, u, b, e) = (
        client.clone(),
        url.clone(),
        base.to_owned(),
        email.to_owned(),
    );
    let send = move |mut chain: Chain| {
        let (client, url, base, email) = (c.clone(), u.clone(), b.clone(), e.clone());
        async move {
            let token = chain.current.clone();
            let answer = exchange(client.post(&url).json(&json!({ "refresh_token": token }))).await;
            let next = match &answer {
                Ok((200, body)) => serde_json::from_slice::<TokenPair>(body).ok(),
                _ => None,
            };
            chain.presented.push((token, next.is_some()));
            match next {
                Some(pair) => {
                    chain.issued.push(pair.refresh_token.clone());
                    chain.previous =
                        Some(std::mem::replace(&mut chain.current, pair.refresh_token));
                }
                None => match sign_in(&client, &base, &email).await {
                    Ok(pair) => {
                        chain.issued.push(pair.refresh_token.clone());
                        (chain.current, chain.previous) = (pair.refresh_token, None);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                },
            }
            (chain, answer.map(|(s, _)| s))
        }
    };
    let (m, chains) = drive(pace, chains, send).await?;

    let mut check = ReuseCheck::default();
    let mut accepted: HashMap<&str, u64> = HashMap::new();
    let mut issued = HashSet::new();
    for chain in &chains {
        check.presented += chain.presented.len() as u64;
        for (token, ok) in &chain.presented {
            *accepted.entry(token).or_default() += u64::from(*ok);
        }
        check.issued_twice += chain
            .issued
            .iter()
            .filter(|t| !issued.insert(t.as_str()))
            .count() as u64;
    }
    check.accepted_twice = accepted.values().map(|n| n.saturating_sub(1)).sum();
    let status = |token: &str| {
        let req = client.post(&url).json(&json!({ "refresh_token": token }));
        async move {
            exchange(req)
                .await
                .map(|(s, _)| s)
                .map_err(anyhow::Error::msg)
        }
    };
    for (i, chain) in chains.iter().enumerate() {
        match &chain.previous {
            Some(prev) if i % 2 == 1 => {
                check.replays += 1;
                check.accepted_twice += u64::from(status(prev).await? == 200);
            }
            _ => {
                check.races += 1;
                let (a, b) = tokio::join!(status(&chain.current), status(&chain.current));
                check.accepted_twice += u64::from(a? == 200 && b? == 200);
            }
        }
    }
    Ok((m, check))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(
            (quantile(&v, 0.5), quantile(&v, 0.99)),
            (Some(50), Some(99))
        );
        assert_eq!((quantile(&[7], 0.99), quantile(&[], 0.5)), (Some(7), None));
    }

    #[tokio::test]
    async fn an_open_loop_sends_what_it_scheduled_and_counts_late_requests_from_their_due_time() {
        let pace = Pace::open(100.0, Duration::from_millis(200)).unwrap();
        // One worker that takes 30 ms a request cannot keep up with one every 10 ms.
        let slow = |()| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            ((), Ok(200))
        };
        let (m, _) = drive(pace, vec![()], slow).await.unwrap();
        assert_eq!((m.ok(), m.offered), (20, Some(20)));
        assert!(
            m.p99_ms.unwrap() > 300.0,
            "queueing counted: {:?}",
            m.p99_ms
        );
        assert!(m.shortfall(20).is_some(), "fell behind");
    }
}
