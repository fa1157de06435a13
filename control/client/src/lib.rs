//! The client driver (`loopcast get`): a thin I/O loop around [`loopcast_proto::receiver::Receiver`].
//!
//! ```text
//!  Request ─▶ Offer(info, channel) ─▶ check root ─▶ open/resume <out>.part (+ .part.state)
//!  multicast: join group, wait for SYNC ─▶ Joined(Multicast) | no SYNC ─▶ Joined(Unicast) (R8)
//!  recvmmsg batch ─▶ Receiver::handle_datagram ─▶ Store{serial} ─▶ pwrite at the serial's slot
//!  every 250 ms Status; every 2 s fsync + save state; complete ─▶ re-hash data ─▶ fsync ─▶ rename
//! ```

mod check;
mod files;
pub mod follow;
pub mod state;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loopcast_archive::format::{archive_len, datagram_offset, superblock};
use loopcast_dataplane::recv::BatchReceiver;
use loopcast_proto::client::{ClientConfig, ClientEvent, ClientSession};
use loopcast_proto::info::{FileInfo, RootHash, DATAGRAM_SIZE_MAX};
use loopcast_proto::nak::{NakConfig, NakPlanner};
use loopcast_proto::receiver::{Outcome, Receiver, ReceiverCounters};
use loopcast_proto::rng::SeededRng;
use loopcast_proto::wire::control::{ControlMessage, RejectCode, Transport};

pub use follow::{FollowError, FollowOptions};

#[derive(Clone, Debug)]
pub struct GetConfig {
    /// The first address to ask: a server or a director.
    pub server: SocketAddr,
    /// More addresses to ask in turn (a fleet's directors, R18).
    pub alternates: Vec<SocketAddr>,
    /// The location to prefer when a director routes (R16), "" = any.
    pub location: String,
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
    /// Replace an existing output (else refused before anything is requested).
    pub force: bool,
    /// Local address of the client's socket (default: any address, an ephemeral port), e.g. a
    /// fixed port a firewall lets through.
    pub bind: Option<SocketAddr>,
    /// Refuse an encrypted file right after the Offer (e.g. `--extract` without a key database).
    pub needs_unencrypted: bool,
}

impl GetConfig {
    pub fn new(server: SocketAddr, name: &str, output: PathBuf) -> GetConfig {
        GetConfig {
            server,
            alternates: Vec::new(),
            location: String::new(),
            name: name.to_owned(),
            output,
            allow_multicast: true,
            multicast_interface: Ipv4Addr::UNSPECIFIED,
            expect_root: None,
            sync_timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            force: false,
            bind: None,
            needs_unencrypted: false,
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
    /// Datagrams from another host than the server (unicast), dropped unread.
    pub foreign_source_dropped: u64,
    /// Times the session was lost (server restart, expiry, shutdown) and asked for again.
    pub session_rerequests: u64,
    /// The server the file came from last, and how many servers were given up after silence
    /// and replaced through the fleet (R17).
    pub server: SocketAddr,
    pub failovers: u64,
    /// Wall clock (Unix ms) of the first new datagram after the last failover: with the time
    /// a server died, how long its clients went without data (`loopcast-bench failover`).
    pub data_again_after_failover_unix_ms: Option<u64>,
    /// From the start to the first datagram of the file, and the time spent making the
    /// finished file durable (final fsync and rename).
    pub first_datagram_after: Option<Duration>,
    pub publish_time: Duration,
    /// A file was at the output and the download replaced it (--force).
    pub replaced: bool,
    /// The whole-file check's time after the last datagram, and how many of the archive's
    /// groups it had already checked while the download ran (of `groups`); of those, how many
    /// by comparing them with what this run wrote (`check.rs`; the rest were hashed again).
    pub final_check_time: Duration,
    pub groups_checked_while_receiving: u32,
    pub groups_compared_while_receiving: u32,
    pub groups: u32,
    /// NAKs sent, and the serials they asked for (R10).
    pub naks_sent: u64,
    pub serials_naked: u64,
    /// Serials not asked for because another receiver had just asked (R10 suppression).
    pub serials_suppressed: u64,
    /// Serials not asked for because this client was losing most of what its tier sent: left
    /// for the loop to bring ([`loopcast_proto::nak::NakPlanner::is_overloaded`]).
    pub serials_left_to_loop: u64,
    /// The speed tier the server last put this client on (R11), and how often it moved.
    pub tier: Option<loopcast_proto::client::TierInfo>,
    pub tier_moves: u64,
    /// The round trip to the server, as measured with the reports (R12).
    pub rtt: Option<Duration>,
    /// `get --follow` (R13): bytes of the original written, and when the first one was
    /// (from the start).
    pub played_bytes: u64,
    pub first_play_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// `server`: every address asked, comma-separated (a fleet's directors).
    #[error("no answer from {server} within {seconds} s (is loopcastd running there?){}", earlier_part_note(part.as_deref()))]
    NoAnswer {
        server: String,
        seconds: u64,
        /// A partial download an earlier run left, kept (`None`: there is none, or the
        /// command was not a download).
        part: Option<PathBuf>,
    },
    #[error("{server} stopped answering for {seconds} s; {}: run the same command again{}", kept(part, *held, *total), hash_failure_note(*.failed_hash))]
    ServerLost {
        server: SocketAddr,
        seconds: u64,
        held: u32,
        total: u32,
        part: PathBuf,
        /// Datagrams that failed their hash check during the run.
        failed_hash: u64,
    },
    #[error("server refused: {message}{}", refused_part_note(part.as_deref(), *held, *total))]
    Rejected {
        code: RejectCode,
        message: String,
        /// The partial download kept: this run's (`held` of `total` datagrams), or one an
        /// earlier run left (`total` 0); `None` if there is none.
        part: Option<PathBuf>,
        held: u32,
        total: u32,
    },
    #[error("the file changed on the server since this download began (root {offered}, the partial download has {held_root}); run the same command again to download the new version: it starts over, replacing the partial download of the old one in {part}", part = .part.display())]
    FileChanged {
        offered: String,
        held_root: String,
        part: PathBuf,
    },
    #[error("{name} is encrypted and no key database was given to decrypt it: pass --keys (nothing was downloaded)")]
    NeedsKeys { name: String },
    /// `--follow` stopped the download: the player quit, or a frame failed.
    #[error("{source}; download stopped, {}: {}", kept(part, *held, *total), follow_stopped_advice(source))]
    FollowStopped {
        source: FollowError,
        held: u32,
        total: u32,
        part: PathBuf,
    },
    /// `--follow` failed to start, or after the download was complete and published.
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error(
        "server offered root {offered}, expected {expected}: refusing a forged or different file"
    )]
    RootMismatch { offered: String, expected: String },
    #[error(
        "no new data for {seconds} s; {}{}; run the same command again to resume",
        kept(part, *held, *total),
        hash_failure_note(*.failed_hash)
    )]
    Stalled {
        seconds: u64,
        held: u32,
        total: u32,
        part: PathBuf,
        /// Datagrams that failed their hash check during the run: what the stall may be made of.
        failed_hash: u64,
    },
    #[error("interrupted; {}", interrupted_note(part.as_deref(), *held, *total))]
    Interrupted {
        /// Datagrams held and in the file; both 0 if interrupted before the server offered
        /// the file.
        held: u32,
        total: u32,
        /// The partial download kept: this run's, or, interrupted before the offer, one an
        /// earlier run left (`None`: there is none).
        part: Option<PathBuf>,
    },
    #[error("{path} failed verification against the root and could not be repaired: {detail}; not published", path = .path.display())]
    VerificationFailed { path: PathBuf, detail: String },
    /// The output path is unusable (exists without --force, is a directory, a symlink ...).
    #[error(transparent)]
    Output(#[from] loopcast_archive::files::OutputError),
    #[error("{output}: another download to this output is running (it holds the lock on {part})", output = .output.display(), part = .part.display())]
    Locked { output: PathBuf, part: PathBuf },
    /// The disk filled while receiving: what was last saved is kept.
    #[error("disk full: {context}: {source}; {}: free some space and run the same command again to resume", kept(part, *held, *total))]
    DiskFullWhileReceiving {
        context: String,
        source: std::io::Error,
        held: u32,
        total: u32,
        part: PathBuf,
    },
    #[error("disk full: {path} needs {needed} more bytes, {available} bytes free", path = .path.display())]
    DiskFull {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
}

/// Where a stopped download's datagrams are kept (`part`, the partial file) and how many.
fn kept(part: &Path, held: u32, total: u32) -> String {
    format!(
        "partial download kept for resume in {} ({held}/{total} datagrams, {:.1} %)",
        part.display(),
        f64::from(held) * 100.0 / f64::from(total.max(1))
    )
}

/// Said when the server refused a download that has a partial download kept: this run's
/// (`total` > 0) or an earlier run's.
fn refused_part_note(part: Option<&Path>, held: u32, total: u32) -> String {
    const WHEN: &str = " once the server accepts";
    match part {
        Some(part) if total > 0 => format!(
            "; {}: run the same command again to resume{WHEN}",
            kept(part, held, total)
        ),
        Some(part) => earlier_part_note(Some(part)) + WHEN,
        None => String::new(),
    }
}

/// Said when the server never answered and a partial download an earlier run left is kept.
fn earlier_part_note(part: Option<&Path>) -> String {
    part.map_or_else(String::new, |part| {
        format!(
            "; the partial download an earlier run left in {} is kept: run the same command again to resume",
            part.display()
        )
    })
}

/// A partial download a failed `get` kept on disk, for scripts (`get --json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptPartial {
    pub path: PathBuf,
    /// Datagrams held and in the file, where known (not before the server offered it).
    pub datagrams: Option<(u32, u32)>,
}

