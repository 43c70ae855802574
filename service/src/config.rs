//! Typed, layered settings: defaults → `tessera.toml` → `TESSERA_*` / `DATABASE_URL` → CLI flags.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
    Test,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub environment: Environment,
    /// Where generated files (the development signing key) are kept.
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub password: PasswordSettings,
    pub cache: CacheSettings,
    pub log: LogSettings,
    pub mfa: MfaSettings,
    pub policy: PolicySettings,
    pub mail: MailSettings,
    pub limits: LimitsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: Environment::Development,
            data_dir: PathBuf::from("./data"),
            server: ServerSettings::default(),
            database: DatabaseSettings::default(),
            auth: AuthSettings::default(),
            password: PasswordSettings::default(),
            cache: CacheSettings::default(),
            log: LogSettings::default(),
            policy: PolicySettings::default(),
            mail: MailSettings::default(),
            limits: LimitsSettings::default(),
            mfa: MfaSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub port: u16,
    /// actix workers; defaults to the number of cores.
    pub workers: Option<usize>,
    /// Largest JSON body accepted, in bytes.
    pub json_limit_bytes: usize,
    /// Every request is answered (503 `request_timeout`) within this many milliseconds.
    pub request_timeout_ms: u64,
    /// Largest accepted connection count per worker.
    pub max_connections_per_worker: usize,
    /// Milliseconds a client has to send the request head before the connection is dropped.
    pub client_request_timeout_ms: u64,
    pub keep_alive_secs: u64,
    /// The address users reach Tessera's pages at, for links in mail (invitations, ...). Never
    /// taken from a request's Host header; defaults to `http://<bind>:<port>`.
    pub public_url: Option<String>,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed: the client is the nearest address in
    /// that header that is not one of them. Empty (the default): the peer address is the client.
    pub trusted_proxies: Vec<Cidr>,
}

impl ServerSettings {
    /// `public_url` without a trailing slash, or the server's own address.
    pub fn public_base_url(&self, bound_port: u16) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = match self.bind.as_str() {
                    "0.0.0.0" | "::" => "127.0.0.1".to_owned(),
                    other if other.contains(':') => format!("[{other}]"),
                    other => other.to_owned(),
                };
                format!("http://{host}:{bound_port}")
            }
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            port: 8080,
            workers: None,
            json_limit_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            max_connections_per_worker: 25_000,
            client_request_timeout_ms: 5_000,
            keep_alive_secs: 15,
            public_url: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    /// Pool size; defaults to 1 on SQLite (one writer, no "database is locked") and 16 on PostgreSQL.
    pub max_connections: Option<u32>,
    /// Connections the pool keeps open even when idle.
    pub min_connections: u32,
    /// Longest wait for a pooled connection before the request gets 503 `database_unavailable`.
    pub acquire_timeout_ms: u64,
    /// Longest wait for a new connection to the database to be established.
    pub connect_timeout_ms: u64,
    /// Run pending migrations at `serve` start.
    pub auto_migrate: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://./tessera.db?mode=rwc".into(),
            max_connections: None,
            min_connections: 0,
            acquire_timeout_ms: 3_000,
            connect_timeout_ms: 3_000,
            auto_migrate: true,
        }
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("auto_migrate", &self.auto_migrate)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[start..start + at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..start],
                    &userinfo[..colon],
                    &url[start + at..]
                ),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

