//! Argon2id hashing on a bounded pool: at most `max_concurrent` hashes run at once, off the async
//! executor; a short queue waits for a slot and anything beyond it is refused at once (503), so
//! overload answers fast instead of building multi-second tails.
//!
//! Each running hash borrows an Argon2 arena from a small pool (one per slot) instead of mapping,
//! faulting in and unmapping `memory_kib` of fresh memory per call: on this 2-core VM that was a
//! fifth of every verification's CPU, spent in the kernel. The arena is wiped when each hash
//! returns (argon2-rust's `zeroize-memory`), so no password-derived block outlives its call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2_rust::params::Memory;
use argon2_rust::{Algorithm, Argon2, Hasher, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

pub struct PasswordHasher {
    ceiling: Params,
    /// The PHC prefix of a hash made with the current parameters; others get rehashed on login.
    current_prefix: String,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queue: usize,
    /// Verifications admitted (running, queued, or doing their database lookup first).
    admitted: Arc<AtomicUsize>,
    admit_limit: usize,
    queue_timeout: Duration,
    dummy_hash: String,
    /// Idle arenas; never more than `max_concurrent`, since only that many hashes run at once.
    arenas: Arc<ArenaPool>,
}

/// Argon2 hashers whose block arenas survive between calls (see the module docs).
struct ArenaPool {
    argon: Argon2,
    idle: Mutex<Vec<Hasher>>,
}

impl ArenaPool {
    /// Runs `work` on an idle arena (or a new one), then returns the arena to the pool.
    fn with<T>(&self, work: impl FnOnce(&mut Hasher) -> T) -> T {
        let taken = self.lock().pop();
        let mut hasher = taken.unwrap_or_else(|| self.argon.hasher());
        let out = work(&mut hasher);
        self.lock().push(hasher);
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Hasher>> {
        // A panic while holding the lock cannot leave the Vec inconsistent (push/pop only).
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A reserved place in the hashing pool; released when dropped.
pub struct HashSlot(Arc<AtomicUsize>);

impl Drop for HashSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Match { needs_rehash: bool },
    Mismatch,
}

impl PasswordHasher {
    pub fn new(settings: &PasswordSettings) -> ServiceResult<Self> {
        let params = configured_params(settings)?;
        let ceiling = Params::builder()
            .memory(Memory::kib(
                CEILING_MEMORY_KIB.max(u64::from(settings.memory_kib)),
            ))
            .passes(CEILING_PASSES.max(settings.iterations))
            .lanes(CEILING_LANES.max(settings.parallelism))
            .threads(settings.parallelism.max(1))
            .build()
            .map_err(|e| ServiceError::unexpected_msg(format!("argon2 ceiling: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let concurrency = settings
            .max_concurrent
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        let dummy_hash = argon
            .hash_password_with_random_salt(b"tessera dummy password for unknown accounts")
            .map_err(|e| ServiceError::unexpected_msg(format!("argon2: {e}")))?;
        Ok(Self {
            ceiling,
            current_prefix: format!(
                "$argon2id$v=19$m={},t={},p={}$",
                settings.memory_kib, settings.iterations, settings.parallelism
            ),
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            max_queue: settings.max_queue,
            admitted: Arc::new(AtomicUsize::new(0)),
            admit_limit: concurrency + settings.max_queue,
            queue_timeout: Duration::from_millis(settings.queue_timeout_ms),
            dummy_hash,
            arenas: Arc::new(ArenaPool {
                argon,
                idle: Mutex::new(Vec::with_capacity(concurrency)),
            }),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Password) -> ServiceResult<String> {
        let secret = SecretString::from(password.expose().to_owned());
        self.run(move |hasher| {
            hasher
                .hash_password_with_random_salt(secret.expose_secret().as_bytes())
                .map_err(|e| ServiceError::unexpected_msg(format!("argon2 hash: {e}")))
        })
        .await
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
    /// costs a database query, without holding a CPU slot idle during that query.
    pub fn reserve(&self) -> ServiceResult<HashSlot> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.admit_limit {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(ServiceError::Overloaded {
                retry_after_secs: 1,
            });
        }
        Ok(HashSlot(self.admitted.clone()))
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
        let candidate = candidate.clone();
        let ceiling = self.ceiling;
        let permit = self.acquire().await?;
        let ok = self
            .run_in(permit, move |hasher| {
                Ok(hasher
                    .verify_encoded_bounded(
                        &phc,
                        candidate.expose_secret().as_bytes(),
                        Algorithm::Argon2id,
                        &ceiling,
                    )
                    .is_ok())
            })
            .await?;
        drop(slot);
        Ok(if ok && known {
            Verification::Match { needs_rehash }
        } else {
            Verification::Mismatch
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Hasher) -> ServiceResult<T> + Send + 'static,
    ) -> ServiceResult<T> {
        let permit = self.acquire().await?;
        self.run_in(permit, work).await
    }

    async fn run_in<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        work: impl FnOnce(&mut Hasher) -> ServiceResult<T> + Send + 'static,
    ) -> ServiceResult<T> {
        let arenas = self.arenas.clone();
        tokio::task::spawn_blocking(move || {
            let out = arenas.with(work);
            drop(permit);
            out
        })
        .await
        .map_err(ServiceError::unexpected)?
    }

    async fn acquire(&self) -> ServiceResult<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let overloaded = ServiceError::Overloaded {
            retry_after_secs: 1,
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded);
        }
        let res =
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match res {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(ServiceError::unexpected_msg("hashing pool closed")),
            Err(_elapsed) => Err(overloaded),
        }
    }
}

/// Raw Argon2id verification throughput with these parameters on `threads` OS threads for
/// `duration`: the ceiling the login benchmark is compared against. No pool, no queue, no I/O.
pub fn raw_verify_rate(
    settings: &PasswordSettings,
    threads: usize,
    duration: Duration,
) -> ServiceResult<f64> {
    let params = configured_params(settings)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let phc = argon
        .hash_password_with_random_salt(b"ceiling password")
        .map_err(|e| ServiceError::unexpected_msg(format!("argon2: {e}")))?;
    let start = std::time::Instant::now();
    let deadline = start + duration;
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let phc = phc.as_str();
                scope.spawn(move || {
                    // One reused arena per thread, as the server's pool does: the fastest way
                    // this library verifies, so the ceiling is not flattered by a slower baseline.
                    let mut hasher = argon.hasher();
                    let mut n = 0u64;
                    while std::time::Instant::now() < deadline {
                        let _ =
                            hasher.verify_encoded(phc, b"ceiling password", Algorithm::Argon2id);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    Ok(total as f64 / start.elapsed().as_secs_f64())
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

    /// Arenas are reused, never more of them than hashes may run at once, and a reused arena
    /// gives the same answers as a fresh one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn arenas_are_reused_and_bounded() {
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
        for run in runs {
            let (i, verdict) = run.await.unwrap();
            match verdict {
                Ok(v) => assert_eq!(v == Verification::Mismatch, i % 2 == 1, "run {i}"),
                Err(ServiceError::Overloaded { .. }) => {} // queue full: shed, not wrong
                Err(e) => panic!("run {i}: {e}"),
            }
        }
        let idle = h.arenas.lock().len();
        assert!((1..=2).contains(&idle), "{idle} arenas kept");
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
