//! Attacks on the director from the network (a stranger without the fleet key, a malicious
//! client): each test says what the attacker does and what must hold.

use super::*;
use crate::wire::control::REQUEST_LEN_MIN;
use crate::wire::fleet::{Challenge, NONCE_LEN};

const T0_UNIX_MS: u64 = 1_800_000_000_000;

fn key() -> FleetKey {
    FleetKey::from_secret(b"the fleet's secret, long enough").unwrap()
}

fn at(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn server_beat(
    id: u64,
    sequence: u64,
    ms: u64,
    sessions_max: u32,
    files: &[CatalogEntry],
) -> Vec<u8> {
    server_beat_echo(id, sequence, ms, sessions_max, files, [0; NONCE_LEN])
}

fn server_beat_echo(
    id: u64,
    sequence: u64,
    ms: u64,
    sessions_max: u32,
    files: &[CatalogEntry],
    echo: [u8; NONCE_LEN],
) -> Vec<u8> {
    Heartbeat {
        sequence,
        sent_at_unix_ms: T0_UNIX_MS + ms,
        echo,
        sessions_max,
        ..super::tests::heartbeat_of(id, SocketAddr::from(([10, 0, 0, id as u8], 7000)), files)
    }
    .to_bytes(&key())
}

/// A server `id` that answers the director's challenge and is registered (sequences 1 and 2).
fn register(director: &mut Director, id: u64, ms: u64, sessions_max: u32, files: &[CatalogEntry]) {
    let from: SocketAddr = "10.0.0.1:9".parse().unwrap();
    let first = server_beat(id, 1, ms, sessions_max, files);
    let answer = director
        .handle_datagram(at(ms), T0_UNIX_MS + ms, from, &first)
        .expect("a server not known is challenged");
    let challenge = Challenge::parse(&answer, &key()).expect("a challenge");
    let second = server_beat_echo(id, 2, ms, sessions_max, files, challenge.nonce);
    assert_eq!(
        director.handle_datagram(at(ms), T0_UNIX_MS + ms, from, &second),
        None
    );
}

fn secret() -> [u8; 32] {
    [9; 32]
}

fn film() -> CatalogEntry {
    CatalogEntry {
        name: "film.mkv".into(),
        root: RootHash([1; 32]),
        bytes: 1 << 20,
    }
}

/// The attacker sends a Request without its zero padding, from a spoofed source (the victim).
/// A Request is padded to `REQUEST_LEN_MIN` exactly so that an answer is never larger than what
/// the (unvalidated) source sent; the director must not answer an unpadded one with more bytes
/// (a Reject's message quotes the name and says more than the 15 bytes of an empty-named
/// Request; a debug build even panicked on its `debug_assert`).
#[test]
fn an_unpadded_request_is_never_answered_with_more_bytes_than_it_had() {
    let mut director = Director::new(DirectorConfig::new(key(), secret()));
    register(&mut director, 1, 0, 0, &[film()]);
    let victim: SocketAddr = "192.0.2.7:53".parse().unwrap();
    for name in [
        "",
        "x",
        "film.mkv",
        "\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}",
    ] {
        let request = ControlMessage::Request {
            request_id: 5,
            multicast_ok: true,
            name: name.into(),
            hints: RequestHints::default(),
        };
        let padded = request.to_bytes();
        assert!(padded.len() >= REQUEST_LEN_MIN);
        // The body alone: magic, version, kind, id, multicast flag, name, hints flags.
        let body = 4 + 8 + 1 + 1 + name.len() + 1;
        let unpadded = &padded[..body];
        assert!(matches!(
            ControlMessage::parse(unpadded),
            Ok(ControlMessage::Request { .. })
        ));
        let answer = director.handle_datagram(at(1), T0_UNIX_MS + 1, victim, unpadded);
        if let Some(answer) = answer {
            assert!(
                answer.len() <= unpadded.len(),
                "a {}-byte Request for {name:?} answered with {} bytes",
                unpadded.len(),
                answer.len()
            );
        }
    }
    // A padded one is still answered.
    let padded = ControlMessage::Request {
        request_id: 6,
        multicast_ok: true,
        name: "film.mkv".into(),
        hints: RequestHints::default(),
    }
    .to_bytes();
    assert!(director
        .handle_datagram(at(2), T0_UNIX_MS + 2, victim, &padded)
        .is_some());
}

/// A stranger floods the director with padded Requests for the fleet's file from random
/// (spoofed) addresses: each is counted against the chosen server's load until its next
/// heartbeat, and once every holder is "full" by that count, real clients get Busy. With the
/// default `sessions_max` of 4096 that is 4096 Requests (about 1.9 MB) per server per heartbeat
/// interval (250 ms); with an operator's lower limit, far less. The servers themselves are idle.
#[test]
fn a_request_flood_from_spoofed_addresses_does_not_make_idle_servers_busy() {
    let mut director = Director::new(DirectorConfig::new(key(), secret()));
    for id in 1..=3 {
        register(&mut director, id, 0, 100, &[film()]);
    }
    let request = |request_id| {
        ControlMessage::Request {
            request_id,
            multicast_ok: true,
            name: "film.mkv".into(),
            hints: RequestHints::default(),
        }
        .to_bytes()
    };
    for i in 0..300u32 {
        let spoofed = SocketAddr::from(([198, 51, (i >> 8) as u8, i as u8], 40000));
        director.handle_datagram(at(10), T0_UNIX_MS + 10, spoofed, &request(u64::from(i)));
    }
    let client: SocketAddr = "192.0.2.1:5555".parse().unwrap();
    let answer = director
        .handle_datagram(at(11), T0_UNIX_MS + 11, client, &request(9999))
        .expect("answered");
    assert!(
        matches!(
            ControlMessage::parse(&answer),
            Ok(ControlMessage::Redirect { .. })
        ),
        "three idle servers, and a real client is told {:?}",
        ControlMessage::parse(&answer)
    );
}

/// A network attacker records a server's heartbeats to a director (each echoing that
/// director's nonce); the server is killed; the director restarts (a new process, a new
/// secret) within 30 s of the recording and the attacker replays them, from the server's own
/// address. Before challenges, freshness was only the clock window: a director that never saw
/// the server had no sequence to compare with and sent clients to a dead address.
#[test]
fn a_restarted_director_does_not_take_a_recorded_heartbeat_of_a_dead_server() {
    let from: SocketAddr = "203.0.113.9:7000".parse().unwrap();
    let mut before = Director::new(DirectorConfig::new(key(), secret()));
    let first = server_beat(1, 1, 0, 0, &[film()]);
    let challenge = before
        .handle_datagram(at(0), T0_UNIX_MS, from, &first)
        .expect("challenged");
    let echo = Challenge::parse(&challenge, &key()).unwrap().nonce;
    let recorded: Vec<Vec<u8>> = (2..=40)
        .map(|seq| server_beat_echo(1, seq, seq * 250, 0, &[film()], echo))
        .collect();
    for (i, bytes) in recorded.iter().enumerate() {
        before.handle_datagram(at(i as u64 * 250), T0_UNIX_MS + i as u64 * 250, from, bytes);
    }
    assert!(
        before.servers(at(0)).iter().any(|s| s.alive),
        "the recording is of a live server"
    );
    // The server died after its 40th heartbeat (10 s); the director restarts 15 s later.
    let mut director = Director::new(DirectorConfig::new(key(), [10; 32]));
    let start_ms = 25_000;
    for (i, bytes) in recorded.iter().enumerate() {
        let ms = start_ms + i as u64 * 250;
        if let Some(answer) = director.handle_datagram(at(ms), T0_UNIX_MS + ms, from, bytes) {
            assert!(
                answer.len() < bytes.len(),
                "a challenge is smaller than what it answers"
            );
            Challenge::parse(&answer, &key()).expect("only challenges answer heartbeats");
        }
        director.handle_timeout(at(ms));
    }
    let ms = start_ms + 40 * 250;
    let live: Vec<_> = director
        .servers(at(ms))
        .into_iter()
        .filter(|s| s.alive)
        .collect();
    assert!(live.is_empty(), "a dead server is routable again: {live:?}");
    assert_eq!(director.counters().heartbeats, 0);
    assert_eq!(
        director.counters().heartbeats_challenged,
        recorded.len() as u64
    );
}

/// The attacker records a live server's heartbeats to director A (its link 0) and replays them
/// to director B, which knows the server by its link 1: a copy meant for another director is
/// not taken (it could otherwise refresh a server B no longer hears from).
#[test]
fn a_heartbeat_meant_for_another_director_is_not_taken() {
    let from: SocketAddr = "203.0.113.9:7000".parse().unwrap();
    let mut b = Director::new(DirectorConfig::new(key(), [11; 32]));
    let beat_link = |seq: u64, link: u8, echo: [u8; NONCE_LEN]| {
        let mut bytes = server_beat_echo(1, seq, seq * 250, 0, &[film()], echo);
        // Re-sign with another link: rebuild through the wire type.
        let mut heartbeat = Heartbeat::parse(&bytes, &key()).unwrap();
        heartbeat.link = link;
        bytes = heartbeat.to_bytes(&key());
        bytes
    };
    let challenge = b
        .handle_datagram(at(0), T0_UNIX_MS, from, &beat_link(1, 1, [0; NONCE_LEN]))
        .expect("challenged");
    let echo_b = Challenge::parse(&challenge, &key()).unwrap().nonce;
    assert_eq!(
        b.handle_datagram(at(0), T0_UNIX_MS, from, &beat_link(2, 1, echo_b)),
        None
    );
    assert_eq!(b.counters().heartbeats, 1);
    // Copies for director A (link 0, A's nonce), newer by sequence, replayed to B.
    for seq in 3..10 {
        b.handle_datagram(
            at(seq * 250),
            T0_UNIX_MS + seq * 250,
            from,
            &beat_link(seq, 0, [5; NONCE_LEN]),
        );
    }
    assert_eq!(b.counters().heartbeats, 1, "no copy for A refreshed B");
    assert_eq!(b.counters().heartbeats_replayed, 7);
}
