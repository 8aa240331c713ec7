//! Named API tokens with roles, and the audit log of what they changed. Tokens are created,
//! listed and revoked through the API (admin only); each request's token is looked up in the
//! store (read through, no cache), so a token created or revoked on one replica counts on
//! every replica at its next request. The bootstrap token (`<data-dir>/admin-token`, or
//! `EDGEFLEET_TOKEN` in `edgefleet serve`'s environment) is the admin named
//! [`BOOTSTRAP_NAME`]; it is compared in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use edgefleet_common::UnixMillis;
use edgefleet_common::fleet_api::{AuditEntry, AuditQuery, Deleted, Role, TokenCreated, TokenView};
use edgefleet_common::topics::check_name;
use sha2::{Digest as _, Sha256};

use super::Fleet;
use crate::error::FleetError;
use crate::records::{Token, TokenHolder};
use crate::store::audit::AuditScope;
use crate::store::{Batch, kind};

/// The name of the bootstrap token, the first admin.
pub const BOOTSTRAP_NAME: &str = "admin";

/// Entries one audit answer holds at most, and by default.
const AUDIT_PAGE_MAX: usize = 10_000;
const AUDIT_PAGE_DEFAULT: usize = 100;

/// How often a replica notes that a token was used, at most.
const NOTE_USE_EVERY_MS: u64 = 60_000;

/// Who a request comes from: its token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// Recognises tokens: the bootstrap one in memory, the others through the store.
#[derive(Debug)]
pub struct Tokens {
    bootstrap_sha256: [u8; 32],
    /// When this replica last noted each token's use.
    noted: Mutex<BTreeMap<String, UnixMillis>>,
}

/// SHA-256 of a token, hex.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    pub fn new(bootstrap_token: &str) -> Self {
        Self {
            bootstrap_sha256: Sha256::digest(bootstrap_token.as_bytes()).into(),
            noted: Mutex::default(),
        }
    }

    /// SHA-256 (hex) of the token named `name`, if it exists: the dashboard derives its
    /// session cookies from it.
    pub async fn sha256_of(
        &self,
        fleet: &Fleet,
        name: &str,
    ) -> Result<Option<(String, Role)>, FleetError> {
        if name == BOOTSTRAP_NAME {
            return Ok(Some((hex::encode(self.bootstrap_sha256), Role::Admin)));
        }
        Ok(fleet
            .store
            .get::<Token>(kind::TOKEN, name)
            .await?
            .map(|t| (t.sha256, t.role)))
    }

    /// Who holds `token`, if anyone.
    pub async fn caller(&self, fleet: &Fleet, token: &str) -> Result<Option<Caller>, FleetError> {
        let caller = if Sha256::digest(token.as_bytes()).as_slice() == self.bootstrap_sha256 {
            Some(Caller {
                name: BOOTSTRAP_NAME.to_owned(),
                role: Role::Admin,
            })
        } else {
            fleet
                .store
                .get::<TokenHolder>(kind::TOKEN_HASH, &token_sha256(token))
                .await?
                .map(|h| Caller {
                    name: h.name,
                    role: h.role,
                })
        };
        if let Some(caller) = &caller {
            self.note_use(fleet, &caller.name);
        }
        Ok(caller)
    }

    /// Notes that `name` was used now, at most once a minute, beside the request.
    fn note_use(&self, fleet: &Fleet, name: &str) {
        let now = edgefleet_transport::now_ms();
        let Ok(mut noted) = self.noted.lock() else {
            return;
        };
        if noted
            .get(name)
            .is_some_and(|&at| now.saturating_sub(at) < NOTE_USE_EVERY_MS)
        {
            return;
        }
        noted.insert(name.to_owned(), now);
        let store = fleet.store.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.put(kind::TOKEN_USE, &name, &now).await {
                tracing::warn!(token = %name, error = %e, "the token's last use not noted");
            }
        });
    }
}

