//! What an operator meeting the fleet for the first time runs into (issue 11 review): a
//! reload must not hide a change it does not apply; `loopcastd check` on an empty media
//! directory or one it cannot record in says what it did (s7 review).

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// A server's and a director's files name a new fleet key, then SIGHUP: the key cannot change
/// live, so each log warns that it waits for a restart (and neither says "nothing changed",
/// which would let the operator believe the fleet is on the new key).
pub fn sighup_with_a_new_fleet_key_warns_it_waits_for_a_restart() {
    let scratch = Scratch::new("sighup-key");
    let key = scratch.path("fleet.key");
    let new_key = scratch.path("new.key");
    run_ok(Command::new(bin("loopcastd")).arg("fleet-key").arg(&key));
    run_ok(
        Command::new(bin("loopcastd"))
            .arg("fleet-key")
            .arg(&new_key),
    );
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let key_line = |key: &std::path::Path| format!("fleet_key = {:?}\n", key.display().to_string());
    let fleet = ConfiguredFleet::start(&scratch, &media, &key_line(&key), &key_line(&key));
    fleet.reload_with(&key_line(&new_key), &key_line(&new_key));
    // A reload is taken within 100 ms of the signal.
    std::thread::sleep(Duration::from_millis(600));
    for (name, daemon) in [("server", fleet.server), ("director", fleet.director)] {
        let output = daemon.terminate();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            log.contains("config: --fleet-key changed")
                && log.contains("takes effect only after a restart")
                && !log.contains("config reloaded: nothing changed"),
            "the {name}'s log after SIGHUP with a new fleet key:\n{log}"
        );
    }
}

/// `loopcastd check` on an empty media directory (a new one, or the wrong path) says that it
/// found no archives, exits 0 and writes nothing; it must not claim a record it never wrote
/// (it said "0 archive(s) verified, recorded in DIR/.loopcast-verified" with no such file).
/// A missing directory is an error naming it.
pub fn check_of_an_empty_media_directory_says_it_found_no_archives() {
    let scratch = Scratch::new("check-empty");
    let media = scratch.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let check = |dir: &std::path::Path, json: bool| {
        let extra: &[&str] = if json { &["--json"] } else { &[] };
        loopcastd_check(dir, extra).output().unwrap()
    };
    for json in [false, true] {
        let output = check(&media, json);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{output:?}");
        assert!(output.stdout.is_empty(), "{output:?}");
        assert!(
            stderr.contains("no archives (*.lca) in") && !stderr.contains("recorded in"),
            "json {json}: {stderr}"
        );
        assert!(!media.join(".loopcast-verified").exists());
    }
    let output = check(&scratch.path("no-such-dir"), false);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read media directory"),
        "{output:?}"
    );
}

/// `loopcastd check` where the records cannot be written (here `.loopcast-verified` is a
/// directory, so this holds as root too; for an operator it is a media directory they may not
/// write): the summary still counts the corrupt archive besides saying the records were not
/// written (it said only the latter), and the exit code is 1.
pub fn check_that_cannot_record_still_counts_the_corrupt_archive() {
    let scratch = Scratch::new("check-norecord");
    let media = scratch.path("media");
    for (name, seed) in [("good.bin", 5), ("bad.bin", 6)] {
        let input = scratch.path(name);
        write_content(&input, 1 << 20, seed);
        pack_into(&input, &media, &["--no-encrypt"]);
    }
    let damaged = media.join("bad.bin.lca");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&damaged, &bytes).unwrap();
    std::fs::create_dir(media.join(".loopcast-verified")).unwrap();
    let output = loopcastd_check(&media, &[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stdout.contains("bad.bin.lca: CORRUPT") && stdout.contains("good.bin.lca: verified"),
        "{stdout}"
    );
    // The line names the archive once, then the reason (not the path again).
    assert!(!stdout.contains(&media.display().to_string()), "{stdout}");
    assert!(stderr.contains("cannot record the checks"), "{stderr}");
    assert!(
        stderr.contains("1 archive(s) corrupt") && stderr.contains("1 verified"),
        "{stderr}"
    );
}

