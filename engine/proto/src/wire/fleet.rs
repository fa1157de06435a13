//! Fleet messages (R15): a distribution server's heartbeat to every director, and a director's
//! challenge to a server it does not know yet.
//!
//! ```text
//!  heartbeat (server -> director):
//!  "Lf" version:u8 kind:u8(1)
//!  server_id:u64 incarnation:u64 sequence:u64 sent_at_unix_ms:u64 interval_ms:u32 state:u8
//!  link:u8 echo:[16] request_addr:addr location:short_string
//!  sessions:u32 sessions_max:u32 channels:u32 rate_bits_per_s:u64 rate_bits_per_s_max:u64
//!  client_throughput_bits_per_s:u64 tier_count:u8 { root_prefix:[8] rate_bits_per_s:u64 clients:u32 }*
//!  catalog_digest:[32] page:u16 pages:u16 count:u16 { name:short_string root:[32] bytes:u64 }*
//!  mac:[32]
//!
//!  challenge (director -> server):
//!  "Lf" version:u8 kind:u8(2) server_id:u64 incarnation:u64 link:u8 sequence:u64 nonce:[16]
//!  mac:[32]
//! ```
//! The MAC is keyed BLAKE3 over every byte before it (the kind included), under a key derived
//! from the fleet secret for fleet messages only: a host without the secret cannot register a
//! server or answer for one, and a changed byte is a counted drop. Freshness (a replayed
//! heartbeat) is the director's rule (`director::Director`): a server it does not know is
//! challenged first and taken only once a heartbeat echoes the challenge's nonce (a recording
//! cannot: the nonce is new to this director process); after that, `(incarnation, sequence)`
//! must grow and `sent_at_unix_ms` be near its clock. `link` is the index of the director in the
//! server's list, so a server with several directors at one address knows which one challenged. A server's catalog may not fit one datagram: each heartbeat carries one page of it, in
//! turn, and the digest of the whole, so a director knows when it holds all of one version.

use std::net::SocketAddr;

use super::control::{read_addr, write_addr, LOCATION_LEN_MAX};
use super::{ParseError, Reader, Writer};
use crate::info::{RootHash, NAME_LEN_MAX};

pub const FLEET_MAGIC: [u8; 2] = *b"Lf";
pub const FLEET_VERSION: u8 = 2;
/// A heartbeat fits one datagram on a path with a 1500-byte MTU.
pub const HEARTBEAT_LEN_MAX: usize = 1400;
/// Pages of one catalog, at most (a director keeps this many per server while assembling).
pub const CATALOG_PAGES_MAX: usize = 1024;
const MAC_LEN: usize = 32;
const KIND_HEARTBEAT: u8 = 1;
const KIND_CHALLENGE: u8 = 2;
/// A challenge's nonce, echoed by the server's heartbeats.
pub const NONCE_LEN: usize = 16;
/// Every field before the catalog entries, with the longest address and location, and the MAC.
const HEARTBEAT_FIXED_LEN_MAX: usize = 4
    + 8 * 4
    + 4
    + 1
    + 1
    + NONCE_LEN
    + 19
    + 1
    + LOCATION_LEN_MAX
    + 4 * 3
    + 8 * 2
    + 8
    + 1
    + HEARTBEAT_TIERS_MAX * TIER_LEN
    + 32
    + 2 * 3
    + MAC_LEN;
/// Tiers a heartbeat tells of, at most (the most populated).
pub const HEARTBEAT_TIERS_MAX: usize = 16;
const TIER_LEN: usize = 8 + 8 + 4;
/// A challenge's length (it is shorter than the smallest heartbeat it answers).
pub const CHALLENGE_LEN: usize = 4 + 8 + 8 + 1 + 8 + NONCE_LEN + MAC_LEN;
const ENTRY_LEN_MAX: usize = 1 + NAME_LEN_MAX + 32 + 8;
const _: () = assert!(HEARTBEAT_FIXED_LEN_MAX + ENTRY_LEN_MAX <= HEARTBEAT_LEN_MAX);

/// The key heartbeats are authenticated with, derived from the fleet's shared secret (a file
/// only the fleet's daemons can read). Never sent.
#[derive(Clone)]
pub struct FleetKey([u8; 32]);

impl FleetKey {
    /// At least 16 bytes of secret (e.g. 32 random bytes, hex, in a 0600 file).
    pub fn from_secret(secret: &[u8]) -> Option<FleetKey> {
        if secret.len() < 16 {
            return None;
        }
        let mut hasher = blake3::Hasher::new_derive_key("loopcast 2026-11 fleet messages v2");
        hasher.update(secret);
        Some(FleetKey(*hasher.finalize().as_bytes()))
    }

