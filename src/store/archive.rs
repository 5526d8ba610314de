//! The `archive` tree: archived encryption keys, as the JSON records [`crate::archive`]
//! writes (the store does not interpret them, and they hold key material only wrapped), by
//! key id (the SHA-256 of the public key). Written once, flushed before the key is used.

use super::{Store, StoreError};

const TREE: &str = "archive";

impl Store {
    fn archive_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(TREE)?)
    }

    /// Stores an archive record (replacing one of the same key id), flushed.
    pub fn put_archive_record(&self, key_id: &str, record: &[u8]) -> Result<(), StoreError> {
        let tree = self.archive_tree()?;
        tree.insert(key_id.as_bytes(), record)?;
        tree.flush()?;
        Ok(())
    }

    /// The key ids the archive holds.
    pub fn archive_key_ids(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        for item in self.archive_tree()?.iter().keys() {
            out.insert(String::from_utf8_lossy(&item?).into_owned());
        }
        Ok(out)
    }

    /// Every archive record, by key id.
    pub fn archive_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.archive_tree()?.iter() {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Names of the sealed secrets under `prefix` (for migrating older records).
    pub fn secret_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for item in self.secrets.scan_prefix(prefix.as_bytes()) {
            let (k, _) = item?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }
}
