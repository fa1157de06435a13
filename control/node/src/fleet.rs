//! A server's side of the fleet (R15): heartbeats to every director, each carrying one page of
//! the catalog in turn, authenticated with the fleet key (`proto::wire::fleet`).

use std::net::SocketAddr;
use std::time::Duration;

use loopcast_proto::time::Instant;
use loopcast_proto::wire::fleet::{
    catalog_digest, catalog_pages, CatalogEntry, FleetKey, Heartbeat, ServerState,
};

#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Every director of the fleet: each gets every heartbeat.
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
pub struct Load {
    pub sessions: u32,
    pub sessions_max: u32,
    pub channels: u32,
    pub rate_bits_per_s: u64,
}

pub struct HeartbeatSender {
    config: FleetConfig,
    server_id: u64,
    incarnation: u64,
    sequence: u64,
    next_at: Instant,
    pages: Vec<Vec<CatalogEntry>>,
    digest: [u8; 32],
    /// The digest of the whole catalog last given (tells a change).
    scanned: [u8; 32],
    pub(crate) state: ServerState,
}

impl HeartbeatSender {
    pub fn new(config: FleetConfig, server_id: u64, start_unix_ms: u64) -> Self {
        assert!(!config.directors.is_empty(), "a fleet has a director");
        HeartbeatSender {
            config,
            server_id,
            incarnation: start_unix_ms,
            sequence: 0,
            next_at: Instant::ZERO,
            pages: catalog_pages(&[]),
            digest: catalog_digest(&[]),
            scanned: catalog_digest(&[]),
            state: ServerState::Online,
        }
    }

    pub fn directors(&self) -> &[SocketAddr] {
        &self.config.directors
    }

    /// The files this server holds now (sorted by name, so the digest is the same for the
    /// same catalog).
    pub fn set_catalog(&mut self, mut entries: Vec<CatalogEntry>) {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let digest = catalog_digest(&entries);
        if digest != self.scanned {
            self.scanned = digest;
            self.pages = catalog_pages(&entries);
            let announced = self.pages.concat();
            if announced.len() < entries.len() {
                tracing::warn!(
                    files = entries.len(),
                    announced = announced.len(),
                    "catalog too large for the heartbeat pages; some files are not announced"
                );
            }
            // The digest of what the pages hold, so a director can take it whole.
            self.digest = catalog_digest(&announced);
        }
    }

    pub(crate) fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    pub(crate) fn next_at(&self) -> Instant {
        self.next_at
    }

    /// The next heartbeat (the next page of the catalog), and when the one after is due.
    pub fn next(&mut self, now: Instant, unix_ms: u64, load: &Load) -> Vec<u8> {
        self.sequence += 1;
        self.next_at = now + self.config.interval;
        let page = (self.sequence % self.pages.len() as u64) as usize;
        Heartbeat {
            server_id: self.server_id,
            incarnation: self.incarnation,
            sequence: self.sequence,
            sent_at_unix_ms: unix_ms,
            interval_ms: u32::try_from(self.config.interval.as_millis()).unwrap_or(u32::MAX),
            state: self.state,
            request_addr: self.config.advertise,
            location: self.config.location.clone(),
            sessions: load.sessions,
            sessions_max: load.sessions_max,
            channels: load.channels,
            rate_bits_per_s: load.rate_bits_per_s,
            rate_bits_per_s_max: self.config.rate_bits_per_s_max,
            catalog_digest: self.digest,
            page: page as u16,
            pages: self.pages.len() as u16,
            entries: self.pages[page].clone(),
        }
        .to_bytes(&self.config.key)
    }
}

#[cfg(test)]
#[path = "fleet_attack_tests.rs"]
mod attack_tests;
