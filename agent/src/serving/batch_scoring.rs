//! Batch scoring: a file of requests scored into a file of responses, in the same order.
//!
//! JSON Lines: one request body per line (as `POST /score` takes it), one response per line
//! out (`{"error": ...}` for a request that fails). CSV: a header naming the model's input
//! columns and one row per request; out, a column per model output (a number, or the row's
//! value as JSON when it has several) and an `error` column. CSV rows are scored in chunks of
//! [`CSV_CHUNK_ROWS`] as one batch; a chunk that fails is scored row by row so only the bad
//! rows get an error.
//!
//! Memory is bounded by one chunk whatever the file's size. The output is appended to and
//! flushed after every chunk, so an interrupted run is resumed (`resume`): the complete
//! records already in the output are kept and that many requests skipped.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use edgefleet_common::module_image::{IoSpec, ValueSpec};
use edgefleet_onnx::Model;
use serde_json::{Value, json};

/// CSV rows scored together in one inference.
pub const CSV_CHUNK_ROWS: usize = 256;
/// JSON Lines requests read before the output is flushed.
const JSONL_CHUNK: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(
        "{0}: cannot tell the format from the file name; use .jsonl (or .ndjson) for JSON Lines or .csv"
    )]
    UnknownFormat(String),
    #[error("input and output must have the same format (both JSON Lines or both CSV)")]
    MixedFormats,
    #[error("{0} exists: pass --resume to continue it, or remove it")]
    OutputExists(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Csv {
        path: String,
        #[source]
        source: csv::Error,
    },
    #[error("{0}")]
    Columns(String),
}

/// The format of a file, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

impl Format {
    pub fn of(path: &Path) -> Result<Self, BatchError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson") => Ok(Self::JsonLines),
            Some("csv") => Ok(Self::Csv),
            _ => Err(BatchError::UnknownFormat(path.display().to_string())),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// Requests skipped because a previous run had written their responses.
    pub resumed: u64,
    pub scored: u64,
    pub failed: u64,
}

/// Scores every request of `input` into `output`. `progress` is told how many bytes of the
/// input have been read, after each chunk.
pub fn score_file(
    model: &Model,
    input: &Path,
    output: &Path,
    resume: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<BatchSummary, BatchError> {
    let format = Format::of(input)?;
    if Format::of(output)? != format {
        return Err(BatchError::MixedFormats);
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| BatchError::Io { path, source }
    };
    let done = if output.exists() {
        if !resume {
            return Err(BatchError::OutputExists(output.display().to_string()));
        }
        complete_records(output, format)?
    } else {
        0
    };
    let reader = CountingReader {
        inner: File::open(input).map_err(io(input))?,
        read: 0,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)
        .map_err(io(output))?;
    let mut writer = BufWriter::new(file);
    let mut summary = BatchSummary {
        resumed: done,
        ..BatchSummary::default()
    };
    match format {
        Format::JsonLines => json_lines(model, reader, &mut writer, done, &mut summary, progress)
            .map_err(io(output))?,
        Format::Csv => csv_rows(
            model,
            reader,
            input,
            &mut writer,
            done,
            &mut summary,
            progress,
        )?,
    }
    let file = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(io(output))?;
    file.sync_all().map_err(io(output))?;
    Ok(summary)
}

fn json_lines(
    model: &Model,
    reader: CountingReader,
    out: &mut BufWriter<File>,
    skip: u64,
    summary: &mut BatchSummary,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    let mut record = 0u64;
    let mut since_flush = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        record += 1;
        if record <= skip {
            continue;
        }
        let response = match serde_json::from_str::<Value>(&line) {
            Ok(request) => model.score(&request).map_err(|e| e.to_string()),
            Err(e) => Err(format!("request {record} is not JSON: {e}")),
        };
        let response = response.unwrap_or_else(|error| {
            summary.failed += 1;
            json!({ "error": error })
        });
        summary.scored += 1;
        serde_json::to_writer(&mut *out, &response)?;
        out.write_all(b"\n")?;
        since_flush += 1;
        if since_flush == JSONL_CHUNK {
            out.flush()?;
            since_flush = 0;
            progress(reader.get_ref().read);
        }
    }
    out.flush()?;
    progress(reader.get_ref().read);
    Ok(())
}

/// How the CSV columns map onto the model's inputs.
enum Columns {
    /// One input: every column is a feature of its row, in order.
    Single { name: String },
    /// Several inputs: each column is one input's single value.
    PerInput,
}

