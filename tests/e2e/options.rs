//! loopcastd's rate options as an operator types them: values that mean nothing for automatic
//! rates are refused before the daemon starts, with a message naming the option, and the start
//! line states the cap that is really in force.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{bin, free_udp_port, wait_for_admin, Proc, Scratch};

/// Runs `loopcastd serve` with `extra`, expecting it to refuse at once: (exit code, stderr).
fn refused(scratch: &Scratch, extra: &[&str]) -> (Option<i32>, String) {
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let mut child = loopcastd_on_loopback_with(scratch, &media, extra);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
            return (status.code(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loopcastd {extra:?} started serving instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn meaningless_rate_options_are_refused_at_once() {
    let scratch = Scratch::new("options-refused");
    let cases: &[(&[&str], &str)] = &[
        (&["--rate", "0"], "--rate unpaced (or 0) needs --fixed-rate"),
        (
            &["--rate", "unpaced"],
            "--rate unpaced (or 0) needs --fixed-rate",
        ),
        (
            &["--initial-rate", "0"],
            "below the slowest automatic rate, 1.0 Mbit/s",
        ),
        (
            &["--initial-rate", "500k"],
            "below the slowest automatic rate, 1.0 Mbit/s",
        ),
        (
            &["--rate", "100k"],
            "--rate 100.0 kbit/s is below the slowest automatic rate, 1.0 Mbit/s",
        ),
        (
            &["--rate", "100M", "--initial-rate", "2G"],
            "--initial-rate 2.00 Gbit/s is above --rate 100.0 Mbit/s",
        ),
        // Above what automatic rates reach (it was taken: "at most 40G, starting at 50G").
        (
            &["--initial-rate", "50G"],
            "\"50G\" is above the fastest automatic rate, 40.00 Gbit/s",
        ),
        (
            &["--rate", "100G", "--initial-rate", "50G"],
            "\"50G\" is above the fastest automatic rate, 40.00 Gbit/s",
        ),
        (&["--rate", "1G", "--fixed-rate", "--tiers", "2"], "--tiers"),
        (
            &["--rate", "1G", "--fixed-rate", "--tier-policy", "slowest"],
            "--tier-policy",
        ),
        (
            &["--rate", "1G", "--fixed-rate", "--initial-rate", "10M"],
            "--initial-rate",
        ),
        // Past 1000G no link carries it (a 24-digit rate saturated to 18446744073.71 Gbit/s).
        (
            &["--rate", "99999G"],
            "rate \"99999G\" is above 1000G: faster than any link",
        ),
        // A negative rate is a bad value, not an unknown option.
        (&["--rate", "-5"], "bad rate \"-5\": must be positive"),
        (
            &["--initial-rate", "-1G"],
            "bad rate \"-1G\": must be positive",
        ),
    ];
    for (extra, expected) in cases {
        let (code, text) = refused(&scratch, extra);
        assert_eq!(code, Some(2), "{extra:?}: a usage error exits 2: {text}");
        let first = text.lines().next().unwrap_or_default();
        assert!(first.starts_with("error:"), "{extra:?}: {text}");
        assert!(
            first.contains(expected),
            "{extra:?}: want {expected:?} in {first:?}"
        );
        assert!(!text.contains("panicked"), "{text}");
        // The usage line is serve's, not the top-level one.
        assert!(
            !text.contains("Usage: loopcastd <COMMAND>"),
            "{extra:?}: {text}"
        );
    }
}

pub fn the_start_line_states_the_cap_in_force() {
    let scratch = Scratch::new("options-cap");
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    // (extra arguments, what the start line must say): automatic rates never pass 40 Gbit/s.
    let cases: &[(&[&str], &str)] = &[
        (&[], "rate=automatic, at most 40.00 Gbit/s"),
        (&["--rate", "999G"], "rate=automatic, at most 40.00 Gbit/s"),
        (
            &["--rate", "100M"],
            "rate=automatic, at most 100.0 Mbit/s, starting at 100.0 Mbit/s",
        ),
        (
            &["--initial-rate", "50M"],
            "rate=automatic, at most 40.00 Gbit/s, starting at 50.0 Mbit/s",
        ),
        (&["--rate", "unpaced", "--fixed-rate"], "rate=fixed unpaced"),
    ];
    for (extra, expected) in cases {
        let mut child = loopcastd_on_loopback_with(&scratch, &media, extra);
        let stderr = BufReader::new(child.stderr.take().unwrap());
        // The start line is the daemon's first; a daemon that exits ends the lines.
        let start = stderr
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("starting"));
        let _ = child.kill();
        let _ = child.wait();
        let start = start.unwrap_or_else(|| panic!("{extra:?}: no start line"));
        assert!(
            start.contains(expected),
            "{extra:?}: want {expected:?} in {start:?}"
        );
        // A fixed rate has no tiers: naming a policy and a tier count would mislead.
        let fixed = extra.contains(&"--fixed-rate");
        assert_eq!(start.contains("policy="), !fixed, "{extra:?}: {start:?}");
    }
    // The media database is empty: the daemon says so, and how to fill it.
    // (Read after it is stopped: a daemon that never warned would never end the lines.)
    let mut child = loopcastd_on_loopback_with(&scratch, &media, &[]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let _ = child.kill();
    let _ = child.wait();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let warning = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("WARN"))
        .expect("a warning for an empty media database");
    assert!(
        warning.contains("no archives") && warning.contains("loopcast pack"),
        "{warning}"
    );
}

/// `loopcastd serve` of `media` on loopback (no multicast), admin socket in `scratch`, with
/// `extra`; stderr piped.
fn loopcastd_on_loopback_with(
    scratch: &Scratch,
    media: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    Command::new(bin("loopcastd"))
        .arg("serve")
        .arg("--media")
        .arg(media)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-multicast",
            "--admin-socket",
        ])
        .arg(scratch.path("admin.sock"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `loopcastd serve --help` tells an operator what happens with no rate options: the automatic
/// rates' real cap (RateConfig::rate_max, 40 Gbit/s), the default policy, tiers and start rate.
pub fn serve_help_states_the_rate_defaults() {
    let output = Command::new(bin("loopcastd"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success(), "serve --help exits 0");
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "up to 40G",
        "[default: distribution]",
        "[default: 4]",
        "Default: 1G, or --rate if that is lower",
    ] {
        assert!(
            text.contains(expected),
            "serve --help says {expected:?}:\n{text}"
        );
    }
    assert_eq!(
        loopcast_proto::rate::RateConfig::default().rate_max,
        40_000_000_000,
        "the help's 40G is the automatic rates' cap"
    );
}

/// `loopcastd serve|direct --config FILE`: the commented examples in packaging/ hold only
/// settings the commands know (every commented line too, uncommented), an unknown key is a
/// usage error naming it, and a flag on the command line wins over the file (the server's
/// start line shows the command line's rate).
pub fn config_files_set_flags_and_the_command_line_wins() {
    let scratch = Scratch::new("config");
    let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
    for (subcommand, example) in [
        ("serve", "loopcastd-serve.toml"),
        ("direct", "loopcastd-direct.toml"),
    ] {
        let text = std::fs::read_to_string(packaging.join(example)).unwrap();
        // Every setting, the commented ones as well.
        let all: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest_is_setting(rest) => rest.to_owned(),
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = scratch.path(example);
        std::fs::write(&path, &all).unwrap();
        let output = Command::new(bin("loopcastd"))
            .args([subcommand, "--config"])
            .arg(&path)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let bad = scratch.path("bad.toml");
    std::fs::write(&bad, "media = \"/srv\"\nmedya = 1\n").unwrap();
    let output = Command::new(bin("loopcastd"))
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown setting \"medya\""), "{stderr}");
    // The file says 100M fixed; the command line says 300M.
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let config = scratch.path("serve.toml");
    let admin = scratch.path("admin.sock");
    std::fs::write(
        &config,
        format!(
            "media = {:?}\nlisten = \"127.0.0.1:{}\"\nno_multicast = true\nrate = \"100M\"\nfixed_rate = true\nadmin_socket = {:?}\n",
            media.display().to_string(),
            free_udp_port(),
            admin.display().to_string()
        ),
    )
    .unwrap();
    let server = Proc::spawn(
        "loopcastd",
        Command::new(bin("loopcastd"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--rate", "300M"]),
    );
    wait_for_admin(&admin);
    let output = server.terminate();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("fixed 300.0 Mbit/s"), "{log}");
}

/// `key = value` with a plain key: a setting line of the examples.
fn rest_is_setting(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// The metrics endpoint: Prometheus text of the status counters on the address asked for,
/// and a daemon whose metrics port is taken still serves (it says so in its log).
pub fn metrics_endpoint_serves_the_status_counters() {
    use std::io::{Read, Write};
    let scratch = Scratch::new("metrics");
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let start = |label: &str, metrics: String| {
        let admin = scratch.path(&format!("{label}.sock"));
        let server = Proc::spawn(
            label,
            Command::new(bin("loopcastd"))
                .args(["serve", "--no-multicast", "--listen"])
                .arg(format!("127.0.0.1:{}", free_udp_port()))
                .arg("--media")
                .arg(&media)
                .arg("--admin-socket")
                .arg(&admin)
                .args(["--metrics", &metrics]),
        );
        wait_for_admin(&admin);
        server
    };
    let server = start("loopcastd", format!("127.0.0.1:{metrics_port}"));
    let mut answer = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !answer.contains("loopcastd_requests_total") {
        assert!(Instant::now() < deadline, "no metrics: {answer}");
        answer.clear();
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", metrics_port)) {
            write!(stream, "GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            let _ = stream.read_to_string(&mut answer);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answer.starts_with("HTTP/1.0 200 OK"), "{answer}");
    assert!(answer.contains("\nloopcastd_sessions 0\n"), "{answer}");
    // A port already taken: the daemon still serves, and says why there are no metrics.
    let second = start("loopcastd-2", taken.local_addr().unwrap().to_string());
    let log = String::from_utf8_lossy(&second.terminate().stderr).into_owned();
    assert!(log.contains("no metrics endpoint"), "{log}");
    drop(server);
}

/// `get --stall-timeout N` with nobody answering gives up after N seconds (not the 10 s the
/// first answer is otherwise waited for: s16 new-user review), with the timeout's exit code and
/// a message naming the address and the wait; 0 is refused as a usage error.
pub fn get_stall_timeout_also_bounds_the_wait_for_a_first_answer() {
    let scratch = Scratch::new("stall-first");
    let silent = format!("127.0.0.1:{}", free_udp_port());
    let started = Instant::now();
    let output = Command::new(bin("loopcast"))
        .args([
            "get",
            &silent,
            "film.bin",
            "--stall-timeout",
            "2",
            "--output",
        ])
        .arg(scratch.path("film.lca"))
        .output()
        .unwrap();
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("no answer from {silent} within 2 s")),
        "{stderr}"
    );
    // Bounded from both sides: it waited, and not the default 10 s.
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(8),
        "gave up after {waited:?}"
    );
    let zero = Command::new(bin("loopcast"))
        .args(["get", &silent, "film.bin", "--stall-timeout", "0"])
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(2));
}

/// `get --json` promises scripts one JSON object whatever happened: a usage error says it in
/// JSON on stdout too (with `--follow`, on stderr: stdout is the player's), exit code 2, with
/// clap's text on stderr as always. It printed clap's text alone, and a script read nothing.
/// Without `--json`, stdout stays empty.
pub fn get_json_usage_errors_are_json_too() {
    let run = |args: &[&str]| {
        let output = Command::new(bin("loopcast")).args(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let json_of = |text: &str| -> serde_json::Value {
        let line = text
            .lines()
            .find(|line| line.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON line in {text:?}"));
        serde_json::from_str(line).unwrap()
    };
    let (code, stdout, stderr) = run(&[
        "get",
        "127.0.0.1:9",
        "film",
        "--json",
        "--stall-timeout",
        "0",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    let failure = json_of(&stdout);
    assert_eq!(failure["verified"], false);
    assert_eq!(failure["exit_code"], 2);
    assert!(failure["partial"].is_null());
    let error = failure["error"].as_str().unwrap();
    assert!(
        error.contains("--stall-timeout") && error.contains("'0'"),
        "{error}"
    );
    assert!(
        stderr.contains("error: invalid value '0'"),
        "clap's text stays on stderr: {stderr}"
    );

    let (code, stdout, _) = run(&["get", "--json"]);
    assert_eq!(code, Some(2));
    let error = json_of(&stdout)["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("<SERVER>") && error.contains("<NAME>"),
        "names what is missing: {error}"
    );

    let (code, stdout, stderr) = run(&[
        "get",
        "127.0.0.1:9",
        "film",
        "--follow",
        "--json",
        "--bogus",
    ]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty(), "stdout is the player's: {stdout:?}");
    assert_eq!(json_of(&stderr)["exit_code"], 2);

    let (code, stdout, stderr) = run(&["get", "127.0.0.1:9", "film", "--stall-timeout", "0"]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty(), "no JSON asked: {stdout:?}");
    assert!(stderr.contains("error: invalid value '0'"), "{stderr}");
}
