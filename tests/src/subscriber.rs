//! A long-lived MQTT subscriber (rumqttc) that collects every message of its topics in the
//! background: a test reads what arrived instead of racing short-lived client processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// Messages received so far, as (topic, payload). Disconnects when dropped.
pub struct Subscriber {
    messages: Arc<Mutex<Vec<(String, String)>>>,
    client: Client,
}

impl Subscriber {
    /// Connects to 127.0.0.1:`port` as `user` with a persistent session named `client_id`
    /// (the broker queues QoS 1 messages while it is away) and subscribes `topics`.
    pub fn connect(
        port: u16,
        user: &str,
        password: &str,
        client_id: &str,
        topics: &[&str],
    ) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_credentials(user, password)
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut connection) = Client::new(options, 1024);
        for topic in topics {
            client
                .subscribe(*topic, QoS::AtLeastOnce)
                .expect("subscribe request");
        }
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let resubscribe = client.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = device_body(&String::from_utf8_lossy(&p.payload));
                        if let Ok(mut m) = sink.lock() {
                            m.push((p.topic.clone(), payload));
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                        for topic in &topics {
                            let _ = resubscribe.try_subscribe(topic.as_str(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Self { messages, client }
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Payloads received on `topic` so far.
    pub fn payloads(&self, topic: &str) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p)
            .collect()
    }
}

/// The body of a message a device sealed with its message key (`{"body":..,"incarnation":..,
/// "mac":..}`), or `payload` itself when it is not one. Tests that stand in for the fleet read
/// what the agent said this way; the fleet's own checks of the MAC have tests of their own.
pub fn device_body(payload: &str) -> String {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sealed<'a> {
        #[serde(borrow)]
        body: &'a serde_json::value::RawValue,
        #[allow(dead_code, reason = "part of the wire form")]
        incarnation: String,
        #[allow(dead_code, reason = "part of the wire form")]
        mac: String,
    }
    serde_json::from_str::<Sealed<'_>>(payload).map_or_else(
        |_| payload.to_owned(),
        |sealed| sealed.body.get().to_owned(),
    )
}

/// The envelopes a telemetry message carries (a JSON array of them, or one envelope, sealed by
/// the device or not); a payload that is not one is a test failure.
pub fn telemetry_envelopes(payload: &str) -> Vec<serde_json::Value> {
    let payload = &device_body(payload);
    edgefleet_common::telemetry::message_envelopes(payload.as_bytes())
        .unwrap_or_else(|e| panic!("not a telemetry message ({e}): {payload}"))
        .iter()
        .map(|json| serde_json::from_str(json.get()).expect("envelope JSON"))
        .collect()
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}
