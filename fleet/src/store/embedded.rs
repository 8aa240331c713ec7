//! The embedded backend, in the service's data directory: one redb file (`fleet.redb`), the
//! model files (`models/<name>/<version>.onnx`) and the fleet's secrets (0600 files). Records
//! are keyed `"<kind>/<name>"`; telemetry by `(device, seq)`, with the time it was accepted in
//! front of the envelope.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgefleet_common::UnixMillis;
use edgefleet_common::telemetry::TelemetryEnvelope;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use edgefleet_common::fleet_api::AuditEntry;

use super::audit::{self, AuditScope};
use super::delivery::{self, Stored};
use super::{
    Arrivals, Batch, Ingested, StoreError, TelemetryRetention, decode_telemetry, kind, stored_size,
};

/// "<kind>/<name>" -> JSON.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// (device, seq) -> when the fleet accepted it (8 bytes, big-endian ms) + envelope JSON.
const TELEMETRY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("device_telemetry");
/// device -> bytes of its stored telemetry.
const TELEMETRY_BYTES: TableDefinition<&str, u64> = TableDefinition::new("telemetry_bytes");
/// device -> the highest seq up to which the fleet has every record (its acknowledgement).
const COMMITTED: TableDefinition<&str, u64> = TableDefinition::new("telemetry_committed");

/// (when, a random number against collisions) -> audit entry JSON.
const AUDIT: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("audit_log");

/// Stored seqs read at a time when a device's acknowledgement walks up through its telemetry.
const PAGE: usize = 1000;

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(e: $error) -> Self {
                Self::Embedded(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Debug, Clone)]
pub(super) struct EmbeddedStore {
    db: Arc<Database>,
    dir: PathBuf,
}

fn file_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::File { what, path, source }
}

