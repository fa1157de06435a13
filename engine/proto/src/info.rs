//! The file info: everything a client needs to place, verify and later decode a file.
//! It is stored in the archive's first page and sent in the server's Offer. Its BLAKE3
//! hash is the file's **root**: the one value a client must trust.
//!
//! Layout (big-endian), see docs/protocol.md:
//! ```text
//! "LCFI" version:u16 file_id:u64 flags:u32 original_size:u64 original_hash:[32]
//! frame_raw_size:u32 frame_count:u64 frame_stream_len:u64 datagram_size:u16
//! data_datagram_count:u32 loop_len:u32 name:str8 owner:str8 notice:str16
//! top_hash_count:u8 top_hashes:[32 * top_hash_count]
//! ```

use crate::layout::{ShapeError, TreeShape, HASH_LEN, TOP_HASHES_MAX};
use crate::wire::datagram::{FileId, DATAGRAM_HEADER_LEN};
use crate::wire::{ParseError, Reader, Writer};

pub const INFO_MAGIC: [u8; 4] = *b"LCFI";
pub const INFO_VERSION: u16 = 1;

pub const NAME_LEN_MAX: usize = 128;
pub const OWNER_LEN_MAX: usize = 64;
pub const NOTICE_LEN_MAX: usize = 256;
/// Smallest and largest datagram (UDP payload) sizes an archive may use.
pub const DATAGRAM_SIZE_MIN: u16 = 256;
pub const DATAGRAM_SIZE_MAX: u16 = 9000;
/// Wire size for a 1500-byte MTU path over IPv4 or IPv6 (1500 - 40 - 8 = 1452, rounded down to 16).
pub const DATAGRAM_SIZE_MTU_1500: u16 = 1440;
/// Wire size for a 9000-byte (jumbo) MTU path: 9000 - 48 = 8952, rounded down to 16.
pub const DATAGRAM_SIZE_MTU_9000: u16 = 8944;
/// Largest size `pack` lays datagrams out at. A datagram is the whole UDP payload, so this is
/// the most a 9000-byte MTU path carries in one packet over IPv6: 9000 - 40 (IPv6 header) - 8
/// (UDP header) = 8952; over IPv4 (a 20-byte header) it fits too. Readers take up to
/// `DATAGRAM_SIZE_MAX`, so archives packed before this cap still open.
pub const DATAGRAM_SIZE_PACK_MAX: u16 = 9000 - 40 - 8;
const _: () = assert!(DATAGRAM_SIZE_MTU_1500 <= DATAGRAM_SIZE_MTU_9000);
const _: () = assert!(DATAGRAM_SIZE_MTU_9000 <= DATAGRAM_SIZE_PACK_MAX);
const _: () = assert!(DATAGRAM_SIZE_PACK_MAX <= DATAGRAM_SIZE_MAX);
/// Largest encoded info (fixed fields + longest strings + all top hashes).
pub const INFO_LEN_MAX: usize =
    110 + NAME_LEN_MAX + OWNER_LEN_MAX + NOTICE_LEN_MAX + TOP_HASHES_MAX * HASH_LEN;

const _: () = assert!(INFO_LEN_MAX + 64 <= DATAGRAM_SIZE_MTU_1500 as usize);

pub const FLAG_ENCRYPTED: u32 = 1 << 0;
pub const FLAG_WATERMARKED: u32 = 1 << 1;
const FLAGS_KNOWN: u32 = FLAG_ENCRYPTED | FLAG_WATERMARKED;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RootHash(pub [u8; 32]);

impl RootHash {
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(text: &str) -> Option<RootHash> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            out[i] = u8::try_from(high * 16 + low).ok()?;
        }
        Some(RootHash(out))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use core::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watermark {
    /// Source or owner id, e.g. "studio-42".
    pub owner: String,
    /// Copyright notice.
    pub notice: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub file_id: FileId,
    pub encrypted: bool,
    pub watermark: Option<Watermark>,
    pub original_size: u64,
    pub original_hash: [u8; 32],
    pub frame_raw_size: u32,
    pub frame_count: u64,
    pub frame_stream_len: u64,
    pub datagram_size: u16,
    pub data_datagram_count: u32,
    pub loop_len: u32,
    pub name: String,
    pub top_hashes: Vec<[u8; 32]>,
}

impl FileInfo {
    /// Payload bytes each datagram can carry.
    pub fn payload_capacity(&self) -> usize {
        payload_capacity(self.datagram_size)
    }

    pub fn fanout(&self) -> u32 {
        hash_fanout(self.datagram_size)
    }

