//! PubAcks in the order the broker delivered the publications. With manual acknowledgements a
//! client acknowledges a message only once it is done with it (stored, scored), which may be
//! later for one message than for the next; but MQTT 3.1.1 (4.6) requires PubAcks in the order
//! the publications arrived, and rumqttd (the fleet's embedded broker) drops a client that
//! acknowledges out of order. [`OrderedAcks`] holds back an acknowledgement until every
//! publication that arrived before it is done too.
//!
//! An acknowledgement is never dropped: one that finds the client's request queue full (a
//! large batch of publications ahead of it) waits in order until [`OrderedAcks::flush`], which
//! the session loop calls after every event. A broker sends a client only so many
//! unacknowledged messages (mosquitto: 20), so a lost acknowledgement would stop delivery on a
//! healthy connection for good.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use rumqttc::{AsyncClient, Publish, QoS};

/// The acknowledgements owed on the current connection.
#[derive(Clone)]
pub struct OrderedAcks {
    client: AsyncClient,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Counts connections: an acknowledgement owed on an earlier one is void.
    connection: u64,
    /// The id of the first pending entry.
    first: u64,
    /// Publications in arrival order, and whether their receiver is done with them.
    pending: VecDeque<(Publish, bool)>,
    /// Done, in order, and not yet taken by the client's request queue.
    ready: VecDeque<Publish>,
}

/// The acknowledgement of one publication: [`PendingAck::done`] lets it go out (after those
/// of the publications before it). Dropped without `done`, the publication is never
/// acknowledged on this connection and the broker delivers it again after the next connect.
#[derive(Debug)]
pub struct PendingAck {
    acks: Option<OrderedAcks>,
    connection: u64,
    id: u64,
}

impl std::fmt::Debug for OrderedAcks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderedAcks").finish_non_exhaustive()
    }
}

impl OrderedAcks {
    pub fn new(client: AsyncClient) -> Self {
        Self {
            client,
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The queue stays consistent if a holder panicked: entries are pushed and popped whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection: what was owed on the old one is void (the broker delivers those
    /// publications again).
    pub fn connected(&self) {
        let mut state = self.state();
        state.connection += 1;
        let pending = state.pending.len() as u64;
        state.first += pending;
        state.pending.clear();
        state.ready.clear();
    }

    /// Hands the client the acknowledgements that are ready, as many as its queue takes.
    pub fn flush(&self) {
        let mut state = self.state();
        while let Some(publish) = state.ready.pop_front() {
            if let Err(rumqttc::ClientError::TryRequest(_)) = self.client.try_ack(&publish) {
                state.ready.push_front(publish);
                return;
            }
        }
    }

    /// Registers a publication as it arrives; QoS 0 needs no acknowledgement.
    pub fn received(&self, publish: &Publish) -> PendingAck {
        if publish.qos == QoS::AtMostOnce {
            return PendingAck {
                acks: None,
                connection: 0,
                id: 0,
            };
        }
        let mut state = self.state();
        state.pending.push_back((publish.clone(), false));
        PendingAck {
            acks: Some(self.clone()),
            connection: state.connection,
            id: state.first + state.pending.len() as u64 - 1,
        }
    }

    /// Registers a publication the receiver is already done with.
    pub fn done_now(&self, publish: &Publish) {
        self.received(publish).done();
    }
}

impl PendingAck {
    /// The receiver is done: the acknowledgement goes out with every one before it that is.
    pub fn done(mut self) {
        let Some(acks) = self.acks.take() else {
            return;
        };
        let mut state = acks.state();
        if state.connection != self.connection || self.id < state.first {
            return;
        }
        let index = (self.id - state.first) as usize;
        if let Some(entry) = state.pending.get_mut(index) {
            entry.1 = true;
        }
        while state.pending.front().is_some_and(|(_, done)| *done) {
            if let Some((publish, _)) = state.pending.pop_front() {
                state.first += 1;
                state.ready.push_back(publish);
            }
        }
        drop(state);
        acks.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(pkid: u16) -> Publish {
        let mut p = Publish::new("t", QoS::AtLeastOnce, vec![]);
        p.pkid = pkid;
        p
    }

    /// The PubAcks the client sends, in order.
    fn sent(requests: &flume::Receiver<rumqttc::Request>) -> Vec<u16> {
        requests
            .try_iter()
            .filter_map(|r| match r {
                rumqttc::Request::PubAck(ack) => Some(ack.pkid),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn acknowledgements_leave_in_arrival_order_once_all_before_them_are_done() {
        let (tx, requests) = flume::bounded(16);
        let acks = OrderedAcks::new(AsyncClient::from_senders(tx));
        let first = acks.received(&publish(1));
        let second = acks.received(&publish(2));
        acks.done_now(&publish(3));
        assert!(sent(&requests).is_empty(), "3 waits for 1 and 2");
        second.done();
        assert!(sent(&requests).is_empty(), "2 waits for 1");
        first.done();
        assert_eq!(sent(&requests), [1, 2, 3]);

        // A full request queue keeps them, in order, until there is room.
        let (tx, requests) = flume::bounded(1);
        let acks = OrderedAcks::new(AsyncClient::from_senders(tx));
        acks.done_now(&publish(1));
        acks.done_now(&publish(2));
        acks.done_now(&publish(3));
        assert_eq!(sent(&requests), [1]);
        acks.flush();
        assert_eq!(sent(&requests), [2]);
        acks.flush();
        acks.flush();
        assert_eq!(sent(&requests), [3]);

        // What was owed on a lost connection is void.
        let stale = acks.received(&publish(4));
        acks.connected();
        stale.done();
        acks.done_now(&publish(1));
        assert_eq!(sent(&requests), [1]);
    }
}
