//! Routes and their OpenAPI operations, registered together so the document cannot drift.

pub mod auth;
pub mod me;
pub mod ops;

use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

/// Every route of the server.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::jwks)
        .service(
            scope("/v1")
                .service(auth::register)
                .service(auth::login)
                .service(auth::refresh)
                .service(auth::logout)
                .service(me::get_me)
                .service(me::update_me)
                .service(me::change_password)
                .service(me::list_sessions)
                .service(me::revoke_other_sessions)
                .service(me::revoke_session),
        );
}
