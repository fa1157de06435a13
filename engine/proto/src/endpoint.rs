//! The server endpoint (R7–R10, R23): every session rule of `loopcastd`, sans-IO.
//!
//! One `Endpoint` holds all sessions and channels of a server, like quinn-proto's `Endpoint`.
//! The driver feeds it control datagrams (`handle_control`) and time (`handle_timeout`), and
//! drains, in this order after every input: `poll_command` (to the data plane), `poll_transmit`
//! (control datagrams to send), `poll_event` (for logs); then sleeps until `poll_timeout`.
//!
//! ```text
//!  Request ──(rate limit, per-address and global session caps, lookup)──▶ Offer{session, token}
//!  Joined{token} from the same address ──▶ validated: OpenChannel, AddDestination (data flows)
//!  Status ──▶ alive, held (repair credit) │ done/Leave ──▶ end │ silent ──▶ expire
//!  Nak ──(validated, per-address budget, per-session credit ≤ what it misses)──▶ QueueRepair,
//!        multicast: NakHeard to the group (R10 suppression)
//!  anything about an unknown session ──▶ Ended{UnknownSession} (the client asks again)
//! ```
//!
//! Address validation (as QUIC's): until an address echoes the token of its Offer, it gets only
//! replies to what it sent, each at most `AMPLIFICATION_FACTOR` times the size of the message
//! that caused it (Requests are padded so an Offer fits). The loop never goes to an address that
//! has not proven it receives there, so a forged Request costs the server one small reply.

use core::time::Duration;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::carousel::SessionId;
use crate::info::FileInfo;
use crate::rate::{
    self, Counts, MemberPlan, PathEstimate, RateConfig, Target, TierControl, TierPlan, TierStart,
};
use crate::rng::SeededRng;
use crate::time::Instant;
use crate::wire::control::{
    ControlMessage, EndReason, RejectCode, Token, Transport, AMPLIFICATION_FACTOR,
};
use crate::wire::datagram::FileId;

/// The endpoint's name for a channel (one per open file); the driver maps it to its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u64);

#[derive(Clone, Debug)]
pub struct MulticastGroups {
    /// Channel groups are `group_base`'s /24 + 1 + slot.
    pub group_base: Ipv4Addr,
    pub port: u16,
}

/// Groups in one /24 (.1 to .254).
const GROUP_SLOTS: usize = 254;

#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// What the Offer names as the channel of a unicast session (the server's address).
    pub unicast_channel: SocketAddr,
    pub multicast: Option<MulticastGroups>,
    /// Per-channel rate, bits/s: the cap of every tier with `adaptive`, else the one fixed
    /// rate; 0 = no cap (without `adaptive`: unpaced).
    pub rate_bits_per_s: u64,
    /// Tiers and rates that follow the clients' reports (R11, R12); `None`: one channel per
    /// file at `rate_bits_per_s`.
    pub adaptive: Option<RateConfig>,
    /// A validated session not heard from for this long ends.
    pub session_timeout: Duration,
    /// A session that has not validated its address within this long ends.
    pub unvalidated_timeout: Duration,
    pub sessions_max: usize,
    /// Sessions not yet validated, at most; past it the oldest is dropped for a new one (so
    /// spoofed Requests can never crowd out a client that validates within a round trip).
    pub unvalidated_max: usize,
    /// Sessions (validated or not) one IP address may hold at once.
    pub sessions_per_address_max: usize,
    /// Requests one IP address may make per second on average, and in a burst.
    pub requests_per_address_per_s: u32,
    pub requests_per_address_burst: u32,
    /// IP addresses remembered at most (rate limits and NAK budgets).
    pub addresses_max: usize,
    /// How long an address without sessions is remembered (so its NAK budget is not renewed by
    /// closing and reopening sessions).
    pub address_memory: Duration,
    pub channels_max: usize,
    /// Repairs one IP address may ask for over all its sessions, in loops of the file.
    pub nak_budget_loops_per_address: u64,
    /// SYNC on a multicast channel with multicast sessions (R8).
    pub sync_interval: Duration,
    /// SYNC while some session of the channel waits for one: a client joins the group only
    /// after it has the Offer, so the SYNC sent with the Offer is mostly lost, and with the
    /// 200 ms interval every multicast client waited 200 ms for its first datagram. 100 ms,
    /// not less: at 20 ms (first datagram 0.02 s in the e2e bench) the fleet simulation's
    /// 2,000 clients were on the tier matching their link 10 s after asking in 90.4-97.8 % of
    /// 5 seeds against 94.7-97.6 % at 200 ms and 95.9-97.6 % at 100 ms (the tier control
    /// copes less well with clients that all join within a few tens of milliseconds).
    pub sync_interval_pending: Duration,
    /// The fleet's directors (R7): a Request for a file this server lacks is answered with a
    /// Redirect to one of them (in turn), which sends the client to a server that has it.
    /// Empty: a Reject (not found).
    pub redirect_unknown_to: Vec<SocketAddr>,
}

impl EndpointConfig {
    pub fn new(unicast_channel: SocketAddr) -> EndpointConfig {
        EndpointConfig {
            unicast_channel,
            multicast: None,
            rate_bits_per_s: 1_000_000_000,
            adaptive: Some(RateConfig::default()),
            session_timeout: Duration::from_secs(5),
            unvalidated_timeout: Duration::from_secs(3),
            sessions_max: 4096,
            unvalidated_max: 1024,
            sessions_per_address_max: 16,
            requests_per_address_per_s: 10,
            requests_per_address_burst: 40,
            addresses_max: 65_536,
            address_memory: Duration::from_secs(60),
            channels_max: 256,
            nak_budget_loops_per_address: 4,
            sync_interval: Duration::from_millis(200),
            sync_interval_pending: Duration::from_millis(100),
            redirect_unknown_to: Vec::new(),
        }
    }
}

/// The server's catalog, as the endpoint sees it: a name to the info of a servable file, or the
/// reason it cannot be served. The driver opens and checks archives; the endpoint decides.
pub trait FileLookup {
    fn lookup(&mut self, name: &str) -> Result<FileInfo, (RejectCode, String)>;
    /// Every file offered, sorted by name (`loopcast ls`).
    fn catalog(&mut self) -> Vec<crate::wire::fleet::CatalogEntry> {
        Vec::new()
    }
}

/// A server with this one file (tests, simulations and benches).
impl FileLookup for FileInfo {
    fn lookup(&mut self, name: &str) -> Result<FileInfo, (RejectCode, String)> {
        if name == self.name {
            Ok(self.clone())
        } else {
            Err((RejectCode::NotFound, format!("no file named {name:?}")))
        }
    }
}

/// What a Request asks for (its fields the endpoint acts on).
struct AskedFor<'a> {
    request_id: u64,
    multicast_ok: bool,
    name: &'a str,
    resume_at: Option<u32>,
    throughput_bits_per_s: u64,
}

/// Which socket a control datagram leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The request socket (replies to a client).
    Control,
    /// The multicast sending socket (SYNC, NakHeard to a group).
    Group,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub via: Via,
    pub bytes: Vec<u8>,
}

/// What the data plane must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataCommand {
    /// Start looping this file (the first session validated). The driver maps the archive.
    OpenChannel {
        channel: ChannelId,
        file_id: FileId,
        name: String,
        rate_bits_per_s: u64,
        /// Start the loop where this channel (another tier of the file) is now: its clients,
        /// moving here, continue where they were.
        start_like: Option<ChannelId>,
        /// Else start it at this serial: where the loop was for the client it opens for (one
        /// that lost another server, R17), so the loop does not first send what it holds.
        start_at: Option<u32>,
    },
    CloseChannel {
        channel: ChannelId,
    },
    AddDestination {
        channel: ChannelId,
        destination: SocketAddr,
    },
    RemoveDestination {
        channel: ChannelId,
        destination: SocketAddr,
    },
    /// Repair these serials ahead of the loop, for `to` alone (a unicast session) or, with
    /// `None`, for the channel's group (multicast: every receiver hears it).
    QueueRepair {
        channel: ChannelId,
        first: u32,
        count: u32,
        to: Option<SocketAddr>,
    },
    /// The channel's rate changed (R12).
    SetRate {
        channel: ChannelId,
        rate_bits_per_s: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    Completed,
    Left,
    Expired,
    /// Never echoed its Offer's token.
    NotValidated,
    ChannelFailed,
    ShuttingDown,
    /// `loopcastctl drain`: sent to another server of the fleet.
    Drained,
    /// `loopcastctl stop-channel`, or a tier merged away when the operator allowed fewer: the
    /// client was told to ask again.
    ChannelStopped,
}

impl core::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SessionEnd::Completed => "client complete",
            SessionEnd::Left => "client left",
            SessionEnd::Expired => "session expired (client silent)",
            SessionEnd::NotValidated => "session expired before its address was validated",
            SessionEnd::ChannelFailed => "channel failed",
            SessionEnd::ShuttingDown => "server shutting down",
            SessionEnd::Drained => "server drained: client sent to another server",
            SessionEnd::ChannelStopped => "channel stopped: client told to ask again",
        })
    }
}

/// Things worth a log line.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    SessionOpened {
        session: SessionId,
        client: SocketAddr,
        file: String,
        offered: Transport,
    },
    SessionValidated {
        session: SessionId,
        client: SocketAddr,
        transport: Transport,
        /// The channel it receives on (a unicast client's own, or its file's tier).
        channel: ChannelId,
    },
    SessionEnded {
        session: SessionId,
        client: SocketAddr,
        end: SessionEnd,
    },
    ChannelClosed {
        channel: ChannelId,
        file: String,
    },
    /// A file got another tier (R11).
    TierOpened {
        channel: ChannelId,
        file: String,
        rate_bits_per_s: u64,
    },
    /// A tier's rate changed (R12): up while its clients keep up, down when they lose.
    RateChanged {
        channel: ChannelId,
        file: String,
        from_bits_per_s: u64,
        to_bits_per_s: u64,
    },
    /// A client moved to another tier of its file (R11): down because it lost, up to merge.
    TierMoved {
        session: SessionId,
        client: SocketAddr,
        file: String,
        from_bits_per_s: u64,
        to_bits_per_s: u64,
        /// Its goodput (bits/s) and loss when it moved.
        goodput_bits_per_s: u64,
        loss: f64,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    pub requests: u64,
    pub rejected: u64,
    /// Requests for a file this server lacks sent to a director (R7).
    pub redirected: u64,
    /// Requests dropped by the per-address rate limit, or from addresses beyond the table.
    pub requests_rate_limited: u64,
    pub control_dropped: u64,
    /// Replies not sent because they would exceed `AMPLIFICATION_FACTOR` × what was received.
    pub replies_withheld: u64,
    pub tokens_rejected: u64,
    /// Syncs sent to groups, and SyncWanted messages honoured (a slow join shows here).
    pub syncs_sent: u64,
    pub syncs_wanted: u64,
    pub sessions_opened: u64,
    pub sessions_validated: u64,
    pub sessions_completed: u64,
    pub sessions_expired: u64,
    pub sessions_unvalidated_expired: u64,
    /// Unvalidated sessions dropped to make room for newer ones.
    pub sessions_unvalidated_evicted: u64,
    pub unknown_session_replies: u64,
    pub channels_opened: u64,
    pub channels_closed: u64,
    pub naks: u64,
    pub nak_serials: u64,
    /// NAKs (or parts) refused: per-address budget or per-session credit exhausted.
    pub naks_over_budget: u64,
    pub nak_serials_refused: u64,
    pub naks_relayed: u64,
    /// NAKs a client sent before it heard of its move to another tier: about the old tier's
    /// loop, dropped (queued on the new tier they were repairs of serials the client was not
    /// missing there, and the first one it received read as where the new loop was).
    pub naks_before_move: u64,
    pub reports: u64,
    /// Reports that came too soon after a session's last judged one, judged with its next.
    pub reports_merged: u64,
    pub tier_moves: u64,
    pub rate_changes: u64,
}

