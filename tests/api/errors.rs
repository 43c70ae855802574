//! Bad input of every shape gets a 4xx problem document, never a 500 or a panic.

use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp};

both_backends!(
    malformed_requests_are_4xx_problems,
    unknown_routes_are_404_problems
);

async fn malformed_requests_are_4xx_problems(app: TestApp) {
    let post = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut req = app.client.post(app.url("/v1/auth/register")).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let json = Some("application/json");
    type Case = (
        &'static str,
        Vec<u8>,
        Option<&'static str>,
        StatusCode,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("truncated JSON", b"{\"email\":".to_vec(), json, StatusCode::BAD_REQUEST, "malformed_json"),
        ("not JSON", b"email=a@b.c".to_vec(), json, StatusCode::BAD_REQUEST, "malformed_json"),
        ("empty body", Vec::new(), json, StatusCode::BAD_REQUEST, "malformed_json"),
        ("invalid UTF-8", vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'], json, StatusCode::BAD_REQUEST, "malformed_json"),
        ("trailing garbage", br#"{"email":"a@example.com","password":"correct horse battery","display_name":"A"} {}"#.to_vec(), json, StatusCode::BAD_REQUEST, "malformed_json"),
        ("array instead of object", "[".repeat(10_000).into_bytes(), json, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("wrong content type", br#"{"email":"a@example.com"}"#.to_vec(), Some("text/plain"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("no content type", br#"{"email":"a@example.com"}"#.to_vec(), None, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("oversized", format!("{{\"email\":\"{}\"}}", "a".repeat(70_000)).into_bytes(), json, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("wrong types", br#"{"email":1,"password":[],"display_name":{}}"#.to_vec(), json, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("null field", br#"{"email":null,"password":"correct horse battery","display_name":"A"}"#.to_vec(), json, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
    ];
    for (name, body, ct, status, code) in cases {
        let res = post(body, ct).await.unwrap();
        assert_eq!(res.status(), status, "{name}");
        assert_problem(res, status, code).await;
    }
    // Numbers too large for a typed field.
    let user = app.user("nina").await;
    let res = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(&user.access_token)
        .header("content-type", "application/json")
        .body(r#"{"display_name":"N","version":99999999999999999999}"#)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    // Nesting deeper than the parser's recursion limit, in a free-form JSON field.
    let deep = format!(
        "{{\"metadata\":{}{},\"version\":1}}",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let res = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(&user.access_token)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_json").await;
    // The server is still healthy after all of that.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

async fn unknown_routes_are_404_problems(app: TestApp) {
    for path in ["/nope", "/v1", "/v1/users/x", "/v2/me"] {
        let res = app.get(path).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    // A known path with the wrong method: 405 and the methods it does take.
    for (method, path, allow) in [
        ("PUT", "/v1/me", "GET, PATCH"),
        ("TRACE", "/healthz", "GET"),
        ("GET", "/v1/auth/login", "POST"),
        (
            "POST",
            "/v1/me/sessions/0190a1b2-0000-7000-8000-000000000000",
            "DELETE",
        ),
    ] {
        let res = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned())
                .as_deref(),
            Some(allow),
            "{method} {path}"
        );
        assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    }
    let res = app.get("/healthz").await;
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().to_string(), id);
}

/// Request heads are bounded: more than 96 headers, or a head over 128 KiB, gets 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused() {
    let app = TestApp::spawn(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let mut req = app.client.get(app.url("/healthz"));
    for i in 0..120 {
        req = req.header(format!("x-h{i}"), "v");
    }
    assert_eq!(
        req.send().await.unwrap().status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-big", "a".repeat(140 * 1024))
        .send()
        .await;
    match res {
        Ok(res) => assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(err) => assert!(
            err.is_request() || err.is_connect() || err.is_body(),
            "{err}"
        ),
    }
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}
