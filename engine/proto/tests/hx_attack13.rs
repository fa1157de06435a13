//! Attack review of s12 (R14 resume_at from a partial download; reports judged against what the
//! data plane sent): spoofed Requests with resume_at and throughput hints, resume_at at and past
//! the loop's end, and hostile inputs around `Endpoint::handle_channel_sent`. The two
//! `a_spoofed_*` tests failed before the fix (a Resume tier's rate is now no faster than the
//! file runs or starts at); the `held_*` ones held.

mod replay_sim;
use replay_sim::report_bytes;

use core::time::Duration;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use loopcast_proto::assemble::{assemble_in_memory, InMemoryFile};
use loopcast_proto::carousel::SessionId;
use loopcast_proto::endpoint::{
    ChannelId, DataCommand, Endpoint, EndpointConfig, MulticastGroups, Via,
};
use loopcast_proto::info::{FileInfo, DATAGRAM_SIZE_MTU_1500};
use loopcast_proto::rate::RateConfig;
use loopcast_proto::rng::SeededRng;
use loopcast_proto::wire::control::{ControlMessage, RequestHints, Token, Transport};
use loopcast_proto::wire::datagram::FileId;
use loopcast_proto::Instant;

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn spoofed(k: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(0xC633_6400u32.wrapping_add(k))), // 198.51.100.0 + k
        6000,
    )
}

/// As `loopcastd serve` with automatic rates and `--rate` = `cap` (0: none, the default: tiers
/// up to `RateConfig::rate_max`, 40 Gbit/s).
fn adaptive_capped(multicast: bool, cap: u64) -> (Endpoint, FileInfo) {
    let mut config = EndpointConfig::new("10.0.0.1:7700".parse().unwrap());
    config.adaptive = Some(RateConfig::default());
    config.rate_bits_per_s = cap;
    if multicast {
        config.multicast = Some(MulticastGroups {
            group_base: Ipv4Addr::new(239, 77, 1, 0),
            port: 7701,
        });
    }
    (
        Endpoint::new(config, SeededRng::from_u64(13), Instant::ZERO),
        assemble_in_memory(&InMemoryFile {
            file_id: FileId(13),
            name: "hx13.bin",
            datagram_size: DATAGRAM_SIZE_MTU_1500,
            frame_stream: &[7u8; 1_000_000],
            watermark: None,
        })
        .0,
    )
}

fn adaptive(multicast: bool) -> (Endpoint, FileInfo) {
    adaptive_capped(multicast, 0)
}

#[derive(Default)]
struct Out {
    offers: Vec<(SessionId, Token)>,
    opened: Vec<(ChannelId, u64, Option<ChannelId>, Option<u32>)>,
    /// Bytes sent to each non-group destination.
    to: Vec<(SocketAddr, usize)>,
}

fn drain(endpoint: &mut Endpoint) -> Out {
    let mut out = Out::default();
    while let Some(t) = endpoint.poll_transmit() {
        if t.via != Via::Group {
            out.to.push((t.destination, t.bytes.len()));
        }
        if let Ok(ControlMessage::Offer { session, token, .. }) = ControlMessage::parse(&t.bytes) {
            out.offers.push((session, token));
        }
    }
    while let Some(c) = endpoint.poll_command() {
        if let DataCommand::OpenChannel {
            channel,
            rate_bits_per_s,
            start_like,
            start_at,
            ..
        } = c
        {
            out.opened
                .push((channel, rate_bits_per_s, start_like, start_at));
        }
    }
    while endpoint.poll_event().is_some() {}
    endpoint.assert_invariants();
    out
}

fn request_bytes(name: &str, id: u64, multicast_ok: bool, hints: RequestHints) -> Vec<u8> {
    ControlMessage::Request {
        request_id: id,
        multicast_ok,
        name: name.into(),
        hints,
    }
    .to_bytes()
}

fn resume_hints(resume_at: u32, throughput: u64) -> RequestHints {
    RequestHints {
        resume_at: Some(resume_at),
        throughput_bits_per_s: throughput,
        ..Default::default()
    }
}

/// Request + Joined from `client`; returns the session and what the Joined made happen.
fn join(
    endpoint: &mut Endpoint,
    files: &mut FileInfo,
    now: Instant,
    client: SocketAddr,
    hints: RequestHints,
    transport: Transport,
) -> (SessionId, Out) {
    let name = files.name.clone();
    endpoint.handle_control(
        now,
        client,
        &request_bytes(&name, 1, transport == Transport::Multicast, hints),
        files,
    );
    let (session, token) = drain(endpoint).offers[0];
    endpoint.handle_control(
        now,
        client,
        &ControlMessage::Joined {
            session,
            token,
            transport,
        }
        .to_bytes(),
        files,
    );
    (session, drain(endpoint))
}

