//! Keeps this instance's memory in step with the database: reads the `change_feed` table (rows
//! written by triggers on organizations, users and sessions; see the migration) in `id` order
//! and drops what it remembers of what changed. On PostgreSQL a `LISTEN tessera_changes`
//! connection wakes it as soon as a change commits; it also reads the table every
//! [`POLL`] in case a notification was lost, and at once after its listening connection comes
//! back. On SQLite (one server process, but `tessera admin` runs in others) it reads every
//! [`SQLITE_POLL`].
//!
//! `id`s are handed out when a transaction writes its row, not when it commits, so a lower id
//! can become visible after a higher one: ids not seen yet below the highest seen are waited
//! for [`GAP_WAIT`], then taken to belong to transactions that rolled back.

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::context::AppContext;
use crate::error::ServiceResult;

/// How often the table is read on PostgreSQL without a notification.
pub const POLL: Duration = Duration::from_millis(500);
/// How often the table is read on SQLite.
pub const SQLITE_POLL: Duration = Duration::from_millis(100);
/// How long a missing id is waited for.
pub const GAP_WAIT: Duration = Duration::from_secs(10);
/// Rows kept: older ones are pruned now and then. An instance that falls further behind than
/// this forgets everything it remembers (the fallback, never needed while it keeps reading).
pub const ROWS_KEPT: i64 = 100_000;
const BATCH: i64 = 1_000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The PostgreSQL notification channel the triggers notify.
pub const CHANNEL: &str = "tessera_changes";

#[derive(Debug, FromQueryResult)]
struct Row {
    id: i64,
    organization_id: Option<Uuid>,
    authz_version: Option<i64>,
    user_id: Option<Uuid>,
    session_id: Option<Uuid>,
}

struct State {
    /// Every id up to this one has been applied (or given up on).
    watermark: i64,
    /// Ids above the watermark already applied.
    applied: BTreeSet<i64>,
    /// Since when the lowest missing id has been missing.
    gap_since: Option<Instant>,
    last_prune: Instant,
}

/// The reader of the change feed; one per server process. The server holds it; [`run`] reads
/// the feed for as long as the server does.
pub struct ChangeFeed {
    ctx: AppContext,
    state: Mutex<State>,
}

impl ChangeFeed {
    /// Starts reading after the newest change committed now: this instance remembers nothing
    /// older yet. (Before the migrations ran there is no feed yet: it starts from the first.)
    pub async fn start(ctx: &AppContext) -> Self {
        #[derive(FromQueryResult)]
        struct Max {
            max: Option<i64>,
        }
        let backend = ctx.db.get_database_backend();
        let max = Max::find_by_statement(Statement::from_string(
            backend,
            "SELECT MAX(id) AS max FROM change_feed",
        ))
        .one(&ctx.db)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the change feed yet");
            None
        })
        .and_then(|m| m.max)
        .unwrap_or(0);
        Self {
            ctx: ctx.clone(),
            state: Mutex::new(State {
                watermark: max,
                applied: BTreeSet::new(),
                gap_since: None,
                last_prune: Instant::now(),
            }),
        }
    }

    /// Reads and applies every change not applied yet; returns how many it applied.
    pub async fn catch_up(&self) -> ServiceResult<usize> {
        let ctx = &self.ctx;
        let mut state = self.state.lock().await;
        let backend = ctx.db.get_database_backend();
        let mut applied = 0;
        loop {
            let rows = Row::find_by_statement(Statement::from_sql_and_values(
                backend,
                match backend {
                    DbBackend::Postgres => {
                        "SELECT id, organization_id, authz_version, user_id, session_id \
                         FROM change_feed WHERE id > $1 ORDER BY id LIMIT $2"
                    }
                    _ => {
                        "SELECT id, organization_id, authz_version, user_id, session_id \
                         FROM change_feed WHERE id > ? ORDER BY id LIMIT ?"
                    }
                },
                [state.watermark.into(), BATCH.into()],
            ))
            .all(&ctx.db)
            .await?;
            let full = rows.len() as i64 == BATCH;
            for row in rows {
                if state.applied.insert(row.id) {
                    apply(ctx, &row).await?;
                    applied += 1;
                }
            }
            self.advance(ctx, &mut state).await?;
            if !full {
                break;
            }
        }
        if state.last_prune.elapsed() >= PRUNE_EVERY {
            state.last_prune = Instant::now();
            prune(ctx).await?;
        }
        Ok(applied)
    }

    /// Moves the watermark over applied ids, and over missing ones once they were waited for.
    async fn advance(&self, ctx: &AppContext, state: &mut State) -> ServiceResult<()> {
        loop {
            while state.applied.remove(&(state.watermark + 1)) {
                state.watermark += 1;
            }
            let Some(&next) = state.applied.first() else {
                state.gap_since = None;
                return Ok(());
            };
            let since = *state.gap_since.get_or_insert_with(Instant::now);
            if since.elapsed() < GAP_WAIT {
                return Ok(());
            }
            // Waited long enough: the missing ids rolled back, or were pruned before this
            // instance read them (then what they said is lost: forget everything).
            if oldest_id(ctx).await? > state.watermark + 1 && state.watermark > 0 {
                tracing::warn!(
                    watermark = state.watermark,
                    "change feed rows were pruned before they were read; forgetting every remembered decision"
                );
                forget_everything(ctx).await?;
            }
            state.watermark = next - 1;
            state.gap_since = None;
        }
    }
}

