//! What the device tells the fleet: records enter the [`outbox`] (durable in its journal, then
//! the store), leave through the [`link`] (the MQTT session, which also brings manifests and
//! commands) as the [`delivery`] window decides, and leave the outbox once the fleet has
//! acknowledged storing them. The [`reporter`] turns the status board into the reported state
//! and periodic metrics.

pub mod authenticity;
pub(crate) mod delivery;
pub mod link;
pub mod outbox;
pub(crate) mod reporter;
