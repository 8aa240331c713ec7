//! The fleet's readers of bytes that come from outside the process, reachable from one place
//! so the fuzz targets (`fuzz/`, crate `edgefleet-fuzz`) feed them exactly what the fleet
//! reads. The IoT Edge importer ([`crate::iotedge_import::import`]) and target conditions
//! ([`crate::condition::Condition`]) are public already; an outbox export (`edgefleet
//! telemetry import FILE`) is read here. None of them may panic, whatever the bytes.

use edgefleet_common::outbox_export::ExportHeader;

use crate::domain::telemetry::parse_export;
use crate::error::FleetError;

/// An outbox export as `edgefleet telemetry import` reads it for fleet `fleet`: its header
/// and each record's device and `seq`, or the error the operator would read.
pub fn read_outbox_export(
    export: &[u8],
    fleet: &str,
) -> Result<(ExportHeader, Vec<(String, u64)>), FleetError> {
    let parsed = parse_export(export, fleet)?;
    let records = parsed
        .records
        .into_iter()
        .map(|(device, seq, _)| (device, seq))
        .collect();
    Ok((parsed.header, records))
}
