//! The PostgreSQL backend: the same records and telemetry as the embedded store, in the tables
//! of `fleet/migrations` (applied in order on connect, each once). Several replicas of the
//! service share one database. This file connects and holds the records, counters, secrets,
//! model files and the advisory lock; [`telemetry`] and [`render_queue`] the rest.

mod render_queue;
mod telemetry;

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use edgefleet_common::UnixMillis;
use edgefleet_common::fleet_api::AuditEntry;

use super::audit::{self, AuditScope};
use super::{Batch, StoreError, kind};
pub(super) use render_queue::Claim;
use render_queue::RENDER_CHANNEL;
pub use render_queue::RenderWakeups;

/// Connections each replica keeps to the database at most.
const MAX_CONNECTIONS: u32 = 16;

/// The advisory lock replicas take to change the fleet (and render the change) one at a time;
/// advancing staged rollouts, the singleton work, runs under it too.
pub(super) const WRITES_LOCK: i64 = 0x6564_6765_666c_7431; // "edgeflt1"

/// A session-level advisory lock, held by one pooled connection. Dropping it unlocks; if the
/// unlock fails the connection is closed, which unlocks too.
#[derive(Debug)]
pub(super) struct AdvisoryLock {
    key: i64,
    connection: Option<PoolConnection<Postgres>>,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        let key = self.key;
        let unlock = async move {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .execute(&mut *connection)
                .await;
            if unlocked.is_err() {
                drop(connection.detach());
            }
        };
        // Without a runtime (the process is ending) the connection closes with it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(unlock);
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct PostgresStore {
    pool: PgPool,
}

/// `url` without its password, for messages.
pub(super) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn seq_u64(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or_default()
}

impl PostgresStore {
    pub(super) async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redacted(url),
                source,
            })?;
        // Replicas starting together take turns: the migrator holds an advisory lock.
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: redacted(url),
                source,
            })?;
        Ok(Self { pool })
    }

    pub(super) async fn advisory_lock(&self, key: i64) -> Result<AdvisoryLock, StoreError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut *connection)
            .await?;
        Ok(AdvisoryLock {
            key,
            connection: Some(connection),
        })
    }

    /// The stored secret `name`, or `value` stored now: the first replica's wins.
    pub(super) async fn secret(&self, name: &str, value: String) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO fleet_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        let (value,): (String,) = sqlx::query_as("SELECT value FROM fleet_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(value)
    }

    pub(super) async fn put_model_file(
        &self,
        name: &str,
        version: u32,
        onnx: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO model_files (name, version, onnx) VALUES ($1, $2, $3) \
             ON CONFLICT (name, version) DO UPDATE SET onnx = excluded.onnx",
        )
        .bind(name)
        .bind(i64::from(version))
        .bind(onnx)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn model_file(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT onnx FROM model_files WHERE name = $1 AND version = $2")
                .bind(name)
                .bind(i64::from(version))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(onnx,)| onnx))
    }

    pub(super) async fn delete_model_file(
        &self,
        name: &str,
        version: u32,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM model_files WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(i64::from(version))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn get(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT value::text FROM records WHERE kind = $1 AND name = $2")
                .bind(kind)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(v,)| v.into_bytes()))
    }

    pub(super) async fn get_many(
        &self,
        kind: &str,
        names: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, value::text FROM records WHERE kind = $1 AND name = ANY($2)",
        )
        .bind(kind)
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        Ok(named_bytes(rows))
    }

    pub(super) async fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, value::text FROM records WHERE kind = $1 ORDER BY name")
                .bind(kind)
                .fetch_all(&self.pool)
                .await?;
        Ok(named_bytes(rows))
    }

    /// Commits `batch`; with `audited`, its audit entry too (the record's bytes before are
    /// read, locked, in the same transaction).
    pub(super) async fn commit(
        &self,
        batch: &Batch,
        audited: Option<&AuditScope>,
    ) -> Result<(), StoreError> {
        let mut txn = self.pool.begin().await?;
        if let Some(scope) = audited {
            let keys = scope.keys_in(batch);
            let (kinds, names): (Vec<&str>, Vec<&str>) =
                keys.iter().map(|(k, n)| (k.as_str(), n.as_str())).unzip();
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT r.kind, r.name, r.value::text FROM records r \
                 JOIN unnest($1::text[], $2::text[]) AS k(kind, name) \
                 ON r.kind = k.kind AND r.name = k.name FOR UPDATE OF r",
            )
            .bind(&kinds)
            .bind(&names)
            .fetch_all(&mut *txn)
            .await?;
            let mut before: std::collections::BTreeMap<_, _> =
                keys.into_iter().map(|key| (key, None)).collect();
            for (kind, name, value) in rows {
                before.insert((kind, name), Some(value.into_bytes()));
            }
            let entry = scope.change_entry(&before, batch, edgefleet_transport::now_ms());
            insert_audit(&mut txn, &entry, &audit::encode(&entry)?).await?;
        }
        write_batch(&mut txn, batch).await?;
        txn.commit().await?;
        Ok(())
    }

    pub(super) async fn append_audit(
        &self,
        entry: &AuditEntry,
        json: &[u8],
    ) -> Result<(), StoreError> {
        let mut txn = self.pool.begin().await?;
        insert_audit(&mut txn, entry, json).await?;
        txn.commit().await?;
        Ok(())
    }

    pub(super) async fn audit_entries(
        &self,
        since_ms: UnixMillis,
        token: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT entry::text FROM audit_log WHERE at_ms >= $1 \
             AND ($2::text IS NULL OR token = $2) ORDER BY at_ms DESC, id DESC LIMIT $3",
        )
        .bind(seq_i64(since_ms))
        .bind(token)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|(json,)| audit::decode(json.as_bytes()))
            .collect()
    }

    pub(super) async fn next(&self, counter: &str) -> Result<u64, StoreError> {
        let (next,): (String,) = sqlx::query_as(
            "INSERT INTO records (kind, name, value) VALUES ($1, $2, '1') \
             ON CONFLICT (kind, name) \
             DO UPDATE SET value = (records.value::text::bigint + 1)::text::json \
             RETURNING value::text",
        )
        .bind(kind::COUNTER)
        .bind(counter)
        .fetch_one(&self.pool)
        .await?;
        serde_json::from_str(&next).map_err(|source| StoreError::Decode {
            key: format!("{}/{counter}", kind::COUNTER),
            source,
        })
    }
}

