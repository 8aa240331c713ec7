use serde_json::json;

use super::placeholders::next_placeholder;
use super::*;
use edgefleet_common::fleet_api::{ContainerModule, ModelModule};
use edgefleet_common::manifest::{DesiredStatus, ImagePullPolicy, RestartPolicy};

fn samples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/iotedge-samples")
}

fn sample(name: &str) -> String {
    let path = samples_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn settings(target: Option<&str>, vars: &[(&str, &str)]) -> ImportSettings {
    ImportSettings {
        target: target.map(str::to_owned),
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..ImportSettings::default()
    }
}

fn container<'a>(imported: &'a Imported, module: &str) -> &'a ContainerModule {
    match imported.deployment.modules.get(module) {
        Some(DeploymentModule::Container(c)) => c,
        other => panic!("module {module}: {other:?}"),
    }
}

fn said(notes: &[Note], at: &str) -> String {
    notes
        .iter()
        .filter(|n| n.at == at)
        .map(|n| n.message.clone())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn failure(result: Result<Imported, ImportFailure>) -> ImportFailure {
    match result {
        Ok(imported) => panic!("imported: {:?}", imported.deployment),
        Err(failure) => failure,
    }
}

#[test]
fn every_sample_file_imports_or_lists_what_it_cannot_map() {
    let mut files = Vec::new();
    for dir in [samples_dir(), samples_dir().join("schemastore")] {
        for entry in std::fs::read_dir(&dir).expect("samples") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 10, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        match import(&text, "sample", &settings(Some("tags.x = 'y'"), &[])) {
            Ok(imported) => assert!(!imported.deployment.modules.is_empty()),
            Err(failure) => assert!(!failure.problems.is_empty(), "{}", path.display()),
        }
    }
}

#[test]
fn a_base_manifest_with_its_placeholders_set_imports_module_by_module() {
    let text = sample("01-iotedge-nested-toplayer-mqtt.json");
    let without = failure(import(&text, "toplayer", &ImportSettings::default()));
    let problems: Vec<String> = without.problems.iter().map(Note::to_string).collect();
    assert!(
        problems.iter().any(|p| p.starts_with("target: ")),
        "{problems:?}"
    );
    for placeholder in [
        "CR.Username",
        "CR.Password",
        "Container_Registry",
        "Build.BuildNumber",
    ] {
        assert!(
            problems.iter().any(
                |p| p.starts_with(&format!("placeholder {placeholder}: not set"))
                    && p.contains(&format!("--set '{placeholder}=VALUE'"))
            ),
            "{placeholder}: {problems:?}"
        );
    }

    let imported = import(
        &text,
        "toplayer",
        &settings(
            Some("tags.layer = 'top'"),
            &[
                ("CR.Username", "edge"),
                ("CR.Password", "edge-pass"),
                ("Container_Registry", "127.0.0.1:5000"),
                ("Build.BuildNumber", "1.5.0"),
                ("Architecture", "amd64"),
                ("proxyAddress", ""),
            ],
        ),
    )
    .expect("imports");
    let deployment = &imported.deployment;
    assert_eq!(deployment.name, "toplayer");
    assert_eq!(deployment.target, "tags.layer = 'top'");
    assert!(!deployment.layered);
    assert_eq!(
        deployment.modules.keys().collect::<Vec<_>>(),
        ["IoTEdgeAPIProxy", "dockerContainerRegistry"],
        "edgeAgent and edgeHub are not deployed"
    );
    let proxy = container(&imported, "IoTEdgeAPIProxy");
    assert_eq!(
        proxy.image,
        "127.0.0.1:5000/microsoft/azureiotedge-api-proxy:1.5.0-linux-amd64"
    );
    assert_eq!(proxy.startup_order, Some(3));
    assert_eq!(proxy.restart_policy, RestartPolicy::Always);
    assert_eq!(
        proxy.create_options.as_ref().expect("options")["HostConfig"]["PortBindings"]["443/tcp"],
        json!([{"HostPort": "443"}])
    );
    let registry = container(&imported, "dockerContainerRegistry");
    assert_eq!(registry.env["REGISTRY_PROXY_USERNAME"], "edge");
    assert_eq!(
        registry.env["REGISTRY_PROXY_REMOTEURL"],
        "https://127.0.0.1:5000:443"
    );
    assert_eq!(
        imported.registries,
        [RegistryUse {
            credential: "buildcr".into(),
            address: "127.0.0.1:5000".into()
        }]
    );
    let notes = &imported.notes;
    assert!(said(notes, "$edgeAgent.systemModules").contains("not deployed"));
    assert!(said(notes, "route ToUpstream").contains("$upstream: not supported"));
    assert!(said(notes, "$edgeHub.storeAndForwardConfiguration").contains("not mapped"));
    assert!(said(notes, "registryCredentials.buildcr").contains("not imported"));
}

#[test]
fn a_layered_configuration_keeps_its_name_target_priority_and_modules() {
    let imported = import(
        &sample("08-layered-deployment-engine-layered4.json"),
        "08-layered",
        &settings(
            None,
            &[
                ("Your local account name", "plant"),
                ("Your local account key", "a2V5"),
                ("Default_MSSQL_SA_Password", "Sa-pass-1"),
            ],
        ),
    )
    .expect("imports");
    let deployment = &imported.deployment;
    assert_eq!(deployment.name, "layered4");
    assert_eq!(
        deployment.target,
        "tags.env='device100' or tags.env='device200'"
    );
    assert_eq!(deployment.priority, 4);
    assert!(deployment.layered);
    assert_eq!(deployment.modules.len(), 3);
    let blob = container(&imported, "AzureBlobStorageonIoTEdge");
    assert_eq!(blob.env["LOCAL_STORAGE_ACCOUNT_NAME"], "plant");
    let sql = container(&imported, "AzureSQLEdge");
    assert_eq!(
        sql.create_options.as_ref().expect("options")["HostConfig"]["CapAdd"],
        json!(["SYS_PTRACE"])
    );
    let notes = &imported.notes;
    assert!(said(notes, "module twin SimulatedTemperatureSensor").contains("not supported"));
    assert!(said(notes, "module AzureSQLEdge, settings.image").contains("no tag"));
    assert!(said(notes, "route SimulatedTemperatureSensorToIoTHub").contains("not supported"));
    assert!(notes.iter().any(|n| n.at.contains("etag")));

    let priority = ImportSettings {
        priority: Some(9),
        name: Some("sql-layer".into()),
        ..settings(
            None,
            &[
                ("Your local account name", "plant"),
                ("Your local account key", "a2V5"),
                ("Default_MSSQL_SA_Password", "Sa-pass-1"),
            ],
        )
    };
    let again = import(
        &sample("08-layered-deployment-engine-layered4.json"),
        "x",
        &priority,
    )
    .expect("imports");
    assert_eq!(
        (again.deployment.name.as_str(), again.deployment.priority),
        ("sql-layer", 9)
    );
}

#[test]
fn faults_in_real_files_are_refused_naming_the_module_and_the_field() {
    let hubdev = failure(import(
        &sample("10-hubdev-chunked-createoptions.json"),
        "hubdev",
        &settings(Some("tags.x = 'y'"), &[]),
    ));
    let problems: Vec<String> = hubdev.problems.iter().map(Note::to_string).collect();
    assert!(
        problems.contains(
            &"module SampleModule, restartPolicy: \"unknown\" is not one of: never, on-failure, on-unhealthy, always"
                .to_owned()
        ),
        "{problems:?}"
    );
    // The seven chunks are joined and read as one JSON document; what it sets that the agent
    // owns is refused by name.
    assert!(
        problems.contains(
            &"module tempSensor: createOptions.Image cannot be set: the module's image decides it"
                .to_owned()
        ),
        "{problems:?}"
    );
    assert!(said(&hubdev.notes, "moduleContent").contains("legacy"));

    let jetson = failure(import(
        &sample("04-onnxruntime-jetson.template.json"),
        "jetson",
        &settings(Some("tags.x = 'y'"), &[]),
    ));
    let problems: Vec<String> = jetson.problems.iter().map(Note::to_string).collect();
    assert!(
        problems.iter().any(|p| p.starts_with(
            "module inferencemodule: createOptions.HostConfig.Devices[4].PathnContainer is not an option"
        )),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("placeholder MODULES.InferenceModule: not set")),
        "{problems:?}"
    );
    assert!(
        said(&jetson.notes, "route InferenceModuleToPostModule")
            .contains("this file has no module PostProcessingModule (names are case-sensitive)")
    );

    let connectivity = failure(import(
        &sample("03-iotedge-connectivity.template.json"),
        "connectivity",
        &settings(Some("tags.x = 'y'"), &[]),
    ));
    let problems: Vec<String> = connectivity.problems.iter().map(Note::to_string).collect();
    assert!(
        problems.contains(
            &"module networkController: createOptions is malformed: HostConfig.Privileged: invalid type: string \"true\", expected a boolean"
                .to_owned()
        ),
        "{problems:?}"
    );
    assert!(
        !problems.iter().any(|p| p.contains("placeholder edgeAgent")),
        "$edgeAgent names IoT Edge's agent, it is no placeholder: {problems:?}"
    );
    let used_by_many = problems
        .iter()
        .find(|p| p.starts_with("placeholder TrackingId"))
        .expect("TrackingId");
    assert!(used_by_many.contains("14 more"), "{used_by_many}");
}

