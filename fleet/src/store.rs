//! The fleet service's database (one redb file): records by kind and name as JSON, and each
//! device's telemetry, deduplicated by `(device, seq)`, kept for the configured age and bytes,
//! with the highest `seq` up to which the fleet has every record (its acknowledgement).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use edgefleet_common::UnixMillis;
use edgefleet_common::telemetry::TelemetryEnvelope;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// "<kind>/<name>" -> JSON.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// (device, seq) -> when the fleet accepted it (8 bytes, big-endian ms) + envelope JSON.
const TELEMETRY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("device_telemetry");
/// device -> bytes of its stored telemetry.
const TELEMETRY_BYTES: TableDefinition<&str, u64> = TableDefinition::new("telemetry_bytes");
/// device -> the highest seq up to which the fleet has every record (its acknowledgement).
const COMMITTED: TableDefinition<&str, u64> = TableDefinition::new("telemetry_committed");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("fleet store {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("fleet store: {0}")]
    Database(#[source] redb::Error),
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

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        Self::Database(e.into())
    }
}

/// The kinds of records.
pub mod kind {
    pub const REGISTRY: &str = "registry";
    pub const MODEL: &str = "model";
    pub const DEVICE: &str = "device";
    pub const STATUS: &str = "status";
    pub const DEPLOYMENT: &str = "deployment";
    pub const DEPLOYMENT_REVISION: &str = "deployment-revision";
    pub const MANIFEST: &str = "manifest";
    pub const COUNTER: &str = "counter";
    pub const ROLLOUT: &str = "rollout";
}

#[derive(Debug, Clone)]
pub struct FleetStore {
    db: Arc<Database>,
}

/// Writes staged in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    puts: Vec<(String, Vec<u8>)>,
    deletes: Vec<String>,
}

impl Batch {
    pub fn put<T: Serialize>(
        &mut self,
        kind: &str,
        name: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let key = format!("{kind}/{name}");
        let json = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            key: key.clone(),
            source,
        })?;
        self.puts.push((key, json));
        Ok(())
    }

    pub fn delete(&mut self, kind: &str, name: &str) {
        self.deletes.push(format!("{kind}/{name}"));
    }
}

