//! `get --follow` (R13): the original's bytes, decrypted and in order, written to a sink
//! (stdout) while the download continues.
//!
//! ```text
//!  receiver bitmap ──PlayCursor──▶ verified prefix (data order) ──pread + re-hash──▶ frame stream
//!  frame stream ──cut at frame headers (checked against the info)──▶ whole frames
//!  whole frames ──bounded queue (FRAMES_QUEUED)──▶ writer thread: decrypt, decompress, hash, write
//!  end of stream ──▶ the original's size and BLAKE3 checked (as `extract` does)
//! ```
//!
//! The receive loop calls [`FollowWriter::advance`] after each batch. It never blocks: it reads
//! back at most `READ_BATCH_MAX` datagrams per call, and when the queue to the writer is full
//! (the player reads slowly) it stops and leaves the rest in the `.part`, which is the buffer.
//! Every datagram read back is hashed again against the tree before its bytes are used (the
//! bitmap of a resumed download is trusted only until the final check), so nothing that is not
//! the archive's is ever decoded or written. A datagram that fails is forgotten and received
//! again; playback waits for it.
//!
//! A player that quits (a broken pipe) stops the download: the partial archive is kept for
//! resume, as after Ctrl-C. That is what a pipeline's user expects (`yes | head` ends), and
//! nothing is lost: the same command, or one without `--follow`, continues from what is held.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver as QueueReceiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loopcast_archive::format::datagram_offset;
use loopcast_archive::frame::{FrameHeader, FRAME_HEADER_LEN};
use loopcast_archive::reader::{check_frame_header, data_payload, decode_frame};
use loopcast_archive::{ArchiveError, MasterKey};
use loopcast_proto::info::FileInfo;
use loopcast_proto::play::PlayCursor;
use loopcast_proto::receiver::Receiver;

/// Whole frames queued for the writer thread at most (4 MiB with the default 1 MiB frames; a
/// frame is at most `FRAME_RAW_SIZE_MAX` plus zstd's worst case, so the bound holds for any).
pub const FRAMES_QUEUED: usize = 4;
/// Data datagrams read back from the `.part` per call of `advance` at most (about 1.4 MB).
pub const READ_BATCH_MAX: u32 = 1024;
/// Data datagrams read back before cutting frames again at most, so that no more is read than
/// the queue can take (the stream holds at most a frame and this many payloads).
pub const READ_RUN_MAX: u32 = 64;
/// How often a blocked drain at the end looks at the cancel flag.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Looks up the file's key once its info is known: `Ok(None)` for an unencrypted file.
pub type KeyLookup = dyn FnOnce(&FileInfo) -> Result<Option<MasterKey>, String> + Send;

