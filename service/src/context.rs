//! Everything a request needs from the domain, built once at startup and shared by all workers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::authz::{Authz, PolicySet};
use crate::clock::Clock;
use crate::config::Settings;
use crate::error::{ServiceError, ServiceResult};
use crate::mail::Mailer;
use crate::mfa::SecretBox;
use crate::passwords::PasswordHasher;
use crate::tokens::TokenKeys;
use crate::users::{PendingRegistrations, User};

/// Who made a request, for sessions and the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl RequestMeta {
    /// The client's address, when the request carried one that parses.
    pub fn ip_addr(&self) -> Option<std::net::IpAddr> {
        self.ip.as_deref().and_then(|ip| ip.parse().ok())
    }
}

#[derive(Clone)]
pub struct AppContext {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub hasher: Arc<PasswordHasher>,
    pub keys: Arc<TokenKeys>,
    pub revoked: Arc<RevokedSessions>,
    pub users: Arc<UserCache>,
    pub authz: Arc<Authz>,
    pub mailer: Arc<Mailer>,
    /// Work that runs after the answer: mail over SMTP, password-reset requests.
    pub background: Arc<Background>,
    /// The base of links in mail; set once the server knows its port (see
    /// [`crate::config::ServerSettings::public_base_url`]).
    pub public_url: Arc<OnceLock<String>>,
    /// The time limits, grace periods and mailed tokens' expiries are judged by (see [`Clock`]).
    pub clock: Arc<Clock>,
    /// The keys of TOTP secrets at rest; `None` in production without `mfa.keys`.
    pub mfa_keys: Option<Arc<SecretBox>>,
    /// Registrations running on this instance, by address (see [`PendingRegistrations`]).
    pub registering: Arc<PendingRegistrations>,
}

impl AppContext {
    /// The base URL for links in mail.
    pub fn public_url(&self) -> String {
        self.public_url.get().cloned().unwrap_or_else(|| {
            self.settings
                .server
                .public_base_url(self.settings.server.port)
        })
    }

    pub fn new(db: DatabaseConnection, settings: Settings, keys: TokenKeys) -> ServiceResult<Self> {
        let hasher = PasswordHasher::new(&settings.password)?;
        let policy = match &settings.policy.dir {
            Some(dir) => PolicySet::from_dir(dir),
            None => PolicySet::embedded(),
        }
        .map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            ServiceError::unexpected_msg(format!("invalid policy:\n{}", lines.join("\n")))
        })?;
        let mailer = Mailer::new(settings.mail.clone())?;
        let mfa_keys = SecretBox::load(&settings)?.map(Arc::new);
        let users = UserCache::new(
            Duration::from_millis(settings.cache.user_ttl_ms),
            settings.cache.user_capacity,
        );
        Ok(Self {
            db,
            settings: Arc::new(settings),
            hasher: Arc::new(hasher),
            keys: Arc::new(keys),
            revoked: Arc::new(RevokedSessions::default()),
            users: Arc::new(users),
            authz: Arc::new(Authz::new(policy)),
            mailer: Arc::new(mailer),
            background: Arc::new(Background::new(MAX_BACKGROUND_TASKS)),
            public_url: Arc::new(OnceLock::new()),
            clock: Arc::new(Clock::default()),
            mfa_keys,
            registering: Arc::new(PendingRegistrations::default()),
        })
    }
}

/// Most background tasks pending at once; beyond, new work is refused (503 `overloaded`).
pub const MAX_BACKGROUND_TASKS: usize = 1024;

/// Tasks that outlive the request that started them, counted so that their number stays
/// bounded and so that tests can wait until they have all finished ([`Background::idle`]).
#[derive(Debug)]
pub struct Background {
    pending: AtomicUsize,
    max: usize,
    idle: tokio::sync::Notify,
}

impl Background {
    pub fn new(max: usize) -> Self {
        Self {
            pending: AtomicUsize::new(0),
            max,
            idle: tokio::sync::Notify::new(),
        }
    }