struct Session {
    client: SocketAddr,
    request_id: u64,
    token: Token,
    channel: ChannelId,
    /// Offered transport until validated, then the one in use.
    transport: Transport,
    validated: bool,
    last_heard: Instant,
    held: u32,
    /// Serials this session may still have repaired in the current window: what it misses.
    repair_credit: u64,
    credit_refreshed: Instant,
    /// What its reports say about its path (R12).
    estimate: PathEstimate,
    /// When it last moved between tiers, and its new tier's rate then.
    moved_at: Option<Instant>,
    moved_to_rate: u64,
    /// The `sent_at_us` of its last Report (echoed in an unsolicited Feedback after a move).
    last_report_us: u32,
    /// Reports it may have judged (`REPORTS_JUDGED_PER_S`, `REPORTS_JUDGED_BURST`), and those
    /// that came beyond (see `MergedReports`).
    reports_judged: CountBucket,
    reports_waiting: Option<MergedReports>,
    /// Where the client's loop was before it came here (its Request's hint, within the loop).
    resume_at: Option<u32>,
    /// SyncWanted messages honoured for it (at most `SYNC_WANTED_PER_SESSION`).
    syncs_wanted: u8,
}

impl Session {
    /// Whether `at` falls within `move_settle` of its last move: the client may not yet have
    /// switched to the new tier (what it says is still about the old one).
    fn settling_after_move(&self, at: Instant, move_settle: Duration) -> bool {
        self.moved_at.is_some_and(|moved| at < moved + move_settle)
    }
}

struct Channel {
    /// One unicast client's own channel (never a multicast tier, never a move target).
    solo: bool,
    file_id: FileId,
    info: FileInfo,
    group: Option<SocketAddrV4>,
    /// Sessions of this channel, validated or not (0 closes the channel, R9).
    sessions: usize,
    /// Multicast sessions not yet validated (SYNC goes out for them) and validated ones (the
    /// group is a destination while there are any).
    multicast_pending: usize,
    multicast_members: usize,
    /// Its validated sessions, in id order: what the control step plans over, kept as sessions
    /// validate, move and end (gathering them from every session each 10-50 ms step cost
    /// O(N log N) and capped the control plane near 59,000 reports a second at 100,000 clients).
    validated: BTreeSet<SessionId>,
    /// The data plane runs this channel (opened at the first validation).
    data_open: bool,
    sync_sequence: u32,
    next_sync: Instant,
    last_sync: Option<Instant>,
    /// SYNCs go at the pending interval until then (`SYNC_FAST_WINDOW` after the last
    /// multicast Request), then at the slow one even if sessions still wait: an unvalidated
    /// session (a spoofed Request) lives seconds, a real client joins in a few round trips.
    fast_sync_until: Instant,
    /// This tier's rate and how it changes (R11, R12).
    tier: TierControl,
    /// Bytes of an Offer for this file (ids and addresses have fixed widths; the unicast
    /// address is never shorter than the IPv4 group), so a Request can be sized against it.
    offer_len: usize,
    /// What the data plane has sent on it (datagrams, loop and repairs, cumulative) and when,
    /// as the driver samples it ([`Endpoint::handle_channel_sent`]): what a report's interval
    /// really carried, where the sender falls short of the tier's rate.
    sent_samples: VecDeque<(Instant, u64)>,
    /// Validated unicast sessions on it per client address. The data plane holds each address
    /// once: it is added for the first and removed with the last (two sessions from one socket,
    /// a client's re-request beside its old session, must not lose their data when one goes).
    unicast_destinations: HashMap<SocketAddr, u32>,
}

/// Samples of a channel's sent count kept, at least `SENT_SAMPLE_GAP` apart (the driver samples
/// at every wake-up, 10-50 ms apart: 0.6-3 s back, several report intervals).
const SENT_SAMPLES_MAX: usize = 64;
const SENT_SAMPLE_GAP: Duration = Duration::from_millis(5);
const SENT_SAMPLE_STALE: Duration = Duration::from_millis(100);
/// A tier's real rate is what its sender sent over this long (about a report interval).
const TIER_SENT_WINDOW: Duration = Duration::from_millis(200);

impl Channel {
    /// Datagrams the data plane sent on this channel between `from` and `to`, interpolated
    /// between the driver's samples; `None` if they do not reach back to `from`, or the last
    /// is over `SENT_SAMPLE_STALE` before `to` (not sampled lately: not known).
    /// What the channel's sender really sent over the last `TIER_SENT_WINDOW`, bits/s, if the
    /// driver's samples cover it.
    fn sent_rate(&self, now: Instant) -> Option<f64> {
        let sent = self.sent_between(now.checked_sub(TIER_SENT_WINDOW)?, now)?;
        Some(
            sent as f64 * f64::from(self.info.datagram_size) * 8.0 / TIER_SENT_WINDOW.as_secs_f64(),
        )
    }

    fn sent_between(&self, from: Instant, to: Instant) -> Option<u64> {
        let &(last, _) = self.sent_samples.back()?;
        if to.saturating_since(last) > SENT_SAMPLE_STALE {
            return None;
        }
        let at = |time: Instant| -> Option<f64> {
            let after = self.sent_samples.partition_point(|&(t, _)| t <= time);
            let &(t0, c0) = self.sent_samples.get(after.checked_sub(1)?)?;
            Some(match self.sent_samples.get(after) {
                Some(&(t1, c1)) => {
                    let span = t1.saturating_since(t0).as_secs_f64();
                    let part = time.saturating_since(t0).as_secs_f64();
                    c0 as f64 + (c1.saturating_sub(c0)) as f64 * (part / span.max(1e-9))
                }
                None => c0 as f64,
            })
        };
        Some((at(to)? - at(from)?).max(0.0) as u64)
    }

    /// The next SYNC as soon as possible, but at least `gap` after the last one.
    fn sync_soon(&mut self, now: Instant, gap: Duration) {
        let soonest = self.last_sync.map_or(now, |last| (last + gap).max(now));
        self.next_sync = self.next_sync.min(soonest);
    }
}

/// A token bucket over counts (an address's requests, a session's judged reports): tokens
/// scaled by 1e9, so integer arithmetic loses nothing between refills.
#[derive(Clone, Copy, Debug)]
struct CountBucket {
    tokens_scaled: u128,
    refilled: Instant,
}

impl CountBucket {
    fn full(burst: u32, now: Instant) -> CountBucket {
        CountBucket {
            tokens_scaled: u128::from(burst) * NANOS_PER_S,
            refilled: now,
        }
    }

    /// Refills at `per_s` tokens a second up to `burst`, and takes one if there is one.
    fn take(&mut self, now: Instant, per_s: u32, burst: u32) -> bool {
        let elapsed = u128::from(now.as_nanos().saturating_sub(self.refilled.as_nanos()));
        self.refilled = self.refilled.max(now);
        self.tokens_scaled =
            (self.tokens_scaled + elapsed * u128::from(per_s)).min(u128::from(burst) * NANOS_PER_S);
        if self.tokens_scaled < NANOS_PER_S {
            return false;
        }
        self.tokens_scaled -= NANOS_PER_S;
        true
    }
}

struct AddressState {
    sessions: usize,
    requests: CountBucket,
    nak_serials: u64,
    last_active: Instant,
}

const NANOS_PER_S: u128 = 1_000_000_000;
/// Shortest and longest repair window (unpaced channels and tiny files; slow tiers).
const REPAIR_WINDOW_MIN: Duration = Duration::from_secs(1);
const REPAIR_WINDOW_MAX: Duration = Duration::from_secs(5);
/// Serials of credit beyond what a session misses, at most as many as it misses (the last few
/// datagrams may need several asks).
const REPAIR_CREDIT_SLACK: u64 = 16;
/// Control datagrams queued for sending at most; past it, replies are dropped (counted).
const TRANSMIT_QUEUE_MAX: usize = 8192;
/// Tier control runs at most this often when reports ask for it at once (slow start).
const CONTROL_GAP_MIN: Duration = Duration::from_millis(10);
/// Expiry scans come at most this often (a session then ends up to this late).
const EXPIRY_SCAN_GAP_MIN: Duration = Duration::from_millis(50);
/// After a multicast Request, SYNCs go at the pending interval this long (a client joins the
/// group within a few round trips of its Offer), then at the slow interval: a spoofed Request's
/// session waits unvalidated for seconds, and must not buy fast SYNCs all that time.
pub(crate) const SYNC_FAST_WINDOW: Duration = Duration::from_millis(250);
/// SyncWanted messages a session may have honoured (one, and retries of a lost one).
const SYNC_WANTED_PER_SESSION: u8 = 3;
/// Syncs asked for with SyncWanted go to a group at most this often, however many clients ask.
const SYNC_WANTED_GAP: Duration = Duration::from_millis(5);
/// A Report covers at least this long when judging whether it came after a tier's change (a
/// probing client reports every 50 ms or more).
const REPORT_COUNTS_MIN: Duration = Duration::from_millis(40);
/// A session's Reports are judged at most this many a second on average (one per 40 ms), and
/// `REPORTS_JUDGED_BURST` at once: one beyond that waits, its counts added to the next (see
/// `MergedReports`). The burst of two
/// lets an honest report delayed on a busy host and the next one on time both count: with
/// one at most every 40 ms, the on-time one, the first made at a new slow-start rate and
/// showing loss, waited 65 ms while the other member's clean reports doubled the tier twice
/// (81,400 datagrams sent above a 1.5 Gbit/s member's path in 3 s, against 5,800).
const REPORTS_JUDGED_PER_S: u32 = 25;
const REPORTS_JUDGED_BURST: u32 = 2;

/// A session's Reports that came beyond what it may have judged (`REPORTS_JUDGED_PER_S`,
/// `REPORTS_JUDGED_BURST`), summed, to be judged with the next. A client reports every 50 ms at the most; a member that sent a clean report and
/// at once two lossy ones before each control step was congested at every step yet never
/// five reports in a row, and never movable, so it held a file's first tier for everyone
/// (hx_attack15 R1). Summed, its reports lose every time, and it moves like an honest one
/// that keeps losing. A report delayed on a busy host and the next one on time are summed as
/// well: nothing it counted is lost.
#[derive(Clone, Copy, Debug, Default)]
struct MergedReports {
    received: u64,
    lost: u64,
    interval: Duration,
}
pub struct Endpoint {
    config: EndpointConfig,
    rng: SeededRng,
    sessions: HashMap<SessionId, Session>,
    /// Each session by the (address, request id) that opened it: a retransmitted Request finds
    /// its session in O(1) (a scan of every session per Request was 30 s to admit 100,000).
    sessions_by_request: HashMap<(SocketAddr, u64), SessionId>,
    channels: HashMap<ChannelId, Channel>,
    /// Each served file's tiers (channels), in no particular order.
    tiers_by_name: HashMap<String, Vec<ChannelId>>,
    addresses: HashMap<IpAddr, AddressState>,
    group_slots_used: Vec<bool>,
    /// Unvalidated sessions, oldest first (entries of sessions since validated or ended are
    /// skipped when met), and how many there are.
    unvalidated: VecDeque<SessionId>,
    unvalidated_count: usize,
    next_channel: u64,
    next_address_sweep: Instant,
    /// When tier rates and assignments are reconsidered next (R11, R12).
    next_control: Instant,
    /// When the next expiry scan is due: the earliest session deadline as of the last scan or
    /// a session opened since (last_heard only moves deadlines later), so neither
    /// `poll_timeout` nor `handle_timeout` walks every session on every call (at 100,000
    /// clients that walk was most of the control plane's time).
    next_expiry_scan: Instant,
    /// The last Report from a validated session: tiers are reconsidered while clients report.
    last_report_at: Option<Instant>,
    /// When tier control last ran.
    last_control: Instant,
    shutting_down: bool,
    transmits: VecDeque<Transmit>,
    commands: VecDeque<DataCommand>,
    events: VecDeque<Event>,
    counters: EndpointCounters,
}

