//! A device's inference charts: each module's request rate and latency (p50, p99) over the
//! last hour in time buckets, drawn as inline SVG line charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use edgefleet_common::telemetry::{TelemetryEnvelope, TelemetryRecord};

use super::html::esc;

/// The inference rate and latency (p50, p99) of each module, in time buckets (at least 10 s,
/// at most 60 of them over the records' span), as SVG charts.
pub(super) fn charts(inferences: &[TelemetryEnvelope]) -> String {
    // Per module: each record's time and latency.
    let mut series: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for r in inferences {
        if let TelemetryRecord::Inference(i) = &r.record {
            series
                .entry(&r.module)
                .or_default()
                .push((r.timestamp_ms, i.latency_us));
        }
    }
    if series.is_empty() {
        return r#"<h2>Inference</h2><p class="muted">No inference from this device in the last hour.</p>"#.to_owned();
    }
    let (first, last) = inferences.iter().fold((u64::MAX, 0), |(a, b), r| {
        (a.min(r.timestamp_ms), b.max(r.timestamp_ms))
    });
    let bucket = (last.saturating_sub(first) / 60).max(10_000);
    let mut out = String::from("<h2>Inference, last hour</h2>");
    for (module, records) in series {
        let mut buckets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (t, latency) in records {
            buckets
                .entry(t - (t - first) % bucket)
                .or_default()
                .push(latency);
        }
        let (mut rate, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for (t, mut latencies) in buckets {
            latencies.sort_unstable();
            let at = |q: f64| {
                latencies[((latencies.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
            };
            rate.push((t, latencies.len() as f64 / (bucket as f64 / 1000.0)));
            p50.push((t, at(0.5)));
            p99.push((t, at(0.99)));
        }
        let _ = write!(
            out,
            r#"<div class="charts"><h3>{}</h3>{}{}</div>"#,
            esc(module),
            chart("requests/s", &[("rate", &rate)]),
            chart("latency ms", &[("p50", &p50), ("p99", &p99)]),
        );
    }
    out
}

/// A line chart of `lines` (name, points of (time ms, value)).
pub(super) fn chart(title: &str, lines: &[(&str, &[(u64, f64)])]) -> String {
    let (w, h, pad) = (420.0, 160.0, 34.0);
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let (t0, t1) = all
        .clone()
        .fold((u64::MAX, 0), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let max = all.fold(0.0f64, |m, p| m.max(p.1)).max(1e-9);
    let x = |t: u64| {
        pad + (t.saturating_sub(t0)) as f64 / (t1.saturating_sub(t0).max(1)) as f64
            * (w - pad - 8.0)
    };
    let y = |v: f64| h - 18.0 - v / max * (h - 30.0);
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {w} {h}" role="img" aria-label="{}"><line x1="{pad}" y1="{}" x2="{}" y2="{}" class="axis"/><text x="2" y="14">{}</text><text x="2" y="{}">0</text>"#,
        esc(title),
        esc(title),
        h - 18.0,
        w - 8.0,
        h - 18.0,
        fmt_value(max),
        h - 18.0,
    );
    for (i, (name, points)) in lines.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="line{i}" points="{}"><title>{}</title></polyline><text x="{}" y="{}" class="legend{i}">{}</text>"#,
            path.join(" "),
            esc(name),
            w - 70.0,
            14.0 + 12.0 * i as f64,
            esc(name)
        );
        // Each point as a dot too: a lone point draws no line.
        for p in points.iter() {
            let _ = write!(
                svg,
                r#"<circle class="dot{i}" cx="{:.1}" cy="{:.1}" r="2"/>"#,
                x(p.0),
                y(p.1)
            );
        }
    }
    svg.push_str("</svg></figure>");
    svg
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
