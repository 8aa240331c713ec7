//! `edgefleet deployment`: the deployments that give the devices a condition selects their
//! modules. Created from flags, from a deployment file (`apply`, and `diff` to see what it
//! would change) or from an Azure IoT Edge deployment manifest (`import`); read back with
//! their revisions, and deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use edgefleet_common::fleet_api::{
    DeploymentModule, DeploymentRequest, DeploymentSaved, DeploymentView, ModelModule,
};

use super::error::CliError;
use super::output::{Output, ago, print, table, yaml};
use super::parse::parse_tag;
use super::rollout::RolloutFlags;
use crate::client::{ClientError, FleetClient};
use crate::iotedge_import::{self, ImportSettings, Imported};

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Create or replace a deployment of one model module.
    Create {
        name: String,
        /// e.g. "tags.site = 'plant1' AND tags.line IN ['a', 'b']"
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// NAME:latest (follows new versions) or NAME:VERSION.
        #[arg(long)]
        model: String,
        /// Module name on the device (default: the model's name).
        #[arg(long)]
        module: Option<String>,
        /// Port of the module's scoring API on the device.
        #[arg(long, default_value_t = 5001)]
        port: u16,
        /// SHA-256 (hex) of a bearer key the scoring API accepts; repeatable.
        #[arg(long)]
        auth_key_sha256: Vec<String>,
        /// Share of requests sent as collected data, in parts per million.
        #[arg(long, default_value_t = 0)]
        data_collection_ppm: u32,
        #[command(flatten)]
        rollout: RolloutFlags,
    },
    /// Create or replace a deployment from a file (YAML or JSON, the shape `deployment show
    /// --output yaml` prints); saving the same content again makes no new revision.
    Apply {
        #[arg(long, short)]
        file: PathBuf,
    },
    /// What applying a file would change, as a unified diff of the deployment.
    Diff {
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Create or replace a deployment from an Azure IoT Edge deployment manifest (or an IoT
    /// Hub configuration wrapping one). What cannot be mapped is listed and nothing is saved
    /// (exit 1); what is mapped differently or not supported is said on stderr.
    Import {
        file: PathBuf,
        /// Default: the configuration's id, else the file's name.
        #[arg(long)]
        name: Option<String>,
        /// Default: the configuration's targetCondition.
        #[arg(long)]
        target: Option<String>,
        /// Default: the configuration's priority, else 0.
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
        /// VAR=VALUE fills placeholders ${VAR}, $VAR, <VAR>, {{VAR}} and __AML_VAR; repeatable.
        #[arg(long = "set", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// MODULE=NAME:VERSION serves the file's MODULE as a registered model; repeatable.
        #[arg(long = "model", value_parser = parse_tag)]
        models: Vec<(String, String)>,
        /// Print the deployment that would be saved; contacts neither the fleet nor a registry.
        #[arg(long)]
        dry_run: bool,
    },
    List,
    Show {
        name: String,
    },
    /// Every revision of a deployment.
    History {
        name: String,
    },
    #[command(alias = "remove")]
    Delete {
        name: String,
    },
}

/// `VAR=VALUE`, the value kept as written (it may be empty or contain '=').
fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not VAR=VALUE"))
}

/// Runs one `deployment` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: DeploymentCommand,
) -> Result<(), CliError> {
    match command {
        DeploymentCommand::Create {
            name,
            target,
            priority,
            model,
            module,
            port,
            auth_key_sha256,
            data_collection_ppm,
            rollout,
        } => {
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
        DeploymentCommand::Apply { file } => {
            let deployment = deployment_file(&file)?;
            saved(&api.put_deployment(&deployment.name, &deployment.request())?);
        }
        DeploymentCommand::Diff { file } => diff(api, &file)?,
        DeploymentCommand::Import {
            file,
            name,
            target,
            priority,
            vars,
            models,
            dry_run,
        } => {
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
                check_import_registries(api, &imported)?;
                let deployment = &imported.deployment;
                saved(&api.put_deployment(&deployment.name, &deployment.request())?);
            }
        }
        DeploymentCommand::Show { name } => {
            print(output, &api.deployment(&name)?, yaml);
        }
        DeploymentCommand::History { name } => history(api, output, &name)?,
        DeploymentCommand::List => list(api, output)?,
        DeploymentCommand::Delete { name } => {
            api.delete_deployment(&name)?;
            eprintln!("deleted deployment {name}");
        }
    }
    Ok(())
}

/// Prints what applying the deployment file would change, as a unified diff.
fn diff(api: &FleetClient, file: &Path) -> Result<(), CliError> {
    let wanted = deployment_file(file)?;
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
    Ok(())
}

/// Prints every revision of a deployment.
fn history(api: &FleetClient, output: Output, name: &str) -> Result<(), CliError> {
    let history = api.deployment_history(name)?;
    print(output, &history, |revisions| {
        let rows = revisions
            .iter()
            .map(|r| {
                let modules: Vec<&str> = r.deployment.modules.keys().map(String::as_str).collect();
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
    Ok(())
}

/// Prints the deployments, one line each.
fn list(api: &FleetClient, output: Output) -> Result<(), CliError> {
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

/// A deployment file (YAML, or JSON, which YAML reads too).
fn deployment_file(path: &Path) -> Result<DeploymentView, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::refused(format!("{}: {e}", path.display())))?;
    yaml_serde::from_str(&text).map_err(|e| {
        CliError::refused(format!(
            "{}: not a deployment: {e} (see `edgefleet deployment show NAME --output yaml` for the shape)",
            path.display()
        ))
    })
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
