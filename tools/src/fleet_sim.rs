//! `loopcast-bench fleet-sim` (issue 11): a fleet of N clients over the real director and
//! server machines, on virtual time, in one process (no sockets, no sleeps, one seed).
//!
//! ```text
//!  ClientSession (real) ──Request──▶ Director (real) ──Redirect──▶ ClientSession
//!        │                 ▲ heartbeats every 250 ms (wire type, as HeartbeatSender builds them)
//!        └──Request, Joined, Status, Report──▶ Endpoint (real) ──Offer, Feedback, SYNC──┘
//!  data plane (abstracted): before each of its events (and every 50 ms) a client is credited
//!  with min(tier rate, link rate) since the last, of the channel the endpoint's DataCommands
//!  send to its group or address; what exceeds its link is lost (a policer without queue); its
//!  loss meter takes the stretch whole (`ClientSession::observe_stretch`).
//! ```
//! Control datagrams take 5 ms (client and server in one location), 40 ms (other locations),
//! 10 ms (to and from a director) one way, and are never lost. Clients arrive over the first
//! five seconds; each is checked 10 s after it first asks (the issue's routing target), and a
//! server dies (its heartbeats and answers stop) once every client has been checked: the time
//! until each of its clients receives from another server is the failover figure.
//!
//! "Matching its link class" here: on a server at the client's location (when a live one there
//! holds its file), and on a tier whose rate is between half and 105 % of what the client can
//! take: its link's rate, or the servers' per-channel cap (`--rate`, 2 Gbit/s) for clients
//! without a limit. A tier faster than the link loses what exceeds it; one slower than half of
//! it wastes more than half of the link.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as WallInstant};

use loopcast_proto::assemble::{assemble_in_memory, InMemoryFile};
use loopcast_proto::client::{ClientConfig, ClientEvent, ClientSession};
use loopcast_proto::director::{Director, DirectorConfig, DirectorEvent};
use loopcast_proto::endpoint::{
    ChannelId, DataCommand, Endpoint, EndpointConfig, FileLookup, MulticastGroups, Via,
};
use loopcast_proto::heartbeat::{FleetConfig, HeartbeatSender, Load};
use loopcast_proto::info::{FileInfo, DATAGRAM_SIZE_MTU_1500};
use loopcast_proto::rng::SeededRng;
use loopcast_proto::time::Instant;
use loopcast_proto::wire::control::{ControlMessage, RejectCode, Transport};
use loopcast_proto::wire::datagram::FileId;
use loopcast_proto::wire::fleet::{CatalogEntry, FleetKey, Heartbeat};

pub struct FleetSimArgs {
    pub clients: usize,
    pub servers: usize,
    pub directors: usize,
    pub seconds: f64,
    pub seed: u64,
}

/// A client's address: 10.a.b.c, one host per client (so per-address limits are per client).
pub(crate) fn client_address(index: usize) -> SocketAddr {
    let index = u32::try_from(index).expect("fewer than 2^32 clients");
    assert!(index < 200 << 16, "client addresses stay below 10.200/16");
    SocketAddr::from((
        Ipv4Addr::new(10, (index >> 16) as u8, (index >> 8) as u8, index as u8),
        40_000,
    ))
}

fn server_address(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 200, (index >> 8) as u8, index as u8], 7700))
}

fn director_address(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 201, 0, index as u8], 7800))
}

const LOCATIONS: [&str; 3] = ["eu", "us", "ap"];
/// Link classes: (name, bits/s; 0 = no limit).
const LINK_CLASSES: [(&str, u64); 4] = [
    ("5M", 5_000_000),
    ("50M", 50_000_000),
    ("500M", 500_000_000),
    ("unlimited", 0),
];
const FILES: usize = 4;
/// Every server's per-channel cap (the operator's `--rate`).
const CHANNEL_CAP_BITS_PER_S: u64 = 2_000_000_000;
/// What a server may send in all (its heartbeat's `rate_bits_per_s_max`).
const SERVER_RATE_MAX_BITS_PER_S: u64 = 20_000_000_000;
/// Every client is credited with data and judged at least this often.
const DATA_TICK: Duration = Duration::from_millis(50);
const RAMP: Duration = Duration::from_secs(5);
/// The issue's routing target: matching within this long of asking.
const MATCH_WITHIN: Duration = Duration::from_secs(10);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
const UNIX_MS_AT_ZERO: u64 = 1_800_000_000_000;
/// A SYNC is heard by a client syncing on its group for this long after it went out.
const SYNC_HEARD_FOR: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Client(u32),
    Server(u16),
    Director(u8),
}

fn node_of(address: SocketAddr) -> Option<Node> {
    let SocketAddr::V4(v4) = address else {
        return None;
    };
    match v4.ip().octets() {
        [10, 200, high, low] => Some(Node::Server(u16::from_be_bytes([high, low]))),
        [10, 201, 0, index] => Some(Node::Director(index)),
        [10, a, b, c] if a < 200 => Some(Node::Client(u32::from_be_bytes([0, a, b, c]))),
        _ => None,
    }
}

enum What {
    Packet {
        to: Node,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Wake(Node),
    Heartbeat(u16),
    DataTick,
    Kill(u16),
}

struct Scheduled {
    at: Instant,
    sequence: u64,
    what: What,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

struct ServerFiles(Vec<FileInfo>);

impl FileLookup for ServerFiles {
    fn lookup(&mut self, name: &str) -> Result<FileInfo, (RejectCode, String)> {
        self.0
            .iter()
            .find(|info| info.name == name)
            .cloned()
            .ok_or((RejectCode::NotFound, "no such file".into()))
    }
}

/// The data plane as the endpoint's commands leave it: each channel's rate and where it sends.
#[derive(Default)]
struct DataPlane {
    rates: HashMap<ChannelId, u64>,
    by_destination: HashMap<SocketAddr, ChannelId>,
    /// Groups a SYNC went to, with the file and when.
    synced: HashMap<SocketAddr, (FileId, Instant)>,
}

impl DataPlane {
    fn apply(&mut self, command: DataCommand) {
        match command {
            DataCommand::OpenChannel {
                channel,
                rate_bits_per_s,
                ..
            }
            | DataCommand::SetRate {
                channel,
                rate_bits_per_s,
            } => {
                self.rates.insert(channel, rate_bits_per_s);
            }
            DataCommand::CloseChannel { channel } => {
                self.rates.remove(&channel);
            }
            DataCommand::AddDestination {
                channel,
                destination,
            } => {
                self.by_destination.insert(destination, channel);
            }
            DataCommand::RemoveDestination {
                channel,
                destination,
            } => {
                if self.by_destination.get(&destination) == Some(&channel) {
                    self.by_destination.remove(&destination);
                }
            }
            DataCommand::QueueRepair { .. } => {}
        }
    }

