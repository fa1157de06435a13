//! The replay simulation shared by `hx_attack10.rs` and `hx_attack11.rs`: a loop of
//! `RATE` datagrams a second through the real client accounting (`account_datagram`, the NAK
//! planner and the loss meter), honest losses, and a host on the group that replays genuine
//! datagrams or forges unverified ones. `simulate` prints and returns the loss the client
//! reported against the path's true loss, what it asked for, and when.
#![allow(dead_code)] // each test crate uses part of it

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use loopcast_proto::assemble::{assemble_in_memory, InMemoryFile};
use loopcast_proto::bitmap::Bitmap;
use loopcast_proto::carousel::SessionId;
use loopcast_proto::client::{account_datagram, Metered};
use loopcast_proto::endpoint::{Endpoint, EndpointConfig, MulticastGroups};
use loopcast_proto::info::{FileInfo, DATAGRAM_SIZE_MTU_1500};
use loopcast_proto::nak::{NakConfig, NakPlanner};
use loopcast_proto::rate::{
    plan, Counts, LossMeter, MemberPlan, PathEstimate, RateConfig, TierControl, TierPlan,
    TierPolicy,
};
use loopcast_proto::receiver::Outcome;
use loopcast_proto::rng::SeededRng;
use loopcast_proto::wire::control::{ControlMessage, RequestHints, Token, Transport};
use loopcast_proto::wire::datagram::FileId;
use loopcast_proto::Instant;

#[derive(Clone, Debug)]
pub enum Ev {
    /// The loop's own datagram (honest network).
    Loop(u32),
    /// An attacker's replay of a genuine datagram (verifies).
    Replay(u32),
    Forged(u32),
    Heard(Vec<(u32, u32)>),
    Rate(f64),
    Rejoin,
}

/// Events with when they happen (us), and the loop's serials with when they were sent (us).
pub type Events = Vec<(u64, Ev)>;
pub type Sent = Vec<(u64, u32)>;

pub struct Report {
    pub reported_loss: f64,
    pub true_loss: f64,
    pub asked_unique: usize,
    pub asked_received_anyway: usize,
    /// Lost serials the victim lacked (the path dropped them and it did not hold them).
    pub really_lost: usize,
    pub lost_never_asked: usize,
    pub lost_ask_delay_max_ms: u64,
    pub lost_ask_delay_mean_ms: f64,
    pub retractions: u64,
    pub promoted: u64,
    pub max_interval_lost: u32,
}

pub fn us(t: u64) -> Instant {
    Instant::ZERO + Duration::from_micros(t)
}

/// Feeds `events` (time in us, event) in time order; polls NAK every ms (at +900 us), takes
/// the meter every 50 ms. `sent` is the loop's serials with when they were sent (us), and
/// `delivered` which of them reached the victim (honest network).
pub fn simulate(
    loop_len: u32,
    rate: f64,
    events: Vec<(u64, Ev)>,
    sent: &[(u64, u32)],
    end_ms: u64,
    label: &str,
) -> Report {
    simulate_holding(&Bitmap::new(loop_len), rate, events, sent, end_ms, label)
}