impl ClientError {
    /// The partial download this failure left on disk, if any.
    pub fn kept_partial(&self) -> Option<KeptPartial> {
        let counted = |path: &Path, held: u32, total: u32| KeptPartial {
            path: path.to_owned(),
            datagrams: (total > 0).then_some((held, total)),
        };
        match self {
            ClientError::ServerLost {
                part, held, total, ..
            }
            | ClientError::Stalled {
                part, held, total, ..
            }
            | ClientError::FollowStopped {
                part, held, total, ..
            }
            | ClientError::DiskFullWhileReceiving {
                part, held, total, ..
            } => Some(counted(part, *held, *total)),
            ClientError::Interrupted {
                part: Some(part),
                held,
                total,
            } => Some(counted(part, *held, *total)),
            ClientError::Rejected {
                part: Some(part),
                held,
                total,
                ..
            } => Some(counted(part, *held, *total)),
            ClientError::NoAnswer {
                part: Some(part), ..
            }
            | ClientError::FileChanged { part, .. } => Some(counted(part, 0, 0)),
            _ => None,
        }
    }
}

/// What an interrupted download kept (see [`ClientError::Interrupted`]).
fn interrupted_note(part: Option<&Path>, held: u32, total: u32) -> String {
    match part {
        Some(part) if total > 0 => format!(
            "{}; run the same command again to resume",
            kept(part, held, total)
        ),
        Some(part) => format!(
            "the server had not answered yet; the partial download an earlier run left in {} is kept: run the same command again to resume",
            part.display()
        ),
        None => "the server had not answered yet; nothing was downloaded".to_owned(),
    }
}

/// Said after a stall or a lost server when datagrams failed their hash check: a loop that
/// keeps bringing bad copies of what is missing looks like no new data, and the cause is
/// the archive the server sends, not the network.
fn hash_failure_note(failed_hash: u64) -> String {
    match failed_hash {
        0 => String::new(),
        1 => "; 1 datagram failed its hash check: the server may be serving a damaged or forged archive".to_owned(),
        n => format!("; {n} datagrams failed their hash check: the server may be serving a damaged or forged archive"),
    }
}

/// What to do after `--follow` stopped a download: run it again, after mending what stopped it
/// where running it again as it is would stop at the same place.
fn follow_stopped_advice(source: &FollowError) -> &'static str {
    match source {
        FollowError::Write(error) if loopcast_archive::files::is_disk_full(error) => {
            "make room where the played bytes go (standard output; the download itself had room), then run the same command again"
        }
        FollowError::Key(_)
        | FollowError::Archive(loopcast_archive::ArchiveError::DecryptFailed { .. }) => {
            "check the key database given with --keys, then run the same command again"
        }
        _ => "run the same command again",
    }
}

/// Any address and an ephemeral port of `peer`'s family: where a client's socket binds.
fn any_port_like(peer: SocketAddr) -> SocketAddr {
    if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
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
/// The group socket's receive timeout while the session waits for its first Sync: its
/// SyncWanted retries are due 10 and 30 ms apart, and nothing else arrives then.
const SYNCING_RECEIVE_TIMEOUT: Duration = Duration::from_millis(5);
/// Buffers taken per recvmmsg.
const RECEIVE_BATCH: usize = 64;
/// Longest random wait before a multicast receiver asks for a gap (R10's Timer A): long enough
/// for another receiver's NAK, relayed by the server, to arrive first.
const NAK_SUPPRESSION_DELAY: Duration = Duration::from_millis(20);
/// Serials behind the join point asked ahead of the loop and not yet arrived, at most (about
/// 3 MB at 1440 bytes: a few tens of milliseconds of repairs at the default rate).
const NAK_BACKLOG_WINDOW: u32 = 2048;
/// Datagrams hashed together (the multi-lane hasher's width).
const HASH_GROUP: usize = 16;
/// Datagrams in a batch from which hashing is spread over threads: only a receiver that has
/// fallen behind (a GRO batch this big is ~1.4 MB queued). One core hashes well over 10 Gbit/s
/// with the multi-lane hasher, and rayon's idle workers spin (sched_yield) after every parallel
/// batch: from 32 datagrams on, a 1 GiB download cost 2.70-2.73 CPU seconds, 0.7 of them in
/// sched_yield; hashing on the receiving thread, 1.83-1.99 (docs/performance.md).
const PARALLEL_HASH_MIN: usize = 1024;
/// Receive buffer per slot when UDP GRO is on (a GRO super-datagram is at most 64 KiB).
const GRO_SLOT_BYTES: usize = 65_536;
/// Whole-file checks that may fail (each re-receiving what failed) before giving up.
const FINAL_CHECK_ATTEMPTS_MAX: u32 = 3;
/// Datagrams written per pwritev at most (below IOV_MAX).
const WRITE_IOVECS_MAX: usize = 256;

/// A control datagram that arrived with the data (SYNC or the server's replies), for the
/// session machine.
struct ControlIn {
    from: SocketAddr,
    bytes: Vec<u8>,
}

fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        // No OS randomness: ids become guessable, nothing else changes.
        seed[..8].copy_from_slice(&random_seed().to_le_bytes());
    }
    seed
}

