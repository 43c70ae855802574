//! Everything a request needs from the domain, built once at startup and shared by all workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::authz::{Authz, PolicySet};
use crate::config::Settings;
use crate::error::{ServiceError, ServiceResult};
use crate::mail::Mailer;
use crate::passwords::PasswordHasher;
use crate::tokens::TokenKeys;
use crate::users::{User, UserRefresher};

/// Who made a request, for sessions and the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Clone)]
pub struct AppContext {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub hasher: Arc<PasswordHasher>,
    pub keys: Arc<TokenKeys>,
    pub revoked: Arc<RevokedSessions>,
    pub users: Arc<UserCache>,
    /// Batches the user cache's background re-reads.
    pub refresher: Arc<UserRefresher>,
    pub authz: Arc<Authz>,
    pub mailer: Arc<Mailer>,
    /// The base of links in mail; set once the server knows its port (see
    /// [`crate::config::ServerSettings::public_base_url`]).
    pub public_url: Arc<OnceLock<String>>,
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
        let mailer = Mailer::new(settings.mail.clone());
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
            refresher: Arc::new(UserRefresher::default()),
            authz: Arc::new(Authz::new(policy)),
            mailer: Arc::new(mailer),
            public_url: Arc::new(OnceLock::new()),
        })
    }
}

/// Sessions revoked by this instance, remembered for one access-token lifetime so that their
/// access tokens stop here at once. Other instances stop accepting them when the token expires
/// (at most `auth.access_token_ttl_secs`).
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
/// No `Debug`: the rows carry password hashes.
///
/// Refresh-ahead: once an entry is three quarters of its TTL old, the next lookup still gets it but
/// is told to re-read the row in the background (one lookup per entry is told so), so users seen
/// at least every quarter TTL never wait for the database, at the cost of one read per user every
/// ~3/4 TTL instead of every TTL; nothing is served older than the TTL: an entry whose refresh did
/// not land in time expires as before and is read in the request path.
/// Share of the TTL after which a cached user is re-read in the background.
const REFRESH_AFTER: f64 = 0.75;

pub struct UserCache {
    ttl: Duration,
    capacity: usize,
    inner: RwLock<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<Uuid, CacheEntry>,
    /// When this instance last dropped a user's entry because it changed the row: a read that
    /// began before that must not be cached (kept one TTL; older reads would be expired anyway).
    forgotten: HashMap<Uuid, Instant>,
}

struct CacheEntry {
    stored_at: Instant,
    user: User,
    /// A background re-read was handed out for this entry.
    refreshing: AtomicBool,
}

/// A cached user, and whether the caller should re-read it in the background.
pub struct CachedUser {
    pub user: User,
    pub refresh: bool,
    /// Identifies the entry, for [`UserCache::put_refreshed`].
    pub stored_at: Instant,
}

impl UserCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            inner: RwLock::new(CacheInner::default()),
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<CachedUser> {
        let inner = self.inner.read().ok()?;
        let entry = inner.entries.get(id)?;
        let age = entry.stored_at.elapsed();
        if age >= self.ttl {
            return None;
        }
        let refresh = age >= self.ttl.mul_f64(REFRESH_AFTER)
            && !entry.refreshing.swap(true, Ordering::AcqRel);
        Some(CachedUser {
            user: entry.user.clone(),
            refresh,
            stored_at: entry.stored_at,
        })
    }

    /// Stores the row a background refresh read (the read began at `read_started`), only if the
    /// entry it refreshes is still the one cached: if this instance wrote or forgot the user in
    /// the meantime, the refresh's older read must not bring the old row back.
    pub fn put_refreshed(&self, user: &User, replaces: Instant, read_started: Instant) {
        if let Ok(mut inner) = self.inner.write() {
            match inner.entries.get(&user.id) {
                Some(e) if e.stored_at == replaces && e.user.version <= user.version => {}
                _ => return,
            }
            self.insert(&mut inner, user, read_started);
        }
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
        if inner.entries.len() >= self.capacity {
            inner
                .entries
                .retain(|_, e| e.stored_at.elapsed() < self.ttl);
            if inner.entries.len() >= self.capacity {
                inner.entries.clear();
            }
        }
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
    fn refresh_is_handed_out_once_late_in_the_ttl_and_entries_expire() {
        // Generous margins: sleeps may overshoot on a loaded machine.
        let cache = UserCache::new(Duration::from_millis(1_000), 10);
        cache.put(&user(1, "a"));
        let first = cache.get(&Uuid::nil()).expect("cached");
        assert!(!first.refresh, "young entries need no refresh");
        std::thread::sleep(Duration::from_millis(300));
        assert!(!cache.get(&Uuid::nil()).expect("cached").refresh, "not yet");
        std::thread::sleep(Duration::from_millis(500));
        let late = cache.get(&Uuid::nil());
        if let Some(late) = late {
            assert!(late.refresh, "past 3/4 of the TTL");
            assert!(
                cache.get(&Uuid::nil()).is_none_or(|c| !c.refresh),
                "only one lookup is asked to refresh"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get(&Uuid::nil()).is_none(), "expired at the TTL");
        // A refresh that lands starts a new lifetime.
        cache.put(&user(1, "a"));
        assert!(!cache.get(&Uuid::nil()).expect("cached").refresh);
    }

    #[test]
    fn a_refresh_never_replaces_an_entry_written_or_forgotten_meanwhile() {
        let cache = UserCache::new(Duration::from_secs(60), 10);
        cache.put(&user(1, "old"));
        let handed_out = cache.get(&Uuid::nil()).unwrap().stored_at;
        let read_started = Instant::now();
        // This instance forgets the user (e.g. a password change) while the refresh reads.
        cache.forget(&Uuid::nil());
        cache.put_refreshed(&user(1, "old"), handed_out, read_started);
        assert!(cache.get(&Uuid::nil()).is_none(), "not brought back");
        // ... or writes a new row meanwhile.
        cache.put(&user(1, "old"));
        let handed_out = cache.get(&Uuid::nil()).unwrap().stored_at;
        cache.put(&user(2, "written here"));
        cache.put_refreshed(&user(1, "old"), handed_out, Instant::now());
        assert_eq!(name(&cache), "written here");
        // Undisturbed, the refreshed row lands.
        let handed_out = cache.get(&Uuid::nil()).unwrap().stored_at;
        cache.put_refreshed(&user(3, "changed elsewhere"), handed_out, Instant::now());
        assert_eq!(name(&cache), "changed elsewhere");
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
