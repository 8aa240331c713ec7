//! Carries out one CLI command (all but `serve`) through the typed client.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgefleet_common::commands::{CommandOutcome, DeviceCommand as ModuleCommandKind};
use edgefleet_common::fleet_api::{
    DeploymentModule, DeploymentRequest, DeploymentSaved, DeploymentView, DeviceImport,
    DeviceRequest, ModelModule, ModuleCommandRequest, PackageRequest, ProfileRequest,
    RegisterModelQuery, RegistryRequest, RolloutStatus, StagedState,
};
use edgefleet_common::model_profile::ModelProfile;
use edgefleet_common::signing::{FleetPublicKey, KeyParseError};
use edgefleet_transport::now_ms;
use sha2::{Digest as _, Sha256};

use super::output::{
    Progress, ago, device_text, model_text, or_dash, print, rollout_failures, rollout_text, table,
    yaml,
};
use super::{
    Cli, CliError, Command, DeploymentCommand, DeviceCommand, ManifestCommand, ModelCommand,
    ModuleCommand, RegistryCommand, RolloutCommand,
};
use crate::client::{ClientError, FleetClient};
use crate::iotedge_import::{self, ImportSettings, Imported};

fn split_model(reference: &str) -> Result<(&str, &str), CliError> {
    reference
        .split_once(':')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| CliError::refused(format!("{reference:?} is not NAME:VERSION")))
}

/// `path` itself, or the model of a directory: its model.onnx or its only .onnx file.
fn model_file(path: &Path) -> Result<PathBuf, CliError> {
    if path.is_file() {
        return Ok(path.to_owned());
    }
    if path.is_dir() {
        let named = path.join("model.onnx");
        if named.is_file() {
            return Ok(named);
        }
        let onnx: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CliError::refused(format!("{}: {e}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
            .collect();
        if let [only] = onnx.as_slice() {
            return Ok(only.clone());
        }
        return Err(CliError::refused(format!(
            "{}: expected model.onnx or exactly one .onnx file in the directory",
            path.display()
        )));
    }
    Err(CliError::refused(format!(
        "{}: no such file or directory",
        path.display()
    )))
}

fn read_password(password_stdin: bool) -> Result<String, CliError> {
    if password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::refused(format!("cannot read the password from stdin: {e}")))?;
        return Ok(s.trim_end_matches(['\n', '\r']).to_owned());
    }
    std::env::var("EDGEFLEET_REGISTRY_PASSWORD").map_err(|_| {
        CliError::refused("give the password with --password-stdin or EDGEFLEET_REGISTRY_PASSWORD")
    })
}