impl DatabaseSettings {
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub issuer: String,
    pub audience: String,
    /// Lifetime of access tokens; also the bound within which a revoked session's token stops
    /// working on instances other than the one that revoked it.
    pub access_token_ttl_secs: i64,
    /// Idle lifetime of a refresh token (each rotation starts a new one).
    pub refresh_token_ttl_secs: i64,
    /// Absolute lifetime of a session, however often it is refreshed.
    pub session_ttl_secs: i64,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway_secs: u64,
    /// Ed25519 private key: PKCS#8 PEM, or the base64 of the 32-byte seed.
    pub signing_key: Option<SecretString>,
    /// File holding the key in one of the same forms.
    pub signing_key_file: Option<PathBuf>,
    /// A refresh token presented again this many seconds after it was spent, with the same user
    /// agent as the refresh that spent it, gets a new pair of the same session instead of
    /// revoking it as a reuse (a response lost to a timeout, two tabs). 0: strict reuse detection.
    pub refresh_reuse_grace_secs: u64,
    /// How long an email verification link works.
    pub email_verification_ttl_secs: i64,
    /// How long a password reset link works.
    pub password_reset_ttl_secs: i64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: "tessera".into(),
            audience: "tessera".into(),
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 14 * 24 * 3600,
            session_ttl_secs: 90 * 24 * 3600,
            leeway_secs: 5,
            signing_key: None,
            signing_key_file: None,
            refresh_reuse_grace_secs: 0,
            email_verification_ttl_secs: 24 * 3600,
            password_reset_ttl_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; defaults to the number of cores.
    pub max_concurrent: Option<usize>,
    /// Requests allowed to wait for a hashing slot before new ones get 503 at once.
    pub max_queue: usize,
    /// How long a request may wait for a hashing slot before it gets 503.
    pub queue_timeout_ms: u64,
    /// Hashes one client (IP address, IPv6 /64) may have running or queued at once; beyond that
    /// its requests get 429 at once, so one client flooding sign-ins cannot fill the queue that
    /// every other client waits in.
    pub max_queued_per_client: usize,
}

/// OWASP's first recommendation for Argon2id.
pub const OWASP_MEMORY_KIB: u32 = 19_456;
pub const OWASP_ITERATIONS: u32 = 2;