    /// Runs `work` on the runtime; refused when `max` tasks are already pending.
    pub fn try_spawn(
        self: &Arc<Self>,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> ServiceResult<()> {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.finished();
            return Err(ServiceError::Overloaded {
                retry_after_secs: 1,
            });
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // Counted down even if `work` panics.
            struct Done(Arc<Background>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.finished();
                }
            }
            let _done = Done(this);
            work.await;
        });
        Ok(())
    }

    fn finished(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Resolves once no background task is pending.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Revoked sessions, remembered for one access-token lifetime so that their access tokens stop
/// here: at once for revocations made by this instance, and as the change feed reports them
/// for revocations made elsewhere (see [`crate::changes`]).
#[derive(Debug, Default)]
pub struct RevokedSessions {
    inner: RwLock<HashMap<Uuid, DateTime<Utc>>>,
}

impl RevokedSessions {
    pub fn insert(&self, session_id: Uuid, forget_after: DateTime<Utc>) {
        let now = Utc::now();
        // A poisoned lock must not make revocations fail open: use the map regardless.
        let mut map = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, until| *until > now);
        map.insert(session_id, forget_after);
    }

    pub fn contains(&self, session_id: &Uuid) -> bool {
        let map = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(session_id).is_some_and(|until| *until > Utc::now())
    }
}

/// Recently read users, for a short time (`cache.user_ttl_ms`); see [`crate::config::CacheSettings`].
/// A TTL cache: an entry is served until it is `ttl` old, then the next lookup reads the row.
/// The first lookup of an entry past three quarters of its TTL is told to re-read it meanwhile
/// (the caller does so off the request's path), so a user who keeps asking never waits for the
/// database, while nothing older than `ttl` is ever served: with a 1 s TTL and thousands of
/// active users, the reads on the request path otherwise land on a few percent of requests and
/// their latency under load becomes the p99. No `Debug`: the rows carry password hashes.
pub struct UserCache {
    ttl: Duration,
    capacity: usize,
    inner: RwLock<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<Uuid, CacheEntry>,
    /// Keys in the order they were stored, so the oldest (the first to expire, the TTL being the
    /// same for all) are evicted one at a time: never a sweep or a clear of the whole map under
    /// the write lock, which would stall every lookup behind it. May name an entry stored again
    /// since; such stale items are skipped.
    order: VecDeque<(Instant, Uuid)>,
    /// When this instance last dropped a user's entry because it changed the row: a read that
    /// began before that must not be cached (kept one TTL; older reads would be expired anyway).
    forgotten: HashMap<Uuid, Instant>,
}

struct CacheEntry {
    stored_at: Instant,
    user: User,
    /// A lookup was told to re-read this entry.
    refreshing: AtomicBool,
}

/// A user served from the cache.
pub struct Cached {
    pub user: User,
    /// The entry is past three quarters of its TTL and this caller is the first to be told:
    /// it should read the row again and [`UserCache::put_read`] it, without waiting for that.
    pub refresh: bool,
}

