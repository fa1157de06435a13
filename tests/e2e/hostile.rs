//! Hostile input to a running server: it counts and drops, and keeps serving.

use std::net::UdpSocket;
use std::process::Command;

use crate::support::*;

pub fn garbage_requests_and_damaged_archives_do_not_hurt_the_server() {
    let scratch = Scratch::new("hostile");
    let media = scratch.path("media");
    let input = scratch.path("ok.bin");
    let original = write_content(&input, 2 << 20, 9);
    pack_into(&input, &media, &["--no-encrypt"]);
    // A damaged archive beside it: skipped at scan, never served.
    let good = std::fs::read(media.join("ok.bin.lca")).unwrap();
    std::fs::write(media.join("damaged.lca"), &good[..good.len() / 2]).unwrap();
    let server = UnicastServer::start(&scratch, &media, &[]);
    let port = server.port;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    for round in 0..2000 {
        let len = (round * 7) % 1500;
        let mut packet = noise(&mut state, len);
        if round % 2 == 0 && packet.len() >= 4 {
            packet[..3].copy_from_slice(b"Lc\x01"); // look like control, then be wrong
        }
        socket.send_to(&packet, ("127.0.0.1", port)).unwrap();
    }
    // Forged status/leave for sessions that do not exist.
    for kind in [5u8, 6, 7] {
        let mut packet = vec![b'L', b'c', 1, kind];
        packet.extend_from_slice(&[0xaa; 17]);
        socket.send_to(&packet, ("127.0.0.1", port)).unwrap();
    }
    let output = run_ok(
        Command::new(bin("loopcast"))
            .args(["get", &format!("127.0.0.1:{port}"), "ok.bin", "--json"])
            .arg("--output")
            .arg(scratch.path("ok.lca"))
            .arg("--extract")
            .arg(scratch.path("ok.out")),
    );
    assert_eq!(json_of(&output)["verified"], true);
    assert!(std::fs::read(scratch.path("ok.out")).unwrap() == original);
    let status = server.status();
    assert!(
        status["counters"]["control_dropped"].as_u64().unwrap() > 500,
        "{status}"
    );
    assert_eq!(
        status["archives"], 1,
        "damaged archive not listed: {status}"
    );
    let output = server.process.terminate();
    assert!(output.status.success());
}

