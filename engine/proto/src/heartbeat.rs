//! A server's side of the fleet (R15), sans-IO: heartbeats to every director, each carrying one
//! page of the catalog in turn, and the answers to directors' challenges.
//!
//! ```text
//!  every interval ──▶ one heartbeat per director (its link index, its last nonce echoed)
//!                      to where its challenge came from (its heartbeat port); every 4th
//!                      round to the address configured instead, so a director that moved
//!                      its heartbeat port, or restarted without one, challenges us again
//!  Challenge (MAC) ──▶ that director's nonce and address noted; one heartbeat at once
//! ```
//! A director takes a server it does not know only from a heartbeat that echoes the nonce it
//! just sent (`director::Director`): a recorded heartbeat of a dead server cannot register it
//! with a director that restarted. A server takes a challenge only from the configured
//! director's host, answering one of its last 16 heartbeats, newer than the last it took on
//! that link: a recorded challenge, replayed, cannot send its heartbeats elsewhere. The answer to a challenge is one heartbeat, at most every
//! quarter interval per director, so a challenge cannot make a server send more than it gets.

use core::time::Duration;
use std::net::SocketAddr;

use crate::endpoint::Endpoint;
use crate::info::RootHash;
use crate::time::Instant;
use crate::wire::fleet::{
    catalog_digest, catalog_pages, CatalogEntry, Challenge, FleetKey, FleetParseError, Heartbeat,
    ServerState, TierSummary, HEARTBEAT_TIERS_MAX, NONCE_LEN,
};

/// Every this many rounds a director's heartbeat goes to its configured address instead of
/// the address its challenge came from.
const PROBE_CONFIGURED_EVERY: u64 = 4;

#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Every director of the fleet, as configured (`--director`): each gets every heartbeat.
    /// Also where a server sends a client for a file it lacks (R7).
    pub directors: Vec<SocketAddr>,
    pub key: FleetKey,
    /// Where clients reach this server's request port (what directors redirect them to).
    pub advertise: SocketAddr,
    /// This server's location label (R16), "" = none.
    pub location: String,
    pub interval: Duration,
    /// What this server may send in all, bits/s (0 = not set): directors fit clients to it.
    pub rate_bits_per_s_max: u64,
}

/// The server's load, as a heartbeat tells it.
#[derive(Clone, Debug, Default)]
pub struct Load {
    pub sessions: u32,
    pub sessions_max: u32,
    pub channels: u32,
    pub rate_bits_per_s: u64,
    /// The median of its clients' measured throughput (0: none measured).
    pub client_throughput_bits_per_s: u64,
    /// Every tier it runs (the heartbeat tells of the most populated).
    pub tiers: Vec<TierSummary>,
}

/// Clients whose throughput a heartbeat's median is taken over, at most.
const THROUGHPUT_SAMPLE: usize = 1024;

impl Load {
    /// What `endpoint` carries now; `root_of` gives a file's root by name (the catalog).
    pub fn of(
        endpoint: &Endpoint,
        sessions_max: usize,
        root_of: impl Fn(&str) -> Option<RootHash>,
    ) -> Load {
        let mut goodputs = endpoint.goodput_sample(THROUGHPUT_SAMPLE);
        let client_throughput_bits_per_s = if goodputs.is_empty() {
            0
        } else {
            let middle = goodputs.len() / 2;
            *goodputs.select_nth_unstable(middle).1
        };
        let mut rate_bits_per_s = 0u64;
        let mut tiers = Vec::new();
        for channel in endpoint.channels() {
            rate_bits_per_s = rate_bits_per_s.saturating_add(channel.rate_bits_per_s);
            if let Some(root) = root_of(&channel.name) {
                let mut root_prefix = [0u8; 8];
                root_prefix.copy_from_slice(&root.0[..8]);
                tiers.push(TierSummary {
                    root_prefix,
                    rate_bits_per_s: channel.rate_bits_per_s,
                    clients: u32::try_from(channel.sessions).unwrap_or(u32::MAX),
                });
            }
        }
        Load {
            sessions: u32::try_from(endpoint.session_count()).unwrap_or(u32::MAX),
            sessions_max: u32::try_from(sessions_max).unwrap_or(u32::MAX),
            channels: u32::try_from(endpoint.channel_count()).unwrap_or(u32::MAX),
            rate_bits_per_s,
            client_throughput_bits_per_s,
            tiers,
        }
    }
}

