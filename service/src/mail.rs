//! Outgoing mail. The `Mailer` hands a message to the configured transport as part of the
//! caller's transaction, so a message goes out exactly when the change that sends it commits.
//! The default transport is the outbox table, which `tessera mail outbox` prints; the SMTP
//! transport sends the message once the transaction has committed, in the background, so no
//! answer waits for (or reveals anything through the timing of) the mail server.

use std::time::Duration;

use chrono::Utc;
use entity::mail_outbox;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::{MailSettings, MailTransport, SmtpSecurity, SmtpSettings};
use crate::context::Background;
use crate::error::{ServiceError, ServiceResult};

pub use mail_outbox::Model as OutboxMessage;

/// What a message is for; kept with it so operators can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    Invitation,
    EmailVerification,
    EmailChange,
    PasswordReset,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Invitation => "invitation",
            MailKind::EmailVerification => "email_verification",
            MailKind::EmailChange => "email_change",
            MailKind::PasswordReset => "password_reset",
        }
    }
}

/// The longest subject kept (the outbox column's size); longer ones are shortened.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// `text` cut to at most `max` characters, ending in "…" when it was cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub kind: MailKind,
    pub subject: String,
    pub body: String,
}

/// A message handed to the transport inside a transaction: once that transaction has committed,
/// [`Queued::after_commit`] sends what still has to be sent (nothing for the outbox). Dropped
/// instead (the transaction failed), nothing goes out.
#[must_use = "call after_commit once the transaction has committed"]
pub struct Queued(Option<Message>);

impl Queued {
    pub fn after_commit(self, mailer: &Mailer, background: &std::sync::Arc<Background>) {
        let (Some(message), Some(smtp)) = (self.0, mailer.smtp.clone()) else {
            return;
        };
        let spawned = background.try_spawn(async move {
            if let Err(err) = smtp.send(message).await {
                // The error names the server's reply, never a credential.
                tracing::error!(error = %err, "sending mail over SMTP failed");
            }
        });
        if spawned.is_err() {
            tracing::error!("mail not sent: too much background work pending");
        }
    }
}

#[derive(Clone)]
pub struct Mailer {
    settings: MailSettings,
    from: Mailbox,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn smtp_transport(s: &SmtpSettings) -> ServiceResult<AsyncSmtpTransport<Tokio1Executor>> {
    let invalid =
        |e: lettre::transport::smtp::Error| ServiceError::unexpected_msg(format!("mail.smtp: {e}"));
    let builder = match s.security {
        SmtpSecurity::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host).map_err(invalid)?
        }
        SmtpSecurity::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host).map_err(invalid)?
        }
        SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
    };
    let mut builder = builder
        .port(s.port())
        .timeout(Some(Duration::from_millis(s.timeout_ms)));
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

impl Mailer {
    /// Checks the From address and prepares the SMTP transport (it connects on the first
    /// message, not here).
    pub fn new(settings: MailSettings) -> ServiceResult<Self> {
        let from: Mailbox = settings.from.parse().map_err(|e| {
            ServiceError::unexpected_msg(format!("mail.from {:?}: {e}", settings.from))
        })?;
        let smtp = match settings.transport {
            MailTransport::Outbox => None,
            MailTransport::Smtp => Some(smtp_transport(&settings.smtp)?),
        };
        Ok(Self {
            settings,
            from,
            smtp,
        })
    }

    pub fn from_address(&self) -> &str {
        &self.settings.from
    }

    /// Hands `mail` to the transport as part of the transaction `conn` belongs to; call
    /// [`Queued::after_commit`] on the result once it has committed.
    pub async fn send(&self, conn: &impl ConnectionTrait, mut mail: Mail) -> ServiceResult<Queued> {
        // A subject built from user input (an organization's name) must not fail the change
        // that sends it.
        mail.subject = shorten(&mail.subject, MAX_SUBJECT_CHARS);
        match self.settings.transport {
            MailTransport::Outbox => {
                mail_outbox::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    recipient: Set(mail.to),
                    kind: Set(mail.kind.as_str().into()),
                    subject: Set(mail.subject),
                    body: Set(mail.body),
                    created_at: Set(Utc::now()),
                }
                .insert(conn)
                .await?;
                Ok(Queued(None))
            }
            MailTransport::Smtp => {
                let to: Mailbox = mail
                    .to
                    .parse()
                    .map_err(|e| ServiceError::unexpected_msg(format!("recipient: {e}")))?;
                let message = Message::builder()
                    .from(self.from.clone())
                    .to(to)
                    .subject(mail.subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.body)
                    .map_err(ServiceError::unexpected)?;
                Ok(Queued(Some(message)))
            }
        }
    }

    /// The outbox, newest first, optionally only the messages to one address (case-folded).
    pub async fn outbox(
        conn: &impl ConnectionTrait,
        to: Option<&str>,
        limit: u64,
    ) -> ServiceResult<Vec<OutboxMessage>> {
        let mut query = mail_outbox::Entity::find();
        if let Some(to) = to {
            query = query.filter(mail_outbox::Column::Recipient.eq(to.to_lowercase()));
        }
        Ok(query
            .order_by_desc(mail_outbox::Column::Id)
            .limit(limit)
            .all(conn)
            .await?)
    }
}

/// The outbox as `tessera mail outbox` prints it: newest first, one JSON object a line, with
/// `id`, `to`, `kind`, `subject`, `body` and `created_at`.
pub async fn outbox_lines(
    conn: &impl ConnectionTrait,
    to: Option<&str>,
    limit: u64,
) -> ServiceResult<Vec<String>> {
    Ok(Mailer::outbox(conn, to, limit)
        .await?
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "to": m.recipient,
                "kind": m.kind,
                "subject": m.subject,
                "body": m.body,
                "created_at": m.created_at,
            })
            .to_string()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn shortening_counts_characters_and_marks_the_cut() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("exactly10!", 10), "exactly10!");
        assert_eq!(shorten("ΩΩΩΩΩΩ", 4), "ΩΩΩ…");
        assert_eq!(shorten(&"x".repeat(300), 200).chars().count(), 200);
    }
}
