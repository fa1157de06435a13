//! What an operator changes while a server runs (issue 11): SIGHUP reads the config file again
//! and applies what can change live (a broken file changes nothing), and `loopcastctl
//! stop-channel` ends one channel whose client then asks again and still finishes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// The `settings` of `loopcastctl status --json`, once `done` holds of them (at most 5 s).
fn settings_when(admin: &Path, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = status_of(admin);
        let settings = status["settings"].clone();
        if done(&settings) || Instant::now() > deadline {
            return settings;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `loopcastd serve --config FILE --tiers 3`: the file changed and SIGHUP sent, the rate cap,
/// tier policy and session timeout change at once (`status` shows them; the log says old ->
/// new), the command line's --tiers still wins, a changed --listen is logged as waiting for a
/// restart, and an archive packed meanwhile is in the catalog at once. Then a file with a bad
/// value, and one that is not TOML: the server keeps running with the settings it had, and the
/// log names the file and the problem.
pub fn sighup_applies_the_config_file_live_and_a_broken_one_changes_nothing() {
    let scratch = Scratch::new("sighup");
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let admin = scratch.path("admin.sock");
    let config = scratch.path("serve.toml");
    let port = free_udp_port();
    let settings = |extra: &str| {
        format!(
            "media = {:?}\nlisten = \"127.0.0.1:{port}\"\nno_multicast = true\nadmin_socket = {:?}\nmetrics = \"off\"\n{extra}",
            media.display().to_string(),
            admin.display().to_string()
        )
    };
    std::fs::write(
        &config,
        settings("rate = \"100M\"\ntier_policy = \"distribution\"\nsession_timeout = 5\n"),
    )
    .unwrap();
    let server = Proc::spawn(
        "loopcastd",
        Command::new(bin("loopcastd"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--tiers", "3"]),
    );
    wait_for_admin(&admin);
    let before = settings_when(&admin, |_| true);
    assert_eq!(before["rate_bits_per_s"], 100_000_000, "{before}");
    assert_eq!(before["policy"], "distribution", "{before}");
    assert_eq!(before["tiers"], 3, "{before}");
    assert_eq!(before["session_timeout_s"], 5, "{before}");
    assert_eq!(status_of(&admin)["archives"], 0);

    // A new archive, and new settings (tiers = 2 loses to the command line's 3; the port
    // needs a restart).
    let input = scratch.path("late.bin");
    write_content(&input, 200_000, 3);
    pack_into(&input, &media, &["--no-encrypt"]);
    let other_port = free_udp_port();
    std::fs::write(
        &config,
        settings("rate = \"50M\"\ntier_policy = \"slowest\"\ntiers = 2\nsession_timeout = 9\n")
            .replace(
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{other_port}"),
            ),
    )
    .unwrap();
    hang_up(&server);
    let after = settings_when(&admin, |s| s["rate_bits_per_s"] == 50_000_000);
    assert_eq!(after["rate_bits_per_s"], 50_000_000, "{after}");
    assert_eq!(after["policy"], "slowest", "{after}");
    assert_eq!(after["tiers"], 3, "the command line still wins: {after}");
    assert_eq!(after["session_timeout_s"], 9, "{after}");
    assert_eq!(status_of(&admin)["archives"], 1, "SIGHUP rescans the media");

    // A value that does not check, then a file that is not TOML: nothing changes.
    for broken in [
        settings("rate = \"fast\"\ntier_policy = \"average\"\n"),
        settings("rate = \n"),
    ] {
        std::fs::write(&config, broken).unwrap();
        hang_up(&server);
        std::thread::sleep(Duration::from_millis(400));
        let kept = settings_when(&admin, |_| true);
        assert_eq!(kept, after, "a broken file changed the settings");
    }
    let mut server = server;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server stopped on a broken config"
    );
    // A cap above what automatic rates reach: that ceiling is in force, and the log says so
    // (a reload took it silently, and `status` showed 100G).
    std::fs::write(&config, settings("rate = \"100G\"\n")).unwrap();
    hang_up(&server);
    let capped = settings_when(&admin, |s| s["rate_bits_per_s"] != 50_000_000);
    assert_eq!(capped["rate_bits_per_s"], 40_000_000_000u64, "{capped}");
    let output = server.terminate();
    assert!(output.status.success(), "clean exit after the reloads");
    let log = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "config reloaded: --rate 100.0 Mbit/s -> 50.0 Mbit/s",
        "config reloaded: --tier-policy distribution -> slowest",
        "config reloaded: --session-timeout 5 s -> 9 s",
        "--listen changed",
        "takes effect only after a restart",
        "SIGHUP: media database rescanned archives=1",
        "archive found in the media directory: now served file=late.bin",
        "bad rate \"fast\"",
        "TOML parse error",
        "--rate 100.00 Gbit/s is above the most automatic rates reach: each channel is capped at 40.00 Gbit/s",
    ] {
        assert!(
            log.contains(expected),
            "want {expected:?} in the log:\n{log}"
        );
    }
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("config not reloaded"))
        .collect();
    assert_eq!(refusals.len(), 2, "{log}");
    for line in refusals {
        assert!(line.contains("ERROR"), "{line}");
        assert!(
            line.contains(&config.display().to_string()),
            "names the file: {line}"
        );
    }
    assert!(
        !log.contains("--tiers 3 ->"),
        "the command line's --tiers stays: {log}"
    );
}

/// A client downloading a file whose channel is stopped with `loopcastctl stop-channel`: the
/// answer counts it, the client is told to ask again, does, and finishes byte-identical
/// without starting over. (And SIGHUP without --config: a rescan, no reload.)
pub fn a_stopped_channel_s_client_asks_again_and_finishes_identical() {
    let scratch = Scratch::new("stop-channel");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 16 << 20, 11);
    pack_into(&input, &media, &["--no-encrypt"]);
    // At most 40 Mbit/s: about 3.5 s for the file, time to stop its channel mid-transfer.
    let server = UnicastServer::start(&scratch, &media, &["--rate", "40M"]);
    let output = scratch.path("film.lca");
    let client = Proc::spawn(
        "loopcast get",
        Command::new(bin("loopcast"))
            .args([
                "get",
                &format!("127.0.0.1:{}", server.port),
                "film.bin",
                "--json",
            ])
            .arg("--output")
            .arg(&output)
            .arg("--extract")
            .arg(scratch.path("film.out")),
    );
    let ctl = |args: &[&str]| {
        Command::new(bin("loopcastctl"))
            .arg("--socket")
            .arg(&server.admin)
            .args(args)
            .output()
            .unwrap()
    };
    // Its channel, once it holds a part of the file.
    let deadline = Instant::now() + Duration::from_secs(10);
    let channel = loop {
        assert!(Instant::now() < deadline, "the client never got going");
        let sessions = json_of(&ctl(&["clients", "--json"]));
        // Each row names the server, so a fleet's views join.
        for session in sessions.as_array().unwrap() {
            assert_eq!(session["server"], format!("127.0.0.1:{}", server.port));
        }
        let going = sessions
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["held"].as_u64().unwrap_or(0) > 2_000)
            .map(|s| s["channel"].as_u64().unwrap());
        if let Some(channel) = going {
            break channel;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Drain means "go to the fleet's other servers": on a server in no fleet it is refused,
    // saying why, and changes nothing (before, it answered "accepted" and logged nothing).
    let drain = ctl(&["drain"]);
    assert!(!drain.status.success());
    let said = String::from_utf8_lossy(&drain.stderr);
    assert!(said.contains("in no fleet"), "{said}");
    // The table shows the id stop-channel takes.
    let table = String::from_utf8_lossy(&ctl(&["channels"]).stdout).to_string();
    assert!(table.starts_with("CHANNEL"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&channel.to_string())),
        "{table}"
    );
    let stopped = ctl(&["stop-channel", &channel.to_string(), "--json"]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let answer = json_of(&stopped);
    assert_eq!(answer["stopped"], channel, "{answer}");
    assert_eq!(answer["clients_told"], 1, "{answer}");
    assert_eq!(answer["file"], "film.bin", "{answer}");
    // A channel that is not open is an error, and says so.
    let again = ctl(&["stop-channel", &channel.to_string()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(&format!("no channel {channel} is open")),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let report = client.report(Duration::from_secs(60));
    assert_eq!(report["verified"], true, "{report}");
    assert!(
        report["session_rerequests"].as_u64().unwrap() >= 1,
        "it asked again: {report}"
    );
    assert!(std::fs::read(scratch.path("film.out")).unwrap() == original);
    let served = std::fs::read(media.join("film.bin.lca")).unwrap();
    assert!(std::fs::read(&output).unwrap() == served, "archive differs");
    // Not started over: what it held was kept (at most a loop's worth came twice).
    let stored = report["receiver"]["stored"].as_u64().unwrap();
    let duplicates = report["duplicates"].as_u64().unwrap();
    assert!(
        duplicates * 10 < stored,
        "stored {stored}, {duplicates} duplicates: {report}"
    );
    // Started without --config: SIGHUP rescans the media and says there is no file to read.
    hang_up(&server.process);
    std::thread::sleep(Duration::from_millis(300));
    wait_for_admin(&server.admin);
    let output = server.process.terminate();
    assert!(output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("channel stopped by the operator"), "{log}");
    assert!(
        log.contains("SIGHUP: media database rescanned archives=1")
            && log.contains("SIGHUP: no --config file to reload"),
        "{log}"
    );
}

/// In a fleet: SIGHUP on a server with a new `location` and `heartbeat_ms` in its file, and on
/// a director with a new `heartbeat_misses` in its own. The director lists the server under
/// its new location at once (a heartbeat goes out on reload), the server's status shows both,
/// and the director's log says what it changed.
pub fn sighup_moves_a_fleet_server_to_its_new_location_and_a_director_to_its_new_miss_count() {
    let scratch = Scratch::new("sighup-fleet");
    let key = scratch.path("fleet.key");
    run_ok(Command::new(bin("loopcastd")).arg("fleet-key").arg(&key));
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let key_line = format!("fleet_key = {:?}\n", key.display().to_string());
    let director_settings = |misses: u32| format!("{key_line}heartbeat_misses = {misses}\n");
    let server_settings = |location: &str, heartbeat_ms: u32| {
        format!("{key_line}location = {location:?}\nheartbeat_ms = {heartbeat_ms}\n")
    };
    let fleet = ConfiguredFleet::start(
        &scratch,
        &media,
        &director_settings(3),
        &server_settings("paris", 250),
    );
    let (director_admin, server_admin) = (&fleet.director_admin, &fleet.server_admin);
    let listed_at = |location: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let servers = status_of(director_admin)["servers"].clone();
            let found = servers
                .as_array()
                .is_some_and(|list| list.len() == 1 && list[0]["location"] == location);
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the director never listed the server at {location}: {servers}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    listed_at("paris");
    fleet.reload_with(&director_settings(5), &server_settings("tokyo", 100));
    listed_at("tokyo");
    let settings = settings_when(server_admin, |s| s["location"] == "tokyo");
    assert_eq!(settings["location"], "tokyo", "{settings}");
    assert_eq!(settings["heartbeat_ms"], 100, "{settings}");
    let server_log = fleet.server.terminate();
    let log = String::from_utf8_lossy(&server_log.stderr);
    assert!(
        log.contains("config reloaded: --location paris -> tokyo")
            && log.contains("config reloaded: --heartbeat-ms 250 -> 100"),
        "{log}"
    );
    let director_log = fleet.director.terminate();
    assert!(director_log.status.success());
    let log = String::from_utf8_lossy(&director_log.stderr);
    assert!(
        log.contains("config reloaded: --heartbeat-misses 3 -> 5"),
        "{log}"
    );
}

/// SIGHUP with a lower `rate` in the file while a client downloads: its channel's rate comes
/// down at once (the data plane sends no faster: bytes sent over a second), and the client
/// still finishes byte-identical.
pub fn sighup_with_a_lower_rate_slows_a_running_channel_at_once() {
    let scratch = Scratch::new("sighup-rate");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 8 << 20, 5);
    pack_into(&input, &media, &["--no-encrypt"]);
    let admin = scratch.path("admin.sock");
    let config = scratch.path("serve.toml");
    let port = free_udp_port();
    let settings = |rate: &str| {
        format!(
            "media = {:?}\nlisten = \"127.0.0.1:{port}\"\nno_multicast = true\nadmin_socket = {:?}\nmetrics = \"off\"\nrate = {rate:?}\n",
            media.display().to_string(),
            admin.display().to_string()
        )
    };
    std::fs::write(&config, settings("40M")).unwrap();
    let server = Proc::spawn(
        "loopcastd",
        Command::new(bin("loopcastd"))
            .args(["serve", "--config"])
            .arg(&config),
    );
    wait_for_admin(&admin);
    let client = Proc::spawn(
        "loopcast get",
        Command::new(bin("loopcast"))
            .args(["get", &format!("127.0.0.1:{port}"), "film.bin", "--json"])
            .arg("--output")
            .arg(scratch.path("film.lca"))
            .arg("--extract")
            .arg(scratch.path("film.out")),
    );
    let channel =
        |status: &serde_json::Value| status["channels"].as_array().unwrap().first().cloned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel(&status_of(&admin))
        .is_none_or(|c| c["bytes_sent"].as_u64().unwrap_or(0) < 1 << 20)
    {
        assert!(Instant::now() < deadline, "the client never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&config, settings("8M")).unwrap();
    hang_up(&server);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = channel(&status_of(&admin)).expect("still downloading");
        if now["rate_bits_per_s"] == 8_000_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the channel kept its rate: {now}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What the data plane sends over the next second: at most 8 Mbit/s (and a margin), from a
    // snapshot taken after the change (status snapshots are up to 50 ms old).
    std::thread::sleep(Duration::from_millis(200));
    let slowed = channel(&status_of(&admin)).expect("still downloading");
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let later = channel(&status_of(&admin)).expect("still downloading at 8 Mbit/s");
    let sent = later["bytes_sent"].as_u64().unwrap() - slowed["bytes_sent"].as_u64().unwrap();
    let bits_per_s = sent as f64 * 8.0 / started.elapsed().as_secs_f64();
    assert!(
        bits_per_s < 8e6 * 1.3,
        "{bits_per_s:.0} bit/s after the cap came down to 8M"
    );
    let report = client.report(Duration::from_secs(60));
    assert_eq!(report["verified"], true, "{report}");
    assert!(std::fs::read(scratch.path("film.out")).unwrap() == original);
    let output = server.terminate();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("config reloaded: --rate 40.0 Mbit/s -> 8.0 Mbit/s"),
        "{log}"
    );
}
