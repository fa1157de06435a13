//! Control messages between clients and a server's request port, and SYNC on a channel.
//!
//! Every message: `"Lc" version:u8 kind:u8` then the body (big-endian). Layouts are in
//! docs/protocol.md. Addresses are `family:u8 (4 or 6) address:[4|16] port:u16`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{ParseError, Reader, Writer};
use crate::carousel::SessionId;
use crate::info::{FileInfo, RootHash, INFO_LEN_MAX, NAME_LEN_MAX};
use crate::wire::datagram::FileId;
pub use crate::wire::fleet::CatalogEntry;

pub const CONTROL_MAGIC: [u8; 2] = *b"Lc";
pub const CONTROL_VERSION: u8 = 1;
/// Longest control message we emit or accept.
pub const CONTROL_LEN_MAX: usize = 64 + INFO_LEN_MAX;
pub const REJECT_MESSAGE_LEN_MAX: usize = 200;
/// A Request is padded with zeros to at least this many bytes, so that the server's answer to
/// an address it has not validated (an Offer, at most `CONTROL_LEN_MAX`) is never more than
/// three times what that address sent (address validation, as QUIC's Initial padding).
pub const REQUEST_LEN_MIN: usize = CONTROL_LEN_MAX.div_ceil(AMPLIFICATION_FACTOR);
/// Bytes a server sends at most to an unvalidated address for each byte received from it.
pub const AMPLIFICATION_FACTOR: usize = 3;
const _: () = assert!(REQUEST_LEN_MIN * AMPLIFICATION_FACTOR >= CONTROL_LEN_MAX);

/// A secret the server puts in its Offer; a client proves it receives at its address by echoing
/// it in Joined (address validation). Unguessable: drawn from the server's seeded CSPRNG.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token(pub u64);

/// Why the server ended a session (in `Ended`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The server has no such session (it restarted, or the session expired): ask again.
    UnknownSession,
    /// The server is shutting down: ask again later, or another server.
    ShuttingDown,
    /// The file changed or failed verification on the server; its channel stopped.
    FileUnavailable,
    /// The server is being drained for maintenance (`loopcastctl drain`), or the client's
    /// channel was stopped (`loopcastctl stop-channel`): a client in a fleet asks the directors
    /// for another server at once and continues there; one on its own asks this server again.
    Draining,
}

impl EndReason {
    fn to_byte(self) -> u8 {
        match self {
            EndReason::UnknownSession => 1,
            EndReason::ShuttingDown => 2,
            EndReason::FileUnavailable => 3,
            EndReason::Draining => 4,
        }
    }
    fn from_byte(byte: u8) -> Result<EndReason, ParseError> {
        match byte {
            1 => Ok(EndReason::UnknownSession),
            2 => Ok(EndReason::ShuttingDown),
            3 => Ok(EndReason::FileUnavailable),
            4 => Ok(EndReason::Draining),
            _ => Err(ParseError::Malformed),
        }
    }
}

impl core::fmt::Display for EndReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EndReason::UnknownSession => "the server does not know this session",
            EndReason::ShuttingDown => "the server is shutting down",
            EndReason::FileUnavailable => "the file changed or is damaged on the server",
            EndReason::Draining => {
                "the server sent its clients away (drained, or this file's channel stopped)"
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Multicast,
    Unicast,
}

impl Transport {
    fn to_byte(self) -> u8 {
        match self {
            Transport::Multicast => 1,
            Transport::Unicast => 2,
        }
    }
    fn from_byte(byte: u8) -> Result<Transport, ParseError> {
        match byte {
            1 => Ok(Transport::Multicast),
            2 => Ok(Transport::Unicast),
            _ => Err(ParseError::Malformed),
        }
    }
}

impl core::fmt::Display for Transport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Transport::Multicast => "multicast",
            Transport::Unicast => "unicast",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectCode {
    NotFound,
    Busy,
    BadRequest,
    /// The archive failed verification on the server.
    Corrupt,
    /// Too many sessions or requests from this address.
    Limited,
}

impl RejectCode {
    fn to_byte(self) -> u8 {
        match self {
            RejectCode::NotFound => 1,
            RejectCode::Busy => 2,
            RejectCode::BadRequest => 3,
            RejectCode::Corrupt => 4,
            RejectCode::Limited => 5,
        }
    }
    fn from_byte(byte: u8) -> Result<RejectCode, ParseError> {
        match byte {
            1 => Ok(RejectCode::NotFound),
            2 => Ok(RejectCode::Busy),
            3 => Ok(RejectCode::BadRequest),
            4 => Ok(RejectCode::Corrupt),
            5 => Ok(RejectCode::Limited),
            _ => Err(ParseError::Malformed),
        }
    }
}

