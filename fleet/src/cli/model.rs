//! `edgefleet model`: the model registry. Registering an ONNX file as a model's next version,
//! reading versions back (as text, or the registered file checked against its SHA-256),
//! profiling a version on the fleet service's machine and packaging it as an OCI image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use edgefleet_common::fleet_api::{
    ModelDetails, ModelVersion, PackageRequest, ProfileRequest, RegisterModelQuery,
};
use edgefleet_common::model_profile::ModelProfile;
use edgefleet_onnx::tensor_json::describe;
use sha2::{Digest as _, Sha256};

use super::error::CliError;
use super::files::write_new_file;
use super::output::{Output, Progress, ago, or_dash, print, table};
use super::parse::parse_tag;
use crate::client::FleetClient;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register an ONNX file (or the model.onnx of a directory) as the next version of NAME.
    Register {
        #[arg(long)]
        name: String,
        #[arg(long)]
        path: PathBuf,
        /// key=value, repeatable.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        description: String,
        /// A JSON request body to use as the sample (otherwise one is synthesized).
        #[arg(long)]
        sample_input: Option<PathBuf>,
    },
    List,
    /// One version: its inputs, outputs, image and the deployments serving it.
    Show {
        /// NAME:VERSION
        model: String,
    },
    /// Save the registered ONNX file (checked against its SHA-256).
    Download {
        /// NAME:VERSION
        model: String,
        /// Where to write it (default: NAME-VERSION.onnx); an existing file is not overwritten.
        #[arg(long, short)]
        file: Option<PathBuf>,
    },
    /// Run the version on the fleet service's machine at several batch sizes and intra-op
    /// thread counts (with its sample), report latency, throughput and peak memory with the
    /// threads and memory to give it, and keep the result on the version (`model show`).
    Profile {
        /// NAME:VERSION
        model: String,
        /// Comma-separated (default 1,8,32).
        #[arg(long, value_delimiter = ',')]
        batch_sizes: Vec<usize>,
        /// Intra-op thread counts, comma-separated (default 1, 2 and the machine's cores).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<u16>,
    },
    /// Build the model's OCI image and push it (tag = version).
    Package {
        /// NAME:VERSION
        model: String,
        #[arg(long)]
        registry: String,
        #[arg(long)]
        repository: String,
    },
    /// Delete a version (refused while a deployment uses it).
    #[command(alias = "remove")]
    Delete {
        model: String,
    },
}

/// Runs one `model` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: ModelCommand,
) -> Result<(), CliError> {
    match command {
        ModelCommand::Register {
            name,
            path,
            tags,
            description,
            sample_input,
        } => {
            let version = register(api, name, &path, tags, description, sample_input)?;
            print(output, &version, |v| v.reference());
        }
        ModelCommand::List => {
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
        ModelCommand::Package {
            model,
            registry,
            repository,
        } => {
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
        ModelCommand::Profile {
            model,
            batch_sizes,
            threads,
        } => {
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
        ModelCommand::Show { model } => {
            let (name, version) = split_model(&model)?;
            print(output, &api.model(name, version)?, model_text);
        }
        ModelCommand::Download { model, file } => download(api, &model, file)?,
        ModelCommand::Delete { model } => {
            let (name, version) = split_model(&model)?;
            api.delete_model(name, version)?;
            eprintln!("deleted {model}");
        }
    }
    Ok(())
}

/// Registers the model file at `path` (or of the directory `path`) as the next version of `name`.
fn register(
    api: &FleetClient,
    name: String,
    path: &Path,
    tags: Vec<(String, String)>,
    description: String,
    sample_input: Option<PathBuf>,
) -> Result<ModelVersion, CliError> {
    let file = model_file(path)?;
    let bytes =
        std::fs::read(&file).map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
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
    Ok(api.register_model(&query, bytes)?)
}

/// Saves the registered ONNX file of `model` (NAME:VERSION) to `file`, checked against its
/// SHA-256 first.
fn download(api: &FleetClient, model: &str, file: Option<PathBuf>) -> Result<(), CliError> {
    let (name, version) = split_model(model)?;
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
    Ok(())
}

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

/// One model version, for a person.
fn model_text(d: &ModelDetails) -> String {
    let m = &d.model;
    let mut out = format!(
        "model {}  {} bytes  sha256 {}\nregistered {}",
        m.reference(),
        m.size,
        m.sha256,
        ago(m.registered_ms)
    );
    if !m.description.is_empty() {
        out.push_str(&format!("\ndescription {}", m.description));
    }
    if !m.tags.is_empty() {
        let tags = serde_json::to_string(&m.tags).unwrap_or_default();
        out.push_str(&format!("\ntags {tags}"));
    }
    let io = |specs: &[edgefleet_common::module_image::IoSpec]| {
        specs
            .iter()
            .map(|s| format!("{}: {}", s.name, describe(s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!(
        "\ninputs {}\noutputs {}",
        io(&d.inputs),
        io(&d.outputs)
    ));
    let image = m
        .package
        .as_ref()
        .map_or("- (not packaged)", |p| p.image.as_str());
    out.push_str(&format!("\nimage {image}"));
    let deployed = if d.deployed_by.is_empty() {
        "-".to_owned()
    } else {
        d.deployed_by.join(", ")
    };
    out.push_str(&format!("\ndeployed by {deployed}"));
    match &m.profile {
        Some(profile) => out.push_str(&format!(
            "\nprofile ({})\n{}",
            ago(profile.profiled_ms),
            profile.to_text()
        )),
        None => out.push_str(&format!(
            "\nprofile - (edgefleet model profile {})",
            m.reference()
        )),
    }
    out
}
