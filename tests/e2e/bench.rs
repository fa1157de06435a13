//! `loopcast-bench` prints one JSON object per run with the fields tools depend on.

use std::process::Command;

use crate::support::*;

/// `loopcast-bench ARGS` run to success: its JSON report.
fn bench(args: &[&str]) -> serde_json::Value {
    bench_and_its_tag(args).0
}

/// As [`bench`], and the tag of the namespaces the run made (`lce<pid>-`): other tests' runs
/// of the bench may have theirs up at the same time (CI saw one, and failed "namespaces left
/// behind" on a check of every `lce` namespace).
fn bench_and_its_tag(args: &[&str]) -> (serde_json::Value, String) {
    let child = Command::new(bin("loopcast-bench"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("loopcast-bench starts");
    let tag = format!("lce{}-", child.id() % 100_000);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "loopcast-bench {args:?} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (json_of(&output), tag)
}

pub fn ceiling_and_send_print_one_json_object_each() {
    let ceiling = bench(&["ceiling", "--json", "--seconds", "0.3"]);
    for key in ["gbps", "pps", "cpu_s_per_gb"] {
        assert!(ceiling[key].as_f64().unwrap() > 0.0, "{key}: {ceiling}");
    }
    let send = bench(&["send", "--json", "--seconds", "0.3", "--size", "16M"]);
    for key in ["gbps", "pps", "cpu_s_per_gb", "ratio_to_ceiling"] {
        assert!(send[key].as_f64().unwrap() > 0.0, "{key}: {send}");
    }
    assert!(!send["send_path"].as_str().unwrap().is_empty(), "{send}");
    // A forced path is honoured (or reported as stepped down), never silently replaced.
    let forced = bench(&[
        "send",
        "--json",
        "--seconds",
        "0.2",
        "--size",
        "8M",
        "--path",
        "sendmmsg+gso",
    ]);
    assert_eq!(forced["send_path"], "sendmmsg+gso", "{forced}");
}

pub fn send_over_a_veth_bridge_in_namespaces() {
    let send = bench(&[
        "send",
        "--netns",
        "--json",
        "--seconds",
        "0.5",
        "--size",
        "16M",
    ]);
    assert!(send["gbps"].as_f64().unwrap() > 0.0, "{send}");
    assert!(
        send["receiver"]["datagrams"].as_u64().unwrap() > 0,
        "receiver got data: {send}"
    );
    let leftover = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&leftover.stdout)
        .contains(&format!("lcb{}", std::process::id() % 100_000)));
}

pub fn e2e_bench_moves_a_verified_file_between_namespaces() {
    // With LOOPCAST_BENCH_CLIENT_LOG each client's log is kept, and at debug it holds every
    // Report the client sent (what the rate control judged).
    let scratch = Scratch::new("bench-client-log");
    let logs = scratch.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let report = json_of(&run_ok(
        Command::new(bin("loopcast-bench"))
            .args([
                "e2e",
                "--json",
                "--receivers",
                "2",
                "--size",
                "32M",
                "--rate",
                "1G",
                "--timeout-s",
                "60",
            ])
            .env("LOOPCAST_BENCH_CLIENT_LOG", &logs)
            .env("RUST_LOG", "loopcast_client=debug"),
    ));
    for receiver in 1..=2 {
        let log = std::fs::read_to_string(logs.join(format!("run0-r{receiver}.log"))).unwrap();
        assert!(
            log.lines()
                .any(|line| line.contains("report") && line.contains("received=")),
            "receiver {receiver}'s log: {log}"
        );
    }
    let loopcast = &report["results"][0];
    assert_eq!(loopcast["tool"], "loopcast", "{report}");
    assert_eq!(loopcast["verified"], true, "{report}");
    assert!(loopcast["gbps"].as_f64().unwrap() > 0.0);
    assert!(
        loopcast["sender_cpu_s_per_gb"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    let leftover = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&leftover.stdout).contains("lce"),
        "bench namespaces left behind"
    );
}

/// `--link-rates`: one receiver per rate behind its own tbf link, each reported with its link,
/// time, tier and verification, the unlimited one also with its time alone, and the bytes the
/// server sent. At a fixed `--rate` under the 50 Mbit/s link this works on today's server.
pub fn e2e_bench_with_link_rates_reports_each_receiver() {
    let (report, tag) = bench_and_its_tag(&[
        "e2e",
        "--json",
        "--link-rates",
        "50M,0",
        "--receivers",
        "5",
        "--size",
        "4M",
        "--rate",
        "40M",
        "--timeout-s",
        "60",
    ]);
    let bytes = report["bytes"].as_u64().unwrap();
    assert_eq!(bytes, 4 << 20, "{report}");
    let receivers = report["receivers"].as_array().unwrap();
    assert_eq!(
        receivers.len(),
        2,
        "--link-rates overrides --receivers: {report}"
    );
    for (receiver, link) in receivers.iter().zip([50_000_000u64, 0]) {
        assert_eq!(receiver["link_rate_bits_per_s"], link, "{receiver}");
        assert_eq!(receiver["verified"], true, "{receiver}");
        assert!(receiver.get("tier").is_some(), "{receiver}");
        assert!(receiver["duplicates"].is_u64(), "{receiver}");
        assert!(receiver["naks_sent"].is_u64(), "{receiver}");
    }
    // The 50 Mbit/s link is in place: the file cannot arrive faster than it allows.
    let limited = receivers[0]["seconds"].as_f64().unwrap();
    assert!(
        limited >= 0.9 * bytes as f64 * 8.0 / 50e6,
        "{limited} s through a 50 Mbit/s link: {report}"
    );
    assert!(receivers[0]["goodput_over_link_rate"].as_f64().unwrap() <= 1.0);
    assert!(
        receivers[1]["seconds_alone"].as_f64().unwrap() > 0.0,
        "the unlimited receiver was also timed alone: {report}"
    );
    let loopcast = &report["results"][0];
    assert!(
        loopcast["server_sent_bytes"].as_u64().unwrap() >= bytes,
        "{report}"
    );
    // The bound on bytes sent counts the tiers the server opened (a fixed rate: one), not the
    // tier positions the receivers last heard.
    assert_eq!(loopcast["tiers_opened"], 1, "{report}");
    assert!(loopcast["sent_within_target"].is_boolean(), "{report}");
    assert_eq!(loopcast["alone"]["tiers_opened"], 1, "{report}");
    assert_no_namespaces_left(&tag);
}

