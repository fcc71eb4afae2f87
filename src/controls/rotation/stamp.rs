//! The rotation stamp: the value of `rampart.dev/rotation-id` on a Secret or a pod template,
//! read and written. Pure.
//!
//! The value is a comma-separated list of entries `<profile-uid>/<rotation-id>`, with a mark
//! appended when the entry says more than "rotated to this id": `/adopted` when that profile
//! took the Secret's values as they were instead of giving it new ones, and, for a rotation with
//! a `beforeRestart` hook, where the hook is ([`Mark`]). The mark lives in the same write as the
//! values, so a crash between any two steps leaves a stamp that says which step comes next. Each profile reads and writes only its own entry. One entry per profile
//! is what keeps two profiles over the same Secret (two operators with different
//! `--profile-selector`, say) from undoing each other: the second adopts by adding its entry,
//! the first still finds its own where it left it, and neither has anything left to write.
//!
//! A value with no `/` is the format before stamps named their profile: the id alone. It is
//! read as [`Stamp::legacy`] and dropped the next time a profile writes its entry.

/// Most entries one stamp keeps. A profile recreated under the same name gets a new uid, so the
/// entries of profiles that no longer exist would pile up without a bound; the oldest goes.
pub const MAX_ENTRIES: usize = 8;

/// What an entry says of the Secret at its id, beyond the id itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mark {
    /// Rotated to the id, and its hook (if any) completed: consumers restart.
    #[default]
    Rotated,
    /// The values were taken as they were: consumers have nothing new to read.
    Adopted,
    /// New values written; the hook Job is yet to be created.
    HookDue,
    /// The hook Job was created (so it is never created again for this id); consumers wait for
    /// it.
    HookStarted,
    /// The hook failed and the values the consumers run with were put back.
    HookFailed,
    /// The hook Job went away before Rampart saw it finish: whether it changed the credential
    /// is unknown, so nothing more is done and a person is asked to look.
    HookLost,
}

impl Mark {
    fn suffix(self) -> Option<&'static str> {
        match self {
            Mark::Rotated => None,
            Mark::Adopted => Some("adopted"),
            Mark::HookDue => Some("hook-due"),
            Mark::HookStarted => Some("hook-started"),
            Mark::HookFailed => Some("hook-failed"),
            Mark::HookLost => Some("hook-lost"),
        }
    }

    fn parse(suffix: Option<&str>) -> Option<Mark> {
        [
            Mark::Rotated,
            Mark::Adopted,
            Mark::HookDue,
            Mark::HookStarted,
            Mark::HookFailed,
            Mark::HookLost,
        ]
        .into_iter()
        .find(|m| m.suffix() == suffix)
    }

    /// The hook has not reached an end for this id.
    pub fn hook_pending(self) -> bool {
        matches!(self, Mark::HookDue | Mark::HookStarted)
    }
}

/// One profile's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub profile_uid: String,
    pub rotation_id: String,
    pub mark: Mark,
}

impl Entry {
    /// The profile adopted the values at this id rather than rotating them.
    pub fn is_adopted(&self) -> bool {
        self.mark == Mark::Adopted
    }
}

/// A parsed `rampart.dev/rotation-id` value.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Stamp {
    /// In the order they were first written, oldest first.
    pub entries: Vec<Entry>,
    /// An id in the old format, which names no profile.
    pub legacy: Option<String>,
}

