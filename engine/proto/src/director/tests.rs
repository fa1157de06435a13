use super::*;
use crate::wire::fleet::{catalog_pages, Challenge};
use proptest::prelude::*;

const T0_UNIX_MS: u64 = 1_800_000_000_000;

fn key() -> FleetKey {
    FleetKey::from_secret(b"the fleet's secret, long enough").unwrap()
}

/// This director process's challenge secret.
const SECRET: [u8; 32] = [7; 32];

fn director() -> Director {
    Director::new(DirectorConfig::new(key(), SECRET))
}

fn entry(name: &str, root_byte: u8) -> CatalogEntry {
    CatalogEntry {
        name: name.into(),
        root: RootHash([root_byte; 32]),
        bytes: 1 << 20,
    }
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 7000))
}

/// Server `id`'s heartbeat of an online, idle server at `request_addr` (sequence 0, sent at
/// T0, no challenge echoed yet), announcing `files` whole on one page (also for
/// attack_tests.rs).
pub(super) fn heartbeat_of(id: u64, request_addr: SocketAddr, files: &[CatalogEntry]) -> Heartbeat {
    Heartbeat {
        server_id: id,
        incarnation: T0_UNIX_MS,
        sequence: 0,
        sent_at_unix_ms: T0_UNIX_MS,
        interval_ms: 250,
        state: ServerState::Online,
        link: 0,
        echo: [0; NONCE_LEN],
        request_addr,
        location: String::new(),
        sessions: 0,
        sessions_max: 0,
        channels: 0,
        rate_bits_per_s: 0,
        rate_bits_per_s_max: 0,
        client_throughput_bits_per_s: 0,
        tiers: Vec::new(),
        catalog_digest: catalog_digest(files),
        page: 0,
        pages: 1,
        entries: files.to_vec(),
    }
}

/// A fleet member in a test: numbers its heartbeats as a server does.
struct FakeServer {
    beat: Heartbeat,
    pages: Vec<Vec<CatalogEntry>>,
}

impl FakeServer {
    fn new(id: u64, files: &[CatalogEntry]) -> FakeServer {
        let pages = catalog_pages(files);
        FakeServer {
            beat: Heartbeat {
                sessions_max: 100,
                pages: pages.len() as u16,
                ..heartbeat_of(id, addr(id as u8), files)
            },
            pages,
        }
    }

    /// The next heartbeat, carrying the next page of the catalog.
    fn next(&mut self, at: Duration) -> Vec<u8> {
        self.beat.sequence += 1;
        self.beat.sent_at_unix_ms = T0_UNIX_MS + at.as_millis() as u64;
        let page = (self.beat.sequence as usize - 1) % self.pages.len();
        self.beat.page = page as u16;
        self.beat.entries = self.pages[page].clone();
        self.beat.to_bytes(&key())
    }
}

