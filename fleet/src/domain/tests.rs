//! The domain layer without sockets: a real store in a temporary directory, real keys and ONNX
//! Runtime, and the publications it hands the MQTT session read from their channel.

use std::collections::BTreeMap;

use edgefleet_common::fleet_api::{
    DeploymentModule, DeploymentRequest, DeviceImport, DeviceRequest, DeviceRollout, ModelVersion,
    Package, RegistryRequest,
};
use edgefleet_common::manifest::{Manifest, Module};
use edgefleet_common::reported::{
    ApplyStatus, DesiredOutcome, OutboxState, REPORTED_SCHEMA_VERSION, ReportedState,
};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::signing::{FleetPublicKey, FleetSigningKey};
use edgefleet_onnx::OnnxRuntime;
use tokio::sync::mpsc;

use super::*;

use crate::store::kind;

struct World {
    fleet: Fleet,
    published: mpsc::Receiver<Publication>,
    public_key: FleetPublicKey,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = FleetSigningKey::generate();
        let public_key = key.public_key();
        let (outgoing, mut sent) = mpsc::channel::<Outgoing>(1024);
        // The broker of these tests acknowledges every publication at once.
        let (publish, published) = mpsc::channel(1024);
        tokio::spawn(async move {
            while let Some(o) = sent.recv().await {
                if let Some(acknowledged) = o.acknowledged {
                    let _ = acknowledged.send(());
                }
                if publish.send(o.publication).await.is_err() {
                    return;
                }
            }
        });
        let settings = FleetSettings {
            name: "plant".into(),
            mqtt_url: "mqtt://127.0.0.1:1883".into(),
            device_mqtt_url: None,
            retention: Default::default(),
            shared_subscriptions: None,
        };
        let store = FleetStore::open_embedded(dir.path()).expect("store");
        let onnx = OnnxRuntime::load(&edgefleet_tests::ort_library()).expect("ONNX Runtime");
        let fleet = Fleet::new(
            settings,
            store,
            key,
            DeviceIdentity::generate(),
            onnx,
            outgoing,
            crate::broker_logins::DeviceLogins::Unmanaged,
        )
        .await
        .expect("fleet");
        Self {
            fleet,
            published,
            public_key,
            _dir: dir,
        }
    }

    /// A registry and version 1 and 2 of model `m`, both packaged (as `model package`
    /// records them after a push).
    async fn with_packaged_models(self) -> Self {
        let registry = RegistryRequest {
            address: "127.0.0.1:5000".into(),
            username: "edge".into(),
            password: "edge-pass".into(),
            insecure: true,
        };
        self.fleet
            .put_registry("acr", registry)
            .await
            .expect("registry");
        for version in [1, 2] {
            let record = ModelVersion {
                name: "m".into(),
                version,
                tags: BTreeMap::new(),
                description: String::new(),
                sha256: String::new(),
                size: 0,
                registered_ms: 0,
                package: Some(Package {
                    registry: "acr".into(),
                    repository: "models/m".into(),
                    image: format!(
                        "127.0.0.1:5000/models/m:{version}@sha256:{}",
                        "a".repeat(64)
                    ),
                    digest: format!("sha256:{}", "a".repeat(64)),
                }),
                sample_input: None,
                profile: None,
            };
            let key = format!("m/{version:010}");
            self.fleet
                .store
                .put(kind::MODEL, &key, &record)
                .await
                .expect("model");
        }
        self
    }

    async fn device(&self, id: &str, site: &str) {
        let request = DeviceRequest {
            tags: BTreeMap::from([("site".to_owned(), site.to_owned())]),
            public_key: DeviceIdentity::generate().public_key().to_string(),
        };
        self.fleet.put_device(id, request).await.expect("device");
    }

    /// Device `id` as the store holds it.
    async fn stored_device(&self, id: &str) -> crate::records::Device {
        self.fleet
            .store
            .get(kind::DEVICE, id)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("{id} is not stored"))
    }

    /// Every manifest published since the last call, verified, by device.
    fn manifests(&mut self) -> BTreeMap<String, Vec<Manifest>> {
        let mut out: BTreeMap<String, Vec<Manifest>> = BTreeMap::new();
        while let Ok(p) = self.published.try_recv() {
            assert!(p.retain, "manifests are retained");
            let manifest = self
                .public_key
                .verify(&p.payload)
                .expect("a signed manifest");
            assert_eq!(
                p.topic,
                format!("edgefleet/plant/devices/{}/desired", manifest.device_id)
            );
            out.entry(manifest.device_id.clone())
                .or_default()
                .push(manifest);
        }
        out
    }
}

