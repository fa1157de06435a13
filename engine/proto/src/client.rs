//! The client session (R7, R8, R10, R14): every session rule of `loopcast get`, sans-IO.
//!
//! ```text
//!  Requesting ──Offer──▶ (multicast: Syncing ──SYNC or data──▶ Joined(multicast)
//!                                             └─ sync timeout ──▶ Joined(unicast))
//!             └─Offer(unicast)──▶ Joined(unicast)
//!  Joined: Status every interval; Joined re-sent until data arrives (its token validates us);
//!          Report (received, lost, interval, RTT) every report interval ──▶ Feedback: the tier
//!          this session is on; another channel ──▶ Moved (the driver switches group) (R11, R12)
//!  Ended{..} from the server, or no data for `silence_rerequest` ──▶ Requesting again (new id);
//!  the driver keeps its bitmap, so the download continues where it was.
//!  Fleet (R16, R17): a Request goes to the entry points in turn (directors or servers, one
//!  per retry); a Redirect from one of them names the server to ask (at most
//!  `REDIRECTS_MAX` in a row). Reached through a fleet, a server silent for
//!  `failover_silence` (no datagram, no reply) is given up: the next Request goes to the entry
//!  points again, naming that server as failed and the root held, so a director sends the
//!  client to another server with the same bytes, and the download continues from its bitmap.
//! ```
//! The driver owns sockets, files and the receiver; it tells the session what arrived
//! (`handle_control` for the server's replies, `handle_sync`, `handle_data`), what it holds
//! (`set_progress`), and drains `poll_transmit` (datagrams to the server) and `poll_event`.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::carousel::SessionId;
use crate::info::FileInfo;
use crate::nak::NakPlanner;
use crate::rate::{LossMeter, SLOW_START_STEP_MIN};
use crate::receiver::{Outcome, Receiver};
use crate::rng::SeededRng;
use crate::time::Instant;
use crate::wire::control::{ControlMessage, EndReason, RejectCode, RequestHints, Token, Transport};
use crate::wire::datagram::{DatagramHeader, FileId};

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The first address to ask: a server or a director.
    pub server: SocketAddr,
    /// More addresses to ask, in turn, when one does not answer (directors or servers that
    /// hold the same file, R18).
    pub alternates: Vec<SocketAddr>,
    /// The location the client prefers (R16), "" = any.
    pub location: String,
    /// The root the client wants (`get --root`): a director routes only to a server with it.
    pub root: Option<crate::info::RootHash>,
    /// Where what a partial download from an earlier run lacks begins (R14): a channel opened
    /// for this request starts its loop there, so it sends that first.
    pub resume_at: Option<u32>,
    /// Reached through a fleet (a redirect, or alternates given): a server silent this long
    /// (no datagram and no reply) has failed; ask the entry points for another (R17).
    pub failover_silence: Duration,
    pub name: String,
    pub multicast_ok: bool,
    pub request_retry: Duration,
    /// Give up asking after this long without an answer.
    pub request_timeout: Duration,
    /// How long to wait for SYNC (or data) on a multicast offer before falling back (R8).
    pub sync_timeout: Duration,
    pub status_interval: Duration,
    /// Joined is re-sent this often until data arrives.
    pub joined_retry: Duration,
    /// Joined and receiving, but no data for this long: ask again (the server may have lost the
    /// session without our hearing of it).
    pub silence_rerequest: Duration,
    /// Asking again after a lost session gives up after this long without an answer (a server
    /// restart can take longer than a first request should wait).
    pub rerequest_timeout: Duration,
    /// How often the client reports what its path delivers (R12).
    pub report_interval: Duration,
}

impl ClientConfig {
    pub fn new(server: SocketAddr, name: &str) -> ClientConfig {
        ClientConfig {
            server,
            alternates: Vec::new(),
            location: String::new(),
            root: None,
            resume_at: None,
            failover_silence: Duration::from_millis(800),
            name: name.to_owned(),
            multicast_ok: true,
            request_retry: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            sync_timeout: Duration::from_millis(1500),
            status_interval: Duration::from_millis(250),
            joined_retry: Duration::from_millis(250),
            silence_rerequest: Duration::from_secs(3),
            rerequest_timeout: Duration::from_secs(30),
            report_interval: Duration::from_millis(200),
        }
    }
}