/// Runs one CLI command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let api = FleetClient::new(&cli.server, cli.token.clone())?;
    let output = cli.output;
    match cli.command {
        Command::Serve(_) => return Err(CliError::refused("`serve` runs the service")),
        Command::Registry(RegistryCommand::Add {
            name,
            address,
            username,
            password_stdin,
            insecure,
        }) => {
            let request = RegistryRequest {
                address,
                username,
                password: read_password(password_stdin)?,
                insecure,
            };
            api.put_registry(&name, &request)?;
            eprintln!("registry {name} saved (password stored encrypted)");
        }
        Command::Registry(RegistryCommand::Remove { name }) => {
            api.delete_registry(&name)?;
            eprintln!("removed registry {name}");
        }
        Command::Registry(RegistryCommand::List) => {
            let registries = api.registries()?;
            print(output, &registries, |list| {
                let rows = list
                    .iter()
                    .map(|r| {
                        let insecure = r.insecure.to_string();
                        vec![
                            r.name.clone(),
                            r.address.clone(),
                            r.username.clone(),
                            insecure,
                        ]
                    })
                    .collect();
                table(&["name", "address", "username", "insecure"], rows)
            });
        }
        Command::Model(ModelCommand::Register {
            name,
            path,
            tags,
            description,
            sample_input,
        }) => {
            let file = model_file(&path)?;
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
            let tags: BTreeMap<String, String> = tags.into_iter().collect();
            let sample = match sample_input {
                Some(sample) => Some(
                    std::fs::read_to_string(&sample)
                        .map_err(|e| CliError::refused(format!("{}: {e}", sample.display())))?,
                ),
                None => None,
            };
            let query = RegisterModelQuery {
                name,
                description,
                tags: Some(serde_json::to_string(&tags).unwrap_or_default()),
                sample,
            };
            let version = api.register_model(&query, bytes)?;
            print(output, &version, |v| v.reference());
        }
        Command::Model(ModelCommand::List) => {
            let models = api.models()?;
            print(output, &models, |list| {
                let rows = list
                    .iter()
                    .map(|m| {
                        let image = or_dash(m.package.as_ref().map(|p| &p.image));
                        vec![m.reference(), image, m.description.clone()]
                    })
                    .collect();
                table(&["model", "image", "description"], rows)
            });
        }
        Command::Model(ModelCommand::Package {
            model,
            registry,
            repository,
        }) => {
            let (name, version) = split_model(&model)?;
            let spinner =
                Progress::start(format!("packaging {model} and pushing it to {registry}"));
            let request = PackageRequest {
                registry,
                repository,
            };
            let package = api.package_model(name, version, &request);
            spinner.finish();
            print(output, &package?, |p| format!("pushed {}", p.image));
        }
        Command::Model(ModelCommand::Profile {
            model,
            batch_sizes,
            threads,
        }) => {
            let (name, version) = split_model(&model)?;
            let request = ProfileRequest {
                batch_sizes,
                intra_op_threads: threads,
            };
            let spinner =
                Progress::start(format!("profiling {model} on the fleet service's machine"));
            let profile = api.profile_model(name, version, &request);
            spinner.finish();
            print(output, &profile?, ModelProfile::to_text);
        }
        Command::Model(ModelCommand::Show { model }) => {
            let (name, version) = split_model(&model)?;
            print(output, &api.model(name, version)?, model_text);
        }
        Command::Model(ModelCommand::Download { model, file }) => {
            let (name, version) = split_model(&model)?;
            let details = api.model(name, version)?;
            let path = file.unwrap_or_else(|| PathBuf::from(format!("{name}-{version}.onnx")));
            let bytes = api.model_onnx(name, version)?;
            let digest = hex::encode(Sha256::digest(&bytes));
            if digest != details.model.sha256 {
                return Err(CliError::refused(format!(
                    "{model}: the downloaded file's SHA-256 is {digest}, not the registered {}; nothing was written",
                    details.model.sha256
                )));
            }
            write_new_file(&path, &bytes)?;
            eprintln!(
                "saved {model} to {} ({} bytes, sha256 {digest})",
                path.display(),
                bytes.len()
            );
        }
        Command::Model(ModelCommand::Delete { model }) => {
            let (name, version) = split_model(&model)?;
            api.delete_model(name, version)?;
            eprintln!("deleted {model}");
        }
        Command::Device(DeviceCommand::Add {
            id,
            tags,
            public_key,
        }) => {
            let request = DeviceRequest {
                tags: tags.into_iter().collect(),
                public_key,
            };
            api.put_device(&id, &request)?;
            eprintln!(
                "device {id} saved; `edgefleet device config {id}` prints its agent configuration"
            );
        }
        Command::Device(DeviceCommand::Import { file }) => {
            let devices = device_import_file(&file)?;
            let imported = api.import_devices(&devices)?;
            eprintln!(
                "imported {} device(s): {} added, {} updated; {} manifest(s) changed",
                devices.len(),
                imported.added,
                imported.updated,
                imported.manifests_changed
            );
        }
        Command::Device(DeviceCommand::List) => {
            let devices = api.devices()?;
            print(output, &devices, |list| {
                let rows = list
                    .iter()
                    .map(|d| {
                        let tags = serde_json::to_string(&d.tags).unwrap_or_default();
                        let stale = d.stale.to_string();
                        vec![d.id.clone(), tags, or_dash(d.manifest_version), stale]
                    })
                    .collect();
                table(&["id", "tags", "manifestVersion", "stale"], rows)
            });
        }
        Command::Device(DeviceCommand::Show { id }) => {
            print(output, &api.device(&id)?, device_text);
        }
        Command::Device(DeviceCommand::Remove { id }) => {
            let removed = api.remove_device(&id)?;
            let modules = match removed.retraction_version {
                Some(v) => format!("manifest {v} (empty, retained) stops and removes its modules"),
                None => "it had no manifest".to_owned(),
            };
            let login = if removed.mqtt_login_revoked {
                "the embedded broker refuses its login".to_owned()
            } else {
                format!("remove its MQTT user {id:?} from your broker's password file and ACL")
            };
            eprintln!("removed device {id}: {modules}; {login}");
        }
        Command::Device(DeviceCommand::Config { id }) => print!("{}", api.device_config(&id)?),
        Command::Deployment(DeploymentCommand::Create {
            name,
            target,
            priority,
            model,
            module,
            port,
            auth_key_sha256,
            data_collection_ppm,
            rollout,
        }) => {
            let module =
                module.unwrap_or_else(|| model.split(':').next().unwrap_or_default().to_owned());
            let model = ModelModule {
                model: Some(model),
                port: Some(port),
                auth_key_sha256,
                data_collection_ppm,
                ..ModelModule::default()
            };
            let request = DeploymentRequest {
                target,
                priority,
                layered: false,
                modules: BTreeMap::from([(module, DeploymentModule::Model(model))]),
                rollout: rollout.policy(),
            };
            saved(&api.put_deployment(&name, &request)?);
        }
        Command::Deployment(DeploymentCommand::Apply { file }) => {
            let deployment = deployment_file(&file)?;
            saved(&api.put_deployment(&deployment.name, &deployment.request())?);
        }
        Command::Deployment(DeploymentCommand::Diff { file }) => {
            let wanted = deployment_file(&file)?;
            let current = match api.deployment(&wanted.name) {
                Ok(current) => yaml(&current.request()),
                Err(ClientError::Refused { status, .. }) if status.as_u16() == 404 => String::new(),
                Err(e) => return Err(e.into()),
            };
            let wanted_yaml = yaml(&wanted.request());
            if current == wanted_yaml {
                eprintln!("deployment {}: no changes", wanted.name);
            } else {
                let diff = similar::TextDiff::from_lines(&current, &wanted_yaml);
                let name = format!("deployment/{}", wanted.name);
                print!(
                    "{}",
                    diff.unified_diff()
                        .header(&name, &file.display().to_string())
                );
            }
        }
        Command::Deployment(DeploymentCommand::Import {
            file,
            name,
            target,
            priority,
            vars,
            models,
            dry_run,
        }) => {
            let settings = ImportSettings {
                name,
                target,
                priority,
                vars: vars.into_iter().collect(),
                models: models.into_iter().collect(),
            };
            let imported = import_file(&file, &settings)?;
            if dry_run {
                print(output, &imported.deployment, yaml);
            } else {
                check_import_registries(&api, &imported)?;
                let deployment = &imported.deployment;
                saved(&api.put_deployment(&deployment.name, &deployment.request())?);
            }
        }
        Command::Deployment(DeploymentCommand::Show { name }) => {
            print(output, &api.deployment(&name)?, yaml);
        }
        Command::Deployment(DeploymentCommand::History { name }) => {
            let history = api.deployment_history(&name)?;
            print(output, &history, |revisions| {
                let rows = revisions
                    .iter()
                    .map(|r| {
                        let modules: Vec<&str> =
                            r.deployment.modules.keys().map(String::as_str).collect();
                        vec![
                            r.revision.to_string(),
                            ago(r.saved_ms),
                            r.deployment.target.clone(),
                            r.deployment.priority.to_string(),
                            modules.join(","),
                        ]
                    })
                    .collect();
                table(
                    &["revision", "saved", "target", "priority", "modules"],
                    rows,
                )
            });
        }
        Command::Deployment(DeploymentCommand::List) => {
            let deployments = api.deployments()?;
            print(output, &deployments, |list| {
                let rows = list
                    .iter()
                    .map(|d| {
                        let modules: Vec<&str> = d.modules.keys().map(String::as_str).collect();
                        vec![
                            d.name.clone(),
                            d.target.clone(),
                            d.priority.to_string(),
                            if d.layered { "layered" } else { "base" }.to_owned(),
                            d.revision.to_string(),
                            modules.join(","),
                        ]
                    })
                    .collect();
                table(
                    &["name", "target", "priority", "kind", "revision", "modules"],
                    rows,
                )
            });
        }
        Command::Deployment(DeploymentCommand::Delete { name }) => {
            api.delete_deployment(&name)?;
            eprintln!("deleted deployment {name}");
        }
        Command::Rollout(RolloutCommand::Status {
            deployment,
            wait,
            timeout_secs,
        }) => {
            let deadline = Instant::now() + Duration::from_secs(timeout_secs);
            let mut status = api.rollout(&deployment)?;
            let progress = Progress::start(String::new());
            let done = |s: &RolloutStatus| match &s.staged {
                Some(_) => s.stopped().is_some(),
                None => s.finished(),
            };
            while wait && !done(&status) && Instant::now() < deadline {
                progress.update(&format!(
                    "{deployment}: {}/{} succeeded, {} failed, {} pending",
                    status.succeeded, status.targeted, status.failed, status.pending
                ));
                std::thread::sleep(Duration::from_millis(500));
                status = api.rollout(&deployment)?;
            }
            progress.finish();
            print(output, &status, rollout_text);
            let succeeded = match status.stopped() {
                Some(state) => state == StagedState::Completed,
                None => status.staged.is_none() && status.complete(),
            };
            if wait && !succeeded {
                return Err(CliError {
                    exit: super::Exit::RolloutFailed,
                    message: rollout_failures(&status),
                });
            }
        }
        Command::Rollout(
            action @ (RolloutCommand::Pause { .. }
            | RolloutCommand::Resume { .. }
            | RolloutCommand::Abort { .. }
            | RolloutCommand::Rollback { .. }),
        ) => {
            let (verb, deployment) = match &action {
                RolloutCommand::Pause { deployment } => ("pause", deployment),
                RolloutCommand::Resume { deployment } => ("resume", deployment),
                RolloutCommand::Abort { deployment } => ("abort", deployment),
                RolloutCommand::Rollback { deployment } => ("rollback", deployment),
                RolloutCommand::Status { deployment, .. } => ("status", deployment),
            };
            let status = api.rollout_action(deployment, verb)?;
            print(output, &status, rollout_text);
        }
        Command::Manifest(ManifestCommand::Show { device }) => {
            let manifest = api.manifest(&device)?;
            print(output, &manifest, |m| {
                serde_json::to_string_pretty(&m.signed["manifest"]).unwrap_or_default()
            });
        }
        Command::Manifest(ManifestCommand::Verify { file, fleet_key }) => {
            let key: FleetPublicKey = fleet_key
                .parse()
                .map_err(|e: KeyParseError| CliError::refused(e.to_string()))?;
            let wire = std::fs::read(&file)
                .map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
            let manifest = key
                .verify(&wire)
                .map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
            print(super::Output::Json, &manifest, |_| String::new());
        }
        Command::Module(ModuleCommand::Logs {
            device,
            module,
            tail,
            since,
        }) => {
            let since = since.map_or(0, |s| (now_ms() / 1000).saturating_sub(s));
            let request = ModuleCommandRequest {
                module,
                command: ModuleCommandKind::Logs {
                    tail,
                    since: i64::try_from(since).unwrap_or(0),
                },
            };
            let result = api.command(&device, &request)?;
            print(output, &result, |r| match &r.outcome {
                CommandOutcome::Logs { logs } => logs.trim_end().to_owned(),
                other => format!("{other:?}"),
            });
        }
        Command::Module(ModuleCommand::Restart { device, module }) => {
            let request = ModuleCommandRequest {
                module: module.clone(),
                command: ModuleCommandKind::Restart,
            };
            api.command(&device, &request)?;
            eprintln!("restarted {module} on {device}");
        }
        Command::Telemetry(command) => super::telemetry::run(&api, output, command)?,
        Command::Bundle(command) => super::bundle::run(&api, command)?,
        Command::Dashboard => {
            let token = cli
                .token
                .as_deref()
                .ok_or(crate::client::ClientError::NoToken)?;
            println!(
                "{}/ui/login#token={token}",
                cli.server.trim_end_matches('/')
            );
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "edgefleet", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        }
        Command::Man { dir } => {
            use clap::CommandFactory as _;
            let failed = |e: std::io::Error| CliError::refused(format!("{}: {e}", dir.display()));
            std::fs::create_dir_all(&dir).map_err(failed)?;
            clap_mangen::generate_to(Cli::command(), &dir).map_err(failed)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` (never over an existing one), whole or not at all.
pub(super) fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write as _;
    let failed = |e: std::io::Error| CliError::refused(format!("{}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    temp.write_all(bytes).map_err(failed)?;
    temp.as_file().sync_all().map_err(failed)?;
    temp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::refused(format!(
                "{} exists: choose another --file or remove it",
                path.display()
            ))
        } else {
            failed(e.error)
        }
    })?;
    Ok(())
}

/// Reports a saved deployment.
fn saved(saved: &DeploymentSaved) {
    let change = if saved.changed {
        "saved as"
    } else {
        "unchanged at"
    };
    eprintln!(
        "deployment {} {change} revision {}; it targets {} device(s)",
        saved.name, saved.revision, saved.targeted
    );
}

/// An IoT Edge deployment manifest read as a deployment; its notes go to stderr.
fn import_file(path: &Path, settings: &ImportSettings) -> Result<Imported, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::refused(format!("{}: {e}", path.display())))?;
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".json").unwrap_or(n))
        .unwrap_or("imported");
    match iotedge_import::import(&text, stem, settings) {
        Ok(imported) => {
            for note in &imported.notes {
                eprintln!("note: {note}");
            }
            Ok(imported)
        }
        Err(failure) => {
            for note in &failure.notes {
                eprintln!("note: {note}");
            }
            for problem in &failure.problems {
                eprintln!("cannot map: {problem}");
            }
            Err(CliError::refused(format!(
                "{}: not imported: {} thing(s) cannot be mapped (listed above); nothing was saved",
                path.display(),
                failure.problems.len()
            )))
        }
    }
}

/// Refuses an import whose images come from a registry the fleet has no credentials for.
fn check_import_registries(api: &FleetClient, imported: &Imported) -> Result<(), CliError> {
    let registries = api.registries()?;
    let missing: Vec<String> = imported
        .registries
        .iter()
        .filter(|r| !registries.iter().any(|known| known.address == r.address))
        .map(|r| {
            format!(
                "registryCredentials.{}: the fleet has no registry at {}: add it with `edgefleet registry add {} --address {} --username USER --password-stdin`",
                r.credential, r.address, r.credential, r.address
            )
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::refused(format!(
            "not imported:\n  {}",
            missing.join("\n  ")
        )))
    }
}

/// A device import: one JSON object per line (blank lines and lines starting with `#` are
/// skipped); `-` is standard input.
fn device_import_file(path: &Path) -> Result<Vec<DeviceImport>, CliError> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| CliError::refused(format!("{}: {e}", path.display())))?;
    let mut devices = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let device = serde_json::from_str(line).map_err(|e| {
            CliError::refused(format!(
                "{} line {}: not a device: {e}; each line is {{\"id\": \"...\", \"publicKey\": \"...\", \"tags\": {{...}}}}; nothing was imported",
                path.display(),
                n + 1
            ))
        })?;
        devices.push(device);
    }
    Ok(devices)
}

/// A deployment file (YAML, or JSON, which YAML reads too).
fn deployment_file(path: &std::path::Path) -> Result<DeploymentView, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::refused(format!("{}: {e}", path.display())))?;
    yaml_serde::from_str(&text).map_err(|e| {
        CliError::refused(format!(
            "{}: not a deployment: {e} (see `edgefleet deployment show NAME --output yaml` for the shape)",
            path.display()
        ))
    })
}