fn deployment(target: &str, priority: i32, model: &str, port: u16) -> DeploymentRequest {
    DeploymentRequest {
        target: target.into(),
        priority,
        layered: false,
        modules: BTreeMap::from([(
            "scorer".to_owned(),
            DeploymentModule::registered_model(model, port),
        )]),
        rollout: None,
    }
}

fn served_image(manifest: &Manifest) -> (&str, Option<u16>) {
    match &manifest.modules["scorer"] {
        Module::Model(m) => (m.image.as_str(), m.serving.as_ref().map(|s| s.http_port)),
        Module::Container(c) => panic!("a container: {c:?}"),
    }
}

#[tokio::test]
async fn a_deployment_renders_signed_manifests_for_the_devices_it_targets_and_only_changes_publish()
{
    let mut world = World::new().await.with_packaged_models().await;
    world.device("gw-1", "plant1").await;
    world.device("gw-2", "plant2").await;
    assert!(world.manifests().is_empty(), "no module, no manifest");

    let saved = world
        .fleet
        .put_deployment("d", deployment("tags.site = 'plant1'", 0, "m:latest", 8001))
        .await
        .expect("deployment");
    assert_eq!(saved.targeted, 1);
    let published = world.manifests();
    assert_eq!(published.keys().collect::<Vec<_>>(), ["gw-1"]);
    let first = &published["gw-1"][0];
    assert_eq!(first.version, 1);
    assert!(
        served_image(first).0.contains("models/m:2@"),
        "latest is version 2"
    );
    assert_eq!(first.registry_credentials["acr"].username, "edge");

    // The same deployment again changes nothing: no new version, nothing published.
    world
        .fleet
        .put_deployment("d", deployment("tags.site = 'plant1'", 0, "m:latest", 8001))
        .await
        .expect("deployment");
    assert!(world.manifests().is_empty());

    // Another port is new content: version 2.
    world
        .fleet
        .put_deployment("d", deployment("tags.site = 'plant1'", 0, "m:latest", 9001))
        .await
        .expect("deployment");
    let next = &world.manifests()["gw-1"][0];
    assert_eq!((next.version, served_image(next).1), (2, Some(9001)));
}

#[tokio::test]
async fn per_module_the_highest_priority_wins_then_the_newest_and_the_manifest_names_its_source() {
    let mut world = World::new().await.with_packaged_models().await;
    world.device("gw-1", "plant1").await;
    let fleet = &world.fleet;
    fleet
        .put_deployment("base", deployment("tags.site = 'plant1'", 5, "m:1", 8001))
        .await
        .expect("base");
    fleet
        .put_deployment("low", deployment("tags.site = 'plant1'", 1, "m:2", 8002))
        .await
        .expect("low");
    assert_eq!(
        fleet.manifest("gw-1").await.expect("manifest").sources["scorer"].deployment,
        "base"
    );
    fleet
        .put_deployment("tie", deployment("tags.site = 'plant1'", 5, "m:2", 8003))
        .await
        .expect("tie");
    let view = fleet.manifest("gw-1").await.expect("manifest");
    assert_eq!(
        view.sources["scorer"].deployment, "tie",
        "ties go to the newest"
    );
    let last = world.manifests()["gw-1"]
        .last()
        .cloned()
        .expect("published");
    assert_eq!(served_image(&last).1, Some(8003));
}

