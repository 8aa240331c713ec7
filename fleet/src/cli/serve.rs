//! `edgefleet serve`: runs the fleet service. Its flags (each with its environment variable
//! where a service manager sets it) become the service's options; the admin token comes from
//! EDGEFLEET_TOKEN when set.

use std::path::PathBuf;

use clap::Args;

use crate::service::{ServeOptions, serve};
use crate::store::TelemetryRetention;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(
        long,
        env = "EDGEFLEET_DATA_DIR",
        default_value = "/var/lib/edgefleet-fleet"
    )]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: std::net::SocketAddr,
    #[arg(long, default_value = "default")]
    pub fleet: String,
    /// The fleet's MQTT broker (mosquitto, EMQX, HiveMQ). Without it, an embedded broker
    /// listens on --embedded-broker-listen.
    #[arg(long, env = "EDGEFLEET_MQTT_URL")]
    pub mqtt_url: Option<String>,
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub embedded_broker_listen: std::net::SocketAddr,
    /// CA of an mqtts:// broker (default: the system roots).
    #[arg(long, env = "EDGEFLEET_MQTT_CA_FILE", default_value = "")]
    pub mqtt_ca_file: String,
    #[arg(long, env = "EDGEFLEET_MQTT_USERNAME", default_value = "")]
    pub mqtt_username: String,
    #[arg(
        long,
        env = "EDGEFLEET_MQTT_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub mqtt_password: String,
    /// The broker URL devices use, when it differs from the service's.
    #[arg(long)]
    pub device_mqtt_url: Option<String>,
    /// The ONNX Runtime library (to validate and package models).
    #[arg(
        long,
        env = "ORT_DYLIB_PATH",
        default_value = "/usr/lib/edgefleet/libonnxruntime.so.1.31.1"
    )]
    pub onnx_runtime: PathBuf,
    /// Telemetry older than this many days is dropped.
    #[arg(long, default_value_t = 7)]
    pub telemetry_retention_days: u64,
    /// Each device's oldest telemetry is dropped beyond this many MiB.
    #[arg(long, default_value_t = 64)]
    pub telemetry_max_mib_per_device: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (no token: bind it where only the
    /// monitoring system reaches it).
    #[arg(long, env = "EDGEFLEET_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Keep the fleet in PostgreSQL (postgres://USER:PASSWORD@HOST/DATABASE) instead of the
    /// embedded store in --data-dir. Several replicas of the service may share one database.
    #[arg(long, env = "EDGEFLEET_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// With --database and several replicas: this replica's name, unique among them and the
    /// same across its restarts (it names the replica's MQTT session; named replicas share the
    /// devices' messages). Without it the service is the database's only one.
    #[arg(long, env = "EDGEFLEET_REPLICA")]
    pub replica: Option<String>,
    /// Serve the API and dashboard over HTTPS with this certificate chain (PEM, the server's
    /// certificate first); needs --tls-key.
    #[arg(long, env = "EDGEFLEET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// With a mosquitto --mqtt-url: the user allowed to use mosquitto's dynamic security plugin
    /// (`mosquitto_ctrl dynsec init` creates one). The fleet then creates each device's login and
    /// role on `device add`/`import`, deletes it on `device remove`, and changes it on `device
    /// rotate-credentials` (docs/operations.md).
    #[arg(
        long,
        env = "EDGEFLEET_BROKER_ADMIN_USER",
        requires = "broker_admin_password_file"
    )]
    pub broker_admin_user: Option<String>,
    /// The file holding --broker-admin-user's password (one line).
    #[arg(
        long,
        env = "EDGEFLEET_BROKER_ADMIN_PASSWORD_FILE",
        requires = "broker_admin_user"
    )]
    pub broker_admin_password_file: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "EDGEFLEET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Runs the service until it is told to stop.
pub(super) fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let broker_admin = match (args.broker_admin_user, &args.broker_admin_password_file) {
        (Some(user), Some(file)) => {
            if args.mqtt_url.is_none() {
                anyhow::bail!(
                    "--broker-admin-user manages logins at an external mosquitto: give its --mqtt-url too (the embedded broker's logins are the fleet's own)"
                );
            }
            let password = std::fs::read_to_string(file).map_err(|e| {
                anyhow::anyhow!("--broker-admin-password-file {}: {e}", file.display())
            })?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            if password.is_empty() {
                anyhow::bail!(
                    "--broker-admin-password-file {} is empty: write the admin user's password into it",
                    file.display()
                );
            }
            Some((user, password))
        }
        _ => None,
    };
    let options = ServeOptions {
        data_dir: args.data_dir,
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
        retention: TelemetryRetention {
            max_age_ms: args
                .telemetry_retention_days
                .saturating_mul(24 * 3600 * 1000),
            max_bytes_per_device: args.telemetry_max_mib_per_device.saturating_mul(1 << 20),
        },
        metrics_listen: args.metrics_listen,
        database: args.database,
        replica: args.replica,
        broker_admin,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert_file, key_file)| crate::https::TlsIdentity {
                cert_file,
                key_file,
            }),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        Ok(serve(options, listener, edgefleet_transport::shutdown_signal()).await?)
    })
}
