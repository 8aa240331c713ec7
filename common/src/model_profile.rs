//! What profiling a model found: latency, throughput and memory at several batch sizes and
//! intra-op thread counts, and the settings it recommends. Made by `edgefleet-agent model
//! profile` and by the fleet (`edgefleet model profile`, kept on the model version).

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelProfile {
    pub profiled_ms: UnixMillis,
    /// One row per intra-op thread count and batch size.
    pub runs: Vec<ProfileRun>,
    /// The fewest threads whose p50 at the smallest batch is within 10% of the best.
    pub recommended_intra_op_threads: u16,
    /// The most memory any run took (session and buffers, above what the process held before
    /// the session was made).
    pub peak_memory_mib: f64,
    /// The peak with 25% headroom, rounded up: what to budget for this model on a device.
    pub recommended_memory_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileRun {
    pub batch: usize,
    pub intra_op_threads: u16,
    pub runs: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub rows_per_second: f64,
    pub peak_memory_mib: f64,
}

impl ModelProfile {
    /// The runs as a table, and the recommendation.
    pub fn to_text(&self) -> String {
        let mut out =
            String::from("threads  batch      p50 µs      p99 µs      rows/s  peak MiB\n");
        for r in &self.runs {
            out.push_str(&format!(
                "{:>7}  {:>5}  {:>10}  {:>10}  {:>10.0}  {:>8.1}\n",
                r.intra_op_threads,
                r.batch,
                r.p50_us,
                r.p99_us,
                r.rows_per_second,
                r.peak_memory_mib
            ));
        }
        out.push_str(&format!(
            "recommended: intraOpThreads {}, memory {} MiB (peak {:.1} MiB + 25%)",
            self.recommended_intra_op_threads, self.recommended_memory_mib, self.peak_memory_mib
        ));
        out
    }
}