    /// The rate at which `destination` receives, if a running channel sends to it.
    fn rate_to(&self, destination: SocketAddr) -> Option<u64> {
        let channel = self.by_destination.get(&destination)?;
        self.rates.get(channel).copied()
    }
}

struct SimClient {
    session: ClientSession,
    location: u8,
    class: u8,
    file: u8,
    asked_at: Instant,
    wake_at: Option<Instant>,
    /// The server of its current (or last) Offer.
    server: Option<u16>,
    offered_group: Option<SocketAddr>,
    /// Data is credited up to here.
    credited_at: Instant,
    received_carry: f32,
    lost_carry: f32,
    matched_now: bool,
    first_matched_at: Option<Instant>,
    /// The tier rate it received at when checked (10 s after asking).
    rate_at_check: u64,
    /// It lost its server to the kill, and when another one first delivered.
    failed_over: bool,
    replaced_at: Option<Instant>,
    gave_up: bool,
}

struct SimServer {
    endpoint: Endpoint,
    files: ServerFiles,
    location: u8,
    alive: bool,
    wake_at: Option<Instant>,
    heartbeats: HeartbeatSender,
    data: DataPlane,
    busy: Duration,
}

struct SimDirector {
    director: Director,
    wake_at: Option<Instant>,
    /// When this director declared a server (by request address) dead.
    down_at: HashMap<SocketAddr, Instant>,
    busy: Duration,
    routed_to_dead_after_expiry: u64,
    routed_to_dead_before_expiry: u64,
}

struct Sim {
    now: Instant,
    queue: BinaryHeap<Reverse<Scheduled>>,
    sequence: u64,
    clients: Vec<SimClient>,
    servers: Vec<SimServer>,
    directors: Vec<SimDirector>,
    dead: Option<(u16, Instant)>,
    datagram_bits: f64,
    packets: u64,
    wakes: u64,
}

impl Sim {
    fn push(&mut self, at: Instant, what: What) {
        self.sequence += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            sequence: self.sequence,
            what,
        }));
    }

    fn location_of(&self, node: Node) -> Option<u8> {
        match node {
            Node::Client(i) => Some(self.clients[i as usize].location),
            Node::Server(s) => Some(self.servers[usize::from(s)].location),
            Node::Director(_) => None,
        }
    }

    /// One way: 5 ms within a location, 40 ms between, 10 ms to or from a director.
    fn latency(&self, from: Node, to: Node) -> Duration {
        match (self.location_of(from), self.location_of(to)) {
            (Some(a), Some(b)) if a == b => Duration::from_millis(5),
            (Some(_), Some(_)) => Duration::from_millis(40),
            _ => Duration::from_millis(10),
        }
    }

    fn send(&mut self, from_node: Node, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let Some(to_node) = node_of(to) else {
            return;
        };
        let at = self.now + self.latency(from_node, to_node);
        self.push(
            at,
            What::Packet {
                to: to_node,
                from,
                bytes,
            },
        );
    }

    fn reschedule(&mut self, node: Node, timeout: Option<Instant>) {
        let Some(at) = timeout else {
            return;
        };
        let at = at.max(self.now);
        let wake_at = match node {
            Node::Client(i) => &mut self.clients[i as usize].wake_at,
            Node::Server(s) => &mut self.servers[usize::from(s)].wake_at,
            Node::Director(d) => &mut self.directors[usize::from(d)].wake_at,
        };
        if wake_at.is_none_or(|scheduled| at < scheduled) {
            *wake_at = Some(at);
            self.push(at, What::Wake(node));
        }
    }

    fn client_after(&mut self, index: u32) {
        let i = index as usize;
        let from = client_address(i);
        while let Some((to, bytes)) = self.clients[i].session.poll_transmit() {
            self.send(Node::Client(index), from, to, bytes);
        }
        while let Some(event) = self.clients[i].session.poll_event() {
            let client = &mut self.clients[i];
            match event {
                ClientEvent::Offered {
                    transport, channel, ..
                } => {
                    client.server = match node_of(client.session.peer()) {
                        Some(Node::Server(s)) => Some(s),
                        _ => None,
                    };
                    client.offered_group = (transport == Transport::Multicast).then_some(channel);
                    if transport == Transport::Multicast {
                        // Joining takes no time here: ask for a Sync at once, as the driver does.
                        client.session.multicast_joined(self.now);
                    }
                }
                ClientEvent::Rejected { .. } | ClientEvent::NoAnswer => client.gave_up = true,
                ClientEvent::Joined { .. }
                | ClientEvent::SessionLost { .. }
                | ClientEvent::Moved { .. } => {}
            }
        }
        while let Some((to, bytes)) = self.clients[i].session.poll_transmit() {
            self.send(Node::Client(index), from, to, bytes);
        }
        let timeout = self.clients[i].session.poll_timeout();
        self.reschedule(Node::Client(index), timeout);
    }

    fn server_after(&mut self, index: u16, started: WallInstant) {
        let s = usize::from(index);
        let from = server_address(s);
        let mut sends = Vec::new();
        {
            let server = &mut self.servers[s];
            while let Some(command) = server.endpoint.poll_command() {
                server.data.apply(command);
            }
            while let Some(transmit) = server.endpoint.poll_transmit() {
                match transmit.via {
                    Via::Control => sends.push((transmit.destination, transmit.bytes)),
                    Via::Group => {
                        if let Ok(ControlMessage::Sync { file_id, .. }) =
                            ControlMessage::parse(&transmit.bytes)
                        {
                            server
                                .data
                                .synced
                                .insert(transmit.destination, (file_id, self.now));
                        }
                    }
                }
            }
            while server.endpoint.poll_event().is_some() {}
            server.busy += started.elapsed();
        }
        for (to, bytes) in sends {
            self.send(Node::Server(index), from, to, bytes);
        }
        let timeout = self.servers[s].endpoint.poll_timeout();
        self.reschedule(Node::Server(index), timeout);
    }

    fn director_after(&mut self, index: u8) {
        let d = usize::from(index);
        let now = self.now;
        let director = &mut self.directors[d];
        while let Some(event) = director.director.poll_event() {
            if let DirectorEvent::ServerDown { request_addr, .. } = event {
                director.down_at.insert(request_addr, now);
            }
        }
        let timeout = director.director.poll_timeout();
        self.reschedule(Node::Director(index), timeout);
    }

    fn unix_ms(&self) -> u64 {
        UNIX_MS_AT_ZERO + self.now.as_nanos() / 1_000_000
    }

    fn deliver(&mut self, to: Node, from: SocketAddr, bytes: &[u8]) {
        self.packets += 1;
        match to {
            Node::Client(i) => {
                if i as usize >= self.clients.len() {
                    return;
                }
                self.credit(i as usize);
                self.clients[i as usize]
                    .session
                    .handle_control(self.now, from, bytes);
                self.client_after(i);
            }
            Node::Server(s) => {
                let Some(server) = self.servers.get_mut(usize::from(s)) else {
                    return;
                };
                if !server.alive {
                    return;
                }
                if Heartbeat::is_fleet(bytes) {
                    // A director's challenge: answered with a heartbeat at once.
                    let _ = server.heartbeats.handle_datagram(self.now, from, bytes);
                    self.send_heartbeats(s, false);
                    return;
                }
                let started = WallInstant::now();
                server
                    .endpoint
                    .handle_control(self.now, from, bytes, &mut server.files);
                self.server_after(s, started);
            }
            Node::Director(d) => {
                let unix_ms = self.unix_ms();
                let now = self.now;
                let dead = self.dead;
                let Some(director) = self.directors.get_mut(usize::from(d)) else {
                    return;
                };
                let started = WallInstant::now();
                let answer = director.director.handle_datagram(now, unix_ms, from, bytes);
                director.busy += started.elapsed();
                // A Redirect to the killed server: before or after this director expired it.
                if let (Some(answer), Some((dead, _))) = (&answer, dead) {
                    let dead = server_address(usize::from(dead));
                    if let Ok(ControlMessage::Redirect { server, .. }) =
                        ControlMessage::parse(answer)
                    {
                        if server == dead {
                            if director.down_at.contains_key(&dead) {
                                director.routed_to_dead_after_expiry += 1;
                            } else {
                                director.routed_to_dead_before_expiry += 1;
                            }
                        }
                    }
                }
                if let Some(answer) = answer {
                    self.send(
                        Node::Director(d),
                        director_address(usize::from(d)),
                        from,
                        answer,
                    );
                }
                self.director_after(d);
            }
        }
    }

    fn wake(&mut self, node: Node, at: Instant) {
        self.wakes += 1;
        match node {
            Node::Client(i) => {
                let client = &mut self.clients[i as usize];
                if client.wake_at != Some(at) {
                    return;
                }
                client.wake_at = None;
                self.credit(i as usize);
                self.clients[i as usize].session.handle_timeout(self.now);
                self.client_after(i);
            }
            Node::Server(s) => {
                let server = &mut self.servers[usize::from(s)];
                if server.wake_at != Some(at) {
                    return;
                }
                server.wake_at = None;
                if !server.alive {
                    return;
                }
                let started = WallInstant::now();
                server.endpoint.handle_timeout(self.now);
                self.server_after(s, started);
            }
            Node::Director(d) => {
                let director = &mut self.directors[usize::from(d)];
                if director.wake_at != Some(at) {
                    return;
                }
                director.wake_at = None;
                let started = WallInstant::now();
                director.director.handle_timeout(self.now);
                director.busy += started.elapsed();
                self.director_after(d);
            }
        }
    }

    fn heartbeat(&mut self, index: u16) {
        if !self.servers[usize::from(index)].alive {
            return;
        }
        self.send_heartbeats(index, true);
        self.push(self.now + HEARTBEAT_INTERVAL, What::Heartbeat(index));
    }

    /// What server `index`'s heartbeat machine sends now: a round (`round`) or the answers to
    /// challenges, built from the real endpoint's load as the node builds it.
    fn send_heartbeats(&mut self, index: u16, round: bool) {
        let s = usize::from(index);
        let unix_ms = self.unix_ms();
        let now = self.now;
        let server = &mut self.servers[s];
        let files = &server.files.0;
        let load = Load::of(
            &server.endpoint,
            server.endpoint.config().sessions_max,
            |name| files.iter().find(|f| f.name == name).map(|f| f.root()),
        );
        let out = server.heartbeats.poll_transmit(now, unix_ms, &load, round);
        for (director, bytes) in out {
            self.send(Node::Server(index), server_address(s), director, bytes);
        }
    }

    /// Whether a live server at `location` holds file `file`.
    fn location_serves(&self, location: u8, file: u8) -> bool {
        self.servers.iter().any(|server| {
            server.alive
                && server.location == location
                && server.files.0.iter().any(|f| f.name == file_name(file))
        })
    }

    /// What client `i`'s link brought since it was last credited, at its channel's rate now
    /// (the rate is constant between two events of the client, but for a change within the
    /// last 50 ms: every client is credited at least that often). A client syncing on its
    /// group joins when a SYNC or data is there. Returns the rate it receives at, if any.
    fn credit(&mut self, i: usize) -> Option<u64> {
        let now = self.now;
        let client = &mut self.clients[i];
        let since = client.credited_at;
        client.credited_at = now;
        let s = client.server?;
        client.session.session()?;
        let server = &self.servers[usize::from(s)];
        if !server.alive {
            return None;
        }
        let transport = client.session.transport();
        let listen = match transport {
            Some(Transport::Multicast) => client.session.tier().map(|t| t.channel),
            Some(Transport::Unicast) => Some(client_address(i)),
            None => client.offered_group,
        }?;
        let rate = server.data.rate_to(listen);
        match (transport, rate) {
            (None, Some(_)) => client.session.handle_data(now),
            (None, None) => {
                if let Some(&(file_id, at)) = server.data.synced.get(&listen) {
                    if now.saturating_since(at) < SYNC_HEARD_FOR {
                        client.session.handle_sync(now, file_id);
                    }
                }
            }
            (Some(_), Some(rate)) => {
                let seconds = now.saturating_since(since).as_secs_f64();
                let link = LINK_CLASSES[usize::from(client.class)].1;
                let through = if link == 0 { rate } else { rate.min(link) };
                let bits = self.datagram_bits;
                let received = f64::from(client.received_carry) + through as f64 * seconds / bits;
                let lost = f64::from(client.lost_carry)
                    + rate.saturating_sub(through) as f64 * seconds / bits;
                client.received_carry = received.fract() as f32;
                client.lost_carry = lost.fract() as f32;
                client.session.observe_stretch(received as u32, lost as u32);
                if received >= 1.0 {
                    client.session.handle_data(now);
                    if client.failed_over
                        && client.replaced_at.is_none()
                        && self.dead.is_some_and(|(dead, _)| dead != s)
                    {
                        client.replaced_at = Some(now);
                    }
                }
                return Some(rate);
            }
            (Some(_), None) => {}
        }
        None
    }

    /// Every client is credited (at least every 50 ms) and judged: is it matched now?
    fn data_tick(&mut self, serves: &[[bool; FILES]; 3]) {
        let now = self.now;
        for i in 0..self.clients.len() {
            self.clients[i].matched_now = false;
            if self.clients[i].asked_at > now {
                break; // clients are in order of arrival
            }
            let rate = self.credit(i);
            let client = &mut self.clients[i];
            if let (Some(rate), Some(s)) = (rate, client.server) {
                let link = LINK_CLASSES[usize::from(client.class)].1;
                let capacity = if link == 0 {
                    CHANNEL_CAP_BITS_PER_S
                } else {
                    link.min(CHANNEL_CAP_BITS_PER_S)
                };
                let tier_fits = rate * 2 >= capacity && rate * 100 <= capacity * 105;
                let place_fits = self.servers[usize::from(s)].location == client.location
                    || !serves[usize::from(client.location)][usize::from(client.file)];
                client.matched_now = tier_fits && place_fits;
                client.rate_at_check = rate;
                if client.matched_now && client.first_matched_at.is_none() {
                    client.first_matched_at = Some(now);
                }
            }
            self.client_after(i as u32);
        }
    }
}

