//! The audit log's side of the store. An API request that may change the fleet runs inside an
//! [`AuditScope`] (a task-local value set by the API's access layer): it names who asks (the
//! token's name and role), the route, and the record the request changes. When a commit made
//! within the scope writes that record, the backend writes the audit entry in the same
//! transaction, with the SHA-256 of the record's stored bytes before and after. A request that
//! committed no such write (a refused one, a failed one, one that changed nothing, a module
//! command) gets its entry after the answer, from [`AuditScope::unchanged_entry`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use edgefleet_common::UnixMillis;
use edgefleet_common::fleet_api::{AuditEntry, Role};
use sha2::{Digest as _, Sha256};

use super::{Batch, Key, StoreError};

tokio::task_local! {
    static SCOPE: Arc<AuditScope>;
}

/// One API request that may change the fleet, as the audit log names it.
#[derive(Debug)]
pub struct AuditScope {
    pub token: String,
    pub role: Role,
    pub method: String,
    pub route: String,
    pub path: String,
    /// The kind of record the request changes.
    pub kind: &'static str,
    /// The record's name, when the path names it; `None`: every record of `kind` the change
    /// writes (a model registered under a new version, devices imported).
    pub name: Option<String>,
    /// Whether a commit of the request wrote its entry.
    recorded: AtomicBool,
}

/// Runs `request` inside `scope`: commits it makes write their audit entry.
pub async fn audited<F: Future>(scope: Arc<AuditScope>, request: F) -> F::Output {
    SCOPE.scope(scope, request).await
}

/// The scope of the request this task serves, if the batch writes its record.
pub(super) fn scope_of(batch: &Batch) -> Option<Arc<AuditScope>> {
    SCOPE
        .try_with(Arc::clone)
        .ok()
        .filter(|scope| !scope.keys_in(batch).is_empty())
}

/// SHA-256 of stored bytes, hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl AuditScope {
    pub fn new(
        (token, role): (String, Role),
        (method, route, path): (String, String, String),
        kind: &'static str,
        name: Option<String>,
    ) -> Self {
        Self {
            token,
            role,
            method,
            route,
            path,
            kind,
            name,
            recorded: AtomicBool::new(false),
        }
    }

    /// Whether a commit of this request wrote its entry.
    pub fn recorded(&self) -> bool {
        self.recorded.load(Ordering::SeqCst)
    }

    pub(super) fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::SeqCst);
    }

    /// The keys of this scope's record(s) that `batch` puts or deletes, in order.
    pub(super) fn keys_in(&self, batch: &Batch) -> Vec<Key> {
        let mut keys: Vec<Key> = batch
            .deletes
            .iter()
            .chain(batch.puts.iter().map(|(k, _)| k))
            .filter(|(kind, name)| {
                kind == self.kind && self.name.as_ref().is_none_or(|n| n == name)
            })
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The entry of a change: `before` holds each key's stored bytes read in the change's
    /// transaction; what the batch writes is the after.
    pub(super) fn change_entry(
        &self,
        before: &BTreeMap<Key, Option<Vec<u8>>>,
        batch: &Batch,
        now_ms: UnixMillis,
    ) -> AuditEntry {
        let puts: BTreeMap<&Key, &[u8]> = batch.last_puts().into_iter().collect();
        let mut befores = Vec::new();
        let mut afters = Vec::new();
        for (key, was) in before {
            befores.push((key, was.as_deref().map(digest)));
            let after = match puts.get(key) {
                Some(value) => Some(digest(value)),
                None if batch.deletes.contains(key) => None,
                None => was.as_deref().map(digest),
            };
            afters.push((key, after));
        }
        let object = match before.keys().collect::<Vec<_>>().as_slice() {
            [] => self.object(),
            [(kind, name)] => format!("{kind}/{name}"),
            [(kind, name), rest @ ..] => format!("{kind}/{name} and {} more", rest.len()),
        };
        AuditEntry {
            at_ms: now_ms,
            object,
            status: 200,
            before: combined(&befores),
            after: combined(&afters),
            ..self.entry_base(now_ms)
        }
    }

    /// The entry of a request that committed no write of its record: answered `status`, the
    /// record (`stored`, if it has one name and exists) the same before and after.
    pub fn unchanged_entry(
        &self,
        status: u16,
        stored: Option<&[u8]>,
        now_ms: UnixMillis,
    ) -> AuditEntry {
        let digest = stored.map(digest);
        AuditEntry {
            status,
            before: digest.clone(),
            after: digest,
            ..self.entry_base(now_ms)
        }
    }

    fn object(&self) -> String {
        match &self.name {
            Some(name) => format!("{}/{name}", self.kind),
            None => self.kind.to_owned(),
        }
    }

    fn entry_base(&self, now_ms: UnixMillis) -> AuditEntry {
        AuditEntry {
            at_ms: now_ms,
            token: self.token.clone(),
            role: self.role,
            method: self.method.clone(),
            route: self.route.clone(),
            path: self.path.clone(),
            object: self.object(),
            status: 0,
            before: None,
            after: None,
        }
    }
}

/// One record's digest as it is; for several, the digest of their `name=digest` lines (`-`
/// for an absent one), so any change to any of them shows. `None` when one record is absent.
fn combined(digests: &[(&Key, Option<String>)]) -> Option<String> {
    match digests {
        [] => None,
        [(_, one)] => one.clone(),
        several => {
            let lines: String = several
                .iter()
                .map(|((_, name), d)| format!("{name}={}\n", d.as_deref().unwrap_or("-")))
                .collect();
            Some(digest(lines.as_bytes()))
        }
    }
}

/// An entry as stored.
pub(super) fn encode(entry: &AuditEntry) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(entry).map_err(|source| StoreError::Encode {
        key: format!("audit entry of {}", entry.token),
        source,
    })
}

pub(super) fn decode(bytes: &[u8]) -> Result<AuditEntry, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: "audit entry".to_owned(),
        source,
    })
}
