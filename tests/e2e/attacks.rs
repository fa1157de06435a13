//! Every attack of issue 9 against the real binaries, each asserting what a user or an operator
//! would check: the output is byte-identical and `loopcast inspect --verify` passes, the exit
//! codes and messages, the counters of `loopcastctl status --json` and `loopcast get --json`,
//! and the bytes a victim's socket receives.
//!
//! - forged copies of data datagrams racing the genuine ones ahead of the loop, on unicast
//!   (from another loopback address, and spoofed as the server) and on multicast (a forger host
//!   on the group, inside namespaces);
//! - spoofed Requests (amplification), NAK starvation by session cycling, a session-table hog;
//! - the server killed (-9) or shut down (SIGTERM) and restarted mid-transfer, a client stopped
//!   past the session timeout;
//! - a served archive flipped or truncated on disk; one damaged before it was served with
//!   `--no-verify` (the client's stall names the datagrams that failed their hash).
//!
//! Traffic goes only to loopback, or inside namespaces the test creates; every load loop is
//! bounded in count and time.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loopcast_proto::carousel::SessionId;
use loopcast_proto::wire::control::{ControlMessage, Transport, CONTROL_LEN_MAX};

use crate::support::*;

/// Bytes of the datagram header (docs/protocol.md); the payload follows.
const HEADER_LEN: usize = 32;

/// Incompressible content packed unencrypted (so `--extract` needs no keys): returns the
/// original bytes and the archive's path in `media`.
fn packed_noise(
    scratch: &Scratch,
    name: &str,
    len: usize,
    seed: u64,
) -> (Vec<u8>, std::path::PathBuf) {
    let input = scratch.path(name);
    let mut state = seed | 1;
    let original = noise(&mut state, len);
    std::fs::write(&input, &original).unwrap();
    let media = scratch.path("media");
    pack_into(&input, &media, &["--no-encrypt"]);
    (original, media.join(format!("{name}.lca")))
}

/// `loopcast get SERVER NAME --json --output <tag>.lca --extract <tag>.out`, plus `extra`.
fn get_command(scratch: &Scratch, server: &str, name: &str, tag: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(bin("loopcast"));
    command
        .args(["get", server, name, "--json"])
        .arg("--output")
        .arg(scratch.path(&format!("{tag}.lca")))
        .arg("--extract")
        .arg(scratch.path(&format!("{tag}.out")))
        .args(extra);
    command
}

/// What a user checks after a get: the extracted file is the original, and the archive passes
/// `loopcast inspect --verify` on its own.
fn assert_identical_and_verified(scratch: &Scratch, tag: &str, original: &[u8]) {
    let out = std::fs::read(scratch.path(&format!("{tag}.out"))).unwrap();
    assert!(
        out == original,
        "{tag}: extracted bytes differ from the original"
    );
    let inspect = json_of(&run_ok(
        Command::new(bin("loopcast"))
            .args(["inspect", "--verify", "--json"])
            .arg(scratch.path(&format!("{tag}.lca"))),
    ));
    assert_eq!(inspect["verified"], true, "{tag}: {inspect}");
}

/// Forged copies of an archive's data datagrams: the genuine header (so each parses and sits at
/// its serial) with the payload changed.
struct Forgery {
    archive: Vec<u8>,
    datagram_size: usize,
    loop_len: u32,
}

impl Forgery {
    fn of(archive: &Path) -> Forgery {
        let (datagram_size, loop_len) = shape_of(archive);
        Forgery {
            archive: std::fs::read(archive).unwrap(),
            datagram_size,
            loop_len,
        }
    }

    /// A forged copy of `serial` then the genuine one, back to back (so that both arrive
    /// before their hash block, in one receive batch), if it is a data datagram (level 0); hash
    /// blocks are left alone (the info's top hashes pin them anyway).
    fn forged_then_genuine(&self, serial: u32) -> Option<[Vec<u8>; 2]> {
        let at = loopcast_archive::format::DATAGRAMS_OFFSET as usize
            + serial as usize * self.datagram_size;
        let genuine = self.archive[at..at + self.datagram_size].to_vec();
        if genuine[3] != 1 || genuine[16] != 0 {
            return None;
        }
        let mut forged = genuine.clone();
        for byte in &mut forged[HEADER_LEN..HEADER_LEN + 64] {
            *byte ^= 0x5a;
        }
        Some([forged, genuine])
    }
}

/// The running channel's next loop serial, from `loopcastctl status`.
fn next_serial(admin: &Path) -> Option<u32> {
    let output = Command::new(bin("loopcastctl"))
        .arg("--socket")
        .arg(admin)
        .args(["status", "--json"])
        .output()
        .ok()?;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    status["channels"]
        .as_array()?
        .iter()
        .find(|c| c["running"] != false)?["next_serial"]
        .as_u64()
        .map(|s| s as u32)
}

/// Sends a UDP datagram with any source address through a raw socket (IP_HDRINCL; root).
struct Spoofer(socket2::Socket);

impl Spoofer {
    fn new() -> Spoofer {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::UDP),
        )
        .expect("a raw socket (root)");
        socket.set_header_included_v4(true).unwrap();
        Spoofer(socket)
    }

    fn send(&self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
        let total = 20 + 8 + payload.len();
        let mut packet = Vec::with_capacity(total);
        packet.extend_from_slice(&[0x45, 0]);
        packet.extend_from_slice(&(total as u16).to_be_bytes());
        // id, flags (DF), TTL, protocol, checksum (the kernel fills id and checksum).
        packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        packet.extend_from_slice(&from.ip().octets());
        packet.extend_from_slice(&to.ip().octets());
        packet.extend_from_slice(&from.port().to_be_bytes());
        packet.extend_from_slice(&to.port().to_be_bytes());
        packet.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0]); // no UDP checksum (valid on IPv4)
        packet.extend_from_slice(payload);
        let destination = socket2::SockAddr::from(SocketAddrV4::new(*to.ip(), 0));
        self.0.send_to(&packet, &destination).expect("raw send");
    }
}

