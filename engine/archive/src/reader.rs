//! Reading archives: open and validate, verify the hash tree, walk frames, extract (R1, R2, R14).
//! Uses positioned reads only; the send path maps archives in the data plane.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loopcast_proto::info::{payload_capacity, FileInfo};
use loopcast_proto::layout::{TreeShape, HASH_LEN};
use loopcast_proto::wire::datagram::{DatagramHeader, DATAGRAM_HEADER_LEN};
use rayon::prelude::*;

use crate::files::{self, OutputError, Overwrite, TempFile};
use crate::format::{
    archive_len, datagram_offset, parse_superblock, SuperblockError, DATAGRAMS_OFFSET,
};
use crate::frame::{watermark_digest, FrameHeader, FRAME_HEADER_LEN};
use crate::seal::{open, MasterKey};
use crate::{io_error, ArchiveError};

pub struct ArchiveFile {
    path: PathBuf,
    file: File,
    info: FileInfo,
    shape: TreeShape,
}

#[derive(Clone, Debug)]
pub struct ExtractSummary {
    pub bytes: u64,
    pub frames: u64,
    pub elapsed: Duration,
}

/// Hashes many datagrams at once: `out[i] = BLAKE3(inputs[i])`.
pub type HashMany = dyn Fn(&[&[u8]], &mut [[u8; 32]]) + Sync;

/// Buffers `ArchiveFile::verify_group` reuses from group to group.
#[derive(Default)]
pub struct GroupBuffers {
    bytes: Vec<u8>,
    hashes: Vec<[u8; 32]>,
}

impl ArchiveFile {
    /// Opens an archive and checks its superblock, info and exact length.
    pub fn open(path: &Path) -> Result<ArchiveFile, ArchiveError> {
        let file = File::open(path).map_err(|e| io_error("open", path, e))?;
        ArchiveFile::from_file(file, path)
    }

