//! loopcast archives (R1–R3): the media database's unit of content.
//!
//! An archive is a file laid out as ready-to-send datagrams (docs/archive.md):
//! ```text
//!  original file ──blocks──▶ frames (zstd?, AES-256-GCM?, watermark digest) ──concat──▶ frame stream
//!  frame stream ──cut──▶ data datagrams ──BLAKE3──▶ hash blocks ──▶ top hashes in the file info
//!  archive = [superblock + info | datagrams in loop (pre-order) order]
//! ```
//! - [`pack`]: original → archive, parallel, with progress.
//! - [`reader::ArchiveFile`]: open, verify, walk frames, extract.
//! - [`seal`]: per-frame key derivation and AES-GCM.
//! - [`files`]: safe outputs: no symlinks followed, exclusive temporaries removed on failure,
//!   no existing output replaced unless asked.

pub mod files;
pub mod format;
pub mod frame;
pub mod pack;
pub mod reader;
pub mod seal;

use std::path::{Path, PathBuf};

pub use files::Overwrite;
pub use pack::{check_datagram_size, pack, PackOptions, PackPhase, PackProgress, PackSummary};
pub use reader::{ArchiveFile, ExtractSummary, GroupBuffers, HashMany};
pub use seal::MasterKey;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a loopcast archive (bad magic)")]
    NotAnArchive(PathBuf),
    #[error("{0} uses archive format version {1}, which this build does not read")]
    UnsupportedVersion(PathBuf, u16),
    #[error("{path} is truncated or damaged: expected {expected} bytes, found {actual}")]
    WrongLength {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("file {0} is encrypted: a key database holding its key is needed")]
    KeyRequired(String),
    #[error("frame {frame} failed to decrypt: wrong key, or the frame was tampered with")]
    DecryptFailed { frame: u64 },
    #[error("invalid packing option: {0}")]
    InvalidOption(String),
    #[error("compression failed: {0}")]
    Compression(String),
    #[error(transparent)]
    Output(#[from] files::OutputError),
    #[error("no OS randomness: {0}")]
    Random(String),
}

impl ArchiveError {
    /// What is wrong, without the archive's path: for a line that names the file already
    /// (`loopcastd check`'s "film.lca: CORRUPT: data datagram 7 (serial 8) fails its hash").
    pub fn reason(&self) -> String {
        match self {
            ArchiveError::Io { action, source, .. } => format!("cannot {action} it: {source}"),
            ArchiveError::NotAnArchive(_) => "not a loopcast archive (bad magic)".into(),
            ArchiveError::UnsupportedVersion(_, version) => {
                format!("archive format version {version}, which this build does not read")
            }
            ArchiveError::WrongLength {
                expected, actual, ..
            } => format!("truncated or damaged: expected {expected} bytes, found {actual}"),
            ArchiveError::Corrupt { what, .. } => what.clone(),
            // The rest name no archive path.
            other => other.to_string(),
        }
    }
}

pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> ArchiveError {
    ArchiveError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
