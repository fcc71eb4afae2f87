//! The rotation stamp: the value of `rampart.dev/rotation-id` on a Secret or a pod template,
//! read and written. Pure.
//!
//! The value is a comma-separated list of entries `<profile-uid>/<rotation-id>`, with
//! `/adopted` appended when that profile took the Secret's values as they were instead of
//! giving it new ones. Each profile reads and writes only its own entry. One entry per profile
//! is what keeps two profiles over the same Secret (two operators with different
//! `--profile-selector`, say) from undoing each other: the second adopts by adding its entry,
//! the first still finds its own where it left it, and neither has anything left to write.
//!
//! A value with no `/` is the format before stamps named their profile: the id alone. It is
//! read as [`Stamp::legacy`] and dropped the next time a profile writes its entry.

/// Most entries one stamp keeps. A profile recreated under the same name gets a new uid, so the
/// entries of profiles that no longer exist would pile up without a bound; the oldest goes.
pub const MAX_ENTRIES: usize = 8;

const ADOPTED_SUFFIX: &str = "adopted";

/// One profile's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub profile_uid: String,
    pub rotation_id: String,
    /// The profile adopted the values at this id rather than rotating them.
    pub adopted: bool,
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
                (Some(uid), Some(id), suffix, None)
                    if !uid.is_empty()
                        && !id.is_empty()
                        && suffix.is_none_or(|s| s == ADOPTED_SUFFIX) =>
                {
                    stamp.entries.retain(|e| e.profile_uid != uid);
                    stamp.entries.push(Entry {
                        profile_uid: uid.to_string(),
                        rotation_id: id.to_string(),
                        adopted: suffix.is_some(),
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
        parts.extend(self.entries.iter().map(|e| {
            if e.adopted {
                format!("{}/{}/{ADOPTED_SUFFIX}", e.profile_uid, e.rotation_id)
            } else {
                format!("{}/{}", e.profile_uid, e.rotation_id)
            }
        }));
        parts.join(",")
    }
}

impl Entry {
    pub fn rotated(profile_uid: &str, rotation_id: &str) -> Entry {
        Entry {
            profile_uid: profile_uid.to_string(),
            rotation_id: rotation_id.to_string(),
            adopted: false,
        }
    }

    pub fn adopted(profile_uid: &str, rotation_id: &str) -> Entry {
        Entry {
            adopted: true,
            ..Entry::rotated(profile_uid, rotation_id)
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
    fn damaged_parts_are_ignored() {
        let s = Stamp::parse("uid-a/r1/what,/r2,uid-b/,uid-c/r3");
        assert_eq!(s.entries, vec![Entry::rotated("uid-c", "r3")]);
    }
}