/// A multicast member A (192.0.2.10) on the file's first tier, at 0 ms.
fn with_a_joined(endpoint: &mut Endpoint, files: &mut FileInfo) {
    join(
        endpoint,
        files,
        at(0),
        addr("192.0.2.10:6000"),
        RequestHints::default(),
        Transport::Multicast,
    );
}

/// A file served on one multicast tier at the starting rate (1 Gbit/s) to A. One Request from a
/// spoofed address (never validated) with `resume_at = 0, throughput = u64::MAX` opened a
/// Resume tier at `rate_max` (40 Gbit/s by default; 10 Gbit/s with `--rate 10G`), the file's
/// "fastest", and the next honest newcomer B was put on it: its Joined started the data plane
/// at 40 Gbit/s. Now a Resume tier is no faster than the file runs or starts at.
#[test]
fn a_spoofed_resume_request_does_not_set_the_rate_an_honest_newcomer_is_sent_at() {
    let mut b_rates = Vec::new();
    for (spoof, cap) in [(false, 0), (true, 0), (true, 10_000_000_000)] {
        let (mut endpoint, mut files) = adaptive_capped(true, cap);
        with_a_joined(&mut endpoint, &mut files);
        if spoof {
            let name = files.name.clone();
            endpoint.handle_control(
                at(100),
                spoofed(7),
                &request_bytes(&name, 99, true, resume_hints(0, u64::MAX)),
                &mut files,
            );
            drain(&mut endpoint);
        }
        let (_, out) = join(
            &mut endpoint,
            &mut files,
            at(200),
            addr("192.0.2.11:6000"),
            RequestHints::default(),
            Transport::Multicast,
        );
        let rate = match out.opened.first() {
            Some(&(channel, ..)) => endpoint
                .channels()
                .find(|c| c.channel == channel)
                .map(|c| c.rate_bits_per_s)
                .expect("open"),
            // B joined A's running tier.
            None => endpoint
                .channels()
                .map(|c| c.rate_bits_per_s)
                .min()
                .unwrap(),
        };
        b_rates.push(rate);
    }
    let initial = RateConfig::default().initial_rate;
    assert_eq!(b_rates[0], initial, "without the spoof B joins A's tier");
    assert!(
        b_rates[1..].iter().all(|&r| r <= initial),
        "one spoofed, never-validated Request made an honest newcomer's tier start at {b_rates:?} bit/s"
    );
}

/// The same on a unicast-only server: two spoofed Requests (a plain one, then one with
/// resume_at and throughput u64::MAX) made an honest newcomer's own channel start at
/// 40 Gbit/s. Now at the starting rate.
#[test]
fn a_spoofed_resume_request_does_not_set_an_honest_unicast_clients_own_channel_rate() {
    let mut b_rates = Vec::new();
    for spoof in [false, true] {
        let (mut endpoint, mut files) = adaptive(false);
        let name = files.name.clone();
        if spoof {
            for (k, hints) in [
                (1u32, RequestHints::default()),
                (2, resume_hints(0, u64::MAX)),
            ] {
                endpoint.handle_control(
                    at(10 * u64::from(k)),
                    spoofed(k),
                    &request_bytes(&name, 99, false, hints),
                    &mut files,
                );
                drain(&mut endpoint);
            }
        }
        let (_, out) = join(
            &mut endpoint,
            &mut files,
            at(100),
            addr("192.0.2.11:6000"),
            RequestHints::default(),
            Transport::Unicast,
        );
        b_rates.push(out.opened.first().map_or(0, |o| o.1));
    }
    let initial = RateConfig::default().initial_rate;
    assert_eq!(b_rates[0], initial);
    assert!(
        b_rates[1] <= initial,
        "two spoofed Requests made an honest unicast client's own channel start at {} bit/s",
        b_rates[1]
    );
}