#[tokio::test]
async fn rollout_status_follows_what_devices_report_for_their_manifest() {
    let world = World::new().await.with_packaged_models().await;
    world.device("gw-1", "plant1").await;
    world.device("gw-2", "plant1").await;
    let fleet = &world.fleet;
    fleet
        .put_deployment("d", deployment("tags.site = 'plant1'", 0, "m:1", 8001))
        .await
        .expect("deployment");
    let status = fleet.rollout("d").await.expect("status");
    assert_eq!((status.targeted, status.pending), (2, 2));

    let report = |status: ApplyStatus, message: &str| Heard {
        last_seen_ms: edgefleet_transport::now_ms(),
        reported: Some(ReportedState {
            schema_version: REPORTED_SCHEMA_VERSION.into(),
            device_id: String::new(),
            agent_version: "test".into(),
            applied_version: Some(1),
            last_desired: Some(DesiredOutcome {
                version: Some(1),
                status,
                message: message.into(),
                source: Default::default(),
            }),
            modules: BTreeMap::new(),
            outbox: OutboxState::default(),
            reported_at_ms: 0,
            fleet_silent_since_ms: None,
        }),
        incarnation: Some("01".into()),
    };
    let statuses = BTreeMap::from([
        (
            "gw-1".to_owned(),
            report(ApplyStatus::Applied, "applied 1 module(s)"),
        ),
        (
            "gw-2".to_owned(),
            report(ApplyStatus::ActivationFailed, "module scorer: unauthorized"),
        ),
    ]);
    fleet.ingest(statuses, &[]).await.expect("ingest");
    let status = fleet.rollout("d").await.expect("status");
    assert_eq!((status.succeeded, status.failed, status.pending), (1, 1, 0));
    assert!(status.finished() && !status.complete());
    let failed = status
        .devices
        .iter()
        .find(|d| d.state == DeviceRollout::Failed)
        .expect("a failed device");
    assert_eq!(failed.device_id, "gw-2");
    assert_eq!(
        failed.message.as_deref(),
        Some("module scorer: unauthorized")
    );
}

#[tokio::test]
async fn bad_requests_are_refused_by_kind_and_change_nothing() {
    let mut world = World::new().await.with_packaged_models().await;
    world.device("gw-1", "plant1").await;
    let fleet = &world.fleet;
    let bad_condition = fleet
        .put_deployment("d", deployment("tags.site = ", 0, "m:1", 8001))
        .await
        .unwrap_err();
    assert!(
        matches!(bad_condition, FleetError::Condition(_)),
        "{bad_condition}"
    );
    let unknown_model = fleet
        .put_deployment("d", deployment("tags.site = 'plant1'", 0, "nope:1", 8001))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown_model, FleetError::Invalid(_))
            && unknown_model.to_string().contains("module scorer"),
        "{unknown_model}"
    );
    assert!(fleet.deployments().await.expect("list").is_empty());
    assert!(world.manifests().is_empty());

    let fleet = &world.fleet;
    fleet
        .put_deployment("d", deployment("tags.site = 'plant1'", 0, "m:1", 8001))
        .await
        .expect("deployment");
    let in_use = fleet.delete_model("m", 1).await.unwrap_err();
    assert!(matches!(in_use, FleetError::Conflict(_)), "{in_use}");
    assert!(in_use.to_string().contains("deployment \"d\""), "{in_use}");
    let missing = fleet.device("gw-9").await.unwrap_err();
    assert!(matches!(missing, FleetError::NotFound(_)), "{missing}");
    assert!(matches!(
        fleet.rollout("nope").await.unwrap_err(),
        FleetError::NotFound(_)
    ));
}