/// Longest Listing: what a padded List may be answered with (address validation).
pub const LISTING_LEN_MAX: usize = AMPLIFICATION_FACTOR * REQUEST_LEN_MIN;

/// Entries `offset..` of `catalog` (sorted by name by the caller) that fit one Listing in
/// answer to a List of `received_len` bytes: at most `AMPLIFICATION_FACTOR` times it, and at
/// most `LISTING_LEN_MAX`.
pub fn listing_page(
    request_id: u64,
    catalog: &[CatalogEntry],
    offset: u32,
    received_len: usize,
) -> ControlMessage {
    let budget = LISTING_LEN_MAX.min(AMPLIFICATION_FACTOR * received_len);
    let total = u32::try_from(catalog.len()).unwrap_or(u32::MAX);
    let mut len = 4 + 8 + 4 + 4 + 2;
    let entries: Vec<CatalogEntry> = catalog
        .iter()
        .skip(offset as usize)
        .take_while(|entry| {
            len += 1 + entry.name.len() + 32 + 8;
            len <= budget
        })
        .cloned()
        .collect();
    ControlMessage::Listing {
        request_id,
        total,
        offset,
        entries,
    }
}

/// Longest location label (a site or region name an operator chooses, R6/R16).
pub const LOCATION_LEN_MAX: usize = 32;

/// What a client tells a director (or a server) beyond the file's name, so the request is
/// routed well (R16) and a resumed download goes on with the same bytes (R17). All optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHints {
    /// The root of what the client already holds: only a server with this root can continue it.
    pub root: Option<RootHash>,
    /// What the client's path delivered last (its measured throughput), 0 = unknown.
    pub throughput_bits_per_s: u64,
    /// The location the client prefers ("" = any).
    pub location: String,
    /// A server that just failed this client: route elsewhere if any other can serve.
    pub avoid: Option<SocketAddr>,
    /// Where the client was in the loop (the next serial it expected): a channel opened for
    /// it starts there, so it is not sent again what it just received (R17).
    pub resume_at: Option<u32>,
}

impl RequestHints {
    const ROOT: u8 = 1;
    const THROUGHPUT: u8 = 2;
    const LOCATION: u8 = 4;
    const AVOID: u8 = 8;
    const RESUME_AT: u8 = 16;