/// [`simulate`] for a victim that already holds `held` (a resumed download, or one on its
/// second pass or after a tier move: the loop's datagrams it holds are duplicates to it);
/// what it held is never counted lost.
pub fn simulate_holding(
    held: &Bitmap,
    rate: f64,
    mut events: Vec<(u64, Ev)>,
    sent: &[(u64, u32)],
    end_ms: u64,
    label: &str,
) -> Report {
    events.sort_by_key(|e| e.0);
    let mut nak = NakPlanner::new(NakConfig::default(), held);
    nak.set_loop_rate(Some(rate));
    let mut meter = LossMeter::new(held.len());
    let mut have = held.clone();
    let mut delivered: BTreeSet<u32> = BTreeSet::new();
    for (_, e) in &events {
        if let Ev::Loop(s) = e {
            delivered.insert(*s);
        }
    }
    let mut first_asked: BTreeMap<u32, u64> = BTreeMap::new();
    let (mut rec, mut lost) = (0u64, 0u64);
    let mut max_interval_lost = 0;
    let mut it = events.into_iter().peekable();
    for ms in 0..end_ms {
        let poll = ms * 1000 + 900;
        while let Some((t, _)) = it.peek() {
            if *t > poll {
                break;
            }
            let (t, e) = it.next().unwrap();
            let now = us(t);
            match e {
                Ev::Loop(s) | Ev::Replay(s) => {
                    let outcome = if have.get(s) {
                        Outcome::Duplicate { serial: s }
                    } else {
                        have.set(s);
                        Outcome::Store {
                            serial: s,
                            verified: true,
                        }
                    };
                    account_datagram(
                        &mut meter,
                        &mut nak,
                        Some(Metered { serial: s }),
                        &outcome,
                        now,
                    )
                }
                Ev::Forged(s) => account_datagram(
                    &mut meter,
                    &mut nak,
                    Some(Metered { serial: s }),
                    &Outcome::Store {
                        serial: s,
                        verified: false,
                    },
                    now,
                ),
                Ev::Heard(r) => nak.heard(now, &r),
                Ev::Rate(r) => nak.set_loop_rate(Some(r)),
                Ev::Rejoin => {
                    nak.rejoin();
                    meter.restart();
                }
            }
        }
        if let Some(ranges) = nak.poll_nak(us(poll)) {
            for (f, c) in ranges {
                for s in f..f + c {
                    first_asked.entry(s).or_insert(poll);
                }
            }
        }
        if ms % 50 == 49 {
            let (r, l) = meter.take();
            rec += u64::from(r);
            lost += u64::from(l);
            max_interval_lost = max_interval_lost.max(l);
            if std::env::var("H10_TRACE").is_ok() {
                eprintln!("  {label} t={ms} ms: received {r} lost {l}");
            }
        }
    }
    let sent_at: BTreeMap<u32, u64> = sent.iter().map(|&(t, s)| (s, t)).collect();
    let really_lost: Vec<(u32, u64)> = sent_at
        .iter()
        .filter(|(s, t)| !delivered.contains(s) && !held.get(**s) && **t + 300_000 < end_ms * 1000)
        .map(|(s, t)| (*s, *t))
        .collect();
    let mut delays = Vec::new();
    let mut never = 0;
    for (s, t) in &really_lost {
        match first_asked.get(s) {
            Some(a) => delays.push(a.saturating_sub(*t) / 1000),
            None => never += 1,
        }
    }
    let r = Report {
        reported_loss: lost as f64 / (rec + lost).max(1) as f64,
        true_loss: (sent.len() - sent.iter().filter(|(_, s)| delivered.contains(s)).count()) as f64
            / sent.len().max(1) as f64,
        asked_unique: first_asked.len(),
        asked_received_anyway: first_asked.keys().filter(|s| delivered.contains(s)).count(),
        really_lost: really_lost.len(),
        lost_never_asked: never,
        lost_ask_delay_max_ms: delays.iter().copied().max().unwrap_or(0),
        lost_ask_delay_mean_ms: delays.iter().sum::<u64>() as f64 / delays.len().max(1) as f64,
        retractions: nak.retractions(),
        promoted: nak.leads_promoted(),
        max_interval_lost,
    };
    eprintln!(
        "{label}: reported {:.2} % loss (true {:.2} %), max lost/50ms {}, asked {} unique ({} received anyway), lost never asked {} of {}, ask delay mean {:.1} max {} ms, retractions {}, promoted {}",
        r.reported_loss * 100.0, r.true_loss * 100.0, r.max_interval_lost, r.asked_unique, r.asked_received_anyway,
        r.lost_never_asked, really_lost.len(), r.lost_ask_delay_mean_ms, r.lost_ask_delay_max_ms, r.retractions, r.promoted
    );
    r
}

/// The loop at `rate` per second for `ms` ms from serial `start`; `lost(serial, t_us)` drops.
pub fn honest_loop(
    loop_len: u32,
    rate: f64,
    ms: u64,
    start: u32,
    lost: impl Fn(u32, u64) -> bool,
) -> (Events, Sent) {
    let n = (rate * ms as f64 / 1000.0) as u64;
    let mut ev = Vec::new();
    let mut sent = Vec::new();
    for i in 0..n {
        let t = (i as f64 * 1e6 / rate) as u64;
        let s = ((u64::from(start) + i) % u64::from(loop_len)) as u32;
        sent.push((t, s));
        if !lost(s, t) {
            ev.push((t, Ev::Loop(s)));
        }
    }
    (ev, sent)
}

pub const L: u32 = 200_000;
pub const RATE: f64 = 10_000.0;

/// Reported loss within `points` percentage points of the path's true loss.
pub fn assert_true_loss(r: &Report, points: f64, what: &str) {
    let off = (r.reported_loss - r.true_loss) * 100.0;
    assert!(
        off.abs() < points,
        "{what}: reported {:.2} % against a true {:.2} %",
        r.reported_loss * 100.0,
        r.true_loss * 100.0
    );
}

pub fn random_loss(percent: u32) -> impl Fn(u32, u64) -> bool {
    move |s: u32, _t: u64| (s.wrapping_mul(2_654_435_761) >> 7) % 100 < percent
}

/// A hostile member's reports before each plan: `liar(config, its estimate, the tier's rate)`.
pub type Liar<'a> = &'a dyn Fn(&RateConfig, &mut PathEstimate, u64);