impl Default for PasswordSettings {
    fn default() -> Self {
        Self {
            memory_kib: OWASP_MEMORY_KIB,
            iterations: OWASP_ITERATIONS,
            parallelism: 1,
            max_concurrent: None,
            max_queue: 32,
            queue_timeout_ms: 500,
            max_queued_per_client: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// How long this instance may serve a user's profile (`GET /v1/me`) from memory. Writes made
    /// through this instance take effect at once; writes through another instance show here
    /// within this time. 0 turns the cache off.
    pub user_ttl_ms: u64,
    /// Most users kept.
    pub user_capacity: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            user_ttl_ms: 1_000,
            user_capacity: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Top-level keys of [`Settings`], the only ones read from `TESSERA_*` variables.
const SECTIONS: [&str; 12] = [
    "cache",
    "environment",
    "data_dir",
    "server",
    "database",
    "auth",
    "password",
    "log",
    "policy",
    "mail",
    "limits",
    "mfa",
];

impl Settings {
    /// Loads defaults, then `config_file` (or `tessera.toml` if present), then the environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        match config_file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("tessera.toml")),
        }
        figment = figment
            // Other TESSERA_* variables (TESSERA_CONFIG, TESSERA_TEST_PG_URL, scripts' own) are not
            // settings; typos inside a known section still fail.
            .merge(Env::prefixed("TESSERA_").split("__").filter(|key| {
                let section = key.as_str().split('.').next().unwrap_or_default();
                SECTIONS.iter().any(|s| section.eq_ignore_ascii_case(s))
            }))
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            );
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Rejects settings that would be unsafe or meaningless.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.password;
        if p.parallelism == 0 || p.iterations == 0 || p.memory_kib < 8 * p.parallelism {
            return Err(ConfigError::Invalid(
                "password hashing parameters are out of range".into(),
            ));
        }
        if self.environment != Environment::Test
            && (u64::from(p.memory_kib) * u64::from(p.iterations)
                < u64::from(OWASP_MEMORY_KIB) * u64::from(OWASP_ITERATIONS))
        {
            return Err(ConfigError::Invalid(format!(
                "password hashing cheaper than OWASP's minimum (m={OWASP_MEMORY_KIB} KiB, t={OWASP_ITERATIONS}) is only allowed with environment = \"test\""
            )));
        }
        if self.auth.access_token_ttl_secs <= 0
            || self.auth.refresh_token_ttl_secs <= 0
            || self.auth.session_ttl_secs <= 0
        {
            return Err(ConfigError::Invalid(
                "token lifetimes must be positive".into(),
            ));
        }
        if self.server.json_limit_bytes == 0 || self.server.request_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "server limits must be positive".into(),
            ));
        }
        if self.password.max_queued_per_client == 0 {
            return Err(ConfigError::Invalid(
                "password.max_queued_per_client must be positive".into(),
            ));
        }
        self.limits.validate()?;
        let smtp = &self.mail.smtp;
        if smtp.security == SmtpSecurity::None
            && (smtp.username.is_some() || smtp.password.is_some())
        {
            return Err(ConfigError::Invalid(
                "mail.smtp credentials are only sent over starttls or tls, not security = \"none\""
                    .into(),
            ));
        }
        if smtp.username.is_some() != smtp.password.is_some() {
            return Err(ConfigError::Invalid(
                "mail.smtp.username and mail.smtp.password go together".into(),
            ));
        }
        let a = &self.auth;
        if a.email_verification_ttl_secs <= 0
            || a.password_reset_ttl_secs <= 0
            || self.mfa.challenge_ttl_secs <= 0
        {
            return Err(ConfigError::Invalid(
                "token lifetimes must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Settings for tests: cheap Argon2, a fresh database URL, an ephemeral port.
    pub fn for_tests(database_url: String, data_dir: PathBuf) -> Self {
        let mut s = Settings {
            environment: Environment::Test,
            data_dir,
            ..Settings::default()
        };
        s.database.url = database_url;
        s.server.port = 0;
        s.server.workers = Some(2);
        s.password.memory_kib = 64;
        s.password.iterations = 1;
        // Each context starts its own hashing threads; many test servers run at once.
        s.password.max_concurrent = Some(2);
        // Bursts in tests (200 concurrent registrations) must queue, not be shed.
        s.password.max_queue = 1024;
        s.password.queue_timeout_ms = 30_000;
        // Every test client is 127.0.0.1, and tests fire hundreds of concurrent sign-ins and
        // registrations: per-client limits that production needs would only shed them. Tests of
        // the limits themselves set them back (see tests/api/limits.rs).
        s.password.max_queued_per_client = 1024;
        s.limits = LimitsSettings::unlimited_per_client();
        s
    }
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn layers_defaults_file_env_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "tessera.toml",
                "[server]\nport = 9000\nbind = \"0.0.0.0\"\n[auth]\naccess_token_ttl_secs = 60\n",
            )?;
            jail.set_env("TESSERA_SERVER__PORT", "9100");
            jail.set_env("DATABASE_URL", "postgres://db.example/tessera");
            jail.set_env("TESSERA_TEST_PG_URL", "postgres://ignored");
            jail.set_env("TESSERA_CONFIG", "ignored");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.server.port, 9100, "env beats file");
            assert_eq!(s.server.bind, "0.0.0.0", "file beats default");
            assert_eq!(s.auth.access_token_ttl_secs, 60);
            assert_eq!(s.database.url, "postgres://db.example/tessera");
            assert_eq!(s.password.memory_kib, OWASP_MEMORY_KIB, "default kept");
            Ok(())
        });
    }

    #[test]
    fn the_policy_dir_comes_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_POLICY__DIR", "/etc/tessera/policies");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.policy.dir, Some(PathBuf::from("/etc/tessera/policies")));
            Ok(())
        });
    }

    #[test]
    fn mail_and_public_url_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_MAIL__FROM", "Acme <auth@acme.test>");
            jail.set_env("TESSERA_SERVER__PUBLIC_URL", "https://auth.acme.test/");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.mail.from, "Acme <auth@acme.test>");
            assert_eq!(s.server.public_base_url(8080), "https://auth.acme.test");
            Ok(())
        });
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_SERVER__PROT", "1");
            assert!(Settings::load(None).is_err());
            jail.set_env("TESSERA_SERVER__PROT", "");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_SERVER__PORT", "not-a-port");
            assert!(Settings::load(None).is_err());
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("tessera.toml", "[password]\nmemory_kib = 64\n")?;
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("OWASP"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn database_passwords_are_not_printed() {
        assert_eq!(
            redact_url_password("postgres://app:s3cret@db:5432/tessera?sslmode=require"),
            "postgres://app:***@db:5432/tessera?sslmode=require"
        );
        assert_eq!(
            redact_url_password("postgres://app@db/t"),
            "postgres://app@db/t"
        );
        assert_eq!(
            redact_url_password("sqlite://./tessera.db?mode=rwc"),
            "sqlite://./tessera.db?mode=rwc"
        );
        let mut s = Settings::default();
        s.database.url = "postgres://app:s3cret@db/t".into();
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn secrets_are_not_printed() {
        let mut s = Settings::default();
        s.auth.signing_key = Some(SecretString::from("c2VjcmV0LXNlZWQ=".to_owned()));
        s.mail.smtp.password = Some(SecretString::from("smtp-s3cret".to_owned()));
        let printed = format!("{s:?}");
        assert!(!printed.contains("c2VjcmV0LXNlZWQ="));
        assert!(!printed.contains("smtp-s3cret"));
    }

    #[test]
    fn smtp_settings_come_from_the_environment_and_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_MAIL__TRANSPORT", "smtp");
            jail.set_env("TESSERA_MAIL__SMTP__HOST", "smtp.acme.test");
            jail.set_env("TESSERA_MAIL__SMTP__SECURITY", "tls");
            jail.set_env("TESSERA_MAIL__SMTP__USERNAME", "tessera");
            jail.set_env("TESSERA_MAIL__SMTP__PASSWORD", "pw");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.mail.transport, MailTransport::Smtp);
            assert_eq!(s.mail.smtp.port(), 465);
            jail.set_env("TESSERA_MAIL__SMTP__SECURITY", "none");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("credentials"), "{err}");
            Ok(())
        });
        let defaults = SmtpSettings::default();
        assert_eq!(defaults.security, SmtpSecurity::Starttls);
        assert_eq!(defaults.port(), 587);
    }
}

