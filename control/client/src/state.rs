//! The persisted receive state beside a partial archive (R14): which datagrams are held.
//!
//! `<output>.part.state`: `"LCST" version:u16 root:[32] loop_len:u32 word_count:u32
//! words:[u64 BE; word_count] checksum:[32]` where checksum = BLAKE3 of everything before it.
//! Written to a temporary name and renamed, after the partial archive is fsynced, so the state
//! never claims bytes that are not on disk.

use std::path::Path;

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
    if bytes.len() < 46 + 32 {
        return None;
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != checksum {
        return None;
    }
    if body[0..4] != STATE_MAGIC
        || body[4..6] != STATE_VERSION.to_be_bytes()
        || body[6..38] != root.0
    {
        return None;
    }
    let len = u32::from_be_bytes(body[38..42].try_into().ok()?);
    let word_count = u32::from_be_bytes(body[42..46].try_into().ok()?) as usize;
    if len != loop_len || body.len() != 46 + word_count * 8 {
        return None;
    }
    let words = body[46..]
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Bitmap::from_words(len, words)
}

pub fn save(path: &Path, root: &RootHash, have: &Bitmap) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, encode(root, have))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_rejects_damage() {
        let root = RootHash([4; 32]);
        let mut have = Bitmap::new(130);
        have.set(0);
        have.set(129);
        let bytes = encode(&root, &have);
        assert_eq!(decode(&bytes, &root, 130), Some(have));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert_eq!(decode(&damaged, &root, 130), None, "byte {i}");
        }
        assert_eq!(decode(&bytes, &RootHash([5; 32]), 130), None);
        assert_eq!(decode(&bytes[..10], &root, 130), None);
    }
}
