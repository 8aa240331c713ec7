//! The disk budget (`[storage]` of the agent configuration): what the agent keeps on the
//! device (the model cache, the container images its modules use, and the telemetry
//! outbox's reserve, its byte cap) must fit in `storage.budget_bytes`, and every pull or
//! import must leave `storage.min_free_bytes` free. Checked before anything is downloaded or
//! imported; a refusal names every number so the operator can tell what to change.

/// What the agent keeps now, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub models: u64,
    pub images: u64,
    /// The outbox's byte cap: it may grow to it while the device is offline.
    pub outbox_reserve: u64,
}

impl Usage {
    fn total(&self) -> u64 {
        self.models
            .saturating_add(self.images)
            .saturating_add(self.outbox_reserve)
    }
}

/// A pull or import the budget does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "disk budget: {what} needs {needed} more bytes but only {available} are available \
     (storage.budget_bytes {budget} - model cache {models} - container images {images} - outbox \
     reserve {outbox_reserve} = {by_budget}; free space {free} - storage.min_free_bytes \
     {min_free} = {by_disk}); raise storage.budget_bytes, lower telemetry.outbox_max_bytes or \
     free disk space"
)]
pub struct OverBudget {
    pub what: String,
    pub needed: u64,
    pub available: u64,
    pub budget: u64,
    pub models: u64,
    pub images: u64,
    pub outbox_reserve: u64,
    pub by_budget: u64,
    pub free: u64,
    pub min_free: u64,
    pub by_disk: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskBudget {
    pub budget_bytes: u64,
    pub min_free_bytes: u64,
}

impl DiskBudget {
    /// Whether `needed` more bytes for `what` fit, given `usage` and `free` bytes on disk.
    pub fn check(
        &self,
        what: &str,
        needed: u64,
        usage: Usage,
        free: u64,
    ) -> Result<(), OverBudget> {
        if needed == 0 {
            return Ok(());
        }
        let by_budget = self.budget_bytes.saturating_sub(usage.total());
        let by_disk = free.saturating_sub(self.min_free_bytes);
        let available = by_budget.min(by_disk);
        if needed <= available {
            return Ok(());
        }
        Err(OverBudget {
            what: what.to_owned(),
            needed,
            available,
            budget: self.budget_bytes,
            models: usage.models,
            images: usage.images,
            outbox_reserve: usage.outbox_reserve,
            by_budget,
            free,
            min_free: self.min_free_bytes,
            by_disk,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: DiskBudget = DiskBudget {
        budget_bytes: 1000,
        min_free_bytes: 100,
    };

    #[test]
    fn what_is_kept_and_the_outbox_reserve_count_against_the_budget() {
        let usage = Usage {
            models: 300,
            images: 200,
            outbox_reserve: 400,
        };
        assert_eq!(BUDGET.check("x", 100, usage, 10_000), Ok(()));
        let refused = BUDGET
            .check("image r/x", 101, usage, 10_000)
            .expect_err("over");
        assert_eq!((refused.needed, refused.available), (101, 100));
        let message = refused.to_string();
        for part in [
            "image r/x needs 101 more bytes but only 100",
            "storage.budget_bytes 1000",
            "model cache 300",
            "container images 200",
            "outbox reserve 400 = 100",
        ] {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }

    #[test]
    fn free_space_beyond_the_minimum_bounds_it_too_and_nothing_needed_always_fits() {
        let refused = BUDGET
            .check("bundle", 50, Usage::default(), 120)
            .expect_err("disk");
        assert_eq!((refused.by_disk, refused.available), (20, 20));
        assert_eq!(BUDGET.check("bundle", 0, Usage::default(), 0), Ok(()));
    }
}
