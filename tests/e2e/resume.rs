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
    let server = UnicastServer::start(&scratch, &media, &["--rate", "40M"]);
    let get = || {
        let mut command = get_big(server.port, &scratch, &["--json"]);
        command.arg("--keys").arg(media.join("keys.db"));
        command
    };
    // At 40 Mbit/s one loop of ~24 MiB takes ~5 s; kill after 3 s (state is saved every 2 s).
    killed_after_3_s(&mut get());
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
    // The groups it wrote whole are compared with what it wrote; those held from before the
    // resume are hashed again (check.rs): both kinds are checked while it receives.
    let checked = report["groups_checked_while_receiving"].as_u64().unwrap();
    let compared = report["groups_compared_while_receiving"].as_u64().unwrap();
    assert!(
        0 < compared && compared < checked,
        "{compared} of {checked} groups checked while receiving were compared with what was written: {report}"
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

/// R14: a byte of the partial file changed while the client was stopped. The whole-file check
/// finds the datagram and forgets it; a unicast client asks for it at once (its backlog), not
/// waiting for the loop to come round: before, the planner was rebuilt without the backlog the
/// transport had set, and the resume (5.4 s with 9,346 duplicates, `naks_sent` 0) was slower
/// than a fresh download (5.3 s); undamaged it takes 2.7 s.
pub fn a_resumed_download_asks_at_once_for_a_held_datagram_that_was_damaged() {
    let scratch = Scratch::new("resume-damaged");
    let media = scratch.path("media");
    let input = scratch.path("big.bin");
    let original = write_content(&input, 24 << 20, 6);
    pack_into(&input, &media, &["--no-encrypt", "--level", "0"]);
    let server = UnicastServer::start(&scratch, &media, &["--rate", "40M"]);
    let get = || get_big(server.port, &scratch, &["--json"]);
    killed_after_3_s(&mut get());
    // 2 MB in: held (the download started at the loop's start and ran for 3 s at 5 MB/s).
    {
        use std::os::unix::fs::FileExt;
        let part = std::fs::OpenOptions::new()
            .write(true)
            .open(scratch.path("big.lca.part"))
            .unwrap();
        part.write_all_at(b"XXXXXXXXXXXXXXXX", 2_000_000).unwrap();
    }
    let started = std::time::Instant::now();
    let second = Proc::spawn("second get", &mut get()).wait(Duration::from_secs(60));
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let report = json_of(&second);
    assert!(std::fs::read(scratch.path("big.out")).unwrap() == original);
    let loop_datagrams = report["bytes"].as_u64().unwrap() / 1440;
    let duplicates = report["duplicates"].as_u64().unwrap();
    assert!(
        duplicates * 20 < loop_datagrams,
        "{duplicates} duplicates of {loop_datagrams} after {seconds:.2} s: the damaged datagram waited for the loop: {report}"
    );
}

/// The human report of a resumed get says how much of the whole it held and that its speed
/// is over this run's bytes only. Before, it said "resumed with 9075 datagrams already held"
/// (of how many?) and "25.2 MB/s" without saying over what.
pub fn a_resumed_get_says_what_share_it_held_and_what_its_speed_is_over() {
    let scratch = Scratch::new("resume-text");
    let media = scratch.path("media");
    let input = scratch.path("big.bin");
    write_content(&input, 24 << 20, 7);
    pack_into(&input, &media, &["--no-encrypt", "--level", "0"]);
    let (_, loop_len) = shape_of(&media.join("big.bin.lca"));
    let server = UnicastServer::start(&scratch, &media, &["--rate", "40M"]);
    killed_after_3_s(&mut get_big(server.port, &scratch, &[]));
    let second = run_ok(&mut get_big(server.port, &scratch, &[]));
    let stdout = String::from_utf8_lossy(&second.stdout);
    let first_line = stdout.lines().next().unwrap_or_default();
    assert!(
        first_line.contains(" MB/s over this run's ") && first_line.contains("already held"),
        "{stdout}"
    );
    let resumed = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("resumed: "))
        .unwrap_or_else(|| panic!("no resumed line: {stdout}"));
    // "N of M datagrams already held (P %)"
    let words: Vec<&str> = resumed.split_whitespace().collect();
    assert_eq!(
        words[1..5],
        ["of", loop_len.to_string().as_str(), "datagrams", "already"],
        "{resumed}"
    );
    let held: u32 = words[0].parse().unwrap();
    let percent: f64 = words[6].trim_start_matches('(').parse().unwrap();
    assert!(held > 1000 && held < loop_len, "{resumed}");
    assert!(
        (percent - f64::from(held) * 100.0 / f64::from(loop_len)).abs() < 0.1,
        "{resumed}"
    );
    assert!(resumed.ends_with(" %)"), "{resumed}");
}

/// Starts `get` and kills it after 3 s, leaving a partial download (state is saved every 2 s).
fn killed_after_3_s(get: &mut Command) {
    let mut first = Proc::spawn("first get", get);
    std::thread::sleep(Duration::from_secs(3));
    first.child.kill().unwrap();
    let _ = first.child.wait();
}

/// `loopcast get` of big.bin from the server on 127.0.0.1:`port` into the scratch directory's
/// big.lca, extracted to big.out, with `extra` flags.
fn get_big(port: u16, scratch: &Scratch, extra: &[&str]) -> Command {
    let mut command = Command::new(bin("loopcast"));
    command
        .args(["get", &format!("127.0.0.1:{port}"), "big.bin"])
        .arg("--output")
        .arg(scratch.path("big.lca"))
        .arg("--extract")
        .arg(scratch.path("big.out"))
        .args(extra);
    command
}

