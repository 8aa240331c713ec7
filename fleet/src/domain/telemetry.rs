//! What devices report: their state (kept per device) and their telemetry (deduplicated by
//! `(device, seq)`, kept for the configured age and bytes), and the acknowledgements that
//! let devices forget what the fleet has stored.

use std::collections::BTreeMap;

use edgefleet_common::delivery::TelemetryAck;
use edgefleet_common::outbox_export::{
    EXPORT_FORMAT, ExportEnd, ExportHeader, SignedReceipt, TelemetryReceipt,
};
use edgefleet_common::reported::ReportedState;
use edgefleet_common::telemetry::{TelemetryEnvelope, TelemetryKind};
use edgefleet_common::topics::DeviceTopics;
use edgefleet_transport::now_ms;
use sha2::{Digest as _, Sha256};

use super::{Fleet, Publication};
use crate::error::FleetError;
use crate::records::{DeviceStatus, RenderedManifest};
use crate::store::{Arrivals, Ingested, MergedStatus, StoreError, kind};

/// What a telemetry query keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryFilter {
    /// Only records with `seq` after this one (for following a device).
    pub after_seq: u64,
    /// Only records the device produced at or after this time.
    pub since_ms: Option<u64>,
    /// Only records the device produced before this time.
    pub until_ms: Option<u64>,
    pub module: Option<String>,
    pub kind: Option<TelemetryKind>,
}

impl TelemetryFilter {
    fn keeps(&self, r: &TelemetryEnvelope) -> bool {
        self.since_ms.is_none_or(|t| r.timestamp_ms >= t)
            && self.until_ms.is_none_or(|t| r.timestamp_ms < t)
            && self.module.as_ref().is_none_or(|m| *m == r.module)
            && self.kind.is_none_or(|k| k == r.record.kind())
    }
}

/// One telemetry record as it arrived: device, the envelope's `seq`, the envelope's JSON.
pub type Arrived = (String, u64, Vec<u8>);

/// What a device said since the last batch: when it was last heard from, and its newest
/// reported state if it sent one.
#[derive(Debug, Clone, Default)]
pub struct Heard {
    pub last_seen_ms: u64,
    pub reported: Option<edgefleet_common::reported::ReportedState>,
}