/// How a forger reaches its victim.
#[derive(Clone, Copy)]
enum ForgeVia {
    /// A plain socket bound at another loopback address.
    OtherAddress(Ipv4Addr),
    /// A raw socket with the server's address as source (root).
    SpoofedServer(SocketAddrV4),
}

/// Sends forged copies of the data serials just ahead of the running loop to `target`, each
/// followed by the genuine copy, round after round, until `stop` (at most `limit`); returns
/// how many serials it forged.
fn forge_ahead(
    forgery: &Forgery,
    admin: &Path,
    via: ForgeVia,
    target: SocketAddrV4,
    ahead: std::ops::Range<u32>,
    stop: &AtomicBool,
    limit: Duration,
) -> u64 {
    let plain = match via {
        ForgeVia::OtherAddress(ip) => Some(UdpSocket::bind((ip, 0)).unwrap()),
        ForgeVia::SpoofedServer(_) => None,
    };
    let raw = matches!(via, ForgeVia::SpoofedServer(_)).then(Spoofer::new);
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
        let Some(next) = next_serial(admin) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        for offset in ahead.clone() {
            let serial = (next + offset) % forgery.loop_len;
            let Some(pair) = forgery.forged_then_genuine(serial) else {
                continue;
            };
            for datagram in &pair {
                match (&plain, &raw, via) {
                    (Some(socket), _, _) => {
                        let _ = socket.send_to(datagram, target);
                    }
                    (_, Some(raw), ForgeVia::SpoofedServer(server)) => {
                        raw.send(server, target, datagram)
                    }
                    _ => unreachable!(),
                }
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sent
}

/// The address of the session that is not in `before`, once `loopcastctl status` lists it.
fn new_session_client(admin: &Path, before: &[String]) -> SocketAddrV4 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let status = status_of(admin);
        for session in status["sessions"].as_array().unwrap() {
            let client = session["client"].as_str().unwrap().to_owned();
            if !before.contains(&client) {
                return client.parse().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the victim's session never showed in loopcastctl status");
}

fn session_clients(admin: &Path) -> Vec<String> {
    status_of(admin)["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client"].as_str().unwrap().to_owned())
        .collect()
}

fn counter(report: &serde_json::Value, name: &str) -> u64 {
    report["receiver"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no receiver counter {name}: {report}"))
}

/// Forged + genuine race on unicast: a client joins mid-loop, before the hash blocks of what is
/// ahead have arrived, and a forger sends it forged copies of those datagrams first.
fn forged_race_unicast(via: ForgeVia) {
    let scratch = Scratch::new("attack-forge");
    let (original, archive) = packed_noise(&scratch, "race.bin", 6 << 20, 0xf0f0);
    let forgery = Forgery::of(&archive);
    // ~2.6 s per loop: the victim joins mid-loop and the forger stays ahead of it. One channel
    // shared by the unicast clients (`--fixed-rate`; with automatic rates each unicast client
    // gets a channel of its own, starting at the loop's beginning, so nobody joins mid-loop):
    // the defence must hold in that configuration too.
    let server = quiet_server(&scratch, &["--rate", "20M", "--fixed-rate"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    let early = Proc::spawn(
        "early get",
        &mut get_command(&scratch, &server_addr, "race.bin", "early", &[]),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let before = session_clients(&server.admin);
    let victim = Proc::spawn(
        "victim get",
        &mut get_command(&scratch, &server_addr, "race.bin", "victim", &[]),
    );
    let target = new_session_client(&server.admin, &before);
    let via = match via {
        ForgeVia::SpoofedServer(_) => {
            ForgeVia::SpoofedServer(SocketAddrV4::new(Ipv4Addr::LOCALHOST, server.port))
        }
        other => other,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let forged = std::thread::scope(|scope| {
        let forger = scope.spawn(|| {
            forge_ahead(
                &forgery,
                &server.admin,
                via,
                target,
                16..700,
                &stop,
                Duration::from_secs(30),
            )
        });
        let victim_report = victim.report(Duration::from_secs(40));
        stop.store(true, Ordering::Relaxed);
        (victim_report, forger.join().unwrap())
    });
    let (victim_report, forged_sent) = forged;
    let early_report = early.report(Duration::from_secs(40));
    assert!(forged_sent > 500, "the forger sent {forged_sent}");
    assert!(
        victim_report["join_serial"].as_u64().unwrap() > 0,
        "the victim joined mid-loop: {victim_report}"
    );
    assert_identical_and_verified(&scratch, "victim", &original);
    assert_identical_and_verified(&scratch, "early", &original);
    assert_eq!(early_report["verified"], true);
    eprintln!(
        "forger sent {forged_sent}; victim joined at {}, foreign source dropped {}, receiver {}",
        victim_report["join_serial"],
        victim_report["foreign_source_dropped"],
        victim_report["receiver"]
    );
    match via {
        ForgeVia::OtherAddress(_) => assert!(
            victim_report["foreign_source_dropped"].as_u64().unwrap() > 0,
            "the forger's datagrams are counted as from a foreign source: {victim_report}"
        ),
        ForgeVia::SpoofedServer(_) => {
            let caught = counter(&victim_report, "pending_rejected")
                + counter(&victim_report, "dropped_pending_conflict")
                + counter(&victim_report, "dropped_hash_mismatch");
            assert!(
                caught > 0,
                "forged copies with the server's source are caught by the hash tree: {victim_report}"
            );
        }
    }
    assert!(server.process.terminate().status.success());
}

pub fn forged_race_unicast_from_another_address() {
    forged_race_unicast(ForgeVia::OtherAddress(Ipv4Addr::new(127, 0, 0, 5)));
}

pub fn forged_race_unicast_spoofed_as_the_server() {
    // The real server address is filled in once the server runs.
    forged_race_unicast(ForgeVia::SpoofedServer(SocketAddrV4::new(
        Ipv4Addr::LOCALHOST,
        0,
    )));
}

/// Runs `body` on a thread inside network namespace `ns` (setns affects only that thread, so
/// its sockets live there).
fn in_namespace<T: Send>(ns: &str, body: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let handle = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
                // SAFETY: setns on a valid namespace fd; it changes only this thread's network
                // namespace, which ends with the scope.
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
                body()
            })
            .join()
            .unwrap()
    })
}

/// The same race on multicast: a forger host on the group sends forged datagrams to it while
/// two clients (one joining mid-loop) receive.
pub fn forged_race_multicast_from_a_host_on_the_group() {
    use loopcast_tools::topology::BridgeTopology;
    let tag = format!("lca{}", std::process::id() % 100_000);
    let topology = BridgeTopology::build(
        &tag,
        &[
            ("s", "10.79.0.1"),
            ("a", "10.79.0.2"),
            ("b", "10.79.0.3"),
            ("f", "10.79.0.9"),
        ],
        1500,
    )
    .expect("namespaces build");
    let hosts = topology.hosts.clone();
    let scratch = Scratch::new("attack-mcast");
    let (original, archive) = packed_noise(&scratch, "film.bin", 12 << 20, 0xabcd);
    let forgery = Forgery::of(&archive);
    let admin = scratch.path("admin.sock");
    let server = serve_in_namespace(
        &hosts[0].0,
        &hosts[0].1,
        &scratch.path("media"),
        &admin,
        "60M",
    );
    let client = |name: &str, host: usize| {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &hosts[host].0])
            .arg(bin("loopcast"))
            .args(["get", &format!("{}:7700", hosts[0].1), "film.bin", "--json"])
            .args(["--multicast-interface", &hosts[host].1])
            .arg("--output")
            .arg(scratch.path(&format!("{name}.lca")))
            .arg("--extract")
            .arg(scratch.path(&format!("{name}.out")));
        Proc::spawn(name, &mut command)
    };
    let first = client("first", 1);
    // Wait for the channel and its group.
    let deadline = Instant::now() + Duration::from_secs(10);
    let group: SocketAddrV4 = loop {
        let status = status_of(&admin);
        if let Some(group) = status["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|c| c["group"].as_str().map(str::to_owned))
        {
            break group.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no multicast channel: {status}");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(600));
    let late = client("late", 2);
    let stop = AtomicBool::new(false);
    let forger_ip: Ipv4Addr = hosts[3].1.parse().unwrap();
    let (reports, forged_sent) = std::thread::scope(|scope| {
        let forger = scope.spawn(|| {
            in_namespace(&hosts[3].0, || {
                let socket = multicast_forger_socket(forger_ip);
                let started = Instant::now();
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                    let Some(next) = next_serial(&admin) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    for offset in 32..1500 {
                        let serial = (next + offset) % forgery.loop_len;
                        for datagram in forgery.forged_then_genuine(serial).iter().flatten() {
                            let _ = socket.send_to(datagram, group);
                        }
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                sent
            })
        });
        let reports = [
            ("first", first.report(Duration::from_secs(45))),
            ("late", late.report(Duration::from_secs(45))),
        ];
        stop.store(true, Ordering::Relaxed);
        (reports, forger.join().unwrap())
    });
    assert!(forged_sent > 1000, "the forger sent {forged_sent}");
    let mut caught = 0;
    for (name, report) in &reports {
        assert_eq!(report["transport"], "multicast", "{name}: {report}");
        assert_identical_and_verified(&scratch, name, &original);
        caught += counter(report, "pending_rejected")
            + counter(report, "dropped_pending_conflict")
            + counter(report, "dropped_hash_mismatch");
    }
    for (name, report) in &reports {
        eprintln!(
            "{name}: joined at {}, receiver {}",
            report["join_serial"], report["receiver"]
        );
    }
    eprintln!("forger sent {forged_sent}");
    assert!(
        caught > 0,
        "forged datagrams were caught and counted: {reports:?}"
    );
    assert!(
        reports[1].1["join_serial"].as_u64().unwrap() > 0,
        "the late client joined mid-loop: {}",
        reports[1].1
    );
    assert!(server.terminate().status.success());
    drop(topology);
    assert_no_namespaces_left(&tag);
}

/// Requests with a victim's source address: the victim gets small replies worth at most three
/// times what was sent in its name, and never a loop datagram. Also from a real socket that
/// never echoes its tokens.
pub fn spoofed_requests_amplify_nothing() {
    let scratch = Scratch::new("attack-amp");
    let (_, _) = packed_noise(&scratch, "big.bin", 4 << 20, 0x77);
    let server = quiet_server(&scratch, &["--rate", "100M"]);
    let server_addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, server.port);
    let victim = UdpSocket::bind("127.0.0.77:0").unwrap();
    let victim_addr = match victim.local_addr().unwrap() {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => unreachable!(),
    };
    // A second "victim" that asks itself, from a real socket, and never echoes a token.
    let asker = UdpSocket::bind("127.0.0.78:0").unwrap();
    let request = |id: u64| {
        ControlMessage::Request {
            request_id: id,
            multicast_ok: false,
            name: "big.bin".into(),
            hints: Default::default(),
        }
        .to_bytes()
    };
    let window = Duration::from_secs(5);
    let count_for = |socket: &UdpSocket| {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        let (mut bytes, mut datagrams, mut loop_datagrams, mut largest) =
            (0u64, 0u64, 0u64, 0usize);
        let mut buffer = vec![0u8; 65_536];
        while started.elapsed() < window {
            if let Ok(len) = socket.recv(&mut buffer) {
                bytes += len as u64;
                datagrams += 1;
                largest = largest.max(len);
                // Loop datagrams start "LC"; control messages "Lc".
                if buffer[..len].starts_with(b"LC") {
                    loop_datagrams += 1;
                }
            }
        }
        (bytes, datagrams, loop_datagrams, largest)
    };
    let sent_bytes = AtomicU64::new(0);
    let asked_bytes = AtomicU64::new(0);
    let (spoofed, asked) = std::thread::scope(|scope| {
        let spoofed = scope.spawn(|| count_for(&victim));
        let asked = scope.spawn(|| count_for(&asker));
        let spoofer = Spoofer::new();
        for id in 0..2000u64 {
            let bytes = request(id);
            spoofer.send(victim_addr, server_addr, &bytes);
            sent_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let bytes = request(1_000_000 + id);
            asker.send_to(&bytes, server_addr).unwrap();
            asked_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        (spoofed.join().unwrap(), asked.join().unwrap())
    });
    let status = server.status();
    for (who, (bytes, datagrams, loop_datagrams, largest), sent) in [
        (
            "spoofed victim",
            spoofed,
            sent_bytes.load(Ordering::Relaxed),
        ),
        ("asker", asked, asked_bytes.load(Ordering::Relaxed)),
    ] {
        assert!(
            sent >= 2000 * 378,
            "{who}: requests are padded to 378 bytes"
        );
        assert!(
            datagrams > 0,
            "{who}: the server answered something (the test reached it)"
        );
        assert_eq!(
            loop_datagrams, 0,
            "{who}: loop datagrams reached the victim: {status}"
        );
        assert!(
            bytes <= 3 * sent,
            "{who}: {bytes} bytes received for {sent} sent in its name"
        );
        assert!(largest <= 3 * 378, "{who}: a reply of {largest} bytes");
        eprintln!("{who}: {datagrams} datagrams, {bytes} bytes for {sent} bytes of requests");
    }
    let counters = &status["counters"];
    assert_eq!(counters["sessions_validated"], 0, "{status}");
    assert_eq!(
        counters["datagrams_sent"], 0,
        "no loop datagram went anywhere: {status}"
    );
    assert!(
        counters["requests_rate_limited"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(server.process.terminate().status.success());
}

/// `UnicastServer::start` with quiet logs (see `serve_on`).
fn quiet_server(scratch: &Scratch, extra: &[&str]) -> UnicastServer {
    let port = free_udp_port();
    let admin = scratch.path("admin.sock");
    let process = serve_on(port, &scratch.path("media"), &admin, extra);
    UnicastServer {
        process,
        port,
        admin,
    }
}

/// One attacker session, played by hand from its own socket.
struct AttackSession {
    socket: UdpSocket,
    request_id: u64,
    joined: Option<SessionId>,
    opened: Instant,
}

/// How an attacker uses its sessions.
struct AttackPlan {
    /// Ports (one session each) at once.
    ports: usize,
    /// A session is left and replaced (new port, new Request) after this long.
    joined_lifetime: Duration,
    /// A port whose Request got no Offer is replaced after this long.
    unanswered_lifetime: Duration,
    /// NAK the whole loop every 10 ms from every session.
    nak: bool,
}

/// An attacker at `address` with `plan.ports` ports: each asks, echoes its Offer's token, keeps
/// its session alive with Status (and NAKs if planned), and is replaced as planned. Runs until
/// `stop` or `limit`; returns (offers, naks sent).
fn attack_sessions(
    server: SocketAddr,
    address: Ipv4Addr,
    name: &str,
    plan: AttackPlan,
    stop: &AtomicBool,
    limit: Duration,
) -> (u64, u64) {
    let started = Instant::now();
    let mut next_id = 1u64;
    let mut slots: Vec<Option<AttackSession>> = (0..plan.ports).map(|_| None).collect();
    let (mut offers, mut naks) = (0u64, 0u64);
    let mut buffer = vec![0u8; 65_536];
    let mut loop_len = 0u32;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
        for slot in slots.iter_mut() {
            let stale = slot.as_ref().is_none_or(|s| {
                let lifetime = match s.joined {
                    Some(_) => plan.joined_lifetime,
                    None => plan.unanswered_lifetime,
                };
                s.opened.elapsed() >= lifetime
            });
            if stale {
                if let Some(AttackSession {
                    socket,
                    joined: Some(session),
                    ..
                }) = slot.take()
                {
                    let _ = socket.send_to(&ControlMessage::Leave { session }.to_bytes(), server);
                }
                let socket = UdpSocket::bind((address, 0)).unwrap();
                socket.set_nonblocking(true).unwrap();
                let request = ControlMessage::Request {
                    request_id: next_id,
                    multicast_ok: false,
                    name: name.into(),
                    hints: Default::default(),
                };
                let _ = socket.send_to(&request.to_bytes(), server);
                *slot = Some(AttackSession {
                    socket,
                    request_id: next_id,
                    joined: None,
                    opened: Instant::now(),
                });
                next_id += 1;
            }
            let attack = slot.as_mut().unwrap();
            // Drain what arrived (loop data too); answer an Offer with its token.
            for _ in 0..256 {
                let Ok(len) = attack.socket.recv(&mut buffer) else {
                    break;
                };
                if let Ok(ControlMessage::Offer {
                    request_id,
                    session,
                    token,
                    info,
                    ..
                }) = ControlMessage::parse(&buffer[..len.min(CONTROL_LEN_MAX)])
                {
                    if request_id == attack.request_id && attack.joined.is_none() {
                        offers += 1;
                        loop_len = info.loop_len;
                        attack.joined = Some(session);
                        let joined = ControlMessage::Joined {
                            session,
                            token,
                            transport: Transport::Unicast,
                        };
                        let _ = attack.socket.send_to(&joined.to_bytes(), server);
                    }
                }
            }
            if let (true, Some(session)) = (loop_len > 0, attack.joined) {
                let held = ControlMessage::Status {
                    session,
                    held: 0,
                    loop_len,
                    done: false,
                };
                let _ = attack.socket.send_to(&held.to_bytes(), server);
                if !plan.nak {
                    continue;
                }
                let whole = ControlMessage::Nak {
                    session,
                    ranges: vec![(0, loop_len)],
                };
                let _ = attack.socket.send_to(&whole.to_bytes(), server);
                naks += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for slot in slots.into_iter().flatten() {
        if let Some(session) = slot.joined {
            let _ = slot
                .socket
                .send_to(&ControlMessage::Leave { session }.to_bytes(), server);
        }
    }
    (offers, naks)
}

/// NAK starvation by session cycling: an attacker NAKs whole loops from sessions it keeps
/// replacing; an honest get still finishes within 2.5× its undisturbed time.
pub fn nak_starvation_by_session_cycling_leaves_the_loop_running() {
    let scratch = Scratch::new("attack-nak");
    let (original, _) = packed_noise(&scratch, "nak.bin", 6 << 20, 0x4e4b);
    let server = quiet_server(&scratch, &["--rate", "20M"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    let timed_get = |tag: &str| {
        let started = Instant::now();
        let report = Proc::spawn(
            tag,
            &mut get_command(&scratch, &server_addr, "nak.bin", tag, &[]),
        )
        .report(Duration::from_secs(60));
        let elapsed = started.elapsed();
        assert_identical_and_verified(&scratch, tag, &original);
        (report, elapsed)
    };
    let (_, undisturbed) = timed_get("calm");
    let stop = AtomicBool::new(false);
    let server_socket: SocketAddr = server_addr.parse().unwrap();
    let ((_, attacked), (offers, naks)) = std::thread::scope(|scope| {
        let attacker = scope.spawn(|| {
            attack_sessions(
                server_socket,
                Ipv4Addr::new(127, 0, 0, 9),
                "nak.bin",
                AttackPlan {
                    ports: 16,
                    joined_lifetime: Duration::from_millis(500),
                    unanswered_lifetime: Duration::from_millis(500),
                    nak: true,
                },
                &stop,
                Duration::from_secs(40),
            )
        });
        // Let the attack run first: the honest client arrives into it.
        std::thread::sleep(Duration::from_millis(1500));
        let honest = timed_get("honest");
        stop.store(true, Ordering::Relaxed);
        (honest, attacker.join().unwrap())
    });
    let status = server.status();
    eprintln!(
        "undisturbed {undisturbed:?}, under attack {attacked:?}; attacker: {offers} offers, {naks} NAKs; {}",
        status["counters"]
    );
    assert!(
        offers >= 16 && naks > 100,
        "the attack ran: {offers} offers, {naks} NAKs"
    );
    assert!(
        status["counters"]["naks_over_budget"].as_u64().unwrap() > 0,
        "the attacker's NAKs ran into the budgets: {status}"
    );
    assert!(
        attacked.as_secs_f64() <= 2.5 * undisturbed.as_secs_f64(),
        "the honest get took {attacked:?} under attack, {undisturbed:?} undisturbed"
    );
    assert!(server.process.terminate().status.success());
}

/// One address opens sessions as fast as it can from many ports: it is limited, and a client
/// from another address still gets its file.
pub fn session_table_hog_is_limited_per_address() {
    let scratch = Scratch::new("attack-hog");
    let (original, _) = packed_noise(&scratch, "hog.bin", 2 << 20, 0x406);
    let server = quiet_server(&scratch, &["--rate", "20M"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    let server_socket: SocketAddr = server_addr.parse().unwrap();
    let hog = Ipv4Addr::new(127, 0, 0, 3);
    let stop = AtomicBool::new(false);
    let (report, most_hog_sessions, (offers, _)) = std::thread::scope(|scope| {
        // 256 ports; every session kept, every port without an Offer replaced after 200 ms:
        // over a thousand Requests a second.
        let attacker = scope.spawn(|| {
            attack_sessions(
                server_socket,
                hog,
                "hog.bin",
                AttackPlan {
                    ports: 256,
                    joined_lifetime: Duration::from_secs(60),
                    unanswered_lifetime: Duration::from_millis(200),
                    nak: false,
                },
                &stop,
                Duration::from_secs(40),
            )
        });
        std::thread::sleep(Duration::from_millis(1000));
        let honest = Proc::spawn(
            "honest get",
            &mut get_command(&scratch, &server_addr, "hog.bin", "honest", &[]),
        );
        let mut most = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let from_hog = session_clients(&server.admin)
                .iter()
                .filter(|c| c.starts_with("127.0.0.3:"))
                .count();
            most = most.max(from_hog);
            std::thread::sleep(Duration::from_millis(100));
        }
        let report = honest.report(Duration::from_secs(40));
        stop.store(true, Ordering::Relaxed);
        (report, most, attacker.join().unwrap())
    });
    assert_eq!(report["verified"], true);
    assert_identical_and_verified(&scratch, "honest", &original);
    let status = server.status();
    let counters = &status["counters"];
    eprintln!("hog: {offers} offers, at most {most_hog_sessions} sessions at once; {counters}");
    assert!(offers > 0, "the hog got some sessions");
    assert!(
        (8..=16).contains(&most_hog_sessions),
        "the hog held sessions, and one address holds at most 16: saw {most_hog_sessions}"
    );
    assert!(
        counters["requests_rate_limited"].as_u64().unwrap() > 1000,
        "{status}"
    );
    assert!(counters["rejected"].as_u64().unwrap() > 0, "{status}");
    assert!(server.process.terminate().status.success());
}

/// loopcastd on a given port (to restart one where it was). It logs warnings and errors only:
/// its stderr is read when it exits, and thousands of attacker sessions must not fill the pipe.
fn serve_on(port: u16, media: &Path, admin: &Path, extra: &[&str]) -> Proc {
    let server = Proc::spawn(
        "loopcastd",
        loopcastd_on_loopback(port, media, admin, extra).env("RUST_LOG", "warn"),
    );
    wait_for_admin(admin);
    server
}

/// Waits until the only session has `fraction` of the loop (from `loopcastctl status`).
fn wait_until_held(admin: &Path, loop_len: u32, fraction: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status_of(admin);
        let held = status["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["held"].as_u64())
            .max()
            .unwrap_or(0);
        if held as f64 >= fraction * f64::from(loop_len) {
            return;
        }
        assert!(Instant::now() < deadline, "never held {fraction}: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server that goes away mid-transfer (`how`), then comes back on the same port and media:
/// the client asks again and continues from what it holds.
fn server_lost_mid_transfer(how: &str) {
    let scratch = Scratch::new(&format!("attack-{how}"));
    let (original, archive) = packed_noise(&scratch, "film.bin", 8 << 20, 0x5e55);
    let (_, loop_len) = shape_of(&archive);
    let media = scratch.path("media");
    let admin = scratch.path("admin.sock");
    let port = free_udp_port();
    let mut extra = vec!["--rate", "20M"];
    if how == "stop" {
        extra.extend(["--session-timeout", "1"]);
    }
    let mut server = Some(serve_on(port, &media, &admin, &extra));
    let server_addr = format!("127.0.0.1:{port}");
    let client = Proc::spawn(
        "get",
        &mut get_command(&scratch, &server_addr, "film.bin", "film", &[]),
    );
    let client_pid = nix::unistd::Pid::from_raw(client.child.id() as i32);
    wait_until_held(&admin, loop_len, 0.3);
    match how {
        "kill" => {
            let mut killed = server.take().unwrap();
            killed.child.kill().unwrap();
            let _ = killed.child.wait();
            std::thread::sleep(Duration::from_millis(500));
            server = Some(serve_on(port, &media, &admin, &extra));
        }
        "term" => {
            let output = server.take().unwrap().terminate();
            assert!(output.status.success(), "loopcastd exits 0 on SIGTERM");
            std::thread::sleep(Duration::from_millis(1500));
            server = Some(serve_on(port, &media, &admin, &extra));
        }
        "stop" => {
            use nix::sys::signal::{kill, Signal};
            kill(client_pid, Signal::SIGSTOP).unwrap();
            std::thread::sleep(Duration::from_secs(3));
            let expired = status_of(&admin)["counters"]["sessions_expired"]
                .as_u64()
                .unwrap();
            assert!(
                expired >= 1,
                "the stopped client's session expired on the server"
            );
            kill(client_pid, Signal::SIGCONT).unwrap();
        }
        _ => unreachable!(),
    }
    let output = client.wait(Duration::from_secs(40));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "get failed: {stderr}");
    let report = json_of(&output);
    assert_identical_and_verified(&scratch, "film", &original);
    assert!(
        report["session_rerequests"].as_u64().unwrap() >= 1,
        "the client asked again: {report}"
    );
    let received = counter(&report, "received");
    eprintln!(
        "{how}: {} re-requests, {received} datagrams received for a loop of {loop_len}",
        report["session_rerequests"]
    );
    assert!(
        received < 2 * u64::from(loop_len),
        "continued, not restarted: {received} datagrams received for a loop of {loop_len}: {report}"
    );
    if how == "term" {
        assert!(
            stderr.contains("shutting down"),
            "the client heard the server's Ended (shutting down): {stderr}"
        );
    }
    let output = server.take().unwrap().terminate();
    assert!(output.status.success());
}

pub fn server_killed_and_restarted_mid_transfer() {
    server_lost_mid_transfer("kill");
}

pub fn server_shut_down_and_restarted_mid_transfer() {
    server_lost_mid_transfer("term");
}

pub fn client_stopped_past_the_session_timeout_finishes() {
    server_lost_mid_transfer("stop");
}

/// A served archive changed on disk (`flip`: one byte written in place; `truncate`): within
/// ~2 s the channel stops (counted), the client ends with a clear error, nothing is published,
/// and the server keeps running.
fn archive_changed_while_served(how: &str) {
    let scratch = Scratch::new(&format!("attack-{how}"));
    let (_, archive) = packed_noise(&scratch, "disk.bin", 4 << 20, 0xd15c);
    let server = quiet_server(&scratch, &["--rate", "8M"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    let (_, loop_len) = shape_of(&archive);
    let client = Proc::spawn(
        "get",
        &mut get_command(
            &scratch,
            &server_addr,
            "disk.bin",
            "disk",
            &["--stall-timeout", "10"],
        ),
    );
    wait_until_held(&server.admin, loop_len, 0.1);
    let len = std::fs::metadata(&archive).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap();
    match how {
        "flip" => {
            // Past the header page, in the datagrams: the header (and its root) still opens.
            let at = len * 3 / 4;
            let mut byte = [0u8; 1];
            std::fs::File::open(&archive)
                .unwrap()
                .read_exact_at(&mut byte, at)
                .unwrap();
            byte[0] ^= 0x01;
            file.write_at(&byte, at).unwrap();
        }
        "truncate" => file.set_len(len / 2).unwrap(),
        _ => unreachable!(),
    }
    drop(file);
    server.wait_for_counter(
        "archives_changed",
        1,
        Duration::from_millis(2500),
        "the change was not noticed within 2.5 s",
    );
    let output = client.wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a get of a changed archive cannot succeed"
    );
    assert!(
        stderr.contains("failed verification on the server")
            || stderr.contains("damaged on the server")
            || stderr.contains("changed on the server"),
        "the client says the file is damaged on the server: {stderr}"
    );
    assert!(
        !scratch.path("disk.lca").exists(),
        "nothing unverified is published"
    );
    assert!(!scratch.path("disk.out").exists(), "nothing extracted");
    let status = server.status();
    assert!(
        status["counters"]["archives_changed"].as_u64().unwrap() >= 1,
        "{status}"
    );
    // A new client is refused at once with the reason.
    let second = Command::new(bin("loopcast"))
        .args(["get", &server_addr, "disk.bin"])
        .arg("--output")
        .arg(scratch.path("second.lca"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(3), "refused by the server");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("failed verification on the server")
            || stderr.contains("damaged on the server"),
        "refused as corrupt: {stderr}"
    );
    let output = server.process.terminate();
    assert!(
        output.status.success(),
        "the server kept running and exits cleanly: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("archive changed on disk while served"),
        "the operator's log says why"
    );
}

/// A damaged (or forged) archive served with `--no-verify`: one data datagram's payload
/// changed on disk before the server started, its header and the hash tree intact. The client
/// drops every copy of it and ends in a stall; the error says how many datagrams failed their
/// hash and that the server may be serving a damaged or forged archive. Before, it said only
/// "no new data for 2 s; partial download kept for resume in <out>.part (1524/1525 datagrams)".
pub fn a_damaged_archive_served_unverified_ends_in_a_stall_that_names_the_hash_failures() {
    let scratch = Scratch::new("attack-unverified");
    let (_, archive) = packed_noise(&scratch, "rot.bin", 2 << 20, 0x0b57);
    let forgery = Forgery::of(&archive);
    let (serial, forged) = (0..forgery.loop_len)
        .find_map(|serial| {
            let [forged, _] = forgery.forged_then_genuine(serial)?;
            Some((serial, forged))
        })
        .expect("an archive has data datagrams");
    let at = loopcast_archive::format::DATAGRAMS_OFFSET
        + u64::from(serial) * forgery.datagram_size as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap()
        .write_all_at(&forged, at)
        .unwrap();
    let server = UnicastServer::start(
        &scratch,
        &scratch.path("media"),
        &["--no-verify", "--rate", "50M"],
    );
    let output = get_command(
        &scratch,
        &format!("127.0.0.1:{}", server.port),
        "rot.bin",
        "rot",
        &["--stall-timeout", "2"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "a stall: {stderr}");
    assert!(
        stderr.contains("no new data for 2 s; partial download kept for resume in "),
        "{stderr}"
    );
    let note = "hash check: the server may be serving a damaged or forged archive";
    // "...; N datagram(s) failed their (its) hash check: ..."
    let failed: u64 = stderr
        .split("; ")
        .find(|part| part.contains(note))
        .and_then(|part| part.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count of hash failures: {stderr}"));
    assert!(failed >= 1, "{stderr}");
    // The count is the client's own: its --json report's failure says the same.
    let report = json_of(&output);
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|error| error.contains(&format!("; {failed} datagram"))),
        "{report}"
    );
    assert!(!scratch.path("rot.lca").exists(), "nothing published");
    assert!(!scratch.path("rot.out").exists(), "nothing extracted");
}

pub fn archive_bit_flip_while_served_stops_the_channel() {
    archive_changed_while_served("flip");
}

pub fn archive_truncated_while_served_stops_the_channel() {
    archive_changed_while_served("truncate");
}

/// Threads of process `pid` named `name` (from /proc/<pid>/task/*/comm).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter(|task| {
                    std::fs::read_to_string(task.path().join("comm"))
                        .is_ok_and(|comm| comm.trim() == name)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Found by the attacker review: every first validated session opened the channel and started a
/// whole-archive hash check; Leave closed the channel and the check ran on, unrecorded, so the
/// next cycle started another. Now one check per archive version runs, at most two at once.
pub fn reopening_a_channel_never_piles_up_archive_checks() {
    let scratch = Scratch::new("attack-verify");
    let _ = packed_noise(&scratch, "verify.bin", 256 << 20, 0x7e5);
    let server = quiet_server(&scratch, &["--rate", "20M"]);
    let server_socket: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let pid = server.process.child.id();
    let stop = AtomicBool::new(false);
    let most = std::thread::scope(|scope| {
        // Sessions that validate and leave at once: the channel opens and closes all the time.
        let attacker = scope.spawn(|| {
            attack_sessions(
                server_socket,
                Ipv4Addr::new(127, 0, 0, 11),
                "verify.bin",
                AttackPlan {
                    ports: 4,
                    joined_lifetime: Duration::from_millis(20),
                    unanswered_lifetime: Duration::from_millis(200),
                    nak: false,
                },
                &stop,
                Duration::from_secs(10),
            )
        });
        let mut most = 0;
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            most = most.max(threads_named(pid, "loopcast-verify"));
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let (offers, _) = attacker.join().unwrap();
        assert!(offers > 20, "the attacker cycled sessions: {offers} offers");
        most
    });
    assert!(most <= 2, "{most} archive checks ran at once");
    let status = server.status();
    assert!(
        status["counters"]["archives_verified"].as_u64().unwrap() <= 1,
        "one check for one archive version: {status}"
    );
    assert!(server.process.terminate().status.success());
}

/// Issue 10 (R12): a host on the group sends a few forged datagrams (sound header, wrong
/// payload) a few hundred serials ahead of the loop, 50 a second: far less than 1% of the
/// traffic. The receiver's path loses nothing, so the loss it reports, and the tier's rate,
/// must not follow the forger: a forged serial must not make the client count as lost the
/// genuine datagrams it then receives.
pub fn forged_serials_ahead_do_not_poison_the_reported_loss() {
    use loopcast_tools::topology::BridgeTopology;
    let tag = format!("hx-lp{}", std::process::id() % 10_000);
    let topology = BridgeTopology::build(
        &tag,
        &[("s", "10.81.0.1"), ("a", "10.81.0.2"), ("f", "10.81.0.9")],
        1500,
    )
    .expect("namespaces build");
    let hosts = topology.hosts.clone();
    let scratch = Scratch::new("attack-lossmeter");
    let (original, archive) = packed_noise(&scratch, "film.bin", 48 << 20, 0x1055);
    let forgery = Forgery::of(&archive);
    let admin = scratch.path("admin.sock");
    // Automatic rates from a low start: the tier must climb to the cap on a clean path.
    let server = serve_in_namespace_with(
        &hosts[0].0,
        &hosts[0].1,
        &scratch.path("media"),
        &admin,
        &["--rate", "150M", "--initial-rate", "10M"],
    );
    let client = Proc::spawn(
        "client",
        Command::new("ip")
            .args(["netns", "exec", &hosts[1].0])
            .arg(bin("loopcast"))
            .args(["get", &format!("{}:7700", hosts[0].1), "film.bin", "--json"])
            .args(["--multicast-interface", &hosts[1].1])
            .arg("--output")
            .arg(scratch.path("a.lca"))
            .arg("--extract")
            .arg(scratch.path("a.out")),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let group: SocketAddrV4 = loop {
        let status = status_of(&admin);
        if let Some(group) = status["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|c| c["group"].as_str().map(str::to_owned))
        {
            break group.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no multicast channel: {status}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stop = AtomicBool::new(false);
    let forger_ip: Ipv4Addr = hosts[2].1.parse().unwrap();
    let (report, forged_sent, worst_loss) = std::thread::scope(|scope| {
        let forger = scope.spawn(|| {
            in_namespace(&hosts[2].0, || {
                let socket = multicast_forger_socket(forger_ip);
                let started = Instant::now();
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(8) {
                    let Some(next) = next_serial(&admin) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    // One forged datagram 300 serials ahead of the loop (its hash block has not
                    // come yet, so the client can only hold it pending).
                    let serial = (next + 300) % forgery.loop_len;
                    if let Some([forged, _]) = forgery.forged_then_genuine(serial) {
                        let _ = socket.send_to(&forged, group);
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                sent
            })
        });
        // Sample the session's loss estimate while the client downloads.
        let sampler = scope.spawn(|| {
            let mut worst = 0.0f64;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(40) {
                let status = status_of(&admin);
                for session in status["sessions"].as_array().into_iter().flatten() {
                    if session["reports"].as_u64().unwrap_or(0) > 3 {
                        worst = worst.max(session["loss"].as_f64().unwrap_or(0.0));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            worst
        });
        let report = client.report(Duration::from_secs(45));
        stop.store(true, Ordering::Relaxed);
        (report, forger.join().unwrap(), sampler.join().unwrap())
    });
    eprintln!("forger sent {forged_sent}; worst loss estimate {worst_loss}; client {report}");
    assert!(forged_sent > 20, "the forger sent {forged_sent}");
    assert_identical_and_verified(&scratch, "a", &original);
    assert!(
        worst_loss < 0.05,
        "a few forged serials ahead of the loop made a loss-free receiver report {:.0}% loss",
        worst_loss * 100.0
    );
    assert!(server.terminate().status.success());
    drop(topology);
    assert_no_namespaces_left(&tag);
}

/// A UDP socket that sends to multicast groups from `forger_ip` (a host on the test's bridge,
/// TTL 1), as a forger on the group would.
fn multicast_forger_socket(forger_ip: Ipv4Addr) -> UdpSocket {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    socket.set_multicast_if_v4(&forger_ip).unwrap();
    socket.set_multicast_ttl_v4(1).unwrap();
    socket
        .bind(&SocketAddrV4::new(forger_ip, 0).into())
        .unwrap();
    socket.into()
}