    fn emit(&self, w: &mut Writer<'_>) {
        assert!(
            self.location.len() <= LOCATION_LEN_MAX,
            "location label too long"
        );
        let mut flags = 0;
        if self.root.is_some() {
            flags |= Self::ROOT;
        }
        if self.throughput_bits_per_s != 0 {
            flags |= Self::THROUGHPUT;
        }
        if !self.location.is_empty() {
            flags |= Self::LOCATION;
        }
        if self.avoid.is_some() {
            flags |= Self::AVOID;
        }
        if self.resume_at.is_some() {
            flags |= Self::RESUME_AT;
        }
        w.u8(flags);
        if let Some(root) = self.root {
            w.bytes(&root.0);
        }
        if self.throughput_bits_per_s != 0 {
            w.u64(self.throughput_bits_per_s);
        }
        if !self.location.is_empty() {
            w.short_string(&self.location);
        }
        if let Some(avoid) = self.avoid {
            write_addr(w, avoid);
        }
        if let Some(serial) = self.resume_at {
            w.u32(serial);
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<RequestHints, ParseError> {
        let flags = r.u8()?;
        let known = Self::ROOT | Self::THROUGHPUT | Self::LOCATION | Self::AVOID | Self::RESUME_AT;
        if flags & !known != 0 {
            return Err(ParseError::Malformed);
        }
        let mut hints = RequestHints::default();
        if flags & Self::ROOT != 0 {
            hints.root = Some(RootHash(r.array::<32>()?));
        }
        if flags & Self::THROUGHPUT != 0 {
            hints.throughput_bits_per_s = r.u64()?;
            if hints.throughput_bits_per_s == 0 {
                return Err(ParseError::Malformed);
            }
        }
        if flags & Self::LOCATION != 0 {
            hints.location = r.short_string(LOCATION_LEN_MAX)?;
            if hints.location.is_empty() {
                return Err(ParseError::Malformed);
            }
        }
        if flags & Self::AVOID != 0 {
            hints.avoid = Some(read_addr(r)?);
        }
        if flags & Self::RESUME_AT != 0 {
            hints.resume_at = Some(r.u32()?);
        }
        Ok(hints)
    }

    /// Bytes `emit` writes.
    pub fn encoded_len(&self) -> usize {
        let mut len = 1;
        if self.root.is_some() {
            len += 32;
        }
        if self.throughput_bits_per_s != 0 {
            len += 8;
        }
        if !self.location.is_empty() {
            len += 1 + self.location.len();
        }
        if let Some(avoid) = self.avoid {
            len += if avoid.is_ipv4() { 7 } else { 19 };
        }
        if self.resume_at.is_some() {
            len += 4;
        }
        len
    }
}

// An Offer carries the file info inline: messages are parsed one at a time, never stored in
// bulk, so boxing it would only add an allocation per Offer.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// Client → server: I want this file. `request_id` matches the answer.
    Request {
        request_id: u64,
        multicast_ok: bool,
        name: String,
        hints: RequestHints,
    },
    /// Director (or a server without the file) → client (R7, R16): ask this server instead.
    /// Never larger than the Request it answers.
    Redirect { request_id: u64, server: SocketAddr },
    /// Client → server or director (`loopcast ls`): which files do you offer, from entry
    /// `offset` on? Padded like a Request.
    List { request_id: u64, offset: u32 },
    /// The answer: entries `offset..` of `total` (sorted by name), as many as fit in
    /// `LISTING_LEN_MAX`.
    Listing {
        request_id: u64,
        total: u32,
        offset: u32,
        entries: Vec<CatalogEntry>,
    },
    /// Server → client: the file exists; here is its info and the channel to listen on.
    Offer {
        request_id: u64,
        session: SessionId,
        /// Echoed in Joined: proves the client receives at its address.
        token: Token,
        transport: Transport,
        /// Multicast group and port (multicast) or the server's data source (unicast).
        channel: SocketAddr,
        rate_bits_per_s: u64,
        info: FileInfo,
    },
    /// Server → client: no.
    Reject {
        request_id: u64,
        code: RejectCode,
        message: String,
    },
    /// Server → group (R8): the channel is live; a client that sees it confirms with Joined.
    Sync { file_id: FileId, sequence: u32 },
    /// Client → server: multicast works (Multicast) or fall back to unicast (Unicast). The
    /// token from the Offer validates the client's address: nothing but small replies goes to
    /// it before.
    Joined {
        session: SessionId,
        token: Token,
        transport: Transport,
    },
    /// Client → server: I have joined the multicast group; send a Sync to it now. The token
    /// from the Offer shows the sender receives at the session's address; the Sync goes to
    /// the group, never to the sender, and a session buys at most a few
    /// (`SYNC_WANTED_PER_SESSION`). Without it a new client waits for the next scheduled
    /// Sync (up to the pending interval, 100 ms): the Sync sent with the Offer comes before
    /// it joined.
    SyncWanted { session: SessionId, token: Token },
    /// Client → server, periodically: progress and liveness. `done` ends the session.
    Status {
        session: SessionId,
        held: u32,
        loop_len: u32,
        done: bool,
    },
    /// Client → server: stop sending to me.
    Leave { session: SessionId },
    /// Client → server (R10): these serials went by and did not arrive; send them ahead of the
    /// loop. Ranges are `first .. first + count`, at most `NAK_RANGES_MAX`, each non-empty.
    Nak {
        session: SessionId,
        ranges: Vec<(u32, u32)>,
    },
    /// Server → group (R10 suppression): some receiver of this file asked for these ranges and
    /// they are queued for repair; a receiver missing the same serials need not ask as well.
    NakHeard {
        file_id: FileId,
        ranges: Vec<(u32, u32)>,
    },
    /// Server → client: this session is over (see the reason); a client that still needs the
    /// file asks again and continues from what it holds.
    Ended {
        session: SessionId,
        reason: EndReason,
    },
    /// Client → server, a few times a second while joined (R12): what the client's path
    /// delivered since its last report. The server answers each with `Feedback`.
    Report {
        session: SessionId,
        /// The client's clock when sent, microseconds (wrapping); echoed in Feedback, so the
        /// client measures the round trip.
        sent_at_us: u32,
        /// The time the counts cover, microseconds.
        interval_us: u32,
        /// Datagrams of the file that arrived in the interval (new or not, verified).
        received: u32,
        /// Loop serials that went by in the interval without arriving (gaps in the sequence).
        lost: u32,
        /// The client's latest round-trip sample, microseconds; 0 until it has one.
        rtt_us: u32,
        /// Whether the client could place gaps at all: false while nothing it received since
        /// it joined or moved has been verified (a mid-loop joiner waits for the next hash
        /// block above its data, up to 2,000 datagrams), so `lost` says nothing. One byte, 0
        /// or 1.
        loss_judged: bool,
    },
    /// Server → client, the answer to a Report: the tier this session is on (0 = slowest) and
    /// where it listens. A client on another channel than `channel` moves there (R11); a lost
    /// Feedback is repaired by the next one.
    Feedback {
        session: SessionId,
        /// The Report's `sent_at_us`.
        echo_us: u32,
        /// The tier's identity on this server (a change means a move, also on unicast where the
        /// channel address stays the same).
        tier_id: u32,
        tier: u8,
        tiers: u8,
        transport: Transport,
        /// The tier's multicast group and port (multicast) or the server's data source.
        channel: SocketAddr,
        rate_bits_per_s: u64,
    },
}

/// Ranges one NAK carries at most (8 bytes each: the message stays well under one datagram).
pub const NAK_RANGES_MAX: usize = 64;

mod kind {
    pub const REQUEST: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REJECT: u8 = 3;
    pub const SYNC: u8 = 4;
    pub const JOINED: u8 = 5;
    pub const STATUS: u8 = 6;
    pub const LEAVE: u8 = 7;
    pub const NAK: u8 = 8;
    pub const NAK_HEARD: u8 = 9;
    pub const ENDED: u8 = 10;
    pub const REPORT: u8 = 11;
    pub const FEEDBACK: u8 = 12;
    pub const REDIRECT: u8 = 13;
    pub const LIST: u8 = 14;
    pub const LISTING: u8 = 15;
    pub const SYNC_WANTED: u8 = 16;
}

pub(crate) fn write_addr(w: &mut Writer<'_>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            w.u8(4);
            w.bytes(&ip.octets());
        }
        IpAddr::V6(ip) => {
            w.u8(6);
            w.bytes(&ip.octets());
        }
    }
    w.u16(addr.port());
}

