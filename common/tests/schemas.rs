//! The JSON Schemas under docs/schemas/ are generated from the contract types. This test fails
//! when the committed files drift from the code; regenerate them with
//! `UPDATE_SCHEMAS=1 cargo test -p edgefleet-common --test schemas`.

use std::path::PathBuf;

use edgefleet_common::commands::{CommandRequest, CommandResult};
use edgefleet_common::delivery::{SyncRequest, TelemetryAck};
use edgefleet_common::manifest::Manifest;
use edgefleet_common::module_image::ModuleMetadata;
use edgefleet_common::reported::ReportedState;
use edgefleet_common::telemetry::{TelemetryEnvelope, TelemetryMessage};

fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("manifest.schema.json", schemars::schema_for!(Manifest)),
        (
            "command-request.schema.json",
            schemars::schema_for!(CommandRequest),
        ),
        (
            "command-result.schema.json",
            schemars::schema_for!(CommandResult),
        ),
        (
            "telemetry-ack.schema.json",
            schemars::schema_for!(TelemetryAck),
        ),
        (
            "sync-request.schema.json",
            schemars::schema_for!(SyncRequest),
        ),
        ("module.schema.json", schemars::schema_for!(ModuleMetadata)),
        (
            "reported-state.schema.json",
            schemars::schema_for!(ReportedState),
        ),
        (
            "telemetry.schema.json",
            schemars::schema_for!(TelemetryEnvelope),
        ),
        (
            "telemetry-message.schema.json",
            schemars::schema_for!(TelemetryMessage),
        ),
    ]
}

#[test]
fn committed_json_schemas_match_the_contract_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    for (file, schema) in schemas() {
        let generated = serde_json::to_string_pretty(&schema).expect("schema JSON") + "\n";
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).expect("docs/schemas");
            std::fs::write(&path, &generated).expect("write schema");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/schemas/{file} is out of date with the code: run \
             `UPDATE_SCHEMAS=1 cargo test -p edgefleet-common --test schemas` and commit the result"
        );
    }
}