impl Fleet {
    /// Creates the token `name` with `role`; the answer holds the token, shown this once.
    pub async fn create_token(
        &self,
        by: &Caller,
        name: &str,
        role: Role,
    ) -> Result<TokenCreated, FleetError> {
        check_name("token name", name)?;
        if name == BOOTSTRAP_NAME {
            return Err(FleetError::Conflict(format!(
                "token name {BOOTSTRAP_NAME:?} is the bootstrap token's (<data-dir>/admin-token): pick another name"
            )));
        }
        let token = format!("eft_{}", hex::encode(rand::random::<[u8; 32]>()));
        let record = Token {
            name: name.to_owned(),
            role,
            sha256: token_sha256(&token),
            created_ms: edgefleet_transport::now_ms(),
            created_by: by.name.clone(),
        };
        let _writes = self.store.lock_writes().await?;
        if self.store.get::<Token>(kind::TOKEN, name).await?.is_some() {
            return Err(FleetError::Conflict(format!(
                "token {name} exists: revoke it first (edgefleet token revoke {name}) or pick another name"
            )));
        }
        let mut batch = Batch::default();
        batch.put(kind::TOKEN, name, &record)?;
        let holder = TokenHolder {
            name: name.to_owned(),
            role,
        };
        batch.put(kind::TOKEN_HASH, &record.sha256, &holder)?;
        self.store.commit(batch).await?;
        Ok(TokenCreated {
            name: name.to_owned(),
            role,
            token,
        })
    }

    /// Every token (never the token itself), the bootstrap one first.
    pub async fn tokens(&self) -> Result<Vec<TokenView>, FleetError> {
        let used: BTreeMap<String, UnixMillis> = self
            .store
            .list::<UnixMillis>(kind::TOKEN_USE)
            .await?
            .into_iter()
            .collect();
        let bootstrap = TokenView {
            name: BOOTSTRAP_NAME.to_owned(),
            role: Role::Admin,
            created_ms: None,
            created_by: None,
            last_used_ms: used.get(BOOTSTRAP_NAME).copied(),
            bootstrap: true,
        };
        let stored = self.store.list::<Token>(kind::TOKEN).await?;
        Ok(std::iter::once(bootstrap)
            .chain(stored.into_iter().map(|(name, t)| TokenView {
                last_used_ms: used.get(&name).copied(),
                name,
                role: t.role,
                created_ms: Some(t.created_ms),
                created_by: Some(t.created_by),
                bootstrap: false,
            }))
            .collect())
    }

    /// Revokes the token `name`: its next request is refused, on every replica.
    pub async fn revoke_token(&self, name: &str) -> Result<Deleted, FleetError> {
        if name == BOOTSTRAP_NAME {
            return Err(FleetError::invalid(format!(
                "{BOOTSTRAP_NAME} is the bootstrap token: change <data-dir>/admin-token (its row of fleet_secrets on PostgreSQL), or EDGEFLEET_TOKEN in the service's environment, and restart the service"
            )));
        }
        let _writes = self.store.lock_writes().await?;
        let Some(token) = self.store.get::<Token>(kind::TOKEN, name).await? else {
            return Err(FleetError::not_found(format!(
                "no token {name} (edgefleet token list shows them)"
            )));
        };
        let mut batch = Batch::default();
        batch.delete(kind::TOKEN, name);
        batch.delete(kind::TOKEN_HASH, &token.sha256);
        batch.delete(kind::TOKEN_USE, name);
        self.store.commit(batch).await?;
        Ok(Deleted {
            deleted: name.to_owned(),
        })
    }

    /// Appends the audit entry of a request in `scope` that committed no write of its record
    /// (refused, failed, or changing nothing), answered with `status`; a failure to store it
    /// goes to the service log.
    pub async fn audit_unchanged(&self, scope: &AuditScope, status: u16) {
        let stored = match &scope.name {
            Some(name) => self.store.get_raw(scope.kind, name).await.ok().flatten(),
            None => None,
        };
        let entry = scope.unchanged_entry(status, stored.as_deref(), edgefleet_transport::now_ms());
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::error!(token = %entry.token, path = %entry.path, error = %e, "the audit entry of a request is not stored");
        }
    }

    /// The audit log as `query` asks, newest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, FleetError> {
        let limit = query
            .limit
            .unwrap_or(AUDIT_PAGE_DEFAULT)
            .min(AUDIT_PAGE_MAX);
        Ok(self
            .store
            .audit_entries(query.since_ms.unwrap_or(0), query.token.as_deref(), limit)
            .await?)
    }
}
