//! The slot a pass acts for: which slots were missed since the last recorded one, which
//! snapshots the latest asks for (within its deadline, never for a slot the API server has not
//! reached), and the two clocks that decide it.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};

use super::{snapshot_name, snapshot_object, ByPvc, SnapshotInputs, SnapshotPlan};
/// How many past slots are examined for misses: enough for any outage worth reporting,
/// bounded so a per-second schedule after a long outage costs nothing.
pub(super) const MISSED_SCAN_LIMIT: usize = 1000;

/// The two clocks backups read. Slots follow this replica's clock (the schedule's), but ages
/// follow the API server's, the clock every snapshot's `creationTimestamp` was written by: a
/// leader whose clock ran ahead must neither age good snapshots out nor take a slot that has
/// not come yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// This replica's time.
    pub local: DateTime<Utc>,
    /// The API server's time, when a recent response said it.
    pub server: Option<DateTime<Utc>>,
}

impl Clock {
    /// A clock that agrees with the API server (tests, and replicas whose offset is unknown).
    pub fn agreed(now: DateTime<Utc>) -> Self {
        Self {
            local: now,
            server: Some(now),
        }
    }

    /// The time ages are measured against.
    pub(super) fn ages_now(&self) -> DateTime<Utc> {
        self.server.unwrap_or(self.local)
    }
}

/// The latest slot: the slots missed since the last recorded one, and the creations it asks
/// for (within its deadline, unless suspended, never for a slot the API server has not
/// reached).
pub(super) fn plan_slot(
    input: &SnapshotInputs,
    slot: DateTime<Utc>,
    by_pvc: &ByPvc,
    out: &mut SnapshotPlan,
) {
    let SnapshotInputs {
        spec,
        schedule,
        clock,
        last_scheduled,
        ..
    } = *input;
    let now = clock.local;
    let in_deadline = now - slot <= Duration::seconds(spec.starting_deadline_seconds);
    // Slots after the last recorded one and before the latest passed unseen.
    if let Some(last) = last_scheduled {
        let mut t = last;
        for _ in 0..MISSED_SCAN_LIMIT {
            match schedule.next_after(t) {
                Some(n) if n < slot => {
                    out.missed_slots.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        if !in_deadline && last < slot {
            out.missed_slots.push(slot);
        }
    }
    if spec.suspend {
        return;
    }
    if let Some(ahead) = slot_ahead_of_server(slot, clock, schedule.period_around(now)) {
        out.clock_ahead = Some(ahead);
        return;
    }
    if in_deadline {
        out.slot = Some(slot);
        out.catching_up = last_scheduled.is_some_and(|l| l < slot)
            && schedule.next_after(slot).is_some_and(|n| n <= now);
    }
    let existing: BTreeSet<(&str, &str)> = input
        .snapshots
        .iter()
        .map(|s| (s.namespace.as_str(), s.name.as_str()))
        .collect();
    for pvc in input.pvcs {
        // The slot is due for a PVC that existed at the slot time, while within the deadline.
        // snapshotOnCreate gives a PVC with no snapshot yet its first one at once, whatever
        // the slot; it is named after the latest slot all the same, so it stays one per slot.
        let after_slot = pvc.created.is_some_and(|c| c > slot);
        let has_any = by_pvc.contains_key(&(pvc.namespace.as_str(), pvc.name.as_str()));
        let due = in_deadline && !after_slot;
        let first = spec.snapshot_on_create && !has_any;
        if !(due || first) {
            continue;
        }
        let name = snapshot_name(&pvc.name, slot);
        if existing.contains(&(pvc.namespace.as_str(), name.as_str())) {
            continue;
        }
        out.create
            .push(snapshot_object(input.profile, spec, pvc, &name, slot));
    }
}

/// When `slot` is more than one period ahead of the API server's time, how far this replica's
/// clock is ahead of it: such a slot is refused. A snapshot named for it would take the name
/// the real slot needs later, and that slot would then look taken.
pub(super) fn slot_ahead_of_server(
    slot: DateTime<Utc>,
    clock: Clock,
    period: Option<Duration>,
) -> Option<Duration> {
    let server = clock.server?;
    let period = period.unwrap_or_else(|| Duration::minutes(1));
    (slot - server > period).then(|| clock.local - server)
}