/// Where the authorization policy comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// A directory with `model.conf` and `policy.csv` to use instead of the compiled-in files.
    pub dir: Option<PathBuf>,
}

/// Outgoing mail.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// `outbox`: messages are stored in the database (`tessera mail outbox` prints them);
    /// `smtp`: they are sent through the server in `mail.smtp` once their change commits.
    pub transport: MailTransport,
    /// The From address.
    pub from: String,
    pub smtp: SmtpSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    Outbox,
    Smtp,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            transport: MailTransport::Outbox,
            from: "Tessera <no-reply@localhost>".into(),
            smtp: SmtpSettings::default(),
        }
    }
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (port 587 by default).
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No encryption (port 25 by default): only for a relay on the same host or network.
    None,
}

/// The SMTP server used when `mail.transport = "smtp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    /// Defaults to 587, 465 or 25 by `security`.
    pub port: Option<u16>,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// Longest wait for the server on one message.
    pub timeout_ms: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: None,
            security: SmtpSecurity::Starttls,
            username: None,
            password: None,
            timeout_ms: 10_000,
        }
    }
}

impl SmtpSettings {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        use std::net::IpAddr;
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix must be 0 to {max}"))?,
            None => max,
        };
        Ok(Self {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

/// `ip` with every bit after the first `prefix` cleared.
pub fn mask(ip: std::net::IpAddr, prefix: u8) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & keep))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & keep))
        }
    }
}

/// At most `max` attempts per client in `window_secs`, judged over the current and the previous
/// aligned window together (see `service::limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    pub max: u32,
    pub window_secs: u32,
}

/// Brute-force protection and rate limits (`[limits]`), kept in the database. Flat keys, so that
/// one of them can be set alone (`TESSERA_LIMITS__LOGIN_MAX=100`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSettings {
    /// Sign-in attempts per client IP per window.
    pub login_max: u32,
    pub login_window_secs: u32,
    /// Registrations per client IP per window.
    pub register_max: u32,
    pub register_window_secs: u32,
    /// Password-reset requests per client IP per window.
    pub password_reset_max: u32,
    pub password_reset_window_secs: u32,
    /// Email-verification requests (verify and resend) per client IP per window.
    pub email_verification_max: u32,
    pub email_verification_window_secs: u32,
    /// Failed password or MFA-code checks in a row an account may have before each further
    /// check waits.
    pub free_failures: u32,
    /// The first wait after `free_failures` failures in a row; it doubles with each further
    /// failure up to `max_delay_secs`. A success ends the run.
    pub first_delay_secs: u32,
    pub max_delay_secs: u32,
    /// Failed checks an account may have in any `failure_window_secs`.
    pub failure_budget: u32,
    pub failure_window_secs: u32,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            login_max: 60,
            login_window_secs: 60,
            register_max: 20,
            register_window_secs: 3600,
            password_reset_max: 10,
            password_reset_window_secs: 3600,
            email_verification_max: 20,
            email_verification_window_secs: 3600,
            free_failures: 5,
            first_delay_secs: 1,
            max_delay_secs: 15 * 60,
            failure_budget: 20,
            failure_window_secs: 15 * 60,
        }
    }
}