/// What the driver must act on.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// An Offer: the driver checks the info (root), sets up the channel (joins the group on
    /// multicast; calls `multicast_unavailable` if it cannot) and starts receiving.
    Offered {
        transport: Transport,
        channel: SocketAddr,
        info: Box<FileInfo>,
        rate_bits_per_s: u64,
    },
    /// The session now runs on this transport (after SYNC, or the fallback, R8).
    Joined {
        transport: Transport,
        note: String,
    },
    Rejected {
        code: RejectCode,
        message: String,
    },
    /// No Offer within the request timeout.
    NoAnswer,
    /// The server ended the session (or went silent); a new Request is on its way.
    SessionLost {
        reason: String,
    },
    /// The server put this session on another tier (R11): on multicast, `channel` is the group
    /// to receive from now (the driver leaves the old one); the bitmap stays.
    Moved {
        transport: Transport,
        channel: SocketAddr,
        tier: u8,
        tiers: u8,
        rate_bits_per_s: u64,
    },
}

/// Where the session receives, as the server last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierInfo {
    /// The server's id of the tier (unknown until the first Feedback).
    pub tier_id: Option<u32>,
    pub channel: SocketAddr,
    pub tier: u8,
    pub tiers: u8,
    pub rate_bits_per_s: u64,
}

/// Feedbacks with the rate unchanged after which a probing client reports at the usual
/// interval again (a slow-start step takes two or three).
const PROBING_UNCHANGED_MAX: u32 = 8;
/// After the first SyncWanted, the retries go this long after the one before (3 in all: the
/// server honours no more), while no Sync or datagram has come.
const SYNC_WANTED_RETRIES: [Duration; 2] = [Duration::from_millis(10), Duration::from_millis(30)];
/// A probing Report covers at least this many datagrams at the tier's rate.
const PROBE_REPORT_DATAGRAMS: u64 = 256;
/// Until an Offer says otherwise.
const DEFAULT_DATAGRAM_BITS: u64 = 1440 * 8;
/// Reports whose echo is still awaited, at most (older ones give no round-trip sample).
const OUTSTANDING_REPORTS: usize = 8;
/// Redirects followed for one request, at most (a loop of redirects ends here).
pub const REDIRECTS_MAX: u8 = 4;
/// Requests sent to a redirect's server without an answer before the entry points are asked
/// again (naming it as failed).
const REDIRECTED_SENDS_MAX: u8 = 2;

#[derive(Clone, Debug)]
enum State {
    Requesting {
        request_id: u64,
        next_send: Instant,
        give_up_at: Instant,
        /// Requests sent to the entry points so far (the next goes to entry `attempt % n`).
        attempt: u32,
        /// A redirect's server, the redirects followed, and Requests sent to it.
        redirected: Option<(SocketAddr, u8, u8)>,
    },
    Syncing {
        session: SessionId,
        token: Token,
        file_id: FileId,
        deadline: Instant,
        /// SyncWanted sent so far since the driver joined the group, and when the next goes.
        syncs_wanted: u8,
        next_sync_wanted: Option<Instant>,
    },
    Joined {
        session: SessionId,
        token: Token,
        transport: Transport,
        next_status: Instant,
        /// Re-send Joined at this instant until data arrives.
        next_joined: Option<Instant>,
        last_data: Instant,
        /// The last control datagram from the server (Feedback, Ended, ...).
        last_reply: Instant,
        next_report: Instant,
    },
    Finished,
}

pub struct ClientSession {
    config: ClientConfig,
    rng: SeededRng,
    state: State,
    held: u32,
    loop_len: u32,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    /// The server of the current session (or the address of the last Request).
    peer: SocketAddr,
    /// The session was reached through a fleet: failover on silence (R17).
    fleet: bool,
    /// What the next Request says beyond the name (root held, throughput, location, avoid).
    hints: RequestHints,
    /// Servers given up after silence.
    failovers: u64,
    events: VecDeque<ClientEvent>,
    /// Control datagrams not from the server, or not about this session: counted drops.
    dropped: u64,
    rerequests: u64,
    /// What arrived and what went by since the last Report (R12).
    meter: LossMeter,
    last_report: Instant,
    /// (sent_at_us, when) of Reports not yet echoed.
    outstanding: VecDeque<(u32, Instant)>,
    /// Smoothed round trip (as TCP's SRTT: 7/8 old + 1/8 sample), and the latest sample (what
    /// a Report carries: a queue building shows at once).
    rtt: Option<Duration>,
    rtt_sample: Option<Duration>,
    tier: Option<TierInfo>,
    /// The tier's rate rose at the last Feedback (or nothing is known yet): reports go more
    /// often ([`ClientSession::report_interval`]).
    probing: bool,
    /// Feedbacks in a row with the tier's rate unchanged while probing.
    probing_unchanged: u32,
    moves: u64,
    /// Bits in one of the file's datagrams (from the Offer).
    datagram_bits: u64,
    /// Joined, and no datagram yet: the first Report's interval starts with the first one.
    report_waits_for_data: bool,
}

