//! Reconciling the `STEERED` map: a pure function from what is installed and
//! what is desired to the writes that make one into the other.

use std::collections::BTreeMap;

/// The writes that turn `installed` into `desired`.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<K, V> {
    pub upsert: Vec<(K, V)>,
    pub remove: Vec<K>,
}

pub fn plan<K: Ord + Copy, V: PartialEq + Copy>(
    installed: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Plan<K, V> {
    let upsert = desired
        .iter()
        .filter(|(key, value)| installed.get(*key) != Some(*value))
        .map(|(key, value)| (*key, *value))
        .collect();
    let remove = installed
        .keys()
        .filter(|key| !desired.contains_key(*key))
        .copied()
        .collect();
    Plan { upsert, remove }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
