//! The fast path of every decision: Casbin's answers, remembered per organization.
//!
//! A plain Casbin `Enforcer` evaluates its matcher (a rhai script) on every call, 25–35 µs even
//! on one organization's few lines, and one global enforcer over every tenant scans all of them.
//! Here each organization gets its own enforcer, built from that organization's lines only, and
//! every answer it gives is remembered in a small per-organization table keyed by (user, scope),
//! one bit per permission, until the organization changes (its `authz_version` moves). A
//! remembered answer is a hash lookup; nothing here decides on its own: whatever `model.conf`
//! and the policy say, the enforcer said it first, so an author's edit changes decisions.
//!
//! Enforcers are large (each carries a script engine), so only the most recently used
//! [`ENFORCERS_KEPT`] stay built; the remembered answers are what every organization keeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use casbin::{CoreApi, DefaultModel, Enforcer};
use uuid::Uuid;

use super::adapter::FixedAdapter;
use super::policy::PolicySet;
use super::{Permission, Scope};
use crate::error::{ServiceError, ServiceResult};

/// Built enforcers kept at once (least recently used dropped first).
pub const ENFORCERS_KEPT: usize = 512;

/// Answers remembered per organization; past this, an eighth of them is forgotten at once (a
/// forgotten answer is asked again, at the enforcer's cost).
pub const ANSWERS_PER_ORGANIZATION: usize = 65_536;