    /// Eight hex digits that tell two keys apart (in a reload's log) and reveal neither.
    pub fn fingerprint(&self) -> String {
        let hash = self.mac(b"loopcast fleet key fingerprint");
        hash.to_hex()[..8].to_owned()
    }

    fn mac(&self, bytes: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.0, bytes)
    }
}

impl core::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FleetKey(..)")
    }
}

/// What a server says of itself: directors route only to `Online` servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    Online,
    /// Finishing its clients; new ones go elsewhere (`loopcastctl drain`).
    Draining,
    /// Shutting down: its clients are asked to go elsewhere.
    Stopping,
}

impl ServerState {
    fn to_byte(self) -> u8 {
        match self {
            ServerState::Online => 1,
            ServerState::Draining => 2,
            ServerState::Stopping => 3,
        }
    }
    fn from_byte(byte: u8) -> Result<ServerState, ParseError> {
        match byte {
            1 => Ok(ServerState::Online),
            2 => Ok(ServerState::Draining),
            3 => Ok(ServerState::Stopping),
            _ => Err(ParseError::Malformed),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Online => "online",
            ServerState::Draining => "draining",
            ServerState::Stopping => "stopping",
        }
    }
}

/// One file a server holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: String,
    pub root: RootHash,
    /// The original file's size.
    pub bytes: u64,
}

impl CatalogEntry {
    fn encoded_len(&self) -> usize {
        1 + self.name.len() + 32 + 8
    }

    /// `count:u16 { name:short_string root:[32] bytes:u64 }*` (heartbeat pages, Listings).
    pub(crate) fn write_list(w: &mut Writer<'_>, entries: &[CatalogEntry]) {
        w.u16(u16::try_from(entries.len()).expect("a list is bounded by its datagram"));
        for entry in entries {
            assert!(entry.name.len() <= NAME_LEN_MAX, "file name too long");
            w.short_string(&entry.name);
            w.bytes(&entry.root.0);
            w.u64(entry.bytes);
        }
    }

    /// The twin of [`CatalogEntry::write_list`], from untrusted bytes.
    pub(crate) fn read_list(r: &mut Reader<'_>) -> Result<Vec<CatalogEntry>, ParseError> {
        let count = usize::from(r.u16()?);
        // Each entry takes at least 41 bytes: a count the body cannot hold is malformed
        // before anything is allocated for it.
        if count > r.remaining() / 41 {
            return Err(ParseError::Malformed);
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(CatalogEntry {
                name: r.short_string(NAME_LEN_MAX)?,
                root: RootHash(r.array::<32>()?),
                bytes: r.u64()?,
            });
        }
        Ok(entries)
    }
}

/// One tier a server runs now (a file's channel at one rate): directors prefer a server already
/// sending the file at about a client's throughput (R16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierSummary {
    /// The first 8 bytes of the file's root.
    pub root_prefix: [u8; 8],
    pub rate_bits_per_s: u64,
    pub clients: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Random per server process.
    pub server_id: u64,
    /// The process's start (Unix ms): a restarted server's heartbeats outrank the old ones.
    pub incarnation: u64,
    /// Grows by one per heartbeat of this incarnation.
    pub sequence: u64,
    pub sent_at_unix_ms: u64,
    /// How often this server sends (a director expires it after a few missed).
    pub interval_ms: u32,
    pub state: ServerState,
    /// Which of the server's directors this copy is for (echoed by a challenge).
    pub link: u8,
    /// The nonce of that director's last challenge (zeros before one).
    pub echo: [u8; NONCE_LEN],
    /// Where clients send their Requests.
    pub request_addr: SocketAddr,
    pub location: String,
    pub sessions: u32,
    pub sessions_max: u32,
    pub channels: u32,
    /// Sum of the channels' rates now, and what the server may send in all (0 = not set).
    pub rate_bits_per_s: u64,
    pub rate_bits_per_s_max: u64,
    /// The median of its clients' measured throughput (0: no client measured yet).
    pub client_throughput_bits_per_s: u64,
    /// Its most populated tiers, at most [`HEARTBEAT_TIERS_MAX`].
    pub tiers: Vec<TierSummary>,
    /// BLAKE3 of the whole catalog (see [`catalog_pages`]).
    pub catalog_digest: [u8; 32],
    pub page: u16,
    pub pages: u16,
    pub entries: Vec<CatalogEntry>,
}

