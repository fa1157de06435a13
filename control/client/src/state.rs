//! The persisted receive state beside a partial archive (R14): which datagrams are held.
//!
//! `<output>.part.state`: `"LCST" version:u16 root:[32] loop_len:u32 word_count:u32
//! words:[u64 BE; word_count] checksum:[32]` where checksum = BLAKE3 of everything before it.
//! Written to an exclusive temporary (unique name, `O_EXCL | O_NOFOLLOW`), fsynced and renamed,
//! after the partial archive is fsynced, so the state never claims bytes that are not on disk
//! and no symlink planted beside it is ever followed.

use std::path::Path;

use loopcast_archive::files::{Overwrite, TempFile};
use loopcast_proto::bitmap::Bitmap;
use loopcast_proto::info::RootHash;

const STATE_MAGIC: [u8; 4] = *b"LCST";
const STATE_VERSION: u16 = 1;

pub fn encode(root: &RootHash, have: &Bitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + have.words().len() * 8);
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&STATE_VERSION.to_be_bytes());
    out.extend_from_slice(&root.0);
    out.extend_from_slice(&have.len().to_be_bytes());
    out.extend_from_slice(&(have.words().len() as u32).to_be_bytes());
    for word in have.words() {
        out.extend_from_slice(&word.to_be_bytes());
    }
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

/// Decodes a state file; `None` if it is damaged or belongs to another file.
pub fn decode(bytes: &[u8], root: &RootHash, loop_len: u32) -> Option<Bitmap> {
    peek(bytes).and_then(|(held_root, have)| {
        (held_root == *root && have.len() == loop_len).then_some(have)
    })
}

/// Decodes a state file for whatever file it belongs to: its root and what is held; `None` if
/// it is damaged. (Before the Offer: where the partial download's loop should start.)
pub fn peek(bytes: &[u8]) -> Option<(RootHash, Bitmap)> {
    if bytes.len() < 46 + 32 {
        return None;
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != checksum {
        return None;
    }
    if body[0..4] != STATE_MAGIC || body[4..6] != STATE_VERSION.to_be_bytes() {
        return None;
    }
    let root = RootHash(body[6..38].try_into().ok()?);
    let len = u32::from_be_bytes(body[38..42].try_into().ok()?);
    let word_count = u32::from_be_bytes(body[42..46].try_into().ok()?) as usize;
    if body.len() != 46 + word_count.checked_mul(8)? {
        return None;
    }
    let words = body[46..]
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Some((root, Bitmap::from_words(len, words)?))
}

/// The longest state file a loop of `loop_len` datagrams can have (a longer one is refused
/// unread).
pub fn encoded_len_max(loop_len: u32) -> u64 {
    46 + u64::from(loop_len).div_ceil(64) * 8 + 32
}

pub fn save(path: &Path, root: &RootHash, have: &Bitmap) -> std::io::Result<()> {
    let tmp = TempFile::create_beside(path)?;
    std::io::Write::write_all(&mut tmp.file(), &encode(root, have))?;
    tmp.commit(path, Overwrite::Replace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopcast_proto::testkit::{hostile_bytes, mutated, parser_config};
    use proptest::prelude::*;

    const ROOT: RootHash = RootHash([4; 32]);

    /// A bitmap of `len` bits with a pseudo-random pattern from `seed`.
    fn bitmap(len: u32, seed: u64) -> Bitmap {
        let mut have = Bitmap::new(len);
        let mut state = seed | 1;
        for bit in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state.is_multiple_of(3) {
                have.set(bit);
            }
        }
        have
    }

    /// A loop length and state bytes for it: a valid file mutated, or a valid body mutated and
    /// its checksum recomputed (a writer who knows the format), so the damage reaches the fields
    /// behind the checksum.
    fn hostile_state() -> impl Strategy<Value = (u32, Vec<u8>)> {
        (0u32..3000).prop_flat_map(|len| {
            let valid = any::<u64>().prop_map(move |seed| encode(&ROOT, &bitmap(len, seed)));
            let resealed = mutated(valid.clone().prop_map(|mut bytes| {
                bytes.truncate(bytes.len() - 32);
                bytes
            }))
            .prop_map(|mut body| {
                let checksum = blake3::hash(&body);
                body.extend_from_slice(checksum.as_bytes());
                body
            });
            (Just(len), prop_oneof![mutated(valid), resealed])
        })
    }

    /// What every state that decoded must be: a bitmap for this loop whose encoding is exactly
    /// the bytes read.
    fn check_decoded(have: &Bitmap, bytes: &[u8], loop_len: u32) -> Result<(), TestCaseError> {
        prop_assert_eq!(have.len(), loop_len);
        prop_assert!(have.count_ones() <= loop_len);
        prop_assert_eq!(&encode(&ROOT, have)[..], bytes, "re-encodes byte for byte");
        Ok(())
    }

    proptest! {
        #![proptest_config(parser_config())]

        #[test]
        fn state_round_trips(len in 0u32..3000, seed in any::<u64>()) {
            let have = bitmap(len, seed);
            prop_assert_eq!(decode(&encode(&ROOT, &have), &ROOT, len), Some(have));
        }

        #[test]
        fn garbage_state_never_panics(body in hostile_bytes(b"LCST\x00\x01", 600), len in 0u32..3000) {
            // As read, and with a valid checksum appended (so the fields behind it are reached).
            let mut resealed = body.clone();
            resealed.extend_from_slice(blake3::hash(&body).as_bytes());
            for bytes in [body, resealed] {
                if let Some(have) = decode(&bytes, &ROOT, len) {
                    check_decoded(&have, &bytes, len)?;
                }
                if let Some((root, have)) = peek(&bytes) {
                    prop_assert_eq!(&encode(&root, &have)[..], &bytes[..], "re-encodes byte for byte");
                }
            }
        }

        #[test]
        fn mutated_state_is_refused_or_valid((len, bytes) in hostile_state()) {
            if let Some(have) = decode(&bytes, &ROOT, len) {
                check_decoded(&have, &bytes, len)?;
            }
        }
    }

    #[test]
    fn state_round_trips_and_rejects_damage() {
        let root = RootHash([4; 32]);
        let mut have = Bitmap::new(130);
        have.set(0);
        have.set(129);
        let bytes = encode(&root, &have);
        assert_eq!(bytes.len() as u64, encoded_len_max(130));
        assert_eq!(decode(&bytes, &root, 130), Some(have));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert_eq!(decode(&damaged, &root, 130), None, "byte {i}");
        }
        assert_eq!(decode(&bytes, &RootHash([5; 32]), 130), None);
        assert_eq!(decode(&bytes[..10], &root, 130), None);
    }

    #[test]
    fn save_replaces_a_symlink_and_never_writes_through_one() {
        let dir = std::env::temp_dir().join(format!("loopcast-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.join("out.part.state");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("out.part.state.tmp")).unwrap();
        let root = RootHash([4; 32]);
        let have = Bitmap::new(10);
        save(&path, &root, &have).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(
            decode(&std::fs::read(&path).unwrap(), &root, 10),
            Some(have)
        );
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["out.part.state", "out.part.state.tmp", "victim"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
