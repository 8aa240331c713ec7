//! `edgefleet serve`: the fleet service. It opens the store and the fleet's keys (created on
//! first start), starts the embedded broker unless an external one is given, connects the
//! broker admin login when device logins are managed on mosquitto, and runs the MQTT session,
//! the rollout and credential-rotation tasks and the HTTP API, over HTTPS when given a
//! certificate (on a listener the caller bound, so tests run it in-process on port 0) until
//! shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::signing::FleetSigningKey;
use edgefleet_common::topics::check_name;
use edgefleet_onnx::OnnxRuntime;
use edgefleet_transport::{BrokerUrl, Login, TlsFiles};
use rumqttc::AsyncClient;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::broker_logins::DeviceLogins;
use crate::broker_logins::dynsec_client::DynsecClient;
use crate::domain::{ADVANCE_EVERY, Fleet, FleetSettings, ROTATIONS_EVERY, Tokens};
use crate::store::{FleetStore, TelemetryRetention};
use crate::{embedded_broker, mqtt_session, routes};

/// How `edgefleet serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub fleet: String,
    /// The fleet's broker; `None` starts the embedded broker on `embedded_broker_listen`.
    pub mqtt_url: Option<String>,
    pub mqtt_username: String,
    pub mqtt_password: String,
    /// CA of an `mqtts://` broker (empty: the system roots).
    pub mqtt_ca_file: String,
    pub embedded_broker_listen: SocketAddr,
    /// The admin token; when absent, one is created and kept in the store (`<data_dir>/admin-token`
    /// with the embedded store).
    pub token: Option<String>,
    pub onnx_runtime_library: PathBuf,
    /// The broker URL written into device configurations (default: `mqtt_url`).
    pub device_mqtt_url: Option<String>,
    /// How long and how much telemetry is kept per device.
    pub retention: TelemetryRetention,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The PostgreSQL store (`postgres://…`); `None` keeps the embedded store in `data_dir`.
    pub database: Option<String>,
    /// This replica's name among those sharing the database, unique and the same across its
    /// restarts; without it the service is the database's only one.
    pub replica: Option<String>,
    /// Serve the API and dashboard over HTTPS with this certificate and key; `None`: HTTP.
    pub tls: Option<crate::https::TlsIdentity>,
    /// With an external mosquitto: the login (user, password) allowed to use its dynamic
    /// security plugin, through which the fleet manages device logins and roles.
    pub broker_admin: Option<(String, String)>,
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    FleetName(#[from] edgefleet_common::topics::TopicNameError),
    #[error("the fleet signing key: {0}")]
    SigningKey(#[from] edgefleet_common::signing::KeyParseError),
    #[error("the fleet secrets key: {0}")]
    SecretsKey(#[from] edgefleet_common::sealing::SealingError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    OnnxRuntime(#[from] edgefleet_onnx::runtime::RuntimeError),
    #[error(transparent)]
    EmbeddedBroker(#[from] embedded_broker::BrokerError),
    #[error("--mqtt-url {0}")]
    BrokerUrl(#[from] edgefleet_transport::BrokerUrlError),
    #[error("--mqtt-ca-file: {0}")]
    Tls(#[from] edgefleet_transport::TlsError),
    #[error("--broker-admin-user: {0}")]
    BrokerAdmin(String),
    #[error(transparent)]
    Fleet(#[from] crate::error::FleetError),
    #[error("the HTTP API: {0}")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    Https(#[from] crate::https::HttpsError),
}

/// Queued publications (manifests, commands) before the domain layer waits for the session.
const OUTGOING_QUEUE: usize = 1024;

/// The fleet's signing key, the key its secrets are sealed with and the admin token: created
/// on first start, by the first replica of a shared database.
async fn keys(
    store: &FleetStore,
    options: &ServeOptions,
) -> Result<(FleetSigningKey, DeviceIdentity, String), ServeError> {
    let key_text = store
        .secret("fleet-signing.key", || {
            FleetSigningKey::generate().to_base64()
        })
        .await?;
    let key = FleetSigningKey::from_base64(&key_text)?;
    let secrets: DeviceIdentity = store
        .secret("fleet-secrets.key", || {
            DeviceIdentity::generate().to_secret_string()
        })
        .await?
        .parse()?;
    let token = match &options.token {
        Some(t) => t.clone(),
        None => {
            store
                .secret("admin-token", || hex::encode(rand::random::<[u8; 24]>()))
                .await?
        }
    };
    Ok((key, secrets, token))
}

/// The broker the fleet's session connects to.
struct Broker {
    url: String,
    /// The fleet's user name and password there.
    login: (String, String),
    /// For the embedded broker (started when no URL is given), the logins it accepts.
    embedded: Option<embedded_broker::Credentials>,
}

/// Where device logins are managed: the embedded broker's table, mosquitto's dynamic security
/// through the admin login, or nowhere (another broker).
fn device_logins(
    options: &ServeOptions,
    broker: &BrokerUrl,
    embedded: Option<embedded_broker::Credentials>,
) -> Result<DeviceLogins, ServeError> {
    if let Some(credentials) = embedded {
        tracing::warn!("{}", crate::broker_logins::EMBEDDED_BROKER_WARNING);
        return Ok(DeviceLogins::Embedded(credentials));
    }
    let Some((username, password)) = &options.broker_admin else {
        return Ok(DeviceLogins::Unmanaged);
    };
    let login = Login {
        client_id: format!(
            "edgefleet-fleet-{}-admin-{}",
            options.fleet,
            hex::encode(rand::random::<[u8; 4]>())
        ),
        username: username.clone(),
        password: password.clone(),
        keep_alive: Duration::from_secs(30),
    };
    let tls = TlsFiles {
        ca_file: options.mqtt_ca_file.clone(),
        ..TlsFiles::default()
    };
    let admin = DynsecClient::connect(broker, &login, &tls)
        .map_err(|e| ServeError::BrokerAdmin(e.to_string()))?;
    tracing::info!(user = %username, "device logins and roles managed through mosquitto's dynamic security");
    Ok(DeviceLogins::DynamicSecurity {
        admin,
        fleet: options.fleet.clone(),
    })
}

/// The broker of `options`, starting the embedded one when no URL is given.
fn broker(options: &ServeOptions) -> Result<Broker, ServeError> {
    Ok(match &options.mqtt_url {
        Some(url) => Broker {
            url: url.clone(),
            login: (options.mqtt_username.clone(), options.mqtt_password.clone()),
            embedded: None,
        },
        None => {
            let user = "edgefleet-fleet".to_owned();
            let password = hex::encode(rand::random::<[u8; 24]>());
            let credentials = embedded_broker::Credentials::default();
            if let Ok(mut c) = credentials.write() {
                c.insert(user.clone(), password.clone());
            }
            embedded_broker::start(options.embedded_broker_listen, credentials.clone())?;
            let url = format!("mqtt://{}", options.embedded_broker_listen);
            tracing::info!(%url, "embedded MQTT broker started");
            Broker {
                url,
                login: (user, password),
                embedded: Some(credentials),
            }
        }
    })
}

/// Runs the service on `listener` until `shutdown` resolves.
pub async fn serve(
    options: ServeOptions,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    edgefleet_transport::install_crypto_provider();
    check_name("fleet name", &options.fleet)?;
    // Read first: a wrong file is told before anything else starts.
    let https = options
        .tls
        .as_ref()
        .map(crate::https::server_config)
        .transpose()?;
    let store = match &options.database {
        Some(url) => FleetStore::connect_postgres(url).await?,
        None => FleetStore::open_embedded(&options.data_dir)?,
    };
    tracing::info!(store = store.backend_name(), "fleet store open");
    let (key, secrets, token) = keys(&store, &options).await?;
    let onnx = OnnxRuntime::load(&options.onnx_runtime_library)?;

    let Broker {
        url: mqtt_url,
        login,
        embedded: broker_credentials,
    } = broker(&options)?;
    let broker: BrokerUrl = mqtt_url.parse()?;
    let logins = device_logins(&options, &broker, broker_credentials)?;
    // Named replicas (on a shared database) each keep their own persistent MQTT session and
    // share the devices' messages (MQTT shared subscriptions). An unnamed service is the only
    // one: mosquitto does not queue shared-subscription messages while no member is connected,
    // so it keeps a plain subscription and gets what arrived while it was down.
    let replica = match (&options.database, &options.replica) {
        (Some(_), Some(name)) => Some(name.clone()),
        _ => None,
    };
    let client_id = match &replica {
        Some(replica) => format!("edgefleet-fleet-{}-{replica}", options.fleet),
        None => format!("edgefleet-fleet-{}", options.fleet),
    };
    tracing::info!(%client_id, "MQTT session");
    let login = Login {
        client_id,
        username: login.0,
        password: login.1,
        keep_alive: Duration::from_secs(30),
    };
    let tls = TlsFiles {
        ca_file: options.mqtt_ca_file.clone(),
        ..TlsFiles::default()
    };
    let mut mqtt_options = edgefleet_transport::mqtt_options(&broker, &login, &tls)?;
    // A persistent session: what devices publish while the service restarts waits for it at
    // the broker, and is acknowledged only once stored.
    mqtt_options.set_clean_session(false).set_manual_acks(true);
    let (client, eventloop) = AsyncClient::new(mqtt_options, OUTGOING_QUEUE);

    let (outgoing_tx, outgoing) = mpsc::channel(OUTGOING_QUEUE);
    let settings = FleetSettings {
        name: options.fleet.clone(),
        mqtt_url,
        device_mqtt_url: options.device_mqtt_url.clone(),
        retention: options.retention,
        shared_subscriptions: replica
            .is_some()
            .then(|| format!("edgefleet-{}", options.fleet)),
    };
    let fleet =
        Arc::new(Fleet::new(settings, store, key, secrets, onnx, outgoing_tx, logins).await?);
    let (stop_session, session_stop) = watch::channel(false);
    let session = tokio::spawn(mqtt_session::run(
        fleet.clone(),
        client,
        eventloop,
        outgoing,
        session_stop,
    ));

    let rollouts = tokio::spawn(advance_rollouts(fleet.clone()));
    let rotations = tokio::spawn(complete_rotations(fleet.clone()));
    let render_queue = tokio::spawn(render_queue(fleet.clone()));
    let metrics = match options.metrics_listen {
        Some(listen) => {
            let listener = TcpListener::bind(listen).await.map_err(ServeError::Http)?;
            crate::metrics::install()
                .map(|handle| tokio::spawn(crate::metrics::serve(listener, handle, fleet.clone())))
        }
        None => None,
    };
    let tokens = Arc::new(Tokens::new(&token));
    let dashboard_key = fleet
        .store
        .secret("dashboard-session.key", || {
            hex::encode(rand::random::<[u8; 32]>())
        })
        .await?;
    let app = routes::router(fleet.clone(), tokens.clone()).merge(crate::dashboard::router(
        fleet.clone(),
        tokens,
        &dashboard_key,
    ));
    let listen = listener.local_addr().map_err(ServeError::Http)?;
    let info = fleet.info();
    let scheme = if https.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{listen}");
    tracing::info!(%url, fleet = %info.fleet, public_key = %info.public_key, "fleet service ready");
    match https {
        Some(config) => {
            let listener =
                crate::https::TlsListener::new(listener, config).map_err(ServeError::Http)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(ServeError::Http)?;
        }
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Http)?,
    }
    rollouts.abort();
    rotations.abort();
    render_queue.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    let _ = stop_session.send(true);
    let _ = session.await;
    Ok(())
}

/// How often the render queue is polled when no notification came.
const RENDER_QUEUE_POLL: Duration = Duration::from_secs(5);

/// Renders what is left in the render queue: at start (a crash of this process), and when
/// another replica may have died mid-render (woken by its notification, or polling).
async fn render_queue(fleet: Arc<Fleet>) {
    let mut wakeups = None;
    loop {
        if let Err(e) = fleet.render_queued().await {
            tracing::error!(error = %e, "queued renders not done; trying again");
        }
        fleet
            .store
            .render_jobs_queued(&mut wakeups, RENDER_QUEUE_POLL)
            .await;
    }
}

/// Completes MQTT password rotations devices confirmed, every [`ROTATIONS_EVERY`].
async fn complete_rotations(fleet: Arc<Fleet>) {
    let mut tick = tokio::time::interval(ROTATIONS_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = fleet.complete_rotations().await {
            tracing::error!(error = %e, "MQTT password rotations not completed; trying again");
        }
    }
}

/// Moves staged rollouts on, every [`ADVANCE_EVERY`].
async fn advance_rollouts(fleet: Arc<Fleet>) {
    let mut tick = tokio::time::interval(ADVANCE_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = fleet.advance_rollouts().await {
            tracing::error!(error = %e, "rollouts not advanced");
        }
    }
}
