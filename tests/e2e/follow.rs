//! `loopcast get --follow` (R13): the original's bytes on stdout while the download runs, on
//! the host's loopback at 50 Mbit/s.

use std::io::Read;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::*;

/// 50 Mbit/s: the link rate of issue 10's `--follow` target.
const RATE: &str = "50M";
const RATE_BITS_PER_S: f64 = 50e6;

/// A follower started now: its stdout read by a thread that notes when the first byte came.
struct Follower {
    process: Proc,
    spawned: Instant,
    played: mpsc::Receiver<(Option<Instant>, Vec<u8>)>,
}

impl Follower {
    fn start(label: &str, port: u16, scratch: &Scratch, keys: &std::path::Path) -> Follower {
        let spawned = Instant::now();
        let mut process = Proc::spawn(
            label,
            Command::new(bin("loopcast"))
                .args(["get", &format!("127.0.0.1:{port}"), "film.bin"])
                .args(["--follow", "--json"])
                .arg("--keys")
                .arg(keys)
                .arg("--output")
                .arg(scratch.path(&format!("{label}.lca"))),
        );
        let mut stdout = process.child.stdout.take().expect("piped");
        let (sender, played) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first = None;
            let mut bytes = Vec::new();
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                match stdout.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        first.get_or_insert_with(Instant::now);
                        bytes.extend_from_slice(&buffer[..n]);
                    }
                }
            }
            let _ = sender.send((first, bytes));
        });
        Follower {
            process,
            spawned,
            played,
        }
    }

    /// Waits for a successful exit: the report (JSON on stderr: stdout is the file), the bytes
    /// played, and when the first one reached the test, from the spawn.
    fn finish(self, timeout: Duration) -> (serde_json::Value, Vec<u8>, Duration) {
        let label = self.process.label.clone();
        let output = self.process.wait(timeout);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{label}: {stderr}");
        let (first, bytes) = self
            .played
            .recv_timeout(Duration::from_secs(10))
            .expect("stdout reader ends with the process");
        let report_line = stderr
            .lines()
            .find(|line| line.starts_with('{'))
            .unwrap_or_else(|| panic!("{label}: no JSON report on stderr: {stderr}"));
        let report: serde_json::Value = serde_json::from_str(report_line).unwrap();
        let first = first.unwrap_or_else(|| panic!("{label}: nothing played"));
        (report, bytes, first - self.spawned)
    }
}

fn seconds(report: &serde_json::Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing: {report}"))
}

/// (a) stdout is the original, byte for byte; (b) the first byte plays within 2 s of the first
/// datagram, measured by the client and (more loosely, from the spawn) by the test; (c) the
/// archive is published as without --follow and verifies.
pub fn follow_plays_the_original_on_stdout_within_two_seconds_and_publishes_the_archive() {
    let scratch = Scratch::new("follow");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 6 << 20, 11);
    let packed = pack_into(&input, &media, &[]);
    assert_eq!(packed["encrypted"], true);
    let server = UnicastServer::start(&scratch, &media, &["--rate", RATE]);
    let follower = Follower::start("follower", server.port, &scratch, &media.join("keys.db"));
    let (report, played, first_byte_seen) = follower.finish(Duration::from_secs(60));
    // (a)
    assert_eq!(played.len(), original.len());
    assert!(played == original, "stdout differs from the original");
    assert_eq!(report["played_bytes"], original.len() as u64, "{report}");
    // (b)
    let first_datagram = seconds(&report, "first_datagram_seconds");
    let first_play = seconds(&report, "first_play_seconds");
    let delay = first_play - first_datagram;
    eprintln!(
        "follow: first datagram {first_datagram:.3} s, first byte played {first_play:.3} s \
         (delay {delay:.3} s; the test saw it {:.3} s after the spawn)",
        first_byte_seen.as_secs_f64()
    );
    assert!(
        delay < 2.0,
        "first byte {delay:.3} s after the first datagram"
    );
    assert!(
        first_byte_seen.as_secs_f64() < first_datagram + 2.0 + 0.5,
        "the test saw the first byte {first_byte_seen:?} after the spawn"
    );
    // (c)
    let archive = scratch.path("follower.lca");
    let served = std::fs::read(media.join("film.bin.lca")).unwrap();
    assert!(
        std::fs::read(&archive).unwrap() == served,
        "published archive differs"
    );
    assert!(!scratch.path("follower.lca.part").exists());
    let inspect = run_ok(
        Command::new(bin("loopcast"))
            .arg("inspect")
            .arg(&archive)
            .args(["--verify", "--json"]),
    );
    assert_eq!(json_of(&inspect)["verified"], true);
}