async fn oldest_id(ctx: &AppContext) -> ServiceResult<i64> {
    #[derive(FromQueryResult)]
    struct Min {
        min: Option<i64>,
    }
    Ok(Min::find_by_statement(Statement::from_string(
        ctx.db.get_database_backend(),
        "SELECT MIN(id) AS min FROM change_feed",
    ))
    .one(&ctx.db)
    .await?
    .and_then(|m| m.min)
    .unwrap_or(0))
}

/// Drops what this instance remembers of what one row says changed.
async fn apply(ctx: &AppContext, row: &Row) -> ServiceResult<()> {
    if let (Some(org), Some(version)) = (row.organization_id, row.authz_version) {
        ctx.authz.organization_changed(org, version);
    }
    match (row.user_id, row.session_id) {
        (_, Some(session)) => crate::sessions::SessionService::forget_locally(ctx, &[session]),
        (Some(user), None) => {
            // Status or deletion: the user's rows are read again, and the organizations they
            // belong to decide again (a disabled user's grants count for nothing).
            ctx.users.forget(&user);
            for org in crate::tenancy::organizations_of(&ctx.db, user).await? {
                ctx.authz.forget_organization(org);
            }
        }
        (None, None) => {}
    }
    Ok(())
}

/// The fallback: forget every remembered decision, and treat every session revoked within an
/// access token's lifetime as revoked here.
async fn forget_everything(ctx: &AppContext) -> ServiceResult<()> {
    ctx.authz.forget_everything();
    let revoked = crate::sessions::SessionService::recently_revoked(ctx).await?;
    crate::sessions::SessionService::forget_locally(ctx, &revoked);
    Ok(())
}

async fn prune(ctx: &AppContext) -> ServiceResult<()> {
    let backend = ctx.db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "DELETE FROM change_feed WHERE id <= (SELECT MAX(id) FROM change_feed) - $1"
        }
        _ => "DELETE FROM change_feed WHERE id <= (SELECT MAX(id) FROM change_feed) - ?",
    };
    ctx.db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [ROWS_KEPT.into()],
        ))
        .await?;
    Ok(())
}

/// Reads the feed while the server holds `feed`: woken by notifications on PostgreSQL, by a
/// timer on SQLite and as a fallback.
pub async fn run(feed: Weak<ChangeFeed>) {
    async fn catch_up(feed: &Weak<ChangeFeed>, why: &'static str) -> bool {
        let Some(feed) = feed.upgrade() else {
            return false;
        };
        if let Err(e) = feed.catch_up().await {
            tracing::warn!(error = %e, why, "reading the change feed failed; retrying");
        }
        true
    }
    let Some(ctx) = feed.upgrade().map(|f| f.ctx.clone()) else {
        return;
    };
    if ctx.db.get_database_backend() != DbBackend::Postgres {
        drop(ctx);
        loop {
            tokio::time::sleep(SQLITE_POLL).await;
            if !catch_up(&feed, "poll").await {
                return;
            }
        }
    }
    loop {
        let mut listener = match listen(&ctx).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for changes; polling until it can");
                tokio::time::sleep(POLL).await;
                if !catch_up(&feed, "poll").await {
                    return;
                }
                continue;
            }
        };
        // Whatever committed while nobody listened.
        if !catch_up(&feed, "listening").await {
            return;
        }
        loop {
            let alive = tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => catch_up(&feed, "notified").await,
                    // The connection dropped; the next `try_recv` reconnects and listens again.
                    Ok(None) => catch_up(&feed, "reconnected").await,
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener failed; reconnecting");
                        break;
                    }
                },
                _ = tokio::time::sleep(POLL) => catch_up(&feed, "poll").await,
            };
            if !alive {
                return;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A `LISTEN` on a connection of its own, outside the request pool (it holds its connection for
/// as long as it listens, and must not take one from requests).
async fn listen(
    ctx: &AppContext,
) -> Result<sea_orm::sqlx::postgres::PgListener, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
    let options: PgConnectOptions = ctx.settings.database.url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(
            ctx.settings.database.connect_timeout_ms,
        ))
        .connect_lazy_with(options.application_name("tessera change listener"));
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
