//! The `requests` tree: operator requests under approval, kept as the JSON records the
//! operators module writes (the store does not interpret them), by id. Updates compare and
//! swap, so two approvals arriving at once cannot overwrite each other.

use super::{Store, StoreError};

const TREE: &str = "requests";
/// Key in the default tree of the last request number given out.
const LAST_REQUEST: &[u8] = b"requests-last-number";

impl Store {
    fn requests_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(TREE)?)
    }

    /// The next request number (1, 2, ...), never given out twice.
    pub fn next_request_number(&self) -> Result<u64, StoreError> {
        let next = self.db.update_and_fetch(LAST_REQUEST, |old| {
            let last = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            Some(last.saturating_add(1).to_be_bytes().to_vec())
        })?;
        self.db.flush()?;
        Ok(next
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(1, u64::from_be_bytes))
    }

    /// Stores a new request record; false if the id exists.
    pub fn insert_request(&self, id: &str, record: &[u8]) -> Result<bool, StoreError> {
        let tree = self.requests_tree()?;
        let done = tree
            .compare_and_swap(id.as_bytes(), None as Option<&[u8]>, Some(record))?
            .is_ok();
        tree.flush()?;
        Ok(done)
    }

    /// Replaces request `id`'s record if it is still `old`; false if it changed meanwhile.
    pub fn update_request(&self, id: &str, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let tree = self.requests_tree()?;
        let done = tree
            .compare_and_swap(id.as_bytes(), Some(old), Some(new))?
            .is_ok();
        tree.flush()?;
        Ok(done)
    }

    /// Request `id`'s record.
    pub fn request_record(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .requests_tree()?
            .get(id.as_bytes())?
            .map(|v| v.to_vec()))
    }

    /// Every request record, by id.
    pub fn request_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.requests_tree()?.iter() {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }
}
