//! Unicast on the host's loopback: separate server and client processes.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

pub fn unicast_clients_one_late_get_identical_files_and_ctl_reports_status() {
    let scratch = Scratch::new("unicast");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 12 << 20, 7);
    let packed = pack_into(&input, &media, &[]);
    assert_eq!(packed["encrypted"], true);
    // At most 50 Mbit/s: the 9 MB archive takes ~1.4 s, so the early client is still active
    // when the status is read (after ~0.45 s) and the late one joins mid-transfer. (At a
    // 200 Mbit/s cap, with rates that ramp within a few reports, it was done by then.)
    let server = UnicastServer::start(&scratch, &media, &["--rate", "50M"]);
    let port = server.port;
    let client = |name: &str| {
        Proc::spawn(
            name,
            Command::new(bin("loopcast"))
                .args(["get", &format!("127.0.0.1:{port}"), "film.bin", "--json"])
                .arg("--output")
                .arg(scratch.path(&format!("{name}.lca")))
                .arg("--extract")
                .arg(scratch.path(&format!("{name}.out")))
                .arg("--keys")
                .arg(media.join("keys.db"))
                .args(["--root", packed["root"].as_str().unwrap()]),
        )
    };
    let early = client("early");
    std::thread::sleep(Duration::from_millis(200));
    // While a client is active, the admin socket shows the channel and the send path.
    let status = server.status();
    let path = status["send_path"].as_str().unwrap();
    assert!(
        [
            "io_uring-sendmsg-zc+gso",
            "io_uring-sendmsg+gso",
            "sendmmsg+gso",
            "sendmmsg"
        ]
        .contains(&path),
        "{status}"
    );
    assert!(!status["send_path_reason"].as_str().unwrap().is_empty());
    assert_eq!(status["channels"].as_array().unwrap().len(), 1, "{status}");
    std::thread::sleep(Duration::from_millis(300));
    let late = client("late");
    for (name, proc) in [("early", early), ("late", late)] {
        let report = proc.report(Duration::from_secs(60));
        assert_eq!(report["transport"], "unicast");
        assert_eq!(report["verified"], true);
        let extracted = std::fs::read(scratch.path(&format!("{name}.out"))).unwrap();
        assert!(extracted == original, "{name}: extracted bytes differ");
        // The downloaded archive is byte-identical to the server's.
        let served = std::fs::read(media.join("film.bin.lca")).unwrap();
        assert!(std::fs::read(scratch.path(&format!("{name}.lca"))).unwrap() == served);
        assert!(
            !scratch.path(&format!("{name}.lca.part")).exists(),
            "temporary file left behind"
        );
    }
    // R9: with every client done, the channel closes.
    std::thread::sleep(Duration::from_millis(300));
    let status = server.status();
    assert_eq!(status["channels"].as_array().unwrap().len(), 0, "{status}");
    assert_eq!(status["counters"]["sessions_completed"], 2, "{status}");
    let admin = server.admin.clone();
    let output = server.process.terminate();
    assert!(
        output.status.success(),
        "clean shutdown on SIGTERM: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!admin.exists(), "admin socket removed on shutdown");
}

