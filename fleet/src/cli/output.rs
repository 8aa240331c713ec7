//! How the CLI shows what the service answered: the `--output` format, JSON or YAML (the
//! API's own types) or text for a person (tables, times, dashes for what is absent), and a
//! progress line on a terminal. Every command prints through it, so it sits below all of
//! them; how one resource reads as text lives with that resource's command.

use std::io::IsTerminal as _;

use clap::ValueEnum;
use edgefleet_transport::now_ms;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

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
