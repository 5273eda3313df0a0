//! Compact hash indexes over records kept in arrays: a slot is the record's position and
//! 32 bits of its key's hash (8 bytes), and the key itself lives in the record. Small
//! slots keep the index of a large state in the processor's caches, so that finding a
//! record costs at most the miss on the record itself, which is read anyway.

use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash};

/// 32 bits of a key's hash: what the slots keep, and all the table needs to rehash them.
pub(crate) fn hash32<K: Hash + ?Sized>(key: &K) -> u32 {
    let h = rustc_hash::FxBuildHasher.hash_one(key);
    (h ^ (h >> 32)) as u32
}

/// The table's own hash of a slot: the 32 bits spread over 64, since the table takes its
/// position from the low bits and a tag from the top seven.
fn spread(h: u32) -> u64 {
    u64::from(h).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SlotIndex {
    table: HashTable<(u32, u32)>,
}

impl SlotIndex {
    pub fn with_capacity(n: usize) -> Self {
        SlotIndex { table: HashTable::with_capacity(n) }
    }

    /// The position of the record whose key hashes to `h` and for which `is` holds.
    pub fn find(&self, h: u32, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        self.table.find(spread(h), |&(pos, tag)| tag == h && is(pos)).map(|&(pos, _)| pos)
    }

    /// The position of the first record whose key hashes to `h`, read from the index
    /// alone: usually the record sought, but only a comparison of keys tells.
    pub fn candidate(&self, h: u32) -> Option<u32> {
        self.table.find(spread(h), |&(_, tag)| tag == h).map(|&(pos, _)| pos)
    }

    /// Records a new key's position; the caller has checked that it is not there yet.
    pub fn insert(&mut self, h: u32, pos: u32) {
        self.table.insert_unique(spread(h), (pos, h), |&(_, tag)| spread(tag));
    }
}

/// A customer id, held without an allocation when it is short (most are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SmallId {
    Inline { len: u8, bytes: [u8; 22] },
    Heap(Box<str>),
}

impl SmallId {
    pub fn new(id: &str) -> Self {
        let len = id.len();
        if len > 22 {
            return SmallId::Heap(id.into());
        }
        let mut bytes = [0; 22];
        bytes[..len].copy_from_slice(id.as_bytes());
        SmallId::Inline { len: len as u8, bytes }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            SmallId::Inline { len, bytes } => &bytes[..*len as usize],
            SmallId::Heap(s) => s.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Made from a `str` and cut where it ended, so always valid.
            SmallId::Inline { .. } => std::str::from_utf8(self.as_bytes()).expect("made from a str"),
            SmallId::Heap(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ids_keep_any_id() {
        for id in ["", "c", "cust-12345", "exactly-twenty-two-byt", "twenty-three-bytes-long", "ü-é-日本"] {
            let s = SmallId::new(id);
            assert_eq!((s.as_str(), s.as_bytes()), (id, id.as_bytes()));
            assert_eq!(matches!(s, SmallId::Inline { .. }), id.len() <= 22, "{id}");
        }
        assert_eq!(size_of::<SmallId>(), 24);
    }

    #[test]
    fn index_finds_by_key_not_by_hash() {
        let keys = ["a", "b", "c"];
        let mut ix = SlotIndex::default();
        // Every key under one hash: the records' keys tell them apart.
        for pos in 0..keys.len() as u32 {
            ix.insert(7, pos);
        }
        for (pos, k) in keys.iter().enumerate() {
            assert_eq!(ix.find(7, |p| keys[p as usize] == *k), Some(pos as u32));
        }
        assert_eq!(ix.find(7, |p| keys[p as usize] == "d"), None);
        assert_eq!(ix.find(8, |_| true), None);
        for pos in 3..10_000u32 {
            ix.insert(hash32(&pos), pos);
        }
        assert!((3..10_000u32).all(|k| ix.find(hash32(&k), |p| p == k) == Some(k)));
    }
}
