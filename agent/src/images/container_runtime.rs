//! Container modules on the device's Docker engine (bollard): pull with the manifest's
//! credentials, create with environment, labels and the supported create options, start, stop,
//! remove, and find the containers the agent owns (by label) to adopt them after a restart.
//! Registry passwords go to the engine's pull API only: never into a container's environment,
//! labels or logs.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use edgefleet_common::manifest::{ContainerSpec, RegistryCredential};
use edgefleet_common::topics::DeviceTopics;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use edgefleet_common::bundle::loaded_image_tag;
use edgefleet_common::create_options;

use crate::images::saved_image::ChunkWriter;
pub use crate::images::saved_image::SavedImage;

/// Labels on every container the agent creates.
pub const LABEL_MANAGED: &str = "org.edgefleet.managed";
/// The device whose agent owns the container (an engine may serve several agents, as in tests
/// and labs); an agent only ever touches its own device's containers.
pub const LABEL_DEVICE: &str = "org.edgefleet.device";
pub const LABEL_MODULE: &str = "org.edgefleet.module";
pub const LABEL_MANIFEST_VERSION: &str = "org.edgefleet.manifest-version";
/// Digest of what the container was created from (image, env, create options): a different
/// value means the container must be created again.
pub const LABEL_SPEC: &str = "org.edgefleet.spec";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(
        "cannot reach the Docker engine at {socket}: {reason} (check docker.socket in the agent config)"
    )]
    Engine { socket: String, reason: String },
    #[error("pulling {image} from registry {registry}: {cause}")]
    Pull {
        registry: String,
        image: String,
        cause: String,
    },
    #[error(transparent)]
    CreateOptions(#[from] create_options::CreateOptionsError),
    #[error("module {module}: {action} failed: {reason}")]
    Docker {
        module: String,
        action: &'static str,
        reason: String,
    },
}

/// A container the agent created, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedContainer {
    pub module: String,
    pub id: String,
    pub image: String,
    pub spec: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub started_at: Option<String>,
    pub unhealthy: bool,
}

/// The Docker engine, as the agent uses it.
#[derive(Debug, Clone)]
pub struct ContainerRuntime {
    docker: Docker,
    /// The engine's socket, for errors.
    socket: String,
    device_id: String,
    /// The prefix of the device's model input topics (`.../inputs`), told to every container.
    inputs_topic: String,
}

/// `result`, with the engine's `status_code` counting as success (the state asked for holds).
fn tolerate(
    result: Result<(), bollard::errors::Error>,
    status_code: u16,
    module: &str,
    action: &'static str,
) -> Result<(), ContainerError> {
    match result {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: code, ..
        }) if code == status_code => Ok(()),
        Err(e) => Err(ContainerError::Docker {
            module: module.to_owned(),
            action,
            reason: e.to_string(),
        }),
    }
}

/// The container name of a module of device `device_id`: devices sharing an engine (tests,
/// labs, several agents on one host) may run modules of the same name.
pub fn container_name(device_id: &str, module: &str) -> String {
    format!("edgefleet-{device_id}-{module}")
}

/// The digest of what a container is created from.
pub fn spec_digest(module: &ContainerSpec) -> String {
    let spec = serde_json::json!({"image": module.image, "env": module.env, "createOptions": module.create_options});
    hex::encode(Sha256::digest(spec.to_string().as_bytes()))
}