fn record_key(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

impl EmbeddedStore {
    pub(super) fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(file_error("cannot create the data directory", dir))?;
        let path = dir.join("fleet.redb");
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(TELEMETRY)?;
        txn.open_table(TELEMETRY_BYTES)?;
        txn.open_table(COMMITTED)?;
        txn.open_table(AUDIT)?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            dir: dir.to_owned(),
        })
    }

    /// Reads the 0600 file `name`, or creates it with `make` on first use.
    pub(super) fn secret(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(text.trim().to_owned());
        }
        let value = make();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(file_error("cannot create key file", &path))?;
        std::io::Write::write_all(&mut file, format!("{value}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(file_error("cannot write key file", &path))?;
        Ok(value)
    }

    fn model_path(&self, name: &str, version: u32) -> PathBuf {
        self.dir
            .join("models")
            .join(name)
            .join(format!("{version}.onnx"))
    }

    pub(super) fn put_model_file(
        &self,
        name: &str,
        version: u32,
        onnx: &[u8],
    ) -> Result<(), StoreError> {
        let path = self.model_path(name, version);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(file_error("cannot create", dir))?;
        }
        std::fs::write(&path, onnx).map_err(file_error("cannot write the model file", &path))
    }

    pub(super) fn model_file(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.model_path(name, version);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(file_error("cannot read the model file", &path)(e)),
        }
    }

    pub(super) fn delete_model_file(&self, name: &str, version: u32) -> Result<(), StoreError> {
        let path = self.model_path(name, version);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(file_error("cannot remove the model file", &path)(e))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn get(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        Ok(table
            .get(record_key(kind, name).as_str())?
            .map(|v| v.value().to_vec()))
    }

    pub(super) fn get_many(
        &self,
        kind: &str,
        names: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        for name in names {
            if let Some(value) = table.get(record_key(kind, name).as_str())? {
                out.push(((*name).to_owned(), value.value().to_vec()));
            }
        }
        Ok(out)
    }

    pub(super) fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let start = format!("{kind}/");
        let end = format!("{kind}0"); // '0' sorts right after '/'
        let mut out = Vec::new();
        for entry in table.range(start.as_str()..end.as_str())? {
            let (key, value) = entry?;
            out.push((
                key.value()[start.len()..].to_owned(),
                value.value().to_vec(),
            ));
        }
        Ok(out)
    }

    /// Commits `batch`; with `audited`, its audit entry too (the record's bytes before are
    /// read in the same write transaction).
    pub(super) fn commit(
        &self,
        batch: &Batch,
        audited: Option<&AuditScope>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RECORDS)?;
            if let Some(scope) = audited {
                let mut before = BTreeMap::new();
                for key in scope.keys_in(batch) {
                    let was = table
                        .get(record_key(&key.0, &key.1).as_str())?
                        .map(|v| v.value().to_vec());
                    before.insert(key, was);
                }
                let entry = scope.change_entry(&before, batch, edgefleet_transport::now_ms());
                txn.open_table(AUDIT)?.insert(
                    (entry.at_ms, rand::random::<u64>()),
                    audit::encode(&entry)?.as_slice(),
                )?;
            }
            for (kind, name) in &batch.deletes {
                table.remove(record_key(kind, name).as_str())?;
            }
            for ((kind, name), value) in batch.last_puts() {
                table.insert(record_key(kind, name).as_str(), value)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub(super) fn append_audit(&self, at_ms: UnixMillis, json: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(AUDIT)?
            .insert((at_ms, rand::random::<u64>()), json)?;
        txn.commit()?;
        Ok(())
    }

    pub(super) fn audit_entries(
        &self,
        since_ms: UnixMillis,
        token: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in table.range((since_ms, 0)..)?.rev() {
            if out.len() >= limit {
                break;
            }
            let entry = audit::decode(entry?.1.value())?;
            if token.is_none_or(|t| t == entry.token) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    pub(super) fn next(&self, counter: &str) -> Result<u64, StoreError> {
        let key = record_key(kind::COUNTER, counter);
        let txn = self.db.begin_write()?;
        let next = {
            let mut table = txn.open_table(RECORDS)?;
            let current: u64 = match table.get(key.as_str())? {
                Some(v) => {
                    serde_json::from_slice(v.value()).map_err(|source| StoreError::Decode {
                        key: key.clone(),
                        source,
                    })?
                }
                None => 0,
            };
            let next = current + 1;
            table.insert(key.as_str(), next.to_string().as_bytes())?;
            next
        };
        txn.commit()?;
        Ok(next)
    }

    pub(super) fn ingest(
        &self,
        arrivals: Arrivals<'_>,
        retention: &TelemetryRetention,
        now_ms: UnixMillis,
    ) -> Result<Ingested, StoreError> {
        let txn = self.db.begin_write()?;
        let ingested = {
            let mut table = txn.open_table(RECORDS)?;
            let mut floors = Vec::new();
            for device in arrivals.heard {
                let key = record_key(kind::STATUS, device);
                let stored = table.get(key.as_str())?.map(|v| v.value().to_vec());
                let merged = (arrivals.merge_status)(device, stored.as_deref())?;
                table.insert(key.as_str(), merged.json.as_slice())?;
                floors.extend(merged.floor.map(|f| (device.as_str(), f)));
            }
            let mut telemetry = txn.open_table(TELEMETRY)?;
            let mut bytes = txn.open_table(TELEMETRY_BYTES)?;
            let mut committed = txn.open_table(COMMITTED)?;
            let keys: Vec<(&str, u64)> = arrivals
                .records
                .iter()
                .map(|(device, seq, _)| (device.as_str(), *seq))
                .collect();
            let mut stored = BTreeMap::new();
            for device in delivery::devices(&keys, &floors) {
                let through = committed.get(device)?.map_or(0, |v| v.value());
                stored.insert(device, read_above(&telemetry, device, through)?);
            }
            for &(device, seq) in &keys {
                if telemetry.get((device, seq))?.is_some() {
                    stored.entry(device).or_default().seqs.insert(seq);
                }
            }
            let mut delivery = delivery::deliver(&keys, &floors, &stored);
            let mut added: BTreeMap<&str, u64> = BTreeMap::new();
            let mut value = Vec::new();
            // A repeat is not counted again, but redb's insert replaces: this store has always
            // written a repeat's envelope and accepted time over the stored ones (the last of
            // the message wins), where PostgreSQL keeps the first.
            for &i in delivery.insert.iter().chain(&delivery.duplicates) {
                let (device, seq, json) = &arrivals.records[i];
                value.clear();
                value.extend_from_slice(&now_ms.to_be_bytes());
                value.extend_from_slice(json);
                telemetry.insert((device.as_str(), *seq), value.as_slice())?;
            }
            for &i in &delivery.insert {
                let (device, _, json) = &arrivals.records[i];
                *added.entry(device.as_str()).or_default() += stored_size(json);
            }
            for (device, size) in added {
                let total = bytes.get(device)?.map_or(0, |v| v.value());
                bytes.insert(device, total + size)?;
            }
            while !delivery.read_on.is_empty() {
                let mut pages = BTreeMap::new();
                for (&device, &through) in &delivery.read_on {
                    pages.insert(device, read_above(&telemetry, device, through)?);
                }
                delivery.walk_on(&pages);
            }
            for (&device, &through) in &delivery.committed {
                committed.insert(device, through)?;
                trim(&mut telemetry, &mut bytes, device, retention, now_ms)?;
            }
            Ingested {
                committed: delivery
                    .committed
                    .into_iter()
                    .map(|(device, through)| (device.to_owned(), through))
                    .collect(),
                new_records: delivery.insert.len() as u64,
            }
        };
        txn.commit()?;
        Ok(ingested)
    }

    /// The render job `name` (or the oldest with `None`), if queued.
    pub(super) fn oldest_render_job(
        &self,
        name: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        Ok(match name {
            Some(name) => self
                .get(kind::RENDER_JOB, name)?
                .map(|devices| (name.to_owned(), devices)),
            None => self.list(kind::RENDER_JOB)?.into_iter().next(),
        })
    }

    pub(super) fn committed(&self, device: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COMMITTED)?;
        Ok(table.get(device)?.map_or(0, |v| v.value()))
    }

    pub(super) fn telemetry_after(
        &self,
        device: &str,
        after: u64,
        limit: usize,
        filter: &mut dyn FnMut(&TelemetryEnvelope) -> bool,
    ) -> Result<Vec<TelemetryEnvelope>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TELEMETRY)?;
        let mut out = Vec::new();
        for entry in table.range((device, after.saturating_add(1))..=(device, u64::MAX))? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let envelope = decode(device, key.value().1, value.value())?;
            if filter(&envelope) {
                out.push(envelope);
            }
        }
        Ok(out)
    }

    pub(super) fn telemetry(
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
            out.push(decode(device, key.value().1, value.value())?);
        }
        out.reverse();
        Ok(out)
    }
}

/// What `telemetry` holds of `device` above `committed`: a page of its seqs.
fn read_above(
    telemetry: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    device: &str,
    committed: u64,
) -> Result<Stored, StoreError> {
    let mut seqs = Vec::new();
    for entry in telemetry
        .range((device, committed.saturating_add(1))..=(device, u64::MAX))?
        .take(PAGE)
    {
        seqs.push(entry?.0.value().1);
    }
    Ok(Stored::above(committed, seqs, PAGE))
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

fn decode(device: &str, seq: u64, value: &[u8]) -> Result<TelemetryEnvelope, StoreError> {
    decode_telemetry(device, seq, value.get(8..).unwrap_or_default())
}
