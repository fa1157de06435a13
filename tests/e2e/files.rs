//! Safe files (issue 9, defects 2, 6 and 12): what `loopcast get`, `extract` and `pack` write,
//! next to hostile or mistaken things already on disk, and the exit codes they give.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;

const EXIT_REFUSED: i32 = 3;
const EXIT_DISK_FULL: i32 = 5;
const EXIT_VERIFICATION: i32 = 6;

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A packed file served on loopback at `rate`: (scratch, media, server).
fn served(tag: &str, size: usize, rate: &str) -> (Scratch, std::path::PathBuf, UnicastServer) {
    let scratch = Scratch::new(tag);
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    write_content(&input, size, 11);
    pack_into(&input, &media, &["--level", "0"]);
    let server = UnicastServer::start(&scratch, &media, &["--rate", rate]);
    (scratch, media, server)
}

fn get_command(port: u16, output: &Path) -> Command {
    let mut command = Command::new(bin("loopcast"));
    command
        .args(["get", &format!("127.0.0.1:{port}"), "film.bin", "--json"])
        .args(["--stall-timeout", "20"])
        .arg("--output")
        .arg(output);
    command
}

fn assert_verifies(archive: &Path, served: &Path) {
    run_ok(
        Command::new(bin("loopcast"))
            .arg("inspect")
            .arg(archive)
            .args(["--verify", "--frames", "0"]),
    );
    assert!(
        std::fs::read(archive).unwrap() == std::fs::read(served).unwrap(),
        "{} differs from the served archive",
        archive.display()
    );
}

fn requests_seen(server: &UnicastServer) -> u64 {
    server.status()["counters"]["requests"].as_u64().unwrap()
}

