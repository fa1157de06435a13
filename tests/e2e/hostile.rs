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
