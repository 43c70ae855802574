//! Argon2id hashing on a bounded pool of dedicated threads: at most `max_concurrent` hashes run
//! at once, off the async executor; a short queue waits for a thread and anything beyond it is
//! refused at once (503), so overload answers fast instead of building multi-second tails.
//!
//! Each hashing thread owns one Argon2 arena for its whole life instead of mapping, faulting in
//! and unmapping `memory_kib` of fresh memory per call, kernel work that would cost a large share
//! of every verification's CPU. The arena is wiped when each hash returns
//! (argon2-rust's `zeroize-memory`), so no password-derived block outlives its call. A thread
//! that finishes a hash takes the next queued one itself, with no round trip through the async
//! runtime in between; a queued job whose request has gone away is dropped unhashed, and one that
//! waited longer than `queue_timeout_ms` is refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use argon2_rust::params::Memory;
use argon2_rust::{Algorithm, Argon2, Hasher, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use crate::config::PasswordSettings;
use crate::domain::Password;
use crate::error::{ServiceError, ServiceResult};

/// Hard bound on the cost a stored hash may ask for, so a tampered row cannot exhaust memory.
const CEILING_MEMORY_KIB: u64 = 256 * 1024;
const CEILING_PASSES: u32 = 16;
const CEILING_LANES: u32 = 8;

/// The Argon2id parameters the settings ask for.
fn configured_params(settings: &PasswordSettings) -> ServiceResult<Params> {
    Params::builder()
        .memory(Memory::kib(u64::from(settings.memory_kib)))
        .passes(settings.iterations)
        .lanes(settings.parallelism)
        .build()
        .map_err(|e| ServiceError::unexpected_msg(format!("argon2 parameters: {e}")))
}

/// Argon2id with the parameters the settings ask for: what the hashing threads and the
/// benchmarks run.
pub fn configured_argon2(settings: &PasswordSettings) -> ServiceResult<Argon2> {
    Ok(Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        configured_params(settings)?,
    ))
}

pub struct PasswordHasher {
    /// The PHC prefix of a hash made with the current parameters; others get rehashed on login.
    current_prefix: String,
    jobs: mpsc::Sender<Job>,
    /// Jobs queued or running; never more than `queue_limit`.
    queued: Arc<AtomicUsize>,
    queue_limit: usize,
    /// Verifications admitted (running, queued, or doing their database lookup first).
    admitted: Arc<AtomicUsize>,
    admit_limit: usize,
    /// Places each client (IP, IPv6 /64) holds among the admitted; at most `per_client`.
    clients: ClientShares,
    per_client: usize,
    queue_timeout: Duration,
    dummy_hash: String,
    /// Hashes computed so far (skipped and refused jobs do not count).
    hashed: Arc<AtomicU64>,
}

/// What a hashing thread is asked to do.
enum Work {
    Hash(SecretString),
    Verify {
        phc: String,
        candidate: SecretString,
    },
}

enum Done {
    Hashed(String),
    Verified(bool),
}

struct Job {
    enqueued: Instant,
    work: Work,
    reply: oneshot::Sender<ServiceResult<Done>>,
    /// Set by the thread that takes the job; until then its caller may give up on it.
    started: Arc<AtomicBool>,
    /// Frees the job's place in the queue when dropped, answered or not.
    place: QueuePlace,
}

struct QueuePlace(Arc<AtomicUsize>);

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn overloaded() -> ServiceError {
    ServiceError::Overloaded {
        retry_after_secs: 1,
    }
}

