//! A model module being served: the active model version (swapped atomically on activation,
//! so requests in flight finish on the version they started with), its serving options, a
//! count of slow runs in a row, and its inference counters.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use edgefleet_common::manifest::{ModelServing, SessionOptions};
use edgefleet_common::module_image::ModuleMetadata;
use edgefleet_common::reported::InferenceStats;
use edgefleet_onnx::Model;

/// One loaded version of a model module.
#[derive(Debug)]
pub struct ActiveModel {
    pub model: Model,
    /// From the image's `model/module.json`, or made from the model itself.
    pub metadata: ModuleMetadata,
    pub image: String,
    pub digest: String,
    pub blobs: Vec<String>,
    /// The session options it was loaded with, and what runs otherwise than they ask.
    pub session: SessionOptions,
    pub warnings: Vec<String>,
}

/// Inference this quick runs on the request's own thread; slower inference runs on the
/// blocking pool, which costs a thread hand-off per request.
const INLINE_MAX_US: u64 = 100;
/// Consecutive slower runs after which a model counts as slow: one slow run is more often a
/// preempted thread than a slow model.
const SLOW_RUNS: u32 = 4;

/// Recent latencies kept for the p50/p99 summary.
const LATENCY_WINDOW: usize = 2048;

#[derive(Debug, Default)]
struct Counters {
    count: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    next: usize,
}

/// A served model module.
#[derive(Debug)]
pub struct ModelModule {
    pub name: String,
    active: ArcSwap<ActiveModel>,
    serving: ArcSwap<ModelServing>,
    counters: Mutex<Counters>,
    /// Runs in a row that took longer than [`INLINE_MAX_US`].
    slow_runs: AtomicU32,
    /// The module's Prometheus series (see `metrics`).
    succeeded: metrics::Counter,
    failed: metrics::Counter,
    latency: metrics::Histogram,
}

impl ModelModule {
    pub fn new(name: &str, active: ActiveModel, serving: ModelServing) -> Self {
        Self {
            name: name.to_owned(),
            active: ArcSwap::from_pointee(active),
            serving: ArcSwap::from_pointee(serving),
            counters: Mutex::new(Counters::default()),
            slow_runs: AtomicU32::new(0),
            succeeded: metrics::counter!("edgefleet_agent_inferences_total", "module" => name.to_owned(), "result" => "ok"),
            failed: metrics::counter!("edgefleet_agent_inferences_total", "module" => name.to_owned(), "result" => "error"),
            latency: metrics::histogram!("edgefleet_agent_inference_seconds", "module" => name.to_owned()),
        }
    }

    /// A module serving a model file over HTTP on `bind:port` only, as `model serve` does
    /// (no image, no authentication, no MQTT input, no data collection).
    pub fn from_file(name: &str, model: Model, file: &str, bind: &str, port: u16) -> Self {
        let active = ActiveModel {
            metadata: edgefleet_onnx::canary::metadata_from_model(name, &model),
            model,
            image: file.to_owned(),
            digest: String::new(),
            blobs: Vec::new(),
            session: SessionOptions::default(),
            warnings: Vec::new(),
        };
        let serving = ModelServing {
            http_port: port,
            bind_address: bind.to_owned(),
            auth_key_sha256: Vec::new(),
            mqtt_input: false,
            data_collection_ppm: 0,
        };
        Self::new(name, active, serving)
    }

    /// The version serving now; holding it keeps it alive across a swap. The guard costs no
    /// write to memory another thread shares; hold it briefly (`Guard::into_inner` keeps it).
    pub fn active(&self) -> Guard<Arc<ActiveModel>> {
        self.active.load()
    }

    /// Makes `next` the serving version. Requests that hold the previous one finish on it.
    pub fn swap(&self, next: ActiveModel) {
        self.active.store(Arc::new(next));
    }

    pub fn serving(&self) -> Guard<Arc<ModelServing>> {
        self.serving.load()
    }

    pub fn set_serving(&self, serving: ModelServing) {
        self.serving.store(Arc::new(serving));
    }

    /// Whether the next inference is expected to be quick enough to run on the request's own
    /// thread (one of the last few runs was).
    pub fn runs_inline(&self) -> bool {
        self.slow_runs.load(Ordering::Relaxed) < SLOW_RUNS
    }

    pub fn observe(&self, latency_us: u64, ok: bool) {
        if latency_us > INLINE_MAX_US {
            self.slow_runs.fetch_add(1, Ordering::Relaxed);
        } else if self.slow_runs.load(Ordering::Relaxed) != 0 {
            // Written only when it changes: every request thread reads it.
            self.slow_runs.store(0, Ordering::Relaxed);
        }
        if ok { &self.succeeded } else { &self.failed }.increment(1);
        self.latency.record(latency_us as f64 / 1e6);
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        c.count += 1;
        if !ok {
            c.errors += 1;
        }
        let sample = u32::try_from(latency_us).unwrap_or(u32::MAX);
        if c.latencies_us.len() < LATENCY_WINDOW {
            c.latencies_us.push(sample);
        } else {
            let i = c.next;
            c.latencies_us[i] = sample;
        }
        c.next = (c.next + 1) % LATENCY_WINDOW;
    }

    pub fn stats(&self) -> InferenceStats {
        let Ok(c) = self.counters.lock() else {
            return InferenceStats::default();
        };
        let mut sorted = c.latencies_us.clone();
        sorted.sort_unstable();
        InferenceStats {
            count: c.count,
            errors: c.errors,
            latency_p50_us: percentile(&sorted, 0.50),
            latency_p99_us: percentile(&sorted, 0.99),
        }
    }
}

/// The `q` quantile (0..=1) of ascending `sorted` values, nearest rank.
fn percentile(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    u64::from(sorted[i.min(sorted.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_sorted_latencies() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), 51);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&[], 0.99), 0);
    }
}
