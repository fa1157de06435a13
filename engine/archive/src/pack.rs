//! The packer (R1–R3): original file → archive of ready-to-send datagrams.
//!
//! Pass 1 (parallel over frames, in waves): read a block, zstd it (kept only if it shrinks),
//! seal it, append the frame to a temporary frame stream. Pass 2 (parallel over level-1
//! groups): cut the stream into data datagrams, hash them, build their level-1 hash block and
//! write the group (block + data, contiguous in the loop) with one `pwrite`. Higher levels are
//! small and built last. The archive is written under an exclusive temporary name, fsynced, then
//! renamed (crate::files).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loopcast_proto::assemble::{build_hash_levels, write_data_datagram, write_hash_block};
use loopcast_proto::info::{
    hash_fanout, payload_capacity, FileInfo, Watermark, DATAGRAM_SIZE_MIN, DATAGRAM_SIZE_MTU_1500,
    DATAGRAM_SIZE_MTU_9000, DATAGRAM_SIZE_PACK_MAX, NAME_LEN_MAX, NOTICE_LEN_MAX, OWNER_LEN_MAX,
};
use loopcast_proto::layout::TreeShape;
use loopcast_proto::wire::datagram::FileId;
use rayon::prelude::*;

use crate::files::{self, with_suffix, OutputError, Overwrite, TempFile};
use crate::format::{datagram_offset, superblock, DATAGRAMS_OFFSET};
use crate::frame::GCM_TAG_LEN;
use crate::frame::{
    watermark_digest, FrameHeader, FRAME_FLAG_COMPRESSED, FRAME_FLAG_ENCRYPTED,
    FRAME_FLAG_WATERMARKED, FRAME_HEADER_LEN, FRAME_RAW_SIZE_MAX,
};
use crate::seal::{seal_in_place, MasterKey};
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

/// Whether `pack` lays datagrams out at `size` bytes; the error gives the range and why.
pub fn check_datagram_size(size: u64) -> Result<(), String> {
    if (u64::from(DATAGRAM_SIZE_MIN)..=u64::from(DATAGRAM_SIZE_PACK_MAX)).contains(&size) {
        return Ok(());
    }
    // The MTU is the reason for the upper bound only (a refused 255 quoted it).
    if size < u64::from(DATAGRAM_SIZE_MIN) {
        return Err(format!(
            "datagram size {size} is outside {DATAGRAM_SIZE_MIN}..={DATAGRAM_SIZE_PACK_MAX} bytes: \
             {DATAGRAM_SIZE_MIN} is the least the archive format takes (the default is \
             {DATAGRAM_SIZE_MTU_1500}, for a 1500-byte MTU)"
        ));
    }
    Err(format!(
        "datagram size {size} is outside {DATAGRAM_SIZE_MIN}..={DATAGRAM_SIZE_PACK_MAX} bytes: a \
         datagram is a whole UDP payload, and {DATAGRAM_SIZE_PACK_MAX} is the most a 9000-byte \
         MTU carries over IPv6 (9000 - 40 IPv6 - 8 UDP header bytes; --jumbo uses \
         {DATAGRAM_SIZE_MTU_9000})"
    ))
}