impl FleetStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(TELEMETRY)?;
        txn.open_table(TELEMETRY_BYTES)?;
        txn.open_table(COMMITTED)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let key = format!("{kind}/{name}");
        let Some(value) = table.get(key.as_str())? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|source| StoreError::Decode { key, source })
    }

    /// Every record of `kind`, by name.
    pub fn list<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<(String, T)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let start = format!("{kind}/");
        let end = format!("{kind}0"); // '0' sorts right after '/'
        let mut out = Vec::new();
        for entry in table.range(start.as_str()..end.as_str())? {
            let (key, value) = entry?;
            let v = serde_json::from_slice(value.value()).map_err(|source| StoreError::Decode {
                key: key.value().to_owned(),
                source,
            })?;
            out.push((key.value()[start.len()..].to_owned(), v));
        }
        Ok(out)
    }

    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RECORDS)?;
            for key in &batch.deletes {
                table.remove(key.as_str())?;
            }
            for (key, value) in &batch.puts {
                table.insert(key.as_str(), value.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn put<T: Serialize>(&self, kind: &str, name: &str, value: &T) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.put(kind, name, value)?;
        self.commit(batch)
    }

    /// The next value of a named counter (1, 2, ...), durably.
    pub fn next(&self, counter: &str) -> Result<u64, StoreError> {
        let current: u64 = self.get(kind::COUNTER, counter)?.unwrap_or(0);
        self.put(kind::COUNTER, counter, &(current + 1))?;
        Ok(current + 1)
    }

    /// Stores what devices sent, in one transaction: their status records (`statuses`, JSON
    /// by device), their telemetry records (`records`: device, seq, envelope JSON, accepted
    /// at `now_ms`; a `(device, seq)` already stored is ignored) and the `floors` below which a device
    /// holds nothing any more. Returns, for every device of the batch, the highest `seq` up to
    /// which the fleet has every record (or knows the device dropped it): its acknowledgement.
    pub fn ingest(
        &self,
        statuses: &[(String, Vec<u8>)],
        records: &[(String, u64, Vec<u8>)],
        floors: &[(String, u64)],
        retention: &TelemetryRetention,
        now_ms: UnixMillis,
    ) -> Result<Ingested, StoreError> {
        let txn = self.db.begin_write()?;
        let mut acks = BTreeMap::new();
        let mut new_records = 0;
        {
            let mut table = txn.open_table(RECORDS)?;
            for (device, json) in statuses {
                table.insert(
                    format!("{}/{device}", kind::STATUS).as_str(),
                    json.as_slice(),
                )?;
            }
            let mut telemetry = txn.open_table(TELEMETRY)?;
            let mut bytes = txn.open_table(TELEMETRY_BYTES)?;
            let mut committed = txn.open_table(COMMITTED)?;
            let mut value = Vec::new();
            let mut added: BTreeMap<&str, u64> = BTreeMap::new();
            for (device, seq, json) in records {
                acks.entry(device.clone()).or_insert(0);
                value.clear();
                value.extend_from_slice(&now_ms.to_be_bytes());
                value.extend_from_slice(json);
                // A repeat (a device sending again what the fleet stored) is not stored twice.
                if telemetry
                    .insert((device.as_str(), *seq), value.as_slice())?
                    .is_none()
                {
                    *added.entry(device.as_str()).or_default() += value.len() as u64;
                    new_records += 1;
                }
            }
            for (device, size) in added {
                let total = bytes.get(device)?.map_or(0, |v| v.value());
                bytes.insert(device, total + size)?;
            }
            for (device, floor) in floors {
                let current = committed.get(device.as_str())?.map_or(0, |v| v.value());
                if *floor > current {
                    committed.insert(device.as_str(), *floor)?;
                }
                acks.entry(device.clone()).or_insert(0);
            }
            for (device, ack) in acks.iter_mut() {
                let mut c = committed.get(device.as_str())?.map_or(0, |v| v.value());
                for entry in
                    telemetry.range((device.as_str(), c + 1)..=(device.as_str(), u64::MAX))?
                {
                    if entry?.0.value().1 != c + 1 {
                        break;
                    }
                    c += 1;
                }
                committed.insert(device.as_str(), c)?;
                *ack = c;
                trim(&mut telemetry, &mut bytes, device, retention, now_ms)?;
            }
        }
        txn.commit()?;
        Ok(Ingested {
            committed: acks,
            new_records,
        })
    }

    /// The highest `seq` of `device` the fleet has acknowledged.
    pub fn committed(&self, device: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COMMITTED)?;
        Ok(table.get(device)?.map_or(0, |v| v.value()))
    }

    /// Telemetry records of `device` with `seq > after`, oldest first, that `filter` keeps, at
    /// most `limit`.
    pub fn telemetry_after(
        &self,
        device: &str,
        after: u64,
        limit: usize,
        mut filter: impl FnMut(&TelemetryEnvelope) -> bool,
    ) -> Result<Vec<TelemetryEnvelope>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TELEMETRY)?;
        let mut out = Vec::new();
        for entry in table.range((device, after.saturating_add(1))..=(device, u64::MAX))? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let envelope = decode_telemetry(device, key.value().1, value.value())?;
            if filter(&envelope) {
                out.push(envelope);
            }
        }
        Ok(out)
    }

    /// The newest `limit` telemetry records of `device`, oldest first.
    pub fn telemetry(
        &self,
        device: &str,
        limit: usize,
    ) -> Result<Vec<TelemetryEnvelope>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TELEMETRY)?;
        let mut out = Vec::new();
        for entry in table
            .range((device, 0)..=(device, u64::MAX))?
            .rev()
            .take(limit)
        {
            let (key, value) = entry?;
            out.push(decode_telemetry(device, key.value().1, value.value())?);
        }
        out.reverse();
        Ok(out)
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