impl ContainerRuntime {
    /// Connects to the engine's Unix socket and agrees on an API version; the runtime manages
    /// the containers of device `topics`.
    pub async fn connect(
        socket: &str,
        device_id: &str,
        topics: &DeviceTopics,
    ) -> Result<Self, ContainerError> {
        let fail = |reason: String| ContainerError::Engine {
            socket: socket.to_owned(),
            reason,
        };
        let docker = Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| fail(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            docker,
            socket: socket.to_owned(),
            device_id: device_id.to_owned(),
            inputs_topic: topics.input("").trim_end_matches('/').to_owned(),
        })
    }

    /// An engine that stopped answering after the agent connected.
    fn unreachable(&self, e: bollard::errors::Error) -> ContainerError {
        ContainerError::Engine {
            socket: self.socket.clone(),
            reason: e.to_string(),
        }
    }

    /// The name the engine knows `image` by: the reference itself once pulled, or the tag a
    /// bundle import gave it ([`loaded_image_tag`]); `None` when the image is not here.
    pub async fn local_image(&self, image: &str) -> Option<String> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Some(image.to_owned());
        }
        let tag = loaded_image_tag(image)?;
        self.docker.inspect_image(&tag).await.ok().map(|_| tag)
    }

    pub async fn image_present(&self, image: &str) -> bool {
        self.local_image(image).await.is_some()
    }

    /// Loads an image from a bundle file (as `docker load` does, from the `docker save`
    /// archive [`SavedImage`] describes, streamed from the file) and checks that the engine
    /// now has it under its tag with the config's digest as its id.
    pub async fn load_image(&self, image: SavedImage) -> Result<(), ContainerError> {
        let fail = |reason: String| ContainerError::Docker {
            module: image.tag.clone(),
            action: "image load",
            reason,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(4);
        let writer = {
            let image = image.clone();
            tokio::task::spawn_blocking(move || {
                let out =
                    std::io::BufWriter::with_capacity(1 << 16, ChunkWriter { tx: tx.clone() });
                let result = image.write_archive(out);
                if let Err(e) = result {
                    let _ = tx.blocking_send(Err(e));
                }
            })
        };
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let options = bollard::query_parameters::ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut progress = self.docker.import_image_stream(options, body, None);
        while let Some(info) = progress.next().await {
            let info = info.map_err(|e| fail(e.to_string()))?;
            if let Some(detail) = info.error_detail {
                return Err(fail(detail.message.unwrap_or_default()));
            }
        }
        let _ = writer.await;
        let loaded = self
            .docker
            .inspect_image(&image.tag)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if loaded.id.as_deref() != Some(image.config.as_str()) {
            return Err(fail(format!(
                "the engine loaded image {:?}, expected {}",
                loaded.id, image.config
            )));
        }
        Ok(())
    }

    /// The bytes of the images the agent's containers use.
    pub async fn images_bytes(&self) -> Result<u64, ContainerError> {
        let images: std::collections::BTreeSet<String> =
            self.owned().await?.into_values().map(|c| c.image).collect();
        let mut total = 0u64;
        for image in images {
            if let Ok(inspect) = self.docker.inspect_image(&image).await {
                total += inspect.size.unwrap_or(0).max(0) as u64;
            }
        }
        Ok(total)
    }

    /// The bytes free where the engine keeps images, when the agent can see that directory
    /// (not from inside a container without it mounted).
    pub async fn free_bytes(&self) -> Option<u64> {
        let info = self.docker.info().await.ok()?;
        fs4::available_space(info.docker_root_dir?).ok()
    }

    /// Pulls `image` with `credential` and its unsealed `password`.
    pub async fn pull(
        &self,
        image: &str,
        credential: Option<(&RegistryCredential, &str)>,
    ) -> Result<(), ContainerError> {
        let registry = image.split('/').next().unwrap_or_default().to_owned();
        let credentials = credential.map(|(c, password)| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(password.to_owned()),
            serveraddress: Some(c.address.clone()),
            ..DockerCredentials::default()
        });
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..CreateImageOptions::default()
        };
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        while let Some(progress) = stream.next().await {
            if let Err(e) = progress {
                let who = credential.map_or("anonymous access".to_owned(), |(c, _)| {
                    format!("user {:?}", c.username)
                });
                let reason = e.to_string();
                let cause = if reason.contains("unauthorized")
                    || reason.contains("401")
                    || reason.contains("no basic auth")
                {
                    format!("unauthorized: the registry refused {who}")
                } else {
                    reason
                };
                return Err(ContainerError::Pull {
                    registry,
                    image: image.to_owned(),
                    cause,
                });
            }
        }
        Ok(())
    }

    /// Creates (not starts) the container of `name`.
    pub async fn create(
        &self,
        name: &str,
        module: &ContainerSpec,
        manifest_version: u64,
    ) -> Result<String, ContainerError> {
        let mut body: ContainerCreateBody = create_options::parse(module.create_options.as_ref())?;
        // What the module needs to know about where it runs, as IoT Edge tells its modules
        // (IOTEDGE_DEVICEID, IOTEDGE_MODULEID); the manifest's own variables come after and win.
        let mut env = vec![
            format!("EDGEFLEET_DEVICE_ID={}", self.device_id),
            format!("EDGEFLEET_MODULE={name}"),
            format!("EDGEFLEET_INPUTS_TOPIC={}", self.inputs_topic),
        ];
        env.extend(module.env.iter().map(|(k, v)| format!("{k}={v}")));
        env.extend(body.env.take().unwrap_or_default());
        body.env = Some(env);
        body.image = Some(
            self.local_image(&module.image)
                .await
                .unwrap_or_else(|| module.image.clone()),
        );
        let mut labels: HashMap<String, String> = body.labels.take().unwrap_or_default();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_DEVICE.into(), self.device_id.clone());
        labels.insert(LABEL_MODULE.into(), name.to_owned());
        labels.insert(LABEL_MANIFEST_VERSION.into(), manifest_version.to_string());
        labels.insert(LABEL_SPEC.into(), spec_digest(module));
        body.labels = Some(labels);
        let options = CreateContainerOptions {
            name: Some(container_name(&self.device_id, name)),
            ..CreateContainerOptions::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| ContainerError::Docker {
                module: name.to_owned(),
                action: "create",
                reason: e.to_string(),
            })?;
        Ok(created.id)
    }

    pub async fn start(&self, name: &str) -> Result<(), ContainerError> {
        self.docker
            .start_container(
                &container_name(&self.device_id, name),
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| ContainerError::Docker {
                module: name.to_owned(),
                action: "start",
                reason: e.to_string(),
            })
    }

    pub async fn stop(&self, name: &str) -> Result<(), ContainerError> {
        let options = StopContainerOptions {
            t: Some(10),
            ..StopContainerOptions::default()
        };
        let result = self
            .docker
            .stop_container(&container_name(&self.device_id, name), Some(options))
            .await;
        // 304: already stopped.
        tolerate(result, 304, name, "stop")
    }

    pub async fn remove(&self, name: &str) -> Result<(), ContainerError> {
        let options = RemoveContainerOptions {
            force: true,
            ..RemoveContainerOptions::default()
        };
        let result = self
            .docker
            .remove_container(&container_name(&self.device_id, name), Some(options))
            .await;
        // 404: already gone.
        tolerate(result, 404, name, "remove")
    }

    /// The last `tail` lines of a module's output (stdout and stderr) since `since` (Unix
    /// seconds, 0 for all), cut to the newest `max_bytes`.
    pub async fn logs(
        &self,
        name: &str,
        tail: u64,
        since: i64,
        max_bytes: usize,
    ) -> Result<String, ContainerError> {
        let options = bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            since: i32::try_from(since).unwrap_or(0),
            ..bollard::query_parameters::LogsOptions::default()
        };
        let mut stream = self
            .docker
            .logs(&container_name(&self.device_id, name), Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ContainerError::Docker {
                module: name.to_owned(),
                action: "logs",
                reason: e.to_string(),
            })?;
            out.extend_from_slice(chunk.into_bytes().as_ref());
        }
        let start = out.len().saturating_sub(max_bytes);
        Ok(String::from_utf8_lossy(&out[start..]).into_owned())
    }

    /// Removes an image (by the name the engine knows it by); refused by the engine while any
    /// container uses it. An image no longer here is not an error.
    pub async fn remove_image(&self, image: &str) -> Result<(), ContainerError> {
        let Some(local) = self.local_image(image).await else {
            return Ok(());
        };
        self.docker
            .remove_image(
                &local,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
            .map(|_| ())
            .map_err(|e| ContainerError::Docker {
                module: image.to_owned(),
                action: "image removal",
                reason: e.to_string(),
            })
    }

    /// Whether any container of the engine (the agent's or not) was created from `image`.
    pub async fn image_in_use(&self, image: &str) -> Result<bool, ContainerError> {
        let options = ListContainersOptions {
            all: true,
            ..ListContainersOptions::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.unreachable(e))?;
        let loaded = loaded_image_tag(image);
        Ok(list
            .iter()
            .any(|c| c.image.as_deref() == Some(image) || (loaded.is_some() && c.image == loaded)))
    }

    /// The containers the agent owns, by module name.
    pub async fn owned(&self) -> Result<BTreeMap<String, OwnedContainer>, ContainerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_DEVICE}={}", self.device_id),
            ],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..ListContainersOptions::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut out = BTreeMap::new();
        for summary in list {
            if let Some(id) = summary.id
                && let Some(owned) = self.inspect_owned(&id).await?
            {
                // Agents before per-device names called it `edgefleet-<module>`: renamed in
                // place, it is adopted without a restart.
                let name = container_name(&self.device_id, &owned.module);
                let names = summary.names.unwrap_or_default();
                if !names.iter().any(|n| n.trim_start_matches('/') == name) {
                    let options = bollard::query_parameters::RenameContainerOptions { name };
                    self.docker
                        .rename_container(&id, options)
                        .await
                        .map_err(|e| self.unreachable(e))?;
                }
                out.insert(owned.module.clone(), owned);
            }
        }
        Ok(out)
    }

    /// The container of module `name`, when the agent owns one.
    pub async fn inspect_module(
        &self,
        name: &str,
    ) -> Result<Option<OwnedContainer>, ContainerError> {
        self.inspect_owned(&container_name(&self.device_id, name))
            .await
    }

    /// The container `id` (or name), when it exists and belongs to this device's agent.
    async fn inspect_owned(&self, id: &str) -> Result<Option<OwnedContainer>, ContainerError> {
        let inspect = match self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(inspect) => inspect,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(self.unreachable(e)),
        };
        let config = inspect.config.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        let ours = labels.get(LABEL_MANAGED).is_some_and(|v| v == "true")
            && labels.get(LABEL_DEVICE) == Some(&self.device_id);
        let (Some(module), Some(id), true) = (labels.get(LABEL_MODULE).cloned(), inspect.id, ours)
        else {
            return Ok(None);
        };
        let state = inspect.state.unwrap_or_default();
        Ok(Some(OwnedContainer {
            module,
            id,
            image: config.image.unwrap_or_default(),
            spec: labels.get(LABEL_SPEC).cloned().unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            started_at: state.started_at.clone(),
            unhealthy: state
                .health
                .and_then(|h| h.status)
                .is_some_and(|s| s == HealthStatusEnum::UNHEALTHY),
        }))
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as Docker writes it
/// (`2026-11-21T20:26:15.382889Z`).
pub fn unix_millis(time: &str) -> Option<u64> {
    let (date, rest) = time.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let clock = rest.trim_end_matches('Z');
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let millis: i64 = fraction
        .get(..3.min(fraction.len()))
        .and_then(|f| format!("{f:0<3}").parse().ok())
        .unwrap_or(0);
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + millis).ok()
}

#[cfg(test)]
mod tests {
    use super::unix_millis;

    #[test]
    fn docker_times_convert_to_unix_millis() {
        assert_eq!(unix_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_millis("2026-11-21T20:26:15.382889Z"),
            Some(1_795_292_775_382)
        );
        assert_eq!(unix_millis("garbage"), None);
    }
}
