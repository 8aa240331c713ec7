//! `edgefleet device`: the fleet's devices and their tags. Adding one or importing many from a
//! file of JSON lines, reading them back (as text for a person: its modules as its agent last
//! reported them), printing a device's agent configuration and removing a device.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use edgefleet_common::fleet_api::{DeviceImport, DeviceRequest, DeviceView};

use super::error::CliError;
use super::output::{Output, ago, or_dash, print, table};
use super::parse::parse_tag;
use crate::client::FleetClient;

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add or update a device.
    Add {
        id: String,
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// As printed by `edgefleet-agent init`.
        #[arg(long)]
        public_key: String,
    },
    /// Add or update many devices in one change: FILE holds one JSON object per line,
    /// {"id": "...", "publicKey": "...", "tags": {"KEY": "VALUE"}} ("-" reads standard input).
    /// Nothing changes if any line is wrong.
    Import {
        file: PathBuf,
    },
    List,
    Show {
        id: String,
    },
    /// Print the device's agent configuration file.
    Config {
        id: String,
    },
    /// Remove a device: an empty manifest stops its modules, and the broker refuses its login
    /// (the embedded broker, or mosquitto with dynamic security, which also disconnects it).
    #[command(alias = "delete")]
    Remove {
        id: String,
    },
    /// Give the device a new MQTT password. It travels in the device's next manifest, sealed
    /// to its key; once the device reports that manifest, the broker accepts only the new
    /// password and the agent reconnects with it (`device show` says while it is pending).
    RotateCredentials {
        id: String,
    },
}

/// Runs one `device` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: DeviceCommand,
) -> Result<(), CliError> {
    match command {
        DeviceCommand::Add {
            id,
            tags,
            public_key,
        } => {
            let request = DeviceRequest {
                tags: tags.into_iter().collect(),
                public_key,
            };
            api.put_device(&id, &request)?;
            eprintln!(
                "device {id} saved; `edgefleet device config {id}` prints its agent configuration"
            );
        }
        DeviceCommand::Import { file } => {
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
        DeviceCommand::List => {
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
        DeviceCommand::Show { id } => {
            print(output, &api.device(&id)?, device_text);
        }
        DeviceCommand::Remove { id } => remove(api, &id)?,
        DeviceCommand::Config { id } => print!("{}", api.device_config(&id)?),
        DeviceCommand::RotateCredentials { id } => {
            let rotation = api.rotate_credentials(&id)?;
            if output != Output::Text {
                print(output, &rotation, |_| String::new());
            }
            let broker = if rotation.broker_managed {
                "the broker switches to it once the device reports that manifest".to_owned()
            } else {
                format!(
                    "set it for user {id:?} at your broker once the device reports that manifest (`edgefleet device config {id}` shows it then)"
                )
            };
            eprintln!(
                "new MQTT password for device {id} sent in manifest {}, sealed to its key; {broker}",
                rotation.manifest_version
            );
        }
    }
    Ok(())
}

/// Removes a device and says what became of its modules and its broker login.
fn remove(api: &FleetClient, id: &str) -> Result<(), CliError> {
    let removed = api.remove_device(id)?;
    let modules = match removed.retraction_version {
        Some(v) => format!("manifest {v} (empty, retained) stops and removes its modules"),
        None => "it had no manifest".to_owned(),
    };
    let login = if removed.mqtt_login_revoked {
        "the broker refuses its login".to_owned()
    } else {
        format!("remove its MQTT user {id:?} from your broker's password file and ACL")
    };
    eprintln!("removed device {id}: {modules}; {login}");
    Ok(())
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

/// One device, for a person: its state, then each module as its agent last reported it.
fn device_text(v: &DeviceView) -> String {
    let last_seen = match v.last_seen_ms {
        Some(ms) => ago(ms),
        None => "never".to_owned(),
    };
    let tags = serde_json::to_string(&v.tags).unwrap_or_default();
    let mut out = format!(
        "device {}  tags {tags}  manifest {}  last seen {last_seen}  {}",
        v.id,
        or_dash(v.manifest_version),
        if v.stale { "STALE" } else { "online" }
    );
    if let Some(version) = v.mqtt_rotation_version {
        out.push_str(&format!(
            "\nMQTT password rotation pending: waiting for the device to report manifest {version}"
        ));
    }
    let Some(reported) = &v.reported else {
        return out;
    };
    if let Some(d) = &reported.last_desired {
        out.push_str(&format!(
            "\nlast manifest {}: {} {}",
            or_dash(d.version),
            u16::from(d.status),
            d.message
        ));
    }
    for (name, m) in &reported.modules {
        let status = serde_json::to_value(m.runtime_status)
            .ok()
            .and_then(|s| s.as_str().map(str::to_owned))
            .unwrap_or_default();
        let inference = m
            .inference
            .as_ref()
            .map(|i| {
                format!(
                    " inferences {} p50 {} µs p99 {} µs",
                    i.count, i.latency_p50_us, i.latency_p99_us
                )
            })
            .unwrap_or_default();
        out.push_str(&format!("\nmodule {name}: {status} {}{inference}", m.image));
        if let Some(e) = &m.last_error {
            out.push_str(&format!("\n  last error: {e}"));
        }
        for warning in &m.warnings {
            out.push_str(&format!("\n  warning: {warning}"));
        }
    }
    out
}