/// Drops `device`'s oldest records while they are older than the retention or over its bytes.
fn trim(
    telemetry: &mut redb::Table<(&str, u64), &[u8]>,
    bytes: &mut redb::Table<&str, u64>,
    device: &str,
    retention: &TelemetryRetention,
    now_ms: UnixMillis,
) -> Result<(), StoreError> {
    let mut total = bytes.get(device)?.map_or(0, |v| v.value());
    let cutoff = now_ms.saturating_sub(retention.max_age_ms);
    loop {
        let oldest = telemetry
            .range((device, 0)..=(device, u64::MAX))?
            .next()
            .transpose()?
            .map(|(k, v)| (k.value().1, v.value().len() as u64, accepted_ms(v.value())));
        let Some((seq, size, accepted)) = oldest else {
            break;
        };
        if total <= retention.max_bytes_per_device && accepted >= cutoff {
            break;
        }
        telemetry.remove((device, seq))?;
        total = total.saturating_sub(size);
    }
    bytes.insert(device, total)?;
    Ok(())
}

fn accepted_ms(value: &[u8]) -> UnixMillis {
    value
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

fn decode_telemetry(device: &str, seq: u64, value: &[u8]) -> Result<TelemetryEnvelope, StoreError> {
    serde_json::from_slice(value.get(8..).unwrap_or_default()).map_err(|source| {
        StoreError::Decode {
            key: format!("telemetry {device} #{seq}"),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(device: &str, seq: u64) -> Vec<u8> {
        format!(
            r#"{{"deviceId":"{device}","module":"m","seq":{seq},"timestampMs":{seq},"kind":"event","body":{{"error":"e"}}}}"#
        )
        .into_bytes()
    }

    fn arrived(device: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<(String, u64, Vec<u8>)> {
        seqs.into_iter()
            .map(|s| (device.to_owned(), s, envelope(device, s)))
            .collect()
    }

    fn stored(store: &FleetStore, device: &str) -> Vec<u64> {
        store
            .telemetry_after(device, 0, usize::MAX, |_| true)
            .expect("read")
            .iter()
            .map(|r| r.seq)
            .collect()
    }

    #[test]
    fn the_acknowledgement_is_the_highest_contiguous_seq_and_moves_past_what_the_device_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let store = FleetStore::open(&dir.path().join("f.redb")).expect("open");
        let keep = TelemetryRetention::default();
        let ingested = store
            .ingest(&[], &arrived("gw", [1, 2, 4]), &[], &keep, 0)
            .expect("ingest");
        assert_eq!(ingested.committed["gw"], 2, "3 is missing");
        assert_eq!(ingested.new_records, 3);
        // A repeat is acknowledged again, stored once.
        let ingested = store
            .ingest(&[], &arrived("gw", [2, 3]), &[], &keep, 0)
            .expect("ingest");
        assert_eq!(ingested.committed["gw"], 4);
        assert_eq!(ingested.new_records, 1);
        assert_eq!(stored(&store, "gw"), vec![1, 2, 3, 4]);
        // The device dropped 5..=9 and now holds 10 on: the fleet acknowledges past the gap.
        store
            .ingest(&[], &arrived("gw", [10, 11]), &[], &keep, 0)
            .expect("ingest");
        assert_eq!(store.committed("gw").expect("committed"), 4);
        let ingested = store
            .ingest(&[], &[], &[("gw".to_owned(), 9)], &keep, 0)
            .expect("ingest");
        assert_eq!(ingested.committed["gw"], 11);
    }

    #[test]
    fn retention_drops_the_oldest_records_by_age_and_by_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let store = FleetStore::open(&dir.path().join("r.redb")).expect("open");
        let record = 8 + envelope("gw", 1).len() as u64;
        let three = TelemetryRetention {
            max_age_ms: 1000,
            max_bytes_per_device: 3 * record + 2,
        };
        store
            .ingest(&[], &arrived("gw", 1..=5), &[], &three, 10_000)
            .expect("ingest");
        assert_eq!(stored(&store, "gw"), vec![3, 4, 5], "bytes");
        store
            .ingest(&[], &arrived("gw", [6]), &[], &three, 11_500)
            .expect("ingest");
        assert_eq!(
            stored(&store, "gw"),
            vec![6],
            "age: the others are 1.5 s old"
        );
        assert_eq!(store.committed("gw").expect("committed"), 6);
    }
}
