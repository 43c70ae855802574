//! In-process cost of the per-request crypto, each next to its ceiling measured in the same run:
//! access tokens (issue and verify) against raw Ed25519, refresh tokens, and a password
//! verification through the hashing pool against a raw Argon2id verification.
//!
//!     cargo bench -p service --bench hot_paths
//!
//! A group's bench named `ceiling: …` is the raw operation its other benches are compared with;
//! one per group.

use std::hint::black_box;
use std::time::Duration;

use argon2_rust::Algorithm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use jsonwebtoken::{Algorithm as JwtAlgorithm, EncodingKey, Header};
use secrecy::SecretString;
use service::config::{AuthSettings, PasswordSettings};
use service::passwords::{configured_argon2, PasswordHasher, Verification};
use service::tokens::{hash_token, new_refresh_token, KeySource, TokenKeys};
use uuid::Uuid;

fn keys() -> (SigningKey, TokenKeys) {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let keys =
        TokenKeys::new(&key, KeySource::Configured, &AuthSettings::default()).expect("token keys");
    (key, keys)
}

fn access_tokens(c: &mut Criterion) {
    let (key, keys) = keys();
    let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
    let sample = keys.issue_access(user, session, Utc::now()).expect("issue");
    let (signing_input, signature) = sample.rsplit_once('.').expect("three parts");
    let signature = ed25519_dalek::Signature::from_slice(
        &URL_SAFE_NO_PAD.decode(signature).expect("base64url"),
    )
    .expect("signature");
    let public = key.verifying_key();

    let mut group = c.benchmark_group("access token issue");
    group.bench_function(
        "ceiling: raw Ed25519 sign of a token's signing input",
        |b| b.iter(|| key.sign(black_box(signing_input.as_bytes()))),
    );
    group.bench_function(
        "TokenKeys::issue_access (claims JSON, base64url, Ed25519)",
        |b| b.iter(|| keys.issue_access(black_box(user), black_box(session), Utc::now())),
    );
    let der = key.to_pkcs8_der().expect("pkcs8");
    let encoding = EncodingKey::from_ed_der(der.as_bytes());
    let mut header = Header::new(JwtAlgorithm::EdDSA);
    header.kid = Some(keys.kid().to_owned());
    let claims = keys.verify_access(&sample).expect("verify");
    group.bench_function(
        "jsonwebtoken::encode (re-parses the key per token: why issue_access signs itself)",
        |b| b.iter(|| jsonwebtoken::encode(&header, black_box(&claims), &encoding)),
    );
    group.finish();

    let mut group = c.benchmark_group("access token verify");
    group.bench_function("ceiling: raw Ed25519 verify of a token's signature", |b| {
        b.iter(|| public.verify(black_box(signing_input.as_bytes()), &signature))
    });
    group.bench_function(
        "first sight (jsonwebtoken::decode: signature and every claim)",
        |b| {
            b.iter_batched(
                || {
                    keys.issue_access(Uuid::now_v7(), session, Utc::now())
                        .expect("issue")
                },
                |token| keys.verify_access(&token),
                BatchSize::SmallInput,
            )
        },
    );
    group.bench_function("seen before (verified-token cache)", |b| {
        b.iter(|| keys.verify_access(black_box(&sample)))
    });
    group.finish();
}

fn refresh_tokens(c: &mut Criterion) {
    let mut group = c.benchmark_group("refresh token");
    group.bench_function("new token and its stored hash", |b| {
        b.iter(|| {
            let token = new_refresh_token();
            hash_token(secrecy::ExposeSecret::expose_secret(&token))
        })
    });
    group.finish();
}

fn password_verify(c: &mut Criterion) {
    let settings = PasswordSettings {
        max_concurrent: Some(1),
        ..PasswordSettings::default()
    };
    let password = b"correct horse battery staple";
    let argon = configured_argon2(&settings).expect("argon2");
    let phc = argon
        .hash_password_with_random_salt(password)
        .expect("hash");

    let mut group = c.benchmark_group(format!(
        "password verify (Argon2id m={} KiB, t={}, p={})",
        settings.memory_kib, settings.iterations, settings.parallelism
    ));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("ceiling: raw Argon2id verify, one reused arena", |b| {
        let mut hasher = argon.hasher();
        b.iter(|| hasher.verify_encoded(&phc, black_box(password), Algorithm::Argon2id))
    });
    let pool = PasswordHasher::new(&settings).expect("pool");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let candidate = SecretString::from("correct horse battery staple");
    group.bench_function(
        "PasswordHasher::verify (one hashing thread, one verification at a time)",
        |b| {
            b.iter(|| {
                let verdict = runtime
                    .block_on(pool.verify(&candidate, Some(&phc)))
                    .expect("verify");
                assert!(matches!(verdict, Verification::Match { .. }));
            })
        },
    );
    group.finish();
}

criterion_group!(benches, access_tokens, refresh_tokens, password_verify);
criterion_main!(benches);
