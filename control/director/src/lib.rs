//! The traffic director (`loopcastd direct`, R15-R18): one mio loop that feeds its UDP ports and
//! the clock to `proto::director::Director` and sends what it answers. Clients' Requests arrive
//! on the request port; servers' heartbeats on a port of their own (read first, so a flood of
//! Requests cannot crowd them out), or on the request port; the admin socket shows the registry.
//!
//! ```text
//!  heartbeat (server) ──▶ Director: registry ── expiry (no heartbeat for 3 intervals)
//!          └─ not known yet ──▶ Challenge, sent from the heartbeat port (the server sends
//!                               its heartbeats where the challenge came from)
//!  Request (client)   ──▶ Director: route ──▶ Redirect{server} | Reject ──▶ the client
//! ```
//! Several directors run side by side, each fed by every server; none is a single point of
//! failure (clients ask the next one when one is silent).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loopcast_proto::director::{Director, DirectorConfig, DirectorEvent};
use loopcast_proto::time::MonotonicClock;
use loopcast_proto::wire::fleet::{FleetKey, Heartbeat, HEARTBEAT_LEN_MAX};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

mod reload;

/// SIGHUP's request and the way to read the settings again.
pub type Reload = loopcast_admin::reload::Reload<DirectConfig>;

#[derive(Clone, Debug)]
pub struct DirectConfig {
    pub listen: SocketAddr,
    /// A port for servers' heartbeats alone, read before the clients' (a flood of Requests on
    /// the shared port can make the kernel drop heartbeats, and a live server look dead).
    pub heartbeat_listen: Option<SocketAddr>,
    pub fleet_key: FleetKey,
    /// A server is dead after this many missed heartbeats (R17).
    pub heartbeat_misses: u32,
    pub admin_socket: Option<PathBuf>,
    /// Prometheus text endpoint (`GET /metrics`), from the admin status; `None`: off.
    pub metrics: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("cannot bind the director's port {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Admin(#[from] loopcast_admin::StartError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const SOCKET: Token = Token(0);
const HEARTBEATS: Token = Token(1);
/// Longest sleep, so shutdown requests are noticed.
const POLL_CEILING: Duration = Duration::from_millis(100);
/// The warning about heartbeats under another key comes at most this often.
const KEY_WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// Datagrams handled per wake-up (then the clock and the admin snapshot get their turn).
const BATCH_MAX: usize = 1024;

/// Binds the director's port (so a caller can learn it before `run_on`, e.g. port 0).
pub fn bind(listen: SocketAddr) -> Result<std::net::UdpSocket, DirectError> {
    std::net::UdpSocket::bind(listen).map_err(|source| DirectError::Bind {
        addr: listen,
        source,
    })
}

pub fn run(config: DirectConfig, shutdown: Arc<AtomicBool>) -> Result<(), DirectError> {
    let socket = bind(config.listen)?;
    run_on(config, socket, shutdown)
}

/// As [`run`]; on each `reload` request (SIGHUP) the settings are read again and
/// `--heartbeat-misses` applied (see `reload.rs`).
pub fn run_reloadable(
    config: DirectConfig,
    shutdown: Arc<AtomicBool>,
    reload: Reload,
) -> Result<(), DirectError> {
    let socket = bind(config.listen)?;
    direct(config, socket, shutdown, Some(reload))
}

pub fn run_on(
    config: DirectConfig,
    socket: std::net::UdpSocket,
    shutdown: Arc<AtomicBool>,
) -> Result<(), DirectError> {
    direct(config, socket, shutdown, None)
}

fn direct(
    mut config: DirectConfig,
    socket: std::net::UdpSocket,
    shutdown: Arc<AtomicBool>,
    mut reload: Option<Reload>,
) -> Result<(), DirectError> {
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    let mut socket = UdpSocket::from_std(socket);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE)?;
    let mut heartbeat_socket = match config.heartbeat_listen {
        Some(address) => {
            let std_socket = bind(address)?;
            std_socket.set_nonblocking(true)?;
            let mut socket = UdpSocket::from_std(std_socket);
            poll.registry()
                .register(&mut socket, HEARTBEATS, Interest::READABLE)?;
            tracing::info!(%address, "heartbeats on a port of their own");
            Some(socket)
        }
        None => None,
    };
    let mut admin = match &config.admin_socket {
        Some(path) => Some(loopcast_admin::AdminServer::start(
            path,
            loopcast_admin::AdminConfig::default(),
        )?),
        None => None,
    };
    let _metrics = loopcast_admin::metrics::MetricsServer::start_beside(
        config.metrics,
        admin.as_ref(),
        "loopcast_director",
    );
    let mut challenge_secret = [0u8; 32];
    getrandom::fill(&mut challenge_secret).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut director_config = DirectorConfig::new(config.fleet_key.clone(), challenge_secret);
    director_config.heartbeat_misses = config.heartbeat_misses.max(1);
    let mut director = Director::new(director_config);
    let clock = MonotonicClock::new();
    tracing::info!(%local, heartbeat_misses = config.heartbeat_misses, "loopcastd directing");
    let mut events = Events::with_capacity(16);
    let mut buffer = vec![0u8; HEARTBEAT_LEN_MAX.max(2048) + 1];
    let mut last_key_warning: Option<std::time::Instant> = None;
    let mut heartbeats_on_own_port = 0u64;
    let heartbeat_address = heartbeat_socket.as_ref().and_then(|s| s.local_addr().ok());
    while !shutdown.load(Ordering::Relaxed) {
        let timeout = director
            .poll_timeout()
            .map_or(POLL_CEILING, |at| clock.until(at).min(POLL_CEILING));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        // Heartbeats first, all of them (they come from the fleet's servers, a few a second
        // each); only heartbeats are taken on that port.
        if let Some(heartbeats) = heartbeat_socket.as_mut() {
            for _ in 0..BATCH_MAX {
                let Ok((len, from)) = heartbeats.recv_from(&mut buffer) else {
                    break;
                };
                if !Heartbeat::is_fleet(&buffer[..len]) {
                    continue;
                }
                heartbeats_on_own_port += 1;
                if let Some(challenge) = director.handle_datagram(
                    clock.now(),
                    loopcast_proto::time::unix_time_ms(),
                    from,
                    &buffer[..len],
                ) {
                    let _ = heartbeats.send_to(&challenge, from);
                }
            }
        }
        for _ in 0..BATCH_MAX {
            let (len, from) = match socket.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "receive error");
                    break;
                }
            };
            let now = clock.now();
            let refused_before = director.counters().heartbeats_unauthenticated;
            let fleet = Heartbeat::is_fleet(&buffer[..len]);
            if let Some(answer) = director.handle_datagram(
                now,
                loopcast_proto::time::unix_time_ms(),
                from,
                &buffer[..len],
            ) {
                // A challenge goes from the heartbeat port: the server sends there from then on.
                match heartbeat_socket.as_ref() {
                    Some(heartbeats) if fleet => heartbeats.send_to(&answer, from),
                    _ => socket.send_to(&answer, from),
                }
                .ok();
            }
            // A server with another fleet key is silent on its side: say it here, at most
            // every 10 s (a forger could otherwise fill the log).
            if director.counters().heartbeats_unauthenticated > refused_before
                && last_key_warning
                    .is_none_or(|at: std::time::Instant| at.elapsed() >= KEY_WARNING_INTERVAL)
            {
                last_key_warning = Some(std::time::Instant::now());
                tracing::warn!(
                    %from,
                    refused = director.counters().heartbeats_unauthenticated,
                    "heartbeat not made with this fleet's key (another --fleet-key, or a forger): refused"
                );
            }
        }
        if let Some(reload) = reload.as_mut().filter(|r| r.take_request()) {
            reload::apply(&mut config, &mut director, reload);
        }
        director.handle_timeout(clock.now());
        while let Some(event) = director.poll_event() {
            log(&event);
        }
        if let Some(admin) = &mut admin {
            admin.publish_status(|| {
                let mut status = status_json(&director, clock.now());
                status["listen"] = local.to_string().into();
                status["heartbeat_listen"] =
                    heartbeat_address.map_or(serde_json::Value::Null, |a| a.to_string().into());
                status["counters"]["heartbeats_on_heartbeat_port"] = heartbeats_on_own_port.into();
                status
            });
        }
    }
    tracing::info!("director stopping");
    drop(admin);
    Ok(())
}

