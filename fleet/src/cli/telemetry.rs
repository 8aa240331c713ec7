//! `edgefleet telemetry`: the newest records of a device (optionally following it), queries by
//! time, module and kind, and exports for other tools (JSON lines or CSV).

use std::io::Write as _;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use edgefleet_common::fleet_api::TelemetryQuery;
use edgefleet_common::telemetry::{TelemetryEnvelope, TelemetryKind};

use super::error::CliError;
use super::files::write_new_file;
use super::output::{Output, print};
use super::parse::parse_time;
use crate::client::FleetClient;

/// Records asked for per request when paging through a query or an export.
const PAGE: usize = 1000;

#[derive(Debug, Subcommand)]
pub enum TelemetryCommand {
    /// The newest telemetry records of a device.
    Tail {
        device: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Keep printing new records as they arrive (until interrupted).
        #[arg(long, short)]
        follow: bool,
    },
    /// A device's records in a time range, of one module or kind, oldest first.
    Query {
        device: String,
        #[command(flatten)]
        filter: Filter,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Every matching record of the given devices (default: every device), oldest first per
    /// device, as JSON lines or CSV on standard output.
    Export {
        devices: Vec<String>,
        #[command(flatten)]
        filter: Filter,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// Store the records a device exported while it had no link (deduplicated), and write
    /// the signed receipt that lets the device drop them.
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// An outbox export (`edgefleet-agent outbox export FILE`).
    file: std::path::PathBuf,
    /// Where to write the fleet's signed receipt, for `edgefleet-agent outbox trim`.
    #[arg(long)]
    receipt: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct Filter {
    /// Only records from this long ago on (`90s`, `15m`, `1h`, `7d`) or since a Unix time in
    /// milliseconds.
    #[arg(long, value_parser = parse_time)]
    since: Option<u64>,
    /// Only records before this long ago, or before a Unix time in milliseconds.
    #[arg(long, value_parser = parse_time)]
    until: Option<u64>,
    #[arg(long)]
    module: Option<String>,
    #[arg(long, value_parser = parse_kind)]
    kind: Option<TelemetryKind>,
}

impl Filter {
    fn query(&self, after: u64, limit: usize) -> TelemetryQuery {
        TelemetryQuery {
            limit: Some(limit),
            after: Some(after),
            since_ms: self.since,
            until_ms: self.until,
            module: self.module.clone(),
            kind: self.kind,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

fn parse_kind(s: &str) -> Result<TelemetryKind, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("{s:?} is not a kind (inference, metric, event, collected-data)"))
}

fn line(r: &TelemetryEnvelope) -> String {
    let body = serde_json::to_value(&r.record).unwrap_or_default();
    format!(
        "#{} {} {} {}",
        r.seq,
        r.module,
        kind_name(r.record.kind()),
        body["body"]
    )
}

fn kind_name(kind: TelemetryKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|k| k.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn lines(list: &[TelemetryEnvelope]) -> String {
    list.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// Runs one `telemetry` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: TelemetryCommand,
) -> Result<(), CliError> {
    match command {
        TelemetryCommand::Import(args) => import(api, args),
        TelemetryCommand::Tail {
            device,
            limit,
            follow,
        } => tail(api, output, &device, limit, follow),
        TelemetryCommand::Query {
            device,
            filter,
            limit,
        } => query(api, output, &device, &filter, limit),
        TelemetryCommand::Export {
            devices,
            filter,
            format,
        } => export(api, devices, &filter, format),
    }
}

/// Stores an outbox export and writes the fleet's signed receipt for it.
fn import(api: &FleetClient, ImportArgs { file, receipt }: ImportArgs) -> Result<(), CliError> {
    if receipt.exists() {
        return Err(CliError::refused(format!(
            "{} exists; it is not overwritten",
            receipt.display()
        )));
    }
    let export =
        std::fs::read(&file).map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
    let signed = api.import_telemetry(export)?;
    let json = serde_json::to_vec_pretty(&signed)
        .map_err(|e| CliError::refused(format!("the receipt: {e}")))?;
    write_new_file(&receipt, &json)?;
    let r = &signed.receipt;
    eprintln!(
        "stored {} record(s) of {} ({} new); committed through seq {}; receipt in {}",
        r.records,
        r.device_id,
        r.new_records,
        r.committed_seq,
        receipt.display()
    );
    Ok(())
}

/// Prints the device's newest `limit` records; with `follow`, then every new one as it
/// arrives (until interrupted).
fn tail(
    api: &FleetClient,
    output: Output,
    device: &str,
    limit: usize,
    follow: bool,
) -> Result<(), CliError> {
    let tail = TelemetryQuery {
        limit: Some(limit),
        ..TelemetryQuery::default()
    };
    let records = api.telemetry(device, &tail)?;
    print(output, &records, |list| lines(list));
    if follow {
        let mut after = records.last().map_or(0, |r| r.seq);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let query = TelemetryQuery {
                limit: Some(PAGE),
                after: Some(after),
                ..TelemetryQuery::default()
            };
            for r in api.telemetry(device, &query)? {
                after = r.seq;
                print(output, &r, line);
            }
        }
    }
    Ok(())
}

/// Prints up to `limit` of the device's records the filter selects, paging through them.
fn query(
    api: &FleetClient,
    output: Output,
    device: &str,
    filter: &Filter,
    limit: usize,
) -> Result<(), CliError> {
    let mut records = Vec::new();
    let mut after = 0;
    while records.len() < limit {
        let page = api.telemetry(
            device,
            &filter.query(after, PAGE.min(limit - records.len())),
        )?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        records.extend(page);
    }
    print(output, &records, |list| lines(list));
    Ok(())
}

/// Writes every record the filter selects of the devices (default: every device) to standard
/// output, as JSON lines or CSV.
fn export(
    api: &FleetClient,
    devices: Vec<String>,
    filter: &Filter,
    format: ExportFormat,
) -> Result<(), CliError> {
    let devices = if devices.is_empty() {
        api.devices()?.into_iter().map(|d| d.id).collect()
    } else {
        devices
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let write = |e: std::io::Error| CliError::refused(format!("cannot write the export: {e}"));
    if format == ExportFormat::Csv {
        writeln!(out, "deviceId,module,seq,timestampMs,kind,body").map_err(write)?;
    }
    for device in devices {
        let mut after = 0;
        loop {
            let page = api.telemetry(&device, &filter.query(after, PAGE))?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                let text = match format {
                    ExportFormat::Jsonl => serde_json::to_string(r).unwrap_or_default(),
                    ExportFormat::Csv => csv_row(r),
                };
                writeln!(out, "{text}").map_err(write)?;
            }
        }
    }
    out.flush().map_err(write)?;
    Ok(())
}

/// One CSV row (RFC 4180: fields with commas, quotes or line breaks are quoted).
fn csv_row(r: &TelemetryEnvelope) -> String {
    let body = serde_json::to_value(&r.record)
        .ok()
        .map(|v| v["body"].to_string())
        .unwrap_or_default();
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    format!(
        "{},{},{},{},{},{}",
        quote(&r.device_id),
        quote(&r.module),
        r.seq,
        r.timestamp_ms,
        kind_name(r.record.kind()),
        quote(&body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_common::telemetry::{EventRecord, TelemetryRecord};
    use edgefleet_transport::now_ms;

    #[test]
    fn times_are_durations_ago_or_unix_milliseconds() {
        let hour_ago = parse_time("1h").expect("1h");
        assert!(now_ms() - hour_ago >= 3_600_000 && now_ms() - hour_ago < 3_700_000);
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert!(parse_time("soon").unwrap_err().contains("not a duration"));
        assert_eq!(
            parse_kind("collected-data"),
            Ok(TelemetryKind::CollectedData)
        );
    }

    #[test]
    fn csv_rows_quote_what_needs_quoting() {
        let r = TelemetryEnvelope {
            device_id: "gw-1".into(),
            module: "m".into(),
            seq: 3,
            timestamp_ms: 7,
            record: TelemetryRecord::Event(EventRecord {
                source: None,
                error: "a \"b\", c".into(),
            }),
        };
        assert_eq!(
            csv_row(&r),
            r#"gw-1,m,3,7,event,"{""error"":""a \""b\"", c""}""#
        );
    }
}
