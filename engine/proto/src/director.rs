//! The traffic director's rules (R15, R16, R17), sans-IO.
//!
//! ```text
//!  Heartbeat (fleet key) ──▶ a server not known yet ──▶ Challenge{nonce} to where it came from
//!                            (taken only from a heartbeat that echoes the nonce: a recording
//!                             cannot, since the nonce is keyed by this process's secret)
//!                        ──▶ registry: server id → state, load, capacity, location, catalog
//!                            (a heartbeat's (incarnation, sequence) must grow, its echo stay
//!                             the one it registered with, its clock be within
//!                             `clock_skew_max` of ours: a replay is a counted drop)
//!  no heartbeat for `heartbeat_misses` × its interval ──▶ ServerDown: routed to no more
//!  Request (a client's, the same message a server takes) ──▶ route ──▶ Redirect{server}
//!                                                                   └─ Reject{NotFound|Busy}
//! ```
//! Routing (R16): among live `Online` servers whose catalog has the name (with the client's
//! root, if it holds part of the file) and that have room, prefer the client's location, then
//! a server whose spare rate fits the client's measured throughput, then one already sending
//! the file on a tier within a factor of two of that throughput, then the least loaded (its
//! load counts the clients this director sent it since its last heartbeat, so a burst of
//! requests spreads). A server the client names as just failed (`avoid`) is the last choice.
//! Several directors run the same rules on the same heartbeats, so any of them answers alike
//! (R18): a client asks the next one when one is silent.
//!
//! Every answer goes only to the address the datagram came from: a Redirect or Reject is
//! smaller than the padded Request it answers; a Listing (`loopcast ls`) at most three times
//! the padded List, as a server's answers to an unvalidated address; a Challenge is smaller
//! than the heartbeat it answers, and answers only one made with the fleet key.

use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::info::RootHash;
use crate::time::Instant;
use crate::wire::control::{
    listing_page, ControlMessage, RejectCode, RequestHints, REQUEST_LEN_MIN,
};
use crate::wire::fleet::{
    catalog_digest, CatalogEntry, Challenge, FleetKey, FleetParseError, Heartbeat, ServerState,
    NONCE_LEN,
};

#[derive(Clone, Debug)]
pub struct DirectorConfig {
    pub fleet_key: FleetKey,
    /// Random per director process (the driver draws it): keys the challenges' nonces, so a
    /// heartbeat echoing another process's nonce (a recording) does not register a server.
    pub challenge_secret: [u8; 32],
    /// A server is dead after this many of its heartbeat intervals without one (R17).
    pub heartbeat_misses: u32,
    /// A heartbeat whose clock differs from ours by more is a replay (or a broken clock).
    pub clock_skew_max: Duration,
    /// Servers remembered at most (live or recently dead).
    pub servers_max: usize,
    /// A dead server is forgotten this long after its last heartbeat.
    pub forget_after: Duration,
}

impl DirectorConfig {
    pub fn new(fleet_key: FleetKey, challenge_secret: [u8; 32]) -> DirectorConfig {
        DirectorConfig {
            fleet_key,
            challenge_secret,
            heartbeat_misses: 3,
            clock_skew_max: Duration::from_secs(30),
            servers_max: 4096,
            forget_after: Duration::from_secs(300),
        }
    }
}

/// A server's heartbeat interval is taken within these bounds (a forged-looking interval from
/// a fleet member with a bad config cannot keep a dead server alive for hours).
const INTERVAL_MIN: Duration = Duration::from_millis(20);
const INTERVAL_MAX: Duration = Duration::from_secs(10);
/// A challenge's nonce is good for this long (and the one before it): a server that stops
/// and comes back later (forgotten meanwhile) is challenged anew.
const NONCE_EPOCH: Duration = Duration::from_secs(60);

