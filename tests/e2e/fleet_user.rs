//! The fleet as an operator meets it: what `loopcast get` says when none of the directors it
//! was given answers, and `loopcastctl servers`/`files` finding a director started with its
//! default admin socket.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{bin, free_udp_port, run_ok, Proc, Scratch};

/// A director started without --admin-socket (so at its default, loopcastd-direct.sock) is found
/// by `loopcastctl servers` and `loopcastctl files` without --socket, as the README shows them.
pub fn loopcastctl_servers_and_files_find_a_director_at_its_default_socket() {
    let scratch = Scratch::new("fleet-user-default-socket");
    let runtime = scratch.path("xdg");
    std::fs::create_dir_all(&runtime).unwrap();
    let key = scratch.path("fleet.key");
    run_ok(Command::new(bin("loopcastd")).arg("fleet-key").arg(&key));
    let port = free_udp_port();
    let _director = Proc::spawn(
        "director",
        Command::new(bin("loopcastd"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(["direct", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--heartbeat-listen", "127.0.0.1:0"])
            .arg("--fleet-key")
            .arg(&key),
    );
    let socket = runtime.join("loopcast").join("loopcastd-direct.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "no director socket at {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [&["servers"][..], &["files", "--json"][..]] {
        let output = Command::new(bin("loopcastctl"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "loopcastctl {args:?} without --socket: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Two "directors" that never answer (bound sockets, so no ICMP shortcut): the error names both
/// addresses the client asked, not only the first, and the exit code is 4 (timeout).
pub fn no_answer_from_any_director_names_every_address_asked() {
    let scratch = Scratch::new("fleet-user-no-answer");
    let silent_a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a, b) = (
        silent_a.local_addr().unwrap(),
        silent_b.local_addr().unwrap(),
    );
    let output = Command::new(bin("loopcast"))
        .arg("get")
        .arg(format!("{a},{b}"))
        .arg("x.bin")
        .arg("-o")
        .arg(scratch.path("x.lca"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "stderr: {stderr}");
    assert!(
        stderr.contains(&a.to_string()) && stderr.contains(&b.to_string()),
        "the error should name both addresses asked ({a}, {b}): {stderr}"
    );
    assert!(!scratch.path("x.lca").exists());
}
