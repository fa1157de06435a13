//! NAK repair (R10) under real packet loss: nftables drops a share of every UDP datagram
//! entering the client's network namespace (a `numgen random` drop rule), and the client
//! still finishes in about one loop, because what it misses is sent again ahead of the loop.

use std::process::Command;
use std::time::Duration;

use loopcast_tools::topology::BridgeTopology;

use crate::support::*;

pub fn under_random_loss_naks_repair_ahead_of_the_loop() {
    let tag = format!("lcr{}", std::process::id() % 100_000);
    let topology = BridgeTopology::build(&tag, &[("s", "10.79.0.1"), ("a", "10.79.0.2")], 1500)
        .expect("namespaces build");
    let (server_ns, server_ip) = (&topology.hosts[0].0, topology.hosts[0].1.as_str());
    let (client_ns, client_ip) = (&topology.hosts[1].0, topology.hosts[1].1.as_str());
    // 5 % of all UDP into the client is dropped: data, SYNC and answers alike.
    let rules = "table inet lossy {\n  chain in {\n    type filter hook prerouting priority -300; policy accept;\n    meta l4proto udp numgen random mod 100 < 5 counter drop\n  }\n}\n";
    load_nft_rules(client_ns, rules);

    let scratch = Scratch::new("repair");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 16 << 20, 31);
    pack_into(&input, &media, &["--no-encrypt"]);
    let admin = scratch.path("admin.sock");
    let server = serve_in_namespace(server_ns, server_ip, &media, &admin, "100M");
    let client = Proc::spawn(
        "client",
        Command::new("ip")
            .args(["netns", "exec", client_ns])
            .arg(bin("loopcast"))
            .args(["get", &format!("{server_ip}:7700"), "film.bin", "--json"])
            .args(["--multicast-interface", client_ip])
            .arg("--output")
            .arg(scratch.path("film.lca"))
            .arg("--extract")
            .arg(scratch.path("film.out")),
    );
    let report = client.report(Duration::from_secs(90));
    assert_eq!(report["transport"], "multicast", "{report}");
    assert_eq!(report["verified"], true);
    assert!(
        std::fs::read(scratch.path("film.out")).unwrap() == original,
        "bytes differ"
    );
    let naked = report["serials_naked"].as_u64().unwrap();
    let loop_len = std::fs::metadata(media.join("film.bin.lca")).unwrap().len() / 1440;
    assert!(
        report["naks_sent"].as_u64().unwrap() > 0 && naked > loop_len / 100,
        "about 5 % of the loop was lost and asked for: {report}"
    );
    // Without repair the client would wait for most of a second loop (duplicates ≈ 95 % of
    // it); with repair it finishes about when the first loop does.
    let duplicates = report["duplicates"].as_u64().unwrap();
    assert!(
        duplicates < loop_len / 4,
        "{duplicates} duplicates of a {loop_len}-datagram loop: repairs did not save a loop: {report}"
    );
    let status = server.terminate();
    assert!(status.status.success());
    drop(topology);
    assert_no_namespaces_left(&tag);
}

pub fn shared_losses_are_asked_for_once_and_the_rest_suppressed() {
    let tag = format!("lcs{}", std::process::id() % 100_000);
    let topology = BridgeTopology::build(
        &tag,
        &[
            ("s", "10.76.0.1"),
            ("a", "10.76.0.2"),
            ("b", "10.76.0.3"),
            ("c", "10.76.0.4"),
        ],
        1500,
    )
    .expect("namespaces build");
    let (server_ns, server_ip) = (&topology.hosts[0].0, topology.hosts[0].1.as_str());
    // Loss before the fan-out: 3 % of the server's multicast data never reaches anyone, so
    // every receiver misses the same datagrams.
    let rules = "table inet shared {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    udp dport 7701 numgen random mod 100 < 3 counter drop\n  }\n}\n";
    load_nft_rules(server_ns, rules);

    let scratch = Scratch::new("suppress");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    let original = write_content(&input, 24 << 20, 41);
    pack_into(&input, &media, &["--no-encrypt", "--level", "0"]);
    let admin = scratch.path("admin.sock");
    let server = serve_in_namespace(server_ns, server_ip, &media, &admin, "100M");
    let clients: Vec<(String, Proc)> = topology.hosts[1..]
        .iter()
        .map(|(ns, ip)| {
            let name = ns.clone();
            let proc = Proc::spawn(
                &name,
                Command::new("ip")
                    .args(["netns", "exec", ns])
                    .arg(bin("loopcast"))
                    .args(["get", &format!("{server_ip}:7700"), "film.bin", "--json"])
                    .args(["--multicast-interface", ip])
                    .arg("--output")
                    .arg(scratch.path(&format!("{name}.lca")))
                    .arg("--extract")
                    .arg(scratch.path(&format!("{name}.out"))),
            );
            (name, proc)
        })
        .collect();
    let mut suppressed = 0;
    for (name, proc) in clients {
        let report = proc.report(Duration::from_secs(90));
        assert_eq!(report["transport"], "multicast", "{report}");
        assert!(
            std::fs::read(scratch.path(&format!("{name}.out"))).unwrap() == original,
            "{name}: bytes differ"
        );
        suppressed += report["serials_suppressed"].as_u64().unwrap();
    }
    let status = status_of(&admin);
    assert!(
        status["counters"]["naks_relayed"].as_u64().unwrap() > 0,
        "the server relays NAKs to the group: {status}"
    );
    assert!(
        suppressed > 0,
        "receivers that missed the same datagrams left the asking to one of them"
    );
    assert!(server.terminate().status.success());
    drop(topology);
    assert_no_namespaces_left(&tag);
}
