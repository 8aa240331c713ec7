//! edgefleet-agent: parse arguments, run the command, map errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edgefleet_agent::model::OnnxRuntime;
use edgefleet_agent::tensor_json::describe;

/// The Edgefleet device agent.
#[derive(Debug, Parser)]
#[command(name = "edgefleet-agent", version, about)]
struct Cli {
    /// The ONNX Runtime shared library (libonnxruntime.so.1.31.1).
    #[arg(
        long,
        env = "ORT_DYLIB_PATH",
        global = true,
        default_value = "/usr/lib/edgefleet/libonnxruntime.so.1.31.1"
    )]
    onnx_runtime: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with an ONNX model file directly, without a deployment.
    #[command(subcommand)]
    Model(ModelCommand),
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Print the inputs and outputs a model declares.
    Inspect { model: PathBuf },
    /// Score one request body (as POST /score takes it) and print the response.
    Score {
        model: PathBuf,
        /// The request body, e.g. '{"data": [[1,2,3,4,5,6,7,8,9,10]]}'.
        request: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgefleet-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Model(command) => {
            let runtime = OnnxRuntime::load(&cli.onnx_runtime)?;
            let path = match &command {
                ModelCommand::Inspect { model } | ModelCommand::Score { model, .. } => model,
            };
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
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
            }
        }
    }
    Ok(())
}
