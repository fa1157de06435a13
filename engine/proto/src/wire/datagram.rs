//! The loop datagram: what the carousel sends, byte for byte as it lies in the archive.
//!
//! ```text
//!  0      2   3    4               12          16    17   18      20        24          28       32
//!  +------+---+----+---------------+-----------+-----+----+-------+---------+-----------+--------+
//!  | "LC" |ver|kind| file_id (u64) | serial u32|level|rsv |pay_len| index   | loop_len  |reserved|
//!  +------+---+----+---------------+-----------+-----+----+-------+---------+-----------+--------+
//!  payload (pay_len bytes), then zero padding up to the archive's datagram size
//! ```
//! All integers big-endian. `kind` 1 = data (level 0), 2 = hash block (level >= 1).
//! A datagram is authenticated by the BLAKE3 hash of all its bytes (header, payload and
//! padding), found in its parent hash block or in the file info's top hashes.

use super::{read_u16, read_u32, read_u64, ParseError};

pub const DATAGRAM_MAGIC: [u8; 2] = *b"LC";
pub const DATAGRAM_VERSION: u8 = 1;
pub const DATAGRAM_HEADER_LEN: usize = 32;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const FILE_ID: usize = 4;
    pub const SERIAL: usize = 12;
    pub const LEVEL: usize = 16;
    pub const RESERVED_A: usize = 17;
    pub const PAYLOAD_LEN: usize = 18;
    pub const INDEX: usize = 20;
    pub const LOOP_LEN: usize = 24;
    pub const RESERVED_B: Range<usize> = 28..32;
}

const _: () = assert!(field::RESERVED_B.end == DATAGRAM_HEADER_LEN);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatagramKind {
    /// A slice of the archive's frame stream (tree level 0).
    Data,
    /// A block of child hashes (tree level >= 1).
    HashBlock,
}

impl DatagramKind {
    fn to_byte(self) -> u8 {
        match self {
            DatagramKind::Data => 1,
            DatagramKind::HashBlock => 2,
        }
    }
}

/// Position of a datagram in the loop: `Serial` counts from 0 to `loop_len - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(pub u32);

/// 64-bit identifier of one archive (random at pack time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u64);

impl core::fmt::Display for FileId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramHeader {
    pub kind: DatagramKind,
    pub file_id: FileId,
    pub serial: Serial,
    /// 0 for data, 1.. for hash blocks (1 = hashes of data datagrams).
    pub level: u8,
    /// Index of this node within its tree level.
    pub index: u32,
    pub payload_len: u16,
    /// Number of datagrams in one loop of this file.
    pub loop_len: u32,
}

impl DatagramHeader {
    /// Parses the header of `bytes` (the whole datagram). Checks everything that can be
    /// checked without the file info; `payload_len` is checked against `bytes.len()`.
    pub fn parse(bytes: &[u8]) -> Result<DatagramHeader, ParseError> {
        if bytes.len() < DATAGRAM_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if bytes[field::MAGIC] != DATAGRAM_MAGIC {
            return Err(ParseError::BadMagic);
        }
        if bytes[field::VERSION] != DATAGRAM_VERSION {
            return Err(ParseError::BadVersion);
        }
        let kind = match bytes[field::KIND] {
            1 => DatagramKind::Data,
            2 => DatagramKind::HashBlock,
            _ => return Err(ParseError::UnknownKind),
        };
        if bytes[field::RESERVED_A] != 0 || bytes[field::RESERVED_B] != [0; 4] {
            return Err(ParseError::Malformed);
        }
        let level = bytes[field::LEVEL];
        if (kind == DatagramKind::Data) != (level == 0) {
            return Err(ParseError::Malformed);
        }
        let payload_len = read_u16(bytes, field::PAYLOAD_LEN);
        if usize::from(payload_len) > bytes.len() - DATAGRAM_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let serial = read_u32(bytes, field::SERIAL);
        let loop_len = read_u32(bytes, field::LOOP_LEN);
        if serial >= loop_len {
            return Err(ParseError::Malformed);
        }
        Ok(DatagramHeader {
            kind,
            file_id: FileId(read_u64(bytes, field::FILE_ID)),
            serial: Serial(serial),
            level,
            index: read_u32(bytes, field::INDEX),
            payload_len,
            loop_len,
        })
    }

