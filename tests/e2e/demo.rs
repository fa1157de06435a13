//! The README's main command, as a user runs it. The demo runs once; both tests read its report.

use std::process::Command;
use std::sync::OnceLock;

use crate::support::*;

/// The `loopcast demo --json` report, run on first use (a test that fails to get it panics, and
/// the next test to ask runs the demo again).
fn demo_report() -> &'static serde_json::Value {
    static REPORT: OnceLock<serde_json::Value> = OnceLock::new();
    REPORT.get_or_init(|| {
        let output = run_ok(Command::new(bin("loopcast")).args([
            "demo",
            "--json",
            "--size",
            "8M",
            "--clients",
            "4",
        ]));
        json_of(&output)
    })
}

pub fn demo_json_reports_every_client_verified() {
    let report = demo_report();
    let clients = report["clients"].as_array().expect("clients array");
    assert_eq!(clients.len(), 4);
    for client in clients {
        assert_eq!(client["verified"], true, "{client}");
        let transport = client["transport"].as_str().unwrap();
        assert!(
            transport == "multicast" || transport == "unicast",
            "{client}"
        );
    }
    assert_eq!(report["all_verified"], true);
    // Later clients join wherever the loop is (it may have wrapped): at least one mid-loop.
    let mid_loop = clients[1..]
        .iter()
        .filter_map(|c| c["join_fraction"].as_f64())
        .any(|f| f > 0.05 && f < 0.95);
    assert!(mid_loop, "a client joined mid-loop: {report}");
}

/// Runs only where an unprivileged user+network namespace can be made (`Need::UserNamespace`):
/// there the demo must use multicast, not fall back.
pub fn demo_clients_ride_multicast_in_a_private_namespace() {
    let report = demo_report();
    assert_eq!(
        report["network"]["multicast"], true,
        "the demo fell back although a private namespace is available: {}",
        report["network"]
    );
    // Client 4 asks for unicast; the others ride the multicast channel.
    let clients = report["clients"].as_array().expect("clients array");
    assert_eq!(clients[0]["transport"], "multicast", "{report}");
    assert_eq!(clients[3]["transport"], "unicast", "{report}");
}

/// A client count outside what the demo runs is a usage error naming the range (it was
/// clamped to 2..=16 with no word: `--clients 1` ran two, `--clients 100` sixteen; and a
/// negative one was read as an unknown option, "unexpected argument '-1'").
pub fn demo_refuses_a_client_count_it_does_not_run() {
    for count in ["1", "17", "0", "-1"] {
        let output = Command::new(bin("loopcast"))
            .args(["demo", "--clients", count])
            .output()
            .expect("loopcast starts");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{count}: {stderr}");
        assert!(
            stderr.contains("--clients") && stderr.contains("2..=16"),
            "{count}: {stderr}"
        );
    }
}

/// `demo --no-netns` in words, its stdout and stderr captured apart (as a script or a log
/// does): the network is said once on each, in the same words, and stdout starts with it, not
/// with a blank line (new-user review s24: stderr said it with nested brackets, stdout began
/// blank). Every client is unicast and joins at the file's start, as `--help` says.
pub fn demo_without_namespaces_says_its_network_once_in_each_stream_in_the_same_words() {
    let output = run_ok(Command::new(bin("loopcast")).args(["demo", "--no-netns", "--size", "4M"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = "network: host loopback — --no-netns: unicast on the host's loopback";
    assert!(stdout.starts_with(line), "stdout: {stdout}");
    assert_eq!(stdout.matches("network: ").count(), 1, "stdout: {stdout}");
    assert_eq!(stderr.matches(line).count(), 1, "stderr: {stderr}");
    assert_eq!(stderr.matches("network: ").count(), 1, "stderr: {stderr}");
    let clients: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u8>().is_ok())
        })
        .collect();
    assert_eq!(clients.len(), 4, "stdout: {stdout}");
    for client in clients {
        assert!(
            client.contains("unicast") && client.contains("0% (serial 0)"),
            "{client}"
        );
    }
}