impl Heartbeat {
    /// Appends the heartbeat and its MAC to `out`.
    pub fn emit(&self, key: &FleetKey, out: &mut Vec<u8>) {
        assert!(self.location.len() <= LOCATION_LEN_MAX, "location too long");
        assert!(
            self.page < self.pages,
            "page {} of {}",
            self.page,
            self.pages
        );
        let start = out.len();
        let mut w = Writer { out };
        w.bytes(&FLEET_MAGIC);
        w.u8(FLEET_VERSION);
        w.u8(KIND_HEARTBEAT);
        w.u64(self.server_id);
        w.u64(self.incarnation);
        w.u64(self.sequence);
        w.u64(self.sent_at_unix_ms);
        w.u32(self.interval_ms);
        w.u8(self.state.to_byte());
        w.u8(self.link);
        w.bytes(&self.echo);
        write_addr(&mut w, self.request_addr);
        w.short_string(&self.location);
        w.u32(self.sessions);
        w.u32(self.sessions_max);
        w.u32(self.channels);
        w.u64(self.rate_bits_per_s);
        w.u64(self.rate_bits_per_s_max);
        w.u64(self.client_throughput_bits_per_s);
        assert!(self.tiers.len() <= HEARTBEAT_TIERS_MAX, "too many tiers");
        w.u8(self.tiers.len() as u8);
        for tier in &self.tiers {
            w.bytes(&tier.root_prefix);
            w.u64(tier.rate_bits_per_s);
            w.u32(tier.clients);
        }
        w.bytes(&self.catalog_digest);
        w.u16(self.page);
        w.u16(self.pages);
        CatalogEntry::write_list(&mut w, &self.entries);
        let mac = key.mac(&w.out[start..]);
        w.bytes(mac.as_bytes());
        assert!(
            w.out.len() - start <= HEARTBEAT_LEN_MAX,
            "heartbeat of {} bytes (pages are cut to fit)",
            w.out.len() - start
        );
    }

    pub fn to_bytes(&self, key: &FleetKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEARTBEAT_LEN_MAX);
        self.emit(key, &mut out);
        out
    }

    /// True if `bytes` starts like a fleet message (not a client's control message).
    pub fn is_fleet(bytes: &[u8]) -> bool {
        bytes.len() >= 2 && bytes[..2] == FLEET_MAGIC
    }

    /// Parses untrusted bytes: the MAC is checked before any field is read.
    pub fn parse(bytes: &[u8], key: &FleetKey) -> Result<Heartbeat, FleetParseError> {
        if bytes.len() > HEARTBEAT_LEN_MAX || bytes.len() < 4 + MAC_LEN {
            return Err(FleetParseError::Wire(ParseError::Truncated));
        }
        Self::parse_body(authenticated_body(bytes, key)?).map_err(FleetParseError::Wire)
    }

    fn parse_body(body: &[u8]) -> Result<Heartbeat, ParseError> {
        let mut r = Reader::new(body);
        r.take(3)?; // magic and version, checked by the caller
        if r.u8()? != KIND_HEARTBEAT {
            return Err(ParseError::UnknownKind);
        }
        let server_id = r.u64()?;
        let incarnation = r.u64()?;
        let sequence = r.u64()?;
        let sent_at_unix_ms = r.u64()?;
        let interval_ms = r.u32()?;
        let state = ServerState::from_byte(r.u8()?)?;
        let link = r.u8()?;
        let echo = r.array::<NONCE_LEN>()?;
        let request_addr = read_addr(&mut r)?;
        let location = r.short_string(LOCATION_LEN_MAX)?;
        let sessions = r.u32()?;
        let sessions_max = r.u32()?;
        let channels = r.u32()?;
        let rate_bits_per_s = r.u64()?;
        let rate_bits_per_s_max = r.u64()?;
        let client_throughput_bits_per_s = r.u64()?;
        let tier_count = usize::from(r.u8()?);
        if tier_count > HEARTBEAT_TIERS_MAX {
            return Err(ParseError::Malformed);
        }
        let mut tiers = Vec::with_capacity(tier_count);
        for _ in 0..tier_count {
            tiers.push(TierSummary {
                root_prefix: r.array::<8>()?,
                rate_bits_per_s: r.u64()?,
                clients: r.u32()?,
            });
        }
        let catalog_digest = r.array::<32>()?;
        let page = r.u16()?;
        let pages = r.u16()?;
        if page >= pages || usize::from(pages) > CATALOG_PAGES_MAX {
            return Err(ParseError::Malformed);
        }
        let entries = CatalogEntry::read_list(&mut r)?;
        r.finish()?;
        Ok(Heartbeat {
            server_id,
            incarnation,
            sequence,
            sent_at_unix_ms,
            interval_ms,
            state,
            link,
            echo,
            request_addr,
            location,
            sessions,
            sessions_max,
            channels,
            rate_bits_per_s,
            rate_bits_per_s_max,
            client_throughput_bits_per_s,
            tiers,
            catalog_digest,
            page,
            pages,
            entries,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetParseError {
    /// Not made with the fleet's key (or changed on the way): a stranger or a forger.
    BadMac,
    Wire(ParseError),
}

impl core::fmt::Display for FleetParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FleetParseError::BadMac => f.write_str("not authenticated by the fleet key"),
            FleetParseError::Wire(error) => error.fmt(f),
        }
    }
}

