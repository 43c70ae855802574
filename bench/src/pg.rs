//! A fresh PostgreSQL database per run (through `psql`), dropped when the guard goes away.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub struct Database {
    admin_url: String,
    pub name: String,
    pub url: String,
    /// What the server is given: `url`, without TLS when PostgreSQL is on this machine.
    pub server_url: String,
}

impl Database {
    /// Creates `tessera_bench_<pid>_<time>` on the server `admin_url` points at.
    pub fn create(admin_url: &str) -> Result<Self> {
        let name = format!(
            "tessera_bench_{}_{}",
            std::process::id(),
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        );
        let url = with_database(admin_url, &name)?;
        psql(admin_url, &format!("CREATE DATABASE \"{name}\"")).context(
            "creating the benchmark database (is PostgreSQL up, may this user CREATE DATABASE?)",
        )?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            server_url: without_loopback_tls(&url),
            url,
        })
    }

    pub fn drop_now(&self) -> Result<()> {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        )
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(err) = self.drop_now() {
            eprintln!("warning: could not drop database {}: {err:#}", self.name);
        }
    }
}

/// Runs one statement; the output is returned trimmed.
pub fn psql_query(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !out.status.success() {
        bail!(
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn psql(url: &str, sql: &str) -> Result<()> {
    psql_query(url, sql).map(drop)
}

/// `postgres://user@host:port/db?opts` with the database replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String> {
    let scheme_end = url.find("://").context("database URL without scheme")? + 3;
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{name}{query}", &base[..authority_end]))
}

/// `url` with `sslmode=disable` added when its host is loopback and it names no sslmode.
/// PostgreSQL's default (`prefer`) negotiates TLS even over loopback, where it protects nothing
/// and costs both the server and PostgreSQL CPU on the very cores the benchmark measures; an
/// explicit sslmode is kept as given.
fn without_loopback_tls(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_owned();
    };
    // `host_str` keeps an IPv6 address in brackets.
    let host = parsed.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback || parsed.query_pairs().any(|(k, _)| k == "sslmode") {
        return url.to_owned();
    }
    parsed.query_pairs_mut().append_pair("sslmode", "disable");
    parsed.into()
}

#[cfg(test)]
mod tests {
    use super::{with_database, without_loopback_tls};

    #[test]
    fn loopback_connections_go_without_tls_unless_told_otherwise() {
        for (given, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/x",
                "postgres://postgres@127.0.0.1:5432/x?sslmode=disable",
            ),
            (
                "postgres://u:p@localhost/x?application_name=b",
                "postgres://u:p@localhost/x?application_name=b&sslmode=disable",
            ),
            (
                "postgres://[::1]:5432/x",
                "postgres://[::1]:5432/x?sslmode=disable",
            ),
            (
                "postgres://u@127.0.0.1/x?sslmode=require",
                "postgres://u@127.0.0.1/x?sslmode=require",
            ),
            (
                "postgres://u@db.internal:5432/x",
                "postgres://u@db.internal:5432/x",
            ),
            ("postgres://u@10.0.0.5/x", "postgres://u@10.0.0.5/x"),
        ] {
            assert_eq!(without_loopback_tls(given), expected, "{given}");
        }
    }

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x").unwrap(),
            "postgres://h:5432/x"
        );
    }
}