fn at(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

/// The next heartbeat from `server` (at `addr(200)`), and the answer to a challenge if the
/// director asks one (a server it does not know yet). Returns the heartbeat it took.
fn beat(director: &mut Director, server: &mut FakeServer, ms: u64) -> Vec<u8> {
    let bytes = server.next(Duration::from_millis(ms));
    let Some(answer) = director.handle_datagram(at(ms), T0_UNIX_MS + ms, addr(200), &bytes) else {
        return bytes;
    };
    assert!(
        answer.len() < bytes.len(),
        "a challenge is smaller than the heartbeat"
    );
    let challenge =
        Challenge::parse(&answer, &key()).expect("only a challenge answers a heartbeat");
    assert_eq!(
        (challenge.server_id, challenge.incarnation, challenge.link),
        (
            server.beat.server_id,
            server.beat.incarnation,
            server.beat.link
        )
    );
    server.beat.echo = challenge.nonce;
    let bytes = server.next(Duration::from_millis(ms));
    let answer = director.handle_datagram(at(ms), T0_UNIX_MS + ms, addr(200), &bytes);
    assert_eq!(
        answer, None,
        "a heartbeat that echoes the challenge registers"
    );
    bytes
}

fn request(name: &str, hints: RequestHints) -> Vec<u8> {
    ControlMessage::Request {
        request_id: 77,
        multicast_ok: true,
        name: name.into(),
        hints,
    }
    .to_bytes()
}

fn ask(director: &mut Director, ms: u64, name: &str, hints: RequestHints) -> ControlMessage {
    let bytes = request(name, hints);
    let client = SocketAddr::from(([192, 0, 2, 1], 5555));
    let answer = director
        .handle_datagram(at(ms), T0_UNIX_MS + ms, client, &bytes)
        .expect("a Request is always answered");
    assert!(answer.len() <= bytes.len(), "never more than the request");
    ControlMessage::parse(&answer).unwrap()
}

fn routed_to(message: &ControlMessage) -> Option<SocketAddr> {
    match message {
        ControlMessage::Redirect { request_id, server } => {
            assert_eq!(*request_id, 77);
            Some(*server)
        }
        _ => None,
    }
}

#[test]
fn a_request_goes_to_the_server_that_holds_the_file_and_an_unknown_name_is_not_found() {
    let mut director = director();
    let mut a = FakeServer::new(1, &[entry("film.mkv", 1)]);
    let mut b = FakeServer::new(2, &[entry("other.iso", 2)]);
    beat(&mut director, &mut a, 0);
    beat(&mut director, &mut b, 0);
    let answer = ask(&mut director, 10, "film.mkv", RequestHints::default());
    assert_eq!(routed_to(&answer), Some(addr(1)));
    let answer = ask(&mut director, 10, "other.iso", RequestHints::default());
    assert_eq!(routed_to(&answer), Some(addr(2)));
    match ask(&mut director, 10, "nothing.bin", RequestHints::default()) {
        ControlMessage::Reject { code, message, .. } => {
            assert_eq!(code, RejectCode::NotFound);
            assert!(message.contains("nothing.bin"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(director.counters().redirects, 2);
    assert_eq!(director.counters().rejects_not_found, 1);
}

#[test]
fn a_heartbeat_without_the_fleet_key_registers_nothing() {
    let mut director = director();
    let mut stranger = FakeServer::new(9, &[entry("film.mkv", 1)]);
    stranger.beat.sequence += 1;
    let other = FleetKey::from_secret(b"a stranger's secret, long enough").unwrap();
    let forged = stranger.beat.to_bytes(&other);
    director.handle_datagram(at(0), T0_UNIX_MS, addr(9), &forged);
    // A genuine heartbeat with one byte changed is no better.
    let mut changed = stranger.next(Duration::ZERO);
    changed[30] ^= 1;
    director.handle_datagram(at(0), T0_UNIX_MS, addr(9), &changed);
    assert_eq!(director.counters().heartbeats_unauthenticated, 2);
    assert!(director.servers(at(0)).is_empty());
    let answer = ask(&mut director, 1, "film.mkv", RequestHints::default());
    assert!(matches!(
        answer,
        ControlMessage::Reject {
            code: RejectCode::NotFound,
            ..
        }
    ));
}

#[test]
fn a_replayed_heartbeat_cannot_keep_a_dead_server_alive() {
    let mut director = director();
    let mut a = FakeServer::new(1, &[entry("film.mkv", 1)]);
    let captured: Vec<Vec<u8>> = [0, 250, 500]
        .into_iter()
        .map(|ms| beat(&mut director, &mut a, ms))
        .collect();
    // The server dies at 500 ms; an attacker replays what it captured, over and over.
    for ms in (600..2000).step_by(100) {
        for bytes in &captured {
            director.handle_datagram(at(ms), T0_UNIX_MS + ms, addr(66), bytes);
        }
        director.handle_timeout(at(ms));
    }
    assert_eq!(director.counters().heartbeats, 3);
    assert_eq!(director.counters().heartbeats_replayed, 14 * 3);
    let views = director.servers(at(2000));
    assert!(!views[0].alive, "declared dead after 3 missed heartbeats");
    let answer = ask(&mut director, 2000, "film.mkv", RequestHints::default());
    assert!(matches!(
        answer,
        ControlMessage::Reject {
            code: RejectCode::Busy,
            ..
        }
    ));
}

#[test]
fn a_heartbeat_from_a_clock_far_off_is_refused() {
    let mut director = director();
    let mut a = FakeServer::new(1, &[entry("film.mkv", 1)]);
    let bytes = a.next(Duration::ZERO);
    let an_hour_later = T0_UNIX_MS + 3_600_000;
    director.handle_datagram(at(0), an_hour_later, addr(1), &bytes);
    assert_eq!(director.counters().heartbeats_replayed, 1);
    assert!(director.servers(at(0)).is_empty());
}

#[test]
fn a_server_is_declared_dead_after_three_missed_heartbeats_and_back_when_it_beats_again() {
    let mut director = director();
    let mut a = FakeServer::new(1, &[entry("film.mkv", 1)]);
    let mut b = FakeServer::new(2, &[entry("film.mkv", 1)]);
    beat(&mut director, &mut a, 0);
    beat(&mut director, &mut b, 0);
    while director.poll_event().is_some() {}
    // b keeps beating; a stops at 0 ms.
    let mut ms = 0;
    while ms < 1000 {
        ms += 50;
        if ms % 250 == 0 {
            beat(&mut director, &mut b, ms);
        }
        director.handle_timeout(at(ms));
        if ms < 750 {
            assert!(director.poll_event().is_none(), "alive at {ms} ms");
        }
    }
    let deadline = director.poll_timeout().unwrap();
    assert_eq!(
        deadline,
        at(1750),
        "next look: b's expiry, 3 intervals after its last beat"
    );
    // Dead at 750 ms (3 × 250 ms), not before.
    assert_eq!(
        director.servers(at(ms)).iter().filter(|v| v.alive).count(),
        1
    );
    for _ in 0..10 {
        let answer = ask(&mut director, ms, "film.mkv", RequestHints::default());
        assert_eq!(routed_to(&answer), Some(addr(2)), "only the live one");
    }
    assert_eq!(
        director.poll_event(),
        Some(DirectorEvent::ServerDown {
            server_id: 1,
            request_addr: addr(1),
            silent_for: Duration::from_millis(750),
        })
    );
    beat(&mut director, &mut a, 1100);
    assert_eq!(
        director.poll_event(),
        Some(DirectorEvent::ServerUp {
            server_id: 1,
            request_addr: addr(1)
        })
    );
}

#[test]
fn expiry_happens_exactly_at_three_intervals() {
    let mut director = director();
    let mut a = FakeServer::new(1, &[entry("film.mkv", 1)]);
    beat(&mut director, &mut a, 0);
    while director.poll_event().is_some() {}
    director.handle_timeout(at(749));
    assert!(director.poll_event().is_none());
    assert_eq!(director.poll_timeout(), Some(at(750)));
    director.handle_timeout(at(750));
    assert!(matches!(
        director.poll_event(),
        Some(DirectorEvent::ServerDown { server_id: 1, .. })
    ));
}

#[test]
fn routing_prefers_location_then_fit_then_load_and_avoids_a_failed_server() {
    let mut director = director();
    let files = [entry("film.mkv", 1)];
    let mut near = FakeServer::new(1, &files);
    near.beat.location = "paris".into();
    let mut far = FakeServer::new(2, &files);
    far.beat.location = "tokyo".into();
    beat(&mut director, &mut near, 0);
    beat(&mut director, &mut far, 0);
    let hints = |location: &str| RequestHints {
        location: location.into(),
        ..RequestHints::default()
    };
    assert_eq!(
        routed_to(&ask(&mut director, 1, "film.mkv", hints("tokyo"))),
        Some(addr(2))
    );
    assert_eq!(
        routed_to(&ask(&mut director, 1, "film.mkv", hints("paris"))),
        Some(addr(1))
    );
    // A client that says paris failed it goes to tokyo, though it prefers paris.
    let avoid = RequestHints {
        location: "paris".into(),
        avoid: Some(addr(1)),
        ..RequestHints::default()
    };
    assert_eq!(
        routed_to(&ask(&mut director, 1, "film.mkv", avoid.clone())),
        Some(addr(2))
    );
    // ... unless paris is the only one with the file.
    far.beat.catalog_digest = catalog_digest(&[]);
    far.pages = catalog_pages(&[]);
    far.beat.pages = 1;
    beat(&mut director, &mut far, 250);
    beat(&mut director, &mut near, 250);
    assert_eq!(
        routed_to(&ask(&mut director, 251, "film.mkv", avoid)),
        Some(addr(1))
    );

    // Throughput: a 2 Gbit/s client goes where 2 Gbit/s are spare.
    let mut director = self::director();
    let mut busy = FakeServer::new(1, &files);
    busy.beat.rate_bits_per_s = 9_000_000_000;
    busy.beat.rate_bits_per_s_max = 10_000_000_000;
    let mut roomy = FakeServer::new(2, &files);
    roomy.beat.rate_bits_per_s = 1_000_000_000;
    roomy.beat.rate_bits_per_s_max = 10_000_000_000;
    roomy.beat.sessions = 50; // more loaded by sessions, but it has the rate
    beat(&mut director, &mut busy, 0);
    beat(&mut director, &mut roomy, 0);
    let fast = RequestHints {
        throughput_bits_per_s: 2_000_000_000,
        ..RequestHints::default()
    };
    assert_eq!(
        routed_to(&ask(&mut director, 1, "film.mkv", fast)),
        Some(addr(2))
    );
    // With no throughput known, the least loaded.
    assert_eq!(
        routed_to(&ask(&mut director, 1, "film.mkv", RequestHints::default())),
        Some(addr(1))
    );
}

#[test]
fn a_burst_of_requests_spreads_over_equal_servers_and_a_full_one_takes_no_more() {
    let mut director = director();
    let files = [entry("film.mkv", 1)];
    let mut a = FakeServer::new(1, &files);
    a.beat.sessions_max = 10;
    let mut b = FakeServer::new(2, &files);
    b.beat.sessions_max = 10;
    beat(&mut director, &mut a, 0);
    beat(&mut director, &mut b, 0);
    let mut to = HashMap::new();
    for _ in 0..20 {
        let answer = ask(&mut director, 1, "film.mkv", RequestHints::default());
        *to.entry(routed_to(&answer).unwrap()).or_insert(0) += 1;
    }
    assert_eq!(to[&addr(1)], 10);
    assert_eq!(to[&addr(2)], 10);
    // Past what they said they take, the director's own count still only ranks them (Requests
    // are unauthenticated: a flood must not make idle servers look full).
    let answer = ask(&mut director, 1, "film.mkv", RequestHints::default());
    assert!(routed_to(&answer).is_some());
    // Full by their own heartbeats: Busy, saying so.
    a.beat.sessions = 10;
    b.beat.sessions = 10;
    beat(&mut director, &mut a, 100);
    beat(&mut director, &mut b, 100);
    match ask(&mut director, 101, "film.mkv", RequestHints::default()) {
        ControlMessage::Reject {
            code: RejectCode::Busy,
            message,
            ..
        } => assert!(message.contains("full"), "{message}"),
        other => panic!("{other:?}"),
    }
    a.beat.sessions = 0;
    b.beat.sessions = 0;
    // A draining server takes nobody new.
    a.beat.state = ServerState::Draining;
    beat(&mut director, &mut a, 250);
    beat(&mut director, &mut b, 250);
    for _ in 0..5 {
        let answer = ask(&mut director, 251, "film.mkv", RequestHints::default());
        assert_eq!(routed_to(&answer), Some(addr(2)));
    }
}

#[test]
fn a_client_holding_part_of_a_file_goes_only_where_the_same_root_is() {
    let mut director = director();
    let mut old = FakeServer::new(1, &[entry("film.mkv", 1)]);
    let mut new = FakeServer::new(2, &[entry("film.mkv", 2)]);
    beat(&mut director, &mut old, 0);
    beat(&mut director, &mut new, 0);
    for (root, server) in [(1u8, 1u8), (2, 2)] {
        let hints = RequestHints {
            root: Some(RootHash([root; 32])),
            ..RequestHints::default()
        };
        for _ in 0..4 {
            let answer = ask(&mut director, 1, "film.mkv", hints.clone());
            assert_eq!(routed_to(&answer), Some(addr(server)));
        }
    }
    let hints = RequestHints {
        root: Some(RootHash([3; 32])),
        ..RequestHints::default()
    };
    let answer = ask(&mut director, 1, "film.mkv", hints);
    assert!(matches!(
        answer,
        ControlMessage::Reject {
            code: RejectCode::NotFound,
            ..
        }
    ));
}

#[test]
fn a_catalog_of_many_pages_is_routable_once_whole_and_the_old_one_serves_until_then() {
    let mut director = director();
    let first: Vec<CatalogEntry> = (0..100)
        .map(|i| entry(&format!("{i:03}-a-long-file-name-to-fill-the-page.bin"), 1))
        .collect();
    let mut server = FakeServer::new(1, &first);
    assert!(server.pages.len() >= 3, "{} pages", server.pages.len());
    let pages = server.pages.len() as u64;
    for i in 0..pages {
        assert!(
            routed_to(&ask(
                &mut director,
                i * 250,
                "099-a-long-file-name-to-fill-the-page.bin",
                RequestHints::default()
            ))
            .is_none(),
            "not before the last page"
        );
        beat(&mut director, &mut server, i * 250);
    }
    let name = "099-a-long-file-name-to-fill-the-page.bin";
    assert_eq!(
        routed_to(&ask(
            &mut director,
            pages * 250,
            name,
            RequestHints::default()
        )),
        Some(addr(1))
    );
    // A new version of the catalog (one file more): the old one routes until it is whole.
    let mut second = first.clone();
    second.push(entry("new.bin", 5));
    server.pages = catalog_pages(&second);
    server.beat.catalog_digest = catalog_digest(&second);
    server.beat.pages = server.pages.len() as u16;
    server.beat.sequence = 0;
    let base = pages * 250;
    let new_pages = server.pages.len() as u64;
    for i in 0..new_pages {
        assert_eq!(
            routed_to(&ask(
                &mut director,
                base + i * 250,
                name,
                RequestHints::default()
            )),
            Some(addr(1))
        );
        assert!(routed_to(&ask(
            &mut director,
            base + i * 250,
            "new.bin",
            RequestHints::default()
        ))
        .is_none());
        server.beat.incarnation = T0_UNIX_MS + 1; // a restart with a new catalog
        beat(&mut director, &mut server, base + i * 250 + 1);
    }
    assert_eq!(
        routed_to(&ask(
            &mut director,
            base + new_pages * 250,
            "new.bin",
            RequestHints::default()
        )),
        Some(addr(1))
    );
}

#[test]
fn a_restarted_server_replaces_its_old_entry_and_an_old_process_replayed_cannot_come_back() {
    let mut director = director();
    let mut old = FakeServer::new(1, &[entry("film.mkv", 1)]);
    beat(&mut director, &mut old, 0);
    let mut new = FakeServer::new(2, &[entry("film.mkv", 1)]);
    new.beat.request_addr = addr(1);
    new.beat.incarnation = T0_UNIX_MS + 5_000;
    beat(&mut director, &mut new, 5_000);
    let views = director.servers(at(5_000));
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].server_id, 2);
    // The old process's heartbeat, replayed (fresh enough by the clock, with the echo it
    // registered with, from its address), does not evict it.
    old.beat.sent_at_unix_ms = T0_UNIX_MS + 5_000;
    old.beat.sequence += 1;
    let replay = old.beat.to_bytes(&key());
    director.handle_datagram(at(5_001), T0_UNIX_MS + 5_001, addr(200), &replay);
    assert_eq!(director.servers(at(5_001))[0].server_id, 2);
    assert_eq!(director.counters().heartbeats_replayed, 1);
}

#[test]
fn the_registry_is_bounded_and_makes_room_by_forgetting_the_dead() {
    let mut config = DirectorConfig::new(key(), SECRET);
    config.servers_max = 4;
    let mut director = Director::new(config);
    let mut servers: Vec<FakeServer> = (1..=5).map(|i| FakeServer::new(i, &[])).collect();
    for server in servers.iter_mut().take(4) {
        beat(&mut director, server, 0);
    }
    beat(&mut director, &mut servers[4], 0);
    assert_eq!(director.counters().heartbeats_refused_full, 1);
    assert_eq!(director.servers(at(0)).len(), 4);
    // Once one is dead, a new server takes its place.
    for ms in (250..=1000).step_by(250) {
        for server in servers.iter_mut().take(3) {
            beat(&mut director, server, ms);
        }
        director.handle_timeout(at(ms));
    }
    beat(&mut director, &mut servers[4], 1000);
    let views = director.servers(at(1000));
    assert_eq!(views.len(), 4);
    assert!(views.iter().all(|v| v.alive));
    assert!(views.iter().any(|v| v.server_id == 5));
}

proptest! {
    /// Whatever arrives, the director never panics, never answers anything but a Request,
    /// and never answers with more bytes than it got.
    #[test]
    fn random_datagrams_never_panic_or_amplify(
        datagrams in proptest::collection::vec(
            prop_oneof![
                crate::testkit::hostile_bytes(b"Lc\x01\x01", 600),
                crate::testkit::hostile_bytes(b"Lf\x02\x01", 1500),
            ],
            1..50,
        )
    ) {
        let mut director = director();
        let mut server = FakeServer::new(1, &[entry("a", 1)]);
        beat(&mut director, &mut server, 0);
        for (i, bytes) in datagrams.iter().enumerate() {
            let now = i as u64;
            if let Some(answer) = director.handle_datagram(at(now), T0_UNIX_MS + now, addr(50), bytes) {
                match ControlMessage::parse(bytes) {
                    Ok(ControlMessage::Request { .. }) => prop_assert!(answer.len() <= bytes.len()),
                    Ok(ControlMessage::List { .. }) => prop_assert!(answer.len() <= 3 * bytes.len()),
                    other => prop_assert!(false, "answered {:?}", other),
                }
            }
            director.handle_timeout(at(now));
        }
        prop_assert_eq!(director.counters().heartbeats, 1);
    }
}

#[test]
fn ls_lists_every_file_of_the_live_servers_page_by_page_within_three_times_the_list() {
    let mut director = director();
    let files: Vec<CatalogEntry> = (0..60)
        .map(|i| {
            entry(
                &format!("film-{i:02}-with-a-name-of-some-length.mkv"),
                i as u8,
            )
        })
        .collect();
    let mut a = FakeServer::new(1, &files[..40]);
    let mut b = FakeServer::new(2, &files[20..]);
    for ms in (0..2000).step_by(250) {
        beat(&mut director, &mut a, ms);
        beat(&mut director, &mut b, ms);
    }
    let client = SocketAddr::from(([192, 0, 2, 1], 5555));
    let mut listed = Vec::new();
    let mut offset = 0;
    for _ in 0..100 {
        let list = ControlMessage::List {
            request_id: 5,
            offset,
        }
        .to_bytes();
        let answer = director
            .handle_datagram(at(2000), T0_UNIX_MS + 2000, client, &list)
            .expect("answered");
        assert!(answer.len() <= 3 * list.len());
        let ControlMessage::Listing {
            request_id,
            total,
            offset: at_offset,
            entries,
        } = ControlMessage::parse(&answer).unwrap()
        else {
            panic!("not a Listing");
        };
        assert_eq!((request_id, at_offset, total), (5, offset, 60));
        assert!(!entries.is_empty() || offset >= total);
        offset += entries.len() as u32;
        listed.extend(entries);
        if offset >= total {
            break;
        }
    }
    assert_eq!(listed, files, "every file once, sorted by name");
    // An unpadded List is not answered (its answer could be larger than what it carried).
    let mut short = ControlMessage::List {
        request_id: 6,
        offset: 0,
    }
    .to_bytes();
    short.truncate(16);
    assert_eq!(
        director.handle_datagram(at(2000), T0_UNIX_MS + 2000, client, &short),
        None
    );
    // The listing follows the fleet: a dead server's files are not offered, a new server's are.
    let total_listed = |director: &mut Director, ms: u64| {
        let list = ControlMessage::List {
            request_id: 7,
            offset: 0,
        }
        .to_bytes();
        match ControlMessage::parse(
            &director
                .handle_datagram(at(ms), T0_UNIX_MS + ms, client, &list)
                .unwrap(),
        ) {
            Ok(ControlMessage::Listing { total, .. }) => total,
            other => panic!("{other:?}"),
        }
    };
    director.handle_timeout(at(3000));
    assert_eq!(total_listed(&mut director, 3000), 0);
    let mut c = FakeServer::new(3, &files[..5]);
    beat(&mut director, &mut c, 3100);
    assert_eq!(total_listed(&mut director, 3100), 5);
}

/// R16, "server and tier": of two equally loaded servers with the file, a client goes to the
/// one already sending it on a tier within a factor of two of its throughput (no new tier
/// there); a tier of another file, or no throughput hint, changes nothing.
#[test]
fn a_server_already_sending_the_file_near_the_clients_throughput_is_preferred() {
    use crate::wire::fleet::TierSummary;
    let mut director = director();
    let film = entry("film.mkv", 1);
    let other = entry("other.mkv", 2);
    let mut slow = FakeServer::new(1, &[film.clone(), other.clone()]);
    let mut fast = FakeServer::new(2, &[film.clone(), other.clone()]);
    let tier = |root_byte: u8, rate_bits_per_s: u64| TierSummary {
        root_prefix: [root_byte; 8],
        rate_bits_per_s,
        clients: 10,
    };
    slow.beat.tiers = vec![tier(1, 5_000_000), tier(2, 400_000_000)];
    fast.beat.tiers = vec![tier(1, 500_000_000)];
    beat(&mut director, &mut slow, 0);
    beat(&mut director, &mut fast, 0);
    let with_throughput = |throughput_bits_per_s| RequestHints {
        throughput_bits_per_s,
        ..RequestHints::default()
    };
    for _ in 0..3 {
        assert_eq!(
            routed_to(&ask(
                &mut director,
                1,
                "film.mkv",
                with_throughput(6_000_000)
            )),
            Some(addr(1))
        );
        assert_eq!(
            routed_to(&ask(
                &mut director,
                1,
                "film.mkv",
                with_throughput(400_000_000)
            )),
            Some(addr(2))
        );
    }
    // other.mkv's 400 Mbit/s tier is on the slow server only: a 300 Mbit/s client goes there
    // though it has had more clients routed to it.
    assert_eq!(
        routed_to(&ask(
            &mut director,
            1,
            "other.mkv",
            with_throughput(300_000_000)
        )),
        Some(addr(1))
    );
    // Without a throughput, tiers do not count: the less loaded one (fewer routed) wins.
    let first = routed_to(&ask(&mut director, 1, "film.mkv", RequestHints::default()));
    let second = routed_to(&ask(&mut director, 1, "film.mkv", RequestHints::default()));
    assert_ne!(first, second, "spread by load alone");
}
