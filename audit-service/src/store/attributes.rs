//! The attribute names stored events have had (`event_attributes`), so a filter that names one no event has gets a warning.
//!
//! Context attributes are known from the spec; extensions are what the
//! writer records. Recording costs nothing per event on the hot path: each
//! row carries a fingerprint of its extension names (most events of a
//! source share one set, `traceparent` and the like), and the writer reads
//! the names out of a row's JSON, and writes them, only for a fingerprint
//! it has not recorded yet since it started.

use super::EventRow;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// The attribute names of either spec version (1.0, and 0.3's `schemaurl`
/// and `datacontentencoding`): every event may have them.
pub const CONTEXT_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "schemaurl",
    "datacontentencoding",
];

/// A fingerprint of a set of extension names, whatever their order; 0 for
/// none. `DefaultHasher::new()` has fixed keys, so it is the same for the
/// same names throughout the process, which is all it is compared within.
pub fn fingerprint<'a>(names: impl Iterator<Item = &'a str>) -> u64 {
    names.fold(0u64, |sum, name| {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        // Never 0 for a name, so a set with names is never taken for none.
        sum.wrapping_add(hasher.finish() | 1)
    })
}

/// The writer's memory of which fingerprints it has recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    fingerprints: HashSet<u64>,
}

impl Recorded {
    /// The extension names of the rows whose fingerprint is new, to record,
    /// and those fingerprints, to remember once they are recorded.
    pub fn new_names<'a>(
        &self,
        rows: impl Iterator<Item = &'a EventRow>,
    ) -> (Vec<String>, Vec<u64>) {
        let mut names = Vec::new();
        let mut fingerprints = Vec::new();
        for row in rows {
            if row.extensions == 0
                || self.fingerprints.contains(&row.extensions)
                || fingerprints.contains(&row.extensions)
            {
                continue;
            }
            fingerprints.push(row.extensions);
            // Rare: once per set of extension names per process. The row's
            // JSON is the SDK's output, an object; its members are read
            // without building the data.
            let members: std::collections::HashMap<String, serde::de::IgnoredAny> =
                serde_json::from_str(&row.json).unwrap_or_default();
            for name in members.into_keys() {
                let extension = !CONTEXT_ATTRIBUTES.contains(&name.as_str())
                    && name != "data"
                    && name != "data_base64";
                if extension && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        (names, fingerprints)
    }

    pub fn remember(&mut self, fingerprints: Vec<u64>) {
        self.fingerprints.extend(fingerprints);
    }
}

/// The names `filter_names` has that no stored event has had, each with the
/// closest known name when one is at most two edits away.
pub fn unknown<'a>(
    filter_names: &[&'a str],
    stored: &HashSet<String>,
) -> Vec<(&'a str, Option<String>)> {
    let known = |name: &str| CONTEXT_ATTRIBUTES.contains(&name) || stored.contains(name);
    filter_names
        .iter()
        .filter(|name| !known(name))
        .map(|name| {
            let closest = CONTEXT_ATTRIBUTES
                .iter()
                .map(|n| n.to_string())
                .chain(stored.iter().cloned())
                .map(|candidate| (edits(name, &candidate), candidate))
                .filter(|(distance, _)| *distance <= 2)
                .min();
            (*name, closest.map(|(_, candidate)| candidate))
        })
        .collect()
}

/// The Levenshtein distance of two short names (attribute names are a few
/// ASCII letters), by the textbook dynamic programme over one row.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_ignores_the_order_of_the_names() {
        let a = fingerprint(["traceparent", "tracestate"].into_iter());
        let b = fingerprint(["tracestate", "traceparent"].into_iter());
        assert_eq!(a, b);
        assert_ne!(a, fingerprint(["traceparent"].into_iter()));
        assert_eq!(fingerprint(std::iter::empty()), 0);
    }

    #[test]
    fn names_no_event_has_are_unknown_with_the_closest_known_one() {
        let stored: HashSet<String> = ["tenant".to_owned()].into();
        let found = unknown(&["subjekt", "tenant", "type", "tennant", "zzz"], &stored);
        assert_eq!(
            found,
            [
                ("subjekt", Some("subject".to_owned())),
                ("tennant", Some("tenant".to_owned())),
                ("zzz", None),
            ]
        );
    }
}