/// One hashing thread: takes jobs until the [`PasswordHasher`] is dropped, on its own arena.
fn hashing_thread(
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    argon: Argon2,
    ceiling: Params,
    queue_timeout: Duration,
    hashed: Arc<AtomicU64>,
) {
    let mut hasher = argon.hasher();
    loop {
        let Job {
            enqueued,
            work,
            reply,
            started,
            place,
        } = {
            // Poisoning cannot leave a Receiver inconsistent; keep serving.
            let jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return, // the hasher is gone
            }
        };
        // Mark it taken first: a caller that sees it untaken may give up and drop its receiver,
        // which the check below then sees.
        started.store(true, Ordering::Release);
        if reply.is_closed() {
            continue; // nobody waits for this answer any more: don't spend a core on it
        }
        let out = if enqueued.elapsed() > queue_timeout {
            Err(overloaded())
        } else {
            hashed.fetch_add(1, Ordering::Relaxed);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_work(&mut hasher, work, &ceiling)
            }))
            .unwrap_or_else(|_| Err(ServiceError::unexpected_msg("argon2 panicked")))
        };
        drop(place); // before answering, so a caller that has its answer sees the place free
        let _ = reply.send(out);
    }
}

fn run_work(hasher: &mut Hasher, work: Work, ceiling: &Params) -> ServiceResult<Done> {
    match work {
        Work::Hash(password) => hasher
            .hash_password_with_random_salt(password.expose_secret().as_bytes())
            .map(Done::Hashed)
            .map_err(|e| ServiceError::unexpected_msg(format!("argon2 hash: {e}"))),
        Work::Verify { phc, candidate } => Ok(Done::Verified(
            hasher
                .verify_encoded_bounded(
                    &phc,
                    candidate.expose_secret().as_bytes(),
                    Algorithm::Argon2id,
                    ceiling,
                )
                .is_ok(),
        )),
    }
}

/// Places each client holds in the pool (see [`PasswordHasher::reserve_for`]).
type ClientShares = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A reserved place in the hashing pool (and in its client's share); released when dropped.
pub struct HashSlot {
    admitted: Arc<AtomicUsize>,
    client: Option<(ClientShares, IpAddr)>,
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
        if let Some((shares, client)) = &self.client {
            release_share(shares, *client);
        }
    }
}

