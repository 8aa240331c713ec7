//! sensor-sim: publishes simulated readings to an MQTT topic, as a sensor gateway would, so a
//! container module can feed a model module's input topic. Configured by the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | MQTT_HOST | 127.0.0.1 | broker address (an IP address: the image has no resolver) |
//! | MQTT_PORT | 1883 | |
//! | MQTT_USERNAME, MQTT_PASSWORD | (none) | |
//! | TOPIC | sensors/readings | where readings go |
//! | MODEL_MODULE | (none) | instead of TOPIC: that model module's input topic on this device (`$EDGEFLEET_INPUTS_TOPIC/<module>`, the agent sets EDGEFLEET_INPUTS_TOPIC) |
//! | FEATURES | 10 | values per reading |
//! | INTERVAL_MS | 1000 | time between readings |
//! | COUNT | 0 | readings to send, 0 for no end |
//!
//! Each reading is `{"data": [[v1, ..., vN]]}`, the body a model module's input topic takes.
//! Values follow a seeded pseudo-random walk, so runs are repeatable. SIGTERM or SIGINT end it
//! after the current reading (as `docker stop` asks), with exit code 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{Client, MqttOptions, QoS};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("sensor-sim: {name}={v:?} is not a number");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn main() {
    let host = env("MQTT_HOST", "127.0.0.1");
    let port = u16::try_from(number("MQTT_PORT", 1883)).unwrap_or(1883);
    let topic = match (
        std::env::var("MODEL_MODULE"),
        std::env::var("EDGEFLEET_INPUTS_TOPIC"),
    ) {
        (Ok(module), Ok(inputs)) => format!("{inputs}/{module}"),
        _ => env("TOPIC", "sensors/readings"),
    };
    let features = number("FEATURES", 10) as usize;
    let interval = Duration::from_millis(number("INTERVAL_MS", 1000));
    let count = number("COUNT", 0);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("sensor-sim: cannot handle signal {signal}: {e}");
        }
    }

    let mut options = MqttOptions::new(
        format!("sensor-sim-{}", std::process::id()),
        host.clone(),
        port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    if let Ok(user) = std::env::var("MQTT_USERNAME") {
        options.set_credentials(user, env("MQTT_PASSWORD", ""));
    }
    let (client, mut connection) = Client::new(options, 64);
    std::thread::spawn(move || {
        for event in connection.iter() {
            if let Err(e) = event {
                eprintln!("sensor-sim: broker {host}:{port}: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });

    println!(
        "sensor-sim: publishing {features} values to {topic} every {} ms",
        interval.as_millis()
    );
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut sent = 0u64;
    loop {
        let row: Vec<f64> = (0..features)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state % 2000) as f64 / 1000.0 - 1.0) / 10.0
            })
            .collect();
        let payload = serde_json::json!({ "data": [row] }).to_string();
        if let Err(e) = client.publish(topic.as_str(), QoS::AtLeastOnce, false, payload) {
            eprintln!("sensor-sim: {e}");
        }
        sent += 1;
        if count > 0 && sent >= count {
            std::thread::sleep(Duration::from_millis(500));
            return;
        }
        // Sleep in short steps so a stop request is answered quickly.
        let mut slept = Duration::ZERO;
        while slept < interval {
            if stop.load(Ordering::Relaxed) {
                println!("sensor-sim: stopping after {sent} readings");
                return;
            }
            let step = (interval - slept).min(Duration::from_millis(50));
            std::thread::sleep(step);
            slept += step;
        }
    }
}
