//! The world of the fleet's end-to-end tests: the real `edgefleet serve` with a mosquitto that
//! enforces per-device ACLs (docs/mosquitto-acl.conf) or with its embedded broker, a registry
//! with authentication, and real agents configured with what `edgefleet device config` prints.

use std::time::Duration;

use serde_json::Value;

use crate::{
    AgentProcess, AgentSetup, FleetProcess, Mosquitto, Registry, http_client, model_dir,
    ort_library, repo_root, workspace_binary,
};

/// A scoring request with two rows (the quickstart's).
const TWO_ROWS: &str = r#"{"data": [[1,2,3,4,5,6,7,8,9,10],[10,9,8,7,6,5,4,3,2,1]]}"#;

#[derive(Debug)]
pub struct FleetWorld {
    /// The external broker (absent with the embedded one).
    pub broker: Option<Mosquitto>,
    pub registry: Registry,
    pub fleet: FleetProcess,
    /// The embedded broker's port, when the fleet runs it.
    embedded_port: Option<u16>,
    /// Each device's MQTT password, as `device config` printed it.
    passwords: std::collections::BTreeMap<String, String>,
}

impl FleetWorld {
    /// A fleet `plant` on mosquitto with the documented ACL.
    pub fn new() -> Self {
        // The ACL users are told to use: the fleet service may use every topic, a device
        // (user name = device id) only its own.
        // A sensor container may publish to the devices' model inputs as `sensors`.
        let acl = std::fs::read_to_string(repo_root().join("docs/mosquitto-acl.conf"))
            .expect("docs/mosquitto-acl.conf")
            + "\nuser sensors\ntopic write edgefleet/plant/devices/+/inputs/#\n";
        let broker = Mosquitto::new()
            .add_user("fleet", "fleet-pass")
            .add_user("sensors", "sensors-pass")
            .with_acl(&acl)
            .start();
        let fleet = FleetProcess::start(
            workspace_binary("edgefleet"),
            &broker,
            "fleet",
            "fleet-pass",
            "plant",
        );
        Self::with(Some(broker), None, fleet)
    }

    /// A fleet `plant` on mosquitto with dynamic security: the fleet creates each device's
    /// login and role itself (docs/operations.md).
    pub fn dynamic_security() -> Self {
        let broker = Mosquitto::new()
            .with_dynamic_security("broker-admin", "broker-admin-pass")
            .start();
        broker.dynsec_fleet_login("plant", "fleet", "fleet-pass");
        let fleet = FleetProcess::start_managing_logins(
            workspace_binary("edgefleet"),
            &broker,
            ("fleet", "fleet-pass"),
            "plant",
        );
        Self::with(Some(broker), None, fleet)
    }

    /// A fleet `plant` with its embedded broker on `broker_port`.
    pub fn embedded(broker_port: u16) -> Self {
        let fleet =
            FleetProcess::start_embedded(workspace_binary("edgefleet"), broker_port, "plant");
        Self::with(None, Some(broker_port), fleet)
    }

    fn with(broker: Option<Mosquitto>, embedded_port: Option<u16>, fleet: FleetProcess) -> Self {
        let world = Self {
            broker,
            registry: Registry::start("edge", "edge-pass"),
            fleet,
            embedded_port,
            passwords: Default::default(),
        };
        world.fleet.add_registry(&world.registry, "edge-pass");
        world
    }