/// A follower that joins mid-loop asks for the start of the file first (NAK priority from the
/// play position), so it plays long before the loop wraps round to the start.
pub fn a_follower_joining_mid_loop_plays_before_the_loop_wraps() {
    let scratch = Scratch::new("follow-late");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    // About 4.7 s per loop at 50 Mbit/s: the wrap is seconds away from the join point, so
    // the test tells "asked first" from "came with the wrap" even on a busy machine.
    let original = write_content(&input, 40 << 20, 12);
    pack_into(&input, &media, &[]);
    // One channel shared by both unicast clients (`--fixed-rate`): with automatic rates each
    // unicast client gets a channel of its own that starts at the loop's beginning, and nobody
    // joins mid-loop.
    let server = UnicastServer::start(&scratch, &media, &["--rate", RATE, "--fixed-rate"]);
    // A plain download starts the loop; the follower joins about a quarter of the way round
    // it (the loop runs at half the rate while that client's backlog repairs take the other
    // half). From the join point the wrap and a backlog's walk back to serial 0 are each
    // seconds away: only asking from the play position first plays within a fraction of that.
    let runner = Proc::spawn(
        "runner",
        Command::new(bin("loopcast"))
            .args(["get", &format!("127.0.0.1:{}", server.port), "film.bin"])
            .arg("--json")
            .arg("--output")
            .arg(scratch.path("runner.lca")),
    );
    std::thread::sleep(Duration::from_millis(2500));
    let follower = Follower::start("late", server.port, &scratch, &media.join("keys.db"));
    let (report, played, _) = follower.finish(Duration::from_secs(90));
    runner.report(Duration::from_secs(60));
    assert!(played == original, "stdout differs from the original");
    let inspect = json_of(&run_ok(
        Command::new(bin("loopcast"))
            .arg("inspect")
            .arg(scratch.path("late.lca"))
            .arg("--json"),
    ));
    let loop_len = inspect["loop_len"].as_u64().unwrap() as f64;
    let datagram_bits = inspect["datagram_size"].as_u64().unwrap() as f64 * 8.0;
    let join = report["join_serial"].as_u64().expect("join serial") as f64;
    // Time for the loop to come round to serial 0 from the join point, at the full rate (the
    // shortest it can be: repairs only slow the loop down).
    let wrap = (loop_len - join) * datagram_bits / RATE_BITS_PER_S;
    let delay = seconds(&report, "first_play_seconds") - seconds(&report, "first_datagram_seconds");
    eprintln!(
        "follow: joined at serial {join} of {loop_len}; first byte played {delay:.3} s after the \
         first datagram; the loop would wrap after {wrap:.3} s"
    );
    assert!(
        join > loop_len * 0.2,
        "the follower joined mid-loop (serial {join} of {loop_len})"
    );
    // Without the play position the start of the file comes with the wrap (or the backlog,
    // walking back from the join point, later still): after `wrap` plus a frame.
    assert!(
        delay < 0.6 * wrap,
        "played {delay:.3} s after the first datagram; the loop wraps after {wrap:.3} s"
    );
}

