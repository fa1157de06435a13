//! The packer (R1–R3): original file → archive of ready-to-send datagrams.
//!
//! Pass 1 (parallel over frames, in waves): read a block, zstd it (kept only if it shrinks),
//! seal it, append the frame to a temporary frame stream. Pass 2 (parallel over level-1
//! groups): cut the stream into data datagrams, hash them, build their level-1 hash block and
//! write the group (block + data, contiguous in the loop) with one `pwrite`. Higher levels are
//! small and built last. The archive is written under a temporary name, fsynced, then renamed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use loopcast_proto::assemble::{build_hash_levels, write_data_datagram, write_hash_block};
use loopcast_proto::info::{
    hash_fanout, payload_capacity, FileInfo, Watermark, DATAGRAM_SIZE_MAX, DATAGRAM_SIZE_MIN,
    NAME_LEN_MAX, NOTICE_LEN_MAX, OWNER_LEN_MAX,
};
use loopcast_proto::layout::TreeShape;
use loopcast_proto::wire::datagram::FileId;
use rayon::prelude::*;

use crate::format::{datagram_offset, superblock, DATAGRAMS_OFFSET};
use crate::frame::{
    watermark_digest, FrameHeader, FRAME_FLAG_COMPRESSED, FRAME_FLAG_ENCRYPTED,
    FRAME_FLAG_WATERMARKED, FRAME_HEADER_LEN, FRAME_RAW_SIZE_MAX,
};
use crate::seal::{seal, MasterKey};
use crate::{io_error, ArchiveError};

pub const FRAME_RAW_SIZE_DEFAULT: u32 = 1 << 20;
pub const COMPRESSION_LEVEL_DEFAULT: i32 = 3;

pub struct PackOptions {
    /// Name clients ask for; defaults to the input's file name.
    pub name: String,
    pub frame_raw_size: u32,
    pub datagram_size: u16,
    /// zstd level; 0 stores every frame raw.
    pub compression_level: i32,
    /// `None`: not encrypted (`--no-encrypt`).
    pub master_key: Option<MasterKey>,
    pub watermark: Option<Watermark>,
}

#[derive(Clone, Copy, Debug)]
pub enum PackPhase {
    Frames,
    Datagrams,
}

/// Progress callback input: `done` of `total` bytes in `phase`.
#[derive(Clone, Copy, Debug)]
pub struct PackProgress {
    pub phase: PackPhase,
    pub done: u64,
    pub total: u64,
}

#[derive(Clone, Debug)]
pub struct PackSummary {
    pub info: FileInfo,
    pub archive_bytes: u64,
    pub frames_compressed: u64,
    pub frames_raw: u64,
    pub elapsed: Duration,
}

/// Deletes a temporary file unless disarmed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl PackOptions {
    fn check(&self) -> Result<(), ArchiveError> {
        let bad = |what: String| Err(ArchiveError::InvalidOption(what));
        if self.name.is_empty() || self.name.len() > NAME_LEN_MAX {
            return bad(format!("name must be 1..={NAME_LEN_MAX} bytes"));
        }
        if !(DATAGRAM_SIZE_MIN..=DATAGRAM_SIZE_MAX).contains(&self.datagram_size) {
            return bad(format!(
                "datagram size must be {DATAGRAM_SIZE_MIN}..={DATAGRAM_SIZE_MAX} bytes"
            ));
        }
        if self.frame_raw_size < 4096 || self.frame_raw_size > FRAME_RAW_SIZE_MAX {
            return bad(format!("frame size must be 4096..={FRAME_RAW_SIZE_MAX} bytes"));
        }
        if !(0..=22).contains(&self.compression_level) {
            return bad("compression level must be 0..=22".into());
        }
        if let Some(mark) = &self.watermark {
            if mark.owner.len() > OWNER_LEN_MAX || mark.notice.len() > NOTICE_LEN_MAX {
                return bad(format!(
                    "watermark owner <= {OWNER_LEN_MAX} bytes and notice <= {NOTICE_LEN_MAX} bytes"
                ));
            }
        }
        Ok(())
    }
}

struct PackedFrame {
    bytes: Vec<u8>,
    compressed: bool,
}

