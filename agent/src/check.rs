//! `edgefleet-agent check`: what an operator asks before and after installing the agent on a
//! device. Each [`Check`] is ok, warn or fail, says what it found and, when not ok, what to
//! do. The checks use the configuration and the applied manifest (from the running agent over
//! its control socket, else from its store) and talk to the real broker, registries and
//! Docker engine.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use edgefleet_common::manifest::{Manifest, Module};
use edgefleet_common::module_image::ImageReference;
use edgefleet_common::sealing::DeviceIdentity;
use serde::Serialize;

use crate::broker_login::BrokerLogin;
use crate::config::AgentConfig;
use crate::images::pull_error::PullCause;
use crate::images::registry::RegistryAccess;
use crate::local::control_socket::{ControlAnswer, ControlRequest};

/// How long a network check may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A clock further off than this from a registry's is reported.
const MAX_SKEW: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    /// What to do about it (absent when ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        verdict: Verdict::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn not_ok(
    verdict: Verdict,
    name: &str,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name: name.to_owned(),
        verdict,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Runs every check for `config` (read from `source`).
pub async fn run(config: &AgentConfig, source: &str) -> Vec<Check> {
    edgefleet_transport::install_crypto_provider();
    let mut checks = vec![ok(
        "configuration",
        format!(
            "{source}: device {:?} of fleet {:?}, data in {}",
            config.device_id,
            config.fleet,
            config.data_dir.display()
        ),
    )];
    let identity = device_key(config, &mut checks);
    checks.push(broker(config).await);
    let manifest = applied_manifest(config, &mut checks);
    let registries = registries(config, manifest.as_ref(), identity.as_ref()).await;
    checks.extend(registries);
    checks.push(onnx_runtime(config));
    checks.push(docker(config, manifest.as_ref()).await);
    checks.push(disk(config));
    checks.push(clock(config, manifest.as_ref()).await);
    checks
}