/// An operator runs `loopcastd check`, then hands the media to the server's user (chown,
/// chmod). That moves each archive's change time, so the records no longer vouch for them and
/// the server hashes them again, as it must; its log says why (it said nothing, so the
/// operator could not tell why the check had not helped).
pub fn a_record_made_stale_by_a_chmod_is_named_in_the_servers_log() {
    let scratch = Scratch::new("check-chmod");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    write_content(&input, 1 << 20, 9);
    pack_into(&input, &media, &["--no-encrypt"]);
    run_ok(&mut loopcastd_check(&media, &[]));
    let archive = media.join("film.bin.lca");
    let mode = std::fs::metadata(&archive).unwrap().permissions();
    std::thread::sleep(Duration::from_millis(20));
    // chmod to the same mode: only the change time moves.
    std::fs::set_permissions(&archive, mode).unwrap();
    let server = UnicastServer::start(&scratch, &media, &["--rate", "200M"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    let output = run_ok(
        Command::new(bin("loopcast"))
            .args(["get", &server_addr, "film.bin", "--json"])
            .arg("--output")
            .arg(scratch.path("film.lca")),
    );
    assert_eq!(json_of(&output)["verified"], true);
    let status = server.status();
    assert_eq!(
        status["counters"]["archives_vouched_by_record"], 0,
        "{status}"
    );
    let log = server.process.terminate();
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(
        log.contains("recorded as checked in .loopcast-verified but changed since"),
        "{log}"
    );
}

/// `loopcastd check --skip-recorded` after adding media hashes only what is new or changed
/// since its record (a chmod moves the change time: hashed again; a damaged archive: caught),
/// lists the rest as skipped, and ends its `--json` with a summary of the counts.
pub fn check_skip_recorded_hashes_only_new_or_changed_archives() {
    let scratch = Scratch::new("check-skip");
    let media = scratch.path("media");
    let add = |name: &str, seed: u64| {
        let input = scratch.path(name);
        write_content(&input, 1 << 20, seed);
        pack_into(&input, &media, &["--no-encrypt"]);
    };
    let check = |extra: &[&str]| loopcastd_check(&media, extra).output().unwrap();
    let lines = |output: &std::process::Output| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
            .collect()
    };
    let entry = |lines: &[serde_json::Value], file: &str| {
        lines
            .iter()
            .find(|l| l["file"] == file)
            .unwrap_or_else(|| panic!("{file} in {lines:?}"))
            .clone()
    };
    add("old.bin", 11);
    let output = check(&[]);
    assert!(output.status.success(), "{output:?}");
    add("new.bin", 12);
    let output = check(&["--skip-recorded", "--json"]);
    assert!(output.status.success(), "{output:?}");
    let listed = lines(&output);
    let old = entry(&listed, "old.bin.lca");
    let new = entry(&listed, "new.bin.lca");
    assert!(old["skipped"] == true && old["verified"] == false, "{old}");
    assert!(new["skipped"] == false && new["verified"] == true, "{new}");
    let summary = &listed.last().expect("a summary")["summary"];
    assert_eq!(summary["verified"], 1, "{summary}");
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert_eq!(summary["corrupt"], 0, "{summary}");
    // Both are recorded now: nothing is hashed, and the text says so.
    let output = check(&["--skip-recorded"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout.matches(": skipped").count(), 2, "{stdout}");
    assert!(
        stderr.contains("0 archive(s) verified, 2 skipped"),
        "{stderr}"
    );
    // A chmod (change time moved) is hashed again; bytes damaged in place are caught.
    let old_path = media.join("old.bin.lca");
    std::thread::sleep(Duration::from_millis(20));
    let mode = std::fs::metadata(&old_path).unwrap().permissions();
    std::fs::set_permissions(&old_path, mode).unwrap();
    let new_path = media.join("new.bin.lca");
    let mut bytes = std::fs::read(&new_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&new_path, &bytes).unwrap();
    let output = check(&["--skip-recorded", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let listed = lines(&output);
    assert_eq!(entry(&listed, "old.bin.lca")["verified"], true);
    assert_eq!(entry(&listed, "new.bin.lca")["corrupt"], true);
    let summary = &listed.last().expect("a summary")["summary"];
    assert_eq!(summary["skipped"], 0, "{summary}");
    assert_eq!(summary["corrupt"], 1, "{summary}");
}

/// `loopcastd check --skip-recorded` over media that are all recorded and unchanged writes no
/// records (it rewrote and synced `.loopcast-verified` after every skipped archive, each time
/// stat-ing every record: 4 million statx calls for 2,000 archives, slower than a full check,
/// and exit 1 "cannot record" in a media directory it had no need to write).
pub fn check_skip_recorded_of_unchanged_media_writes_no_records() {
    let scratch = Scratch::new("check-skip-nowrite");
    let media = scratch.path("media");
    for (name, seed) in [("a.bin", 21), ("b.bin", 22)] {
        let input = scratch.path(name);
        write_content(&input, 1 << 20, seed);
        pack_into(&input, &media, &["--no-encrypt"]);
    }
    run_ok(&mut loopcastd_check(&media, &[]));
    let records = media.join(".loopcast-verified");
    // A rewrite is a new file renamed over the old one: a new change time (the inode number
    // alone may be the freed one reused).
    let stamp = |path: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).unwrap();
        (metadata.ino(), metadata.ctime(), metadata.ctime_nsec())
    };
    let before = stamp(&records);
    std::thread::sleep(Duration::from_millis(20));
    let output = run_ok(&mut loopcastd_check(&media, &["--skip-recorded"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches(": skipped").count(), 2, "{stdout}");
    assert_eq!(
        stamp(&records),
        before,
        "the records file was rewritten though every archive was skipped"
    );
}

/// `loopcastd check --json` where the records cannot be written (`.loopcast-verified` is a
/// directory, so this holds as root too) still ends with its summary, saying they were not
/// recorded and why (it printed no summary at all: a script reading the last line found an
/// archive's object, or nothing).
pub fn check_json_that_cannot_record_still_ends_with_a_summary() {
    let scratch = Scratch::new("check-json-norecord");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    write_content(&input, 1 << 20, 23);
    pack_into(&input, &media, &["--no-encrypt"]);
    std::fs::create_dir(media.join(".loopcast-verified")).unwrap();
    let output = loopcastd_check(&media, &["--json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON");
    let summary = &last["summary"];
    assert_eq!(summary["verified"], 1, "{stdout}");
    assert!(summary["recorded_in"].is_null(), "{summary}");
    assert!(
        summary["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot record the checks")),
        "{summary}"
    );
}

/// An archive packed again under a running server (`pack --force`, new content, new root):
/// the next request for it gets the new one, and the server's log says the archive was
/// replaced before it offers it (s16 new-user review: the log said so only at a later rescan,
/// after clients were already served the new root).
pub fn a_repacked_archive_is_logged_as_replaced_before_it_is_served() {
    let scratch = Scratch::new("repack");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    write_content(&input, 1 << 20, 3);
    let first = pack_into(&input, &media, &["--no-encrypt"]);
    let server = UnicastServer::start(&scratch, &media, &["--rate", "200M"]);
    let server_addr = format!("127.0.0.1:{}", server.port);
    let get = |name: &str| {
        json_of(&run_ok(
            Command::new(bin("loopcast"))
                .args(["get", &server_addr, "film.bin", "--json", "--force"])
                .arg("--output")
                .arg(scratch.path(name)),
        ))
    };
    assert_eq!(get("one.lca")["root"], first["root"]);
    write_content(&input, 1 << 20, 4);
    let second = pack_into(&input, &media, &["--no-encrypt", "--force"]);
    assert_ne!(second["root"], first["root"]);
    assert_eq!(
        get("two.lca")["root"],
        second["root"],
        "the new archive is served"
    );
    let log = server.process.terminate();
    let log = String::from_utf8_lossy(&log.stderr);
    let replaced = log
        .find("archive replaced in the media directory")
        .unwrap_or_else(|| panic!("no replaced line:\n{log}"));
    let second_offer = log.rfind("session offered").expect("two offers in the log");
    assert!(
        replaced < second_offer,
        "replaced logged after the new archive was offered:\n{log}"
    );
    assert!(!log.contains("no clients left"), "{log}");
}
