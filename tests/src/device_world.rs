//! The world of a device's end-to-end tests: a real mosquitto, a real registry with
//! authentication, the fleet's signing key, and the real agent binary, with what the tests do
//! to them (push model images, sign and publish manifests, read the reported state) and the
//! test data they use (the diabetes model's module.json, a sensor container module).

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_common::manifest::{
    ContainerSpec, Manifest, ModelServing, ModelSpec, Module, RegistryCredential, RestartPolicy,
};
use edgefleet_common::sealing::DevicePublicKey;
use edgefleet_common::signing::FleetSigningKey;
use edgefleet_common::topics::DeviceTopics;
use serde_json::{Value, json};

use crate::{
    AgentProcess, AgentSetup, Mosquitto, OciLayout, Registry, free_port, http_client, model_dir,
    ort_library, skopeo_push, wait_for, workspace_binary,
};

pub const FLEET: &str = "plant";
pub const DEVICE: &str = "gw-01";
pub const REGISTRY_USER: &str = "edge";
pub const REGISTRY_PASSWORD: &str = "edge-pass";

#[derive(Debug)]
pub struct DeviceWorld {
    pub broker: Mosquitto,
    pub registry: Registry,
    pub fleet_key: FleetSigningKey,
    pub topics: DeviceTopics,
    /// The device's id (also its MQTT user name).
    pub device: &'static str,
}

impl Default for DeviceWorld {
    fn default() -> Self {
        Self::with(false, DEVICE)
    }
}

impl DeviceWorld {
    pub fn new() -> Self {
        Self::with(false, DEVICE)
    }

    pub fn with_tls(tls: bool) -> Self {
        Self::with(tls, DEVICE)
    }

    /// With `tls`, the broker serves MQTT over TLS and requires a client certificate, and the
    /// registry serves HTTPS; both certificates come from test CAs.
    pub fn with(tls: bool, device: &'static str) -> Self {
        let mut broker = Mosquitto::new()
            .add_user(device, "device-pass")
            .add_user("fleet", "fleet-pass");
        if tls {
            broker = broker.with_tls(true);
        }
        let registry = if tls {
            Registry::start_tls(REGISTRY_USER, REGISTRY_PASSWORD)
        } else {
            Registry::start(REGISTRY_USER, REGISTRY_PASSWORD)
        };
        Self {
            broker: broker.start(),
            registry,
            fleet_key: FleetSigningKey::generate(),
            topics: DeviceTopics::new(FLEET, device).expect("names"),
            device,
        }
    }

    pub fn agent(&self) -> AgentProcess {
        AgentProcess::init(
            AgentSetup {
                binary: workspace_binary("edgefleet-agent"),
                device_id: self.device.into(),
                fleet: FLEET.into(),
                fleet_public_key: self.fleet_key.public_key().to_string(),
                mqtt_username: self.device.into(),
                mqtt_password: "device-pass".into(),
                insecure_registries: match self.registry.tls() {
                    Some(_) => vec![],
                    None => vec![self.registry.address()],
                },
                onnx_runtime_library: ort_library(),
                mqtt_ca_file: self.broker.tls().map(|t| t.ca.ca_file()),
                mqtt_client_cert: self
                    .broker
                    .tls()
                    .map(|t| t.ca.issue(self.device, &[self.device])),
                registry_ca_file: self.registry.tls().map(|t| t.cert_dir.join("ca.crt")),
            },
            &self.broker,
        )
    }

    /// Pushes a model module image and returns its reference pinned by digest.
    pub fn push(&self, repository: &str, model: &str, module_json: Option<Value>) -> String {
        let bytes = std::fs::read(model_dir(model).join("model.onnx")).expect("model");
        let json = module_json.map(|v| serde_json::to_vec(&v).expect("module.json"));
        let layout = OciLayout::model_module(
            &bytes,
            json.as_deref(),
            &[("org.edgefleet.model.name", model)],
        );
        skopeo_push(
            &layout,
            &self.registry,
            repository,
            "1",
            REGISTRY_USER,
            REGISTRY_PASSWORD,
        )
        .expect("push");
        format!(
            "{}/{repository}@{}",
            self.registry.address(),
            layout.manifest_digest
        )
    }

    pub fn manifest(
        &self,
        agent: &AgentProcess,
        version: u64,
        password: &str,
        modules: &[(&str, &str, u16)],
    ) -> Manifest {
        let device_key: DevicePublicKey = agent.public_key.parse().expect("device key");
        let mut m = Manifest::new(self.device, version);
        m.registry_credentials.insert(
            "local".into(),
            RegistryCredential {
                address: self.registry.address(),
                username: REGISTRY_USER.into(),
                password: device_key.seal(password).expect("seal"),
            },
        );
        for (name, image, port) in modules {
            m.modules.insert(
                (*name).into(),
                Module::Model(ModelSpec {
                    image: (*image).into(),
                    status: Default::default(),
                    serving: Some(ModelServing {
                        http_port: *port,
                        bind_address: "127.0.0.1".into(),
                        auth_key_sha256: vec![],
                        mqtt_input: true,
                        data_collection_ppm: 0,
                    }),
                    session: Default::default(),
                    batch: None,
                }),
            );
        }
        m
    }

