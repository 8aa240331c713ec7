//! `edgefleet-agent status` and `check`: what the agent is doing (from the running agent, else
//! from its store) and whether the device is ready for it.

use std::path::Path;

use anyhow::Context as _;
use edgefleet_common::manifest::{Module, ModuleKind};
use edgefleet_common::reported::{
    ModuleState, REPORTED_SCHEMA_VERSION, ReportedState, RuntimeStatus,
};

use super::output::OutputFormat;
use crate::config::AgentConfig;
use crate::local::status_socket;
use crate::store::Store;

/// Runs the checks and prints them; an error (exit 1) when one fails.
pub(super) fn check(path: Option<&Path>, output: OutputFormat) -> anyhow::Result<()> {
    use crate::check::{Check, Verdict};
    let source = path.map_or("the default configuration".to_owned(), |p| {
        p.display().to_string()
    });
    let checks = match crate::config::load(path, std::env::vars()) {
        Ok(config) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(crate::check::run(&config, &source))
        }
        Err(e) => vec![Check {
            name: "configuration".into(),
            verdict: Verdict::Fail,
            detail: e.to_string(),
            fix: Some(
                "fix the field named; `edgefleet-agent print-default-config` shows every setting"
                    .into(),
            ),
        }],
    };
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&checks)?),
        OutputFormat::Text => {
            for c in &checks {
                let verdict = match c.verdict {
                    Verdict::Ok => "ok  ",
                    Verdict::Warn => "warn",
                    Verdict::Fail => "FAIL",
                };
                println!("{verdict}  {:<18} {}", c.name, c.detail);
                if let Some(fix) = &c.fix {
                    println!("      {:<18} fix: {fix}", "");
                }
            }
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// Prints the agent's state: from the running agent's status socket, or, when it is not
/// running, from its store.
pub(super) fn status(config: &AgentConfig, json: bool) -> anyhow::Result<()> {
    // An agent that holds its store but does not answer yet is starting: ask it again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (state, running) = loop {
        if let Ok(bytes) = status_socket::read(&config.status_socket_path()) {
            let state: ReportedState = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the agent's status socket {} answered with something other than its state",
                    config.status_socket_path().display()
                )
            })?;
            break (state, true);
        }
        match Store::open(&config.store_path()) {
            Err(crate::store::StoreError::Open {
                source: redb::DatabaseError::DatabaseAlreadyOpen,
                ..
            }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            opened => break (stored_state(config, opened)?, false),
        }
    };
    if json {
        let mut doc = serde_json::to_value(&state)?;
        doc["running"] = running.into();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let source = if running {
        "agent running"
    } else {
        "agent not running; read from its store"
    };
    println!("device          {} ({source})", state.device_id);
    match state.applied_version {
        Some(version) => println!("applied         version {version}"),
        None => println!("applied         nothing yet"),
    }
    if let Some(o) = &state.last_desired {
        let version = o.version.map_or("-".to_owned(), |v| v.to_string());
        let source = match o.source {
            edgefleet_common::reported::ManifestSource::Fleet => "",
            edgefleet_common::reported::ManifestSource::Bundle => " (from a bundle)",
        };
        println!(
            "last manifest   version {version}: {} {}{source}",
            u16::from(o.status),
            o.message
        );
    }
    for (name, m) in &state.modules {
        let status = serde_json::to_value(m.runtime_status)?;
        let mut line = format!(
            "module          {name}: {} {}",
            status.as_str().unwrap_or("-"),
            m.image
        );
        if let Some(i) = &m.inference {
            line.push_str(&format!(" ({} inferences, {} errors)", i.count, i.errors));
        }
        if let Some(error) = &m.last_error {
            line.push_str(&format!(" error: {error}"));
        }
        println!("{line}");
    }
    println!(
        "outbox          {} record(s), {} bytes, {} dropped",
        state.outbox.depth, state.outbox.bytes, state.outbox.dropped
    );
    Ok(())
}

/// What a stopped agent's store holds, in the shape of its reported state.
pub(super) fn stored_state(
    config: &AgentConfig,
    opened: Result<Store, crate::store::StoreError>,
) -> anyhow::Result<ReportedState> {
    let store = opened.with_context(|| {
        format!(
            "cannot open the agent store {} and no agent answers on {}",
            config.store_path().display(),
            config.status_socket_path().display()
        )
    })?;
    let key = config.fleet_key()?;
    let applied = store.applied()?.and_then(|w| key.verify(&w).ok());
    let modules = store
        .modules()?
        .into_iter()
        .map(|(name, record)| {
            let kind = applied
                .as_ref()
                .and_then(|m| m.modules.get(&name))
                .map_or(ModuleKind::Model, Module::kind);
            let state = ModuleState {
                kind,
                runtime_status: RuntimeStatus::Stopped,
                image: record.image,
                image_digest: Some(record.digest),
                restart_count: 0,
                exit_code: None,
                last_start_ms: None,
                last_error: None,
                warnings: Vec::new(),
                inference: None,
            };
            (name, state)
        })
        .collect();
    Ok(ReportedState {
        schema_version: REPORTED_SCHEMA_VERSION.to_owned(),
        device_id: config.device_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        applied_version: applied.map(|m| m.version),
        last_desired: store.outcome()?,
        modules,
        outbox: store.outbox_state()?,
        reported_at_ms: edgefleet_transport::now_ms(),
        fleet_silent_since_ms: None,
    })
}