/// Why a datagram from a director was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeRefused {
    /// Not a well-formed challenge made with the fleet key.
    Unauthenticated(FleetParseError),
    /// Made with the key, but for another server process or a director we do not have.
    NotOurs,
    /// Made with the key for `director`'s link, but not from that director's host (a replay
    /// from elsewhere; or a director that answers from another address than the one servers
    /// name it by).
    WrongHost { director: SocketAddr },
    /// An answer to a heartbeat older than our last few, or not newer than the last challenge
    /// taken on that link: a replay.
    Stale,
}

/// A challenge answers one of this many last heartbeats (about 4 s of rounds and answers at
/// the default 250 ms).
const CHALLENGE_FRESH_SEQUENCES: u64 = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatCounters {
    pub heartbeats_sent: u64,
    pub challenges: u64,
    pub challenges_refused: u64,
}

struct DirectorLink {
    configured: SocketAddr,
    /// Where its heartbeats go: the address its last challenge came from.
    heartbeat_to: SocketAddr,
    echo: [u8; NONCE_LEN],
    /// The sequence the last challenge taken on this link answered.
    challenged_sequence: Option<u64>,
    /// A challenge is answered at once, unless one was answered less than a quarter interval
    /// ago (then the next round carries the echo).
    answered_at: Option<Instant>,
    answer_due: bool,
}

pub struct HeartbeatSender {
    config: FleetConfig,
    server_id: u64,
    incarnation: u64,
    sequence: u64,
    rounds: u64,
    next_at: Instant,
    links: Vec<DirectorLink>,
    pages: Vec<Vec<CatalogEntry>>,
    digest: [u8; 32],
    /// The digest of the whole catalog last given (tells a change).
    scanned: [u8; 32],
    pub state: ServerState,
    counters: HeartbeatCounters,
}

/// What `set_catalog` could not announce: the heartbeat pages hold fewer files than given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogCut {
    pub files: usize,
    pub announced: usize,
}

impl HeartbeatSender {
    /// `server_id` is random per process; `incarnation` its start (Unix ms), so a restarted
    /// server's heartbeats outrank the old process's.
    pub fn new(config: FleetConfig, server_id: u64, incarnation: u64) -> Self {
        assert!(!config.directors.is_empty(), "a fleet has a director");
        assert!(
            config.directors.len() <= usize::from(u8::MAX) + 1,
            "a link index is one byte"
        );
        let links = config
            .directors
            .iter()
            .map(|&director| DirectorLink {
                configured: director,
                heartbeat_to: director,
                echo: [0; NONCE_LEN],
                challenged_sequence: None,
                answered_at: None,
                answer_due: false,
            })
            .collect();
        HeartbeatSender {
            config,
            server_id,
            incarnation,
            sequence: 0,
            rounds: 0,
            next_at: Instant::ZERO,
            links,
            pages: catalog_pages(&[]),
            digest: catalog_digest(&[]),
            scanned: catalog_digest(&[]),
            state: ServerState::Online,
            counters: HeartbeatCounters::default(),
        }
    }

    /// SIGHUP: the settings a heartbeat carries that may change while the server runs.
    pub fn set_live(&mut self, config: &FleetConfig) {
        self.config.location = config.location.clone();
        self.config.interval = config.interval;
        self.config.rate_bits_per_s_max = config.rate_bits_per_s_max;
    }

    /// The directors as configured.
    pub fn directors(&self) -> &[SocketAddr] {
        &self.config.directors
    }

    /// Where each director's heartbeats go now (its heartbeat port once it challenged us).
    pub fn heartbeat_destinations(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.links.iter().map(|l| l.heartbeat_to)
    }

    pub fn counters(&self) -> HeartbeatCounters {
        self.counters
    }

    /// The files this server holds now (sorted here by name, so the digest is the same for the
    /// same catalog). Says so if the heartbeat pages cannot announce them all.
    pub fn set_catalog(&mut self, mut entries: Vec<CatalogEntry>) -> Option<CatalogCut> {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let digest = catalog_digest(&entries);
        if digest == self.scanned {
            return None;
        }
        self.scanned = digest;
        self.pages = catalog_pages(&entries);
        let announced = self.pages.concat();
        // The digest of what the pages hold, so a director can take it whole.
        self.digest = catalog_digest(&announced);
        (announced.len() < entries.len()).then_some(CatalogCut {
            files: entries.len(),
            announced: announced.len(),
        })
    }

