//! The PostgreSQL backend: the same records and telemetry as the embedded store, in the tables
//! of `fleet/migrations` (applied in order on connect, each once). Several replicas of the
//! service share one database.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_common::UnixMillis;
use edgefleet_common::telemetry::TelemetryEnvelope;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row as _, Transaction};

use super::{
    Arrivals, Batch, Ingested, StoreError, TelemetryRetention, decode_telemetry, kind, stored_size,
};

/// Connections each replica keeps to the database at most.
const MAX_CONNECTIONS: u32 = 16;

/// Rows read per query when walking a device's telemetry.
const PAGE: i64 = 1000;

/// The advisory lock replicas take to change the fleet (and render the change) one at a time;
/// advancing staged rollouts, the singleton work, runs under it too.
pub(super) const WRITES_LOCK: i64 = 0x6564_6765_666c_7431; // "edgeflt1"

/// The channel a commit that queues a render job notifies.
const RENDER_CHANNEL: &str = "edgefleet_render";

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

/// A claimed render job: its row stays locked (`FOR UPDATE`) until the transaction ends.
#[derive(Debug)]
pub(super) struct Claim {
    txn: Transaction<'static, Postgres>,
}

impl Claim {
    /// Deletes the job and ends the claim.
    pub(super) async fn finish(mut self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM records WHERE kind = $1 AND name = $2")
            .bind(kind::RENDER_JOB)
            .bind(name)
            .execute(&mut *self.txn)
            .await?;
        self.txn.commit().await?;
        Ok(())
    }
}

