//! The fleet service's database: records by kind and name as JSON, and each device's
//! telemetry, deduplicated by `(device, seq)`, kept for the configured age and bytes, with the
//! highest `seq` up to which the fleet has every record (its acknowledgement).
//!
//! Two backends keep the same things with the same meaning: [`embedded`] (one redb file, the
//! default) and [`postgres`] (`edgefleet serve --database postgres://…`, shared by several
//! replicas of the service). [`FleetStore`] is what the rest of the fleet uses; it encodes and
//! decodes records and hands bytes to the backend. Which telemetry records are stored and what
//! a device is acknowledged is one rule for both, in [`delivery`].

pub mod audit;
mod delivery;
mod embedded;
mod postgres;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_common::UnixMillis;
use edgefleet_common::fleet_api::AuditEntry;
use edgefleet_common::telemetry::TelemetryEnvelope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use embedded::EmbeddedStore;
use postgres::PostgresStore;
pub use postgres::RenderWakeups;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("fleet store {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("fleet store: {0}")]
    Embedded(#[source] redb::Error),
    #[error(
        "fleet store {url}: cannot connect: {source} (is PostgreSQL running there, and are the \
         user, password and database right?)"
    )]
    Connect { url: String, source: sqlx::Error },
    #[error("fleet store {url}: the schema cannot be migrated: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("fleet store: {what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("fleet store: PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("fleet store: record {key} cannot be written: {source}")]
    Encode {
        key: String,
        source: serde_json::Error,
    },
    #[error("fleet store: record {key} cannot be read (written by another version?): {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
}

/// The kinds of records.
pub mod kind {
    pub const REGISTRY: &str = "registry";
    pub const MODEL: &str = "model";
    pub const DEVICE: &str = "device";
    pub const STATUS: &str = "status";
    /// A device's incarnations, oldest first; kept when the device is removed, so a device
    /// added again under the same id never has its new records taken for old ones.
    pub const INCARNATIONS: &str = "incarnations";
    pub const DEPLOYMENT: &str = "deployment";
    pub const DEPLOYMENT_REVISION: &str = "deployment-revision";
    pub const MANIFEST: &str = "manifest";
    pub const COUNTER: &str = "counter";
    pub const ROLLOUT: &str = "rollout";
    /// A re-render queued with the change that causes it, until it is done.
    pub const RENDER_JOB: &str = "render-job";
    /// An API token by its name: role, who created it and when, its SHA-256.
    pub const TOKEN: &str = "token";
    /// An API token by the SHA-256 (hex) of the token: its name and role, read on each request.
    pub const TOKEN_HASH: &str = "token-hash";
    /// When a token was last used, by its name (kept apart so the token's record, and its
    /// audit digests, change only when an administrator changes it).
    pub const TOKEN_USE: &str = "token-use";
    /// A new MQTT password on its way to a device, until the device confirmed it.
    pub const MQTT_ROTATION: &str = "mqtt-rotation";
}

/// The fleet's database, on one of its backends.
#[derive(Debug, Clone)]
pub struct FleetStore {
    backend: Backend,
    /// Tasks of this process take turns for the write lock before they ask the database.
    writes: Arc<tokio::sync::Mutex<()>>,
}

/// Held while a change is made and rendered: changes (and their renders) never interleave,
/// in this process or, on PostgreSQL, in any replica (an advisory lock).
#[derive(Debug)]
pub struct WriteLock {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _shared: Option<postgres::AdvisoryLock>,
}

/// A queued re-render this replica has claimed: no other replica takes it while it is held;
/// if this replica dies first, the claim ends and another one does.
#[derive(Debug)]
pub struct RenderJob {
    pub name: String,
    /// The devices to render, as the change queued them (JSON).
    pub devices: Vec<u8>,
    claim: Option<postgres::Claim>,
}

#[derive(Debug, Clone)]
enum Backend {
    Embedded(EmbeddedStore),
    Postgres(PostgresStore),
}

/// Writes staged in one transaction: deletes first, then puts (the last put of a key wins).
#[derive(Debug, Default)]
pub struct Batch {
    puts: Vec<(Key, Vec<u8>)>,
    deletes: Vec<Key>,
}

