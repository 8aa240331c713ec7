//! Writes the seed inputs of every target into `corpus/<target>/seed-*` (run with
//! `cargo test -p edgefleet-fuzz --test seeds -- --ignored`, then commit them). Seeds are
//! what the programs really read, made the way the tests make them: manifests signed with the
//! fuzz key, a bundle holding a model image, exports, receipts, journal frames, the shipped
//! configuration, the IoT Edge sample files, request bodies and conditions from the tests.

use std::path::{Path, PathBuf};

use edgefleet_common::bundle::{self, BUNDLE_FORMAT, BundleImage, BundleIndex, INDEX_PATH};
use edgefleet_common::manifest::Manifest;
use edgefleet_common::outbox_export::{
    EXPORT_FORMAT, ExportEnd, ExportHeader, SignedReceipt, TelemetryReceipt,
};
use edgefleet_common::signing::FleetSigningKey;
use edgefleet_fuzz::{DEVICE, FLEET, fleet_key};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    dir
}

fn seed(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    assert!(edgefleet_fuzz::target(target).is_some(), "{target}");
    std::fs::write(corpus(target).join(format!("seed-{name}")), bytes).expect("write seed");
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn manifest(modules: Value, image: &str) -> Manifest {
    let mut modules = modules;
    if let Some(model) = modules.get_mut("model") {
        model["image"] = json!(image);
    }
    serde_json::from_value(json!({
        "schemaVersion": "2",
        "deviceId": DEVICE,
        "version": 3,
        "modules": modules,
        "telemetry": {"intervalSeconds": 30, "outboxMaxBytes": 1048576, "ttlSeconds": 3600},
    }))
    .expect("manifest")
}

fn modules() -> Value {
    json!({
        "model": {"kind": "model", "image": "", "status": "running",
                  "serving": {"httpPort": 8001, "bindAddress": "127.0.0.1",
                              "authKeySha256": ["ab".repeat(32)], "mqttInput": true,
                              "dataCollectionPpm": 1000},
                  "session": {"intraOpThreads": 2}, "batch": {"dir": "/var/lib/batch"}},
        "sensor": {"kind": "container", "image": "127.0.0.1:5000/plant/sensor:1.0@sha256:".to_owned() + &"1".repeat(64),
                   "restartPolicy": "on-failure", "env": {"RATE": "10"},
                   "createOptions": {"HostConfig": {"Binds": ["/dev:/dev"], "Privileged": false}},
                   "startupOrder": 2, "imagePullPolicy": "never"},
    })
}

/// A model image's blobs: its manifest, config and layer; and an index naming the manifest.
struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
    index: Vec<u8>,
}

fn image() -> Image {
    let config = br#"{"architecture":"amd64","os":"linux","config":{}}"#.to_vec();
    let layer = b"model bytes".to_vec();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(&layer), "size": layer.len(),
                    "annotations": {"org.opencontainers.image.title": "model.onnx"}}],
    }))
    .expect("manifest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": digest(&manifest), "size": manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": digest(&manifest), "size": manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }))
    .expect("index");
    Image {
        manifest,
        config,
        layer,
        index,
    }
}

/// A bundle's content before its trailer, serving a manifest whose model image is pinned to
/// `pinned` (the image manifest, or the index).
fn bundle_body(key: &FleetSigningKey, by_index: bool) -> Vec<u8> {
    let image = image();
    let top = if by_index {
        &image.index
    } else {
        &image.manifest
    };
    let reference = format!("127.0.0.1:5000/models/iris:1@{}", digest(top));
    let manifest = manifest(modules(), &reference);
    let wire = key.sign(&manifest);
    let index = BundleIndex {
        format: BUNDLE_FORMAT.into(),
        fleet: FLEET.into(),
        created_at_ms: 1_700_000_000_000,
        devices: [(DEVICE.to_owned(), manifest.version)].into(),
        images: vec![BundleImage {
            reference: reference.clone(),
            digest: digest(top),
            size: 1234,
        }],
    };
    let oci_index = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(top),
         "size": top.len(), "annotations": {bundle::REF_NAME_ANNOTATION: reference}}]});
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        (
            INDEX_PATH.into(),
            serde_json::to_vec(&index).expect("index"),
        ),
        (
            bundle::OCI_LAYOUT_PATH.into(),
            bundle::OCI_LAYOUT.as_bytes().to_vec(),
        ),
        (
            bundle::OCI_INDEX_PATH.into(),
            serde_json::to_vec(&oci_index).expect("oci index"),
        ),
    ];
    let mut blobs = vec![
        image.manifest.clone(),
        image.config.clone(),
        image.layer.clone(),
    ];
    if by_index {
        blobs.push(image.index.clone());
    }
    for blob in blobs {
        entries.push((bundle::blob_path(&digest(&blob)).expect("path"), blob));
    }
    entries.push((bundle::manifest_path(DEVICE), wire));
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, &path, bytes.as_slice())
            .expect("append");
    }
    // What precedes the trailer: the entries, without tar's end-of-archive blocks.
    builder.into_inner().expect("tar")
}