    /// When `poll_transmit` has something to send next.
    pub fn poll_timeout(&self) -> Instant {
        if self.links.iter().any(|l| l.answer_due) {
            Instant::ZERO
        } else {
            self.next_at
        }
    }

    /// A fleet datagram on the server's port: a director's challenge.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), ChallengeRefused> {
        let challenge = match Challenge::parse(bytes, &self.config.key) {
            Ok(challenge) => challenge,
            Err(error) => {
                self.counters.challenges_refused += 1;
                return Err(ChallengeRefused::Unauthenticated(error));
            }
        };
        let link = usize::from(challenge.link);
        if challenge.server_id != self.server_id
            || challenge.incarnation != self.incarnation
            || link >= self.links.len()
        {
            self.counters.challenges_refused += 1;
            return Err(ChallengeRefused::NotOurs);
        }
        // Only from the director's own host: one replayed from elsewhere would otherwise send
        // this link's heartbeats there (attack review).
        let director = self.config.directors[link];
        if from.ip().to_canonical() != director.ip().to_canonical() {
            self.counters.challenges_refused += 1;
            return Err(ChallengeRefused::WrongHost { director });
        }
        // Fresh: it answers one of our last heartbeats, newer than the last challenge taken on
        // this link (a recorded challenge, replayed even from the director's address, is not).
        let fresh = challenge.sequence <= self.sequence
            && self.sequence - challenge.sequence <= CHALLENGE_FRESH_SEQUENCES
            && self.links[link]
                .challenged_sequence
                .is_none_or(|taken| challenge.sequence > taken);
        if !fresh {
            self.counters.challenges_refused += 1;
            return Err(ChallengeRefused::Stale);
        }
        self.counters.challenges += 1;
        let quarter = self.config.interval / 4;
        let link = &mut self.links[link];
        link.challenged_sequence = Some(challenge.sequence);
        link.echo = challenge.nonce;
        link.heartbeat_to = from;
        link.answer_due = link
            .answered_at
            .is_none_or(|at| now.saturating_since(at) >= quarter);
        Ok(())
    }

    /// The heartbeats due now, each with its destination: a round to every director when the
    /// interval is up (or at once with `force`, e.g. a state change), else the answers to
    /// challenges.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        unix_ms: u64,
        load: &Load,
        force: bool,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let round = force || now >= self.next_at;
        if !round && !self.links.iter().any(|l| l.answer_due) {
            return Vec::new();
        }
        self.sequence += 1;
        let page = (self.sequence % self.pages.len() as u64) as usize;
        let mut tiers = load.tiers.clone();
        if tiers.len() > HEARTBEAT_TIERS_MAX {
            tiers.sort_by_key(|t| std::cmp::Reverse(t.clients));
            tiers.truncate(HEARTBEAT_TIERS_MAX);
        }
        let mut heartbeat = Heartbeat {
            server_id: self.server_id,
            incarnation: self.incarnation,
            sequence: self.sequence,
            sent_at_unix_ms: unix_ms,
            interval_ms: u32::try_from(self.config.interval.as_millis()).unwrap_or(u32::MAX),
            state: self.state,
            link: 0,
            echo: [0; NONCE_LEN],
            request_addr: self.config.advertise,
            location: self.config.location.clone(),
            sessions: load.sessions,
            sessions_max: load.sessions_max,
            channels: load.channels,
            rate_bits_per_s: load.rate_bits_per_s,
            rate_bits_per_s_max: self.config.rate_bits_per_s_max,
            client_throughput_bits_per_s: load.client_throughput_bits_per_s,
            tiers,
            catalog_digest: self.digest,
            page: page as u16,
            pages: self.pages.len() as u16,
            entries: self.pages[page].clone(),
        };
        if round {
            self.rounds += 1;
            self.next_at = now + self.config.interval;
        }
        let probe_configured = round && self.rounds.is_multiple_of(PROBE_CONFIGURED_EVERY);
        let mut out = Vec::with_capacity(self.links.len());
        for (index, link) in self.links.iter_mut().enumerate() {
            if !round && !link.answer_due {
                continue;
            }
            if link.answer_due {
                link.answered_at = Some(now);
                link.answer_due = false;
            }
            heartbeat.link = index as u8;
            heartbeat.echo = link.echo;
            let to = if probe_configured {
                link.configured
            } else {
                link.heartbeat_to
            };
            out.push((to, heartbeat.to_bytes(&self.config.key)));
        }
        self.counters.heartbeats_sent += out.len() as u64;
        out
    }
}

#[cfg(test)]
mod tests;