impl UserCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            inner: RwLock::new(CacheInner::default()),
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<Cached> {
        let inner = self.inner.read().ok()?;
        let entry = inner.entries.get(id)?;
        let age = entry.stored_at.elapsed();
        if age >= self.ttl {
            return None;
        }
        let refresh =
            age >= self.ttl.mul_f64(0.75) && !entry.refreshing.swap(true, Ordering::Relaxed);
        Some(Cached {
            user: entry.user.clone(),
            refresh,
        })
    }

    /// Stores a row read from the database in a read that began at `read_started`, unless this
    /// instance has since changed the user (a newer version is cached, or the entry was
    /// forgotten after the read began): the read may predate that write.
    pub fn put_read(&self, user: &User, read_started: Instant) {
        if let Ok(mut inner) = self.inner.write() {
            if inner
                .forgotten
                .get(&user.id)
                .is_some_and(|at| *at >= read_started)
                || inner
                    .entries
                    .get(&user.id)
                    .is_some_and(|e| e.user.version > user.version)
            {
                return;
            }
            self.insert(&mut inner, user, read_started);
        }
    }

    /// Stores the row this instance has just written (its newest version).
    pub fn put(&self, user: &User) {
        if let Ok(mut inner) = self.inner.write() {
            if inner
                .entries
                .get(&user.id)
                .is_some_and(|e| e.user.version > user.version)
            {
                return;
            }
            inner.forgotten.remove(&user.id);
            self.insert(&mut inner, user, Instant::now());
        }
    }

    /// Drops the user's entry after this instance changed the row without reading it back.
    pub fn forget(&self, id: &Uuid) {
        if let Ok(mut inner) = self.inner.write() {
            inner.entries.remove(id);
            if !self.ttl.is_zero() {
                if inner.forgotten.len() >= self.capacity {
                    inner.forgotten.retain(|_, at| at.elapsed() < self.ttl);
                }
                inner.forgotten.insert(*id, Instant::now());
            }
        }
    }

    fn insert(&self, inner: &mut CacheInner, user: &User, stored_at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        // Drop what has expired, then the oldest while full: a few entries per insert at most.
        while let Some(&(at, id)) = inner.order.front() {
            if at.elapsed() < self.ttl && inner.entries.len() < self.capacity {
                break;
            }
            inner.order.pop_front();
            if inner.entries.get(&id).is_some_and(|e| e.stored_at == at) {
                inner.entries.remove(&id);
            }
        }
        inner.order.push_back((stored_at, user.id));
        inner.entries.insert(
            user.id,
            CacheEntry {
                stored_at,
                user: user.clone(),
                refreshing: AtomicBool::new(false),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::UserStatus;

    fn user(version: i32, name: &str) -> User {
        let now = Utc::now();
        User {
            id: Uuid::nil(),
            email: "u@example.com".into(),
            password_hash: String::new(),
            display_name: name.into(),
            status: UserStatus::Active,
            email_verified_at: None,
            mfa_enabled: false,
            failed_login_count: 0,
            locked_until: None,
            last_login_at: None,
            metadata: serde_json::json!({}),
            version,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    fn name(cache: &UserCache) -> String {
        cache.get(&Uuid::nil()).expect("cached").user.display_name
    }

    #[test]
    fn entries_expire_at_the_ttl() {
        let cache = UserCache::new(Duration::from_millis(200), 10);
        cache.put(&user(1, "a"));
        assert_eq!(name(&cache), "a");
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get(&Uuid::nil()).is_none(), "expired at the TTL");
    }

    #[test]
    fn the_first_lookup_past_three_quarters_of_the_ttl_is_told_to_re_read() {
        let cache = UserCache::new(Duration::from_millis(1_000), 10);
        let read_started = Instant::now();
        cache.put_read(&user(1, "a"), read_started);
        let refresh = |cache: &UserCache| cache.get(&Uuid::nil()).map(|c| c.refresh);
        assert_eq!(refresh(&cache), Some(false), "young: served as it is");
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(refresh(&cache), Some(true), "the first lookup re-reads");
        assert_eq!(refresh(&cache), Some(false), "one re-read at a time");
        // The re-read's row is stored afresh: young again, and served until its own TTL.
        cache.put_read(&user(1, "re-read"), Instant::now());
        assert_eq!(
            (refresh(&cache), name(&cache)),
            (Some(false), "re-read".into())
        );
    }

    #[test]
    fn a_full_cache_evicts_its_oldest_entries_one_at_a_time() {
        let cache = UserCache::new(Duration::from_secs(60), 3);
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            cache.put(&User {
                id: *id,
                ..user(1, "x")
            });
        }
        let kept: Vec<bool> = ids.iter().map(|id| cache.get(id).is_some()).collect();
        assert_eq!(kept, [false, false, true, true, true]);
        // Storing a user again moves it to the back; its stale place in the order is skipped.
        cache.put(&User {
            id: ids[2],
            ..user(2, "again")
        });
        cache.put(&User {
            id: ids[0],
            ..user(1, "x")
        });
        let kept: Vec<bool> = ids.iter().map(|id| cache.get(id).is_some()).collect();
        assert_eq!(kept, [true, false, true, false, true]);
    }

    #[test]
    fn a_read_that_began_before_this_instance_forgot_the_user_is_not_cached() {
        let cache = UserCache::new(Duration::from_secs(60), 10);
        let read_started = Instant::now();
        cache.forget(&Uuid::nil()); // e.g. a password change commits while the read runs
        cache.put_read(&user(1, "before the change"), read_started);
        assert!(cache.get(&Uuid::nil()).is_none());
        // A read that began after the change is cached.
        cache.put_read(&user(2, "after the change"), Instant::now());
        assert_eq!(name(&cache), "after the change");
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let cache = UserCache::new(Duration::from_secs(60), 10);
        cache.put(&user(2, "written here"));
        cache.put(&user(1, "read before the write"));
        assert_eq!(name(&cache), "written here");
        cache.put(&user(3, "changed elsewhere"));
        assert_eq!(name(&cache), "changed elsewhere");
    }
}
