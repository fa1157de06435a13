//! Session 11 attacker probes: SyncWanted (kind 16), the rate planner's "unheard" rule and
//! slow-start collapse rule (8a0cd14), and the NAK planner / loss meter against replays.
//! Tests named `finding_*` failed on 8a0cd14 (the attack worked) and pass since the fix after
//! it; `held_*` are attacks that were already defended.
mod replay_sim;
use replay_sim::*;

use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use loopcast_proto::assemble::{assemble_in_memory, InMemoryFile};
use loopcast_proto::carousel::SessionId;
use loopcast_proto::endpoint::{Endpoint, EndpointConfig, MulticastGroups, Via};
use loopcast_proto::info::{FileInfo, DATAGRAM_SIZE_MTU_1500};
use loopcast_proto::rate::{
    plan, Counts, MemberPlan, PathEstimate, RateConfig, TierControl, TierPlan,
};
use loopcast_proto::rng::SeededRng;
use loopcast_proto::wire::control::{ControlMessage, Token};
use loopcast_proto::wire::datagram::FileId;
use loopcast_proto::Instant;

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

// ---------------------------------------------------------------------------------------------
// Rate planner
// ---------------------------------------------------------------------------------------------

const DATAGRAM_BITS: u64 = 12_000;

/// One settled 50 ms report at `rate` that received `share` of what was sent, no gaps placed
/// (short reports are read against what was sent).
fn report(config: &RateConfig, e: &mut PathEstimate, rate: u64, share: f64, lost_share: f64) {
    let sent = rate as f64 * 0.05 / DATAGRAM_BITS as f64;
    let received = (sent * share) as u32;
    let lost = (sent * lost_share) as u32;
    e.observe(
        config,
        received,
        lost,
        Duration::from_millis(50),
        DATAGRAM_BITS,
        rate,
        None,
        None,
        Counts::Settled,
    );
}

fn member<'a>(id: u64, estimate: &'a PathEstimate, moved_at: Option<Instant>) -> MemberPlan<'a> {
    MemberPlan {
        id,
        host: id,
        estimate,
        moved_at,
    }
}

fn one_tier<'a>(control: &'a mut TierControl, members: Vec<MemberPlan<'a>>) -> Vec<TierPlan<'a>> {
    vec![TierPlan {
        control,
        members,
        solo: false,
        sent_rate: None,
    }]
}

/// R1. A tier in slow start at 1 Gbit/s; its one heard member H gets 10 % of it (90 % lost,
/// two reports: congested) but moved here 100 ms ago (dwell 1 s: it cannot move). Without
/// anyone else the tier falls for it at once. Add a member M that never sends a report that
/// counts (never reports, or only Unjudged/Unsettled ones): "unheard" reads as "keeps up", H
/// is not movable, so nothing happens: the rate stays 1 Gbit/s for H for the whole dwell
/// (H loses 90 % for ~1 s, every plan), and M can do this on every tier H is moved to that is
/// still in slow start. SHOULD: with no member that can move, unheard members do not hold
/// the rate (it falls as without M).
#[test]
fn finding_a_silent_member_holds_a_slow_start_tier_for_a_member_that_cannot_move() {
    let config = RateConfig::default();
    let rate = 1_000_000_000;
    let silent = PathEstimate::default();
    let mut rate_without = 0;
    let mut rates_with = Vec::new();
    for with_silent in [false, true] {
        let mut control = TierControl::new(&config, at(0), rate);
        let mut h = PathEstimate::default();
        for step in 0..18u64 {
            let now = at(100 + step * 50);
            let r = control.rate();
            report(
                &config,
                &mut h,
                r,
                (0.1 * rate as f64 / r as f64).min(1.0),
                0.0,
            );
            let mut members = vec![member(1, &h, Some(at(0)))];
            if with_silent {
                members.push(member(2, &silent, None));
            }
            let moves = plan(&config, now, &mut one_tier(&mut control, members));
            assert!(
                moves.is_empty(),
                "H cannot move within the dwell: {moves:?}"
            );
            if with_silent {
                rates_with.push(control.rate());
            }
        }
        if !with_silent {
            rate_without = control.rate();
        }
    }
    eprintln!("R1 without silent member: {rate_without}; with: {rates_with:?}");
    assert!(
        rate_without < 200_000_000,
        "the tier falls for H alone: {rate_without}"
    );
    assert!(
        rates_with.iter().any(|&r| r < rate),
        "a silent member held the tier at {rate} bit/s for 900 ms while its only heard member \
         received 10 % of it: {rates_with:?}"
    );
}

