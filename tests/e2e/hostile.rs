//! Hostile input to a running server: it counts and drops, and keeps serving.

use std::net::UdpSocket;
use std::process::Command;

use crate::support::*;

#[test]
fn garbage_requests_and_damaged_archives_do_not_hurt_the_server() {
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
        let mut packet: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
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

#[test]
fn an_archive_damaged_on_disk_is_caught_beside_the_loop_and_then_refused() {
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