/// A read-only view of a session, for status output.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionView {
    pub session: SessionId,
    pub client: SocketAddr,
    pub transport: Transport,
    pub validated: bool,
    pub held: u32,
    pub channel: ChannelId,
    /// Its tier (0 = slowest) of how many, and that tier's rate; `own_channel`: a unicast
    /// client's channel of its own (whose rate follows it alone).
    pub tier: u8,
    pub tiers: u8,
    pub own_channel: bool,
    pub rate_bits_per_s: u64,
    /// From its reports (R12): goodput (mean and standard deviation, bits/s), loss
    /// (fraction), the round trip it measured, and how many reports.
    pub goodput_bits_per_s: f64,
    pub goodput_stddev: f64,
    pub loss: f64,
    /// The loss it reports that is its path's own (random loss that stays at a lower
    /// rate), not congestion: the floor its loss is judged above (fraction).
    pub noise_loss: f64,
    pub rtt: Option<Duration>,
    pub reports: u64,
}

/// A read-only view of a channel, for status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelView {
    pub channel: ChannelId,
    pub file_id: FileId,
    pub name: String,
    pub loop_len: u32,
    pub group: Option<SocketAddrV4>,
    pub multicast_members: usize,
    pub sessions: usize,
    pub data_open: bool,
    pub tier: u8,
    pub tiers: u8,
    /// A unicast client's channel of its own, not one of the file's shared tiers.
    pub own_channel: bool,
    pub rate_bits_per_s: u64,
}