/// The bytes before the MAC of a fleet message of this version, once the MAC is checked (before
/// any field is read). `bytes` holds at least the magic, version and MAC.
fn authenticated_body<'a>(bytes: &'a [u8], key: &FleetKey) -> Result<&'a [u8], FleetParseError> {
    debug_assert!(bytes.len() >= 4 + MAC_LEN, "the caller checks the length");
    if bytes[..2] != FLEET_MAGIC {
        return Err(FleetParseError::Wire(ParseError::BadMagic));
    }
    if bytes[2] != FLEET_VERSION {
        return Err(FleetParseError::Wire(ParseError::BadVersion));
    }
    let (body, mac) = bytes.split_at(bytes.len() - MAC_LEN);
    let mac: [u8; MAC_LEN] = mac.try_into().expect("split at MAC_LEN");
    // blake3::Hash compares in constant time.
    if key.mac(body) != blake3::Hash::from(mac) {
        return Err(FleetParseError::BadMac);
    }
    Ok(body)
}

/// A director's answer to a heartbeat from a server it does not know: "echo this nonce". The
/// server's next heartbeats to that director carry it; a recorded heartbeat cannot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub server_id: u64,
    pub incarnation: u64,
    pub link: u8,
    /// The sequence of the heartbeat it answers: a server takes only a challenge to one of
    /// its last heartbeats, newer than the last it took (a recorded challenge is stale).
    pub sequence: u64,
    pub nonce: [u8; NONCE_LEN],
}

impl Challenge {
    pub fn to_bytes(&self, key: &FleetKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHALLENGE_LEN);
        let mut w = Writer { out: &mut out };
        w.bytes(&FLEET_MAGIC);
        w.u8(FLEET_VERSION);
        w.u8(KIND_CHALLENGE);
        w.u64(self.server_id);
        w.u64(self.incarnation);
        w.u8(self.link);
        w.u64(self.sequence);
        w.bytes(&self.nonce);
        let mac = key.mac(&out);
        out.extend_from_slice(mac.as_bytes());
        debug_assert_eq!(out.len(), CHALLENGE_LEN);
        out
    }

    /// Parses untrusted bytes: the MAC is checked before any field is read.
    pub fn parse(bytes: &[u8], key: &FleetKey) -> Result<Challenge, FleetParseError> {
        if bytes.len() != CHALLENGE_LEN {
            return Err(FleetParseError::Wire(ParseError::Truncated));
        }
        let mut r = Reader::new(authenticated_body(bytes, key)?);
        r.take(3)?;
        if r.u8()? != KIND_CHALLENGE {
            return Err(FleetParseError::Wire(ParseError::UnknownKind));
        }
        let challenge = Challenge {
            server_id: r.u64()?,
            incarnation: r.u64()?,
            link: r.u8()?,
            sequence: r.u64()?,
            nonce: r.array::<NONCE_LEN>()?,
        };
        r.finish()?;
        Ok(challenge)
    }
}

impl From<ParseError> for FleetParseError {
    fn from(error: ParseError) -> Self {
        FleetParseError::Wire(error)
    }
}