    /// The diabetes image as the fleet packages it (with module.json), pinned by digest.
    pub fn push_diabetes(&self) -> String {
        self.push(
            "models/diabetes",
            "diabetes",
            Some(diabetes_module_json(false)),
        )
    }

    /// A started agent serving the diabetes image (with module.json) as module `name`, its
    /// first manifest applied; returns the agent, the image and the scoring port.
    pub fn serving_diabetes(&self, name: &str) -> (AgentProcess, String, u16) {
        let mut agent = self.agent();
        agent.start();
        let image = self.push_diabetes();
        let port = free_port();
        self.publish(&self.manifest(&agent, 1, REGISTRY_PASSWORD, &[(name, &image, port)]));
        self.wait_outcome(&agent, 1, 200);
        (agent, image, port)
    }

    pub fn publish_wire(&self, wire: &[u8]) {
        let text = String::from_utf8(wire.to_vec()).expect("manifests are UTF-8");
        assert!(
            self.broker
                .publish("fleet", "fleet-pass", &self.topics.desired(), &text, true)
        );
    }

    pub fn publish(&self, manifest: &Manifest) {
        self.publish_wire(&self.fleet_key.sign(manifest));
    }

    /// The device's retained reported state.
    pub fn reported(&self) -> Option<Value> {
        let lines = self
            .broker
            .subscribe("fleet", "fleet-pass", &self.topics.reported(), 1, 2);
        let line = lines.first()?;
        let (_, json) = line.split_once(' ')?;
        serde_json::from_str(&crate::device_body(json)).ok()
    }

    /// Waits until the reported state says `version` finished with `status`.
    pub fn wait_outcome(&self, agent: &AgentProcess, version: u64, status: u16) -> Value {
        let reported = wait_for(
            &format!("manifest {version} to end with {status}"),
            Duration::from_secs(60),
            || {
                let r = self.reported()?;
                let d = &r["lastDesired"];
                (d["version"] == json!(version) && d["status"] == json!(status)).then_some(r)
            },
        );
        if std::env::var_os("EDGEFLEET_TEST_LOG").is_some() {
            eprintln!("{}", agent.log());
        }
        reported
    }
}

/// module.json as the fleet packages it: the model's signature and a sample from the
/// Python reference, optionally with a wrong sample output.
pub fn diabetes_module_json(corrupt_sample_output: bool) -> Value {
    let reference: Value = serde_json::from_slice(
        &std::fs::read(model_dir("diabetes").join("reference.json")).expect("reference"),
    )
    .expect("json");
    let mut output = json!({"variable": [reference["outputs"]["variable"][0].clone()]});
    if corrupt_sample_output {
        output = json!({"variable": [[1.0]]});
    }
    json!({
        "schemaVersion": "1",
        "name": "diabetes",
        "version": 1,
        "description": "ridge regression on scikit-learn's diabetes dataset",
        "inputs": [{"name": "X", "type": "tensor", "dtype": "float32", "shape": [-1, 10]}],
        "outputs": [{"name": "variable", "type": "tensor", "dtype": "float32", "shape": [-1, 1]}],
        "sample": {"input": {"data": [reference["inputs"]["X"][0].clone()]}, "output": output},
    })
}

pub fn score(port: u16, body: &str) -> (u16, Value) {
    let response = http_client()
        .post(format!("http://127.0.0.1:{port}/score"))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .expect("POST /score");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

pub const QUICKSTART_REQUEST: &str = r#"{"data": [[1,2,3,4,5,6,7,8,9,10],[10,9,8,7,6,5,4,3,2,1]]}"#;

pub fn assert_close(ours: &Value, reference: &Value) {
    let (a, b) = (
        ours.as_f64().expect("number"),
        reference.as_f64().expect("number"),
    );
    assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-6), "{a} != {b}");
}

/// Like `wait_for`, printing the agent's log when it times out.
pub fn wait_for_or_log<T>(
    agent: &AgentProcess,
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> Option<T>,
) -> T {
    crate::wait_for_explained(what, timeout, check, || {
        format!("agent log:\n{}", agent.log())
    })
}

/// A container module running sensor-sim on the host network, publishing to `topic` of
/// `broker` as the device.
pub fn sensor_module(
    image: &str,
    world: &DeviceWorld,
    topic: &str,
    policy: RestartPolicy,
) -> ContainerSpec {
    let env = BTreeMap::from([
        ("MQTT_PORT".to_owned(), world.broker.port().to_string()),
        ("MQTT_USERNAME".to_owned(), world.device.to_owned()),
        ("MQTT_PASSWORD".to_owned(), "device-pass".to_owned()),
        ("TOPIC".to_owned(), topic.to_owned()),
        ("INTERVAL_MS".to_owned(), "200".to_owned()),
    ]);
    ContainerSpec {
        image: image.to_owned(),
        status: Default::default(),
        restart_policy: policy,
        env,
        create_options: Some(json!({"HostConfig": {"NetworkMode": "host", "Memory": 67_108_864}})),
        startup_order: None,
        image_pull_policy: Default::default(),
    }
}