/// Downloads one file. Blocks until it is published, fails, or `cancel` is set.
///
/// The session rules (request, SYNC or fallback, status, re-request after a lost session,
/// leave) are `loopcast_proto::client::ClientSession`'s; this drives it with sockets, files and
/// the clock.
pub fn get(
    config: &GetConfig,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<GetReport, ClientError> {
    get_following(config, None, cancel, progress)
}

/// As [`get`]; with `follow` (R13, `get --follow`), the original's bytes are also written, in
/// order, to `follow.sink` as soon as they are verified (see [`follow`]), and the missing
/// datagrams nearest the play position are asked for first.
pub fn get_following(
    config: &GetConfig,
    follow: Option<FollowOptions>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<GetReport, ClientError> {
    get_following_inner(config, follow, cancel, progress)
        .map_err(|error| full_disk_kept_partial(error, &config.output))
}

/// A disk that filled while receiving stops the download where it was last saved: the
/// partial download and its saved state stay for a resume once there is room, and the error
/// says so (new-user review s25: "disk full: save x.lca.part.state: …", and `--json` said
/// nothing was kept while the `.part` was there and resumed).
fn full_disk_kept_partial(error: ClientError, output: &Path) -> ClientError {
    let ClientError::Io { context, source } = error else {
        return error;
    };
    let part = with_suffix(output, ".part");
    let saved = loopcast_archive::files::is_disk_full(&source)
        .then(|| peek_saved_state(output))
        .flatten();
    match saved {
        Some((_, have)) if part.is_file() => ClientError::DiskFullWhileReceiving {
            context,
            source,
            held: have.count_ones(),
            total: have.len(),
            part,
        },
        _ => ClientError::Io { context, source },
    }
}

fn get_following_inner(
    config: &GetConfig,
    follow: Option<FollowOptions>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<GetReport, ClientError> {
    let started = Instant::now();
    let mut follow_options = follow;
    let mut follow: Option<follow::FollowWriter> = None;
    let clock = loopcast_proto::time::MonotonicClock::new();
    // Before any traffic: the output is usable and no other download holds it.
    let mut part = Some(files::PartFile::prepare(config)?);
    let bind = config.bind.unwrap_or_else(|| any_port_like(config.server));
    let control =
        loopcast_dataplane::socket::bind_udp(bind).map_err(io_err("bind client socket"))?;
    loopcast_dataplane::socket::set_receive_timeout(&control, RECEIVE_TIMEOUT)
        .map_err(io_err("set receive timeout"))?;
    // Unicast data arrives on this socket.
    grow_receive_buffer(&control);
    let mut session_config = ClientConfig::new(config.server, &config.name);
    session_config.multicast_ok = config.allow_multicast;
    session_config.alternates = config.alternates.clone();
    session_config.location = config.location.clone();
    session_config.root = config.expect_root;
    session_config.resume_at = saved_resume_point(&config.output);
    session_config.sync_timeout = config.sync_timeout;
    session_config.request_timeout = config.request_timeout;
    session_config.rerequest_timeout = config.stall_timeout.max(config.request_timeout);
    let mut session =
        ClientSession::new(session_config, SeededRng::from_seed(os_seed()), clock.now());
    let mut control_inbox = inbox_for(&control);
    let mut multicast: Option<(UdpSocket, BatchReceiver)> = None;
    let mut download: Option<Download> = None;
    let mut transport = Transport::Unicast;
    let mut transport_note = String::new();
    let mut last_status = Instant::now();
    let mut last_save = Instant::now();
    let mut last_new_data = Instant::now();
    let mut root_seen: Option<RootHash> = None;
    let mut control_nonblocking = false;
    // Whether the group socket has SYNCING_RECEIVE_TIMEOUT (else RECEIVE_TIMEOUT, as made).
    let mut group_timeout_short = false;
    let mut resumed_datagrams = 0;
    let mut failovers_seen = 0;
    let mut data_again_after_failover_unix_ms = None;
    let send_all = |session: &mut ClientSession| {
        while let Some((to, bytes)) = session.poll_transmit() {
            if tracing::enabled!(tracing::Level::DEBUG) {
                log_report(&bytes, session.tier());
            }
            let _ = control.send_to(&bytes, to);
        }
    };
    loop {
        let now = clock.now();
        session.handle_timeout(now);
        send_all(&mut session);
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::Offered {
                    transport: offered,
                    channel,
                    info,
                    ..
                } => {
                    let root = info.root();
                    if let Some(expected) = config.expect_root {
                        if expected != root {
                            session.leave(clock.now());
                            send_all(&mut session);
                            return Err(ClientError::RootMismatch {
                                offered: root.to_hex(),
                                expected: expected.to_hex(),
                            });
                        }
                    }
                    if let Some(first) = root_seen.filter(|&r| r != root) {
                        session.leave(clock.now());
                        send_all(&mut session);
                        if let Some(download) = download.as_mut() {
                            download.save()?;
                        }
                        return Err(ClientError::FileChanged {
                            offered: root.to_hex(),
                            held_root: first.to_hex(),
                            part: with_suffix(&config.output, ".part"),
                        });
                    }
                    if config.needs_unencrypted && info.encrypted {
                        session.leave(clock.now());
                        send_all(&mut session);
                        return Err(ClientError::NeedsKeys {
                            name: info.name.to_string(),
                        });
                    }
                    root_seen = Some(root);
                    tracing::info!(file = %info.name, root = %root.to_hex(), transport = %offered, %channel, "offer accepted");
                    if download.is_none() {
                        // R13: the key is looked up before anything is received.
                        if let Some(options) = follow_options.take() {
                            let part_path = with_suffix(&config.output, ".part");
                            match follow::FollowWriter::start(options, &info, &part_path) {
                                Ok(writer) => follow = Some(writer),
                                Err(error) => {
                                    session.leave(clock.now());
                                    send_all(&mut session);
                                    return Err(error.into());
                                }
                            }
                        }
                        let part = part.take().expect("opened once");
                        let opened = Download::open(config, &info, root, part)?;
                        resumed_datagrams = opened.receiver.have().count_ones();
                        download = Some(opened);
                    } else if let Some(download) = download.as_mut() {
                        // Asked again (a lost session, another server): a new loop, whose
                        // position has nothing to do with the old one's asks (what is held
                        // stays).
                        download.nak.rejoin();
                    }
                    multicast = None;
                    if offered == Transport::Multicast {
                        match join_group(channel, config.multicast_interface) {
                            Ok(joined) => {
                                multicast = Some(joined);
                                group_timeout_short = false;
                                session.multicast_joined(clock.now());
                                send_all(&mut session);
                            }
                            Err(error) => session.multicast_unavailable(
                                clock.now(),
                                format!("cannot join {channel}: {error}; fell back to unicast"),
                            ),
                        }
                    }
                    last_new_data = Instant::now();
                }
                ClientEvent::Joined {
                    transport: joined,
                    note,
                } => {
                    if joined == Transport::Unicast && multicast.is_some() {
                        tracing::warn!(%note, "multicast unavailable");
                        multicast = None;
                    }
                    transport = joined;
                    transport_note = note;
                    if let Some(download) = download.as_mut() {
                        // On a unicast channel a NAK is sent at once (R10).
                        download.nak.set_suppression(match joined {
                            Transport::Unicast => None,
                            Transport::Multicast => Some(NAK_SUPPRESSION_DELAY),
                        });
                        // Ask for the gaps behind the join point ahead of the loop (resume time
                        // follows what is missing). On multicast repairs reach every receiver,
                        // so only a resumed client does it there.
                        let backlog = joined == Transport::Unicast || resumed_datagrams > 0;
                        download.nak.set_backlog_window(if backlog {
                            NAK_BACKLOG_WINDOW
                        } else {
                            0
                        });
                    }
                }
                ClientEvent::Rejected { code, message } => {
                    let (part, held, total) = match download.as_mut() {
                        Some(download) => {
                            download.save()?;
                            (
                                Some(download.part_path.clone()),
                                download.receiver.have().count_ones(),
                                download.receiver.shape().loop_len(),
                            )
                        }
                        None => (
                            part.as_ref()
                                .filter(|part| part.left_by_an_earlier_run())
                                .map(|part| part.path().to_owned()),
                            0,
                            0,
                        ),
                    };
                    return Err(ClientError::Rejected {
                        code,
                        message,
                        part,
                        held,
                        total,
                    });
                }
                ClientEvent::NoAnswer => {
                    if let Some(download) = download.as_mut() {
                        download.save()?;
                        return Err(ClientError::ServerLost {
                            server: session.peer(),
                            seconds: config.stall_timeout.max(config.request_timeout).as_secs(),
                            held: download.receiver.have().count_ones(),
                            total: download.receiver.shape().loop_len(),
                            part: download.part_path.clone(),
                            failed_hash: download.receiver.counters().failed_hash(),
                        });
                    }
                    return Err(ClientError::NoAnswer {
                        server: std::iter::once(&config.server)
                            .chain(&config.alternates)
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        seconds: config.request_timeout.as_secs(),
                        part: part
                            .as_ref()
                            .filter(|part| part.left_by_an_earlier_run())
                            .map(|part| part.path().to_owned()),
                    });
                }
                ClientEvent::SessionLost { reason } => {
                    tracing::warn!(%reason, "session lost; asking again and continuing from what is held");
                }
                ClientEvent::Moved {
                    transport: moved,
                    channel,
                    tier,
                    tiers,
                    rate_bits_per_s,
                } => {
                    tracing::info!(
                        tier = format_args!("{}/{}", tier + 1, tiers),
                        rate = %loopcast_proto::rate::format_rate(rate_bits_per_s),
                        %channel,
                        "moved to another speed tier (what is held is kept)"
                    );
                    // The new tier's loop is elsewhere: what was asked of the old one is
                    // not asked again of it (what is held stays).
                    if let Some(download) = download.as_mut() {
                        download.nak.rejoin();
                    }
                    // Multicast: the new tier is another group. Leave the old one first (its
                    // datagrams would only interleave with the new tier's loop).
                    if moved == Transport::Multicast && multicast.is_some() {
                        drop(multicast.take());
                        match join_group(channel, config.multicast_interface) {
                            Ok(joined) => {
                                multicast = Some(joined);
                                group_timeout_short = false;
                            }
                            Err(error) => {
                                tracing::warn!(%channel, %error, "cannot join the new tier's group; asking again");
                                session.leave(clock.now());
                                send_all(&mut session);
                                if let Some(download) = download.as_mut() {
                                    download.save()?;
                                }
                                return Err(io_err(format!("join {channel}"))(error));
                            }
                        }
                    }
                }
            }
        }
        send_all(&mut session);
        // On multicast the data comes from the group and the control socket is only polled for
        // the server's replies: non-blocking then, switched once, not per batch.
        if let Some((socket, _)) = multicast.as_ref() {
            let syncing = session.transport().is_none();
            if syncing != group_timeout_short {
                let timeout = if syncing {
                    SYNCING_RECEIVE_TIMEOUT
                } else {
                    RECEIVE_TIMEOUT
                };
                loopcast_dataplane::socket::set_receive_timeout(socket, timeout)
                    .map_err(io_err("set group socket receive timeout"))?;
                group_timeout_short = syncing;
            }
        }
        if multicast.is_some() != control_nonblocking {
            control_nonblocking = multicast.is_some();
            control
                .set_nonblocking(control_nonblocking)
                .map_err(io_err("set control socket blocking mode"))?;
        }
        let Some(download) = download.as_mut() else {
            // Waiting for an Offer: only the server's replies matter.
            let batch = receive_control_only(&mut control_inbox, &control)?;
            for message in batch {
                session.handle_control(clock.now(), message.from, &message.bytes);
            }
            if cancel.load(Ordering::Relaxed) {
                // A partial download an earlier run left is still there (new-user review: "nothing
                // was downloaded yet" read as if it were gone); one this run made is removed.
                let earlier = part.as_ref().filter(|part| part.left_by_an_earlier_run());
                return Err(ClientError::Interrupted {
                    held: 0,
                    total: 0,
                    part: earlier.map(|part| part.path().to_owned()),
                });
            }
            continue;
        };
        let total = download.receiver.shape().loop_len();
        let held = download.receiver.have().count_ones();
        if download.receiver.is_complete() && download.final_check()? {
            break;
        }
        if cancel.load(Ordering::Relaxed) {
            download.save()?;
            session.leave(clock.now());
            send_all(&mut session);
            return Err(ClientError::Interrupted {
                held,
                total,
                part: Some(download.part_path.clone()),
            });
        }
        if last_new_data.elapsed() > config.stall_timeout {
            download.save()?;
            session.leave(clock.now());
            send_all(&mut session);
            return Err(ClientError::Stalled {
                seconds: config.stall_timeout.as_secs(),
                held,
                total,
                part: download.part_path.clone(),
                failed_hash: download.receiver.counters().failed_hash(),
            });
        }
        session.set_progress(held, total);
        if last_status.elapsed() >= STATUS_INTERVAL {
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
        // Data comes from the group (multicast) or with the server's replies (unicast); on
        // multicast the control socket is still read for the server's replies (Ended).
        let outcome = match multicast.as_mut() {
            Some((socket, inbox)) => {
                let from_group = download.receive_batch(inbox, socket, None, &mut session)?;
                let replies = receive_control_only(&mut control_inbox, &control)?;
                BatchResult {
                    controls: from_group.controls.into_iter().chain(replies).collect(),
                    ..from_group
                }
            }
            None => download.receive_batch(
                &mut control_inbox,
                &control,
                Some(session.peer()),
                &mut session,
            )?,
        };
        let now = clock.now();
        if outcome.stored > 0 {
            last_new_data = Instant::now();
            if session.failovers() > failovers_seen {
                failovers_seen = session.failovers();
                data_again_after_failover_unix_ms = Some(loopcast_proto::time::unix_time_ms());
            }
        }
        if outcome.seen > 0 {
            session.handle_data(now);
        }
        for message in outcome.controls {
            match ControlMessage::parse(&message.bytes) {
                Ok(ControlMessage::Sync { file_id, .. }) => session.handle_sync(now, file_id),
                _ => session.handle_control(now, message.from, &message.bytes),
            }
        }
        // R13: play what is verified; ask first for what playback waits for.
        if let Some(follow) = follow.as_mut() {
            if let Err(source) = follow.advance(&mut download.receiver, &download.part) {
                download.save()?;
                session.leave(now);
                send_all(&mut session);
                return Err(ClientError::FollowStopped {
                    source,
                    held: download.receiver.have().count_ones(),
                    total,
                    part: download.part_path.clone(),
                });
            }
            let wanted = follow.wanted_serial(&download.receiver);
            download.nak.set_play_position(wanted);
        }
        // R10: ask for what went by without arriving (at most one NAK per interval), and
        // again only once what was asked before it could have been sent. The tier's rate
        // says how fast its repairs come, and how far its loop can go between datagrams.
        let datagram_bits = f64::from(download.receiver.info().datagram_size) * 8.0;
        download.nak.set_loop_rate(
            session
                .tier()
                .map(|tier| tier.rate_bits_per_s as f64 / datagram_bits),
        );
        if let Some(ranges) = download.nak.poll_nak(now) {
            session.send_nak(ranges);
        }
        if let Some(checker) = download.checker.as_mut() {
            checker.poll(now, download.receiver.have());
        }
    }
    let mut download = download.expect("the loop ends only with a download");
    let total = download.receiver.shape().loop_len();
    session.set_progress(total, total);
    session.complete(clock.now());
    send_all(&mut session);
    progress(Progress {
        held: total,
        total,
        archive_bytes: download.archive_bytes,
    });
    let publish_started = Instant::now();
    let replaced = download.publish()?;
    let publish_time = publish_started.elapsed();
    let (played_bytes, first_play_at) = match follow {
        Some(follow) => follow.finish(&mut download.receiver, &download.part, cancel)?,
        None => (0, None),
    };
    Ok(GetReport {
        first_datagram_after: download.first_datagram_at.map(|at| at - started),
        publish_time,
        replaced,
        final_check_time: download.final_check_time,
        groups_checked_while_receiving: download.groups_checked_early,
        groups_compared_while_receiving: download.groups_compared_early,
        groups: download.groups,
        transport,
        transport_note,
        root: download.root,
        join_serial: download.join_serial,
        resumed_datagrams,
        elapsed: started.elapsed(),
        archive_bytes: download.archive_bytes,
        counters: download.receiver.counters(),
        oversize_dropped: download.oversize_dropped,
        foreign_source_dropped: download.foreign_source_dropped,
        session_rerequests: session.rerequests(),
        server: session.peer(),
        failovers: session.failovers(),
        data_again_after_failover_unix_ms,
        naks_sent: download.nak.naks_sent(),
        serials_naked: download.nak.serials_naked(),
        serials_suppressed: download.nak.serials_suppressed(),
        serials_left_to_loop: download.nak.serials_left_to_loop(),
        tier: session.tier(),
        tier_moves: session.moves(),
        rtt: session.rtt(),
        played_bytes,
        first_play_after: first_play_at.map(|at| at - started),
        info: download.receiver.info().clone(),
    })
}

/// A socket on the multicast group `channel` (receive timeout set, GRO where the kernel has it)
/// and its batch buffers.
fn join_group(
    channel: SocketAddr,
    interface: Ipv4Addr,
) -> std::io::Result<(UdpSocket, BatchReceiver)> {
    let group = match channel {
        SocketAddr::V4(v4) => *v4.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let socket =
        loopcast_dataplane::socket::bind_multicast_receiver(group, channel.port(), interface)?;
    loopcast_dataplane::socket::set_receive_timeout(&socket, RECEIVE_TIMEOUT)?;
    grow_receive_buffer(&socket);
    let inbox = inbox_for(&socket);
    Ok((socket, inbox))
}

/// A data socket's receive buffer as large as the kernel allows, up to
/// `RECEIVER_BUFFER_BYTES`; a warning (once) when the kernel's cap leaves it under a quarter
/// of that, since then a receiver descheduled for a moment at a high rate loses datagrams.
fn grow_receive_buffer(socket: &UdpSocket) {
    use loopcast_dataplane::socket::RECEIVER_BUFFER_BYTES;
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    match loopcast_dataplane::socket::grow_receive_buffer(socket) {
        Ok(granted) if granted >= RECEIVER_BUFFER_BYTES / 4 => {}
        Ok(granted) => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    granted_bytes = granted,
                    asked_bytes = RECEIVER_BUFFER_BYTES,
                    "the kernel caps this socket's receive buffer (net.core.rmem_max): at high rates datagrams will be lost and asked for again; raise it with `sysctl -w net.core.rmem_max={RECEIVER_BUFFER_BYTES}`"
                );
            }
        }
        Err(error) => tracing::debug!(%error, "receive buffer not grown"),
    }
}

