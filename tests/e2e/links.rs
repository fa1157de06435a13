//! Receivers behind links of different rates (issue 10, R11/R12): `tc tbf` on the switch's port
//! toward each receiver (tools/src/topology.rs), loopcastd started with no `--rate`, so the
//! server must find each receiver's rate itself and put it on a tier that matches it. Every
//! receiver must get a byte-identical file, the slowest on the slowest tier, none stalled, and
//! the receiver with an unlimited link must not be held to the slowest one's pace.
//!
//! The speed target itself (each within 1.3 x its link's time) is a benchmark figure, not a
//! test: `loopcast-bench e2e --link-rates 5M,50M,500M,0` reports it per receiver
//! (`within_target`), over several runs, in docs/performance.md.

use std::process::Command;
use std::time::{Duration, Instant};

use loopcast_tools::topology::BridgeTopology;

use crate::support::*;

/// The file: 4 MiB, so the 5 Mbit/s receiver needs ~6.7 s on its link.
const FILE_BYTES: usize = 4 << 20;
/// No receiver is stalled: each is done within this many times its link's time (plus the
/// allowance). Issue 10's target is 1.3; that is measured by the bench, not asserted here.
const LINK_FACTOR: f64 = 4.0;
/// Fixed allowance on top, for what does not scale with the link: starting the client under
/// `ip netns exec`, Request/Offer and the multicast join, the first rate steps (a new client
/// starts on the fastest tier and moves down within a second or two), repair rounds, and the
/// final whole-file check, fsync and rename; generous, as this only catches a stalled receiver.
const START_UP_ALLOWANCE: Duration = Duration::from_millis(15_000);
/// Every client must be done by then (the 5 Mbit/s one's limit is ~10.7 s): processes are
/// killed by PID and the namespaces removed after it, pass or fail.
const HARD_TIMEOUT: Duration = Duration::from_secs(45);

