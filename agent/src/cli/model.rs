//! `edgefleet-agent model …`: working with an ONNX model file directly, without a deployment
//! (inspect, score, batch, profile, serve).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use edgefleet_onnx::OnnxRuntime;
use edgefleet_onnx::canary::metadata_from_model;
use edgefleet_onnx::profile::ProfileSettings;
use edgefleet_onnx::tensor_json::describe;

use super::output::{OutputFormat, log_to_stderr};
use crate::config::AgentConfig;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub(super) enum ModelCommand {
    /// Print the inputs and outputs a model declares.
    Inspect { model: PathBuf },
    /// Score one request body (as POST /score takes it) and print the response.
    Score {
        model: PathBuf,
        /// The request body, e.g. '{"data": [[1,2,3,4,5,6,7,8,9,10]]}'.
        request: String,
    },
    /// Score a file of requests into a file of responses, in order: JSON Lines (a request
    /// body per line) or CSV (a header and a row per request), streaming; an interrupted run
    /// continues with --resume.
    Batch {
        model: PathBuf,
        input: PathBuf,
        #[arg(long, short)]
        output: PathBuf,
        /// Keep the complete responses OUTPUT already has and score the rest.
        #[arg(long)]
        resume: bool,
    },
    /// Run a model at several batch sizes and intra-op thread counts and report latency,
    /// throughput and peak memory, with the threads and memory to give it on a device.
    Profile {
        model: PathBuf,
        /// A request body to profile with (its first row is repeated for larger batches);
        /// default: the smallest synthesized request that runs.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Comma-separated (default 1,8,32).
        #[arg(long, value_delimiter = ',')]
        batch_sizes: Vec<usize>,
        /// Intra-op thread counts, comma-separated (default 1, 2 and this machine's cores).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<u16>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Serve a model file with the scoring API, without a deployment (for trying a model
    /// out). Inference records go to a telemetry outbox in --data-dir, as they do on a device.
    Serve {
        model: PathBuf,
        #[arg(long, default_value_t = 5001)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Where the outbox is kept (default: a temporary directory, removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub(super) fn model_command(config: &AgentConfig, command: ModelCommand) -> anyhow::Result<()> {
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.onnx_runtime_library.clone());
    let runtime = OnnxRuntime::load(&library)?;
    let path = match &command {
        ModelCommand::Inspect { model }
        | ModelCommand::Score { model, .. }
        | ModelCommand::Profile { model, .. }
        | ModelCommand::Batch { model, .. }
        | ModelCommand::Serve { model, .. } => model,
    };
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let model = runtime
        .model(&bytes)
        .with_context(|| format!("{}", path.display()))?;
    match command {
        ModelCommand::Inspect { .. } => {
            for spec in model.inputs() {
                println!("input  {}: {}", spec.name, describe(spec));
            }
            for spec in model.outputs() {
                println!("output {}: {}", spec.name, describe(spec));
            }
        }
        ModelCommand::Score { request, .. } => {
            let body: serde_json::Value =
                serde_json::from_str(&request).context("the request is not valid JSON")?;
            println!("{}", model.score(&body)?);
        }
        ModelCommand::Batch {
            input,
            output,
            resume,
            ..
        } => {
            let size = std::fs::metadata(&input)
                .with_context(|| format!("cannot read {}", input.display()))?
                .len();
            let bar = indicatif::ProgressBar::new(size).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let summary = crate::serving::batch_scoring::score_file(
                &model,
                &input,
                &output,
                resume,
                &mut |read| bar.set_position(read),
            );
            bar.finish_and_clear();
            let summary = summary?;
            eprintln!(
                "{} requests scored into {} ({} failed{})",
                summary.scored,
                output.display(),
                summary.failed,
                if summary.resumed > 0 {
                    format!(", {} kept from the interrupted run", summary.resumed)
                } else {
                    String::new()
                }
            );
            if summary.failed > 0 {
                anyhow::bail!(
                    "{} requests failed; their errors are in {}",
                    summary.failed,
                    output.display()
                );
            }
        }
        ModelCommand::Profile {
            input,
            batch_sizes,
            threads,
            output,
            ..
        } => {
            let sample = match input {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a JSON request body", file.display()))?
                }
                None => {
                    let metadata = metadata_from_model("model", &model);
                    edgefleet_onnx::canary::find_sample(&model, &metadata)?.input
                }
            };
            drop(model);
            let settings = ProfileSettings::or_defaults(batch_sizes, threads);
            let profile =
                edgefleet_onnx::profile::profile(runtime, &bytes, &sample, &settings, |run| {
                    eprintln!(
                        "threads {} batch {}: p50 {} µs, {:.0} rows/s",
                        run.intra_op_threads, run.batch, run.p50_us, run.rows_per_second
                    );
                })?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&profile)?),
                OutputFormat::Text => println!("{}", profile.to_text()),
            }
        }
        ModelCommand::Serve {
            model: path,
            port,
            bind,
            data_dir,
        } => {
            serve(config, path, model, &bind, port, data_dir)?;
        }
    }
    Ok(())
}

/// `model serve`: the scoring API of one model file, with an outbox of its own (its warnings,
/// a refused inference record say, are logged to stderr).
pub(super) fn serve(
    config: &AgentConfig,
    path: PathBuf,
    model: edgefleet_onnx::Model,
    bind: &str,
    port: u16,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    use crate::serving::model_module::ModelModule;
    use crate::telemetry::outbox::Outbox;

    log_to_stderr();
    let (dir, temporary) = match data_dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("edgefleet-serve-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_stem()
        .map_or("model".to_owned(), |s| s.to_string_lossy().into_owned());
    let module = std::sync::Arc::new(ModelModule::from_file(
        &name,
        model,
        &path.display().to_string(),
        bind,
        port,
    ));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let store = Store::open(&dir.join("agent.redb"))?;
        let outbox = Outbox::start(store, "local".into(), config.telemetry.outbox_max_bytes);
        let limits = crate::serving::scoring_api::ScoringLimits::from_config(config);
        let listener = tokio::net::TcpListener::bind((bind, port))
            .await
            .with_context(|| format!("cannot listen on {bind}:{port}"))?;
        let router =
            move || crate::serving::scoring_api::router(module.clone(), outbox.clone(), limits);
        let server = crate::serving::scoring_api::ScoringServer::start(listener, router)
            .context("cannot start the scoring API's request threads")?;
        eprintln!("serving {} on http://{bind}:{port}/score", path.display());
        edgefleet_transport::shutdown_signal().await;
        server.stop(std::time::Duration::from_secs(5)).await;
        anyhow::Ok(())
    });
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
