//! Frames (R1): the unit of compression and encryption. A file is cut into blocks of
//! `frame_raw_size` bytes; each becomes a frame = header + stored payload. Frames are
//! concatenated into the *frame stream*, which data datagrams carry in order.
//!
//! ```text
//!  0    2   3     4          12        16          20              36                 52        60     64
//!  +----+---+-----+----------+---------+-----------+---------------+------------------+---------+------+
//!  |"LF"|ver|flags| index u64|raw_len  |stored_len | key_salt [16] | watermark_digest | file_id | rsv  |
//!  +----+---+-----+----------+---------+-----------+---------------+------------------+---------+------+
//! ```
//! flags: bit0 zstd-compressed, bit1 AES-256-GCM sealed (stored payload ends with a 16-byte
//! tag), bit2 watermarked. The header is the AEAD's associated data, so index, lengths,
//! salt, watermark digest and file id are all authenticated with the payload.

use loopcast_proto::wire::datagram::FileId;

pub const FRAME_MAGIC: [u8; 2] = *b"LF";
pub const FRAME_VERSION: u8 = 1;
pub const FRAME_HEADER_LEN: usize = 64;
pub const FRAME_FLAG_COMPRESSED: u8 = 1 << 0;
pub const FRAME_FLAG_ENCRYPTED: u8 = 1 << 1;
pub const FRAME_FLAG_WATERMARKED: u8 = 1 << 2;
const FRAME_FLAGS_KNOWN: u8 = FRAME_FLAG_COMPRESSED | FRAME_FLAG_ENCRYPTED | FRAME_FLAG_WATERMARKED;
pub const GCM_TAG_LEN: usize = 16;
/// Largest raw block a frame may hold (64 MiB): bounds memory when reading hostile archives.
pub const FRAME_RAW_SIZE_MAX: u32 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub flags: u8,
    pub index: u64,
    pub raw_len: u32,
    pub stored_len: u32,
    pub key_salt: [u8; 16],
    pub watermark_digest: [u8; 16],
    pub file_id: FileId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameParseError {
    BadMagic,
    BadVersion,
    Malformed,
}

impl FrameHeader {
    pub fn is_compressed(&self) -> bool {
        self.flags & FRAME_FLAG_COMPRESSED != 0
    }
    pub fn is_encrypted(&self) -> bool {
        self.flags & FRAME_FLAG_ENCRYPTED != 0
    }
    pub fn is_watermarked(&self) -> bool {
        self.flags & FRAME_FLAG_WATERMARKED != 0
    }

    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[0..2].copy_from_slice(&FRAME_MAGIC);
        out[2] = FRAME_VERSION;
        out[3] = self.flags;
        out[4..12].copy_from_slice(&self.index.to_be_bytes());
        out[12..16].copy_from_slice(&self.raw_len.to_be_bytes());
        out[16..20].copy_from_slice(&self.stored_len.to_be_bytes());
        out[20..36].copy_from_slice(&self.key_salt);
        out[36..52].copy_from_slice(&self.watermark_digest);
        out[52..60].copy_from_slice(&self.file_id.0.to_be_bytes());
        out
    }

    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, FrameParseError> {
        if bytes[0..2] != FRAME_MAGIC {
            return Err(FrameParseError::BadMagic);
        }
        if bytes[2] != FRAME_VERSION {
            return Err(FrameParseError::BadVersion);
        }
        let flags = bytes[3];
        if flags & !FRAME_FLAGS_KNOWN != 0 || bytes[60..64] != [0; 4] {
            return Err(FrameParseError::Malformed);
        }
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let header = FrameHeader {
            flags,
            index: u64_at(4),
            raw_len: u32_at(12),
            stored_len: u32_at(16),
            key_salt: bytes[20..36].try_into().expect("16 bytes"),
            watermark_digest: bytes[36..52].try_into().expect("16 bytes"),
            file_id: FileId(u64_at(52)),
        };
        if header.raw_len > FRAME_RAW_SIZE_MAX {
            return Err(FrameParseError::Malformed);
        }
        // A stored payload is never larger than the raw block plus zstd's worst case and a tag.
        let stored_max = u64::from(header.raw_len) + u64::from(header.raw_len) / 64 + 1024;
        if u64::from(header.stored_len) > stored_max {
            return Err(FrameParseError::Malformed);
        }
        Ok(header)
    }
}

/// BLAKE3 digest of a watermark, truncated to 16 bytes, bound into every frame header.
pub fn watermark_digest(owner: &str, notice: &str) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new_derive_key("loopcast watermark v1");
    hasher.update(&(owner.len() as u64).to_be_bytes());
    hasher.update(owner.as_bytes());
    hasher.update(notice.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopcast_proto::testkit::{hostile_bytes, mutated, parser_config};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn frame_header_round_trips(flags in 0u8..8, index in any::<u64>(), raw_len in 0u32..FRAME_RAW_SIZE_MAX, stored in 0u32..1000, salt in any::<[u8;16]>(), mark in any::<[u8;16]>(), file in any::<u64>()) {
            let header = FrameHeader { flags, index, raw_len, stored_len: stored.min(raw_len), key_salt: salt, watermark_digest: mark, file_id: FileId(file) };
            prop_assert_eq!(FrameHeader::parse(&header.to_bytes()), Ok(header));
        }

    }

    fn any_header() -> impl Strategy<Value = FrameHeader> {
        (
            0u8..8,
            any::<u64>(),
            0u32..=FRAME_RAW_SIZE_MAX,
            any::<u32>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u64>(),
        )
            .prop_map(
                |(flags, index, raw_len, stored, key_salt, watermark_digest, file)| FrameHeader {
                    flags,
                    index,
                    raw_len,
                    stored_len: stored % (raw_len + raw_len / 64 + 1024),
                    key_salt,
                    watermark_digest,
                    file_id: FileId(file),
                },
            )
    }

    /// The header occupies exactly 64 bytes of the stream: longer input is cut, shorter is
    /// followed by zeros (what comes next in the stream is the reader's business).
    fn header_window(bytes: &[u8]) -> [u8; FRAME_HEADER_LEN] {
        let mut window = [0u8; FRAME_HEADER_LEN];
        let len = bytes.len().min(FRAME_HEADER_LEN);
        window[..len].copy_from_slice(&bytes[..len]);
        window
    }

    /// What every header that parsed must be: its own encoding, within the length bounds.
    fn check_parsed(
        header: &FrameHeader,
        bytes: &[u8; FRAME_HEADER_LEN],
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(&header.to_bytes(), bytes, "re-emits byte for byte");
        prop_assert!(header.raw_len <= FRAME_RAW_SIZE_MAX);
        prop_assert!(u64::from(header.stored_len) <= u64::from(header.raw_len) * 65 / 64 + 1024);
        prop_assert_eq!(FrameHeader::parse(bytes), Ok(*header));
        Ok(())
    }

    proptest! {
        #![proptest_config(parser_config())]

        #[test]
        fn garbage_never_panics(bytes in hostile_bytes(b"LF\x01", 64)) {
            let window = header_window(&bytes);
            if let Ok(header) = FrameHeader::parse(&window) {
                check_parsed(&header, &window)?;
            }
        }

        #[test]
        fn mutated_header_is_refused_or_valid(bytes in mutated(any_header().prop_map(|h| h.to_bytes().to_vec()))) {
            let window = header_window(&bytes);
            if let Ok(header) = FrameHeader::parse(&window) {
                check_parsed(&header, &window)?;
            }
        }
    }
}
