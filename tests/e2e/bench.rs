//! `loopcast-bench` prints one JSON object per run with the fields tools depend on.

use std::process::Command;

use crate::support::*;

fn bench(args: &[&str]) -> serde_json::Value {
    json_of(&run_ok(Command::new(bin("loopcast-bench")).args(args)))
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
    let report = bench(&[
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
    ]);
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
