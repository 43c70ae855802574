//! `tessera serve` as processes, for what only processes show:
//!
//! - two instances on one PostgreSQL database, as behind a load balancer: a change made through
//!   one (or by `tessera admin` in a third process) reaches the other within 1 s through the
//!   change feed (LISTEN/NOTIFY, with the table as the record), and killing the listening
//!   connections loses no change (needs `TESSERA_TEST_PG_URL`; skipped without it, except under
//!   CI where it fails);
//! - SIGHUP re-reading `policy.dir` (on SQLite).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");
/// The bound the README promises for changes made on another instance.
const WITHIN: Duration = Duration::from_secs(1);
/// A reload is asynchronous and promises no bound; this one is generous.
const RELOAD: Duration = Duration::from_secs(10);
/// A fixed development signing key shared by both instances (32 bytes of 0x01, base64).
const SIGNING_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    db_url: String,
    data_dir: tempfile::TempDir,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db_url)
            .env("TESSERA_ENVIRONMENT", "test")
            .env("TESSERA_DATA_DIR", self.data_dir.path())
            .env("TESSERA_AUTH__SIGNING_KEY", SIGNING_KEY)
            .env("TESSERA_PASSWORD__MEMORY_KIB", "64")
            .env("TESSERA_PASSWORD__ITERATIONS", "1")
            .env("TESSERA_LOG__LEVEL", "warn");
        c
    }

    async fn serve(&self) -> Instance {
        self.serve_with(&[]).await
    }

    async fn serve_with(&self, vars: &[(&str, &str)]) -> Instance {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = self
            .command(&["serve", "--port", &port.to_string()])
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("start tessera serve");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(res) = client.get(format!("{base}/readyz")).send().await {
                if res.status().is_success() {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "tessera serve did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Instance { child, base }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run tessera");
        assert!(
            out.status.success(),
            "tessera {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

async fn fresh_database() -> Option<(String, String)> {
    let Some(admin) = std::env::var("TESSERA_TEST_PG_URL")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "TESSERA_TEST_PG_URL must be set under CI"
        );
        eprintln!("skipping: TESSERA_TEST_PG_URL is not set");
        return None;
    };
    let name = format!("tessera_inst_{}", uuid::Uuid::new_v4().simple());
    let conn = Database::connect(&admin).await.expect("connect");
    conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create database");
    conn.close().await.ok();
    let (head, _) = admin.rsplit_once('/').expect("database url");
    let query = admin
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Some((format!("{head}/{name}{query}"), admin))
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, url: String, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, url, token, Some(body))
            .await
    }

    /// Registers and signs in; the access token and user id.
    async fn user(&self, base: &str, email: &str) -> (String, String) {
        let (status, body) = self
            .post(
                format!("{base}/v1/auth/register"),
                "",
                json!({"email": email, "password": "correct horse battery staple", "display_name": email}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().expect("id").to_owned();
        (self.login(base, email).await, id)
    }

    async fn login(&self, base: &str, email: &str) -> String {
        let (status, body) = self
            .post(
                format!("{base}/v1/auth/login"),
                "",
                json!({"email": email, "password": "correct horse battery staple"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    async fn allowed(&self, base: &str, token: &str, q: &Value) -> Option<bool> {
        let (status, body) = self
            .post(format!("{base}/v1/authz/check"), token, q.clone())
            .await;
        (status == 200).then(|| body["allowed"].as_bool().expect("allowed"))
    }
}

/// Polls `probe` until it returns `want`, for at most [`WITHIN`]; panics with `what` otherwise.
async fn within<T: PartialEq + std::fmt::Debug, F, Fut>(what: &str, want: T, probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    poll_until(WITHIN, what, want, probe).await
}

fn invitation_token(env: &Env, email: &str) -> String {
    let out = env.run(&["mail", "outbox", "--to", email, "--limit", "1"]);
    let line: Value = serde_json::from_str(out.lines().next().expect("a message")).expect("json");
    let text = line.to_string();
    let start = text.find("token=").expect("link") + "token=".len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_instance_reach_the_other_within_a_second() {
    let Some((db_url, admin_url)) = fresh_database().await else {
        return;
    };
    let env = Env {
        db_url,
        data_dir: tempfile::tempdir().expect("tempdir"),
    };
    // One after the other: the first applies the migrations.
    let a = env.serve().await;
    let b = env.serve().await;
    let c = Client {
        http: reqwest::Client::new(),
    };

    let (owner, _) = c.user(&a.base, "owner@example.com").await;
    let (bob, bob_id) = c.user(&a.base, "bob@example.com").await;
    let (_, org) = c
        .post(
            format!("{}/v1/orgs", a.base),
            &owner,
            json!({"name": "Acme", "slug": "acme"}),
        )
        .await;
    let org = org["id"].as_str().expect("org").to_owned();
    let (_, account) = c
        .post(
            format!("{}/v1/orgs/{org}/accounts", a.base),
            &owner,
            json!({"name": "A", "slug": "a"}),
        )
        .await;
    let account = account["id"].as_str().expect("account").to_owned();
    let (status, _) = c
        .post(
            format!("{}/v1/orgs/{org}/invitations", a.base),
            &owner,
            json!({"email": "bob@example.com", "role_id": role_id(&c, &a.base, &owner, &org, "viewer").await}),
        )
        .await;
    assert_eq!(status, 201);
    let token = invitation_token(&env, "bob@example.com");
    let (status, body) = c
        .post(
            format!("{}/v1/invitations/accept", a.base),
            &bob,
            json!({"token": token}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let update = json!({"org_id": org, "user_id": bob_id, "scope": {"type": "account", "id": account}, "permission": "account:update"});
    // B answers (and remembers) before the grant.
    assert_eq!(c.allowed(&b.base, &owner, &update).await, Some(false));

    // A grant on A is honoured by B.
    let admin = role_id(&c, &a.base, &owner, &org, "admin").await;
    let (status, grant) = c
        .post(
            format!("{}/v1/orgs/{org}/role-assignments", a.base),
            &owner,
            json!({"user_id": bob_id, "role_id": admin, "scope": {"type": "account", "id": account}}),
        )
        .await;
    assert_eq!(status, 201, "{grant}");
    within("grant made on A, asked on B", Some(true), || {
        c.allowed(&b.base, &owner, &update)
    })
    .await;

    // The listener's connection is killed; a change made meanwhile still arrives.
    let admin_db = Database::connect(&admin_url).await.expect("connect");
    let db_name = env
        .db_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let killed = admin_db
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db_name}' AND query ILIKE 'LISTEN%'"
        ))
        .await
        .expect("terminate listeners");
    assert!(killed.rows_affected() >= 2, "both instances were listening");
    let grant_id = grant["id"].as_str().expect("grant id").to_owned();
    let (status, _) = c
        .call(
            reqwest::Method::DELETE,
            format!("{}/v1/orgs/{org}/role-assignments/{grant_id}", a.base),
            &owner,
            None,
        )
        .await;
    assert_eq!(status, 204);
    within(
        "grant revoked on A while B's listener was down",
        Some(false),
        || c.allowed(&b.base, &owner, &update),
    )
    .await;

    // A member removed on A is refused on B.
    let read = json!({"org_id": org, "scope": {"type": "organization", "id": org}, "permission": "org:read"});
    assert_eq!(c.allowed(&b.base, &bob, &read).await, Some(true));
    let (status, _) = c
        .call(
            reqwest::Method::DELETE,
            format!("{}/v1/orgs/{org}/members/{bob_id}", a.base),
            &owner,
            None,
        )
        .await;
    assert_eq!(status, 204);
    within("member removed on A, asking on B", None, || {
        c.allowed(&b.base, &bob, &read)
    })
    .await;

    // A session revoked on A stops reading on B.
    let me = |token: String| {
        let (c, base) = (&c, b.base.clone());
        async move {
            c.call(reqwest::Method::GET, format!("{base}/v1/me"), &token, None)
                .await
                .0
        }
    };
    assert_eq!(me(bob.clone()).await, 200);
    let (status, _) = c
        .post(format!("{}/v1/auth/logout", a.base), &bob, json!({}))
        .await;
    assert_eq!(status, 204);
    within(
        "session revoked on A, reading on B",
        401,
        || me(bob.clone()),
    )
    .await;

    // `tessera admin disable-user`, in a process of its own, reaches B too.
    let (carol, carol_id) = c.user(&a.base, "carol@example.com").await;
    let (status, _) = c
        .post(
            format!("{}/v1/orgs/{org}/invitations", a.base),
            &owner,
            json!({"email": "carol@example.com", "role_id": admin}),
        )
        .await;
    assert_eq!(status, 201);
    let token = invitation_token(&env, "carol@example.com");
    let (status, _) = c
        .post(
            format!("{}/v1/invitations/accept", a.base),
            &carol,
            json!({"token": token}),
        )
        .await;
    assert_eq!(status, 200);
    let carol_update = json!({"org_id": org, "user_id": carol_id, "scope": {"type": "account", "id": account}, "permission": "account:update"});
    within("carol's grant on B", Some(true), || {
        c.allowed(&b.base, &owner, &carol_update)
    })
    .await;
    assert_eq!(me(carol.clone()).await, 200);
    env.run(&["admin", "disable-user", "carol@example.com"]);
    within("disabled user's grants on B", Some(false), || {
        c.allowed(&b.base, &owner, &carol_update)
    })
    .await;
    within("disabled user's session on B", 401, || me(carol.clone())).await;

    drop((a, b));
    admin_db
        .execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
        ))
        .await
        .ok();
}

async fn role_id(c: &Client, base: &str, token: &str, org: &str, name: &str) -> String {
    let (status, body) = c
        .call(
            reqwest::Method::GET,
            format!("{base}/v1/orgs/{org}/roles?limit=100"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["id"].as_str())
        .expect("role")
        .to_owned()
}

fn signal_hangup(instance: &Instance) {
    let status = Command::new("kill")
        .args(["-HUP", &instance.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0)
}

/// `policy.dir` is re-read on SIGHUP: an edit takes effect, an invalid file is refused (logged,
/// audited) while the policy in force stays, and checks keep answering throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_and_refuses_an_invalid_one() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let policy_dir = tempfile::tempdir().expect("tempdir");
    for f in ["model.conf", "policy.csv"] {
        std::fs::copy(shipped.join(f), policy_dir.path().join(f)).expect("copy policy");
    }
    let data = tempfile::tempdir().expect("tempdir");
    let db_path = data.path().join("tessera.db");
    let env = Env {
        db_url: format!("sqlite://{}?mode=rwc", db_path.display()),
        data_dir: data,
    };
    // The policy directory goes in through the environment, as an operator would set it.
    let server = env
        .serve_with(&[("TESSERA_POLICY__DIR", policy_dir.path().to_str().unwrap())])
        .await;
    let c = Client {
        http: reqwest::Client::new(),
    };
    let (owner, _) = c.user(&server.base, "owner@example.com").await;
    let (_, org) = c
        .post(
            format!("{}/v1/orgs", server.base),
            &owner,
            json!({"name": "Acme", "slug": "acme"}),
        )
        .await;
    let org = org["id"].as_str().expect("org").to_owned();
    let q = json!({"org_id": org, "scope": {"type": "organization", "id": org}, "permission": "project:delete"});
    assert_eq!(c.allowed(&server.base, &owner, &q).await, Some(true));

    // Checks keep coming while the policy is swapped.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asking = {
        let (stop, base, owner, q) = (stop.clone(), server.base.clone(), owner.clone(), q.clone());
        tokio::spawn(async move {
            let c = Client {
                http: reqwest::Client::new(),
            };
            let mut answered = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(
                    c.allowed(&base, &owner, &q).await.is_some(),
                    "a check failed during a reload"
                );
                answered += 1;
            }
            answered
        })
    };

    let csv = policy_dir.path().join("policy.csv");
    let text = std::fs::read_to_string(&csv).expect("read");
    std::fs::write(&csv, text.replace("p, owner, *, project:delete\n", "")).expect("write");
    signal_hangup(&server);
    poll_until(RELOAD, "edited policy in force", Some(false), || {
        c.allowed(&server.base, &owner, &q)
    })
    .await;

    let db = Database::connect(&env.db_url).await.expect("connect");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'policy.reloaded'"
        )
        .await,
        1
    );
    std::fs::write(&csv, "p, owner, *, project:own\n").expect("write invalid");
    signal_hangup(&server);
    poll_until(RELOAD, "refusal audited", 1, || {
        count(
            &db,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'policy.reload_rejected'",
        )
    })
    .await;
    // The edited policy stays in force.
    assert_eq!(c.allowed(&server.base, &owner, &q).await, Some(false));
    let read = json!({"org_id": org, "scope": {"type": "organization", "id": org}, "permission": "project:read"});
    assert_eq!(c.allowed(&server.base, &owner, &read).await, Some(true));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(asking.await.expect("asking task") > 0);
}

/// Polls `probe` until it returns `want`, for at most `bound`; panics with `what` otherwise.
async fn poll_until<T: PartialEq + std::fmt::Debug, F, Fut>(
    bound: Duration,
    what: &str,
    want: T,
    mut probe: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let started = Instant::now();
    loop {
        let got = probe().await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() <= bound,
            "{what}: still {got:?} after {bound:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
