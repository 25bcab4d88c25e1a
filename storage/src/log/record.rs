//! The record encoding: one function that writes a record, one that checks one.
//!
//! ```text
//! [len: u32 LE]        length of everything after this field (crc .. value)
//! [crc: u32 LE]        CRC-32 (IEEE, crc32fast) of everything after this field
//! [offset: u64 LE]     the record's offset in its partition
//! [timestamp: i64 LE]  milliseconds since the Unix epoch, as given by the producer
//! [key_len: u32 LE]
//! [key: key_len bytes]
//! [value: the rest]
//! ```

/// Bytes before the key: len, crc, offset, timestamp, key_len.
pub(crate) const HEADER_LEN: usize = 4 + 4 + 8 + 8 + 4;

/// The largest encoded record (header, key and value together): 16 MiB.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// The encoded size of a record with this key and value.
#[inline]
pub(crate) fn encoded_len(key_len: usize, value_len: usize) -> usize {
    HEADER_LEN + key_len + value_len
}

/// Appends one encoded record to `buf`. The caller has checked the size.
#[inline]
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, timestamp_ms: i64, key: &[u8], value: &[u8]) {
    let total = encoded_len(key.len(), value.len());
    debug_assert!(total <= MAX_RECORD_BYTES);
    let start = buf.len();
    buf.reserve(total);
    buf.extend_from_slice(&((total - 4) as u32).to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The fixed fields of a checked record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub offset: u64,
    pub timestamp_ms: i64,
    /// The whole encoded size, header included.
    pub total: usize,
}

/// What [`check`] found at the start of a buffer.
#[derive(Debug)]
pub(crate) enum Checked {
    /// A whole, intact record.
    Record(Header),
    /// The buffer ends before the record does; at least `need` bytes (from the
    /// record's start) are required to decide.
    Incomplete { need: usize },
    /// Not a record: the length is out of range, the checksum does not match, or the
    /// key length exceeds the record.
    Invalid(String),
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the record at the start of `buf`: its length, its CRC and its key length.
#[inline]
pub(crate) fn check(buf: &[u8]) -> Checked {
    if buf.len() < 4 {
        return Checked::Incomplete { need: HEADER_LEN };
    }
    let total = u32_at(buf, 0) as usize + 4;
    if !(HEADER_LEN..=MAX_RECORD_BYTES).contains(&total) {
        return Checked::Invalid(format!("length field says {total} bytes, outside {HEADER_LEN}..={MAX_RECORD_BYTES}"));
    }
    if buf.len() < total {
        return Checked::Incomplete { need: total };
    }
    let stored = u32_at(buf, 4);
    let actual = crc32fast::hash(&buf[8..total]);
    if stored != actual {
        return Checked::Invalid(format!("checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"));
    }
    let key_len = u32_at(buf, 24) as usize;
    if key_len > total - HEADER_LEN {
        return Checked::Invalid(format!("key length {key_len} exceeds the record's {total} bytes"));
    }
    Checked::Record(Header { offset: u64_at(buf, 8), timestamp_ms: u64_at(buf, 16) as i64, total })
}

/// Splits an already checked record at the start of `buf` into its parts.
#[inline]
pub(crate) fn view(buf: &[u8]) -> (u64, i64, &[u8], &[u8]) {
    let total = u32_at(buf, 0) as usize + 4;
    let key_len = u32_at(buf, 24) as usize;
    let key = &buf[HEADER_LEN..HEADER_LEN + key_len];
    let value = &buf[HEADER_LEN + key_len..total];
    (u64_at(buf, 8), u64_at(buf, 16) as i64, key, value)
}
