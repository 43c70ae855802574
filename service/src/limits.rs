//! Brute-force protection and rate limits, kept in the database so that they hold across
//! instances and cannot be raced past: every counter moves in one atomic upsert that also
//! decides whether the attempt may go ahead (identical SQL on SQLite and PostgreSQL).
//!
//! - Per client IP ([`ip_attempt`]): at most `max` attempts of an action (sign-in, registration,
//!   password reset, email verification) per `window_secs`. Windows are aligned (Unix time /
//!   window) and an attempt is allowed only while the previous and the current window together
//!   hold fewer than `max`, so no span of `window_secs` ever sees more than `max` attempts (a
//!   plain fixed window would allow twice that across a boundary). IPv6 clients are counted per
//!   /64, the block one subscriber usually holds.
//! - Per account ([`begin_secret_check`] / [`finish_secret_check`]): every password or MFA-code
//!   check first reserves itself, counted as a failure until it succeeds. After `free_failures`
//!   failures in a row each further check waits a delay that doubles up to `max_delay_secs`,
//!   and no account has more than `failure_budget` failed checks in any `failure_window_secs`
//!   (the same two-window rule). Reserving in the same statement that decides is what keeps
//!   200 parallel wrong passwords within the budget. A success ends the run and gives its
//!   reservation back. Nothing here revokes a session, and every wait is bounded.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement, Value};
use uuid::Uuid;

use crate::config::WindowLimit;
use crate::context::AppContext;
use crate::error::{ServiceError, ServiceResult};

/// The actions limited per client IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpAction {
    Login,
    Register,
    PasswordReset,
    EmailVerification,
}

impl IpAction {
    fn name(self) -> &'static str {
        match self {
            IpAction::Login => "login",
            IpAction::Register => "register",
            IpAction::PasswordReset => "password_reset",
            IpAction::EmailVerification => "email_verification",
        }
    }

    fn limit(self, ctx: &AppContext) -> WindowLimit {
        let l = &ctx.settings.limits;
        match self {
            IpAction::Login => l.login(),
            IpAction::Register => l.register(),
            IpAction::PasswordReset => l.password_reset(),
            IpAction::EmailVerification => l.email_verification(),
        }
    }
}

/// The unit one client is counted as: its IPv4 address, or its IPv6 /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        v6 => crate::config::mask(v6, 64),
    }
}

/// Counts one attempt of `action` by the client at `ip`, or refuses it (429 `rate_limited`, with
/// the seconds until an attempt would be allowed again) when the client's budget is spent.
/// Refused attempts are not counted.
pub async fn ip_attempt(ctx: &AppContext, action: IpAction, ip: IpAddr) -> ServiceResult<()> {
    let limit = action.limit(ctx);
    let key = format!("{}:{}", action.name(), client_key(ip));
    let now = ctx.clock.now().timestamp();
    let window = i64::from(limit.window_secs);
    let index = now.div_euclid(window);
    let sql = format!(
        "INSERT INTO rate_limit_counters (key, window_index, previous_count, current_count) \
         VALUES ($1, $2, 0, 1) \
         ON CONFLICT (key) DO UPDATE SET {shift} \
         WHERE {held} < $3 \
         RETURNING current_count",
        shift = shift_windows("rate_limit_counters", "$2"),
        held = held_in_windows("rate_limit_counters", "$2"),
    );
    let values: Vec<Value> = vec![
        key.clone().into(),
        index.into(),
        i64::from(limit.max).into(),
    ];
    let admitted = query_one(ctx, &sql, values).await?.is_some();
    maybe_prune(ctx, action, index).await;
    if admitted {
        return Ok(());
    }
    let row = entity::rate_limit_counters::Entity::find_by_id(key)
        .one(&ctx.db)
        .await?;
    let retry_after_secs = row.map_or(1, |r| {
        window_wait(
            r.window_index,
            r.previous_count,
            r.current_count,
            index,
            i64::from(limit.max),
            window,
            now,
        )
    });
    Err(ServiceError::RateLimited { retry_after_secs })
}

