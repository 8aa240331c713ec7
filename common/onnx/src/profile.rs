//! Model profiling: runs a model at several batch sizes and intra-op thread counts, as the
//! agent serves it (a JSON request through [`Model::score`]), and measures latency,
//! throughput and memory.

use std::time::{Duration, Instant};

use edgefleet_common::manifest::SessionOptions;
use edgefleet_common::model_profile::{ModelProfile, ProfileRun};
use edgefleet_common::module_image::{IoSpec, ValueSpec};
use serde_json::Value;

use crate::model::{Model, ModelError};
use crate::runtime::OnnxRuntime;

/// How long each combination is run, at least.
const RUN_TIME: Duration = Duration::from_millis(500);
/// Runs of each combination, at least (for a p99 from more than a handful).
const MIN_RUNS: u64 = 50;
/// Runs before timing starts (first-run allocations and caches).
const WARMUP_RUNS: u64 = 3;

/// What to profile.
#[derive(Debug, Clone)]
pub struct ProfileSettings {
    pub batch_sizes: Vec<usize>,
    pub intra_op_threads: Vec<u16>,
}

impl ProfileSettings {
    /// The given values, or the defaults for those not given: batches of 1, 8 and 32 rows;
    /// 1, 2 and every core of this machine.
    pub fn or_defaults(batch_sizes: Vec<usize>, intra_op_threads: Vec<u16>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut threads = if intra_op_threads.is_empty() {
            vec![1, 2, u16::try_from(cores).unwrap_or(u16::MAX)]
        } else {
            intra_op_threads
        };
        threads.sort_unstable();
        threads.dedup();
        let mut batches = if batch_sizes.is_empty() {
            vec![1, 8, 32]
        } else {
            batch_sizes
        };
        batches.sort_unstable();
        batches.dedup();
        Self {
            batch_sizes: batches,
            intra_op_threads: threads,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("a batch size or thread count of 0 cannot be profiled")]
    Zero,
}

/// Profiles the model in `bytes` with `sample` (a request body as `POST /score` takes it; its
/// first row is repeated to make larger batches). `progress` is told of each run as it ends.
pub fn profile(
    runtime: OnnxRuntime,
    bytes: &[u8],
    sample: &Value,
    settings: &ProfileSettings,
    mut progress: impl FnMut(&ProfileRun),
) -> Result<ModelProfile, ProfileError> {
    if settings.batch_sizes.contains(&0) || settings.intra_op_threads.contains(&0) {
        return Err(ProfileError::Zero);
    }
    let mut runs = Vec::new();
    for &threads in &settings.intra_op_threads {
        let before = Memory::read();
        let options = SessionOptions {
            intra_op_threads: Some(threads),
            ..SessionOptions::default()
        };
        let (model, _) = runtime.model_with(bytes, &options)?;
        for &batch in &settings.batch_sizes {
            let Some(request) = batched(model.inputs(), sample, batch) else {
                continue;
            };
            let run = measure(&model, &request, batch, threads, before)?;
            progress(&run);
            runs.push(run);
        }
    }
    // Judged at the smallest batch: a device serves requests as they come.
    let smallest = settings.batch_sizes.first().copied().unwrap_or(1);
    let best = runs
        .iter()
        .filter(|r| r.batch == smallest)
        .map(|r| r.p50_us)
        .min()
        .unwrap_or(0);
    let recommended_intra_op_threads = runs
        .iter()
        .filter(|r| r.batch == smallest && r.p50_us as f64 <= best as f64 * 1.1)
        .map(|r| r.intra_op_threads)
        .min()
        .unwrap_or(1);
    let peak_memory_mib = runs.iter().map(|r| r.peak_memory_mib).fold(0.0, f64::max);
    Ok(ModelProfile {
        profiled_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        runs,
        recommended_intra_op_threads,
        peak_memory_mib,
        recommended_memory_mib: (peak_memory_mib * 1.25).ceil() as u64,
    })
}

fn measure(
    model: &Model,
    request: &Value,
    batch: usize,
    threads: u16,
    before: Memory,
) -> Result<ProfileRun, ModelError> {
    for _ in 0..WARMUP_RUNS {
        model.score(request)?;
    }
    Memory::reset_peak();
    let mut latencies_us = Vec::new();
    let started = Instant::now();
    while started.elapsed() < RUN_TIME || (latencies_us.len() as u64) < MIN_RUNS {
        let one = Instant::now();
        model.score(request)?;
        latencies_us.push(one.elapsed().as_micros() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let peak = Memory::read().peak_kib.saturating_sub(before.resident_kib);
    latencies_us.sort_unstable();
    let at = |q: f64| latencies_us[((latencies_us.len() - 1) as f64 * q).round() as usize];
    Ok(ProfileRun {
        batch,
        intra_op_threads: threads,
        runs: latencies_us.len() as u64,
        p50_us: at(0.50),
        p99_us: at(0.99),
        rows_per_second: (latencies_us.len() * batch) as f64 / elapsed,
        peak_memory_mib: peak as f64 / 1024.0,
    })
}

/// `sample` with its first row repeated `batch` times in every input, or `None` when an input
/// has a fixed first dimension and `batch` is not 1.
pub fn batched(inputs: &[IoSpec], sample: &Value, batch: usize) -> Option<Value> {
    let Value::Object(members) = sample else {
        return (batch == 1).then(|| sample.clone());
    };
    let single = inputs.len() == 1 && members.contains_key("data");
    let mut out = serde_json::Map::new();
    for (key, value) in members {
        let spec = if single {
            inputs.first()
        } else {
            inputs.iter().find(|s| &s.name == key)
        };
        let dynamic_batch = matches!(
            spec.map(|s| &s.value),
            Some(ValueSpec::Tensor { shape, .. }) if shape.first().is_some_and(|d| *d < 0)
        ) || matches!(
            spec.map(|s| &s.value),
            Some(ValueSpec::SequenceOfMaps { .. })
        );
        let first = value.as_array().and_then(|rows| rows.first());
        let value = match (dynamic_batch, first) {
            (true, Some(row)) => Value::Array(vec![row.clone(); batch]),
            _ if batch == 1 => value.clone(),
            _ => return None,
        };
        out.insert(key.clone(), value);
    }
    Some(Value::Object(out))
}

/// This process's resident memory now and at its peak, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    resident_kib: u64,
    peak_kib: u64,
}

impl Memory {
    fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Self {
            resident_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }

    /// Starts the peak over from the current resident size (Linux's `clear_refs` 5); where
    /// that is refused the peak stays the process's all-time one, an overestimate.
    fn reset_peak() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
}