/// Defect 2: a second `get` to the same output fails at once with a clear message; the first
/// is undisturbed and publishes a verified archive.
pub fn second_get_to_one_output_fails_at_once_and_the_first_completes() {
    // ~12 MiB at 40 Mbit/s: the first download takes ~2.5 s.
    let (scratch, media, server) = served("files-lock", 12 << 20, "40M");
    let output = scratch.path("film.lca");
    let first = Proc::spawn("first get", &mut get_command(server.port, &output));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scratch.path("film.lca.part").exists() {
        assert!(
            Instant::now() < deadline,
            "first get never created its .part"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let second = get_command(server.port, &output).output().unwrap();
    let second_took = started.elapsed();
    let message = stderr_of(&second);
    assert_eq!(second.status.code(), Some(EXIT_REFUSED), "{message}");
    assert!(
        second_took < Duration::from_secs(2),
        "second get took {second_took:?}"
    );
    assert!(
        message.contains("film.lca") && message.contains("another download"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    let report = first.report(Duration::from_secs(60));
    assert_eq!(report["verified"], true);
    assert_verifies(&output, &media.join("film.bin.lca"));
    assert_eq!(requests_seen(&server), 1, "the second get sent nothing");
}

/// Defect 6: symlinks planted at `<out>.part`, `<out>.part.state` and `<out>.part.state.tmp`
/// are never followed; their targets stay as they were.
pub fn symlinks_beside_the_output_are_never_followed() {
    // ~2 MiB at 20 Mbit/s: ~0.9 s, long enough for several state saves (every 200 ms).
    let (scratch, media, server) = served("files-symlink", 2 << 20, "20M");
    let output = scratch.path("film.lca");
    let victim = scratch.path("victim");
    std::fs::write(&victim, b"precious bytes").unwrap();
    std::os::unix::fs::symlink(&victim, scratch.path("film.lca.part")).unwrap();
    let refused = get_command(server.port, &output).output().unwrap();
    let message = stderr_of(&refused);
    assert!(!refused.status.success());
    assert!(
        message.contains("film.lca.part") && message.contains("symbolic link"),
        "{message}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious bytes");
    assert!(!output.exists());

    std::fs::remove_file(scratch.path("film.lca.part")).unwrap();
    for name in ["film.lca.part.state", "film.lca.part.state.tmp"] {
        std::os::unix::fs::symlink(&victim, scratch.path(name)).unwrap();
    }
    let report =
        Proc::spawn("get", &mut get_command(server.port, &output)).report(Duration::from_secs(60));
    assert_eq!(report["verified"], true);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious bytes");
    assert_verifies(&output, &media.join("film.bin.lca"));
}

/// Defect 12: an existing output is refused before any request unless --force; `-o DIR` fails
/// before downloading anything.
pub fn existing_output_needs_force_and_a_directory_is_refused_up_front() {
    // ~8 MiB at 20 Mbit/s: a download would take > 3 s.
    let (scratch, media, server) = served("files-force", 8 << 20, "20M");
    let output = scratch.path("film.lca");
    std::fs::write(&output, b"an older file").unwrap();
    let started = Instant::now();
    let refused = get_command(server.port, &output).output().unwrap();
    let message = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(EXIT_REFUSED), "{message}");
    assert!(
        message.contains("already exists") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(std::fs::read(&output).unwrap(), b"an older file");
    assert!(
        !message.contains("partial download"),
        "none is there: {message}"
    );
    // A partial download beside it (a --force download that stopped leaves one): said, and
    // how to get back to it (new-user review s24).
    let part = scratch.path("film.lca.part");
    std::fs::write(&part, b"").unwrap();
    let refused = get_command(server.port, &output).output().unwrap();
    let message = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(EXIT_REFUSED), "{message}");
    assert!(
        message.contains(&format!(
            "a partial download is kept beside it in {}: with --force the download resumes from it",
            part.display()
        )),
        "{message}"
    );
    std::fs::remove_file(&part).unwrap();

    let dir = scratch.path("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let refused = get_command(server.port, &dir).output().unwrap();
    let message = stderr_of(&refused);
    assert!(!refused.status.success());
    assert!(message.contains("is a directory"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused before downloading"
    );
    assert_eq!(requests_seen(&server), 0, "nothing was requested");
    assert!(names_in(&dir).is_empty());
    assert!(!scratch.path("film.lca.part").exists());

    let report = Proc::spawn(
        "get --force",
        get_command(server.port, &output).arg("--force"),
    )
    .report(Duration::from_secs(60));
    assert_eq!(report["verified"], true);
    assert_eq!(
        report["replaced"], true,
        "says it replaced the older file: {report}"
    );
    assert_verifies(&output, &media.join("film.bin.lca"));
    // Without --json, in words.
    let words = Command::new(bin("loopcast"))
        .args([
            "get",
            &format!("127.0.0.1:{}", server.port),
            "film.bin",
            "--force",
        ])
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&words.stdout);
    assert!(words.status.success(), "{}", stderr_of(&words));
    assert!(
        said.contains(&format!(
            "replaced the file that was at {}",
            output.display()
        )),
        "{said}"
    );
    // With --force but nothing there, nothing is said replaced.
    std::fs::remove_file(&output).unwrap();
    let report = Proc::spawn(
        "get --force, nothing there",
        get_command(server.port, &output).arg("--force"),
    )
    .report(Duration::from_secs(60));
    assert_eq!(report["replaced"], false, "{report}");
}

/// Defect 12: `extract` never leaves plaintext behind (wrong key, read-only directory, a failed
/// rename) and, like `pack`, refuses an existing output unless --force.
pub fn extract_and_pack_refuse_existing_outputs_and_leave_no_plaintext() {
    let scratch = Scratch::new("files-extract");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 3 << 20, 12);
    pack_into(&input, &media, &[]);
    let archive = media.join("film.bin.lca");
    let keys = media.join("keys.db");
    let other_media = scratch.path("other");
    pack_into(&input, &other_media, &[]);
    let out_dir = scratch.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let extract = |keys: &Path, output: &Path, force: bool| {
        let mut command = Command::new(bin("loopcast"));
        command
            .arg("extract")
            .arg(&archive)
            .arg("--output")
            .arg(output)
            .arg("--keys")
            .arg(keys);
        if force {
            command.arg("--force");
        }
        command.output().unwrap()
    };

    // A key database without this file's key: a clear error, nothing written.
    let output = out_dir.join("film.out");
    let wrong = extract(&other_media.join("keys.db"), &output, false);
    assert!(!wrong.status.success(), "{}", stderr_of(&wrong));
    assert!(names_in(&out_dir).is_empty(), "{:?}", names_in(&out_dir));
    // Tampered frames fail authentication (or their header check) part-way through: exit 6,
    // and the plaintext decrypted so far is removed.
    let tampered = tampered_copy(&archive, &scratch.path("tampered.lca"));
    let bad = Command::new(bin("loopcast"))
        .arg("extract")
        .arg(&tampered)
        .arg("--output")
        .arg(&output)
        .arg("--keys")
        .arg(&keys)
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(EXIT_VERIFICATION),
        "{}",
        stderr_of(&bad)
    );
    assert!(names_in(&out_dir).is_empty(), "{:?}", names_in(&out_dir));

    // Existing output: refused, then replaced with --force.
    std::fs::write(&output, b"mine").unwrap();
    let refused = extract(&keys, &output, false);
    assert_eq!(
        refused.status.code(),
        Some(EXIT_REFUSED),
        "{}",
        stderr_of(&refused)
    );
    assert!(stderr_of(&refused).contains("already exists"));
    assert_eq!(std::fs::read(&output).unwrap(), b"mine");
    let forced = extract(&keys, &output, true);
    assert!(forced.status.success(), "{}", stderr_of(&forced));
    assert!(std::fs::read(&output).unwrap() == original);
    assert_eq!(names_in(&out_dir), ["film.out"]);

    // Pack refuses to replace an archive too.
    let repack = |force: bool| {
        let mut command = Command::new(bin("loopcast"));
        command
            .arg("pack")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .arg("--no-encrypt");
        if force {
            command.arg("--force");
        }
        command.output().unwrap()
    };
    let refused = repack(false);
    assert_eq!(
        refused.status.code(),
        Some(EXIT_REFUSED),
        "{}",
        stderr_of(&refused)
    );
    assert!(std::fs::read(&output).unwrap() == original);
    let forced = repack(true);
    assert!(forced.status.success(), "{}", stderr_of(&forced));
    assert_eq!(names_in(&out_dir), ["film.out"]);
    std::fs::remove_file(&output).unwrap();

    if !is_root() {
        // A read-only directory (permissions bind a non-root user).
        let mut perms = std::fs::metadata(&out_dir).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
        std::fs::set_permissions(&out_dir, perms.clone()).unwrap();
        let failed = extract(&keys, &output, false);
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&out_dir, perms).unwrap();
        assert!(!failed.status.success());
        assert!(
            stderr_of(&failed).contains("not writable"),
            "{}",
            stderr_of(&failed)
        );
        assert!(names_in(&out_dir).is_empty());
        // The rest needs root (a private mount namespace with a mount point at the output).
        return;
    }
    // Root: a read-only file system, and a rename that fails at the very end (the output is a
    // mount point: EBUSY), each in a private mount namespace.
    let script = format!(
        "set -u; d={dir}; \
         mount -t tmpfs -o size=16m none \"$d\" || exit 90; \
         echo x > \"$d/film.out\"; \
         mount -o remount,ro \"$d\" || exit 91; \
         {loopcast} extract {archive} --output \"$d/new.out\" --keys {keys} --force; \
         echo \"readonly-exit=$?\"; ls -A \"$d\"; echo '--'; \
         mount -o remount,rw \"$d\"; touch \"$d/victim\"; \
         mount --bind \"$d/victim\" \"$d/film.out\" || exit 92; \
         {loopcast} extract {archive} --output \"$d/film.out\" --keys {keys} --force; \
         echo \"rename-exit=$?\"; ls -A \"$d\"",
        dir = out_dir.display(),
        loopcast = bin("loopcast").display(),
        archive = archive.display(),
        keys = keys.display(),
    );
    let (stdout, stderr) = in_private_mount_namespace(&script);
    let (readonly, renamed) = stdout.split_once("--\n").expect("two parts");
    assert!(readonly.contains("readonly-exit=1"), "{stdout}\n{stderr}");
    assert_eq!(
        readonly.lines().skip(1).collect::<Vec<_>>(),
        ["film.out"],
        "nothing left on the read-only file system: {stdout}"
    );
    assert!(renamed.contains("rename-exit=1"), "{stdout}\n{stderr}");
    assert!(stderr.contains("rename into"), "{stderr}");
    let mut left: Vec<&str> = renamed.lines().skip(1).collect();
    left.sort();
    assert_eq!(left, ["film.out", "victim"], "no plaintext left: {stdout}");
}

/// A copy of `archive` at `to` with a bit flipped every 1,000 bytes of its second half: its
/// frames fail authentication (or their header check) part-way through.
fn tampered_copy(archive: &Path, to: &Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(archive).unwrap();
    let len = bytes.len();
    for at in (len / 2..len).step_by(1000) {
        bytes[at] ^= 1;
    }
    std::fs::write(to, &bytes).unwrap();
    to.to_owned()
}

/// `extract -o -` (or /dev/stdout) streams the original to stdout, and an existing FIFO or
/// device is written in place: a new user's `-o /dev/stdout` was refused as "already exists",
/// and `-o -` made a file named "-". A stream is checked at the end: a tampered archive exits
/// with the verification code.
pub fn extract_streams_to_stdout_and_devices() {
    let scratch = Scratch::new("files-extract-stream");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 3 << 20, 13);
    pack_into(&input, &media, &[]);
    let archive = media.join("film.bin.lca");
    let keys = media.join("keys.db");
    let extract = |archive: &Path, output: &str| {
        Command::new(bin("loopcast"))
            .current_dir(scratch.path("."))
            .arg("extract")
            .arg(archive)
            .arg("--output")
            .arg(output)
            .arg("--keys")
            .arg(&keys)
            .output()
            .unwrap()
    };
    for output in ["-", "/dev/stdout"] {
        let streamed = extract(&archive, output);
        assert!(
            streamed.status.success(),
            "{output}: {}",
            stderr_of(&streamed)
        );
        assert!(
            streamed.stdout == original,
            "{output}: the original on stdout"
        );
        assert!(
            stderr_of(&streamed).contains("hash verified"),
            "{output}: the summary on stderr: {}",
            stderr_of(&streamed)
        );
    }
    assert!(!scratch.path("-").exists(), "no file named \"-\"");
    let null = extract(&archive, "/dev/null");
    assert!(null.status.success(), "{}", stderr_of(&null));
    // A tampered archive: exit 6 (what was written before the failure is not the original).
    let tampered = tampered_copy(&archive, &scratch.path("tampered.lca"));
    let bad = extract(&tampered, "-");
    assert_eq!(
        bad.status.code(),
        Some(EXIT_VERIFICATION),
        "{}",
        stderr_of(&bad)
    );
    assert!(
        bad.stdout.len() < original.len(),
        "stopped at the bad frame"
    );
    // A reader that stops early (`| head -c 1000`): exit 141, as follow's player that quits.
    let mut reader = Command::new(bin("loopcast"))
        .arg("extract")
        .arg(&archive)
        .arg("--output")
        .arg("-")
        .arg("--keys")
        .arg(&keys)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 1000];
    std::io::Read::read_exact(reader.stdout.as_mut().unwrap(), &mut head).unwrap();
    drop(reader.stdout.take());
    let stopped = reader.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(141), "{}", stderr_of(&stopped));
    assert!(head[..] == original[..1000]);
}