/// Batch buffers for `socket`, with UDP GRO turned on where the kernel has it (then one receive
/// can carry up to 64 KiB of coalesced datagrams).
fn inbox_for(socket: &UdpSocket) -> BatchReceiver {
    let slot = if loopcast_dataplane::recv::enable_gro(socket) {
        GRO_SLOT_BYTES
    } else {
        usize::from(DATAGRAM_SIZE_MAX) + 1
    };
    BatchReceiver::new(RECEIVE_BATCH, slot)
}

/// Control datagrams only (before an Offer, or beside a multicast group), waiting up to the
/// receive timeout if the socket blocks.
fn receive_control_only(
    inbox: &mut BatchReceiver,
    socket: &UdpSocket,
) -> Result<Vec<ControlIn>, ClientError> {
    let count = match inbox.receive(socket) {
        Ok(count) => count,
        // ICMP port unreachable from an earlier send: the server is not up (yet).
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => 0,
        Err(e) => return Err(io_err("receive")(e)),
    };
    let mut out = Vec::new();
    for index in 0..count {
        let received = inbox.datagram(index);
        let Some(from) = received.source else {
            continue;
        };
        for bytes in received.segments() {
            if ControlMessage::is_control(bytes) {
                out.push(ControlIn {
                    from,
                    bytes: bytes.to_vec(),
                });
            }
        }
    }
    Ok(out)
}

