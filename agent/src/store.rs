//! The agent's one database file (redb): desired and applied manifests, the outcome of the last
//! manifest, activated modules, the blob cache index and the telemetry outbox.
//!
//! Writes that the agent acknowledges are committed with redb's default durability (fsync
//! before `commit` returns), with two exceptions. Outbox records are usually put without fsync:
//! they are durable in the outbox journal already, and opening the store puts back those a
//! crash undid (`telemetry::outbox::journal`). Outbox removals after the fleet's acknowledgement
//! (`TelemetryAck`) commit without fsync, because losing one only means sending a record twice,
//! which the fleet drops by `seq`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgefleet_common::UnixMillis;
use edgefleet_common::reported::{DesiredOutcome, OutboxState};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::telemetry::outbox::journal::Journal;
pub use crate::telemetry::outbox::record::OutboxRecord;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");
const BLOBS: TableDefinition<&str, u64> = TableDefinition::new("blobs");
/// seq -> 8-byte big-endian acceptance time (ms) followed by the framed payload (the module's
/// name, length first, then the envelope's JSON).
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

const DESIRED: &str = "desired";
const APPLIED: &str = "applied";
const OUTCOME: &str = "outcome";
const NEXT_SEQ: &str = "next_seq";
const OUTBOX_BYTES: &str = "outbox_bytes";
const DROPPED: &str = "dropped";
const UNUSED_IMAGES: &str = "unused_images";
const MQTT_PASSWORD: &str = "mqtt_password";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("agent store: cannot open {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("agent store: {0}")]
    Database(#[source] redb::Error),
    #[error("agent store: the outbox journal {path} cannot be read or written: {source}")]
    Journal {
        path: String,
        source: std::io::Error,
    },
    #[error("agent store: {what} cannot be written: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        Self::Database(e.into())
    }
}

fn encode(what: &'static str, value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { what, source })
}

/// A module the agent has activated, as it is remembered across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// The image reference from the manifest.
    pub image: String,
    /// The image manifest digest.
    pub digest: String,
    /// Blob digests the module needs from the cache.
    pub blobs: Vec<String>,
}

/// What one [`Store::put_outbox`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_seq: u64,
    pub count: u64,
    /// Oldest records dropped to stay under the byte cap.
    pub dropped: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    /// The outbox journal, beside the database file.
    outbox_journal: PathBuf,
}

