//! The server event loop. See the crate doc for the shape.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
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
use loopcast_proto::endpoint::{
    self, DataCommand, Endpoint, EndpointConfig, Event, FileLookup, MulticastGroups, Via,
};
use loopcast_proto::heartbeat::ChallengeRefused;
use loopcast_proto::info::FileInfo;
use loopcast_proto::rate::format_rate;
use loopcast_proto::rng::SeededRng;
use loopcast_proto::time::{Instant, MonotonicClock};
use loopcast_proto::wire::control::{RejectCode, Transport, CONTROL_LEN_MAX};
use loopcast_proto::wire::datagram::FileId;
use loopcast_proto::wire::fleet::Heartbeat;
use mio::net::UdpSocket as MioUdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::catalog::Catalog;
use crate::verified::{OnDisk, Stamp, VerifiedRecords};

#[path = "reload.rs"]
mod reload;

/// SIGHUP's request and the way to read the settings again (see `reload.rs`).
pub type Reload = loopcast_admin::reload::Reload<ServerConfig>;

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
    /// Per-channel rate cap in bits/s (0 = none); with `adaptive` off, the one fixed rate
    /// (0 = unpaced).
    pub rate_bits_per_s: u64,
    /// Tiers and rates that follow the clients' reports (R11, R12); `None`: fixed rate.
    pub adaptive: Option<loopcast_proto::rate::RateConfig>,
    pub admin_socket: Option<PathBuf>,
    pub session_timeout: Duration,
    pub sessions_max: usize,
    /// Sessions one IP address may hold at once.
    pub sessions_per_address_max: usize,
    pub channels_max: usize,
    /// Verify every archive's hash tree when its channel opens.
    pub verify_on_open: bool,
    /// Sender threads (each pinned to a core) that run the channels.
    pub send_threads: usize,
    /// Heartbeats to the fleet's directors (R15); `None`: a server on its own.
    pub fleet: Option<loopcast_proto::heartbeat::FleetConfig>,
    /// Prometheus text endpoint (`GET /metrics`), from the admin status; `None`: off.
    pub metrics: Option<SocketAddr>,
}

impl ServerConfig {
    pub fn new(media_dir: PathBuf, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            media_dir,
            listen,
            multicast: None,
            rate_bits_per_s: 0,
            adaptive: Some(loopcast_proto::rate::RateConfig::default()),
            admin_socket: None,
            session_timeout: Duration::from_secs(5),
            sessions_max: 4096,
            sessions_per_address_max: 16,
            channels_max: 256,
            verify_on_open: true,
            send_threads: 1,
            fleet: None,
            metrics: None,
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
/// Longest sleep, so shutdown requests are noticed.
const POLL_CEILING: Duration = Duration::from_millis(100);
/// Control messages handled per wake-up, so a flood cannot starve sending.
const CONTROL_BATCH_MAX: usize = 256;
/// How often each served archive is checked on disk (size, inode, modification time).
const ARCHIVE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often a served archive's whole hash tree is re-verified beside the loop.
const ARCHIVE_REVERIFY_INTERVAL: Duration = Duration::from_secs(600);
/// A warning that a flood could repeat comes at most this often.
const WARNING_INTERVAL: core::time::Duration = core::time::Duration::from_secs(10);

/// How often a fleet member rescans its media database for the catalog its heartbeats carry.
const CATALOG_SCAN_INTERVAL: Duration = Duration::from_secs(2);
/// Hash-tree checks running at once, at most (each takes a core while it runs).
const VERIFICATIONS_MAX: usize = 2;

/// An archive as it is on disk: any change of size, inode, modification or change time means the
/// channel serving it stops (R23: what is looped must stay what was verified).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ArchiveKey {
    path: std::path::PathBuf,
    on_disk: OnDisk,
}

impl ArchiveKey {
    fn of(path: &std::path::Path) -> Option<ArchiveKey> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(ArchiveKey {
            path: path.to_owned(),
            on_disk: OnDisk::of(&metadata),
        })
    }
}

/// A channel the data plane runs: the endpoint decides, this holds the I/O side.
struct Channel {
    id: ChannelId,
    info: FileInfo,
    stats: Arc<ChannelStats>,
    key: ArchiveKey,
    next_disk_check: Instant,
    next_verify: Instant,
}

#[derive(Default)]
struct Counters {
    send_errors: u64,
    nak_ranges_dropped: u64,
    archives_verified: u64,
    /// Archives served without a check on open: a record of an earlier check vouched for them.
    archives_vouched: u64,
    archives_corrupt: u64,
    archives_changed: u64,
}

/// The catalog as the endpoint's `FileLookup`: opens the archive header (no tree check here;
/// that runs beside the loop) and refuses archives known to be corrupt.
struct Lookup<'a> {
    catalog: &'a mut Catalog,
    last_rescan: &'a mut Option<Instant>,
    corrupt: &'a std::collections::HashSet<ArchiveKey>,
    now: Instant,
}

impl Lookup<'_> {
    /// The archive named `name`, rescanning the media database (at most once a second) in case
    /// it was packed since the last scan.
    fn archive_path(&mut self, name: &str) -> Option<PathBuf> {
        if let Some(path) = self.catalog.lookup(name) {
            return Some(path.to_owned());
        }
        self.rescan_if_stale();
        self.catalog.lookup(name).map(std::path::Path::to_owned)
    }

    /// Rescans the media database unless it was rescanned within the last second.
    fn rescan_if_stale(&mut self) {
        let stale = self
            .last_rescan
            .is_none_or(|at| self.now.saturating_since(at) >= Duration::from_secs(1));
        if stale {
            *self.last_rescan = Some(self.now);
            let _ = self.catalog.rescan();
        }
    }
}