/// A Ctrl-C of `loopcast-bench e2e` (SIGINT to its whole process group, as a terminal sends
/// it) removes the run's namespaces and its directory, ends every process of the run and exits
/// 130. Before, the process died at once: five `lce<pid>-*` namespaces and
/// /tmp/loopcast-bench-e2e-<pid> (the packed file, partial copies; gigabytes at the default
/// size) stayed behind.
pub fn e2e_bench_interrupted_leaves_no_namespaces_files_or_processes() {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    let mut child = Command::new(bin("loopcast-bench"))
        .args(["e2e", "--json", "--link-rates", "5M,0", "--size", "8M"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let group = nix::unistd::Pid::from_raw(pid as i32);
    // Whatever fails below, the bench's group is interrupted (and cleans up, with the fix).
    struct EndGroup(nix::unistd::Pid);
    impl Drop for EndGroup {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(self.0, nix::sys::signal::Signal::SIGINT);
        }
    }
    let _end_group = EndGroup(group);
    let tag = format!("lce{}-", pid % 100_000);
    let dir = std::env::temp_dir().join(format!("loopcast-bench-e2e-{pid}"));
    let namespaces = || {
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|line| line.starts_with(&tag))
            .count()
    };
    // Interrupt once the bed is up and the server and clients run (the 5 Mbit/s receiver
    // needs 13 s for its copy; the bench's phases before it take about 2 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    // The switch, the server and two receivers.
    while namespaces() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(namespaces(), 4, "the bench's namespaces came up");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        dir.exists(),
        "{} exists while the bench runs",
        dir.display()
    );
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!("loopcast-bench still running 20 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(130), "exit status {status}: {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(output.stdout.is_empty(), "no report for an interrupted run");
    assert_eq!(namespaces(), 0, "namespaces left behind: {stderr}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    // No process of the run is left: the group is empty.
    let left = nix::sys::signal::killpg(group, None);
    assert!(left.is_err(), "processes of the run left in group {pid}");
}

/// `loopcast-bench pack --size 1M | true`: the reader is gone before the report is written.
/// The bench ends quietly with 141 (as a shell reports a SIGPIPE death) and still removes its
/// scratch directory. Before, it panicked ("failed printing to stdout: Broken pipe") with a
/// backtrace, exit 101.
pub fn bench_into_a_closed_pipe_exits_quietly_and_cleans_up() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = Command::new(bin("loopcast-bench"))
        .args(["pack", "--size", "1M"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let scratch = std::env::temp_dir().join(format!("loopcast-bench-pack-{}", child.id()));
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert!(!scratch.exists(), "{} left behind", scratch.display());
    // loopcast and loopcastd end the same way (`loopcast inspect X | true` panicked, exit 101).
    let files = Scratch::new("closed-pipe");
    let input = files.path("small.bin");
    write_content(&input, 1 << 16, 3);
    let media = files.path("media");
    pack_into(&input, &media, &["--no-encrypt"]);
    let archive = media.join("small.bin.lca");
    for (program, args) in [
        (
            "loopcast",
            vec!["inspect".to_owned(), archive.display().to_string()],
        ),
        (
            "loopcastd",
            vec![
                "check".to_owned(),
                "--media".to_owned(),
                media.display().to_string(),
            ],
        ),
        // --help too (clap's own exit ignored the error: `--help > /dev/full` exited 0).
        ("loopcast", vec!["--help".to_owned()]),
        ("loopcastd", vec!["--help".to_owned()]),
        ("loopcastctl", vec!["--help".to_owned()]),
        ("loopcast-bench", vec!["--help".to_owned()]),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(bin(program))
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(141),
            "{program} {args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{program}: {stderr}");
        // Any other write error: one line naming it, exit 1 (it panicked too, exit 101).
        let full = Command::new(bin(program))
            .args(&args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&full.stderr);
        assert_eq!(full.status.code(), Some(1), "{program} {args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{program}: cannot write to stdout: No space left on device"
            )) && !stderr.contains("panicked"),
            "{program}: {stderr}"
        );
    }
}

/// A count or duration outside what a scenario runs is a usage error naming the range (they
/// were clamped with no word: `control --clients 0` ran one client, `failover --clients 100`
/// sixty-four).
pub fn bench_options_out_of_range_are_usage_errors_naming_the_range() {
    for (args, expected) in [
        (&["control", "--clients", "0"][..], "1..=1000000"),
        (
            &["control", "--seconds", "0.1"][..],
            "outside 0.5..=600 seconds",
        ),
        (&["control", "--servers", "5000"][..], "1..=4096"),
        (&["control", "--files-per-server", "0"][..], "1..=10000"),
        (&["failover", "--clients", "100"][..], "1..=64"),
        (&["fleet-sim", "--clients", "0"][..], "1..13107200"),
        (&["fleet-sim", "--directors", "0"][..], "1..=250"),
    ] {
        let output = Command::new(bin("loopcast-bench"))
            .args(args)
            .output()
            .expect("loopcast-bench starts");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