/// A record's kind and name.
type Key = (String, String);

impl Batch {
    pub fn put<T: Serialize>(
        &mut self,
        kind: &str,
        name: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            key: format!("{kind}/{name}"),
            source,
        })?;
        self.puts.push(((kind.to_owned(), name.to_owned()), json));
        Ok(())
    }

    pub fn delete(&mut self, kind: &str, name: &str) {
        self.deletes.push((kind.to_owned(), name.to_owned()));
    }

    /// Queues a re-render of `devices` with this batch; returns the job's name. Jobs are
    /// named by when they were queued, so the oldest is taken first.
    pub fn queue_render<T: Serialize>(&mut self, devices: &T) -> Result<String, StoreError> {
        let name = format!(
            "{:016}-{:016x}",
            edgefleet_transport::now_ms(),
            rand::random::<u64>()
        );
        self.put(kind::RENDER_JOB, &name, devices)?;
        Ok(name)
    }

    /// Whether the batch queues a re-render.
    fn queues_render(&self) -> bool {
        self.puts
            .iter()
            .any(|((kind, _), _)| kind == kind::RENDER_JOB)
    }

    /// The puts with only the last value of each key.
    fn last_puts(&self) -> Vec<(&Key, &[u8])> {
        let mut last: BTreeMap<&Key, &[u8]> = BTreeMap::new();
        for (key, value) in &self.puts {
            last.insert(key, value);
        }
        last.into_iter().collect()
    }
}

/// What devices sent, for [`FleetStore::ingest`].
#[derive(Clone, Copy)]
pub struct Arrivals<'a> {
    /// The devices heard from: each one's status is read, merged and written in the
    /// transaction (locked on PostgreSQL, so replicas take turns per device).
    pub heard: &'a [String],
    /// A device's new status from its stored one (JSON, if any), and the floor below which it
    /// holds nothing any more.
    pub merge_status: &'a MergeStatus<'a>,
    /// Telemetry records: device, seq, envelope JSON. A `(device, seq)` already stored is
    /// ignored.
    pub records: &'a [(String, u64, Vec<u8>)],
}

impl std::fmt::Debug for Arrivals<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrivals")
            .field("heard", &self.heard)
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

/// How a device's stored status (JSON, if any) becomes its new one.
pub type MergeStatus<'a> =
    dyn Fn(&str, Option<&[u8]>) -> Result<MergedStatus, StoreError> + Sync + 'a;

/// A device's status after what it said, for [`Arrivals::merge_status`].
#[derive(Debug, Clone)]
pub struct MergedStatus {
    pub json: Vec<u8>,
    /// The `seq` below which the device holds nothing any more, if it said.
    pub floor: Option<u64>,
}

