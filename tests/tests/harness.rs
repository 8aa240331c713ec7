//! The harness starts real services and they behave like the real thing: authentication is
//! enforced and images pushed by standard tools come back byte for byte.

use edgefleet_tests::{Mosquitto, OciLayout, Registry, model_dir, skopeo_push};

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";

fn push_and_read_back(registry: &Registry) {
    let model = std::fs::read(model_dir("diabetes").join("model.onnx")).expect("model");
    let layout = OciLayout::model_module(&model, None, &[("org.edgefleet.model.name", "diabetes")]);
    skopeo_push(
        &layout,
        registry,
        "models/diabetes",
        "1",
        "edge",
        "edge-pass",
    )
    .expect("skopeo push with the right credentials");

    let url = format!("{}/v2/models/diabetes/manifests/1", registry.base_url());
    let client = registry.http_client();
    let response = client
        .get(&url)
        .basic_auth("edge", Some("edge-pass"))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .expect("GET manifest");
    assert_eq!(response.status(), 200);
    let digest = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let manifest: serde_json::Value = response.json().expect("manifest JSON");
    assert_eq!(digest.as_deref(), Some(layout.manifest_digest.as_str()));
    assert_eq!(
        manifest["layers"][0]["digest"],
        layout.layer_digest.as_str()
    );

    let layer = client
        .get(format!(
            "{}/v2/models/diabetes/blobs/{}",
            registry.base_url(),
            layout.layer_digest
        ))
        .basic_auth("edge", Some("edge-pass"))
        .send()
        .expect("GET layer");
    assert_eq!(layer.status(), 200);

    let wrong = client
        .get(&url)
        .basic_auth("edge", Some("wrong"))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .expect("GET manifest with a wrong password");
    assert_eq!(wrong.status(), 401);
    let anonymous = client
        .get(&url)
        .send()
        .expect("GET manifest without credentials");
    assert_eq!(anonymous.status(), 401);

    let refused = skopeo_push(&layout, registry, "models/diabetes", "2", "edge", "wrong")
        .expect_err("a push with a wrong password must fail");
    assert!(
        refused.contains("unauthorized") || refused.contains("401"),
        "{refused}"
    );
}

#[test]
fn an_image_pushed_with_skopeo_reads_back_through_the_registry_api_with_credentials_only() {
    push_and_read_back(&Registry::start("edge", "edge-pass"));
}

#[test]
fn the_tls_registry_serves_the_same_with_a_certificate_from_the_test_ca() {
    let registry = Registry::start_tls("edge", "edge-pass");
    assert!(registry.base_url().starts_with("https://"));
    push_and_read_back(&registry);
    // A client that does not trust the test CA is refused.
    let untrusting = reqwest::blocking::Client::new();
    assert!(
        untrusting
            .get(format!("{}/v2/", registry.base_url()))
            .send()
            .is_err()
    );
}

#[test]
fn mosquitto_enforces_passwords_and_keeps_retained_messages_across_a_restart() {
    let mut broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
    assert!(broker.publish(
        "fleet",
        "fleet-pass",
        "edgefleet/t/devices/d/desired",
        "m1",
        true
    ));
    assert!(!broker.publish(
        "fleet",
        "wrong",
        "edgefleet/t/devices/d/desired",
        "m2",
        true
    ));

    broker.stop();
    broker.restart();
    let got = broker.subscribe("fleet", "fleet-pass", "edgefleet/t/devices/+/desired", 1, 5);
    assert_eq!(got, vec!["edgefleet/t/devices/d/desired m1".to_owned()]);
}
