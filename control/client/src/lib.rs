//! The client driver (`loopcast get`): a thin I/O loop around [`loopcast_proto::receiver::Receiver`].
//!
//! ```text
//!  Request ─▶ Offer(info, channel) ─▶ check root ─▶ open/resume <out>.part (+ .part.state)
//!  multicast: join group, wait for SYNC ─▶ Joined(Multicast) | no SYNC ─▶ Joined(Unicast) (R8)
//!  recvmmsg batch ─▶ Receiver::handle_datagram ─▶ Store{serial} ─▶ pwrite at the serial's slot
//!  every 250 ms Status; every 2 s fsync + save state; complete ─▶ re-hash data ─▶ fsync ─▶ rename
//! ```

pub mod state;

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loopcast_archive::format::{archive_len, datagram_offset, superblock};
use loopcast_dataplane::recv::BatchReceiver;
use loopcast_proto::carousel::SessionId;
use loopcast_proto::info::{FileInfo, RootHash, DATAGRAM_SIZE_MAX};
use loopcast_proto::nak::{NakConfig, NakPlanner};
use loopcast_proto::receiver::{Outcome, Receiver, ReceiverCounters};
use loopcast_proto::wire::control::{ControlMessage, RejectCode, Transport, CONTROL_LEN_MAX};
use loopcast_proto::wire::datagram::DatagramHeader;

#[derive(Clone, Debug)]
pub struct GetConfig {
    pub server: SocketAddr,
    pub name: String,
    /// Where the archive is published when complete.
    pub output: PathBuf,
    pub allow_multicast: bool,
    /// Address of the interface to receive multicast on.
    pub multicast_interface: Ipv4Addr,
    /// Root the caller trusts (e.g. from a catalog); the Offer must match it.
    pub expect_root: Option<RootHash>,
    pub sync_timeout: Duration,
    pub request_timeout: Duration,
    /// Give up (keeping the partial file) after this long without a new datagram.
    pub stall_timeout: Duration,
}