/// The digest of a whole catalog: BLAKE3 over its entries in order.
pub fn catalog_digest(entries: &[CatalogEntry]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for entry in entries {
        hasher.update(&[entry.name.len() as u8]);
        hasher.update(entry.name.as_bytes());
        hasher.update(&entry.root.0);
        hasher.update(&entry.bytes.to_be_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// Cuts a catalog into pages that each fit one heartbeat (at least one page, possibly empty),
/// at most [`CATALOG_PAGES_MAX`]: entries past that are left out (and logged by the caller).
pub fn catalog_pages(entries: &[CatalogEntry]) -> Vec<Vec<CatalogEntry>> {
    let budget = HEARTBEAT_LEN_MAX - HEARTBEAT_FIXED_LEN_MAX;
    let mut pages = vec![Vec::new()];
    let mut used = 0;
    for entry in entries {
        let len = entry.encoded_len();
        if used + len > budget {
            if pages.len() == CATALOG_PAGES_MAX {
                break;
            }
            pages.push(Vec::new());
            used = 0;
        }
        pages
            .last_mut()
            .expect("at least one page")
            .push(entry.clone());
        used += len;
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{hostile_bytes, parser_config};
    use proptest::prelude::*;

    fn key() -> FleetKey {
        FleetKey::from_secret(b"sixteen bytes or more of fleet secret").unwrap()
    }

    fn any_entry() -> impl Strategy<Value = CatalogEntry> {
        ("[a-z0-9._-]{1,128}", any::<[u8; 32]>(), any::<u64>()).prop_map(|(name, root, bytes)| {
            CatalogEntry {
                name,
                root: RootHash(root),
                bytes,
            }
        })
    }

    fn any_heartbeat() -> impl Strategy<Value = Heartbeat> {
        (
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<u32>(), 1u8..=3, any::<[u8; 4]>(), any::<u16>()),
            (any::<u8>(), any::<[u8; NONCE_LEN]>(), "[a-z0-9-]{0,32}"),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
            ),
            (
                proptest::collection::vec(any_entry(), 0..40),
                any::<u64>(),
                proptest::collection::vec(
                    (any::<[u8; 8]>(), any::<u64>(), any::<u32>()).prop_map(
                        |(root_prefix, rate_bits_per_s, clients)| TierSummary {
                            root_prefix,
                            rate_bits_per_s,
                            clients,
                        },
                    ),
                    0..=HEARTBEAT_TIERS_MAX,
                ),
            ),
        )
            .prop_map(
                |(
                    ids,
                    (interval_ms, state, ip, port),
                    (link, echo, location),
                    load,
                    (entries, client_throughput_bits_per_s, tiers),
                )| {
                    let digest = catalog_digest(&entries);
                    let pages = catalog_pages(&entries);
                    Heartbeat {
                        server_id: ids.0,
                        incarnation: ids.1,
                        sequence: ids.2,
                        sent_at_unix_ms: ids.3,
                        interval_ms,
                        state: ServerState::from_byte(state).unwrap(),
                        link,
                        echo,
                        request_addr: SocketAddr::from((ip, port)),
                        location,
                        sessions: load.0,
                        sessions_max: load.1,
                        channels: load.2,
                        rate_bits_per_s: load.3,
                        rate_bits_per_s_max: load.4,
                        client_throughput_bits_per_s,
                        tiers,
                        catalog_digest: digest,
                        page: (pages.len() - 1) as u16,
                        pages: pages.len() as u16,
                        entries: pages.last().unwrap().clone(),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn heartbeats_round_trip_and_fit_a_datagram(heartbeat in any_heartbeat()) {
            let bytes = heartbeat.to_bytes(&key());
            prop_assert!(bytes.len() <= HEARTBEAT_LEN_MAX);
            prop_assert_eq!(Heartbeat::parse(&bytes, &key()), Ok(heartbeat));
        }

        #[test]
        fn any_changed_byte_or_another_key_is_refused(
            heartbeat in any_heartbeat(),
            at in any::<usize>(),
            flip in 1u8..=255,
        ) {
            let mut bytes = heartbeat.to_bytes(&key());
            let other = FleetKey::from_secret(b"another fleet's secret, 16+ bytes").unwrap();
            prop_assert_eq!(Heartbeat::parse(&bytes, &other), Err(FleetParseError::BadMac));
            let at = at % bytes.len();
            bytes[at] ^= flip;
            prop_assert!(Heartbeat::parse(&bytes, &key()).is_err());
        }

        #[test]
        fn truncated_heartbeats_never_parse(heartbeat in any_heartbeat(), cut in any::<usize>()) {
            let bytes = heartbeat.to_bytes(&key());
            prop_assert!(Heartbeat::parse(&bytes[..cut % bytes.len()], &key()).is_err());
        }

        #[test]
        fn a_catalog_is_cut_into_pages_that_fit_and_keep_every_entry(
            entries in proptest::collection::vec(any_entry(), 0..200)
        ) {
            let pages = catalog_pages(&entries);
            prop_assert!(!pages.is_empty());
            let joined: Vec<CatalogEntry> = pages.iter().flatten().cloned().collect();
            prop_assert_eq!(&joined, &entries);
            for (index, page) in pages.iter().enumerate() {
                let heartbeat = Heartbeat {
                    server_id: 1, incarnation: 1, sequence: 1, sent_at_unix_ms: 1,
                    interval_ms: 250, state: ServerState::Online, link: 255, echo: [255; NONCE_LEN],
                    request_addr: "[::1]:1".parse().unwrap(), location: "x".repeat(32),
                    sessions: 0, sessions_max: 0, channels: 0, rate_bits_per_s: 0,
                    rate_bits_per_s_max: 0, client_throughput_bits_per_s: u64::MAX,
                    tiers: vec![TierSummary { root_prefix: [9; 8], rate_bits_per_s: 1, clients: 1 }; HEARTBEAT_TIERS_MAX],
                    catalog_digest: catalog_digest(&entries),
                    page: index as u16, pages: pages.len() as u16, entries: page.clone(),
                };
                prop_assert!(heartbeat.to_bytes(&key()).len() <= HEARTBEAT_LEN_MAX);
            }
        }
    }

    fn any_challenge() -> impl Strategy<Value = Challenge> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u8>(),
            any::<u64>(),
            any::<[u8; NONCE_LEN]>(),
        )
            .prop_map(
                |(server_id, incarnation, link, sequence, nonce)| Challenge {
                    server_id,
                    incarnation,
                    link,
                    sequence,
                    nonce,
                },
            )
    }

    proptest! {
        #[test]
        fn challenges_round_trip_and_are_shorter_than_any_heartbeat(
            challenge in any_challenge(),
            heartbeat in any_heartbeat(),
        ) {
            let bytes = challenge.to_bytes(&key());
            prop_assert_eq!(bytes.len(), CHALLENGE_LEN);
            prop_assert!(bytes.len() < heartbeat.to_bytes(&key()).len());
            prop_assert_eq!(Challenge::parse(&bytes, &key()), Ok(challenge));
        }

        #[test]
        fn a_changed_truncated_or_foreign_challenge_is_refused(
            challenge in any_challenge(),
            at in any::<usize>(),
            flip in 1u8..=255,
            cut in any::<usize>(),
        ) {
            let bytes = challenge.to_bytes(&key());
            let other = FleetKey::from_secret(b"another fleet's secret, 16+ bytes").unwrap();
            prop_assert_eq!(Challenge::parse(&bytes, &other), Err(FleetParseError::BadMac));
            prop_assert!(Challenge::parse(&bytes[..cut % bytes.len()], &key()).is_err());
            let mut changed = bytes.clone();
            changed[at % bytes.len()] ^= flip;
            prop_assert!(Challenge::parse(&changed, &key()).is_err());
        }

        /// A heartbeat is not a challenge, nor a challenge a heartbeat, even under the key.
        #[test]
        fn one_kind_never_parses_as_the_other(
            challenge in any_challenge(),
            heartbeat in any_heartbeat(),
        ) {
            prop_assert!(Heartbeat::parse(&challenge.to_bytes(&key()), &key()).is_err());
            prop_assert!(Challenge::parse(&heartbeat.to_bytes(&key()), &key()).is_err());
        }
    }

    proptest! {
        #![proptest_config(parser_config())]

        /// Garbage, even behind a valid MAC (a fleet member with a bug), is a clean error.
        #[test]
        fn garbage_never_panics(bytes in hostile_bytes(b"Lf\x02\x01", HEARTBEAT_LEN_MAX + 8)) {
            let _ = Heartbeat::parse(&bytes, &key());
            let _ = Challenge::parse(&bytes, &key());
            if bytes.len() >= 4 && bytes.len() + MAC_LEN <= HEARTBEAT_LEN_MAX {
                let mut signed = bytes.clone();
                signed.extend_from_slice(key().mac(&bytes).as_bytes());
                if let Ok(heartbeat) = Heartbeat::parse(&signed, &key()) {
                    prop_assert_eq!(heartbeat.to_bytes(&key()), signed);
                }
            }
        }
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(FleetKey::from_secret(b"too short").is_none());
    }
}
