//! Access tokens: JWKS verification by a third party, and forged tokens of every kind rejected.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp};

both_backends!(
    jwks_verifies_access_tokens_offline,
    forged_tokens_are_rejected
);

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let h = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    let p = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&p).unwrap(),
    )
}

async fn jwks_verifies_access_tokens_offline(app: TestApp) {
    let user = app.user("vera").await;
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), StatusCode::OK);
    let jwks: Value = res.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert!(
        key.get("d").is_none(),
        "the private part must never be published"
    );
    let (header, claims) = parts(&user.access_token);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], key["kid"]);
    for claim in ["iss", "aud", "sub", "sid", "iat", "nbf", "exp", "jti"] {
        assert!(claims.get(claim).is_some(), "missing {claim}");
    }
    assert_eq!(claims["sub"], user.id.to_string());
    assert_eq!(claims["sid"], user.session_id.to_string());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );

    let decoding = DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["tessera"]);
    validation.set_issuer(&["tessera"]);
    let data = jsonwebtoken::decode::<Value>(&user.access_token, &decoding, &validation).unwrap();
    assert_eq!(data.claims["sub"], user.id.to_string());
}

async fn forged_tokens_are_rejected(app: TestApp) {
    let user = app.user("eve").await;
    let (header, claims) = parts(&user.access_token);
    let sig = user.access_token.rsplit('.').next().unwrap().to_owned();
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().timestamp();

    // Signed by a key the server does not have, with a header and claims that look right.
    let attacker = SigningKey::from_bytes(&[42u8; 32]);
    let attacker_key = EncodingKey::from_ed_der(attacker.to_pkcs8_der().unwrap().as_bytes());
    let sign_with_attacker = |claims: &Value, kid: Option<&str>| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &attacker_key).unwrap()
    };
    // HS256 keyed with the public key: the classic algorithm-confusion attack.
    let public_raw = URL_SAFE_NO_PAD.decode(&x).unwrap();
    let hs = |key: &[u8]| {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(key)).unwrap()
    };
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    // Re-using the real signature over a changed payload.
    let tampered = |c: &Value| format!("{}.{}.{}", b64(&header), b64(c), sig);

    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
                b64(&claims)
            ),
        ),
        (
            "alg none, signature kept",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "none", "kid": kid})),
                b64(&claims),
                sig
            ),
        ),
        ("HS256 with the public key (raw)", hs(&public_raw)),
        ("HS256 with the public key (x)", hs(x.as_bytes())),
        (
            "wrong kid, real signature",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": "not-our-key"})),
                b64(&claims),
                sig
            ),
        ),
        (
            "no kid",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "typ": "JWT"})),
                b64(&claims),
                sig
            ),
        ),
        (
            "attacker key, our kid",
            sign_with_attacker(&claims, Some(&kid)),
        ),
        (
            "tampered sub",
            tampered(&with(json!({"sub": uuid::Uuid::now_v7().to_string()}))),
        ),
        (
            "tampered exp",
            tampered(&with(json!({"exp": now + 86_400 * 365}))),
        ),
        (
            "expired",
            sign_with_attacker(
                &with(json!({"exp": now - 3600, "iat": now - 4000, "nbf": now - 4000})),
                Some(&kid),
            ),
        ),
        (
            "exp as a string (tampered)",
            tampered(&with(json!({"exp": (now + 900).to_string()}))),
        ),
        (
            "truncated signature",
            user.access_token[..user.access_token.len() - 4].to_owned(),
        ),
        (
            "two segments",
            user.access_token.rsplit_once('.').unwrap().0.to_owned(),
        ),
        ("garbage", "not.a.jwt".to_owned()),
        ("empty", String::new()),
    ];
    for (name, token) in &cases {
        let res = app
            .client
            .get(app.url("/v1/me"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{name} was accepted"
        );
        let www = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            www.is_some_and(|w| w.starts_with("Bearer")),
            "{name}: WWW-Authenticate"
        );
    }

    // Validly signed by the server's own key but with bad claims: each claim is checked.
    let own = EncodingKey::from_ed_der(&signing_key_der(&app));
    let sign_own = |c: &Value| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(&h, c, &own).unwrap()
    };
    assert_eq!(
        app.get_authed("/v1/me", &sign_own(&claims)).await.status(),
        StatusCode::OK,
        "control: a well-formed token works"
    );
    let claim_cases: Vec<(&str, Value, &str)> = vec![
        (
            "expired",
            with(json!({"exp": now - 3600, "iat": now - 4000, "nbf": now - 4000})),
            "token_expired",
        ),
        (
            "wrong aud",
            with(json!({"aud": "someone-else"})),
            "invalid_token",
        ),
        (
            "wrong iss",
            with(json!({"iss": "https://evil.example"})),
            "invalid_token",
        ),
        (
            "not yet valid",
            with(json!({"nbf": now + 3600})),
            "invalid_token",
        ),
        (
            "exp as a string",
            with(json!({"exp": (now + 900).to_string()})),
            "invalid_token",
        ),
        ("missing exp", with(json!({"exp": null})), "invalid_token"),
        ("missing sid", with(json!({"sid": null})), "invalid_token"),
        ("missing aud", with(json!({"aud": null})), "invalid_token"),
        (
            "sub not a uuid",
            with(json!({"sub": "admin"})),
            "invalid_token",
        ),
    ];
    for (name, c, code) in claim_cases {
        let res = app.get_authed("/v1/me", &sign_own(&c)).await;
        let body = assert_problem(res, StatusCode::UNAUTHORIZED, code).await;
        assert!(
            body.get("detail").is_none() || !body["detail"].as_str().unwrap().contains("signature"),
            "{name}"
        );
    }

    let res = app
        .client
        .get(app.url("/v1/me"))
        .header("authorization", format!("Basic {}", user.access_token))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

/// The server's private key, read from the data directory where development mode generated it.
fn signing_key_der(app: &TestApp) -> Vec<u8> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let path = app.ctx.settings.data_dir.join("jwt-signing-key.pem");
    let pem = std::fs::read_to_string(path).unwrap();
    SigningKey::from_pkcs8_pem(&pem)
        .unwrap()
        .to_pkcs8_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}
