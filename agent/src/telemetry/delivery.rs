//! The telemetry delivery window, without I/O: which outbox records are handed to the MQTT
//! client, which the broker has (PubAck: frees room in the window), and which the fleet has
//! stored (its `TelemetryAck`: only then do records leave the outbox). Records the fleet has
//! not acknowledged are sent again after every reconnect, and also when the fleet has been
//! silent for a while (a broker may lose what it acknowledged), backing off.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Publications (telemetry messages and others) handed to the MQTT client and not yet
/// acknowledged by the broker.
pub const WINDOW: usize = 256;

/// How long published records may go without the fleet's acknowledgement before they are
/// sent again; doubles while the fleet stays silent, up to [`RESEND_MAX`].
pub const RESEND_AFTER: Duration = Duration::from_secs(30);
pub const RESEND_MAX: Duration = Duration::from_secs(600);

/// What a publication handed to the client carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// A telemetry message, by the highest `seq` it carries.
    Telemetry(u64),
    Other,
}

#[derive(Debug)]
pub struct Delivery {
    /// Publications handed to the client, in order, waiting for their packet id.
    queued: VecDeque<Tag>,
    in_flight: HashMap<u16, Tag>,
    /// The highest `seq` handed to the client in this round.
    cursor: u64,
    /// The highest `seq` the fleet has stored (everything up to it left the outbox).
    committed: u64,
    /// When the fleet last acknowledged something new (or the round started).
    last_progress: Instant,
    resend_after: Duration,
}

impl Delivery {
    pub fn new(now: Instant) -> Self {
        Self {
            queued: VecDeque::new(),
            in_flight: HashMap::new(),
            cursor: 0,
            committed: 0,
            last_progress: now,
            resend_after: RESEND_AFTER,
        }
    }

    /// A new connection: nothing is in flight, everything the fleet has not acknowledged is
    /// sent again, and the wait before the next resend starts from its shortest.
    pub fn connected(&mut self, now: Instant) {
        self.queued.clear();
        self.in_flight.clear();
        self.cursor = self.committed;
        self.last_progress = now;
        self.resend_after = RESEND_AFTER;
    }

    /// How many more records may be handed to the client now.
    pub fn room(&self) -> usize {
        WINDOW.saturating_sub(self.queued.len() + self.in_flight.len())
    }

    /// The `seq` after which the next records to send come.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// A publication was handed to the client (telemetry record `seq`, or something else).
    pub fn handed(&mut self, tag: Tag) {
        if let Tag::Telemetry(seq) = tag {
            self.cursor = self.cursor.max(seq);
        }
        self.queued.push_back(tag);
    }

    /// Records through `seq` were consumed: sent, or skipped (not valid outbox payloads).
    pub fn skipped(&mut self, seq: u64) {
        self.cursor = self.cursor.max(seq);
    }

    /// The client sent the oldest queued publication as packet `pkid`.
    pub fn published(&mut self, pkid: u16) {
        if let Some(tag) = self.queued.pop_front() {
            self.in_flight.insert(pkid, tag);
        }
    }

    /// The broker acknowledged packet `pkid`: room in the window, nothing more.
    pub fn broker_acked(&mut self, pkid: u16) {
        self.in_flight.remove(&pkid);
    }

    /// The fleet stored everything up to `seq`; returns whether that is news (the outbox can
    /// be trimmed to it).
    pub fn fleet_acked(&mut self, seq: u64, now: Instant) -> bool {
        if seq <= self.committed {
            return false;
        }
        self.committed = seq;
        self.cursor = self.cursor.max(seq);
        self.last_progress = now;
        self.resend_after = RESEND_AFTER;
        true
    }

    /// The fleet answered a sync request: it is listening and has stored exactly through
    /// `seq`, so everything after it is sent again now.
    pub fn fleet_synced(&mut self, seq: u64, now: Instant) -> bool {
        let news = self.fleet_acked(seq, now);
        self.cursor = self.committed;
        self.last_progress = now;
        self.resend_after = RESEND_AFTER;
        news
    }

    /// Whether records the fleet has not acknowledged for too long should be sent again; if
    /// so, the next round starts after the last acknowledged record.
    pub fn resend_due(&mut self, now: Instant) -> bool {
        let waiting = self.cursor > self.committed;
        if !waiting || now.duration_since(self.last_progress) < self.resend_after {
            return false;
        }
        self.cursor = self.committed;
        self.last_progress = now;
        self.resend_after = (self.resend_after * 2).min(RESEND_MAX);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_frees_the_window_and_only_the_fleet_moves_the_cursor_base() {
        let t0 = Instant::now();
        let mut d = Delivery::new(t0);
        for seq in 1..=3 {
            d.handed(Tag::Telemetry(seq));
        }
        assert_eq!((d.cursor(), d.room()), (3, WINDOW - 3));
        for pkid in 1..=3 {
            d.published(pkid);
        }
        d.broker_acked(1);
        d.broker_acked(2);
        assert_eq!(d.room(), WINDOW - 1, "PubAcks free the window");
        // A reconnect before the fleet acknowledged anything sends everything again.
        d.connected(t0);
        assert_eq!((d.cursor(), d.room()), (0, WINDOW));
        assert!(d.fleet_acked(2, t0));
        assert!(!d.fleet_acked(1, t0), "an older acknowledgement is no news");
        d.connected(t0);
        assert_eq!(
            d.cursor(),
            2,
            "after a reconnect, from the fleet's acknowledgement on"
        );
    }

    #[test]
    fn records_the_fleet_does_not_acknowledge_are_sent_again_with_backoff() {
        let t0 = Instant::now();
        let mut d = Delivery::new(t0);
        d.handed(Tag::Telemetry(5));
        assert!(!d.resend_due(t0 + RESEND_AFTER / 2));
        assert!(d.resend_due(t0 + RESEND_AFTER));
        assert_eq!(d.cursor(), 0);
        d.handed(Tag::Telemetry(5));
        let t1 = t0 + RESEND_AFTER;
        assert!(
            !d.resend_due(t1 + RESEND_AFTER),
            "the second wait is twice as long"
        );
        assert!(d.resend_due(t1 + RESEND_AFTER * 2));
        // A sync answer sends everything after what the fleet has again, at once.
        d.handed(Tag::Telemetry(9));
        assert!(d.fleet_synced(1, t1), "news: the outbox is trimmed");
        assert_eq!(d.cursor(), 1);
        d.handed(Tag::Telemetry(9));
        assert!(!d.fleet_synced(1, t1), "no news, and yet a new round");
        assert_eq!(d.cursor(), 1);
        // Nothing waiting: nothing to resend.
        d.handed(Tag::Telemetry(5));
        assert!(d.fleet_acked(5, t1));
        assert!(!d.resend_due(t1 + RESEND_MAX * 2));
    }
}
