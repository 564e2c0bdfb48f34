//! Reconciliation against a map that holds at most `capacity` entries and
//! can be told to refuse writes.

use std::collections::BTreeMap;

use super::*;

/// A stand-in for a kernel `HASH` map of a fixed size.
struct FakeMap {
    entries: BTreeMap<u32, char>,
    capacity: usize,
    /// Keys whose writes fail with `Other`.
    broken: Vec<u32>,
}

impl FakeMap {
    fn new(capacity: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            capacity,
            broken: Vec::new(),
        }
    }
}

impl MapWrites<u32, char> for FakeMap {
    fn insert(&mut self, key: &u32, value: &char) -> Result<(), WriteError> {
        if self.broken.contains(key) {
            return Err(WriteError::Other("Operation not permitted".into()));
        }
        // Like the kernel: updating an existing key needs no free slot.
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            return Err(WriteError::Full);
        }
        self.entries.insert(*key, *value);
        Ok(())
    }

    fn remove(&mut self, key: &u32) -> Result<(), WriteError> {
        if self.broken.contains(key) {
            return Err(WriteError::Other("Operation not permitted".into()));
        }
        self.entries.remove(key);
        Ok(())
    }
}

fn desired(keys: &[u32]) -> BTreeMap<u32, char> {
    keys.iter().map(|k| (*k, 'a')).collect()
}

#[test]
fn only_differences_are_written() {
    let installed = BTreeMap::from([(1, 'a'), (2, 'b'), (3, 'c')]);
    let desired = BTreeMap::from([(2, 'b'), (3, 'x'), (4, 'd')]);
    let plan = plan(&installed, &desired);
    assert_eq!(plan.upsert, [(3, 'x'), (4, 'd')]);
    assert_eq!(plan.remove, [1]);
}

#[test]
fn nothing_to_do_when_equal() {
    let same = BTreeMap::from([(1, 'a')]);
    assert_eq!(
        plan(&same, &same),
        Plan {
            upsert: vec![],
            remove: vec![]
        }
    );
}

#[test]
fn a_full_map_takes_what_fits_and_counts_the_rest() {
    let mut map = FakeMap::new(2);
    let mut installed = BTreeMap::new();
    let applied = reconcile(&mut map, &mut installed, &desired(&[1, 2, 3, 4]));
    assert_eq!(installed, map.entries, "installed is what the kernel holds");
    assert_eq!(applied.installed, 2);
    assert_eq!(applied.wanted, 4);
    assert_eq!(applied.added_or_changed, 2);
    assert_eq!(applied.not_installed, 2);
    assert_eq!(applied.full_errors, 2);
    assert_eq!(applied.other_errors, 0);
    let problems = applied.problems(2);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("2 of 4 steered destinations are not installed")
            && problems[0].contains("capacity of 2")
            && problems[0].contains("--steered-capacity"),
        "{}",
        problems[0]
    );
}

#[test]
fn the_missing_ones_are_retried_on_the_next_snapshot() {
    let mut map = FakeMap::new(2);
    let mut installed = BTreeMap::new();
    reconcile(&mut map, &mut installed, &desired(&[1, 2, 3, 4]));
    // The same snapshot again: the two installed stay, the two others fail again.
    let again = reconcile(&mut map, &mut installed, &desired(&[1, 2, 3, 4]));
    assert_eq!(again.added_or_changed, 0);
    assert_eq!(again.full_errors, 2);
    assert_eq!(again.not_installed, 2);
    // Removals go first, so the freed slots take the ones that were missing.
    let shrunk = reconcile(&mut map, &mut installed, &desired(&[3, 4]));
    assert_eq!(shrunk.removed, 2);
    assert_eq!(shrunk.added_or_changed, 2);
    assert_eq!(shrunk.not_installed, 0);
    assert_eq!(shrunk.full_errors, 0);
    assert!(shrunk.problems(2).is_empty());
    assert_eq!(installed, desired(&[3, 4]));
    assert_eq!(map.entries, installed);
}

#[test]
fn a_changed_value_is_updated_in_a_full_map() {
    let mut map = FakeMap::new(1);
    let mut installed = BTreeMap::new();
    reconcile(&mut map, &mut installed, &desired(&[1]));
    let changed = reconcile(&mut map, &mut installed, &BTreeMap::from([(1, 'b')]));
    assert_eq!(changed.added_or_changed, 1);
    assert_eq!(changed.not_installed, 0);
    assert_eq!(map.entries, BTreeMap::from([(1, 'b')]));
}

#[test]
fn other_failures_neither_stop_the_rest_nor_corrupt_installed() {
    let mut map = FakeMap::new(10);
    let mut installed = BTreeMap::new();
    reconcile(&mut map, &mut installed, &desired(&[1, 2]));
    map.broken = vec![1, 3];
    // 1 cannot be removed, 3 cannot be inserted, 4 can.
    let applied = reconcile(&mut map, &mut installed, &desired(&[2, 3, 4]));
    assert_eq!(installed, map.entries);
    assert_eq!(installed, BTreeMap::from([(1, 'a'), (2, 'a'), (4, 'a')]));
    assert_eq!(applied.other_errors, 2);
    assert_eq!(applied.full_errors, 0);
    assert_eq!(applied.not_installed, 1);
    assert_eq!(applied.not_removed, 1);
    let problems = applied.problems(10);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("writing them to the STEERED map failed: Operation not permitted"),
        "{}",
        problems[0]
    );
    assert!(problems[1].contains("still redirected"), "{}", problems[1]);
}
