//! Telling producers that their record is accepted (durable, with its `seq`) or why not:
//! directly, or through a relay that wakes a runtime once per commit.

use tokio::sync::{mpsc, oneshot};

use super::OutboxError;

/// Told the record's `seq` once it is durable, or why it was not accepted.
pub(super) type Accepted = oneshot::Sender<Result<u64, OutboxError>>;
/// Acceptances with their results, as a relay delivers them.
type Relayed = Vec<(Accepted, Result<u64, OutboxError>)>;

/// Delivers the acknowledgements of one commit to the runtime waiting for them in one message.
/// Each acknowledgement sent from the writer's thread wakes its waiting task's runtime with a
/// syscall of its own; through a relay, a runtime is woken once per commit and its task there
/// completes the waits on that runtime, where a wake costs no syscall. The scoring API's
/// request threads each have one.
#[derive(Clone)]
pub struct AcceptanceRelay(mpsc::UnboundedSender<Relayed>);

impl std::fmt::Debug for AcceptanceRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptanceRelay").finish_non_exhaustive()
    }
}

impl AcceptanceRelay {
    /// Starts the relay's task on the current runtime (it ends when the last handle is gone).
    pub fn start() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Relayed>();
        tokio::spawn(async move {
            while let Some(acks) = rx.recv().await {
                for (ack, result) in acks {
                    let _ = ack.send(result);
                }
            }
        });
        Self(tx)
    }
}

/// Tells each waiting producer of a batch its result (`result(i)` for the batch's `i`th record):
/// directly, or in one message per relay.
pub(super) fn tell_producers(
    acks: Vec<(Option<Accepted>, Option<AcceptanceRelay>)>,
    result: impl Fn(usize) -> Result<u64, OutboxError>,
) {
    let mut relayed: Vec<(AcceptanceRelay, Relayed)> = Vec::new();
    for (i, (ack, relay)) in acks.into_iter().enumerate() {
        let Some(ack) = ack else { continue };
        match relay {
            None => {
                let _ = ack.send(result(i));
            }
            Some(relay) => match relayed.iter_mut().find(|(r, _)| r.0.same_channel(&relay.0)) {
                Some((_, acks)) => acks.push((ack, result(i))),
                None => relayed.push((relay, vec![(ack, result(i))])),
            },
        }
    }
    for (relay, acks) in relayed {
        // A relay whose runtime is gone drops the acknowledgements: its waiters see `Stopped`.
        let _ = relay.0.send(acks);
    }
}
