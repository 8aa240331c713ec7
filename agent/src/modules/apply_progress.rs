//! How far a manifest has come onto the device: the phases of steps the reconciler planned, which
//! modules of the dispatched phase have not answered yet, and each module's answer. Pure:
//! the supervisor feeds it the modules' answers and dispatches what it hands out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::modules::reconciler::Step;

#[derive(Debug)]
pub(crate) struct ApplyProgress {
    pub version: u64,
    /// Whether a successful end is announced as the manifest's outcome: not for the manifest
    /// already applied before the agent restarted, whose outcome stands.
    pub announce: bool,
    phases: VecDeque<Vec<Step>>,
    /// Modules of the dispatched phase that have not answered yet.
    waiting: BTreeSet<String>,
    /// Each module's last answer for this version: why it failed, or `None` when applied.
    results: BTreeMap<String, Option<String>>,
    /// The verdict last announced, to announce only changes.
    announced: Option<Verdict>,
}

/// What became of a manifest once every module answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every module is what the manifest asks.
    Applied { modules: usize },
    /// These modules are not (`module <name>: <why>`, by name); they retry with backoff.
    Failed(Vec<String>),
}

impl ApplyProgress {
    pub fn new(version: u64, phases: Vec<Vec<Step>>, announce: bool) -> Self {
        Self {
            version,
            announce,
            phases: phases.into(),
            waiting: BTreeSet::new(),
            results: BTreeMap::new(),
            announced: None,
        }
    }

    /// The next phase to dispatch, once the dispatched one has fully answered. The caller
    /// tells which modules it is now waiting for with [`ApplyProgress::wait_for`].
    pub fn next_phase(&mut self) -> Option<Vec<Step>> {
        if self.waiting.is_empty() {
            self.phases.pop_front()
        } else {
            None
        }
    }

    pub fn wait_for(&mut self, module: &str) {
        self.waiting.insert(module.to_owned());
    }

    /// Module `module` applied (`failure` is `None`) or failed for this manifest.
    pub fn applied(&mut self, module: &str, failure: Option<String>) {
        self.waiting.remove(module);
        self.results.insert(module.to_owned(), failure);
    }

    /// Module `module` was removed.
    pub fn removed(&mut self, module: &str) {
        self.waiting.remove(module);
        self.results.remove(module);
    }

    /// The verdict, when every phase was dispatched and answered and it differs from the one
    /// announced last.
    pub fn verdict(&mut self) -> Option<Verdict> {
        if !self.waiting.is_empty() || !self.phases.is_empty() {
            return None;
        }
        let failed: Vec<String> = self
            .results
            .iter()
            .filter_map(|(name, failure)| Some(format!("module {name}: {}", failure.as_ref()?)))
            .collect();
        let verdict = if failed.is_empty() {
            Verdict::Applied {
                modules: self.results.len(),
            }
        } else {
            Verdict::Failed(failed)
        };
        if self.announced.as_ref() == Some(&verdict) {
            return None;
        }
        self.announced = Some(verdict.clone());
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_one_another_and_the_verdict_waits_for_every_answer() {
        let mut r = ApplyProgress::new(
            3,
            vec![
                vec![Step::Remove("old".into())],
                vec![Step::Apply("a".into()), Step::Apply("b".into())],
            ],
            true,
        );
        assert_eq!(r.next_phase(), Some(vec![Step::Remove("old".into())]));
        r.wait_for("old");
        assert_eq!(r.next_phase(), None, "the removal has not answered");
        assert_eq!(r.verdict(), None);
        r.removed("old");
        assert!(r.next_phase().is_some());
        r.wait_for("a");
        r.wait_for("b");
        r.applied("a", Some("pull failed".into()));
        assert_eq!(r.verdict(), None, "b has not answered");
        r.applied("b", None);
        assert_eq!(
            r.verdict(),
            Some(Verdict::Failed(vec!["module a: pull failed".into()]))
        );
        assert_eq!(r.verdict(), None, "announced once");
        // The module's own retry succeeds later.
        r.applied("a", None);
        assert_eq!(r.verdict(), Some(Verdict::Applied { modules: 2 }));
    }

    #[test]
    fn a_manifest_with_nothing_to_do_is_applied_at_once() {
        let mut r = ApplyProgress::new(1, vec![], true);
        assert_eq!(r.next_phase(), None);
        assert_eq!(r.verdict(), Some(Verdict::Applied { modules: 0 }));
    }
}
