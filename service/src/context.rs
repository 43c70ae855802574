//! Everything a request needs from the domain, built once at startup and shared by all workers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::config::Settings;
use crate::error::ServiceResult;
use crate::passwords::PasswordHasher;
use crate::tokens::TokenKeys;
use crate::users::User;

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
}

impl AppContext {
    pub fn new(db: DatabaseConnection, settings: Settings, keys: TokenKeys) -> ServiceResult<Self> {
        let hasher = PasswordHasher::new(&settings.password)?;
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
pub struct UserCache {
    ttl: Duration,
    capacity: usize,
    entries: RwLock<HashMap<Uuid, (Instant, User)>>,
}

impl UserCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<User> {
        let entries = self.entries.read().ok()?;
        let (stored_at, user) = entries.get(id)?;
        (stored_at.elapsed() < self.ttl).then(|| user.clone())
    }

    pub fn put(&self, user: &User) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= self.capacity {
                entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
                if entries.len() >= self.capacity {
                    entries.clear();
                }
            }
            entries.insert(user.id, (Instant::now(), user.clone()));
        }
    }

    pub fn forget(&self, id: &Uuid) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(id);
        }
    }
}