impl FileLookup for Lookup<'_> {
    fn catalog(&mut self) -> Vec<loopcast_proto::wire::fleet::CatalogEntry> {
        self.rescan_if_stale();
        self.catalog.entries().to_vec()
    }

    fn lookup(&mut self, name: &str) -> Result<FileInfo, (RejectCode, String)> {
        let path = self
            .archive_path(name)
            .ok_or_else(|| (RejectCode::NotFound, format!("no file named {name:?} here")))?;
        if ArchiveKey::of(&path).is_some_and(|k| self.corrupt.contains(&k)) {
            return Err((
                RejectCode::Corrupt,
                format!("the archive of {name:?} failed verification on the server"),
            ));
        }
        if !path.exists() {
            // Removed since the last scan: look again, and say what a client can act on.
            *self.last_rescan = Some(self.now);
            let _ = self.catalog.rescan();
            return Err((RejectCode::NotFound, format!("no file named {name:?} here")));
        }
        let archive = ArchiveFile::open(&path).map_err(|error| {
            // The details (and the server's paths) go to the log, not to the client.
            tracing::error!(path = %path.display(), %error, "archive cannot be opened");
            (
                RejectCode::Corrupt,
                format!("the archive of {name:?} is damaged on the server"),
            )
        })?;
        if self.catalog.root_of(name) != Some(archive.info().root()) {
            // Replaced since the last scan (packed again with --force): the rescan logs it
            // before anyone is served the new one, and heartbeats announce the new root. At
            // most once a second, as for unknown names (requests must not buy directory scans).
            self.rescan_if_stale();
        }
        Ok(archive.info().clone())
    }
}

struct Server {
    config: ServerConfig,
    clock: MonotonicClock,
    endpoint: Endpoint,
    catalog: Catalog,
    last_rescan: Option<Instant>,
    control: MioUdpSocket,
    data: UdpSocket,
    pool: SenderPool,
    send_path_reason: String,
    channels: HashMap<endpoint::ChannelId, Channel>,
    counters: Counters,
    /// Archives whose whole hash tree has been checked, and ones that failed (refused until
    /// they change on disk).
    verified_archives: std::collections::HashSet<ArchiveKey>,
    corrupt_archives: std::collections::HashSet<ArchiveKey>,
    /// Hash-tree checks running beside the loop: one per archive version at most, and at most
    /// `VERIFICATIONS_MAX` at once, whether or not its channel is still open (closing and
    /// reopening a channel never starts another).
    verifying: HashMap<ArchiveKey, std::thread::JoinHandle<Result<Option<Stamp>, String>>>,
    /// Checks recorded beside the archives (`loopcastd check`, or this server's own): an
    /// unchanged archive with a record is not hashed again on channel open.
    records: VerifiedRecords,
    /// Heartbeats to the directors (R15), and when the catalog they announce is next rescanned.
    heartbeat: Option<loopcast_proto::heartbeat::HeartbeatSender>,
    /// When a refused challenge from the wrong host was last logged.
    last_wrong_host_warning: Option<Instant>,
    next_catalog_scan: Instant,
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

fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the OS random source works");
    seed
}

/// Runs the server until `shutdown` becomes true; on each `reload` request (SIGHUP) the media
/// database is rescanned and the settings read again (what can change live is applied).
pub fn run_reloadable(
    config: ServerConfig,
    shutdown: Arc<AtomicBool>,
    reload: Reload,
) -> Result<(), ServerError> {
    let socket = bind(&config)?;
    serve(config, socket, shutdown, Some(reload))
}

/// Runs the server on an already bound request socket until `shutdown` becomes true.
pub fn run_on(
    config: ServerConfig,
    control_std: UdpSocket,
    shutdown: Arc<AtomicBool>,
) -> Result<(), ServerError> {
    serve(config, control_std, shutdown, None)
}

