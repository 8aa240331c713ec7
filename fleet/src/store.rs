//! The fleet service's database (one redb file): records by kind and name as JSON, and a
//! bounded telemetry history per device.

use std::path::Path;
use std::sync::Arc;

use edgefleet_common::telemetry::TelemetryEnvelope;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// "<kind>/<name>" -> JSON.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// (device, seq) -> telemetry envelope JSON.
const TELEMETRY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("telemetry");

/// Telemetry records kept per device.
pub const TELEMETRY_HISTORY: usize = 1000;

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
    pub const MANIFEST: &str = "manifest";
    pub const COUNTER: &str = "counter";
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

    /// Stores telemetry records; a (device, seq) already stored is ignored. Returns how many
    /// were new. Keeps the newest [`TELEMETRY_HISTORY`] per device.
    pub fn add_telemetry(&self, records: &[(String, u64, Vec<u8>)]) -> Result<usize, StoreError> {
        let txn = self.db.begin_write()?;
        let mut added = 0;
        {
            let mut table = txn.open_table(TELEMETRY)?;
            let mut devices = std::collections::BTreeSet::new();
            for (device, seq, json) in records {
                if table.get((device.as_str(), *seq))?.is_none() {
                    table.insert((device.as_str(), *seq), json.as_slice())?;
                    added += 1;
                    devices.insert(device.as_str());
                }
            }
            for device in devices {
                let count = table.range((device, 0)..=(device, u64::MAX))?.count();
                if count > TELEMETRY_HISTORY {
                    let old = table
                        .range((device, 0)..=(device, u64::MAX))?
                        .take(count - TELEMETRY_HISTORY)
                        .map(|e| e.map(|(k, _)| k.value().1))
                        .collect::<Result<Vec<u64>, _>>()?;
                    for seq in old {
                        table.remove((device, seq))?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(added)
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
            let envelope =
                serde_json::from_slice(value.value()).map_err(|source| StoreError::Decode {
                    key: format!("telemetry {device} #{}", key.value().1),
                    source,
                })?;
            out.push(envelope);
        }
        out.reverse();
        Ok(out)
    }
}
