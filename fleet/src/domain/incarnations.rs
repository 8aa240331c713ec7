//! A device's incarnations: its agent creates a random id with its data directory and sends it
//! with every message. The fleet numbers a device's incarnations in the order it first hears
//! of them (kept in the store, also across a device's removal) and stores incarnation `n`'s
//! record `seq` as `n·2^40 + seq`: one ordered sequence per device for queries, retention and
//! the delivery rule, in which a re-provisioned device's records never meet its earlier ones.
//! An acknowledgement is told back in the incarnation's own `seq`s.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Fleet;
use crate::error::FleetError;
use crate::records::Incarnations;
use crate::store::kind;

/// Bits of a stored seq that are the device's own: 2^40 records per incarnation.
const SEQ_BITS: u32 = 40;

/// Where incarnation `index` begins in a device's stored sequence.
pub(crate) fn base(index: u64) -> u64 {
    index << SEQ_BITS
}

/// The stored seq of record `seq` of incarnation `index`; `None` past the incarnation's range.
pub(crate) fn stored_seq(index: u64, seq: u64) -> Option<u64> {
    (seq < base(1)).then(|| base(index) | seq)
}

/// The incarnation's own seq of stored seq `stored` (0 below the incarnation's range).
pub(crate) fn device_seq(index: u64, stored: u64) -> u64 {
    stored.saturating_sub(base(index)).min(base(1) - 1)
}

/// The incarnations of the devices this process has heard from.
#[derive(Debug, Default)]
pub(crate) struct IncarnationCache(Mutex<HashMap<String, Vec<String>>>);

impl IncarnationCache {
    fn get(&self, device: &str) -> Option<Vec<String>> {
        self.lock().get(device).cloned()
    }

    fn set(&self, device: &str, ids: Vec<String>) {
        self.lock().insert(device.to_owned(), ids);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Fleet {
    /// The index of `device`'s incarnation `id`, registered (in the store) if it is new.
    pub(crate) async fn incarnation_index(
        &self,
        device: &str,
        id: &str,
    ) -> Result<u64, FleetError> {
        let position = |ids: &[String]| ids.iter().position(|i| i == id).map(|p| p as u64);
        if let Some(index) = self.incarnations.get(device).as_deref().and_then(position) {
            return Ok(index);
        }
        // Another replica may have registered it: the store decides.
        let mut stored: Incarnations = self
            .store
            .get(kind::INCARNATIONS, device)
            .await?
            .unwrap_or_default();
        let index = match position(&stored.ids) {
            Some(index) => index,
            None => {
                stored.ids.push(id.to_owned());
                self.store.put(kind::INCARNATIONS, device, &stored).await?;
                tracing::info!(
                    device,
                    incarnation = id,
                    index = stored.ids.len() - 1,
                    "a new device incarnation: its records are kept apart from earlier ones"
                );
                stored.ids.len() as u64 - 1
            }
        };
        self.incarnations.set(device, stored.ids);
        Ok(index)
    }

    /// `device`'s incarnations, oldest first.
    pub(crate) async fn incarnation_ids(&self, device: &str) -> Result<Vec<String>, FleetError> {
        if let Some(ids) = self.incarnations.get(device) {
            return Ok(ids);
        }
        let stored: Incarnations = self
            .store
            .get(kind::INCARNATIONS, device)
            .await?
            .unwrap_or_default();
        self.incarnations.set(device, stored.ids.clone());
        Ok(stored.ids)
    }

    /// `device`'s newest incarnation and its index, if it ever sent one.
    pub(crate) async fn current_incarnation(
        &self,
        device: &str,
    ) -> Result<Option<(u64, String)>, FleetError> {
        let ids = self.incarnation_ids(device).await?;
        Ok(ids.last().map(|id| (ids.len() as u64 - 1, id.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_take_disjoint_ranges_of_one_sequence() {
        assert_eq!(stored_seq(0, 7), Some(7));
        let second = stored_seq(1, 1).expect("in range");
        assert!(second > stored_seq(0, base(1) - 1).expect("in range"));
        assert_eq!(device_seq(1, second), 1);
        assert_eq!(device_seq(1, 5), 0, "below the incarnation's range");
        assert_eq!(stored_seq(0, base(1)), None);
    }
}