#[tokio::test]
async fn the_device_configuration_is_the_agents_own_type_with_the_devices_password() {
    let world = World::new().await;
    world.device("gw-1", "plant1").await;
    let text = world.fleet.device_config("gw-1").await.expect("config");
    let config = edgefleet_common::agent_config::AgentConfig::parse(
        Some((std::path::Path::new("agent.toml"), &text)),
        Vec::new(),
    )
    .expect("the agent reads what the fleet writes");
    assert_eq!(config.device_id, "gw-1");
    assert_eq!(config.fleet, "plant");
    assert_eq!(config.mqtt.username, "gw-1");
    assert_eq!(config.mqtt.password.len(), 36, "a generated password");
    assert_eq!(config.fleet_public_key, world.public_key.to_string());
}

#[tokio::test]
async fn the_same_content_makes_no_revision_and_a_layer_adds_modules_and_takes_them_away() {
    let mut world = World::new().await.with_packaged_models().await;
    world.device("gw-1", "plant1").await;
    world.device("gw-2", "plant1").await;
    let save = |port| deployment("tags.site = 'plant1'", 0, "m:1", port);
    let first = world
        .fleet
        .put_deployment("d", save(8001))
        .await
        .expect("first");
    assert_eq!((first.revision, first.changed), (1, true));
    let again = world
        .fleet
        .put_deployment("d", save(8001))
        .await
        .expect("again");
    assert_eq!((again.revision, again.changed), (1, false));
    let second = world
        .fleet
        .put_deployment("d", save(8002))
        .await
        .expect("second");
    assert_eq!((second.revision, second.changed), (2, true));
    let history = world.fleet.deployment_history("d").await.expect("history");
    let ports: Vec<_> = history
        .iter()
        .map(|r| match &r.deployment.modules["scorer"] {
            DeploymentModule::Model(m) => (r.revision, m.port),
            DeploymentModule::Container(_) => panic!("a container"),
        })
        .collect();
    assert_eq!(ports, [(1, Some(8001)), (2, Some(8002))]);
    world.manifests();

    let mut layer = deployment("deviceId = 'gw-1'", 0, "m:2", 8003);
    layer.layered = true;
    layer.modules = BTreeMap::from([(
        "extra".to_owned(),
        DeploymentModule::registered_model("m:2", 8003),
    )]);
    world
        .fleet
        .put_deployment("layer", layer)
        .await
        .expect("layer");
    let view = world.fleet.manifest("gw-1").await.expect("manifest");
    assert_eq!(
        (
            view.sources["extra"].deployment.as_str(),
            view.sources["extra"].layered
        ),
        ("layer", true)
    );
    assert_eq!(
        (
            view.sources["scorer"].deployment.as_str(),
            view.sources["scorer"].revision
        ),
        ("d", 2),
        "the base stays under the layer"
    );
    assert_eq!(
        world.manifests().keys().collect::<Vec<_>>(),
        ["gw-1"],
        "only the device the layer selects changes"
    );

    world
        .fleet
        .delete_deployment("layer")
        .await
        .expect("delete");
    let published = world.manifests();
    let modules: Vec<_> = published["gw-1"][0].modules.keys().collect();
    assert_eq!(modules, ["scorer"], "exactly the layer's module went away");
}

fn import(id: &str, site: &str, public_key: &str) -> DeviceImport {
    DeviceImport {
        id: id.into(),
        tags: BTreeMap::from([("site".to_owned(), site.to_owned())]),
        public_key: public_key.into(),
    }
}