async fn insert_audit(
    txn: &mut Transaction<'_, Postgres>,
    entry: &AuditEntry,
    json: &[u8],
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_log (at_ms, token, entry) VALUES ($1, $2, $3::json)")
        .bind(seq_i64(entry.at_ms))
        .bind(&entry.token)
        .bind(String::from_utf8_lossy(json))
        .execute(&mut **txn)
        .await?;
    Ok(())
}

/// Deletes, then puts (one row per key), in `txn`.
async fn write_batch(txn: &mut Transaction<'_, Postgres>, batch: &Batch) -> Result<(), StoreError> {
    if !batch.deletes.is_empty() {
        let (kinds, names): (Vec<&str>, Vec<&str>) = batch
            .deletes
            .iter()
            .map(|(k, n)| (k.as_str(), n.as_str()))
            .unzip();
        sqlx::query(
            "DELETE FROM records USING unnest($1::text[], $2::text[]) AS d(kind, name) \
             WHERE records.kind = d.kind AND records.name = d.name",
        )
        .bind(&kinds)
        .bind(&names)
        .execute(&mut **txn)
        .await?;
    }
    let puts = batch.last_puts();
    if !puts.is_empty() {
        let mut kinds = Vec::with_capacity(puts.len());
        let mut names = Vec::with_capacity(puts.len());
        let mut values = Vec::with_capacity(puts.len());
        for ((kind, name), value) in puts {
            kinds.push(kind.as_str());
            names.push(name.as_str());
            values.push(String::from_utf8_lossy(value));
        }
        sqlx::query(
            "INSERT INTO records (kind, name, value) \
             SELECT k, n, v::json FROM unnest($1::text[], $2::text[], $3::text[]) AS t(k, n, v) \
             ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value",
        )
        .bind(&kinds)
        .bind(&names)
        .bind(&values)
        .execute(&mut **txn)
        .await?;
    }
    if batch.queues_render() {
        // Delivered when the transaction commits, to every replica listening.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(RENDER_CHANNEL)
            .execute(&mut **txn)
            .await?;
    }
    Ok(())
}

/// Rows of (name, JSON text) as the store's (name, bytes).
fn named_bytes(rows: Vec<(String, String)>) -> Vec<(String, Vec<u8>)> {
    rows.into_iter()
        .map(|(name, value)| (name, value.into_bytes()))
        .collect()
}
