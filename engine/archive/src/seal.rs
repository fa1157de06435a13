//! Frame sealing (R2): payload key and nonce = HKDF-SHA256(master key, salt = frame salt),
//! AES-256-GCM over the payload with the frame header as associated data.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};

use crate::frame::GCM_TAG_LEN;

/// A file's master key. Lives in the key database, never in an archive. Wiped on drop.
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// A fresh random key from the OS.
    pub fn generate() -> Result<MasterKey, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(MasterKey(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn frame_cipher(master: &MasterKey, salt: &[u8; 16]) -> (Aes256Gcm, [u8; 12]) {
    let kdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), master.as_bytes());
    let mut okm = [0u8; 44];
    kdf.expand(b"loopcast frame v1", &mut okm)
        .expect("44 bytes is a valid HKDF-SHA256 output length");
    let cipher = Aes256Gcm::new_from_slice(&okm[..32]).expect("32-byte key");
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..44]);
    zeroize::Zeroize::zeroize(&mut okm);
    (cipher, nonce)
}

/// Encrypts `payload` in place and returns the tag.
pub fn seal_in_place(
    master: &MasterKey,
    salt: &[u8; 16],
    header: &[u8],
    payload: &mut [u8],
) -> [u8; GCM_TAG_LEN] {
    let (cipher, nonce) = frame_cipher(master, salt);
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), header, payload.into())
        .expect("frame sizes are far below AES-GCM's limits");
    let mut out = [0u8; GCM_TAG_LEN];
    out.copy_from_slice(&tag);
    out
}

/// Encrypts `payload` in place and appends the tag.
pub fn seal(master: &MasterKey, salt: &[u8; 16], header: &[u8], payload: &mut Vec<u8>) {
    let tag = seal_in_place(master, salt, header, payload);
    payload.extend_from_slice(&tag);
}

/// The frame failed authentication: wrong key, or tampered bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenError;

/// Verifies and decrypts `stored` (ciphertext + tag) in place; returns the plaintext length.
pub fn open(
    master: &MasterKey,
    salt: &[u8; 16],
    header: &[u8],
    stored: &mut [u8],
) -> Result<usize, OpenError> {
    if stored.len() < GCM_TAG_LEN {
        return Err(OpenError);
    }
    let split = stored.len() - GCM_TAG_LEN;
    let (body, tag) = stored.split_at_mut(split);
    let mut tag_bytes = [0u8; GCM_TAG_LEN];
    tag_bytes.copy_from_slice(tag);
    let (cipher, nonce) = frame_cipher(master, salt);
    cipher
        .decrypt_inout_detached(&nonce.into(), header, body.into(), &tag_bytes.into())
        .map_err(|_| OpenError)?;
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = MasterKey::from_bytes([7; 32]);
        let salt = [3; 16];
        let mut data = b"hello frames".to_vec();
        seal(&key, &salt, b"header", &mut data);
        let mut copy = data.clone();
        assert_eq!(open(&key, &salt, b"header", &mut copy), Ok(12));
        assert_eq!(&copy[..12], b"hello frames");
        let mut copy = data.clone();
        assert!(
            open(&key, &salt, b"headex", &mut copy).is_err(),
            "AAD is authenticated"
        );
        let mut copy = data.clone();
        copy[0] ^= 1;
        assert!(open(&key, &salt, b"header", &mut copy).is_err());
        let wrong = MasterKey::from_bytes([8; 32]);
        let mut copy = data;
        assert!(open(&wrong, &salt, b"header", &mut copy).is_err());
    }
}
