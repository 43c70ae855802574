//! Everything a request needs from the domain, built once at startup and shared by all workers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::config::Settings;
use crate::error::ServiceResult;
use crate::passwords::PasswordHasher;
use crate::tokens::TokenKeys;

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
}

impl AppContext {
    pub fn new(db: DatabaseConnection, settings: Settings, keys: TokenKeys) -> ServiceResult<Self> {
        let hasher = PasswordHasher::new(&settings.password)?;
        Ok(Self {
            db,
            settings: Arc::new(settings),
            hasher: Arc::new(hasher),
            keys: Arc::new(keys),
            revoked: Arc::new(RevokedSessions::default()),
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
        if let Ok(mut map) = self.inner.write() {
            map.retain(|_, until| *until > now);
            map.insert(session_id, forget_after);
        }
    }

    pub fn contains(&self, session_id: &Uuid) -> bool {
        self.inner
            .read()
            .map(|map| map.get(session_id).is_some_and(|until| *until > Utc::now()))
            .unwrap_or(false)
    }
}