/// What `get --follow` needs besides the download's configuration.
pub struct FollowOptions {
    /// Where the original's bytes go (stdout for the CLI).
    pub sink: Box<dyn Write + Send>,
    pub key_for: Box<KeyLookup>,
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// `written`: the bytes of the whole frames written before (the player may have read
    /// part of the next one).
    #[error("the player stopped reading (broken pipe) after at least {written} bytes")]
    PlayerGone { written: u64 },
    #[error("cannot write the file's bytes to the output: {0}")]
    Write(std::io::Error),
    #[error("cannot read back {path}: {source}", path = .path.display())]
    ReadBack {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A frame that does not decode, a wrong key, or an original whose size or hash is wrong:
    /// nothing of that frame was written.
    #[error("{0}")]
    Archive(#[from] ArchiveError),
    #[error("cannot decrypt the file: {0}")]
    Key(String),
    #[error("interrupted while writing to the player after {written} bytes; the download is complete and published")]
    Interrupted { written: u64 },
}

/// One frame, whole, for the writer thread; or the end of the stream.
enum Work {
    Frame(FrameHeader, Vec<u8>),
    End,
}

/// What the writer thread has done, shared with the driver.
#[derive(Default)]
struct Written {
    bytes: u64,
    first_byte_at: Option<Instant>,
}

/// Reads the verified prefix back from the `.part`, cuts it into frames and hands them to a
/// writer thread. See the module doc.
pub(crate) struct FollowWriter {
    info: FileInfo,
    part_path: PathBuf,
    cursor: PlayCursor,
    /// Data datagrams read back into `stream` so far.
    read_data: u32,
    /// Frame-stream bytes read back and not yet cut into frames.
    stream: Vec<u8>,
    /// Frame-stream offset of `stream[0]`.
    stream_at: u64,
    next_frame: u64,
    /// A frame the queue had no room for, sent first next time.
    held: Option<Work>,
    end_sent: bool,
    queue: Option<SyncSender<Work>>,
    worker: Option<JoinHandle<Result<(), FollowError>>>,
    written: Arc<Mutex<Written>>,
    /// Reused buffers for one pread of consecutive datagrams and their hashes.
    run: Vec<u8>,
    run_hashes: Vec<[u8; 32]>,
}

impl FollowWriter {
    /// Looks the key up and starts the writer thread. `part_path` names the archive in errors.
    pub fn start(
        options: FollowOptions,
        info: &FileInfo,
        part_path: &Path,
    ) -> Result<FollowWriter, FollowError> {
        let key = (options.key_for)(info).map_err(FollowError::Key)?;
        if info.encrypted && key.is_none() {
            return Err(ArchiveError::KeyRequired(info.file_id.to_string()).into());
        }
        let (queue, work) = mpsc::sync_channel(FRAMES_QUEUED);
        let written = Arc::new(Mutex::new(Written::default()));
        let worker = {
            let (info, path, written) = (info.clone(), part_path.to_owned(), written.clone());
            let sink = options.sink;
            std::thread::Builder::new()
                .name("follow-writer".into())
                .spawn(move || write_frames(&info, &path, key.as_ref(), sink, work, &written))
                .map_err(FollowError::Write)?
        };
        Ok(FollowWriter {
            info: info.clone(),
            part_path: part_path.to_owned(),
            cursor: PlayCursor::new(),
            read_data: 0,
            stream: Vec::new(),
            stream_at: 0,
            next_frame: 0,
            held: None,
            end_sent: false,
            queue: Some(queue),
            worker: Some(worker),
            written,
            run: Vec::new(),
            run_hashes: Vec::new(),
        })
    }

    /// The loop serial playback waits for, for the NAK planner (`None` once all is read back).
    pub fn wanted_serial(&self, receiver: &Receiver) -> Option<u32> {
        self.cursor.wanted_serial(receiver.shape(), receiver.have())
    }

    /// Bytes of the original written to the sink so far, and when the first one was.
    pub fn written(&self) -> (u64, Option<Instant>) {
        let written = self
            .written
            .lock()
            .expect("the writer never panics holding it");
        (written.bytes, written.first_byte_at)
    }

    /// Moves playback on as far as the verified prefix and the queue allow, without blocking.
    /// Returns true once everything has been handed to the writer thread.
    pub fn advance(&mut self, receiver: &mut Receiver, part: &File) -> Result<bool, FollowError> {
        self.step(receiver, part, READ_BATCH_MAX)
    }

    /// At the end of the download (everything held and checked): hands over the rest, waiting
    /// for the player, and waits until the writer has checked the original's size and hash.
    /// Returns the bytes written and when the first one was.
    pub fn finish(
        mut self,
        receiver: &mut Receiver,
        part: &File,
        cancel: &AtomicBool,
    ) -> Result<(u64, Option<Instant>), FollowError> {
        loop {
            let read_before = self.read_data;
            if self.step(receiver, part, READ_BATCH_MAX)? {
                break;
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(FollowError::Interrupted {
                    written: self.written().0,
                });
            }
            if self.held.is_some() {
                // The player is behind: wait for room in the queue.
                std::thread::sleep(DRAIN_POLL);
            } else if self.read_data == read_before {
                // Everything is held, yet nothing more could be read back: a datagram failed
                // its re-check after the whole-file check passed (the disk changed under us).
                return Err(
                    self.corrupt("a datagram changed on disk after the whole-file check".into())
                );
            }
        }
        self.queue = None;
        match self.worker.take().map(|worker| worker.join()) {
            Some(Ok(result)) => result?,
            Some(Err(_)) => {
                return Err(FollowError::Write(std::io::Error::other(
                    "the writer thread panicked",
                )))
            }
            None => {}
        }
        Ok(self.written())
    }

    /// The writer thread has stopped early: its error.
    fn worker_error(&mut self) -> FollowError {
        self.queue = None;
        match self.worker.take().map(|worker| worker.join()) {
            Some(Ok(Err(error))) => error,
            _ => FollowError::Write(std::io::Error::other("the writer thread stopped")),
        }
    }

    /// Queues `work` unless the queue is full (then it is held for next time); false if full.
    fn offer(&mut self, work: Work) -> Result<bool, FollowError> {
        let queue = self.queue.as_ref().expect("queue open until the end");
        match queue.try_send(work) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(work)) => {
                self.held = Some(work);
                Ok(false)
            }
            Err(TrySendError::Disconnected(_)) => Err(self.worker_error()),
        }
    }