/// `("p" | "g", fields)`: what an adapter hands Casbin.
pub type PolicyLines = Vec<(&'static str, Vec<String>)>;

const NONE: &str = "-";

/// One bit per permission of the vocabulary: which were asked, which were allowed.
#[derive(Debug, Clone, Copy, Default)]
struct Bits {
    known: u32,
    allowed: u32,
}

const _: () = assert!(
    Permission::ALL.len() <= 32,
    "Bits holds one bit per permission"
);

fn bit(permission: Permission) -> u32 {
    1 << (permission as u32)
}

/// One organization's remembered answers at one `authz_version`.
pub struct TenantAnswers {
    pub version: i64,
    answers: RwLock<HashMap<(Uuid, Uuid), Bits>>,
}

impl TenantAnswers {
    fn new(version: i64) -> Self {
        Self {
            version,
            answers: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, user_id: Uuid, scope_id: Uuid, permission: Permission) -> Option<bool> {
        let answers = self.answers.read().unwrap_or_else(PoisonError::into_inner);
        let bits = answers.get(&(user_id, scope_id))?;
        let b = bit(permission);
        (bits.known & b != 0).then_some(bits.allowed & b != 0)
    }

    fn remember(&self, user_id: Uuid, scope_id: Uuid, asked: u32, allowed: u32) {
        let mut answers = self.answers.write().unwrap_or_else(PoisonError::into_inner);
        if answers.len() >= ANSWERS_PER_ORGANIZATION && !answers.contains_key(&(user_id, scope_id))
        {
            let drop: Vec<_> = answers
                .keys()
                .take(ANSWERS_PER_ORGANIZATION / 8)
                .copied()
                .collect();
            for key in drop {
                answers.remove(&key);
            }
        }
        let bits = answers.entry((user_id, scope_id)).or_default();
        bits.known |= asked;
        bits.allowed = (bits.allowed & !asked) | (allowed & asked);
    }

    /// Answers remembered (for the memory figure of the benchmark).
    pub fn len(&self) -> usize {
        self.answers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The most recently used enforcers, by organization and version.
#[derive(Default)]
struct Enforcers {
    tick: u64,
    kept: HashMap<Uuid, (i64, u64, Arc<Enforcer>)>,
}

impl Enforcers {
    fn get(&mut self, organization_id: Uuid, version: i64) -> Option<Arc<Enforcer>> {
        self.tick += 1;
        let tick = self.tick;
        let (v, used, enforcer) = self.kept.get_mut(&organization_id)?;
        if *v != version {
            return None;
        }
        *used = tick;
        Some(enforcer.clone())
    }

    fn put(&mut self, organization_id: Uuid, version: i64, enforcer: Arc<Enforcer>) {
        self.tick += 1;
        if self.kept.len() >= ENFORCERS_KEPT && !self.kept.contains_key(&organization_id) {
            if let Some(oldest) = self
                .kept
                .iter()
                .min_by_key(|(_, (_, used, _))| *used)
                .map(|(id, _)| *id)
            {
                self.kept.remove(&oldest);
            }
        }
        let keep_newer = self
            .kept
            .get(&organization_id)
            .is_some_and(|(v, _, _)| *v > version);
        if !keep_newer {
            self.kept
                .insert(organization_id, (version, self.tick, enforcer));
        }
    }
}

/// Casbin's decisions for every organization, remembered; see the module's documentation.
pub struct Decisions {
    policy: RwLock<Arc<PolicySet>>,
    tenants: RwLock<HashMap<Uuid, Arc<TenantAnswers>>>,
    enforcers: Mutex<Enforcers>,
}

impl Decisions {
    pub fn new(policy: Arc<PolicySet>) -> Self {
        Self {
            policy: RwLock::new(policy),
            tenants: RwLock::new(HashMap::new()),
            enforcers: Mutex::new(Enforcers::default()),
        }
    }

    pub fn policy(&self) -> Arc<PolicySet> {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Decides with a new policy from now on: every remembered answer and built enforcer is
    /// dropped together with the old policy.
    pub fn replace_policy(&self, policy: Arc<PolicySet>) {
        let mut current = self.policy.write().unwrap_or_else(PoisonError::into_inner);
        *current = policy;
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *self
            .enforcers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Enforcers::default();
    }

    /// The organization's answers at `version`: the remembered table if it is that recent,
    /// else a fresh one (an older table is replaced; a newer one is kept and a caller still at
    /// an older version gets a table of its own that nobody else sees).
    pub fn tenant(&self, organization_id: Uuid, version: i64) -> Arc<TenantAnswers> {
        if let Some(t) = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&organization_id)
        {
            if t.version == version {
                return t.clone();
            }
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        match tenants.get(&organization_id) {
            Some(t) if t.version == version => t.clone(),
            Some(t) if t.version > version => Arc::new(TenantAnswers::new(version)),
            _ => {
                let fresh = Arc::new(TenantAnswers::new(version));
                tenants.insert(organization_id, fresh.clone());
                fresh
            }
        }
    }

    /// The remembered answer, if there is one: the fast path, no await and no allocation.
    pub fn remembered(
        &self,
        organization_id: Uuid,
        version: i64,
        user_id: Uuid,
        scope: &Scope,
        permission: Permission,
    ) -> Option<bool> {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        let t = tenants.get(&organization_id)?;
        if t.version != version {
            return None;
        }
        t.get(user_id, scope.id(), permission)
    }

    /// Forgets an organization's answers and enforcer, whatever their version.
    pub fn forget(&self, organization_id: Uuid) {
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&organization_id);
        self.enforcers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kept
            .remove(&organization_id);
    }

    /// Forgets what was remembered of an organization before `version`.
    pub fn forget_older(&self, organization_id: Uuid, version: i64) {
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        if tenants
            .get(&organization_id)
            .is_some_and(|t| t.version < version)
        {
            tenants.remove(&organization_id);
        }
        drop(tenants);
        let mut enforcers = self
            .enforcers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if enforcers
            .kept
            .get(&organization_id)
            .is_some_and(|(v, _, _)| *v < version)
        {
            enforcers.kept.remove(&organization_id);
        }
    }

    /// Organizations with remembered answers.
    pub fn organizations(&self) -> Vec<Uuid> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Answers remembered across every organization.
    pub fn answers(&self) -> usize {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|t| t.len())
            .sum()
    }

    /// Casbin's answers for each of `permissions` (the first one's or all of them), asking the
    /// organization's enforcer for what is not remembered. `lines` loads the organization's
    /// policy lines when no enforcer at `version` is built.
    pub async fn decide_many<F, Fut>(
        &self,
        organization_id: Uuid,
        version: i64,
        user_id: Uuid,
        scope: &Scope,
        permissions: &[Permission],
        lines: F,
    ) -> ServiceResult<u32>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ServiceResult<PolicyLines>>,
    {
        let policy = self.policy();
        let tenant = self.tenant(organization_id, version);
        let wanted: u32 = permissions.iter().map(|p| bit(*p)).fold(0, |a, b| a | b);
        let mut allowed = 0;
        let mut ask = Vec::new();
        for p in permissions {
            match tenant.get(user_id, scope.id(), *p) {
                Some(true) => allowed |= bit(*p),
                Some(false) => {}
                None => ask.push(*p),
            }
        }
        if ask.is_empty() {
            return Ok(allowed & wanted);
        }
        let enforcer = self.enforcer(organization_id, version, lines).await?;
        let mut asked = 0;
        let mut answered = 0;
        for p in ask {
            asked |= bit(p);
            if enforce(&enforcer, user_id, scope, p)? {
                answered |= bit(p);
            }
        }
        let current = self.policy.read().unwrap_or_else(PoisonError::into_inner);
        if Arc::ptr_eq(&current, &policy) {
            tenant.remember(user_id, scope.id(), asked, answered);
        }
        Ok((allowed | answered) & wanted)
    }

    /// Casbin's answer for one permission.
    pub async fn decide<F, Fut>(
        &self,
        organization_id: Uuid,
        version: i64,
        user_id: Uuid,
        scope: &Scope,
        permission: Permission,
        lines: F,
    ) -> ServiceResult<bool>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ServiceResult<PolicyLines>>,
    {
        if let Some(answer) = self.remembered(organization_id, version, user_id, scope, permission)
        {
            return Ok(answer);
        }
        let bits = self
            .decide_many(
                organization_id,
                version,
                user_id,
                scope,
                &[permission],
                lines,
            )
            .await?;
        Ok(bits != 0)
    }

    /// The organization's enforcer at `version`, built from `lines` if none is kept.
    pub async fn enforcer<F, Fut>(
        &self,
        organization_id: Uuid,
        version: i64,
        lines: F,
    ) -> ServiceResult<Arc<Enforcer>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ServiceResult<PolicyLines>>,
    {
        if let Some(e) = self
            .enforcers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(organization_id, version)
        {
            return Ok(e);
        }
        let policy = self.policy();
        let enforcer = Arc::new(build_enforcer(&policy, FixedAdapter(lines().await?)).await?);
        // Kept only if the policy it was built on is still the one in force (the read lock
        // keeps a reload from slipping in between).
        let current = self.policy.read().unwrap_or_else(PoisonError::into_inner);
        if Arc::ptr_eq(&current, &policy) {
            self.enforcers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(organization_id, version, enforcer.clone());
        }
        Ok(enforcer)
    }
}

/// A Casbin enforcer over the policy's model and whatever `adapter` loads.
pub async fn build_enforcer<A: casbin::Adapter + 'static>(
    policy: &PolicySet,
    adapter: A,
) -> ServiceResult<Enforcer> {
    let model = DefaultModel::from_str(&policy.model_text)
        .await
        .map_err(|e| ServiceError::unexpected_msg(format!("casbin model: {e}")))?;
    Enforcer::new(model, adapter)
        .await
        .map_err(|e| ServiceError::unexpected_msg(format!("casbin enforcer: {e}")))
}

/// The request as `model.conf` defines it: `(sub, dom, acct, proj, act)`.
pub fn request(
    user_id: Uuid,
    scope: &Scope,
    permission: Permission,
) -> (String, String, String, String, &'static str) {
    let text = |id: Option<Uuid>| id.map_or_else(|| NONE.to_owned(), |id| id.to_string());
    (
        user_id.to_string(),
        scope.organization_id.to_string(),
        text(scope.account_id),
        text(scope.project_id),
        permission.as_str(),
    )
}

/// One Casbin decision.
pub fn enforce(
    enforcer: &Enforcer,
    user_id: Uuid,
    scope: &Scope,
    permission: Permission,
) -> ServiceResult<bool> {
    enforcer
        .enforce(request(user_id, scope, permission))
        .map_err(|e| ServiceError::unexpected_msg(format!("casbin enforce: {e}")))
}

/// The `p` lines that allow the request, each on its own with the organization's grants: what
/// Casbin matched (casbin-rs reports matched lines only with its `explain` feature, which drags
/// in a logging stack). Candidates are the lines that name the permission; each is tried in an
/// enforcer over the same model holding the grants and that one line.
pub async fn matching_lines(
    policy: &PolicySet,
    lines: &PolicyLines,
    user_id: Uuid,
    scope: &Scope,
    permission: Permission,
) -> ServiceResult<Vec<Vec<String>>> {
    let grants: PolicyLines = lines.iter().filter(|(t, _)| *t == "g").cloned().collect();
    let mut matched = Vec::new();
    for (_, rule) in lines
        .iter()
        .filter(|(t, rule)| *t == "p" && rule.iter().any(|f| f == permission.as_str()))
    {
        let mut one = grants.clone();
        one.push(("p", rule.clone()));
        let enforcer = build_enforcer(policy, FixedAdapter(one)).await?;
        if enforce(&enforcer, user_id, scope, permission)? {
            matched.push(rule.clone());
        }
    }
    Ok(matched)
}