impl Stamp {
    /// Reads a stamp; parts that are neither an entry nor an id are ignored (someone's edit),
    /// so a damaged stamp reads as no stamp for the profiles it no longer names.
    pub fn parse(value: &str) -> Stamp {
        let mut stamp = Stamp::default();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut fields = part.split('/');
            match (fields.next(), fields.next(), fields.next(), fields.next()) {
                (Some(id), None, _, _) => stamp.legacy = Some(id.to_string()),
                (Some(uid), Some(id), suffix, None) if !uid.is_empty() && !id.is_empty() => {
                    let Some(mark) = Mark::parse(suffix) else {
                        continue;
                    };
                    stamp.entries.retain(|e| e.profile_uid != uid);
                    stamp.entries.push(Entry {
                        profile_uid: uid.to_string(),
                        rotation_id: id.to_string(),
                        mark,
                    });
                }
                _ => {}
            }
        }
        stamp
    }

    /// Reads an optional annotation value.
    pub fn of(value: Option<&str>) -> Stamp {
        value.map(Stamp::parse).unwrap_or_default()
    }

    /// This profile's entry.
    pub fn entry(&self, profile_uid: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.profile_uid == profile_uid)
    }

    /// Entries of profiles other than `profile_uid`.
    pub fn others(&self, profile_uid: &str) -> usize {
        self.entries
            .iter()
            .filter(|e| e.profile_uid != profile_uid)
            .count()
    }

    /// The stamp with `entry` as its profile's (replacing the one it had) and the old-format
    /// id dropped: whichever profile wrote that, the value now has an owner that says so.
    pub fn with(mut self, entry: Entry) -> Stamp {
        self.legacy = None;
        self.entries.retain(|e| e.profile_uid != entry.profile_uid);
        self.entries.push(entry);
        let excess = self.entries.len().saturating_sub(MAX_ENTRIES);
        self.entries.drain(..excess);
        self
    }

    /// The annotation value.
    pub fn render(&self) -> String {
        let mut parts: Vec<String> = self.legacy.iter().cloned().collect();
        parts.extend(self.entries.iter().map(|e| match e.mark.suffix() {
            Some(suffix) => format!("{}/{}/{suffix}", e.profile_uid, e.rotation_id),
            None => format!("{}/{}", e.profile_uid, e.rotation_id),
        }));
        parts.join(",")
    }
}

impl Entry {
    pub fn rotated(profile_uid: &str, rotation_id: &str) -> Entry {
        Entry::marked(profile_uid, rotation_id, Mark::Rotated)
    }

    pub fn adopted(profile_uid: &str, rotation_id: &str) -> Entry {
        Entry::marked(profile_uid, rotation_id, Mark::Adopted)
    }

    pub fn marked(profile_uid: &str, rotation_id: &str, mark: Mark) -> Entry {
        Entry {
            profile_uid: profile_uid.to_string(),
            rotation_id: rotation_id.to_string(),
            mark,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_alone_is_the_old_format_and_names_no_profile() {
        let s = Stamp::parse("r3");
        assert_eq!(s.legacy.as_deref(), Some("r3"));
        assert!(s.entries.is_empty());
        assert_eq!(s.render(), "r3");
    }

    #[test]
    fn entries_round_trip_and_each_profile_reads_its_own() {
        let s = Stamp::parse("uid-a/r2,uid-b/x1/adopted");
        assert_eq!(s.entry("uid-a"), Some(&Entry::rotated("uid-a", "r2")));
        assert_eq!(s.entry("uid-b"), Some(&Entry::adopted("uid-b", "x1")));
        assert_eq!(s.entry("uid-c"), None);
        assert_eq!(s.others("uid-a"), 1);
        assert_eq!(s.render(), "uid-a/r2,uid-b/x1/adopted");
    }

    #[test]
    fn writing_an_entry_keeps_the_others_and_drops_the_old_format() {
        let s = Stamp::parse("r0,uid-b/x1").with(Entry::rotated("uid-a", "r1"));
        assert_eq!(s.render(), "uid-b/x1,uid-a/r1");
        let again = s.with(Entry::rotated("uid-b", "x2"));
        assert_eq!(again.render(), "uid-a/r1,uid-b/x2");
    }

    #[test]
    fn entries_are_bounded_oldest_first() {
        let mut s = Stamp::default();
        for i in 0..(MAX_ENTRIES + 2) {
            s = s.with(Entry::rotated(&format!("uid-{i}"), "r1"));
        }
        assert_eq!(s.entries.len(), MAX_ENTRIES);
        assert_eq!(s.entries[0].profile_uid, "uid-2");
    }

    #[test]
    fn hook_marks_round_trip() {
        for mark in [
            Mark::HookDue,
            Mark::HookStarted,
            Mark::HookFailed,
            Mark::HookLost,
        ] {
            let s = Stamp::default().with(Entry::marked("uid-a", "r1", mark));
            let read = Stamp::parse(&s.render());
            assert_eq!(
                read.entry("uid-a").map(|e| e.mark),
                Some(mark),
                "{}",
                s.render()
            );
        }
        assert_eq!(
            Stamp::parse("uid-a/r1/hook-started").render(),
            "uid-a/r1/hook-started"
        );
    }

    #[test]
    fn damaged_parts_are_ignored() {
        let s = Stamp::parse("uid-a/r1/what,/r2,uid-b/,uid-c/r3");
        assert_eq!(s.entries, vec![Entry::rotated("uid-c", "r3")]);
    }
}