/// This replica's subscription to render-job notifications (LISTEN), made on first use.
#[derive(Debug)]
pub struct RenderWakeups(PgListener);

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

    /// Claims job `name` (or the oldest) unless another replica holds it.
    pub(super) async fn claim_render_job(
        &self,
        name: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>, Claim)>, StoreError> {
        let mut txn = self.pool.begin().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT name, value::text FROM records WHERE kind = $1 AND ($2::text IS NULL OR \
             name = $2) ORDER BY name LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(kind::RENDER_JOB)
        .bind(name)
        .fetch_optional(&mut *txn)
        .await?;
        Ok(row.map(|(name, devices)| (name, devices.into_bytes(), Claim { txn })))
    }

    /// Waits for a render-job notification, at most `poll`. A listener that fails is made
    /// again on the next call; meanwhile the wait is a plain poll.
    pub(super) async fn wait_for_notify(
        &self,
        listener: &mut Option<RenderWakeups>,
        poll: Duration,
    ) {
        if listener.is_none() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut l) => match l.listen(RENDER_CHANNEL).await {
                    Ok(()) => *listener = Some(RenderWakeups(l)),
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling the render queue"),
                },
                Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling the render queue"),
            }
        }
        let Some(RenderWakeups(l)) = listener else {
            tokio::time::sleep(poll).await;
            return;
        };
        match tokio::time::timeout(poll, l.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "render-job notifications lost; listening again");
                *listener = None;
            }
        }
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

    pub(super) async fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut txn = self.pool.begin().await?;
        write_batch(&mut txn, batch).await?;
        txn.commit().await?;
        Ok(())
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

    pub(super) async fn ingest(
        &self,
        arrivals: Arrivals<'_>,
        retention: &TelemetryRetention,
        now_ms: UnixMillis,
    ) -> Result<Ingested, StoreError> {
        let mut txn = self.pool.begin().await?;
        // Statuses are read locked, merged and written, devices in one order so that replicas
        // lock them without deadlock.
        let mut heard: Vec<&str> = arrivals.heard.iter().map(String::as_str).collect();
        heard.sort_unstable();
        heard.dedup();
        let mut floors = Vec::new();
        if !heard.is_empty() {
            let stored: BTreeMap<String, String> = sqlx::query_as(
                "SELECT name, value::text FROM records WHERE kind = $1 AND name = ANY($2) \
                 ORDER BY name FOR UPDATE",
            )
            .bind(kind::STATUS)
            .bind(&heard)
            .fetch_all(&mut *txn)
            .await?
            .into_iter()
            .collect();
            let mut statuses = Batch::default();
            for device in &heard {
                let current = stored.get(*device).map(String::as_bytes);
                let merged = (arrivals.merge_status)(device, current)?;
                floors.extend(merged.floor.map(|f| ((*device).to_owned(), f)));
                statuses
                    .puts
                    .push(((kind::STATUS.to_owned(), (*device).to_owned()), merged.json));
            }
            write_batch(&mut txn, &statuses).await?;
        }

        // Every device of the batch, in one order, so that replicas lock them without deadlock.
        let mut devices: Vec<&str> = arrivals
            .records
            .iter()
            .map(|(d, _, _)| d.as_str())
            .chain(floors.iter().map(|(d, _)| d.as_str()))
            .collect();
        devices.sort_unstable();
        devices.dedup();
        if devices.is_empty() {
            txn.commit().await?;
            return Ok(Ingested::default());
        }
        sqlx::query(
            "INSERT INTO telemetry_devices (device) SELECT unnest($1::text[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&devices)
        .execute(&mut *txn)
        .await?;
        let rows = sqlx::query(
            "SELECT device, bytes, committed FROM telemetry_devices \
             WHERE device = ANY($1) ORDER BY device FOR UPDATE",
        )
        .bind(&devices)
        .fetch_all(&mut *txn)
        .await?;
        let mut state: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for row in rows {
            let device: String = row.try_get(0)?;
            let bytes: i64 = row.try_get(1)?;
            let committed: i64 = row.try_get(2)?;
            state.insert(device, (seq_u64(bytes), seq_u64(committed)));
        }

        // A repeat (a device sending again what the fleet stored) is not stored twice.
        let mut new_records = 0;
        if !arrivals.records.is_empty() {
            let n = arrivals.records.len();
            let (mut ds, mut seqs, mut sizes, mut envelopes) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for (device, seq, json) in arrivals.records {
                ds.push(device.as_str());
                seqs.push(seq_i64(*seq));
                sizes.push(seq_i64(stored_size(json)));
                envelopes.push(json.as_slice());
            }
            let added = sqlx::query(
                "INSERT INTO telemetry (device, seq, accepted_ms, size, envelope) \
                 SELECT d, s, $3, z, e FROM unnest($1::text[], $2::bigint[], $4::bigint[], \
                 $5::bytea[]) AS t(d, s, z, e) \
                 ON CONFLICT DO NOTHING RETURNING device, size",
            )
            .bind(&ds)
            .bind(&seqs)
            .bind(seq_i64(now_ms))
            .bind(&sizes)
            .bind(&envelopes)
            .fetch_all(&mut *txn)
            .await?;
            for row in added {
                let device: String = row.try_get(0)?;
                let size: i64 = row.try_get(1)?;
                if let Some((bytes, _)) = state.get_mut(&device) {
                    *bytes += seq_u64(size);
                }
                new_records += 1;
            }
        }
        for (device, floor) in &floors {
            if let Some((_, committed)) = state.get_mut(device) {
                *committed = (*committed).max(*floor);
            }
        }

        let mut acks = BTreeMap::new();
        for (device, (bytes, committed)) in &mut state {
            *committed = contiguous_from(&mut txn, device, *committed).await?;
            *bytes = trim(&mut txn, device, *bytes, retention, now_ms).await?;
            acks.insert(device.clone(), *committed);
        }
        let (names, bytes, committed): (Vec<&str>, Vec<i64>, Vec<i64>) = {
            let mut names = Vec::new();
            let mut bytes = Vec::new();
            let mut committed = Vec::new();
            for (device, (b, c)) in &state {
                names.push(device.as_str());
                bytes.push(seq_i64(*b));
                committed.push(seq_i64(*c));
            }
            (names, bytes, committed)
        };
        sqlx::query(
            "UPDATE telemetry_devices AS d SET bytes = u.b, committed = u.c \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(device, b, c) \
             WHERE d.device = u.device",
        )
        .bind(&names)
        .bind(&bytes)
        .bind(&committed)
        .execute(&mut *txn)
        .await?;
        txn.commit().await?;
        Ok(Ingested {
            committed: acks,
            new_records,
        })
    }

    pub(super) async fn committed(&self, device: &str) -> Result<u64, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT committed FROM telemetry_devices WHERE device = $1")
                .bind(device)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or(0, |(c,)| seq_u64(c)))
    }

    pub(super) async fn telemetry_after(
        &self,
        device: &str,
        after: u64,
        limit: usize,
        filter: &mut (dyn FnMut(&TelemetryEnvelope) -> bool + Send),
    ) -> Result<Vec<TelemetryEnvelope>, StoreError> {
        let mut out = Vec::new();
        let mut after = seq_i64(after);
        while out.len() < limit {
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT seq, envelope FROM telemetry WHERE device = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3",
            )
            .bind(device)
            .bind(after)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await?;
            let last_page = rows.len() < PAGE as usize;
            for (seq, json) in rows {
                after = seq;
                let envelope = decode_telemetry(device, seq_u64(seq), &json)?;
                if out.len() < limit && filter(&envelope) {
                    out.push(envelope);
                }
            }
            if last_page {
                break;
            }
        }
        Ok(out)
    }

    pub(super) async fn telemetry(
        &self,
        device: &str,
        limit: usize,
    ) -> Result<Vec<TelemetryEnvelope>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, envelope FROM telemetry WHERE device = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(device)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .into_iter()
            .map(|(seq, json)| decode_telemetry(device, seq_u64(seq), &json))
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }
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