/// The player quits: the download stops with a clear message and exit code 141, and is kept
/// for resume; a second run finishes it.
pub fn a_player_that_quits_stops_the_download_and_keeps_it_for_resume() {
    let (scratch, media, original, server, mut process) =
        follower_of_a_fresh_file("follow-quit", 24 << 20, 13, "quitter");
    // The player reads 100 KB and quits.
    let mut stdout = process.child.stdout.take().unwrap();
    let mut head = vec![0u8; 100_000];
    stdout.read_exact(&mut head).unwrap();
    drop(stdout);
    let output = process.wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    assert!(
        stderr.contains("the player stopped reading (broken pipe)")
            && stderr.contains(&format!(
                "kept for resume in {} (",
                scratch.path("film.lca.part").display()
            )),
        "{stderr}"
    );
    assert!(head[..] == original[..100_000]);
    assert!(scratch.path("film.lca.part").exists(), "kept for resume");
    assert!(!scratch.path("film.lca").exists(), "not published");
    // Resumed without --follow: finishes and publishes the archive.
    let report = json_of(&run_ok(
        Command::new(bin("loopcast"))
            .args(["get", &format!("127.0.0.1:{}", server.port), "film.bin"])
            .arg("--json")
            .arg("--output")
            .arg(scratch.path("film.lca")),
    ));
    assert!(
        report["resumed_datagrams"].as_u64().unwrap() > 0,
        "{report}"
    );
    let served = std::fs::read(media.join("film.bin.lca")).unwrap();
    assert!(std::fs::read(scratch.path("film.lca")).unwrap() == served);
}