impl Endpoint {
    pub fn new(config: EndpointConfig, rng: SeededRng, now: Instant) -> Endpoint {
        assert!(
            config.sessions_max > 0,
            "a server serves at least one session"
        );
        assert!(
            config.sessions_per_address_max > 0,
            "an address may hold at least one session"
        );
        assert!(config.addresses_max > 0, "the address table has room");
        Endpoint {
            config,
            rng,
            sessions: HashMap::new(),
            sessions_by_request: HashMap::new(),
            channels: HashMap::new(),
            tiers_by_name: HashMap::new(),
            addresses: HashMap::new(),
            group_slots_used: vec![false; GROUP_SLOTS],
            unvalidated: VecDeque::new(),
            unvalidated_count: 0,
            next_channel: 0,
            next_address_sweep: now,
            next_control: now,
            next_expiry_scan: now,
            last_report_at: None,
            last_control: now,
            shutting_down: false,
            transmits: VecDeque::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            counters: EndpointCounters::default(),
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    pub fn counters(&self) -> EndpointCounters {
        self.counters
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub fn address_count(&self) -> usize {
        self.addresses.len()
    }

    pub fn sessions(&self) -> impl Iterator<Item = SessionView> + '_ {
        self.sessions.iter().map(|(&session, s)| {
            let (tier, tiers) = self.tier_index(s.channel);
            SessionView {
                session,
                client: s.client,
                transport: s.transport,
                validated: s.validated,
                held: s.held,
                channel: s.channel,
                tier,
                tiers,
                own_channel: self.channels[&s.channel].solo,
                rate_bits_per_s: self.channels[&s.channel].tier.rate(),
                goodput_bits_per_s: s.estimate.goodput().mean(),
                goodput_stddev: s.estimate.goodput().stddev(),
                loss: s.estimate.loss().mean(),
                noise_loss: s.estimate.noise_loss(),
                rtt: s.estimate.rtt(),
                reports: s.estimate.reports(),
            }
        })
    }

    /// The measured throughput of up to `limit` validated clients that reported (a sample in the
    /// table's order, which is not the order they came in): what a heartbeat summarises.
    pub fn goodput_sample(&self, limit: usize) -> Vec<u64> {
        self.sessions
            .values()
            .filter(|s| s.validated && s.estimate.reports() > 0)
            .take(limit)
            .map(|s| s.estimate.goodput().mean() as u64)
            .collect()
    }

    /// The tier's place among its file's shared tiers by rate (0 = slowest), and how many there
    /// are; a unicast client's own channel is a tier of its own, the only one (0 of 1): counted
    /// among the shared ones, two unicast clients read as "tier 1/2" and "2/2".
    fn tier_index(&self, channel: ChannelId) -> (u8, u8) {
        let state = &self.channels[&channel];
        if state.solo {
            return (0, 1);
        }
        let shared = || {
            self.tiers_by_name[&state.info.name]
                .iter()
                .filter(|c| !self.channels[c].solo)
        };
        let rate = state.tier.rate();
        let below = shared()
            .filter(|&&c| {
                let other = self.channels[&c].tier.rate();
                other < rate || (other == rate && c < channel)
            })
            .count();
        let count = u8::try_from(shared().count()).unwrap_or(u8::MAX).max(1);
        (u8::try_from(below).unwrap_or(u8::MAX).min(count - 1), count)
    }

    /// The effective rate settings: the operator's cap applied.
    fn rate_config(&self) -> Option<RateConfig> {
        let mut config = self.config.adaptive.clone()?;
        if self.config.rate_bits_per_s > 0 {
            config.rate_max = config.rate_max.min(self.config.rate_bits_per_s);
            config.initial_rate = config.initial_rate.min(self.config.rate_bits_per_s);
        }
        config.rate_min = config.rate_min.min(config.rate_max);
        Some(config)
    }

    pub fn channels(&self) -> impl Iterator<Item = ChannelView> + '_ {
        self.channels.iter().map(|(&channel, c)| {
            let (tier, tiers) = self.tier_index(channel);
            ChannelView {
                channel,
                file_id: c.file_id,
                name: c.info.name.clone(),
                loop_len: c.info.loop_len,
                group: c.group,
                multicast_members: c.multicast_members,
                sessions: c.sessions,
                data_open: c.data_open,
                tier,
                tiers,
                own_channel: c.solo,
                rate_bits_per_s: c.tier.rate(),
            }
        })
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_command(&mut self) -> Option<DataCommand> {
        self.commands.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must run next: the earliest session expiry or SYNC.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = (!self.sessions.is_empty()).then_some(self.next_expiry_scan);
        let sync = self
            .channels
            .values()
            .filter(|c| c.group.is_some() && c.multicast_pending + c.multicast_members > 0)
            .map(|c| c.next_sync)
            .min();
        // Tiers are reconsidered while some client reports (one did within two session
        // timeouts, and sessions remain).
        let reporting = self.last_report_at.is_some_and(|at| {
            !self.sessions.is_empty()
                && self.next_control.saturating_since(at) < 2 * self.config.session_timeout
        });
        let control = (self.config.adaptive.is_some() && reporting).then_some(self.next_control);
        [expiry, sync, control].into_iter().flatten().min()
    }

    fn timeout_of(&self, session: &Session) -> Duration {
        if session.validated {
            self.config.session_timeout
        } else {
            self.config.unvalidated_timeout
        }
    }

    /// Queues a reply to `to` caused by a message of `received_len` bytes from it, unless it
    /// would break the amplification bound (then counted, not sent).
    fn reply(&mut self, to: SocketAddr, received_len: usize, message: &ControlMessage) {
        let bytes = message.to_bytes();
        if bytes.len() > AMPLIFICATION_FACTOR * received_len {
            self.counters.replies_withheld += 1;
            return;
        }
        self.queue_transmit(Transmit {
            destination: to,
            via: Via::Control,
            bytes,
        });
    }

    fn queue_transmit(&mut self, transmit: Transmit) {
        if self.transmits.len() >= TRANSMIT_QUEUE_MAX {
            self.counters.replies_withheld += 1;
            return;
        }
        self.transmits.push_back(transmit);
    }

    /// One control datagram from `from`. Malformed or unexpected ones are counted drops.
    pub fn handle_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        files: &mut dyn FileLookup,
    ) {
        let message = match ControlMessage::parse(bytes) {
            Ok(message) => message,
            Err(_) => {
                self.counters.control_dropped += 1;
                return;
            }
        };
        let len = bytes.len();
        match message {
            ControlMessage::Request {
                request_id,
                multicast_ok,
                name,
                hints,
            } => self.handle_request(
                now,
                from,
                len,
                AskedFor {
                    request_id,
                    multicast_ok,
                    name: &name,
                    resume_at: hints.resume_at,
                    throughput_bits_per_s: hints.throughput_bits_per_s,
                },
                files,
            ),
            ControlMessage::List { request_id, offset } => {
                self.handle_list(now, from, len, request_id, offset, files)
            }
            ControlMessage::Joined {
                session,
                token,
                transport,
            } => self.handle_joined(now, from, len, session, token, transport),
            ControlMessage::SyncWanted { session, token } => {
                self.handle_sync_wanted(now, from, len, session, token)
            }
            ControlMessage::Status {
                session,
                held,
                done,
                ..
            } => {
                if done && !self.sessions.contains_key(&session) {
                    // A client repeats its final Status: the session already ended.
                    return;
                }
                if !self.session_from(from, len, session) {
                    return;
                }
                let state = self.sessions.get_mut(&session).expect("checked above");
                if !state.validated {
                    // Not yet validated: its Joined is on the way or was lost; it expires
                    // unless the token comes.
                    return;
                }
                state.last_heard = state.last_heard.max(now);
                let loop_len = self.channels[&state.channel].info.loop_len;
                state.held = held.min(loop_len);
                if done {
                    self.counters.sessions_completed += 1;
                    self.end_session(session, SessionEnd::Completed);
                }
            }
            ControlMessage::Leave { session } => {
                if self.session_from(from, len, session) {
                    self.end_session(session, SessionEnd::Left);
                }
            }
            ControlMessage::Nak { session, ranges } => {
                self.handle_nak(now, from, len, session, ranges)
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
                if !self.session_from(from, len, session) {
                    return;
                }
                let rate_config = self.rate_config().unwrap_or_default();
                let state = self.sessions.get_mut(&session).expect("checked above");
                if !state.validated {
                    self.counters.control_dropped += 1;
                    return;
                }
                self.counters.reports += 1;
                self.last_report_at = Some(self.last_report_at.map_or(now, |at| at.max(now)));
                state.last_heard = state.last_heard.max(now);
                state.last_report_us = sent_at_us;
                let interval = Duration::from_micros(u64::from(interval_us));
                if !state
                    .reports_judged
                    .take(now, REPORTS_JUDGED_PER_S, REPORTS_JUDGED_BURST)
                {
                    // Too soon after the last judged one: judged with the next.
                    let waiting = state.reports_waiting.get_or_insert_default();
                    waiting.received += u64::from(received);
                    waiting.lost += u64::from(lost);
                    waiting.interval = waiting.interval.saturating_add(interval);
                    self.counters.reports_merged += 1;
                    let feedback = self.feedback_for(session, sent_at_us);
                    self.reply(from, len, &feedback);
                    return;
                }
                let waiting = state.reports_waiting.take().unwrap_or_default();
                let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
                let received = clamp(u64::from(received) + waiting.received);
                let lost = clamp(u64::from(lost) + waiting.lost);
                let interval = interval.saturating_add(waiting.interval);
                let channel = &self.channels[&state.channel];
                // Counts for the tier as it is only if the whole interval came after its
                // last change settled. A client reports no more often than every 50 ms
                // while the tier ramps: a shorter claimed interval counts as
                // REPORT_COUNTS_MIN (else a flood claiming none stepped slow start every
                // CONTROL_GAP_MIN).
                // (Clamped as `observe` reads it: a claimed 71 minutes reached back that far.)
                let covered = crate::rate::report_interval_read(interval).max(REPORT_COUNTS_MIN);
                let started = now.saturating_sub(covered);
                // A moved client switches group a round trip after the move: its reports
                // count from a settle time after that.
                let counts = if state.settling_after_move(started, rate_config.move_settle) {
                    // Wholly on the new tier (the client starts a new count when it hears of
                    // the move), and after the tier's own last change: a clean one counts.
                    // Once the tier has changed since (a clean report raised it), a loss
                    // counts too, for the rate but not as the path's own noise (it may be the
                    // old group's: hx_attack23): read only when clean, a floor ramp stepped
                    // past a 3 Gbit/s path and stayed there until the settle ended, 0.4 s
                    // later (hx_attack17 R-B).
                    let on_new_tier = state.moved_at.is_some_and(|moved| started >= moved);
                    if !(on_new_tier && started >= channel.tier.settled_at() && loss_judged) {
                        Counts::Unsettled
                    } else if channel.tier.rate() == state.moved_to_rate {
                        Counts::CleanOnly
                    } else {
                        Counts::SettledInMove
                    }
                } else if started >= channel.tier.settled_at() {
                    if loss_judged {
                        Counts::Settled
                    } else {
                        Counts::Unjudged
                    }
                } else if channel.tier.is_rising() {
                    Counts::LossOnly
                } else {
                    Counts::Unsettled
                };
                // Over the interval as `observe` reads it (clamped: a claimed 0 read as
                // nothing sent, and escaped the shortfall inference).
                let sent = now
                    .checked_sub(crate::rate::report_interval_read(interval))
                    .and_then(|start| channel.sent_between(start, now));
                state.estimate.observe(
                    &rate_config,
                    received,
                    lost,
                    interval,
                    u64::from(channel.info.datagram_size) * 8,
                    channel.tier.rate(),
                    sent,
                    (rtt_us > 0).then(|| Duration::from_micros(u64::from(rtt_us))),
                    counts,
                );
                state.estimate.note_report_at(now);
                if matches!(
                    counts,
                    Counts::Settled | Counts::SettledInMove | Counts::CleanOnly
                ) && channel.tier.in_slow_start()
                {
                    // A slow-start step is judged from this report at once, before the
                    // Feedback that answers it, so the client hears of the rise a round trip
                    // later instead of a report interval and a control step later. At most
                    // every CONTROL_GAP_MIN: with many members reporting, control would
                    // otherwise run once per report.
                    let earliest = self.last_control + CONTROL_GAP_MIN;
                    if now >= earliest {
                        self.run_control(now, &rate_config);
                    } else {
                        self.next_control = self.next_control.min(earliest);
                    }
                }
                let feedback = self.feedback_for(session, sent_at_us);
                self.reply(from, len, &feedback);
            }
            ControlMessage::Offer { .. }
            | ControlMessage::Reject { .. }
            | ControlMessage::Sync { .. }
            | ControlMessage::NakHeard { .. }
            | ControlMessage::Feedback { .. }
            | ControlMessage::Redirect { .. }
            | ControlMessage::Listing { .. }
            | ControlMessage::Ended { .. } => {
                self.counters.control_dropped += 1;
            }
        }
    }

    /// The session `session` if it exists and belongs to `from`. An unknown session gets
    /// `Ended{UnknownSession}` (small, within the amplification bound), so a client whose
    /// session was lost asks again; a known session from another address is a counted drop.
    fn session_from(&mut self, from: SocketAddr, received_len: usize, session: SessionId) -> bool {
        match self.sessions.get(&session) {
            Some(state) if state.client == from => true,
            Some(_) => {
                self.counters.control_dropped += 1;
                false
            }
            None => {
                self.counters.unknown_session_replies += 1;
                let reason = if self.shutting_down {
                    EndReason::ShuttingDown
                } else {
                    EndReason::UnknownSession
                };
                self.reply(
                    from,
                    received_len,
                    &ControlMessage::Ended { session, reason },
                );
                false
            }
        }
    }

    /// The address's entry, created if there is room (sweeping forgotten ones first when full).
    fn address_entry(&mut self, now: Instant, ip: IpAddr) -> Option<&mut AddressState> {
        if !self.addresses.contains_key(&ip) {
            if self.addresses.len() >= self.config.addresses_max {
                self.sweep_addresses(now, true);
            }
            if self.addresses.len() >= self.config.addresses_max {
                return None;
            }
            let burst = self.config.requests_per_address_burst;
            self.addresses.insert(
                ip,
                AddressState {
                    sessions: 0,
                    requests: CountBucket::full(burst, now),
                    nak_serials: 0,
                    last_active: now,
                },
            );
        }
        let entry = self
            .addresses
            .get_mut(&ip)
            .expect("present or inserted above");
        entry.last_active = entry.last_active.max(now);
        Some(entry)
    }

    /// Forgets addresses without sessions not seen for `address_memory` (all idle ones when
    /// `urgent`, i.e. the table is full).
    fn sweep_addresses(&mut self, now: Instant, urgent: bool) {
        let memory = if urgent {
            Duration::ZERO
        } else {
            self.config.address_memory
        };
        self.addresses
            .retain(|_, a| a.sessions > 0 || now.saturating_since(a.last_active) < memory);
    }

    #[allow(clippy::too_many_arguments)]
    /// Takes one request token of `from`'s address (10 a second, bursts of 40 by default);
    /// false, counted, when it has none: dropped silently (an answer would be a reflection).
    fn admit_request(&mut self, now: Instant, from: SocketAddr) -> bool {
        let (rate, burst) = (
            self.config.requests_per_address_per_s,
            self.config.requests_per_address_burst,
        );
        let admitted = self
            .address_entry(now, rate::address_key(from.ip()))
            .is_some_and(|address| address.requests.take(now, rate, burst));
        if !admitted {
            self.counters.requests_rate_limited += 1;
        }
        admitted
    }

    /// `loopcast ls`: one page of the catalog, within the request rate and the amplification
    /// bound like any answer to an unvalidated address.
    fn handle_list(
        &mut self,
        now: Instant,
        from: SocketAddr,
        received_len: usize,
        request_id: u64,
        offset: u32,
        files: &mut dyn FileLookup,
    ) {
        self.counters.requests += 1;
        if !self.admit_request(now, from) {
            return;
        }
        let catalog = files.catalog();
        let page = crate::wire::control::listing_page(request_id, &catalog, offset, received_len);
        self.reply(from, received_len, &page);
    }

    fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        received_len: usize,
        asked: AskedFor<'_>,
        files: &mut dyn FileLookup,
    ) {
        let AskedFor {
            request_id,
            multicast_ok,
            name,
            resume_at,
            throughput_bits_per_s,
        } = asked;
        self.counters.requests += 1;
        if !self.admit_request(now, from) {
            return;
        }
        let address_sessions = self
            .addresses
            .get(&rate::address_key(from.ip()))
            .expect("admitted above")
            .sessions;
        // A retransmitted Request (our Offer was lost) gets the same session again.
        let existing = self.sessions_by_request.get(&(from, request_id)).copied();
        if let Some(session) = existing {
            let offer = self.offer_for(session);
            self.reply(from, received_len, &offer);
            return;
        }
        let reject = |endpoint: &mut Endpoint, code, message: String| {
            endpoint.counters.rejected += 1;
            endpoint.reply(
                from,
                received_len,
                &ControlMessage::Reject {
                    request_id,
                    code,
                    message,
                },
            );
        };
        if self.shutting_down {
            return reject(self, RejectCode::Busy, "server shutting down".into());
        }
        // Room for one more: unvalidated sessions give way (oldest first) before anyone is
        // refused; validated ones are never dropped for a newcomer.
        while self.unvalidated_count >= self.config.unvalidated_max
            || (self.sessions.len() >= self.config.sessions_max && self.unvalidated_count > 0)
        {
            self.evict_oldest_unvalidated();
        }
        if self.sessions.len() >= self.config.sessions_max {
            return reject(self, RejectCode::Busy, "server at its session limit".into());
        }
        if address_sessions >= self.config.sessions_per_address_max {
            return reject(
                self,
                RejectCode::Limited,
                format!(
                    "{} sessions from this address already (limit {})",
                    address_sessions, self.config.sessions_per_address_max
                ),
            );
        }
        // A client from another server, or with a partial download (its loop position given,
        // inside the loop), with what its path delivered.
        let within_loop = |serial: &u32| {
            self.tiers_by_name
                .get(name)
                .and_then(|channels| channels.first())
                .is_none_or(|channel| *serial < self.channels[channel].info.loop_len)
        };
        let resumed = resume_at.filter(within_loop).map(|_| throughput_bits_per_s);
        let channel = match self.tier_for_new_session(name, resumed) {
            NewSessionTier::Existing(channel) => channel,
            NewSessionTier::Resume(like, rate) => {
                let info = self.channels[&like].info.clone();
                let channel = self.open_channel(now, info, rate, ChannelKind::Tier);
                self.events.push_back(Event::TierOpened {
                    channel,
                    file: self.channels[&channel].info.name.clone(),
                    rate_bits_per_s: rate,
                });
                channel
            }
            NewSessionTier::Probe(channel) => {
                if self.channels.len() >= self.config.channels_max {
                    return reject(self, RejectCode::Busy, "server at its channel limit".into());
                }
                // Every tier of this file runs below the first tier's starting rate (its clients
                // are slow): the newcomer gets a tier of its own that probes from there, and
                // moves down if it cannot take it.
                let info = self.channels[&channel].info.clone();
                let rate = self.rate_config().map_or(0, |c| c.initial_rate);
                self.open_channel(now, info, rate, ChannelKind::Tier)
            }
            NewSessionTier::NewFile => {
                if self.channels.len() >= self.config.channels_max {
                    return reject(self, RejectCode::Busy, "server at its channel limit".into());
                }
                let info = match files.lookup(name) {
                    Ok(info) => info,
                    Err((RejectCode::NotFound, _))
                        if !self.config.redirect_unknown_to.is_empty() =>
                    {
                        // R7: a director knows who has it. Smaller than the Request.
                        let directors = &self.config.redirect_unknown_to;
                        let server =
                            directors[(self.counters.redirected % directors.len() as u64) as usize];
                        self.counters.redirected += 1;
                        self.reply(
                            from,
                            received_len,
                            &ControlMessage::Redirect { request_id, server },
                        );
                        return;
                    }
                    Err((code, message)) => return reject(self, code, message),
                };
                if self.channels.values().any(|c| c.file_id == info.file_id) {
                    return reject(
                        self,
                        RejectCode::BadRequest,
                        format!("{name:?} is another name of a file already served"),
                    );
                }
                let rate = self
                    .rate_config()
                    .map_or(self.config.rate_bits_per_s, |c| c.initial_rate);
                self.open_channel(now, info, rate, ChannelKind::Tier)
            }
        };
        // The Offer must fit three times in this Request (address validation): otherwise no
        // session is made at all, so unanswerable Requests hold nothing.
        if self.channels[&channel].offer_len > AMPLIFICATION_FACTOR * received_len {
            self.counters.replies_withheld += 1;
            if self.channels[&channel].sessions == 0 {
                self.close_channel(channel);
            }
            return;
        }
        let session = SessionId(self.rng.next_u64());
        let token = Token(self.rng.next_u64());
        let channel_state = self.channels.get_mut(&channel).expect("opened above");
        let transport = match channel_state.group {
            Some(_) if multicast_ok => {
                channel_state.multicast_pending += 1;
                // A new client waits at most the pending interval for its first SYNC, and
                // however many Requests come, SYNCs go no more often than that.
                channel_state.sync_soon(now, self.config.sync_interval_pending);
                channel_state.fast_sync_until = now + SYNC_FAST_WINDOW;
                Transport::Multicast
            }
            _ => Transport::Unicast,
        };
        channel_state.sessions += 1;
        let loop_len = u64::from(channel_state.info.loop_len);
        let resume_at = resume_at.filter(|&serial| u64::from(serial) < loop_len);
        let file = channel_state.info.name.clone();
        self.addresses
            .get_mut(&rate::address_key(from.ip()))
            .expect("entry made above")
            .sessions += 1;
        self.sessions_by_request.insert((from, request_id), session);
        // Its deadline may come before the next scan's.
        self.next_expiry_scan = self
            .next_expiry_scan
            .min(now + self.config.unvalidated_timeout);
        self.sessions.insert(
            session,
            Session {
                client: from,
                request_id,
                token,
                channel,
                transport,
                validated: false,
                last_heard: now,
                held: 0,
                repair_credit: loop_len,
                credit_refreshed: now,
                estimate: PathEstimate::default(),
                moved_at: None,
                moved_to_rate: 0,
                last_report_us: 0,
                reports_judged: CountBucket::full(REPORTS_JUDGED_BURST, now),
                reports_waiting: None,
                resume_at,
                syncs_wanted: 0,
            },
        );
        self.unvalidated.push_back(session);
        self.unvalidated_count += 1;
        if self.unvalidated.len() > 2 * self.config.unvalidated_max + 64 {
            // Drop the entries of sessions that have since validated or ended.
            let sessions = &self.sessions;
            self.unvalidated
                .retain(|id| sessions.get(id).is_some_and(|s| !s.validated));
        }
        self.counters.sessions_opened += 1;
        self.events.push_back(Event::SessionOpened {
            session,
            client: from,
            file,
            offered: transport,
        });
        let offer = self.offer_for(session);
        self.reply(from, received_len, &offer);
    }