fn log(event: &DirectorEvent) {
    match event {
        DirectorEvent::ServerUp {
            server_id,
            request_addr,
        } => {
            tracing::info!(server = %request_addr, id = format_args!("{server_id:016x}"), "server up")
        }
        DirectorEvent::ServerStateChanged {
            server_id,
            request_addr,
            state,
        } => {
            tracing::info!(server = %request_addr, id = format_args!("{server_id:016x}"), state = state.name(), "server state")
        }
        DirectorEvent::ServerDown {
            server_id,
            request_addr,
            silent_for,
        } => {
            tracing::warn!(server = %request_addr, id = format_args!("{server_id:016x}"), silent_ms = silent_for.as_millis() as u64, "server down: no heartbeat; routing its files elsewhere")
        }
        DirectorEvent::ServerReplaced {
            old_server_id,
            server_id,
            request_addr,
        } => {
            tracing::info!(server = %request_addr, old = format_args!("{old_server_id:016x}"), id = format_args!("{server_id:016x}"), "server restarted")
        }
    }
}

fn status_json(director: &Director, now: loopcast_proto::time::Instant) -> serde_json::Value {
    let counters = director.counters();
    let servers: Vec<serde_json::Value> = director
        .servers(now)
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "server_id": format!("{:016x}", s.server_id),
                "address": s.request_addr.to_string(),
                "heard_from": s.heard_from.to_string(),
                "state": if s.alive { s.state.name() } else { "dead" },
                "location": s.location,
                "sessions": s.sessions,
                "sessions_max": s.sessions_max,
                "channels": s.channels,
                "rate_bits_per_s": s.rate_bits_per_s,
                "rate_bits_per_s_max": s.rate_bits_per_s_max,
                "client_throughput_bits_per_s": s.client_throughput_bits_per_s,
                "tiers": s.tiers.iter().map(|t| serde_json::json!({
                    "root_prefix": t.root_prefix.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    "rate_bits_per_s": t.rate_bits_per_s,
                    "clients": t.clients,
                })).collect::<Vec<_>>(),
                "routed_since_heartbeat": s.routed_since_heartbeat,
                "last_heard_ms": s.last_heard_ago.as_millis() as u64,
                "files": s.files.iter().map(|f| serde_json::json!({
                    "name": f.name,
                    "root": f.root.to_hex(),
                    "bytes": f.bytes,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "role": "director",
        "servers": servers,
        "counters": {
            "heartbeats": counters.heartbeats,
            "heartbeats_unauthenticated": counters.heartbeats_unauthenticated,
            "heartbeats_malformed": counters.heartbeats_malformed,
            "heartbeats_replayed": counters.heartbeats_replayed,
            "heartbeats_refused_full": counters.heartbeats_refused_full,
            "heartbeats_challenged": counters.heartbeats_challenged,
            "requests": counters.requests,
            "redirects": counters.redirects,
            "rejects_not_found": counters.rejects_not_found,
            "rejects_busy": counters.rejects_busy,
            "dropped": counters.dropped,
        },
    })
}