    /// As `open`, for a file already open (`path` names it in errors).
    pub fn from_file(file: File, path: &Path) -> Result<ArchiveFile, ArchiveError> {
        let actual = file
            .metadata()
            .map_err(|e| io_error("stat", path, e))?
            .len();
        let mut page = vec![0u8; DATAGRAMS_OFFSET.min(actual) as usize];
        file.read_exact_at(&mut page, 0)
            .map_err(|e| io_error("read", path, e))?;
        let info = parse_superblock(&page).map_err(|e| match e {
            SuperblockError::NotAnArchive => ArchiveError::NotAnArchive(path.to_owned()),
            SuperblockError::UnsupportedVersion(v) => {
                ArchiveError::UnsupportedVersion(path.to_owned(), v)
            }
            SuperblockError::Corrupt => ArchiveError::Corrupt {
                path: path.to_owned(),
                what: "file info in the header is damaged".into(),
            },
        })?;
        let expected = archive_len(&info);
        if actual != expected {
            return Err(ArchiveError::WrongLength {
                path: path.to_owned(),
                expected,
                actual,
            });
        }
        let shape = info.shape().expect("a parsed FileInfo has a valid shape");
        Ok(ArchiveFile {
            path: path.to_owned(),
            file,
            info,
            shape,
        })
    }

    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    pub fn shape(&self) -> &TreeShape {
        &self.shape
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    fn corrupt(&self, what: String) -> ArchiveError {
        ArchiveError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }

    /// Reads `count` consecutive datagrams starting at `serial`.
    pub fn read_datagrams(&self, serial: u32, count: u32) -> Result<Vec<u8>, ArchiveError> {
        let size = usize::from(self.info.datagram_size);
        let mut buffer = vec![0u8; size * count as usize];
        self.file
            .read_exact_at(&mut buffer, datagram_offset(&self.info, serial))
            .map_err(|e| io_error("read", &self.path, e))?;
        Ok(buffer)
    }

    /// Checks every datagram against the hash tree and the tree against the info's top
    /// hashes (and so the root). Parallel over level-1 groups.
    pub fn verify(&self) -> Result<(), ArchiveError> {
        self.verify_with(&|inputs, out| {
            for (input, hash) in inputs.iter().zip(out.iter_mut()) {
                *hash = *blake3::hash(input).as_bytes();
            }
        })
    }

    /// As `verify`, hashing each level-1 group's data datagrams with `hash_many`
    /// (`out[i] = BLAKE3(inputs[i])`), e.g. a multi-lane hasher.
    pub fn verify_with(&self, hash_many: &HashMany) -> Result<(), ArchiveError> {
        let size = usize::from(self.info.datagram_size);
        let shape = &self.shape;
        let level_hashes: Vec<[u8; 32]> = if shape.depth() == 0 {
            let all = self.read_datagrams(0, shape.loop_len())?;
            all.chunks_exact(size)
                .map(|d| *blake3::hash(d).as_bytes())
                .collect()
        } else {
            (0..self.group_count())
                .into_par_iter()
                .map_init(GroupBuffers::default, |buffers, group| {
                    self.verify_group(group, hash_many, buffers)
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        self.verify_above_groups(level_hashes)
    }

    /// True if `path` names the very file this archive was opened from (same device and
    /// inode), not one put in its place since.
    pub fn is_at(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), std::fs::metadata(path)) {
            (Ok(open), Ok(now)) => open.dev() == now.dev() && open.ino() == now.ino(),
            _ => false,
        }
    }

    /// Level-1 groups of the tree: each is one hash block followed by the data datagrams it
    /// lists, consecutive serials (and bytes) in the archive. None in a tree of depth 0.
    pub fn group_count(&self) -> u32 {
        if self.shape.depth() == 0 {
            0
        } else {
            self.shape.node_count(1)
        }
    }

    /// The serials of level-1 group `group`: its hash block, then its data datagrams.
    pub fn group_serials(&self, group: u32) -> core::ops::Range<u32> {
        let first = self.shape.serial_of(1, group);
        let children = self.shape.children(1, group);
        first..first + 1 + (children.end - children.start)
    }

    /// Reads group `group` (its hash block, then its data datagrams, `datagram_size` bytes
    /// each, as [`ArchiveFile::group_serials`] lists them) into `buffers`; returns the bytes.
    pub fn read_group<'b>(
        &self,
        group: u32,
        buffers: &'b mut GroupBuffers,
    ) -> Result<&'b [u8], ArchiveError> {
        let serials = self.group_serials(group);
        let len = usize::from(self.info.datagram_size) * serials.len();
        let bytes = &mut buffers.bytes;
        bytes.resize(len, 0);
        self.file
            .read_exact_at(bytes, datagram_offset(&self.info, serials.start))
            .map_err(|e| io_error("read", &self.path, e))?;
        Ok(bytes)
    }

    /// Reads group `group` and checks each of its data datagrams against the hash its block
    /// lists; returns the block's own hash, which `verify_above_groups` checks against the
    /// rest of the tree. `buffers` are reused from call to call.
    pub fn verify_group(
        &self,
        group: u32,
        hash_many: &HashMany,
        buffers: &mut GroupBuffers,
    ) -> Result<[u8; 32], ArchiveError> {
        let size = usize::from(self.info.datagram_size);
        let children = self.shape.children(1, group);
        self.read_group(group, buffers)?;
        let GroupBuffers { bytes, hashes } = buffers;
        let (block_bytes, data) = bytes.split_at(size);
        let listed = &block_bytes[DATAGRAM_HEADER_LEN..];
        let datagrams: Vec<&[u8]> = data.chunks_exact(size).collect();
        hashes.clear();
        hashes.resize(datagrams.len(), [0u8; 32]);
        hash_many(&datagrams, hashes);
        for (j, hash) in hashes.iter().enumerate() {
            if listed[j * HASH_LEN..(j + 1) * HASH_LEN] != hash[..] {
                return Err(self.corrupt(format!(
                    "data datagram {} (serial {}) fails its hash",
                    children.start + j as u32,
                    self.shape.serial_of(0, children.start + j as u32)
                )));
            }
        }
        Ok(*blake3::hash(block_bytes).as_bytes())
    }