impl PackOptions {
    fn check(&self) -> Result<(), ArchiveError> {
        let bad = |what: String| Err(ArchiveError::InvalidOption(what));
        if self.name.is_empty() || self.name.len() > NAME_LEN_MAX {
            return bad(format!("name must be 1..={NAME_LEN_MAX} bytes"));
        }
        check_datagram_size(u64::from(self.datagram_size)).map_err(ArchiveError::InvalidOption)?;
        if self.frame_raw_size < 4096 || self.frame_raw_size > FRAME_RAW_SIZE_MAX {
            return bad(format!(
                "frame size must be 4096..={FRAME_RAW_SIZE_MAX} bytes"
            ));
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

/// Bytes of frame stream kept in memory before spilling to a temporary file.
const SPOOL_MEMORY_BYTES_MAX: usize = 2 << 30;

/// The frame stream between the passes: in memory while it fits the budget (no disk traffic
/// for the common case), else in a temporary file beside the output.
struct FrameSpool {
    /// The spill file is an exclusive temporary named after this path (removed with the spool).
    beside: PathBuf,
    memory: Vec<u8>,
    memory_max: usize,
    file: Option<(TempFile, std::io::BufWriter<File>)>,
}

impl FrameSpool {
    fn new(beside: PathBuf, memory_max: usize) -> FrameSpool {
        FrameSpool {
            beside,
            memory: Vec::new(),
            memory_max,
            file: None,
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        if self.file.is_none() && self.memory.len() + bytes.len() <= self.memory_max {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        }
        if self.file.is_none() {
            let file = TempFile::create_beside(&self.beside)
                .map_err(|e| io_error("create a temporary beside", &self.beside, e))?;
            let writer = file
                .file()
                .try_clone()
                .map_err(|e| io_error("open", file.path(), e))?;
            let mut writer = std::io::BufWriter::with_capacity(4 << 20, writer);
            std::io::Write::write_all(&mut writer, &self.memory)
                .map_err(|e| io_error("write", file.path(), e))?;
            self.memory = Vec::new();
            self.file = Some((file, writer));
        }
        let (file, writer) = self.file.as_mut().expect("created above");
        std::io::Write::write_all(writer, bytes).map_err(|e| io_error("write", file.path(), e))
    }

    fn finish(&mut self) -> Result<(), ArchiveError> {
        if let Some((file, writer)) = &mut self.file {
            std::io::Write::flush(writer).map_err(|e| io_error("write", file.path(), e))?;
        }
        Ok(())
    }

    fn read(&self, start: u64, end: u64) -> Result<Vec<u8>, ArchiveError> {
        match &self.file {
            None => Ok(self.memory[start as usize..end as usize].to_vec()),
            Some((file, _)) => {
                let mut chunk = vec![0u8; (end - start) as usize];
                file.file()
                    .read_exact_at(&mut chunk, start)
                    .map_err(|e| io_error("read", file.path(), e))?;
                Ok(chunk)
            }
        }
    }
}

/// A level-1 hash block and its data datagrams, contiguous in the loop, ready to write.
struct BuiltGroup {
    first_serial: u32,
    buffer: Vec<u8>,
    block_hash: [u8; 32],
}

struct PackedFrame {
    bytes: Vec<u8>,
    compressed: bool,
}

/// Packs `input` into the archive `output`, written under an exclusive temporary name beside it
/// and renamed into place at the end (removed on any failure). An existing `output` is refused,
/// before any work and again at the rename, unless `overwrite` allows it.
pub fn pack(
    input: &Path,
    output: &Path,
    options: &PackOptions,
    overwrite: Overwrite,
    progress: &(dyn Fn(PackProgress) + Sync),
) -> Result<PackSummary, ArchiveError> {
    let started = Instant::now();
    options.check()?;
    files::check_output(output, overwrite)?;
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

    // Pass 1: frames, spooled in memory up to a budget, then in a temporary file.
    let mut spool = FrameSpool::new(with_suffix(output, ".frames"), SPOOL_MEMORY_BYTES_MAX);
    // The original's hash, over all cores straight from the page cache.
    let mut original_hasher = blake3::Hasher::new();
    if original_size > 0 {
        original_hasher
            .update_mmap_rayon(input)
            .map_err(|e| io_error("read input", input, e))?;
    }
    let wave_frames = (rayon::current_num_threads() as u64 * 4).max(4);
    let mut frames_compressed = 0u64;
    let mut stream_len = 0u64;
    let mut next_frame = 0u64;
    while next_frame < frame_count {
        let wave: Vec<u64> = (next_frame..frame_count.min(next_frame + wave_frames)).collect();
        next_frame += wave.len() as u64;
        let results: Vec<Result<PackedFrame, ArchiveError>> = wave
            .par_iter()
            .map_init(
                || FrameWorker::new(options.compression_level),
                |worker, &index| {
                    let worker = worker
                        .as_mut()
                        .map_err(|e| ArchiveError::Compression(e.to_string()))?;
                    let start = index * frame_raw_size;
                    let len = frame_raw_size.min(original_size - start.min(original_size)) as usize;
                    worker.raw.resize(len, 0);
                    source
                        .read_exact_at(&mut worker.raw[..len], start)
                        .map_err(|e| io_error("read input", input, e))?;
                    build_frame(worker, len, index, file_id, options, digest)
                },
            )
            .collect();
        for result in results {
            let frame = result?;
            frames_compressed += u64::from(frame.compressed);
            spool.append(&frame.bytes)?;
            stream_len += frame.bytes.len() as u64;
        }
        progress(PackProgress {
            phase: PackPhase::Frames,
            done: (next_frame * frame_raw_size).min(original_size),
            total: original_size,
        });
    }
    spool.finish()?;
    let frames_done = started.elapsed();

    // Pass 2: datagrams and the hash tree.
    let capacity = payload_capacity(options.datagram_size) as u64;
    let data_count = u32::try_from(stream_len.div_ceil(capacity))
        .map_err(|_| ArchiveError::InvalidOption("file too large for this datagram size".into()))?;
    let shape = TreeShape::new(data_count, hash_fanout(options.datagram_size))
        .map_err(|e| ArchiveError::InvalidOption(format!("cannot lay out archive: {e:?}")))?;
    let archive_guard = TempFile::create_beside(output)
        .map_err(|e| io_error("create a temporary beside", output, e))?;
    let archive_tmp = archive_guard.path().to_owned();
    let archive = archive_guard.file();
    let size = usize::from(options.datagram_size);
    let archive_bytes = DATAGRAMS_OFFSET + u64::from(shape.loop_len()) * size as u64;
    archive
        .set_len(archive_bytes)
        .map_err(|e| io_error("size", &archive_tmp, e))?;

    let write_group = |first_serial: u32, buffer: &[u8]| -> Result<(), ArchiveError> {
        let offset = DATAGRAMS_OFFSET + u64::from(first_serial) * size as u64;
        archive
            .write_all_at(buffer, offset)
            .map_err(|e| io_error("write", &archive_tmp, e))
    };
    let read_chunks = |first_data: u32, count: u32| -> Result<Vec<u8>, ArchiveError> {
        let start = u64::from(first_data) * capacity;
        let end = (start + u64::from(count) * capacity).min(stream_len);
        spool.read(start, end)
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
            write_data_datagram(
                &mut buffer,
                &shape,
                file_id,
                index,
                &chunks[chunk_of(&chunks, index as usize)],
            );
            hashes.push(*blake3::hash(&buffer).as_bytes());
            write_group(shape.serial_of(0, index), &buffer)?;
        }
        (0u8, hashes)
    } else {
        // Groups are built in parallel waves and written in order by this thread: parallel
        // buffered writes to one file only contend on its inode lock.
        let group_count = shape.node_count(1);
        let wave_groups = (rayon::current_num_threads() as u32 * 64).max(64);
        let mut hashes = Vec::with_capacity(group_count as usize);
        let mut wave_start = 0u32;
        while wave_start < group_count {
            let wave_end = (wave_start + wave_groups).min(group_count);
            let built: Vec<Result<BuiltGroup, ArchiveError>> = (wave_start..wave_end)
                .into_par_iter()
                .map(|block| {
                    let children = shape.children(1, block);
                    let count = children.end - children.start;
                    let chunks = read_chunks(children.start, count)?;
                    let mut buffer = vec![0u8; size * (1 + count as usize)];
                    let mut child_hashes = Vec::with_capacity(count as usize);
                    for (j, slot) in buffer[size..].chunks_exact_mut(size).enumerate() {
                        let index = children.start + j as u32;
                        write_data_datagram(
                            slot,
                            &shape,
                            file_id,
                            index,
                            &chunks[chunk_of(&chunks, j)],
                        );
                        child_hashes.push(*blake3::hash(slot).as_bytes());
                    }
                    write_hash_block(
                        &mut buffer[..size],
                        &shape,
                        file_id,
                        1,
                        block,
                        &child_hashes,
                    );
                    let block_hash = *blake3::hash(&buffer[..size]).as_bytes();
                    debug_assert_eq!(
                        shape.serial_of(0, children.start),
                        shape.serial_of(1, block) + 1
                    );
                    Ok(BuiltGroup {
                        first_serial: shape.serial_of(1, block),
                        buffer,
                        block_hash,
                    })
                })
                .collect();
            for group in built {
                let BuiltGroup {
                    first_serial,
                    buffer,
                    block_hash,
                } = group?;
                write_group(first_serial, &buffer)?;
                hashes.push(block_hash);
            }
            progress(PackProgress {
                phase: PackPhase::Datagrams,
                done: (u64::from(shape.children(1, wave_end - 1).end) * capacity).min(stream_len),
                total: stream_len,
            });
            wave_start = wave_end;
        }
        (1u8, hashes)
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
    let datagrams_done = started.elapsed();
    tracing::debug!(
        frames_s = frames_done.as_secs_f64(),
        datagrams_s = (datagrams_done - frames_done).as_secs_f64(),
        "pack phases"
    );
    // Drop the spill file before the rename, so nothing but the archive is left.
    drop(spool);
    archive_guard
        .commit(output, overwrite)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => OutputError::Exists(output.to_owned()).into(),
            _ => io_error("fsync and rename into", output, e),
        })?;
    debug_assert_eq!(datagram_offset(&info, 0), DATAGRAMS_OFFSET);
    Ok(PackSummary {
        info,
        archive_bytes,
        frames_compressed,
        frames_raw: frame_count - frames_compressed,
        elapsed: started.elapsed(),
    })
}

/// Per-thread packing state, reused across frames: no large allocation per frame but the
/// frame's own bytes.
struct FrameWorker {
    compressor: Option<zstd::bulk::Compressor<'static>>,
    raw: Vec<u8>,
    compressed: Vec<u8>,
}

impl FrameWorker {
    fn new(level: i32) -> Result<FrameWorker, ArchiveError> {
        let compressor = if level > 0 {
            Some(
                zstd::bulk::Compressor::new(level)
                    .map_err(|e| ArchiveError::Compression(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(FrameWorker {
            compressor,
            raw: Vec::new(),
            compressed: Vec::new(),
        })
    }
}

fn build_frame(
    worker: &mut FrameWorker,
    raw_len: usize,
    index: u64,
    file_id: FileId,
    options: &PackOptions,
    digest: Option<[u8; 16]>,
) -> Result<PackedFrame, ArchiveError> {
    let raw = &worker.raw[..raw_len];
    let mut flags = 0u8;
    let mut use_compressed = false;
    if let (Some(compressor), false) = (&mut worker.compressor, raw.is_empty()) {
        // zstd writes only into the buffer's existing capacity (it never grows it), so output
        // that would not fit in the raw size fails fast, and that frame stays raw.
        worker.compressed.clear();
        worker.compressed.reserve(raw.len());
        if let Ok(written) = compressor.compress_to_buffer(raw, &mut worker.compressed) {
            if written < raw.len() {
                flags |= FRAME_FLAG_COMPRESSED;
                use_compressed = true;
            }
        }
    }
    let payload: &[u8] = if use_compressed {
        &worker.compressed
    } else {
        raw
    };
    let mut key_salt = [0u8; 16];
    if options.master_key.is_some() {
        flags |= FRAME_FLAG_ENCRYPTED;
        getrandom::fill(&mut key_salt).map_err(|e| ArchiveError::Random(e.to_string()))?;
    }
    if digest.is_some() {
        flags |= FRAME_FLAG_WATERMARKED;
    }
    let tag_len = if options.master_key.is_some() {
        GCM_TAG_LEN
    } else {
        0
    };
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
    let mut bytes = Vec::with_capacity(FRAME_HEADER_LEN + payload.len() + tag_len);
    bytes.extend_from_slice(&header_bytes);
    bytes.extend_from_slice(payload);
    if let Some(key) = &options.master_key {
        let tag = seal_in_place(
            key,
            &key_salt,
            &header_bytes,
            &mut bytes[FRAME_HEADER_LEN..],
        );
        bytes.extend_from_slice(&tag);
    }
    Ok(PackedFrame {
        bytes,
        compressed: use_compressed,
    })
}

#[cfg(test)]
mod spool_tests {
    use super::*;

    #[test]
    fn spool_spills_to_a_file_past_its_budget_and_reads_back_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("loopcast-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut spool = FrameSpool::new(dir.join("frames"), 100);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        for chunk in data.chunks(37) {
            spool.append(chunk).unwrap();
        }
        spool.finish().unwrap();
        let path = spool
            .file
            .as_ref()
            .expect("spilled to disk")
            .0
            .path()
            .to_owned();
        assert!(path.exists(), "spilled to disk");
        assert_eq!(spool.read(0, 1000).unwrap(), data);
        assert_eq!(spool.read(95, 180).unwrap(), &data[95..180]);
        let mut small = FrameSpool::new(dir.join("unused.tmp"), 1 << 20);
        small.append(&data).unwrap();
        assert!(small.file.is_none(), "stays in memory under budget");
        assert_eq!(small.read(10, 20).unwrap(), &data[10..20]);
        drop(spool);
        assert!(!path.exists(), "the spill file goes with the spool");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