/// R1b (held): the same silent member on a tier out of slow start holds nothing.
#[test]
fn held_a_silent_member_does_not_hold_a_tier_out_of_slow_start() {
    let config = RateConfig::default();
    let rate = 1_000_000_000;
    let silent = PathEstimate::default();
    let mut control = TierControl::new_known(&config, at(0), rate);
    let mut h = PathEstimate::default();
    for step in 0..2u64 {
        report(&config, &mut h, rate, 0.1, 0.0);
        let _ = step;
    }
    let members = vec![member(1, &h, Some(at(0))), member(2, &silent, None)];
    plan(&config, at(300), &mut one_tier(&mut control, members));
    assert!(control.rate() <= 100_000_000, "{}", control.rate());
}

/// R2. The collapse rule trusts that the tier's members kept up with the step before; but the
/// rise was decided by whoever was fresh then. F (fast, or a liar) reports clean at 1 Gbit/s
/// and the tier doubles to 2; S joined just then (unheard at 1 Gbit/s: it never kept up
/// there) and F leaves. S's path carries 100 Mbit/s: its reports at 2 Gbit/s are a "collapse"
/// (5 % < 75 % of 1 Gbit/s) and the tier falls to 900 Mbit/s, 9x S's path, remembered as
/// where it loses (loss_rate 1 Gbit/s), for a settle. SHOULD: only a member heard keeping up
/// at the step before can make a collapse; S's tier falls to <= 90 Mbit/s.
#[test]
fn finding_a_collapse_is_read_from_a_member_that_never_kept_up_at_the_step_before() {
    let config = RateConfig::default();
    let mut control = TierControl::new(&config, at(0), 1_000_000_000);
    let mut f = PathEstimate::default();
    report(&config, &mut f, 1_000_000_000, 1.0, 0.0);
    plan(
        &config,
        at(50),
        &mut one_tier(&mut control, vec![member(1, &f, None)]),
    );
    assert_eq!(control.rate(), 2_000_000_000, "F's clean report doubled it");
    // F left; S (joined at 1 Gbit/s, never heard there) reports twice at 2 Gbit/s.
    let mut s = PathEstimate::default();
    report(&config, &mut s, 2_000_000_000, 0.05, 0.0);
    report(&config, &mut s, 2_000_000_000, 0.05, 0.0);
    plan(
        &config,
        at(150),
        &mut one_tier(&mut control, vec![member(2, &s, None)]),
    );
    eprintln!("R2 tier after S's collapse: {} bit/s", control.rate());
    assert!(
        control.rate() <= 90_000_000,
        "S receives 100 Mbit/s; the tier fell only to {} bit/s",
        control.rate()
    );
}