/// `get --follow` run again once the archive is downloaded and published: refused (exit 3),
/// with the command that plays the archive already there (which works as given) and the flag
/// that downloads it again. Before, only "already exists; refusing to replace it".
pub fn follow_again_after_the_download_says_how_to_play_it_and_how_to_download_again() {
    let (scratch, media, original, server) = served_fresh_file("follow-again", 1 << 20, 17);
    let keys = media.join("keys.db");
    let (report, _, _) =
        Follower::start("film", server.port, &scratch, &keys).finish(Duration::from_secs(60));
    let archive = scratch.path("film.lca");
    assert!(archive.exists(), "published");
    let again = Follower::start("film", server.port, &scratch, &keys)
        .process
        .wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(3), "{stderr}");
    let play = format!(
        "loopcast extract {} -o - --keys {}",
        archive.display(),
        keys.display()
    );
    assert!(
        stderr.contains("already exists") && stderr.contains(&play),
        "names {play:?}: {stderr}"
    );
    assert!(stderr.contains("add --force"), "{stderr}");
    // It names the root it holds, so an older version can be told from this one (without
    // --root the server's is not asked for).
    let held = report["root"].as_str().expect("the report names the root");
    assert!(
        stderr.contains(&format!("It holds root {held} of \"film.bin\"")),
        "{stderr}"
    );
    // The command it gives plays the original.
    let played = run_ok(
        Command::new(bin("loopcast"))
            .arg("extract")
            .arg(&archive)
            .args(["-o", "-", "--keys"])
            .arg(&keys),
    );
    assert!(played.stdout == original, "extract -o - plays the original");
    // An output that holds another file's archive is not this download: it says which file it
    // holds, and gives no command to play it (it gave the one for the other file).
    let other_input = scratch.path("other.bin");
    write_content(&other_input, 1 << 16, 18);
    let other_dir = scratch.path("other-media");
    pack_into(&other_input, &other_dir, &["--no-encrypt"]);
    std::fs::copy(other_dir.join("other.bin.lca"), scratch.path("other.lca")).unwrap();
    let other = Follower::start("other", server.port, &scratch, &keys)
        .process
        .wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(r#"holds another file ("other.bin", not "film.bin")"#)
            && stderr.contains("add --force")
            && !stderr.contains("to play it"),
        "{stderr}"
    );
    // Nor is an older version of the same file, where --root names the one served now: it says
    // so (it gave the command to play the old one).
    let root = held;
    let old_input = scratch.path("old/film.bin");
    std::fs::create_dir_all(old_input.parent().unwrap()).unwrap();
    write_content(&old_input, 1 << 16, 19);
    let old_dir = scratch.path("old-media");
    pack_into(&old_input, &old_dir, &["--no-encrypt"]);
    let old_copy = scratch.path("old.lca");
    std::fs::copy(old_dir.join("film.bin.lca"), &old_copy).unwrap();
    let older = Command::new(bin("loopcast"))
        .args(["get", &format!("127.0.0.1:{}", server.port), "film.bin"])
        .args(["--follow", "--root", root, "--keys"])
        .arg(&keys)
        .arg("--output")
        .arg(&old_copy)
        .stdout(std::process::Stdio::null())
        .output()
        .expect("loopcast starts");
    let stderr = String::from_utf8_lossy(&older.stderr);
    assert_eq!(older.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(r#"holds another version of "film.bin""#)
            && stderr.contains(&format!("not the --root {root}"))
            && !stderr.contains("to play it"),
        "{stderr}"
    );
    // A plain `get` (no --follow) onto these copies says the same: the version it holds, and
    // another version than --root names (it said only "already exists").
    let plain = |output: &std::path::Path, root: Option<&str>| {
        let mut command = Command::new(bin("loopcast"));
        command
            .args(["get", &format!("127.0.0.1:{}", server.port), "film.bin"])
            .arg("--keys")
            .arg(&keys)
            .arg("--output")
            .arg(output);
        if let Some(root) = root {
            command.args(["--root", root]);
        }
        let done = command.output().expect("loopcast starts");
        assert_eq!(done.status.code(), Some(3), "{done:?}");
        String::from_utf8_lossy(&done.stderr).into_owned()
    };
    let stderr = plain(&archive, None);
    assert!(
        stderr.contains(&format!("holds root {held} of \"film.bin\""))
            && stderr.contains("add --force")
            && !stderr.contains("to play it"),
        "{stderr}"
    );
    let stderr = plain(&old_copy, Some(root));
    assert!(
        stderr.contains(r#"holds another version of "film.bin""#)
            && stderr.contains(&format!("not the --root {root}")),
        "{stderr}"
    );
    // The version --root names: it says so, not "maybe older", and how to check the copy now
    // (it gave the "older version" hint there too).
    let stderr = plain(&archive, Some(held));
    assert!(
        stderr.contains("it is the version --root names")
            && stderr.contains("loopcast inspect --verify")
            && !stderr.contains("older version"),
        "{stderr}"
    );
}

/// --follow refuses an encrypted file without a key database before downloading anything.
pub fn follow_without_keys_refuses_an_encrypted_file_at_once() {
    let scratch = Scratch::new("follow-nokeys");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    write_content(&input, 1 << 20, 14);
    pack_into(&input, &media, &[]);
    let server = UnicastServer::start(&scratch, &media, &[]);
    let output = Command::new(bin("loopcast"))
        .args(["get", &format!("127.0.0.1:{}", server.port), "film.bin"])
        .arg("--follow")
        .arg("--output")
        .arg(scratch.path("film.lca"))
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("is encrypted") && stderr.contains("--keys"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert!(!scratch.path("film.lca.part").exists());
}

/// --follow with a key database that lacks the file's key: a clear error before anything is
/// downloaded or played, nothing left behind.
pub fn follow_with_the_wrong_key_database_is_a_clear_error() {
    let scratch = Scratch::new("follow-wrongkeys");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    write_content(&input, 1 << 20, 15);
    pack_into(&input, &media, &[]);
    // Another media directory, whose keys.db holds another file's key only.
    let other = scratch.path("other");
    let other_input = scratch.path("other.bin");
    write_content(&other_input, 10_000, 16);
    pack_into(&other_input, &other, &[]);
    let server = UnicastServer::start(&scratch, &media, &[]);
    let output = Command::new(bin("loopcast"))
        .args(["get", &format!("127.0.0.1:{}", server.port), "film.bin"])
        .arg("--follow")
        .arg("--keys")
        .arg(other.join("keys.db"))
        .arg("--output")
        .arg(scratch.path("film.lca"))
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot decrypt the file: key database")
            && stderr.contains("has no key for file"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert!(!scratch.path("film.lca.part").exists());
    assert!(!scratch.path("film.lca").exists());
}

/// A player that reads slowly (64 KiB every 30 ms, about 2 MB/s) while the download is much
/// faster: the `.part` is the buffer, the download completes first, and the player still gets
/// every byte, with exit 0. (Before: the end of the stream was queued twice when the queue
/// was full, and the second send found the writer gone: every byte played, then
/// "the writer thread stopped" and exit 1.)
pub fn a_slow_player_gets_every_byte_and_a_clean_exit() {
    let (scratch, _media, original, _server, mut process) =
        follower_of_a_fresh_file("follow-slow", 12 << 20, 15, "slow-player");
    let mut stdout = process.child.stdout.take().unwrap();
    let mut played = Vec::with_capacity(original.len());
    let mut chunk = vec![0u8; 64 << 10];
    let started = Instant::now();
    loop {
        let n = stdout.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        played.extend_from_slice(&chunk[..n]);
        assert!(started.elapsed() < Duration::from_secs(60), "bounded");
        std::thread::sleep(Duration::from_millis(30));
    }
    let output = process.wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        played == original,
        "every byte, in order ({} of {})",
        played.len(),
        original.len()
    );
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(scratch.path("film.lca").exists(), "published");
}

/// `get --follow` whose stdout is on a full disk: exit 5 (disk full), as `extract -o -` into the
/// same stream gives, and nothing received lost. (It exited 1.)
pub fn follow_into_a_full_disk_exits_as_disk_full_and_keeps_the_download() {
    // 8 MiB at 50 Mbit/s: the first frame (1 MiB) is verified and its write fails 1.1 s before
    // the last datagram could arrive.
    let (scratch, media, _, server) = served_fresh_file("follow-full", 8 << 20, 19);
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full")
    };
    let output = Command::new(bin("loopcast"))
        .args(["get", &format!("127.0.0.1:{}", server.port), "film.bin"])
        .arg("--follow")
        .arg("--keys")
        .arg(media.join("keys.db"))
        .arg("--output")
        .arg(scratch.path("film.lca"))
        .stdout(full())
        .output()
        .expect("loopcast starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    // Nothing received is lost: kept for resume, and it says where.
    assert!(scratch.path("film.lca.part").exists(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "kept for resume in {} (",
            scratch.path("film.lca.part").display()
        )),
        "{stderr}"
    );
    // The advice is to make room first: the same command into the same full disk stops again
    // (it said only "run the same command again").
    assert!(
        stderr.contains("make room where the played bytes go (standard output"),
        "{stderr}"
    );
    // The same stream from `extract`: the same code.
    let extract = Command::new(bin("loopcast"))
        .arg("extract")
        .arg(media.join("film.bin.lca"))
        .args(["-o", "-", "--keys"])
        .arg(media.join("keys.db"))
        .stdout(full())
        .output()
        .expect("loopcast starts");
    assert_eq!(
        extract.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&extract.stderr)
    );
}