fn serve(
    config: ServerConfig,
    control_std: UdpSocket,
    shutdown: Arc<AtomicBool>,
    mut reload: Option<Reload>,
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
            loopcast_admin::AdminConfig {
                actions: vec![],
                answered: vec!["stop-channel", "drain", "undrain"],
                ..loopcast_admin::AdminConfig::default()
            },
        )?),
        None => None,
    };
    let _metrics = loopcast_admin::metrics::MetricsServer::start_beside(
        config.metrics,
        admin.as_ref(),
        "loopcastd",
    );
    tracing::info!(
        %local,
        media = %config.media_dir.display(),
        archives,
        multicast = %config.multicast.as_ref().map_or_else(
            || "off (unicast only)".to_owned(),
            |m| format!("groups from {}, port {}", m.group_base, m.port)
        ),
        rate = %match (&config.adaptive, config.rate_bits_per_s) {
            (None, rate) => format!("fixed {}", format_rate(rate)),
            // Automatic rates never pass the config's rate_max, whatever --rate says: the real
            // cap (a `--rate 100G` said 100G here while `status` said 40G).
            (Some(adaptive), 0) => format!("automatic, at most {}", format_rate(adaptive.rate_max)),
            (Some(adaptive), cap) => format!(
                "automatic, at most {}",
                format_rate(cap.min(adaptive.rate_max))
            ),
        },
        "loopcastd serving"
    );
    if archives == 0 {
        tracing::warn!(
            media = %config.media_dir.display(),
            "no archives (*.lca) in the media database yet: every request is refused until one \
             is packed there (`loopcast pack FILE --media DIR`; new archives are found without \
             a restart)"
        );
    }
    let clock = MonotonicClock::new();
    let mut endpoint_config = EndpointConfig::new(local);
    endpoint_config.multicast = config.multicast.as_ref().map(|m| MulticastGroups {
        group_base: m.group_base,
        port: m.port,
    });
    endpoint_config.rate_bits_per_s = config.rate_bits_per_s;
    endpoint_config.adaptive = config.adaptive.clone();
    endpoint_config.session_timeout = config.session_timeout;
    endpoint_config.sessions_max = config.sessions_max;
    endpoint_config.sessions_per_address_max = config.sessions_per_address_max;
    endpoint_config.channels_max = config.channels_max;
    endpoint_config.redirect_unknown_to = config
        .fleet
        .as_ref()
        .map_or_else(Vec::new, |f| f.directors.clone());
    let mut server = Server {
        endpoint: Endpoint::new(
            endpoint_config,
            SeededRng::from_seed(os_seed()),
            clock.now(),
        ),
        clock,
        catalog,
        last_rescan: None,
        control,
        data,
        pool,
        send_path_reason: reason,
        channels: HashMap::new(),
        counters: Counters::default(),
        verified_archives: std::collections::HashSet::new(),
        corrupt_archives: std::collections::HashSet::new(),
        verifying: HashMap::new(),
        records: VerifiedRecords::load(&config.media_dir),
        heartbeat: None,
        last_wrong_host_warning: None,
        next_catalog_scan: Instant::ZERO,
        config,
    };
    if let Some(fleet) = server.config.fleet.clone() {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| std::io::Error::other(e.to_string()))?;
        tracing::info!(directors = ?fleet.directors, advertise = %fleet.advertise, location = %fleet.location, "heartbeats to the fleet's directors");
        server.heartbeat = Some(loopcast_proto::heartbeat::HeartbeatSender::new(
            fleet,
            u64::from_be_bytes(id),
            loopcast_proto::time::unix_time_ms(),
        ));
    }
    let mut events = Events::with_capacity(64);
    while !shutdown.load(Ordering::Relaxed) {
        let now = server.clock.now();
        let wake_at = [
            server.endpoint.poll_timeout(),
            server.heartbeat.as_ref().map(|h| h.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = wake_at.map_or(POLL_CEILING, |at| server.clock.until(at).min(POLL_CEILING));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        let _ = now;
        server.drain_control();
        server.housekeeping();
        if let Some(reload) = reload.as_mut().filter(|r| r.take_request()) {
            server.reload(reload);
        }
        if let Some(admin) = &mut admin {
            for pending in admin.take_answered() {
                let answer = server.answered_action(&pending.command, pending.argument.as_deref());
                pending.answer(answer);
            }
            admin.publish_status(|| server.status_json());
        }
    }
    // Tell the directors first (no new clients come), then every client, so they ask again
    // (here after a restart, or elsewhere).
    if let Some(heartbeat) = server.heartbeat.as_mut() {
        heartbeat.state = loopcast_proto::wire::fleet::ServerState::Stopping;
    }
    server.send_heartbeat(true);
    let channels = server.channels.len();
    server.endpoint.shutdown(server.clock.now());
    server.flush_endpoint();
    tracing::info!("shutting down: closed {channels} channel(s)");
    // Stops the admin thread and removes the socket file.
    drop(admin);
    Ok(())
}

impl Server {
    /// What each channel's sender has sent so far, to the endpoint: reports are judged
    /// against what their interval really carried (the sender may fall short of the tier's
    /// rate). Atomic loads, one per channel, before the reports of this wake-up are read
    /// (every wake-up, timers' included, passes here first).
    fn sample_sent(&mut self, now: Instant) {
        for (&channel, state) in &self.channels {
            self.endpoint.handle_channel_sent(
                now,
                channel,
                state.stats.datagrams.load(Ordering::Relaxed),
            );
        }
    }

    fn drain_control(&mut self) {
        self.sample_sent(self.clock.now());
        let mut buffer = [0u8; CONTROL_LEN_MAX];
        for _ in 0..CONTROL_BATCH_MAX {
            let (len, from) = match self.control.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "request socket receive error");
                    break;
                }
            };
            let now = self.clock.now();
            if Heartbeat::is_fleet(&buffer[..len]) {
                // A director's challenge (R15): answered with a heartbeat at once.
                if let Some(heartbeat) = self.heartbeat.as_mut() {
                    match heartbeat.handle_datagram(now, from, &buffer[..len]) {
                        Ok(()) => {}
                        // Said at most every 10 s: a director whose answers leave from another
                        // address than the one it is configured by never registers us.
                        Err(ChallengeRefused::WrongHost { director })
                            if self
                                .last_wrong_host_warning
                                .is_none_or(|at| now.saturating_since(at) >= WARNING_INTERVAL) =>
                        {
                            self.last_wrong_host_warning = Some(now);
                            tracing::warn!(%from, %director, "a director's challenge came from another host than --director names: refused (a replay, or a director answering from another address; give it --listen with the address servers use)");
                        }
                        Err(refused) => tracing::debug!(%from, ?refused, "fleet datagram refused"),
                    }
                }
                self.send_heartbeat(false);
                continue;
            }
            let mut lookup = Lookup {
                catalog: &mut self.catalog,
                last_rescan: &mut self.last_rescan,
                corrupt: &self.corrupt_archives,
                now,
            };
            self.endpoint
                .handle_control(now, from, &buffer[..len], &mut lookup);
            self.flush_endpoint();
        }
    }

    /// Carries out what the endpoint decided: data-plane commands first (a destination is
    /// added before anything is sent about it), then control datagrams, then log lines.
    fn flush_endpoint(&mut self) {
        while let Some(command) = self.endpoint.poll_command() {
            self.data_command(command);
        }
        while let Some(transmit) = self.endpoint.poll_transmit() {
            let socket_result = match transmit.via {
                Via::Control => self.control.send_to(&transmit.bytes, transmit.destination),
                Via::Group => self.data.send_to(&transmit.bytes, transmit.destination),
            };
            if let Err(error) = socket_result {
                tracing::debug!(to = %transmit.destination, %error, "control datagram not sent");
            }
        }
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::SessionOpened {
                    session,
                    client,
                    file,
                    offered,
                } => {
                    tracing::info!(session = format_args!("{:016x}", session.0), %client, %file, %offered, "session offered")
                }
                Event::SessionValidated {
                    session,
                    client,
                    transport,
                    channel,
                } => {
                    tracing::info!(session = format_args!("{:016x}", session.0), %client, %transport, channel = channel.0, "session joined (address validated)")
                }
                Event::SessionEnded {
                    session,
                    client,
                    end,
                } => {
                    tracing::info!(session = format_args!("{:016x}", session.0), %client, "{end}")
                }
                Event::ChannelClosed { channel, file } => {
                    // A channel that ran was logged with its traffic as the data plane closed
                    // it; this one may never have run (opened for a request whose client then
                    // got a channel of its own, or never joined).
                    tracing::debug!(channel = channel.0, %file, "channel closed: no active clients")
                }
                Event::TierOpened {
                    channel,
                    file,
                    rate_bits_per_s,
                } => {
                    tracing::info!(channel = channel.0, %file, rate = %format_rate(rate_bits_per_s), "tier opened")
                }
                Event::RateChanged {
                    channel,
                    file,
                    from_bits_per_s,
                    to_bits_per_s,
                } => {
                    // Increases come every few hundred milliseconds while probing: debug; a
                    // decrease (clients lost) is worth a line.
                    if to_bits_per_s < from_bits_per_s {
                        tracing::info!(channel = channel.0, %file, from = %format_rate(from_bits_per_s), to = %format_rate(to_bits_per_s), "tier rate lowered: its clients lost")
                    } else {
                        tracing::debug!(channel = channel.0, %file, from = %format_rate(from_bits_per_s), to = %format_rate(to_bits_per_s), "tier rate raised")
                    }
                }
                Event::TierMoved {
                    session,
                    client,
                    file,
                    from_bits_per_s,
                    to_bits_per_s,
                    goodput_bits_per_s,
                    loss,
                } => {
                    tracing::info!(
                        session = format_args!("{:016x}", session.0),
                        %client,
                        %file,
                        from = %format_rate(from_bits_per_s),
                        to = %format_rate(to_bits_per_s),
                        goodput = %format_rate(goodput_bits_per_s),
                        loss = format_args!("{:.1}%", loss * 100.0),
                        "client moved to another tier"
                    )
                }
            }
        }
    }

    fn data_command(&mut self, command: DataCommand) {
        match command {
            DataCommand::OpenChannel {
                channel,
                file_id,
                name,
                rate_bits_per_s,
                start_like,
                start_at,
            } => {
                // A new tier continues where its clients' old tier is in the loop; a channel
                // for a client that lost another server, where that server's loop was.
                let start_serial = start_like
                    .and_then(|c| self.channels.get(&c))
                    .map(|c| c.stats.next_serial.load(Ordering::Relaxed) as u32)
                    .or(start_at)
                    .unwrap_or(0);
                if let Err(message) =
                    self.open_channel(channel, file_id, &name, rate_bits_per_s, start_serial)
                {
                    tracing::error!(file = %name, %message, "cannot open channel");
                    let now = self.clock.now();
                    self.endpoint.handle_channel_failed(now, channel);
                }
            }
            DataCommand::CloseChannel { channel } => {
                if let Some(closed) = self.channels.remove(&channel) {
                    self.pool_command(Command::RemoveChannel(closed.id));
                    tracing::info!(
                        channel = channel.0,
                        file = %closed.info.name,
                        datagrams = closed.stats.datagrams.load(Ordering::Relaxed),
                        bytes = closed.stats.bytes.load(Ordering::Relaxed),
                        repair_datagrams = closed.stats.repair_datagrams.load(Ordering::Relaxed),
                        repairs_refused = closed.stats.repairs_refused.load(Ordering::Relaxed),
                        "channel closed"
                    );
                }
            }
            DataCommand::SetRate {
                channel,
                rate_bits_per_s,
            } => {
                if let Some(id) = self.channels.get(&channel).map(|c| c.id) {
                    self.pool_command(Command::SetRate(id, rate_bits_per_s));
                }
            }
            DataCommand::AddDestination {
                channel,
                destination,
            } => {
                if let Some(id) = self.channels.get(&channel).map(|c| c.id) {
                    self.pool_command(Command::AddDestination(id, destination));
                }
            }
            DataCommand::RemoveDestination {
                channel,
                destination,
            } => {
                if let Some(id) = self.channels.get(&channel).map(|c| c.id) {
                    self.pool_command(Command::RemoveDestination(id, destination));
                }
            }
            DataCommand::QueueRepair {
                channel,
                first,
                count,
                to,
            } => {
                if let Some(id) = self.channels.get(&channel).map(|c| c.id) {
                    // The pool's carousel checks the range and merges repeats; a full command
                    // queue (a NAK flood) drops the range, counted, not logged.
                    let queued = self.pool.command(Command::QueueRepair {
                        channel: id,
                        first,
                        count,
                        to,
                    });
                    if queued.is_err() {
                        self.counters.nak_ranges_dropped += 1;
                    }
                }
            }
        }
    }

    /// Maps the archive and hands the loop to the sender pool; its tree is checked beside the
    /// loop (clients verify every datagram themselves, so nothing unproven is accepted
    /// meanwhile, and the first client does not wait ~0.5 s per GiB).
    fn open_channel(
        &mut self,
        channel: endpoint::ChannelId,
        file_id: FileId,
        name: &str,
        rate_bits_per_s: u64,
        start_serial: u32,
    ) -> Result<(), String> {
        let path = self
            .catalog
            .lookup(name)
            .ok_or_else(|| format!("{name:?} left the media database"))?
            .to_owned();
        let key = ArchiveKey::of(&path).ok_or_else(|| format!("cannot stat {}", path.display()))?;
        let archive = ArchiveFile::open(&path).map_err(|e| e.to_string())?;
        if archive.info().file_id != file_id {
            return Err(format!("{} changed since it was offered", path.display()));
        }
        let map = Arc::new(
            MappedArchive::map(archive.file(), archive.path()).map_err(|e| e.to_string())?,
        );
        let info = archive.info().clone();
        let id = ChannelId(channel.0);
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
                rate_bits_per_s,
                destinations: Vec::new(),
                repair_share_percent: loopcast_proto::carousel::REPAIR_SHARE_PERCENT_DEFAULT,
                start_serial,
                stats: stats.clone(),
            })
            .map_err(|e| format!("sender threads are busy ({e:?}); try again"))?;
        let now = self.clock.now();
        if self.config.verify_on_open && !self.verified_archives.contains(&key) {
            self.records.refresh();
            if self
                .records
                .vouches_for_open(&key.path, archive.file(), info.root())
            {
                tracing::info!(path = %key.path.display(), "archive checked earlier and unchanged since (a record in {}): not hashed again before serving", crate::verified::RECORDS_FILE);
                self.counters.archives_vouched += 1;
                self.verified_archives.insert(key.clone());
            } else {
                if self.records.is_recorded(&key.path) {
                    tracing::info!(path = %key.path.display(), "archive recorded as checked in {} but changed since (its bytes, or its owner, mode or links: the change time moved): hashing it again; run `loopcastd check` after such changes", crate::verified::RECORDS_FILE);
                }
                self.start_verification(&key);
            }
        }
        tracing::info!(channel = channel.0, file = %info.name, file_id = %file_id, loop_len = info.loop_len, rate = %format_rate(rate_bits_per_s), "channel opened");
        self.channels.insert(
            channel,
            Channel {
                id,
                info,
                stats,
                key,
                next_disk_check: now + ARCHIVE_CHECK_INTERVAL,
                next_verify: now + ARCHIVE_REVERIFY_INTERVAL,
            },
        );
        Ok(())
    }

    /// Starts checking an archive's whole tree beside the loop, unless a check of this version
    /// is already running or `VERIFICATIONS_MAX` are (the next archive check tries again).
    fn start_verification(&mut self, key: &ArchiveKey) {
        if self.verifying.contains_key(key) || self.verifying.len() >= VERIFICATIONS_MAX {
            return;
        }
        let check_path = key.path.clone();
        let spawned = std::thread::Builder::new()
            .name("loopcast-verify".into())
            .spawn(move || {
                // The check must not take the CPU the loops need: it runs on its own pool at
                // the lowest priority (nice 19: it still progresses on a busy server). On the
                // shared pool at normal priority it took both cores of a 2-core bench for the
                // first 0.3 s of a 1 GiB channel, which then sent at a quarter of its rate.
                lower_this_threads_priority();
                let pool = rayon::ThreadPoolBuilder::new()
                    // Not "loopcast-verify-N": names are cut to 15 bytes, and the check's own
                    // thread is "loopcast-verify" (one per check running).
                    .thread_name(|i| format!("lc-verify-{i}"))
                    .start_handler(|_| lower_this_threads_priority())
                    .build()
                    .map_err(|e| format!("no threads for the archive check: {e}"))?;
                pool.install(|| {
                    let archive = ArchiveFile::open(&check_path).map_err(|e| e.to_string())?;
                    let root = archive.info().root();
                    // Recorded only if nothing changed the file while it was hashed.
                    let before = Stamp::of_open(&check_path, archive.file(), root);
                    archive
                        .verify_with(&loopcast_dataplane::hash_lanes::hash_many)
                        .map_err(|e| e.to_string())?;
                    let after = Stamp::of_open(&check_path, archive.file(), root);
                    Ok(if before == after { before } else { None })
                })
            });
        match spawned {
            Ok(handle) => {
                self.verifying.insert(key.clone(), handle);
            }
            Err(error) => tracing::warn!(%error, "archive verification not started"),
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

    /// Archives on disk (deliverable of R23): a served archive whose size, inode or
    /// modification time changed, or whose tree fails a check beside the loop, stops its
    /// channel; its clients are told why.
    fn check_archives(&mut self, now: Instant) {
        let mut failed = Vec::new();
        for (&channel_id, channel) in self.channels.iter_mut() {
            if now >= channel.next_disk_check {
                channel.next_disk_check = now + ARCHIVE_CHECK_INTERVAL;
                if ArchiveKey::of(&channel.key.path).as_ref() != Some(&channel.key) {
                    let what = if channel.key.path.exists() {
                        "archive changed on disk while served (replaced or rewritten): stopping its channel"
                    } else {
                        "archive removed from disk while served: stopping its channel"
                    };
                    tracing::error!(file = %channel.info.name, path = %channel.key.path.display(), "{what}");
                    self.counters.archives_changed += 1;
                    failed.push(channel_id);
                    continue;
                }
            }
        }
        // Periodic re-checks of served archives, and first checks that waited for a slot.
        let due: Vec<ArchiveKey> = self
            .channels
            .values_mut()
            .filter(|c| {
                now >= c.next_verify
                    || (self.config.verify_on_open && !self.verified_archives.contains(&c.key))
            })
            .map(|c| {
                if now >= c.next_verify {
                    c.next_verify = now + ARCHIVE_REVERIFY_INTERVAL;
                }
                c.key.clone()
            })
            .collect();
        for key in due {
            if !self.corrupt_archives.contains(&key) {
                self.start_verification(&key);
            }
        }
        // Finished checks, whether or not their channel is still open.
        let finished: Vec<ArchiveKey> = self
            .verifying
            .iter()
            .filter(|(_, handle)| handle.is_finished())
            .map(|(key, _)| key.clone())
            .collect();
        for key in finished {
            let handle = self.verifying.remove(&key).expect("listed above");
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err("verification thread panicked".into()));
            match outcome {
                Ok(stamp) => {
                    tracing::info!(path = %key.path.display(), "archive verified");
                    self.counters.archives_verified += 1;
                    if let Some(stamp) = stamp {
                        self.records.insert(&key.path, stamp);
                        self.save_records();
                    }
                    self.verified_archives.insert(key);
                }
                Err(error) => {
                    tracing::error!(path = %key.path.display(), %error, "archive failed verification: stopping its channel and refusing it until it changes");
                    self.counters.archives_corrupt += 1;
                    self.verified_archives.remove(&key);
                    self.records.remove(&key.path);
                    self.save_records();
                    failed.extend(
                        self.channels
                            .iter()
                            .filter(|(_, c)| c.key == key)
                            .map(|(&id, _)| id),
                    );
                    self.corrupt_archives.insert(key);
                }
            }
        }
        for channel in failed {
            self.endpoint.handle_channel_failed(now, channel);
        }
    }

    /// Best effort: a media directory the server may not write (the packaged unit's is
    /// read-only to it) keeps the records `loopcastd check` wrote.
    fn save_records(&mut self) {
        if let Err(error) = self.records.save() {
            tracing::debug!(%error, dir = %self.config.media_dir.display(), "records of checked archives not written");
        }
    }

    fn housekeeping(&mut self) {
        let now = self.clock.now();
        self.check_archives(now);
        self.endpoint.handle_timeout(now);
        self.flush_endpoint();
        self.send_heartbeat(false);
    }

    /// `loopcastctl drain` / `undrain` (R17): the directors hear at once that this server takes
    /// no new clients (or again does); on drain every client is then sent away with
    /// `Ended{draining}` and continues on another server of the fleet. Refused outside a fleet
    /// (its clients would only ask this server again). The answer says how many were told.
    fn drain_action(&mut self, command: &str) -> serde_json::Value {
        use loopcast_proto::wire::fleet::ServerState;
        let state = if command == "drain" {
            ServerState::Draining
        } else {
            ServerState::Online
        };
        let Some(heartbeat) = self.heartbeat.as_mut() else {
            return serde_json::json!({"error": format!(
                "this server is in no fleet (no --director): {command} would change nothing (its clients could only ask it again); to move clients off one channel, see stop-channel"
            )});
        };
        heartbeat.state = state;
        self.send_heartbeat(true);
        if state == ServerState::Draining {
            let now = self.clock.now();
            let sessions = self.endpoint.drain(now);
            self.flush_endpoint();
            tracing::info!(
                sessions,
                "draining: clients sent to the fleet's other servers; new ones go elsewhere"
            );
            serde_json::json!({"accepted": command, "clients_told": sessions})
        } else {
            tracing::info!("undrained: taking new clients again");
            serde_json::json!({"accepted": command, "clients_told": 0})
        }
    }

    /// `loopcastctl stop-channel CHANNEL` (the id `loopcastctl channels` shows): the channel's
    /// clients are told to ask again (`Ended{draining}`) and it closes; the answer says how
    /// many were told.
    fn answered_action(&mut self, command: &str, argument: Option<&str>) -> serde_json::Value {
        if command == "drain" || command == "undrain" {
            return self.drain_action(command);
        }
        if command != "stop-channel" {
            return serde_json::json!({"error": format!("unknown command {command:?}")});
        }
        let Some(channel) = argument.and_then(|a| a.trim().parse::<u64>().ok()) else {
            return serde_json::json!({"error": format!(
                "stop-channel needs a channel id (the CHANNEL column of `loopcastctl channels`), not {:?}",
                argument.unwrap_or("")
            )});
        };
        let channel = endpoint::ChannelId(channel);
        let file = self
            .endpoint
            .channels()
            .find(|c| c.channel == channel)
            .map(|c| (c.name, c.tier, c.tiers, c.own_channel));
        let now = self.clock.now();
        match (self.endpoint.stop_channel(now, channel), file) {
            (Some(clients_told), Some((file, tier, tiers, own_channel))) => {
                // Logged before what it caused (the sessions' ends, the channel's close).
                tracing::info!(channel = channel.0, %file, tier = %if own_channel { "own".to_owned() } else { format!("{}/{tiers}", tier + 1) }, clients_told, "channel stopped by the operator: its clients were told to ask again");
                self.flush_endpoint();
                serde_json::json!({
                    "stopped": channel.0,
                    "file": file,
                    "tier": tier,
                    "tiers": tiers,
                    "own_channel": own_channel,
                    "clients_told": clients_told,
                })
            }
            _ => serde_json::json!({"error": format!(
                "no channel {} is open (see `loopcastctl channels`)",
                channel.0
            )}),
        }
    }

    /// R15: the next heartbeat to every director, when due (or now, with `force`).
    fn send_heartbeat(&mut self, force: bool) {
        let now = self.clock.now();
        let Some(heartbeat) = self.heartbeat.as_mut() else {
            return;
        };
        if !force && now < heartbeat.poll_timeout() {
            return;
        }
        if now >= self.next_catalog_scan {
            self.next_catalog_scan = now + CATALOG_SCAN_INTERVAL;
            if let Err(error) = self.catalog.rescan() {
                tracing::warn!(%error, "cannot rescan the media database");
            }
            if let Some(cut) = heartbeat.set_catalog(self.catalog.entries().to_vec()) {
                tracing::warn!(
                    files = cut.files,
                    announced = cut.announced,
                    "catalog too large for the heartbeat pages; some files are not announced"
                );
            }
        }
        let catalog = &self.catalog;
        let load =
            loopcast_proto::heartbeat::Load::of(&self.endpoint, self.config.sessions_max, |name| {
                catalog.root_of(name)
            });
        for (director, bytes) in
            heartbeat.poll_transmit(now, loopcast_proto::time::unix_time_ms(), &load, force)
        {
            if let Err(error) = self.control.send_to(&bytes, director) {
                tracing::debug!(%director, %error, "heartbeat not sent");
            }
        }
    }

    fn status_json(&self) -> serde_json::Value {
        // Where clients reach this server (as directors send them): each client row names it,
        // so the views of a fleet's servers can be joined.
        let server_address = self.config.fleet.as_ref().map_or_else(
            || {
                self.control
                    .local_addr()
                    .map_or_else(|_| "-".to_owned(), |a| a.to_string())
            },
            |fleet| fleet.advertise.to_string(),
        );
        let channels: Vec<serde_json::Value> = self
            .endpoint
            .channels()
            .map(|view| {
                let data = self.channels.get(&view.channel);
                let load = |field: fn(&ChannelStats) -> &std::sync::atomic::AtomicU64| {
                    data.map_or(0, |c| field(&c.stats).load(Ordering::Relaxed))
                };
                let unicast = self
                    .endpoint
                    .sessions()
                    .filter(|s| {
                        s.channel == view.channel
                            && s.validated
                            && s.transport == Transport::Unicast
                    })
                    .count();
                serde_json::json!({
                    "file": view.name,
                    "file_id": view.file_id.to_string(),
                    "group": view.group.map(|g| g.to_string()),
                    "running": data.is_some(),
                    "channel": view.channel.0,
                    "tier": view.tier,
                    "tiers": view.tiers,
                    "own_channel": view.own_channel,
                    "rate_bits_per_s": view.rate_bits_per_s,
                    // A unicast client's own channel follows that client alone.
                    "policy": if view.own_channel {
                        "own client"
                    } else {
                        self.config.adaptive.as_ref().map_or("fixed", |a| a.policy.name())
                    },
                    "loop_len": view.loop_len,
                    "next_serial": load(|s| &s.next_serial),
                    "repair_datagrams": load(|s| &s.repair_datagrams),
                    "repairs_refused": load(|s| &s.repairs_refused),
                    "datagrams_sent": load(|s| &s.datagrams),
                    "bytes_sent": load(|s| &s.bytes),
                    "multicast_sessions": view.multicast_members,
                    "unicast_sessions": unicast,
                    "sessions": view.sessions,
                })
            })
            .collect();
        let sessions: Vec<serde_json::Value> = self
            .endpoint
            .sessions()
            .map(|s| {
                serde_json::json!({
                    "session": format!("{:016x}", s.session.0),
                    "client": s.client.to_string(),
                    "server": server_address,
                    "transport": s.transport.to_string(),
                    "validated": s.validated,
                    "held": s.held,
                    "file": self.endpoint.channels().find(|c| c.channel == s.channel).map(|c| c.name),
                    "channel": s.channel.0,
                    "tier": s.tier,
                    "tiers": s.tiers,
                    "own_channel": s.own_channel,
                    "tier_rate_bits_per_s": s.rate_bits_per_s,
                    "goodput_bits_per_s": s.goodput_bits_per_s.round() as u64,
                    "goodput_stddev_bits_per_s": s.goodput_stddev.round() as u64,
                    "loss": s.loss,
                    "noise_loss": s.noise_loss,
                    "rtt_us": s.rtt.map(|r| r.as_micros() as u64),
                    "reports": s.reports,
                })
            })
            .collect();
        let e = self.endpoint.counters();
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
        let fleet = self.heartbeat.as_ref().map(|h| {
            serde_json::json!({
                "state": h.state.name(),
                "directors": h.directors().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "heartbeats_to": h.heartbeat_destinations().map(|a| a.to_string()).collect::<Vec<_>>(),
                "heartbeats_sent": h.counters().heartbeats_sent,
                "challenges": h.counters().challenges,
                "challenges_refused": h.counters().challenges_refused,
            })
        });
        let mut status = serde_json::json!({
            "send_path": threads.first().map_or("none", |t| path_of(t)),
            "sender_threads": thread_json,
            "send_path_reason": self.send_path_reason,
            "archives": self.catalog.len(),
            "channels": channels,
            "sessions": sessions,
            "counters": {
                "requests": e.requests,
                "rejected": e.rejected,
                "requests_rate_limited": e.requests_rate_limited,
                "control_dropped": e.control_dropped,
                "replies_withheld": e.replies_withheld,
                "tokens_rejected": e.tokens_rejected,
                "syncs_sent": e.syncs_sent,
                "syncs_wanted": e.syncs_wanted,
                "sessions_opened": e.sessions_opened,
                "sessions_validated": e.sessions_validated,
                "sessions_completed": e.sessions_completed,
                "sessions_expired": e.sessions_expired,
                "sessions_unvalidated_expired": e.sessions_unvalidated_expired,
                "sessions_unvalidated_evicted": e.sessions_unvalidated_evicted,
                "unknown_session_replies": e.unknown_session_replies,
                "channels_opened": e.channels_opened,
                "channels_closed": e.channels_closed,
                "send_errors": self.counters.send_errors,
                "naks": e.naks,
                "nak_serials": e.nak_serials,
                "nak_ranges_dropped": self.counters.nak_ranges_dropped,
                "naks_over_budget": e.naks_over_budget,
                "naks_before_move": e.naks_before_move,
                "nak_serials_refused": e.nak_serials_refused,
                "naks_relayed": e.naks_relayed,
                "reports": e.reports,
                "reports_merged": e.reports_merged,
                "tier_moves": e.tier_moves,
                "rate_changes": e.rate_changes,
                "archives_verified": self.counters.archives_verified,
                "archives_vouched_by_record": self.counters.archives_vouched,
                "archives_corrupt": self.counters.archives_corrupt,
                "archives_changed": self.counters.archives_changed,
                "datagrams_sent": sum(|t| &t.datagrams),
                "bytes_sent": sum(|t| &t.bytes),
                "pool_send_errors": sum(|t| &t.send_errors),
                "zc_notifications": sum(|t| &t.zc_notifications),
                "zc_copied": sum(|t| &t.zc_copied),
            },
        });
        status["fleet"] = fleet.unwrap_or(serde_json::Value::Null);
        // The settings in force (SIGHUP changes some of them: see reload.rs).
        status["settings"] = serde_json::json!({
            "rate_bits_per_s": self.config.rate_bits_per_s,
            "fixed_rate": self.config.adaptive.is_none(),
            "policy": self.config.adaptive.as_ref().map(|a| a.policy.name()),
            "tiers": self.config.adaptive.as_ref().map(|a| a.tiers_max),
            "initial_rate_bits_per_s": self.config.adaptive.as_ref().map(|a| a.initial_rate),
            "session_timeout_s": self.config.session_timeout.as_secs(),
            "verify_on_open": self.config.verify_on_open,
            "location": self.config.fleet.as_ref().map(|f| f.location.clone()),
            "heartbeat_ms": self.config.fleet.as_ref().map(|f| f.interval.as_millis() as u64),
        });
        status["counters"]["redirected"] = e.redirected.into();
        status
    }
}

/// The calling thread to the lowest scheduling priority (nice 19), for background work. Best
/// effort: where refused, the work runs at normal priority.
fn lower_this_threads_priority() {
    // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
    let done = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
    };
    if done != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "background thread priority not lowered");
    }
}

#[cfg(test)]
mod priority_tests {
    #[test]
    fn the_archive_check_threads_run_at_the_lowest_priority() {
        let own = || {
            // SAFETY: reads the calling thread's own priority.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        };
        let before = own();
        let nice = std::thread::spawn(move || {
            super::lower_this_threads_priority();
            own()
        })
        .join()
        .unwrap();
        assert_eq!(nice, 19);
        assert_eq!(own(), before, "only the thread that asked is lowered");
    }
}
