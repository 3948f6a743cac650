//! What the benches share.

use std::collections::HashMap;
use std::hash::Hash;

/// The baseline every bench reports its ratios against, measured in the same run so that a
/// loaded machine moves both: the least any allocator or planner does, one hash-map insert
/// per key.
pub fn hashmap_insert_baseline<K: Clone + Eq + Hash>(keys: &[K]) -> HashMap<K, usize> {
    keys.iter()
        .cloned()
        .enumerate()
        .map(|(i, k)| (k, i))
        .collect()
}