fn u64_of(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // A small page cache: the store holds manifests, a cache index and the outbox, which is
        // written and read sequentially.
        let db = Database::builder()
            .set_cache_size(4 * 1024 * 1024)
            .create(path)
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(META)?;
            txn.open_table(MODULES)?;
            txn.open_table(BLOBS)?;
            txn.open_table(OUTBOX)?;
        }
        txn.commit()?;
        let store = Self {
            db: Arc::new(db),
            outbox_journal: path.with_file_name("outbox.journal"),
        };
        // Records the journal holds beyond the database's (their commit was undone by a crash)
        // are put back, before anything reads the outbox.
        let next_seq = store.next_outbox_seq()?;
        let journaled = Journal::recover(&store.outbox_journal, next_seq).map_err(|source| {
            StoreError::Journal {
                path: store.outbox_journal.display().to_string(),
                source,
            }
        })?;
        if !journaled.is_empty() {
            store.put_outbox(&journaled, u64::MAX, true)?;
            tracing::info!(
                records = journaled.len(),
                "telemetry records written to the outbox journal before a crash are back in the outbox"
            );
        }
        Ok(store)
    }

    /// Where the outbox journal is.
    pub fn outbox_journal_path(&self) -> &Path {
        &self.outbox_journal
    }

    /// Opens the store at `path`, waiting up to `patience` while another process holds it
    /// (a short-lived `edgefleet-agent status` reading a stopped agent's store, say).
    pub fn open_waiting(path: &Path, patience: std::time::Duration) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Self::open(path) {
                Err(StoreError::Open {
                    source: redb::DatabaseError::DatabaseAlreadyOpen,
                    ..
                }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    pub(crate) fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    pub(crate) fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    /// The last verified manifest received (wire bytes).
    pub fn desired(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_meta(DESIRED)
    }

    pub fn put_desired(&self, wire: &[u8]) -> Result<(), StoreError> {
        self.put_meta(DESIRED, wire)
    }

    /// The newest MQTT password the fleet sent (see `broker_login`), as readable as the
    /// configuration file's.
    pub fn mqtt_password(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_meta(MQTT_PASSWORD)?
            .and_then(|b| String::from_utf8(b).ok()))
    }

    pub fn put_mqtt_password(&self, password: &str) -> Result<(), StoreError> {
        self.put_meta(MQTT_PASSWORD, password.as_bytes())
    }

    /// The manifest whose modules are running (wire bytes).
    pub fn applied(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_meta(APPLIED)
    }

    /// Records the manifest that applied completely.
    pub fn put_applied(&self, wire: &[u8]) -> Result<(), StoreError> {
        self.put_meta(APPLIED, wire)
    }

    /// Records the version a model module serves now, to serve it again after a restart.
    pub fn put_module(&self, name: &str, record: &ModuleRecord) -> Result<(), StoreError> {
        let json = encode("a module record", record)?;
        let txn = self.db.begin_write()?;
        txn.open_table(MODULES)?.insert(name, json.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Forgets a module that no longer runs.
    pub fn remove_module(&self, name: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(MODULES)?.remove(name)?;
        txn.commit()?;
        Ok(())
    }

    pub fn outcome(&self) -> Result<Option<DesiredOutcome>, StoreError> {
        Ok(self
            .get_meta(OUTCOME)?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    pub fn put_outcome(&self, outcome: &DesiredOutcome) -> Result<(), StoreError> {
        let json = encode("the manifest outcome", outcome)?;
        self.put_meta(OUTCOME, &json)
    }

    /// Container images no manifest uses any more, with when they stopped being used (ms).
    pub fn unused_images(&self) -> Result<BTreeMap<String, UnixMillis>, StoreError> {
        Ok(self
            .get_meta(UNUSED_IMAGES)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    /// Changes the unused images in one transaction (container tasks do this concurrently).
    pub fn update_unused_images(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, UnixMillis>),
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(META)?;
            let mut images: BTreeMap<String, UnixMillis> = table
                .get(UNUSED_IMAGES)?
                .and_then(|v| serde_json::from_slice(v.value()).ok())
                .unwrap_or_default();
            change(&mut images);
            let json = encode("the unused images", &images)?;
            table.insert(UNUSED_IMAGES, json.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn modules(&self) -> Result<BTreeMap<String, ModuleRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MODULES)?;
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (name, json) = entry?;
            if let Ok(record) = serde_json::from_slice(json.value()) {
                out.insert(name.value().to_owned(), record);
            }
        }
        Ok(out)
    }

    /// The blob cache index: digest -> size.
    pub fn blobs(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOBS)?;
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (digest, size) = entry?;
            out.insert(digest.value().to_owned(), size.value());
        }
        Ok(out)
    }

    pub fn add_blob(&self, digest: &str, size: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(BLOBS)?.insert(digest, size)?;
        txn.commit()?;
        Ok(())
    }

    pub fn remove_blobs(&self, digests: &[String]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(BLOBS)?;
            for d in digests {
                table.remove(d.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
    /// The `seq` the next outbox record gets.
    pub fn next_outbox_seq(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.get_meta(NEXT_SEQ)?.as_deref()).max(1))
    }

    /// Puts records (consecutive `seq`s from [`Store::next_outbox_seq`]) in the outbox; those
    /// below it are there already and skipped. When the outbox is over `max_bytes`, its oldest
    /// records are dropped and counted. `durable`: returns once the commit is on disk; else
    /// (the records are durable in the outbox journal) a crash can undo the commit, and the
    /// journal puts them back at the next start.
    pub fn put_outbox(
        &self,
        records: &[OutboxRecord],
        max_bytes: u64,
        durable: bool,
    ) -> Result<Appended, StoreError> {
        let mut txn = self.db.begin_write()?;
        if !durable {
            txn.set_durability(Durability::None)?;
        }
        let appended = {
            let mut meta = txn.open_table(META)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            let first_seq = u64_of(meta.get(NEXT_SEQ)?.as_ref().map(|v| v.value())).max(1);
            let mut bytes = u64_of(meta.get(OUTBOX_BYTES)?.as_ref().map(|v| v.value()));
            let mut seq = first_seq;
            let mut value = Vec::new();
            for record in records.iter().filter(|r| r.seq >= first_seq) {
                value.clear();
                value.extend_from_slice(&record.accepted_ms.to_be_bytes());
                value.extend_from_slice(&record.payload);
                outbox.insert(record.seq, value.as_slice())?;
                bytes += value.len() as u64;
                seq = record.seq + 1;
            }
            let mut dropped = 0;
            while bytes > max_bytes {
                let Some((_, v)) = outbox.pop_first()? else {
                    break;
                };
                bytes = bytes.saturating_sub(v.value().len() as u64);
                dropped += 1;
            }
            meta.insert(NEXT_SEQ, seq.to_be_bytes().as_slice())?;
            meta.insert(OUTBOX_BYTES, bytes.to_be_bytes().as_slice())?;
            if dropped > 0 {
                let total = u64_of(meta.get(DROPPED)?.as_ref().map(|v| v.value())) + dropped;
                meta.insert(DROPPED, total.to_be_bytes().as_slice())?;
            }
            Appended {
                first_seq,
                count: seq - first_seq,
                dropped,
            }
        };
        txn.commit()?;
        Ok(appended)
    }

    /// Up to `limit` records with `seq > after`, oldest first.
    pub fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in table.range(after.saturating_add(1)..)?.take(limit) {
            let (seq, value) = entry?;
            let value = value.value();
            if value.len() < 8 {
                continue;
            }
            let (time, payload) = value.split_at(8);
            out.push(OutboxRecord {
                seq: seq.value(),
                accepted_ms: u64_of(Some(time)),
                payload: payload.to_vec(),
            });
        }
        Ok(out)
    }

    /// Removes the records the fleet has stored: every `seq <= committed` (without fsync: see
    /// the module documentation). Returns how many were removed.
    pub fn remove_outbox_through(&self, committed: u64) -> Result<u64, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let removed = {
            let mut meta = txn.open_table(META)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut bytes = u64_of(meta.get(OUTBOX_BYTES)?.as_ref().map(|v| v.value()));
            let mut removed = 0;
            while outbox
                .first()?
                .is_some_and(|(seq, _)| seq.value() <= committed)
            {
                if let Some((_, v)) = outbox.pop_first()? {
                    bytes = bytes.saturating_sub(v.value().len() as u64);
                    removed += 1;
                }
            }
            if removed > 0 {
                meta.insert(OUTBOX_BYTES, bytes.to_be_bytes().as_slice())?;
            }
            removed
        };
        txn.commit()?;
        Ok(removed)
    }

    /// Drops records accepted before `cutoff_ms`; returns how many.
    pub fn expire_outbox(&self, cutoff_ms: UnixMillis) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let expired = {
            let mut meta = txn.open_table(META)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut bytes = u64_of(meta.get(OUTBOX_BYTES)?.as_ref().map(|v| v.value()));
            let mut expired = 0;
            loop {
                let old = match outbox.first()? {
                    Some((_, v)) => u64_of(v.value().get(..8)) < cutoff_ms,
                    None => false,
                };
                if !old {
                    break;
                }
                if let Some((_, v)) = outbox.pop_first()? {
                    bytes = bytes.saturating_sub(v.value().len() as u64);
                    expired += 1;
                }
            }
            if expired > 0 {
                meta.insert(OUTBOX_BYTES, bytes.to_be_bytes().as_slice())?;
                let total = u64_of(meta.get(DROPPED)?.as_ref().map(|v| v.value())) + expired;
                meta.insert(DROPPED, total.to_be_bytes().as_slice())?;
            }
            expired
        };
        txn.commit()?;
        Ok(expired)
    }

    pub fn outbox_state(&self) -> Result<OutboxState, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let outbox = txn.open_table(OUTBOX)?;
        Ok(OutboxState {
            depth: outbox.len()?,
            bytes: u64_of(meta.get(OUTBOX_BYTES)?.as_ref().map(|v| v.value())),
            dropped: u64_of(meta.get(DROPPED)?.as_ref().map(|v| v.value())),
            next_seq: u64_of(meta.get(NEXT_SEQ)?.as_ref().map(|v| v.value())).max(1),
            oldest_seq: outbox.first()?.map(|(seq, _)| seq.value()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records from `first_seq`, accepted at `accepted_ms`, each payload `seq:body`.
    fn records(first_seq: u64, accepted_ms: u64, bodies: &[&str]) -> Vec<OutboxRecord> {
        (first_seq..)
            .zip(bodies)
            .map(|(seq, body)| OutboxRecord {
                seq,
                accepted_ms,
                payload: format!("{seq}:{body}").into_bytes(),
            })
            .collect()
    }

    #[test]
    fn seq_continues_across_reopen_and_acknowledged_records_leave() {
        let dir = tempfile_dir();
        let path = dir.join("a.redb");
        {
            let store = Store::open(&path).expect("open");
            let a = store
                .put_outbox(&records(1, 1, &["a", "b"]), u64::MAX, true)
                .expect("append");
            assert_eq!((a.first_seq, a.count), (1, 2));
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.next_outbox_seq().expect("next"), 3);
        let b = store
            .put_outbox(&records(3, 2, &["c"]), u64::MAX, true)
            .expect("append");
        assert_eq!(b.first_seq, 3);
        let all = store.outbox_after(0, 10).expect("read");
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[2].payload, b"3:c");
        assert_eq!(store.remove_outbox_through(2).expect("remove"), 2);
        assert_eq!(store.remove_outbox_through(2).expect("again"), 0);
        assert_eq!(store.outbox_after(0, 10).expect("read").len(), 1);
        let state = store.outbox_state().expect("state");
        assert_eq!(state.depth, 1);
        assert_eq!(state.bytes, 8 + 3);
        assert_eq!((state.oldest_seq, state.next_seq), (Some(3), 4));
    }

    #[test]
    fn the_byte_cap_drops_oldest_first_and_counts_them() {
        let dir = tempfile_dir();
        let store = Store::open(&dir.join("b.redb")).expect("open");
        // Each record is 8 + 3 bytes; a cap of 25 keeps two.
        store
            .put_outbox(&records(1, 1, &["a", "b", "c"]), 25, true)
            .expect("append");
        let left: Vec<u64> = store
            .outbox_after(0, 10)
            .expect("read")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(left, vec![2, 3]);
        assert_eq!(store.outbox_state().expect("state").dropped, 1);
    }

    #[test]
    fn records_older_than_the_ttl_expire() {
        let dir = tempfile_dir();
        let store = Store::open(&dir.join("c.redb")).expect("open");
        store
            .put_outbox(&records(1, 100, &["old"]), u64::MAX, true)
            .expect("append");
        store
            .put_outbox(&records(2, 200, &["new"]), u64::MAX, true)
            .expect("append");
        assert_eq!(store.expire_outbox(150).expect("expire"), 1);
        assert_eq!(store.outbox_after(0, 10).expect("read")[0].seq, 2);
        assert_eq!(store.outbox_state().expect("state").dropped, 1);
    }

    #[test]
    fn records_only_in_the_journal_are_put_back_when_the_store_opens() {
        let dir = tempfile_dir();
        let path = dir.join("d.redb");
        {
            let store = Store::open(&path).expect("open");
            store
                .put_outbox(&records(1, 1, &["a", "b"]), u64::MAX, true)
                .expect("append");
            // As the outbox writer does: journaled, then into the store without waiting for
            // the disk; a crash undoes that commit (here it never happens).
            let mut journal = Journal::open(store.outbox_journal_path()).expect("journal");
            journal.append(&records(1, 1, &["a", "b"])).expect("stale");
            journal.append(&records(3, 2, &["c", "d"])).expect("write");
            journal.append(&records(5, 3, &["e"])).expect("write");
        }
        let store = Store::open(&path).expect("reopen");
        let all = store.outbox_after(0, 10).expect("read");
        assert_eq!(
            all,
            records(1, 1, &["a", "b"])
                .into_iter()
                .chain(records(3, 2, &["c", "d"]))
                .chain(records(5, 3, &["e"]))
                .collect::<Vec<_>>(),
            "each journaled record once, with its seq and time"
        );
        assert_eq!(store.next_outbox_seq().expect("next"), 6);
        drop(store);
        // Opening again puts nothing twice.
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.outbox_after(0, 10).expect("read").len(), 5);
        assert_eq!(store.outbox_state().expect("state").bytes, 5 * (8 + 3));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "edgefleet-store-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
