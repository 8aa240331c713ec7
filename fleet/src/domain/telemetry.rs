//! What devices report: their state (kept per device) and their telemetry (deduplicated by
//! `(device, seq)`, kept for the configured age and bytes), and the acknowledgements that
//! let devices forget what the fleet has stored.

use std::collections::BTreeMap;

use edgefleet_common::delivery::TelemetryAck;
use edgefleet_common::telemetry::{TelemetryEnvelope, TelemetryKind};
use edgefleet_common::topics::DeviceTopics;
use edgefleet_transport::now_ms;

use super::{Fleet, Publication};
use crate::error::FleetError;
use crate::records::{DeviceStatus, RenderedManifest};
use crate::store::kind;

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
    pub fn telemetry(&self, id: &str, limit: usize) -> Result<Vec<TelemetryEnvelope>, FleetError> {
        self.device_record(id)?;
        Ok(self.store.telemetry(id, limit)?)
    }

    /// Device `id`'s records that `filter` keeps, oldest first, at most `limit`.
    pub fn query_telemetry(
        &self,
        id: &str,
        filter: &TelemetryFilter,
        limit: usize,
    ) -> Result<Vec<TelemetryEnvelope>, FleetError> {
        self.device_record(id)?;
        Ok(self
            .store
            .telemetry_after(id, filter.after_seq, limit, |r| filter.keeps(r))?)
    }

    /// Stores what devices said since the last call in one transaction: their status
    /// (reported state, last seen) and their telemetry records. Returns each device's
    /// acknowledgement, as publications for its `acks` topic; a device that sent only
    /// records the fleet already had is acknowledged too, so it stops sending them.
    pub(crate) fn ingest(
        &self,
        heard: BTreeMap<String, Heard>,
        telemetry: &[Arrived],
    ) -> Result<Vec<Publication>, FleetError> {
        let now = now_ms();
        let mut encoded = Vec::with_capacity(heard.len());
        let mut floors = Vec::new();
        for (id, heard) in heard {
            // Batches are written one at a time, so this read and the write below agree.
            let mut status = self.status(&id)?;
            status.last_seen_ms = Some(heard.last_seen_ms);
            if heard.reported.is_some() {
                status.reported = heard.reported;
            }
            let (id, status) = (&id, &status);
            let json = serde_json::to_vec(status)
                .map_err(|e| FleetError::invalid(format!("the status of {id}: {e}")))?;
            encoded.push((id.clone(), json));
            // Records before the oldest one the device still holds are stored or were dropped
            // by the device (and counted): the fleet acknowledges past them.
            if let Some(outbox) = status.reported.as_ref().map(|r| &r.outbox) {
                let oldest = outbox.oldest_seq.unwrap_or(outbox.next_seq);
                floors.push((id.clone(), oldest.saturating_sub(1)));
            }
        }
        let acks =
            self.store
                .ingest(&encoded, telemetry, &floors, &self.settings.retention, now)?;
        acks.into_iter()
            .map(|(id, committed_seq)| self.ack_publication(&id, committed_seq, false))
            .collect()
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
    pub(crate) fn sync(&self, id: &str) -> Result<Vec<Publication>, FleetError> {
        if self
            .store
            .get::<crate::records::Device>(kind::DEVICE, id)?
            .is_none()
        {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if let Some(manifest) = self.store.get::<RenderedManifest>(kind::MANIFEST, id)? {
            out.push(self.manifest_publication(&manifest)?);
        }
        out.push(self.ack_publication(id, self.store.committed(id)?, true)?);
        Ok(out)
    }

    /// Device `id`'s stored status, to update with what it sends.
    pub(crate) fn status(&self, id: &str) -> Result<DeviceStatus, FleetError> {
        Ok(self.store.get(kind::STATUS, id)?.unwrap_or_default())
    }
}
