//! FollowWriter on real archives (packed by the archive crate) fed datagram by datagram
//! through a real Receiver, with sinks that collect, stall or close.

use super::*;
use loopcast_archive::format::superblock;
use loopcast_archive::{pack, Overwrite, PackOptions};
use loopcast_proto::assemble::{build_hash_levels, write_data_datagram};
use loopcast_proto::info::{payload_capacity, Watermark};
use loopcast_proto::layout::TreeShape;
use loopcast_proto::receiver::Outcome;
use std::sync::atomic::AtomicUsize;

struct TestDir(PathBuf);

impl TestDir {
    fn new(tag: &str) -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "loopcast-follow-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const KEY: [u8; 32] = [0x5a; 32];

/// Compressible text and pseudo-random bytes in turn, so both frame kinds occur.
fn sample_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x1234_5678_9abc_def1u64;
    (0..len)
        .map(|i| {
            if (i / 50_000) % 2 == 0 {
                b"loopcast follow "[i % 16]
            } else {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            }
        })
        .collect()
}

/// An archive of `original` on disk (encrypted, watermarked, 16 KiB frames): its info and
/// every datagram by serial.
fn packed(dir: &TestDir, original: &[u8]) -> (FileInfo, Vec<Vec<u8>>) {
    let input = dir.path("original");
    std::fs::write(&input, original).unwrap();
    let archive = dir.path("archive.lca");
    let options = PackOptions {
        name: "film.bin".into(),
        frame_raw_size: 16 << 10,
        datagram_size: 1440,
        compression_level: 3,
        master_key: Some(MasterKey::from_bytes(KEY)),
        watermark: Some(Watermark {
            owner: "studio".into(),
            notice: "(c) test".into(),
        }),
    };
    let info = pack(&input, &archive, &options, Overwrite::Replace, &|_| {})
        .unwrap()
        .info;
    let bytes = std::fs::read(&archive).unwrap();
    let size = usize::from(info.datagram_size);
    let datagrams = (0..info.loop_len)
        .map(|serial| {
            let at = datagram_offset(&info, serial) as usize;
            bytes[at..at + size].to_vec()
        })
        .collect();
    (info, datagrams)
}

/// The frame stream of an archive (its data payloads in index order).
fn frame_stream(info: &FileInfo, datagrams: &[Vec<u8>]) -> Vec<u8> {
    let shape = info.shape().unwrap();
    let mut stream = Vec::new();
    for index in 0..shape.data_count() {
        let datagram = &datagrams[shape.serial_of(0, index) as usize];
        stream.extend_from_slice(data_payload(info, index, datagram).unwrap());
    }
    stream
}

/// A hostile archive: `stream` (a changed frame stream) laid out under a hash tree and info
/// that vouch for it, as a malicious packer or server would make. Everything else as `info`.
fn rebuilt(info: &FileInfo, stream: &[u8]) -> (FileInfo, Vec<Vec<u8>>) {
    let size = info.datagram_size;
    let capacity = payload_capacity(size);
    let data = u32::try_from(stream.len().div_ceil(capacity)).unwrap();
    let shape = TreeShape::new(data, info.fanout()).unwrap();
    let mut datagrams = vec![vec![0u8; usize::from(size)]; shape.loop_len() as usize];
    let mut hashes = Vec::new();
    for index in 0..data {
        let start = index as usize * capacity;
        let end = (start + capacity).min(stream.len());
        let serial = shape.serial_of(0, index) as usize;
        write_data_datagram(
            &mut datagrams[serial],
            &shape,
            info.file_id,
            index,
            &stream[start..end],
        );
        hashes.push(*blake3::hash(&datagrams[serial]).as_bytes());
    }
    let top_hashes = build_hash_levels(&shape, info.file_id, size, 0, hashes, |serial, bytes| {
        datagrams[serial as usize].copy_from_slice(bytes)
    });
    let info = FileInfo {
        frame_stream_len: stream.len() as u64,
        data_datagram_count: data,
        loop_len: shape.loop_len(),
        top_hashes,
        ..info.clone()
    };
    (info, datagrams)
}

/// A `.part` holding every datagram (the receiver's bitmap decides what may be read).
fn part_file(dir: &TestDir, info: &FileInfo, datagrams: &[Vec<u8>]) -> (PathBuf, File) {
    let path = dir.path("film.lca.part");
    let mut bytes = superblock(info);
    bytes.resize(datagram_offset(info, 0) as usize, 0);
    for datagram in datagrams {
        bytes.extend_from_slice(datagram);
    }
    std::fs::write(&path, bytes).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    (path, file)
}