    pub fn shape(&self) -> Result<TreeShape, ShapeError> {
        TreeShape::new(self.data_datagram_count, self.fanout())
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        assert!(self.name.len() <= NAME_LEN_MAX, "name too long");
        assert!(
            self.top_hashes.len() <= TOP_HASHES_MAX,
            "too many top hashes"
        );
        let mut w = Writer { out };
        w.bytes(&INFO_MAGIC);
        w.u16(INFO_VERSION);
        w.u64(self.file_id.0);
        let mut flags = 0;
        if self.encrypted {
            flags |= FLAG_ENCRYPTED;
        }
        if self.watermark.is_some() {
            flags |= FLAG_WATERMARKED;
        }
        w.u32(flags);
        w.u64(self.original_size);
        w.bytes(&self.original_hash);
        w.u32(self.frame_raw_size);
        w.u64(self.frame_count);
        w.u64(self.frame_stream_len);
        w.u16(self.datagram_size);
        w.u32(self.data_datagram_count);
        w.u32(self.loop_len);
        w.short_string(&self.name);
        let (owner, notice) = match &self.watermark {
            Some(mark) => (mark.owner.as_str(), mark.notice.as_str()),
            None => ("", ""),
        };
        assert!(owner.len() <= OWNER_LEN_MAX, "owner id too long");
        assert!(notice.len() <= NOTICE_LEN_MAX, "notice too long");
        w.short_string(owner);
        w.long_string(notice);
        w.u8(u8::try_from(self.top_hashes.len()).expect("checked above"));
        for hash in &self.top_hashes {
            w.bytes(hash);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INFO_LEN_MAX);
        self.emit(&mut out);
        out
    }

    /// The root hash: BLAKE3 of the encoded info.
    pub fn root(&self) -> RootHash {
        RootHash(*blake3::hash(&self.to_bytes()).as_bytes())
    }

    /// Parses and cross-checks an info record: the counts must describe a real tree.
    pub fn parse(bytes: &[u8]) -> Result<FileInfo, ParseError> {
        let mut r = Reader::new(bytes);
        if r.array::<4>()? != INFO_MAGIC {
            return Err(ParseError::BadMagic);
        }
        if r.u16()? != INFO_VERSION {
            return Err(ParseError::BadVersion);
        }
        let file_id = FileId(r.u64()?);
        let flags = r.u32()?;
        if flags & !FLAGS_KNOWN != 0 {
            return Err(ParseError::Malformed);
        }
        let original_size = r.u64()?;
        let original_hash = r.array::<32>()?;
        let frame_raw_size = r.u32()?;
        let frame_count = r.u64()?;
        let frame_stream_len = r.u64()?;
        let datagram_size = r.u16()?;
        let data_datagram_count = r.u32()?;
        let loop_len = r.u32()?;
        let name = r.short_string(NAME_LEN_MAX)?;
        let owner = r.short_string(OWNER_LEN_MAX)?;
        let notice = r.long_string(NOTICE_LEN_MAX)?;
        let top_count = usize::from(r.u8()?);
        if top_count > TOP_HASHES_MAX {
            return Err(ParseError::Malformed);
        }
        let mut top_hashes = Vec::with_capacity(top_count);
        for _ in 0..top_count {
            top_hashes.push(r.array::<32>()?);
        }
        r.finish()?;

        let watermarked = flags & FLAG_WATERMARKED != 0;
        let has_watermark_text = !owner.is_empty() || !notice.is_empty();
        if has_watermark_text && !watermarked {
            return Err(ParseError::Malformed);
        }
        let info = FileInfo {
            file_id,
            encrypted: flags & FLAG_ENCRYPTED != 0,
            watermark: watermarked.then_some(Watermark { owner, notice }),
            original_size,
            original_hash,
            frame_raw_size,
            frame_count,
            frame_stream_len,
            datagram_size,
            data_datagram_count,
            loop_len,
            name,
            top_hashes,
        };
        info.check_consistent()?;
        Ok(info)
    }

    fn check_consistent(&self) -> Result<(), ParseError> {
        if !(DATAGRAM_SIZE_MIN..=DATAGRAM_SIZE_MAX).contains(&self.datagram_size) {
            return Err(ParseError::Malformed);
        }
        if self.frame_raw_size == 0 || self.frame_count == 0 {
            return Err(ParseError::Malformed);
        }
        let capacity = self.payload_capacity() as u64;
        if u64::from(self.data_datagram_count) != self.frame_stream_len.div_ceil(capacity) {
            return Err(ParseError::Malformed);
        }
        if self
            .original_size
            .div_ceil(u64::from(self.frame_raw_size))
            .max(1)
            != self.frame_count
        {
            return Err(ParseError::Malformed);
        }
        // Arithmetic only: building the tree for hostile counts would cost gigabytes.
        let tree = TreeShape::dimensions(self.data_datagram_count, self.fanout())
            .map_err(|_| ParseError::Malformed)?;
        if tree.loop_len != self.loop_len || tree.top_count != self.top_hashes.len() {
            return Err(ParseError::Malformed);
        }
        Ok(())
    }
}

