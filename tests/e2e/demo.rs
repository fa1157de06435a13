//! The README's main command, as a user runs it.

use std::process::Command;

use crate::support::*;

#[test]
fn demo_json_reports_every_client_verified() {
    let output = run_ok(Command::new(bin("loopcast")).args([
        "demo",
        "--json",
        "--size",
        "8M",
        "--clients",
        "4",
    ]));
    let report = json_of(&output);
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
    if report["network"]["multicast"] == true {
        // Client 4 asks for unicast; the others ride the multicast channel.
        assert_eq!(clients[0]["transport"], "multicast");
        assert_eq!(clients[3]["transport"], "unicast");
    } else {
        skip(
            "demo multicast part",
            report["network"]["reason"]
                .as_str()
                .unwrap_or("no private namespace"),
        );
    }
    // Later clients join wherever the loop is (it may have wrapped): at least one mid-loop.
    let mid_loop = clients[1..]
        .iter()
        .filter_map(|c| c["join_fraction"].as_f64())
        .any(|f| f > 0.05 && f < 0.95);
    assert!(mid_loop, "a client joined mid-loop: {report}");
}
