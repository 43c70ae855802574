//! Mail over SMTP: a real SMTP server (Python's aiosmtpd, installed by `.ci/run` into the
//! tools' virtualenv) started by the test receives the verification message of a registration,
//! and the link in the message it received verifies the address.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use uuid::Uuid;

use crate::both_backends;
use crate::email_verification::{link_token, verify};
use crate::helpers::{TestApp, PASSWORD};

both_backends!(a_registration_mails_its_verification_link_over_smtp);

/// The Python with aiosmtpd: `TESSERA_TEST_PYTHON`, else the virtualenv `.ci/run` makes
/// (`TESSERA_VENV`, default `/var/tmp/tessera-venv`). `None` (the test is skipped) when it is
/// missing, except under CI, where that fails.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("TESSERA_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let venv = std::env::var_os("TESSERA_VENV")
                .map_or_else(|| PathBuf::from("/var/tmp/tessera-venv"), PathBuf::from);
            venv.join("bin/python")
        });
    let has_aiosmtpd = Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_aiosmtpd {
        return Some(python);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} cannot import aiosmtpd (.ci/run installs it)",
            python.display()
        );
    }
    eprintln!("skipping: no aiosmtpd at {}", python.display());
    None
}

/// An SMTP server delivering into a maildir; stopped on drop.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    async fn start(python: &Path) -> SmtpServer {
        let maildir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("Maildir"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd");
        let server = SmtpServer {
            child,
            port,
            maildir,
        };
        // Wait until it accepts connections (it exits on error, which fails the loop's bound).
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd did not listen on port {port}");
    }

    /// Every message received, as raw text.
    fn messages(&self) -> Vec<String> {
        let new = self.maildir.path().join("Maildir/new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("message"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn a_registration_mails_its_verification_link_over_smtp(app: TestApp) {
    let Some(python) = python() else {
        return;
    };
    let smtp = SmtpServer::start(&python).await;
    // A second server on the same database, sending over SMTP (no STARTTLS: a local relay).
    let url = app.ctx.settings.database.url.clone();
    let sender = TestApp::spawn_with_database(&url, |s| {
        s.mail.transport = service::config::MailTransport::Smtp;
        s.mail.from = "Tessera <auth@tessera.test>".into();
        s.mail.smtp.host = "127.0.0.1".into();
        s.mail.smtp.port = Some(smtp.port);
        s.mail.smtp.security = service::config::SmtpSecurity::None;
    })
    .await;

    let email = format!("smtp-{}@example.com", Uuid::new_v4().simple());
    let res = sender.register(&email, PASSWORD, "Sam").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Delivery runs after the commit, in the background; wait for it to finish.
    sender.ctx.background.idle().await;

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert!(message.contains(&format!("To: {email}")), "{message}");
    assert!(
        message.contains("From: Tessera <auth@tessera.test>"),
        "{message}"
    );
    assert!(
        message.contains("Subject: Verify your email address"),
        "{message}"
    );
    // The SMTP transport stores nothing in the outbox.
    let outbox = service::mail::Mailer::outbox(&sender.ctx.db, Some(&email), 10)
        .await
        .expect("outbox");
    assert!(outbox.is_empty());

    // The link as received works.
    let body = message
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let token = link_token(&sender, &body, "/verify-email");
    assert_eq!(
        verify(&sender, &token).await.status(),
        StatusCode::NO_CONTENT
    );
}