/// 2,000 Requests with resume_at (0, loop_len - 1, loop_len, u32::MAX; throughput 0 / max / 1 /
/// 5 Mbit/s) from 2,000 spoofed addresses: at most `tiers_max` channels at once, no spoofed
/// address sent more than 3x what it sent, and every unvalidated session (and its tier) gone
/// after the timeout.
#[test]
fn held_resume_requests_from_spoofed_addresses_stay_within_tiers_and_amplification() {
    let (mut endpoint, mut files) = adaptive(true);
    with_a_joined(&mut endpoint, &mut files);
    let name = files.name.clone();
    let loop_len = files.loop_len;
    let mut most_tiers = 0;
    let mut worst_ratio: f64 = 0.0;
    for k in 0..2_000u32 {
        let resume = [0, loop_len - 1, loop_len, u32::MAX][k as usize % 4];
        let throughput = [0, u64::MAX, 1, 5_000_000][k as usize % 4];
        let bytes = request_bytes(&name, u64::from(k), true, resume_hints(resume, throughput));
        let now = Instant::ZERO + Duration::from_micros(10_000 + 500 * u64::from(k));
        endpoint.handle_control(now, spoofed(k), &bytes, &mut files);
        endpoint.handle_timeout(now);
        let out = drain(&mut endpoint);
        let sent: usize = out
            .to
            .iter()
            .filter(|(d, _)| *d == spoofed(k))
            .map(|(_, n)| n)
            .sum();
        worst_ratio = worst_ratio.max(sent as f64 / bytes.len() as f64);
        most_tiers = most_tiers.max(endpoint.channels().count());
    }
    endpoint.handle_timeout(at(4_500));
    drain(&mut endpoint);
    assert!(
        most_tiers <= RateConfig::default().tiers_max,
        "{most_tiers}"
    );
    assert!(worst_ratio <= 3.0, "{worst_ratio}");
    assert_eq!(endpoint.channels().count(), 1, "only A's tier is left");
}

/// resume_at at and past the loop's end never reaches the data plane; loop_len - 1 does.
#[test]
fn held_resume_at_past_the_loop_never_reaches_the_data_plane() {
    for transport in [Transport::Unicast, Transport::Multicast] {
        let (mut endpoint, mut files) = adaptive(true);
        with_a_joined(&mut endpoint, &mut files);
        let loop_len = files.loop_len;
        for (k, (resume, want)) in [
            (loop_len, None),
            (u32::MAX, None),
            (loop_len - 1, Some(loop_len - 1)),
        ]
        .into_iter()
        .enumerate()
        {
            let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20 + k as u8)), 6000);
            let (_, out) = join(
                &mut endpoint,
                &mut files,
                at(100 + k as u64),
                client,
                resume_hints(resume, 0),
                transport,
            );
            for &(_, _, _, start_at) in &out.opened {
                assert!(start_at.is_none_or(|s| s < loop_len));
            }
            if let Some(&(_, _, start_like, start_at)) = out.opened.first() {
                if start_like.is_none() {
                    assert_eq!(start_at, want, "{transport:?} resume_at {resume}");
                }
            }
        }
    }
}

/// Hostile inputs around `sent_between`: sent counts going back, time going back, the same
/// instant twice, counts near u64::MAX, and Reports claiming intervals of 0, 1 us and u32::MAX
/// us with received/lost of 0 and u32::MAX: no panic, invariants hold, every rate stays within
/// [rate_min, rate_max].
#[test]
fn held_sent_samples_and_report_intervals_at_the_edges_never_panic() {
    let (mut endpoint, mut files) = adaptive(true);
    let client = addr("192.0.2.10:6000");
    let (session, _) = join(
        &mut endpoint,
        &mut files,
        at(0),
        client,
        RequestHints::default(),
        Transport::Multicast,
    );
    let channel = endpoint.channels().next().unwrap().channel;
    let counts = [
        0u64,
        1_000,
        500,
        u64::MAX,
        u64::MAX - 1,
        u64::MAX,
        0,
        7,
        7,
        1 << 63,
    ];
    let times = [10u64, 20, 20, 15, 100, 100, 30, 200, 205, 400];
    let intervals = [
        0u32,
        1,
        9_999,
        10_000,
        50_000,
        200_000,
        10_000_000,
        u32::MAX,
    ];
    let config = RateConfig::default();
    let mut k = 0u32;
    for round in 0..40u64 {
        for (&t, &c) in times.iter().zip(&counts) {
            endpoint.handle_channel_sent(at(round * 500 + t), channel, c);
        }
        for &interval in &intervals {
            for (received, lost) in [
                (0, 0),
                (u32::MAX, 0),
                (0, u32::MAX),
                (u32::MAX, u32::MAX),
                (3, 0),
            ] {
                k += 1;
                let now = at(round * 500 + 450);
                endpoint.handle_control(
                    now,
                    client,
                    &report_bytes(session, k, interval, received, lost),
                    &mut files,
                );
                endpoint.handle_timeout(now);
                drain(&mut endpoint);
            }
        }
        for c in endpoint.channels() {
            assert!(
                (config.rate_min..=config.rate_max).contains(&c.rate_bits_per_s),
                "{}",
                c.rate_bits_per_s
            );
        }
    }
    let rates: BTreeSet<u64> = endpoint.channels().map(|c| c.rate_bits_per_s).collect();
    assert!(!rates.is_empty());
}