    /// Where a session listens: its channel's group on multicast, else the server's address.
    fn listen_address(&self, state: &Session, channel: &Channel) -> (Transport, SocketAddr) {
        match (state.transport, channel.group) {
            (Transport::Multicast, Some(group)) => (Transport::Multicast, SocketAddr::V4(group)),
            _ => (Transport::Unicast, self.config.unicast_channel),
        }
    }

    fn offer_for(&self, session: SessionId) -> ControlMessage {
        let state = &self.sessions[&session];
        let channel = &self.channels[&state.channel];
        let (transport, address) = self.listen_address(state, channel);
        ControlMessage::Offer {
            request_id: state.request_id,
            session,
            token: state.token,
            transport,
            channel: address,
            rate_bits_per_s: channel.tier.rate(),
            info: channel.info.clone(),
        }
    }

    /// The answer to a Report: the session's tier and where it runs. `echo_us` is the Report's
    /// timestamp (for a Feedback after a move, the last Report's, which the client has already
    /// seen echoed and so takes no round-trip sample from).
    fn feedback_for(&self, session: SessionId, echo_us: u32) -> ControlMessage {
        let state = &self.sessions[&session];
        let channel = &self.channels[&state.channel];
        let (tier, tiers) = self.tier_index(state.channel);
        let (transport, address) = self.listen_address(state, channel);
        ControlMessage::Feedback {
            session,
            echo_us,
            // Channel ids are unique per server run; 2^32 tiers later one may repeat, which
            // only hides one move from a client's count.
            tier_id: state.channel.0 as u32,
            tier,
            tiers,
            transport,
            channel: address,
            rate_bits_per_s: channel.tier.rate(),
        }
    }

    /// The tier a new session of `name` starts on: the fastest (clients that cannot take it
    /// move down within a second or so), unless every tier runs below the starting rate and
    /// the file has room for another (then a new one, probing from the starting rate).
    fn tier_for_new_session(
        &self,
        name: &str,
        resumed_at_bits_per_s: Option<u64>,
    ) -> NewSessionTier {
        let Some(channels) = self.tiers_by_name.get(name) else {
            return NewSessionTier::NewFile;
        };
        let shared: Vec<ChannelId> = channels
            .iter()
            .copied()
            .filter(|c| !self.channels[c].solo)
            .collect();
        let Some(fastest) = shared
            .iter()
            .copied()
            .max_by_key(|c| (self.channels[c].tier.rate(), *c))
        else {
            // Only unicast clients' own channels: a shared tier again, from the start.
            return NewSessionTier::Probe(channels[0]);
        };
        if let (Some(config), Some(throughput)) = (self.rate_config(), resumed_at_bits_per_s) {
            if shared.len() < config.tiers_allowed()
                && self.channels.len() < self.config.channels_max
            {
                // Where its path was delivering (unknown: the file's starting rate), but no
                // faster than the file runs here or starts at: the hint is the client's word,
                // and comes before its address is proven. (Believed, one spoofed Request with
                // a huge throughput opened a tier at 40 Gbit/s, and the next honest newcomer
                // was put on it as the file's fastest: hx_attack13.)
                let ceiling = self.channels[&fastest].tier.rate().max(config.initial_rate);
                let rate = match throughput {
                    0 => config.initial_rate,
                    known => known.clamp(config.rate_min, config.rate_max).min(ceiling),
                };
                return NewSessionTier::Resume(fastest, rate);
            }
        }
        match self.rate_config() {
            Some(config)
                if self.channels[&fastest].tier.rate() < config.initial_rate
                    && shared.len() < config.tiers_allowed()
                    && self.channels.len() < self.config.channels_max =>
            {
                NewSessionTier::Probe(fastest)
            }
            _ => NewSessionTier::Existing(fastest),
        }
    }

    /// A new channel of `info` at `rate`: a shared tier (probing from `rate`, or, `KnownTier`,
    /// opened for clients whose capacity was measured, so starting there), or one unicast
    /// client's own channel (`Solo`, no group).
    fn open_channel(
        &mut self,
        now: Instant,
        info: FileInfo,
        rate: u64,
        kind: ChannelKind,
    ) -> ChannelId {
        let channel = ChannelId(self.next_channel);
        self.next_channel += 1;
        let solo = kind == ChannelKind::Solo;
        let group = self
            .config
            .multicast
            .as_ref()
            .filter(|_| !solo)
            .and_then(|m| {
                let slot = self.group_slots_used.iter().position(|used| !used)?;
                self.group_slots_used[slot] = true;
                let base = u32::from(m.group_base) & !0xff;
                Some(SocketAddrV4::new(
                    Ipv4Addr::from(base + 1 + slot as u32),
                    m.port,
                ))
            });
        let tier = match (self.rate_config(), kind) {
            (Some(config), ChannelKind::Moved(start)) => start.control(&config, now, rate),
            (Some(config), _) => TierControl::new(&config, now, rate),
            (None, _) => TierControl::fixed(rate),
        };
        let offer_len = ControlMessage::Offer {
            request_id: 0,
            session: SessionId(0),
            token: Token(0),
            transport: Transport::Unicast,
            channel: self.config.unicast_channel,
            rate_bits_per_s: 0,
            info: info.clone(),
        }
        .to_bytes()
        .len();
        self.tiers_by_name
            .entry(info.name.clone())
            .or_default()
            .push(channel);
        self.channels.insert(
            channel,
            Channel {
                file_id: info.file_id,
                info,
                group,
                solo,
                sessions: 0,
                multicast_pending: 0,
                multicast_members: 0,
                validated: BTreeSet::new(),
                data_open: false,
                sync_sequence: 0,
                next_sync: now,
                last_sync: None,
                fast_sync_until: now,
                tier,
                offer_len,
                sent_samples: VecDeque::new(),
                unicast_destinations: HashMap::new(),
            },
        );
        channel
    }

    /// [`Endpoint::session_from`], and the session's token (else counted in `tokens_rejected`).
    fn session_with_token(
        &mut self,
        from: SocketAddr,
        received_len: usize,
        session: SessionId,
        token: Token,
    ) -> bool {
        if !self.session_from(from, received_len, session) {
            return false;
        }
        if self.sessions[&session].token != token {
            self.counters.tokens_rejected += 1;
            return false;
        }
        true
    }

    /// A client that joined its group asks for a Sync now instead of waiting for the next one
    /// (its first datagram then comes a round trip after its Offer, not up to
    /// `sync_interval_pending` later). Only for a session still waiting for one, with its token
    /// (so only from whoever receives the session's Offer), a few times a session, and the
    /// group's Syncs at most one per `SYNC_WANTED_GAP` whoever asks.
    fn handle_sync_wanted(
        &mut self,
        now: Instant,
        from: SocketAddr,
        received_len: usize,
        session: SessionId,
        token: Token,
    ) {
        if !self.session_with_token(from, received_len, session, token) {
            return;
        }
        let state = self.sessions.get_mut(&session).expect("checked above");
        if state.validated
            || state.transport != Transport::Multicast
            || state.syncs_wanted >= SYNC_WANTED_PER_SESSION
        {
            self.counters.control_dropped += 1;
            return;
        }
        // Not `last_heard`: a session that never validates must still expire on time.
        state.syncs_wanted += 1;
        self.counters.syncs_wanted += 1;
        self.channels
            .get_mut(&state.channel)
            .expect("sessions have channels")
            .sync_soon(now, SYNC_WANTED_GAP);
    }

    fn handle_joined(
        &mut self,
        now: Instant,
        from: SocketAddr,
        received_len: usize,
        session: SessionId,
        token: Token,
        transport: Transport,
    ) {
        if !self.session_with_token(from, received_len, session, token) {
            return;
        }
        let state = self.sessions.get_mut(&session).expect("checked above");
        state.last_heard = state.last_heard.max(now);
        let was_validated = state.validated;
        let previous = state.transport;
        let mut channel_id = state.channel;
        let client = state.client;
        // Multicast only where it was offered; a client may always fall back to unicast (R8).
        let transport =
            if self.channels[&channel_id].group.is_some() && previous == Transport::Multicast {
                transport
            } else {
                Transport::Unicast
            };
        if was_validated && transport == previous {
            return; // a repeated Joined
        }
        // Leave the old transport.
        let channel = self
            .channels
            .get_mut(&channel_id)
            .expect("sessions have channels");
        leave_transport(
            channel,
            channel_id,
            client,
            was_validated,
            previous,
            &mut self.commands,
        );
        // R12 on unicast: each unicast client gets a channel of its own, whose rate follows
        // it alone (its repairs then slow nobody else's loop). Its loop starts where the tier
        // it came from is.
        let mut start_like = None;
        if transport == Transport::Unicast
            && !self.channels[&channel_id].solo
            && !self.own_in_place(channel_id)
        {
            if let Some(solo) = self.open_solo(now, channel_id) {
                let old = self.channels.get_mut(&channel_id).expect("checked above");
                old.sessions -= 1;
                old.validated.remove(&session);
                let old_empty = old.sessions == 0;
                self.channels.get_mut(&solo).expect("just opened").sessions += 1;
                self.sessions
                    .get_mut(&session)
                    .expect("found above")
                    .channel = solo;
                // A client that comes from a failed server starts its own loop where its old
                // one was (R17), not where this tier's is.
                start_like = Some(channel_id)
                    .filter(|_| !old_empty && self.sessions[&session].resume_at.is_none());
                if old_empty {
                    self.close_channel(channel_id);
                }
                channel_id = solo;
            }
        }
        let resume_at = self.sessions[&session].resume_at;
        let channel = self
            .channels
            .get_mut(&channel_id)
            .expect("sessions have channels");
        if start_data(
            channel,
            channel_id,
            start_like,
            resume_at,
            &mut self.commands,
        ) {
            self.counters.channels_opened += 1;
        }
        // Join the new one.
        join_transport(channel, channel_id, client, transport, &mut self.commands);
        self.channels
            .get_mut(&channel_id)
            .expect("sessions have channels")
            .validated
            .insert(session);
        let state = self.sessions.get_mut(&session).expect("found above");
        state.validated = true;
        state.transport = transport;
        if !was_validated {
            self.counters.sessions_validated += 1;
            self.unvalidated_count -= 1;
        }
        self.events.push_back(Event::SessionValidated {
            session,
            client,
            transport,
            channel: channel_id,
        });
    }