#[tokio::test]
async fn an_import_adds_and_updates_devices_in_one_change_and_a_bad_device_changes_nothing() {
    let mut world = World::new().await.with_packaged_models().await;
    world
        .fleet
        .put_deployment("d", deployment("tags.site = 'plant1'", 0, "m:1", 8001))
        .await
        .expect("deployment");
    let key = DeviceIdentity::generate().public_key().to_string();
    let imported = world
        .fleet
        .import_devices(vec![
            import("gw-1", "plant1", &key),
            import("gw-2", "plant1", &key),
            import("gw-3", "plant2", &key),
        ])
        .await
        .expect("import");
    assert_eq!(
        (imported.added, imported.updated, imported.manifests_changed),
        (3, 0, 2)
    );
    let published = world.manifests();
    assert_eq!(published.keys().collect::<Vec<_>>(), ["gw-1", "gw-2"]);
    let password_before = world.stored_device("gw-3").await;

    // gw-3 moves to plant1 (an update keeps its password and when it was added); gw-4 is new.
    let imported = world
        .fleet
        .import_devices(vec![
            import("gw-3", "plant1", &key),
            import("gw-4", "plant2", &key),
        ])
        .await
        .expect("import");
    assert_eq!(
        (imported.added, imported.updated, imported.manifests_changed),
        (1, 1, 1)
    );
    assert_eq!(world.manifests().keys().collect::<Vec<_>>(), ["gw-3"]);
    let after = world.stored_device("gw-3").await;
    assert_eq!(after.mqtt_password, password_before.mqtt_password);
    assert_eq!(after.added_ms, password_before.added_ms);
    assert_eq!(after.tags["site"], "plant1");

    // One bad device refuses the whole import, naming it; nothing of it is stored.
    for (devices, names) in [
        (
            vec![
                import("gw-5", "plant1", &key),
                import("gw-6", "plant1", "age1nope"),
            ],
            "\"gw-6\"",
        ),
        (
            vec![
                import("gw-5", "plant1", &key),
                import("gw-5", "plant2", &key),
            ],
            "\"gw-5\" is given twice",
        ),
        (vec![import("gw 7", "plant1", &key)], "gw 7"),
        (Vec::new(), "no devices"),
    ] {
        let refused = world.fleet.import_devices(devices).await.unwrap_err();
        assert!(
            matches!(refused, FleetError::Invalid(_) | FleetError::Name(_)),
            "{refused}"
        );
        assert!(refused.to_string().contains(names), "{refused}");
    }
    let ids: Vec<String> = world
        .fleet
        .devices()
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["gw-1", "gw-2", "gw-3", "gw-4"]);
    assert!(world.manifests().is_empty());
}

#[tokio::test]
async fn a_render_job_whose_devices_cannot_be_read_renders_every_device() {
    let mut world = World::new().await.with_packaged_models().await;
    world.device("gw-1", "plant1").await;
    world.device("gw-2", "plant1").await;
    world
        .fleet
        .put_deployment("d", deployment("tags.site = 'plant1'", 0, "m:1", 8001))
        .await
        .expect("deployment");
    assert_eq!(world.manifests().len(), 2);
    // gw-2 moves to plant2 behind the fleet's back, and the job queued is unreadable.
    let store = &world.fleet.store;
    let mut gw2: crate::records::Device = store
        .get(kind::DEVICE, "gw-2")
        .await
        .expect("read")
        .expect("gw-2");
    gw2.tags.insert("site".into(), "plant2".into());
    store.put(kind::DEVICE, "gw-2", &gw2).await.expect("put");
    store
        .put(kind::RENDER_JOB, "0000000000000000-bad", &"not the devices")
        .await
        .expect("job");

    assert_eq!(world.fleet.render_queued().await.expect("queue"), 1);
    // gw-2 gets a new, empty manifest; gw-1's unchanged one is published again, as for
    // every job taken from the queue.
    let published = world.manifests();
    let gw2 = &published["gw-2"][0];
    assert_eq!(gw2.version, 2);
    assert!(gw2.modules.is_empty(), "gw-2 has no module now");
    assert_eq!(published["gw-1"][0].version, 1);
    assert!(
        world
            .fleet
            .store
            .claim_render_job(None)
            .await
            .expect("claim")
            .is_none(),
        "the unreadable job left the queue"
    );
}