fn csv_columns(inputs: &[IoSpec], header: &csv::StringRecord) -> Result<Columns, BatchError> {
    if let [only] = inputs {
        return Ok(Columns::Single {
            name: only.name.clone(),
        });
    }
    let names: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
    let mut columns: Vec<&str> = header.iter().collect();
    columns.sort_unstable();
    let mut wanted = names.clone();
    wanted.sort_unstable();
    if columns != wanted {
        return Err(BatchError::Columns(format!(
            "the model has inputs {names:?}: a CSV for it needs exactly one column per input, named after it (header: {:?})",
            header.iter().collect::<Vec<_>>()
        )));
    }
    Ok(Columns::PerInput)
}

/// A CSV cell as a JSON value: a number when it reads as one, else the text.
fn cell(text: &str) -> Value {
    let text = text.trim();
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => json!(n),
        _ => json!(text),
    }
}

/// One request for `rows` (all of them as one batch).
fn csv_request(columns: &Columns, header: &csv::StringRecord, rows: &[csv::StringRecord]) -> Value {
    match columns {
        Columns::Single { .. } => json!({
            "data": rows.iter().map(|r| r.iter().map(cell).collect::<Vec<_>>()).collect::<Vec<_>>()
        }),
        Columns::PerInput => {
            let mut request = serde_json::Map::new();
            for (i, name) in header.iter().enumerate() {
                let values: Vec<Value> = rows
                    .iter()
                    .map(|r| json!([cell(r.get(i).unwrap_or(""))]))
                    .collect();
                request.insert(name.to_owned(), Value::Array(values));
            }
            Value::Object(request)
        }
    }
}

fn csv_rows(
    model: &Model,
    reader: CountingReader,
    input: &Path,
    out: &mut BufWriter<File>,
    skip: u64,
    summary: &mut BatchSummary,
    progress: &mut dyn FnMut(u64),
) -> Result<(), BatchError> {
    let in_error = |source| BatchError::Csv {
        path: input.display().to_string(),
        source,
    };
    let mut csv_in = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(reader);
    let header = csv_in.headers().map_err(in_error)?.clone();
    let columns = csv_columns(model.inputs(), &header)?;
    if let Columns::Single { name } = &columns
        && let Some(width) = feature_count(model.inputs())
        && width != header.len()
    {
        return Err(BatchError::Columns(format!(
            "input {name:?} takes {width} values per row; the CSV has {} columns",
            header.len()
        )));
    }
    let outputs: Vec<String> = model.outputs().iter().map(|s| s.name.clone()).collect();
    let mut csv_out = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    let out_error = |source| BatchError::Csv {
        path: "output".into(),
        source,
    };
    if skip == 0 {
        let mut names = outputs.clone();
        names.push("error".into());
        csv_out.write_record(&names).map_err(out_error)?;
    }
    let mut rows = Vec::with_capacity(CSV_CHUNK_ROWS);
    let mut record = csv::StringRecord::new();
    let mut index = 0u64;
    loop {
        let more = csv_in.read_record(&mut record).map_err(in_error)?;
        if more {
            index += 1;
            if index > skip {
                rows.push(record.clone());
            }
        }
        if rows.len() == CSV_CHUNK_ROWS || (!more && !rows.is_empty()) {
            for result in score_rows(model, &columns, &header, &rows) {
                summary.scored += 1;
                let line = match result {
                    Ok(values) => values.into_iter().chain([String::new()]).collect(),
                    Err(e) => {
                        summary.failed += 1;
                        let mut line = vec![String::new(); outputs.len()];
                        // One line per record, so a resumed run can count them.
                        line.push(e.replace(['\r', '\n'], " "));
                        line
                    }
                };
                csv_out.write_record(&line).map_err(out_error)?;
            }
            rows.clear();
            csv_out.flush().map_err(|e| BatchError::Io {
                path: "output".into(),
                source: e,
            })?;
            progress(csv_in.get_ref().read);
        }
        if !more {
            break;
        }
    }
    Ok(())
}

/// The number of values per row a single input takes, when its shape fixes it (`[N, K]`).
fn feature_count(inputs: &[IoSpec]) -> Option<usize> {
    match inputs.first().map(|s| &s.value) {
        Some(ValueSpec::Tensor { shape, .. }) if shape.len() == 2 => usize::try_from(shape[1]).ok(),
        _ => None,
    }
}

