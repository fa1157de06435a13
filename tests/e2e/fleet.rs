//! The fleet (issue 11, R7, R15-R18): directors and servers as real processes on the host's
//! loopback (unicast only: the host namespace never carries multicast). Every download is
//! checked byte for byte against the server's archive.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    bin, free_udp_port, json_of, loopcastd_on_loopback, run_ok, status_of, wait_for_admin,
    write_content, Proc, Scratch,
};

/// A `loopcastd direct` on loopback (also used by fleet_attacks.rs).
pub(crate) struct Director {
    pub(crate) process: Proc,
    pub(crate) port: u16,
    pub(crate) admin: PathBuf,
}

impl Director {
    pub(crate) fn start(scratch: &Scratch, label: &str, key: &Path) -> Director {
        Director::start_with(scratch, label, key, &[])
    }

    /// As [`Director::start`], with `extra` flags (e.g. `--heartbeat-listen`).
    pub(crate) fn start_with(
        scratch: &Scratch,
        label: &str,
        key: &Path,
        extra: &[&str],
    ) -> Director {
        Director::start_on(scratch, label, key, free_udp_port(), extra)
    }

    /// As [`Director::start_with`], on request port `port`.
    fn start_on(scratch: &Scratch, label: &str, key: &Path, port: u16, extra: &[&str]) -> Director {
        let admin = scratch.path(&format!("{label}.sock"));
        let process = Proc::spawn(
            label,
            Command::new(bin("loopcastd"))
                .args(["direct", "--listen", &format!("127.0.0.1:{port}")])
                // Tests run side by side: not the default heartbeat port 7702.
                .args(["--heartbeat-listen", "127.0.0.1:0"])
                .arg("--fleet-key")
                .arg(key)
                .arg("--admin-socket")
                .arg(&admin)
                .args(extra),
        );
        wait_for_admin(&admin);
        Director {
            process,
            port,
            admin,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

struct FleetServer {
    process: Proc,
    port: u16,
    admin: PathBuf,
}

impl FleetServer {
    fn start(
        scratch: &Scratch,
        label: &str,
        media: &Path,
        key: &Path,
        directors: &[&Director],
        extra: &[&str],
    ) -> FleetServer {
        let port = free_udp_port();
        let admin = scratch.path(&format!("{label}.sock"));
        let list: Vec<String> = directors.iter().map(|d| d.address()).collect();
        let process = Proc::spawn(
            label,
            loopcastd_on_loopback(port, media, &admin, extra)
                .arg("--director")
                .arg(list.join(","))
                .arg("--fleet-key")
                .arg(key),
        );
        wait_for_admin(&admin);
        FleetServer {
            process,
            port,
            admin,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A fleet key, two media databases, and `names` packed once (each server gets a copy of the
/// same archive: the same root, so a client can move between them).
fn fleet_files(scratch: &Scratch, files: &[(&str, usize)]) -> PathBuf {
    let key = scratch.path("fleet.key");
    run_ok(Command::new(bin("loopcastd")).arg("fleet-key").arg(&key));
    let packed = scratch.path("packed");
    std::fs::create_dir_all(&packed).unwrap();
    for (index, (name, len)) in files.iter().enumerate() {
        let input = scratch.path(name);
        write_content(&input, *len, index as u64 + 11);
        run_ok(
            Command::new(bin("loopcast"))
                .arg("pack")
                .arg(&input)
                .arg("--media")
                .arg(&packed)
                .arg("--no-encrypt"),
        );
    }
    key
}

fn media_with(scratch: &Scratch, label: &str, names: &[&str]) -> PathBuf {
    let media = scratch.path(label);
    std::fs::create_dir_all(&media).unwrap();
    for name in names {
        let archive = format!("{name}.lca");
        std::fs::copy(scratch.path("packed").join(&archive), media.join(&archive)).unwrap();
    }
    media
}

/// Waits until every director lists `servers` servers online, each with its whole catalog.
fn wait_for_fleet(directors: &[&Director], servers: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = directors.iter().all(|d| {
            let status = status_of(&d.admin);
            let listed = status["servers"].as_array().cloned().unwrap_or_default();
            listed.len() == servers
                && listed
                    .iter()
                    .all(|s| s["state"] == "online" && !s["files"].as_array().unwrap().is_empty())
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the directors never listed {servers} servers: {}",
            status_of(&directors[0].admin)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The index of the first server (by admin socket) with a session, waiting up to 10 s.
fn server_with_a_client<'a>(admins: impl Iterator<Item = &'a Path> + Clone) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = admins.clone().position(|admin| {
            status_of(admin)["sessions"]
                .as_array()
                .is_some_and(|list| !list.is_empty())
        });
        if let Some(index) = found {
            return index;
        }
        assert!(Instant::now() < deadline, "no server got the client");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `loopcast get --unicast --json --force` through `addresses` (also used by fleet_attacks.rs).
pub(crate) fn get(addresses: &str, name: &str, output: &Path, extra: &[&str]) -> Proc {
    Proc::spawn(
        "loopcast get",
        Command::new(bin("loopcast"))
            .args(["get", addresses, name, "--unicast", "--json", "--force"])
            .arg("--output")
            .arg(output)
            .args(extra),
    )
}

fn assert_same_bytes(got: &Path, archive: &Path) {
    let got_bytes = std::fs::read(got).unwrap();
    let archive_bytes = std::fs::read(archive).unwrap();
    assert!(
        got_bytes == archive_bytes,
        "{} differs from the server's archive",
        got.display()
    );
}

/// R7, R16, R18: a client that names two directors gets each file from a server that holds
/// it, by redirect; with one director dead it asks the other; a file no server has is a clear
/// refusal. The directors list the servers and their files.
pub fn a_director_sends_each_request_to_a_server_that_holds_the_file() {
    let scratch = Scratch::new("fleet-route");
    let key = fleet_files(&scratch, &[("common.bin", 3 << 20), ("rare.bin", 2 << 20)]);
    let media_one = media_with(&scratch, "media-one", &["common.bin"]);
    let media_two = media_with(&scratch, "media-two", &["common.bin", "rare.bin"]);
    let first = Director::start(&scratch, "director-1", &key);
    let second = Director::start(&scratch, "director-2", &key);
    let server_one = FleetServer::start(
        &scratch,
        "server-1",
        &media_one,
        &key,
        &[&first, &second],
        &["--location", "paris"],
    );
    let server_two = FleetServer::start(
        &scratch,
        "server-2",
        &media_two,
        &key,
        &[&first, &second],
        &["--location", "tokyo"],
    );
    wait_for_fleet(&[&first, &second], 2);
    let both = format!("{},{}", first.address(), second.address());

    // `loopcast ls`: a director offers the fleet's files, a server its own.
    let names = |address: &str| -> Vec<String> {
        let output = run_ok(Command::new(bin("loopcast")).args(["ls", address, "--json"]));
        json_of(&output)
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&both), ["common.bin", "rare.bin"]);
    assert_eq!(names(&server_one.address()), ["common.bin"]);

    // Only server 2 has rare.bin: the director sends the client there.
    let output = scratch.path("rare.lca");
    let report = get(&both, "rare.bin", &output, &[]).report(Duration::from_secs(30));
    assert_eq!(report["server"], server_two.address(), "{report}");
    assert_eq!(report["verified"], true);
    assert_same_bytes(&output, &media_two.join("rare.bin.lca"));

    // R7: asked directly for a file it lacks, server 1 sends the client to a director, which
    // sends it to server 2.
    let output = scratch.path("rare-via-server.lca");
    let report =
        get(&server_one.address(), "rare.bin", &output, &[]).report(Duration::from_secs(30));
    assert_eq!(report["server"], server_two.address(), "{report}");
    assert_same_bytes(&output, &media_two.join("rare.bin.lca"));
    // The status snapshot is at most ~150 ms old.
    let deadline = Instant::now() + Duration::from_secs(2);
    while status_of(&server_one.admin)["counters"]["redirected"] != 1 {
        assert!(Instant::now() < deadline, "server 1 counted its redirect");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Both have common.bin: the location decides.
    for (location, server) in [("paris", &server_one), ("tokyo", &server_two)] {
        let output = scratch.path(&format!("common-{location}.lca"));
        let report = get(&both, "common.bin", &output, &["--location", location])
            .report(Duration::from_secs(30));
        assert_eq!(report["server"], server.address(), "{location}: {report}");
        assert_same_bytes(&output, &media_one.join("common.bin.lca"));
    }

    // A file no server has: refused, with a message that says so (exit 3).
    let missing =
        get(&both, "nowhere.bin", &scratch.path("nowhere.lca"), &[]).wait(Duration::from_secs(30));
    assert_eq!(missing.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&missing.stdout);
    assert!(stdout.contains("no server of this fleet has"), "{stdout}");

    // The directors list both servers with their files.
    let status = status_of(&first.admin);
    let servers = status["servers"].as_array().unwrap();
    let listed: Vec<(&str, usize)> = servers
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap(),
                s["files"].as_array().unwrap().len(),
            )
        })
        .collect();
    let mut expected = vec![(server_one.address(), 1), (server_two.address(), 2)];
    expected.sort();
    let mut listed: Vec<(String, usize)> =
        listed.into_iter().map(|(a, n)| (a.to_owned(), n)).collect();
    listed.sort();
    assert_eq!(listed, expected);
    assert!(status["counters"]["redirects"].as_u64().unwrap() >= 1);

    // R18: the first director dies; a client that knows both still gets its file.
    drop(first.process);
    let output = scratch.path("common-after.lca");
    let started = Instant::now();
    let report = get(&both, "common.bin", &output, &[]).report(Duration::from_secs(30));
    assert_eq!(report["verified"], true);
    assert_same_bytes(&output, &media_one.join("common.bin.lca"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the second director answered the retry: {:?}",
        started.elapsed()
    );
    drop(server_one);
    drop(server_two);
}

/// R17: the server a client is receiving from is killed (SIGKILL) mid-transfer; the client
/// goes back to the directors, is sent to the other server with the same archive, and finishes
/// from what it holds: the file is byte-identical and nothing started over.
pub fn a_server_killed_mid_transfer_is_replaced_and_the_download_continues() {
    let scratch = Scratch::new("fleet-failover");
    let key = fleet_files(&scratch, &[("film.bin", 40 << 20)]);
    let media_one = media_with(&scratch, "media-one", &["film.bin"]);
    let media_two = media_with(&scratch, "media-two", &["film.bin"]);
    let first = Director::start(&scratch, "director-1", &key);
    let second = Director::start(&scratch, "director-2", &key);
    // 40 MiB at 100 Mbit/s: about 3.5 s a loop, time to kill mid-transfer.
    let rate = ["--rate", "100M", "--fixed-rate"];
    let mut servers = vec![
        FleetServer::start(
            &scratch,
            "server-1",
            &media_one,
            &key,
            &[&first, &second],
            &rate,
        ),
        FleetServer::start(
            &scratch,
            "server-2",
            &media_two,
            &key,
            &[&first, &second],
            &rate,
        ),
    ];
    wait_for_fleet(&[&first, &second], 2);
    let output = scratch.path("film.lca");
    let client = get(
        &format!("{},{}", first.address(), second.address()),
        "film.bin",
        &output,
        &[],
    );
    // Find the server it is on, wait until it holds some of the file, and kill that server.
    let serving = server_with_a_client(servers.iter().map(|s| s.admin.as_path()));
    std::thread::sleep(Duration::from_millis(1200));
    let victim = servers.remove(serving);
    let survivor = &servers[0];
    let pid = nix::unistd::Pid::from_raw(victim.process.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    // The survivor gets the client within the failover target (1.5 s with the defaults).
    let mut taken_over = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        let sessions = status_of(&survivor.admin)["sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !sessions.is_empty() {
            taken_over = Some(killed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let taken_over = taken_over.expect("the other server never got the client");
    let report = client.report(Duration::from_secs(60));
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["failovers"], 1, "{report}");
    assert_eq!(report["server"], survivor.address(), "{report}");
    assert_same_bytes(&output, &media_one.join("film.bin.lca"));
    eprintln!(
        "failover: the other server had the client {:.2} s after the kill (status polled every 20 ms); whole download {:.2} s, {} duplicates of {} datagrams",
        taken_over.as_secs_f64(),
        report["seconds"].as_f64().unwrap(),
        report["duplicates"],
        report["receiver"]["stored"]
    );
    if std::env::var_os("LC_FLEET_DEBUG").is_some() {
        eprintln!("{report}");
    }
    assert!(
        taken_over < Duration::from_secs(3),
        "failover took {taken_over:?}"
    );
    // R17: nothing received twice beyond what was in flight (the target: 1 % of the file).
    let duplicates = report["duplicates"].as_u64().unwrap();
    let datagrams = report["receiver"]["stored"].as_u64().unwrap();
    assert!(
        duplicates * 100 <= datagrams,
        "{duplicates} duplicates of {datagrams} datagrams"
    );
    drop(victim);
}

/// R15, R23: a heartbeat made without the fleet key, or garbage, registers nothing: the
/// director counts it, lists no server, and a client asking for the forger's file is refused.
pub fn a_heartbeat_without_the_fleet_key_registers_nothing() {
    use loopcast_proto::info::RootHash;
    use loopcast_proto::wire::fleet::{
        catalog_digest, CatalogEntry, FleetKey, Heartbeat, ServerState,
    };
    let scratch = Scratch::new("fleet-forged");
    let key = fleet_files(&scratch, &[]);
    let director = Director::start(&scratch, "director", &key);
    let entries = vec![CatalogEntry {
        name: "bait.bin".into(),
        root: RootHash([7; 32]),
        bytes: 1,
    }];
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let wrong = FleetKey::from_secret(b"not the fleet's key, but long enough").unwrap();
    let now_ms = loopcast_proto::time::unix_time_ms();
    let forged = Heartbeat {
        server_id: 666,
        incarnation: now_ms,
        sequence: 1,
        sent_at_unix_ms: now_ms,
        interval_ms: 250,
        state: ServerState::Online,
        link: 0,
        echo: [0; 16],
        request_addr: attacker.local_addr().unwrap(),
        location: String::new(),
        sessions: 0,
        sessions_max: 10,
        channels: 0,
        rate_bits_per_s: 0,
        rate_bits_per_s_max: 0,
        client_throughput_bits_per_s: 0,
        tiers: Vec::new(),
        catalog_digest: catalog_digest(&entries),
        page: 0,
        pages: 1,
        entries,
    };
    let target = director.address();
    for _ in 0..20 {
        attacker.send_to(&forged.to_bytes(&wrong), &target).unwrap();
        attacker.send_to(b"Lf\x01\x01garbage", &target).unwrap();
        attacker.send_to(&[0u8; 3], &target).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = status_of(&director.admin);
    assert_eq!(status["servers"].as_array().unwrap().len(), 0, "{status}");
    assert!(
        status["counters"]["heartbeats_unauthenticated"]
            .as_u64()
            .unwrap()
            >= 20,
        "{status}"
    );
    let refused =
        get(&target, "bait.bin", &scratch.path("bait.lca"), &[]).wait(Duration::from_secs(30));
    assert_eq!(refused.status.code(), Some(3), "refused: not found");
    let report = json_of(&refused);
    assert_eq!(report["verified"], false);
    // The operator of a server with another key learns it from the director's log.
    let log = String::from_utf8_lossy(&director.process.terminate().stderr).into_owned();
    assert!(
        log.contains("heartbeat not made with this fleet's key"),
        "{log}"
    );
}

/// R17: `loopcastctl drain` on the server a client is receiving from: the directors stop
/// routing to it at once, the client is sent away and continues on the other server from what
/// it holds (byte-identical, little received twice); a new client goes to the other server;
/// `undrain` brings it back.
pub fn a_drained_server_sends_its_clients_to_another_without_losing_their_progress() {
    let scratch = Scratch::new("fleet-drain");
    let key = fleet_files(&scratch, &[("film.bin", 24 << 20)]);
    let media_one = media_with(&scratch, "media-one", &["film.bin"]);
    let media_two = media_with(&scratch, "media-two", &["film.bin"]);
    let director = Director::start(&scratch, "director", &key);
    let rate = ["--rate", "60M"];
    let servers = [
        FleetServer::start(&scratch, "server-1", &media_one, &key, &[&director], &rate),
        FleetServer::start(&scratch, "server-2", &media_two, &key, &[&director], &rate),
    ];
    wait_for_fleet(&[&director], 2);
    let output = scratch.path("film.lca");
    let client = get(&director.address(), "film.bin", &output, &[]);
    let on = server_with_a_client(servers.iter().map(|s| s.admin.as_path()));
    std::thread::sleep(Duration::from_millis(800));
    let (drained, other) = (&servers[on], &servers[1 - on]);
    let answer = run_ok(
        Command::new(bin("loopcastctl"))
            .arg("--socket")
            .arg(&drained.admin)
            .arg("drain"),
    );
    let said = String::from_utf8_lossy(&answer.stdout);
    assert!(said.contains("1 client(s) told"), "{said}");
    let report = client.report(Duration::from_secs(60));
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["server"], other.address(), "{report}");
    assert_same_bytes(&output, &media_one.join("film.bin.lca"));
    let duplicates = report["duplicates"].as_u64().unwrap();
    let datagrams = report["receiver"]["stored"].as_u64().unwrap();
    assert!(
        duplicates * 100 <= datagrams,
        "{duplicates} duplicates of {datagrams} datagrams"
    );
    // The director lists it as draining; a new client goes to the other server.
    let listed = status_of(&director.admin)["servers"].clone();
    let state_of = |address: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["address"] == address)
            .map(|s| s["state"].clone())
    };
    assert_eq!(state_of(&drained.address()), Some("draining".into()));
    assert_eq!(status_of(&drained.admin)["fleet"]["state"], "draining");
    let second = scratch.path("film-2.lca");
    let report = get(&director.address(), "film.bin", &second, &[]).report(Duration::from_secs(60));
    assert_eq!(report["server"], other.address(), "{report}");
    // Undrained, it is routable again.
    run_ok(
        Command::new(bin("loopcastctl"))
            .arg("--socket")
            .arg(&drained.admin)
            .arg("undrain"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = status_of(&director.admin)["servers"].clone();
        let online = listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["address"] == drained.address() && s["state"] == "online");
        if online {
            break;
        }
        assert!(Instant::now() < deadline, "never online again: {listed}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// R17 on multicast, the default transport, in network namespaces this test creates: a
/// director and two servers (each with its own multicast groups) on one bridge, a client that
/// asks the director. The server it receives from is killed (SIGKILL) mid-transfer; the client
/// asks again, joins the other server's group and finishes from what it holds: verified,
/// byte-identical, little received twice.
pub fn multicast_clients_fail_over_to_another_server_in_namespaces() {
    let tag = format!("lcf{}", std::process::id() % 100_000);
    let topology = loopcast_tools::topology::BridgeTopology::build(
        &tag,
        &[
            ("s1", "10.79.0.1"),
            ("s2", "10.79.0.2"),
            ("d", "10.79.0.3"),
            ("c", "10.79.0.4"),
        ],
        1500,
    )
    .expect("namespaces build");
    let scratch = Scratch::new("fleet-mcast");
    let key = fleet_files(&scratch, &[("film.bin", 24 << 20)]);
    let director_admin = scratch.path("director.sock");
    let _director = Proc::spawn(
        "director",
        topology
            .exec(2, &bin("loopcastd"))
            .args(["direct", "--listen", "10.79.0.3:7700"])
            .arg("--fleet-key")
            .arg(&key)
            .arg("--admin-socket")
            .arg(&director_admin),
    );
    wait_for_admin(&director_admin);
    let mut servers = Vec::new();
    for (index, group) in [(0usize, "239.79.1.0"), (1, "239.79.2.0")] {
        let media = media_with(&scratch, &format!("media-{index}"), &["film.bin"]);
        let admin = scratch.path(&format!("server-{index}.sock"));
        let ip = &topology.hosts[index].1;
        let process = Proc::spawn(
            "loopcastd",
            topology
                .exec(index, &bin("loopcastd"))
                .arg("serve")
                .arg("--media")
                .arg(&media)
                .args(["--listen", &format!("{ip}:7700")])
                .args(["--multicast-interface", ip, "--multicast-ttl", "1"])
                .args(["--multicast-group", group, "--rate", "80M"])
                .args(["--director", "10.79.0.3"])
                .arg("--fleet-key")
                .arg(&key)
                .arg("--admin-socket")
                .arg(&admin),
        );
        wait_for_admin(&admin);
        servers.push((process, admin, format!("{ip}:7700"), media));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&director_admin)["servers"]
        .as_array()
        .map_or(0, |list| {
            list.iter()
                .filter(|s| s["state"] == "online" && !s["files"].as_array().unwrap().is_empty())
                .count()
        })
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the director never listed both servers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = scratch.path("film.lca");
    let client = Proc::spawn(
        "loopcast get",
        topology
            .exec(3, &bin("loopcast"))
            .args([
                "get",
                "10.79.0.3",
                "film.bin",
                "--json",
                "--multicast-interface",
                "10.79.0.4",
            ])
            .arg("--output")
            .arg(&output),
    );
    let serving = server_with_a_client(servers.iter().map(|(_, admin, _, _)| admin.as_path()));
    std::thread::sleep(Duration::from_millis(1000));
    let (victim, _, _, media) = servers.remove(serving);
    let pid = nix::unistd::Pid::from_raw(victim.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let report = client.report(Duration::from_secs(60));
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["transport"], "multicast", "{report}");
    assert_eq!(report["failovers"], 1, "{report}");
    assert_eq!(report["server"], servers[0].2, "{report}");
    assert_same_bytes(&output, &media.join("film.bin.lca"));
    let duplicates = report["duplicates"].as_u64().unwrap();
    let datagrams = report["receiver"]["stored"].as_u64().unwrap();
    eprintln!(
        "multicast failover: {duplicates} duplicates of {datagrams} datagrams, {:.2} s in all",
        report["seconds"].as_f64().unwrap()
    );
    assert!(
        duplicates * 100 <= datagrams,
        "{duplicates} duplicates of {datagrams} datagrams"
    );
    drop(victim);
    drop(topology);
}

/// The cluster: two directors, three servers (each with its own multicast groups) and
/// ten clients behind `tc tbf` links of 5, 50 and 500 Mbit/s (three each) and one unlimited,
/// in network namespaces this test creates. First a client asks a server for a file only
/// another server has (R7: redirected through a director). Then every client asks the
/// directors for the 8 MiB film; mid-transfer the server with the most clients is killed
/// (SIGKILL), then the first director; later a second server is drained. Every client
/// finishes, every copy is byte-identical to the archive, and the clients that lost their
/// server say so.
pub fn a_cluster_of_directors_servers_and_clients_survives_a_killed_server_a_killed_director_and_a_drain(
) {
    let tag = format!("lcc{}", std::process::id() % 100_000);
    let mut hosts: Vec<(String, String)> = vec![
        ("d1".into(), "10.80.0.1".into()),
        ("d2".into(), "10.80.0.2".into()),
        ("s1".into(), "10.80.0.11".into()),
        ("s2".into(), "10.80.0.12".into()),
        ("s3".into(), "10.80.0.13".into()),
    ];
    let links: [u64; 10] = [
        5_000_000,
        5_000_000,
        5_000_000,
        50_000_000,
        50_000_000,
        50_000_000,
        500_000_000,
        500_000_000,
        500_000_000,
        0,
    ];
    for index in 0..links.len() {
        hosts.push((format!("c{index}"), format!("10.80.0.{}", 21 + index)));
    }
    let spec: Vec<(&str, &str)> = hosts
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect();
    let topology =
        loopcast_tools::topology::BridgeTopology::build(&tag, &spec, 1500).expect("namespaces");
    for (offset, &rate) in links.iter().enumerate() {
        topology.set_link_rate(5 + offset, rate).expect("tc tbf");
    }
    let scratch = Scratch::new("fleet-cluster");
    let key = fleet_files(&scratch, &[("film.bin", 8 << 20), ("only.bin", 1 << 20)]);
    let mut directors = Vec::new();
    for (index, (_, ip)) in hosts.iter().enumerate().take(2) {
        let admin = scratch.path(&format!("director-{index}.sock"));
        let process = Proc::spawn(
            "director",
            topology
                .exec(index, &bin("loopcastd"))
                .args(["direct", "--listen", &format!("{ip}:7700")])
                .args(["--metrics", "off"])
                .arg("--fleet-key")
                .arg(&key)
                .arg("--admin-socket")
                .arg(&admin),
        );
        wait_for_admin(&admin);
        directors.push((process, admin));
    }
    let director_list = "10.80.0.1,10.80.0.2";
    let mut servers = Vec::new();
    for index in 0..3 {
        // Only the third server has only.bin.
        let names: &[&str] = if index == 2 {
            &["film.bin", "only.bin"]
        } else {
            &["film.bin"]
        };
        let media = media_with(&scratch, &format!("media-{index}"), names);
        let admin = scratch.path(&format!("server-{index}.sock"));
        let ip = hosts[2 + index].1.clone();
        let process = Proc::spawn(
            "loopcastd",
            topology
                .exec(2 + index, &bin("loopcastd"))
                .arg("serve")
                .arg("--media")
                .arg(&media)
                .args(["--listen", &format!("{ip}:7700")])
                .args(["--multicast-interface", &ip, "--multicast-ttl", "1"])
                .args(["--multicast-group", &format!("239.80.{}.0", index + 1)])
                .args(["--rate", "200M", "--metrics", "off"])
                .args(["--director", director_list])
                .arg("--fleet-key")
                .arg(&key)
                .arg("--admin-socket")
                .arg(&admin),
        );
        wait_for_admin(&admin);
        servers.push(Some((process, admin, format!("{ip}:7700"))));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while directors.iter().any(|(_, admin)| {
        status_of(admin)["servers"].as_array().map_or(0, |l| {
            l.iter()
                .filter(|s| s["state"] == "online" && !s["files"].as_array().unwrap().is_empty())
                .count()
        }) < 3
    }) {
        assert!(
            Instant::now() < deadline,
            "the directors never listed the servers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // R7: the first server lacks only.bin; it sends the client to a director, which sends it
    // to the third server.
    let only = scratch.path("only.lca");
    let report = Proc::spawn(
        "client (only.bin)",
        topology
            .exec(5, &bin("loopcast"))
            .args(["get", &servers[0].as_ref().unwrap().2, "only.bin", "--json"])
            .args(["--multicast-interface", &hosts[5].1])
            .arg("--output")
            .arg(&only),
    )
    .report(Duration::from_secs(30));
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["server"], "10.80.0.13:7700", "{report}");
    assert_same_bytes(&only, &scratch.path("packed").join("only.bin.lca"));
    let archive = scratch.path("packed").join("film.bin.lca");
    let clients: Vec<(Proc, PathBuf)> = (0..links.len())
        .map(|index| {
            let output = scratch.path(&format!("client-{index}.lca"));
            let ip = &hosts[5 + index].1;
            let process = Proc::spawn(
                &format!("client {index}"),
                topology
                    .exec(5 + index, &bin("loopcast"))
                    .args(["get", director_list, "film.bin", "--json"])
                    .args(["--multicast-interface", ip])
                    .arg("--output")
                    .arg(&output),
            );
            (process, output)
        })
        .collect();
    // Every client on a server, then half a second of transfer (the 50 Mbit/s clients need
    // 1.4 s, the 5 Mbit/s ones 14 s): kill the busiest server and the first director.
    let sessions = |admin: &Path| status_of(admin)["sessions"].as_array().map_or(0, Vec::len);
    let deadline = Instant::now() + Duration::from_secs(15);
    while servers
        .iter()
        .flatten()
        .map(|(_, admin, _)| sessions(admin))
        .sum::<usize>()
        < links.len()
    {
        assert!(Instant::now() < deadline, "not every client got a server");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let busiest = (0..3)
        .max_by_key(|&i| servers[i].as_ref().map_or(0, |(_, a, _)| sessions(a)))
        .unwrap();
    let (victim, _, victim_address) = servers[busiest].take().unwrap();
    let pid = nix::unistd::Pid::from_raw(victim.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let (first_director, _) = directors.remove(0);
    drop(first_director);
    // Half a second later, drain one of the two left (its clients move to the third).
    std::thread::sleep(Duration::from_millis(500));
    let drained = (0..3).find(|&i| servers[i].is_some()).unwrap();
    run_ok(
        Command::new(bin("loopcastctl"))
            .arg("--socket")
            .arg(&servers[drained].as_ref().unwrap().1)
            .arg("drain"),
    );
    let mut moved = 0;
    for (index, (process, output)) in clients.into_iter().enumerate() {
        let report = process.report(Duration::from_secs(150));
        assert_eq!(report["verified"], true, "client {index}: {report}");
        assert_same_bytes(&output, &archive);
        moved += report["failovers"].as_u64().unwrap_or(0);
        if report["failovers"].as_u64().unwrap_or(0) > 0 {
            assert_ne!(
                report["server"].as_str().unwrap(),
                victim_address,
                "client {index} failed over to the killed server"
            );
        }
        eprintln!(
            "cluster: client {index} (link {}): {:.2} s from {}, {} failover(s), {} duplicates of {}",
            links[index],
            report["seconds"].as_f64().unwrap(),
            report["server"],
            report["failovers"],
            report["duplicates"],
            report["receiver"]["stored"]
        );
    }
    assert!(moved >= 1, "the killed server had clients, and they moved");
    drop(victim);
    drop(topology);
}

/// `loopcastd direct --heartbeat-listen`: servers' heartbeats on a port of their own (read
/// before the clients', so a Request flood cannot crowd them out). The server is given only the
/// director's request port; the director's challenge comes from the heartbeat port and the
/// server sends there from then on (every fourth round to the request port). Clients ask the
/// request port and are routed alike. A director restarted on the same ports has the server
/// back through a new challenge.
pub fn heartbeats_on_a_port_of_their_own_route_clients_alike() {
    let scratch = Scratch::new("fleet-hbport");
    let key = fleet_files(&scratch, &[("film.bin", 1 << 20)]);
    let media = media_with(&scratch, "media", &["film.bin"]);
    let heartbeat_port = free_udp_port();
    let heartbeat_listen = format!("127.0.0.1:{heartbeat_port}");
    let director = Director::start_with(
        &scratch,
        "director",
        &key,
        &["--heartbeat-listen", &heartbeat_listen, "--metrics", "off"],
    );
    let (port, admin) = (director.port, director.admin.clone());
    let server_admin = scratch.path("server.sock");
    let server_port = free_udp_port();
    let _server = Proc::spawn(
        "server",
        loopcastd_on_loopback(server_port, &media, &server_admin, &["--metrics", "off"])
            .args(["--director", &format!("127.0.0.1:{port}")])
            .arg("--fleet-key")
            .arg(&key),
    );
    wait_for_admin(&server_admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&admin)["counters"]["heartbeats_on_heartbeat_port"]
        .as_u64()
        .unwrap_or(0)
        < 4
    {
        assert!(
            Instant::now() < deadline,
            "no heartbeats on the heartbeat port: {}",
            status_of(&admin)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let director_status = status_of(&admin);
    assert_eq!(director_status["servers"].as_array().unwrap().len(), 1);
    assert_eq!(director_status["counters"]["heartbeats_challenged"], 1);
    assert_eq!(director_status["heartbeat_listen"], heartbeat_listen);
    let server_status = status_of(&server_admin);
    assert_eq!(
        server_status["fleet"]["heartbeats_to"][0], heartbeat_listen,
        "{server_status}"
    );
    let output = scratch.path("film.lca");
    let report =
        get(&format!("127.0.0.1:{port}"), "film.bin", &output, &[]).report(Duration::from_secs(30));
    assert_eq!(
        report["server"],
        format!("127.0.0.1:{server_port}"),
        "{report}"
    );
    assert_same_bytes(&output, &media.join("film.bin.lca"));

    // The director is killed and a new process starts on the same ports (a new challenge
    // secret, nothing known): the server's next heartbeat is challenged, answered at once, and
    // the server is routable again.
    drop(director);
    let restarted_at = Instant::now();
    let director = Director::start_on(
        &scratch,
        "director-again",
        &key,
        port,
        &["--heartbeat-listen", &heartbeat_listen, "--metrics", "off"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = status_of(&director.admin);
        let online = status["servers"].as_array().is_some_and(|list| {
            list.len() == 1
                && list[0]["state"] == "online"
                && !list[0]["files"].as_array().unwrap().is_empty()
        });
        if online {
            assert_eq!(status["counters"]["heartbeats_challenged"], 1, "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never came back to the restarted director: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "server routable again {:.2} s after the director restarted (start-up included)",
        restarted_at.elapsed().as_secs_f64()
    );
    let again = scratch.path("film-again.lca");
    get(&format!("127.0.0.1:{port}"), "film.bin", &again, &[]).report(Duration::from_secs(30));
    assert_same_bytes(&again, &media.join("film.bin.lca"));
}