    /// Whether unicast clients may have channels of their own (rates adaptive), and there is
    /// room for one more: half the channels at most are theirs, the rest stay for other
    /// files' tiers (else 16 addresses' worth of sessions lock every other file out).
    fn room_for_solo(&self) -> bool {
        let solo = self.channels.values().filter(|c| c.solo).count();
        self.config.adaptive.is_some() && solo < self.config.channels_max / 2
    }

    /// The channel opened for a request becomes its unicast client's own, keeping its id, when
    /// that client is all it has and it never ran (it was opened for this request): the same
    /// file at the same rate, without a second channel opened and the first dropped at once
    /// (operators saw channel ids 1, 3, 5, ...). True if it did.
    fn own_in_place(&mut self, channel_id: ChannelId) -> bool {
        if !self.room_for_solo() {
            return false;
        }
        let channel = self
            .channels
            .get_mut(&channel_id)
            .expect("sessions have channels");
        if channel.sessions != 1
            || channel.data_open
            || channel.multicast_members > 0
            || channel.multicast_pending > 0
        {
            return false;
        }
        channel.solo = true;
        if let Some(group) = channel.group.take() {
            release_group_slot(&mut self.group_slots_used, &self.config, group);
        }
        true
    }

    /// A channel of its own for a unicast client of `like`'s file, at `like`'s rate (probing
    /// from there when it has nothing measured), if rates are adaptive and there is room.
    fn open_solo(&mut self, now: Instant, like: ChannelId) -> Option<ChannelId> {
        // Past the room (`room_for_solo`), a unicast client shares its tier.
        if !self.room_for_solo() || self.channels.len() >= self.config.channels_max {
            return None;
        }
        let source = &self.channels[&like];
        let (info, rate) = (source.info.clone(), source.tier.rate());
        // Not a tier of the file (no other client joins it): no TierOpened; the session's
        // SessionValidated names it.
        Some(self.open_channel(now, info, rate, ChannelKind::Solo))
    }

    fn handle_nak(
        &mut self,
        now: Instant,
        from: SocketAddr,
        received_len: usize,
        session: SessionId,
        ranges: Vec<(u32, u32)>,
    ) {
        if !self.session_from(from, received_len, session) {
            return;
        }
        let state = self.sessions.get_mut(&session).expect("checked above");
        if !state.validated {
            self.counters.control_dropped += 1;
            return;
        }
        state.last_heard = state.last_heard.max(now);
        // Within the move's settle time, maybe sent before the client heard of its move: about
        // the old tier's loop. (Two round trips were not enough: a busy client can take longer
        // to read the Feedback, and one such NAK sets its frontier wrong; what the new tier
        // really misses is asked again after the settle.)
        let move_settle = self
            .config
            .adaptive
            .as_ref()
            .map_or(Duration::ZERO, |c| c.move_settle);
        if state.settling_after_move(now, move_settle) {
            self.counters.naks_before_move += 1;
            return;
        }
        let channel = &self.channels[&state.channel];
        let loop_len = channel.info.loop_len;
        // The session's credit: what it misses (and a few serials more: the last datagrams'
        // repairs may be lost and asked again), renewed about once a loop and at least every
        // REPAIR_WINDOW_MAX (R10: repair bytes follow what the asking receiver misses; a slow
        // tier's long loop must not leave its last few datagrams waiting for the next pass).
        if now.saturating_since(state.credit_refreshed) >= repair_window(channel) {
            let missing = u64::from(loop_len - state.held.min(loop_len));
            state.repair_credit = missing + REPAIR_CREDIT_SLACK.min(missing);
            state.credit_refreshed = now;
        }
        let channel_id = state.channel;
        let relay_to = channel
            .group
            .filter(|_| state.transport == Transport::Multicast);
        let file_id = channel.file_id;
        let repair_to = match state.transport {
            Transport::Unicast => Some(from),
            Transport::Multicast => None,
        };
        let address = self
            .addresses
            .get_mut(&rate::address_key(from.ip()))
            .expect("a session's address has an entry");
        let address_budget = self
            .config
            .nak_budget_loops_per_address
            .saturating_mul(u64::from(loop_len));
        let mut allowed = state
            .repair_credit
            .min(address_budget.saturating_sub(address.nak_serials));
        self.counters.naks += 1;
        let mut accepted: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        let mut refused = 0u64;
        for (first, count) in ranges {
            let Some(end) = first.checked_add(count).filter(|&end| end <= loop_len) else {
                refused += u64::from(count);
                continue;
            };
            let take = u64::from(end - first).min(allowed);
            if take == 0 {
                refused += u64::from(count);
                continue;
            }
            allowed -= take;
            let take = u32::try_from(take).expect("at most count");
            refused += u64::from(count - take);
            accepted.push((first, take));
        }
        let granted: u64 = accepted.iter().map(|&(_, n)| u64::from(n)).sum();
        state.repair_credit -= granted;
        address.nak_serials += granted;
        self.counters.nak_serials += granted;
        if refused > 0 {
            self.counters.naks_over_budget += 1;
            self.counters.nak_serials_refused += refused;
        }
        if accepted.is_empty() {
            return;
        }
        for &(first, count) in &accepted {
            self.commands.push_back(DataCommand::QueueRepair {
                channel: channel_id,
                first,
                count,
                to: repair_to,
            });
        }
        // R10 suppression: tell the group what was asked, so receivers missing the same
        // serials need not ask as well.
        if let Some(group) = relay_to {
            self.counters.naks_relayed += 1;
            self.queue_transmit(Transmit {
                destination: SocketAddr::V4(group),
                via: Via::Group,
                bytes: ControlMessage::NakHeard {
                    file_id,
                    ranges: accepted,
                }
                .to_bytes(),
            });
        }
    }

    fn end_session(&mut self, session: SessionId, end: SessionEnd) {
        let Some(state) = self.sessions.remove(&session) else {
            return;
        };
        self.sessions_by_request
            .remove(&(state.client, state.request_id));
        if !state.validated {
            self.unvalidated_count -= 1;
        }
        if let Some(address) = self
            .addresses
            .get_mut(&rate::address_key(state.client.ip()))
        {
            address.sessions -= 1;
        }
        let channel_id = state.channel;
        let channel = self
            .channels
            .get_mut(&channel_id)
            .expect("sessions have channels");
        channel.sessions -= 1;
        channel.validated.remove(&session);
        leave_transport(
            channel,
            channel_id,
            state.client,
            state.validated,
            state.transport,
            &mut self.commands,
        );
        self.events.push_back(Event::SessionEnded {
            session,
            client: state.client,
            end,
        });
        // R9: a channel with no session stops and closes.
        if channel.sessions == 0 {
            self.close_channel(channel_id);
        }
    }

    /// Ends the oldest session that has not validated its address.
    fn evict_oldest_unvalidated(&mut self) {
        while let Some(session) = self.unvalidated.pop_front() {
            if self.sessions.get(&session).is_some_and(|s| !s.validated) {
                self.counters.sessions_unvalidated_evicted += 1;
                self.end_session(session, SessionEnd::NotValidated);
                return;
            }
        }
        unreachable!("unvalidated_count > 0 means an unvalidated session is queued");
    }

    fn close_channel(&mut self, channel_id: ChannelId) {
        let Some(channel) = self.channels.remove(&channel_id) else {
            return;
        };
        assert_eq!(channel.sessions, 0, "a channel closes without sessions");
        if let Some(tiers) = self.tiers_by_name.get_mut(&channel.info.name) {
            tiers.retain(|&c| c != channel_id);
            if tiers.is_empty() {
                self.tiers_by_name.remove(&channel.info.name);
            }
        }
        if let Some(group) = channel.group {
            release_group_slot(&mut self.group_slots_used, &self.config, group);
        }
        if channel.data_open {
            self.counters.channels_closed += 1;
            self.commands.push_back(DataCommand::CloseChannel {
                channel: channel_id,
            });
        }
        self.events.push_back(Event::ChannelClosed {
            channel: channel_id,
            file: channel.info.name,
        });
    }

    /// Expires silent and unvalidated sessions, sends SYNC where due, forgets idle addresses.
    pub fn handle_timeout(&mut self, now: Instant) {
        // In id order, as everything the endpoint does in one step: its outputs depend on its
        // inputs and seed alone, not on a hash map's order (a simulation replays exactly).
        let mut expired: Vec<(SessionId, bool)> = Vec::new();
        if now >= self.next_expiry_scan {
            let mut earliest: Option<Instant> = None;
            for (&id, s) in &self.sessions {
                let deadline = s.last_heard + self.timeout_of(s);
                if now >= deadline {
                    expired.push((id, s.validated));
                } else {
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                }
            }
            // Not more often than every EXPIRY_SCAN_GAP_MIN, however close a deadline is.
            self.next_expiry_scan = earliest
                .unwrap_or(now + self.config.session_timeout)
                .max(now + EXPIRY_SCAN_GAP_MIN);
        }
        expired.sort();
        for (session, validated) in expired {
            if validated {
                self.counters.sessions_expired += 1;
                self.end_session(session, SessionEnd::Expired);
            } else {
                self.counters.sessions_unvalidated_expired += 1;
                self.end_session(session, SessionEnd::NotValidated);
            }
        }
        // R8: SYNC on every multicast channel that has multicast sessions.
        let mut syncs = Vec::new();
        let mut channels: Vec<(&ChannelId, &mut Channel)> = self.channels.iter_mut().collect();
        channels.sort_by_key(|(id, _)| **id);
        for (_, channel) in channels {
            let Some(group) = channel.group else {
                continue;
            };
            if channel.multicast_pending + channel.multicast_members == 0 || now < channel.next_sync
            {
                continue;
            }
            channel.sync_sequence = channel.sync_sequence.wrapping_add(1);
            self.counters.syncs_sent += 1;
            channel.last_sync = Some(now);
            channel.next_sync = now
                + if channel.multicast_pending > 0 && now < channel.fast_sync_until {
                    self.config.sync_interval_pending
                } else {
                    self.config.sync_interval
                };
            syncs.push(Transmit {
                destination: SocketAddr::V4(group),
                via: Via::Group,
                bytes: ControlMessage::Sync {
                    file_id: channel.file_id,
                    sequence: channel.sync_sequence,
                }
                .to_bytes(),
            });
        }
        for sync in syncs {
            self.queue_transmit(sync);
        }
        if now >= self.next_address_sweep {
            self.sweep_addresses(now, false);
            self.next_address_sweep = now + self.config.address_memory / 4;
        }
        if let Some(rate_config) = self.rate_config() {
            if now >= self.next_control {
                self.run_control(now, &rate_config);
            }
        }
    }

    fn run_control(&mut self, now: Instant, config: &RateConfig) {
        self.next_control = now + config.control_interval;
        self.last_control = now;
        self.control_tiers(now, config);
    }