fn envelope(seq: u64, kind: &str, body: Value) -> Value {
    json!({"deviceId": DEVICE, "module": "model", "seq": seq, "timestampMs": 1_700_000_000_000u64 + seq,
           "kind": kind, "body": body})
}

fn envelopes() -> Vec<Value> {
    vec![
        envelope(
            1,
            "inference",
            json!({"source": "http", "latencyUs": 812, "outputs": {"variable": [[151.5]]}}),
        ),
        envelope(
            2,
            "event",
            json!({"source": "mqtt", "error": "input \"X\" has shape [1, 3]"}),
        ),
        envelope(
            3,
            "collected-data",
            json!({"inputs": {"data": [[1, 2.5, -3e-7]]}, "outputs": {"label": [1], "probabilities": [{"0": 0.25, "1": 0.75}]}}),
        ),
        envelope(
            4,
            "metric",
            json!({"modules": {}, "outbox": {"depth": 3, "bytes": 1024, "dropped": 0, "nextSeq": 5, "oldestSeq": 1}}),
        ),
    ]
}

/// A journal frame as the outbox writes one: magic, payload length, CRC-32, then the payload.
fn frame(first_seq: u64, records: &[(u64, &str, &[u8])]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&first_seq.to_le_bytes());
    payload.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (accepted_ms, module, json) in records {
        let mut framed = (module.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(module.as_bytes());
        framed.extend_from_slice(json);
        payload.extend_from_slice(&accepted_ms.to_le_bytes());
        payload.extend_from_slice(&(framed.len() as u32).to_le_bytes());
        payload.extend_from_slice(&framed);
    }
    let mut out = b"EFJ1".to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

#[test]
#[ignore = "writes the seed corpus; run by hand when a format changes"]
fn write_seed_inputs() {
    let key = fleet_key();
    let other =
        FleetSigningKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").expect("key");
    let image = image();

    manifest_seeds(&key, &other, &image);
    bundle_seeds(&key, &other, &image);
    iotedge_seeds();
    scoring_seeds();
    telemetry_seeds(&key, &other);
    journal_seeds();
    config_seeds(&key);
    oci_seeds(&image);
    condition_seeds();
    authenticity_seeds(&key, &other);
}

fn authenticity_seeds(key: &FleetSigningKey, other: &FleetSigningKey) {
    use edgefleet_fuzz::{ACKS_TOPIC, DEVICE_TOPIC, device_key};
    let records = serde_json::to_vec(&envelopes()).expect("json");
    let sealed = device_key().seal(DEVICE_TOPIC, "0f0f", &records);
    assert!(
        device_key().open(DEVICE_TOPIC, &sealed).is_ok(),
        "the seed opens"
    );
    seed("device_message", "telemetry", &sealed);
    seed("device_message", "unsealed", &records);
    let ack = br#"{"committedSeq":3,"incarnation":"0f0f"}"#;
    seed("fleet_message", "ack", key.sign_message(ACKS_TOPIC, ack));
    let command = br#"{"requestId":"r","module":"m","issuedAtMs":1,"command":"logs","tail":5}"#;
    seed(
        "fleet_message",
        "command",
        key.sign_message(ACKS_TOPIC, command),
    );
    seed(
        "fleet_message",
        "other-key",
        other.sign_message(ACKS_TOPIC, ack),
    );
}

fn manifest_seeds(key: &FleetSigningKey, other: &FleetSigningKey, image: &Image) {
    // Manifests.
    let pinned = format!("127.0.0.1:5000/models/iris@{}", digest(&image.manifest));
    let full = manifest(modules(), &pinned);
    let empty = Manifest::new(DEVICE, 1);
    seed("manifest_envelope", "full", key.sign(&full));
    seed("manifest_envelope", "empty", key.sign(&empty));
    seed("manifest_envelope", "other-key", other.sign(&full));
    let batch = edgefleet_common::signing::CanonicalManifest::new(&full);
    let batch2 = edgefleet_common::signing::CanonicalManifest::new(&empty);
    let signed = key.sign_batch(vec![batch, batch2]);
    seed("manifest_envelope", "batch", &signed[0]);
    seed(
        "manifest",
        "full",
        serde_json::to_vec_pretty(&full).expect("json"),
    );
    seed(
        "manifest",
        "empty",
        serde_json::to_vec(&empty).expect("json"),
    );
}

fn bundle_seeds(key: &FleetSigningKey, other: &FleetSigningKey, image: &Image) {
    // Bundles.
    let body = bundle_body(key, false);
    for by_index in [false, true] {
        let path = std::env::temp_dir().join(format!("seed-{}.bundle", std::process::id()));
        std::fs::write(
            &path,
            edgefleet_fuzz::sealed_bundle(&bundle_body(key, by_index)),
        )
        .expect("write");
        let verified =
            edgefleet_agent::parsers::verify_bundle(&path, &key.public_key(), DEVICE, None);
        std::fs::remove_file(&path).expect("remove");
        assert!(verified.is_ok(), "the seed bundle is refused: {verified:?}");
    }
    seed("bundle_import", "image", &body);
    seed("bundle_import", "index", bundle_body(key, true));
    seed("bundle_import", "other-key", bundle_body(other, false));
    let whole = edgefleet_fuzz::sealed_bundle(&body);
    seed("bundle_index", "whole-bundle", &whole);
    seed("bundle_index", "trailer", &whole[whole.len() - 2048..]);
    let index = BundleIndex {
        format: BUNDLE_FORMAT.into(),
        fleet: FLEET.into(),
        created_at_ms: 1,
        devices: [("gw-01".to_owned(), 4), ("gw-02".to_owned(), 9)].into(),
        images: vec![BundleImage {
            reference: format!("127.0.0.1:5000/models/iris@{}", digest(&image.manifest)),
            digest: digest(&image.manifest),
            size: 77,
        }],
    };
    seed(
        "bundle_index",
        "bundle-json",
        serde_json::to_vec(&index).expect("json"),
    );
    seed(
        "bundle_index",
        "blob-path",
        format!("blobs/sha256/{}", "a".repeat(64)),
    );
    seed(
        "bundle_index",
        "reference",
        "127.0.0.1:5000/plant/sensor:1.2@sha256:".to_owned() + &"0".repeat(64),
    );
}

fn iotedge_seeds() {
    // IoT Edge deployment files, from the shared sample set.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/iotedge-samples");
    for entry in std::fs::read_dir(&samples)
        .expect("samples")
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && name != "deployment-schema.json" {
            seed(
                "iotedge_import",
                &name,
                std::fs::read(entry.path()).expect("sample"),
            );
        }
    }
}