pub fn pack(
    input: &Path,
    output: &Path,
    options: &PackOptions,
    progress: &(dyn Fn(PackProgress) + Sync),
) -> Result<PackSummary, ArchiveError> {
    let started = Instant::now();
    options.check()?;
    let source = File::open(input).map_err(|e| io_error("open input", input, e))?;
    let original_size = source
        .metadata()
        .map_err(|e| io_error("stat input", input, e))?
        .len();
    let mut file_id_bytes = [0u8; 8];
    getrandom::fill(&mut file_id_bytes).map_err(|e| ArchiveError::Random(e.to_string()))?;
    let file_id = FileId(u64::from_be_bytes(file_id_bytes));
    let frame_raw_size = u64::from(options.frame_raw_size);
    let frame_count = original_size.div_ceil(frame_raw_size).max(1);
    let digest = options
        .watermark
        .as_ref()
        .map(|mark| watermark_digest(&mark.owner, &mark.notice));

    // Pass 1: frames.
    let stream_path = with_suffix(output, ".frames.tmp");
    let stream_guard = TempFile(Some(stream_path.clone()));
    let stream_file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&stream_path)
        .map_err(|e| io_error("create", &stream_path, e))?;
    let mut stream_writer = std::io::BufWriter::with_capacity(4 << 20, &stream_file);
    let mut original_hasher = blake3::Hasher::new();
    let wave_frames = (rayon::current_num_threads() as u64 * 4).max(4);
    let mut frames_compressed = 0u64;
    let mut stream_len = 0u64;
    let mut next_frame = 0u64;
    while next_frame < frame_count {
        let wave: Vec<u64> = (next_frame..frame_count.min(next_frame + wave_frames)).collect();
        next_frame += wave.len() as u64;
        let results: Vec<Result<(Vec<u8>, PackedFrame), ArchiveError>> = wave
            .par_iter()
            .map(|&index| {
                let start = index * frame_raw_size;
                let len = frame_raw_size.min(original_size - start.min(original_size));
                let mut raw = vec![0u8; len as usize];
                source
                    .read_exact_at(&mut raw, start)
                    .map_err(|e| io_error("read input", input, e))?;
                let frame = build_frame(&raw, index, file_id, options, digest)?;
                Ok((raw, frame))
            })
            .collect();
        for result in results {
            let (raw, frame) = result?;
            original_hasher.update(&raw);
            frames_compressed += u64::from(frame.compressed);
            std::io::Write::write_all(&mut stream_writer, &frame.bytes)
                .map_err(|e| io_error("write", &stream_path, e))?;
            stream_len += frame.bytes.len() as u64;
        }
        progress(PackProgress {
            phase: PackPhase::Frames,
            done: (next_frame * frame_raw_size).min(original_size),
            total: original_size,
        });
    }
    std::io::Write::flush(&mut stream_writer).map_err(|e| io_error("write", &stream_path, e))?;
    drop(stream_writer);

    // Pass 2: datagrams and the hash tree.
    let capacity = payload_capacity(options.datagram_size) as u64;
    let data_count = u32::try_from(stream_len.div_ceil(capacity))
        .map_err(|_| ArchiveError::InvalidOption("file too large for this datagram size".into()))?;
    let shape = TreeShape::new(data_count, hash_fanout(options.datagram_size))
        .map_err(|e| ArchiveError::InvalidOption(format!("cannot lay out archive: {e:?}")))?;
    let archive_tmp = with_suffix(output, ".tmp");
    let archive_guard = TempFile(Some(archive_tmp.clone()));
    let archive = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&archive_tmp)
        .map_err(|e| io_error("create", &archive_tmp, e))?;
    let size = usize::from(options.datagram_size);
    let archive_bytes = DATAGRAMS_OFFSET + u64::from(shape.loop_len()) * size as u64;
    archive
        .set_len(archive_bytes)
        .map_err(|e| io_error("size", &archive_tmp, e))?;

    let datagrams_done = AtomicU64::new(0);
    let write_group = |first_serial: u32, buffer: &[u8]| -> Result<(), ArchiveError> {
        let offset = DATAGRAMS_OFFSET + u64::from(first_serial) * size as u64;
        archive
            .write_all_at(buffer, offset)
            .map_err(|e| io_error("write", &archive_tmp, e))
    };
    let read_chunks = |first_data: u32, count: u32| -> Result<Vec<u8>, ArchiveError> {
        let start = u64::from(first_data) * capacity;
        let end = (start + u64::from(count) * capacity).min(stream_len);
        let mut chunk = vec![0u8; (end - start) as usize];
        stream_file
            .read_exact_at(&mut chunk, start)
            .map_err(|e| io_error("read", &stream_path, e))?;
        Ok(chunk)
    };
    let chunk_of = |chunks: &[u8], j: usize| -> std::ops::Range<usize> {
        let start = (j * capacity as usize).min(chunks.len());
        start..(start + capacity as usize).min(chunks.len())
    };

    let (start_level, start_hashes) = if shape.depth() == 0 {
        // Few enough data datagrams that their hashes are the top hashes.
        let chunks = read_chunks(0, data_count)?;
        let mut hashes = Vec::new();
        let mut buffer = vec![0u8; size];
        for index in 0..data_count {
            write_data_datagram(&mut buffer, &shape, file_id, index, &chunks[chunk_of(&chunks, index as usize)]);
            hashes.push(*blake3::hash(&buffer).as_bytes());
            write_group(shape.serial_of(0, index), &buffer)?;
        }
        (0u8, hashes)
    } else {
        let hashes: Result<Vec<[u8; 32]>, ArchiveError> = (0..shape.node_count(1))
            .into_par_iter()
            .map(|block| {
                let children = shape.children(1, block);
                let count = children.end - children.start;
                let chunks = read_chunks(children.start, count)?;
                let mut buffer = vec![0u8; size * (1 + count as usize)];
                let mut child_hashes = Vec::with_capacity(count as usize);
                for (j, slot) in buffer[size..].chunks_exact_mut(size).enumerate() {
                    let index = children.start + j as u32;
                    write_data_datagram(slot, &shape, file_id, index, &chunks[chunk_of(&chunks, j)]);
                    child_hashes.push(*blake3::hash(slot).as_bytes());
                }
                write_hash_block(&mut buffer[..size], &shape, file_id, 1, block, &child_hashes);
                let block_hash = *blake3::hash(&buffer[..size]).as_bytes();
                debug_assert_eq!(shape.serial_of(0, children.start), shape.serial_of(1, block) + 1);
                write_group(shape.serial_of(1, block), &buffer)?;
                let done = datagrams_done.fetch_add(u64::from(count), Ordering::Relaxed);
                if block % 64 == 0 {
                    progress(PackProgress {
                        phase: PackPhase::Datagrams,
                        done: (done + u64::from(count)) * capacity,
                        total: stream_len,
                    });
                }
                Ok(block_hash)
            })
            .collect();
        (1u8, hashes?)
    };
    let mut write_error = None;
    let top_hashes = build_hash_levels(
        &shape,
        file_id,
        options.datagram_size,
        start_level,
        start_hashes,
        |serial, bytes| {
            if write_error.is_none() {
                write_error = write_group(serial, bytes).err();
            }
        },
    );
    if let Some(error) = write_error {
        return Err(error);
    }
    progress(PackProgress {
        phase: PackPhase::Datagrams,
        done: stream_len,
        total: stream_len,
    });

    let info = FileInfo {
        file_id,
        encrypted: options.master_key.is_some(),
        watermark: options.watermark.clone(),
        original_size,
        original_hash: *original_hasher.finalize().as_bytes(),
        frame_raw_size: options.frame_raw_size,
        frame_count,
        frame_stream_len: stream_len,
        datagram_size: options.datagram_size,
        data_datagram_count: data_count,
        loop_len: shape.loop_len(),
        name: options.name.clone(),
        top_hashes,
    };
    archive
        .write_all_at(&superblock(&info), 0)
        .map_err(|e| io_error("write", &archive_tmp, e))?;
    archive
        .sync_all()
        .map_err(|e| io_error("fsync", &archive_tmp, e))?;
    std::fs::rename(&archive_tmp, output).map_err(|e| io_error("rename into", output, e))?;
    std::mem::forget(archive_guard);
    drop(stream_guard);
    debug_assert_eq!(datagram_offset(&info, 0), DATAGRAMS_OFFSET);
    Ok(PackSummary {
        info,
        archive_bytes,
        frames_compressed,
        frames_raw: frame_count - frames_compressed,
        elapsed: started.elapsed(),
    })
}