impl GetConfig {
    pub fn new(server: SocketAddr, name: &str, output: PathBuf) -> GetConfig {
        GetConfig {
            server,
            name: name.to_owned(),
            output,
            allow_multicast: true,
            multicast_interface: Ipv4Addr::UNSPECIFIED,
            expect_root: None,
            sync_timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub held: u32,
    pub total: u32,
    pub archive_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct GetReport {
    pub transport: Transport,
    /// Why this transport (e.g. "no SYNC within 1.5 s: fell back to unicast").
    pub transport_note: String,
    pub info: FileInfo,
    pub root: RootHash,
    /// First loop serial received: where in the loop this client joined.
    pub join_serial: Option<u32>,
    /// Datagrams already held from an earlier run (R14).
    pub resumed_datagrams: u32,
    pub elapsed: Duration,
    pub archive_bytes: u64,
    pub counters: ReceiverCounters,
    pub oversize_dropped: u64,
    /// From the start to the first datagram of the file, and the time spent making the
    /// finished file durable (final fsync and rename).
    pub first_datagram_after: Option<Duration>,
    pub publish_time: Duration,
    /// NAKs sent, and the serials they asked for (R10).
    pub naks_sent: u64,
    pub serials_naked: u64,
    /// Serials not asked for because another receiver had just asked (R10 suppression).
    pub serials_suppressed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("no answer from {server} within {seconds} s (is loopcastd running there?)")]
    NoAnswer { server: SocketAddr, seconds: u64 },
    #[error("server refused: {message} ({code:?})")]
    Rejected { code: RejectCode, message: String },
    #[error(
        "server offered root {offered}, expected {expected}: refusing a forged or different file"
    )]
    RootMismatch { offered: String, expected: String },
    #[error(
        "no new data for {seconds} s; partial download kept for resume ({held}/{total} datagrams)"
    )]
    Stalled { seconds: u64, held: u32, total: u32 },
    #[error("interrupted; partial download kept for resume ({held}/{total} datagrams)")]
    Interrupted { held: u32, total: u32 },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClientError {
    let context = context.into();
    move |source| ClientError::Io { context, source }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

const STATUS_INTERVAL: Duration = Duration::from_millis(250);
/// How often the state is saved and the partial file flushed, beside the receive loop. Short,
/// so the disk writes while data arrives and the final fsync has little left to do.
const SAVE_INTERVAL: Duration = Duration::from_millis(200);
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(50);
const REQUEST_RETRY: Duration = Duration::from_millis(500);
/// Buffers taken per recvmmsg.
const RECEIVE_BATCH: usize = 64;
/// Longest random wait before a multicast receiver asks for a gap (R10's Timer A): long enough
/// for another receiver's NAK, relayed by the server, to arrive first.
const NAK_SUPPRESSION_DELAY: Duration = Duration::from_millis(20);
/// Datagrams in a batch from which hashing is spread over threads.
const PARALLEL_HASH_MIN: usize = 32;
/// Receive buffer per slot when UDP GRO is on (a GRO super-datagram is at most 64 KiB).
const GRO_SLOT_BYTES: usize = 65_536;
/// Datagrams written per pwritev at most (below IOV_MAX).
const WRITE_IOVECS_MAX: usize = 256;

struct Offer {
    session: SessionId,
    transport: Transport,
    channel: SocketAddr,
    info: FileInfo,
}

/// Downloads one file. Blocks until it is published, fails, or `cancel` is set.
pub fn get(
    config: &GetConfig,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<GetReport, ClientError> {
    let started = Instant::now();
    let bind: SocketAddr = if config.server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let control =
        loopcast_dataplane::socket::bind_udp(bind).map_err(io_err("bind client socket"))?;
    let offer = request(config, &control, cancel)?;
    let root = offer.info.root();
    if let Some(expected) = config.expect_root {
        if expected != root {
            return Err(ClientError::RootMismatch {
                offered: root.to_hex(),
                expected: expected.to_hex(),
            });
        }
    }
    tracing::info!(file = %offer.info.name, root = %root.to_hex(), transport = %offer.transport, channel = %offer.channel, "offer accepted");
    let mut download = Download::open(config, &offer.info, root)?;
    let resumed_datagrams = download.receiver.have().count_ones();

    // R8: on multicast, confirm we see the channel, else ask for unicast.
    let mut transport = offer.transport;
    let mut transport_note = match transport {
        Transport::Unicast => "server offered unicast".to_owned(),
        Transport::Multicast => String::new(),
    };
    let multicast_socket = if transport == Transport::Multicast {
        let group = match offer.channel {
            SocketAddr::V4(v4) => *v4.ip(),
            SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        match loopcast_dataplane::socket::bind_multicast_receiver(
            group,
            offer.channel.port(),
            config.multicast_interface,
        ) {
            Ok(socket) => Some(socket),
            Err(error) => {
                transport_note = format!(
                    "cannot join {}: {error}; fell back to unicast",
                    offer.channel
                );
                None
            }
        }
    } else {
        None
    };
    let data_socket = multicast_socket.as_ref().unwrap_or(&control);
    loopcast_dataplane::socket::set_receive_timeout(data_socket, RECEIVE_TIMEOUT)
        .map_err(io_err("set receive timeout"))?;
    // With UDP GRO one receive can carry up to 64 KiB of coalesced datagrams.
    let gro = loopcast_dataplane::recv::enable_gro(data_socket);
    let slot_size = if gro {
        GRO_SLOT_BYTES
    } else {
        usize::from(DATAGRAM_SIZE_MAX) + 1
    };
    let mut inbox = BatchReceiver::new(RECEIVE_BATCH, slot_size);
    let send = |message: ControlMessage| {
        let _ = control.send_to(&message.to_bytes(), config.server);
    };

    let mut synced = transport == Transport::Unicast;
    if transport == Transport::Multicast {
        if multicast_socket.is_some() {
            let deadline = Instant::now() + config.sync_timeout;
            while !synced && Instant::now() < deadline && !cancel.load(Ordering::Relaxed) {
                synced = download.receive_batch(&mut inbox, data_socket)?.synced;
            }
        }
        if synced {
            transport_note = "SYNC received on the multicast group".into();
            send(ControlMessage::Joined {
                session: offer.session,
                transport: Transport::Multicast,
            });
        } else {
            if transport_note.is_empty() {
                transport_note = format!(
                    "no SYNC on {} within {:.1} s; fell back to unicast",
                    offer.channel,
                    config.sync_timeout.as_secs_f64()
                );
            }
            tracing::warn!(note = %transport_note, "multicast unavailable");
            transport = Transport::Unicast;
            send(ControlMessage::Joined {
                session: offer.session,
                transport: Transport::Unicast,
            });
        }
    }
    let data_socket = if transport == Transport::Multicast {
        data_socket
    } else {
        loopcast_dataplane::socket::set_receive_timeout(&control, RECEIVE_TIMEOUT)
            .map_err(io_err("set receive timeout"))?;
        &control
    };

    let total = download.receiver.shape().loop_len();
    if transport == Transport::Unicast {
        // On a unicast channel a NAK is sent at once (R10).
        download.nak.set_suppression(None);
    }
    let mut last_status = Instant::now() - STATUS_INTERVAL;
    let mut last_save = Instant::now();
    let mut last_new_data = Instant::now();
    loop {
        let held = download.receiver.have().count_ones();
        if download.receiver.is_complete() && download.recheck()? {
            break;
        }
        if cancel.load(Ordering::Relaxed) {
            download.save()?;
            send(ControlMessage::Leave {
                session: offer.session,
            });
            return Err(ClientError::Interrupted { held, total });
        }
        if last_new_data.elapsed() > config.stall_timeout {
            download.save()?;
            send(ControlMessage::Leave {
                session: offer.session,
            });
            return Err(ClientError::Stalled {
                seconds: config.stall_timeout.as_secs(),
                held,
                total,
            });
        }
        if last_status.elapsed() >= STATUS_INTERVAL {
            send(ControlMessage::Status {
                session: offer.session,
                held,
                loop_len: total,
                done: false,
            });
            progress(Progress {
                held,
                total,
                archive_bytes: download.archive_bytes,
            });
            last_status = Instant::now();
        }
        if last_save.elapsed() >= SAVE_INTERVAL {
            download.save_in_background()?;
            last_save = Instant::now();
        }
        if download.receive_batch(&mut inbox, data_socket)?.stored > 0 {
            last_new_data = Instant::now();
        }
        // R10: ask for what went by without arriving (at most one NAK per interval).
        if let Some(ranges) = download.nak.poll_nak(download.clock.now()) {
            send(ControlMessage::Nak {
                session: offer.session,
                ranges,
            });
        }
    }
    // R9: tell the server we are done (a few times: UDP may drop one).
    for _ in 0..3 {
        send(ControlMessage::Status {
            session: offer.session,
            held: total,
            loop_len: total,
            done: true,
        });
    }
    progress(Progress {
        held: total,
        total,
        archive_bytes: download.archive_bytes,
    });
    let publish_started = Instant::now();
    download.publish()?;
    let publish_time = publish_started.elapsed();
    Ok(GetReport {
        first_datagram_after: download.first_datagram_at.map(|at| at - started),
        publish_time,
        transport,
        transport_note,
        root,
        join_serial: download.join_serial,
        resumed_datagrams,
        elapsed: started.elapsed(),
        archive_bytes: download.archive_bytes,
        counters: download.receiver.counters(),
        oversize_dropped: download.oversize_dropped,
        naks_sent: download.nak.naks_sent(),
        serials_naked: download.nak.serials_naked(),
        serials_suppressed: download.nak.serials_suppressed(),
        info: offer.info,
    })
}

fn request(
    config: &GetConfig,
    control: &UdpSocket,
    cancel: &AtomicBool,
) -> Result<Offer, ClientError> {
    let mut id_bytes = [0u8; 8];
    getrandom::fill(&mut id_bytes).map_err(|e| ClientError::Io {
        context: "OS randomness".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let request_id = u64::from_ne_bytes(id_bytes);
    let request = ControlMessage::Request {
        request_id,
        multicast_ok: config.allow_multicast,
        name: config.name.clone(),
    }
    .to_bytes();
    control
        .set_read_timeout(Some(REQUEST_RETRY))
        .map_err(io_err("set timeout"))?;
    let started = Instant::now();
    let mut buffer = vec![0u8; CONTROL_LEN_MAX + 1];
    while started.elapsed() < config.request_timeout && !cancel.load(Ordering::Relaxed) {
        control
            .send_to(&request, config.server)
            .map_err(io_err(format!("send request to {}", config.server)))?;
        let sent_at = Instant::now();
        while sent_at.elapsed() < REQUEST_RETRY {
            let (len, from) = match control.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // ICMP port unreachable from an earlier send: the server is not up (yet).
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(io_err("receive offer")(e)),
            };
            if from != config.server {
                continue;
            }
            match ControlMessage::parse(&buffer[..len]) {
                Ok(ControlMessage::Offer {
                    request_id: id,
                    session,
                    transport,
                    channel,
                    info,
                    ..
                }) if id == request_id => {
                    return Ok(Offer {
                        session,
                        transport,
                        channel,
                        info,
                    })
                }
                Ok(ControlMessage::Reject {
                    request_id: id,
                    code,
                    message,
                }) if id == request_id => return Err(ClientError::Rejected { code, message }),
                _ => continue,
            }
        }
        std::thread::sleep(REQUEST_RETRY.saturating_sub(sent_at.elapsed()));
    }
    Err(ClientError::NoAnswer {
        server: config.server,
        seconds: config.request_timeout.as_secs(),
    })
}

struct BatchResult {
    stored: usize,
    synced: bool,
}

struct Download {
    part_path: PathBuf,
    state_path: PathBuf,
    output: PathBuf,
    part: File,
    root: RootHash,
    receiver: Receiver,
    archive_bytes: u64,
    join_serial: Option<u32>,
    first_datagram_at: Option<Instant>,
    oversize_dropped: u64,
    /// A periodic save running beside the receive loop, so its fsync never stalls receiving.
    saver: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// What a resumed state claimed was held: proven by `recheck` before publishing.
    unproven: Option<loopcast_proto::bitmap::Bitmap>,
    /// Reused per batch: (serial, slot, offset, length) of datagrams to write.
    to_store: Vec<(u32, usize, usize, usize)>,
    /// What went by without arriving, to ask for ahead of the loop (R10).
    nak: NakPlanner,
    clock: loopcast_proto::time::MonotonicClock,
    /// Reused per batch: (slot, offset, length, needs hashing) of the file's datagrams, their
    /// bytes, and their hashes.
    segments: Vec<Segment>,
    slices: Vec<&'static [u8]>,
    hashes: Vec<[u8; 32]>,
}

/// A seed for the NAK planner's random delays, from the OS (a fixed one if it is unavailable:
/// suppression then works less well, nothing else changes).
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()),
    }
}

/// One datagram of the file in a received batch: where it sits, and whether it still needs
/// hashing (it is not held yet).
#[derive(Clone, Copy)]
struct Segment {
    slot: usize,
    offset: usize,
    len: usize,
    needs_hash: bool,
}

/// Empties a vector of borrowed slices and hands back its allocation with a new lifetime (in-place
/// collection reuses the buffer; no `unsafe`, no allocation).
fn recycle_slices<'b>(mut slices: Vec<&[u8]>) -> Vec<&'b [u8]> {
    slices.clear();
    slices
        .into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

impl Download {
    /// Opens the partial archive, resuming from `.part.state` when it matches this root.
    fn open(config: &GetConfig, info: &FileInfo, root: RootHash) -> Result<Download, ClientError> {
        let part_path = with_suffix(&config.output, ".part");
        let state_path = with_suffix(&config.output, ".part.state");
        let archive_bytes = archive_len(info);
        let part = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part_path)
            .map_err(io_err(format!("open {}", part_path.display())))?;
        let previous = std::fs::read(&state_path)
            .ok()
            .and_then(|bytes| state::decode(&bytes, &root, info.loop_len));
        let part_len = part.metadata().map_err(io_err("stat partial file"))?.len();
        let mut unproven = None;
        let receiver = match previous {
            Some(have) if part_len == archive_bytes => {
                let size = usize::from(info.datagram_size);
                let receiver = Receiver::resume(info.clone(), have, |serial| {
                    let mut bytes = vec![0u8; size];
                    part.read_exact_at(&mut bytes, datagram_offset(info, serial))
                        .ok()?;
                    Some(bytes)
                });
                unproven = Some(receiver.have().clone());
                tracing::info!(
                    held = receiver.have().count_ones(),
                    total = info.loop_len,
                    "resuming partial download"
                );
                receiver
            }
            _ => {
                part.set_len(0).map_err(io_err("truncate partial file"))?;
                part.set_len(archive_bytes)
                    .map_err(io_err("size partial file"))?;
                Receiver::new(info.clone())
            }
        };
        part.write_all_at(&superblock(info), 0)
            .map_err(io_err("write partial file"))?;
        Ok(Download {
            part_path,
            state_path,
            output: config.output.clone(),
            part,
            root,
            archive_bytes,
            join_serial: None,
            first_datagram_at: None,
            oversize_dropped: 0,
            saver: None,
            unproven,
            to_store: Vec::with_capacity(RECEIVE_BATCH * 64),
            nak: NakPlanner::new(
                NakConfig {
                    // Multicast until the transport says otherwise (R10 suppression, Timer A).
                    suppression_delay: Some(NAK_SUPPRESSION_DELAY),
                    random_seed: random_seed(),
                    ..NakConfig::default()
                },
                receiver.have(),
            ),
            clock: loopcast_proto::time::MonotonicClock::new(),
            segments: Vec::with_capacity(RECEIVE_BATCH * 64),
            slices: Vec::with_capacity(RECEIVE_BATCH * 64),
            hashes: Vec::with_capacity(RECEIVE_BATCH * 64),
            receiver,
        })
    }

    fn receive_batch(
        &mut self,
        inbox: &mut BatchReceiver,
        socket: &UdpSocket,
    ) -> Result<BatchResult, ClientError> {
        let count = inbox.receive(socket).map_err(io_err("receive"))?;
        let mut result = BatchResult {
            stored: 0,
            synced: false,
        };
        // (serial, slot, offset in the slot) of each datagram to store, written in runs below.
        let mut to_store = std::mem::take(&mut self.to_store);
        to_store.clear();
        // Pass 1: find the file's datagrams (SYNC and other control messages handled here),
        // as (slot, offset, length), and whether each still needs hashing (not yet held).
        let mut segments = std::mem::take(&mut self.segments);
        segments.clear();
        for index in 0..count {
            let received = inbox.datagram(index);
            if received.truncated {
                self.oversize_dropped += 1;
                continue;
            }
            let mut offset = 0usize;
            for bytes in received.segments() {
                let at = offset;
                offset += bytes.len();
                if ControlMessage::is_control(bytes) {
                    match ControlMessage::parse(bytes) {
                        Ok(ControlMessage::Sync { file_id, .. }) => {
                            result.synced |= file_id == self.receiver.info().file_id;
                        }
                        // R10 suppression: another receiver asked for these; we need not.
                        Ok(ControlMessage::NakHeard { file_id, ranges })
                            if file_id == self.receiver.info().file_id =>
                        {
                            self.nak.heard(self.clock.now(), &ranges);
                        }
                        _ => {}
                    }
                    continue;
                }
                let held = DatagramHeader::parse(bytes).is_ok_and(|h| {
                    h.serial.0 < self.receiver.have().len() && self.receiver.have().get(h.serial.0)
                });
                segments.push(Segment {
                    slot: index,
                    offset: at,
                    len: bytes.len(),
                    needs_hash: !held,
                });
            }
        }
        // Pass 2: hash what needs it, across cores when the batch is big enough to pay for it
        // (BLAKE3 of every datagram is most of a receiver's CPU).
        let mut hashes = std::mem::take(&mut self.hashes);
        hashes.clear();
        hashes.resize(segments.len(), [0u8; 32]);
        let slice_of = |segment: &Segment| -> &[u8] {
            &inbox.datagram(segment.slot).bytes[segment.offset..segment.offset + segment.len]
        };
        let mut slices = recycle_slices(std::mem::take(&mut self.slices));
        slices.extend(segments.iter().map(slice_of));
        let hash_one = |(hash, (bytes, segment)): (&mut [u8; 32], (&&[u8], &Segment))| {
            if segment.needs_hash {
                *hash = *blake3::hash(bytes).as_bytes();
            }
        };
        if segments.len() >= PARALLEL_HASH_MIN && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            hashes
                .par_iter_mut()
                .zip(slices.par_iter().zip(segments.par_iter()))
                .for_each(hash_one);
        } else {
            hashes
                .iter_mut()
                .zip(slices.iter().zip(segments.iter()))
                .for_each(hash_one);
        }
        // Pass 3: accept in order.
        for ((segment, bytes), hash) in segments.iter().zip(slices.iter()).zip(hashes.iter()) {
            match self
                .receiver
                .handle_datagram_hashed(bytes, segment.needs_hash.then_some(hash))
            {
                Outcome::Store { serial, .. } => {
                    if self.join_serial.is_none() {
                        self.join_serial = Some(serial);
                        self.first_datagram_at = Some(Instant::now());
                    }
                    // Receiving our file's datagrams on the channel proves it works, like SYNC.
                    result.synced = true;
                    result.stored += 1;
                    self.nak.saw(serial);
                    to_store.push((serial, segment.slot, segment.offset, segment.len));
                }
                Outcome::Duplicate { serial } => self.nak.saw(serial),
                Outcome::Dropped(_) => {}
            }
        }
        self.slices = recycle_slices(slices);
        self.segments = segments;
        self.hashes = hashes;
        let written = self.write_runs(inbox, &mut to_store);
        self.to_store = to_store;
        written?;
        Ok(result)
    }

    /// Writes stored datagrams with one `pwritev` per run of consecutive serials (the loop
    /// sends in serial order, so a batch is usually one or two runs).
    fn write_runs(
        &self,
        inbox: &BatchReceiver,
        stored: &mut [(u32, usize, usize, usize)],
    ) -> Result<(), ClientError> {
        let bytes_of = |&(_, slot, at, len): &(u32, usize, usize, usize)| {
            &inbox.datagram(slot).bytes[at..at + len]
        };
        stored.sort_unstable_by_key(|&(serial, ..)| serial);
        let mut run_start = 0;
        while run_start < stored.len() {
            let mut run_end = run_start + 1;
            while run_end < stored.len()
                && run_end - run_start < WRITE_IOVECS_MAX
                && stored[run_end].0 == stored[run_end - 1].0 + 1
            {
                run_end += 1;
            }
            let run = &stored[run_start..run_end];
            let mut slices = [std::io::IoSlice::new(&[]); WRITE_IOVECS_MAX];
            for (slice, entry) in slices.iter_mut().zip(run) {
                *slice = std::io::IoSlice::new(bytes_of(entry));
            }
            let slices = &slices[..run.len()];
            let offset = datagram_offset(self.receiver.info(), run[0].0);
            let total: usize = slices.iter().map(|s| s.len()).sum();
            let written = nix::sys::uio::pwritev(&self.part, slices, offset as i64)
                .map_err(|e| io_err(format!("write {}", self.part_path.display()))(e.into()))?;
            if written < total {
                // Rare: a short write; finish the run datagram by datagram.
                for entry in run {
                    self.part
                        .write_all_at(
                            bytes_of(entry),
                            datagram_offset(self.receiver.info(), entry.0),
                        )
                        .map_err(io_err(format!("write {}", self.part_path.display())))?;
                }
            }
            run_start = run_end;
        }
        Ok(())
    }

    /// Waits for a background save, if one is running, and reports its error.
    fn finish_background_save(&mut self) -> Result<(), ClientError> {
        match self.saver.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("state saver panicked")))
                .map_err(io_err(format!("save {}", self.state_path.display()))),
            None => Ok(()),
        }
    }

    /// Starts a save beside the receive loop unless one is still running. The bitmap is
    /// snapshotted first; the fsync that follows covers every write made before the snapshot,
    /// so the state never claims bytes that are not on disk.
    fn save_in_background(&mut self) -> Result<(), ClientError> {
        if self.saver.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        self.finish_background_save()?;
        let have = self.receiver.have().clone();
        let file = self
            .part
            .try_clone()
            .map_err(io_err("clone partial file handle"))?;
        let (path, root) = (self.state_path.clone(), self.root);
        self.saver = Some(std::thread::spawn(move || {
            file.sync_data()?;
            state::save(&path, &root, &have)
        }));
        Ok(())
    }

    /// Persists progress now: data first (fsync), then the state that describes it.
    fn save(&mut self) -> Result<(), ClientError> {
        self.finish_background_save()?;
        self.part
            .sync_data()
            .map_err(io_err("fsync partial file"))?;
        state::save(&self.state_path, &self.root, self.receiver.have())
            .map_err(io_err(format!("save {}", self.state_path.display())))
    }

    /// Final pass over data that was *not* verified by this process: datagrams a resumed state
    /// file says are held are re-read from disk and re-hashed (datagrams received this run were
    /// hashed on arrival). Returns false (with the bad ones forgotten, to be received again) if
    /// any fails.
    fn recheck(&mut self) -> Result<bool, ClientError> {
        let Some(unproven) = self.unproven.take() else {
            return Ok(true);
        };
        let info = self.receiver.info().clone();
        let shape = self.receiver.shape().clone();
        let size = usize::from(info.datagram_size);
        let fanout = shape.fanout();
        let mut all_good = true;
        let mut index = 0u32;
        while index < shape.data_count() {
            let run_end = if shape.depth() == 0 {
                shape.data_count()
            } else {
                ((index / fanout + 1) * fanout).min(shape.data_count())
            };
            let run_has_unproven = (index..run_end).any(|d| unproven.get(shape.serial_of(0, d)));
            if !run_has_unproven {
                index = run_end;
                continue;
            }
            let mut buffer = vec![0u8; size * (run_end - index) as usize];
            self.part
                .read_exact_at(
                    &mut buffer,
                    datagram_offset(&info, shape.serial_of(0, index)),
                )
                .map_err(io_err("re-read partial file"))?;
            for (offset, datagram) in buffer.chunks_exact(size).enumerate() {
                let data_index = index + offset as u32;
                if !unproven.get(shape.serial_of(0, data_index)) {
                    continue;
                }
                if !self.receiver.recheck_data(data_index, datagram) {
                    tracing::warn!(
                        index = index + offset as u32,
                        "stored datagram failed its re-check; receiving it again"
                    );
                    all_good = false;
                }
            }
            index = run_end;
        }
        Ok(all_good)
    }

    /// R14: fsync, then rename into place; the state file goes last.
    fn publish(&mut self) -> Result<(), ClientError> {
        self.finish_background_save()?;
        self.part.sync_all().map_err(io_err("fsync partial file"))?;
        std::fs::rename(&self.part_path, &self.output)
            .map_err(io_err(format!("rename into {}", self.output.display())))?;
        if let Some(dir) = self.output.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        let _ = std::fs::remove_file(&self.state_path);
        Ok(())
    }
}
