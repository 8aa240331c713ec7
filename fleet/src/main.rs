//! edgefleet: parse arguments, run the service or one CLI command, map errors to the exit
//! codes documented in `--help`.

use std::process::ExitCode;

use clap::Parser as _;
use edgefleet_fleet::cli::{Cli, Command, ServeArgs, run};
use edgefleet_fleet::service::{ServeOptions, serve};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_service(args).map_err(|e| (1, format!("{e:#}"))),
        _ => run(cli).map_err(|e| (e.code, e.message)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("edgefleet: {message}");
            ExitCode::from(code)
        }
    }
}

fn run_service(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = ServeOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        fleet: args.fleet,
        mqtt_url: args.mqtt_url,
        embedded_broker_listen: args.embedded_broker_listen,
        mqtt_ca_file: args.mqtt_ca_file,
        mqtt_username: args.mqtt_username,
        mqtt_password: args.mqtt_password,
        token: std::env::var("EDGEFLEET_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        onnx_runtime_library: args.onnx_runtime,
        device_mqtt_url: args.device_mqtt_url,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(options, async {
        let _ = tokio::signal::ctrl_c().await;
    }))
}