/// A manifest with what the public samples lack.
fn own_manifest() -> Value {
    json!({
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
                    "systemModules": {},
                    "modules": {
                        "reader": {
                            "type": "docker",
                            "status": "stopped",
                            "restartPolicy": "on-failure",
                            "imagePullPolicy": "never",
                            "startupOrder": 1,
                            "env": {
                                "RATE": {"value": 2.5},
                                "VERBOSE": {"value": true},
                                "SITE": {"value": "${SITE}"}
                            },
                            "settings": {
                                "image": "opcua-reader:local",
                                "createOptions": "{\"HostConfig\":{\"Binds\":",
                                "createOptions01": "[\"/data:/data\"]}}"
                            }
                        },
                        "classifier": {
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {"image": "{{REGISTRY}}/classifier:3"}
                        }
                    }
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.2",
                    "routes": {
                        "toClassifier": {
                            "route": "FROM /messages/modules/reader/outputs/* INTO BrokeredEndpoint(\"/modules/classifier/inputs/readings\")",
                            "priority": 1,
                            "timeToLiveSecs": 60
                        }
                    }
                }
            }
        }
    })
}

#[test]
fn values_the_samples_lack_map_field_by_field() {
    let mut given = settings(
        Some("tags.line = 'a'"),
        &[
            ("SITE", "plant-1"),
            ("REGISTRY", "127.0.0.1:5000"),
            ("UNUSED", "x"),
        ],
    );
    let imported = import(&own_manifest().to_string(), "line-a", &given).expect("imports");
    let reader = container(&imported, "reader");
    assert_eq!(reader.status, DesiredStatus::Stopped);
    assert_eq!(reader.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(reader.image_pull_policy, ImagePullPolicy::Never);
    assert_eq!(reader.startup_order, Some(1));
    assert_eq!(reader.env["RATE"], "2.5");
    assert_eq!(reader.env["VERBOSE"], "true");
    assert_eq!(reader.env["SITE"], "plant-1");
    assert_eq!(
        reader.create_options,
        Some(json!({"HostConfig": {"Binds": ["/data:/data"]}}))
    );
    assert_eq!(
        container(&imported, "classifier").image,
        "127.0.0.1:5000/classifier:3"
    );
    let route = said(&imported.notes, "route toClassifier");
    assert!(
        route.contains("not supported") && route.contains("(priority, timeToLiveSecs not mapped)"),
        "{route}"
    );
    assert!(said(&imported.notes, "--set UNUSED").contains("not used"));

    // Served as a registered model instead, the route maps to the model's MQTT input.
    given
        .models
        .insert("classifier".into(), "classifier:latest".into());
    let imported = import(&own_manifest().to_string(), "line-a", &given).expect("imports");
    assert_eq!(
        imported.deployment.modules["classifier"],
        DeploymentModule::Model(ModelModule {
            model: Some("classifier:latest".into()),
            ..ModelModule::default()
        })
    );
    assert!(
        said(&imported.notes, "route toClassifier")
            .contains("maps to model module classifier's MQTT input"),
    );
}

#[test]
fn invalid_values_and_unknown_members_are_all_listed() {
    let mut manifest = own_manifest();
    let modules = &mut manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"];
    modules["reader"]["status"] = json!("paused");
    modules["reader"]["imagePullPolicy"] = json!("sometimes");
    modules["reader"]["startupOrder"] = json!(-1);
    modules["reader"]["env"]["RATE"] = json!({"value": {"per": "second"}});
    modules["classifier"]["healthcheck"] = json!({});
    modules["classifier"]["type"] = json!("podman");
    let failed = failure(import(
        &manifest.to_string(),
        "line-a",
        &settings(
            Some("tags.line = 'a'"),
            &[("SITE", "x"), ("REGISTRY", "r.local")],
        ),
    ));
    let problems: Vec<String> = failed.problems.iter().map(Note::to_string).collect();
    for expected in [
        "module reader, status: \"paused\" is not one of: running, stopped",
        "module reader, imagePullPolicy: \"sometimes\" is not one of: on-create, never",
        "module reader, startupOrder: -1 is not one of: an integer from 0 to 4294967295",
        "module reader, env.RATE: value {\"per\":\"second\"} is not a string, number or boolean",
        "module classifier, healthcheck: not a member of an IoT Edge module",
        "module classifier, type: \"podman\" is not supported: only docker",
    ] {
        assert!(
            problems.contains(&expected.to_owned()),
            "{expected}: {problems:?}"
        );
    }

    let layer = json!({"modulesContent": {"$edgeAgent": {
        "properties.desired.modules.reader.env.RATE": {"value": 3}
    }}});
    let failed = failure(import(
        &layer.to_string(),
        "l",
        &settings(Some("tags.x = 'y'"), &[]),
    ));
    assert!(
        failed
            .problems
            .iter()
            .any(|p| p.message.contains("set the whole module"))
    );
    let failed = failure(import(
        "{\"modulesContent\": [",
        "l",
        &ImportSettings::default(),
    ));
    assert!(failed.problems[0].message.starts_with("not JSON"));
}

#[test]
fn placeholders_of_every_template_syntax_are_found() {
    let names = |text: &str| {
        let mut rest = text;
        let mut found = Vec::new();
        while let Some((_, p, after)) = next_placeholder(rest) {
            found.push((p.text.to_owned(), p.name.to_owned()));
            rest = after;
        }
        found
    };
    assert_eq!(
        names(
            "${MODULES.x}/$REG_USER:<Build.Number>-{{ arch }}-__AML_TAG__ $edgeAgent $upstream a<b"
        ),
        [
            ("${MODULES.x}".to_owned(), "MODULES.x".to_owned()),
            ("$REG_USER".to_owned(), "REG_USER".to_owned()),
            ("<Build.Number>".to_owned(), "Build.Number".to_owned()),
            ("{{ arch }}".to_owned(), "arch".to_owned()),
            ("__AML_TAG__".to_owned(), "__AML_TAG__".to_owned()),
        ]
    );
    assert!(names("plain text, $5 and <> and {{}}").is_empty());
}

/// Found by `scripts/fuzz iotedge_import` (fuzz/regressions/iotedge_import/ keeps the input):
/// the placeholder search sliced the text at every byte, so any value with a character beyond
/// ASCII (`/usr/libО...`, a Cyrillic O) panicked the importer instead of being read.
#[test]
fn values_with_characters_beyond_ascii_are_searched_for_placeholders_without_a_panic() {
    let names = |text: &str| {
        let mut rest = text;
        let mut found = Vec::new();
        while let Some((before, p, after)) = next_placeholder(rest) {
            found.push((before.to_owned(), p.name.to_owned()));
            rest = after;
        }
        found
    };
    assert_eq!(
        names("/usr/lib\u{41e}arch64 Grüße ${NAME}€$VAR"),
        [
            ("/usr/lib\u{41e}arch64 Grüße ".to_owned(), "NAME".to_owned()),
            ("€".to_owned(), "VAR".to_owned()),
        ]
    );
    let file = json!({"modulesContent": {"$edgeAgent": {"properties.desired": {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {},
        "modules": {"sensor": {"type": "docker", "status": "running", "restartPolicy": "always",
            "settings": {"image": "${ACR}/sensor:1", "createOptions": "{}"},
            "env": {"GREETING": {"value": "Grüße aus Köln, ${ACR} 😀"}}}}}}}});
    let result = import(
        &file.to_string(),
        "unicode",
        &settings(Some("tags.a = 'b'"), &[("ACR", "127.0.0.1:5000")]),
    );
    let env = match &result {
        Ok(imported) => container(imported, "sensor").env.clone(),
        Err(failure) => panic!("{:?}", failure.problems),
    };
    assert_eq!(
        env.get("GREETING").map(String::as_str),
        Some("Grüße aus Köln, 127.0.0.1:5000 😀")
    );
}
