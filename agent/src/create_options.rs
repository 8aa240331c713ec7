//! Docker create options of container modules: the documented subset Edgefleet passes to the
//! engine, in Docker's own JSON shape (as Azure IoT Edge's `createOptions`). Anything outside
//! the subset is refused with its name, never silently dropped.

use bollard::models::ContainerCreateBody;
use serde_json::Value;

/// Top-level options passed through.
pub const SUPPORTED: &[&str] = &[
    "Cmd",
    "Entrypoint",
    "Env",
    "ExposedPorts",
    "Healthcheck",
    "HostConfig",
    "Labels",
    "User",
    "WorkingDir",
];

/// `HostConfig` options passed through.
pub const SUPPORTED_HOST_CONFIG: &[&str] = &[
    "Binds",
    "CapAdd",
    "CapDrop",
    "CpuShares",
    "Devices",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "NetworkMode",
    "PortBindings",
    "Privileged",
    "ReadonlyRootfs",
    "Tmpfs",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreateOptionsError {
    #[error("createOptions must be a JSON object")]
    NotAnObject,
    #[error("createOptions.{0} is not supported: the module's restartPolicy decides restarts")]
    RestartPolicy(String),
    #[error("createOptions.{name} is not a supported option (supported: {supported})")]
    Unknown { name: String, supported: String },
    #[error("createOptions is malformed: {0}")]
    Malformed(String),
}

/// Checks `options` against the supported subset and reads it as Docker's create body.
pub fn parse(options: Option<&Value>) -> Result<ContainerCreateBody, CreateOptionsError> {
    let Some(options) = options else {
        return Ok(ContainerCreateBody::default());
    };
    let object = options.as_object().ok_or(CreateOptionsError::NotAnObject)?;
    for key in object.keys() {
        if !SUPPORTED.contains(&key.as_str()) {
            return Err(CreateOptionsError::Unknown {
                name: key.clone(),
                supported: SUPPORTED.join(", "),
            });
        }
    }
    if let Some(host) = object.get("HostConfig") {
        let host = host
            .as_object()
            .ok_or_else(|| CreateOptionsError::Malformed("HostConfig must be an object".into()))?;
        for key in host.keys() {
            if key == "RestartPolicy" || key == "AutoRemove" {
                return Err(CreateOptionsError::RestartPolicy(format!(
                    "HostConfig.{key}"
                )));
            }
            if !SUPPORTED_HOST_CONFIG.contains(&key.as_str()) {
                return Err(CreateOptionsError::Unknown {
                    name: format!("HostConfig.{key}"),
                    supported: SUPPORTED_HOST_CONFIG.join(", "),
                });
            }
        }
    }
    serde_json::from_value(options.clone())
        .map_err(|e| CreateOptionsError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_documented_subset_is_read_into_the_create_body() {
        let body = parse(Some(&json!({
            "Cmd": ["--interval", "100"],
            "HostConfig": {
                "PortBindings": {"8080/tcp": [{"HostPort": "18080"}]},
                "Binds": ["/data:/data:ro"],
                "Memory": 67108864,
                "NanoCpus": 500000000,
                "NetworkMode": "host"
            }
        })))
        .expect("supported");
        assert_eq!(
            body.cmd,
            Some(vec!["--interval".to_owned(), "100".to_owned()])
        );
        let host = body.host_config.expect("host config");
        assert_eq!(host.memory, Some(67_108_864));
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.binds, Some(vec!["/data:/data:ro".to_owned()]));
    }

    #[test]
    fn unknown_options_are_refused_with_their_name() {
        let err = parse(Some(&json!({"Hostname": "x"}))).expect_err("unknown");
        assert!(
            err.to_string()
                .starts_with("createOptions.Hostname is not a supported option"),
            "{err}"
        );
        let err = parse(Some(&json!({"HostConfig": {"Sysctls": {}}}))).expect_err("unknown");
        assert!(err.to_string().contains("HostConfig.Sysctls"), "{err}");
        let err = parse(Some(
            &json!({"HostConfig": {"RestartPolicy": {"Name": "always"}}}),
        ))
        .expect_err("ours");
        assert!(err.to_string().contains("restartPolicy"), "{err}");
    }

    #[test]
    fn malformed_options_say_what_is_wrong() {
        let err = parse(Some(&json!({"HostConfig": {"Memory": "lots"}}))).expect_err("malformed");
        assert!(matches!(err, CreateOptionsError::Malformed(_)), "{err}");
        assert_eq!(
            parse(Some(&json!([1]))),
            Err(CreateOptionsError::NotAnObject)
        );
        assert_eq!(parse(None).expect("none"), ContainerCreateBody::default());
    }
}