impl FleetStore {
    /// The embedded store in `data_dir` (created on first use): `fleet.redb`, model files
    /// under `models/` and the fleet's keys in 0600 files.
    pub fn open_embedded(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Embedded(EmbeddedStore::open(data_dir)?),
            writes: Arc::default(),
        })
    }

    /// The store in the PostgreSQL database at `url`, its schema migrated to this version.
    pub async fn connect_postgres(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Postgres(PostgresStore::connect(url).await?),
            writes: Arc::default(),
        })
    }

    /// Which backend this is, for logs: `embedded` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Embedded(_) => "embedded",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let bytes = match &self.backend {
            Backend::Embedded(s) => s.get(kind, name)?,
            Backend::Postgres(s) => s.get(kind, name).await?,
        };
        bytes.map(|b| decode(kind, name, &b)).transpose()
    }

    /// The stored bytes of a record, as they are digested in the audit log.
    pub async fn get_raw(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.get(kind, name),
            Backend::Postgres(s) => s.get(kind, name).await,
        }
    }

    /// The records of `kind` named in `names` that exist, by name (one query).
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        kind: &str,
        names: &[&str],
    ) -> Result<BTreeMap<String, T>, StoreError> {
        let raw = match &self.backend {
            Backend::Embedded(s) => s.get_many(kind, names)?,
            Backend::Postgres(s) => s.get_many(kind, names).await?,
        };
        raw.into_iter()
            .map(|(name, bytes)| Ok((name.clone(), decode(kind, &name, &bytes)?)))
            .collect()
    }

    /// Every record of `kind`, by name.
    pub async fn list<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let raw = match &self.backend {
            Backend::Embedded(s) => s.list(kind)?,
            Backend::Postgres(s) => s.list(kind).await?,
        };
        raw.into_iter()
            .map(|(name, bytes)| Ok((name.clone(), decode(kind, &name, &bytes)?)))
            .collect()
    }

    /// Commits `batch` in one transaction. Within an API request's [`audit::AuditScope`], a
    /// batch that writes the request's record also writes its audit entry, in the same
    /// transaction.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let scope = audit::scope_of(&batch);
        let audited = scope.as_deref();
        match &self.backend {
            Backend::Embedded(s) => s.commit(&batch, audited)?,
            Backend::Postgres(s) => s.commit(&batch, audited).await?,
        }
        if let Some(scope) = audited {
            scope.mark_recorded();
        }
        Ok(())
    }

    /// Appends `entry` to the audit log on its own (a request that committed no change).
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let json = audit::encode(entry)?;
        match &self.backend {
            Backend::Embedded(s) => s.append_audit(entry.at_ms, &json),
            Backend::Postgres(s) => s.append_audit(entry, &json).await,
        }
    }

    /// The audit log from `since_ms` on, of the token named `token` if given, newest first,
    /// at most `limit` entries.
    pub async fn audit_entries(
        &self,
        since_ms: UnixMillis,
        token: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.audit_entries(since_ms, token, limit),
            Backend::Postgres(s) => s.audit_entries(since_ms, token, limit).await,
        }
    }

    pub async fn put<T: Serialize>(
        &self,
        kind: &str,
        name: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.put(kind, name, value)?;
        self.commit(batch).await
    }

    /// The next value of a named counter (1, 2, ...), durably.
    pub async fn next(&self, counter: &str) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.next(counter),
            Backend::Postgres(s) => s.next(counter).await,
        }
    }

    /// Stores what devices sent in one transaction: their statuses (merged with the stored
    /// ones), their telemetry records (accepted at `now_ms`) and the floors below which a device
    /// holds nothing any more. Returns, for every device of the batch, the highest `seq` up to which the fleet
    /// has every record (or knows the device dropped it): its acknowledgement.
    pub async fn ingest(
        &self,
        arrivals: Arrivals<'_>,
        retention: &TelemetryRetention,
        now_ms: UnixMillis,
    ) -> Result<Ingested, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.ingest(arrivals, retention, now_ms),
            Backend::Postgres(s) => s.ingest(arrivals, retention, now_ms).await,
        }
    }

    /// The highest `seq` of `device` the fleet has acknowledged.
    pub async fn committed(&self, device: &str) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.committed(device),
            Backend::Postgres(s) => s.committed(device).await,
        }
    }

    /// Telemetry records of `device` with `seq > after`, oldest first, that `filter` keeps, at
    /// most `limit`.
    pub async fn telemetry_after(
        &self,
        device: &str,
        after: u64,
        limit: usize,
        mut filter: impl FnMut(&TelemetryEnvelope) -> bool + Send,
    ) -> Result<Vec<TelemetryEnvelope>, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.telemetry_after(device, after, limit, &mut filter),
            Backend::Postgres(s) => s.telemetry_after(device, after, limit, &mut filter).await,
        }
    }

    /// The newest `limit` telemetry records of `device`, oldest first.
    pub async fn telemetry(
        &self,
        device: &str,
        limit: usize,
    ) -> Result<Vec<TelemetryEnvelope>, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.telemetry(device, limit),
            Backend::Postgres(s) => s.telemetry(device, limit).await,
        }
    }
}

impl FleetStore {
    /// Waits for the write lock (see [`WriteLock`]).
    pub async fn lock_writes(&self) -> Result<WriteLock, StoreError> {
        let local = self.writes.clone().lock_owned().await;
        let shared = match &self.backend {
            Backend::Embedded(_) => None,
            Backend::Postgres(s) => Some(s.advisory_lock(postgres::WRITES_LOCK).await?),
        };
        Ok(WriteLock {
            _local: local,
            _shared: shared,
        })
    }

