//! How the CLI shows what the service answered: JSON (`--output json`, the API's own types)
//! or text for a person (tables, one device, a rollout), and a progress line on a terminal.

use std::io::IsTerminal as _;

use edgefleet_common::fleet_api::{DeviceRollout, DeviceView, ModelDetails, RolloutStatus};
use edgefleet_onnx::tensor_json::describe;
use edgefleet_transport::now_ms;
use serde::Serialize;

use super::Output;

/// Prints `value` as JSON or YAML, or as `text` makes it.
pub(super) fn print<T: Serialize>(output: Output, value: &T, text: impl FnOnce(&T) -> String) {
    match output {
        Output::Json => match serde_json::to_string_pretty(value) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("edgefleet: the answer cannot be shown as JSON: {e}"),
        },
        Output::Yaml => print!("{}", yaml(value)),
        Output::Text => println!("{}", text(value)),
    }
}

/// `value` as YAML.
pub(super) fn yaml<T: Serialize>(value: &T) -> String {
    yaml_serde::to_string(value)
        .unwrap_or_else(|e| format!("# the answer cannot be shown as YAML: {e}\n"))
}

/// How long ago `ms` (Unix milliseconds) was, in seconds.
pub(super) fn ago(ms: u64) -> String {
    format!("{} s ago", now_ms().saturating_sub(ms) / 1000)
}

/// A plain text table: a header of `columns`, then one line per row.
pub(super) fn table(columns: &[&str], rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    std::iter::once(line(columns.iter().map(|c| c.to_uppercase()).collect()))
        .chain(rows.into_iter().map(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A cell of an optional value: `-` when absent.
pub(super) fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn state_name(state: DeviceRollout) -> &'static str {
    match state {
        DeviceRollout::Pending => "pending",
        DeviceRollout::Succeeded => "succeeded",
        DeviceRollout::Failed => "failed",
    }
}

pub(super) fn rollout_text(r: &RolloutStatus) -> String {
    let mut out = format!(
        "deployment {}: targeted {}, applied {}, succeeded {}, failed {}, pending {}, stale {}",
        r.deployment, r.targeted, r.applied, r.succeeded, r.failed, r.pending, r.stale
    );
    if let Some(s) = &r.staged {
        out.push_str(&format!(
            "\nstaged rollout revision {} -> {}: {}{}",
            s.from_revision,
            s.to_revision,
            serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            s.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        for (i, p) in s.phases.iter().enumerate() {
            let name = if i == 0 {
                "canary".to_owned()
            } else {
                format!("batch {i}")
            };
            let marker = if i == s.current_phase { ">" } else { " " };
            out.push_str(&format!(
                "\n {marker} {name:<8} {}/{} moved  {}  [{}]",
                p.moved,
                p.devices.len(),
                p.gate,
                p.devices.join(", ")
            ));
        }
    }
    for d in &r.devices {
        out.push_str(&format!(
            "\n  {:<20} manifest {:<4} {:<10}{} {}",
            d.device_id,
            d.manifest_version,
            state_name(d.state),
            if d.stale { " (stale)" } else { "" },
            d.message.as_deref().unwrap_or_default()
        ));
    }
    out
}

/// Why a rollout did not succeed, device by device.
pub(super) fn rollout_failures(r: &RolloutStatus) -> String {
    let mut lines = vec![format!(
        "rollout of {} did not succeed: {}/{} succeeded, {} failed, {} pending",
        r.deployment, r.succeeded, r.targeted, r.failed, r.pending
    )];
    for d in r
        .devices
        .iter()
        .filter(|d| d.state != DeviceRollout::Succeeded)
    {
        lines.push(format!(
            "  {} ({}): {}",
            d.device_id,
            state_name(d.state),
            d.message.as_deref().unwrap_or("no answer yet")
        ));
    }
    lines.join("\n")
}

/// One model version, for a person.
pub(super) fn model_text(d: &ModelDetails) -> String {
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

pub(super) fn device_text(v: &DeviceView) -> String {
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

/// A one-line progress display on stderr, when stderr is a terminal.
pub(super) struct Progress {
    tty: bool,
}

impl Progress {
    pub fn start(message: String) -> Self {
        let tty = std::io::stderr().is_terminal();
        if tty && !message.is_empty() {
            eprint!("{message} ...");
        }
        Self { tty }
    }

    pub fn update(&self, message: &str) {
        if self.tty {
            eprint!("\r\x1b[2K{message}");
        }
    }

    pub fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}
