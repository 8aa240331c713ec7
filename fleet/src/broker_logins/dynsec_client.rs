//! The fleet's administrative MQTT connection to mosquitto's dynamic security plugin: a
//! session of its own (its own login, `--broker-admin-user`), separate from the session that
//! moves manifests and telemetry, so a slow answer never holds up devices' messages. A call
//! publishes one request and waits for mosquitto's answer with the same correlation ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_transport::{BrokerUrl, Login, TlsFiles};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::sync::{oneshot, watch};

use super::dynsec::{self, Command, RESPONSE_TOPIC, Response};

/// How long a call waits for the connection and then for mosquitto's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DynsecError {
    #[error(
        "mosquitto's dynamic security did not answer within {seconds} s: is the broker up, is the plugin loaded, and may --broker-admin-user publish to $CONTROL/dynamic-security/v1 and subscribe to its /response?"
    )]
    NoAnswer { seconds: u64 },
    #[error("mosquitto answered {answered} of {sent} dynamic-security commands")]
    Incomplete { sent: usize, answered: usize },
    #[error("the broker admin connection: {0}")]
    Setup(#[from] edgefleet_transport::TlsError),
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<Response>>>>>;

/// A connection that sends dynamic-security commands and returns mosquitto's answers.
#[derive(Debug)]
pub struct DynsecClient {
    client: AsyncClient,
    waiting: Waiting,
    /// True while connected and subscribed to the answers.
    ready: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DynsecClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DynsecClient {
    /// Connects (in the background, reconnecting as needed) to `broker` as `login`.
    pub fn connect(broker: &BrokerUrl, login: &Login, tls: &TlsFiles) -> Result<Self, DynsecError> {
        let options = edgefleet_transport::mqtt_options(broker, login, tls)?;
        let (client, eventloop) = AsyncClient::new(options, 64);
        let waiting = Waiting::default();
        let (ready_tx, ready) = watch::channel(false);
        let task = tokio::spawn(run(client.clone(), eventloop, waiting.clone(), ready_tx));
        Ok(Self {
            client,
            waiting,
            ready,
            task,
        })
    }

    /// Sends `commands` as one request; returns one answer per command, in order.
    pub async fn call(&self, commands: &[Command]) -> Result<Vec<Response>, DynsecError> {
        let no_answer = DynsecError::NoAnswer {
            seconds: ANSWER_TIMEOUT.as_secs(),
        };
        let mut ready = self.ready.clone();
        tokio::time::timeout(ANSWER_TIMEOUT, ready.wait_for(|r| *r))
            .await
            .map_err(|_| DynsecError::NoAnswer {
                seconds: ANSWER_TIMEOUT.as_secs(),
            })?
            .map_err(|_| DynsecError::NoAnswer {
                seconds: ANSWER_TIMEOUT.as_secs(),
            })?;
        let batch = hex::encode(rand::random::<[u8; 8]>());
        let (tx, rx) = oneshot::channel();
        self.waiting_map().insert(batch.clone(), tx);
        let sent = self
            .client
            .publish(
                dynsec::CONTROL_TOPIC,
                QoS::AtLeastOnce,
                false,
                dynsec::request(&batch, commands),
            )
            .await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(ANSWER_TIMEOUT, rx).await,
            Err(_) => {
                self.waiting_map().remove(&batch);
                return Err(no_answer);
            }
        };
        self.waiting_map().remove(&batch);
        let mut answers = match answer {
            Ok(Ok(answers)) => answers,
            _ => return Err(no_answer),
        };
        answers.sort_by_key(|a| dynsec::correlation(a).map_or(usize::MAX, |(_, n)| n));
        if answers.len() != commands.len() {
            return Err(DynsecError::Incomplete {
                sent: commands.len(),
                answered: answers.len(),
            });
        }
        Ok(answers)
    }

    fn waiting_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Vec<Response>>>> {
        // Inserts and removes only: a map left by a panicking thread is still consistent.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Polls the connection: subscribes to the answers after each connect and hands each answer
/// to the call waiting for it.
async fn run(
    client: AsyncClient,
    mut eventloop: EventLoop,
    waiting: Waiting,
    ready: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                let _ = client.try_subscribe(RESPONSE_TOPIC, QoS::AtLeastOnce);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
                if !granted {
                    tracing::error!(
                        topic = RESPONSE_TOPIC,
                        "the broker refused the admin login's subscription: give --broker-admin-user the dynamic security admin role"
                    );
                }
                ready.send_replace(granted);
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == RESPONSE_TOPIC => {
                deliver(&p.payload, &waiting);
            }
            Ok(_) => {}
            Err(e) => {
                if ready.send_replace(false) {
                    tracing::warn!(error = %e, "lost the broker admin connection");
                } else {
                    tracing::debug!(error = %e, "broker admin connection");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn deliver(payload: &[u8], waiting: &Waiting) {
    let answers = match dynsec::responses(payload) {
        Ok(answers) => answers,
        Err(e) => {
            tracing::warn!(error = %e, "an answer of mosquitto's dynamic security not understood");
            return;
        }
    };
    let Some(batch) = answers
        .iter()
        .find_map(|a| dynsec::correlation(a).map(|(b, _)| b.to_owned()))
    else {
        return;
    };
    let waiter = waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&batch);
    if let Some(waiter) = waiter {
        let _ = waiter.send(answers);
    }
}