fn release_share(shares: &ClientShares, client: IpAddr) {
    let mut shares = shares.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(held) = shares.get_mut(&client) {
        *held -= 1;
        if *held == 0 {
            shares.remove(&client);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Match { needs_rehash: bool },
    Mismatch,
}

impl PasswordHasher {
    pub fn new(settings: &PasswordSettings) -> ServiceResult<Self> {
        let ceiling = Params::builder()
            .memory(Memory::kib(
                CEILING_MEMORY_KIB.max(u64::from(settings.memory_kib)),
            ))
            .passes(CEILING_PASSES.max(settings.iterations))
            .lanes(CEILING_LANES.max(settings.parallelism))
            .threads(settings.parallelism.max(1))
            .build()
            .map_err(|e| ServiceError::unexpected_msg(format!("argon2 ceiling: {e}")))?;
        let argon = configured_argon2(settings)?;
        let concurrency = settings
            .max_concurrent
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        let dummy_hash = argon
            .hash_password_with_random_salt(b"tessera dummy password for unknown accounts")
            .map_err(|e| ServiceError::unexpected_msg(format!("argon2: {e}")))?;
        let (tx, rx) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        // A job dequeued at once has still waited a few microseconds; 0 would refuse everything.
        let queue_timeout = Duration::from_millis(settings.queue_timeout_ms.max(1));
        let hashed = Arc::new(AtomicU64::new(0));
        for i in 0..concurrency {
            let (rx, hashed) = (rx.clone(), hashed.clone());
            std::thread::Builder::new()
                .name(format!("tessera-hash-{i}"))
                .spawn(move || hashing_thread(rx, argon, ceiling, queue_timeout, hashed))
                .map_err(|e| ServiceError::unexpected_msg(format!("hashing thread: {e}")))?;
        }
        Ok(Self {
            current_prefix: format!(
                "$argon2id$v=19$m={},t={},p={}$",
                settings.memory_kib, settings.iterations, settings.parallelism
            ),
            jobs: tx,
            queued: Arc::new(AtomicUsize::new(0)),
            queue_limit: concurrency + settings.max_queue,
            admitted: Arc::new(AtomicUsize::new(0)),
            admit_limit: concurrency + settings.max_queue,
            clients: Arc::new(Mutex::new(HashMap::new())),
            per_client: settings.max_queued_per_client.max(1),
            queue_timeout,
            dummy_hash,
            hashed,
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Password) -> ServiceResult<String> {
        let secret = SecretString::from(password.expose().to_owned());
        match self.run(Work::Hash(secret)).await? {
            Done::Hashed(phc) => Ok(phc),
            Done::Verified(_) => Err(ServiceError::unexpected_msg("hashing: wrong answer kind")),
        }
    }

    /// Verifies `candidate` against `stored`; with `None` it verifies against a dummy hash of the
    /// same cost so that unknown accounts take as long as known ones, and reports a mismatch.
    pub async fn verify(
        &self,
        candidate: &SecretString,
        stored: Option<&str>,
    ) -> ServiceResult<Verification> {
        let slot = self.reserve()?;
        self.verify_in(slot, candidate, stored).await
    }

    /// Admits one verification, or refuses at once when as many are already running or queued
    /// as the pool takes. Admitting before any other work means overload is refused before it
    /// costs a database query, without holding a hashing thread idle during that query.
    pub fn reserve(&self) -> ServiceResult<HashSlot> {
        self.reserve_for(None)
    }

    /// [`Self::reserve`] on behalf of the client at `client`, which may hold at most
    /// `password.max_queued_per_client` places at once: beyond that it gets 429 at once, so one
    /// client flooding the pool leaves the rest of the queue to everyone else.
    pub fn reserve_for(&self, client: Option<IpAddr>) -> ServiceResult<HashSlot> {
        let client = client.map(crate::limits::client_key);
        if let Some(client) = client {
            let mut shares = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            let held = shares.entry(client).or_insert(0);
            if *held >= self.per_client {
                return Err(ServiceError::RateLimited {
                    retry_after_secs: 1,
                });
            }
            *held += 1;
        }
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.admit_limit {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            if let Some(client) = client {
                release_share(&self.clients, client);
            }
            return Err(overloaded());
        }
        Ok(HashSlot {
            admitted: self.admitted.clone(),
            client: client.map(|c| (self.clients.clone(), c)),
        })
    }

    /// [`Self::verify`] in a slot reserved earlier.
    pub async fn verify_in(
        &self,
        slot: HashSlot,
        candidate: &SecretString,
        stored: Option<&str>,
    ) -> ServiceResult<Verification> {
        let known = stored.is_some();
        let phc = stored.unwrap_or(&self.dummy_hash).to_owned();
        let needs_rehash = !phc.starts_with(&self.current_prefix);
        let work = Work::Verify {
            phc,
            candidate: candidate.clone(),
        };
        let ok = match self.run(work).await? {
            Done::Verified(ok) => ok,
            Done::Hashed(_) => {
                return Err(ServiceError::unexpected_msg("verify: wrong answer kind"));
            }
        };
        drop(slot);
        Ok(if ok && known {
            Verification::Match { needs_rehash }
        } else {
            Verification::Mismatch
        })
    }

    /// Queues `work` for the hashing threads (or refuses it when the queue is full) and waits for
    /// the answer. Dropping this future abandons the job: a thread that finds it skips it.
    async fn run(&self, work: Work) -> ServiceResult<Done> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.queue_limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded());
        }
        let place = QueuePlace(self.queued.clone());
        let (reply, mut answer) = oneshot::channel();
        let started = Arc::new(AtomicBool::new(false));
        let job = Job {
            enqueued: Instant::now(),
            work,
            reply,
            started: started.clone(),
            place,
        };
        self.jobs
            .send(job)
            .map_err(|_| ServiceError::unexpected_msg("hashing threads are gone"))?;
        let dropped = |_| ServiceError::unexpected_msg("a hashing thread dropped its job");
        match tokio::time::timeout(self.queue_timeout, &mut answer).await {
            Ok(out) => out.map_err(dropped)?,
            // Still queued after the timeout: give up (the thread that takes it will skip it).
            Err(_) if !started.load(Ordering::Acquire) => Err(overloaded()),
            // Taken already: its hash is running, wait for it.
            Err(_) => answer.await.map_err(dropped)?,
        }
    }

    /// Hashes computed so far by this hasher's threads.
    pub fn hashes_computed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordSettings {
        PasswordSettings {
            memory_kib: 64,
            iterations: 1,
            ..PasswordSettings::default()
        }
    }

    fn pw(s: &str) -> Password {
        Password::parse(&SecretString::from(s.to_owned()), "password").unwrap()
    }

    #[test]
    fn one_client_holds_at_most_its_share_of_the_pool() {
        let h = PasswordHasher::new(&PasswordSettings {
            max_queued_per_client: 2,
            ..cheap()
        })
        .unwrap();
        let flooder: IpAddr = "203.0.113.9".parse().unwrap();
        let neighbour: IpAddr = "2001:db8:1:2::7".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2::8".parse().unwrap();
        let a = h.reserve_for(Some(flooder)).unwrap();
        let _b = h.reserve_for(Some(flooder)).unwrap();
        assert!(matches!(
            h.reserve_for(Some(flooder)),
            Err(ServiceError::RateLimited { .. })
        ));
        // Others still get in; an IPv6 /64 is one client.
        let _c = h.reserve_for(Some(neighbour)).unwrap();
        let _d = h.reserve_for(Some(same_64)).unwrap();
        assert!(h.reserve_for(Some(neighbour)).is_err());
        let _e = h.reserve_for(None).unwrap();
        // A finished request gives its place back.
        drop(a);
        let _f = h.reserve_for(Some(flooder)).unwrap();
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let h = PasswordHasher::new(&cheap()).unwrap();
        let phc = h.hash(&pw("a perfectly fine passphrase")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let good = SecretString::from("a perfectly fine passphrase".to_owned());
        let bad = SecretString::from("a perfectly fine passphrasE".to_owned());
        assert_eq!(
            h.verify(&good, Some(&phc)).await.unwrap(),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(&bad, Some(&phc)).await.unwrap(),
            Verification::Mismatch
        );
        assert_eq!(h.verify(&good, None).await.unwrap(), Verification::Mismatch);
    }

    /// Many verifications at once on two hashing threads (each reusing its arena): every answer
    /// is right, or the request is shed as overloaded; none is wrong or lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_verifications_on_reused_arenas() {
        let settings = PasswordSettings {
            max_concurrent: Some(2),
            ..cheap()
        };
        let h = Arc::new(PasswordHasher::new(&settings).unwrap());
        let phc = h.hash(&pw("a perfectly fine passphrase")).await.unwrap();
        let good = SecretString::from("a perfectly fine passphrase".to_owned());
        let bad = SecretString::from("not the passphrase at all".to_owned());
        let runs: Vec<_> = (0..24)
            .map(|i| {
                let (h, phc) = (h.clone(), phc.clone());
                let candidate = if i % 2 == 0 {
                    good.clone()
                } else {
                    bad.clone()
                };
                tokio::spawn(async move { (i, h.verify(&candidate, Some(&phc)).await) })
            })
            .collect();
        let mut answered = 0;
        for run in runs {
            let (i, verdict) = run.await.unwrap();
            match verdict {
                Ok(v) => {
                    answered += 1;
                    assert_eq!(v == Verification::Mismatch, i % 2 == 1, "run {i}");
                }
                Err(ServiceError::Overloaded { .. }) => {} // queue full: shed, not wrong
                Err(e) => panic!("run {i}: {e}"),
            }
        }
        assert!(answered >= 2, "{answered} answered");
        assert_eq!(
            h.queued.load(Ordering::Acquire),
            0,
            "every queue place freed"
        );
        assert_eq!(
            h.admitted.load(Ordering::Acquire),
            0,
            "every admission freed"
        );
    }

    /// With the only hashing thread busy: a job still queued when its caller's timeout passes is
    /// refused at the timeout (not after the running hash), and the thread then skips it rather
    /// than hashing for nobody.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_queued_past_the_timeout_are_refused_and_never_hashed() {
        let slow = PasswordSettings {
            memory_kib: 64 * 1024,
            iterations: 8,
            max_concurrent: Some(1),
            max_queue: 8,
            queue_timeout_ms: 30_000,
            ..PasswordSettings::default()
        };
        // The stored hash is made elsewhere, so the hasher under test starts at zero.
        let phc = PasswordHasher::new(&slow)
            .unwrap()
            .hash(&pw("a perfectly fine passphrase"))
            .await
            .unwrap();
        let h = Arc::new(
            PasswordHasher::new(&PasswordSettings {
                queue_timeout_ms: 20,
                ..slow
            })
            .unwrap(),
        );
        let good = SecretString::from("a perfectly fine passphrase".to_owned());
        let running = {
            let (h, phc, good) = (h.clone(), phc.clone(), good.clone());
            tokio::spawn(async move { h.verify(&good, Some(&phc)).await })
        };
        // Wait until the first job is being hashed, so the next one queues behind it.
        while h.hashes_computed() == 0 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let queued = h.verify(&good, Some(&phc)).await;
        assert!(
            matches!(queued, Err(ServiceError::Overloaded { .. })),
            "refused"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "refused at the timeout, not after the running hash ({:?})",
            started.elapsed()
        );
        assert!(matches!(
            running.await.unwrap(),
            Ok(Verification::Match { .. })
        ));
        // The thread has moved past the refused job; give it the moment it needs.
        for _ in 0..100 {
            if h.queued.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            h.queued.load(Ordering::Acquire),
            0,
            "every queue place freed"
        );
        assert_eq!(h.admitted.load(Ordering::Acquire), 0);
        assert_eq!(h.hashes_computed(), 1, "the refused job was not hashed");
    }

    #[tokio::test]
    async fn older_parameters_ask_for_rehash() {
        let old = PasswordHasher::new(&cheap()).unwrap();
        let phc = old.hash(&pw("a perfectly fine passphrase")).await.unwrap();
        let new = PasswordHasher::new(&PasswordSettings {
            memory_kib: 128,
            iterations: 1,
            ..PasswordSettings::default()
        })
        .unwrap();
        let good = SecretString::from("a perfectly fine passphrase".to_owned());
        assert_eq!(
            new.verify(&good, Some(&phc)).await.unwrap(),
            Verification::Match { needs_rehash: true }
        );
    }

    #[tokio::test]
    async fn hostile_cost_in_stored_hash_is_refused_not_computed() {
        let h = PasswordHasher::new(&cheap()).unwrap();
        let hostile = "$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        let good = SecretString::from("whatever it is".to_owned());
        assert_eq!(
            h.verify(&good, Some(hostile)).await.unwrap(),
            Verification::Mismatch
        );
    }

    /// The fast implementation and RustCrypto's reference agree on every tag, both ways.
    #[test]
    fn differential_against_reference_argon2() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        for (i, (m, t, p)) in [(64u32, 1u32, 1u32), (256, 2, 1), (512, 3, 2), (1024, 1, 4)]
            .into_iter()
            .enumerate()
        {
            let password = format!("differential password #{i} with ümlauts");
            let params = Params::builder()
                .memory(Memory::kib(m.into()))
                .passes(t)
                .lanes(p)
                .build()
                .unwrap();
            let fast = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_with_random_salt(password.as_bytes())
                .unwrap();
            let reference = argon2::Argon2::new(
                argon2::Algorithm::Argon2id,
                argon2::Version::V0x13,
                argon2::Params::new(m, t, p, None).unwrap(),
            );
            assert!(
                reference
                    .verify_password(password.as_bytes(), fast.as_str())
                    .is_ok(),
                "reference rejects fast hash {fast}"
            );
            let theirs = reference
                .hash_password(password.as_bytes())
                .unwrap()
                .to_string();
            assert!(
                Argon2::verify_encoded(&theirs, password.as_bytes(), Algorithm::Argon2id).is_ok(),
                "fast rejects reference hash {theirs}"
            );
            assert!(Argon2::verify_encoded(&theirs, b"other", Algorithm::Argon2id).is_err());
        }
    }
}
