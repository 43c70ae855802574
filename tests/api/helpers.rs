//! The test harness: a real server on port 0 over a fresh database (SQLite file or a new
//! PostgreSQL database) with the real migrations, a typed client, and named personas.

use std::sync::Arc;

use api::Application;
use reqwest::{Client, Response, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{json, Value};
use service::config::Settings;
use service::AppContext;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server URL for tests (any database on it; each test creates its own).
pub fn pg_admin_url() -> Option<String> {
    std::env::var("TESSERA_TEST_PG_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Generates one `#[tokio::test]` per backend for `async fn $name(app: TestApp)`.
/// Without `TESSERA_TEST_PG_URL` the PostgreSQL variant is skipped, except under CI where it fails.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await;
                    super::$name(app.expect("sqlite is always available")).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await {
                        super::$name(app).await;
                    }
                }
            }
        )+
    };
}

/// A database that exists for one test and is removed afterwards.
pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
    /// A database someone else creates and removes.
    Borrowed { url: String },
}

impl TestDb {
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}/tessera.db?mode=rwc", dir.path().display());
                Some(TestDb::Sqlite { _dir: dir, url })
            }
            Backend::Postgres => {
                let Some(admin_url) = pg_admin_url() else {
                    if std::env::var_os("CI").is_some() {
                        panic!("TESSERA_TEST_PG_URL must be set under CI");
                    }
                    eprintln!("skipping PostgreSQL variant: TESSERA_TEST_PG_URL is not set");
                    return None;
                };
                let name = format!("tessera_test_{}", Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to TESSERA_TEST_PG_URL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let url = replace_db_name(&admin_url, &name);
                Some(TestDb::Postgres {
                    admin_url,
                    name,
                    url,
                })
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. }
            | TestDb::Postgres { url, .. }
            | TestDb::Borrowed { url } => url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime; use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(admin) = Database::connect(&admin_url).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                                ))
                                .await;
                            let _ = admin.close().await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// `postgres://u@h:p/db?x` with `db` replaced.
pub fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    match query {
        Some(q) => format!("{host}/{name}?{q}"),
        None => format!("{host}/{name}"),
    }
}

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub ctx: AppContext,
    _db: Arc<TestDb>,
    _data_dir: tempfile::TempDir,
}