/// The tier with the liar rises past 4x its first rate in 10 s, or the liar is moved: it
/// cannot hold the tier for everyone (`label` names the case in the output).
pub fn assert_liar_cannot_hold_a_first_tier(label: &str, liar: Liar<'_>) {
    let alone = first_tier_against(None);
    let (rate, slow_start, moved) = first_tier_against(Some(liar));
    eprintln!(
        "{label}: after 10 s rate {} Mbit/s (slow start {slow_start}), liar moved {moved}; without it {} Mbit/s",
        rate / 1_000_000,
        alone.0 / 1_000_000
    );
    assert!(
        rate > 4 * RateConfig::default().initial_rate || moved,
        "{label}: held at {rate} (without the liar {}) and never moved",
        alone.0
    );
}

/// A file's first tier (`distribution`) for 10 s of plans 50 ms apart: two honest members that
/// get the whole rate, and with `liar` a third whose reports before each plan it makes
/// (`liar(config, estimate, rate)`). Returns (rate after 10 s, still in slow start, whether
/// the liar was moved). Shared by hx_attack14 R4 and hx_attack15 R1.
pub fn first_tier_against(liar: Option<Liar<'_>>) -> (u64, bool, bool) {
    let config = RateConfig::default();
    let at = |ms: u64| Instant::ZERO + Duration::from_millis(ms);
    let mut control = TierControl::new(&config, at(0), config.initial_rate);
    let mut estimates = [
        PathEstimate::default(),
        PathEstimate::default(),
        PathEstimate::default(),
    ];
    let mut liar_moved = false;
    for step in 0..200u64 {
        let now = at(50 + step * 50);
        let rate = control.rate();
        for estimate in &mut estimates[..2] {
            full_report(&config, estimate, rate);
        }
        if let Some(liar) = liar {
            liar(&config, &mut estimates[2], rate);
        }
        let members = estimates[..if liar.is_some() { 3 } else { 2 }]
            .iter()
            .zip(1..)
            .map(|(estimate, id)| MemberPlan {
                id,
                host: id,
                estimate,
                moved_at: None,
            })
            .collect();
        let mut plans = vec![TierPlan {
            control: &mut control,
            members,
            solo: false,
            sent_rate: None,
        }];
        liar_moved |= plan(&config, now, &mut plans)
            .iter()
            .any(|mv| mv.member == 3);
        if control.rate() != rate {
            let relief = (control.rate() < rate).then_some(control.rate());
            for estimate in &mut estimates {
                estimate.new_epoch(relief);
            }
        }
    }
    (control.rate(), control.in_slow_start(), liar_moved)
}

/// Datagram bits of the rate planner's reports here (1440-byte datagrams).
pub const REPORT_BITS: u64 = 11_520;

/// One settled 50 ms report: `got_bps` reached the member with `lost_share` of what went by
/// lost, on a tier at `rate` whose sender sent `sent_bps` (if known).
pub fn report_50ms(
    config: &RateConfig,
    estimate: &mut PathEstimate,
    rate: u64,
    got_bps: f64,
    lost_share: f64,
    sent_bps: Option<f64>,
) {
    let received = got_bps * 0.05 / REPORT_BITS as f64;
    let lost = received * lost_share / (1.0 - lost_share);
    estimate.observe(
        config,
        received as u32,
        lost as u32,
        Duration::from_millis(50),
        REPORT_BITS,
        rate,
        sent_bps.map(|s| (s * 0.05 / REPORT_BITS as f64) as u64),
        None,
        Counts::Settled,
    );
}

/// One settled 50 ms report of a member that got `rate` with no loss.
fn full_report(config: &RateConfig, estimate: &mut PathEstimate, rate: u64) {
    report_50ms(config, estimate, rate, rate as f64, 0.0, None);
}

/// Members 1, 2, ... with these estimates, none moved yet.
pub fn never_moved<'a>(estimates: &[&'a PathEstimate]) -> Vec<MemberPlan<'a>> {
    estimates
        .iter()
        .zip(1..)
        .map(|(&estimate, id)| MemberPlan {
            id,
            host: id,
            estimate,
            moved_at: None,
        })
        .collect()
}

/// Everything the endpoint has to send, command and tell, taken; the Offers among what it
/// sends: (session, token).
pub fn drain_endpoint(endpoint: &mut Endpoint) -> Vec<(SessionId, Token)> {
    let mut offers = Vec::new();
    while let Some(t) = endpoint.poll_transmit() {
        if let Ok(ControlMessage::Offer { session, token, .. }) = ControlMessage::parse(&t.bytes) {
            offers.push((session, token));
        }
    }
    while endpoint.poll_command().is_some() {}
    while endpoint.poll_event().is_some() {}
    offers
}

