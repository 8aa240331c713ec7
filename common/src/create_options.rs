//! Docker create options of container modules, in Docker's own JSON shape (as Azure IoT Edge's
//! `createOptions`). Every option of Docker's container create API is passed through except the
//! few the agent owns (the image it pinned, restarts); a member Docker does not know, at any
//! depth, is refused with its path, never silently dropped. The fleet checks a deployment's
//! options when it is saved or imported, the agent again before it applies a manifest.

use bollard_stubs::models::ContainerCreateBody;
use serde_json::Value;

/// Options the agent sets itself, with what decides them instead.
const OWNED_BY_THE_AGENT: &[(&str, &str)] = &[
    ("Image", "the module's image decides it"),
    (
        "HostConfig.RestartPolicy",
        "the module's restartPolicy decides restarts",
    ),
    (
        "HostConfig.AutoRemove",
        "the module's restartPolicy decides restarts",
    ),
];

/// Labels under this prefix identify the agent's containers.
const AGENT_LABEL_PREFIX: &str = "org.edgefleet.";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreateOptionsError {
    #[error("createOptions must be a JSON object in Docker's container create shape")]
    NotAnObject,
    #[error("createOptions.{name} cannot be set: {reason}")]
    OwnedByTheAgent { name: String, reason: String },
    #[error(
        "createOptions.{0} is not an option of Docker's container create API (names are case-sensitive)"
    )]
    Unknown(String),
    #[error("createOptions is malformed: {0}")]
    Malformed(String),
}

/// Checks `options` and reads them as Docker's create body (`None`: no options).
pub fn parse(options: Option<&Value>) -> Result<ContainerCreateBody, CreateOptionsError> {
    let Some(options) = options else {
        return Ok(ContainerCreateBody::default());
    };
    if !options.is_object() {
        return Err(CreateOptionsError::NotAnObject);
    }
    for (path, reason) in OWNED_BY_THE_AGENT {
        if member(options, path).is_some_and(|v| !v.is_null()) {
            return Err(CreateOptionsError::OwnedByTheAgent {
                name: (*path).to_owned(),
                reason: (*reason).to_owned(),
            });
        }
    }
    if let Some(label) = member(options, "Labels")
        .and_then(Value::as_object)
        .and_then(|labels| labels.keys().find(|k| k.starts_with(AGENT_LABEL_PREFIX)))
    {
        return Err(CreateOptionsError::OwnedByTheAgent {
            name: format!("Labels.{label}"),
            reason: format!("labels under {AGENT_LABEL_PREFIX} belong to the agent"),
        });
    }
    let body: ContainerCreateBody = serde_path_to_error::deserialize(options.clone())
        .map_err(|e| CreateOptionsError::Malformed(format!("{}: {}", e.path(), e.inner())))?;
    // Docker's model ignores members it does not know: what did not survive the round trip
    // was not understood.
    let understood =
        serde_json::to_value(&body).map_err(|e| CreateOptionsError::Malformed(e.to_string()))?;
    if let Some(path) = first_dropped(options, &understood, "") {
        return Err(CreateOptionsError::Unknown(path));
    }
    Ok(body)
}

/// The member at a dotted path.
fn member<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// The path of the first non-null member of `input` missing from `output`.
fn first_dropped(input: &Value, output: &Value, path: &str) -> Option<String> {
    match (input, output) {
        (Value::Object(input), Value::Object(output)) => input.iter().find_map(|(key, value)| {
            if value.is_null() {
                return None;
            }
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match output.get(key) {
                None => Some(path),
                Some(kept) => first_dropped(value, kept, &path),
            }
        }),
        (Value::Array(input), Value::Array(output)) => input
            .iter()
            .zip(output)
            .enumerate()
            .find_map(|(i, (value, kept))| first_dropped(value, kept, &format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn docker_create_options_are_read_into_the_create_body() {
        let body = parse(Some(&json!({
            "Cmd": ["--interval", "100"],
            "ExposedPorts": {"9600/tcp": {}},
            "HostConfig": {
                "PortBindings": {"8080/tcp": [{"HostPort": "18080"}]},
                "Binds": ["/data:/data:ro"],
                "Memory": 67108864,
                "NanoCpus": 500000000,
                "NetworkMode": "host",
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "4m"}},
                "Devices": [{"PathOnHost": "/dev/video0", "PathInContainer": "/dev/video0", "CgroupPermissions": "rwm"}]
            },
            "NetworkingConfig": {"EndpointsConfig": {"host": {}}}
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
    fn unknown_members_are_refused_with_their_path_at_any_depth() {
        let err = parse(Some(&json!({"Hostnme": "x"}))).expect_err("unknown");
        assert_eq!(err, CreateOptionsError::Unknown("Hostnme".into()));
        let err = parse(Some(&json!({"HostConfig": {"Devices": [
            {"PathOnHost": "/dev/a", "PathInContainer": "/dev/a"},
            {"PathOnHost": "/dev/nvmap", "PathnContainer": "/dev/nvmap"}
        ]}})))
        .expect_err("typo");
        assert_eq!(
            err,
            CreateOptionsError::Unknown("HostConfig.Devices[1].PathnContainer".into())
        );
        assert!(
            parse(Some(&json!({"HostConfig": {"NanoCPUs": 1}})))
                .expect_err("case")
                .to_string()
                .contains("case-sensitive")
        );
    }

    #[test]
    fn options_the_agent_owns_are_refused_saying_what_decides_them() {
        let err = parse(Some(
            &json!({"HostConfig": {"RestartPolicy": {"Name": "always"}}}),
        ))
        .expect_err("ours");
        assert!(err.to_string().contains("restartPolicy"), "{err}");
        let err = parse(Some(&json!({"Image": "ubuntu"}))).expect_err("ours");
        assert!(err.to_string().starts_with("createOptions.Image"), "{err}");
        let err = parse(Some(&json!({"Labels": {"org.edgefleet.module": "x"}}))).expect_err("ours");
        assert!(
            err.to_string().contains("Labels.org.edgefleet.module"),
            "{err}"
        );
        parse(Some(&json!({"Labels": {"com.example.vendor": "Acme"}}))).expect("own labels");
    }

    #[test]
    fn malformed_options_say_what_is_wrong() {
        let err =
            parse(Some(&json!({"HostConfig": {"Privileged": "true"}}))).expect_err("malformed");
        assert!(
            err.to_string()
                .starts_with("createOptions is malformed: HostConfig.Privileged: invalid type"),
            "{err}"
        );
        assert_eq!(
            parse(Some(&json!([1]))),
            Err(CreateOptionsError::NotAnObject)
        );
        assert_eq!(parse(None).expect("none"), ContainerCreateBody::default());
    }
}