struct BatchResult {
    /// New datagrams stored, and datagrams of the file seen at all (stored or duplicate).
    stored: usize,
    seen: usize,
    controls: Vec<ControlIn>,
}

struct Download {
    part_path: PathBuf,
    state_path: PathBuf,
    /// `<out>.part`, locked for the whole download.
    part: files::PartFile,
    root: RootHash,
    receiver: Receiver,
    archive_bytes: u64,
    join_serial: Option<u32>,
    first_datagram_at: Option<Instant>,
    oversize_dropped: u64,
    foreign_source_dropped: u64,
    /// Whole-file checks failed so far (each is followed by re-receiving what failed).
    final_check_failures: u32,
    /// The whole-file check, done group by group as groups become whole (until a check at
    /// the end fails: then the whole file is checked at once, as before).
    checker: Option<check::GroupChecker>,
    final_check_time: Duration,
    groups_checked_early: u32,
    groups_compared_early: u32,
    groups: u32,
    /// A periodic save running beside the receive loop, so its fsync never stalls receiving.
    saver: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// Reused per batch: (serial, slot, offset, length) of datagrams to write.
    to_store: Vec<ToStore>,
    /// What went by without arriving, to ask for ahead of the loop (R10).
    nak: NakPlanner,
    clock: loopcast_proto::time::MonotonicClock,
    /// Reused per batch: (slot, offset, length, needs hashing) of the file's datagrams, their
    /// bytes, and their hashes.
    segments: Vec<Segment>,
    slices: Vec<&'static [u8]>,
    hashes: Vec<[u8; 32]>,
}

/// A datagram of a received batch to write: its serial, where its bytes are in the batch
/// (`slot`, from `at`, `len` bytes), and whether the receiver had proven it (else it is pending
/// until its parent arrives).
#[derive(Clone, Copy)]
struct ToStore {
    serial: u32,
    slot: usize,
    at: usize,
    len: usize,
    verified: bool,
}

impl ToStore {
    /// Its bytes in the batch `inbox` received.
    fn bytes<'a>(&self, inbox: &'a BatchReceiver) -> &'a [u8] {
        &inbox.datagram(self.slot).bytes[self.at..self.at + self.len]
    }
}

/// Sorts datagrams to store by serial (stably) and keeps, of a serial stored twice in one
/// batch (a pending copy rejected, then the genuine one accepted), the one accepted last: what
/// is on disk for a serial is always the datagram whose hash the receiver accepted. Returns
/// how many are kept, at the front.
fn last_of_each_serial(stored: &mut [ToStore]) -> usize {
    stored.sort_by_key(|entry| entry.serial);
    let mut kept = 0;
    for index in 0..stored.len() {
        if index + 1 < stored.len() && stored[index + 1].serial == stored[index].serial {
            continue;
        }
        stored[kept] = stored[index];
        kept += 1;
    }
    kept
}

/// A seed for the NAK planner's random delays, from the OS (a fixed one if it is unavailable:
/// suppression then works less well, nothing else changes).
fn random_seed() -> u64 {
    os_random().unwrap_or(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()))
}

/// 64 random bits from the OS, if it has them.
fn os_random() -> Option<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// One datagram of the file in a received batch: where it sits.
#[derive(Clone, Copy)]
struct Segment {
    slot: usize,
    offset: usize,
    len: usize,
    /// The serial of a datagram of our file with a sound header, and whether it is the loop's
    /// progress (for the loss meter).
    metered: Option<loopcast_proto::client::Metered>,
}