fn scoring_seeds() {
    // Scoring bodies, as the tests post them.
    seed(
        "scoring_body",
        "data",
        r#"{"data": [[1,2,3,4,5,6,7,8,9,10]]}"#,
    );
    seed(
        "scoring_body",
        "data-rows",
        r#"{"data": [[0.03, -0.04, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.01, -0.02], [1,2,3,4,5,6,7,8,9,10.5]]}"#,
    );
    seed(
        "scoring_body",
        "named",
        r#"{"X": [[1, 2, 3]], "mask": [[true, false, true]], "scale": 0.5}"#,
    );
    seed(
        "scoring_body",
        "typed",
        r#"{"text": ["a", "b"], "pixels": [[[0, 255], [1, 2]]], "i8": [-128, 127], "u16": [65535], "i16": [-1], "i32": [3.0], "u32": [7], "u64": [18446744073709551615]}"#,
    );
    seed("scoring_body", "map", r#"{"probabilities": [{"0": 0.5}]}"#);
}

fn telemetry_seeds(key: &FleetSigningKey, other: &FleetSigningKey) {
    // Telemetry messages, exports and receipts.
    let all = envelopes();
    for e in &all {
        serde_json::from_value::<edgefleet_common::telemetry::TelemetryEnvelope>(e.clone())
            .unwrap_or_else(|err| panic!("seed envelope {e}: {err}"));
    }
    seed(
        "telemetry_message",
        "one",
        serde_json::to_vec(&all[0]).expect("json"),
    );
    seed(
        "telemetry_message",
        "batch",
        serde_json::to_vec(&all).expect("json"),
    );
    let header = ExportHeader {
        format: EXPORT_FORMAT.into(),
        fleet: FLEET.into(),
        device_id: DEVICE.into(),
        exported_at_ms: 1_700_000_000_000,
        incarnation: Some("0f0f".into()),
        reported: None,
    };
    let mut export = serde_json::to_vec(&header).expect("header");
    export.push(b'\n');
    for e in &all {
        export.extend_from_slice(&serde_json::to_vec(e).expect("json"));
        export.push(b'\n');
    }
    let end = ExportEnd {
        records: all.len() as u64,
        sha256: digest(&export),
    };
    let mut whole_export = export.clone();
    whole_export.extend_from_slice(&serde_json::to_vec(&json!({"end": end})).expect("end"));
    whole_export.push(b'\n');
    edgefleet_fleet::parsers::read_outbox_export(&whole_export, FLEET)
        .expect("the seed export reads");
    seed("outbox_export", "whole", &whole_export);
    seed("outbox_export", "without-end", &export);
    let receipt = TelemetryReceipt {
        fleet: FLEET.into(),
        device_id: DEVICE.into(),
        records: 4,
        new_records: 3,
        committed_seq: 4,
        incarnation: Some("0f0f".into()),
        imported_at_ms: 1_700_000_000_000,
    };
    seed(
        "outbox_receipt",
        "signed",
        serde_json::to_vec(&SignedReceipt::sign(receipt.clone(), key)).expect("json"),
    );
    seed(
        "outbox_receipt",
        "other-key",
        serde_json::to_vec(&SignedReceipt::sign(receipt, other)).expect("json"),
    );
}

fn journal_seeds() {
    // Journal files: two frames that follow each other, then a torn third.
    let json = serde_json::to_vec(&envelopes()[0]).expect("json");
    let mut journal = frame(1, &[(1000, "model", &json), (1001, "model", b"{}")]);
    journal.extend(frame(3, &[(1002, "sensor", &json)]));
    seed("outbox_journal", "two-frames", &journal);
    let mut torn = journal.clone();
    let third = frame(4, &[(1003, "model", &json)]);
    torn.extend_from_slice(&third[..third.len() / 2]);
    seed("outbox_journal", "torn", &torn);
}

fn config_seeds(key: &FleetSigningKey) {
    // Agent configuration: the shipped default and one as `edgefleet-agent init` fills it.
    seed(
        "agent_config",
        "default",
        edgefleet_common::agent_config::DEFAULT_CONFIG,
    );
    let filled = format!(
        "version = 1\ndevice_id = \"{DEVICE}\"\nfleet = \"{FLEET}\"\nfleet_public_key = \"{}\"\ndata_dir = \"/tmp/agent\"\n\n[mqtt]\nurl = \"mqtts://broker.local:8883\"\nusername = \"{DEVICE}\"\npassword = \"secret\"\nca_file = \"/etc/ca.pem\"\n\n[storage]\ncache_budget_bytes = 1000000\n\n[metrics]\nlisten = \"127.0.0.1:9600\"\n",
        key.public_key()
    );
    edgefleet_common::agent_config::AgentConfig::parse(
        Some((Path::new("agent.toml"), &filled)),
        [],
    )
    .expect("the seed configuration is accepted");
    seed("agent_config", "filled", filled);
}

fn oci_seeds(image: &Image) {
    // OCI documents.
    for doc in [&image.manifest, &image.index] {
        edgefleet_agent::parsers::read_oci_document(doc).expect("the seed OCI document reads");
    }
    seed("oci_manifest", "image", &image.manifest);
    seed("oci_manifest", "index", &image.index);
    seed("oci_manifest", "docker-list", serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "digest": digest(b"x"), "size": 1, "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}}]})).expect("json"));
}

fn condition_seeds() {
    // Target conditions, from the grammar's documentation and tests.
    seed(
        "condition",
        "doc",
        "tags.site = 'plant1' AND (tags.line IN ['a', 'b'] OR NOT deviceId != 'gw-07')",
    );
    seed(
        "condition",
        "lower",
        "deviceId = \"gw-01\" and not tags.line = 'b' or tags.x != ''",
    );
}