impl Fleet {
    /// The newest `limit` telemetry records of device `id`, oldest first.
    pub async fn telemetry(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<TelemetryEnvelope>, FleetError> {
        self.device_record(id).await?;
        Ok(self.store.telemetry(id, limit).await?)
    }

    /// Device `id`'s records that `filter` keeps, oldest first, at most `limit`.
    pub async fn query_telemetry(
        &self,
        id: &str,
        filter: &TelemetryFilter,
        limit: usize,
    ) -> Result<Vec<TelemetryEnvelope>, FleetError> {
        self.device_record(id).await?;
        Ok(self
            .store
            .telemetry_after(id, filter.after_seq, limit, |r| filter.keeps(r))
            .await?)
    }

    /// Stores what devices said since the last call in one transaction: their status
    /// (reported state, last seen) and their telemetry records. Returns each device's
    /// acknowledgement, as publications for its `acks` topic; a device that sent only
    /// records the fleet already had is acknowledged too, so it stops sending them.
    pub(crate) async fn ingest(
        &self,
        heard: BTreeMap<String, Heard>,
        telemetry: &[Arrived],
    ) -> Result<Vec<Publication>, FleetError> {
        let ingested = self.ingest_batch(heard, telemetry).await?;
        ingested
            .committed
            .into_iter()
            .map(|(id, committed_seq)| self.ack_publication(&id, committed_seq, false))
            .collect()
    }

    async fn ingest_batch(
        &self,
        heard: BTreeMap<String, Heard>,
        telemetry: &[Arrived],
    ) -> Result<Ingested, FleetError> {
        let now = now_ms();
        let devices: Vec<String> = heard.keys().cloned().collect();
        let merge_status = |id: &str, stored: Option<&[u8]>| {
            let mut status: DeviceStatus = match stored {
                Some(json) => {
                    serde_json::from_slice(json).map_err(|source| StoreError::Decode {
                        key: format!("{}/{id}", kind::STATUS),
                        source,
                    })?
                }
                None => DeviceStatus::default(),
            };
            if let Some(heard) = heard.get(id) {
                merge(&mut status, heard);
            }
            let json = serde_json::to_vec(&status).map_err(|source| StoreError::Encode {
                key: format!("{}/{id}", kind::STATUS),
                source,
            })?;
            // Records before the oldest one the device still holds are stored or were dropped
            // by the device (and counted): the fleet acknowledges past them.
            let floor = status.reported.as_ref().map(|r| {
                let outbox = &r.outbox;
                outbox
                    .oldest_seq
                    .unwrap_or(outbox.next_seq)
                    .saturating_sub(1)
            });
            Ok(MergedStatus { json, floor })
        };
        let arrivals = Arrivals {
            heard: &devices,
            merge_status: &merge_status,
            records: telemetry,
        };
        Ok(self
            .store
            .ingest(arrivals, &self.settings.retention, now)
            .await?)
    }

    /// Stores an outbox export (see `edgefleet_common::outbox_export`) a device wrote while it
    /// had no link, with the usual deduplication, and returns the signed receipt the device
    /// trims its outbox with. The device is told the new acknowledgement too, should it be
    /// connected.
    pub async fn import_telemetry(&self, export: &[u8]) -> Result<SignedReceipt, FleetError> {
        let parsed = parse_export(export, &self.settings.name)?;
        let id = parsed.header.device_id.clone();
        self.device_record(&id).await?;
        let heard = BTreeMap::from([(
            id.clone(),
            Heard {
                last_seen_ms: parsed.header.exported_at_ms,
                reported: parsed.header.reported,
            },
        )]);
        // A file without records still brings the device's state.
        let batches: Vec<&[Arrived]> = if parsed.records.is_empty() {
            vec![&[]]
        } else {
            parsed.records.chunks(IMPORT_BATCH).collect()
        };
        let (mut heard, mut new_records) = (Some(heard), 0);
        for batch in batches {
            let ingested = self
                .ingest_batch(heard.take().unwrap_or_default(), batch)
                .await?;
            new_records += ingested.new_records;
        }
        let committed_seq = self.store.committed(&id).await?;
        self.publish(self.ack_publication(&id, committed_seq, false)?)
            .await?;
        let receipt = TelemetryReceipt {
            fleet: self.settings.name.clone(),
            device_id: id,
            records: parsed.records.len() as u64,
            new_records,
            committed_seq,
            imported_at_ms: now_ms(),
        };
        Ok(SignedReceipt::sign(receipt, &self.key))
    }

    fn ack_publication(
        &self,
        id: &str,
        committed_seq: u64,
        synced: bool,
    ) -> Result<Publication, FleetError> {
        let payload = serde_json::to_vec(&TelemetryAck {
            committed_seq,
            synced,
        })
        .map_err(|e| FleetError::invalid(format!("the acknowledgement of {id}: {e}")))?;
        Ok(Publication {
            topic: DeviceTopics::new(&self.settings.name, id)?.acks(),
            payload,
            retain: true,
        })
    }

    /// The answer to a device's sync request: its manifest (when one is rendered) and its
    /// telemetry acknowledgement.
    pub(crate) async fn sync(&self, id: &str) -> Result<Vec<Publication>, FleetError> {
        if self
            .store
            .get::<crate::records::Device>(kind::DEVICE, id)
            .await?
            .is_none()
        {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if let Some(manifest) = self
            .store
            .get::<RenderedManifest>(kind::MANIFEST, id)
            .await?
        {
            out.push(self.manifest_publication(&manifest)?);
        }
        out.push(self.ack_publication(id, self.store.committed(id).await?, true)?);
        Ok(out)
    }

    /// Device `id`'s stored status, to update with what it sends.
    pub(crate) async fn status(&self, id: &str) -> Result<DeviceStatus, FleetError> {
        Ok(self.store.get(kind::STATUS, id).await?.unwrap_or_default())
    }
}

/// `status` after what the device said: the later of the last-seen times, and its reported
/// state unless it is older than the one stored (an export carried in late).
fn merge(status: &mut DeviceStatus, heard: &Heard) {
    status.last_seen_ms = status.last_seen_ms.max(Some(heard.last_seen_ms));
    let newer = |r: &&ReportedState| {
        status
            .reported
            .as_ref()
            .is_none_or(|old| old.reported_at_ms <= r.reported_at_ms)
    };
    if let Some(reported) = heard.reported.as_ref().filter(newer) {
        status.reported = Some(reported.clone());
    }
}

/// Records stored per transaction of an import.
const IMPORT_BATCH: usize = 4096;

/// An outbox export, checked.
#[derive(Debug)]
pub(crate) struct ParsedExport {
    pub(crate) header: ExportHeader,
    pub(crate) records: Vec<Arrived>,
}

pub(crate) fn parse_export(export: &[u8], fleet: &str) -> Result<ParsedExport, FleetError> {
    let bad = |what: String| FleetError::invalid(format!("the outbox export {what}"));
    let body = export.strip_suffix(b"\n").unwrap_or(export);
    let end_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct End {
        end: ExportEnd,
    }
    let end: End = serde_json::from_slice(&body[end_start..])
        .map_err(|_| bad("is incomplete: it lacks its end line (export it again)".into()))?;
    let actual = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(&export[..end_start]))
    );
    if actual != end.end.sha256 {
        return Err(bad(format!(
            "is damaged: checksum {actual}, recorded {} (export it again)",
            end.end.sha256
        )));
    }
    let mut lines = export[..end_start]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty());
    let header: ExportHeader = lines
        .next()
        .ok_or_else(|| bad("is empty".into()))
        .and_then(|l| serde_json::from_slice(l).map_err(|e| bad(format!("header: {e}"))))?;
    if header.format != EXPORT_FORMAT {
        return Err(bad(format!(
            "has format {:?}; this fleet reads {EXPORT_FORMAT}",
            header.format
        )));
    }
    if header.fleet != fleet {
        return Err(bad(format!(
            "is from fleet {:?}, this is {fleet:?}",
            header.fleet
        )));
    }
    let mut records = Vec::new();
    for (i, line) in lines.enumerate() {
        let envelope: TelemetryEnvelope =
            serde_json::from_slice(line).map_err(|e| bad(format!("record {}: {e}", i + 1)))?;
        if envelope.device_id != header.device_id {
            return Err(bad(format!(
                "record {} is from device {:?}, the export from {:?}",
                i + 1,
                envelope.device_id,
                header.device_id
            )));
        }
        records.push((envelope.device_id, envelope.seq, line.to_vec()));
    }
    if records.len() as u64 != end.end.records {
        return Err(bad(format!(
            "holds {} records, its end line says {}",
            records.len(),
            end.end.records
        )));
    }
    Ok(ParsedExport { header, records })
}
