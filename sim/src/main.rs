//! `edgefleet-sim`: a simulated fleet for measuring the fleet service without N real agents.
//!
//! Each simulated device keeps its own MQTT connection and speaks the agent's protocol: it
//! receives its signed manifest (retained, on `desired`), verifies the signature with the
//! fleet's key, reports it applied (`reported`), sends telemetry records with increasing `seq`
//! (`telemetry/sim`) and reads the fleet's acknowledgements (`acks`). It runs no module. Every
//! second it prints one line: devices connected, the manifest versions they applied, records
//! sent and acknowledged. It is not shipped with the agent.
//!
//! Like an agent, every simulated device seals what it publishes with its message key (the
//! devices share one identity, kept in `--identity`) and takes only acknowledgements the fleet
//! signed for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use edgefleet_common::authenticity::{DeviceMessageKey, new_incarnation};
use edgefleet_common::delivery::TelemetryAck;
use edgefleet_common::fleet_api::{DeviceImport, DevicesImported, FleetInfo};
use edgefleet_common::reported::{
    ApplyStatus, DesiredOutcome, ManifestSource, OutboxState, REPORTED_SCHEMA_VERSION,
    ReportedState,
};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::signing::FleetPublicKey;
use edgefleet_common::topics::DeviceTopics;
use edgefleet_transport::{BrokerUrl, Login, TlsFiles, now_ms};
use rumqttc::{AsyncClient, Event, Packet, QoS};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The fleet service's HTTP API.
    #[arg(
        long,
        env = "EDGEFLEET_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,
    #[arg(long, env = "EDGEFLEET_TOKEN", hide_env_values = true)]
    token: String,
    /// The fleet's broker. All simulated devices log in as one user that may use every
    /// device's topics.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    mqtt_url: String,
    #[arg(long, default_value = "")]
    mqtt_username: String,
    #[arg(
        long,
        env = "EDGEFLEET_MQTT_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    mqtt_password: String,
    /// How many devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Device ids are PREFIX00000, PREFIX00001, ...
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// Add the devices to the fleet first (one import), with these tags (KEY=VALUE); a new
    /// identity for them is written to `--identity`.
    #[arg(long)]
    add: bool,
    /// The simulated devices' identity (age X25519): written with `--add`, read without.
    #[arg(long, default_value = "edgefleet-sim-devices.key")]
    identity: std::path::PathBuf,
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Telemetry records per second, all devices together.
    #[arg(long, default_value_t = 0.0)]
    records_per_second: f64,
    /// Connections opened per second (a broker refuses a storm of them).
    #[arg(long, default_value_t = 2000)]
    connect_rate: u32,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    seconds: Option<u64>,
}

/// What the simulated devices did, together.
#[derive(Debug, Default)]
struct Counters {
    /// Devices connected now.
    connected: AtomicU64,
    /// Manifests that failed verification.
    refused: AtomicU64,
    records_sent: AtomicU64,
    /// The sum of every device's acknowledged seq: records the fleet has stored.
    records_acknowledged: AtomicU64,
    /// Devices by the manifest version they applied last.
    applied: std::sync::Mutex<BTreeMap<u64, u64>>,
}

impl Counters {
    fn applied(&self, from: Option<u64>, to: u64) {
        let mut applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(from) = from
            && let Some(n) = applied.get_mut(&from)
        {
            *n -= 1;
            if *n == 0 {
                applied.remove(&from);
            }
        }
        *applied.entry(to).or_default() += 1;
    }

    fn line(&self, started: Instant, devices: usize) -> String {
        let applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(v, n)| format!("v{v}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{:.1}s connected {}/{devices} applied [{applied}] refused {} records sent {} acknowledged {}",
            started.elapsed().as_secs_f64(),
            self.connected.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.records_sent.load(Ordering::Relaxed),
            self.records_acknowledged.load(Ordering::Relaxed),
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    edgefleet_transport::install_crypto_provider();
    raise_open_files_limit();
    let http = reqwest::Client::new();
    let info: FleetInfo = http
        .get(format!("{}/v1/fleet", args.server))
        .bearer_auth(&args.token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("the fleet service")?
        .json()
        .await?;
    let key: FleetPublicKey = info
        .public_key
        .parse()
        .map_err(|e| anyhow::anyhow!("the fleet's key: {e}"))?;
    let ids: Vec<String> = (0..args.devices)
        .map(|i| format!("{}{i:05}", args.prefix))
        .collect();
    let identity = if args.add {
        let identity = DeviceIdentity::generate();
        std::fs::write(&args.identity, identity.to_secret_string())
            .with_context(|| format!("writing {}", args.identity.display()))?;
        add_devices(&http, &args, &ids, &identity).await?;
        identity
    } else {
        std::fs::read_to_string(&args.identity)
            .with_context(|| format!("{} (run with --add first)", args.identity.display()))?
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.identity.display()))?
    };
    let incarnation = new_incarnation();

    let broker: BrokerUrl = args.mqtt_url.parse()?;
    let counters = Arc::new(Counters::default());
    let key = Arc::new(key);
    let started = Instant::now();
    let per_device = args.records_per_second / args.devices.max(1) as f64;
    let pause = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate.max(1)));
    for id in &ids {
        let login = Login {
            client_id: format!("edgefleet-sim-{id}"),
            username: args.mqtt_username.clone(),
            password: args.mqtt_password.clone(),
            keep_alive: Duration::from_secs(60),
        };
        let options = edgefleet_transport::mqtt_options(&broker, &login, &TlsFiles::default())?;
        let device = Device {
            topics: DeviceTopics::new(&info.fleet, id)?,
            message_key: DeviceMessageKey::for_device(&identity, &key, &info.fleet, id)?,
            incarnation: incarnation.clone(),
            id: id.clone(),
            key: key.clone(),
            counters: counters.clone(),
            per_second: per_device,
        };
        tokio::spawn(device.run(options));
        tokio::time::sleep(pause).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        println!("{}", counters.line(started, args.devices));
        if args
            .seconds
            .is_some_and(|s| started.elapsed() >= Duration::from_secs(s))
        {
            return Ok(());
        }
    }
}