    fn step(
        &mut self,
        receiver: &mut Receiver,
        part: &File,
        read_max: u32,
    ) -> Result<bool, FollowError> {
        if let Some(work) = self.held.take() {
            let end = matches!(work, Work::End);
            if !self.offer(work)? {
                return Ok(false);
            }
            // The end, held while the player was behind, is sent: never again (the writer
            // stops at the first, and a second would find it gone).
            self.end_sent |= end;
        }
        if self.end_sent {
            return Ok(true);
        }
        let prefix = self.cursor.advance(receiver.shape(), receiver.have());
        let mut budget = read_max;
        loop {
            while let Some(frame) = self.cut_frame()? {
                if !self.offer(frame)? {
                    return Ok(false);
                }
            }
            if self.next_frame == self.info.frame_count {
                if !self.stream.is_empty() || self.stream_at != self.info.frame_stream_len {
                    return Err(self.corrupt("frame stream has trailing bytes".into()));
                }
                self.end_sent = self.offer(Work::End)?;
                return Ok(self.end_sent);
            }
            if budget == 0 || self.read_data == prefix {
                return Ok(false);
            }
            let end = prefix.min(self.read_data + budget.min(READ_RUN_MAX));
            let read = self.read_back(receiver, part, end)?;
            if read == 0 {
                // A datagram failed its re-check and was forgotten: wait for it.
                return Ok(false);
            }
            budget -= read;
        }
    }

    fn corrupt(&self, what: String) -> FollowError {
        FollowError::Archive(ArchiveError::Corrupt {
            path: self.part_path.clone(),
            what,
        })
    }

    /// Reads data datagrams `read_data .. end` back (one pread per run of consecutive
    /// serials: the data of one level-1 group), re-hashing each against the tree, and appends
    /// their payloads to the stream. Returns how many were read; stops at the first that fails
    /// its re-check (it is forgotten, so it will be received again).
    fn read_back(
        &mut self,
        receiver: &mut Receiver,
        part: &File,
        end: u32,
    ) -> Result<u32, FollowError> {
        let start = self.read_data;
        let shape = receiver.shape().clone();
        let size = usize::from(self.info.datagram_size);
        while self.read_data < end {
            let first = self.read_data;
            let group_end = if shape.depth() == 0 {
                shape.data_count()
            } else {
                (first / shape.fanout() + 1).saturating_mul(shape.fanout())
            };
            let run_end = end.min(group_end);
            self.run.resize(size * (run_end - first) as usize, 0);
            part.read_exact_at(
                &mut self.run,
                datagram_offset(&self.info, shape.serial_of(0, first)),
            )
            .map_err(|source| FollowError::ReadBack {
                path: self.part_path.clone(),
                source,
            })?;
            // Sixteen datagrams per multi-lane BLAKE3 pass, as on receive.
            let datagrams: Vec<&[u8]> = self.run.chunks_exact(size).collect();
            self.run_hashes.clear();
            self.run_hashes.resize(datagrams.len(), [0u8; 32]);
            loopcast_dataplane::hash_lanes::hash_many(&datagrams, &mut self.run_hashes);
            for (offset, (datagram, hash)) in datagrams.iter().zip(&self.run_hashes).enumerate() {
                let index = first + offset as u32;
                let serial = shape.serial_of(0, index);
                let genuine = receiver.expected_hash(0, index) == Some(*hash);
                if !genuine {
                    tracing::warn!(
                        index,
                        serial,
                        "a held datagram failed its re-check on read-back; receiving it again"
                    );
                    receiver.recheck_serial(serial, datagram);
                    self.cursor.retreat_to(index);
                    return Ok(self.read_data - start);
                }
                let payload = data_payload(&self.info, index, datagram).map_err(|e| {
                    FollowError::Archive(ArchiveError::Corrupt {
                        path: self.part_path.clone(),
                        what: e,
                    })
                })?;
                self.stream.extend_from_slice(payload);
                self.read_data += 1;
            }
        }
        Ok(self.read_data - start)
    }

