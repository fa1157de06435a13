//! The server's heartbeat machine against the real director machine: registration through a
//! challenge, the heartbeat port, forged and foreign challenges, a director that restarts.

use super::*;
use crate::director::{Director, DirectorConfig, Route};
use crate::info::RootHash;
use crate::wire::control::RequestHints;
use crate::wire::fleet::CATALOG_PAGES_MAX;

const UNIX_MS: u64 = 1_800_000_000_000;

fn key() -> FleetKey {
    FleetKey::from_secret(b"the fleet's secret, long enough").unwrap()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn at(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

/// The server's own address (where its heartbeats come from, and clients reach it).
fn server() -> SocketAddr {
    addr("10.0.0.1:7700")
}

fn sender(directors: &[&str]) -> HeartbeatSender {
    let config = FleetConfig {
        directors: directors.iter().map(|d| addr(d)).collect(),
        key: key(),
        advertise: server(),
        location: String::new(),
        interval: Duration::from_millis(250),
        rate_bits_per_s_max: 0,
    };
    let mut sender = HeartbeatSender::new(config, 42, UNIX_MS);
    sender.set_catalog(vec![film()]);
    sender
}

fn film() -> CatalogEntry {
    CatalogEntry {
        name: "film.mkv".into(),
        root: RootHash([3; 32]),
        bytes: 1 << 20,
    }
}

/// One director process reached at `listen` (requests) that challenges from `heartbeats`.
struct FakeDirector {
    director: Director,
    listen: SocketAddr,
    heartbeats: SocketAddr,
    received: usize,
}

impl FakeDirector {
    fn new(listen: &str, heartbeats: &str, secret: u8) -> FakeDirector {
        FakeDirector {
            director: Director::new(DirectorConfig::new(key(), [secret; 32])),
            listen: addr(listen),
            heartbeats: addr(heartbeats),
            received: 0,
        }
    }

    fn live(&self) -> usize {
        self.director
            .servers(at(0))
            .iter()
            .filter(|s| s.alive)
            .count()
    }
}

/// Delivers what `sender` sends at `ms` (and the answers, until quiet) between it and the
/// directors; returns how many heartbeats left the server.
fn exchange(sender: &mut HeartbeatSender, directors: &mut [FakeDirector], ms: u64) -> usize {
    let mut sent = 0;
    for _ in 0..4 {
        let out = sender.poll_transmit(at(ms), UNIX_MS + ms, &Load::default(), false);
        if out.is_empty() {
            break;
        }
        sent += out.len();
        for (to, bytes) in out {
            let Some(director) = directors
                .iter_mut()
                .find(|d| d.listen == to || d.heartbeats == to)
            else {
                continue;
            };
            director.received += 1;
            if let Some(answer) =
                director
                    .director
                    .handle_datagram(at(ms), UNIX_MS + ms, server(), &bytes)
            {
                assert!(
                    answer.len() < bytes.len(),
                    "a challenge is smaller than the heartbeat"
                );
                let from = director.heartbeats;
                sender
                    .handle_datagram(at(ms), from, &answer)
                    .expect("the director's challenge is taken");
            }
        }
    }
    sent
}

#[test]
fn a_server_is_registered_after_one_challenge_in_one_round_trip() {
    let mut sender = sender(&["10.0.0.9:7700"]);
    let mut directors = [FakeDirector::new("10.0.0.9:7700", "10.0.0.9:7702", 1)];
    assert_eq!(
        exchange(&mut sender, &mut directors, 0),
        2,
        "the round, then the answer"
    );
    assert_eq!(directors[0].live(), 1);
    assert_eq!(directors[0].director.counters().heartbeats_challenged, 1);
    assert_eq!(
        directors[0]
            .director
            .route("film.mkv", &RequestHints::default()),
        Route::To(server())
    );
    assert_eq!(sender.counters().challenges, 1);
}

#[test]
fn heartbeats_go_to_the_port_the_challenge_came_from_and_every_fourth_to_the_configured_one() {
    let mut sender = sender(&["10.0.0.9:7700"]);
    let mut directors = [FakeDirector::new("10.0.0.9:7700", "10.0.0.9:7702", 1)];
    exchange(&mut sender, &mut directors, 0);
    assert_eq!(
        sender.heartbeat_destinations().collect::<Vec<_>>(),
        vec![addr("10.0.0.9:7702")]
    );
    let mut destinations = Vec::new();
    for round in 1..=8u64 {
        let ms = round * 250;
        for (to, bytes) in sender.poll_transmit(at(ms), UNIX_MS + ms, &Load::default(), false) {
            destinations.push(to.port());
            assert_eq!(
                directors[0]
                    .director
                    .handle_datagram(at(ms), UNIX_MS + ms, server(), &bytes),
                None,
                "a registered server is not challenged again, on either port"
            );
        }
        directors[0].director.handle_timeout(at(ms));
    }
    assert_eq!(destinations.len(), 8);
    assert_eq!(destinations.iter().filter(|&&p| p == 7700).count(), 2);
    assert_eq!(directors[0].live(), 1);
    assert_eq!(directors[0].director.counters().heartbeats_replayed, 0);
}

#[test]
fn two_directors_at_one_address_are_told_apart_by_link() {
    let mut sender = sender(&["127.0.0.1:4000", "127.0.0.1:5000"]);
    let mut directors = [
        FakeDirector::new("127.0.0.1:4000", "127.0.0.1:4002", 1),
        FakeDirector::new("127.0.0.1:5000", "127.0.0.1:5002", 2),
    ];
    exchange(&mut sender, &mut directors, 0);
    assert_eq!(
        sender.heartbeat_destinations().collect::<Vec<_>>(),
        vec![addr("127.0.0.1:4002"), addr("127.0.0.1:5002")]
    );
    assert!(directors.iter().all(|d| d.live() == 1));
    for ms in (250..=2000).step_by(250) {
        exchange(&mut sender, &mut directors, ms);
    }
    for director in &directors {
        assert_eq!(director.director.counters().heartbeats_replayed, 0);
        assert_eq!(director.director.counters().heartbeats_challenged, 1);
    }
}

#[test]
fn a_restarted_director_challenges_the_server_again_and_has_it_back_within_a_round() {
    let mut sender = sender(&["10.0.0.9:7700"]);
    let mut directors = [FakeDirector::new("10.0.0.9:7700", "10.0.0.9:7702", 1)];
    exchange(&mut sender, &mut directors, 0);
    // The director process restarts: a new secret, nothing known.
    directors[0] = FakeDirector::new("10.0.0.9:7700", "10.0.0.9:7702", 2);
    exchange(&mut sender, &mut directors, 250);
    assert_eq!(directors[0].live(), 1);
    assert_eq!(directors[0].director.counters().heartbeats_challenged, 1);
}

#[test]
fn a_director_that_moved_its_heartbeat_port_is_found_again_through_the_configured_address() {
    let mut sender = sender(&["10.0.0.9:7700"]);
    let mut directors = [FakeDirector::new("10.0.0.9:7700", "10.0.0.9:7702", 1)];
    exchange(&mut sender, &mut directors, 0);
    // Restarted with heartbeats on another port: what goes to 7702 is lost.
    directors[0] = FakeDirector::new("10.0.0.9:7700", "10.0.0.9:7800", 2);
    let mut registered_at = None;
    for ms in (250..=2000).step_by(250) {
        exchange(&mut sender, &mut directors, ms);
        if registered_at.is_none() && directors[0].live() == 1 {
            registered_at = Some(ms);
        }
    }
    assert!(
        registered_at.is_some_and(|ms| ms <= 1000),
        "back by the fourth round: {registered_at:?}"
    );
    assert_eq!(
        sender.heartbeat_destinations().collect::<Vec<_>>(),
        vec![addr("10.0.0.9:7800")]
    );
}

#[test]
fn forged_and_foreign_challenges_change_nothing() {
    let mut sender = sender(&["10.0.0.9:7700"]);
    let stranger = FleetKey::from_secret(b"not this fleet's secret at all").unwrap();
    let forged = Challenge {
        server_id: 42,
        incarnation: UNIX_MS,
        link: 0,
        sequence: 0,
        nonce: [1; NONCE_LEN],
    };
    assert!(matches!(
        sender.handle_datagram(at(0), addr("203.0.113.5:9"), &forged.to_bytes(&stranger)),
        Err(ChallengeRefused::Unauthenticated(FleetParseError::BadMac))
    ));
    for other in [
        Challenge {
            server_id: 43,
            ..forged.clone()
        },
        Challenge {
            incarnation: UNIX_MS - 1,
            ..forged.clone()
        },
        Challenge {
            link: 1,
            ..forged.clone()
        },
    ] {
        assert_eq!(
            sender.handle_datagram(at(0), addr("203.0.113.5:9"), &other.to_bytes(&key())),
            Err(ChallengeRefused::NotOurs)
        );
    }
    assert_eq!(sender.counters().challenges_refused, 4);
    assert_eq!(
        sender.heartbeat_destinations().collect::<Vec<_>>(),
        vec![addr("10.0.0.9:7700")],
        "nothing redirected the heartbeats"
    );
    assert_eq!(
        sender.poll_timeout(),
        Instant::ZERO,
        "the first round is due"
    );
    let out = sender.poll_transmit(at(0), UNIX_MS, &Load::default(), false);
    assert_eq!(out.len(), 1);
    let heartbeat = Heartbeat::parse(&out[0].1, &key()).unwrap();
    assert_eq!(heartbeat.echo, [0; NONCE_LEN]);
}

/// A fleet member that floods fresh challenges gets at most one heartbeat at once per director
/// per quarter interval; the rest wait for the round. The same challenge again is stale.
#[test]
fn a_flood_of_challenges_gets_at_most_one_answer_a_quarter_interval() {
    let mut sender = sender(&["10.0.0.9:7700"]);
    let mut sent = sender
        .poll_transmit(at(0), UNIX_MS, &Load::default(), false)
        .len() as u64;
    let challenge = |sequence| {
        Challenge {
            server_id: 42,
            incarnation: UNIX_MS,
            link: 0,
            sequence,
            nonce: [1; NONCE_LEN],
        }
        .to_bytes(&key())
    };
    let mut stale = 0;
    for tenth_ms in 1..2_400u64 {
        let now = Instant::from_nanos(tenth_ms * 100_000);
        // The newest heartbeat's sequence: fresh until it is taken.
        if sender.handle_datagram(now, addr("10.0.0.9:7702"), &challenge(sent))
            == Err(ChallengeRefused::Stale)
        {
            stale += 1;
        }
        sent += sender
            .poll_transmit(now, UNIX_MS, &Load::default(), false)
            .len() as u64;
    }
    // 240 ms of challenges: the answers at 0.1 ms, 62.6, 125.1, 187.6 ms.
    let answers = sent - 1;
    assert!(answers <= 4, "{answers} heartbeats for 2,399 challenges");
    assert!(stale > 2_000, "the same challenge again is stale ({stale})");
}

/// An off-path attacker who recorded a director's challenge replays it later, spoofing the
/// director's own address (the host check passes) and another port: it answers an old
/// heartbeat, so it is stale and the heartbeats keep their destination.
#[test]
fn a_recorded_challenge_replayed_from_the_directors_address_is_stale() {
    let mut sender = sender(&["10.0.0.9:7700"]);
    let mut directors = [FakeDirector::new("10.0.0.9:7700", "10.0.0.9:7702", 1)];
    let first = sender.poll_transmit(at(0), UNIX_MS, &Load::default(), false);
    let recorded = directors[0]
        .director
        .handle_datagram(at(0), UNIX_MS, server(), &first[0].1)
        .expect("challenged");
    sender
        .handle_datagram(at(0), addr("10.0.0.9:7702"), &recorded)
        .unwrap();
    for ms in (0..=5_000).step_by(250) {
        exchange(&mut sender, &mut directors, ms);
    }
    assert_eq!(directors[0].live(), 1);
    assert_eq!(
        sender.handle_datagram(at(5_000), addr("10.0.0.9:9999"), &recorded),
        Err(ChallengeRefused::Stale)
    );
    assert_eq!(
        sender.heartbeat_destinations().collect::<Vec<_>>(),
        vec![addr("10.0.0.9:7702")]
    );
}

/// More files than `CATALOG_PAGES_MAX` pages hold (long names: 7 a page): the server announces
/// what fits and says so. The files it announces must be routable; before, the digest covered
/// every file while the pages held only some, so no director ever took the catalog and not one
/// file of that server was routable.
#[test]
fn a_catalog_larger_than_the_pages_still_announces_what_fits() {
    let mut sender = sender(&["10.0.0.9:7700"]);
    let files = CATALOG_PAGES_MAX * 8;
    let entries: Vec<CatalogEntry> = (0..files)
        .map(|i| CatalogEntry {
            name: format!("{i:06}-{}", "n".repeat(120)),
            root: RootHash([7; 32]),
            bytes: 1,
        })
        .collect();
    let first = entries[0].name.clone();
    let cut = sender
        .set_catalog(entries)
        .expect("said it could not announce all");
    assert_eq!(cut.files, files);
    assert!(cut.announced < files);
    let mut directors = [FakeDirector::new("10.0.0.9:7700", "10.0.0.9:7700", 1)];
    for i in 0..=CATALOG_PAGES_MAX as u64 + 2 {
        exchange(&mut sender, &mut directors, i * 250);
    }
    assert_eq!(
        directors[0]
            .director
            .route(&first, &RequestHints::default()),
        Route::To(server()),
        "a file the server announces is routable"
    );
}

/// Attack (s6 review): a challenge has no freshness and no tie to where it came from, so one
/// recorded on the path (or obtained from any fleet director by replaying a heartbeat to it)
/// can be replayed to the server from any address, as often as the attacker likes: the
/// server's heartbeats then go to the attacker, and its director loses it.
#[test]
fn a_replayed_challenge_from_elsewhere_does_not_steal_the_heartbeats() {
    let mut sender = sender(&["10.0.0.9:7700"]);
    let mut directors = [FakeDirector::new("10.0.0.9:7700", "10.0.0.9:7702", 1)];
    // Record the director's challenge to the server's first heartbeat.
    let out = sender.poll_transmit(at(0), UNIX_MS, &Load::default(), false);
    let recorded = directors[0]
        .director
        .handle_datagram(at(0), UNIX_MS, server(), &out[0].1)
        .expect("a challenge");
    sender
        .handle_datagram(at(0), directors[0].heartbeats, &recorded)
        .unwrap();
    exchange(&mut sender, &mut directors, 0);
    assert_eq!(directors[0].live(), 1);
    let attacker = addr("203.0.113.5:9");
    for ms in (250..=5000).step_by(250) {
        let _ = sender.handle_datagram(at(ms), attacker, &recorded);
        exchange(&mut sender, &mut directors, ms);
        directors[0].director.handle_timeout(at(ms));
        assert_eq!(directors[0].live(), 1, "the server is lost at {ms} ms");
    }
    assert!(
        !sender.heartbeat_destinations().any(|to| to == attacker),
        "heartbeats redirected to the attacker"
    );
}