fn file_name(file: u8) -> String {
    format!("fleet-{file}.bin")
}

/// Peak resident memory of this process (VmHWM), in KiB.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn fraction(count: usize, of: usize) -> f64 {
    count as f64 / of.max(1) as f64
}

/// `count` of `of`, or nothing when there was nothing to count (`null` in the JSON: a short run
/// checks no client at 10 s, and 0.0 read as "none matched").
fn measured_fraction(count: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| fraction(count, of))
}

/// Runs the fleet and returns its figures (JSON).
pub fn run_fleet_sim(args: &FleetSimArgs) -> Result<serde_json::Value, String> {
    for (option, count) in [
        ("--clients", args.clients),
        ("--servers", args.servers),
        ("--directors", args.directors),
    ] {
        if count == 0 {
            return Err(format!("{option} 0: a fleet needs at least 1"));
        }
    }
    if args.servers > 250 || args.directors > 250 || args.clients >= 200 << 16 {
        return Err("at most 250 servers and directors, fewer than 13,107,200 clients".into());
    }
    let wall_started = WallInstant::now();
    let mut rng = SeededRng::from_u64(args.seed);
    let end = Instant::ZERO + Duration::from_secs_f64(args.seconds);
    // The server dies once every client has been checked (all asked within RAMP, checked
    // MATCH_WITHIN later), if the run leaves MATCH_WITHIN after it to check its clients again.
    let kill_at = Instant::ZERO + RAMP + MATCH_WITHIN + Duration::from_secs(1);
    let kill = (kill_at + MATCH_WITHIN < end && args.servers > 1).then_some(0u16);

    let files: Vec<FileInfo> = (0..FILES)
        .map(|f| {
            let stream: Vec<u8> = (0..4 << 20).map(|_| rng.next_u64() as u8).collect();
            assemble_in_memory(&InMemoryFile {
                file_id: FileId(rng.next_u64()),
                name: &file_name(f as u8),
                datagram_size: DATAGRAM_SIZE_MTU_1500,
                frame_stream: &stream,
                watermark: None,
            })
            .0
        })
        .collect();
    let datagram_bits = f64::from(files[0].datagram_size) * 8.0;
    let key = FleetKey::from_secret(b"fleet simulation key, long enough").expect("long enough");
    let director_addresses: Vec<SocketAddr> = (0..args.directors).map(director_address).collect();
    let per_server = args.clients / args.servers + 1;
    let servers: Vec<SimServer> = (0..args.servers)
        .map(|s| {
            let location = (s % LOCATIONS.len()) as u8;
            // With four servers or more, server s lacks file s % 4.
            let held: Vec<FileInfo> = files
                .iter()
                .enumerate()
                .filter(|(f, _)| args.servers < FILES || *f != s % FILES)
                .map(|(_, info)| info.clone())
                .collect();
            let mut config = EndpointConfig::new(server_address(s));
            config.multicast = Some(MulticastGroups {
                group_base: Ipv4Addr::new(239, 77, s as u8, 0),
                port: 7701,
            });
            config.rate_bits_per_s = CHANNEL_CAP_BITS_PER_S;
            // Room for a dead server's clients besides its own.
            config.sessions_max = 4 * per_server + 1024;
            config.unvalidated_max = 4 * per_server + 1024;
            config.addresses_max = 4 * per_server + 1024;
            config.redirect_unknown_to = director_addresses.clone();
            let catalog = held
                .iter()
                .map(|info| CatalogEntry {
                    name: info.name.clone(),
                    root: info.root(),
                    bytes: info.original_size,
                })
                .collect();
            let mut heartbeats = HeartbeatSender::new(
                FleetConfig {
                    directors: director_addresses.clone(),
                    key: key.clone(),
                    advertise: server_address(s),
                    location: LOCATIONS[usize::from(location)].to_owned(),
                    interval: HEARTBEAT_INTERVAL,
                    rate_bits_per_s_max: SERVER_RATE_MAX_BITS_PER_S,
                },
                rng.next_u64(),
                UNIX_MS_AT_ZERO,
            );
            heartbeats.set_catalog(catalog);
            SimServer {
                endpoint: Endpoint::new(config, SeededRng::from_u64(rng.next_u64()), Instant::ZERO),
                files: ServerFiles(held),
                location,
                alive: true,
                wake_at: None,
                heartbeats,
                data: DataPlane::default(),
                busy: Duration::ZERO,
            }
        })
        .collect();
    let directors: Vec<SimDirector> = (0..args.directors)
        .map(|_| SimDirector {
            director: Director::new(DirectorConfig::new(key.clone(), {
                let mut secret = [0u8; 32];
                secret[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
                secret
            })),
            wake_at: None,
            down_at: HashMap::new(),
            busy: Duration::ZERO,
            routed_to_dead_after_expiry: 0,
            routed_to_dead_before_expiry: 0,
        })
        .collect();
    // Clients arrive over RAMP, in index order; the first asks after the servers' first
    // heartbeats are in.
    let first_ask = Duration::from_millis(300);
    let step_ns = RAMP.as_nanos() as u64 / args.clients as u64;
    let clients: Vec<SimClient> = (0..args.clients)
        .map(|i| {
            let asked_at = Instant::ZERO
                + first_ask
                + Duration::from_nanos(step_ns * i as u64 + rng.below(step_ns.max(1)));
            let location = rng.below(LOCATIONS.len() as u64) as u8;
            let class = rng.below(LINK_CLASSES.len() as u64) as u8;
            let file = rng.below(FILES as u64) as u8;
            let mut config =
                ClientConfig::new(director_addresses[i % args.directors], &file_name(file));
            config.alternates = (1..args.directors)
                .map(|k| director_addresses[(i + k) % args.directors])
                .collect();
            config.location = LOCATIONS[usize::from(location)].to_owned();
            SimClient {
                session: ClientSession::new(config, SeededRng::from_u64(rng.next_u64()), asked_at),
                location,
                class,
                file,
                asked_at,
                wake_at: None,
                server: None,
                offered_group: None,
                credited_at: asked_at,
                received_carry: 0.0,
                lost_carry: 0.0,
                matched_now: false,
                first_matched_at: None,
                rate_at_check: 0,
                failed_over: false,
                replaced_at: None,
                gave_up: false,
            }
        })
        .collect();
    let mut sim = Sim {
        now: Instant::ZERO,
        queue: BinaryHeap::new(),
        sequence: 0,
        clients,
        servers,
        directors,
        dead: None,
        datagram_bits,
        packets: 0,
        wakes: 0,
    };
    for s in 0..args.servers {
        // Spread over the interval, as independent servers are.
        let at = Instant::ZERO + HEARTBEAT_INTERVAL * s as u32 / args.servers as u32;
        sim.push(at, What::Heartbeat(s as u16));
    }
    for i in 0..args.clients {
        let timeout = sim.clients[i].session.poll_timeout();
        sim.reschedule(Node::Client(i as u32), timeout);
    }
    sim.push(Instant::ZERO + DATA_TICK, What::DataTick);
    if let Some(server) = kill {
        sim.push(kill_at, What::Kill(server));
    }

    crate::phase(format_args!(
        "fleet-sim: {}, {}, {}, {}, seed {}",
        counted(args.clients, "client"),
        counted(args.servers, "server"),
        counted(args.directors, "director"),
        virtual_seconds(args.seconds),
        args.seed
    ));
    let mut next_check = 0usize;
    let mut checked = 0usize;
    let mut matched_at_check = 0usize;
    let mut server_fit_at_check = 0usize;
    let mut placed_at_check = 0usize;
    let mut per_class: [(usize, usize, Vec<f64>); 4] = Default::default();
    let mut failover_clients: Vec<usize> = Vec::new();
    let mut failover_matched = None;
    let mut next_progress = Instant::ZERO + Duration::from_secs(5);
    let mut serves = [[false; FILES]; 3];
    // Bounded: every event is a datagram, a timer or a tick; far more than a run needs.
    let events_max = 2_000u64 * args.clients as u64 * (args.seconds as u64 + 1) + 10_000_000;
    let mut events = 0u64;
    while let Some(Reverse(event)) = sim.queue.pop() {
        if event.at > end {
            break;
        }
        events += 1;
        if events > events_max {
            return Err(format!(
                "more than {events_max} events: a loop that does not advance"
            ));
        }
        sim.now = event.at;
        match event.what {
            What::Packet { to, from, bytes } => sim.deliver(to, from, &bytes),
            What::Wake(node) => sim.wake(node, event.at),
            What::Heartbeat(s) => sim.heartbeat(s),
            What::Kill(s) => {
                sim.servers[usize::from(s)].alive = false;
                sim.dead = Some((s, sim.now));
                for (i, client) in sim.clients.iter_mut().enumerate() {
                    if client.server == Some(s) && client.session.session().is_some() {
                        client.failed_over = true;
                        failover_clients.push(i);
                    }
                }
            }
            What::DataTick => {
                for (location, row) in serves.iter_mut().enumerate() {
                    for (file, cell) in row.iter_mut().enumerate() {
                        *cell = sim.location_serves(location as u8, file as u8);
                    }
                }
                sim.data_tick(&serves);
                while next_check < sim.clients.len()
                    && sim.clients[next_check].asked_at + MATCH_WITHIN <= sim.now
                {
                    let client = &sim.clients[next_check];
                    checked += 1;
                    let class = &mut per_class[usize::from(client.class)];
                    class.0 += 1;
                    if client.matched_now {
                        matched_at_check += 1;
                        class.1 += 1;
                    }
                    if client.session.transport().is_some() {
                        placed_at_check += 1;
                        class.2.push(client.rate_at_check as f64);
                        let server = client.server.map(|s| sim.servers[usize::from(s)].location);
                        if server == Some(client.location)
                            || !serves[usize::from(client.location)][usize::from(client.file)]
                        {
                            server_fit_at_check += 1;
                        }
                    }
                    next_check += 1;
                }
                if let Some((_, killed_at)) = sim.dead {
                    if failover_matched.is_none() && sim.now >= killed_at + MATCH_WITHIN {
                        failover_matched = Some(
                            failover_clients
                                .iter()
                                .filter(|&&i| sim.clients[i].matched_now)
                                .count(),
                        );
                    }
                }
                if sim.now >= next_progress {
                    next_progress = next_progress + Duration::from_secs(5);
                    crate::phase(format_args!(
                        "fleet-sim: {:.0} s virtual, {:.0} s wall",
                        sim.now.as_nanos() as f64 / 1e9,
                        wall_started.elapsed().as_secs_f64()
                    ));
                }
                sim.push(sim.now + DATA_TICK, What::DataTick);
            }
        }
    }
    let wall_seconds = wall_started.elapsed().as_secs_f64();
    let virtual_seconds = args.seconds;

    // Placed at the end: on a live server, receiving.
    let placed = sim
        .clients
        .iter()
        .filter(|c| {
            c.session.transport().is_some()
                && c.server.is_some_and(|s| sim.servers[usize::from(s)].alive)
        })
        .count();
    // Clients ask over the first seconds: a short run ends before some have.
    let asked = sim.clients.iter().filter(|c| c.asked_at <= sim.now).count();
    let gave_up = sim.clients.iter().filter(|c| c.gave_up).count();
    let mut first_match_s: Vec<f64> = sim
        .clients
        .iter()
        .filter_map(|c| {
            c.first_matched_at
                .map(|at| at.saturating_since(c.asked_at).as_secs_f64())
        })
        .collect();
    first_match_s.sort_by(f64::total_cmp);
    let matched_within = first_match_s
        .iter()
        .filter(|&&s| s <= MATCH_WITHIN.as_secs_f64())
        .count();
    let mut replaced_s: Vec<f64> = failover_clients
        .iter()
        .filter_map(|&i| {
            let killed_at = sim.dead.map(|(_, at)| at)?;
            sim.clients[i]
                .replaced_at
                .map(|at| at.saturating_since(killed_at).as_secs_f64())
        })
        .collect();
    replaced_s.sort_by(f64::total_cmp);
    // With no server killed there is nothing to replace: no figure, not "all replaced".
    let all_replaced = sim.dead.map(|_| replaced_s.len() == failover_clients.len());

    let directors_busy: f64 = sim.directors.iter().map(|d| d.busy.as_secs_f64()).sum();
    let servers_busy: f64 = sim.servers.iter().map(|s| s.busy.as_secs_f64()).sum();
    let director_requests: u64 = sim
        .directors
        .iter()
        .map(|d| d.director.counters().requests)
        .sum();
    let reports: u64 = sim
        .servers
        .iter()
        .map(|s| s.endpoint.counters().reports)
        .sum();
    let server_requests: u64 = sim
        .servers
        .iter()
        .map(|s| s.endpoint.counters().requests)
        .sum();
    let per_class_json: Vec<serde_json::Value> = per_class
        .iter_mut()
        .enumerate()
        .map(|(class, (count, matched, rates))| {
            rates.sort_by(f64::total_cmp);
            serde_json::json!({
                "class": LINK_CLASSES[class].0,
                "clients": count,
                "matched_fraction": measured_fraction(*matched, *count),
                "tier_rate_bits_per_s_p10": quantile(rates, 0.1),
                "tier_rate_bits_per_s_p50": quantile(rates, 0.5),
                "tier_rate_bits_per_s_p90": quantile(rates, 0.9),
            })
        })
        .collect();
    let servers_json: Vec<serde_json::Value> = sim
        .servers
        .iter()
        .enumerate()
        .map(|(s, server)| {
            let c = server.endpoint.counters();
            serde_json::json!({
                "server": s,
                "location": LOCATIONS[usize::from(server.location)],
                "alive": server.alive,
                "sessions": server.endpoint.session_count(),
                "channels": server.endpoint.channel_count(),
                "requests": c.requests,
                "sessions_opened": c.sessions_opened,
                "sessions_validated": c.sessions_validated,
                "sessions_expired": c.sessions_expired,
                "reports": c.reports,
                "tier_moves": c.tier_moves,
                "rate_changes": c.rate_changes,
                "requests_rate_limited": c.requests_rate_limited,
                "replies_withheld": c.replies_withheld,
                "busy_seconds": server.busy.as_secs_f64(),
            })
        })
        .collect();
    let directors_json: Vec<serde_json::Value> = sim
        .directors
        .iter()
        .enumerate()
        .map(|(d, director)| {
            let c = director.director.counters();
            serde_json::json!({
                "director": d,
                "heartbeats": c.heartbeats,
                "requests": c.requests,
                "redirects": c.redirects,
                "rejects_busy": c.rejects_busy,
                "rejects_not_found": c.rejects_not_found,
                "routed_to_dead_before_expiry": director.routed_to_dead_before_expiry,
                "routed_to_dead_after_expiry": director.routed_to_dead_after_expiry,
                "busy_seconds": director.busy.as_secs_f64(),
            })
        })
        .collect();
    let dead_expired_after_s: Option<f64> = sim.dead.and_then(|(s, at)| {
        let address = server_address(usize::from(s));
        sim.directors
            .iter()
            .filter_map(|d| d.down_at.get(&address))
            .max()
            .map(|down| down.saturating_since(at).as_secs_f64())
    });
    let mut report = serde_json::json!({
        "scenario": "fleet-sim",
        "seed": args.seed,
        "clients": args.clients,
        "servers": args.servers,
        "directors": args.directors,
        "virtual_seconds": virtual_seconds,
        "wall_seconds": wall_seconds,
        "wall_seconds_per_virtual_second": wall_seconds / virtual_seconds,
        "events": events,
        "datagrams": sim.packets,
        "routing_decisions": director_requests,
        "routing_decisions_per_director_busy_s": director_requests as f64 / directors_busy.max(1e-9),
        "reports_handled": reports,
        "reports_per_server_busy_s": reports as f64 / servers_busy.max(1e-9),
        "reports_per_wall_s": reports as f64 / wall_seconds,
        "server_requests": server_requests,
    });
    let placement = serde_json::json!({
        "placed_at_end": placed,
        "asked_by_end": asked,
        "placed_fraction_at_end": measured_fraction(placed, asked),
        "gave_up": gave_up,
        "checked": checked,
        "placed_fraction_at_10s": measured_fraction(placed_at_check, checked),
        "server_fit_fraction_at_10s": measured_fraction(server_fit_at_check, checked),
        "matched_fraction_at_10s": measured_fraction(matched_at_check, checked),
        "matched_fraction_at_end": fraction(
            sim.clients.iter().filter(|c| c.matched_now).count(),
            args.clients,
        ),
        "matched_within_10s_fraction": fraction(matched_within, args.clients),
        "first_match_seconds_p50": quantile(&first_match_s, 0.5),
        "first_match_seconds_p95": quantile(&first_match_s, 0.95),
        "per_class": per_class_json,
        "target_matched_fraction": 0.95,
        "killed_server": sim.dead.map(|(s, _)| s),
        "killed_at_s": sim.dead.map(|(_, at)| at.as_nanos() as f64 / 1e9),
        "killed_server_expired_after_s": dead_expired_after_s,
        "failover_clients": failover_clients.len(),
        "failover_replaced": replaced_s.len(),
        "failover_all_replaced": all_replaced,
        "failover_all_replaced_seconds": if all_replaced == Some(true) { replaced_s.last().copied() } else { None },
        "failover_replaced_seconds_p50": quantile(&replaced_s, 0.5),
        "failover_matched_fraction_10s_after": failover_matched.and_then(|m| measured_fraction(m, failover_clients.len())),
        "routed_to_dead_after_expiry": sim.directors.iter().map(|d| d.routed_to_dead_after_expiry).sum::<u64>(),
        "routed_to_dead_before_expiry": sim.directors.iter().map(|d| d.routed_to_dead_before_expiry).sum::<u64>(),
        "peak_memory_kib": peak_memory_kib(),
        "per_server": servers_json,
        "per_director": directors_json,
    });
    let (Some(report_fields), serde_json::Value::Object(more)) =
        (report.as_object_mut(), placement)
    else {
        unreachable!("both are objects");
    };
    report_fields.extend(more);
    Ok(report)
}

/// "1 client", "2 clients".
fn counted(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// "1 virtual second", "2.5 virtual seconds" (as given: `{:.0}` said "2 virtual seconds" for
/// 2.5).
fn virtual_seconds(seconds: f64) -> String {
    if seconds == 1.0 {
        "1 virtual second".into()
    } else {
        format!("{seconds} virtual seconds")
    }
}

/// One line for people.
pub fn describe(report: &serde_json::Value) -> String {
    let f = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
    // A short run measures neither (it said "matched at 10 s 0.00%" and "after NaN s").
    let matched = if report["checked"].as_u64().unwrap_or(0) == 0 {
        format!(
            "matched at 10 s: not measured (no client asked {} s before the end; run longer)",
            MATCH_WITHIN.as_secs()
        )
    } else {
        format!(
            "matched at 10 s {:.2}% of the {} that asked 10 s before the end (server fit {:.2}%, target 95%)",
            100.0 * f("matched_fraction_at_10s"),
            counted(report["checked"].as_u64().unwrap_or(0) as usize, "client"),
            100.0 * f("server_fit_fraction_at_10s"),
        )
    };
    let failover = if report["killed_server"].is_null() {
        format!(
            "no server killed (that needs 2 or more servers and over {} virtual s)",
            (RAMP + MATCH_WITHIN + Duration::from_secs(1) + MATCH_WITHIN).as_secs()
        )
    } else if report["failover_clients"].as_u64() == Some(0) {
        "the killed server had no clients".to_owned()
    } else {
        match report["failover_all_replaced_seconds"].as_f64() {
            Some(seconds) => format!(
                "dead server's {} clients all on another server after {seconds:.2} s",
                report["failover_clients"]
            ),
            None => format!(
                "dead server's {} clients: {} on another server by the end",
                report["failover_clients"], report["failover_replaced"]
            ),
        }
    };
    let count = |key: &str, noun: &str| counted(report[key].as_u64().unwrap_or(0) as usize, noun);
    let placed = match report["placed_fraction_at_end"].as_f64() {
        Some(fraction) => format!(
            "placed at end {:.2}% of the {} that asked",
            100.0 * fraction,
            count("asked_by_end", "client")
        ),
        None => "placed at end: not measured (no client asked before the end)".to_owned(),
    };
    format!(
        "fleet-sim: {}, {}, {}, {} s virtual in {:.0} s wall ({:.2} s per virtual s); \
         {:.0} routing decisions/s, {:.0} reports/s (server machines' own time); {}; \
         {matched}; {failover}; routed to the dead server after expiry: {}; peak memory {} MiB",
        count("clients", "client"),
        count("servers", "server"),
        count("directors", "director"),
        f("virtual_seconds"),
        f("wall_seconds"),
        f("wall_seconds_per_virtual_second"),
        f("routing_decisions_per_director_busy_s"),
        f("reports_per_server_busy_s"),
        placed,
        report["routed_to_dead_after_expiry"],
        report["peak_memory_kib"].as_u64().unwrap_or(0) / 1024,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figures that depend on the seed alone (not on the machine's speed).
    fn outcome(report: &serde_json::Value) -> serde_json::Value {
        let mut outcome = report.clone();
        let object = outcome.as_object_mut().expect("an object");
        object.retain(|key, _| {
            !key.contains("wall") && !key.contains("busy") && !key.contains("memory")
        });
        for list in ["per_server", "per_director"] {
            for entry in object[list].as_array_mut().expect("a list") {
                entry
                    .as_object_mut()
                    .expect("an object")
                    .remove("busy_seconds");
            }
        }
        outcome
    }

    #[test]
    fn a_small_fleet_places_every_client_matches_links_and_fails_over() {
        let args = FleetSimArgs {
            clients: 2_000,
            servers: 6,
            directors: 2,
            seconds: 30.0,
            seed: 7,
        };
        let report = run_fleet_sim(&args).expect("runs");
        let figure = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
        eprintln!("{}", describe(&report));
        eprintln!("{report:#}");
        assert_eq!(report["gave_up"], 0, "no client was refused or unanswered");
        assert_eq!(
            figure("placed_fraction_at_end"),
            1.0,
            "every client is on a live server, receiving"
        );
        assert_eq!(
            figure("placed_fraction_at_10s"),
            1.0,
            "every client joined within 10 s"
        );
        assert!(
            report["failover_clients"].as_u64().unwrap_or(0) > 100,
            "the killed server had clients"
        );
        assert_eq!(
            report["failover_all_replaced"], true,
            "every one of them went elsewhere"
        );
        assert!(
            figure("failover_all_replaced_seconds") <= 1.5,
            "failover took {} s",
            figure("failover_all_replaced_seconds")
        );
        assert_eq!(
            report["routed_to_dead_after_expiry"], 0,
            "no director sent a client to the dead server once it expired it"
        );
        assert!(
            figure("matched_fraction_at_10s") >= MATCHED_AT_10S_MIN,
            "matched at 10 s: {}",
            figure("matched_fraction_at_10s")
        );
        // The same seed is the same run.
        let again = run_fleet_sim(&args).expect("runs");
        assert_eq!(outcome(&report), outcome(&again), "a seed replays exactly");
    }

    /// A run too short for the 10 s check or the kill says so (it printed "matched at 10 s
    /// 0.00%" and "after NaN s").
    #[test]
    fn a_short_run_says_what_it_did_not_measure() {
        let report = run_fleet_sim(&FleetSimArgs {
            clients: 40,
            servers: 2,
            directors: 1,
            seconds: 5.0,
            seed: 3,
        })
        .expect("runs");
        let line = describe(&report);
        assert!(
            line.contains("matched at 10 s: not measured")
                && line.contains(
                    "no server killed (that needs 2 or more servers and over 26 virtual s)"
                )
                && !line.contains("NaN"),
            "{line}"
        );
        // And the JSON says null, not 0.0, for what it did not measure; with no server
        // killed, not "all replaced" either (it said true).
        assert!(report["matched_fraction_at_10s"].is_null(), "{report}");
        assert!(report["server_fit_fraction_at_10s"].is_null(), "{report}");
        assert!(report["failover_all_replaced"].is_null(), "{report}");
        // Placed at the end: of the clients that had asked (it said 0.00 % of all 40 for a
        // run that ended before any asked).
        let asked = report["asked_by_end"].as_u64().expect("a count");
        assert!(asked > 0 && asked <= 40, "{report}");
        assert!(
            line.contains("placed at end ")
                && line.contains(&format!("% of the {asked} clients that asked;")),
            "{line}"
        );
        let report = run_fleet_sim(&FleetSimArgs {
            clients: 40,
            servers: 2,
            directors: 1,
            seconds: 0.001,
            seed: 3,
        })
        .expect("runs");
        let line = describe(&report);
        assert!(report["placed_fraction_at_end"].is_null(), "{report}");
        assert!(
            line.contains("placed at end: not measured (no client asked before the end)"),
            "{line}"
        );
    }

    /// A killed server that had no clients says so (it said "dead server's 0 clients: 0 on
    /// another server by the end", and 0.0 of them matched 10 s after).
    #[test]
    fn a_killed_server_without_clients_says_so() {
        let report = run_fleet_sim(&FleetSimArgs {
            clients: 1,
            servers: 2,
            directors: 1,
            seconds: 30.0,
            seed: 1,
        })
        .expect("runs");
        assert!(!report["killed_server"].is_null(), "{report}");
        assert_eq!(
            report["failover_clients"], 0,
            "seed 1 puts its one client on the server that lives"
        );
        assert!(
            report["failover_matched_fraction_10s_after"].is_null(),
            "{report}"
        );
        let line = describe(&report);
        assert!(line.contains("the killed server had no clients"), "{line}");
    }

    /// A count of 0 names the option (it said "a fleet needs clients, servers and directors").
    #[test]
    fn a_fleet_of_nothing_names_the_option() {
        for (clients, servers, directors, option) in [
            (0, 2, 1, "--clients 0"),
            (10, 0, 1, "--servers 0"),
            (10, 2, 0, "--directors 0"),
        ] {
            let error = run_fleet_sim(&FleetSimArgs {
                clients,
                servers,
                directors,
                seconds: 1.0,
                seed: 1,
            })
            .expect_err("refused");
            assert!(error.starts_with(option), "{error}");
        }
    }

    /// A run's seconds as given (`{:.0}` said "2 virtual seconds" for 2.5 and "1 virtual
    /// seconds" for 1), and the share matched out of how many clients it was judged on (it
    /// said "100.00%" for the 7 of 20 that asked 10 s before the end).
    #[test]
    fn the_lines_say_the_seconds_as_given_and_how_many_clients_the_match_is_of() {
        assert_eq!(virtual_seconds(1.0), "1 virtual second");
        assert_eq!(virtual_seconds(2.5), "2.5 virtual seconds");
        assert_eq!(virtual_seconds(30.0), "30 virtual seconds");
        let report = run_fleet_sim(&FleetSimArgs {
            clients: 20,
            servers: 2,
            directors: 1,
            seconds: 12.5,
            seed: 1,
        })
        .expect("runs");
        let line = describe(&report);
        let checked = report["checked"].as_u64().expect("clients judged");
        assert!(
            line.contains("12.5 s virtual")
                && line.contains(&format!("of the {checked} clients that asked")),
            "{line}"
        );
    }

    /// Seeds that put many clients on tiers too slow for them before members could move up
    /// (at the build before `rate::climbs`: 89.2 % and 92.4 % matched at 10 s; over seeds
    /// 1-20, 88.2-98.4 %, 8 of 20 below 95 %; with it 95.7-100 %, none below), and one that
    /// kept 50 Mbit/s clients on a 55 Mbit/s tier still doubling (93.2 % until a doubling
    /// tier whose members lose with nowhere to go stopped doubling there; over seeds 1-80,
    /// 96.05-100 %, none below 95 %).
    #[test]
    fn clients_on_a_tier_too_slow_for_them_move_up_within_ten_seconds() {
        for seed in [8, 10, 40] {
            let report = run_fleet_sim(&FleetSimArgs {
                clients: 2_000,
                servers: 6,
                directors: 2,
                seconds: 30.0,
                seed,
            })
            .expect("runs");
            let matched = report["matched_fraction_at_10s"]
                .as_f64()
                .unwrap_or(f64::NAN);
            assert!(
                matched >= MATCHED_AT_10S_MIN,
                "seed {seed}: matched at 10 s: {matched}\n{}",
                describe(&report)
            );
        }
    }

    /// What the machines achieve at this scale today (see docs/performance.md).
    const MATCHED_AT_10S_MIN: f64 = 0.95;
}
