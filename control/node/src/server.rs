//! The server event loop. See the crate doc for the shape.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loopcast_archive::ArchiveFile;
use loopcast_dataplane::mapped::MappedArchive;
use loopcast_dataplane::pool::{
    ChannelId, ChannelSpec, ChannelStats, Command, LoopPiece, PoolConfig, SenderPool,
};
use loopcast_dataplane::send::{probe_send_path, SendPath};
use loopcast_proto::carousel::{Carousel, CarouselConfig, SessionId};
use loopcast_proto::info::FileInfo;
use loopcast_proto::time::{Instant, MonotonicClock};
use loopcast_proto::wire::control::{ControlMessage, RejectCode, Transport, CONTROL_LEN_MAX};
use loopcast_proto::wire::datagram::FileId;
use mio::net::UdpSocket as MioUdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::catalog::Catalog;

#[derive(Clone, Debug)]
pub struct MulticastConfig {
    /// Channel groups are `group_base` + (file slot), within the same /24.
    pub group_base: Ipv4Addr,
    pub port: u16,
    /// Address of the interface to send multicast from.
    pub interface: Ipv4Addr,
    pub ttl: u32,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub media_dir: PathBuf,
    pub listen: SocketAddr,
    pub multicast: Option<MulticastConfig>,
    /// Per-channel rate in bits/s; 0 = unpaced.
    pub rate_bits_per_s: u64,
    pub admin_socket: Option<PathBuf>,
    pub session_timeout: Duration,
    pub sessions_max: usize,
    pub channels_max: usize,
    /// Verify every archive's hash tree when its channel opens.
    pub verify_on_open: bool,
    /// Sender threads (each pinned to a core) that run the channels.
    pub send_threads: usize,
}

