//! Outgoing mail. The `Mailer` hands a message to the configured transport inside the caller's
//! transaction, so a message exists exactly when the change that sends it commits. The default
//! transport is the outbox table, which `tessera mail outbox` prints.

use chrono::Utc;
use entity::mail_outbox;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

use crate::config::{MailSettings, MailTransport};
use crate::error::ServiceResult;

pub use mail_outbox::Model as OutboxMessage;

/// What a message is for; kept with it so operators can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    Invitation,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Invitation => "invitation",
        }
    }
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub kind: MailKind,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Mailer {
    settings: MailSettings,
}

impl Mailer {
    pub fn new(settings: MailSettings) -> Self {
        Self { settings }
    }

    pub fn from_address(&self) -> &str {
        &self.settings.from
    }

    /// Sends `mail` as part of the transaction `conn` belongs to.
    pub async fn send(&self, conn: &impl ConnectionTrait, mail: Mail) -> ServiceResult<()> {
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
                Ok(())
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
