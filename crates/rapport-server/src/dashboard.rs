//! The dashboard (api.md, "Dashboard"): server-rendered pages under `/ui/` — overview,
//! segments, gaps, one customer, actions and uplift, data quality — with the report's
//! charts as inline SVG, htmx carried in the binary for live refresh, and nothing loaded
//! from the network. Sign-in takes a token and keeps it in an HttpOnly, SameSite=Strict
//! cookie; the access layer reads it there for `/ui/` routes and applies the same role
//! table, so a page a role may not see is refused (and not linked), and personal data is
//! masked unless the role may see it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use rapport_engine::report::View;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Caller, Role};
use crate::customers::Customer360;
use crate::error::ApiError;
use crate::{blocking, AppState};

/// The cookie that carries the signed-in token.
pub const COOKIE: &str = "rapport_token";
/// htmx 2.0.11 (0BSD), from the npm package htmx.org, carried in the binary.
const HTMX: &str = include_str!("../assets/htmx.min.js");

/// The dashboard's own styles, after the report's.
const STYLE: &str = "nav{display:flex;gap:4px;align-items:center;flex-wrap:wrap;margin-top:8px}\
nav a{color:#fff;text-decoration:none;padding:4px 10px;border-radius:4px;opacity:.85}nav a.on,nav a:hover{background:#2c5282;opacity:1}\
nav .who{margin-left:auto;font-size:13px;opacity:.8}nav form{display:inline;margin:0 0 0 8px}\
nav button{background:transparent;color:#fff;border:1px solid #90cdf4;border-radius:4px;padding:2px 8px;cursor:pointer}\
form.search input{padding:6px 8px;min-width:280px}form.search button,form.signin button{padding:6px 12px}\
form.signin input{padding:6px 8px;width:100%;max-width:520px;font-family:monospace}.error{color:#c53030}\
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:13px}dl.kv dt{color:#4a5568}dl.kv dd{margin:0}\
.live{display:inline-block;background:#c6f6d5;color:#22543d;border-radius:4px;padding:0 6px;font-size:12px}";

/// The pages, in the order of the navigation.
const PAGES: &[(&str, &str, View)] = &[
    ("/ui/overview", "Overview", View::Overview),
    ("/ui/segments", "Segments", View::Segments),
    ("/ui/gaps", "Gaps", View::Gaps),
    ("/ui/actions", "Actions", View::Actions),
    ("/ui/quality", "Data quality", View::Quality),
];

/// Whether `role` may open the page at `path` (the access layer's table, asked here so
/// the navigation links only what opens).
fn may_open(role: Role, path: &str) -> bool {
    match crate::access::access(&axum::http::Method::GET, path, path) {
        crate::access::Access::Roles(roles) => roles.contains(&role),
        _ => true,
    }
}

/// A whole page: the report's styles, htmx, the navigation for the caller's role.
fn shell(caller: &Caller, current: &str, title: &str, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Rapport — " (title) }
                // No favicon request (it would be a 404 in the console).
                link rel="icon" href="data:,";
                style { (PreEscaped(rapport_engine::report::STYLE)) (PreEscaped(STYLE)) }
                script src="/ui/assets/htmx.min.js" {}
            }
            body {
                header {
                    h1 { "Rapport" }
                    nav {
                        @for (path, name, _) in PAGES.iter().take(1) {
                            a href=(path) class=[(current == *path).then_some("on")] { (name) }
                        }
                        a href="/ui/customers" class=[(current == "/ui/customers").then_some("on")] { "Customers" }
                        @for (path, name, _) in PAGES.iter().skip(1) {
                            @if may_open(caller.role, path) {
                                a href=(path) class=[(current == *path).then_some("on")] { (name) }
                            }
                        }
                        span.who { (caller.name) " (" (caller.role.name()) ")" }
                        form method="post" action="/ui/signout" { button type="submit" { "Sign out" } }
                    }
                }
                main { (body) }
                footer { "rapport " (env!("CARGO_PKG_VERSION")) }
            }
        }
    };
    Html(page.into_string())
}

/// `GET /`: the overview (sign-in first when needed).
pub async fn root() -> Redirect {
    Redirect::to("/ui/overview")
}

/// `GET /ui/assets/htmx.min.js`.
pub async fn htmx() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        HTMX,
    )
        .into_response()
}

/// The sign-in page, with what went wrong.
fn signin_page(error: Option<&str>) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Rapport — sign in" }
                link rel="icon" href="data:,";
                style { (PreEscaped(rapport_engine::report::STYLE)) (PreEscaped(STYLE)) }
            }
            body {
                header { h1 { "Rapport" } }
                main {
                    section {
                        h2 { "Sign in" }
                        p.note { "With a token from " code { "rapport token create" } "." }
                        @if let Some(e) = error { p.error { (e) } }
                        form.signin method="post" action="/ui/signin" {
                            p { input type="password" name="token" placeholder="rpt_…" autocomplete="off" required; }
                            p { button type="submit" { "Sign in" } }
                        }
                    }
                }
            }
        }
    };
    Html(page.into_string())
}