impl ClientSession {
    /// Starts asking at once.
    pub fn new(config: ClientConfig, mut rng: SeededRng, now: Instant) -> ClientSession {
        let request_id = rng.next_u64();
        let give_up_at = now + config.request_timeout;
        let hints = RequestHints {
            location: config.location.clone(),
            root: config.root,
            resume_at: config.resume_at,
            ..RequestHints::default()
        };
        ClientSession {
            peer: config.server,
            fleet: !config.alternates.is_empty(),
            hints,
            failovers: 0,
            config,
            rng,
            state: State::Requesting {
                request_id,
                next_send: now,
                give_up_at,
                attempt: 0,
                redirected: None,
            },
            held: 0,
            loop_len: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dropped: 0,
            rerequests: 0,
            meter: LossMeter::default(),
            last_report: now,
            outstanding: VecDeque::new(),
            rtt: None,
            rtt_sample: None,
            tier: None,
            probing: true,
            probing_unchanged: 0,
            moves: 0,
            datagram_bits: DEFAULT_DATAGRAM_BITS,
            report_waits_for_data: false,
        }
    }

    /// How long until the next Report. While the tier ramps up each slow-start step waits for
    /// a report made wholly at the new rate, so reports come up to four times as often, but
    /// each still covers at least [`PROBE_REPORT_DATAGRAMS`] at the tier's rate (a loss
    /// fraction from a few datagrams is noise).
    fn report_interval(&self) -> Duration {
        let normal = self.config.report_interval;
        if !self.probing {
            return normal;
        }
        let rate = self.tier.map_or(0, |t| t.rate_bits_per_s);
        if rate == 0 {
            return normal / 4; // unpaced
        }
        let enough = Duration::from_secs_f64(
            (PROBE_REPORT_DATAGRAMS * self.datagram_bits) as f64 / rate as f64,
        );
        enough.clamp(normal / 4, normal)
    }

    /// The round trip to the server, smoothed, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The tier the server last put this session on.
    pub fn tier(&self) -> Option<TierInfo> {
        self.tier
    }

    /// Times the server moved this session to another tier.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// A verified datagram of the file arrived (stored or a genuine duplicate): for the loss and
    /// goodput this client reports (R12). `repair`: it was asked for (see
    /// [`crate::nak::NakPlanner::was_asked`]), so it does not move the loop's position.
    pub fn observe_serial(&mut self, serial: u32, repair: bool) {
        self.meter.observe(serial, repair);
    }

    /// [`LossMeter::observe_stretch`] for this session's meter: what a stretch of the loop
    /// brought, from a simulation's abstracted data plane (`loopcast-bench fleet-sim`).
    pub fn observe_stretch(&mut self, received: u32, lost: u32) {
        self.meter.observe_stretch(received, lost);
    }

    /// [`account_datagram`] with this session's loss meter: what one received datagram tells
    /// it and the NAK planner. The one place the client driver and the simulation do this.
    pub fn account_datagram(
        &mut self,
        nak: &mut NakPlanner,
        metered: Option<Metered>,
        outcome: &Outcome,
        now: Instant,
    ) {
        account_datagram(&mut self.meter, nak, metered, outcome, now);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Times the session was lost and asked for again.
    pub fn rerequests(&self) -> u64 {
        self.rerequests
    }

    /// The session id while there is one.
    pub fn session(&self) -> Option<SessionId> {
        match self.state {
            State::Syncing { session, .. } | State::Joined { session, .. } => Some(session),
            _ => None,
        }
    }

    pub fn transport(&self) -> Option<Transport> {
        match self.state {
            State::Joined { transport, .. } => Some(transport),
            _ => None,
        }
    }

    /// The next control datagram and where it goes.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The server of the current session: unicast data is accepted from its host only.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Servers this session gave up after silence and replaced through the fleet (R17).
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// Every address a Request may go to first: the configured server and alternates.
    fn entry_points(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.config.server).chain(self.config.alternates.iter().copied())
    }