    /// The rest of the check once every level-1 group's block hash is known (in group order;
    /// for a tree of depth 0, every data datagram's hash): the blocks above them, read from
    /// the archive, and the top against the info's top hashes (and so the root).
    pub fn verify_above_groups(&self, level_hashes: Vec<[u8; 32]>) -> Result<(), ArchiveError> {
        let shape = &self.shape;
        let mut below = level_hashes;
        for level in 2..=shape.depth() {
            let mut hashes = Vec::with_capacity(shape.node_count(level) as usize);
            for index in 0..shape.node_count(level) {
                let block = self.read_datagrams(shape.serial_of(level, index), 1)?;
                let children = shape.children(level, index);
                let listed = &block[DATAGRAM_HEADER_LEN..];
                for (j, child) in children.clone().enumerate() {
                    if below.get(child as usize).map(|h| &h[..])
                        != Some(&listed[j * HASH_LEN..(j + 1) * HASH_LEN])
                    {
                        return Err(self.corrupt(format!(
                            "hash block ({}, {child}) fails its hash",
                            level - 1
                        )));
                    }
                }
                hashes.push(*blake3::hash(&block).as_bytes());
            }
            below = hashes;
        }
        if below != self.info.top_hashes {
            return Err(self.corrupt("top of the hash tree does not match the file info".into()));
        }
        Ok(())
    }

    /// Walks the frame stream; `visit` gets each frame's header and stored bytes in order.
    pub fn for_each_frame(
        &self,
        mut visit: impl FnMut(FrameHeader, Vec<u8>) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let mut stream = FrameStream::new(self);
        for expected_index in 0..self.info.frame_count {
            let mut header_bytes = [0u8; FRAME_HEADER_LEN];
            stream.read_exact(&mut header_bytes)?;
            let header = FrameHeader::parse(&header_bytes)
                .map_err(|e| self.corrupt(format!("frame {expected_index}: bad header ({e:?})")))?;
            self.check_frame_header(&header, expected_index)?;
            let mut stored = vec![0u8; header.stored_len as usize];
            stream.read_exact(&mut stored)?;
            visit(header, stored)?;
        }
        if stream.position != self.info.frame_stream_len {
            return Err(self.corrupt("frame stream has trailing bytes".into()));
        }
        Ok(())
    }

    fn check_frame_header(
        &self,
        header: &FrameHeader,
        expected_index: u64,
    ) -> Result<(), ArchiveError> {
        check_frame_header(&self.info, &self.path, header, expected_index)
    }

