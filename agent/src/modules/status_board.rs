//! The status board: what each module task last said about its module, the outcome of the
//! last manifest and the applied version. Tasks write it; the reporter reads it into the
//! reported state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use edgefleet_common::reported::{DesiredOutcome, ModuleState};
use tokio::sync::Notify;

use crate::serving::model_module::ModelModule;

/// A handle to the board; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatusBoard {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    board: Mutex<Board>,
    /// Woken on every change, for the reporter.
    changed: Notify,
}

/// What the board holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Board {
    pub modules: BTreeMap<String, ModuleEntry>,
    pub applied_version: Option<u64>,
    pub outcome: Option<DesiredOutcome>,
}

/// One module's entry.
#[derive(Debug, Clone)]
pub(crate) struct ModuleEntry {
    pub state: ModuleState,
    /// The served model, for its live inference counters.
    pub served: Option<Arc<ModelModule>>,
}

impl StatusBoard {
    fn board(&self) -> MutexGuard<'_, Board> {
        // A task that panicked while holding the lock left a consistent map behind (every
        // write is one insert or remove), so the board stays usable.
        self.inner
            .board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn change(&self, f: impl FnOnce(&mut Board)) {
        f(&mut self.board());
        self.inner.changed.notify_one();
    }

    pub fn set_module(&self, name: &str, state: ModuleState, served: Option<Arc<ModelModule>>) {
        self.change(|b| {
            b.modules
                .insert(name.to_owned(), ModuleEntry { state, served });
        });
    }

    pub fn remove_module(&self, name: &str) {
        self.change(|b| {
            b.modules.remove(name);
        });
    }

    pub fn set_outcome(&self, outcome: DesiredOutcome) {
        self.change(|b| b.outcome = Some(outcome));
    }

    pub fn set_applied_version(&self, version: u64) {
        self.change(|b| b.applied_version = Some(version));
    }

    /// A copy of the board.
    pub fn snapshot(&self) -> Board {
        self.board().clone()
    }

    /// Resolves at the next change (or at once when one happened since the last call).
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }
}
