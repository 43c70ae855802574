//! Routes and their OpenAPI operations, registered together so the document cannot drift.

pub mod auth;
pub mod authz;
pub mod me;
pub mod members;
pub mod ops;
pub mod orgs;
pub mod roles;

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
                .service(auth::verify_email)
                .service(auth::resend_verification)
                .service(auth::forgot_password)
                .service(auth::reset_password)
                .service(auth::verify_mfa)
                .service(me::get_me)
                .service(me::update_me)
                .service(me::change_password)
                .service(me::change_email)
                .service(me::enroll_totp)
                .service(me::confirm_totp)
                .service(me::disable_totp)
                .service(me::list_sessions)
                .service(me::revoke_other_sessions)
                .service(me::revoke_session)
                .service(orgs::create_org)
                .service(orgs::list_orgs)
                .service(orgs::get_org)
                .service(orgs::update_org)
                .service(orgs::delete_org)
                .service(orgs::create_account)
                .service(orgs::list_accounts)
                .service(orgs::get_account)
                .service(orgs::update_account)
                .service(orgs::delete_account)
                .service(orgs::create_project)
                .service(orgs::list_projects)
                .service(orgs::get_project)
                .service(orgs::update_project)
                .service(orgs::delete_project)
                .service(roles::list_roles)
                .service(roles::create_role)
                .service(roles::get_role)
                .service(roles::update_role)
                .service(roles::delete_role)
                .service(roles::list_assignments)
                .service(roles::create_assignment)
                .service(roles::delete_assignment)
                .service(members::list_members)
                .service(members::remove_member)
                .service(members::create_invitation)
                .service(members::list_invitations)
                .service(members::revoke_invitation)
                .service(members::accept_invitation)
                .service(authz::check)
                .service(authz::permissions)
                .service(authz::subjects)
                .service(authz::explain),
        );
}