pub fn wrong_root_and_unknown_file_are_clear_errors() {
    let scratch = Scratch::new("errors");
    let media = scratch.path("media");
    let input = scratch.path("a.bin");
    write_content(&input, 100_000, 1);
    pack_into(&input, &media, &["--no-encrypt"]);
    let server = UnicastServer::start(&scratch, &media, &[]);
    let port = server.port;
    let get = |name: &str, extra: &[&str]| {
        Command::new(bin("loopcast"))
            .args(["get", &format!("127.0.0.1:{port}"), name])
            .arg("--output")
            .arg(scratch.path("out.lca"))
            .args(extra)
            .output()
            .unwrap()
    };
    let missing = get("nope.bin", &[]);
    assert!(!missing.status.success());
    let text = String::from_utf8_lossy(&missing.stderr);
    assert!(
        text.contains("no file named") && text.lines().count() == 1,
        "{text}"
    );
    // With --json, a script gets one JSON object on stdout saying what went wrong (it got
    // nothing at all before) and the same exit code; the message stays on stderr.
    let missing_json = get("nope.bin", &["--json"]);
    assert_eq!(missing_json.status.code(), missing.status.code());
    let report: serde_json::Value = serde_json::from_slice(&missing_json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&missing_json.stdout)));
    assert_eq!(report["verified"], false);
    assert!(
        report["error"].as_str().unwrap().contains("no file named"),
        "{report}"
    );
    assert_eq!(
        report["exit_code"].as_i64(),
        missing.status.code().map(i64::from)
    );
    let forged = get("a.bin", &["--root", &"ab".repeat(32)]);
    assert!(!forged.status.success());
    assert!(
        String::from_utf8_lossy(&forged.stderr).contains("refusing"),
        "{}",
        String::from_utf8_lossy(&forged.stderr)
    );
    assert!(!scratch.path("out.lca").exists());
    drop(server);
    // Nobody listening: a clear error, not a hang.
    let nobody = Command::new(bin("loopcast"))
        .args(["get", &format!("127.0.0.1:{}", free_udp_port()), "a.bin"])
        .output()
        .unwrap();
    assert!(!nobody.status.success());
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("no answer"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
}

