//! The archive file (R1), byte-exact in docs/archive.md:
//!
//! ```text
//! offset 0      "LOOPCAST" format_version:u16 reserved:u16 info_len:u32 info[info_len]
//!               root:[32] (BLAKE3 of info: catches any damage to the header on open) zero padding
//! offset 4096   datagram 0 | datagram 1 | ... | datagram loop_len-1     (each `datagram_size` bytes)
//! ```
//! Datagrams sit in loop order (serial order): sending serials a..b is sending one contiguous,
//! page-cache-backed range of the file.

use loopcast_proto::info::{FileInfo, INFO_LEN_MAX};

pub const ARCHIVE_MAGIC: [u8; 8] = *b"LOOPCAST";
pub const ARCHIVE_FORMAT_VERSION: u16 = 1;
/// Datagrams start here: page-aligned, so ranges map cleanly for the kernel.
pub const DATAGRAMS_OFFSET: u64 = 4096;
const SUPERBLOCK_FIXED_LEN: usize = 16;

const ROOT_LEN: usize = 32;

const _: () = assert!(SUPERBLOCK_FIXED_LEN + INFO_LEN_MAX + ROOT_LEN <= DATAGRAMS_OFFSET as usize);

/// Bytes of the first page for `info`.
pub fn superblock(info: &FileInfo) -> Vec<u8> {
    let info_bytes = info.to_bytes();
    let mut page = vec![0u8; DATAGRAMS_OFFSET as usize];
    page[0..8].copy_from_slice(&ARCHIVE_MAGIC);
    page[8..10].copy_from_slice(&ARCHIVE_FORMAT_VERSION.to_be_bytes());
    page[12..16].copy_from_slice(
        &u32::try_from(info_bytes.len())
            .expect("info is bounded")
            .to_be_bytes(),
    );
    let info_end = SUPERBLOCK_FIXED_LEN + info_bytes.len();
    page[SUPERBLOCK_FIXED_LEN..info_end].copy_from_slice(&info_bytes);
    page[info_end..info_end + ROOT_LEN].copy_from_slice(blake3::hash(&info_bytes).as_bytes());
    page
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuperblockError {
    NotAnArchive,
    UnsupportedVersion(u16),
    Corrupt,
}

/// Parses the first page (or less, if the file is shorter).
pub fn parse_superblock(page: &[u8]) -> Result<FileInfo, SuperblockError> {
    if page.len() < SUPERBLOCK_FIXED_LEN || page[0..8] != ARCHIVE_MAGIC {
        return Err(SuperblockError::NotAnArchive);
    }
    let version = u16::from_be_bytes([page[8], page[9]]);
    if version != ARCHIVE_FORMAT_VERSION {
        return Err(SuperblockError::UnsupportedVersion(version));
    }
    let info_len = u32::from_be_bytes(page[12..16].try_into().expect("4 bytes")) as usize;
    if page[10..12] != [0, 0] || info_len > INFO_LEN_MAX {
        return Err(SuperblockError::Corrupt);
    }
    let info_bytes = page
        .get(SUPERBLOCK_FIXED_LEN..SUPERBLOCK_FIXED_LEN + info_len)
        .ok_or(SuperblockError::Corrupt)?;
    let info_end = SUPERBLOCK_FIXED_LEN + info_len;
    let root = page
        .get(info_end..info_end + ROOT_LEN)
        .ok_or(SuperblockError::Corrupt)?;
    if root != blake3::hash(info_bytes).as_bytes() {
        return Err(SuperblockError::Corrupt);
    }
    let padding = page
        .get(SUPERBLOCK_FIXED_LEN + info_len + ROOT_LEN..DATAGRAMS_OFFSET as usize)
        .ok_or(SuperblockError::Corrupt)?;
    if padding.iter().any(|&b| b != 0) {
        return Err(SuperblockError::Corrupt);
    }
    FileInfo::parse(info_bytes).map_err(|_| SuperblockError::Corrupt)
}

/// Total size of an archive with this info.
pub fn archive_len(info: &FileInfo) -> u64 {
    DATAGRAMS_OFFSET + u64::from(info.loop_len) * u64::from(info.datagram_size)
}

/// File offset of a datagram.
pub fn datagram_offset(info: &FileInfo, serial: u32) -> u64 {
    assert!(serial < info.loop_len, "serial {serial} outside the loop");
    DATAGRAMS_OFFSET + u64::from(serial) * u64::from(info.datagram_size)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use loopcast_proto::info::{DATAGRAM_SIZE_MIN, DATAGRAM_SIZE_MTU_1500};
    use loopcast_proto::testkit::{hostile_bytes, mutated, parser_config, sample_info};
    use proptest::prelude::*;

    /// A small valid info (at most a few dozen datagrams), so that whole archives stay tiny.
    pub(crate) fn small_info() -> impl Strategy<Value = FileInfo> {
        (1u64..40_000, any::<u8>(), any::<bool>()).prop_map(|(stream_len, seed, small)| {
            let size = if small {
                DATAGRAM_SIZE_MIN
            } else {
                DATAGRAM_SIZE_MTU_1500
            };
            sample_info(stream_len, size, seed)
        })
    }

    /// A first page around `info_bytes` as a writer who knows the format would lay it out,
    /// root included, so that damage to the info reaches `FileInfo::parse` instead of stopping
    /// at the root check. Bytes past the longest allowed info are dropped.
    pub(crate) fn superblock_around(info_bytes: &[u8]) -> Vec<u8> {
        let info_bytes = &info_bytes[..info_bytes.len().min(INFO_LEN_MAX)];
        let mut page = vec![0u8; DATAGRAMS_OFFSET as usize];
        page[0..8].copy_from_slice(&ARCHIVE_MAGIC);
        page[8..10].copy_from_slice(&ARCHIVE_FORMAT_VERSION.to_be_bytes());
        page[12..16].copy_from_slice(&(info_bytes.len() as u32).to_be_bytes());
        let info_end = SUPERBLOCK_FIXED_LEN + info_bytes.len();
        page[SUPERBLOCK_FIXED_LEN..info_end].copy_from_slice(info_bytes);
        page[info_end..info_end + ROOT_LEN].copy_from_slice(blake3::hash(info_bytes).as_bytes());
        page
    }

    /// Damaged first pages: the page itself mutated (root no longer matches, or padding and
    /// length fields hit), or the info mutated and the root recomputed to match.
    pub(crate) fn hostile_superblock_of(info: FileInfo) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            mutated(Just(superblock(&info))),
            mutated(Just(info.to_bytes())).prop_map(|info_bytes| superblock_around(&info_bytes)),
        ]
    }

    pub(crate) fn hostile_superblock() -> impl Strategy<Value = Vec<u8>> {
        small_info().prop_flat_map(hostile_superblock_of)
    }

    /// What every superblock that parsed must be: exactly the page its info lays out.
    pub(crate) fn check_parsed(info: &FileInfo, page: &[u8]) -> Result<(), TestCaseError> {
        let again = superblock(info);
        prop_assert!(page.len() >= again.len());
        prop_assert_eq!(&again[..], &page[..again.len()], "re-emits byte for byte");
        prop_assert_eq!(parse_superblock(&again), Ok(info.clone()));
        prop_assert!(info.shape().is_ok());
        Ok(())
    }

    proptest! {
        #![proptest_config(parser_config())]

        #[test]
        fn superblock_round_trips(info in small_info()) {
            prop_assert_eq!(parse_superblock(&superblock(&info)), Ok(info));
        }

        #[test]
        fn garbage_superblock_never_panics(page in hostile_bytes(b"LOOPCAST\x00\x01\x00\x00", 4200)) {
            if let Ok(info) = parse_superblock(&page) {
                check_parsed(&info, &page)?;
            }
        }

        #[test]
        fn mutated_superblock_is_refused_or_consistent(page in hostile_superblock()) {
            if let Ok(info) = parse_superblock(&page) {
                check_parsed(&info, &page)?;
            }
        }
    }
}
