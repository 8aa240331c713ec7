//! Telemetry on PostgreSQL: storing what devices sent (statuses and records, with the delivery
//! rule of [`crate::store::delivery`] deciding what is stored and each device's acknowledgement),
//! the retention, and reading records back. Each device's row in `telemetry_devices` is locked
//! while its telemetry is ingested, so replicas ingesting the same device take turns.

use std::collections::BTreeMap;

use edgefleet_common::UnixMillis;
use edgefleet_common::telemetry::TelemetryEnvelope;
use sqlx::{Postgres, Row as _, Transaction};

use super::{PostgresStore, seq_i64, seq_u64, write_batch};
use crate::store::delivery::{self, Stored};
use crate::store::{
    Arrivals, Batch, Ingested, StoreError, TelemetryRetention, decode_telemetry, kind, stored_size,
};

/// Rows read per query when walking a device's telemetry.
const PAGE: i64 = 1000;

impl PostgresStore {
    pub(in crate::store) async fn ingest(
        &self,
        arrivals: Arrivals<'_>,
        retention: &TelemetryRetention,
        now_ms: UnixMillis,
    ) -> Result<Ingested, StoreError> {
        let mut txn = self.pool.begin().await?;
        let floors = merge_statuses(&mut txn, &arrivals).await?;
        // The seqs as the table keeps them (a bigint), so that the rule sees its keys.
        let keys: Vec<(&str, u64)> = arrivals
            .records
            .iter()
            .map(|(device, seq, _)| (device.as_str(), seq_u64(seq_i64(*seq))))
            .collect();
        // Every device of the batch, in one order, so that replicas lock them without deadlock.
        let devices = delivery::devices(&keys, &floors);
        if devices.is_empty() {
            txn.commit().await?;
            return Ok(Ingested::default());
        }
        let mut state = lock_devices(&mut txn, &devices).await?;
        let committed: Vec<(&str, u64)> = devices
            .iter()
            .map(|&device| (device, state.get(device).map_or(0, |&(_, c)| c)))
            .collect();
        let stored = read_stored(&mut txn, &committed, &keys).await?;
        let mut delivery = delivery::deliver(&keys, &floors, &stored);
        insert_records(&mut txn, arrivals.records, &delivery.insert, now_ms).await?;
        for &i in &delivery.insert {
            let (device, _, json) = &arrivals.records[i];
            if let Some((bytes, _)) = state.get_mut(device) {
                *bytes += stored_size(json);
            }
        }
        while !delivery.read_on.is_empty() {
            let through: Vec<(&str, u64)> =
                delivery.read_on.iter().map(|(&d, &c)| (d, c)).collect();
            let pages = read_stored(&mut txn, &through, &[]).await?;
            delivery.walk_on(&pages);
        }
        for (device, (bytes, committed)) in &mut state {
            if let Some(&through) = delivery.committed.get(device.as_str()) {
                *committed = through;
            }
            *bytes = trim(&mut txn, device, *bytes, retention, now_ms).await?;
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
            committed: state.into_iter().map(|(d, (_, c))| (d, c)).collect(),
            new_records: delivery.insert.len() as u64,
        })
    }

    pub(in crate::store) async fn committed(&self, device: &str) -> Result<u64, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT committed FROM telemetry_devices WHERE device = $1")
                .bind(device)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or(0, |(c,)| seq_u64(c)))
    }

    pub(in crate::store) async fn telemetry_after(
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

    pub(in crate::store) async fn telemetry(
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

/// Reads the heard devices' statuses locked, merges and writes them, devices in one order so
/// that replicas lock them without deadlock. Returns the floors the devices said.
async fn merge_statuses<'a>(
    txn: &mut Transaction<'_, Postgres>,
    arrivals: &Arrivals<'a>,
) -> Result<Vec<(&'a str, u64)>, StoreError> {
    let mut heard: Vec<&str> = arrivals.heard.iter().map(String::as_str).collect();
    heard.sort_unstable();
    heard.dedup();
    let mut floors = Vec::new();
    if heard.is_empty() {
        return Ok(floors);
    }
    let stored: BTreeMap<String, String> = sqlx::query_as(
        "SELECT name, value::text FROM records WHERE kind = $1 AND name = ANY($2) \
         ORDER BY name FOR UPDATE",
    )
    .bind(kind::STATUS)
    .bind(&heard)
    .fetch_all(&mut **txn)
    .await?
    .into_iter()
    .collect();
    let mut statuses = Batch::default();
    for device in heard {
        let current = stored.get(device).map(String::as_bytes);
        let merged = (arrivals.merge_status)(device, current)?;
        floors.extend(merged.floor.map(|f| (device, f)));
        statuses
            .puts
            .push(((kind::STATUS.to_owned(), device.to_owned()), merged.json));
    }
    write_batch(txn, &statuses).await?;
    Ok(floors)
}

/// Locks the rows of `devices` (made on first use), in their order. Returns each one's stored
/// bytes and committed seq.
async fn lock_devices(
    txn: &mut Transaction<'_, Postgres>,
    devices: &[&str],
) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
    sqlx::query(
        "INSERT INTO telemetry_devices (device) SELECT unnest($1::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(devices)
    .execute(&mut **txn)
    .await?;
    let rows = sqlx::query(
        "SELECT device, bytes, committed FROM telemetry_devices \
         WHERE device = ANY($1) ORDER BY device FOR UPDATE",
    )
    .bind(devices)
    .fetch_all(&mut **txn)
    .await?;
    let mut state = BTreeMap::new();
    for row in rows {
        let device: String = row.try_get(0)?;
        let bytes: i64 = row.try_get(1)?;
        let committed: i64 = row.try_get(2)?;
        state.insert(device, (seq_u64(bytes), seq_u64(committed)));
    }
    Ok(state)
}

/// What the delivery rule needs of each device, in one query for them all: a page of its seqs
/// stored above the seq given with it, and which of the `arriving` `(device, seq)`s are stored.
async fn read_stored<'a>(
    txn: &mut Transaction<'_, Postgres>,
    above: &[(&'a str, u64)],
    arriving: &[(&str, u64)],
) -> Result<BTreeMap<&'a str, Stored>, StoreError> {
    let (devices, after): (Vec<&str>, Vec<i64>) =
        above.iter().map(|&(d, seq)| (d, seq_i64(seq))).unzip();
    let (arriving_devices, arriving_seqs): (Vec<&str>, Vec<i64>) =
        arriving.iter().map(|&(d, seq)| (d, seq_i64(seq))).unzip();
    let rows: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT w.device, p.seq, true FROM unnest($1::text[], $2::bigint[]) AS w(device, after) \
         CROSS JOIN LATERAL (SELECT seq FROM telemetry WHERE device = w.device \
         AND seq > w.after ORDER BY seq LIMIT $3) AS p \
         UNION ALL \
         SELECT a.device, a.seq, false FROM unnest($4::text[], $5::bigint[]) AS a(device, seq) \
         WHERE EXISTS (SELECT 1 FROM telemetry AS t WHERE t.device = a.device AND t.seq = a.seq)",
    )
    .bind(&devices)
    .bind(&after)
    .bind(PAGE)
    .bind(&arriving_devices)
    .bind(&arriving_seqs)
    .fetch_all(&mut **txn)
    .await?;
    let mut pages: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut matched: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (device, seq, in_page) in &rows {
        let into = if *in_page { &mut pages } else { &mut matched };
        into.entry(device.as_str()).or_default().push(seq_u64(*seq));
    }
    let mut stored = BTreeMap::new();
    for &(device, after) in above {
        let page = pages.remove(device).unwrap_or_default();
        let mut read = Stored::above(after, page, PAGE as usize);
        read.seqs.extend(matched.remove(device).unwrap_or_default());
        stored.insert(device, read);
    }
    Ok(stored)
}

