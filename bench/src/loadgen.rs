//! The in-crate load generator for requests that cannot repeat (unique registrations, chained
//! refresh tokens, one bearer token after another): a fixed number of virtual clients, each
//! sending its next request as soon as the previous one is answered, every latency kept and
//! sorted for the percentiles. [`get_load_at_rate`] is the open-loop variant: requests go out on
//! a fixed schedule whatever the answers, and latencies count from the scheduled moment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use serde_json::json;

use crate::measure::{quantile, Measurement};

pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
}

pub fn client(pool: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(pool.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

pub async fn register(client: &reqwest::Client, base: &str, email: &str) -> Result<()> {
    let resp = client
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({ "email": email, "password": PASSWORD, "display_name": "Bench User" }))
        .send()
        .await?;
    let status = resp.status();
    if status.as_u16() != 201 {
        bail!(
            "register {email}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn login(client: &reqwest::Client, base: &str, email: &str) -> Result<TokenPair> {
    let resp = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await?;
    let status = resp.status();
    if status.as_u16() != 200 {
        bail!(
            "login {email}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    resp.json().await.context("login response")
}

/// What one virtual client saw.
#[derive(Default)]
struct Recorder {
    /// Per answer: when its latency started counting (its due time, or its send), and the
    /// latency in µs.
    answers: Vec<(Instant, u64)>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    fn response(&mut self, status: u16, started: Instant) {
        self.answers
            .push((started, started.elapsed().as_micros() as u64));
        *self.statuses.entry(status).or_default() += 1;
    }

    fn error(&mut self, err: &reqwest::Error) {
        let kind = if err.is_timeout() {
            "timeout"
        } else if err.is_connect() {
            "connect error"
        } else if err.is_body() || err.is_decode() {
            "body error"
        } else {
            "request error"
        };
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Sends `req`, reads the whole answer and records its status and latency (or the error).
    async fn send(&mut self, req: reqwest::RequestBuilder) {
        self.send_since(req, Instant::now()).await;
    }

    /// As [`Self::send`], the latency counted from `t` (which may be before the send).
    async fn send_since(&mut self, req: reqwest::RequestBuilder, t: Instant) {
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(_) => self.response(status, t),
                    Err(e) => self.error(&e),
                }
            }
            Err(e) => self.error(&e),
        }
    }
}

fn merge(recs: Vec<Recorder>, elapsed: Duration) -> Measurement {
    let mut m = Measurement {
        elapsed_s: elapsed.as_secs_f64(),
        ..Default::default()
    };
    let origin = recs
        .iter()
        .filter_map(|r| r.answers.iter().map(|(t, _)| *t).min())
        .min();
    m.origin = origin;
    for r in recs {
        if let Some(origin) = origin {
            m.timed_us.extend(r.answers.iter().map(|(t, latency)| {
                let at = t.saturating_duration_since(origin).as_micros() as u64;
                (at, *latency)
            }));
        }
        for (s, n) in r.statuses {
            *m.statuses.entry(s).or_default() += n;
        }
        for (e, n) in r.errors {
            *m.errors.entry(e).or_default() += n;
        }
    }
    let mut all: Vec<u64> = m.timed_us.iter().map(|(_, latency)| *latency).collect();
    all.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    m.p50_ms = quantile(&all, 0.50).map(ms);
    m.p99_ms = quantile(&all, 0.99).map(ms);
    m
}

async fn join_all(
    handles: Vec<tokio::task::JoinHandle<Recorder>>,
    started: Instant,
) -> Result<Measurement> {
    let mut recs = Vec::with_capacity(handles.len());
    for h in handles {
        recs.push(h.await.context("load task panicked")?);
    }
    Ok(merge(recs, started.elapsed()))
}

/// `Authorization: Bearer <token>` for each token, marked sensitive.
fn bearer_headers(tokens: &[String]) -> Result<Vec<HeaderValue>> {
    tokens
        .iter()
        .map(|t| {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                .context("access token not usable in a header")?;
            v.set_sensitive(true);
            Ok(v)
        })
        .collect()
}

/// GET `url` from `clients` virtual clients for `duration`: the plain-handler ceiling measured
/// with this same generator.
pub async fn get_load(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    duration: Duration,
) -> Result<Measurement> {
    get_load_with_tokens(client, url, &[], clients, duration).await
}

/// GET `url` from `clients` virtual clients for `duration`. With `tokens`, every request carries
/// `Authorization: Bearer <token>`, the tokens taken round-robin by all clients together (one
/// shared counter), so consecutive requests present different tokens and each token comes back
/// once every `tokens.len()` requests.
pub async fn get_load_with_tokens(
    client: &reqwest::Client,
    url: &str,
    tokens: &[String],
    clients: usize,
    duration: Duration,
) -> Result<Measurement> {
    let auths = Arc::new(bearer_headers(tokens)?);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let handles = (0..clients)
        .map(|_| {
            let (client, url, auths, next) =
                (client.clone(), url.to_owned(), auths.clone(), next.clone());
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                while Instant::now() < deadline {
                    let mut req = client.get(&url);
                    if !auths.is_empty() {
                        let i = next.fetch_add(1, Ordering::Relaxed) % auths.len();
                        req = req.header(AUTHORIZATION, auths[i].clone());
                    }
                    rec.send(req).await;
                }
                rec
            })
        })
        .collect();
    join_all(handles, started).await
}

/// Open-loop GET load: request `k` is due at `start + k / rate`, whatever happened to the
/// earlier ones, and carries the next token round-robin. `clients` workers take the due times in
/// order; each sleeps until its request is due and sends it. The latency of a request counts from
/// the moment it was due if its worker reached it late (the worker was still waiting for an
/// earlier answer: the queueing a closed-loop client would hide, "coordinated omission"), and
/// from the moment the worker woke if it was on time, so the timer's 1 ms granularity is not
/// charged to the server. The measurement's `ok_rps` is the rate actually answered.
pub async fn get_load_at_rate(
    client: &reqwest::Client,
    url: &str,
    tokens: &[String],
    rate: f64,
    clients: usize,
    duration: Duration,
) -> Result<Measurement> {
    if tokens.is_empty() {
        bail!("an open-loop run needs at least one token");
    }
    let auths = Arc::new(bearer_headers(tokens)?);
    let schedule = Schedule::new(rate, duration)?;
    let started = Instant::now();
    let handles = (0..clients.max(1))
        .map(|_| {
            let (client, url, auths, schedule) = (
                client.clone(),
                url.to_owned(),
                auths.clone(),
                schedule.clone(),
            );
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                while let Some((k, since)) = schedule.next().await {
                    let auth = auths[(k % auths.len() as u64) as usize].clone();
                    rec.send_since(client.get(&url).header(AUTHORIZATION, auth), since)
                        .await;
                }
                rec
            })
        })
        .collect();
    let mut m = join_all(handles, started).await?;
    m.schedule_behind_ms = Some(schedule.behind_ms());
    Ok(m)
}