pub(crate) fn read_addr(r: &mut Reader<'_>) -> Result<SocketAddr, ParseError> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        _ => return Err(ParseError::Malformed),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

impl ControlMessage {
    /// True if `bytes` starts like a control message (as opposed to a loop datagram).
    pub fn is_control(bytes: &[u8]) -> bool {
        bytes.len() >= 2 && bytes[..2] == CONTROL_MAGIC
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut w = Writer { out };
        w.bytes(&CONTROL_MAGIC);
        w.u8(CONTROL_VERSION);
        match self {
            ControlMessage::Request {
                request_id,
                multicast_ok,
                name,
                hints,
            } => {
                assert!(name.len() <= NAME_LEN_MAX, "file name too long");
                w.u8(kind::REQUEST);
                w.u64(*request_id);
                w.u8(u8::from(*multicast_ok));
                w.short_string(name);
                hints.emit(&mut w);
                // Zero padding up to REQUEST_LEN_MIN (see there).
                let written = w.out.len();
                w.out.resize(written.max(REQUEST_LEN_MIN), 0);
            }
            ControlMessage::Redirect { request_id, server } => {
                w.u8(kind::REDIRECT);
                w.u64(*request_id);
                write_addr(&mut w, *server);
            }
            ControlMessage::List { request_id, offset } => {
                w.u8(kind::LIST);
                w.u64(*request_id);
                w.u32(*offset);
                let written = w.out.len();
                w.out.resize(written.max(REQUEST_LEN_MIN), 0);
            }
            ControlMessage::Listing {
                request_id,
                total,
                offset,
                entries,
            } => {
                w.u8(kind::LISTING);
                w.u64(*request_id);
                w.u32(*total);
                w.u32(*offset);
                CatalogEntry::write_list(&mut w, entries);
            }
            ControlMessage::Offer {
                request_id,
                session,
                token,
                transport,
                channel,
                rate_bits_per_s,
                info,
            } => {
                w.u8(kind::OFFER);
                w.u64(*request_id);
                w.u64(session.0);
                w.u64(token.0);
                w.u8(transport.to_byte());
                write_addr(&mut w, *channel);
                w.u64(*rate_bits_per_s);
                let info_bytes = info.to_bytes();
                w.u16(u16::try_from(info_bytes.len()).expect("info is bounded by INFO_LEN_MAX"));
                w.bytes(&info_bytes);
            }
            ControlMessage::Reject {
                request_id,
                code,
                message,
            } => {
                w.u8(kind::REJECT);
                w.u64(*request_id);
                w.u8(code.to_byte());
                let mut end = message.len().min(REJECT_MESSAGE_LEN_MAX);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                w.short_string(&message[..end]);
            }
            ControlMessage::Sync { file_id, sequence } => {
                w.u8(kind::SYNC);
                w.u64(file_id.0);
                w.u32(*sequence);
            }
            ControlMessage::Joined {
                session,
                token,
                transport,
            } => {
                w.u8(kind::JOINED);
                w.u64(session.0);
                w.u64(token.0);
                w.u8(transport.to_byte());
            }
            ControlMessage::SyncWanted { session, token } => {
                w.u8(kind::SYNC_WANTED);
                w.u64(session.0);
                w.u64(token.0);
            }
            ControlMessage::Status {
                session,
                held,
                loop_len,
                done,
            } => {
                w.u8(kind::STATUS);
                w.u64(session.0);
                w.u32(*held);
                w.u32(*loop_len);
                w.u8(u8::from(*done));
            }
            ControlMessage::Leave { session } => {
                w.u8(kind::LEAVE);
                w.u64(session.0);
            }
            ControlMessage::Nak { session, ranges } => {
                w.u8(kind::NAK);
                w.u64(session.0);
                write_ranges(&mut w, ranges);
            }
            ControlMessage::NakHeard { file_id, ranges } => {
                w.u8(kind::NAK_HEARD);
                w.u64(file_id.0);
                write_ranges(&mut w, ranges);
            }
            ControlMessage::Ended { session, reason } => {
                w.u8(kind::ENDED);
                w.u64(session.0);
                w.u8(reason.to_byte());
            }
            ControlMessage::Report {
                session,
                sent_at_us,
                interval_us,
                received,
                lost,
                rtt_us,
                loss_judged,
            } => {
                w.u8(kind::REPORT);
                w.u64(session.0);
                w.u32(*sent_at_us);
                w.u32(*interval_us);
                w.u32(*received);
                w.u32(*lost);
                w.u32(*rtt_us);
                w.u8(u8::from(*loss_judged));
            }
            ControlMessage::Feedback {
                session,
                echo_us,
                tier_id,
                tier,
                tiers,
                transport,
                channel,
                rate_bits_per_s,
            } => {
                assert!(tier < tiers, "a session's tier is one of the file's tiers");
                w.u8(kind::FEEDBACK);
                w.u64(session.0);
                w.u32(*echo_us);
                w.u32(*tier_id);
                w.u8(*tier);
                w.u8(*tiers);
                w.u8(transport.to_byte());
                write_addr(&mut w, *channel);
                w.u64(*rate_bits_per_s);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.emit(&mut out);
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<ControlMessage, ParseError> {
        if bytes.len() > CONTROL_LEN_MAX {
            return Err(ParseError::Malformed);
        }
        let mut r = Reader::new(bytes);
        if r.array::<2>()? != CONTROL_MAGIC {
            return Err(ParseError::BadMagic);
        }
        if r.u8()? != CONTROL_VERSION {
            return Err(ParseError::BadVersion);
        }
        let message = match r.u8()? {
            kind::REQUEST => {
                let message = ControlMessage::Request {
                    request_id: r.u64()?,
                    multicast_ok: read_bool(&mut r)?,
                    name: r.short_string(NAME_LEN_MAX)?,
                    hints: RequestHints::parse(&mut r)?,
                };
                // Padding: zeros only.
                let padding = r.take(r.remaining())?;
                if padding.iter().any(|&b| b != 0) {
                    return Err(ParseError::Malformed);
                }
                message
            }
            kind::OFFER => {
                let request_id = r.u64()?;
                let session = SessionId(r.u64()?);
                let token = Token(r.u64()?);
                let transport = Transport::from_byte(r.u8()?)?;
                let channel = read_addr(&mut r)?;
                let rate_bits_per_s = r.u64()?;
                let info_len = usize::from(r.u16()?);
                if info_len > INFO_LEN_MAX {
                    return Err(ParseError::Malformed);
                }
                let info = FileInfo::parse(r.take(info_len)?)?;
                ControlMessage::Offer {
                    request_id,
                    session,
                    token,
                    transport,
                    channel,
                    rate_bits_per_s,
                    info,
                }
            }
            kind::REJECT => ControlMessage::Reject {
                request_id: r.u64()?,
                code: RejectCode::from_byte(r.u8()?)?,
                message: r.short_string(REJECT_MESSAGE_LEN_MAX)?,
            },
            kind::SYNC => ControlMessage::Sync {
                file_id: FileId(r.u64()?),
                sequence: r.u32()?,
            },
            kind::JOINED => ControlMessage::Joined {
                session: SessionId(r.u64()?),
                token: Token(r.u64()?),
                transport: Transport::from_byte(r.u8()?)?,
            },
            kind::SYNC_WANTED => ControlMessage::SyncWanted {
                session: SessionId(r.u64()?),
                token: Token(r.u64()?),
            },
            kind::STATUS => ControlMessage::Status {
                session: SessionId(r.u64()?),
                held: r.u32()?,
                loop_len: r.u32()?,
                done: read_bool(&mut r)?,
            },
            kind::LEAVE => ControlMessage::Leave {
                session: SessionId(r.u64()?),
            },
            kind::NAK => ControlMessage::Nak {
                session: SessionId(r.u64()?),
                ranges: read_ranges(&mut r)?,
            },
            kind::NAK_HEARD => ControlMessage::NakHeard {
                file_id: FileId(r.u64()?),
                ranges: read_ranges(&mut r)?,
            },
            kind::ENDED => ControlMessage::Ended {
                session: SessionId(r.u64()?),
                reason: EndReason::from_byte(r.u8()?)?,
            },
            kind::REPORT => ControlMessage::Report {
                session: SessionId(r.u64()?),
                sent_at_us: r.u32()?,
                interval_us: r.u32()?,
                received: r.u32()?,
                lost: r.u32()?,
                rtt_us: r.u32()?,
                loss_judged: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(ParseError::Malformed),
                },
            },
            kind::FEEDBACK => {
                let session = SessionId(r.u64()?);
                let echo_us = r.u32()?;
                let tier_id = r.u32()?;
                let tier = r.u8()?;
                let tiers = r.u8()?;
                if tier >= tiers {
                    return Err(ParseError::Malformed);
                }
                ControlMessage::Feedback {
                    session,
                    echo_us,
                    tier_id,
                    tier,
                    tiers,
                    transport: Transport::from_byte(r.u8()?)?,
                    channel: read_addr(&mut r)?,
                    rate_bits_per_s: r.u64()?,
                }
            }
            kind::REDIRECT => ControlMessage::Redirect {
                request_id: r.u64()?,
                server: read_addr(&mut r)?,
            },
            kind::LIST => {
                let message = ControlMessage::List {
                    request_id: r.u64()?,
                    offset: r.u32()?,
                };
                let padding = r.take(r.remaining())?;
                if padding.iter().any(|&b| b != 0) {
                    return Err(ParseError::Malformed);
                }
                message
            }
            kind::LISTING => {
                let request_id = r.u64()?;
                let total = r.u32()?;
                let offset = r.u32()?;
                let entries = CatalogEntry::read_list(&mut r)?;
                ControlMessage::Listing {
                    request_id,
                    total,
                    offset,
                    entries,
                }
            }
            _ => return Err(ParseError::UnknownKind),
        };
        r.finish()?;
        Ok(message)
    }
}

fn write_ranges(w: &mut Writer<'_>, ranges: &[(u32, u32)]) {
    assert!(
        !ranges.is_empty() && ranges.len() <= NAK_RANGES_MAX,
        "a NAK carries 1..={NAK_RANGES_MAX} ranges"
    );
    w.u8(u8::try_from(ranges.len()).expect("bounded above"));
    for &(first, count) in ranges {
        assert!(count > 0, "NAK ranges are non-empty");
        w.u32(first);
        w.u32(count);
    }
}

/// 1..=NAK_RANGES_MAX ranges, each non-empty and not overflowing.
fn read_ranges(r: &mut Reader<'_>) -> Result<Vec<(u32, u32)>, ParseError> {
    let count = usize::from(r.u8()?);
    if count == 0 || count > NAK_RANGES_MAX {
        return Err(ParseError::Malformed);
    }
    let mut ranges = Vec::with_capacity(count);
    for _ in 0..count {
        let first = r.u32()?;
        let length = r.u32()?;
        if length == 0 || first.checked_add(length).is_none() {
            return Err(ParseError::Malformed);
        }
        ranges.push((first, length));
    }
    Ok(ranges)
}

fn read_bool(r: &mut Reader<'_>) -> Result<bool, ParseError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(ParseError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::tests::sample_info;
    use crate::info::DATAGRAM_SIZE_MTU_1500;
    use crate::testkit::{hostile_bytes, mutated, parser_config};
    use proptest::prelude::*;

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(ip.into()), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(ip.into()), port)),
        ]
    }

    /// 1..=NAK_RANGES_MAX valid ranges, as Nak and NakHeard carry them.
    fn any_ranges() -> impl Strategy<Value = Vec<(u32, u32)>> {
        proptest::collection::vec((0u32..u32::MAX / 2, 1u32..u32::MAX / 2), 1..=NAK_RANGES_MAX)
    }

    fn any_hints() -> impl Strategy<Value = RequestHints> {
        (
            proptest::option::of(any::<[u8; 32]>()),
            prop_oneof![Just(0u64), any::<u64>()],
            "[a-z0-9-]{0,32}",
            proptest::option::of(any_addr()),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(
                |(root, throughput_bits_per_s, location, avoid, resume_at)| RequestHints {
                    root: root.map(RootHash),
                    throughput_bits_per_s,
                    location,
                    avoid,
                    resume_at,
                },
            )
    }

    fn any_message() -> impl Strategy<Value = ControlMessage> {
        prop_oneof![
            (
                any::<u64>(),
                any::<bool>(),
                "[a-z0-9._-]{0,128}",
                any_hints()
            )
                .prop_map(|(request_id, multicast_ok, name, hints)| {
                    ControlMessage::Request {
                        request_id,
                        multicast_ok,
                        name,
                        hints,
                    }
                }),
            (any::<u64>(), any_addr())
                .prop_map(|(request_id, server)| ControlMessage::Redirect { request_id, server }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(request_id, offset)| ControlMessage::List { request_id, offset }),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(
                    ("[a-z0-9._-]{1,40}", any::<[u8; 32]>(), any::<u64>()),
                    0..12
                )
            )
                .prop_map(|(request_id, total, offset, entries)| {
                    ControlMessage::Listing {
                        request_id,
                        total,
                        offset,
                        entries: entries
                            .into_iter()
                            .map(|(name, root, bytes)| CatalogEntry {
                                name,
                                root: RootHash(root),
                                bytes,
                            })
                            .collect(),
                    }
                }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                any_addr(),
                any::<u64>(),
                1u64..10_000_000,
                any::<u8>()
            )
                .prop_map(
                    |(request_id, session, multicast, channel, rate_bits_per_s, len, seed)| {
                        ControlMessage::Offer {
                            request_id,
                            session: SessionId(session),
                            token: Token(session.rotate_left(17)),
                            transport: if multicast {
                                Transport::Multicast
                            } else {
                                Transport::Unicast
                            },
                            channel,
                            rate_bits_per_s,
                            info: sample_info(len, DATAGRAM_SIZE_MTU_1500, seed),
                        }
                    }
                ),
            (any::<u64>(), "[ -~]{0,200}").prop_map(|(request_id, message)| {
                ControlMessage::Reject {
                    request_id,
                    code: RejectCode::NotFound,
                    message,
                }
            }),
            (any::<u64>(), any::<u32>()).prop_map(|(f, sequence)| ControlMessage::Sync {
                file_id: FileId(f),
                sequence
            }),
            (any::<u64>(), any::<bool>()).prop_map(|(s, m)| ControlMessage::Joined {
                session: SessionId(s),
                token: Token(s ^ 0x5555),
                transport: if m {
                    Transport::Multicast
                } else {
                    Transport::Unicast
                }
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(s, t)| ControlMessage::SyncWanted {
                session: SessionId(s),
                token: Token(t),
            }),
            (any::<u64>(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(
                |(s, held, loop_len, done)| ControlMessage::Status {
                    session: SessionId(s),
                    held,
                    loop_len,
                    done
                }
            ),
            any::<u64>().prop_map(|s| ControlMessage::Leave {
                session: SessionId(s)
            }),
            (any::<u64>(), any_ranges()).prop_map(|(s, ranges)| ControlMessage::Nak {
                session: SessionId(s),
                ranges
            }),
            (any::<u64>(), any_ranges()).prop_map(|(f, ranges)| ControlMessage::NakHeard {
                file_id: FileId(f),
                ranges
            }),
            (any::<u64>(), 1u8..=4).prop_map(|(s, reason)| ControlMessage::Ended {
                session: SessionId(s),
                reason: EndReason::from_byte(reason).expect("1..=4"),
            }),
            (any::<u64>(), any::<[u32; 5]>(), any::<bool>()).prop_map(
                |(s, [a, b, c, d, e], judged)| ControlMessage::Report {
                    session: SessionId(s),
                    sent_at_us: a,
                    interval_us: b,
                    received: c,
                    lost: d,
                    rtt_us: e,
                    loss_judged: judged,
                }
            ),
            (
                any::<u64>(),
                any::<u32>(),
                (1u8..=255).prop_flat_map(|tiers| (0..tiers, Just(tiers))),
                any::<bool>(),
                any_addr(),
                any::<u64>()
            )
                .prop_map(|(s, echo_us, (tier, tiers), multicast, channel, rate)| {
                    ControlMessage::Feedback {
                        session: SessionId(s),
                        echo_us,
                        tier_id: echo_us.rotate_left(7),
                        tier,
                        tiers,
                        transport: if multicast {
                            Transport::Multicast
                        } else {
                            Transport::Unicast
                        },
                        channel,
                        rate_bits_per_s: rate,
                    }
                }),
        ]
    }

    proptest! {
        #[test]
        fn control_round_trips(message in any_message()) {
            let bytes = message.to_bytes();
            prop_assert!(bytes.len() <= CONTROL_LEN_MAX);
            prop_assert_eq!(ControlMessage::parse(&bytes), Ok(message));
        }

        #[test]
        fn truncated_never_parses(message in any_message(), cut in 0usize..2000) {
            let bytes = message.to_bytes();
            // A Request's zero padding may be cut without changing what it says.
            let body_len = match &message {
                ControlMessage::Request { name, hints, .. } => {
                    4 + 8 + 1 + 1 + name.len() + hints.encoded_len()
                }
                ControlMessage::List { .. } => 16,
                _ => bytes.len(),
            };
            let cut = cut % body_len;
            prop_assert!(ControlMessage::parse(&bytes[..cut]).is_err());
        }

        #[test]
        fn requests_are_padded_so_any_answer_fits_three_times_over(message in any_message()) {
            if let ControlMessage::Request { .. } | ControlMessage::List { .. } = message {
                prop_assert!(message.to_bytes().len() >= REQUEST_LEN_MIN);
            }
            prop_assert!(message.to_bytes().len() <= AMPLIFICATION_FACTOR * REQUEST_LEN_MIN);
        }
    }

    /// What every message that parsed must be: its own encoding byte for byte (so `emit` accepts
    /// whatever `parse` does), within the size bound, and fields within their domains. A new
    /// variant needs a line here only if it has a field with a domain of its own.
    fn check_parsed(message: &ControlMessage, bytes: &[u8]) -> Result<(), TestCaseError> {
        let again = message.to_bytes();
        match message {
            // A Request's zero padding may be any length: the body re-emits byte for byte.
            ControlMessage::Request { name, hints, .. } => {
                let body = 14 + name.len() + hints.encoded_len();
                prop_assert_eq!(&again[..body], &bytes[..body], "re-emits byte for byte");
            }
            ControlMessage::List { .. } => {
                prop_assert_eq!(&again[..16], &bytes[..16], "re-emits byte for byte");
            }
            _ => prop_assert_eq!(&again[..], bytes, "re-emits byte for byte"),
        }
        prop_assert!(again.len() <= CONTROL_LEN_MAX);
        prop_assert_eq!(ControlMessage::parse(&again), Ok(message.clone()));
        match message {
            ControlMessage::Request { name, hints, .. } => {
                prop_assert!(name.len() <= NAME_LEN_MAX);
                prop_assert!(hints.location.len() <= LOCATION_LEN_MAX);
            }
            ControlMessage::Reject { message, .. } => {
                prop_assert!(message.len() <= REJECT_MESSAGE_LEN_MAX)
            }
            ControlMessage::Offer { info, .. } => {
                crate::info::tests::check_parsed_info(info, &info.to_bytes())?
            }
            ControlMessage::Nak { ranges, .. } | ControlMessage::NakHeard { ranges, .. } => {
                prop_assert!((1..=NAK_RANGES_MAX).contains(&ranges.len()));
                for &(first, count) in ranges {
                    prop_assert!(count > 0 && first.checked_add(count).is_some());
                }
            }
            ControlMessage::Feedback { tier, tiers, .. } => prop_assert!(tier < tiers),
            _ => {}
        }
        Ok(())
    }

    /// Noise, and noise behind a valid magic, version and any kind byte (known or not).
    fn hostile_control_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            hostile_bytes(b"Lc\x01", 1500),
            (0u8..32, proptest::collection::vec(any::<u8>(), 0..1500)).prop_map(|(kind, tail)| {
                let mut bytes = vec![b'L', b'c', CONTROL_VERSION, kind];
                bytes.extend_from_slice(&tail);
                bytes
            }),
        ]
    }

    proptest! {
        #![proptest_config(parser_config())]

        #[test]
        fn garbage_never_panics(bytes in hostile_control_bytes()) {
            if let Ok(message) = ControlMessage::parse(&bytes) {
                check_parsed(&message, &bytes)?;
            }
        }

        #[test]
        fn mutated_message_is_dropped_or_valid(
            bytes in mutated(any_message().prop_map(|message| message.to_bytes()))
        ) {
            if let Ok(message) = ControlMessage::parse(&bytes) {
                check_parsed(&message, &bytes)?;
            }
        }
    }
}