/// Asks the kernel to drop the cached pages of `ranges` of `file` (advice: a page still dirty,
/// written again since the fsync before this, stays; nothing written is lost, and a later read
/// comes from the disk). Errors are ignored, as advice may be.
fn drop_cached(file: &std::fs::File, ranges: &[core::ops::Range<u64>]) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    for range in ranges {
        let (Ok(start), Ok(len)) = (
            i64::try_from(range.start),
            i64::try_from(range.end - range.start),
        ) else {
            continue;
        };
        let _ = posix_fadvise(file, start, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
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

/// R14: where the loop for a partial download from an earlier run should start: at the
/// beginning of the longest stretch it lacks (for a download that was stopped, where it
/// stopped). Without it a channel opened for the client started at serial 0, and a client
/// that held the first half received that half again before the rest. `None` without a
/// usable saved state (and nothing is sent then). The state is checked against the Offer's
/// root later, as before; a stale one costs nothing but where the loop starts.
fn saved_resume_point(output: &Path) -> Option<u32> {
    // Quietly: an unusable state is said once, when the Offer shows what it should be.
    let (_, have) = peek_saved_state(output)?;
    have.longest_clear_run_start()
}

/// The root and held datagrams of `output`'s saved download state, read before (or without)
/// an Offer to check it against; `None` if there is none or it is unusable.
fn peek_saved_state(output: &Path) -> Option<(RootHash, loopcast_proto::bitmap::Bitmap)> {
    let bytes = loopcast_archive::files::read_small_file(
        &with_suffix(output, ".part.state"),
        state::encoded_len_max(RESUME_PEEK_LOOP_MAX),
    )
    .ok()
    .flatten()?;
    state::peek(&bytes)
}

/// The longest loop whose saved state is read before the Offer (2^30 datagrams: over a
/// terabyte), so an odd file beside the output is never read whole.
const RESUME_PEEK_LOOP_MAX: u32 = 1 << 30;

impl Download {
    /// Opens the partial archive, resuming from `.part.state` when it matches this root.
    /// The partial file's blocks are all allocated here, after the Offer and before receiving.
    fn open(
        config: &GetConfig,
        info: &FileInfo,
        root: RootHash,
        mut part: files::PartFile,
    ) -> Result<Download, ClientError> {
        let part_path = part.path().to_owned();
        let state_path = with_suffix(&config.output, ".part.state");
        let archive_bytes = archive_len(info);
        let saved = files::read_state(&state_path, state::encoded_len_max(info.loop_len));
        let previous = saved
            .as_ref()
            .and_then(|bytes| state::decode(bytes, &root, info.loop_len));
        if saved.is_some() && previous.is_none() {
            tracing::warn!(
                state = %state_path.display(),
                "the partial download belongs to another version of the file (or its state is damaged); starting over"
            );
        }
        let part_len = part.metadata().map_err(io_err("stat partial file"))?.len();
        if saved.is_none() && part_len > 0 {
            tracing::warn!(
                part = %part_path.display(),
                "a partial download without its state (.part.state): what it holds is not known; starting over"
            );
        }
        if previous.is_some() && part_len != archive_bytes {
            tracing::warn!(
                part = %part_path.display(),
                bytes = part_len,
                expected = archive_bytes,
                "the partial download's data is missing or cut short (its state says what was held, the file does not have it); starting over"
            );
        }
        let receiver = match previous {
            Some(have) if part_len == archive_bytes => {
                let claimed = have.count_ones();
                part.reserve(archive_bytes, false)?;
                let size = usize::from(info.datagram_size);
                let receiver = Receiver::resume(info.clone(), have, |serial| {
                    let mut bytes = vec![0u8; size];
                    part.read_exact_at(&mut bytes, datagram_offset(info, serial))
                        .ok()?;
                    Some(bytes)
                });
                let held = receiver.have().count_ones();
                tracing::info!(held, total = info.loop_len, "resuming partial download");
                if held < claimed {
                    tracing::warn!(
                        claimed,
                        held,
                        "some of what the partial download's state says it held did not verify (the data was changed or lost): it is received again"
                    );
                }
                receiver
            }
            _ => {
                part.reserve(archive_bytes, true)?;
                Receiver::new(info.clone())
            }
        };
        part.write_all_at(&superblock(info), 0)
            .map_err(io_err("write partial file"))?;
        let checker = check::GroupChecker::start(
            &part_path,
            &part,
            &loopcast_dataplane::hash_lanes::hash_many,
            os_random().or_else(|| {
                tracing::warn!("no randomness from the OS: every group of the partial file is hashed again before publishing (nothing compared with what was written)");
                None
            }),
        );
        let nak_config = NakConfig {
            // Multicast until the transport says otherwise (R10 suppression, Timer A).
            suppression_delay: Some(NAK_SUPPRESSION_DELAY),
            random_seed: random_seed(),
            ..NakConfig::default()
        };
        Ok(Download {
            part_path,
            state_path,
            part,
            root,
            archive_bytes,
            join_serial: None,
            first_datagram_at: None,
            oversize_dropped: 0,
            foreign_source_dropped: 0,
            final_check_failures: 0,
            groups: checker.as_ref().map_or(0, |c| c.groups()),
            checker,
            final_check_time: Duration::ZERO,
            groups_checked_early: 0,
            groups_compared_early: 0,
            saver: None,
            to_store: Vec::with_capacity(RECEIVE_BATCH * 64),
            nak: NakPlanner::new(nak_config, receiver.have()),
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
        source: Option<SocketAddr>,
        session: &mut ClientSession,
    ) -> Result<BatchResult, ClientError> {
        let count = match inbox.receive(socket) {
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => 0,
            Err(e) => return Err(io_err("receive")(e)),
        };
        let now = self.clock.now();
        let mut result = BatchResult {
            stored: 0,
            seen: 0,
            controls: Vec::new(),
        };
        // (serial, slot, offset in the slot) of each datagram to store, written in runs below.
        let mut to_store = std::mem::take(&mut self.to_store);
        to_store.clear();
        // Pass 1: find the file's datagrams (SYNC and other control messages handled here),
        // as (slot, offset, length), and whether each still needs hashing (not yet held).
        let mut segments = std::mem::take(&mut self.segments);
        segments.clear();
        let file_id = self.receiver.info().file_id;
        for index in 0..count {
            let received = inbox.datagram(index);
            if received.truncated {
                self.oversize_dropped += 1;
                continue;
            }
            let Some(from) = received.source else {
                continue;
            };
            // Unicast: the file's datagrams come from the server's host only (its sender
            // threads use their own ports); anything else is counted and dropped unread.
            let foreign = source
                .is_some_and(|server| from.ip() != server.ip() && !server.ip().is_unspecified());
            let mut offset = 0usize;
            for bytes in received.segments() {
                let at = offset;
                offset += bytes.len();
                if ControlMessage::is_control(bytes) {
                    match ControlMessage::parse(bytes) {
                        // R10 suppression: another receiver asked for these; we need not.
                        Ok(ControlMessage::NakHeard { file_id, ranges })
                            if file_id == self.receiver.info().file_id =>
                        {
                            self.nak.heard(self.clock.now(), &ranges);
                        }
                        Ok(_) => result.controls.push(ControlIn {
                            from,
                            bytes: bytes.to_vec(),
                        }),
                        Err(_) => {}
                    }
                    continue;
                }
                if foreign {
                    self.foreign_source_dropped += 1;
                    continue;
                }
                // R12: its place in the loop, from its header (judged against the NAK
                // frontier in pass 3, in order: `ClientSession::account_datagram`).
                let metered = loopcast_proto::client::metered(bytes, file_id);
                // Every datagram is hashed, held ones too: a duplicate counts for the loop's
                // position only once proven genuine.
                segments.push(Segment {
                    slot: index,
                    offset: at,
                    len: bytes.len(),
                    metered,
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
        // Sixteen datagrams per multi-lane BLAKE3 pass (`hash_lanes`); a group with nothing new
        // is skipped, one with some held datagrams is hashed whole (cheaper than splitting it).
        if segments.len() >= PARALLEL_HASH_MIN && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            hashes
                .par_chunks_mut(HASH_GROUP)
                .zip(slices.par_chunks(HASH_GROUP))
                .for_each(|(hashes, bytes)| {
                    loopcast_dataplane::hash_lanes::hash_many(bytes, hashes)
                });
        } else {
            hashes
                .chunks_mut(HASH_GROUP)
                .zip(slices.chunks(HASH_GROUP))
                .for_each(|(hashes, bytes)| {
                    loopcast_dataplane::hash_lanes::hash_many(bytes, hashes)
                });
        }
        // Pass 3: accept in order.
        for ((segment, bytes), hash) in segments.iter().zip(slices.iter()).zip(hashes.iter()) {
            let outcome = self.receiver.handle_datagram_hashed(bytes, Some(hash));
            session.account_datagram(&mut self.nak, segment.metered, &outcome, now);
            match outcome {
                Outcome::Store { serial, verified } => {
                    if self.join_serial.is_none() {
                        self.join_serial = Some(serial);
                        self.first_datagram_at = Some(Instant::now());
                    }
                    // Receiving our file's datagrams on the channel proves it works, like SYNC.
                    result.stored += 1;
                    result.seen += 1;
                    to_store.push(ToStore {
                        serial,
                        slot: segment.slot,
                        at: segment.offset,
                        len: segment.len,
                        verified,
                    });
                }
                Outcome::Duplicate { .. } => result.seen += 1,
                Outcome::Dropped(_) => {}
            }
        }
        // Ask at once for the hash blocks that what was held unverified waits for (a mid-loop
        // join's ancestors lie behind it in the loop).
        loopcast_proto::client::want_what_verification_needs(&mut self.receiver, &mut self.nak);
        self.slices = recycle_slices(slices);
        self.segments = segments;
        self.hashes = hashes;
        let kept = last_of_each_serial(&mut to_store);
        let written = self.write_runs(inbox, &to_store[..kept]);
        if let Some(checker) = self.checker.as_mut() {
            for entry in &to_store[..kept] {
                checker.wrote(entry.serial, entry.bytes(inbox), entry.verified);
            }
        }
        self.to_store = to_store;
        written?;
        Ok(result)
    }

    /// Writes stored datagrams (in serial order, each serial once) with one `pwritev` per run
    /// of consecutive serials (the loop sends in serial order, so a batch is usually one or two
    /// runs).
    fn write_runs(&self, inbox: &BatchReceiver, stored: &[ToStore]) -> Result<(), ClientError> {
        let mut run_start = 0;
        while run_start < stored.len() {
            let mut run_end = run_start + 1;
            while run_end < stored.len()
                && run_end - run_start < WRITE_IOVECS_MAX
                && stored[run_end].serial == stored[run_end - 1].serial + 1
            {
                run_end += 1;
            }
            let run = &stored[run_start..run_end];
            let mut slices = [std::io::IoSlice::new(&[]); WRITE_IOVECS_MAX];
            for (slice, entry) in slices.iter_mut().zip(run) {
                *slice = std::io::IoSlice::new(entry.bytes(inbox));
            }
            let slices = &slices[..run.len()];
            let offset = datagram_offset(self.receiver.info(), run[0].serial);
            let total: usize = slices.iter().map(|s| s.len()).sum();
            let written = nix::sys::uio::pwritev(&self.part, slices, offset as i64)
                .map_err(|e| io_err(format!("write {}", self.part_path.display()))(e.into()))?;
            if written < total {
                // Rare: a short write; finish the run datagram by datagram.
                for entry in run {
                    self.part
                        .write_all_at(
                            entry.bytes(inbox),
                            datagram_offset(self.receiver.info(), entry.serial),
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
        // Groups read back and verified before this save: once the fsync has them on disk,
        // their pages leave the cache (they are not read again unless written again), so the
        // cache the download fills is reused as it goes instead of growing by the file's
        // size. On a virtual machine whose host backs guest memory only when first touched
        // (and takes back what the guest frees), writing into fresh cache pages cost 1.1-2.8
        // s of system CPU per GiB against 0.3-0.4 with the cache dropped behind the writes.
        let checked = self
            .checker
            .as_mut()
            .map(|checker| checker.take_checked_ranges())
            .unwrap_or_default();
        self.saver = Some(std::thread::spawn(move || {
            file.sync_data()?;
            drop_cached(&file, &checked);
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

    /// Before publishing (R14): the whole `.part` is hashed against the root, across cores,
    /// whatever this or an earlier run verified on arrival (a resumed state, a disk that lost a
    /// write, a datagram written by anyone else). Most of it is done by now: `check` reads back
    /// and checks each group once all of it is written (again if written again), and only
    /// what is left is checked here. Returns true if it is exactly the archive
    /// the root names. Otherwise every datagram is re-checked one by one, the failing ones are
    /// forgotten (received again) and false is returned; nothing is published.
    fn final_check(&mut self) -> Result<bool, ClientError> {
        self.finish_background_save()?;
        let started = Instant::now();
        // Before this check opens the file itself.
        let checker = self.checker.take().filter(|checker| {
            let opened = checker.opened_by_others();
            if opened {
                // Opening is all that can be seen: a second `get` to the same output opens the
                // file before its lock is refused, and writes nothing.
                tracing::info!(path = %self.part_path.display(), "another process opened the partial file during the download (a second get to this output, refused, does); checking it whole, as it may have written");
            }
            !opened
        });
        if let Some(checker) = &checker {
            self.groups_checked_early = checker.checked_early;
            self.groups_compared_early = checker.compared_early;
        }
        let whole = loopcast_archive::ArchiveFile::open(&self.part_path).and_then(|archive| {
            if archive.info().root() != self.root {
                return Err(loopcast_archive::ArchiveError::Corrupt {
                    path: self.part_path.clone(),
                    what: "header names another root".into(),
                });
            }
            let hash_many = &loopcast_dataplane::hash_lanes::hash_many;
            checker
                .and_then(|checker| checker.finish(&self.part_path, hash_many))
                .unwrap_or_else(|| archive.verify_with(hash_many))
        });
        self.final_check_time += started.elapsed();
        let error = match whole {
            Ok(()) => return Ok(true),
            Err(error) => error,
        };
        self.final_check_failures += 1;
        tracing::warn!(%error, "the partial archive failed its whole-file check; re-checking each datagram");
        if self.final_check_failures > FINAL_CHECK_ATTEMPTS_MAX {
            return Err(ClientError::VerificationFailed {
                path: self.part_path.clone(),
                detail: error.to_string(),
            });
        }
        // The header page is ours: write it again in case that was the damage.
        self.part
            .write_all_at(&superblock(self.receiver.info()), 0)
            .map_err(io_err("write partial file"))?;
        let info = self.receiver.info().clone();
        let size = usize::from(info.datagram_size);
        let loop_len = info.loop_len;
        let chunk = 4096u32;
        let mut first = 0u32;
        let mut forgotten = 0u32;
        let mut buffer = vec![0u8; size * chunk as usize];
        while first < loop_len {
            let count = chunk.min(loop_len - first);
            let bytes = &mut buffer[..size * count as usize];
            self.part
                .read_exact_at(bytes, datagram_offset(&info, first))
                .map_err(io_err("re-read partial file"))?;
            for (offset, datagram) in bytes.chunks_exact(size).enumerate() {
                let serial = first + offset as u32;
                if !self.receiver.recheck_serial(serial, datagram) {
                    forgotten += 1;
                }
            }
            first += count;
        }
        tracing::warn!(
            forgotten,
            "datagrams failed their re-check; receiving them again"
        );
        // The planner must ask for them again: rebuild it from what is still held, with the
        // settings the transport gave it (rebuilt from the first ones, a unicast or resumed
        // client lost its backlog and waited a whole loop for one datagram that failed: a
        // resume slower than a fresh download, new-user review).
        self.nak = NakPlanner::new(self.nak.config(), self.receiver.have());
        Ok(false)
    }

    /// R14: fsync, then rename into place; the state file goes last. Whether a file was
    /// replaced (--force).
    fn publish(&mut self) -> Result<bool, ClientError> {
        self.finish_background_save()?;
        let replaced = self.part.publish()?;
        let _ = std::fs::remove_file(&self.state_path);
        Ok(replaced)
    }
}

/// Entries one `list` gathers at most (a hostile answerer cannot make it grow without end).
const LIST_ENTRIES_MAX: usize = 1_000_000;

/// `loopcast ls` (issue 11): every file a server or a fleet's director offers, sorted by name,
/// page by page. `addresses` are asked in turn until one answers; its later pages come from it.
pub fn list(
    addresses: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<loopcast_proto::wire::fleet::CatalogEntry>, ClientError> {
    let first = *addresses.first().expect("at least one address");
    let bind = any_port_like(first);
    let socket =
        loopcast_dataplane::socket::bind_udp(bind).map_err(io_err("bind client socket"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(io_err("set receive timeout"))?;
    let request_id = random_seed();
    let started = Instant::now();
    let mut answering: Option<SocketAddr> = None;
    let mut entries = Vec::new();
    let mut attempt = 0usize;
    let mut buffer = vec![0u8; 65_536];
    loop {
        let offset = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let to = answering.unwrap_or(addresses[attempt % addresses.len()]);
        attempt += 1;
        let list = ControlMessage::List { request_id, offset }.to_bytes();
        socket
            .send_to(&list, to)
            .map_err(io_err(format!("send to {to}")))?;
        let page_deadline = Instant::now() + Duration::from_millis(300);
        let mut page = None;
        while Instant::now() < page_deadline {
            let Ok((len, from)) = socket.recv_from(&mut buffer) else {
                break;
            };
            if !addresses.contains(&from) || answering.is_some_and(|a| a != from) {
                continue;
            }
            if let Ok(ControlMessage::Listing {
                request_id: id,
                total,
                offset: at,
                entries: got,
            }) = ControlMessage::parse(&buffer[..len])
            {
                if id == request_id && at == offset {
                    answering = Some(from);
                    page = Some((total, got));
                    break;
                }
            }
        }
        match page {
            Some((total, got)) => {
                let done = got.is_empty() || entries.len() + got.len() >= total as usize;
                entries.extend(got);
                if done || entries.len() >= LIST_ENTRIES_MAX {
                    entries.truncate(total as usize);
                    return Ok(entries);
                }
            }
            None if started.elapsed() >= timeout => {
                return Err(ClientError::NoAnswer {
                    server: match answering {
                        Some(server) => server.to_string(),
                        None => addresses
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                    seconds: timeout.as_secs(),
                    part: None,
                })
            }
            None => {}
        }
    }
}

/// A Report this client sends, at debug level: the datagrams it counted received and lost over
/// what interval, on which tier (the rate control's inputs, for reading a bench run afterwards:
/// `LOOPCAST_BENCH_CLIENT_LOG`).
fn log_report(bytes: &[u8], tier: Option<loopcast_proto::client::TierInfo>) {
    if let Ok(ControlMessage::Report {
        interval_us,
        received,
        lost,
        loss_judged,
        ..
    }) = ControlMessage::parse(bytes)
    {
        tracing::debug!(
            received,
            lost,
            interval_us,
            loss_judged,
            // As `loopcast get` says it: from 1, of how many ("none" before the first).
            tier = %tier.map_or_else(|| "none".to_owned(), |t| format!("{}/{}", u32::from(t.tier) + 1, t.tiers)),
            tier_rate = tier.map_or(0, |t| t.rate_bits_per_s),
            "report"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that stopped answering mid-download says where the partial download is, and
    /// gives it to scripts (it said "partial download kept for resume (a/b datagrams)" without
    /// the file); one that never answered names an earlier run's partial download only if
    /// there is one.
    #[test]
    fn failures_that_keep_a_partial_download_name_it() {
        let part = PathBuf::from("/srv/in/film.lca.part");
        let lost = ClientError::ServerLost {
            server: SocketAddr::from(([127, 0, 0, 1], 7700)),
            seconds: 30,
            held: 250,
            total: 1000,
            part: part.clone(),
            failed_hash: 0,
        };
        assert_eq!(
            lost.to_string(),
            "127.0.0.1:7700 stopped answering for 30 s; partial download kept for resume in \
             /srv/in/film.lca.part (250/1000 datagrams, 25.0 %): run the same command again"
        );
        assert_eq!(
            lost.kept_partial(),
            Some(KeptPartial {
                path: part.clone(),
                datagrams: Some((250, 1000)),
            })
        );
        let silent = |part: Option<PathBuf>| ClientError::NoAnswer {
            server: "127.0.0.1:7700".to_owned(),
            seconds: 10,
            part,
        };
        let earlier = silent(Some(part.clone()));
        assert!(
            earlier.to_string().ends_with(
                "; the partial download an earlier run left in /srv/in/film.lca.part is kept: \
                 run the same command again to resume"
            ),
            "{earlier}"
        );
        assert_eq!(
            earlier.kept_partial(),
            Some(KeptPartial {
                path: part,
                datagrams: None,
            })
        );
        assert_eq!(
            silent(None).to_string(),
            "no answer from 127.0.0.1:7700 within 10 s (is loopcastd running there?)"
        );
        assert_eq!(silent(None).kept_partial(), None);
    }

    /// A server that refuses a download with a partial one kept says where it is (it said only
    /// "server refused: …", and `--json` said nothing was kept).
    #[test]
    fn a_refused_download_names_the_partial_download_it_keeps() {
        let part = PathBuf::from("/srv/in/film.lca.part");
        let refused = |part: Option<PathBuf>, held: u32, total: u32| ClientError::Rejected {
            code: RejectCode::Busy,
            message: "server at its session limit".to_owned(),
            part,
            held,
            total,
        };
        let mid = refused(Some(part.clone()), 250, 1000);
        assert_eq!(
            mid.to_string(),
            "server refused: server at its session limit; partial download kept for resume in \
             /srv/in/film.lca.part (250/1000 datagrams, 25.0 %): run the same command again to \
             resume once the server accepts"
        );
        let keeps = |datagrams| {
            Some(KeptPartial {
                path: part.clone(),
                datagrams,
            })
        };
        assert_eq!(mid.kept_partial(), keeps(Some((250, 1000))));
        let earlier = refused(Some(part.clone()), 0, 0);
        assert!(
            earlier
                .to_string()
                .ends_with("; the partial download an earlier run left in /srv/in/film.lca.part is kept: run the same command again to resume once the server accepts"),
            "{earlier}"
        );
        assert_eq!(earlier.kept_partial(), keeps(None));
        let none = refused(None, 0, 0);
        assert_eq!(
            none.to_string(),
            "server refused: server at its session limit"
        );
        assert_eq!(none.kept_partial(), None);
    }

    /// A file that changed on the server mid-download: the same command downloads the new
    /// version (starting over); it said to run again "with --force to start over", which is
    /// not needed (new-user review s25).
    #[test]
    fn a_file_that_changed_on_the_server_says_the_same_command_gets_the_new_version() {
        let changed = ClientError::FileChanged {
            offered: "ab".repeat(32),
            held_root: "cd".repeat(32),
            part: PathBuf::from("/srv/in/film.lca.part"),
        };
        let message = changed.to_string();
        assert!(
            message.ends_with(
                "run the same command again to download the new version: it starts over, \
                 replacing the partial download of the old one in /srv/in/film.lca.part"
            ) && !message.contains("--force"),
            "{message}"
        );
    }

    /// A disk that fills while receiving: the error says what the saved state holds and where
    /// (it said only "disk full: save x.lca.part.state: …", and `--json` said nothing was
    /// kept, while the `.part` was there and resumed: new-user review s25). Other I/O errors,
    /// and a full disk with no partial download, stay as they were.
    #[test]
    fn a_disk_that_fills_while_receiving_names_what_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("film.lca");
        let enospc = || ClientError::Io {
            context: "save film.lca.part.state".to_owned(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert!(matches!(
            full_disk_kept_partial(enospc(), &output),
            ClientError::Io { .. }
        ));
        let mut have = loopcast_proto::bitmap::Bitmap::new(1000);
        have.set_range(0..400);
        state::save(
            &with_suffix(&output, ".part.state"),
            &RootHash([7; 32]),
            &have,
        )
        .unwrap();
        std::fs::write(with_suffix(&output, ".part"), b"partial").unwrap();
        let full = full_disk_kept_partial(enospc(), &output);
        let part = with_suffix(&output, ".part");
        assert_eq!(
            full.kept_partial(),
            Some(KeptPartial {
                path: part.clone(),
                datagrams: Some((400, 1000)),
            })
        );
        assert_eq!(
            full.to_string(),
            format!(
                "disk full: save film.lca.part.state: No space left on device (os error 28); \
                 partial download kept for resume in {} (400/1000 datagrams, 40.0 %): free \
                 some space and run the same command again to resume",
                part.display()
            )
        );
        let denied = ClientError::Io {
            context: "save film.lca.part.state".to_owned(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(matches!(
            full_disk_kept_partial(denied, &output),
            ClientError::Io { .. }
        ));
    }
}
