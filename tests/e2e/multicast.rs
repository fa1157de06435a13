//! Multicast end to end, only inside network namespaces this test creates.
//!
//! As root: `ip netns` hosts (server, two clients) on a bridge in a switch namespace, the
//! topology of tools/src/topology.rs, with names unique to this run; all removed on drop, even
//! when an assertion fails. As non-root: one unprivileged user+network namespace (unshare),
//! server and clients as processes on its loopback. Otherwise the harness reports it ignored,
//! with the reason (`Need::Namespaces`).

use std::process::Command;
use std::time::Duration;

use loopcast_tools::topology::BridgeTopology;

use crate::support::*;

pub fn multicast_in_namespaces_with_a_late_joiner_and_a_unicast_peer() {
    // `Need::Namespaces` has checked that the way chosen here works.
    if is_root() {
        multicast_with_ip_netns();
    } else {
        multicast_in_user_namespace();
    }
}

fn multicast_with_ip_netns() {
    let tag = format!("lct{}", std::process::id() % 100_000);
    let topology = BridgeTopology::build(
        &tag,
        &[("s", "10.78.0.1"), ("a", "10.78.0.2"), ("b", "10.78.0.3")],
        1500,
    )
    .expect("namespaces build");
    let hosts: Vec<(String, &str)> = topology
        .hosts
        .iter()
        .map(|(ns, address)| (ns.clone(), address.as_str()))
        .collect();
    let scratch = Scratch::new("mcast");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 16 << 20, 21);
    let packed = pack_into(&input, &media, &[]);
    let admin = scratch.path("admin.sock");
    let (server_ns, server_ip) = (&hosts[0].0, hosts[0].1);
    let server = serve_in_namespace(server_ns, server_ip, &media, &admin, "100M");
    let client = |name: &str, ns: &str, local_ip: &str, unicast: bool| {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(bin("loopcast"))
            .args([
                "get",
                &format!("{server_ip}:7700"),
                "film.bin",
                "--json",
                "--multicast-interface",
                local_ip,
            ])
            .arg("--output")
            .arg(scratch.path(&format!("{name}.lca")))
            .arg("--extract")
            .arg(scratch.path(&format!("{name}.out")))
            .arg("--keys")
            .arg(media.join("keys.db"))
            .args(["--root", packed["root"].as_str().unwrap()]);
        if unicast {
            command.arg("--unicast");
        }
        Proc::spawn(name, &mut command)
    };
    // One loop of 16 MiB at 100 Mbit/s takes ~1.4 s: the late clients join while the first is
    // still receiving, so the channel is mid-loop (not closed and reopened at serial 0).
    let first = client("first", &hosts[1].0, hosts[1].1, false);
    std::thread::sleep(Duration::from_millis(700));
    let late = client("late", &hosts[2].0, hosts[2].1, false);
    let unicast = client("unicast", &hosts[2].0, hosts[2].1, true);
    for (name, proc, transport) in [
        ("first", first, "multicast"),
        ("late", late, "multicast"),
        ("unicast", unicast, "unicast"),
    ] {
        let report = proc.report(Duration::from_secs(90));
        assert_eq!(report["transport"], transport, "{name}: {report}");
        assert_eq!(report["verified"], true);
        assert!(
            std::fs::read(scratch.path(&format!("{name}.out"))).unwrap() == original,
            "{name}: bytes differ"
        );
        if name == "late" {
            assert!(
                report["join_serial"].as_u64().unwrap() > 0,
                "late joiner joined mid-loop: {report}"
            );
        }
    }
    let output = server.terminate();
    assert!(
        output.status.success(),
        "server: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(hosts);
    drop(topology);
    assert_no_namespaces_left(&tag);
}

fn multicast_in_user_namespace() {
    let scratch = Scratch::new("mcast-userns");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 8 << 20, 22);
    let packed = pack_into(&input, &media, &[]);
    let script = format!(
        r#"set -e
ip link set lo up
ip link set lo multicast on
"{daemon}" serve --media "{media}" --listen 127.0.0.1:7700 --rate 300M --multicast-interface 127.0.0.1 --multicast-ttl 1 --admin-socket "{dir}/admin.sock" 2>"{dir}/server.log" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 0.5
"{client}" get 127.0.0.1:7700 film.bin --json --multicast-interface 127.0.0.1 --output "{dir}/first.lca" --extract "{dir}/first.out" --keys "{media}/keys.db" --root {root} > "{dir}/first.json" &
first=$!
sleep 0.4
"{client}" get 127.0.0.1:7700 film.bin --json --multicast-interface 127.0.0.1 --output "{dir}/late.lca" --extract "{dir}/late.out" --keys "{media}/keys.db" --root {root} > "{dir}/late.json"
wait $first
"#,
        daemon = bin("loopcastd").display(),
        client = bin("loopcast").display(),
        media = media.display(),
        dir = scratch.0.display(),
        root = packed["root"].as_str().unwrap(),
    );
    let output = Command::new("timeout")
        .args([
            "120",
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "namespace script failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(scratch.path("server.log")).unwrap_or_default()
    );
    for name in ["first", "late"] {
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(scratch.path(&format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(report["transport"], "multicast", "{name}: {report}");
        assert!(
            std::fs::read(scratch.path(&format!("{name}.out"))).unwrap() == original,
            "{name}: bytes differ"
        );
    }
}