    /// The next whole frame in the stream, checked against the info, if all of it is there.
    fn cut_frame(&mut self) -> Result<Option<Work>, FollowError> {
        if self.next_frame == self.info.frame_count {
            return Ok(None);
        }
        let all_read = self.read_data == self.info.data_datagram_count;
        if self.stream.len() < FRAME_HEADER_LEN {
            if all_read {
                return Err(self.corrupt(format!(
                    "frame {} is cut short: the frame stream ends inside its header",
                    self.next_frame
                )));
            }
            return Ok(None);
        }
        let header_bytes: &[u8; FRAME_HEADER_LEN] = self.stream[..FRAME_HEADER_LEN]
            .try_into()
            .expect("length checked above");
        let header = FrameHeader::parse(header_bytes)
            .map_err(|e| self.corrupt(format!("frame {}: bad header ({e:?})", self.next_frame)))?;
        check_frame_header(&self.info, &self.part_path, &header, self.next_frame)?;
        let len = FRAME_HEADER_LEN + header.stored_len as usize;
        if self.stream.len() < len {
            if all_read {
                return Err(self.corrupt(format!(
                    "frame {} is cut short: the frame stream ends inside it",
                    self.next_frame
                )));
            }
            return Ok(None);
        }
        let stored = self.stream[FRAME_HEADER_LEN..len].to_vec();
        self.stream.drain(..len);
        self.stream_at += len as u64;
        self.next_frame += 1;
        Ok(Some(Work::Frame(header, stored)))
    }
}

/// The writer thread: decodes each frame, hashes it and writes it; at the end checks the
/// original's size and hash. A frame is written only once it decoded whole (its tag checked
/// when sealed), so no byte of a frame that fails reaches the sink.
fn write_frames(
    info: &FileInfo,
    path: &Path,
    key: Option<&MasterKey>,
    mut sink: Box<dyn Write + Send>,
    work: QueueReceiver<Work>,
    written: &Mutex<Written>,
) -> Result<(), FollowError> {
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    let gone = |total: u64, error: std::io::Error| {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            FollowError::PlayerGone { written: total }
        } else {
            FollowError::Write(error)
        }
    };
    // A closed queue without End: the download stopped; nothing more to do.
    while let Ok(item) = work.recv() {
        let (header, stored) = match item {
            Work::Frame(header, stored) => (header, stored),
            Work::End => {
                if total != info.original_size
                    || *hasher.finalize().as_bytes() != info.original_hash
                {
                    return Err(ArchiveError::Corrupt {
                        path: path.to_owned(),
                        what: "the bytes written do not match the original's size and hash".into(),
                    }
                    .into());
                }
                sink.flush().map_err(|e| gone(total, e))?;
                return Ok(());
            }
        };
        let plain = decode_frame(path, key, header, stored)?;
        hasher.update(&plain);
        sink.write_all(&plain).map_err(|e| gone(total, e))?;
        sink.flush().map_err(|e| gone(total, e))?;
        total += plain.len() as u64;
        let mut shared = written
            .lock()
            .expect("never poisoned: nothing panics holding it");
        shared.bytes = total;
        shared.first_byte_at.get_or_insert_with(Instant::now);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