fn device_key(config: &AgentConfig, checks: &mut Vec<Check>) -> Option<DeviceIdentity> {
    let path = config.identity_path();
    let name = "device key";
    let init = "run `edgefleet-agent init` (it creates the key with mode 0600)";
    let read = std::fs::metadata(&path)
        .map_err(|e| e.to_string())
        .and_then(|meta| {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            let identity = text.parse::<DeviceIdentity>().map_err(|e| e.to_string())?;
            Ok((meta, identity))
        });
    let (meta, identity) = match read {
        Ok(read) => read,
        Err(e) => {
            let detail = format!("{}: {e}", path.display());
            checks.push(not_ok(Verdict::Fail, name, detail, init));
            return None;
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    checks.push(if mode & 0o077 == 0 {
        ok(name, format!("{} (mode {mode:o})", path.display()))
    } else {
        not_ok(
            Verdict::Fail,
            name,
            format!(
                "{} has mode {mode:o}: other users can read the device's secret key",
                path.display()
            ),
            format!("chmod 600 {}", path.display()),
        )
    });
    Some(identity)
}

async fn broker(config: &AgentConfig) -> Check {
    let name = "broker";
    let fix = "check mqtt.url, mqtt.username and mqtt.password (the fleet prints them: \
               `edgefleet device config ID`), and that the broker is reachable from here";
    let url = match config.broker() {
        Ok(url) => url,
        Err(e) => return not_ok(Verdict::Fail, name, e.to_string(), fix),
    };
    let mut options = match crate::telemetry::link::mqtt_options(config) {
        Ok(options) => options,
        Err(e) => return not_ok(Verdict::Fail, name, e.to_string(), fix),
    };
    // A running agent keeps its client id (and its store): the check connects beside it with
    // a client id of its own. A stopped agent's login is checked as the agent uses it: the
    // newest password it holds and its client id (mosquitto with dynamic security accepts a
    // device's login with that id only), resuming its session without acknowledging anything.
    let running = crate::local::control_socket::connect(
        &config.control_socket_path(),
        &ControlRequest::AppliedManifest,
    )
    .is_ok();
    if running {
        options
            .set_client_id(format!("edgefleet-{}-check", config.device_id))
            .set_clean_session(true)
            .set_manual_acks(false);
    } else if let Ok(store) = crate::store::Store::open(&config.store_path()) {
        let m = &config.mqtt;
        options = BrokerLogin::new(&m.username, &m.password, store).applied(options);
    }
    let m = &config.mqtt;
    let tls = if url.tls {
        let roots = if m.ca_file.is_empty() {
            "the system's roots".to_owned()
        } else {
            format!("CA {}", m.ca_file)
        };
        let client = if m.client_cert_file.is_empty() {
            String::new()
        } else {
            format!(", client certificate {}", m.client_cert_file)
        };
        format!("TLS (server verified against {roots}{client})")
    } else {
        "without TLS".to_owned()
    };
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    let connected = tokio::time::timeout(TIMEOUT, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    let who = if m.username.is_empty() {
        "without a user name".to_owned()
    } else {
        format!("as {:?}", m.username)
    };
    match connected {
        Ok(Ok(())) => ok(name, format!("{} {tls}: connected {who}", m.url)),
        Ok(Err(e)) if running && e.contains("NotAuthorized") => not_ok(
            Verdict::Warn,
            name,
            format!("{} {tls}, {who}: {e} for the check's own client id", m.url),
            "the agent is running: on mosquitto with dynamic security a device's login works \
             with the agent's client id only, so stop the agent to check its login, or read \
             its log for `connected to the broker`",
        ),
        Ok(Err(e)) => not_ok(
            Verdict::Fail,
            name,
            format!("{} {tls}, {who}: {e}", m.url),
            fix,
        ),
        Err(_) => not_ok(
            Verdict::Fail,
            name,
            format!("{} {tls}: no answer within {}s", m.url, TIMEOUT.as_secs()),
            fix,
        ),
    }
}

/// The applied manifest: from the running agent, else from its store.
fn applied_manifest(config: &AgentConfig, checks: &mut Vec<Check>) -> Option<Manifest> {
    let name = "applied manifest";
    let key = config.fleet_key().ok()?;
    let wire = match crate::local::control_socket::connect(
        &config.control_socket_path(),
        &ControlRequest::AppliedManifest,
    ) {
        Ok(stream) => match serde_json::from_reader(stream) {
            Ok(ControlAnswer::Manifest { wire }) => wire.map(String::into_bytes),
            _ => None,
        },
        Err(_) => crate::store::Store::open(&config.store_path())
            .ok()
            .and_then(|store| store.applied().ok().flatten()),
    };
    let Some(wire) = wire else {
        checks.push(ok(name, "none yet (nothing to check against registries)"));
        return None;
    };
    match key.verify(&wire) {
        Ok(manifest) => {
            checks.push(ok(
                name,
                format!(
                    "version {} with {} module(s)",
                    manifest.version,
                    manifest.modules.len()
                ),
            ));
            Some(manifest)
        }
        Err(e) => {
            checks.push(not_ok(
                Verdict::Fail,
                name,
                e.to_string(),
                "check fleet_public_key against `edgefleet fleet info`",
            ));
            None
        }
    }
}

/// Each registry of the manifest accepts its credentials (one image per registry, manifest
/// only, no layer downloaded).
async fn registries(
    config: &AgentConfig,
    manifest: Option<&Manifest>,
    identity: Option<&DeviceIdentity>,
) -> Vec<Check> {
    let Some(manifest) = manifest else {
        return Vec::new();
    };
    let access = match RegistryAccess::from_config(config) {
        Ok(access) => access,
        Err(e) => {
            return vec![not_ok(
                Verdict::Fail,
                "registries",
                e.to_string(),
                "fix registry.ca_file",
            )];
        }
    };
    let mut checks = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for module in manifest.modules.values() {
        if let Module::Container(c) = module
            && !c.image_pull_policy.is_on_create()
        {
            continue;
        }
        let image = module.image();
        let Some(host) = image.parse::<ImageReference>().ok().map(|r| r.registry) else {
            continue;
        };
        if !done.insert(host.clone()) {
            continue;
        }
        let name = format!("registry {host}");
        let credential = manifest.credential_for_image(image);
        let password = match (credential, identity) {
            (Some(c), Some(identity)) => match identity.unseal(&c.password) {
                Ok(password) => Some(password),
                Err(e) => {
                    checks.push(not_ok(
                        Verdict::Fail,
                        &name,
                        format!("the password sealed for this device does not open: {e}"),
                        "the device key changed since the fleet sealed it: register the new public key (`edgefleet device add ID --public-key ...`)",
                    ));
                    continue;
                }
            },
            _ => None,
        };
        let login = credential.zip(password.as_deref());
        let who = credential.map_or("anonymously".to_owned(), |c| format!("as {:?}", c.username));
        checks.push(match access.image_bytes(image, login).await {
            Ok(_) => ok(&name, format!("{image} readable {who}")),
            Err(e) => {
                let fix = match &e.cause {
                    PullCause::Unauthorized { .. } => {
                        "update the registry's password in the fleet (`edgefleet registry add`); devices get it sealed with their next manifest"
                    }
                    PullCause::NotFound(_) => "package or push the image again",
                    _ => "check that the registry is reachable from here (registry.insecure for plain HTTP, registry.ca_file for a private CA)",
                };
                not_ok(Verdict::Fail, &name, e.to_string(), fix)
            }
        });
    }
    checks
}

fn onnx_runtime(config: &AgentConfig) -> Check {
    let name = "ONNX Runtime";
    let library = &config.onnx_runtime_library;
    match edgefleet_onnx::OnnxRuntime::load(library) {
        Ok(_) => ok(name, format!("{} loads", library.display())),
        Err(e) => not_ok(
            Verdict::Fail,
            name,
            e.to_string(),
            "set onnx_runtime_library to the onnxruntime shared library (the package installs it)",
        ),
    }
}

async fn docker(config: &AgentConfig, manifest: Option<&Manifest>) -> Check {
    let name = "Docker engine";
    let socket = &config.docker.socket;
    let needed = manifest.is_some_and(|m| {
        m.modules
            .values()
            .any(|module| matches!(module, Module::Container(_)))
    });
    let connected = async {
        let docker = bollard::Docker::connect_with_unix(socket, 10, bollard::API_DEFAULT_VERSION)
            .map_err(|e| e.to_string())?;
        docker.version().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(TIMEOUT, connected).await {
        Ok(Ok(version)) => ok(
            name,
            format!(
                "{socket}: Docker {} (API {})",
                version.version.unwrap_or_default(),
                version.api_version.unwrap_or_default()
            ),
        ),
        result => {
            let error = match result {
                Ok(Err(e)) => e,
                _ => format!("no answer within {}s", TIMEOUT.as_secs()),
            };
            let verdict = if needed { Verdict::Fail } else { Verdict::Warn };
            let detail = if needed {
                format!("{socket}: {error}; the applied manifest has container modules")
            } else {
                format!("{socket}: {error}; container modules cannot run here")
            };
            not_ok(
                verdict,
                name,
                detail,
                "start the engine, or set docker.socket (the agent's user must be able to use it)",
            )
        }
    }
}

fn disk(config: &AgentConfig) -> Check {
    let name = "disk";
    let s = &config.storage;
    let reserve = config.telemetry.outbox_max_bytes;
    let dir = &config.data_dir;
    let free = match existing_ancestor(dir).map(fs4::available_space) {
        Some(Ok(free)) => free,
        Some(Err(e)) => {
            return not_ok(
                Verdict::Fail,
                name,
                format!("{}: {e}", dir.display()),
                "check the data directory",
            );
        }
        None => {
            return not_ok(
                Verdict::Fail,
                name,
                format!("{}: no such directory", dir.display()),
                "run `edgefleet-agent init`",
            );
        }
    };
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let detail = format!(
        "{} free on {} (min_free_bytes {}), budget_bytes {} of which the outbox reserves {}",
        mib(free),
        dir.display(),
        mib(s.min_free_bytes),
        mib(s.budget_bytes),
        mib(reserve)
    );
    if s.budget_bytes <= reserve {
        not_ok(
            Verdict::Fail,
            name,
            detail,
            "storage.budget_bytes must exceed telemetry.outbox_max_bytes, or nothing can be pulled",
        )
    } else if free <= s.min_free_bytes {
        not_ok(
            Verdict::Fail,
            name,
            detail,
            "free disk space: every pull and import is refused",
        )
    } else if free < s.min_free_bytes.saturating_add(reserve) {
        not_ok(
            Verdict::Warn,
            name,
            detail,
            "the outbox may not find room for its reserve while offline: free disk space or lower telemetry.outbox_max_bytes",
        )
    } else {
        ok(name, detail)
    }
}

fn existing_ancestor(dir: &Path) -> Option<&Path> {
    dir.ancestors().find(|p| p.exists())
}

/// The clock against a registry's (the `Date` of its answer).
async fn clock(config: &AgentConfig, manifest: Option<&Manifest>) -> Check {
    let name = "clock";
    let hosts: Vec<String> = manifest
        .map(|m| {
            m.modules
                .values()
                .filter_map(|module| module.image().parse::<ImageReference>().ok())
                .map(|r| r.registry)
                .collect()
        })
        .unwrap_or_default();
    let Some(host) = hosts.first() else {
        return not_ok(
            Verdict::Warn,
            name,
            "not compared: no registry known yet",
            "keep the clock synchronized (NTP); TLS and telemetry times depend on it",
        );
    };
    let scheme = if config.registry.insecure.contains(host) {
        "http"
    } else {
        "https"
    };
    let url = format!("{scheme}://{host}/v2/");
    let answered = async {
        let mut client = reqwest::Client::builder().timeout(TIMEOUT);
        if let Some(pem) = RegistryAccess::from_config(config)
            .ok()
            .and_then(|a| a.extra_ca_pem)
            && let Ok(cert) = reqwest::Certificate::from_pem(&pem)
        {
            client = client.add_root_certificate(cert);
        }
        let response = client.build()?.get(&url).send().await?;
        Ok::<_, reqwest::Error>(response.headers().get(reqwest::header::DATE).cloned())
    };
    let date = match answered.await {
        Ok(Some(date)) => date,
        Ok(None) | Err(_) => {
            return not_ok(
                Verdict::Warn,
                name,
                format!("not compared: {url} gave no time"),
                "keep the clock synchronized (NTP)",
            );
        }
    };
    let Some(theirs) = date
        .to_str()
        .ok()
        .and_then(|d| httpdate::parse_http_date(d).ok())
    else {
        return not_ok(
            Verdict::Warn,
            name,
            format!("not compared: {url} sent an unreadable Date"),
            "keep the clock synchronized (NTP)",
        );
    };
    let now = std::time::SystemTime::now();
    let (skew, ahead) = match now.duration_since(theirs) {
        Ok(d) => (d, true),
        Err(e) => (e.duration(), false),
    };
    let detail = format!(
        "{}s {} {host}'s clock",
        skew.as_secs(),
        if ahead { "ahead of" } else { "behind" }
    );
    if skew > MAX_SKEW {
        not_ok(
            Verdict::Warn,
            name,
            detail,
            "synchronize the clock (NTP): certificates and telemetry times depend on it",
        )
    } else {
        ok(name, detail)
    }
}
