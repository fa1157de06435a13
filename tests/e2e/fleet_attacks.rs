//! Attacks on the fleet (issue 11) with real processes on the host's loopback: a malicious
//! client against a director, and the client's failover against a healthy but slow server.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fleet::{get, Director};
use crate::support::{
    bin, free_udp_port, loopcastd_on_loopback, run_ok, status_of, wait_for_admin, write_content,
    Proc, Scratch,
};

/// A fleet key, one packed file in its own media directory, a director and one server of it.
fn one_server_fleet(scratch: &Scratch, len: usize, extra: &[&str]) -> (Director, Proc, PathBuf) {
    fleet_of_one(scratch, len, extra, &[])
}

/// As [`one_server_fleet`], with `director_extra` flags for the director (e.g.
/// `--heartbeat-listen off`). The server is given the director's request port.
fn fleet_of_one(
    scratch: &Scratch,
    len: usize,
    extra: &[&str],
    director_extra: &[&str],
) -> (Director, Proc, PathBuf) {
    let key = scratch.path("fleet.key");
    run_ok(Command::new(bin("loopcastd")).arg("fleet-key").arg(&key));
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let input = scratch.path("film.bin");
    write_content(&input, len, 29);
    run_ok(
        Command::new(bin("loopcast"))
            .arg("pack")
            .arg(&input)
            .arg("--media")
            .arg(&media)
            .arg("--no-encrypt"),
    );
    let director = Director::start_with(scratch, "director", &key, director_extra);
    let port = free_udp_port();
    let admin = scratch.path("server.sock");
    let server = Proc::spawn(
        "server",
        loopcastd_on_loopback(port, &media, &admin, extra)
            .arg("--director")
            .arg(format!("127.0.0.1:{}", director.port))
            .arg("--fleet-key")
            .arg(&key),
    );
    wait_for_admin(&admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = status_of(&director.admin);
        let ready = status["servers"].as_array().is_some_and(|list| {
            list.len() == 1 && !list[0]["files"].as_array().unwrap().is_empty()
        });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "no server listed: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (director, server, media.join("film.bin.lca"))
}

fn request_bytes(request_id: u64, name: &str) -> Vec<u8> {
    loopcast_proto::wire::control::ControlMessage::Request {
        request_id,
        multicast_ok: false,
        name: name.into(),
        hints: Default::default(),
    }
    .to_bytes()
}

/// A malicious client floods the director: unpadded Requests (what a spoofed source would
/// send to have the answers reflected at a victim), padded ones, and junk. The director answers
/// no more bytes than it received, and a real client is still served.
pub fn a_request_flood_is_never_answered_with_more_bytes_than_it_carried() {
    let scratch = Scratch::new("fleet-attack-flood");
    let (director, _server, archive) = one_server_fleet(&scratch, 256 << 10, &[]);
    let target = format!("127.0.0.1:{}", director.port);
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // Sends `count` datagrams made by `make`, in bursts; what came back, in bytes.
    let flood = |count: u64, make: &dyn Fn(u64) -> Vec<u8>| -> (usize, usize) {
        let started = Instant::now();
        let (mut sent, mut received) = (0, 0);
        let mut buffer = [0u8; 2048];
        attacker.set_nonblocking(true).unwrap();
        for i in 0..count {
            let bytes = make(i);
            if attacker.send_to(&bytes, &target).is_ok() {
                sent += bytes.len();
            }
            while let Ok((len, _)) = attacker.recv_from(&mut buffer) {
                received += len;
            }
            if i % 200 == 199 {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(started.elapsed() < Duration::from_secs(20), "bounded");
        }
        attacker.set_nonblocking(false).unwrap();
        while let Ok((len, _)) = attacker.recv_from(&mut buffer) {
            received += len;
        }
        (sent, received)
    };
    // Unpadded Requests (an empty name is the shortest, and its Reject the largest relative
    // to it): what a spoofed source sends to have a director's answers reflected at a victim.
    let (sent, received) = flood(2000, &|i| {
        let name = if i % 2 == 0 { "film.bin" } else { "" };
        let padded = request_bytes(i, name);
        padded[..4 + 8 + 1 + 1 + name.len() + 1].to_vec()
    });
    eprintln!("unpadded flood: {sent} bytes sent, {received} bytes answered");
    assert!(
        received <= sent,
        "answered {received} bytes for {sent} bytes sent"
    );
    // Padded Requests and junk: answered, never with more than they carried.
    let (sent, received) = flood(2000, &|i| {
        if i % 2 == 0 {
            request_bytes(i, "film.bin")
        } else {
            b"Lc\x01\x0d".to_vec()
        }
    });
    eprintln!("padded flood: {sent} bytes sent, {received} bytes answered");
    assert!(received > 0, "the padded Requests are answered");
    assert!(
        received <= sent,
        "answered {received} bytes for {sent} bytes sent"
    );
    let status = status_of(&director.admin);
    // 2,000 unpadded Requests and 1,000 junk datagrams, each a counted drop; as for the
    // Requests below, up to a tenth may be lost in the kernel before the director reads them
    // (its socket buffer on a loaded 2-core CI host: 2,856 of 3,000 arrived once).
    assert!(
        status["counters"]["dropped"].as_u64().unwrap() >= 2700,
        "{status}"
    );
    assert!(
        status["counters"]["requests"].as_u64().unwrap() >= 900,
        "{status}"
    );
    // A real client is still served, from the one server.
    let output = scratch.path("after-flood.lca");
    let report = get(&target, "film.bin", &output, &[]).report(Duration::from_secs(30));
    assert_eq!(report["verified"], true, "{report}");
    assert!(std::fs::read(&output).unwrap() == std::fs::read(&archive).unwrap());
}

/// R17: the 800 ms silence failover is for a server that stopped, not for a slow one. A
/// server at a fixed 2 Mbit/s (about 170 datagrams a second) reached through a director
/// delivers the whole file without the client ever giving it up or asking again.
pub fn a_slow_but_healthy_server_is_never_failed_over() {
    let scratch = Scratch::new("fleet-attack-slow");
    let (director, _server, archive) =
        one_server_fleet(&scratch, 1 << 20, &["--rate", "2M", "--fixed-rate"]);
    let target = format!("127.0.0.1:{}", director.port);
    let output = scratch.path("slow.lca");
    let report = get(&target, "film.bin", &output, &[]).report(Duration::from_secs(60));
    eprintln!(
        "slow: {} s, failovers {}, re-requests {}",
        report["seconds"], report["failovers"], report["session_rerequests"]
    );
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["failovers"], 0, "{report}");
    assert_eq!(report["session_rerequests"], 0, "{report}");
    assert!(std::fs::read(&output).unwrap() == std::fs::read(&archive).unwrap());
}

/// R17: the only server holding the file stalls for 1.2 s (SIGSTOP, then SIGCONT) mid-transfer:
/// the client gives it up after 800 ms and asks the director, which has declared the server
/// dead and answers Busy. The download goes on when the server is back; before, `loopcast
/// get` ended with exit 3 ("every server with ... is full or draining").
pub fn a_stalled_only_server_does_not_end_a_download_through_a_director() {
    use nix::sys::signal::{kill, Signal};
    let scratch = Scratch::new("fleet-attack-stall");
    let (director, server, archive) =
        one_server_fleet(&scratch, 4 << 20, &["--rate", "10M", "--fixed-rate"]);
    let target = format!("127.0.0.1:{}", director.port);
    let output = scratch.path("stalled.lca");
    let client = get(&target, "film.bin", &output, &[]);
    std::thread::sleep(Duration::from_millis(1000));
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    kill(pid, Signal::SIGCONT).unwrap();
    let report = client.report(Duration::from_secs(60));
    eprintln!(
        "stall: {} s, failovers {}, re-requests {}",
        report["seconds"], report["failovers"], report["session_rerequests"]
    );
    assert_eq!(report["verified"], true, "{report}");
    assert!(report["failovers"].as_u64().unwrap() >= 1, "{report}");
    assert!(std::fs::read(&output).unwrap() == std::fs::read(&archive).unwrap());
}

/// A Request flood against a director (two senders on this host, about 500,000 padded
/// Requests a second, 5 s) must not make it declare a live server dead. Heartbeats and
/// clients' Requests share one port and one receive queue: under the flood the kernel drops
/// heartbeats with the Requests, and after 3 in a row the server is "down" (seen twice in 5 s by
/// hand with loopcastd). This is why heartbeats have a port of their own by default
/// (`--heartbeat-listen 7702`, the test below); this test runs the director with
/// `--heartbeat-listen off` and still fails. Not registered in `trials()`: it shows a
/// configuration we advise against, and fails.
#[allow(dead_code)]
pub fn a_request_flood_does_not_make_a_director_lose_a_live_server() {
    let scratch = Scratch::new("fleet-attack-heartbeat-starve");
    let (director, _server, _archive) =
        fleet_of_one(&scratch, 64 << 10, &[], &["--heartbeat-listen", "off"]);
    let (_, seen_dead) = flood_and_watch(director.port, &director.admin);
    assert!(
        seen_dead.is_none(),
        "the director lost its server: {seen_dead:?}"
    );
}

/// The same flood against a director with its default heartbeat port (the server given only
/// the request port, as an operator would): the server learns the heartbeat port from the
/// director's challenge, and stays online throughout (its every fourth heartbeat, sent to the
/// request port, may drown in the flood; three of four arrive). Registered, with one flood
/// thread (a test beside it keeps a core). 2026-11-27, one thread: 2.3-3.5 M Requests in 5 s,
/// online throughout in 3 of 3 runs, while the shared-port test above lost its server in 1 of 2
/// (by hand, 2026-11-26, two threads: 4.17 M in 5 s, online here; lost on the shared port).
pub fn a_request_flood_does_not_crowd_out_heartbeats_on_their_own_port() {
    let scratch = Scratch::new("fleet-attack-heartbeat-port");
    let (director, _server, _archive) = one_server_fleet(&scratch, 64 << 10, &[]);
    let before = status_of(&director.admin);
    assert!(
        before["counters"]["heartbeats_on_heartbeat_port"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "heartbeats reach the heartbeat port: {before}"
    );
    let (sent, seen_dead) = flood_and_watch(director.port, &director.admin);
    eprintln!("flood: {sent} Requests in 5 s");
    assert!(sent > 100_000, "a flood: {sent} Requests");
    assert!(
        seen_dead.is_none(),
        "the director lost its server: {seen_dead:?}"
    );
    let after = status_of(&director.admin);
    assert!(
        after["counters"]["requests"].as_u64().unwrap_or(0) > 10_000,
        "the director was busy with the flood: {after}"
    );
}

/// One thread floods: the director and a test running beside this one share the other core.
const FLOOD_THREADS: usize = 1;

/// `FLOOD_THREADS` senders flood the director's clients' port with padded Requests for 5 s (at
/// most 5,000,000 each) while its status is read every 50 ms: the Requests sent, and the first
/// status that did not list the server online, if any.
fn flood_and_watch(port: u16, admin: &Path) -> (u64, Option<serde_json::Value>) {
    let target = format!("127.0.0.1:{port}");
    let senders: Vec<_> = (0..FLOOD_THREADS)
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                let request = request_bytes(5, "zzz");
                let started = Instant::now();
                let mut sent = 0u64;
                while started.elapsed() < Duration::from_secs(5) && sent < 5_000_000 {
                    for _ in 0..1000 {
                        let _ = socket.send_to(&request, &target);
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    let mut seen_dead = None;
    while senders.iter().any(|s| !s.is_finished()) {
        let status = status_of(admin);
        if status["servers"][0]["state"] != "online" {
            seen_dead.get_or_insert(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = senders.into_iter().map(|s| s.join().unwrap()).sum();
    (sent, seen_dead)
}