fn build_frame(
    raw: &[u8],
    index: u64,
    file_id: FileId,
    options: &PackOptions,
    digest: Option<[u8; 16]>,
) -> Result<PackedFrame, ArchiveError> {
    let mut flags = 0u8;
    let mut payload = None;
    if options.compression_level > 0 && !raw.is_empty() {
        let compressed = zstd::bulk::compress(raw, options.compression_level)
            .map_err(|e| ArchiveError::Compression(e.to_string()))?;
        if compressed.len() < raw.len() {
            flags |= FRAME_FLAG_COMPRESSED;
            payload = Some(compressed);
        }
    }
    let mut payload = payload.unwrap_or_else(|| raw.to_vec());
    let mut key_salt = [0u8; 16];
    if options.master_key.is_some() {
        flags |= FRAME_FLAG_ENCRYPTED;
        getrandom::fill(&mut key_salt).map_err(|e| ArchiveError::Random(e.to_string()))?;
    }
    if digest.is_some() {
        flags |= FRAME_FLAG_WATERMARKED;
    }
    let tag_len = if options.master_key.is_some() { 16 } else { 0 };
    let header = FrameHeader {
        flags,
        index,
        raw_len: u32::try_from(raw.len()).expect("frames are at most FRAME_RAW_SIZE_MAX"),
        stored_len: u32::try_from(payload.len() + tag_len).expect("bounded by frame size"),
        key_salt,
        watermark_digest: digest.unwrap_or([0; 16]),
        file_id,
    };
    let header_bytes = header.to_bytes();
    if let Some(key) = &options.master_key {
        seal(key, &key_salt, &header_bytes, &mut payload);
    }
    let mut bytes = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    bytes.extend_from_slice(&header_bytes);
    bytes.extend_from_slice(&payload);
    Ok(PackedFrame {
        bytes,
        compressed: flags & FRAME_FLAG_COMPRESSED != 0,
    })
}