/// Something the driver logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectorEvent {
    ServerUp {
        server_id: u64,
        request_addr: SocketAddr,
    },
    ServerStateChanged {
        server_id: u64,
        request_addr: SocketAddr,
        state: ServerState,
    },
    ServerDown {
        server_id: u64,
        request_addr: SocketAddr,
        silent_for: Duration,
    },
    /// A newer process at the same address took over from an older one.
    ServerReplaced {
        old_server_id: u64,
        server_id: u64,
        request_addr: SocketAddr,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectorCounters {
    pub heartbeats: u64,
    pub heartbeats_unauthenticated: u64,
    pub heartbeats_malformed: u64,
    /// Authenticated but not newer than one already seen, or from a clock too far off.
    pub heartbeats_replayed: u64,
    /// From a new server while the registry is full.
    pub heartbeats_refused_full: u64,
    /// From a server not known yet, answered with a challenge (not taken).
    pub heartbeats_challenged: u64,
    pub requests: u64,
    pub redirects: u64,
    pub rejects_not_found: u64,
    pub rejects_busy: u64,
    /// Datagrams that are neither a heartbeat nor a Request.
    pub dropped: u64,
}

/// What the director knows of one server (for routing and for `loopcastctl servers`).
#[derive(Clone, Debug)]
pub struct ServerView {
    pub server_id: u64,
    pub request_addr: SocketAddr,
    pub heard_from: SocketAddr,
    pub state: ServerState,
    pub alive: bool,
    pub location: String,
    pub sessions: u32,
    pub sessions_max: u32,
    pub channels: u32,
    pub rate_bits_per_s: u64,
    pub rate_bits_per_s_max: u64,
    /// The median of its clients' measured throughput (0: none measured).
    pub client_throughput_bits_per_s: u64,
    /// Its most populated tiers, as its last heartbeat told.
    pub tiers: Vec<crate::wire::fleet::TierSummary>,
    /// Clients sent there since its last heartbeat.
    pub routed_since_heartbeat: u32,
    pub last_heard_ago: Duration,
    /// The files of its last complete catalog.
    pub files: Vec<CatalogEntry>,
}

/// A catalog's digest and its pages as they arrive.
type CatalogPages = ([u8; 32], Vec<Option<Vec<CatalogEntry>>>);

/// How a server ranks for one request, lowest first: avoided by the client, not at its
/// location, its spare rate does not fit the client, no tier of the file near the client's
/// throughput, its load (millionths), its id.
type RouteRank = (bool, bool, bool, bool, u64, u64);

struct ServerEntry {
    heartbeat: Heartbeat,
    /// The link and nonce it registered with: its later heartbeats to us carry them (a copy
    /// meant for another director does not).
    link: (u8, [u8; NONCE_LEN]),
    heard_from: SocketAddr,
    last_heard: Instant,
    interval: Duration,
    alive: bool,
    /// The last complete catalog, by name.
    catalog: HashMap<String, CatalogEntry>,
    catalog_digest: Option<[u8; 32]>,
    /// Pages of a newer catalog, while they arrive.
    assembling: Option<CatalogPages>,
    routed_since_heartbeat: u32,
}

impl ServerEntry {
    fn expires_at(&self, misses: u32) -> Instant {
        self.last_heard + self.interval * misses
    }

    /// Adds a page; when every page of its digest is here, it becomes the catalog (true).
    fn take_page(&mut self, heartbeat: &Heartbeat) -> bool {
        let digest = heartbeat.catalog_digest;
        if self.catalog_digest == Some(digest) {
            self.assembling = None;
            return false;
        }
        let pages = usize::from(heartbeat.pages);
        let restart = match &self.assembling {
            Some((assembling, slots)) => *assembling != digest || slots.len() != pages,
            None => true,
        };
        if restart {
            self.assembling = Some((digest, vec![None; pages]));
        }
        let (_, slots) = self.assembling.as_mut().expect("set above");
        slots[usize::from(heartbeat.page)] = Some(heartbeat.entries.clone());
        if slots.iter().all(Option::is_some) {
            let entries: Vec<CatalogEntry> = slots.drain(..).flatten().flatten().collect();
            self.assembling = None;
            if catalog_digest(&entries) != digest {
                // Pages of different versions with a colliding count: start over.
                return false;
            }
            self.catalog = entries.into_iter().map(|e| (e.name.clone(), e)).collect();
            self.catalog_digest = Some(digest);
            return true;
        }
        false
    }
}

pub struct Director {
    config: DirectorConfig,
    servers: HashMap<u64, ServerEntry>,
    /// What `loopcast ls` lists, rebuilt only when a live server's catalog or the set of live
    /// servers changed (a flood of Lists must not rebuild it each time).
    listing: Option<Vec<CatalogEntry>>,
    events: VecDeque<DirectorEvent>,
    counters: DirectorCounters,
}

/// The route for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    To(SocketAddr),
    NotFound,
    /// Every live holder is full (by its own heartbeat).
    Busy,
    /// Every holder is dead, draining or stopping right now.
    Unavailable,
}