/// An interrupted get says where what it received is kept (the `.part`), and one interrupted
/// before the download began says nothing was downloaded (it said "partial download kept for
/// resume (0/0 datagrams)", and neither named the file).
pub fn an_interrupted_get_says_where_its_partial_download_is() {
    let scratch = Scratch::new("resume-said");
    let media = scratch.path("media");
    let input = scratch.path("big.bin");
    write_content(&input, 24 << 20, 7);
    pack_into(&input, &media, &["--level", "0"]);
    let server = UnicastServer::start(&scratch, &media, &["--rate", "40M"]);
    let mut get = get_big(server.port, &scratch, &["--json", "--keys"]);
    get.arg(media.join("keys.db"));
    let running = Proc::spawn("get", &mut get);
    std::thread::sleep(Duration::from_secs(2));
    let output = running.terminate();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let part = scratch.path("big.lca.part");
    assert!(
        stderr.contains(&format!(
            "interrupted; partial download kept for resume in {} (",
            part.display()
        )) && stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    assert!(part.exists());
    // Scripts get the same in fields (new-user review: only inside the message).
    reports_part_of_the_file_kept_in(&output.stdout, &part);
    drop(server);

    // A server that never answers: interrupted while asking.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let stderr = interrupted_while_asking(port, &scratch.path("never.lca"));
    assert!(
        stderr.contains("interrupted; the server had not answered yet; nothing was downloaded")
            && !stderr.contains("kept"),
        "{stderr}"
    );
    assert!(!scratch.path("never.lca.part").exists());

    // The same, to the output the first get left a partial download for: it is still there,
    // and says so (new-user review: "nothing was downloaded yet" read as if it were gone).
    let stderr = interrupted_while_asking(port, &scratch.path("big.lca"));
    assert!(
        stderr.contains(&format!(
            "the partial download an earlier run left in {} is kept",
            part.display()
        )),
        "{stderr}"
    );
    assert!(part.exists());

    // Nobody answers to the end of the wait: the timeout says the earlier partial download is
    // kept too (it said only "no answer"), and `--json` names it, with no counts (the server
    // never said what the file holds).
    let output = Command::new(bin("loopcast"))
        .args(["get", &format!("127.0.0.1:{port}"), "big.bin"])
        .args(["--stall-timeout", "1", "--json", "--output"])
        .arg(scratch.path("big.lca"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("no answer from")
            && stderr.contains(&format!(
                "the partial download an earlier run left in {} is kept",
                part.display()
            )),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["partial"], part.display().to_string(), "{report}");
    assert!(report["held_datagrams"].is_null(), "{report}");
    // To an output with none, none is named.
    let output = Command::new(bin("loopcast"))
        .args(["get", &format!("127.0.0.1:{port}"), "big.bin"])
        .args(["--stall-timeout", "1", "--json", "--output"])
        .arg(scratch.path("never.lca"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["partial"].is_null(), "{report}");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("kept"));
    assert!(part.exists());
}

/// A get whose server dies mid-download gives up after `--stall-timeout` with the timeout's
/// exit code, says where what it received is kept, and `--json` gives the path and counts
/// (a server that stopped answering said only "partial download kept for resume (a/b
/// datagrams)", without the file).
pub fn a_get_whose_server_dies_says_where_its_partial_download_is() {
    let scratch = Scratch::new("resume-server-died");
    let media = scratch.path("media");
    let input = scratch.path("big.bin");
    write_content(&input, 24 << 20, 11);
    pack_into(&input, &media, &["--level", "0"]);
    let server = UnicastServer::start(&scratch, &media, &["--rate", "40M"]);
    let mut get = get_big(
        server.port,
        &scratch,
        &["--stall-timeout", "2", "--json", "--keys"],
    );
    get.arg(media.join("keys.db"));
    let running = Proc::spawn("get", &mut get);
    std::thread::sleep(Duration::from_secs(2));
    drop(server);
    let output = running.wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    let part = scratch.path("big.lca.part");
    assert!(
        stderr.contains(&format!(
            "partial download kept for resume in {} (",
            part.display()
        )) && stderr.contains("run the same command again"),
        "{stderr}"
    );
    reports_part_of_the_file_kept_in(&output.stdout, &part);
    assert!(part.exists());
}

/// `get --json`'s failure report (`stdout`) names `part` as the partial download kept, with some
/// but not all of the file's datagrams in it.
fn reports_part_of_the_file_kept_in(stdout: &[u8], part: &std::path::Path) {
    let report: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    assert_eq!(report["partial"], part.display().to_string(), "{report}");
    let (held, total) = (
        report["held_datagrams"].as_u64().unwrap(),
        report["total_datagrams"].as_u64().unwrap(),
    );
    assert!(0 < held && held < total, "{report}");
}

/// `get big.bin` into `output` from 127.0.0.1:`port`, where nothing answers, ended by SIGTERM
/// while it asks: it exits 130; its stderr.
fn interrupted_while_asking(port: u16, output: &std::path::Path) -> String {
    let asking = Proc::spawn(
        "get from a silent server",
        Command::new(bin("loopcast"))
            .args(["get", &format!("127.0.0.1:{port}"), "big.bin"])
            .arg("--output")
            .arg(output),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let output = asking.terminate();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    stderr
}