    /// R11, R12: every file's tier rates and assignments reconsidered from the reports, and
    /// the decisions carried out (rates to the data plane, moves told to the clients).
    fn control_tiers(&mut self, now: Instant, config: &RateConfig) {
        let mut files: Vec<String> = self.tiers_by_name.keys().cloned().collect();
        files.sort();
        for file in files {
            let channels = self.tiers_by_name[&file].clone();
            // Each tier's validated sessions, in id order (so plans do not depend on the hash
            // map's).
            let members: Vec<Vec<SessionId>> = channels
                .iter()
                .map(|c| self.channels[c].validated.iter().copied().collect())
                .collect();
            let rates_before: Vec<u64> = channels
                .iter()
                .map(|c| self.channels[c].tier.rate())
                .collect();
            let moves = {
                let mut controls: Vec<TierControl> = channels
                    .iter()
                    .map(|c| self.channels[c].tier.clone())
                    .collect();
                let moves = {
                    let mut plans: Vec<TierPlan<'_>> = controls
                        .iter_mut()
                        .zip(&members)
                        .zip(&channels)
                        .map(|((control, ids), channel)| TierPlan {
                            solo: self.channels[channel].solo,
                            sent_rate: self.channels[channel].sent_rate(now),
                            control,
                            members: ids
                                .iter()
                                .map(|id| {
                                    let s = &self.sessions[id];
                                    MemberPlan {
                                        id: id.0,
                                        host: rate::host_of(s.client.ip()),
                                        estimate: &s.estimate,
                                        moved_at: s.moved_at,
                                    }
                                })
                                .collect(),
                        })
                        .collect();
                    rate::plan(config, now, &mut plans)
                };
                for (channel, control) in channels.iter().zip(controls) {
                    self.channels
                        .get_mut(channel)
                        .expect("a file's tiers are open channels")
                        .tier = control;
                }
                moves
            };
            for (index, &channel) in channels.iter().enumerate() {
                let rate = self.channels[&channel].tier.rate();
                if rate == rates_before[index] {
                    continue;
                }
                let relief = (rate < rates_before[index]).then_some(rate);
                for id in &members[index] {
                    if let Some(session) = self.sessions.get_mut(id) {
                        session.estimate.new_epoch(relief);
                    }
                }
                self.counters.rate_changes += 1;
                let state = &self.channels[&channel];
                if state.data_open {
                    self.commands.push_back(DataCommand::SetRate {
                        channel,
                        rate_bits_per_s: rate,
                    });
                }
                self.events.push_back(Event::RateChanged {
                    channel,
                    file: file.clone(),
                    from_bits_per_s: rates_before[index],
                    to_bits_per_s: rate,
                });
            }
            let mut opened: Vec<Option<ChannelId>> = Vec::new();
            for change in moves {
                let session = SessionId(change.member);
                let to = match change.to {
                    Target::Tier(index) => channels[index],
                    Target::New { index, rate, start } => {
                        if opened.len() <= index {
                            opened.resize(index + 1, None);
                        }
                        match opened[index] {
                            Some(channel) => channel,
                            None => {
                                let from = channels[change.from];
                                let Some(channel) = self.open_tier(now, &file, rate, from, start)
                                else {
                                    continue;
                                };
                                opened[index] = Some(channel);
                                channel
                            }
                        }
                    }
                };
                self.move_session(now, session, to, change.relief);
            }
            // A tier opened for a move that could not happen (no group for a multicast
            // member) has nobody: it closes.
            for channel in opened.into_iter().flatten() {
                if self.channels.get(&channel).is_some_and(|c| c.sessions == 0) {
                    self.close_channel(channel);
                }
            }
        }
    }

    /// Another tier of `file` at `rate`, running at once (clients of tier `from` are about to
    /// move to it; its loop starts where theirs is).
    fn open_tier(
        &mut self,
        now: Instant,
        file: &str,
        rate: u64,
        from: ChannelId,
        start: TierStart,
    ) -> Option<ChannelId> {
        if self.channels.len() >= self.config.channels_max {
            return None;
        }
        // Its members are multicast ones: without a free group it could take nobody (it was
        // opened and closed again at every control step, 20 times a second, each logged).
        if self.config.multicast.is_some() && !self.group_slots_used.contains(&false) {
            return None;
        }
        let first = *self.tiers_by_name.get(file)?.first()?;
        let info = self.channels[&first].info.clone();
        let channel = self.open_channel(now, info, rate, ChannelKind::Moved(start));
        let state = self.channels.get_mut(&channel).expect("just opened");
        if start_data(state, channel, Some(from), None, &mut self.commands) {
            self.counters.channels_opened += 1;
        }
        self.events.push_back(Event::TierOpened {
            channel,
            file: file.to_owned(),
            rate_bits_per_s: rate,
        });
        Some(channel)
    }

    /// Moves a validated session to another tier of its file: the data plane sends to it there
    /// (its group, or its address), no longer on the old tier, which closes if it was the last;
    /// the client is told at once (and in every later Feedback). Its bitmap is the client's:
    /// nothing is lost, it keeps receiving what it misses from the new tier's loop.
    fn move_session(&mut self, now: Instant, session: SessionId, to: ChannelId, relief: bool) {
        let Some(state) = self.sessions.get(&session) else {
            return;
        };
        let (from, client, transport) = (state.channel, state.client, state.transport);
        if from == to || !state.validated {
            return;
        }
        // A tier closed earlier in the same step (its last member left) takes nobody.
        let Some(to_state) = self.channels.get(&to) else {
            return;
        };
        if transport == Transport::Multicast && to_state.group.is_none() {
            return; // no group for that tier: stays
        }
        let from_rate = self.channels[&from].tier.rate();
        let to_rate = to_state.tier.rate();
        let old = self
            .channels
            .get_mut(&from)
            .expect("sessions have channels");
        old.sessions -= 1;
        old.validated.remove(&session);
        leave_transport(old, from, client, true, transport, &mut self.commands);
        let old_empty = old.sessions == 0;
        let new = self.channels.get_mut(&to).expect("checked above");
        new.sessions += 1;
        new.validated.insert(session);
        if start_data(new, to, None, None, &mut self.commands) {
            self.counters.channels_opened += 1;
        }
        join_transport(new, to, client, transport, &mut self.commands);
        let state = self.sessions.get_mut(&session).expect("checked above");
        state.channel = to;
        state.moved_at = Some(now);
        state.moved_to_rate = to_rate;
        state.estimate.moved(now, from_rate, to_rate, relief);
        let goodput = state.estimate.goodput().mean();
        let loss = state.estimate.loss().mean();
        let echo = state.last_report_us;
        let file = self.channels[&to].info.name.clone();
        self.counters.tier_moves += 1;
        self.events.push_back(Event::TierMoved {
            session,
            client,
            file,
            from_bits_per_s: from_rate,
            to_bits_per_s: to_rate,
            goodput_bits_per_s: goodput as u64,
            loss,
        });
        if old_empty {
            self.close_channel(from);
        }
        let feedback = self.feedback_for(session, echo);
        self.queue_transmit(Transmit {
            destination: client,
            via: Via::Control,
            bytes: feedback.to_bytes(),
        });
    }

    /// The driver's sample of what the data plane has sent on `channel` so far (datagrams,
    /// loop and repairs, cumulative): a report is judged against what its interval really
    /// carried where the sender falls short of the tier's rate (a 2-core host sending three
    /// receivers' 8 Gbit/s tier managed 2-4: their full reports read as three quarters lost,
    /// and they were moved to tiers of their own). Samples closer than `SENT_SAMPLE_GAP` to
    /// the last are skipped; a count that goes back (another channel reusing the id) starts over.
    pub fn handle_channel_sent(&mut self, now: Instant, channel: ChannelId, datagrams: u64) {
        let Some(state) = self.channels.get_mut(&channel) else {
            return;
        };
        let samples = &mut state.sent_samples;
        match samples.back() {
            Some(&(_, last)) if datagrams < last => samples.clear(),
            Some(&(at, _)) if now.saturating_since(at) < SENT_SAMPLE_GAP || now < at => return,
            _ => {}
        }
        if samples.len() == SENT_SAMPLES_MAX {
            samples.pop_front();
        }
        samples.push_back((now, datagrams));
    }

    /// The data plane could not run a channel (archive changed, damaged or unmappable): its
    /// sessions end, each client is told why, and the channel closes.
    pub fn handle_channel_failed(&mut self, now: Instant, channel: ChannelId) {
        let _ = now;
        self.end_sessions_telling(
            |s| s.channel == channel,
            EndReason::FileUnavailable,
            SessionEnd::ChannelFailed,
        );
    }

    /// The server is stopping: every client is told (so it asks again elsewhere or later), every
    /// session ends, every channel closes. Later requests are refused.
    pub fn shutdown(&mut self, now: Instant) {
        let _ = now;
        self.shutting_down = true;
        self.end_sessions_telling(|_| true, EndReason::ShuttingDown, SessionEnd::ShuttingDown);
    }

    /// `loopcastctl drain` (R17): every session ends with `Ended{draining}`, so its client asks
    /// the fleet's directors (which no longer route here) for another server and continues
    /// there from its bitmap. The server keeps answering requests (a client outside any fleet
    /// has nowhere else to go).
    pub fn drain(&mut self, now: Instant) -> usize {
        let _ = now;
        let sessions = self.sessions.len();
        self.end_sessions_telling(|_| true, EndReason::Draining, SessionEnd::Drained);
        sessions
    }

    /// `loopcastctl stop-channel`: the channel's sessions end with `Ended{draining}`, as on a
    /// drain, so each client asks again (this server, or in a fleet another one that holds the
    /// file) and continues from its bitmap instead of starving; the channel closes. Returns how
    /// many clients were told, or `None` for a channel that is not open.
    pub fn stop_channel(&mut self, now: Instant, channel: ChannelId) -> Option<usize> {
        let _ = now;
        let sessions = self.channels.get(&channel)?.sessions;
        self.end_sessions_telling(
            |s| s.channel == channel,
            EndReason::Draining,
            SessionEnd::ChannelStopped,
        );
        assert!(
            !self.channels.contains_key(&channel),
            "R9: a channel whose last session ended is closed"
        );
        Some(sessions)
    }

    /// The settings an operator may change while the server runs (`loopcastd` on SIGHUP): the
    /// rate cap (or the fixed rate), the tier policy and tiers, the first tier's rate, the
    /// session timeout. A lower cap applies to every channel at once; fewer tiers allowed merge
    /// each file's fastest tiers into the fastest one kept (its members move down: nothing is
    /// lost, and the tier rises while they keep up); a new timeout counts from each session's
    /// last message. Fixed or automatic rates are chosen at start (`adaptive` stays `Some` or
    /// `None`).
    pub fn reconfigure(
        &mut self,
        now: Instant,
        rate_bits_per_s: u64,
        adaptive: Option<RateConfig>,
        session_timeout: Duration,
    ) {
        assert_eq!(
            self.config.adaptive.is_some(),
            adaptive.is_some(),
            "fixed or automatic rates are chosen at start"
        );
        assert!(
            session_timeout > Duration::ZERO,
            "a session timeout is positive"
        );
        self.config.rate_bits_per_s = rate_bits_per_s;
        self.config.adaptive = adaptive;
        self.config.session_timeout = session_timeout;
        // Deadlines move with the timeout: the next scan finds them again.
        self.next_expiry_scan = now;
        let mut channels: Vec<ChannelId> = self.channels.keys().copied().collect();
        channels.sort();
        let rate_config = self.rate_config();
        for channel in channels {
            let state = &self.channels[&channel];
            let mut tier = state.tier.clone();
            let changed = match &rate_config {
                Some(config) => tier.clamp_to(config, now),
                None if tier.rate() != rate_bits_per_s => {
                    tier = TierControl::fixed(rate_bits_per_s);
                    true
                }
                None => false,
            };
            if changed {
                self.set_tier(channel, tier);
            }
        }
        if let Some(config) = rate_config {
            self.merge_excess_tiers(now, &config);
        }
    }