/// An open-loop schedule shared by the workers of one run: request `k` is due at
/// `start + k / rate`, and each worker takes the next one not yet taken.
#[derive(Clone)]
struct Schedule {
    next: Arc<AtomicU64>,
    total: u64,
    interval: Duration,
    start: tokio::time::Instant,
    /// How late (µs) the last request was taken, once it has been.
    last_late_us: Arc<AtomicU64>,
}

impl Schedule {
    fn new(rate: f64, duration: Duration) -> Result<Self> {
        if !rate.is_finite() || rate <= 0.0 {
            bail!("an open-loop run needs a positive rate");
        }
        Ok(Self {
            next: Arc::new(AtomicU64::new(0)),
            total: (rate * duration.as_secs_f64()).round() as u64,
            interval: Duration::from_secs_f64(1.0 / rate),
            start: tokio::time::Instant::now(),
            last_late_us: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Waits until the next untaken request is due; its number and the moment its latency
    /// counts from (the due time if this worker is late, else when it woke). `None` once the
    /// schedule is used up.
    async fn next(&self) -> Option<(u64, Instant)> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        if k >= self.total {
            return None;
        }
        let due = self.start + self.interval.mul_f64(k as f64);
        let since = if tokio::time::Instant::now() >= due {
            due.into_std()
        } else {
            tokio::time::sleep_until(due).await;
            Instant::now()
        };
        if k + 1 == self.total {
            let late = tokio::time::Instant::now().saturating_duration_since(due);
            self.last_late_us
                .store(late.as_micros() as u64, Ordering::Relaxed);
        }
        Some((k, since))
    }

    /// How late the last scheduled request went out, in ms (the whole duration if it never did).
    fn behind_ms(&self) -> f64 {
        if self.next.load(Ordering::Relaxed) < self.total {
            return (self.interval.mul_f64(self.total as f64)).as_secs_f64() * 1e3;
        }
        self.last_late_us.load(Ordering::Relaxed) as f64 / 1e3
    }
}

/// GETs `url` once with each token, the requests spread evenly over `spread` (token `i` at
/// `spread × i / n`) by `clients` clients, and returns the measurement. Primes the server's
/// per-user caches the way real traffic fills them: entries made at independent moments, so
/// that their expiries are spread too instead of falling due all at once.
pub async fn prime_tokens(
    client: &reqwest::Client,
    url: &str,
    tokens: &[String],
    clients: usize,
    spread: Duration,
) -> Result<Measurement> {
    let n = tokens.len().max(1);
    let clients = clients.clamp(1, n);
    let tokens = Arc::new(tokens.to_vec());
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let handles = (0..clients)
        .map(|k| {
            let (client, url, tokens) = (client.clone(), url.to_owned(), tokens.clone());
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                for i in (k..tokens.len()).step_by(clients) {
                    tokio::time::sleep_until(start + spread.mul_f64(i as f64 / n as f64)).await;
                    rec.send(client.get(&url).bearer_auth(&tokens[i])).await;
                }
                rec
            })
        })
        .collect();
    join_all(handles, started).await
}