impl Director {
    pub fn new(config: DirectorConfig) -> Director {
        assert!(
            config.heartbeat_misses >= 1,
            "at least one missed heartbeat"
        );
        assert!(config.servers_max >= 1, "room for one server");
        assert!(
            config.forget_after > config.clock_skew_max,
            "a forgotten server's recorded heartbeats must be too old to pass the clock check"
        );
        Director {
            config,
            servers: HashMap::new(),
            listing: None,
            events: VecDeque::new(),
            counters: DirectorCounters::default(),
        }
    }

    pub fn counters(&self) -> DirectorCounters {
        self.counters
    }

    /// The operator's new miss count (SIGHUP): the next `handle_timeout` judges by it.
    pub fn set_heartbeat_misses(&mut self, misses: u32) {
        assert!(misses >= 1, "at least one missed heartbeat");
        self.config.heartbeat_misses = misses;
    }

    pub fn poll_event(&mut self) -> Option<DirectorEvent> {
        self.events.pop_front()
    }

    /// One datagram on the director's port: a server's heartbeat or a client's Request.
    /// `unix_ms` is the wall clock (heartbeat freshness); the answer, if any, goes to `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        if Heartbeat::is_fleet(bytes) {
            return self.handle_heartbeat(now, unix_ms, from, bytes);
        }
        // An unpadded Request could be answered with more bytes than a spoofed source sent.
        if bytes.len() < REQUEST_LEN_MIN {
            self.counters.dropped += 1;
            return None;
        }
        match ControlMessage::parse(bytes) {
            Ok(ControlMessage::Request {
                request_id,
                name,
                hints,
                ..
            }) => {
                self.counters.requests += 1;
                let answer = match self.route(&name, &hints) {
                    Route::To(server) => {
                        self.counters.redirects += 1;
                        ControlMessage::Redirect { request_id, server }
                    }
                    Route::NotFound => {
                        self.counters.rejects_not_found += 1;
                        ControlMessage::Reject {
                            request_id,
                            code: RejectCode::NotFound,
                            message: format!("no server of this fleet has {name:?}"),
                        }
                    }
                    Route::Busy => {
                        self.counters.rejects_busy += 1;
                        ControlMessage::Reject {
                            request_id,
                            code: RejectCode::Busy,
                            message: format!("every server with {name:?} is full"),
                        }
                    }
                    Route::Unavailable => {
                        self.counters.rejects_busy += 1;
                        ControlMessage::Reject {
                            request_id,
                            code: RejectCode::Busy,
                            message: format!(
                                "no server with {name:?} is up right now (silent, draining or stopping); try again"
                            ),
                        }
                    }
                };
                let bytes_out = answer.to_bytes();
                debug_assert!(bytes_out.len() <= bytes.len(), "no amplification");
                Some(bytes_out)
            }
            Ok(ControlMessage::List { request_id, offset }) => {
                self.counters.requests += 1;
                if self.listing.is_none() {
                    self.listing = Some(self.catalog());
                }
                let catalog = self.listing.as_deref().expect("built above");
                let page = listing_page(request_id, catalog, offset, bytes.len());
                Some(page.to_bytes())
            }
            _ => {
                self.counters.dropped += 1;
                None
            }
        }
    }

    /// Every file version (name and root) a live server holds, sorted by name (`loopcast ls`).
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        let mut files: std::collections::BTreeMap<(String, [u8; 32]), CatalogEntry> =
            std::collections::BTreeMap::new();
        for entry in self.servers.values().filter(|e| e.alive) {
            for file in entry.catalog.values() {
                files
                    .entry((file.name.clone(), file.root.0))
                    .or_insert_with(|| file.clone());
            }
        }
        files.into_values().collect()
    }

    /// The nonce a server's heartbeats from `from` must echo on `link` (for the epoch of `now`,
    /// or `epochs_back` before it).
    fn nonce(
        &self,
        now: Instant,
        epochs_back: u64,
        heartbeat: &Heartbeat,
        from: SocketAddr,
    ) -> [u8; NONCE_LEN] {
        let epoch = (now.as_nanos() / NONCE_EPOCH.as_nanos() as u64).saturating_sub(epochs_back);
        let mut hasher = blake3::Hasher::new_keyed(&self.config.challenge_secret);
        hasher.update(&epoch.to_be_bytes());
        hasher.update(&heartbeat.server_id.to_be_bytes());
        hasher.update(&heartbeat.incarnation.to_be_bytes());
        hasher.update(&[heartbeat.link]);
        match from {
            SocketAddr::V4(v4) => hasher.update(&v4.ip().octets()),
            SocketAddr::V6(v6) => hasher.update(&v6.ip().octets()),
        };
        hasher.update(&from.port().to_be_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&hasher.finalize().as_bytes()[..NONCE_LEN]);
        nonce
    }

    fn handle_heartbeat(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        let heartbeat = match Heartbeat::parse(bytes, &self.config.fleet_key) {
            Ok(heartbeat) => heartbeat,
            Err(FleetParseError::BadMac) => {
                self.counters.heartbeats_unauthenticated += 1;
                return None;
            }
            Err(FleetParseError::Wire(_)) => {
                self.counters.heartbeats_malformed += 1;
                return None;
            }
        };
        let skew = heartbeat.sent_at_unix_ms.abs_diff(unix_ms);
        if u128::from(skew) > self.config.clock_skew_max.as_millis() {
            self.counters.heartbeats_replayed += 1;
            return None;
        }
        let interval = Duration::from_millis(u64::from(heartbeat.interval_ms))
            .clamp(INTERVAL_MIN, INTERVAL_MAX);
        if let Some(entry) = self.servers.get_mut(&heartbeat.server_id) {
            let old = &entry.heartbeat;
            if (heartbeat.incarnation, heartbeat.sequence) <= (old.incarnation, old.sequence)
                || (heartbeat.link, heartbeat.echo) != entry.link
            {
                self.counters.heartbeats_replayed += 1;
                return None;
            }
            self.counters.heartbeats += 1;
            if !entry.alive {
                entry.alive = true;
                self.listing = None;
                self.events.push_back(DirectorEvent::ServerUp {
                    server_id: heartbeat.server_id,
                    request_addr: heartbeat.request_addr,
                });
            } else if entry.heartbeat.state != heartbeat.state {
                self.events.push_back(DirectorEvent::ServerStateChanged {
                    server_id: heartbeat.server_id,
                    request_addr: heartbeat.request_addr,
                    state: heartbeat.state,
                });
            }
            if entry.take_page(&heartbeat) {
                self.listing = None;
            }
            entry.heartbeat = heartbeat;
            entry.heard_from = from;
            entry.last_heard = now;
            entry.interval = interval;
            entry.routed_since_heartbeat = 0;
            return None;
        }
        // A server not known: only once it echoes a nonce of ours (a recording cannot).
        let nonce = self.nonce(now, 0, &heartbeat, from);
        if heartbeat.echo != nonce && heartbeat.echo != self.nonce(now, 1, &heartbeat, from) {
            self.counters.heartbeats_challenged += 1;
            let challenge = Challenge {
                server_id: heartbeat.server_id,
                incarnation: heartbeat.incarnation,
                link: heartbeat.link,
                sequence: heartbeat.sequence,
                nonce,
            }
            .to_bytes(&self.config.fleet_key);
            debug_assert!(challenge.len() < bytes.len(), "no amplification");
            return Some(challenge);
        }
        // A new server process. One that took over an address from an older process replaces
        // it only if it is a later incarnation (a replay of an old process cannot evict the new).
        let replaced = self
            .servers
            .iter()
            .find(|(_, e)| e.heartbeat.request_addr == heartbeat.request_addr)
            .map(|(&id, e)| (id, e.heartbeat.incarnation));
        if let Some((old_id, old_incarnation)) = replaced {
            if heartbeat.incarnation <= old_incarnation {
                self.counters.heartbeats_replayed += 1;
                return None;
            }
            self.servers.remove(&old_id);
            self.listing = None;
            self.events.push_back(DirectorEvent::ServerReplaced {
                old_server_id: old_id,
                server_id: heartbeat.server_id,
                request_addr: heartbeat.request_addr,
            });
        } else if self.servers.len() >= self.config.servers_max {
            self.forget_dead(now, Duration::ZERO);
            if self.servers.len() >= self.config.servers_max {
                self.counters.heartbeats_refused_full += 1;
                return None;
            }
        }
        self.counters.heartbeats += 1;
        self.events.push_back(DirectorEvent::ServerUp {
            server_id: heartbeat.server_id,
            request_addr: heartbeat.request_addr,
        });
        let mut entry = ServerEntry {
            link: (heartbeat.link, heartbeat.echo),
            heartbeat: heartbeat.clone(),
            heard_from: from,
            last_heard: now,
            interval,
            alive: true,
            catalog: HashMap::new(),
            catalog_digest: None,
            assembling: None,
            routed_since_heartbeat: 0,
        };
        entry.take_page(&heartbeat);
        self.servers.insert(heartbeat.server_id, entry);
        self.listing = None;
        None
    }

    /// Declares silent servers dead (R17) and forgets long-dead ones.
    pub fn handle_timeout(&mut self, now: Instant) {
        let misses = self.config.heartbeat_misses;
        for (&server_id, entry) in &mut self.servers {
            if entry.alive && now >= entry.expires_at(misses) {
                entry.alive = false;
                self.listing = None;
                self.events.push_back(DirectorEvent::ServerDown {
                    server_id,
                    request_addr: entry.heartbeat.request_addr,
                    silent_for: now.saturating_since(entry.last_heard),
                });
            }
        }
        self.forget_dead(now, self.config.forget_after);
    }

    fn forget_dead(&mut self, now: Instant, after: Duration) {
        self.servers
            .retain(|_, e| e.alive || now.saturating_since(e.last_heard) < after);
    }

    /// When `handle_timeout` has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let misses = self.config.heartbeat_misses;
        self.servers
            .values()
            .map(|e| {
                if e.alive {
                    e.expires_at(misses)
                } else {
                    e.last_heard + self.config.forget_after
                }
            })
            .min()
    }

    /// Where a request for `name` goes (R16). Counts the choice against the server's load.
    pub fn route(&mut self, name: &str, hints: &RequestHints) -> Route {
        let mut has_file = false;
        let mut best: Option<(RouteRank, u64)> = None;
        for (&server_id, entry) in &self.servers {
            let Some(file) = entry.catalog.get(name) else {
                continue;
            };
            if hints.root.is_some_and(|root: RootHash| root != file.root) {
                continue;
            }
            has_file = true;
            let beat = &entry.heartbeat;
            if !entry.alive || beat.state != ServerState::Online {
                continue;
            }
            // Full only by the server's own word: the clients this director sent since the
            // last heartbeat rank it (spreading a burst), but Requests are unauthenticated, and
            // a flood of them must not make idle servers look full (attack review).
            if beat.sessions_max != 0 && beat.sessions >= beat.sessions_max {
                continue;
            }
            let sessions = u64::from(beat.sessions) + u64::from(entry.routed_since_heartbeat);
            let load = if beat.sessions_max != 0 {
                sessions * 1_000_000 / u64::from(beat.sessions_max)
            } else {
                sessions * 1_000
            };
            let spare = beat
                .rate_bits_per_s_max
                .saturating_sub(beat.rate_bits_per_s);
            let fits = beat.rate_bits_per_s_max == 0
                || hints.throughput_bits_per_s == 0
                || spare >= hints.throughput_bits_per_s;
            // A server already sending this file at about the client's throughput (a tier
            // within a factor of two) adds the client at no new cost (R16: server and tier).
            let throughput = hints.throughput_bits_per_s;
            let has_tier = throughput != 0
                && beat.tiers.iter().any(|t| {
                    t.root_prefix[..] == file.root.0[..8]
                        && t.rate_bits_per_s >= throughput / 2
                        && t.rate_bits_per_s / 2 <= throughput
                });
            let key = (
                hints.avoid == Some(beat.request_addr),
                !hints.location.is_empty() && hints.location != beat.location,
                !fits,
                !has_tier,
                load,
                server_id,
            );
            if best.as_ref().is_none_or(|(b, _)| key < *b) {
                best = Some((key, server_id));
            }
        }
        match best {
            Some((_, server_id)) => {
                let entry = self.servers.get_mut(&server_id).expect("chosen above");
                entry.routed_since_heartbeat = entry.routed_since_heartbeat.saturating_add(1);
                Route::To(entry.heartbeat.request_addr)
            }
            None if has_file => {
                if self.servers.values().any(|e| {
                    e.alive
                        && e.heartbeat.state == ServerState::Online
                        && e.catalog.contains_key(name)
                }) {
                    Route::Busy
                } else {
                    Route::Unavailable
                }
            }
            None => Route::NotFound,
        }
    }

    /// Every server known, for the admin view.
    pub fn servers(&self, now: Instant) -> Vec<ServerView> {
        let mut views: Vec<ServerView> = self
            .servers
            .iter()
            .map(|(&server_id, e)| {
                let mut files: Vec<CatalogEntry> = e.catalog.values().cloned().collect();
                files.sort_by(|a, b| a.name.cmp(&b.name));
                ServerView {
                    server_id,
                    request_addr: e.heartbeat.request_addr,
                    heard_from: e.heard_from,
                    state: e.heartbeat.state,
                    alive: e.alive,
                    location: e.heartbeat.location.clone(),
                    sessions: e.heartbeat.sessions,
                    sessions_max: e.heartbeat.sessions_max,
                    channels: e.heartbeat.channels,
                    rate_bits_per_s: e.heartbeat.rate_bits_per_s,
                    rate_bits_per_s_max: e.heartbeat.rate_bits_per_s_max,
                    client_throughput_bits_per_s: e.heartbeat.client_throughput_bits_per_s,
                    tiers: e.heartbeat.tiers.clone(),
                    routed_since_heartbeat: e.routed_since_heartbeat,
                    last_heard_ago: now.saturating_since(e.last_heard),
                    files,
                }
            })
            .collect();
        views.sort_by_key(|v| v.request_addr);
        views
    }
}

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod tests;