/// Each row's output cells, or its error: the rows as one batch, or one by one when the batch
/// fails (so one bad row does not fail the others).
fn score_rows(
    model: &Model,
    columns: &Columns,
    header: &csv::StringRecord,
    rows: &[csv::StringRecord],
) -> Vec<Result<Vec<String>, String>> {
    let names: Vec<&str> = model.outputs().iter().map(|s| s.name.as_str()).collect();
    let split = |response: &Value, count: usize| -> Option<Vec<Vec<String>>> {
        let mut per_row = vec![Vec::with_capacity(names.len()); count];
        for name in &names {
            let values = response.get(*name)?.as_array()?;
            if values.len() != count {
                return None;
            }
            for (row, value) in per_row.iter_mut().zip(values) {
                row.push(cell_text(value));
            }
        }
        Some(per_row)
    };
    if let Ok(response) = model.score(&csv_request(columns, header, rows))
        && let Some(per_row) = split(&response, rows.len())
    {
        return per_row.into_iter().map(Ok).collect();
    }
    rows.iter()
        .map(|row| {
            let response = model
                .score(&csv_request(columns, header, std::slice::from_ref(row)))
                .map_err(|e| e.to_string())?;
            split(&response, 1)
                .and_then(|mut r| r.pop())
                .ok_or_else(|| "the model's outputs are not one value per row".to_owned())
        })
        .collect()
}

/// A row's value of one output: a number, or JSON when it holds more than one.
fn cell_text(value: &Value) -> String {
    match value {
        Value::Array(items) if items.len() == 1 => cell_text(&items[0]),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// The complete records an interrupted run left in `output` (a partly written last line is
/// cut off first), not counting a CSV header.
fn complete_records(output: &Path, format: Format) -> Result<u64, BatchError> {
    let io = |source| BatchError::Io {
        path: output.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(output)
        .map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        file.set_len(complete as u64).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
    }
    let lines = bytes[..complete].iter().filter(|b| **b == b'\n').count() as u64;
    Ok(match format {
        Format::JsonLines => lines,
        Format::Csv => lines.saturating_sub(1),
    })
}

/// A reader that counts the bytes read through it (for the progress bar).
struct CountingReader {
    inner: File,
    read: u64,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Whether a file in a batch directory is a request file (not a result or a partial one).
pub fn is_request_file(name: &str) -> bool {
    !name.contains(".scored.") && !name.starts_with('.') && Format::of(Path::new(name)).is_ok()
}

/// Where the results of `input` go: `NAME.scored.EXT` beside it.
pub fn scored_path(input: &Path, part: bool) -> std::path::PathBuf {
    let stem = input
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("requests");
    let ext = input
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("jsonl");
    let middle = if part { "scored.part" } else { "scored" };
    input.with_file_name(format!("{stem}.{middle}.{ext}"))
}

/// Watches a model module's batch directory and scores every request file dropped there
/// with the version serving at the time, into `NAME.scored.EXT` (written as
/// `NAME.scored.part.EXT` and renamed when complete, so a restart resumes it).
pub async fn watch(
    module: std::sync::Arc<crate::serving::model_module::ModelModule>,
    dir: std::path::PathBuf,
) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(module = %module.name, dir = %dir.display(), error = %e, "batch directory cannot be made");
    }
    let mut drop_dir = crate::offline::drop_dir::DropDir::new(dir);
    let mut tick = tokio::time::interval(crate::offline::drop_dir::POLL);
    loop {
        tick.tick().await;
        for input in drop_dir.ready(is_request_file) {
            let done = scored_path(&input, false);
            if done.exists() {
                continue;
            }
            let active = module.active();
            let file = input.clone();
            let scored = tokio::task::spawn_blocking(move || {
                let part = scored_path(&file, true);
                let summary = score_file(&active.model, &file, &part, true, &mut |_| {})?;
                std::fs::rename(&part, &done).map_err(|source| BatchError::Io {
                    path: done.display().to_string(),
                    source,
                })?;
                Ok::<_, BatchError>(summary)
            })
            .await;
            match scored {
                Ok(Ok(summary)) => tracing::info!(
                    module = %module.name,
                    file = %input.display(),
                    scored = summary.scored,
                    failed = summary.failed,
                    "batch file scored"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(module = %module.name, file = %input.display(), error = %e, "batch file not scored")
                }
                Err(e) => {
                    tracing::warn!(module = %module.name, file = %input.display(), error = %e, "batch scoring task failed")
                }
            }
        }
    }
}