/// R3. The operator lowers the cap while a tier is in slow start (clamp_to): `kept_up_at`
/// stays at the old, far higher step. A member then losing 80 % at the cap is read as a
/// collapse below that old step: 0.9 x 2 Gbit/s, capped by the rate, so the rate does not
/// move at all, and 2 Gbit/s is remembered as where members lose. SHOULD: the tier falls to
/// 90 % of what reached the member (18 Mbit/s).
#[test]
fn finding_after_a_cap_clamp_in_slow_start_a_collapse_does_not_hold_the_rate() {
    let mut config = RateConfig::default();
    let mut control = TierControl::new(&config, at(0), 1_000_000_000);
    let mut f = PathEstimate::default();
    let mut now = 0;
    while control.rate() < 4_000_000_000 {
        now += 50;
        let r = control.rate();
        report(&config, &mut f, r, 1.0, 0.0);
        plan(
            &config,
            at(now),
            &mut one_tier(&mut control, vec![member(1, &f, None)]),
        );
    }
    config.rate_max = 100_000_000;
    assert!(control.clamp_to(&config, at(now)));
    assert_eq!(control.rate(), 100_000_000);
    assert!(control.in_slow_start());
    let mut s = PathEstimate::default();
    report(&config, &mut s, 100_000_000, 0.2, 0.0);
    report(&config, &mut s, 100_000_000, 0.2, 0.0);
    now += 300;
    plan(
        &config,
        at(now),
        &mut one_tier(&mut control, vec![member(2, &s, None)]),
    );
    eprintln!(
        "R3 tier after the clamp and a 20 % report: {} bit/s",
        control.rate()
    );
    assert!(
        control.rate() <= 20_000_000,
        "20 Mbit/s reached the member; the tier stayed at {} bit/s",
        control.rate()
    );
}

// ---------------------------------------------------------------------------------------------
// SyncWanted
// ---------------------------------------------------------------------------------------------

fn sync_endpoint() -> (Endpoint, FileInfo) {
    let mut config = EndpointConfig::new("10.0.0.1:7700".parse().unwrap());
    config.multicast = Some(MulticastGroups {
        group_base: Ipv4Addr::new(239, 77, 1, 0),
        port: 7701,
    });
    (
        Endpoint::new(config, SeededRng::from_u64(7), Instant::ZERO),
        assemble_in_memory(&InMemoryFile {
            file_id: FileId(12),
            name: "hx12.bin",
            datagram_size: DATAGRAM_SIZE_MTU_1500,
            frame_stream: &[7u8; 100_000],
            watermark: None,
        })
        .0,
    )
}

/// Drains everything; returns the Syncs sent to a group and the Offers seen.
fn drain(endpoint: &mut Endpoint) -> (usize, Vec<(SessionId, Token)>) {
    let mut syncs = 0;
    let mut offers = Vec::new();
    while let Some(t) = endpoint.poll_transmit() {
        match ControlMessage::parse(&t.bytes) {
            Ok(ControlMessage::Sync { .. }) if t.via == Via::Group => syncs += 1,
            Ok(ControlMessage::Offer { session, token, .. }) => offers.push((session, token)),
            _ => {}
        }
    }
    while endpoint.poll_command().is_some() {}
    while endpoint.poll_event().is_some() {}
    (syncs, offers)
}

fn request(
    endpoint: &mut Endpoint,
    files: &mut FileInfo,
    now: Instant,
    from: SocketAddr,
    id: u64,
) -> Option<(SessionId, Token)> {
    let bytes = ControlMessage::Request {
        request_id: id,
        multicast_ok: true,
        name: files.name.clone(),
        hints: Default::default(),
    }
    .to_bytes();
    endpoint.handle_control(now, from, &bytes, files);
    drain(endpoint).1.into_iter().next()
}

fn sync_wanted(session: SessionId, token: Token) -> Vec<u8> {
    ControlMessage::SyncWanted { session, token }.to_bytes()
}

