//! `/etc/subuid` and `/etc/subgid`: `owner:start:count` lines, where the
//! owner is a user name or a numeric uid, as the shadow tools write them.

use std::fmt;

/// A range of host ids: `start .. start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

impl IdRange {
    /// One past the last id (as u64: a range may end at 2^32).
    pub fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.count)
    }

    pub fn overlaps(&self, other: &IdRange) -> bool {
        u64::from(self.start) < other.end() && u64::from(other.start) < self.end()
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end() - 1)
    }
}

/// One line of a subid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdEntry {
    pub owner: String,
    pub range: IdRange,
    /// Its line in the file, from 1.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SubIdParseError {
    pub line: usize,
    pub message: String,
}

/// Parses a subid file. Blank lines and `#` comments are allowed.
///
/// A line that begins with a byte-order mark (U+FEFF, which some editors
/// put before UTF-8) is refused: shadow's reader (`subordinate_parse`,
/// behind newuidmap and getsubids) strips nothing before the owner, so
/// the mark is part of the owner's name and that line's range is no
/// user's. Accepted as its user's, paddock would use ids the host's own
/// tools do not give that user; passed over as theirs do, the user would
/// have no range, and paddock would add another for its own user (its
/// workloads' ids moving without a word) or say the user has none while
/// the line is there.
pub fn parse(text: &str) -> Result<Vec<SubIdEntry>, SubIdParseError> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = |message: String| SubIdParseError { line: i + 1, message };
        if line.starts_with('\u{feff}') {
            return Err(bad("the line begins with a byte-order mark (U+FEFF, which some editors write): \
                 shadow's tools read it as part of the owner's name, so the range is no user's; \
                 save the file without it, as plain UTF-8"
                .to_owned()));
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let [owner, start, count] = fields[..] else {
            return Err(bad(format!("expected `name:start:count`, found {line:?}")));
        };
        if owner.is_empty() {
            return Err(bad("the owner (a user name or uid) is empty".to_owned()));
        }
        let start: u32 =
            start.parse().map_err(|_| bad(format!("start {start:?} is not a number from 0 to 4294967295")))?;
        let count: u32 =
            count.parse().map_err(|_| bad(format!("count {count:?} is not a number from 1 to 4294967295")))?;
        let range = IdRange { start, count };
        // The kernel maps no range that holds (uid_t)-1 or wraps past it.
        if count == 0 || range.end() > LAST_ID_END {
            return Err(bad(format!(
                "the range {start}:{count} is empty or runs past 4294967294, the last id a user namespace can map"
            )));
        }
        entries.push(SubIdEntry { owner: owner.to_owned(), range, line: i + 1 });
    }
    Ok(entries)
}

/// Where a range may end at most: 4294967295, (uid_t)-1, is no id, and a
/// user namespace's map (`map_write`) refuses a range that holds it.
const LAST_ID_END: u64 = u32::MAX as u64;

/// The ranges of a user, named either way, in file order.
pub fn ranges_of(entries: &[SubIdEntry], name: &str, uid: u32) -> Vec<IdRange> {
    entries_of(entries, name, uid).map(|e| e.range).collect()
}

/// The lines of a user, named either way, in file order.
pub fn entries_of<'e>(entries: &'e [SubIdEntry], name: &str, uid: u32) -> impl Iterator<Item = &'e SubIdEntry> {
    let (name, uid) = (name.to_owned(), uid.to_string());
    entries.iter().filter(move |e| e.owner == name || e.owner == uid)
}

/// The first 65536-aligned start at or above 100000 (as Docker and
/// useradd choose) where `count` ids overlap no entry of any file given.
///
/// `ids` are ids the host's accounts use (users' uids, groups' gids): a
/// range covering one would run a workload as that user, so it is skipped.
pub fn free_start(files: &[&[SubIdEntry]], ids: &[u32], count: u32) -> Option<u32> {
    const ALIGN: u64 = 65536;
    let mut start: u64 = 100_000_u64.div_ceil(ALIGN) * ALIGN;
    let taken: Vec<IdRange> = files
        .iter()
        .flat_map(|f| f.iter().map(|e| e.range))
        .chain(ids.iter().map(|&id| IdRange { start: id, count: 1 }))
        .collect();
    loop {
        let candidate = IdRange { start: u32::try_from(start).ok()?, count };
        if candidate.end() > LAST_ID_END {
            return None;
        }
        match taken.iter().filter(|t| t.overlaps(&candidate)).map(IdRange::end).max() {
            None => return Some(candidate.start),
            Some(end) => start = end.div_ceil(ALIGN) * ALIGN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_the_shadow_tools_write() {
        let text = "# comment\n\nalice:100000:65536\n1001:165536:65536\n  alice:300000:1000  \n";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            ranges_of(&entries, "alice", 1000),
            [IdRange { start: 100000, count: 65536 }, IdRange { start: 300000, count: 1000 }]
        );
        assert_eq!(ranges_of(&entries, "bob", 1001), [IdRange { start: 165536, count: 65536 }]);
    }

    #[test]
    fn reports_the_bad_line() {
        for (text, line) in [
            ("a:1:2\nb:1\n", 2),
            ("a:x:2\n", 1),
            ("\n\na:1:0\n", 3),
            (":1:2", 1),
            ("a:4294967295:2", 1),
            ("a:1:2\nb:4294901760:65536\n", 2),
        ] {
            assert_eq!(parse(text).unwrap_err().line, line, "{text:?}");
        }
        // The last range a map takes ends just before (uid_t)-1.
        assert_eq!(parse("a:4294901759:65536").unwrap()[0].range.end(), u64::from(u32::MAX));
    }

    /// A byte-order mark (as some editors save UTF-8) is refused at its
    /// line: shadow's tools take it as part of the owner's name, so the
    /// line's range is no user's; read as the user's, paddock would use
    /// ids the host's tools do not give that user, and passed over, it
    /// would add another range for its user (or say it has none).
    #[test]
    fn a_byte_order_mark_is_refused_at_its_line() {
        for (text, line) in [("\u{feff}paddock:100000:65536\n", 1), ("a:1:2\n\u{feff}b:3:4\n", 2), ("\u{feff}# c\n", 1)]
        {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}");
            assert!(err.message.starts_with("the line begins with a byte-order mark (U+FEFF"), "{err}");
            assert!(err.message.contains("save the file without it"), "{err}");
        }
    }

    #[test]
    fn free_start_skips_every_existing_range() {
        let a = parse("x:100000:65536\n").unwrap();
        let b = parse("y:131072:10\n").unwrap();
        assert_eq!(free_start(&[], &[], 65536), Some(131072));
        assert_eq!(free_start(&[&a, &b], &[], 65536), Some(196608));
        let full = parse("x:0:4294967295\n").unwrap();
        assert_eq!(free_start(&[&full], &[], 65536), None);
        // The last aligned start, 4294901760, would hold (uid_t)-1.
        let below_last = parse("x:0:4294901760\n").unwrap();
        assert_eq!(free_start(&[&below_last], &[], 65536), None);
    }

    #[test]
    fn free_start_skips_the_ids_of_the_hosts_accounts() {
        // A user at 200000 (as SSSD's and AD's ranges begin) is not in any
        // workload's range: the new one begins past it.
        assert_eq!(free_start(&[], &[0, 1000, 200_000], 16_777_216), Some(262_144));
        assert_eq!(free_start(&[], &[0, 1000, 65534], 65536), Some(131072));
    }
}
