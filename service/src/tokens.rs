//! Access tokens (EdDSA-signed JWTs, algorithm pinned), the JWKS that publishes their keys, and
//! opaque refresh tokens that are stored only as SHA-256 hashes.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::RwLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{AuthSettings, Environment, Settings};
use crate::error::{ServiceError, ServiceResult};

/// The claims of an access token. Every field is required and type-checked on decode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no signing key configured: set auth.signing_key or auth.signing_key_file (TESSERA_AUTH__SIGNING_KEY / TESSERA_AUTH__SIGNING_KEY_FILE) in production")]
    Missing,
    #[error("signing key is neither a PKCS#8 PEM nor a base64 32-byte Ed25519 seed")]
    Malformed,
    #[error("signing key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the signing key came from, so `serve` can warn about generated ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Configured,
    File,
    GeneratedForDevelopment(std::path::PathBuf),
    LoadedGenerated(std::path::PathBuf),
}

pub struct TokenKeys {
    kid: String,
    /// Signs access tokens itself: `jsonwebtoken::encode` would re-parse the PKCS#8 key and
    /// re-derive its public half (a second scalar multiplication) on every token.
    signing: SigningKey,
    /// `base64url(header)`, the same for every access token this key signs.
    encoded_header: String,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    jwks: serde_json::Value,
    issuer: String,
    audience: String,
    access_ttl_secs: i64,
    verified: VerifiedCache,
    pub source: KeySource,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn parse_key(text: &str) -> Result<SigningKey, KeyError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return SigningKey::from_pkcs8_pem(text).map_err(|_| KeyError::Malformed);
    }
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(text))
        .map_err(|_| KeyError::Malformed)?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
    Ok(SigningKey::from_bytes(&seed))
}

fn read_key_file(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_key(&text)
}

fn write_new_key(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|_| KeyError::Malformed)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(pem.as_bytes()).map_err(io)?;
    Ok(key)
}

/// The signing key per the settings: configured inline, from a file, or (outside production)
/// generated once into the data directory.
pub fn load_signing_key(settings: &Settings) -> Result<(SigningKey, KeySource), KeyError> {
    if let Some(inline) = &settings.auth.signing_key {
        return Ok((parse_key(inline.expose_secret())?, KeySource::Configured));
    }
    if let Some(path) = &settings.auth.signing_key_file {
        return Ok((read_key_file(path)?, KeySource::File));
    }
    if settings.environment == Environment::Production {
        return Err(KeyError::Missing);
    }
    let path = settings.data_dir.join("jwt-signing-key.pem");
    if path.exists() {
        return Ok((read_key_file(&path)?, KeySource::LoadedGenerated(path)));
    }
    Ok((
        write_new_key(&path)?,
        KeySource::GeneratedForDevelopment(path),
    ))
}

/// `kid` = the first 16 base64url characters of SHA-256 over the raw public key.
fn key_id(key: &SigningKey) -> String {
    let digest = Sha256::digest(key.verifying_key().as_bytes());
    URL_SAFE_NO_PAD.encode(digest)[..16].to_owned()
}