    fn entry_point(&self, attempt: u32) -> SocketAddr {
        let count = 1 + self.config.alternates.len();
        let index = attempt as usize % count;
        self.entry_points().nth(index).expect("index below count")
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Datagrams held out of the loop (for Status).
    pub fn set_progress(&mut self, held: u32, loop_len: u32) {
        self.held = held;
        self.loop_len = loop_len;
    }

    /// To the server of the session.
    fn send(&mut self, message: &ControlMessage) {
        self.transmits.push_back((self.peer, message.to_bytes()));
    }

    fn request_again(&mut self, now: Instant, reason: String) {
        self.rerequests += 1;
        // A channel opened for this request starts where the old loop was (R17).
        self.hints.resume_at = self.meter.position();
        let request_id = self.rng.next_u64();
        self.state = State::Requesting {
            request_id,
            next_send: now,
            give_up_at: now + self.config.rerequest_timeout,
            attempt: 0,
            redirected: None,
        };
        self.events.push_back(ClientEvent::SessionLost { reason });
        self.handle_timeout(now);
    }

    /// Who may answer now: while requesting, any entry point or the redirect's server; once
    /// offered, the session's server alone.
    fn may_answer(&self, from: SocketAddr) -> bool {
        match &self.state {
            State::Requesting { redirected, .. } => {
                redirected.is_some_and(|(server, _, _)| server == from)
                    || self.entry_points().any(|entry| entry == from)
            }
            State::Syncing { .. } | State::Joined { .. } => from == self.peer,
            State::Finished => false,
        }
    }

    /// A control datagram from `from` on the client's control socket.
    pub fn handle_control(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if !self.may_answer(from) {
            self.dropped += 1;
            return;
        }
        let Ok(message) = ControlMessage::parse(bytes) else {
            self.dropped += 1;
            return;
        };
        if let State::Joined { last_reply, .. } = &mut self.state {
            *last_reply = (*last_reply).max(now);
        }
        match (&self.state, message) {
            (
                State::Requesting {
                    request_id,
                    give_up_at,
                    attempt,
                    redirected,
                    ..
                },
                ControlMessage::Redirect {
                    request_id: id,
                    server,
                },
            ) if id == *request_id => {
                let followed = redirected.map_or(0, |(_, followed, _)| followed);
                if followed >= REDIRECTS_MAX {
                    self.dropped += 1;
                    return;
                }
                // R16: ask the server the director chose, now.
                self.fleet = true;
                self.state = State::Requesting {
                    request_id: *request_id,
                    next_send: now,
                    give_up_at: *give_up_at,
                    attempt: *attempt,
                    redirected: Some((server, followed + 1, 0)),
                };
                self.handle_timeout(now);
            }
            (
                State::Requesting { request_id, .. },
                ControlMessage::Offer {
                    request_id: id,
                    session,
                    token,
                    transport,
                    channel,
                    rate_bits_per_s,
                    info,
                },
            ) if id == *request_id => {
                let file_id = info.file_id;
                self.peer = from;
                self.hints.root = Some(info.root());
                self.hints.avoid = None;
                self.meter = LossMeter::new(info.loop_len);
                self.datagram_bits = u64::from(info.datagram_size.max(1)) * 8;
                self.tier = Some(TierInfo {
                    tier_id: None,
                    channel,
                    tier: 0,
                    tiers: 1,
                    rate_bits_per_s,
                });
                self.events.push_back(ClientEvent::Offered {
                    transport,
                    channel,
                    info: Box::new(info),
                    rate_bits_per_s,
                });
                match transport {
                    Transport::Multicast => {
                        self.state = State::Syncing {
                            session,
                            token,
                            file_id,
                            deadline: now + self.config.sync_timeout,
                            syncs_wanted: 0,
                            next_sync_wanted: None,
                        };
                    }
                    Transport::Unicast => {
                        self.join(now, session, token, file_id, Transport::Unicast);
                        self.events.push_back(ClientEvent::Joined {
                            transport: Transport::Unicast,
                            note: "server offered unicast".into(),
                        });
                    }
                }
            }
            (
                State::Requesting { request_id, .. },
                ControlMessage::Reject {
                    request_id: id,
                    code,
                    message,
                },
            ) if id == *request_id => {
                // R17: a fleet client holding part of the file is told Busy while its only
                // server is briefly down (or full): it asks again until its deadline.
                if self.fleet && code == RejectCode::Busy && self.hints.root.is_some() {
                    return;
                }
                self.state = State::Finished;
                self.events
                    .push_back(ClientEvent::Rejected { code, message });
            }
            (
                State::Syncing { session, .. } | State::Joined { session, .. },
                ControlMessage::Ended {
                    session: ended,
                    reason,
                },
            ) if ended == *session => {
                let reason = match reason {
                    EndReason::UnknownSession => {
                        "the server does not know our session (restarted or expired)".to_owned()
                    }
                    other => {
                        // Shutting down, or its copy of the file is bad: in a fleet, another
                        // server continues (R17).
                        if self.fleet {
                            self.hints.avoid = Some(self.peer);
                        }
                        other.to_string()
                    }
                };
                self.request_again(now, reason);
            }
            (
                State::Joined { session, .. },
                ControlMessage::Feedback {
                    session: about,
                    echo_us,
                    tier_id,
                    tier,
                    tiers,
                    transport,
                    channel,
                    rate_bits_per_s,
                },
            ) if about == *session => {
                let joined = self.transport();
                let new = TierInfo {
                    tier_id: Some(tier_id),
                    channel,
                    tier,
                    tiers,
                    rate_bits_per_s,
                };
                self.handle_feedback(now, echo_us, transport, joined, new);
            }
            _ => self.dropped += 1,
        }
    }

    fn handle_feedback(
        &mut self,
        now: Instant,
        echo_us: u32,
        transport: Transport,
        joined: Option<Transport>,
        new: TierInfo,
    ) {
        if let Some(index) = self
            .outstanding
            .iter()
            .position(|&(sent, _)| sent == echo_us)
        {
            let (_, sent_at) = self.outstanding[index];
            // This and every older Report are answered (or lost): no later sample from them.
            self.outstanding.drain(..=index);
            let sample = now.saturating_since(sent_at);
            self.rtt_sample = Some(sample);
            self.rtt = Some(match self.rtt {
                None => sample,
                Some(rtt) => (rtt * 7 + sample) / 8,
            });
        }
        if joined != Some(transport) {
            // A Feedback for a transport we are not on (a late one from before a fallback).
            self.dropped += 1;
            return;
        }
        // A move: another group, or another tier id than the one we knew (the first Feedback
        // only names the tier the Offer put us on).
        let moved = self.tier.is_some_and(|old| {
            old.channel != new.channel || old.tier_id.is_some_and(|id| Some(id) != new.tier_id)
        });
        // The tier's rate went up by a slow-start step (`SLOW_START_STEP_MIN` or more): the
        // server is probing, and each step waits for a report made wholly at the new rate, so
        // reports come more often until it stops: a small rise or a fall (steady probing near
        // the path's rate is a few percent a step and keeps the usual interval), or a few
        // reports with the rate unchanged (the tier holds: its members may not keep up).
        let old_rate = self.tier.map(|old| old.rate_bits_per_s);
        let stepped_up = old_rate
            .is_some_and(|old| new.rate_bits_per_s as f64 >= SLOW_START_STEP_MIN * old as f64);
        self.probing = if moved || old_rate.is_none() || stepped_up {
            true
        } else if old_rate == Some(new.rate_bits_per_s) {
            self.probing_unchanged += 1;
            self.probing && self.probing_unchanged < PROBING_UNCHANGED_MAX
        } else {
            false
        };
        let risen = stepped_up && !moved;
        if old_rate != Some(new.rate_bits_per_s) || moved {
            self.probing_unchanged = 0;
        }
        self.tier = Some(new);
        if risen {
            // A slow-start step: the next Report covers the new rate only (from now, a round
            // trip after the server raised it), so the server can judge the step from it.
            self.meter.take();
            self.last_report = now;
        }
        // A ramp that starts now does not wait out an interval chosen before it.
        let sooner = self.last_report + self.report_interval();
        if let State::Joined { next_report, .. } = &mut self.state {
            *next_report = if risen {
                sooner
            } else {
                (*next_report).min(sooner)
            };
        }
        if moved {
            self.moves += 1;
            // The next Report covers the new tier only.
            self.meter.restart();
            self.meter.take();
            self.last_report = now;
            self.events.push_back(ClientEvent::Moved {
                transport,
                channel: new.channel,
                tier: new.tier,
                tiers: new.tiers,
                rate_bits_per_s: new.rate_bits_per_s,
            });
        }
    }

    fn join(
        &mut self,
        now: Instant,
        session: SessionId,
        token: Token,
        file_id: FileId,
        transport: Transport,
    ) {
        self.send(&ControlMessage::Joined {
            session,
            token,
            transport,
        });
        let _ = file_id;
        self.state = State::Joined {
            session,
            token,
            transport,
            next_status: now + self.config.status_interval,
            next_joined: Some(now + self.config.joined_retry),
            last_data: now,
            last_reply: now,
            next_report: now + self.report_interval(),
        };
        self.meter.take();
        self.last_report = now;
        self.report_waits_for_data = true;
    }

    /// SYNC seen on the multicast group (R8).
    pub fn handle_sync(&mut self, now: Instant, file_id: FileId) {
        if let State::Syncing {
            session,
            token,
            file_id: ours,
            ..
        } = self.state
        {
            if ours == file_id {
                self.join(now, session, token, file_id, Transport::Multicast);
                self.events.push_back(ClientEvent::Joined {
                    transport: Transport::Multicast,
                    note: "SYNC received on the multicast group".into(),
                });
            }
        }
    }

    /// A verified datagram of our file arrived (stored or duplicate): the channel works.
    pub fn handle_data(&mut self, now: Instant) {
        // Only for the first datagram after a join (this runs once a receive batch).
        let first_interval = self.report_waits_for_data.then(|| self.report_interval());
        match &mut self.state {
            State::Syncing {
                session,
                token,
                file_id,
                ..
            } => {
                let (session, token, file_id) = (*session, *token, *file_id);
                self.join(now, session, token, file_id, Transport::Multicast);
                self.events.push_back(ClientEvent::Joined {
                    transport: Transport::Multicast,
                    note: "file datagrams received on the multicast group".into(),
                });
                self.handle_data(now);
            }
            State::Joined {
                last_data,
                next_joined,
                next_report,
                ..
            } => {
                *last_data = (*last_data).max(now);
                *next_joined = None;
                if let Some(interval) = first_interval {
                    // The first Report covers the time data flows, not the join before it:
                    // a joiner whose data began halfway through its first interval read as
                    // receiving half its tier's rate, and the tier was halved for everyone
                    // on it (new-user review: 32.4 to 16.9 Mbit/s when a second client
                    // joined a 40 Mbit/s receiver's tier).
                    self.report_waits_for_data = false;
                    *next_report = now + interval;
                    self.meter.take();
                    self.last_report = now;
                }
            }
            _ => {}
        }
    }

    /// The driver joined the multicast group it was offered: ask the server for a Sync now
    /// (the one sent with the Offer came before the join; the next scheduled one may be
    /// 100 ms away), and again after [`SYNC_WANTED_RETRIES`] if none came: the first may
    /// arrive before the network forwards the group to us (Linux sends the join's IGMP
    /// report a few milliseconds after the join; a snooping switch takes longer). If all are
    /// lost, the scheduled Syncs still come.
    pub fn multicast_joined(&mut self, now: Instant) {
        if let State::Syncing {
            syncs_wanted: 0,
            next_sync_wanted: None,
            ..
        } = self.state
        {
            self.want_sync(now);
        }
    }

    fn want_sync(&mut self, now: Instant) {
        if let State::Syncing {
            session,
            token,
            syncs_wanted,
            next_sync_wanted,
            ..
        } = &mut self.state
        {
            let message = ControlMessage::SyncWanted {
                session: *session,
                token: *token,
            };
            *next_sync_wanted = SYNC_WANTED_RETRIES
                .get(usize::from(*syncs_wanted))
                .map(|&after| now + after);
            *syncs_wanted += 1;
            self.send(&message);
        }
    }

    /// The driver cannot receive the multicast group (cannot join): fall back at once.
    pub fn multicast_unavailable(&mut self, now: Instant, note: String) {
        if let State::Syncing {
            session,
            token,
            file_id,
            ..
        } = self.state
        {
            self.join(now, session, token, file_id, Transport::Unicast);
            self.events.push_back(ClientEvent::Joined {
                transport: Transport::Unicast,
                note,
            });
        }
    }

    /// The whole file is held and published: tell the server (a few times: UDP may drop one).
    pub fn complete(&mut self, now: Instant) {
        let _ = now;
        if let Some(session) = self.session() {
            for _ in 0..3 {
                self.send(&ControlMessage::Status {
                    session,
                    held: self.loop_len,
                    loop_len: self.loop_len,
                    done: true,
                });
            }
        }
        self.state = State::Finished;
    }

    /// Stop (interrupted, stalled): the server may stop sending to us.
    pub fn leave(&mut self, now: Instant) {
        let _ = now;
        if let Some(session) = self.session() {
            self.send(&ControlMessage::Leave { session });
        }
        self.state = State::Finished;
    }

    /// A NAK (R10) for the current session; nothing while there is none.
    pub fn send_nak(&mut self, ranges: Vec<(u32, u32)>) {
        if let State::Joined { session, .. } = self.state {
            self.send(&ControlMessage::Nak { session, ranges });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state.clone() {
            State::Requesting {
                request_id,
                next_send,
                give_up_at,
                mut attempt,
                mut redirected,
            } => {
                if now >= give_up_at {
                    self.state = State::Finished;
                    self.events.push_back(ClientEvent::NoAnswer);
                    return;
                }
                if now >= next_send {
                    let to = match redirected {
                        Some((server, followed, sent)) if sent < REDIRECTED_SENDS_MAX => {
                            redirected = Some((server, followed, sent + 1));
                            server
                        }
                        Some((server, ..)) => {
                            // The server a director chose does not answer: ask again,
                            // naming it, so the next choice is another.
                            self.hints.avoid = Some(server);
                            redirected = None;
                            attempt += 1;
                            self.entry_point(attempt - 1)
                        }
                        None => {
                            attempt += 1;
                            self.entry_point(attempt - 1)
                        }
                    };
                    self.peer = to;
                    self.send(&ControlMessage::Request {
                        request_id,
                        multicast_ok: self.config.multicast_ok,
                        name: self.config.name.clone(),
                        hints: self.hints.clone(),
                    });
                    self.state = State::Requesting {
                        request_id,
                        next_send: now + self.config.request_retry,
                        give_up_at,
                        attempt,
                        redirected,
                    };
                }
            }
            State::Syncing {
                session,
                token,
                file_id,
                deadline,
                next_sync_wanted,
                ..
            } => {
                if next_sync_wanted.is_some_and(|at| now >= at) && now < deadline {
                    self.want_sync(now);
                }
                if now >= deadline {
                    let note = format!(
                        "no SYNC within {:.1} s; fell back to unicast",
                        self.config.sync_timeout.as_secs_f64()
                    );
                    self.join(now, session, token, file_id, Transport::Unicast);
                    self.events.push_back(ClientEvent::Joined {
                        transport: Transport::Unicast,
                        note,
                    });
                }
            }
            State::Joined {
                session,
                token,
                transport,
                next_status,
                next_joined,
                last_data,
                last_reply,
                next_report,
            } => {
                let heard = last_data.max(last_reply);
                if self.fleet && now.saturating_since(heard) >= self.config.failover_silence {
                    // R17: the server stopped; another with the same root continues.
                    let silent = self.config.failover_silence.as_secs_f64();
                    let server = self.peer;
                    self.failovers += 1;
                    self.hints.avoid = Some(server);
                    self.request_again(
                        now,
                        format!("{server} silent for {silent:.1} s; asking the fleet for another server"),
                    );
                    return;
                }
                if now.saturating_since(last_data) >= self.config.silence_rerequest {
                    let silent = self.config.silence_rerequest.as_secs_f64();
                    self.request_again(now, format!("no data for {silent:.1} s; asking again"));
                    return;
                }
                if let Some(at) = next_joined.filter(|&at| now >= at) {
                    let _ = at;
                    self.send(&ControlMessage::Joined {
                        session,
                        token,
                        transport,
                    });
                    if let State::Joined { next_joined, .. } = &mut self.state {
                        *next_joined = Some(now + self.config.joined_retry);
                    }
                }
                if now >= next_report {
                    self.send_report(now, session);
                    let interval = self.report_interval();
                    if let State::Joined { next_report, .. } = &mut self.state {
                        *next_report = now + interval;
                    }
                }
                if now >= next_status {
                    self.send(&ControlMessage::Status {
                        session,
                        held: self.held,
                        loop_len: self.loop_len,
                        done: false,
                    });
                    if let State::Joined { next_status, .. } = &mut self.state {
                        *next_status = now + self.config.status_interval;
                    }
                }
            }
            State::Finished => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Requesting {
                next_send,
                give_up_at,
                ..
            } => Some((*next_send).min(*give_up_at)),
            State::Syncing {
                deadline,
                next_sync_wanted,
                ..
            } => Some(next_sync_wanted.map_or(*deadline, |at| at.min(*deadline))),
            State::Joined {
                next_status,
                next_joined,
                last_data,
                last_reply,
                next_report,
                ..
            } => {
                let mut silence = *last_data + self.config.silence_rerequest;
                if self.fleet {
                    silence =
                        silence.min((*last_data).max(*last_reply) + self.config.failover_silence);
                }
                Some(
                    next_joined
                        .map_or(*next_status, |j| j.min(*next_status))
                        .min(silence)
                        .min(*next_report),
                )
            }
            State::Finished => None,
        }
    }

    /// R12: what arrived and what went by since the last Report, with the round trip.
    fn send_report(&mut self, now: Instant, session: SessionId) {
        let (received, lost) = self.meter.take();
        let interval = now.saturating_since(self.last_report);
        // What the path delivered: it travels with the client to its next routing (R12, R16).
        if received > 0 && !interval.is_zero() {
            let bits = u64::from(received) * self.datagram_bits;
            self.hints.throughput_bits_per_s =
                (bits as f64 / interval.as_secs_f64()).min(u64::MAX as f64) as u64;
        }
        self.last_report = now;
        let sent_at_us = (now.as_nanos() / 1_000) as u32;
        if self.outstanding.len() >= OUTSTANDING_REPORTS {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((sent_at_us, now));
        let clamp_us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        self.send(&ControlMessage::Report {
            session,
            sent_at_us,
            interval_us: clamp_us(interval),
            received,
            lost,
            rtt_us: self
                .rtt_sample
                .map_or(0, clamp_us)
                .max(u32::from(self.rtt_sample.is_some())),
            loss_judged: self.meter.position().is_some(),
        });
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }
}

/// What one received datagram tells the loss meter and the NAK planner, once the receiver has
/// judged it (`outcome`); `metered` is what [`metered`] said of its header before. Every
/// datagram of the file with a sound header counts for the goodput the client reports, also
/// one that cannot be verified yet (a client far below its tier's rate receives mostly such
/// orphans; counting only verified ones reads as loss the path never had). A verified one that
/// is the loop's progress moves the meter's sequence and the NAK frontier; an unverified one
/// only where [`NakPlanner::saw_unverified`] says the loop can be: a forger on the path can
/// make the client look faster, never lossy.
pub fn account_datagram(
    meter: &mut LossMeter,
    nak: &mut NakPlanner,
    metered: Option<Metered>,
    outcome: &Outcome,
    now: Instant,
) {
    let follow_frontier = |meter: &mut LossMeter, nak: &mut NakPlanner| {
        if nak.take_restarted() {
            meter.restart();
        }
        if let Some(serial) = nak.take_retracted() {
            meter.retract_to(serial);
        }
        if let Some((first, last, missing)) = nak.take_promoted() {
            meter.jump_over(first, last, missing);
        }
    };
    // Where the loop's progress went back to, or on to a lead (at a NAK poll, or with this
    // datagram), first.
    follow_frontier(meter, nak);
    // Judged now, after the datagrams before it in its batch: judged before the batch, a
    // receiver reading a backlog of 2,000 datagrams at once saw all but the first steps as
    // leads, and counted them lost when the next batch moved it on (a loss-free 1 Gbit/s
    // receiver reported 50 % loss and its tier was halved).
    let moved = match *outcome {
        Outcome::Store {
            serial,
            verified: false,
        } => nak.saw_unverified(serial, now),
        Outcome::Store {
            serial,
            verified: true,
        }
        | Outcome::Duplicate { serial } => nak.saw(serial, now),
        Outcome::Dropped(_) => false,
    };
    follow_frontier(meter, nak);
    if let Some(Metered { serial }) = metered {
        match outcome {
            Outcome::Store { verified: true, .. } | Outcome::Duplicate { .. } => {
                meter.observe(serial, !moved)
            }
            Outcome::Store { .. } if moved => meter.observe(serial, false),
            _ => meter.observe_pending(serial),
        }
    }
}

/// Tells the NAK planner what the receiver's verification needs since the last call: the hash
/// blocks pending datagrams wait for ([`Receiver::take_wanted_blocks`]), and the serials whose
/// pending copy failed verification ([`Receiver::take_rejected`]: counted as arrived, they are
/// not). The client driver calls it after each batch; simulations after each datagram.
pub fn want_what_verification_needs(receiver: &mut Receiver, nak: &mut NakPlanner) {
    for serial in receiver.take_rejected() {
        nak.forget(serial);
    }
    nak.want_blocks(receiver.take_wanted_blocks());
}

/// A datagram of the file read from its header before it is verified: its serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metered {
    pub serial: u32,
}

/// [`Metered`] for a datagram of `file_id` with a sound header; `None` for anything else.
pub fn metered(bytes: &[u8], file_id: FileId) -> Option<Metered> {
    DatagramHeader::parse(bytes)
        .ok()
        .filter(|header| header.file_id == file_id)
        .map(|header| Metered {
            serial: header.serial.0,
        })
}

#[cfg(test)]
mod fleet_attack_tests;
#[cfg(test)]
mod tests;