/// Defect 12: a disk too small for the archive is reported as "disk full" (exit 5) before
/// receiving, and leaves no growing `.part` behind. Needs root (a 1 MiB tmpfs in a private
/// mount namespace).
pub fn full_disk_is_reported_before_receiving_and_leaves_nothing() {
    let (scratch, _media, server) = served("files-full", 4 << 20, "200M");
    let dir = scratch.path("small");
    std::fs::create_dir(&dir).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m none {dir} || exit 90; \
         {loopcast} get 127.0.0.1:{port} film.bin --output {dir}/film.lca --stall-timeout 10; \
         echo \"exit=$?\"; ls -A {dir}",
        dir = dir.display(),
        loopcast = bin("loopcast").display(),
        port = server.port,
    );
    let (stdout, stderr) = in_private_mount_namespace(&script);
    assert!(
        stdout.contains(&format!("exit={EXIT_DISK_FULL}")),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("disk full"), "{stderr}");
    assert_eq!(
        stdout.lines().skip(1).count(),
        0,
        "nothing left on the full disk: {stdout}"
    );
}

/// A disk that fills while receiving (the `.part` is allocated whole at the offer, so it is the
/// saved state's write that fails): exit 5, the partial download and what its saved state
/// holds named in words and in `--json`, and once there is room the same command resumes
/// and publishes the archive the server sent. (It said "disk full: save x.lca.part.state: …",
/// and `--json` said nothing was kept: new-user review s25.) Needs root (a tmpfs in a private
/// mount namespace).
pub fn a_disk_that_fills_while_receiving_keeps_the_partial_download_and_says_so() {
    // 8 MiB at 20 Mbit/s: about 3.4 s; the disk fills 1 s in, the state is saved every 2 s.
    let (scratch, media, server) = served("files-fills", 8 << 20, "20M");
    let dir = scratch.path("small");
    std::fs::create_dir(&dir).unwrap();
    let get = |report: &str| {
        format!(
            "{loopcast} get 127.0.0.1:{port} film.bin --json --stall-timeout 20 \
             --output {dir}/film.lca > {report}",
            loopcast = bin("loopcast").display(),
            port = server.port,
            dir = dir.display(),
            report = scratch.path(report).display(),
        )
    };
    let script = format!(
        "mount -t tmpfs -o size=12m none {dir} || exit 90; \
         (sleep 1; dd if=/dev/zero of={dir}/filler bs=64k 2>/dev/null) & \
         {first}; echo \"first=$?\"; wait; rm {dir}/filler; \
         {second}; echo \"second=$?\"; cp {dir}/film.lca {copy} || exit 93",
        dir = dir.display(),
        first = get("first.json"),
        second = get("second.json"),
        copy = scratch.path("film.lca").display(),
    );
    let (stdout, stderr) = in_private_mount_namespace(&script);
    assert!(
        stdout.contains(&format!("first={EXIT_DISK_FULL}")),
        "{stdout}\n{stderr}"
    );
    let part = dir.join("film.lca.part");
    assert!(
        stderr.contains("disk full")
            && stderr.contains(&format!(
                "partial download kept for resume in {} (",
                part.display()
            ))
            && stderr.contains("free some space and run the same command again"),
        "{stderr}"
    );
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.path("first.json")).unwrap()).unwrap();
    assert_eq!(first["exit_code"], EXIT_DISK_FULL, "{first}");
    assert_eq!(first["partial"], part.display().to_string(), "{first}");
    let held = first["held_datagrams"].as_u64().expect("counts");
    assert!(held > 0 && held < first["total_datagrams"].as_u64().unwrap());
    // With room again: resumed from what was kept, verified, published.
    assert!(stdout.contains("second=0"), "{stdout}\n{stderr}");
    let second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.path("second.json")).unwrap()).unwrap();
    assert_eq!(second["verified"], true, "{second}");
    assert_eq!(second["resumed_datagrams"].as_u64(), Some(held), "{second}");
    assert_eq!(
        std::fs::read(scratch.path("film.lca")).unwrap(),
        std::fs::read(media.join("film.bin.lca")).unwrap(),
        "the archive the server sent"
    );
}

/// Runs `script` with `sh` in a private mount namespace (root), asserts it exited 0, and returns
/// its stdout and stderr.
fn in_private_mount_namespace(script: &str) -> (String, String) {
    let result = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    let stderr = stderr_of(&result);
    assert!(result.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}