impl TokenKeys {
    pub fn new(key: &SigningKey, source: KeySource, auth: &AuthSettings) -> ServiceResult<Self> {
        let kid = key_id(key);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let header = serde_json::to_vec(&header)
            .map_err(|e| ServiceError::unexpected_msg(format!("jwt header: {e}")))?;
        let public = key.verifying_key();
        let x = URL_SAFE_NO_PAD.encode(public.as_bytes());
        let decoding = HashMap::from([(kid.clone(), DecodingKey::from_ed_der(public.as_bytes()))]);

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&auth.issuer]);
        validation.set_audience(&[&auth.audience]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = auth.leeway_secs;

        let jwks = serde_json::json!({
            "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" }]
        });
        Ok(Self {
            kid,
            signing: key.clone(),
            encoded_header: URL_SAFE_NO_PAD.encode(header),
            decoding,
            validation,
            jwks,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            access_ttl_secs: auth.access_token_ttl_secs,
            verified: VerifiedCache::new(100_000, auth.leeway_secs as i64),
            source,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn access_ttl_secs(&self) -> i64 {
        self.access_ttl_secs
    }

    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    pub fn issue_access(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> ServiceResult<String> {
        let iat = now.timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id,
            sid: session_id,
            iat,
            nbf: iat,
            exp: iat + self.access_ttl_secs,
            jti: Uuid::now_v7(),
            org: None,
        };
        let claims = serde_json::to_vec(&claims)
            .map_err(|e| ServiceError::unexpected_msg(format!("jwt claims: {e}")))?;
        // JWS compact serialization (RFC 7515 §7.1): header.claims signed, then .signature.
        let mut token =
            String::with_capacity(self.encoded_header.len() + claims.len() * 4 / 3 + 92);
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }

    /// Verifies signature, algorithm, `kid`, issuer, audience and time claims.
    pub fn verify_access(&self, token: &str) -> ServiceResult<AccessClaims> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Utc::now().timestamp();
        if let Some(claims) = self.verified.get(&digest, now) {
            return Ok(claims);
        }
        let claims = self.verify_signed(token)?;
        self.verified.insert(digest, claims.clone(), now);
        Ok(claims)
    }

    /// The full check: header, signature and every claim.
    fn verify_signed(&self, token: &str) -> ServiceResult<AccessClaims> {
        let invalid = || ServiceError::Unauthenticated("invalid_token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid());
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or_else(invalid)?;
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation).map_err(|e| {
                if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) {
                    ServiceError::Unauthenticated("token_expired")
                } else {
                    invalid()
                }
            })?;
        Ok(data.claims)
    }
}

/// Claims of tokens whose signature this process already checked, keyed by the token's SHA-256,
/// until they expire: a client reusing its access token costs a hash and a lookup instead of an
/// Ed25519 verification. Revocation is checked after this cache, so it changes nothing there.
struct VerifiedCache {
    inner: RwLock<Verified>,
    capacity: usize,
    leeway: i64,
}

#[derive(Default)]
struct Verified {
    claims: HashMap<[u8; 32], AccessClaims>,
    /// Digests in the order they were first seen, for eviction: expired entries and, when full,
    /// the oldest go a few at a time per insert, never the whole map at once under the write
    /// lock (clearing 100,000 entries stalls every request behind it, then costs as many
    /// signature checks). Tokens get the same lifetime, so first seen is close to first to expire.
    order: VecDeque<(i64, [u8; 32])>,
}

impl VerifiedCache {
    fn new(capacity: usize, leeway: i64) -> Self {
        Self {
            inner: RwLock::new(Verified::default()),
            capacity,
            leeway,
        }
    }

    fn get(&self, digest: &[u8; 32], now: i64) -> Option<AccessClaims> {
        let inner = self.inner.read().ok()?;
        let claims = inner.claims.get(digest)?;
        // Time claims are re-checked on every use; the signature and the rest cannot change.
        (claims.exp + self.leeway > now && claims.nbf - self.leeway <= now).then(|| claims.clone())
    }

    fn insert(&self, digest: [u8; 32], claims: AccessClaims, now: i64) {
        if let Ok(mut inner) = self.inner.write() {
            while let Some(&(exp, old)) = inner.order.front() {
                if exp + self.leeway > now && inner.claims.len() < self.capacity {
                    break;
                }
                inner.order.pop_front();
                inner.claims.remove(&old);
            }
            inner.order.push_back((claims.exp, digest));
            inner.claims.insert(digest, claims);
        }
    }
}

