//! Health, readiness, Swagger UI, the served OpenAPI document, and startup configuration checks.

use migration::sea_orm_migration::MigratorTrait;
use migration::Migrator;
use reqwest::StatusCode;
use serde_json::Value;
use service::config::{Environment, Settings};

use crate::both_backends;
use crate::helpers::{assert_problem, Backend, TestApp, TestDb};

both_backends!(health_and_readiness, swagger_ui_and_openapi_are_served);

async fn health_and_readiness(app: TestApp) {
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), StatusCode::OK);
    // A pending migration makes the instance not ready.
    Migrator::down(&app.ctx.db, Some(1)).await.unwrap();
    let res = app.get("/readyz").await;
    let body = assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    assert!(body["detail"].as_str().unwrap().contains("pending"));
    Migrator::up(&app.ctx.db, None).await.unwrap();
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
}

async fn swagger_ui_and_openapi_are_served(app: TestApp) {
    let res = app.get("/swagger-ui/").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("swagger"));
    assert_eq!(
        app.get("/swagger-ui/swagger-ui-bundle.js").await.status(),
        StatusCode::OK
    );
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    let built = serde_json::to_value(api::openapi::build()).unwrap();
    assert_eq!(served, built);
}

#[tokio::test]
async fn production_refuses_to_start_without_a_signing_key() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_tests(db.url().to_owned(), dir.path().to_owned());
    settings.environment = Environment::Production;
    settings.password.memory_kib = service::config::OWASP_MEMORY_KIB;
    settings.password.iterations = service::config::OWASP_ITERATIONS;
    let err = api::Application::build(settings.clone())
        .await
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("signing key"), "{err}");
    assert!(
        !dir.path().join("jwt-signing-key.pem").exists(),
        "no key generated in production"
    );

    // With a configured key it starts.
    settings.auth.signing_key = Some(secrecy::SecretString::from(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        [5u8; 32],
    )));
    let app = api::Application::build(settings)
        .await
        .expect("starts with a key");
    assert_ne!(app.port(), 0);
}

#[test]
fn cheap_password_hashing_only_in_test_profile() {
    let mut s = Settings::default();
    s.password.memory_kib = 64;
    s.password.iterations = 1;
    assert!(s.validate().is_err());
    s.environment = Environment::Test;
    assert!(s.validate().is_ok());
    assert!(Settings::default().validate().is_ok());
}
