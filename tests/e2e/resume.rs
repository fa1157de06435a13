//! R14: a client killed mid-download resumes from what it already has.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

pub fn killed_client_resumes_and_finishes_identical() {
    let scratch = Scratch::new("resume");
    let media = scratch.path("media");
    let input = scratch.path("big.bin");
    let original = write_content(&input, 24 << 20, 5);
    pack_into(&input, &media, &["--level", "0"]);
    let _server = UnicastServer::start(&scratch, &media, &["--rate", "40M"]);
    let port = _server.port;
    let get = || {
        let mut command = Command::new(bin("loopcast"));
        command
            .args(["get", &format!("127.0.0.1:{port}"), "big.bin", "--json"])
            .arg("--output")
            .arg(scratch.path("big.lca"))
            .arg("--extract")
            .arg(scratch.path("big.out"))
            .arg("--keys")
            .arg(media.join("keys.db"));
        command
    };
    // At 40 Mbit/s one loop of ~24 MiB takes ~5 s; kill after 3 s (state is saved every 2 s).
    let mut first = Proc::spawn("first get", &mut get());
    std::thread::sleep(Duration::from_secs(3));
    first.child.kill().unwrap();
    let _ = first.child.wait();
    assert!(
        scratch.path("big.lca.part").exists(),
        "partial archive kept"
    );
    assert!(
        scratch.path("big.lca.part.state").exists(),
        "receive state kept"
    );
    assert!(
        !scratch.path("big.lca").exists(),
        "nothing published before completion"
    );
    let second = Proc::spawn("second get", &mut get()).wait(Duration::from_secs(60));
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let report = json_of(&second);
    assert!(
        report["resumed_datagrams"].as_u64().unwrap() > 1000,
        "resumed from the saved state: {report}"
    );
    // Its loop starts where what it lacks begins (R14): it is not sent what it holds again.
    // (Before, its channel started elsewhere: 4,849 to 4,898 duplicates in 4 runs, about
    // 28 % of the loop, and 4.1-4.6 s instead of 2.7-3.2 s.)
    let loop_datagrams = report["bytes"].as_u64().unwrap() / 1440;
    let duplicates = report["duplicates"].as_u64().unwrap();
    assert!(
        duplicates * 20 < loop_datagrams,
        "{duplicates} duplicates of a {loop_datagrams}-datagram loop: the resumed loop did not start at what it lacked: {report}"
    );
    // Its speed is of what this run received, within the 40 Mbit/s (5 MB/s) it was sent at,
    // not the whole file over this run's time (16.6 MB/s was reported before).
    let mb_per_s = report["mb_per_s"].as_f64().unwrap();
    assert!(
        mb_per_s < 1.5 * 5.0,
        "a resumed download reported {mb_per_s} MB/s on a 40 Mbit/s channel: {report}"
    );
    assert!(std::fs::read(scratch.path("big.out")).unwrap() == original);
    assert!(
        !scratch.path("big.lca.part.state").exists(),
        "state removed after publish"
    );
}