impl ServerConfig {
    pub fn new(media_dir: PathBuf, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            media_dir,
            listen,
            multicast: None,
            rate_bits_per_s: 1_000_000_000,
            admin_socket: None,
            session_timeout: Duration::from_secs(5),
            sessions_max: 4096,
            channels_max: 256,
            verify_on_open: true,
            send_threads: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("media database {path}: {source}")]
    MediaDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind the request socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Admin(#[from] loopcast_admin::StartError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const CONTROL: Token = Token(0);
/// How often SYNC goes out on an active multicast channel (R8).
const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// Longest sleep, so shutdown requests are noticed.
const POLL_CEILING: Duration = Duration::from_millis(100);
/// Control messages handled per wake-up, so a flood cannot starve sending.
const CONTROL_BATCH_MAX: usize = 256;

/// A file's channel: membership here (R9), sending in the data plane's sender pool.
struct Channel {
    file_id: FileId,
    id: ChannelId,
    info: FileInfo,
    /// Members only: the pool's copy of the carousel does the sending.
    carousel: Carousel,
    stats: Arc<ChannelStats>,
    group: Option<SocketAddrV4>,
    multicast_sessions: usize,
    unicast_peers: Vec<(SessionId, SocketAddr)>,
    sync_sequence: u32,
    next_sync: Instant,
    /// The archive's hash tree being checked beside the loop (first open of this archive).
    verifying: Option<(ArchiveKey, std::thread::JoinHandle<Result<(), String>>)>,
}

/// An archive as it is on disk: a change of size or modification time means a new check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ArchiveKey {
    path: std::path::PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl ArchiveKey {
    fn of(path: &std::path::Path) -> Option<ArchiveKey> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(ArchiveKey {
            path: path.to_owned(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

struct Session {
    file_id: FileId,
    client: SocketAddr,
    request_id: u64,
    transport: Transport,
    held: u32,
    /// Serials this session has asked to have repaired, against `NAK_BUDGET_LOOPS`.
    nak_serials: u64,
}

/// A session may have at most this many loops' worth of serials repaired; past that its NAKs
/// are dropped (counted) and the loop alone serves it, so one client cannot keep a channel
/// busy with repairs at everyone else's expense.
const NAK_BUDGET_LOOPS: u64 = 4;

#[derive(Default)]
struct Counters {
    requests: u64,
    rejected: u64,
    control_dropped: u64,
    sessions_completed: u64,
    sessions_expired: u64,
    channels_opened: u64,
    channels_closed: u64,
    send_errors: u64,
    naks: u64,
    nak_serials: u64,
    nak_ranges_dropped: u64,
    naks_over_budget: u64,
    naks_relayed: u64,
    archives_verified: u64,
    archives_corrupt: u64,
}

struct Server {
    config: ServerConfig,
    clock: MonotonicClock,
    catalog: Catalog,
    last_rescan: Option<Instant>,
    control: MioUdpSocket,
    data: UdpSocket,
    pool: SenderPool,
    send_path_reason: String,
    next_channel_id: u64,
    channels: HashMap<FileId, Channel>,
    sessions: HashMap<SessionId, Session>,
    counters: Counters,
    group_slots_used: Vec<bool>,
    /// Archives whose whole hash tree has been checked, and ones that failed (refused until
    /// they change on disk).
    verified_archives: std::collections::HashSet<ArchiveKey>,
    corrupt_archives: std::collections::HashSet<ArchiveKey>,
}

/// Binds the request socket named in the config (so a caller can learn its port before
/// `run_on`, e.g. when it asked for port 0).
pub fn bind(config: &ServerConfig) -> Result<UdpSocket, ServerError> {
    loopcast_dataplane::socket::bind_udp(config.listen).map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })
}

/// Runs the server until `shutdown` becomes true.
pub fn run(config: ServerConfig, shutdown: Arc<AtomicBool>) -> Result<(), ServerError> {
    let socket = bind(&config)?;
    run_on(config, socket, shutdown)
}

/// Runs the server on an already bound request socket until `shutdown` becomes true.
pub fn run_on(
    config: ServerConfig,
    control_std: UdpSocket,
    shutdown: Arc<AtomicBool>,
) -> Result<(), ServerError> {
    let mut catalog = Catalog::new(&config.media_dir);
    let archives = catalog.rescan().map_err(|source| ServerError::MediaDir {
        path: config.media_dir.clone(),
        source,
    })?;
    control_std.set_nonblocking(true)?;
    let local = control_std.local_addr()?;
    let mut control = MioUdpSocket::from_std(control_std);
    let data_bind: SocketAddr = match config.listen {
        SocketAddr::V4(v4) => SocketAddr::from((*v4.ip(), 0)),
        SocketAddr::V6(v6) => SocketAddr::from((*v6.ip(), 0)),
    };
    let data = loopcast_dataplane::socket::bind_udp(data_bind)?;
    if let Some(multicast) = &config.multicast {
        loopcast_dataplane::socket::set_multicast_sender(
            &data,
            multicast.interface,
            multicast.ttl,
        )?;
    }
    let (path, reason) = probe_send_path();
    let pool_config = |send_path| PoolConfig {
        threads: config.send_threads.max(1),
        send_path,
        bind: data_bind,
        multicast_interface: config.multicast.as_ref().map(|m| m.interface),
        multicast_ttl: config.multicast.as_ref().map_or(1, |m| m.ttl),
        pin_threads: true,
    };
    let pool = SenderPool::start(&pool_config(path)).or_else(|error| {
        tracing::warn!(%error, path = path.name(), "cannot start the probed send path; using sendmmsg+gso");
        SenderPool::start(&pool_config(SendPath::SendmmsgGso))
    })?;
    tracing::info!(send_path = path.name(), %reason, "data plane ready");
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut control, CONTROL, Interest::READABLE)?;
    // The admin socket is served on its own thread, from the status published below.
    let mut admin = match &config.admin_socket {
        Some(path) => Some(loopcast_admin::AdminServer::start(
            path,
            loopcast_admin::AdminConfig::default(),
        )?),
        None => None,
    };
    tracing::info!(
        %local,
        media = %config.media_dir.display(),
        archives,
        multicast = ?config.multicast.as_ref().map(|m| (m.group_base, m.port)),
        rate_bits_per_s = config.rate_bits_per_s,
        "loopcastd serving"
    );
    let mut server = Server {
        clock: MonotonicClock::new(),
        catalog,
        last_rescan: None,
        control,
        data,
        pool,
        send_path_reason: reason,
        next_channel_id: 0,
        channels: HashMap::new(),
        sessions: HashMap::new(),
        counters: Counters::default(),
        group_slots_used: vec![false; 254],
        verified_archives: std::collections::HashSet::new(),
        corrupt_archives: std::collections::HashSet::new(),
        config,
    };
    let mut events = Events::with_capacity(64);
    while !shutdown.load(Ordering::Relaxed) {
        let now = server.clock.now();
        let timeout = server
            .next_wakeup(now)
            .map_or(POLL_CEILING, |at| server.clock.until(at).min(POLL_CEILING));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        server.drain_control();
        server.housekeeping();
        if let Some(admin) = &mut admin {
            admin.publish_status(|| server.status_json());
        }
    }
    tracing::info!(
        "shutting down: closing {} channel(s)",
        server.channels.len()
    );
    // Stops the admin thread and removes the socket file.
    drop(admin);
    Ok(())
}

impl Server {
    fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.channels
            .values()
            .filter_map(|c| {
                let sync = if c.multicast_sessions > 0 {
                    Some(c.next_sync)
                } else {
                    None
                };
                match (c.carousel.membership_deadline(), sync) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
            .map(|at| at.max(now))
    }

    fn drain_control(&mut self) {
        let mut buffer = [0u8; CONTROL_LEN_MAX];
        for _ in 0..CONTROL_BATCH_MAX {
            let (len, from) = match self.control.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "request socket receive error");
                    return;
                }
            };
            match ControlMessage::parse(&buffer[..len]) {
                Ok(message) => self.handle_control(message, from),
                Err(error) => {
                    self.counters.control_dropped += 1;
                    tracing::debug!(%from, %error, "dropped malformed control message");
                }
            }
        }
    }

    fn reply(&self, to: SocketAddr, message: &ControlMessage) {
        if let Err(error) = self.control.send_to(&message.to_bytes(), to) {
            tracing::debug!(%to, %error, "reply not sent");
        }
    }

    fn handle_control(&mut self, message: ControlMessage, from: SocketAddr) {
        let now = self.clock.now();
        match message {
            ControlMessage::Request {
                request_id,
                multicast_ok,
                name,
            } => self.handle_request(now, from, request_id, multicast_ok, &name),
            ControlMessage::Joined { session, transport } => {
                let Some(state) = self.sessions.get_mut(&session).filter(|s| s.client == from)
                else {
                    self.counters.control_dropped += 1;
                    return;
                };
                if state.transport == Transport::Multicast && transport == Transport::Unicast {
                    // R8: the client saw no SYNC; fall back to unicast for it.
                    state.transport = Transport::Unicast;
                    let file_id = state.file_id;
                    if let Some(channel) = self.channels.get_mut(&file_id) {
                        channel.multicast_sessions -= 1;
                        channel.unicast_peers.push((session, from));
                        let (id, group, idle_group) =
                            (channel.id, channel.group, channel.multicast_sessions == 0);
                        self.pool_command(Command::AddDestination(id, from));
                        if let (Some(group), true) = (group, idle_group) {
                            self.pool_command(Command::RemoveDestination(
                                id,
                                SocketAddr::V4(group),
                            ));
                        }
                    }
                    tracing::info!(session = session.0, %from, "client fell back to unicast");
                }
                if let Some(channel) = self.channels.get_mut(&self.sessions[&session].file_id) {
                    channel.carousel.heard(now, session);
                }
            }
            ControlMessage::Status {
                session,
                held,
                done,
                ..
            } => {
                let Some(state) = self.sessions.get_mut(&session).filter(|s| s.client == from)
                else {
                    self.counters.control_dropped += 1;
                    return;
                };
                state.held = held;
                if done {
                    self.counters.sessions_completed += 1;
                    tracing::info!(session = session.0, %from, "client complete");
                    self.end_session(session);
                } else if let Some(channel) = self.channels.get_mut(&state.file_id) {
                    channel.carousel.heard(now, session);
                }
            }
            ControlMessage::Leave { session } => {
                if self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.client == from)
                {
                    tracing::info!(session = session.0, %from, "client left");
                    self.end_session(session);
                } else {
                    self.counters.control_dropped += 1;
                }
            }
            ControlMessage::Nak { session, ranges } => {
                let Some(state) = self.sessions.get_mut(&session).filter(|s| s.client == from)
                else {
                    self.counters.control_dropped += 1;
                    return;
                };
                let Some(channel) = self.channels.get_mut(&state.file_id) else {
                    self.counters.control_dropped += 1;
                    return;
                };
                let asked: u64 = ranges.iter().map(|&(_, count)| u64::from(count)).sum();
                if state.nak_serials + asked > NAK_BUDGET_LOOPS * u64::from(channel.info.loop_len) {
                    self.counters.naks_over_budget += 1;
                    channel.carousel.heard(now, session);
                    return;
                }
                state.nak_serials += asked;
                channel.carousel.heard(now, session);
                let id = channel.id;
                let relay_to = channel
                    .group
                    .filter(|_| state.transport == Transport::Multicast);
                let file_id = channel.file_id;
                self.counters.naks += 1;
                for &(first, count) in &ranges {
                    self.counters.nak_serials += u64::from(count);
                    // The pool's carousel checks the range against the loop and merges repeats;
                    // a full command queue (a NAK flood) drops the range, counted, not logged.
                    let queued = self.pool.command(Command::QueueRepair {
                        channel: id,
                        first,
                        count,
                    });
                    if queued.is_err() {
                        self.counters.nak_ranges_dropped += 1;
                    }
                }
                // R10 suppression: tell the group what was asked, so receivers missing the
                // same serials need not ask as well.
                if let Some(group) = relay_to {
                    let heard = ControlMessage::NakHeard { file_id, ranges };
                    if self.data.send_to(&heard.to_bytes(), group).is_ok() {
                        self.counters.naks_relayed += 1;
                    }
                }
            }
            ControlMessage::Offer { .. }
            | ControlMessage::Reject { .. }
            | ControlMessage::Sync { .. }
            | ControlMessage::NakHeard { .. } => {
                self.counters.control_dropped += 1;
            }
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request_id: u64,
        multicast_ok: bool,
        name: &str,
    ) {
        self.counters.requests += 1;
        // A retransmitted request (our Offer was lost) gets the same session again.
        if let Some((&session, _)) = self
            .sessions
            .iter()
            .find(|(_, s)| s.client == from && s.request_id == request_id)
        {
            let state = &self.sessions[&session];
            if let Some(channel) = self.channels.get(&state.file_id) {
                let offer = self.offer(channel, request_id, session, state.transport);
                self.reply(from, &offer);
            }
            return;
        }
        let reject = |server: &mut Server, code, message: String| {
            server.counters.rejected += 1;
            server.reply(
                from,
                &ControlMessage::Reject {
                    request_id,
                    code,
                    message,
                },
            );
        };
        if self.sessions.len() >= self.config.sessions_max {
            return reject(self, RejectCode::Busy, "server at its session limit".into());
        }
        // A file already looping is served from its open channel (R8): no archive I/O here.
        let open = self
            .channels
            .values()
            .find(|c| c.info.name == name)
            .map(|c| c.file_id);
        let file_id = match open {
            Some(file_id) => file_id,
            None => {
                let Some(path) = self.archive_path(now, name) else {
                    return reject(
                        self,
                        RejectCode::NotFound,
                        format!("no file named {name:?} here"),
                    );
                };
                match self.open_channel(now, &path) {
                    Ok(file_id) => file_id,
                    Err(message) => return reject(self, RejectCode::Busy, message),
                }
            }
        };
        let session = SessionId(random_u64());
        let channel = self.channels.get_mut(&file_id).expect("opened above");
        if channel.carousel.join(now, session).is_err() {
            return reject(self, RejectCode::Busy, "channel at its member limit".into());
        }
        let (transport, new_destination) = match channel.group {
            Some(group) if multicast_ok => {
                channel.multicast_sessions += 1;
                let first = channel.multicast_sessions == 1;
                (Transport::Multicast, first.then_some(SocketAddr::V4(group)))
            }
            _ => {
                channel.unicast_peers.push((session, from));
                (Transport::Unicast, Some(from))
            }
        };
        let channel_id = channel.id;
        if let Some(destination) = new_destination {
            self.pool_command(Command::AddDestination(channel_id, destination));
        }
        self.sessions.insert(
            session,
            Session {
                file_id,
                client: from,
                request_id,
                transport,
                held: 0,
                nak_serials: 0,
            },
        );
        let channel = &self.channels[&file_id];
        tracing::info!(session = session.0, %from, file = %channel.info.name, %transport, joined_at = channel.stats.next_serial.load(Ordering::Relaxed), "session started");
        let offer = self.offer(channel, request_id, session, transport);
        self.reply(from, &offer);
    }

    /// The archive named `name`, rescanning the media database (at most once a second) in case
    /// it was packed since the last scan.
    fn archive_path(&mut self, now: Instant, name: &str) -> Option<std::path::PathBuf> {
        if let Some(path) = self.catalog.lookup(name) {
            return Some(path.to_owned());
        }
        let stale = self
            .last_rescan
            .is_none_or(|at| now.saturating_since(at) >= Duration::from_secs(1));
        if stale {
            self.last_rescan = Some(now);
            let _ = self.catalog.rescan();
        }
        self.catalog.lookup(name).map(std::path::Path::to_owned)
    }

    fn offer(
        &self,
        channel: &Channel,
        request_id: u64,
        session: SessionId,
        transport: Transport,
    ) -> ControlMessage {
        let channel_addr = match (transport, channel.group) {
            (Transport::Multicast, Some(group)) => SocketAddr::V4(group),
            _ => self.data.local_addr().unwrap_or(self.config.listen),
        };
        ControlMessage::Offer {
            request_id,
            session,
            transport,
            channel: channel_addr,
            rate_bits_per_s: channel.carousel.config().rate_bits_per_s,
            info: channel.info.clone(),
        }
    }

    /// Opens (or reuses) the channel for an archive (R8: one loop serves every client of a file).
    fn open_channel(&mut self, now: Instant, path: &std::path::Path) -> Result<FileId, String> {
        let archive = ArchiveFile::open(path).map_err(|e| e.to_string())?;
        let file_id = archive.info().file_id;
        if self.channels.contains_key(&file_id) {
            return Ok(file_id);
        }
        if self.channels.len() >= self.config.channels_max {
            return Err("server at its channel limit".into());
        }
        // The whole hash tree is checked once per archive version, beside the loop rather
        // than before it: clients verify every datagram themselves, so nothing unproven is
        // accepted meanwhile, and the first client does not wait ~0.5 s per GiB. A failure
        // closes the channel and refuses the archive until it changes on disk.
        let key = ArchiveKey::of(path);
        if key
            .as_ref()
            .is_some_and(|k| self.corrupt_archives.contains(k))
        {
            return Err(format!(
                "archive for {:?} failed verification on the server",
                archive.info().name
            ));
        }
        let verifying = match key {
            Some(key) if self.config.verify_on_open && !self.verified_archives.contains(&key) => {
                let check_path = path.to_owned();
                let handle = std::thread::Builder::new()
                    .name("loopcast-verify".into())
                    .spawn(move || {
                        ArchiveFile::open(&check_path)
                            .and_then(|archive| archive.verify())
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| format!("cannot start archive verification: {e}"))?;
                Some((key, handle))
            }
            _ => None,
        };
        let map = Arc::new(
            MappedArchive::map(archive.file(), archive.path()).map_err(|e| e.to_string())?,
        );
        let info = archive.info().clone();
        let group = self.config.multicast.as_ref().and_then(|m| {
            let slot = self.group_slots_used.iter().position(|used| !used)?;
            self.group_slots_used[slot] = true;
            let base = u32::from(m.group_base) & !0xff;
            Some(SocketAddrV4::new(
                Ipv4Addr::from(base + 1 + slot as u32),
                m.port,
            ))
        });
        let carousel = Carousel::new(
            CarouselConfig {
                loop_len: info.loop_len,
                datagram_size: info.datagram_size,
                rate_bits_per_s: self.config.rate_bits_per_s,
                batch_datagrams_max: 1,
                member_timeout: self.config.session_timeout,
                members_max: self.config.sessions_max,
            },
            now,
        );
        let id = ChannelId(self.next_channel_id);
        self.next_channel_id += 1;
        let stats = Arc::new(ChannelStats::default());
        self.pool
            .add_channel(ChannelSpec {
                id,
                pieces: vec![LoopPiece {
                    archive: map,
                    offset: loopcast_archive::format::DATAGRAMS_OFFSET as usize,
                    count: info.loop_len,
                }],
                datagram_size: info.datagram_size,
                rate_bits_per_s: self.config.rate_bits_per_s,
                destinations: Vec::new(),
                stats: stats.clone(),
            })
            .map_err(|e| format!("sender threads are busy ({e:?}); try again"))?;
        tracing::info!(file = %info.name, file_id = %file_id, group = ?group, loop_len = info.loop_len, "channel opened");
        self.counters.channels_opened += 1;
        self.channels.insert(
            file_id,
            Channel {
                file_id,
                id,
                info,
                carousel,
                stats,
                group,
                multicast_sessions: 0,
                unicast_peers: Vec::new(),
                sync_sequence: 0,
                next_sync: now,
                verifying,
            },
        );
        Ok(file_id)
    }

    fn end_session(&mut self, session: SessionId) {
        let Some(state) = self.sessions.remove(&session) else {
            return;
        };
        let Some(channel) = self.channels.get_mut(&state.file_id) else {
            return;
        };
        channel.carousel.leave(session);
        let id = channel.id;
        let gone = match state.transport {
            Transport::Multicast => {
                channel.multicast_sessions -= 1;
                channel
                    .group
                    .filter(|_| channel.multicast_sessions == 0)
                    .map(SocketAddr::V4)
            }
            Transport::Unicast => {
                channel.unicast_peers.retain(|(s, _)| *s != session);
                Some(state.client)
            }
        };
        if let Some(destination) = gone {
            self.pool_command(Command::RemoveDestination(id, destination));
        }
    }

    /// Queues a command for the sender pool; a full queue is logged (the state it would have
    /// changed is corrected by the next command for that channel or its removal).
    fn pool_command(&mut self, command: Command) {
        if let Err(error) = self.pool.command(command) {
            self.counters.send_errors += 1;
            tracing::warn!(?error, "sender pool did not take a command");
        }
    }

    /// Collects finished archive checks: a verified archive is remembered; a corrupt one has
    /// its channel's sessions ended (the channel then closes as idle) and is refused.
    fn collect_verifications(&mut self) {
        let mut corrupt = Vec::new();
        for channel in self.channels.values_mut() {
            if !channel
                .verifying
                .as_ref()
                .is_some_and(|(_, handle)| handle.is_finished())
            {
                continue;
            }
            let (key, handle) = channel.verifying.take().expect("checked above");
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err("verification thread panicked".into()));
            match outcome {
                Ok(()) => {
                    tracing::info!(file = %channel.info.name, "archive verified");
                    self.counters.archives_verified += 1;
                    self.verified_archives.insert(key);
                }
                Err(error) => {
                    tracing::error!(file = %channel.info.name, path = %key.path.display(), %error, "archive failed verification: closing its channel and refusing it until it changes");
                    self.counters.archives_corrupt += 1;
                    self.corrupt_archives.insert(key);
                    corrupt.push(channel.file_id);
                }
            }
        }
        for file_id in corrupt {
            let sessions: Vec<SessionId> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.file_id == file_id)
                .map(|(id, _)| *id)
                .collect();
            for session in sessions {
                self.end_session(session);
            }
        }
    }