    /// A device added to the fleet, configured with what `edgefleet device config` printed,
    /// serving its model APIs on `bind` (one loopback address per device); started.
    pub fn device(&mut self, id: &str, tags: &[&str], bind: &str) -> AgentProcess {
        let placeholder;
        let broker = match &self.broker {
            Some(broker) => broker,
            None => {
                placeholder = Mosquitto::new();
                &placeholder
            }
        };
        let mut agent = AgentProcess::init(
            AgentSetup {
                binary: workspace_binary("edgefleet-agent"),
                device_id: id.into(),
                fleet: "plant".into(),
                fleet_public_key: String::new(),
                mqtt_username: id.into(),
                mqtt_password: String::new(),
                insecure_registries: vec![],
                onnx_runtime_library: ort_library(),
                mqtt_ca_file: None,
                mqtt_client_cert: None,
                registry_ca_file: None,
            },
            broker,
        );
        let mut args = vec!["device", "add", id, "--public-key", &agent.public_key];
        for tag in tags {
            args.extend(["--tag", tag]);
        }
        self.fleet.ok(&args);
        let config = self.fleet.ok(&["device", "config", id]);
        agent.use_config(&config);
        let password = config
            .lines()
            .find_map(|l| l.strip_prefix("password = "))
            .map(|p| p.trim_matches('"').to_owned())
            .expect("the config holds the MQTT password");
        if let Some(broker) = &mut self.broker {
            // With dynamic security the fleet created the login itself.
            if broker.dynsec_admin().is_none() {
                broker.add_user_live(id, &password);
            }
            agent.set_env("EDGEFLEET_MQTT_URL", &broker.url());
        }
        self.passwords.insert(id.to_owned(), password);
        agent.set_env("EDGEFLEET_SERVING_BIND_ADDRESS", bind);
        agent.start();
        agent
    }

    /// Devices `(id, bind)` tagged `site=plant1`, serving the diabetes model (registered and
    /// packaged here) on the returned port, their rollout of deployment `d` done.
    pub fn deployed_diabetes(&mut self, devices: &[(&str, &str)]) -> (Vec<AgentProcess>, u16) {
        assert_eq!(self.fleet.register("diabetes", "diabetes"), "diabetes:1");
        self.fleet.package("diabetes:1", "models/diabetes");
        let agents = devices
            .iter()
            .map(|(id, bind)| self.device(id, &["site=plant1"], bind))
            .collect();
        let port = crate::free_port();
        self.fleet
            .deploy("d", "tags.site = 'plant1'", "diabetes:latest", port);
        self.wait_rollout("d");
        (agents, port)
    }

    /// The port devices reach this world's broker on.
    pub fn mqtt_port(&self) -> u16 {
        match (&self.broker, self.embedded_port) {
            (Some(broker), _) => broker.port(),
            (None, port) => port.unwrap_or_default(),
        }
    }

    /// Device `id`'s MQTT password, as `device config` printed it.
    pub fn device_password(&self, id: &str) -> String {
        self.passwords.get(id).cloned().unwrap_or_default()
    }