/// `GET /ui/signin`.
pub async fn signin_form() -> Html<String> {
    signin_page(None)
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

/// `POST /ui/signin`: a valid token is kept in the cookie; otherwise 401 (audited).
pub async fn signin(State(state): State<AppState>, Form(form): Form<SignIn>) -> Response {
    let token = form.token.trim().to_string();
    match state.tokens.verify(&token) {
        Ok(Some(_)) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/ui/overview".to_string()),
                (header::SET_COOKIE, format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")),
            ],
        )
            .into_response(),
        Ok(None) => (StatusCode::UNAUTHORIZED, signin_page(Some("Unknown or revoked token."))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /ui/signout`: the cookie is cleared.
pub async fn signout() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ui/signin".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
        ],
    )
        .into_response()
}

/// The token in a request's cookie.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// What a refused dashboard request gets: the sign-in page for no or a bad token, a
/// page saying so for a role that may not.
pub fn refused(status: StatusCode) -> Response {
    if status == StatusCode::UNAUTHORIZED {
        return Redirect::to("/ui/signin").into_response();
    }
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Rapport" } link rel="icon" href="data:,"; style { (PreEscaped(rapport_engine::report::STYLE)) } }
            body { main { section { h2 { "Not for your role" } p { "Your role may not see this page. " a href="/ui/overview" { "Back to the overview" } } } } }
        }
    };
    (status, Html(page.into_string())).into_response()
}

/// Live tiles of the overview: refreshed every few seconds.
fn tiles(state: &AppState) -> Result<Markup, ApiError> {
    let index = state.index.snapshot()?;
    let t = index.totals();
    let tile = |label: &str, v: String| html! { div.tile { div.v { (v) } div.k { (label) } } };
    Ok(html! {
        div.tiles id="tiles" hx-get="/ui/overview/tiles" hx-trigger="every 5s" hx-swap="outerHTML" {
            (tile("customers", rapport_engine::report::svg::number(t.customers as f64)))
            (tile("revenue", rapport_engine::report::svg::number(t.revenue.round())))
            (tile("mean CLV", t.mean_clv.map_or("–".into(), |v| rapport_engine::report::svg::number((v * 100.0).round() / 100.0))))
            (tile("mean churn probability", t.mean_churn.map_or("–".into(), |v| format!("{:.1} %", 100.0 * v))))
            (tile("rescored since the run", rapport_engine::report::svg::number(t.live as f64)))
            (tile("records waiting to join", rapport_engine::report::svg::number(state.intake.pending() as f64)))
            (tile("scores as of", index.as_of.clone().unwrap_or_else(|| "no run yet".into())))
        }
    })
}

/// `GET /ui/overview/tiles`: the overview's tiles alone (htmx swaps them in).
pub async fn overview_tiles(State(state): State<AppState>, _caller: Caller) -> Result<Html<String>, ApiError> {
    blocking(move || Ok(Html(tiles(&state)?.into_string()))).await
}

/// One of the report's views as a page (the overview with live tiles above it).
async fn view_page(state: AppState, caller: Caller, path: &'static str) -> Result<Html<String>, ApiError> {
    let (_, title, view) = *PAGES.iter().find(|(p, _, _)| *p == path).expect("a page of the dashboard");
    blocking(move || {
        let ws = state.reader()?;
        let sections = rapport_engine::report::view_html(&ws, view)?;
        let top = if view == View::Overview { Some(tiles(&state)?) } else { None };
        let body = html! {
            @if let Some(t) = top { section { h2 { "Customers now" } (t) } }
            @if sections.is_empty() {
                section { p.note { "Nothing to show yet: " code { "rapport run" } " fills this page." } }
            } @else {
                (PreEscaped(sections))
            }
        };
        Ok(shell(&caller, path, title, body))
    })
    .await
}

pub async fn overview(State(state): State<AppState>, caller: Caller) -> Result<Html<String>, ApiError> {
    view_page(state, caller, "/ui/overview").await
}

pub async fn segments(State(state): State<AppState>, caller: Caller) -> Result<Html<String>, ApiError> {
    view_page(state, caller, "/ui/segments").await
}

pub async fn gaps(State(state): State<AppState>, caller: Caller) -> Result<Html<String>, ApiError> {
    view_page(state, caller, "/ui/gaps").await
}

pub async fn actions(State(state): State<AppState>, caller: Caller) -> Result<Html<String>, ApiError> {
    view_page(state, caller, "/ui/actions").await
}

pub async fn quality(State(state): State<AppState>, caller: Caller) -> Result<Html<String>, ApiError> {
    view_page(state, caller, "/ui/quality").await
}

/// `?id=` (a unified or source id) and `?source=`.
#[derive(Debug, Default, Deserialize)]
pub struct Search {
    pub id: Option<String>,
    pub source: Option<String>,
}

/// The 360 of the searched customer, as the caller's role sees it (audited when it
/// reveals), or the error to show.
fn lookup(state: &AppState, caller: &Caller, search: &Search) -> Result<Option<Customer360>, ApiError> {
    let Some(id) = search.id.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let c = crate::customers::lookup(state, caller.role, id, search.source.as_deref())?;
    if caller.role.reveals() {
        caller.audit(vec![c.customer_id.clone()], 1);
    }
    Ok(Some(c))
}

/// A JSON value as a cell: text without quotes, nothing for null.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => rapport_engine::report::svg::number((x * 1000.0).round() / 1000.0),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Rows of objects as a table with the columns of the first.
fn table(rows: &[Value]) -> Markup {
    let columns: Vec<String> = rows
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    html! {
        @if rows.is_empty() { p.note { "none" } } @else {
            table {
                tr { @for c in &columns { th { (c) } } }
                @for r in rows { tr { @for c in &columns { td { (cell(&r[c.as_str()])) } } } }
            }
        }
    }
}

/// The part of the customer page that changes as records arrive: scores,
/// recommendations and the next action (htmx reloads it every 2 s).
fn live_part(c: &Customer360, search: &Search) -> Markup {
    let mut query = vec![("id", c.customer_id.as_str())];
    query.extend(search.source.as_deref().map(|s| ("source", s)));
    let url = format!("/ui/customers/live?{}", serde_urlencoded::to_string(&query).unwrap_or_default());
    let scores: Vec<(String, String)> = c
        .scores
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.as_str() != "customer_id")
                .map(|(k, v)| (k.clone(), cell(v)))
                .collect()
        })
        .unwrap_or_default();
    html! {
        div id="live" hx-get=(url) hx-trigger="every 2s" hx-swap="outerHTML" {
            section {
                h2 {
                    "Scores "
                    @if c.live { span.live { "live" } }
                }
                p.note { "As of " (c.scored_at.clone().unwrap_or_default()) "." }
                @if scores.is_empty() { p.note { "No scores yet: " code { "rapport run" } " computes them." } }
                dl.kv id="scores" { @for (k, v) in &scores { dt { (k) } dd data-field=(k) { (v) } } }
            }
            section {
                h2 { "Next action" }
                @match &c.next_action {
                    Some(a) => p { strong { (a.action) } " by " (a.channel.clone().unwrap_or_else(|| "any channel".into())) " (" (a.group) " group)" },
                    None => p.note { "none" },
                }
                h2 { "Recommendations" }
                @if c.recommendations.is_empty() { p.note { "none" } } @else {
                    table {
                        tr { th { "product" } th { "score" } th { "why" } }
                        @for r in &c.recommendations { tr { td { (r.product_id) } td.num { (format!("{:.3}", r.score)) } td { (r.reason) } } }
                    }
                }
            }
        }
    }
}

/// `GET /ui/customers?id=&source=`: search, then the customer's 360.
pub async fn customer(
    State(state): State<AppState>,
    caller: Caller,
    search: Result<Query<Search>, QueryRejection>,
) -> Result<Html<String>, ApiError> {
    let search = crate::tables::query(search)?;
    blocking(move || {
        let found = lookup(&state, &caller, &search);
        let body = html! {
            section {
                h2 { "Find a customer" }
                form.search method="get" action="/ui/customers" {
                    input type="search" name="id" value=[search.id.as_deref()] placeholder="unified id (cu_…) or a source system's id";
                    " "
                    button type="submit" { "Show" }
                }
            }
            @match &found {
                Err(e) => section { p.error { (e.message) } },
                Ok(None) => {},
                Ok(Some(c)) => {
                    section {
                        h2 { "Customer " (c.customer_id) }
                        dl.kv id="profile" { @for (k, v) in &c.profile { dt { (k) } dd data-field=(k) { (cell(v)) } } }
                        h3 { "Source ids" }
                        (table(&c.sources))
                        h3 { "Consents" }
                        (table(&c.consents))
                    }
                    (live_part(c, &search))
                    @if may_open(caller.role, "/ui/gaps") {
                        section { h2 { "Gaps" } (table(&c.gaps)) }
                    }
                }
            }
        };
        Ok(shell(&caller, "/ui/customers", "customers", body))
    })
    .await
}

/// `GET /ui/customers/live?id=`: the changing part of the customer page (htmx).
pub async fn customer_live(
    State(state): State<AppState>,
    caller: Caller,
    search: Result<Query<Search>, QueryRejection>,
) -> Result<Html<String>, ApiError> {
    let search = crate::tables::query(search)?;
    blocking(move || match lookup(&state, &caller, &search)? {
        Some(c) => Ok(Html(live_part(&c, &search).into_string())),
        None => Err(ApiError::bad_request("?id= names the customer")),
    })
    .await
}
