//! Per-request plumbing: the request id (task-local, so error bodies can carry it), the request
//! timeout, and the extractors for the caller (`Authenticated`) and its metadata (`ClientMeta`).

use std::future::{ready, Ready};
use std::net::IpAddr;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use service::{AppContext, Principal, RequestMeta};
use tracing_actix_web::RequestId;

use crate::error::ApiError;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, if called while serving one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Limits enforced around every request.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub timeout: Duration,
}

/// Scopes the request id over the handler, stamps `x-request-id` on the response, and answers
/// 503 `request_timeout` if the handler takes longer than the configured timeout.
pub async fn request_context<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(ToString::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let timeout = req
        .app_data::<web::Data<RequestLimits>>()
        .map_or(Duration::from_secs(30), |l| l.timeout);
    let outcome = REQUEST_ID
        .scope(id.clone(), tokio::time::timeout(timeout, next.call(req)))
        .await;
    let mut res = match outcome {
        Ok(res) => res?,
        Err(_elapsed) => {
            // Converted to a response outside this scope, so the id travels in the error itself.
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                "Service unavailable",
            )
            .detail("the request took too long and was abandoned")
            .request_id(id)
            .into());
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// The caller proven by a valid bearer access token.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(verified(req, Principal::from_bearer).map(Authenticated))
    }
}

/// The caller of `POST /v1/auth/logout`: a valid access token, its session revoked or not, so
/// that signing out of a session already revoked (here or, as the change feed reports, on
/// another instance) is the same success whenever it is asked.
pub struct SigningOut(pub Principal);

impl FromRequest for SigningOut {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(verified(req, Principal::from_bearer_even_if_revoked).map(SigningOut))
    }
}

/// The principal of the request's bearer token, as `verify` accepts it.
fn verified(
    req: &HttpRequest,
    verify: fn(&AppContext, &str) -> service::ServiceResult<Principal>,
) -> Result<Principal, ApiError> {
    let (ctx, token) = bearer(req)?;
    verify(ctx, token).map_err(ApiError::from)
}

/// The context and the bearer token of a request.
fn bearer(req: &HttpRequest) -> Result<(&AppContext, &str), ApiError> {
    let ctx = req.app_data::<web::Data<AppContext>>().ok_or_else(|| {
        ApiError::from(service::ServiceError::unexpected_msg("AppContext missing"))
    })?;
    let header = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthenticated("missing_token")
            .detail("send Authorization: Bearer <access token>")
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthenticated("invalid_token").detail("expected a Bearer token")
        })?;
    Ok((ctx, token))
}

/// Where the request came from, for sessions and the audit log.
#[derive(Debug, Clone)]
pub struct ClientMeta(pub RequestMeta);

impl FromRequest for ClientMeta {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let trusted = req
            .app_data::<web::Data<AppContext>>()
            .map(|ctx| ctx.settings.server.trusted_proxies.as_slice())
            .unwrap_or_default();
        ready(Ok(ClientMeta(RequestMeta {
            ip: client_ip(req, trusted).map(|ip| ip.to_string()),
            user_agent,
            request_id: current_request_id(),
        })))
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy; then the nearest address
/// in `X-Forwarded-For` (read from the right, each proxy appending the address it saw) that is
/// not a trusted proxy. Entries left of that one were written by the client and are never
/// believed; an unparseable entry stops the walk at the last address a trusted proxy vouched for.
pub fn client_ip(req: &HttpRequest, trusted: &[service::config::Cidr]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip().to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all(HeaderName::from_static("x-forwarded-for"))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in forwarded.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>() else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    Some(client)
}

/// Which methods each documented path answers, built from the OpenAPI document, so a known path
/// with the wrong method gets 405 and `Allow` rather than 404.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<(Vec<String>, Vec<&'static str>)>,
}

impl RouteTable {
    pub fn from_openapi(api: &utoipa::openapi::OpenApi) -> Self {
        let routes = api
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path
                    .trim_matches('/')
                    .split('/')
                    .map(str::to_owned)
                    .collect();
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, present)| present.then_some(m))
                .collect();
                (segments, methods)
            })
            .collect();
        Self { routes }
    }

    /// The methods allowed on `path`, if any documented route matches it.
    pub fn allowed(&self, path: &str) -> Option<Vec<&'static str>> {
        let wanted: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut allowed: Vec<&'static str> = Vec::new();
        for (segments, methods) in &self.routes {
            let matches = segments.len() == wanted.len()
                && segments
                    .iter()
                    .zip(&wanted)
                    .all(|(s, w)| s == w || (s.starts_with('{') && !w.is_empty()));
            if matches {
                allowed.extend(
                    methods
                        .iter()
                        .filter(|m| !allowed.contains(m))
                        .collect::<Vec<_>>(),
                );
            }
        }
        (!allowed.is_empty()).then_some(allowed)
    }
}

/// Fallback for requests no route took: 405 with `Allow` for a known path, else 404.
pub async fn no_route(req: HttpRequest, table: web::Data<RouteTable>) -> HttpResponse {
    match table.allowed(req.path()) {
        Some(methods) => {
            let err = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
            .detail(format!(
                "{} is not allowed here; use {}",
                req.method(),
                methods.join(", ")
            ));
            let mut res = actix_web::ResponseError::error_response(&err);
            if let Ok(value) = HeaderValue::from_str(&methods.join(", ")) {
                res.headers_mut().insert(header::ALLOW, value);
            }
            res
        }
        None => actix_web::ResponseError::error_response(
            &ApiError::not_found().detail("no such endpoint"),
        ),
    }
}

/// The extension every operation carries: the permission it needs, `authenticated` or `public`.
pub const REQUIRED_PERMISSION: &str = "x-required-permission";

/// The permission each tenant-scoped operation declares in its `x-required-permission`, read
/// from the OpenAPI document: a handler names its permission once, in its `#[utoipa::path]`,
/// and the [`Requires`] extractor hands that same permission to the check.
#[derive(Debug, Default)]
pub struct PermissionTable {
    entries: std::collections::HashMap<(String, String), service::authz::Permission>,
}

impl PermissionTable {
    pub fn from_openapi(api: &utoipa::openapi::OpenApi) -> Self {
        let mut entries = std::collections::HashMap::new();
        for (path, item) in &api.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
            ] {
                let declared = op
                    .as_ref()
                    .and_then(|op| op.extensions.as_ref())
                    .and_then(|ext| ext.get(REQUIRED_PERMISSION))
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse::<service::authz::Permission>().ok());
                if let Some(permission) = declared {
                    entries.insert((method.to_owned(), path.clone()), permission);
                }
            }
        }
        Self { entries }
    }

    pub fn get(&self, method: &str, pattern: &str) -> Option<service::authz::Permission> {
        self.entries
            .get(&(method.to_owned(), pattern.to_owned()))
            .copied()
    }
}

/// The permission the matched operation declares (see [`PermissionTable`]).
#[derive(Debug, Clone, Copy)]
pub struct Requires(pub service::authz::Permission);

impl FromRequest for Requires {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let found = req
            .app_data::<web::Data<PermissionTable>>()
            .zip(req.match_pattern())
            .and_then(|(table, pattern)| table.get(req.method().as_str(), &pattern));
        ready(found.map(Requires).ok_or_else(|| {
            ApiError::from(service::ServiceError::unexpected_msg(format!(
                "{} {} declares no x-required-permission",
                req.method(),
                req.match_pattern().unwrap_or_default()
            )))
        }))
    }
}