/// Simulated devices open one socket each.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if let Err(e) = setrlimit(Resource::Nofile, raised) {
        eprintln!(
            "edgefleet-sim: the open files limit stays {:?}: {e}",
            limit.current
        );
    }
}

/// Adds the devices to the fleet in one import; they share one public key.
async fn add_devices(
    http: &reqwest::Client,
    args: &Args,
    ids: &[String],
    identity: &DeviceIdentity,
) -> anyhow::Result<()> {
    let public_key = identity.public_key().to_string();
    let tags: BTreeMap<String, String> = args
        .tags
        .iter()
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let devices: Vec<DeviceImport> = ids
        .iter()
        .map(|id| DeviceImport {
            id: id.clone(),
            tags: tags.clone(),
            public_key: public_key.clone(),
        })
        .collect();
    let started = Instant::now();
    let imported: DevicesImported = http
        .post(format!("{}/v1/device-imports", args.server))
        .bearer_auth(&args.token)
        .json(&devices)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("adding the devices")?
        .json()
        .await?;
    eprintln!(
        "edgefleet-sim: {} devices added, {} updated in {:.1}s",
        imported.added,
        imported.updated,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Device {
    id: String,
    topics: DeviceTopics,
    message_key: DeviceMessageKey,
    incarnation: String,
    key: Arc<FleetPublicKey>,
    counters: Arc<Counters>,
    /// Telemetry records a second.
    per_second: f64,
}

impl Device {
    async fn run(self, options: rumqttc::MqttOptions) {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let mut applied: Option<u64> = None;
        let mut connected = false;
        let mut next_seq = 1u64;
        let mut acknowledged = 0u64;
        let mut owed = 0.0f64;
        // A device sends what it has once a second, in one message (an agent batches too).
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick(), if self.per_second > 0.0 => {
                    owed += self.per_second;
                    let count = owed.floor() as u64;
                    if count > 0 {
                        owed -= count as f64;
                        let records = self.records(next_seq, count);
                        next_seq += count;
                        let topic = self.topics.telemetry("sim");
                        let message = self.message_key.seal(&topic, &self.incarnation, &records);
                        if client.try_publish(topic, QoS::AtLeastOnce, false, message).is_ok() {
                            self.counters.records_sent.fetch_add(count, Ordering::Relaxed);
                        }
                    }
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if !connected {
                            connected = true;
                            self.counters.connected.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = client.try_subscribe(self.topics.desired(), QoS::AtLeastOnce);
                        let _ = client.try_subscribe(self.topics.acks(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == self.topics.acks() => {
                        let committed = self
                            .key
                            .open_message(&p.topic, &p.payload)
                            .ok()
                            .and_then(|body| serde_json::from_slice::<TelemetryAck>(body).ok())
                            .filter(|ack| ack.incarnation == self.incarnation)
                            .map_or(acknowledged, |ack| ack.committed_seq);
                        if committed > acknowledged {
                            self.counters
                                .records_acknowledged
                                .fetch_add(committed - acknowledged, Ordering::Relaxed);
                            acknowledged = committed;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => match self.key.verify(&p.payload) {
                        Ok(manifest) if applied.is_none_or(|v| v < manifest.version) => {
                            self.counters.applied(applied, manifest.version);
                            applied = Some(manifest.version);
                            let report = self.report(manifest.version, next_seq, acknowledged);
                            let topic = self.topics.reported();
                            let report = self.message_key.seal(&topic, &self.incarnation, &report);
                            let _ = client.try_publish(topic, QoS::AtLeastOnce, false, report);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Ok(_) => {}
                    Err(_) => {
                        if connected {
                            connected = false;
                            self.counters.connected.fetch_sub(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        }
    }

    /// `count` telemetry records from `seq` on, as one telemetry message.
    fn records(&self, seq: u64, count: u64) -> Vec<u8> {
        let now = now_ms();
        let records: Vec<serde_json::Value> = (seq..seq + count)
            .map(|seq| {
                serde_json::json!({
                    "deviceId": self.id,
                    "module": "sim",
                    "seq": seq,
                    "timestampMs": now,
                    "kind": "event",
                    "body": {"error": "simulated"},
                })
            })
            .collect();
        serde_json::to_vec(&records).unwrap_or_default()
    }

    /// The device's state with manifest `version` applied; it holds the records after
    /// `acknowledged`.
    fn report(&self, version: u64, next_seq: u64, acknowledged: u64) -> Vec<u8> {
        let state = ReportedState {
            schema_version: REPORTED_SCHEMA_VERSION.into(),
            device_id: self.id.clone(),
            agent_version: concat!("edgefleet-sim ", env!("CARGO_PKG_VERSION")).into(),
            applied_version: Some(version),
            last_desired: Some(DesiredOutcome {
                version: Some(version),
                status: ApplyStatus::Applied,
                message: "simulated".into(),
                source: ManifestSource::Fleet,
            }),
            modules: BTreeMap::new(),
            outbox: OutboxState {
                depth: 0,
                bytes: 0,
                dropped: 0,
                next_seq,
                oldest_seq: (next_seq > acknowledged + 1).then_some(acknowledged + 1),
            },
            reported_at_ms: now_ms(),
            fleet_silent_since_ms: None,
        };
        serde_json::to_vec(&state).unwrap_or_default()
    }
}
