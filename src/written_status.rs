//! The status this replica last wrote for each profile, for the passes that run before the
//! profile cache has seen that write.
//!
//! A pass reads its profile from the watch cache, and several controls read their own past
//! from its status: restore verification its recorded results, backups their last slots,
//! rotation its progress. Right after a status write the cache can still hold the object as it
//! was before it, and a pass planned from that copy would write the older past back over the
//! newer one (a verification result recorded and then erased a moment later). So every write
//! is remembered with the resource versions on either side of it, and a pass that sees a copy
//! older than the write plans from the written status instead.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::{HardeningProfile, HardeningProfileStatus};

/// One remembered write.
#[derive(Clone, Debug, PartialEq)]
struct Written {
    /// The resource version of the copy the writing pass read.
    read: Option<String>,
    /// The resource version the write produced.
    wrote: Option<String>,
    status: HardeningProfileStatus,
}

/// Every profile's last written status, until the cache catches up with it.
#[derive(Default)]
pub struct WrittenStatus {
    by_profile: Mutex<HashMap<String, Written>>,
}

impl WrittenStatus {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Written>) -> T) -> T {
        // A poisoned lock only loses memos; a pass then plans from the cache as it did before.
        let mut guard = match self.by_profile.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                g.clear();
                g
            }
        };
        f(&mut guard)
    }

    /// `profile` (as the pass read it) was given `status`, which the API server stored as
    /// resource version `wrote`.
    pub fn remember(
        &self,
        profile: &HardeningProfile,
        status: &HardeningProfileStatus,
        wrote: Option<String>,
    ) {
        let name = profile.metadata.name.clone().unwrap_or_default();
        let written = Written {
            read: profile.metadata.resource_version.clone(),
            wrote,
            status: status.clone(),
        };
        self.with(|m| m.insert(name, written));
    }

    /// The status a pass should plan from: the written one when `profile` is a copy from
    /// before the write, else `None` (the copy is current, and the memo is dropped).
    pub fn newer_than(&self, profile: &HardeningProfile) -> Option<HardeningProfileStatus> {
        let name = profile.metadata.name.as_deref().unwrap_or_default();
        self.with(|m| {
            let written = m.get(name)?;
            if predates(profile.metadata.resource_version.as_deref(), written) {
                return Some(written.status.clone());
            }
            m.remove(name);
            None
        })
    }

    pub fn forget(&self, profile: &str) {
        self.with(|m| m.remove(profile));
    }
}

/// Whether a copy at resource version `seen` was read before `written` was made: it is the very
/// copy the writer read, or (resource versions are etcd revisions on every API server we know,
/// though clients are told not to rely on it) a number below the written one. A version that
/// is neither, or cannot be compared, is taken as current: then the pass behaves as it would
/// without the memo.
fn predates(seen: Option<&str>, written: &Written) -> bool {
    let Some(seen) = seen else {
        return false;
    };
    if written.read.as_deref() == Some(seen) {
        return true;
    }
    let number = |v: &str| v.parse::<u64>().ok();
    match (number(seen), written.wrote.as_deref().and_then(number)) {
        (Some(s), Some(w)) => s < w,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::budgets_only;
    use crate::api::{BackupStatus, Mode};

    fn copy(rv: &str, observed_generation: i64) -> HardeningProfile {
        let mut p = HardeningProfile::new("regulated", budgets_only(Mode::Enforce));
        p.metadata.resource_version = Some(rv.into());
        p.status = Some(HardeningProfileStatus {
            observed_generation: Some(observed_generation),
            ..Default::default()
        });
        p
    }

    fn written_over(
        read: &HardeningProfile,
        wrote: &str,
    ) -> (WrittenStatus, HardeningProfileStatus) {
        let memo = WrittenStatus::default();
        let status = HardeningProfileStatus {
            observed_generation: Some(7),
            backups: Some(BackupStatus::default()),
            ..Default::default()
        };
        memo.remember(read, &status, Some(wrote.into()));
        (memo, status)
    }

    #[test]
    fn the_copy_the_writer_read_plans_from_the_written_status() {
        let read = copy("100", 1);
        let (memo, status) = written_over(&read, "105");
        assert_eq!(memo.newer_than(&read), Some(status.clone()));
        // Still remembered: the cache may hand the old copy out more than once.
        assert_eq!(memo.newer_than(&read), Some(status));
    }

    #[test]
    fn a_copy_between_the_read_and_the_write_plans_from_the_written_status() {
        let (memo, status) = written_over(&copy("100", 1), "105");
        assert_eq!(memo.newer_than(&copy("103", 1)), Some(status));
    }

    #[test]
    fn a_copy_at_or_after_the_write_is_current_and_drops_the_memo() {
        let read = copy("100", 1);
        let (memo, _) = written_over(&read, "105");
        assert_eq!(memo.newer_than(&copy("105", 7)), None);
        assert_eq!(
            memo.newer_than(&read),
            None,
            "once caught up, the memo is gone"
        );
        let (memo, _) = written_over(&read, "105");
        assert_eq!(memo.newer_than(&copy("230", 2)), None);
    }

    #[test]
    fn versions_that_are_not_numbers_are_trusted_unless_they_are_the_one_read() {
        let read = copy("a1", 1);
        let (memo, status) = written_over(&read, "b2");
        assert_eq!(memo.newer_than(&read), Some(status));
        assert_eq!(memo.newer_than(&copy("c3", 1)), None);
    }

    #[test]
    fn nothing_written_means_the_copy_is_used() {
        let memo = WrittenStatus::default();
        assert_eq!(memo.newer_than(&copy("100", 1)), None);
        let (memo, _) = written_over(&copy("100", 1), "105");
        memo.forget("regulated");
        assert_eq!(memo.newer_than(&copy("100", 1)), None);
    }
}
