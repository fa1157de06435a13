//! The admin socket against its two attacks (issue 9, defects 8 and 9), as real processes:
//! idle admin connections must not stall the server, and another user squatting the socket's
//! place must neither keep the daemon from saying why nor show `loopcastctl` a fake status.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

fn get_small_file(scratch: &Scratch, server: &UnicastServer, root: &str, name: &str) -> Duration {
    let started = Instant::now();
    let report = Proc::spawn(
        name,
        Command::new(bin("loopcast"))
            .args([
                "get",
                &format!("127.0.0.1:{}", server.port),
                "small.bin",
                "--json",
            ])
            .arg("--output")
            .arg(scratch.path(&format!("{name}.lca")))
            .args(["--root", root]),
    )
    .report(Duration::from_secs(60));
    assert_eq!(report["verified"], true, "{report}");
    started.elapsed()
}

pub fn idle_admin_connections_stall_neither_clients_nor_status() {
    let scratch = Scratch::new("admin-idle");
    let media = scratch.path("media");
    let input = scratch.path("small.bin");
    write_content(&input, 1 << 20, 5);
    let packed = pack_into(&input, &media, &["--no-encrypt"]);
    let root = packed["root"].as_str().unwrap();
    let server = UnicastServer::start(&scratch, &media, &["--rate", "200M"]);
    let served = std::fs::read(media.join("small.bin.lca")).unwrap();
    let baseline = get_small_file(&scratch, &server, root, "baseline");
    // 20 connections that never send a request, held open for the rest of the test (before
    // the fix the control loop served each for 2 s in turn, so no request was answered).
    let idle: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&server.admin).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let with_idle = get_small_file(&scratch, &server, root, "with-idle");
    eprintln!("get of 1 MiB: {baseline:?} alone, {with_idle:?} with 20 idle admin connections");
    assert!(
        with_idle < baseline + Duration::from_secs(1),
        "a get took {with_idle:?} with idle admin connections, {baseline:?} without"
    );
    assert!(std::fs::read(scratch.path("with-idle.lca")).unwrap() == served);
    // loopcastctl still answers: the first 16 idle connections hold the admin slots for at
    // most 2 s, the other 4 were turned away at once; loopcastctl retries while told "busy".
    let started = Instant::now();
    let status = server.status();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "status took {:?}",
        started.elapsed()
    );
    assert_eq!(status["counters"]["sessions_completed"], 2, "{status}");
    let admin = &status["admin"];
    assert_eq!(admin["connections_max"], 16, "{status}");
    assert!(admin["refused_busy"].as_u64().unwrap() >= 4, "{status}");
    assert!(
        admin["connections_open"].as_u64().unwrap() <= 16,
        "{status}"
    );
    // Each idle connection was either turned away ("busy") or timed out, and told so.
    let mut told = (0, 0);
    for stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        if line.contains("busy") {
            told.0 += 1;
        } else {
            assert!(line.contains("no request within 2000 ms"), "{line}");
            told.1 += 1;
        }
    }
    assert_eq!(told, (4, 16), "(busy, timed out)");
    assert!(server.process.terminate().status.success());
}