pub fn payload_capacity(datagram_size: u16) -> usize {
    usize::from(datagram_size) - DATAGRAM_HEADER_LEN
}

pub fn hash_fanout(datagram_size: u16) -> u32 {
    u32::try_from(payload_capacity(datagram_size) / HASH_LEN).expect("datagram size is u16")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) use crate::testkit::sample_info;
    use crate::testkit::{hostile_bytes, mutated, parser_config};

    fn valid_info_bytes() -> impl Strategy<Value = Vec<u8>> {
        (1u64..50_000_000, any::<u8>(), any::<bool>()).prop_map(|(stream_len, seed, jumbo)| {
            let size = if jumbo {
                DATAGRAM_SIZE_MTU_9000
            } else {
                DATAGRAM_SIZE_MTU_1500
            };
            sample_info(stream_len, size, seed).to_bytes()
        })
    }

    /// What every info that parsed must be: its own canonical encoding, and counts that describe
    /// one real tree.
    pub(crate) fn check_parsed_info(info: &FileInfo, bytes: &[u8]) -> Result<(), TestCaseError> {
        prop_assert_eq!(&info.to_bytes()[..], bytes, "re-emits byte for byte");
        prop_assert!(bytes.len() <= INFO_LEN_MAX);
        prop_assert!((DATAGRAM_SIZE_MIN..=DATAGRAM_SIZE_MAX).contains(&info.datagram_size));
        let capacity = info.payload_capacity() as u64;
        prop_assert_eq!(
            u64::from(info.data_datagram_count),
            info.frame_stream_len.div_ceil(capacity)
        );
        prop_assert_eq!(
            info.original_size
                .div_ceil(u64::from(info.frame_raw_size))
                .max(1),
            info.frame_count
        );
        let shape = info.shape();
        prop_assert!(shape.is_ok(), "{:?}", shape);
        let shape = shape.unwrap();
        prop_assert_eq!(shape.loop_len(), info.loop_len);
        prop_assert_eq!(shape.top_count(), info.top_hashes.len());
        prop_assert_eq!(FileInfo::parse(bytes), Ok(info.clone()));
        Ok(())
    }

    proptest! {
        #[test]
        fn info_round_trips(stream_len in 1u64..50_000_000, seed in any::<u8>(), jumbo in any::<bool>()) {
            let size = if jumbo { DATAGRAM_SIZE_MTU_9000 } else { DATAGRAM_SIZE_MTU_1500 };
            let info = sample_info(stream_len, size, seed);
            let bytes = info.to_bytes();
            prop_assert!(bytes.len() <= INFO_LEN_MAX);
            prop_assert_eq!(FileInfo::parse(&bytes), Ok(info));
        }
    }

    proptest! {
        #![proptest_config(parser_config())]

        #[test]
        fn garbage_never_panics(bytes in hostile_bytes(b"LCFI\x00\x01", 1200)) {
            if let Ok(info) = FileInfo::parse(&bytes) {
                check_parsed_info(&info, &bytes)?;
            }
        }

        #[test]
        fn mutated_info_is_rejected_or_consistent(bytes in mutated(valid_info_bytes())) {
            if let Ok(info) = FileInfo::parse(&bytes) {
                check_parsed_info(&info, &bytes)?;
            }
        }

        #[test]
        fn any_flipped_bit_changes_root_or_fails_parse(stream_len in 1u64..5_000_000, bit in 0usize..8000) {
            let info = sample_info(stream_len, DATAGRAM_SIZE_MTU_1500, 3);
            let mut bytes = info.to_bytes();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            if let Ok(parsed) = FileInfo::parse(&bytes) {
                prop_assert_ne!(parsed.root(), info.root());
            }
        }
    }

    /// Regression (found by the parser tests of issue 9): an info claiming a loop of billions of
    /// datagrams, with counts consistent with each other, made `parse` build the whole tree
    /// (gigabytes, seconds of CPU) before it could say no. One forged Offer to any port that
    /// parses control messages cost that much. Parsing is now arithmetic on the counts.
    #[test]
    fn huge_consistent_counts_are_rejected_cheaply() {
        let bytes = crate::testkit::huge_consistent_info().to_bytes();
        let started = std::time::Instant::now();
        assert_eq!(FileInfo::parse(&bytes), Err(ParseError::Malformed));
        let elapsed = started.elapsed();
        assert!(
            elapsed < std::time::Duration::from_millis(50),
            "parse took {elapsed:?}"
        );
    }

    #[test]
    fn hex_round_trips() {
        let root = RootHash([0xab; 32]);
        assert_eq!(RootHash::from_hex(&root.to_hex()), Some(root));
        assert_eq!(RootHash::from_hex("zz"), None);
    }
}