    /// Decrypts and decompresses to `output` and checks the original's size and hash. Frames
    /// are decoded in parallel waves into an exclusive temporary beside `output`, which is
    /// fsynced and renamed into place only once the hash matches; on any failure (a wrong key,
    /// a bad hash, a full disk, the rename) it is removed, so no plaintext is left behind. An
    /// existing `output` is refused unless `overwrite` allows it.
    pub fn extract(
        &self,
        key: Option<&MasterKey>,
        output: &Path,
        overwrite: Overwrite,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<ExtractSummary, ArchiveError> {
        let started = Instant::now();
        if self.info.encrypted && key.is_none() {
            return Err(ArchiveError::KeyRequired(self.info.file_id.to_string()));
        }
        files::check_output(output, overwrite)?;
        let tmp = TempFile::create_beside(output)
            .map_err(|e| io_error("create a temporary beside", output, e))?;
        let (file, path) = (tmp.file(), tmp.path());
        let bytes = self.extract_into(
            key,
            &mut |plain, at| {
                file.write_all_at(plain, at)
                    .map_err(|e| io_error("write", path, e))
            },
            progress,
        )?;
        tmp.commit(output, overwrite).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ArchiveError::Output(OutputError::Exists(output.to_owned()))
            } else {
                io_error("rename into", output, e)
            }
        })?;
        Ok(ExtractSummary {
            bytes,
            frames: self.info.frame_count,
            elapsed: started.elapsed(),
        })
    }

    /// As [`ArchiveFile::extract`], into a stream written in order (stdout, a pipe, a device):
    /// each frame's bytes go out as soon as it is decoded (and, encrypted, authenticated), so
    /// the whole original's size and hash can be checked only at the end. An error then means
    /// what was written is not the original; to never see unverified bytes, extract to a file.
    pub fn extract_to_stream(
        &self,
        key: Option<&MasterKey>,
        out: &mut dyn std::io::Write,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<ExtractSummary, ArchiveError> {
        let started = Instant::now();
        if self.info.encrypted && key.is_none() {
            return Err(ArchiveError::KeyRequired(self.info.file_id.to_string()));
        }
        let stream = Path::new("the output stream");
        let bytes = self.extract_into(
            key,
            &mut |plain, _| {
                out.write_all(plain)
                    .map_err(|e| io_error("write", stream, e))
            },
            progress,
        )?;
        out.flush().map_err(|e| io_error("flush", stream, e))?;
        Ok(ExtractSummary {
            bytes,
            frames: self.info.frame_count,
            elapsed: started.elapsed(),
        })
    }

    /// Decodes every frame in order, hands each one's bytes to `emit` with their offset in the
    /// original, and checks the original's size and hash at the end.
    fn extract_into(
        &self,
        key: Option<&MasterKey>,
        emit: &mut EmitPlain<'_>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<u64, ArchiveError> {
        let wave_len = rayon::current_num_threads() * 4;
        let mut wave: Vec<(FrameHeader, Vec<u8>)> = Vec::with_capacity(wave_len);
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        let mut flush = |wave: &mut Vec<(FrameHeader, Vec<u8>)>| -> Result<(), ArchiveError> {
            let decoded: Vec<Result<Vec<u8>, ArchiveError>> = wave
                .par_drain(..)
                .map(|(header, stored)| self.decode_frame(key, header, stored))
                .collect();
            for plain in decoded {
                let plain = plain?;
                hasher.update(&plain);
                emit(&plain, written)?;
                written += plain.len() as u64;
            }
            progress(written, self.info.original_size);
            Ok(())
        };
        self.for_each_frame(|header, stored| {
            wave.push((header, stored));
            if wave.len() == wave_len {
                flush(&mut wave)?;
            }
            Ok(())
        })?;
        flush(&mut wave)?;
        if written != self.info.original_size
            || *hasher.finalize().as_bytes() != self.info.original_hash
        {
            return Err(
                self.corrupt("extracted bytes do not match the original's size and hash".into())
            );
        }
        Ok(written)
    }

    fn decode_frame(
        &self,
        key: Option<&MasterKey>,
        header: FrameHeader,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, ArchiveError> {
        decode_frame(&self.path, key, header, stored)
    }
}

/// Where extraction puts each decoded frame: its bytes and their offset in the original.
type EmitPlain<'a> = dyn FnMut(&[u8], u64) -> Result<(), ArchiveError> + 'a;

/// Checks a frame header against the file info (docs/archive.md, "Checks on extraction"):
/// its index, file id, encryption and watermark flags and digest, and raw length. `path`
/// names the file in the error.
pub fn check_frame_header(
    info: &FileInfo,
    path: &Path,
    header: &FrameHeader,
    expected_index: u64,
) -> Result<(), ArchiveError> {
    let frame_size = u64::from(info.frame_raw_size);
    let expected_raw = if expected_index + 1 == info.frame_count {
        info.original_size - expected_index * frame_size
    } else {
        frame_size
    };
    let expected_digest = info
        .watermark
        .as_ref()
        .map(|m| watermark_digest(&m.owner, &m.notice));
    let problem = if header.index != expected_index {
        Some(format!(
            "frame {expected_index} claims index {}",
            header.index
        ))
    } else if header.file_id != info.file_id {
        Some(format!("frame {expected_index} belongs to another file"))
    } else if header.is_encrypted() != info.encrypted {
        Some(format!(
            "frame {expected_index} encryption flag disagrees with the file info"
        ))
    } else if header.is_watermarked() != expected_digest.is_some()
        || header.watermark_digest != expected_digest.unwrap_or([0; 16])
    {
        Some(format!(
            "frame {expected_index} watermark does not match the file's"
        ))
    } else if u64::from(header.raw_len) != expected_raw {
        Some(format!(
            "frame {expected_index} has raw length {}",
            header.raw_len
        ))
    } else {
        None
    };
    match problem {
        Some(what) => Err(ArchiveError::Corrupt {
            path: path.to_owned(),
            what,
        }),
        None => Ok(()),
    }
}

/// Decrypts (if sealed) and decompresses (if compressed) one frame whose header passed
/// [`check_frame_header`], checking the decoded length. A sealed frame without a key is
/// `KeyRequired`; `path` names the file in the error.
pub fn decode_frame(
    path: &Path,
    key: Option<&MasterKey>,
    header: FrameHeader,
    mut stored: Vec<u8>,
) -> Result<Vec<u8>, ArchiveError> {
    let corrupt = |what: String| ArchiveError::Corrupt {
        path: path.to_owned(),
        what,
    };
    if header.is_encrypted() {
        let key = key.ok_or_else(|| ArchiveError::KeyRequired(header.file_id.to_string()))?;
        let len = open(key, &header.key_salt, &header.to_bytes(), &mut stored).map_err(|_| {
            ArchiveError::DecryptFailed {
                frame: header.index,
            }
        })?;
        stored.truncate(len);
    }
    let plain = if header.is_compressed() {
        zstd::bulk::decompress(&stored, header.raw_len as usize)
            .map_err(|e| corrupt(format!("frame {}: zstd: {e}", header.index)))?
    } else {
        stored
    };
    if plain.len() != header.raw_len as usize {
        return Err(corrupt(format!(
            "frame {} decodes to the wrong length",
            header.index
        )));
    }
    Ok(plain)
}

/// The frame-stream bytes carried by data datagram `index` (a whole datagram as stored),
/// after checking its header says it is that datagram and carries the length the info implies.
pub fn data_payload<'a>(
    info: &FileInfo,
    index: u32,
    datagram: &'a [u8],
) -> Result<&'a [u8], String> {
    let header =
        DatagramHeader::parse(datagram).map_err(|e| format!("data datagram {index}: {e}"))?;
    if header.level != 0 || header.index != index {
        return Err(format!("data datagram {index} is out of place"));
    }
    let capacity = payload_capacity(info.datagram_size) as u64;
    let expected_len = info
        .frame_stream_len
        .saturating_sub(u64::from(index) * capacity)
        .min(capacity);
    if u64::from(header.payload_len) != expected_len {
        return Err(format!("data datagram {index} has the wrong length"));
    }
    Ok(&datagram[DATAGRAM_HEADER_LEN..DATAGRAM_HEADER_LEN + usize::from(header.payload_len)])
}