/// Removes a directory tree (as root) on drop, so a failed test leaves nothing in /tmp.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fake daemon: listens at `path` and answers every connection with a fake status.
struct Squatter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Squatter {
    fn listen(path: &Path) -> Squatter {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // Bounded: at most 60 s, polled every 10 ms.
            for _ in 0..6000 {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(
                            b"{\"send_path\":\"FAKE\",\"send_path_reason\":\"squatted\",\"archives\":666}\n",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Squatter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A uid with no account on this machine, so nothing of a real user is touched.
fn unused_uid() -> u32 {
    (61000 + std::process::id() % 900..62000)
        .find(|&uid| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .map(|user| user.is_none())
                .unwrap_or(false)
        })
        .expect("a free uid in 61000..62000")
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `program args` run as `uid` (setpriv), without XDG_RUNTIME_DIR, so the default socket is
/// the /tmp fallback.
fn as_user(uid: u32, program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--"])
        .arg(program)
        .env_remove("XDG_RUNTIME_DIR");
    command
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn admin_socket_squatting_is_refused() {
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "setpriv (util-linux) is needed as root; .ci/run installs util-linux"
    );
    let scratch = Scratch::new("admin-squat");
    chmod(&scratch.0, 0o755);
    // The binaries where the other users can run them (the target dir may be under /root).
    let bin_dir = scratch.path("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    chmod(&bin_dir, 0o755);
    for name in ["loopcastd", "loopcastctl"] {
        std::fs::copy(bin(name), bin_dir.join(name)).unwrap();
        chmod(&bin_dir.join(name), 0o755);
    }
    let loopcastd = bin_dir.join("loopcastd");
    let loopcastctl = bin_dir.join("loopcastctl");
    let media = scratch.path("media");
    std::fs::create_dir(&media).unwrap();
    chmod(&media, 0o755);
    let victim = unused_uid();
    let attacker = 65534;
    let dir = PathBuf::from(format!("/tmp/loopcast-{victim}"));
    let socket = dir.join("loopcastd.sock");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&dir);
    let _cleanup = RemoveOnDrop(dir.clone());
    let serve = |port: u16| {
        let mut command = as_user(victim, &loopcastd);
        command
            .args(["serve", "--no-multicast", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--media")
            .arg(&media);
        command
    };
    let ctl_as_victim = || {
        as_user(victim, &loopcastctl)
            .args(["status", "--json"])
            .output()
            .unwrap()
    };

    // 1. The attacker made the victim's directory first (world-writable) and listens in it.
    std::fs::create_dir(&dir).unwrap();
    chown(&dir, attacker);
    chmod(&dir, 0o777);
    let squatter = Squatter::listen(&socket);
    chown(&socket, attacker);
    chmod(&socket, 0o777);
    let refused = Proc::spawn("loopcastd (squatted dir)", &mut serve(free_udp_port()))
        .wait(Duration::from_secs(20));
    assert!(
        !refused.status.success(),
        "daemon started in a squatted dir"
    );
    let text = stderr_of(&refused);
    assert!(
        text.contains(&dir.display().to_string())
            && text.contains(&format!("owned by uid {attacker}")),
        "{text}"
    );
    // loopcastctl, as the victim and as root, will not talk to it (before the fix it printed
    // the squatter's answer).
    for (who, output) in [
        ("victim", ctl_as_victim()),
        (
            "root",
            Command::new(&loopcastctl)
                .arg("--socket")
                .arg(&socket)
                .args(["status", "--json"])
                .output()
                .unwrap(),
        ),
    ] {
        assert!(!output.status.success(), "{who}: trusted a squatted socket");
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("FAKE"),
            "{who}: showed the fake status"
        );
        let text = stderr_of(&output);
        assert!(
            text.contains(&format!("owned by uid {attacker}")) && text.contains("refusing"),
            "{who}: {text}"
        );
    }
    // Even in a directory of the victim's own, a socket file of the attacker's is refused.
    let own_dir = scratch.path("victim-dir");
    std::fs::create_dir(&own_dir).unwrap();
    chown(&own_dir, victim);
    chmod(&own_dir, 0o755);
    let planted = own_dir.join("admin.sock");
    let _planted_squatter = Squatter::listen(&planted);
    chown(&planted, attacker);
    let output = as_user(victim, &loopcastctl)
        .arg("--socket")
        .arg(&planted)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = stderr_of(&output);
    assert!(
        text.contains(&planted.display().to_string())
            && text.contains(&format!("owned by uid {attacker}")),
        "{text}"
    );
    drop(squatter);
    std::fs::remove_dir_all(&dir).unwrap();

    // 2. A symlink at the directory's name, to a directory the attacker controls: refused.
    let lure = scratch.path("lure");
    std::fs::create_dir(&lure).unwrap();
    chown(&lure, attacker);
    std::os::unix::fs::symlink(&lure, &dir).unwrap();
    let refused = Proc::spawn("loopcastd (symlinked dir)", &mut serve(free_udp_port()))
        .wait(Duration::from_secs(20));
    assert!(!refused.status.success());
    let text = stderr_of(&refused);
    assert!(
        text.contains("symbolic link") && text.contains(&dir.display().to_string()),
        "{text}"
    );
    assert!(!lure.join("loopcastd.sock").exists());
    std::fs::remove_file(&dir).unwrap();

    // 3. Nobody squatting: the daemon makes its own private directory and answers there.
    let port = free_udp_port();
    let first = Proc::spawn("loopcastd (victim)", &mut serve(port));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let output = ctl_as_victim();
        if output.status.success() {
            break json_of(&output);
        }
        assert!(
            Instant::now() < deadline,
            "victim's daemon never answered: {}",
            stderr_of(&output)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status["send_path"].is_string(), "{status}");
    let meta = std::fs::symlink_metadata(&dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!((meta.uid(), meta.mode() & 0o777), (victim, 0o700));
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (victim, 0o600));
    // A second daemon of the same user (same port too) is told the first is running.
    let second = Proc::spawn("loopcastd (second)", &mut serve(port)).wait(Duration::from_secs(20));
    assert!(!second.status.success());
    let text = stderr_of(&second);
    assert!(
        text.contains(&format!(
            "another loopcastd is running at {}",
            socket.display()
        )),
        "{text}"
    );
    // Killed without cleaning up: the socket file is stale, and the next daemon replaces it.
    drop(first);
    assert!(socket.exists(), "kill -9 leaves the socket file");
    let third = Proc::spawn("loopcastd (after crash)", &mut serve(free_udp_port()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctl_as_victim().status.success() {
        assert!(Instant::now() < deadline, "restarted daemon never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = third.terminate();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(!socket.exists(), "socket removed on shutdown");
}

/// A daemon that systemd runs as a user of its own (`DynamicUser=`, `RuntimeDirectory=`): its
/// socket directory is that user's, made by root directly in /run, which only root can write
/// to. Root's `loopcastctl` talks to it (before the fix it refused: "owned by uid N, neither by
/// uid 0 (you) nor by root"), found by the .deb test in a booted systemd. The same directory
/// anywhere else (here: in a root-owned 0755 directory that is not /run, and in a world-writable
/// sticky one like /tmp, where anyone can make one) is refused.
pub fn root_trusts_a_socket_directory_that_root_gave_to_the_daemons_user() {
    let scratch = Scratch::new("admin-delegated");
    chmod(&scratch.0, 0o755);
    let bin_dir = scratch.path("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    chmod(&bin_dir, 0o755);
    std::fs::copy(bin("loopcastd"), bin_dir.join("loopcastd")).unwrap();
    chmod(&bin_dir.join("loopcastd"), 0o755);
    let media = scratch.path("media");
    std::fs::create_dir(&media).unwrap();
    chmod(&media, 0o755);
    let daemon_user = unused_uid();
    let in_run = PathBuf::from(format!("/run/loopcast-e2e-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(in_run.clone());
    let not_run = scratch.path("not-run");
    std::fs::create_dir(&not_run).unwrap();
    chmod(&not_run, 0o755);
    let sticky = scratch.path("sticky");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    for (runtime, trusted) in [
        (in_run.clone(), true),
        (not_run.join("loopcast"), false),
        (sticky.join("loopcast"), false),
    ] {
        std::fs::create_dir(&runtime).unwrap();
        chown(&runtime, daemon_user);
        chmod(&runtime, 0o750);
        let socket = runtime.join("loopcastd.sock");
        let _daemon = Proc::spawn(
            "loopcastd (its own user)",
            as_user(daemon_user, &bin_dir.join("loopcastd"))
                .args(["serve", "--no-multicast", "--metrics", "off", "--listen"])
                .arg(format!("127.0.0.1:{}", free_udp_port()))
                .arg("--media")
                .arg(&media)
                .arg("--admin-socket")
                .arg(&socket),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the daemon never made its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = Command::new(bin("loopcastctl"))
            .arg("--socket")
            .arg(&socket)
            .args(["status", "--json"])
            .output()
            .unwrap();
        if trusted {
            assert!(
                output.status.success(),
                "root refused a directory root gave away in /run: {}",
                stderr_of(&output)
            );
            assert!(json_of(&output)["send_path"].is_string());
        } else {
            assert!(
                !output.status.success(),
                "trusted another user's directory outside /run: {}",
                runtime.display()
            );
            let text = stderr_of(&output);
            assert!(
                text.contains(&format!("owned by uid {daemon_user}")) && text.contains("refusing"),
                "{text}"
            );
        }
    }
}

/// `loopcastctl status | head -2`: the reader closes the pipe before all is written. Every
/// command ends quietly with 141 (what a shell reports for a SIGPIPE death). Before, it
/// panicked ("failed printing to stdout: Broken pipe") with a backtrace, exit 101.
pub fn loopcastctl_into_a_closed_pipe_exits_quietly() {
    let scratch = Scratch::new("admin-pipe");
    let media = scratch.path("media");
    let input = scratch.path("small.bin");
    write_content(&input, 1 << 20, 7);
    pack_into(&input, &media, &["--no-encrypt"]);
    let server = UnicastServer::start(&scratch, &media, &[]);
    for command in [
        &["status"][..],
        &["status", "--json"],
        &["clients"],
        &["channels", "--json"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(bin("loopcastctl"))
            .arg("--socket")
            .arg(&server.admin)
            .args(command)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(141), "{command:?}: {stderr}");
        assert!(stderr.is_empty(), "{command:?}: {stderr}");
    }
    // Any other write error is said in one line, exit 1 (as the other programs do).
    let full = Command::new(bin("loopcastctl"))
        .arg("--socket")
        .arg(&server.admin)
        .arg("status")
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("loopcastctl: cannot write to stdout: No space left on device")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// `loopcastctl status` names the automatic rates' real bounds, as loopcastd's start-up line
/// does: without --rate "at most 40.00 Gbit/s" (it said "rate cap none"), and where a file's
/// first tier starts (--initial-rate, which a reload changes; it was not shown).
pub fn status_names_the_rate_bounds_in_force() {
    let scratch = Scratch::new("admin-bounds");
    let media = scratch.path("media");
    let input = scratch.path("small.bin");
    write_content(&input, 1 << 16, 9);
    pack_into(&input, &media, &["--no-encrypt"]);
    for (extra, expected) in [
        (
            &[][..],
            "rate automatic, at most 40.00 Gbit/s, starting at 1.00 Gbit/s,",
        ),
        (
            &["--rate", "100M", "--initial-rate", "20M"],
            "rate automatic, at most 100.0 Mbit/s, starting at 20.0 Mbit/s,",
        ),
    ] {
        let server = UnicastServer::start(&scratch, &media, extra);
        let output = run_ok(
            Command::new(bin("loopcastctl"))
                .arg("--socket")
                .arg(&server.admin)
                .arg("status"),
        );
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(expected), "{extra:?}: {text}");
        drop(server);
    }
    // A cap above what automatic rates reach is that ceiling, and the log says so (its serving
    // line said "at most 100G" while status said 40G).
    let server = UnicastServer::start(&scratch, &media, &["--rate", "100G"]);
    let status = run_ok(
        Command::new(bin("loopcastctl"))
            .arg("--socket")
            .arg(&server.admin)
            .arg("status"),
    );
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("at most 40.00 Gbit/s"), "{text}");
    // And so does `status --json` (it said 100G).
    let settings = &status_of(&server.admin)["settings"];
    assert_eq!(settings["rate_bits_per_s"], 40_000_000_000u64, "{settings}");
    let log = server.process.terminate();
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(
        log.contains("--rate 100.00 Gbit/s is above the most automatic rates reach")
            && log.contains("capped at 40.00 Gbit/s"),
        "{log}"
    );
    let serving = log
        .lines()
        .find(|line| line.contains("loopcastd serving"))
        .unwrap_or_else(|| panic!("no serving line: {log}"));
    assert!(
        serving.contains("automatic, at most 40.00 Gbit/s"),
        "{serving}"
    );
}
