//! One layer in front of every route: who calls (the bearer token), whether their role
//! may (the role table of api.md, by route and method, written once here), the audit
//! row, and the request metrics. Handlers receive the [`Caller`] it admitted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::audit::AuditRow;
use crate::auth::{digest, Caller, Role, Tokens};
use crate::error::ApiError;
use crate::AppState;

use Role::{Admin, Analyst, Collector, Marketer, Privacy};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// Any valid token (`/metrics`; public with `metrics_public`).
    AnyRole,
    Roles(&'static [Role]),
}

const READERS: &[Role] = &[Analyst, Marketer, Privacy, Admin];
const ANALYSTS: &[Role] = &[Analyst, Privacy, Admin];

/// The role table of api.md.
pub fn access(method: &Method, route: &str, path: &str) -> Access {
    match (method.as_str(), route) {
        (_, "/healthz" | "/openapi.json") => Access::Public,
        ("GET", docs) if docs == "/docs" || docs.starts_with("/docs/") => Access::Public,
        ("GET", "/metrics") => Access::AnyRole,
        ("POST", "/v1/ingest/{table}") if path.ends_with("/campaign_outcomes") => Access::Roles(&[Collector, Marketer, Admin]),
        ("POST", "/v1/ingest/{table}") => Access::Roles(&[Collector, Admin]),
        ("GET", "/v1/customers" | "/v1/customers/{id}" | "/v1/customers/{id}/recommendations" | "/v1/segments" | "/v1/actions") => {
            Access::Roles(READERS)
        }
        ("GET", "/v1/gaps" | "/v1/knowledge-gaps") | ("POST", "/v1/query") => Access::Roles(ANALYSTS),
        ("GET", "/v1/audit") => Access::Roles(&[Admin]),
        // The dashboard: sign-in and its script for anyone, pages by the same roles.
        ("GET", "/" | "/ui/signin" | "/ui/assets/htmx.min.js") | ("POST", "/ui/signin" | "/ui/signout") => Access::Public,
        ("GET", "/ui/gaps") => Access::Roles(ANALYSTS),
        ("GET", ui) if ui.starts_with("/ui/") => Access::Roles(READERS),
        // Unknown routes answer 404 to anyone with a token.
        _ => Access::AnyRole,
    }
}

/// Active tokens by SHA-256: name and role.
type Active = HashMap<String, (String, Role)>;

/// The tokens of `server.sqlite`, read again when the file changes (a token created or
/// revoked by `rapport token` takes effect at the next request).
pub struct TokenCache {
    tokens: Tokens,
    path: PathBuf,
    loaded: Mutex<(Option<SystemTime>, Active)>,
}

impl TokenCache {
    pub fn new(workspace: &std::path::Path) -> Self {
        TokenCache {
            tokens: Tokens::of(workspace),
            path: workspace.join("server.sqlite"),
            loaded: Mutex::new((None, HashMap::new())),
        }
    }

    /// The name and role of an active token.
    pub fn verify(&self, token: &str) -> Result<Option<(String, Role)>, ApiError> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut loaded = self.loaded.lock().expect("token cache");
        if modified.is_none() || loaded.0 != modified {
            loaded.1 = self.tokens.active()?;
            loaded.0 = modified;
        }
        Ok(loaded.1.get(&digest(token)).cloned())
    }
}

/// The caller of a request, from its `Authorization: Bearer` header (or, for the
/// dashboard's pages, the sign-in cookie).
fn authenticate(state: &AppState, req: &Request) -> Result<(String, Role), ApiError> {
    if req.uri().path().starts_with("/ui/") && !req.headers().contains_key(axum::http::header::AUTHORIZATION) {
        let token = crate::dashboard::cookie_token(req.headers()).ok_or_else(|| ApiError::unauthorized("not signed in"))?;
        return state
            .tokens
            .verify(&token)?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"));
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("no token: send Authorization: Bearer TOKEN"))?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(|| ApiError::unauthorized("the Authorization header is not Bearer TOKEN"))?;
    state
        .tokens
        .verify(token.trim())?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
}

/// The layer: admits or refuses the request, then records the metrics and, when the
/// request revealed, wrote, ran SQL or was refused, the audit row.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let rule = match access(&method, &route, &path) {
        Access::AnyRole if route == "/metrics" && state.metrics_public => Access::Public,
        rule => rule,
    };
    let mut caller = None;
    let refused = match rule {
        Access::Public => None,
        Access::AnyRole | Access::Roles(_) => match authenticate(&state, &req) {
            Err(e) => Some(e),
            Ok((name, role)) => {
                let c = Caller::new(name, role);
                let allowed = match rule {
                    Access::Roles(roles) => c.require(roles).err(),
                    _ => None,
                };
                req.extensions_mut().insert(c.clone());
                caller = Some(c);
                allowed
            }
        },
    };
    let refused_status = refused.as_ref().map(|e| e.status.as_u16());
    let response = match refused {
        // The dashboard's pages: the sign-in page, or a page saying the role may not.
        Some(e) if path.starts_with("/ui/") => crate::dashboard::refused(e.status),
        Some(e) => e.into_response(),
        None => match tokio::time::timeout(state.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::timeout(format!(
                "the request took longer than {} s (a body sent too slowly?)",
                state.request_timeout.as_secs_f64()
            ))
            .into_response(),
        },
    };
    let status = refused_status.unwrap_or(response.status().as_u16());
    let labels = [
        ("route", route.clone()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    metrics::counter!("rapport_http_requests_total", &labels).increment(1);
    metrics::histogram!("rapport_http_request_duration_seconds", "route" => route.clone()).record(started.elapsed().as_secs_f64());
    let note = caller.as_ref().and_then(Caller::note);
    if status == 401 || status == 403 || note.is_some() {
        let (subjects, rows) = note.unwrap_or_default();
        state.audit.record(AuditRow {
            at: crate::audit::now(),
            token: caller.as_ref().map(|c| c.name.clone()),
            role: caller.as_ref().map(|c| c.role.name().to_string()),
            method: method.to_string(),
            route: if route == "unmatched" { path } else { route },
            subjects,
            outcome: status,
            rows,
        });
    }
    response
}

/// What a handler tells the audit: the customers whose data it revealed or wrote, and
/// how many rows.
pub(crate) type Note = Arc<Mutex<Option<(Vec<String>, u64)>>>;