/// A sink collecting into a shared buffer.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<u8>>>);

impl Write for Collect {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Collect {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

fn start(info: &FileInfo, path: &Path, sink: impl Write + Send + 'static) -> FollowWriter {
    FollowWriter::start(
        FollowOptions {
            sink: Box::new(sink),
            key_for: Box::new(|_| Ok(Some(MasterKey::from_bytes(KEY)))),
        },
        info,
        path,
    )
    .unwrap()
}

/// Feeds datagrams (by serial) to the receiver.
fn feed(receiver: &mut Receiver, datagrams: &[Vec<u8>], serials: impl IntoIterator<Item = u32>) {
    for serial in serials {
        let outcome = receiver.handle_datagram(&datagrams[serial as usize]);
        assert!(
            !matches!(outcome, Outcome::Dropped(_)),
            "serial {serial}: {outcome:?}"
        );
    }
}

/// Advances until the writer has caught up with what it can play (the writer thread runs
/// beside): waits until `written` stops changing.
fn settle(follow: &mut FollowWriter, receiver: &mut Receiver, part: &File) {
    let mut last = u64::MAX;
    for _ in 0..200 {
        follow.advance(receiver, part).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let now = follow.written().0;
        if now == last && follow.held.is_none() {
            return;
        }
        last = now;
    }
}

#[test]
fn plays_the_original_in_order_as_a_mid_loop_join_fills_the_prefix() {
    let dir = TestDir::new("play");
    let original = sample_bytes(300_000);
    let (info, datagrams) = packed(&dir, &original);
    let (path, part) = part_file(&dir, &info, &datagrams);
    let sink = Collect::default();
    let mut follow = start(&info, &path, sink.clone());
    let mut receiver = Receiver::new(info.clone());
    let loop_len = info.loop_len;
    // Joined at the middle of the loop: the second half arrives first; nothing is playable.
    feed(&mut receiver, &datagrams, loop_len / 2..loop_len);
    settle(&mut follow, &mut receiver, &part);
    assert_eq!(
        follow.written().0,
        0,
        "nothing before the start of the file"
    );
    assert_eq!(
        follow.wanted_serial(&receiver),
        Some(0),
        "playback waits for the top block over data 0"
    );
    // Then the loop wraps and the first half arrives in steps: the output grows, and is
    // always a prefix of the original.
    let mut grew = 0;
    for chunk in (0..loop_len / 2).collect::<Vec<_>>().chunks(8) {
        feed(&mut receiver, &datagrams, chunk.iter().copied());
        settle(&mut follow, &mut receiver, &part);
        let out = sink.bytes();
        assert!(original.starts_with(&out), "a prefix of the original");
        if !out.is_empty() && out.len() < original.len() {
            grew += 1;
        }
    }
    assert!(
        grew > 2,
        "played while arriving ({grew} steps with partial output)"
    );
    assert!(receiver.is_complete());
    follow
        .finish(&mut receiver, &part, &AtomicBool::new(false))
        .unwrap();
    assert!(sink.bytes() == original, "identical to the original");
}

/// Frames (header, stored) of a frame stream, as (offset, header).
fn frames_of(stream: &[u8]) -> Vec<(usize, FrameHeader)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < stream.len() {
        let header = FrameHeader::parse(stream[at..at + 64].try_into().unwrap()).unwrap();
        out.push((at, header));
        at += 64 + header.stored_len as usize;
    }
    out
}

/// Plays a whole (possibly hostile) archive; returns the result and what reached the sink.
fn play_all(
    dir: &TestDir,
    info: &FileInfo,
    datagrams: &[Vec<u8>],
) -> (Result<(), FollowError>, Vec<u8>) {
    let (path, part) = part_file(dir, info, datagrams);
    let sink = Collect::default();
    let mut follow = start(info, &path, sink.clone());
    let mut receiver = Receiver::new(info.clone());
    feed(&mut receiver, datagrams, 0..info.loop_len);
    let mut result = Ok(());
    for _ in 0..1000 {
        match follow.advance(&mut receiver, &part) {
            Ok(true) => break,
            Ok(false) => std::thread::sleep(Duration::from_millis(1)),
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    if result.is_err() {
        // Let the writer finish what it was given before the error, to look at the sink.
        follow.queue = None;
        if let Some(worker) = follow.worker.take() {
            let _ = worker.join();
        }
    } else {
        result = follow
            .finish(&mut receiver, &part, &AtomicBool::new(false))
            .map(|_| ());
    }
    (result, sink.bytes())
}

#[test]
fn a_truncated_last_frame_is_a_clear_error_and_only_whole_genuine_frames_are_written() {
    let dir = TestDir::new("truncated");
    let original = sample_bytes(120_000);
    let (info, datagrams) = packed(&dir, &original);
    let mut stream = frame_stream(&info, &datagrams);
    let frames = frames_of(&stream);
    let (last_at, _) = *frames.last().unwrap();
    stream.truncate(stream.len() - 100);
    let (hostile, hostile_datagrams) = rebuilt(&info, &stream);
    let (result, written) = play_all(&dir, &hostile, &hostile_datagrams);
    let error = result.unwrap_err().to_string();
    assert!(error.contains("cut short"), "{error}");
    let whole = (frames.len() - 1) * (16 << 10);
    assert_eq!(written.len(), whole, "every frame before the cut one");
    assert!(original.starts_with(&written));
    assert!(last_at > 0);
}

#[test]
fn a_tampered_sealed_frame_fails_to_decrypt_and_none_of_it_is_written() {
    let dir = TestDir::new("tampered");
    let original = sample_bytes(120_000);
    let (info, datagrams) = packed(&dir, &original);
    let mut stream = frame_stream(&info, &datagrams);
    let frames = frames_of(&stream);
    let (at, _) = frames[2];
    stream[at + 64 + 10] ^= 0x01;
    let (hostile, hostile_datagrams) = rebuilt(&info, &stream);
    let (result, written) = play_all(&dir, &hostile, &hostile_datagrams);
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            FollowError::Archive(ArchiveError::DecryptFailed { frame: 2 })
        ),
        "{error}"
    );
    assert_eq!(written, original[..2 * (16 << 10)], "frames 0 and 1 only");
}

#[test]
fn a_frame_header_that_disagrees_with_the_info_is_a_clear_error() {
    let dir = TestDir::new("header");
    let original = sample_bytes(120_000);
    let (info, datagrams) = packed(&dir, &original);
    let mut stream = frame_stream(&info, &datagrams);
    let frames = frames_of(&stream);
    let (at, _) = frames[1];
    // Frame 1 claims to be frame 7.
    stream[at + 4..at + 12].copy_from_slice(&7u64.to_be_bytes());
    let (hostile, hostile_datagrams) = rebuilt(&info, &stream);
    let (result, written) = play_all(&dir, &hostile, &hostile_datagrams);
    let error = result.unwrap_err().to_string();
    assert!(error.contains("frame 1 claims index 7"), "{error}");
    assert_eq!(written, original[..16 << 10]);
    // Garbage where a header belongs.
    let mut stream = frame_stream(&info, &datagrams);
    stream[at..at + 2].copy_from_slice(b"XX");
    let (hostile, hostile_datagrams) = rebuilt(&info, &stream);
    let (result, _) = play_all(&dir, &hostile, &hostile_datagrams);
    let error = result.unwrap_err().to_string();
    assert!(error.contains("frame 1: bad header"), "{error}");
}

#[test]
fn trailing_bytes_after_the_last_frame_are_a_clear_error() {
    let dir = TestDir::new("trailing");
    let original = sample_bytes(50_000);
    let (info, datagrams) = packed(&dir, &original);
    let mut stream = frame_stream(&info, &datagrams);
    stream.extend_from_slice(&[0u8; 3000]);
    let (hostile, hostile_datagrams) = rebuilt(&info, &stream);
    let (result, written) = play_all(&dir, &hostile, &hostile_datagrams);
    let error = result.unwrap_err().to_string();
    assert!(error.contains("trailing bytes"), "{error}");
    assert!(original.starts_with(&written));
}

#[test]
fn a_wrong_original_hash_is_reported_at_the_end() {
    let dir = TestDir::new("hash");
    let original = sample_bytes(50_000);
    let (mut info, datagrams) = packed(&dir, &original);
    info.original_hash[0] ^= 1;
    let (hostile, hostile_datagrams) = rebuilt(&info, &frame_stream(&info, &datagrams));
    let (result, written) = play_all(&dir, &hostile, &hostile_datagrams);
    let error = result.unwrap_err().to_string();
    assert!(error.contains("do not match the original"), "{error}");
    assert_eq!(
        written, original,
        "each frame was genuine; the whole is not"
    );
}

#[test]
fn a_held_datagram_damaged_on_disk_is_forgotten_and_never_played() {
    let dir = TestDir::new("damaged");
    let original = sample_bytes(120_000);
    let (info, datagrams) = packed(&dir, &original);
    let (path, part) = part_file(&dir, &info, &datagrams);
    let shape = info.shape().unwrap();
    // Data datagram 30 (in frame 2) is damaged on disk after it was verified.
    let serial = shape.serial_of(0, 30);
    let mut damaged = datagrams[serial as usize].clone();
    damaged[100] ^= 0xff;
    part.write_all_at(&damaged, datagram_offset(&info, serial))
        .unwrap();
    let sink = Collect::default();
    let mut follow = start(&info, &path, sink.clone());
    let mut receiver = Receiver::new(info.clone());
    feed(&mut receiver, &datagrams, 0..info.loop_len);
    settle(&mut follow, &mut receiver, &part);
    assert!(
        !receiver.have().get(serial),
        "forgotten: to be received again"
    );
    let played = sink.bytes();
    assert!(original.starts_with(&played));
    // Exactly the frames that end before datagram 30's bytes begin.
    let capacity = payload_capacity(info.datagram_size);
    let stream = frame_stream(&info, &datagrams);
    let before = frames_of(&stream)
        .iter()
        .filter(|(at, header)| at + 64 + header.stored_len as usize <= 30 * capacity)
        .count();
    assert_eq!(
        played.len(),
        before * (16 << 10),
        "stops before the frame holding it"
    );
    // It arrives again, genuine: playback goes on to the end.
    part.write_all_at(&datagrams[serial as usize], datagram_offset(&info, serial))
        .unwrap();
    feed(&mut receiver, &datagrams, [serial]);
    follow
        .finish(&mut receiver, &part, &AtomicBool::new(false))
        .unwrap();
    assert!(sink.bytes() == original);
}

/// A sink whose reader went away.
struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_closed_pipe_is_reported_as_the_player_gone() {
    let dir = TestDir::new("closed");
    let original = sample_bytes(120_000);
    let (info, datagrams) = packed(&dir, &original);
    let (path, part) = part_file(&dir, &info, &datagrams);
    let mut follow = start(&info, &path, Closed);
    let mut receiver = Receiver::new(info.clone());
    feed(&mut receiver, &datagrams, 0..info.loop_len);
    let mut outcome = None;
    for _ in 0..1000 {
        match follow.advance(&mut receiver, &part) {
            Err(error) => {
                outcome = Some(error);
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    let error = outcome.expect("the closed pipe is noticed");
    assert!(
        matches!(error, FollowError::PlayerGone { written: 0 }),
        "{error}"
    );
    assert!(error.to_string().contains("broken pipe"));
}

/// A sink that blocks until released (a player that is not reading).
struct Stalled(Arc<Mutex<()>>);

impl Write for Stalled {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let _wait = self.0.lock().unwrap();
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_player_that_does_not_read_never_blocks_the_receive_loop_and_buffers_boundedly() {
    let dir = TestDir::new("stalled");
    let original = sample_bytes(600_000);
    let (info, datagrams) = packed(&dir, &original);
    let (path, part) = part_file(&dir, &info, &datagrams);
    let gate = Arc::new(Mutex::new(()));
    let closed = gate.lock().unwrap();
    let mut follow = start(&info, &path, Stalled(gate.clone()));
    let mut receiver = Receiver::new(info.clone());
    feed(&mut receiver, &datagrams, 0..info.loop_len);
    for _ in 0..200 {
        let started = Instant::now();
        assert!(!follow.advance(&mut receiver, &part).unwrap());
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "advance returned in {:?}",
            started.elapsed()
        );
        // In memory: the queue (bounded), one held frame, and less than a read batch.
        let capacity = payload_capacity(info.datagram_size);
        assert!(follow.stream.len() <= (READ_RUN_MAX as usize) * capacity + (16 << 10) + 64);
    }
    assert!(
        follow.held.is_some(),
        "the queue filled and the writer was not waited for"
    );
    assert!(
        follow.read_data < info.data_datagram_count,
        "the rest stays on disk"
    );
    drop(closed);
    follow
        .finish(&mut receiver, &part, &AtomicBool::new(false))
        .unwrap();
}