/// The highest seq `c` of `device` such that every record from `committed + 1` to `c` is
/// stored.
async fn contiguous_from(
    txn: &mut Transaction<'_, Postgres>,
    device: &str,
    mut committed: u64,
) -> Result<u64, StoreError> {
    loop {
        let seqs: Vec<(i64,)> = sqlx::query_as(
            "SELECT seq FROM telemetry WHERE device = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(device)
        .bind(seq_i64(committed))
        .bind(PAGE)
        .fetch_all(&mut **txn)
        .await?;
        let page = seqs.len();
        for (seq,) in seqs {
            if seq_u64(seq) != committed + 1 {
                return Ok(committed);
            }
            committed += 1;
        }
        if page < PAGE as usize {
            return Ok(committed);
        }
    }
}

/// Drops `device`'s records older than the retention, then its oldest while it is over its
/// bytes. Returns the bytes left.
async fn trim(
    txn: &mut Transaction<'_, Postgres>,
    device: &str,
    mut bytes: u64,
    retention: &TelemetryRetention,
    now_ms: UnixMillis,
) -> Result<u64, StoreError> {
    let cutoff = now_ms.saturating_sub(retention.max_age_ms);
    let aged: Vec<(i64,)> = sqlx::query_as(
        "DELETE FROM telemetry WHERE device = $1 AND accepted_ms < $2 RETURNING size",
    )
    .bind(device)
    .bind(seq_i64(cutoff))
    .fetch_all(&mut **txn)
    .await?;
    bytes = bytes.saturating_sub(aged.iter().map(|(s,)| seq_u64(*s)).sum());
    while bytes > retention.max_bytes_per_device {
        let oldest: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT seq, size FROM telemetry WHERE device = $1 ORDER BY seq LIMIT $2",
        )
        .bind(device)
        .bind(PAGE)
        .fetch_all(&mut **txn)
        .await?;
        if oldest.is_empty() {
            return Ok(0);
        }
        let mut through = 0;
        for (seq, size) in oldest {
            if bytes <= retention.max_bytes_per_device {
                break;
            }
            bytes = bytes.saturating_sub(seq_u64(size));
            through = seq;
        }
        sqlx::query("DELETE FROM telemetry WHERE device = $1 AND seq <= $2")
            .bind(device)
            .bind(through)
            .execute(&mut **txn)
            .await?;
    }
    Ok(bytes)
}

/// Rows of (name, JSON text) as the store's (name, bytes).
fn named_bytes(rows: Vec<(String, String)>) -> Vec<(String, Vec<u8>)> {
    rows.into_iter()
        .map(|(name, value)| (name, value.into_bytes()))
        .collect()
}
