//! The puller against a real registry with authentication: digests verified, cached layers
//! never fetched again, interrupted downloads resumed, the disk budget checked first.

use edgefleet_agent::images::disk_budget::{DiskBudget, Usage};
use edgefleet_agent::images::pull_error::PullCause;
use edgefleet_agent::images::puller::{Puller, PullerSettings};
use edgefleet_agent::images::registry::RegistryAccess;
use edgefleet_agent::store::Store;
use edgefleet_common::manifest::RegistryCredential;
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_tests::{OciLayout, Registry, http_client, model_dir, skopeo_push};

struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    store: Store,
    credential: RegistryCredential,
}

fn setup() -> Setup {
    let registry = Registry::start("edge", "edge-pass");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("agent.redb")).expect("store");
    let credential = RegistryCredential {
        address: registry.address(),
        username: "edge".into(),
        password: DeviceIdentity::generate()
            .public_key()
            .seal("unused")
            .expect("seal"),
    };
    Setup {
        registry,
        dir,
        store,
        credential,
    }
}

impl Setup {
    fn puller(&self, budget: u64) -> Puller {
        Puller::new(
            PullerSettings {
                blobs_dir: self.dir.path().join("blobs"),
                registries: RegistryAccess {
                    insecure: vec![self.registry.address()],
                    extra_ca_pem: None,
                },
                budget: DiskBudget {
                    budget_bytes: budget,
                    min_free_bytes: 0,
                },
            },
            self.store.clone(),
        )
    }

    fn push(&self, repository: &str, tag: &str, model: &str, label: &str) -> (OciLayout, String) {
        let bytes = std::fs::read(model_dir(model).join("model.onnx")).expect("model");
        let layout = OciLayout::model_module(&bytes, None, &[("org.edgefleet.model.name", label)]);
        skopeo_push(
            &layout,
            &self.registry,
            repository,
            tag,
            "edge",
            "edge-pass",
        )
        .expect("push");
        let image = format!(
            "{}/{repository}@{}",
            self.registry.address(),
            layout.manifest_digest
        );
        (layout, image)
    }