    /// Claims the render job `name`, or with `None` the oldest one nobody holds. `None` when
    /// there is no such job (done, or held by another replica).
    pub async fn claim_render_job(
        &self,
        name: Option<&str>,
    ) -> Result<Option<RenderJob>, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => {
                Ok(s.oldest_render_job(name)?.map(|(name, devices)| RenderJob {
                    name,
                    devices,
                    claim: None,
                }))
            }
            Backend::Postgres(s) => {
                Ok(s.claim_render_job(name)
                    .await?
                    .map(|(name, devices, claim)| RenderJob {
                        name,
                        devices,
                        claim: Some(claim),
                    }))
            }
        }
    }

    /// The job is done: it leaves the queue.
    pub async fn finish_render_job(&self, job: RenderJob) -> Result<(), StoreError> {
        match job.claim {
            Some(claim) => claim.finish(&job.name).await,
            None => {
                let mut batch = Batch::default();
                batch.delete(kind::RENDER_JOB, &job.name);
                self.commit(batch).await
            }
        }
    }

    /// Returns when another replica may have queued a render job (PostgreSQL's
    /// LISTEN/NOTIFY), or after `poll` at the latest: notifications do not pass every
    /// connection pooler, so the queue is polled too.
    pub async fn render_jobs_queued(&self, listener: &mut Option<RenderWakeups>, poll: Duration) {
        match (&self.backend, listener) {
            (Backend::Postgres(s), listener) => s.wait_for_notify(listener, poll).await,
            (Backend::Embedded(_), _) => tokio::time::sleep(poll).await,
        }
    }

    /// The fleet secret `name` (a key, the admin token); on first use `make` creates it. Every
    /// replica sharing a database gets the same value.
    pub async fn secret(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.secret(name, make),
            Backend::Postgres(s) => s.secret(name, make()).await,
        }
    }

    /// Keeps the ONNX file of model `name` `version`.
    pub async fn put_model_file(
        &self,
        name: &str,
        version: u32,
        onnx: &[u8],
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.put_model_file(name, version, onnx),
            Backend::Postgres(s) => s.put_model_file(name, version, onnx).await,
        }
    }

    /// The ONNX file of model `name` `version`, if kept.
    pub async fn model_file(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.model_file(name, version),
            Backend::Postgres(s) => s.model_file(name, version).await,
        }
    }

    pub async fn delete_model_file(&self, name: &str, version: u32) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(s) => s.delete_model_file(name, version),
            Backend::Postgres(s) => s.delete_model_file(name, version).await,
        }
    }
}

/// What one ingestion stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Each device's highest contiguous stored `seq`.
    pub committed: BTreeMap<String, u64>,
    /// Records that were not stored before.
    pub new_records: u64,
}

/// How long and how much telemetry the fleet keeps per device; the oldest records go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelemetryRetention {
    pub max_age_ms: u64,
    pub max_bytes_per_device: u64,
}

impl Default for TelemetryRetention {
    /// A week, and 64 MiB per device: a week of a fleet of 100 devices sending 10 records/s
    /// in all (0.1/s each, about 60,000 records of under 1 KiB per device).
    fn default() -> Self {
        Self {
            max_age_ms: 7 * 24 * 3600 * 1000,
            max_bytes_per_device: 64 << 20,
        }
    }
}

/// The bytes a stored telemetry record counts against its device's retention: its envelope
/// and the 8 bytes of when it was accepted.
fn stored_size(envelope: &[u8]) -> u64 {
    8 + envelope.len() as u64
}

fn decode_telemetry(device: &str, seq: u64, json: &[u8]) -> Result<TelemetryEnvelope, StoreError> {
    serde_json::from_slice(json).map_err(|source| StoreError::Decode {
        key: format!("telemetry {device} #{seq}"),
        source,
    })
}

#[cfg(test)]
mod tests;

fn decode<T: DeserializeOwned>(kind: &str, name: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: format!("{kind}/{name}"),
        source,
    })
}
