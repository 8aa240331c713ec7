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

use super::incarnations::{base, device_seq, stored_seq};
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
    /// The incarnation the device spoke as (the one `reported` comes from).
    pub incarnation: Option<String>,
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
        let mut acks = Vec::with_capacity(ingested.committed.len());
        for (id, committed) in ingested.committed {
            if let Some((index, incarnation)) = self.current_incarnation(&id).await? {
                let committed_seq = device_seq(index, committed);
                acks.push(self.ack_publication(&id, committed_seq, &incarnation, None)?);
            }
        }
        Ok(acks)
    }

    async fn ingest_batch(
        &self,
        heard: BTreeMap<String, Heard>,
        telemetry: &[Arrived],
    ) -> Result<Ingested, FleetError> {
        let now = now_ms();
        let devices: Vec<String> = heard.keys().cloned().collect();
        let mut incarnations = BTreeMap::new();
        for id in &devices {
            incarnations.insert(id.clone(), self.incarnation_ids(id).await?);
        }
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
            let ids = incarnations.get(id).map_or(&[][..], Vec::as_slice);
            Ok(MergedStatus {
                json,
                floor: floor(&status, ids),
            })
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
        // An export of an agent that predates incarnations counts in the current one.
        let incarnation = match parsed.header.incarnation.clone() {
            Some(incarnation) => Some(incarnation),
            None => self.current_incarnation(&id).await?.map(|(_, i)| i),
        };
        let index = match &incarnation {
            Some(incarnation) => self.incarnation_index(&id, incarnation).await?,
            None => 0,
        };
        let records = parsed
            .records
            .into_iter()
            .map(|(device, seq, json)| in_incarnation(index, device, seq, json))
            .collect::<Result<Vec<Arrived>, FleetError>>()?;
        let heard = BTreeMap::from([(
            id.clone(),
            Heard {
                last_seen_ms: parsed.header.exported_at_ms,
                reported: parsed.header.reported,
                incarnation: incarnation.clone(),
            },
        )]);
        // A file without records still brings the device's state.
        let batches: Vec<&[Arrived]> = if records.is_empty() {
            vec![&[]]
        } else {
            records.chunks(IMPORT_BATCH).collect()
        };
        let (mut heard, mut new_records) = (Some(heard), 0);
        for batch in batches {
            let ingested = self
                .ingest_batch(heard.take().unwrap_or_default(), batch)
                .await?;
            new_records += ingested.new_records;
        }
        let committed_seq = device_seq(index, self.store.committed(&id).await?);
        if let Some(incarnation) = &incarnation {
            self.publish(self.ack_publication(&id, committed_seq, incarnation, None)?)
                .await?;
        }
        let receipt = TelemetryReceipt {
            fleet: self.settings.name.clone(),
            device_id: id,
            records: records.len() as u64,
            new_records,
            committed_seq,
            incarnation,
            imported_at_ms: now_ms(),
        };
        Ok(SignedReceipt::sign(receipt, &self.key))
    }

    /// Device `id`'s acknowledgement of incarnation `incarnation`'s records through
    /// `committed_seq`, signed for its `acks` topic. An answer to a sync request (with its
    /// `nonce`) is not retained: the retained one stays the newest plain acknowledgement.
    fn ack_publication(
        &self,
        id: &str,
        committed_seq: u64,
        incarnation: &str,
        nonce: Option<String>,
    ) -> Result<Publication, FleetError> {
        let synced = nonce.is_some();
        let body = serde_json::to_vec(&TelemetryAck {
            committed_seq,
            synced,
            incarnation: incarnation.to_owned(),
            nonce,
        })
        .map_err(|e| FleetError::invalid(format!("the acknowledgement of {id}: {e}")))?;
        let topic = DeviceTopics::new(&self.settings.name, id)?.acks();
        Ok(Publication {
            payload: self.key.sign_message(&topic, &body),
            topic,
            retain: !synced,
        })
    }

    /// The answer to a device's sync request (authenticated, from incarnation `incarnation`
    /// with `nonce`): its manifest (when one is rendered) and its telemetry acknowledgement.
    pub(crate) async fn sync(
        &self,
        id: &str,
        incarnation: &str,
        nonce: String,
    ) -> Result<Vec<Publication>, FleetError> {
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
        let index = self.incarnation_index(id, incarnation).await?;
        let committed_seq = device_seq(index, self.store.committed(id).await?);
        out.push(self.ack_publication(id, committed_seq, incarnation, Some(nonce))?);
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
        status.reported_incarnation = heard.incarnation.clone();
    }
}

/// The stored seq below which device `status` holds nothing any more: the start of its
/// newest incarnation (`ids`, oldest first), or above it the oldest record its reported outbox
/// still holds. Records below it are stored or were dropped by the device (and counted): the
/// fleet acknowledges past them.
fn floor(status: &DeviceStatus, ids: &[String]) -> Option<u64> {
    let current = ids.len().saturating_sub(1) as u64;
    let outbox_floor = status.reported.as_ref().and_then(|r| {
        let reported_index = match &status.reported_incarnation {
            Some(id) => ids.iter().position(|i| i == id)? as u64,
            // A state stored before incarnations were sent: the first incarnation's.
            None => 0,
        };
        let outbox = &r.outbox;
        let held_from = outbox.oldest_seq.unwrap_or(outbox.next_seq);
        (reported_index == current).then(|| base(current) + held_from.saturating_sub(1))
    });
    match outbox_floor {
        Some(floor) => Some(floor),
        None if current > 0 => Some(base(current)),
        None => None,
    }
}

/// Record `seq` of incarnation `index` as stored: its seq in the device's stored sequence,
/// written into its envelope too beyond the first incarnation.
pub(super) fn in_incarnation(
    index: u64,
    device: String,
    seq: u64,
    json: Vec<u8>,
) -> Result<Arrived, FleetError> {
    let stored = stored_seq(index, seq).ok_or_else(|| {
        FleetError::invalid(format!("record seq {seq} of {device} is out of range"))
    })?;
    if stored == seq {
        return Ok((device, seq, json));
    }
    let mut envelope: TelemetryEnvelope = serde_json::from_slice(&json)
        .map_err(|e| FleetError::invalid(format!("a record of {device}: {e}")))?;
    envelope.seq = stored;
    let json = serde_json::to_vec(&envelope)
        .map_err(|e| FleetError::invalid(format!("a record of {device}: {e}")))?;
    Ok((device, stored, json))
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