/// S1. A Status from an unvalidated session is ignored ("it expires unless the token comes"),
/// and the client sends SyncWanted only at +0, +10 and +30 ms. But each honoured SyncWanted
/// moves `last_heard`: a session that never validates (never sends Joined) lives up to
/// 4 x `unvalidated_timeout` (12 s instead of 3), keeping its channel's `multicast_pending`
/// (Syncs to the group) and its address's session slot. SHOULD: still expired at 3 s.
#[test]
fn finding_sync_wanted_keeps_a_session_that_never_validates_alive() {
    let (mut endpoint, mut files) = sync_endpoint();
    let a: SocketAddr = "192.0.2.10:6000".parse().unwrap();
    let (s, t) = request(&mut endpoint, &mut files, at(0), a, 1).expect("an Offer");
    for ms in [2_900u64, 5_800, 8_700] {
        endpoint.handle_control(at(ms), a, &sync_wanted(s, t), &mut files);
        endpoint.handle_timeout(at(ms));
        drain(&mut endpoint);
    }
    endpoint.handle_timeout(at(11_000));
    drain(&mut endpoint);
    let expired = endpoint.counters().sessions_unvalidated_expired;
    eprintln!("S1 unvalidated sessions expired by 11 s: {expired}");
    assert_eq!(
        expired, 1,
        "a session that never validated is still alive at 11 s (unvalidated timeout 3 s)"
    );
}

/// S2 (held). One address churns sessions (Request, SyncWanted x3 from +0 to +10 ms, Leave)
/// at its request budget, eight more addresses do the same, forged tokens and the right token
/// from a wrong address are sprinkled in: over 1 s the group gets at most one Sync per 5 ms
/// (plus the scheduled ones), and forged ones buy nothing.
#[test]
fn held_sync_wanted_churn_from_many_sessions_stays_within_the_group_gap() {
    let (mut endpoint, mut files) = sync_endpoint();
    let mut syncs = 0;
    let mut id = 0;
    let mut sessions: Vec<(SocketAddr, SessionId, Token)> = Vec::new();
    for ms in 0..1_000u64 {
        let now = at(ms);
        if ms % 20 == 0 {
            for host in 0..9u8 {
                let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50 + host)), 6000);
                id += 1;
                if let Some((s, t)) = request(&mut endpoint, &mut files, now, from, id) {
                    sessions.push((from, s, t));
                }
            }
        }
        for &(from, s, t) in &sessions {
            endpoint.handle_control(now, from, &sync_wanted(s, t), &mut files);
            endpoint.handle_control(now, from, &sync_wanted(s, Token(t.0 ^ 7)), &mut files);
            let other: SocketAddr = "198.51.100.1:6000".parse().unwrap();
            endpoint.handle_control(now, other, &sync_wanted(s, t), &mut files);
        }
        if ms % 20 == 10 {
            for (from, s, _) in sessions.drain(..) {
                endpoint.handle_control(
                    now,
                    from,
                    &ControlMessage::Leave { session: s }.to_bytes(),
                    &mut files,
                );
            }
        }
        endpoint.handle_timeout(now);
        syncs += drain(&mut endpoint).0;
    }
    eprintln!("S2 Syncs to the group in 1 s: {syncs} ({id} requests)");
    assert!(syncs <= 1_000 / 5 + 1, "{syncs} Syncs in 1 s");
}

// ---------------------------------------------------------------------------------------------
// NAK planner / loss meter
// ---------------------------------------------------------------------------------------------

/// N1 (held). A loss-free path; a host on the group replays genuine serials just under half a
/// loop ahead of the frontier (where "ahead" turns into "behind") and a loop behind, every
/// 10 ms: the client reports no loss it did not have, and asks for nothing it received.
#[test]
fn held_replays_near_half_a_loop_never_make_a_clean_path_report_loss() {
    for (label, offset) in [
        ("n1 +L/2-1", L / 2 - 1),
        ("n1 +L/2", L / 2),
        ("n1 +L/2+1", L / 2 + 1),
        ("n1 -65", L - 65),
        ("n1 +64", 64),
    ] {
        let (mut ev, sent) = honest_loop(L, RATE, 2_000, 0, |_, _| false);
        for k in 1..200u64 {
            let t = k * 10_000 + 300;
            let s = ((t as f64 * RATE / 1e6) as u32 + offset) % L;
            ev.push((t, Ev::Replay(s)));
        }
        ev.sort_by_key(|e| e.0);
        let r = simulate(L, RATE, ev, &sent, 2_000, label);
        assert_true_loss(&r, 0.5, label);
        assert_eq!(r.asked_received_anyway, 0, "{label}");
    }
}
