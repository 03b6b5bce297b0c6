//! Where a sled store's bytes go: per tree, the entries and the logical
//! bytes of their keys and values, beside what sled's files take on disk.
//! For measuring the layout (`cargo bench --bench store --
//! store_retention` prints it; docs/PERFORMANCE.md, "Retention"), never on
//! a serving path: it reads every entry of every tree.

use std::path::Path;

use super::SledStore;
use crate::StoreError;

/// What one tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSpace {
    pub name: String,
    pub entries: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

/// What the whole database holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// Every tree, the default one included, by name.
    pub trees: Vec<TreeSpace>,
    /// sled's own count of the bytes its files take (`Db::size_on_disk`).
    pub size_on_disk: u64,
}

impl Space {
    /// Keys and values of every tree together.
    pub fn logical_bytes(&self) -> u64 {
        self.trees.iter().map(|t| t.key_bytes + t.value_bytes).sum()
    }
}

/// Opens the database in `dir` (it must not be open elsewhere: sled locks
/// it to one handle) and counts what each tree holds. Blocking.
pub fn space(dir: &Path) -> Result<Space, StoreError> {
    let store = SledStore::open(dir)?;
    let open = store.current()?;
    let mut trees = Vec::new();
    for name in open.db.tree_names() {
        let tree = open.db.open_tree(&name)?;
        let mut space = TreeSpace {
            name: String::from_utf8_lossy(&name).into_owned(),
            entries: 0,
            key_bytes: 0,
            value_bytes: 0,
        };
        for item in tree.iter() {
            let (key, value) = item?;
            space.entries += 1;
            space.key_bytes += key.len() as u64;
            space.value_bytes += value.len() as u64;
        }
        trees.push(space);
    }
    trees.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Space {
        trees,
        size_on_disk: open.db.size_on_disk()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report counts exactly the bytes a write put in each tree.
    #[test]
    fn counts_each_trees_keys_and_values() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        {
            let store = SledStore::open(dir.path()).expect("a new store");
            let open = store.current().expect("open");
            open.meta
                .insert(b"twelve bytes", vec![0u8; 100])
                .expect("insert");
        }
        let space = crate::sled::tests::retrying_locked(|| space(dir.path()));
        let meta = space
            .trees
            .iter()
            .find(|t| t.name == "meta")
            .expect("the meta tree");
        // The store writes its id into `meta` when it is opened; the test's
        // entry comes on top.
        assert!(meta.entries >= 1);
        assert!(meta.key_bytes >= 12 && meta.value_bytes >= 100);
        assert!(space.size_on_disk > 0);
        assert!(space.logical_bytes() >= 112);
    }
}