pub fn receivers_behind_5m_50m_and_unlimited_links_each_finish_at_their_own_pace() {
    let tag = format!("lcl{}", std::process::id() % 100_000);
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
    // (host index, link rate in bits/s; 0 = unlimited)
    let links: [(usize, u64); 3] = [(1, 5_000_000), (2, 50_000_000), (3, 0)];
    for &(host, rate) in &links {
        topology.set_link_rate(host, rate).expect("tc tbf");
    }
    let scratch = Scratch::new("links");
    let media = scratch.path("media");
    let input = scratch.path("film.bin");
    write_content(&input, FILE_BYTES, 41);
    // Stored, not compressed: the bytes on the link are the file's (plus its hashes), so the
    // link times below are the file's.
    pack_into(&input, &media, &["--no-encrypt", "--level", "0"]);
    let served = loopcast_tools::hash_file(&media.join("film.bin.lca")).unwrap();
    let admin = scratch.path("admin.sock");
    let (server_ns, server_ip) = (&topology.hosts[0].0, topology.hosts[0].1.as_str());
    // No --rate: the server's automatic rates and tiers are what is under test.
    let server = serve_in_namespace_with(server_ns, server_ip, &media, &admin, &[]);

    let started = Instant::now();
    let mut clients: Vec<(usize, u64, Proc, Option<Duration>)> = links
        .iter()
        .map(|&(host, rate)| {
            let (ns, ip) = (&topology.hosts[host].0, topology.hosts[host].1.as_str());
            let client = Proc::spawn(
                &format!("client behind {}", link_name(rate)),
                Command::new("ip")
                    .args(["netns", "exec", ns])
                    .arg(bin("loopcast"))
                    .args(["get", &format!("{server_ip}:7700"), "film.bin", "--json"])
                    .args(["--multicast-interface", ip])
                    .arg("--output")
                    .arg(scratch.path(&format!("r{host}.lca"))),
            );
            (host, rate, client, None)
        })
        .collect();
    // Each client's time is from the common start to its exit (polled every 10 ms).
    while clients.iter().any(|(.., done)| done.is_none()) && started.elapsed() < HARD_TIMEOUT {
        for (_, _, client, done) in clients.iter_mut() {
            if done.is_none() && matches!(client.child.try_wait(), Ok(Some(_))) {
                *done = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut lines = Vec::new();
    let mut failures = Vec::new();
    let mut unlimited_seconds = None;
    for (host, rate, client, done) in clients {
        let label = client.label.clone();
        let Some(elapsed) = done else {
            failures.push(format!("{label}: not finished after {HARD_TIMEOUT:?}"));
            lines.push(format!("{label}: not finished after {HARD_TIMEOUT:?}"));
            continue; // dropped: killed by PID
        };
        let output = client.wait(Duration::from_secs(5));
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        let identical = output.status.success()
            && loopcast_tools::hash_file(&scratch.path(&format!("r{host}.lca")))
                .is_ok_and(|hash| hash == served);
        let limit = limit_for(rate);
        lines.push(format!(
            "{label}: {:.2} s (limit {:.2} s), identical {identical}, tier {}, {} duplicates, {} NAKs for {} serials ({} left to the loop), exit {}",
            elapsed.as_secs_f64(),
            limit.as_secs_f64(),
            report["tier"],
            report["duplicates"],
            report["naks_sent"],
            report["serials_naked"],
            report["serials_left_to_loop"],
            output.status
        ));
        if !identical {
            failures.push(format!(
                "{label}: no byte-identical file (exit {}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        if elapsed > limit {
            failures.push(format!(
                "{label}: {:.2} s, over 1.3 x its link time + {:?} = {:.2} s",
                elapsed.as_secs_f64(),
                START_UP_ALLOWANCE,
                limit.as_secs_f64()
            ));
        }
        // The tier it ended on fits its link: the 5 Mbit/s receiver is not left on the
        // unlimited one's tier, losing most of what it is sent. (A tier probes above its
        // clients' rate now and then, by design: the bound is loose.)
        if let (true, Some(tier_rate)) = (rate > 0, report["tier_rate_bits_per_s"].as_u64()) {
            if tier_rate > 4 * rate {
                failures.push(format!(
                    "{label}: ended on a tier at {tier_rate} bit/s, more than 4x its link"
                ));
            }
        }
        // The slowest receiver soon has a tier that fits it, and loses little there: it does
        // not receive the file again in repairs it asked for while its tier was far too fast,
        // nor wait a loop for what a doubling past its link lost, nor stay 1.6 s on a 1 Gbit/s
        // tier that its reports showed no loss on (before these were fixed: 874 to 1,673
        // duplicates of 3,050 datagrams in 5 of 14 runs). Healthy runs still receive part of
        // the loop twice: what came through the link's bucket at the start, and, when a probe
        // above the link loses near the end of the loop, what the loop sends again while that
        // loss is repaired: 75 to 345 in 12 runs on 2026-11-29 (886bce9 and 258fddd alike),
        // 556 (18 %, 8.70 s) in one CI run. So the bound is 25 %: above that tail, and below
        // each of the old faults.
        if let (5_000_000, Some(duplicates), Some(stored)) = (
            rate,
            report["duplicates"].as_u64(),
            report["receiver"]["stored"].as_u64(),
        ) {
            if duplicates * 100 > stored * 25 {
                failures.push(format!(
                    "{label}: {duplicates} duplicates of {stored} datagrams, over 25 %"
                ));
            }
        }
        if rate > 0 {
            // The link is really limited (tbf applied): nothing arrives faster than it.
            let floor = 0.9 * FILE_BYTES as f64 * 8.0 / rate as f64;
            assert!(
                elapsed.as_secs_f64() >= floor,
                "{label} finished in {:.2} s, faster than its link allows ({floor:.2} s): the tbf link is not in place",
                elapsed.as_secs_f64()
            );
        } else {
            unlimited_seconds = Some(elapsed);
        }
    }
    // Not held to the slowest receiver's pace: well under the 5 Mbit/s link's own time.
    let slowest_link = FILE_BYTES as f64 * 8.0 / 5e6;
    if let Some(unlimited) = unlimited_seconds {
        if unlimited.as_secs_f64() > slowest_link / 2.0 {
            failures.push(format!(
                "the unlimited receiver took {:.2} s, held to the 5 Mbit/s receiver's pace ({slowest_link:.2} s for the file)",
                unlimited.as_secs_f64()
            ));
        }
    }
    let table = lines.join("\n  ");
    println!("links: {FILE_BYTES} bytes, no --rate\n  {table}");
    let server_output = server.terminate();
    drop(topology);
    assert_no_namespaces_left(&tag);
    assert!(
        failures.is_empty(),
        "{}\nall receivers:\n  {table}\nserver stderr (tail): {}",
        failures.join("\n"),
        tail(&String::from_utf8_lossy(&server_output.stderr), 20)
    );
}

fn limit_for(rate_bits_per_s: u64) -> Duration {
    let link = if rate_bits_per_s == 0 {
        0.0
    } else {
        LINK_FACTOR * FILE_BYTES as f64 * 8.0 / rate_bits_per_s as f64
    };
    Duration::from_secs_f64(link) + START_UP_ALLOWANCE
}

fn link_name(rate_bits_per_s: u64) -> String {
    match rate_bits_per_s {
        0 => "an unlimited link".into(),
        rate => format!("a {} Mbit/s link", rate / 1_000_000),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
