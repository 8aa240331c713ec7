//! Value parsers shared by several commands' flags: `key=value` pairs (`--tag` of models and
//! devices, `--model` of a deployment import) and times (`--since` of telemetry and the audit
//! log).

use edgefleet_transport::now_ms;

/// `key=value`, key and value trimmed; the key may not be empty.
pub(super) fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// `90s`, `15m`, `1h`, `7d` ago, or a Unix time in milliseconds.
pub(super) fn parse_time(s: &str) -> Result<u64, String> {
    let unit = |suffix: char, ms: u64| {
        s.strip_suffix(suffix)
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| now_ms().saturating_sub(n.saturating_mul(ms)))
    };
    unit('s', 1000)
        .or_else(|| unit('m', 60_000))
        .or_else(|| unit('h', 3_600_000))
        .or_else(|| unit('d', 86_400_000))
        .or_else(|| s.parse().ok())
        .ok_or_else(|| format!("{s:?} is not a duration (90s, 15m, 1h, 7d) or Unix milliseconds"))
}