pub fn cli_errors_are_one_line_and_nonzero() {
    let scratch = Scratch::new("cli");
    let cases: Vec<Vec<String>> = vec![
        vec![
            "pack".into(),
            scratch.path("missing.bin").display().to_string(),
            "--no-encrypt".into(),
        ],
        vec![
            "inspect".into(),
            scratch.path("missing.lca").display().to_string(),
        ],
        vec![
            "extract".into(),
            scratch.path("missing.lca").display().to_string(),
            "-o".into(),
            scratch.path("x").display().to_string(),
        ],
    ];
    for args in cases {
        let output = Command::new(bin("loopcast")).args(&args).output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&output.stderr);
        assert_eq!(text.trim().lines().count(), 1, "{args:?}: {text}");
        assert!(text.starts_with("loopcast: error:"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    // A foreign file and a truncated archive.
    let foreign = scratch.path("foreign.lca");
    std::fs::write(&foreign, b"just some text").unwrap();
    let output = Command::new(bin("loopcast"))
        .arg("inspect")
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a loopcast archive"));
    let input = scratch.path("x.bin");
    write_content(&input, 50_000, 3);
    let archive = scratch.path("x.lca");
    run_ok(
        Command::new(bin("loopcast"))
            .arg("pack")
            .arg(&input)
            .arg("-o")
            .arg(&archive)
            .arg("--keys")
            .arg(scratch.path("k.db")),
    );
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &bytes[..bytes.len() - 100]).unwrap();
    let output = Command::new(bin("loopcast"))
        .arg("inspect")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Unreadable key database.
    std::fs::write(&archive, &bytes).unwrap();
    std::fs::write(
        scratch.path("bad.db"),
        b"garbage garbage garbage garbage garbage garbage garbage garbage garbage",
    )
    .unwrap();
    let output = Command::new(bin("loopcast"))
        .arg("extract")
        .arg(&archive)
        .arg("-o")
        .arg(scratch.path("o"))
        .arg("--keys")
        .arg(scratch.path("bad.db"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr)
            .trim()
            .lines()
            .count(),
        1,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `pack --datagram-size` takes what fits a 9000-byte MTU path: a datagram is a whole UDP
/// payload, so 9000 (which needs an MTU of 9028 over IPv6) is a usage error giving the range
/// and the reason, before anything is written; 8952 and --jumbo's 8944 pack. Before, 9000 was
/// accepted.
pub fn pack_refuses_datagrams_too_large_for_a_9000_byte_mtu() {
    let scratch = Scratch::new("datagram-size");
    let input = scratch.path("x.bin");
    write_content(&input, 50_000, 4);
    let pack = |archive: &str, extra: &[&str]| {
        Command::new(bin("loopcast"))
            .arg("pack")
            .arg(&input)
            .arg("-o")
            .arg(scratch.path(archive))
            .args(["--no-encrypt", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    for size in ["9000", "8953", "70000"] {
        let refused = pack("refused.lca", &["--datagram-size", size]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{size}: {stderr}");
        assert!(
            stderr.contains("256..=8952 bytes")
                && stderr.contains("UDP payload")
                && stderr.contains("9000-byte MTU"),
            "{size}: {stderr}"
        );
        assert!(!scratch.path("refused.lca").exists(), "{size}");
    }
    // A number too large for any integer is too large, not "not a number"; a negative one is a
    // bad value, not an option to pass after `--`.
    for (size, expected) in [
        (
            "100000000000000000000",
            "datagram size 100000000000000000000 is outside 256..=8952 bytes",
        ),
        ("-1", "\"-1\" is not a size: it must be positive"),
    ] {
        let refused = pack("refused.lca", &["--datagram-size", size]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{size}: {stderr}");
        assert!(
            stderr.contains(expected) && !stderr.contains("-- -1"),
            "{size}: {stderr}"
        );
    }
    // A size above what a 1500-byte MTU carries packs, with a note that it needs a larger one.
    let noted = pack("noted.lca", &["--datagram-size", "1500"]);
    let stderr = String::from_utf8_lossy(&noted.stderr);
    assert!(noted.status.success(), "{stderr}");
    assert!(
        stderr.contains("1500-byte datagrams do not fit every 1500-byte MTU path")
            && stderr.contains("an MTU of at least 1548 (over IPv6; 1528 over IPv4)"),
        "{stderr}"
    );
    // Both given: the size wins, and says so (it overrode --jumbo with no word).
    let both = pack("both.lca", &["--jumbo", "--datagram-size", "1400"]);
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(both.status.success(), "{stderr}");
    assert!(
        stderr.contains("--datagram-size 1400 overrides --jumbo"),
        "{stderr}"
    );
    // Packing options out of range are usage errors too (they exited 1).
    for (extra, expected) in [
        (&["--level", "30"][..], "compression level must be 0..=22"),
        (&["--frame-size", "1k"][..], "frame size must be 4096..="),
    ] {
        let refused = pack("refused.lca", extra);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!scratch.path("refused.lca").exists(), "{extra:?}");
    }
    // The size --jumbo gives anyway overrides nothing.
    let same = pack("same.lca", &["--jumbo", "--datagram-size", "8944"]);
    assert!(
        !String::from_utf8_lossy(&same.stderr).contains("overrides"),
        "8944 is --jumbo's"
    );
    let quiet = pack("quiet.lca", &["--datagram-size", "1452"]);
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("note"),
        "1452 fits"
    );
    let accepted: [(&str, &[&str], usize); 2] = [
        ("largest.lca", &["--datagram-size", "8952"], 8952),
        ("jumbo.lca", &["--jumbo"], 8944),
    ];
    for (archive, extra, size) in accepted {
        let output = pack(archive, extra);
        assert!(
            output.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(shape_of(&scratch.path(archive)).0, size, "{extra:?}");
        // --jumbo is the same size as 8944 by hand: it gets the same note (it had none).
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(&format!(
                "{size}-byte datagrams do not fit every 1500-byte MTU path"
            )),
            "{extra:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Acceptance: a 1 GiB file packs, serves, downloads and extracts byte-identical.
pub fn one_gibibyte_file_round_trips_byte_identical() {
    let scratch = Scratch::new("gib");
    let media = scratch.path("media");
    let input = scratch.path("gib.bin");
    {
        // Incompressible content from BLAKE3's XOF, written in 1 MiB blocks.
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let mut block = vec![0u8; 1 << 20];
        for counter in 0u64..1024 {
            blake3::Hasher::new()
                .update(&counter.to_le_bytes())
                .finalize_xof()
                .fill(&mut block);
            out.write_all(&block).unwrap();
        }
        out.flush().unwrap();
    }
    let packed = pack_into(&input, &media, &[]);
    assert_eq!(packed["original_bytes"], 1u64 << 30);
    let server = UnicastServer::start(&scratch, &media, &["--rate", "2G"]);
    let port = server.port;
    let output = Proc::spawn(
        "get 1 GiB",
        Command::new(bin("loopcast"))
            .args(["get", &format!("127.0.0.1:{port}"), "gib.bin", "--json"])
            .arg("--output")
            .arg(scratch.path("gib.lca"))
            .arg("--extract")
            .arg(scratch.path("gib.out"))
            .arg("--keys")
            .arg(media.join("keys.db"))
            .args(["--root", packed["root"].as_str().unwrap()]),
    )
    .wait(Duration::from_secs(300));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("1 GiB download: {}", json_of(&output));
    let same = Command::new("cmp")
        .arg(&input)
        .arg(scratch.path("gib.out"))
        .status()
        .unwrap();
    assert!(same.success(), "extracted 1 GiB differs from the original");
    drop(server);
}

/// Arguments that are not UTF-8 (a Latin-1 file name, as old archives of media hold): a path
/// like any other to `loopcast`, a one-line error elsewhere, never a panic. (Read as `String`s
/// since 69f803c, every one made `loopcast`, `loopcastctl` and `loopcast-bench` panic with exit
/// 101, and `loopcastd` before that.)
pub fn arguments_that_are_not_utf8_are_paths_or_one_line_errors() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let scratch = Scratch::new("latin1");
    let latin1 = |name: &[u8]| scratch.path("").join(OsStr::from_bytes(name));
    let input = latin1(b"caf\xe9.bin");
    write_content(&input, 50_000, 7);
    let media = scratch.path("media");
    run_ok(
        Command::new(bin("loopcast"))
            .arg("pack")
            .arg(&input)
            .args(["--name", "cafe.bin", "--no-encrypt", "--media"])
            .arg(&media),
    );
    let packed = media.join("cafe.bin.lca");
    let output = latin1(b"caf\xe9.out");
    run_ok(
        Command::new(bin("loopcast"))
            .arg("extract")
            .arg(&packed)
            .arg("-o")
            .arg(&output),
    );
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&input).unwrap(),
        "extracted to a Latin-1 name, identical"
    );
    let cases: Vec<(&str, Vec<&OsStr>)> = vec![
        (
            "loopcastctl",
            vec![
                OsStr::new("--socket"),
                OsStr::from_bytes(b"a\xe9.sock"),
                OsStr::new("status"),
            ],
        ),
        (
            "loopcast-bench",
            vec![
                OsStr::new("fleet-sim"),
                OsStr::new("--seconds"),
                OsStr::from_bytes(b"\xe9"),
            ],
        ),
        (
            "loopcast",
            vec![
                OsStr::new("pack"),
                OsStr::from_bytes(b"missing-caf\xe9.bin"),
                OsStr::new("--no-encrypt"),
            ],
        ),
    ];
    for (program, args) in cases {
        let run = Command::new(bin(program)).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&run.stderr);
        assert!(
            !text.contains("panicked") && run.status.code().is_some_and(|code| code != 101),
            "{program} {args:?}: {:?} {text}",
            run.status
        );
        assert!(!run.status.success(), "{program} {args:?}: {text}");
        assert!(
            text.lines()
                .next()
                .is_some_and(|line| line.contains("error")),
            "{program} {args:?}: {text}"
        );
    }
    // loopcastd keeps its arguments as strings (its config file and SIGHUP): it refuses.
    let run = Command::new(bin("loopcastd"))
        .arg("check")
        .arg("--media")
        .arg(OsStr::from_bytes(b"m\xe9"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{text}");
    assert!(
        text.trim().lines().count() == 1 && text.contains("not valid UTF-8"),
        "{text}"
    );
}