/// The stand-in subject of an email no account has, so that sign-ins for unknown addresses are
/// throttled exactly like those for real ones (same statements, same answers): a deterministic
/// UUID (version 8) from SHA-256 over the normalized address.
pub fn unknown_email_subject(email: &crate::domain::Email) -> Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("tessera:unknown-email:{}", email.as_str()));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Reserves one password or MFA-code check for `user_id` (a user id, or
/// [`unknown_email_subject`]), or refuses it (429 `rate_limited` with the seconds to wait) while
/// the account's delay runs or its failure budget is spent. The reservation counts as a failure
/// until [`finish_secret_check`] reports a success, so checks running in parallel cannot exceed
/// the budget. Call it before verifying anything, and `finish_secret_check` after.
pub async fn begin_secret_check(ctx: &AppContext, user_id: Uuid) -> ServiceResult<()> {
    let l = &ctx.settings.limits;
    let now = ctx.clock.now().timestamp();
    let window = i64::from(l.failure_window_secs);
    let index = now.div_euclid(window);
    let (free, first, max_delay) = (
        i64::from(l.free_failures),
        i64::from(l.first_delay_secs),
        i64::from(l.max_delay_secs),
    );
    // The delay the reservation that makes the run `c` long imposes on the next check: none
    // before `free` failures, then `first`, doubling up to `max_delay`.
    let t = "secret_check_limits";
    let delay = format!(
        "CASE WHEN {t}.consecutive_failures + 1 < $5 THEN 0 \
              WHEN {t}.consecutive_failures + 1 = $5 OR {t}.delay_secs = 0 THEN $6 \
              WHEN {t}.delay_secs * 2 > $7 THEN $7 \
              ELSE {t}.delay_secs * 2 END"
    );
    let first_delay = if free <= 1 { first } else { 0 };
    let sql = format!(
        "INSERT INTO {t} (subject, window_index, previous_count, current_count, \
                          consecutive_failures, delay_secs, not_before) \
         VALUES ($1, $2, 0, 1, 1, $8, $3 + $8) \
         ON CONFLICT (subject) DO UPDATE SET {shift}, \
             consecutive_failures = {t}.consecutive_failures + 1, \
             delay_secs = {delay}, \
             not_before = $3 + {delay} \
         WHERE {t}.not_before <= $3 AND {held} < $4 \
         RETURNING consecutive_failures",
        shift = shift_windows(t, "$2"),
        held = held_in_windows(t, "$2"),
    );
    let values: Vec<Value> = vec![
        user_id.into(),
        index.into(),
        now.into(),
        i64::from(l.failure_budget).into(),
        free.into(),
        first.into(),
        max_delay.into(),
        first_delay.into(),
    ];
    if query_one(ctx, &sql, values).await?.is_some() {
        return Ok(());
    }
    let row = entity::secret_check_limits::Entity::find_by_id(user_id)
        .one(&ctx.db)
        .await?;
    let retry_after_secs = row.map_or(1, |r| {
        let budget = window_wait(
            r.window_index,
            r.previous_count,
            r.current_count,
            index,
            i64::from(l.failure_budget),
            window,
            now,
        );
        let delay = u64::try_from(r.not_before - now).unwrap_or(0);
        budget.max(delay).max(1)
    });
    Err(ServiceError::RateLimited { retry_after_secs })
}

/// Settles a check reserved by [`begin_secret_check`]. A success ends the run of failures (and
/// its delay) and gives the reservation back to the budget; a failure stays counted, and the
/// delay it earned runs from now, when the failure is known.
pub async fn finish_secret_check(
    ctx: &AppContext,
    user_id: Uuid,
    succeeded: bool,
) -> ServiceResult<()> {
    let now = ctx.clock.now().timestamp();
    let sql = if succeeded {
        "UPDATE secret_check_limits SET consecutive_failures = 0, delay_secs = 0, not_before = 0, \
             current_count = CASE WHEN current_count > 0 THEN current_count - 1 ELSE 0 END \
         WHERE subject = $1"
    } else {
        "UPDATE secret_check_limits SET not_before = $2 + delay_secs \
         WHERE subject = $1 AND not_before < $2 + delay_secs"
    };
    execute(ctx, sql, vec![user_id.into(), now.into()]).await
}

/// Gives back a check reserved by [`begin_secret_check`] that never ran (the hash was refused
/// or failed): it counts neither as a failure nor as a success.
pub async fn abandon_secret_check(ctx: &AppContext, user_id: Uuid) -> ServiceResult<()> {
    let sql = "UPDATE secret_check_limits SET \
             consecutive_failures = CASE WHEN consecutive_failures > 0 \
                                         THEN consecutive_failures - 1 ELSE 0 END, \
             current_count = CASE WHEN current_count > 0 THEN current_count - 1 ELSE 0 END \
         WHERE subject = $1";
    execute(ctx, sql, vec![user_id.into()]).await
}

/// Runs a password or MFA-code check within the account's budget: [`begin_secret_check`], then
/// `check` (true when the secret matched), then [`finish_secret_check`] with its verdict, or
/// [`abandon_secret_check`] when it failed to run.
pub async fn secret_check<T>(
    ctx: &AppContext,
    user_id: Uuid,
    check: impl std::future::Future<Output = ServiceResult<(bool, T)>>,
) -> ServiceResult<(bool, T)> {
    begin_secret_check(ctx, user_id).await?;
    match check.await {
        Ok((matched, value)) => {
            finish_secret_check(ctx, user_id, matched).await?;
            Ok((matched, value))
        }
        Err(err) => {
            if let Err(e) = abandon_secret_check(ctx, user_id).await {
                tracing::warn!(error = %e, "could not give back an unused secret check");
            }
            Err(err)
        }
    }
}

/// The SET list that moves a two-window counter to window `index` and counts one more attempt.
/// (Every right-hand side reads the row as it was before the update.)
fn shift_windows(table: &str, index: &str) -> String {
    format!(
        "previous_count = CASE WHEN {table}.window_index = {index} THEN {table}.previous_count \
                               WHEN {table}.window_index = {index} - 1 THEN {table}.current_count \
                               ELSE 0 END, \
         current_count = CASE WHEN {table}.window_index = {index} THEN {table}.current_count + 1 \
                              ELSE 1 END, \
         window_index = {index}"
    )
}

/// What the previous and current window hold, as seen from window `index`.
fn held_in_windows(table: &str, index: &str) -> String {
    format!(
        "(CASE WHEN {table}.window_index = {index} \
                   THEN {table}.previous_count + {table}.current_count \
               WHEN {table}.window_index = {index} - 1 THEN {table}.current_count \
               ELSE 0 END)"
    )
}

/// Seconds until a counter stored at `stored_index` with these counts admits an attempt again,
/// seen at `now` in window `index` (at least 1).
fn window_wait(
    stored_index: i64,
    previous: i32,
    current: i32,
    index: i64,
    max: i64,
    window: i64,
    now: i64,
) -> u64 {
    let (previous, current) = (i64::from(previous), i64::from(current));
    // The counts as seen from `index`, then the first window from which they fall below `max`.
    let (prev, cur) = match index - stored_index {
        0 => (previous, current),
        1 => (current, 0),
        _ => (0, 0),
    };
    let free_from = if prev + cur < max {
        index
    } else if cur < max {
        index + 1
    } else {
        index + 2
    };
    u64::try_from(free_from * window - now).unwrap_or(0).max(1)
}

/// Forgets counters whose windows have both passed, every so often (they could only say 0).
async fn maybe_prune(ctx: &AppContext, action: IpAction, index: i64) {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    if CALLS.fetch_add(1, Ordering::Relaxed) % 1024 != 1023 {
        return;
    }
    let sql = "DELETE FROM rate_limit_counters WHERE key LIKE $1 AND window_index < $2";
    let pattern = format!("{}:%", action.name());
    if let Err(err) = execute(ctx, sql, vec![pattern.into(), (index - 1).into()]).await {
        tracing::warn!(error = %err, "could not prune rate-limit counters");
    }
}

/// `$n` placeholders as each backend spells them (SQLite numbers them `?n`).
fn statement(ctx: &AppContext, sql: &str, values: Vec<Value>) -> Statement {
    let backend = ctx.db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

async fn query_one(
    ctx: &AppContext,
    sql: &str,
    values: Vec<Value>,
) -> ServiceResult<Option<sea_orm::QueryResult>> {
    Ok(ctx.db.query_one_raw(statement(ctx, sql, values)).await?)
}

async fn execute(ctx: &AppContext, sql: &str, values: Vec<Value>) -> ServiceResult<()> {
    ctx.db.execute_raw(statement(ctx, sql, values)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_follow_the_two_windows() {
        // 60-second windows, max 10, now = 125 (window 2, 55 s to its end).
        let wait = |stored, prev, cur| window_wait(stored, prev, cur, 2, 10, 60, 125);
        assert_eq!(
            wait(2, 4, 6),
            55,
            "full across both: wait for the previous to pass"
        );
        assert_eq!(
            wait(2, 0, 10),
            115,
            "the current alone is full: two window ends"
        );
        assert_eq!(
            wait(1, 0, 10),
            55,
            "stored a window ago: it is the previous now"
        );
        assert_eq!(
            wait(0, 10, 10),
            1,
            "long past: free now (never less than 1)"
        );
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(v4), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
