//! Wire formats. Each has a typed `Repr` with `parse` (from untrusted bytes, never panics)
//! and `emit` (into a caller-owned buffer). Byte layouts are in docs/protocol.md.

pub mod control;
pub mod datagram;
pub mod fleet;

/// Why a buffer was not accepted as a packet. Every variant is a counted drop in drivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the fixed header or than a length field says.
    Truncated,
    /// Wrong magic: not one of ours.
    BadMagic,
    /// Ours, but a version this build does not speak.
    BadVersion,
    /// A kind byte we do not know.
    UnknownKind,
    /// A field holds a value outside its domain (reserved bits set, length too large, ...).
    Malformed,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let text = match self {
            ParseError::Truncated => "truncated",
            ParseError::BadMagic => "bad magic",
            ParseError::BadVersion => "unsupported version",
            ParseError::UnknownKind => "unknown packet kind",
            ParseError::Malformed => "malformed field",
        };
        f.write_str(text)
    }
}

impl std::error::Error for ParseError {}

/// Big-endian readers over a slice whose length the caller has checked.
pub(crate) fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(raw)
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(raw)
}

/// A cursor over untrusted bytes: every read is bounds-checked and fails with `Truncated`.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    pub(crate) fn take(&mut self, count: usize) -> Result<&'a [u8], ParseError> {
        let end = self
            .position
            .checked_add(count)
            .ok_or(ParseError::Truncated)?;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or(ParseError::Truncated)?;
        self.position = end;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ParseError> {
        Ok(read_u16(self.take(2)?, 0))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(read_u32(self.take(4)?, 0))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(read_u64(self.take(8)?, 0))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A string of at most `max_len` bytes, prefixed by a u8 length, valid UTF-8.
    pub(crate) fn short_string(&mut self, max_len: usize) -> Result<String, ParseError> {
        let len = usize::from(self.u8()?);
        self.string_body(len, max_len)
    }

    /// A string of at most `max_len` bytes, prefixed by a u16 length, valid UTF-8.
    pub(crate) fn long_string(&mut self, max_len: usize) -> Result<String, ParseError> {
        let len = usize::from(self.u16()?);
        self.string_body(len, max_len)
    }

    fn string_body(&mut self, len: usize, max_len: usize) -> Result<String, ParseError> {
        if len > max_len {
            return Err(ParseError::Malformed);
        }
        let raw = self.take(len)?;
        core::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| ParseError::Malformed)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub(crate) fn finish(self) -> Result<(), ParseError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(ParseError::Malformed)
        }
    }
}

/// Appends big-endian fields to a growable buffer (control messages, info records).
pub(crate) struct Writer<'a> {
    pub(crate) out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    pub(crate) fn u8(&mut self, value: u8) {
        self.out.push(value);
    }
    pub(crate) fn u16(&mut self, value: u16) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn bytes(&mut self, value: &[u8]) {
        self.out.extend_from_slice(value);
    }
    /// Callers validate the length first (`emit` of a `Repr` that came from `new`/`parse`).
    pub(crate) fn short_string(&mut self, value: &str) {
        let len = u8::try_from(value.len()).expect("short string longer than 255 bytes");
        self.u8(len);
        self.bytes(value.as_bytes());
    }
    pub(crate) fn long_string(&mut self, value: &str) {
        let len = u16::try_from(value.len()).expect("long string longer than 65535 bytes");
        self.u16(len);
        self.bytes(value.as_bytes());
    }
}