/// Stores the `insert`ed ones of `records`, accepted at `now_ms`, in one statement.
async fn insert_records(
    txn: &mut Transaction<'_, Postgres>,
    records: &[(String, u64, Vec<u8>)],
    insert: &[usize],
    now_ms: UnixMillis,
) -> Result<(), StoreError> {
    if insert.is_empty() {
        return Ok(());
    }
    let n = insert.len();
    let (mut ds, mut seqs, mut sizes, mut envelopes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for &i in insert {
        let (device, seq, json) = &records[i];
        ds.push(device.as_str());
        seqs.push(seq_i64(*seq));
        sizes.push(seq_i64(stored_size(json)));
        envelopes.push(json.as_slice());
    }
    // The rule left out what is stored (read under the devices' row locks, so no other
    // replica stores their records meanwhile); DO NOTHING keeps a repeat from ever failing
    // the batch all the same.
    sqlx::query(
        "INSERT INTO telemetry (device, seq, accepted_ms, size, envelope) \
         SELECT d, s, $3, z, e FROM unnest($1::text[], $2::bigint[], $4::bigint[], \
         $5::bytea[]) AS t(d, s, z, e) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ds)
    .bind(&seqs)
    .bind(seq_i64(now_ms))
    .bind(&sizes)
    .bind(&envelopes)
    .execute(&mut **txn)
    .await?;
    Ok(())
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