/// A fresh encrypted file of `size` bytes (content from `seed`), packed into `media` (with its
/// keys.db) and served on loopback at `RATE`: the scratch, the media directory, the original's
/// bytes and the server.
fn served_fresh_file(
    tag: &str,
    size: usize,
    seed: u64,
) -> (Scratch, std::path::PathBuf, Vec<u8>, UnicastServer) {
    let scratch = Scratch::new(tag);
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, size, seed);
    pack_into(&input, &media, &[]);
    let server = UnicastServer::start(&scratch, &media, &["--rate", RATE]);
    (scratch, media, original, server)
}

/// A fresh encrypted file of `size` bytes (content from `seed`) served on loopback at `RATE`,
/// and a `loopcast get --follow` of it (`label`) writing `film.lca`, its stdout piped.
fn follower_of_a_fresh_file(
    tag: &str,
    size: usize,
    seed: u64,
    label: &str,
) -> (Scratch, std::path::PathBuf, Vec<u8>, UnicastServer, Proc) {
    let (scratch, media, original, server) = served_fresh_file(tag, size, seed);
    let process = Proc::spawn(
        label,
        Command::new(bin("loopcast"))
            .args(["get", &format!("127.0.0.1:{}", server.port), "film.bin"])
            .arg("--follow")
            .arg("--keys")
            .arg(media.join("keys.db"))
            .arg("--output")
            .arg(scratch.path("film.lca")),
    );
    (scratch, media, original, server, process)
}
