//! What devices report: their state (kept per device) and their telemetry (a bounded history
//! per device, deduplicated by `(device, seq)`).

use std::collections::BTreeMap;

use edgefleet_common::telemetry::TelemetryEnvelope;

use super::Fleet;
use crate::error::FleetError;
use crate::records::DeviceStatus;
use crate::store::{Batch, kind};

impl Fleet {
    /// The newest `limit` telemetry records of device `id`, oldest first.
    pub fn telemetry(&self, id: &str, limit: usize) -> Result<Vec<TelemetryEnvelope>, FleetError> {
        self.device_record(id)?;
        Ok(self.store.telemetry(id, limit)?)
    }

    /// What the devices said since the last call, in one transaction each: their status
    /// (reported state, last seen) and their telemetry records (`(device, seq, envelope JSON)`).
    pub(crate) fn ingest(
        &self,
        statuses: BTreeMap<String, DeviceStatus>,
        telemetry: &[(String, u64, Vec<u8>)],
    ) -> Result<(), FleetError> {
        if !statuses.is_empty() {
            let mut batch = Batch::default();
            for (id, status) in &statuses {
                batch.put(kind::STATUS, id, status)?;
            }
            self.store.commit(batch)?;
        }
        if !telemetry.is_empty() {
            self.store.add_telemetry(telemetry)?;
        }
        Ok(())
    }

    /// Device `id`'s stored status, to update with what it sends.
    pub(crate) fn status(&self, id: &str) -> Result<DeviceStatus, FleetError> {
        Ok(self.store.get(kind::STATUS, id)?.unwrap_or_default())
    }
}