pub fn an_archive_damaged_on_disk_is_caught_beside_the_loop_and_then_refused() {
    let scratch = Scratch::new("hostile-rot");
    let media = scratch.path("media");
    let input = scratch.path("rot.bin");
    write_content(&input, 8 << 20, 21);
    pack_into(&input, &media, &["--no-encrypt"]);
    // Bit rot in the middle of the datagrams: the header (and its root) still checks out.
    let archive = media.join("rot.bin.lca");
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&archive, &bytes).unwrap();
    // Slow enough that the first client is still receiving when the check finishes.
    let server = UnicastServer::start(&scratch, &media, &["--rate", "20M"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    let first = Command::new(bin("loopcast"))
        .args(["get", &server_addr, "rot.bin", "--stall-timeout", "3"])
        .arg("--output")
        .arg(scratch.path("first.lca"))
        .output()
        .unwrap();
    assert!(
        !first.status.success(),
        "a client of a corrupt archive cannot finish"
    );
    assert!(
        !scratch.path("first.lca").exists(),
        "nothing unverified is published"
    );
    let second = Command::new(bin("loopcast"))
        .args(["get", &server_addr, "rot.bin"])
        .arg("--output")
        .arg(scratch.path("second.lca"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains("failed verification"),
        "the server refuses the damaged archive with a clear reason: {stderr}"
    );
    let status = server.status();
    assert_eq!(status["counters"]["archives_corrupt"], 1, "{status}");
    assert!(server.process.terminate().status.success());
}

/// `loopcastd check` records an archive it hashed whole; a server then serves it without
/// hashing it again. An archive changed after its check (here: damaged, with its modification
/// time put back) is not taken on the old record: the server hashes it, catches the damage and
/// refuses it, and `check` names it and exits 1.
pub fn a_checked_archive_is_served_without_a_second_hash_but_a_changed_one_is_hashed_and_refused() {
    let scratch = Scratch::new("hostile-record");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    write_content(&input, 4 << 20, 23);
    let original = std::fs::read(&input).unwrap();
    pack_into(&input, &media, &["--no-encrypt"]);
    let check = || loopcastd_check(&media, &[]).output().unwrap();
    let checked = check();
    assert!(checked.status.success(), "{checked:?}");
    assert!(String::from_utf8_lossy(&checked.stdout).contains("film.bin.lca: verified"));
    assert!(media.join(".loopcast-verified").is_file());

    let server = UnicastServer::start(&scratch, &media, &["--rate", "200M"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    let output = run_ok(
        Command::new(bin("loopcast"))
            .args(["get", &server_addr, "film.bin", "--json"])
            .arg("--output")
            .arg(scratch.path("film.lca"))
            .arg("--extract")
            .arg(scratch.path("film.out")),
    );
    assert_eq!(json_of(&output)["verified"], true);
    assert!(std::fs::read(scratch.path("film.out")).unwrap() == original);
    let status = server.status();
    assert_eq!(
        status["counters"]["archives_vouched_by_record"], 1,
        "{status}"
    );
    assert_eq!(status["counters"]["archives_verified"], 0, "{status}");
    assert!(server.process.terminate().status.success());

    // Damage a datagram and put the modification time back: only the change time tells.
    let archive = media.join("film.bin.lca");
    let modified = std::fs::metadata(&archive).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x08;
    std::fs::write(&archive, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    assert_eq!(
        std::fs::metadata(&archive).unwrap().modified().unwrap(),
        modified
    );

    let server = UnicastServer::start(&scratch, &media, &["--rate", "20M"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    let first = Command::new(bin("loopcast"))
        .args(["get", &server_addr, "film.bin", "--stall-timeout", "3"])
        .arg("--output")
        .arg(scratch.path("again.lca"))
        .output()
        .unwrap();
    assert!(
        !first.status.success(),
        "a client of the damaged archive cannot finish"
    );
    assert!(
        !scratch.path("again.lca").exists(),
        "nothing unverified is published"
    );
    let status = server.status();
    assert_eq!(
        status["counters"]["archives_vouched_by_record"], 0,
        "{status}"
    );
    assert_eq!(status["counters"]["archives_corrupt"], 1, "{status}");
    assert!(server.process.terminate().status.success());
    let checked = check();
    assert_eq!(checked.status.code(), Some(1), "{checked:?}");
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("film.bin.lca: CORRUPT"),
        "{checked:?}"
    );
}

pub fn forged_flooding_and_out_of_range_naks_are_counted_and_bounded() {
    use loopcast_proto::wire::control::{ControlMessage, CONTROL_LEN_MAX};
    let scratch = Scratch::new("hostile-nak");
    let media = scratch.path("media");
    let input = scratch.path("small.bin");
    // Incompressible, so the loop has a few hundred datagrams.
    std::fs::write(&input, noise(&mut 0x2545f4914f6cdd1du64, 512 << 10)).unwrap();
    pack_into(&input, &media, &["--no-encrypt"]);
    let server = UnicastServer::start(&scratch, &media, &["--rate", "10M"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    // Play the client by hand: ask, and read the Offer among whatever else arrives.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let request = ControlMessage::Request {
        request_id: 42,
        multicast_ok: false,
        name: "small.bin".into(),
        hints: Default::default(),
    };
    client.send_to(&request.to_bytes(), &server_addr).unwrap();
    let mut buffer = vec![0u8; 65_536];
    let (session, token, loop_len) = loop {
        let len = client.recv(&mut buffer).expect("an offer arrives");
        if let Ok(ControlMessage::Offer {
            session,
            token,
            info,
            ..
        }) = ControlMessage::parse(&buffer[..len.min(CONTROL_LEN_MAX)])
        {
            break (session, token, info.loop_len);
        }
    };
    let nak = |ranges: Vec<(u32, u32)>| ControlMessage::Nak { session, ranges }.to_bytes();
    assert!(loop_len > 100, "loop of {loop_len}");
    // Before the address is validated: dropped.
    client.send_to(&nak(vec![(0, 10)]), &server_addr).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    client
        .send_to(
            &ControlMessage::Joined {
                session,
                token,
                transport: loopcast_proto::wire::control::Transport::Unicast,
            }
            .to_bytes(),
            &server_addr,
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // Past the loop's end: refused by the endpoint.
    client
        .send_to(&nak(vec![(loop_len + 5, 10)]), &server_addr)
        .unwrap();
    // The whole loop, six times: a session may have repaired what it misses (one loop) per
    // window of about a loop.
    for _ in 0..6 {
        client
            .send_to(&nak(vec![(0, loop_len)]), &server_addr)
            .unwrap();
    }
    // The same session's NAK from another address: dropped.
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    forger
        .send_to(&nak(vec![(0, loop_len)]), &server_addr)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = server.status();
    let counters = &status["counters"];
    assert!(counters["naks"].as_u64().unwrap() >= 7, "{status}");
    assert!(
        counters["naks_over_budget"].as_u64().unwrap() >= 6,
        "a session cannot ask for more than it misses: {status}"
    );
    assert_eq!(
        counters["nak_serials"].as_u64().unwrap(),
        u64::from(loop_len),
        "one loop's worth granted: {status}"
    );
    assert!(
        counters["nak_serials_refused"].as_u64().unwrap() >= 5 * u64::from(loop_len) + 10,
        "{status}"
    );
    assert!(
        counters["control_dropped"].as_u64().unwrap() >= 2,
        "the unvalidated NAK and the forger's: {status}"
    );
    client
        .send_to(&ControlMessage::Leave { session }.to_bytes(), &server_addr)
        .unwrap();
    assert!(server.process.terminate().status.success());
}
