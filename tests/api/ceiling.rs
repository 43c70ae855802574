//! `tessera ceiling refresh`, the reference the HTTP refresh benchmark is compared with: it must
//! do real rotations (each one consumes a token and stores its successor), closed and open loop.

use std::time::Duration;

use entity::refresh_tokens;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use secrecy::SecretString;
use service::ceiling::{self, CeilingError, RefreshPlan};
use service::domain::Email;

use crate::both_backends;
use crate::helpers::{TestApp, PASSWORD};

both_backends!(
    ceiling_rotates_real_tokens,
    ceiling_refuses_a_wrong_password
);

async fn token_rows(app: &TestApp, used: bool) -> u64 {
    let rows = refresh_tokens::Entity::find();
    let rows = if used {
        rows.filter(refresh_tokens::Column::UsedAt.is_not_null())
    } else {
        rows.filter(refresh_tokens::Column::UsedAt.is_null())
    };
    rows.count(&app.ctx.db).await.expect("count refresh tokens")
}

async fn ceiling_rotates_real_tokens(app: TestApp) {
    let user = app.user("ceiling").await;
    let email = Email::parse(&user.email).expect("email");
    let password = SecretString::from(PASSWORD);
    let unused_before = token_rows(&app, false).await;
    let used_before = token_rows(&app, true).await;

    let closed = RefreshPlan {
        sessions: 3,
        duration: Duration::from_millis(600),
        rate: None,
    };
    let first = ceiling::refresh(&app.ctx, &email, &password, closed)
        .await
        .expect("closed loop");
    assert_eq!(first.failures, 0, "{first:?}");
    assert!(first.refreshes > 0, "{first:?}");
    assert!(first.p50_ms.is_some());
    assert_eq!(
        (first.per_sec * first.seconds).round() as u64,
        first.refreshes
    );
    assert_eq!(first.behind_ms, 0.0);

    let open = RefreshPlan {
        sessions: 2,
        duration: Duration::from_millis(500),
        rate: Some(40.0),
    };
    let second = ceiling::refresh(&app.ctx, &email, &password, open)
        .await
        .expect("open loop");
    assert_eq!(second.failures, 0, "{second:?}");
    // 40/s for 0.5 s: refreshes due at 0, 25, …, 475 ms.
    assert_eq!(second.refreshes, 20, "{second:?}");

    // Each rotation consumed one token and stored one; each chain holds one live token.
    let rotations = first.refreshes + second.refreshes;
    assert_eq!(token_rows(&app, true).await - used_before, rotations);
    assert_eq!(token_rows(&app, false).await - unused_before, 5);
}

async fn ceiling_refuses_a_wrong_password(app: TestApp) {
    let user = app.user("ceiling-wrong").await;
    let email = Email::parse(&user.email).expect("email");
    let plan = RefreshPlan {
        sessions: 1,
        duration: Duration::from_millis(100),
        rate: None,
    };
    let wrong = SecretString::from("not the password at all");
    let err = ceiling::refresh(&app.ctx, &email, &wrong, plan)
        .await
        .expect_err("a wrong password signs nothing in");
    assert!(matches!(err, CeilingError::SignIn(_)), "{err}");
    let zero = RefreshPlan {
        sessions: 0,
        ..plan
    };
    let err = ceiling::refresh(&app.ctx, &email, &SecretString::from(PASSWORD), zero)
        .await
        .expect_err("no sessions");
    assert!(matches!(err, CeilingError::Plan), "{err}");
}