/// A registered user and the tokens of one sign-in.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
    pub session_id: Uuid,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with settings adjusted by `tweak` (after the test defaults).
    pub async fn spawn_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        let db = TestDb::create(backend).await?;
        Some(Self::start(db, tweak).await)
    }

    /// Spawns on SQLite with the user cache's TTL set to `ms` (for the cache-timing tests).
    pub async fn sqlite_with_user_ttl(ms: u64) -> TestApp {
        Self::spawn_with(Backend::Sqlite, |s| s.cache.user_ttl_ms = ms)
            .await
            .expect("sqlite is always available")
    }

    /// Spawns over an existing database that the caller owns.
    pub async fn spawn_with_database(url: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        Self::start(
            TestDb::Borrowed {
                url: url.to_owned(),
            },
            tweak,
        )
        .await
    }

    async fn start(db: TestDb, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::for_tests(db.url().to_owned(), data_dir.path().to_owned());
        tweak(&mut settings);
        let app = Application::build(settings)
            .await
            .expect("build application");
        let address = format!("http://127.0.0.1:{}", app.port());
        let ctx = app.context().clone();
        tokio::spawn(app.run_until_stopped());
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        TestApp {
            address,
            client,
            ctx,
            _db: Arc::new(db),
            _data_dir: data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_authed(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// `POST /v1/auth/refresh` with `token`, sent with the `User-Agent` header `agent`.
    pub async fn refresh_with_agent(&self, token: &str, agent: &str) -> Response {
        self.client
            .post(self.url("/v1/auth/refresh"))
            .header("user-agent", agent)
            .json(&serde_json::json!({ "refresh_token": token }))
            .send()
            .await
            .expect("request")
    }

    pub async fn delete_authed(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_authed(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Any request with a bearer token and an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request")
    }

    /// `POST path` as `user`, expecting 201; the body.
    pub async fn create(&self, user: &TestUser, path: &str, body: &Value) -> Value {
        let res = self.post_authed(path, &user.access_token, body).await;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {text}");
        serde_json::from_str(&text).expect("json")
    }

    /// A new organization owned by `owner`; its id.
    pub async fn create_org(&self, owner: &TestUser, slug: &str) -> Uuid {
        let body = self
            .create(owner, "/v1/orgs", &json!({ "name": slug, "slug": slug }))
            .await;
        body["id"].as_str().expect("id").parse().expect("uuid")
    }

    pub async fn create_account(&self, owner: &TestUser, org: Uuid, slug: &str) -> Uuid {
        let body = self
            .create(
                owner,
                &format!("/v1/orgs/{org}/accounts"),
                &json!({ "name": slug, "slug": slug }),
            )
            .await;
        body["id"].as_str().expect("id").parse().expect("uuid")
    }

    pub async fn create_project(
        &self,
        owner: &TestUser,
        org: Uuid,
        account: Uuid,
        slug: &str,
    ) -> Uuid {
        let body = self
            .create(
                owner,
                &format!("/v1/orgs/{org}/accounts/{account}/projects"),
                &json!({ "name": slug, "slug": slug }),
            )
            .await;
        body["id"].as_str().expect("id").parse().expect("uuid")
    }

    pub async fn register(&self, email: &str, password: &str, display_name: &str) -> Response {
        self.post_json(
            "/v1/auth/register",
            &json!({ "email": email, "password": password, "display_name": display_name }),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/auth/login",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json(
            "/v1/auth/refresh",
            &json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    /// Signs in again as `user`, returning the tokens of the new session.
    pub async fn sign_in(&self, user: &TestUser) -> TestUser {
        let res = self.login(&user.email, &user.password).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("json");
        TestUser {
            access_token: body["access_token"].as_str().expect("access").to_owned(),
            refresh_token: body["refresh_token"].as_str().expect("refresh").to_owned(),
            session_id: body["session_id"]
                .as_str()
                .expect("sid")
                .parse()
                .expect("uuid"),
            ..user.clone()
        }
    }

    /// A new user, registered and signed in. `name` makes the email unique and readable.
    pub async fn user(&self, name: &str) -> TestUser {
        let email = format!("{name}-{}@example.com", Uuid::new_v4().simple());
        let res = self.register(&email, PASSWORD, name).await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap_or_default()
        );
        let body: Value = res.json().await.expect("json");
        let id = body["id"].as_str().expect("id").parse().expect("uuid");
        let partial = TestUser {
            id,
            email,
            password: PASSWORD.to_owned(),
            access_token: String::new(),
            refresh_token: String::new(),
            session_id: Uuid::nil(),
        };
        self.sign_in(&partial).await
    }

    /// `GET /v1/me` with `token`, expecting 200; the body.
    pub async fn me(&self, token: &str) -> Value {
        let res = self.get_authed("/v1/me", token).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.expect("json")
    }

    /// The stored session row.
    pub async fn session(&self, id: Uuid) -> entity::sessions::Model {
        use sea_orm::EntityTrait;
        entity::sessions::Entity::find_by_id(id)
            .one(&self.ctx.db)
            .await
            .expect("query")
            .expect("session exists")
    }

    /// Asserts that neither the access token nor the refresh token of `user`'s session works.
    pub async fn assert_signed_out(&self, user: &TestUser) {
        assert_eq!(
            self.get_authed("/v1/me", &user.access_token).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            self.refresh(&user.refresh_token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    /// Changes a user's display name straight in the database, as another instance would,
    /// bypassing this instance (and its cache).
    pub async fn rename_elsewhere(&self, user_id: Uuid, name: &str) {
        use sea_orm::sea_query::Expr;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        entity::users::Entity::update_many()
            .col_expr(entity::users::Column::DisplayName, Expr::value(name))
            .filter(entity::users::Column::Id.eq(user_id))
            .exec(&self.ctx.db)
            .await
            .expect("update");
    }

    /// Audit actions recorded for a user as actor, oldest first.
    pub async fn audit_actions(&self, user_id: Uuid) -> Vec<String> {
        let mut events = service::users::UserService::recent_audit(&self.ctx.db, user_id, 1000)
            .await
            .expect("audit");
        events.reverse();
        events.into_iter().map(|e| e.action).collect()
    }
}

/// Asserts a problem+json answer with this status and code; returns the body.
pub async fn assert_problem(res: Response, status: StatusCode, code: &str) -> Value {
    let got = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let header_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = res.json().await.expect("problem body is JSON");
    assert_eq!(got, status, "body: {body}");
    assert_eq!(content_type, "application/problem+json", "body: {body}");
    assert_eq!(body["code"], code, "body: {body}");
    assert_eq!(body["status"], status.as_u16(), "body: {body}");
    assert_eq!(body["type"], format!("urn:tessera:problem:{code}"));
    assert!(body["title"].is_string());
    let body_id = body["request_id"]
        .as_str()
        .expect("request_id in problem body");
    if let Some(header_id) = header_id {
        assert_eq!(header_id, body_id);
    }
    body
}