    /// Publishes `payload` (QoS 1) on any topic, logged in as `user`.
    pub fn publish_as(
        &self,
        (user, password): (&str, &str),
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> bool {
        let mut command = std::process::Command::new(crate::require_program(
            "mosquitto_pub",
            "mosquitto-clients",
        ));
        command
            .args(["-h", "127.0.0.1", "-p", &self.mqtt_port().to_string()])
            .args(["-u", user, "-P", password, "-q", "1", "-t", topic])
            .args(["-m", &String::from_utf8_lossy(payload)]);
        if retain {
            command.arg("-r");
        }
        command.status().is_ok_and(|s| s.success())
    }

    /// Publishes `payload` (QoS 1) to `device`'s input topic of `module`.
    pub fn publish_input(&self, device: &str, module: &str, payload: &str) -> bool {
        self.input_publisher().publish(device, module, payload)
    }

    /// What publishes inputs to this world's devices, for another thread.
    pub fn input_publisher(&self) -> InputPublisher {
        let (port, fleet_login) = match (&self.broker, self.embedded_port) {
            (Some(broker), _) => (broker.port(), true),
            (None, port) => (port.unwrap_or_default(), false),
        };
        InputPublisher {
            port,
            fleet_login,
            passwords: self.passwords.clone(),
        }
    }

    /// The external broker; the test fails when the fleet runs its embedded one.
    pub fn broker(&self) -> &Mosquitto {
        self.broker
            .as_ref()
            .expect("this world has an external broker")
    }

    /// `rollout status --wait` of `deployment`, failing the test when it does not succeed.
    pub fn wait_rollout(&self, deployment: &str) -> Value {
        let out = self.fleet.cli(&[
            "rollout",
            "status",
            deployment,
            "--wait",
            "--timeout-secs",
            "90",
            "--output",
            "json",
        ]);
        assert!(
            out.status.success(),
            "rollout {deployment} did not succeed: {}\n{}\nfleet log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.fleet.log()
        );
        serde_json::from_slice(&out.stdout).expect("rollout JSON")
    }

    /// The manifest rendered for `device`, as `manifest show --output json` prints it.
    pub fn manifest(&self, device: &str) -> Value {
        serde_json::from_str(
            &self
                .fleet
                .ok(&["manifest", "show", device, "--output", "json"]),
        )
        .expect("manifest JSON")
    }
}

/// Publishes inputs with mosquitto_pub: as the fleet on the external broker, as the device
/// itself on the embedded one.
#[derive(Debug, Clone)]
pub struct InputPublisher {
    port: u16,
    fleet_login: bool,
    passwords: std::collections::BTreeMap<String, String>,
}

impl InputPublisher {
    pub fn publish(&self, device: &str, module: &str, payload: &str) -> bool {
        let topic = format!("edgefleet/plant/devices/{device}/inputs/{module}");
        let (user, password) = if self.fleet_login {
            ("fleet", "fleet-pass")
        } else {
            (
                device,
                self.passwords.get(device).map_or("", String::as_str),
            )
        };
        std::process::Command::new(crate::require_program("mosquitto_pub", "mosquitto-clients"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", user, "-P", password, "-q", "1"])
            .args(["-t", &topic, "-m", payload])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Default for FleetWorld {
    fn default() -> Self {
        Self::new()
    }
}

/// POSTs the two-row request to a device's scoring API and returns the answer.
pub fn score_at(bind: &str, port: u16) -> Value {
    let response = http_client()
        .post(format!("http://{bind}:{port}/score"))
        .body(TWO_ROWS)
        .timeout(Duration::from_secs(30))
        .send()
        .expect("POST /score");
    assert_eq!(response.status(), 200);
    response.json().expect("JSON")
}

impl FleetProcess {
    /// `edgefleet registry add acr ...` for `registry`, the password on stdin.
    pub fn add_registry(&self, registry: &Registry, password: &str) {
        let address = registry.address();
        let args = [
            "registry",
            "add",
            "acr",
            "--address",
            &address,
            "--username",
            "edge",
            "--password-stdin",
            "--insecure",
        ];
        let out = self.cli_with(&args, Some(password));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `edgefleet model register` of a committed model; returns `name:version`.
    pub fn register(&self, name: &str, model: &str) -> String {
        let path = model_dir(model).join("model.onnx");
        let path = path.to_str().expect("path");
        let args = [
            "model", "register", "--name", name, "--path", path, "--tag", "team=ml",
        ];
        self.ok(&args).trim().to_owned()
    }

    /// `edgefleet model package <model> --registry acr --repository <repository>`.
    pub fn package(&self, model: &str, repository: &str) -> String {
        self.ok(&[
            "model",
            "package",
            model,
            "--registry",
            "acr",
            "--repository",
            repository,
            "--output",
            "json",
        ])
    }

    /// Creates (or replaces) deployment `name` of `model` on `port` for the devices `target`
    /// selects.
    pub fn deploy(&self, name: &str, target: &str, model: &str, port: u16) {
        let port = port.to_string();
        let args = [
            "deployment",
            "create",
            name,
            "--target",
            target,
            "--model",
            model,
            "--port",
            &port,
        ];
        self.ok(&args);
    }
}
