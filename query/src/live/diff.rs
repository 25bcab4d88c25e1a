//! The change between two results of a tile: rows added, changed (same key, new
//! values; the whole new row) and removed (the whole old row).

use std::collections::HashMap;

use serde::Serialize;

use super::result::{Evaluated, Row};

/// The change from one result to the next.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Diff {
    /// New rows, in the new result's order.
    pub added: Vec<Row>,
    /// Rows whose key was there before with other values, in the new result's order.
    pub changed: Vec<Row>,
    /// Rows that are gone, as they were, in the old result's order.
    pub removed: Vec<Row>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The diff from `old` to `new`, or `None` when they are not identified the same
/// way (the key or the columns differ) and only a full snapshot can say what changed.
///
/// With a key, identities are unique on both sides. With an empty key, rows are
/// their own identity and are matched as a multiset: a changed value is a removal
/// and an addition, and `changed` stays empty.
pub fn diff(old: &Evaluated, new: &Evaluated) -> Option<Diff> {
    if old.key != new.key || old.columns != new.columns {
        return None;
    }
    // Identity -> indices of old rows with it, last first so `pop` takes the first.
    let mut unmatched: HashMap<&str, Vec<usize>> = HashMap::with_capacity(old.ids.len());
    for (i, id) in old.ids.iter().enumerate().rev() {
        unmatched.entry(id.as_str()).or_default().push(i);
    }
    let mut out = Diff::default();
    for (row, id) in new.rows.iter().zip(&new.ids) {
        match unmatched.get_mut(id.as_str()).and_then(Vec::pop) {
            Some(i) if old.rows[i] != *row => out.changed.push(row.clone()),
            Some(_) => {}
            None => out.added.push(row.clone()),
        }
    }
    let mut removed: Vec<usize> = unmatched.into_values().flatten().collect();
    removed.sort_unstable();
    out.removed = removed.into_iter().map(|i| old.rows[i].clone()).collect();
    Some(out)
}