/// Sequential reader over the frame stream (the data datagrams' payloads in index order).
/// Reads one level-1 group of data datagrams per `pread`.
struct FrameStream<'a> {
    archive: &'a ArchiveFile,
    next_data: u32,
    buffered: Vec<u8>,
    buffered_at: usize,
    position: u64,
}

impl<'a> FrameStream<'a> {
    fn new(archive: &'a ArchiveFile) -> FrameStream<'a> {
        FrameStream {
            archive,
            next_data: 0,
            buffered: Vec::new(),
            buffered_at: 0,
            position: 0,
        }
    }

    fn refill(&mut self) -> Result<(), ArchiveError> {
        let archive = self.archive;
        let shape = &archive.shape;
        if self.next_data >= shape.data_count() {
            return Err(archive.corrupt("frame stream ends early".into()));
        }
        let fanout = shape.fanout();
        let run_end = if shape.depth() == 0 {
            shape.data_count()
        } else {
            ((self.next_data / fanout + 1) * fanout).min(shape.data_count())
        };
        let count = run_end - self.next_data;
        let raw = archive.read_datagrams(shape.serial_of(0, self.next_data), count)?;
        let size = usize::from(archive.info.datagram_size);
        self.buffered.clear();
        for datagram in raw.chunks_exact(size) {
            let payload = data_payload(&archive.info, self.next_data, datagram)
                .map_err(|e| archive.corrupt(e))?;
            self.buffered.extend_from_slice(payload);
            self.next_data += 1;
        }
        self.buffered_at = 0;
        Ok(())
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), ArchiveError> {
        let mut filled = 0;
        while filled < out.len() {
            if self.buffered_at == self.buffered.len() {
                self.refill()?;
            }
            let take = (out.len() - filled).min(self.buffered.len() - self.buffered_at);
            out[filled..filled + take]
                .copy_from_slice(&self.buffered[self.buffered_at..self.buffered_at + take]);
            filled += take;
            self.buffered_at += take;
            self.position += take as u64;
        }
        Ok(())
    }
}