impl LimitsSettings {
    pub fn login(&self) -> WindowLimit {
        WindowLimit {
            max: self.login_max,
            window_secs: self.login_window_secs,
        }
    }

    pub fn register(&self) -> WindowLimit {
        WindowLimit {
            max: self.register_max,
            window_secs: self.register_window_secs,
        }
    }

    pub fn password_reset(&self) -> WindowLimit {
        WindowLimit {
            max: self.password_reset_max,
            window_secs: self.password_reset_window_secs,
        }
    }

    pub fn email_verification(&self) -> WindowLimit {
        WindowLimit {
            max: self.email_verification_max,
            window_secs: self.email_verification_window_secs,
        }
    }

    /// The defaults with every per-client limit raised out of reach (the per-account budget
    /// stays): for the test suite, where every client is 127.0.0.1.
    pub fn unlimited_per_client() -> Self {
        const UNLIMITED: u32 = 1_000_000_000;
        Self {
            login_max: UNLIMITED,
            register_max: UNLIMITED,
            password_reset_max: UNLIMITED,
            email_verification_max: UNLIMITED,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, limit) in [
            ("login", self.login()),
            ("register", self.register()),
            ("password_reset", self.password_reset()),
            ("email_verification", self.email_verification()),
        ] {
            if limit.max == 0 || limit.max > 1_000_000_000 || limit.window_secs == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.{name}_max must be 1 to 1000000000 and limits.{name}_window_secs positive"
                )));
            }
        }
        if self.free_failures == 0
            || self.first_delay_secs == 0
            || self.max_delay_secs < self.first_delay_secs
            || self.max_delay_secs > 24 * 3600
            || self.failure_budget == 0
            || self.failure_budget > 1_000_000_000
            || self.failure_window_secs == 0
        {
            return Err(ConfigError::Invalid(
                "limits: free_failures, first_delay_secs, failure_budget (at most 1000000000) and failure_window_secs must be positive, and first_delay_secs <= max_delay_secs <= 86400".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod cidr_tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().unwrap()),
            "IPv4-mapped"
        );
        let host = Cidr::parse("192.0.2.7").unwrap();
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.8".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("10.1.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "2001:db8::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_come_from_the_environment_and_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_LIMITS__LOGIN_MAX", "5");
            jail.set_env("TESSERA_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                s.limits.login(),
                WindowLimit {
                    max: 5,
                    window_secs: 60
                }
            );
            assert_eq!(
                s.server.trusted_proxies,
                vec![Cidr::parse("10.0.0.0/8").unwrap()]
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_LIMITS__FAILURE_BUDGET", "0");
            assert!(Settings::load(None).is_err());
            Ok(())
        });
    }
}

/// Second factors (TOTP).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfaSettings {
    /// Keys that encrypt TOTP secrets at rest, each `"<id>:<base64 of 32 random bytes>"`
    /// (`openssl rand -base64 32`). The first encrypts; the others only decrypt, so a key is
    /// rotated by putting a new one first and running `tessera admin rotate-mfa-keys`. Without
    /// any, development and test generate one into `data_dir`; production cannot enroll factors.
    pub keys: Vec<SecretString>,
    /// The issuer shown by authenticator apps.
    pub issuer: String,
    /// How long a sign-in waits for its second factor.
    pub challenge_ttl_secs: i64,
}

impl Default for MfaSettings {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            issuer: "Tessera".into(),
            challenge_ttl_secs: 300,
        }
    }
}
