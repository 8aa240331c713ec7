//! The HTTP API in-process: `serve` on a listener bound to port 0, with a real mosquitto and a
//! real registry with authentication, called through the same typed client the CLI uses.

#![allow(
    clippy::too_many_lines,
    reason = "an end-to-end test is one scenario, read from top to bottom"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_common::fleet_api::{
    DeploymentModule, DeploymentRequest, DeviceRequest, PackageRequest, RegisterModelQuery,
    RegistryRequest,
};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::signing::FleetPublicKey;
use edgefleet_fleet::client::{ClientError, FleetClient};
use edgefleet_fleet::service::{ServeError, ServeOptions, serve};
use edgefleet_tests::{
    Mosquitto, Postgres, Registry, Subscriber, model_dir, ort_library, postgres_store, wait_for,
};
use tokio::sync::oneshot;

const TOKEN: &str = "api-test-token";

/// The service running in a thread of this test, stopped (gracefully) when dropped.
struct InProcessFleet {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
    _dir: tempfile::TempDir,
    _postgres: Option<Postgres>,
}

impl InProcessFleet {
    fn start(broker: &Mosquitto) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let postgres = postgres_store().then(Postgres::start);
        let options = ServeOptions {
            data_dir: dir.path().join("data"),
            fleet: "plant".into(),
            mqtt_url: Some(broker.url()),
            mqtt_username: "fleet".into(),
            mqtt_password: "fleet-pass".into(),
            mqtt_ca_file: String::new(),
            embedded_broker_listen: "127.0.0.1:0".parse().expect("address"),
            token: Some(TOKEN.into()),
            onnx_runtime_library: ort_library(),
            device_mqtt_url: None,
            retention: Default::default(),
            metrics_listen: None,
            database: postgres.as_ref().map(Postgres::url),
            replica: None,
            tls: None,
            broker_admin: None,
        };
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("listener");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(serve(options, listener, async {
                let _ = stopped.await;
            }))
        });
        Self {
            url,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
            _postgres: postgres,
        }
    }

    fn client(&self, token: &str) -> FleetClient {
        FleetClient::new(&self.url, Some(token.into())).expect("client")
    }

    /// Stops the service and returns what `serve` returned.
    fn stop(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().expect("the service thread"),
            None => Ok(()),
        }
    }
}