/// A client at `client` asks for the endpoint's file and joins its multicast (at time zero):
/// its session.
pub fn join_multicast(
    endpoint: &mut Endpoint,
    files: &mut FileInfo,
    client: std::net::SocketAddr,
) -> SessionId {
    let request = ControlMessage::Request {
        request_id: 1,
        multicast_ok: true,
        name: files.name.clone(),
        hints: RequestHints::default(),
    };
    endpoint.handle_control(Instant::ZERO, client, &request.to_bytes(), files);
    let (session, token) = drain_endpoint(endpoint)[0];
    let joined = ControlMessage::Joined {
        session,
        token,
        transport: Transport::Multicast,
    };
    endpoint.handle_control(Instant::ZERO, client, &joined.to_bytes(), files);
    drain_endpoint(endpoint);
    session
}

/// `count` clients at 192.0.2.10, .11, ... join (`join_multicast`): their addresses and
/// sessions.
pub fn join_clients(
    endpoint: &mut Endpoint,
    files: &mut FileInfo,
    count: usize,
) -> (Vec<std::net::SocketAddr>, Vec<SessionId>) {
    let addrs: Vec<std::net::SocketAddr> = (0..count)
        .map(|i| format!("192.0.2.{}:6000", 10 + i).parse().unwrap())
        .collect();
    let sessions = addrs
        .iter()
        .map(|&a| join_multicast(endpoint, files, a))
        .collect();
    (addrs, sessions)
}

/// A Report (1 ms round trip, loss judged) as the client sends it.
pub fn report_bytes(
    session: SessionId,
    sent_at_us: u32,
    interval_us: u32,
    received: u32,
    lost: u32,
) -> Vec<u8> {
    ControlMessage::Report {
        session,
        sent_at_us,
        interval_us,
        received,
        lost,
        rtt_us: 1_000,
        loss_judged: true,
    }
    .to_bytes()
}

/// hx_attack15 N1's park: the honest loop of `loop_len` at `rate` from 50,000 for `ms` with 20 %
/// random loss, a replay of 150,000 as the victim's first datagram, and (`heard`) a forged
/// NakHeard of 64 ranges of 1,024 over the loop's next 65,536 serials every 4 s. The events
/// and what the loop sent.
pub fn parked_loop(loop_len: u32, rate: f64, ms: u64, heard: bool) -> (Events, Sent) {
    let (mut ev, sent) = honest_loop(loop_len, rate, ms, 50_000, random_loss(20));
    ev.push((0, Ev::Replay(150_000)));
    if heard {
        for k in 0..ms.div_ceil(4_000) {
            let base = 50_000 + (k * 40_000) as u32;
            let ranges: Vec<(u32, u32)> = (0..64u32)
                .map(|j| ((base + j * 1_024) % loop_len, 1_024))
                .filter(|&(f, c)| f + c <= loop_len)
                .collect();
            ev.push((k * 4_000_000, Ev::Heard(ranges)));
        }
    }
    (ev, sent)
}

/// Events at one instant in the order a replay, then a heard range, then the loop arrive.
pub fn order(e: &(u64, Ev)) -> (u64, u8) {
    (
        e.0,
        match e.1 {
            Ev::Replay(_) => 0,
            Ev::Heard(_) => 1,
            _ => 2,
        },
    )
}

/// A real file of `data` datagrams' worth of seeded random bytes at MTU 1500, assembled in
/// memory: its info and every datagram by serial.
pub fn random_file(data: usize, seed: u64, file_id: FileId) -> (FileInfo, Vec<Vec<u8>>) {
    let mut rng = SeededRng::from_u64(seed);
    let stream: Vec<u8> = (0..data * 1400).map(|_| rng.below(256) as u8).collect();
    assemble_in_memory(&InMemoryFile {
        file_id,
        name: "random.bin",
        datagram_size: DATAGRAM_SIZE_MTU_1500,
        frame_stream: &stream,
        watermark: None,
    })
}

/// A server endpoint with automatic rates under `policy`, no operator cap (tiers up to
/// `rate_max`) and multicast groups, seeded with `seed`; and the info of a 1 MB file (id
/// `seed`) for it to serve.
pub fn multicast_endpoint(policy: TierPolicy, seed: u64) -> (Endpoint, FileInfo) {
    let mut config = EndpointConfig::new("10.0.0.1:7700".parse().unwrap());
    config.adaptive = Some(RateConfig {
        policy,
        ..RateConfig::default()
    });
    config.rate_bits_per_s = 0;
    config.multicast = Some(MulticastGroups {
        group_base: std::net::Ipv4Addr::new(239, 77, 1, 0),
        port: 7701,
    });
    (
        Endpoint::new(config, SeededRng::from_u64(seed), Instant::ZERO),
        assemble_in_memory(&InMemoryFile {
            file_id: FileId(seed),
            name: &format!("hx{seed}.bin"),
            datagram_size: DATAGRAM_SIZE_MTU_1500,
            frame_stream: &[7u8; 1_000_000],
            watermark: None,
        })
        .0,
    )
}
