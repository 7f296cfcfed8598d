//! Bearer tokens and roles (api.md). A token is `rpt_` and 64 hex digits (256 random
//! bits), shown once when created; only its SHA-256 is stored, in `server.sqlite` in the
//! workspace folder, with its name and role. A request's token names its caller.

use std::path::{Path, PathBuf};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rapport_store::StoreError;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::AppState;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Writes records; nothing else.
    Collector,
    /// Reads customers, segments, gaps and actions, with personal data masked.
    Analyst,
    /// Reads segments, audiences and customers (masked); writes campaign outcomes.
    Marketer,
    /// What an analyst may, with personal data revealed.
    Privacy,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Collector, Role::Analyst, Role::Marketer, Role::Privacy, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Analyst => "analyst",
            Role::Marketer => "marketer",
            Role::Privacy => "privacy",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }

    /// Whether the role sees personal data in clear.
    pub fn reveals(self) -> bool {
        matches!(self, Role::Privacy | Role::Admin)
    }
}

/// A token as `rapport token list` shows it (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// The token store of a workspace.
pub struct Tokens {
    path: PathBuf,
}

pub(crate) fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    /// The store of the workspace at `workspace` (created on first use).
    pub fn of(workspace: &Path) -> Self {
        Tokens {
            path: workspace.join("server.sqlite"),
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let c = Connection::open(&self.path)?;
        rapport_store::fsutil::make_private(&self.path)?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS tokens (
               name TEXT PRIMARY KEY, role TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE,
               created_at TEXT NOT NULL, revoked_at TEXT)",
        )?;
        Ok(c)
    }

    /// A new token named `name` with `role`; returns the token (shown once). A name in
    /// use, even revoked, is refused so that audit rows keep meaning one token.
    pub fn create(&self, name: &str, role: Role) -> Result<String, StoreError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(StoreError::Usage(format!(
                "token name \"{name}\": use letters, digits, '-', '_' or '.'"
            )));
        }
        let token = format!("rpt_{}", hex::encode(rand::random::<[u8; 32]>()));
        let c = self.open()?;
        let taken: Option<String> = c
            .query_row("SELECT name FROM tokens WHERE name = ?1", params![name], |r| r.get(0))
            .optional()?;
        if taken.is_some() {
            return Err(StoreError::Usage(format!("a token named \"{name}\" exists; choose another name")));
        }
        c.execute(
            "INSERT INTO tokens (name, role, sha256, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.name(), digest(&token), chrono::Utc::now().to_rfc3339()],
        )?;
        Ok(token)
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let c = self.open()?;
        let mut q = c.prepare("SELECT name, role, created_at, revoked_at FROM tokens ORDER BY name")?;
        let rows = q.query_map([], |r| {
            Ok(TokenInfo {
                name: r.get(0)?,
                role: r.get(1)?,
                created_at: r.get(2)?,
                revoked_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes the token `name`; an unknown or already revoked name is an error.
    pub fn revoke(&self, name: &str) -> Result<(), StoreError> {
        let c = self.open()?;
        let n = c.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, chrono::Utc::now().to_rfc3339()],
        )?;
        if n == 0 {
            return Err(StoreError::Usage(format!("no active token named \"{name}\"")));
        }
        Ok(())
    }

    /// The name and role of an active token.
    /// Every active token: its SHA-256, name and role.
    pub fn active(&self) -> Result<std::collections::HashMap<String, (String, Role)>, StoreError> {
        if !self.path.exists() {
            return Ok(Default::default());
        }
        let c = self.open()?;
        let mut q = c.prepare("SELECT sha256, name, role FROM tokens WHERE revoked_at IS NULL")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = std::collections::HashMap::new();
        for row in rows {
            let (sha, name, role) = row?;
            if let Some(role) = Role::parse(&role) {
                out.insert(sha, (name, role));
            }
        }
        Ok(out)
    }

    pub fn verify(&self, token: &str) -> Result<Option<(String, Role)>, StoreError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let c = self.open()?;
        let found: Option<(String, String)> = c
            .query_row(
                "SELECT name, role FROM tokens WHERE sha256 = ?1 AND revoked_at IS NULL",
                params![digest(token)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(found.and_then(|(name, role)| Role::parse(&role).map(|r| (name, r))))
    }
}

/// Who is calling: the name and role of the request's token, admitted by the access
/// layer ([`crate::access::guard`]), and what the handler tells the audit.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    note: crate::access::Note,
}

impl Caller {
    pub(crate) fn new(name: String, role: Role) -> Self {
        Caller {
            name,
            role,
            note: Default::default(),
        }
    }

    /// 403 unless the caller's role is one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        tracing::info!(token = %self.name, role = self.role.name(), "forbidden");
        Err(ApiError::forbidden(format!(
            "the {} role may not do this; it needs one of: {}",
            self.role.name(),
            roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Records the request in the audit log: it revealed personal data of, or wrote
    /// for, `subjects` (unified ids), `rows` rows or records.
    pub fn audit(&self, subjects: Vec<String>, rows: u64) {
        *self.note.lock().expect("audit note") = Some((subjects, rows));
    }

    pub(crate) fn note(&self) -> Option<(Vec<String>, u64)> {
        self.note.lock().expect("audit note").clone()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("no token: send Authorization: Bearer TOKEN"))
    }
}