    fn blob_path(&self, digest: &str) -> std::path::PathBuf {
        self.dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio")
}

#[test]
fn a_layer_already_in_the_cache_is_never_fetched_again() {
    let s = setup();
    let (first, image_a) = s.push("models/x", "1", "diabetes", "a");
    let (second, image_b) = s.push("models/x", "2", "diabetes", "b");
    assert_eq!(
        first.layer_digest, second.layer_digest,
        "same model, same layer"
    );
    assert_ne!(image_a, image_b, "different images");
    let puller = s.puller(u64::MAX);
    let creds = Some((&s.credential, "edge-pass"));
    let pulled = runtime()
        .block_on(puller.pull_model(&image_a, creds, Usage::default()))
        .expect("pull a");
    assert_eq!(
        pulled.model,
        std::fs::read(model_dir("diabetes").join("model.onnx")).expect("model")
    );

    // The registry loses the layer; the second image still pulls, from the cache.
    let url = format!(
        "{}/v2/models/x/blobs/{}",
        s.registry.base_url(),
        first.layer_digest
    );
    let deleted = http_client()
        .delete(&url)
        .basic_auth("edge", Some("edge-pass"))
        .send()
        .expect("DELETE");
    assert_eq!(deleted.status(), 202);
    let pulled = runtime()
        .block_on(puller.pull_model(&image_b, creds, Usage::default()))
        .expect("pull b from cache");
    assert_eq!(pulled.blobs[0], first.layer_digest);
}

#[test]
fn an_image_whose_manifest_and_layers_are_cached_is_pulled_again_without_its_registry() {
    let s = setup();
    let (_, image) = s.push("models/z", "1", "diabetes", "z");
    let puller = s.puller(u64::MAX);
    let creds = Some((&s.credential, "edge-pass"));
    let first = runtime()
        .block_on(puller.pull_model(&image, creds, Usage::default()))
        .expect("pull");
    drop(s.registry);
    let again = runtime()
        .block_on(puller.pull_model(&image, creds, Usage::default()))
        .expect("pulled from the cache alone");
    assert_eq!((again.model, again.blobs), (first.model, first.blobs));
}

#[test]
fn an_interrupted_download_resumes_and_corrupt_bytes_are_refused() {
    let s = setup();
    let (layout, image) = s.push("models/y", "1", "digits", "y");
    let layer = layout.blob(&layout.layer_digest);
    let puller = s.puller(u64::MAX);
    let creds = Some((&s.credential, "edge-pass"));
    let partial = s.blob_path(&layout.layer_digest).with_extension("partial");
    std::fs::create_dir_all(partial.parent().expect("parent")).expect("cache dir");

    // A partial file with wrong bytes: only the rest is fetched, so the digest cannot match.
    std::fs::write(&partial, vec![0u8; layer.len() / 2]).expect("write partial");
    let err = runtime()
        .block_on(puller.pull_model(&image, creds, Usage::default()))
        .expect_err("corrupt resume");
    assert!(
        matches!(err.cause, PullCause::DigestMismatch { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&s.registry.address()) && message.contains(&layout.layer_digest),
        "{message}"
    );
    assert!(!partial.exists(), "the corrupt partial file is removed");

    // A partial file with the right first half resumes to the right blob.
    std::fs::write(&partial, &layer[..layer.len() / 2]).expect("write partial");
    runtime()
        .block_on(puller.pull_model(&image, creds, Usage::default()))
        .expect("resumed pull");
    assert_eq!(
        std::fs::read(s.blob_path(&layout.layer_digest)).expect("cached"),
        layer
    );
}

#[test]
fn a_pull_over_the_disk_budget_is_refused_before_anything_is_downloaded() {
    let s = setup();
    let (layout, image) = s.push("models/z", "1", "digits", "z");
    let puller = s.puller(100);
    let err = runtime()
        .block_on(puller.pull_model(&image, Some((&s.credential, "edge-pass")), Usage::default()))
        .expect_err("over budget");
    assert!(
        matches!(&err.cause, PullCause::DiskBudget(over) if over.available == 100),
        "{err}"
    );
    assert!(err.to_string().contains("storage.budget_bytes"), "{err}");
    assert!(!s.blob_path(&layout.layer_digest).exists());
}

#[test]
fn unreferenced_blobs_are_removed_and_referenced_ones_kept() {
    let s = setup();
    let (a, image_a) = s.push("models/a", "1", "diabetes", "a");
    let (b, image_b) = s.push("models/b", "1", "digits", "b");
    let puller = s.puller(u64::MAX);
    let creds = Some((&s.credential, "edge-pass"));
    let pulled_a = runtime()
        .block_on(puller.pull_model(&image_a, creds, Usage::default()))
        .expect("pull a");
    runtime()
        .block_on(puller.pull_model(&image_b, creds, Usage::default()))
        .expect("pull b");
    // Each image left its manifest and its layer in the cache.
    assert_eq!(pulled_a.blobs.len(), 2);
    assert_eq!(puller.collect_garbage(&pulled_a.blobs).expect("gc"), 2);
    assert!(s.blob_path(&a.layer_digest).exists());
    assert!(!s.blob_path(&b.layer_digest).exists());
    assert_eq!(s.store.blobs().expect("index").len(), 2);
}

#[test]
fn an_image_that_is_not_pinned_or_does_not_exist_is_named() {
    let s = setup();
    let puller = s.puller(u64::MAX);
    let creds = Some((&s.credential, "edge-pass"));
    let tagged = format!("{}/models/none:1", s.registry.address());
    let err = runtime()
        .block_on(puller.pull_model(&tagged, creds, Usage::default()))
        .expect_err("tag only");
    assert!(matches!(err.cause, PullCause::NotPinned), "{err}");
    let missing = format!(
        "{}/models/none@sha256:{}",
        s.registry.address(),
        "0".repeat(64)
    );
    let err = runtime()
        .block_on(puller.pull_model(&missing, creds, Usage::default()))
        .expect_err("missing");
    assert!(matches!(err.cause, PullCause::NotFound(_)), "{err}");
}
