//! Azure IoT Edge deployment manifests given to `edgefleet deployment import`.

use edgefleet_fleet::condition::Condition;
use edgefleet_fleet::iotedge_import::{
    ImportFailure, ImportSettings, Imported, import as import_deployment,
};

/// The bytes as a deployment file, imported with no options and with a placeholder value and
/// a model mapping set; every outcome is a deployment or a list of problems.
pub fn import(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let plain = ImportSettings::default();
    check(import_deployment(text, "fuzz", &plain));
    let mut settings = ImportSettings::default();
    settings
        .vars
        .insert("ACR_ADDRESS".into(), "registry.local:5000".into());
    settings.vars.insert("MODULE".into(), "sensor".into());
    settings.models.insert("model".into(), "model:1".into());
    check(import_deployment(text, "fuzz", &settings));
}

fn check(result: Result<Imported, ImportFailure>) {
    match result {
        // What the importer hands to the fleet is a deployment the fleet's API reads back.
        Ok(imported) => {
            let json = serde_json::to_vec(&imported.deployment).unwrap_or_default();
            let back: Result<edgefleet_common::fleet_api::DeploymentView, _> =
                serde_json::from_slice(&json);
            assert_eq!(back.ok().as_ref(), Some(&imported.deployment));
            // The fleet saves it only with a target it can evaluate.
            if let Err(e) = imported.deployment.target.parse::<Condition>() {
                panic!(
                    "imported target {:?} does not parse: {e}",
                    imported.deployment.target
                );
            }
        }
        Err(failure) => assert!(
            !failure.problems.is_empty(),
            "an import refused without naming a problem"
        ),
    }
}