/// A new opaque refresh token: 256 random bits, base64url.
pub fn new_refresh_token() -> SecretString {
    SecretString::from(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

/// What the database stores for a refresh token: hex SHA-256. Lookups go by this hash, so the
/// comparison never touches the secret itself.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        TokenKeys::new(&key, KeySource::Configured, &AuthSettings::default()).unwrap()
    }

    /// The hand-rolled JWS encoder is byte for byte what `jsonwebtoken::encode` makes of the same
    /// header, claims and key (Ed25519 signatures are deterministic).
    #[test]
    fn issued_tokens_match_jsonwebtoken() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let k = keys();
        let token = k
            .issue_access(Uuid::now_v7(), Uuid::now_v7(), Utc::now())
            .unwrap();
        let claims = k.verify_access(&token).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(k.kid().to_owned());
        let der = key.to_pkcs8_der().unwrap();
        let reference = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        )
        .unwrap();
        assert_eq!(token, reference);
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = keys();
        let (u, s) = (Uuid::now_v7(), Uuid::now_v7());
        let token = k.issue_access(u, s, Utc::now()).unwrap();
        let claims = k.verify_access(&token).unwrap();
        assert_eq!((claims.sub, claims.sid), (u, s));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&AccessClaims {
                sub: Uuid::now_v7(),
                ..claims
            })
            .unwrap(),
        );
        assert!(k.verify_access(&parts.join(".")).is_err());
    }

    #[test]
    fn cached_tokens_still_expire() {
        let auth = AuthSettings {
            leeway_secs: 0,
            ..AuthSettings::default()
        };
        let k = TokenKeys::new(
            &SigningKey::from_bytes(&[7u8; 32]),
            KeySource::Configured,
            &auth,
        )
        .unwrap();
        let past = Utc::now() - chrono::Duration::seconds(900 - 2);
        let token = k
            .issue_access(Uuid::now_v7(), Uuid::now_v7(), past)
            .unwrap();
        assert!(
            k.verify_access(&token).is_ok(),
            "valid for about two more seconds"
        );
        assert!(k.verify_access(&token).is_ok(), "served from the cache");
        std::thread::sleep(std::time::Duration::from_millis(3_100));
        assert!(
            k.verify_access(&token).is_err(),
            "expired even though cached"
        );
    }

    #[test]
    fn a_full_verified_cache_evicts_its_oldest_entries_one_at_a_time() {
        let k = keys();
        let cache = VerifiedCache::new(3, 0);
        let now = Utc::now().timestamp();
        let token = k
            .issue_access(Uuid::now_v7(), Uuid::now_v7(), Utc::now())
            .unwrap();
        let claims = k.verify_access(&token).unwrap();
        for i in 0..5u8 {
            cache.insert([i; 32], claims.clone(), now);
        }
        let kept: Vec<bool> = (0..5u8)
            .map(|i| cache.get(&[i; 32], now).is_some())
            .collect();
        assert_eq!(kept, [false, false, true, true, true]);
        // Once expired, entries go as new ones come, however few.
        let later = claims.exp + 1;
        cache.insert([9; 32], claims.clone(), later);
        assert_eq!(cache.inner.read().unwrap().claims.len(), 1);
    }

    #[test]
    fn keys_parse_from_pem_and_seed() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        assert_eq!(parse_key(&pem).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(
            parse_key(&STANDARD.encode([9u8; 32])).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert!(parse_key("not a key").is_err());
        assert!(parse_key(&STANDARD.encode([9u8; 31])).is_err());
    }

    #[test]
    fn production_without_key_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings {
            environment: Environment::Production,
            data_dir: dir.path().to_owned(),
            ..Settings::default()
        };
        assert!(matches!(load_signing_key(&s), Err(KeyError::Missing)));
        s.environment = Environment::Development;
        let (k1, src) = load_signing_key(&s).unwrap();
        assert!(matches!(src, KeySource::GeneratedForDevelopment(_)));
        let (k2, src) = load_signing_key(&s).unwrap();
        assert!(matches!(src, KeySource::LoadedGenerated(_)));
        assert_eq!(k1.to_bytes(), k2.to_bytes());
    }
}