impl Drop for InProcessFleet {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[test]
fn the_api_registers_packages_and_deploys_and_refuses_bad_calls_with_their_status() {
    let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
    let registry = Registry::start("edge", "edge-pass");
    let mut fleet = InProcessFleet::start(&broker);
    let api = fleet.client(TOKEN);
    let info = wait_for("the service to answer", Duration::from_secs(30), || {
        api.info().ok()
    });
    assert_eq!(info.fleet, "plant");
    let public_key: FleetPublicKey = info.public_key.parse().expect("fleet key");
    let desired = Subscriber::connect(
        broker.port(),
        "fleet",
        "fleet-pass",
        "api-test-desired",
        &["edgefleet/plant/devices/gw-1/desired"],
    );

    // A wrong token is refused before anything else.
    let intruder = fleet.client("wrong").registries().unwrap_err();
    assert!(
        matches!(intruder, ClientError::Unauthorized(_)),
        "{intruder}"
    );

    let saved = api
        .put_registry(
            "acr",
            &RegistryRequest {
                address: registry.address(),
                username: "edge".into(),
                password: "edge-pass".into(),
                insecure: true,
            },
        )
        .expect("registry");
    assert_eq!(saved.username, "edge");
    let onnx = std::fs::read(model_dir("diabetes").join("model.onnx")).expect("model");
    let query = RegisterModelQuery {
        name: "diabetes".into(),
        ..RegisterModelQuery::default()
    };
    let version = api.register_model(&query, onnx).expect("register");
    assert_eq!(version.reference(), "diabetes:1");
    let refused = api
        .register_model(&query, b"not onnx".to_vec())
        .unwrap_err();
    assert!(
        matches!(&refused, ClientError::Refused { status, message }
            if *status == 400 && message.contains("not a model ONNX Runtime can load")),
        "{refused}"
    );
    // A model no synthesized sample runs is refused at registration, where --sample-input can
    // be given, and registered with one.
    let exactly_21 = std::fs::read(model_dir("exactly-21").join("model.onnx")).expect("model");
    let query = RegisterModelQuery {
        name: "exactly-21".into(),
        ..RegisterModelQuery::default()
    };
    let refused = api.register_model(&query, exactly_21.clone()).unwrap_err();
    assert!(
        matches!(&refused, ClientError::Refused { status, message }
            if *status == 400 && message.contains(r#""x": float32[N,N]"#)
                && message.contains("--sample-input")),
        "{refused}"
    );
    let sample =
        std::fs::read_to_string(model_dir("exactly-21").join("sample.json")).expect("sample");
    let query = RegisterModelQuery {
        sample: Some(sample),
        ..query
    };
    api.register_model(&query, exactly_21)
        .expect("registered with its sample");
    let package = api
        .package_model(
            "diabetes",
            "1",
            &PackageRequest {
                registry: "acr".into(),
                repository: "models/diabetes".into(),
            },
        )
        .expect("package");
    assert!(
        package
            .image
            .starts_with(&format!("{}/models/diabetes:1@sha256:", registry.address()))
    );

    let device_key = DeviceIdentity::generate().public_key().to_string();
    api.put_device(
        "gw-1",
        &DeviceRequest {
            tags: BTreeMap::from([("site".to_owned(), "plant1".to_owned())]),
            public_key: device_key,
        },
    )
    .expect("device");
    let deployment = |target: &str| DeploymentRequest {
        target: target.into(),
        priority: 0,
        layered: false,
        modules: BTreeMap::from([(
            "diabetes".to_owned(),
            DeploymentModule::registered_model("diabetes:latest", 5001),
        )]),
        rollout: None,
    };
    let saved = api
        .put_deployment("d", &deployment("tags.site = 'plant1'"))
        .expect("deployment");
    assert_eq!(saved.targeted, 1);
    let manifest = api.manifest("gw-1").expect("manifest");
    assert_eq!(manifest.sources["diabetes"].deployment, "d");

    // What the device receives is the same manifest, signed by the fleet's key.
    let wire = wait_for("the retained manifest", Duration::from_secs(30), || {
        desired.messages().into_iter().next().map(|(_, p)| p)
    });
    let received = public_key.verify(wire.as_bytes()).expect("verifies");
    assert_eq!(received.version, manifest.version);
    let status = api.rollout("d").expect("rollout");
    assert_eq!((status.targeted, status.pending), (1, 1));

    // Session options travel to the device's manifest as given; zero threads are refused.
    let with_session = |session: serde_json::Value| {
        let mut request = deployment("tags.site = 'plant1'");
        if let Some(DeploymentModule::Model(m)) = request.modules.get_mut("diabetes") {
            m.session = serde_json::from_value(session).expect("session options");
        }
        request
    };
    api.put_deployment(
        "d",
        &with_session(serde_json::json!({"intraOpThreads": 2, "executionProviders": ["openvino"]})),
    )
    .expect("deployment with session options");
    let manifest = api.manifest("gw-1").expect("manifest");
    assert_eq!(
        manifest.signed["manifest"]["modules"]["diabetes"]["session"],
        serde_json::json!({"intraOpThreads": 2, "executionProviders": ["openvino"]})
    );
    let zero = api
        .put_deployment("d", &with_session(serde_json::json!({"interOpThreads": 0})))
        .unwrap_err();
    assert!(
        matches!(&zero, ClientError::Refused { status, message }
            if *status == 400 && message.contains("session.interOpThreads is 0")),
        "{zero}"
    );

    let bad = api
        .put_deployment("d", &deployment("tags.site ="))
        .unwrap_err();
    assert!(
        matches!(&bad, ClientError::Refused { status, message }
            if *status == 400 && message.contains("target condition")),
        "{bad}"
    );
    let missing = api.device("gw-9").unwrap_err();
    assert!(
        matches!(&missing, ClientError::Refused { status, .. } if *status == 404),
        "{missing}"
    );
    let in_use = api.delete_model("diabetes", "1").unwrap_err();
    assert!(
        matches!(&in_use, ClientError::Refused { status, .. } if *status == 409),
        "{in_use}"
    );

    fleet.stop().expect("the service stops cleanly");
    assert!(
        matches!(api.info().unwrap_err(), ClientError::Unreachable { .. }),
        "stopped"
    );
}