    /// Writes the header into the first `DATAGRAM_HEADER_LEN` bytes of `out`.
    pub fn emit(&self, out: &mut [u8]) {
        assert!(
            out.len() >= DATAGRAM_HEADER_LEN,
            "datagram buffer smaller than its header"
        );
        assert!(
            (self.kind == DatagramKind::Data) == (self.level == 0),
            "data datagrams are level 0 and only they are"
        );
        assert!(self.serial.0 < self.loop_len, "serial outside the loop");
        out[field::MAGIC].copy_from_slice(&DATAGRAM_MAGIC);
        out[field::VERSION] = DATAGRAM_VERSION;
        out[field::KIND] = self.kind.to_byte();
        out[field::FILE_ID..field::FILE_ID + 8].copy_from_slice(&self.file_id.0.to_be_bytes());
        out[field::SERIAL..field::SERIAL + 4].copy_from_slice(&self.serial.0.to_be_bytes());
        out[field::LEVEL] = self.level;
        out[field::RESERVED_A] = 0;
        out[field::PAYLOAD_LEN..field::PAYLOAD_LEN + 2]
            .copy_from_slice(&self.payload_len.to_be_bytes());
        out[field::INDEX..field::INDEX + 4].copy_from_slice(&self.index.to_be_bytes());
        out[field::LOOP_LEN..field::LOOP_LEN + 4].copy_from_slice(&self.loop_len.to_be_bytes());
        out[field::RESERVED_B].fill(0);
    }
}

/// The payload bytes of a datagram whose header parsed.
pub fn payload<'a>(bytes: &'a [u8], header: &DatagramHeader) -> &'a [u8] {
    &bytes[DATAGRAM_HEADER_LEN..DATAGRAM_HEADER_LEN + usize::from(header.payload_len)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{hostile_bytes, mutated, parser_config};
    use proptest::prelude::*;

    fn any_header() -> impl Strategy<Value = DatagramHeader> {
        (
            any::<bool>(),
            any::<u64>(),
            1u32..,
            any::<u32>(),
            1u8..,
            0u16..1408,
        )
            .prop_flat_map(|(is_data, file_id, loop_len, index, level, payload_len)| {
                (0..loop_len).prop_map(move |serial| DatagramHeader {
                    kind: if is_data {
                        DatagramKind::Data
                    } else {
                        DatagramKind::HashBlock
                    },
                    file_id: FileId(file_id),
                    serial: Serial(serial),
                    level: if is_data { 0 } else { level },
                    index,
                    payload_len,
                    loop_len,
                })
            })
    }

    proptest! {
        #[test]
        fn header_round_trips(header in any_header()) {
            let mut buf = vec![0u8; DATAGRAM_HEADER_LEN + usize::from(header.payload_len)];
            header.emit(&mut buf);
            prop_assert_eq!(DatagramHeader::parse(&buf), Ok(header));
        }

        #[test]
        fn truncation_is_detected(header in any_header(), cut in 0usize..DATAGRAM_HEADER_LEN) {
            let mut buf = vec![0u8; DATAGRAM_HEADER_LEN + usize::from(header.payload_len)];
            header.emit(&mut buf);
            prop_assert!(DatagramHeader::parse(&buf[..cut]).is_err());
        }
    }

    /// A whole datagram: header, payload and padding (filled with one byte).
    fn valid_datagram() -> impl Strategy<Value = Vec<u8>> {
        (any_header(), any::<u8>(), 0usize..64).prop_map(|(header, fill, padding)| {
            let mut buf =
                vec![fill; DATAGRAM_HEADER_LEN + usize::from(header.payload_len) + padding];
            header.emit(&mut buf);
            buf
        })
    }

    /// What every header that parsed must be: valid fields, inside its buffer, and the header
    /// bytes are exactly its own encoding.
    fn check_parsed(header: &DatagramHeader, bytes: &[u8]) -> Result<(), TestCaseError> {
        prop_assert!(header.serial.0 < header.loop_len);
        prop_assert_eq!(header.kind == DatagramKind::Data, header.level == 0);
        prop_assert_eq!(
            payload(bytes, header).len(),
            usize::from(header.payload_len)
        );
        let mut again = bytes.to_vec();
        header.emit(&mut again);
        prop_assert_eq!(&again[..], bytes, "re-emits byte for byte");
        prop_assert_eq!(DatagramHeader::parse(&again), Ok(*header));
        Ok(())
    }

    proptest! {
        #![proptest_config(parser_config())]

        #[test]
        fn garbage_never_panics(bytes in hostile_bytes(b"LC\x01", 1600)) {
            if let Ok(header) = DatagramHeader::parse(&bytes) {
                check_parsed(&header, &bytes)?;
            }
        }

        #[test]
        fn mutated_datagram_is_dropped_or_valid(bytes in mutated(valid_datagram())) {
            if let Ok(header) = DatagramHeader::parse(&bytes) {
                check_parsed(&header, &bytes)?;
            }
        }
    }
}