    /// A channel's tier control replaced by the operator's settings: its members' reports
    /// start a new epoch, the data plane and the log are told.
    fn set_tier(&mut self, channel: ChannelId, tier: TierControl) {
        let state = self.channels.get_mut(&channel).expect("an open channel");
        let before = state.tier.rate();
        let rate = tier.rate();
        state.tier = tier;
        let relief = (rate < before).then_some(rate);
        let members: Vec<SessionId> = state.validated.iter().copied().collect();
        let (data_open, file) = (state.data_open, state.info.name.clone());
        for id in members {
            if let Some(session) = self.sessions.get_mut(&id) {
                session.estimate.new_epoch(relief);
            }
        }
        self.counters.rate_changes += 1;
        if data_open {
            self.commands.push_back(DataCommand::SetRate {
                channel,
                rate_bits_per_s: rate,
            });
        }
        self.events.push_back(Event::RateChanged {
            channel,
            file,
            from_bits_per_s: before,
            to_bits_per_s: rate,
        });
    }

    /// Every file within the tiers `config` allows: the members of its fastest shared tiers
    /// beyond them move to the fastest tier kept; one that cannot move (not validated yet, or
    /// a multicast member and that tier has no group) is told to ask again.
    fn merge_excess_tiers(&mut self, now: Instant, config: &RateConfig) {
        let allowed = config.tiers_allowed();
        let mut files: Vec<String> = self.tiers_by_name.keys().cloned().collect();
        files.sort();
        for file in files {
            let mut shared: Vec<ChannelId> = self.tiers_by_name[&file]
                .iter()
                .copied()
                .filter(|c| !self.channels[c].solo)
                .collect();
            if shared.len() <= allowed {
                continue;
            }
            shared.sort_by_key(|c| (self.channels[c].tier.rate(), *c));
            let keep = shared[allowed - 1];
            for &extra in &shared[allowed..] {
                let mut members: Vec<SessionId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.channel == extra)
                    .map(|(&id, _)| id)
                    .collect();
                members.sort();
                for session in members {
                    self.move_session(now, session, keep, true);
                }
                if self.channels.contains_key(&extra) {
                    self.end_sessions_telling(
                        |s| s.channel == extra,
                        EndReason::Draining,
                        SessionEnd::ChannelStopped,
                    );
                }
            }
        }
    }

    /// Ends every session `which` selects, telling its client why with `Ended{reason}`.
    fn end_sessions_telling(
        &mut self,
        which: impl Fn(&Session) -> bool,
        reason: EndReason,
        end: SessionEnd,
    ) {
        let mut sessions: Vec<(SessionId, SocketAddr)> = self
            .sessions
            .iter()
            .filter(|(_, s)| which(s))
            .map(|(&id, s)| (id, s.client))
            .collect();
        sessions.sort();
        for (session, client) in sessions {
            self.queue_transmit(Transmit {
                destination: client,
                via: Via::Control,
                bytes: ControlMessage::Ended { session, reason }.to_bytes(),
            });
            self.end_session(session, end);
        }
    }

    /// Checks the endpoint's bookkeeping against its tables (tests and simulations call it after
    /// every step).
    pub fn assert_invariants(&self) {
        assert!(
            self.sessions.len() <= self.config.sessions_max,
            "sessions within their bound"
        );
        assert_eq!(
            self.sessions_by_request.len(),
            self.sessions.len(),
            "every session indexed by its request, and nothing else"
        );
        for (id, channel) in &self.channels {
            for session in &channel.validated {
                let state = self.sessions.get(session);
                assert!(
                    state.is_some_and(|s| s.validated && s.channel == *id),
                    "a channel's validated set holds only its validated sessions"
                );
            }
            let unicast = channel
                .validated
                .iter()
                .filter(|s| self.sessions[s].transport == Transport::Unicast)
                .count();
            assert_eq!(
                channel.unicast_destinations.values().sum::<u32>() as usize,
                unicast,
                "a channel counts each validated unicast session under its address"
            );
        }
        let validated = self.sessions.values().filter(|s| s.validated).count();
        let in_sets: usize = self.channels.values().map(|c| c.validated.len()).sum();
        assert_eq!(
            validated, in_sets,
            "every validated session is in its channel's set"
        );
        for (&(client, request_id), session) in &self.sessions_by_request {
            let state = &self.sessions[session];
            assert!(
                state.client == client && state.request_id == request_id,
                "the request index points at the session that request opened"
            );
        }
        assert!(
            self.addresses.len() <= self.config.addresses_max,
            "addresses within their bound"
        );
        assert_eq!(
            self.unvalidated_count,
            self.sessions.values().filter(|s| !s.validated).count(),
            "unvalidated session count"
        );
        assert!(
            self.unvalidated_count <= self.config.unvalidated_max,
            "unvalidated sessions within their bound"
        );
        assert!(
            self.unvalidated.len() <= self.counters.sessions_opened as usize,
            "the eviction queue holds sessions that were opened"
        );
        for (id, channel) in &self.channels {
            let sessions: Vec<&Session> = self
                .sessions
                .values()
                .filter(|s| s.channel == *id)
                .collect();
            assert_eq!(channel.sessions, sessions.len(), "channel session count");
            assert!(channel.sessions > 0, "an open channel has sessions");
            let members = sessions
                .iter()
                .filter(|s| s.validated && s.transport == Transport::Multicast)
                .count();
            assert_eq!(channel.multicast_members, members, "multicast member count");
            if channel.solo {
                assert!(
                    channel.group.is_none() && sessions.len() == 1,
                    "a unicast client's own channel has that client alone"
                );
            }
        }
        let tiers_allowed = self.rate_config().map_or(1, |c| c.tiers_allowed());
        for (name, tiers) in &self.tiers_by_name {
            assert!(!tiers.is_empty(), "a served file has a channel");
            let shared = tiers.iter().filter(|c| !self.channels[c].solo).count();
            assert!(
                shared <= tiers_allowed,
                "{name}: {shared} shared tiers, at most {tiers_allowed}"
            );
            for channel in tiers {
                assert_eq!(
                    &self.channels[channel].info.name, name,
                    "a file's tiers are its channels"
                );
            }
        }
        assert_eq!(
            self.tiers_by_name.values().map(Vec::len).sum::<usize>(),
            self.channels.len(),
            "every channel is a tier of one file"
        );
        for (ip, address) in &self.addresses {
            let sessions = self
                .sessions
                .values()
                .filter(|s| rate::address_key(s.client.ip()) == *ip)
                .count();
            assert_eq!(address.sessions, sessions, "per-address session count");
            assert!(
                sessions <= self.config.sessions_per_address_max,
                "per-address session bound"
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelKind {
    /// A tier shared by the clients whose throughput it matches, probing from its rate.
    Tier,
    /// A tier opened for clients moved off another (`TierStart` says how it finds its rate).
    Moved(TierStart),
    /// One unicast client's own channel (R12 per client on unicast).
    Solo,
}

/// Where a new session goes.
enum NewSessionTier {
    Existing(ChannelId),
    /// A new tier of the same file as this one.
    Probe(ChannelId),
    /// A new tier of the same file as this one, at this rate, for a client that comes from
    /// another server (R17): its loop starts where the client's old one was, so it is not sent
    /// again what it holds (joining a running tier would).
    Resume(ChannelId, u64),
    NewFile,
}

/// A session's repair credit is renewed at most once per this: about one loop at the tier's
/// rate, within `REPAIR_WINDOW_MIN ..= REPAIR_WINDOW_MAX`.
fn repair_window(channel: &Channel) -> Duration {
    let loop_bits = u128::from(channel.info.loop_len) * u128::from(channel.info.datagram_size) * 8;
    match channel.tier.rate() {
        0 => REPAIR_WINDOW_MIN,
        rate => Duration::from_nanos(
            u64::try_from(loop_bits * NANOS_PER_S / u128::from(rate)).unwrap_or(u64::MAX),
        )
        .clamp(REPAIR_WINDOW_MIN, REPAIR_WINDOW_MAX),
    }
}

/// Frees the multicast group slot of `group` (a channel's, closed or made a unicast client's
/// own) for the next tier.
fn release_group_slot(slots_used: &mut [bool], config: &EndpointConfig, group: SocketAddrV4) {
    if let Some(m) = &config.multicast {
        let slot = (u32::from(*group.ip()) - ((u32::from(m.group_base) & !0xff) + 1)) as usize;
        slots_used[slot] = false;
    }
}

/// Starts `channel` in the data plane unless it runs already (its loop where `start_like`'s is,
/// else at `start_at`); true if it did.
fn start_data(
    channel: &mut Channel,
    channel_id: ChannelId,
    start_like: Option<ChannelId>,
    start_at: Option<u32>,
    commands: &mut VecDeque<DataCommand>,
) -> bool {
    if channel.data_open {
        return false;
    }
    channel.data_open = true;
    commands.push_back(DataCommand::OpenChannel {
        channel: channel_id,
        file_id: channel.file_id,
        name: channel.info.name.clone(),
        rate_bits_per_s: channel.tier.rate(),
        start_like,
        start_at: start_at.filter(|_| start_like.is_none()),
    });
    true
}

/// A validated session joins its channel's transport (the twin of `leave_transport`): the first
/// multicast member adds the group to the destinations; the first unicast session of an address
/// adds that address.
fn join_transport(
    channel: &mut Channel,
    channel_id: ChannelId,
    client: SocketAddr,
    transport: Transport,
    commands: &mut VecDeque<DataCommand>,
) {
    match transport {
        Transport::Multicast => {
            channel.multicast_members += 1;
            if channel.multicast_members == 1 {
                let group = channel.group.expect("multicast sessions have a group");
                commands.push_back(DataCommand::AddDestination {
                    channel: channel_id,
                    destination: SocketAddr::V4(group),
                });
            }
        }
        Transport::Unicast => {
            let sessions = channel.unicast_destinations.entry(client).or_insert(0);
            *sessions += 1;
            if *sessions == 1 {
                commands.push_back(DataCommand::AddDestination {
                    channel: channel_id,
                    destination: client,
                });
            }
        }
    }
}

/// A session leaves its channel's transport: a pending multicast session stops counting for
/// SYNC; the last validated multicast member takes the group off the destinations; the last
/// validated unicast session of an address takes that address off.
fn leave_transport(
    channel: &mut Channel,
    channel_id: ChannelId,
    client: SocketAddr,
    validated: bool,
    transport: Transport,
    commands: &mut VecDeque<DataCommand>,
) {
    match (validated, transport) {
        (false, Transport::Multicast) => channel.multicast_pending -= 1,
        (false, Transport::Unicast) => {}
        (true, Transport::Multicast) => {
            channel.multicast_members -= 1;
            if channel.multicast_members == 0 {
                let group = channel.group.expect("multicast sessions have a group");
                commands.push_back(DataCommand::RemoveDestination {
                    channel: channel_id,
                    destination: SocketAddr::V4(group),
                });
            }
        }
        (true, Transport::Unicast) => {
            let sessions = channel
                .unicast_destinations
                .get_mut(&client)
                .expect("a validated unicast session's address is counted");
            *sessions -= 1;
            if *sessions == 0 {
                channel.unicast_destinations.remove(&client);
                commands.push_back(DataCommand::RemoveDestination {
                    channel: channel_id,
                    destination: client,
                });
            }
        }
    }
}

#[cfg(test)]
mod attack26b_tests;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod tests;