    fn housekeeping(&mut self) {
        self.collect_verifications();
        let now = self.clock.now();
        let mut expired = Vec::new();
        for channel in self.channels.values_mut() {
            channel.carousel.handle_timeout(now);
            while let Some(session) = channel.carousel.poll_expired() {
                expired.push(session);
            }
        }
        for session in expired {
            tracing::info!(session = session.0, "session expired (client silent)");
            self.counters.sessions_expired += 1;
            self.end_session(session);
        }
        // R9: a channel with no active client stops and closes.
        let idle: Vec<FileId> = self
            .channels
            .values()
            .filter(|c| c.carousel.is_idle())
            .map(|c| c.file_id)
            .collect();
        for file_id in idle {
            let channel = self.channels.remove(&file_id).expect("listed above");
            if let (Some(group), Some(m)) = (channel.group, &self.config.multicast) {
                let slot =
                    (u32::from(*group.ip()) - ((u32::from(m.group_base) & !0xff) + 1)) as usize;
                self.group_slots_used[slot] = false;
            }
            self.counters.channels_closed += 1;
            self.pool_command(Command::RemoveChannel(channel.id));
            let datagrams = channel.stats.datagrams.load(Ordering::Relaxed);
            tracing::info!(
                file = %channel.info.name,
                datagrams,
                bytes = channel.stats.bytes.load(Ordering::Relaxed),
                repair_datagrams = channel.stats.repair_datagrams.load(Ordering::Relaxed),
                repairs_refused = channel.stats.repairs_refused.load(Ordering::Relaxed),
                "channel closed: no active clients"
            );
        }
        // R8: SYNC on every multicast channel that has multicast members.
        for channel in self.channels.values_mut() {
            if let (Some(group), true) = (channel.group, channel.multicast_sessions > 0) {
                if now >= channel.next_sync {
                    channel.sync_sequence = channel.sync_sequence.wrapping_add(1);
                    let sync = ControlMessage::Sync {
                        file_id: channel.file_id,
                        sequence: channel.sync_sequence,
                    };
                    let _ = self.data.send_to(&sync.to_bytes(), group);
                    channel.next_sync = now + SYNC_INTERVAL;
                }
            }
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let channels: Vec<serde_json::Value> = self
            .channels
            .values()
            .map(|c| {
                serde_json::json!({
                    "file": c.info.name,
                    "file_id": c.file_id.to_string(),
                    "group": c.group.map(|g| g.to_string()),
                    "rate_bits_per_s": c.carousel.config().rate_bits_per_s,
                    "loop_len": c.info.loop_len,
                    "next_serial": c.stats.next_serial.load(Ordering::Relaxed),
                    "repair_datagrams": c.stats.repair_datagrams.load(Ordering::Relaxed),
                    "repairs_refused": c.stats.repairs_refused.load(Ordering::Relaxed),
                    "datagrams_sent": c.stats.datagrams.load(Ordering::Relaxed),
                    "bytes_sent": c.stats.bytes.load(Ordering::Relaxed),
                    "multicast_sessions": c.multicast_sessions,
                    "unicast_sessions": c.unicast_peers.len(),
                })
            })
            .collect();
        let sessions: Vec<serde_json::Value> = self
            .sessions
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "session": format!("{:016x}", id.0),
                    "client": s.client.to_string(),
                    "transport": s.transport.to_string(),
                    "held": s.held,
                })
            })
            .collect();
        let threads = self.pool.thread_stats();
        let sum = |field: fn(
            &loopcast_dataplane::pool::ThreadStats,
        ) -> &std::sync::atomic::AtomicU64|
         -> u64 {
            threads
                .iter()
                .map(|t| field(t).load(Ordering::Relaxed))
                .sum()
        };
        let path_of = |t: &loopcast_dataplane::pool::ThreadStats| {
            SendPath::ALL[t.send_path.load(Ordering::Relaxed) as usize % SendPath::ALL.len()].name()
        };
        let thread_json: Vec<serde_json::Value> = threads
            .iter()
            .map(|t| {
                serde_json::json!({
                    "send_path": path_of(t),
                    "channels": t.channels.load(Ordering::Relaxed),
                    "datagrams_sent": t.datagrams.load(Ordering::Relaxed),
                    "zc_notifications": t.zc_notifications.load(Ordering::Relaxed),
                    "zc_copied": t.zc_copied.load(Ordering::Relaxed),
                })
            })
            .collect();
        serde_json::json!({
            "send_path": threads.first().map_or("none", |t| path_of(t)),
            "sender_threads": thread_json,
            "send_path_reason": self.send_path_reason,
            "archives": self.catalog.len(),
            "channels": channels,
            "sessions": sessions,
            "counters": {
                "requests": self.counters.requests,
                "rejected": self.counters.rejected,
                "control_dropped": self.counters.control_dropped,
                "sessions_completed": self.counters.sessions_completed,
                "sessions_expired": self.counters.sessions_expired,
                "channels_opened": self.counters.channels_opened,
                "channels_closed": self.counters.channels_closed,
                "send_errors": self.counters.send_errors,
                "naks": self.counters.naks,
                "nak_serials": self.counters.nak_serials,
                "nak_ranges_dropped": self.counters.nak_ranges_dropped,
                "naks_over_budget": self.counters.naks_over_budget,
                "naks_relayed": self.counters.naks_relayed,
                "archives_verified": self.counters.archives_verified,
                "archives_corrupt": self.counters.archives_corrupt,
                "datagrams_sent": sum(|t| &t.datagrams),
                "bytes_sent": sum(|t| &t.bytes),
                "pool_send_errors": sum(|t| &t.send_errors),
                "zc_notifications": sum(|t| &t.zc_notifications),
                "zc_copied": sum(|t| &t.zc_copied),
            },
        })
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    u64::from_ne_bytes(bytes)
}
