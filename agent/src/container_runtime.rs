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
use edgefleet_common::manifest::{Module, RegistryCredential};
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::create_options;

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

/// The container name of a module.
pub fn container_name(module: &str) -> String {
    format!("edgefleet-{module}")
}

/// The digest of what a container is created from.
pub fn spec_digest(module: &Module) -> String {
    let spec = serde_json::json!({"image": module.image, "env": module.env, "createOptions": module.create_options});
    hex::encode(Sha256::digest(spec.to_string().as_bytes()))
}

impl ContainerRuntime {
    /// Connects to the engine's Unix socket and agrees on an API version; the runtime manages
    /// `device_id`'s containers.
    pub async fn connect(socket: &str, device_id: &str) -> Result<Self, ContainerError> {
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
        })
    }

    /// An engine that stopped answering after the agent connected.
    fn unreachable(&self, e: bollard::errors::Error) -> ContainerError {
        ContainerError::Engine {
            socket: self.socket.clone(),
            reason: e.to_string(),
        }
    }

    pub async fn image_present(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
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
        module: &Module,
        manifest_version: u64,
    ) -> Result<String, ContainerError> {
        let mut body: ContainerCreateBody = create_options::parse(module.create_options.as_ref())?;
        let mut env: Vec<String> = module.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.extend(body.env.take().unwrap_or_default());
        body.env = Some(env);
        body.image = Some(module.image.clone());
        let mut labels: HashMap<String, String> = body.labels.take().unwrap_or_default();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_DEVICE.into(), self.device_id.clone());
        labels.insert(LABEL_MODULE.into(), name.to_owned());
        labels.insert(LABEL_MANIFEST_VERSION.into(), manifest_version.to_string());
        labels.insert(LABEL_SPEC.into(), spec_digest(module));
        body.labels = Some(labels);
        let options = CreateContainerOptions {
            name: Some(container_name(name)),
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
                &container_name(name),
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
            .stop_container(&container_name(name), Some(options))
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
            .remove_container(&container_name(name), Some(options))
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
        let mut stream = self.docker.logs(&container_name(name), Some(options));
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

    /// Removes an image reference; refused by the engine while any container uses it.
    pub async fn remove_image(&self, image: &str) -> Result<(), ContainerError> {
        self.docker
            .remove_image(
                image,
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
        Ok(list.iter().any(|c| c.image.as_deref() == Some(image)))
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
            let (Some(id), Some(labels)) = (summary.id, summary.labels) else {
                continue;
            };
            let Some(module) = labels.get(LABEL_MODULE).cloned() else {
                continue;
            };
            let inspect = self
                .docker
                .inspect_container(
                    &id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await;
            let state = inspect.ok().and_then(|i| i.state);
            out.insert(
                module.clone(),
                OwnedContainer {
                    module,
                    id,
                    image: summary.image.unwrap_or_default(),
                    spec: labels.get(LABEL_SPEC).cloned().unwrap_or_default(),
                    running: state.as_ref().and_then(|s| s.running).unwrap_or(false),
                    exit_code: state.as_ref().and_then(|s| s.exit_code),
                    started_at: state.as_ref().and_then(|s| s.started_at.clone()),
                    unhealthy: state
                        .as_ref()
                        .and_then(|s| s.health.as_ref())
                        .and_then(|h| h.status)
                        .is_some_and(|s| s == HealthStatusEnum::UNHEALTHY),
                },
            );
        }
        Ok(out)
    }
}