/// POSTs `body` and returns the answer's body if its status is `want`; a 503 or 429 (the password
/// pool's queue was full or timed out) is retried a few times after a short pause.
async fn post_expecting(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    want: u16,
) -> Result<Vec<u8>> {
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let resp = client.post(url).json(body).send().await?;
        let status = resp.status().as_u16();
        if status == want {
            return Ok(resp.bytes().await?.to_vec());
        }
        if matches!(status, 429 | 503) && attempt < 6 {
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            continue;
        }
        bail!("{status}: {}", resp.text().await.unwrap_or_default());
    }
}

/// Registers `n` users (`me-<run_id>-<i>@example.com`) and signs each in once, `concurrency`
/// users at a time (each a registration then a sign-in, two Argon2id hashes); returns their
/// access tokens, in no particular order.
pub async fn register_and_sign_in(
    client: &reqwest::Client,
    base: &str,
    run_id: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<String>> {
    let (register_url, login_url) = (
        format!("{base}/v1/auth/register"),
        format!("{base}/v1/auth/login"),
    );
    stream::iter(0..n)
        .map(|i| {
            let (register_url, login_url) = (&register_url, &login_url);
            async move {
                let email = format!("me-{run_id}-{i}@example.com");
                let register = json!({
                    "email": email,
                    "password": PASSWORD,
                    "display_name": format!("Bench Me {i}"),
                });
                post_expecting(client, register_url, &register, 201)
                    .await
                    .with_context(|| format!("register {email}"))?;
                let login = json!({ "email": email, "password": PASSWORD });
                let body = post_expecting(client, login_url, &login, 200)
                    .await
                    .with_context(|| format!("login {email}"))?;
                let pair: TokenPair = serde_json::from_slice(&body).context("login response")?;
                Ok::<_, anyhow::Error>(pair.access_token)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Registrations with unique emails from `clients` virtual clients for `duration`.
pub async fn register_load(
    client: &reqwest::Client,
    base: &str,
    run_id: &str,
    clients: usize,
    duration: Duration,
) -> Result<Measurement> {
    let url = format!("{base}/v1/auth/register");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let handles = (0..clients)
        .map(|_| {
            let (client, url, next, run_id) =
                (client.clone(), url.clone(), next.clone(), run_id.to_owned());
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let body = json!({
                        "email": format!("reg-{run_id}-{n}@example.com"),
                        "password": PASSWORD,
                        "display_name": format!("Bench {n}"),
                    });
                    rec.send(client.post(&url).json(&body)).await;
                }
                rec
            })
        })
        .collect();
    join_all(handles, started).await
}

/// The single-use check of the refresh scenario.
#[derive(Debug, Default, Clone)]
pub struct ReuseCheck {
    /// Refresh tokens presented during the timed run (each exactly once, by construction).
    pub presented: u64,
    /// Tokens presented twice at the same moment after the run.
    pub races: u64,
    /// Already-used tokens presented again after the run.
    pub replays: u64,
    /// 200 answers for a token that had already been presented (must be 0).
    pub accepted_twice: u64,
    /// The same refresh token handed out twice (must be 0).
    pub issued_twice: u64,
    /// Clients that had to sign in again after a failed refresh.
    pub relogins: u64,
}

impl ReuseCheck {
    /// Adds another run's counts to these.
    pub fn add(&mut self, other: &ReuseCheck) {
        self.presented += other.presented;
        self.races += other.races;
        self.replays += other.replays;
        self.accepted_twice += other.accepted_twice;
        self.issued_twice += other.issued_twice;
        self.relogins += other.relogins;
    }
}

struct RefreshClient {
    current: String,
    /// The token presented before `current`, already used.
    previous: Option<String>,
}

/// What one refresh client saw, kept locally during the timed run (no lock shared by all the
/// clients, whose growing sets would pause every client while they rehash) and checked after it.
#[derive(Default)]
struct Tally {
    /// Every token presented, and whether that presentation was answered 200.
    presented: Vec<(String, bool)>,
    /// Every refresh token received, the first sign-in's included.
    issued: Vec<String>,
    relogins: u64,
}

impl ReuseCheck {
    /// Counts, over all clients' tallies, the presentations, the tokens accepted more than once
    /// and the tokens handed out more than once.
    fn from_tallies(tallies: &[Tally]) -> Self {
        let mut accepted: HashMap<&str, u64> = HashMap::new();
        let mut issued: HashSet<&str> = HashSet::new();
        let mut check = ReuseCheck::default();
        for tally in tallies {
            check.presented += tally.presented.len() as u64;
            check.relogins += tally.relogins;
            for (token, ok) in &tally.presented {
                *accepted.entry(token.as_str()).or_default() += u64::from(*ok);
            }
            for token in &tally.issued {
                if !issued.insert(token.as_str()) {
                    check.issued_twice += 1;
                }
            }
        }
        check.accepted_twice = accepted.values().map(|n| n.saturating_sub(1)).sum();
        check
    }
}

/// Signs `n` clients in as `email`, a few at a time so the password pool never refuses them.
pub async fn sign_in_clients(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    n: usize,
) -> Result<Vec<TokenPair>> {
    stream::iter(0..n)
        .map(|_| login(client, base, email))
        .buffer_unordered(4)
        .try_collect()
        .await
        .context("signing in the refresh clients")
}

/// Each virtual client (one per signed-in pair) chains refreshes for `duration`, always
/// presenting the token from its previous answer: as fast as answers come back (closed loop,
/// `rate` `None`), or open loop at `rate` refreshes/s, the clients taking the due times in order
/// as in [`get_load_at_rate`] (a client still waiting for its answer leaves the next due
/// refresh to another, and a late one counts its latency from the due time). Afterwards each
/// client either presents its current token twice concurrently or replays its previous one: any
/// second acceptance is counted in [`ReuseCheck::accepted_twice`].
pub async fn refresh_load(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    pairs: Vec<TokenPair>,
    duration: Duration,
    rate: Option<f64>,
) -> Result<(Measurement, ReuseCheck)> {
    let schedule = rate.map(|r| Schedule::new(r, duration)).transpose()?;
    let url = format!("{base}/v1/auth/refresh");
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = pairs
        .into_iter()
        .map(|pair| {
            let (client, url, base, email, schedule) = (
                client.clone(),
                url.clone(),
                base.to_owned(),
                email.to_owned(),
                schedule.clone(),
            );
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                let mut tally = Tally {
                    issued: vec![pair.refresh_token.clone()],
                    ..Tally::default()
                };
                let mut me = RefreshClient {
                    current: pair.refresh_token,
                    previous: None,
                };
                loop {
                    let t = match &schedule {
                        Some(schedule) => match schedule.next().await {
                            Some((_, since)) => since,
                            None => break,
                        },
                        None if Instant::now() < deadline => Instant::now(),
                        None => break,
                    };
                    let token = me.current.clone();
                    let answer = match client
                        .post(&url)
                        .json(&json!({ "refresh_token": token }))
                        .send()
                        .await
                    {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            match resp.bytes().await {
                                Ok(body) => {
                                    rec.response(status, t);
                                    Some((status, body))
                                }
                                Err(e) => {
                                    rec.error(&e);
                                    None
                                }
                            }
                        }
                        Err(e) => {
                            rec.error(&e);
                            None
                        }
                    };
                    let next = match &answer {
                        Some((200, body)) => serde_json::from_slice::<TokenPair>(body).ok(),
                        _ => None,
                    };
                    tally
                        .presented
                        .push((token, matches!(answer, Some((200, _)))));
                    match next {
                        Some(pair) => {
                            tally.issued.push(pair.refresh_token.clone());
                            me.previous =
                                Some(std::mem::replace(&mut me.current, pair.refresh_token));
                        }
                        None => {
                            // The token's fate is unknown (refused, timed out): start a new
                            // session rather than risk presenting a used token.
                            tally.relogins += 1;
                            match login(&client, &base, &email).await {
                                Ok(pair) => {
                                    tally.issued.push(pair.refresh_token.clone());
                                    me.current = pair.refresh_token;
                                    me.previous = None;
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                            }
                        }
                    }
                }
                (rec, me, tally)
            })
        })
        .collect();

    let mut recs = Vec::with_capacity(handles.len());
    let mut finals = Vec::with_capacity(handles.len());
    let mut tallies = Vec::with_capacity(handles.len());
    for h in handles {
        let (rec, me, tally) = h.await.context("refresh task panicked")?;
        recs.push(rec);
        finals.push(me);
        tallies.push(tally);
    }
    let mut measurement = merge(recs, started.elapsed());
    measurement.schedule_behind_ms = schedule.as_ref().map(Schedule::behind_ms);

    // Reuse probes, outside the timed window.
    let status_of = |token: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(&url)
                .json(&json!({ "refresh_token": token }))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    // Half the clients present their current token twice at once (one must lose); the other
    // half replay the token they used before, while their session is still live.
    let mut check = ReuseCheck::from_tallies(&tallies);
    for (i, me) in finals.into_iter().enumerate() {
        match me.previous {
            Some(prev) if i % 2 == 1 => {
                check.replays += 1;
                if status_of(prev).await? == 200 {
                    check.accepted_twice += 1;
                }
            }
            _ => {
                let (a, b) = tokio::join!(status_of(me.current.clone()), status_of(me.current));
                check.races += 1;
                let accepted = [a?, b?].iter().filter(|&&s| s == 200).count() as u64;
                check.accepted_twice += accepted.saturating_sub(1);
            }
        }
    }
    Ok((measurement, check))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;

    use super::*;

    /// A keep-alive HTTP/1.1 server answering 200 to everything, recording each request's
    /// Authorization header.
    fn recording_server() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    let mut lines = BufReader::new(stream).lines();
                    let mut auth = String::new();
                    while let Some(Ok(line)) = lines.next() {
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("authorization") {
                                auth = value.trim().to_owned();
                            }
                        } else if line.is_empty() {
                            seen.lock().unwrap().push(std::mem::take(&mut auth));
                            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if out.write_all(answer.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, recorded)
    }

    #[tokio::test]
    async fn tokens_go_round_robin() {
        let (url, seen) = recording_server();
        let tokens: Vec<String> = ["a", "b", "c"].map(str::to_owned).to_vec();
        let client = client(4).unwrap();
        let m = get_load_with_tokens(&client, &url, &tokens, 4, Duration::from_millis(300))
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert!(m.ok() > 0, "{}", m.mix());
        assert_eq!(m.ok(), seen.len() as u64);
        let count = |t: &str| seen.iter().filter(|s| *s == &format!("Bearer {t}")).count();
        let counts = tokens.iter().map(|t| count(t)).collect::<Vec<_>>();
        assert_eq!(counts.iter().sum::<usize>(), seen.len(), "{seen:?}");
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "uneven: {counts:?}");

        // Priming: each token exactly once, spread over the time given.
        let (url, seen) = recording_server();
        let started = Instant::now();
        let m = prime_tokens(&client, &url, &tokens, 8, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(m.ok(), 3);
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen, ["Bearer a", "Bearer b", "Bearer c"]);

        // Without tokens, no header at all.
        let (url, seen) = recording_server();
        let m = get_load(&client, &url, 2, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(m.ok() > 0);
        assert!(seen.lock().unwrap().iter().all(String::is_empty));
    }

    /// The open-loop schedule: exactly rate × duration requests, tokens round-robin, spread over
    /// the duration rather than sent as fast as answers come back.
    #[tokio::test]
    async fn open_loop_sends_on_schedule() {
        let (url, seen) = recording_server();
        let tokens: Vec<String> = ["a", "b", "c", "d"].map(str::to_owned).to_vec();
        let client = client(8).unwrap();
        let started = Instant::now();
        let m = get_load_at_rate(&client, &url, &tokens, 200.0, 8, Duration::from_millis(500))
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(m.ok(), 100, "{}", m.mix());
        assert!(
            took >= Duration::from_millis(490),
            "{took:?}: sent ahead of schedule"
        );
        let seen = seen.lock().unwrap().clone();
        for t in &tokens {
            let n = seen.iter().filter(|s| *s == &format!("Bearer {t}")).count();
            assert_eq!(n, 25, "{t}: {seen:?}");
        }
        assert!(
            get_load_at_rate(&client, &url, &[], 10.0, 1, Duration::from_millis(10))
                .await
                .is_err()
        );
    }

    /// The reuse check over all clients: a token answered 200 twice, or handed out twice, is
    /// counted whichever clients saw it; a refused presentation is not an acceptance.
    #[test]
    fn reuse_is_counted_across_clients() {
        let s = |t: &str| t.to_owned();
        let clean = [
            Tally {
                presented: vec![(s("a"), true), (s("b"), false)],
                issued: vec![s("a"), s("b")],
                relogins: 1,
            },
            Tally {
                presented: vec![(s("c"), true)],
                issued: vec![s("c"), s("d")],
                relogins: 0,
            },
        ];
        let check = ReuseCheck::from_tallies(&clean);
        assert_eq!(
            (
                check.presented,
                check.accepted_twice,
                check.issued_twice,
                check.relogins
            ),
            (3, 0, 0, 1)
        );
        let broken = [
            Tally {
                presented: vec![(s("a"), true), (s("a"), false)],
                issued: vec![s("a"), s("x")],
                relogins: 0,
            },
            Tally {
                presented: vec![(s("a"), true)],
                issued: vec![s("x")],
                relogins: 0,
            },
        ];
        let check = ReuseCheck::from_tallies(&broken);
        assert_eq!((check.accepted_twice, check.issued_twice), (1, 1));
    }

    /// A schedule knows how late its last request went out: about nothing when the worker
    /// keeps up, the backlog when it cannot (which `Measurement::shortfall` then reports).
    #[tokio::test]
    async fn schedule_reports_how_far_behind_it_fell() {
        let on_time = Schedule::new(1_000.0, Duration::from_millis(50)).unwrap();
        while on_time.next().await.is_some() {}
        assert!(on_time.behind_ms() < 20.0, "{}", on_time.behind_ms());

        // One worker that needs 4 ms per request, offered one every 1 ms for 50 ms.
        let slow = Schedule::new(1_000.0, Duration::from_millis(50)).unwrap();
        while slow.next().await.is_some() {
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        assert!(slow.behind_ms() >= 100.0, "{}", slow.behind_ms());
        let unfinished = Schedule::new(1_000.0, Duration::from_millis(50)).unwrap();
        assert!(unfinished.behind_ms() >= 50.0);
    }
}
