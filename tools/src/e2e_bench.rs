//! `loopcast-bench e2e`: whole files from a server to R receivers, each in its own network
//! namespace on a bridge (created here, removed on drop), verified; and the same file moved by
//! UFTP and udpcast over the same topology when they are installed (`peers`). Reports wall time,
//! Gbit/s, and CPU seconds per GB on the sending and the receiving side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::hash_file;
use crate::topology::BridgeTopology;

pub struct E2eArgs {
    pub receivers: usize,
    pub size: u64,
    pub jumbo: bool,
    pub rate: String,
    /// Peer tools to run after loopcast: any of "uftp", "udpcast".
    pub peers: Vec<String>,
    pub timeout: Duration,
}

/// Server at 10.80.0.1 in `<tag>-s`, receivers at 10.80.0.2.. in `<tag>-r<i>`.
fn build(tag: &str, receivers: usize, mtu: u32) -> Result<BridgeTopology, String> {
    let names: Vec<(String, String)> = (0..=receivers)
        .map(|i| {
            (
                if i == 0 {
                    "s".to_owned()
                } else {
                    format!("r{i}")
                },
                format!("10.80.0.{}", i + 1),
            )
        })
        .collect();
    let hosts: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect();
    let topology = BridgeTopology::build(tag, &hosts, mtu)?;
    for (ns, _) in &topology.hosts {
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.udp_rmem_min=4096",
            ])
            .status();
    }
    let _ = Command::new("sysctl")
        .args([
            "-qw",
            "net.core.rmem_max=67108864",
            "net.core.wmem_max=67108864",
        ])
        .status();
    Ok(topology)
}

fn in_ns(ns: &str, program: &Path) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).arg(program);
    command
}

/// Waits for every child until `deadline`; on timeout, ends all of them (by PID) and fails.
fn wait_all(
    children: Vec<(String, Child)>,
    deadline: Instant,
) -> Result<Vec<(String, std::process::Output)>, String> {
    let mut pending = children;
    let mut done: Vec<(String, Child)> = Vec::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (label, mut child) in pending {
            match child.try_wait() {
                Ok(Some(_)) => done.push((label, child)),
                Ok(None) => still.push((label, child)),
                Err(e) => return Err(e.to_string()),
            }
        }
        pending = still;
        if !pending.is_empty() && Instant::now() > deadline {
            let late: Vec<String> = pending.iter().map(|(label, _)| label.clone()).collect();
            for (_, mut child) in pending {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(format!("{} did not finish in time", late.join(", ")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done.into_iter()
        .map(|(label, child)| {
            child
                .wait_with_output()
                .map(|o| (label, o))
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn terminate(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[allow(clippy::too_many_arguments)]
fn result(
    tool: &str,
    bytes: u64,
    seconds: f64,
    sender_cpu: Duration,
    receiver_cpu: Duration,
    receivers: usize,
    verified: bool,
    note: String,
) -> serde_json::Value {
    let gb = bytes as f64 / 1e9;
    serde_json::json!({
        "tool": tool, "receivers": receivers, "bytes": bytes, "seconds": seconds,
        "gbps": bytes as f64 * 8.0 / 1e9 / seconds.max(1e-9),
        "sender_cpu_s_per_gb": sender_cpu.as_secs_f64() / gb,
        "receiver_cpu_s_per_gb": receiver_cpu.as_secs_f64() / gb / receivers as f64,
        "verified": verified, "note": note,
    })
}

pub fn run(args: &E2eArgs) -> Result<serde_json::Value, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("e2e needs root (ip netns)".into());
    }
    let tag = format!("lce{}", std::process::id() % 100_000);
    let mtu: u32 = if args.jumbo { 9000 } else { 1500 };
    let dir = std::env::temp_dir().join(format!("loopcast-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _cleanup = RemoveDir(dir.clone());
    let _topology = build(&tag, args.receivers, mtu)?;
    let input = dir.join("film.bin");
    crate::phase(format_args!(
        "e2e: {} receiver(s) at MTU {mtu}; writing and packing a {} byte file",
        args.receivers, args.size
    ));
    crate::write_sample_file(&input, args.size, 77).map_err(|e| e.to_string())?;
    let original = hash_file(&input).map_err(|e| e.to_string())?;
    let exe_dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_owned)
        .ok_or("no exe dir")?;
    let loopcast = exe_dir.join("loopcast");
    let loopcastd = exe_dir.join("loopcastd");
    let media = dir.join("media");
    let mut pack = Command::new(&loopcast);
    pack.arg("pack")
        .arg(&input)
        .arg("--media")
        .arg(&media)
        .arg("--no-encrypt")
        .args(["--level", "0", "--json"]);
    if args.jumbo {
        pack.arg("--jumbo");
    }
    let packed = pack.output().map_err(|e| e.to_string())?;
    if !packed.status.success() {
        return Err(format!(
            "pack failed: {}",
            String::from_utf8_lossy(&packed.stderr)
        ));
    }
    let mut results = Vec::new();
    // The disk's own ceiling in this run: writing the file once and fsyncing it. loopcast's
    // clients make their copies durable (fsync before the rename); UFTP and udpcast do not.
    crate::phase("e2e: disk ceiling (write + fsync of the same size, per receiver)");
    let disk_seconds = disk_write_fsync_seconds(&dir.join("disk-ceiling.bin"), args.size)
        .map_err(|e| format!("disk ceiling: {e}"))?;

    // loopcast
    crate::phase(format_args!(
        "e2e: loopcast at {} to {} receiver(s)",
        args.rate, args.receivers
    ));
    let cpu0 = crate::children_cpu_time();
    let server = in_ns(&format!("{tag}-s"), &loopcastd)
        .arg("serve")
        .arg("--media")
        .arg(&media)
        .args([
            "--listen",
            "10.80.0.1:7700",
            "--multicast-interface",
            "10.80.0.1",
            "--multicast-ttl",
            "1",
            "--rate",
            &args.rate,
        ])
        .arg("--admin-socket")
        .arg(dir.join("admin.sock"))
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("LOOPCAST_BENCH_SERVER_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let clients: Vec<(String, Child)> = (1..=args.receivers)
        .map(|i| {
            let child = in_ns(&format!("{tag}-r{i}"), &loopcast)
                .args([
                    "get",
                    "10.80.0.1:7700",
                    "film.bin",
                    "--json",
                    "--multicast-interface",
                    &format!("10.80.0.{}", i + 1),
                ])
                .arg("--output")
                .arg(dir.join(format!("r{i}.lca")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            Ok((format!("loopcast client {i}"), child))
        })
        .collect::<Result<_, String>>()?;
    let outputs = wait_all(clients, started + args.timeout);
    let seconds = started.elapsed().as_secs_f64();
    let receiver_cpu = crate::children_cpu_time() - cpu0;
    terminate(server);
    let sender_cpu = crate::children_cpu_time() - cpu0 - receiver_cpu;
    let outputs = outputs?;
    let served = hash_file(&media.join("film.bin.lca")).map_err(|e| e.to_string())?;
    let mut verified = true;
    let mut transports = Vec::new();
    for (i, (label, output)) in outputs.iter().enumerate() {
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        verified &= output.status.success() && report["verified"] == true;
        verified &= hash_file(&dir.join(format!("r{}.lca", i + 1)))
            .map(|h| h == served)
            .unwrap_or(false);
        transports.push(format!(
            "{} ({:.2} s: first datagram at {:.2} s, publish {:.2} s; {} NAKs for {} serials, {} suppressed, {} duplicates)",
            report["transport"].as_str().unwrap_or("?"),
            report["seconds"].as_f64().unwrap_or(0.0),
            report["first_datagram_seconds"].as_f64().unwrap_or(0.0),
            report["publish_seconds"].as_f64().unwrap_or(0.0),
            report["naks_sent"],
            report["serials_naked"],
            report["serials_suppressed"],
            report["duplicates"]
        ));
        if !output.status.success() {
            eprintln!(
                "{label}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    results.push(result(
        "loopcast",
        args.size,
        seconds,
        sender_cpu,
        receiver_cpu,
        args.receivers,
        verified,
        format!("rate {}, transports {}", args.rate, transports.join(",")),
    ));

    for peer in &args.peers {
        crate::phase(format_args!(
            "e2e: {peer} to {} receiver(s)",
            args.receivers
        ));
        let outcome = match peer.as_str() {
            "udpcast" => run_udpcast(args, &tag, &dir, &input, &original),
            "uftp" => run_uftp(args, &tag, &dir, &input, &original),
            other => Err(format!("unknown peer tool {other:?} (uftp, udpcast)")),
        };
        results.push(outcome.unwrap_or_else(|e| serde_json::json!({"tool": peer, "error": e})));
    }
    Ok(
        serde_json::json!({"mtu": mtu, "receivers": args.receivers, "bytes": args.size,
            "disk_write_fsync_seconds_per_copy": disk_seconds, "results": results}),
    )
}

/// Seconds to write `len` bytes (1 MiB at a time, from memory) and fsync them.
fn disk_write_fsync_seconds(path: &Path, len: u64) -> std::io::Result<f64> {
    use std::io::Write;
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut file = std::fs::File::create(path)?;
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(seconds)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

fn run_udpcast(
    args: &E2eArgs,
    tag: &str,
    dir: &Path,
    input: &Path,
    original: &[u8; 32],
) -> Result<serde_json::Value, String> {
    let sender_bin =
        which("udp-sender").ok_or("udpcast not installed (apt-get install udpcast)")?;
    let receiver_bin = which("udp-receiver").ok_or("udpcast not installed")?;
    let cpu0 = crate::children_cpu_time();
    let receivers: Vec<(String, Child)> = (1..=args.receivers)
        .map(|i| {
            let child = in_ns(&format!("{tag}-r{i}"), &receiver_bin)
                .arg("--file")
                .arg(dir.join(format!("udpcast-{i}.bin")))
                .args(["--interface", "veth0", "--nokbd", "--start-timeout", "15"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            Ok((format!("udp-receiver {i}"), child))
        })
        .collect::<Result<_, String>>()?;
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let sender = in_ns(&format!("{tag}-s"), &sender_bin)
        .arg("--file")
        .arg(input)
        .args([
            "--interface",
            "veth0",
            "--nokbd",
            "--min-receivers",
            &args.receivers.to_string(),
            "--max-wait",
            "10",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    // udpcast can hang (e.g. a rendezvous that never happens): bounded by the run's timeout.
    let receiver_outputs = wait_all(receivers, started + args.timeout);
    let seconds = started.elapsed().as_secs_f64();
    let receiver_cpu = crate::children_cpu_time() - cpu0;
    if receiver_outputs.is_err() {
        terminate(sender);
        return Err(format!(
            "udp-receiver did not finish within {} s (no rendezvous, or too slow)",
            args.timeout.as_secs()
        ));
    }
    let sender_outputs = wait_all(
        vec![("udp-sender".into(), sender)],
        Instant::now() + Duration::from_secs(10),
    );
    let sender_cpu = crate::children_cpu_time() - cpu0 - receiver_cpu;
    receiver_outputs?;
    sender_outputs?;
    let verified = (1..=args.receivers).all(|i| {
        hash_file(&dir.join(format!("udpcast-{i}.bin")))
            .map(|h| &h == original)
            .unwrap_or(false)
    });
    Ok(result(
        "udpcast",
        args.size,
        seconds,
        sender_cpu,
        receiver_cpu,
        args.receivers,
        verified,
        "defaults".into(),
    ))
}

fn run_uftp(
    args: &E2eArgs,
    tag: &str,
    dir: &Path,
    input: &Path,
    original: &[u8; 32],
) -> Result<serde_json::Value, String> {
    let server_bin = which("uftp").ok_or("uftp not installed (apt-get install uftp)")?;
    let client_bin = which("uftpd").ok_or("uftp not installed")?;
    let cpu0 = crate::children_cpu_time();
    let daemons: Vec<Child> = (1..=args.receivers)
        .map(|i| {
            let out = dir.join(format!("uftp-{i}"));
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            in_ns(&format!("{tag}-r{i}"), &client_bin)
                .args(["-d", "-I", "veth0", "-D"])
                .arg(&out)
                .arg("-L")
                .arg(dir.join(format!("uftpd-{i}.log")))
                .arg("-P")
                .arg(dir.join(format!("uftpd-{i}.pid")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, String>>()?;
    std::thread::sleep(Duration::from_millis(500));
    let block = if args.jumbo { "8800" } else { "1400" };
    let started = Instant::now();
    let server = in_ns(&format!("{tag}-s"), &server_bin)
        .args(["-Y", "none", "-R", "-1", "-b", block, "-I", "veth0", "-H"])
        .arg(
            (2..=args.receivers + 1)
                .map(|i| format!("10.80.0.{i}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .arg(input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let outputs = wait_all(vec![("uftp".into(), server)], started + args.timeout);
    let seconds = started.elapsed().as_secs_f64();
    let sender_cpu = crate::children_cpu_time() - cpu0;
    for daemon in daemons {
        terminate(daemon);
    }
    let receiver_cpu = crate::children_cpu_time() - cpu0 - sender_cpu;
    outputs?;
    let name = input.file_name().ok_or("input name")?;
    let verified = (1..=args.receivers).all(|i| {
        hash_file(&dir.join(format!("uftp-{i}")).join(name))
            .map(|h| &h == original)
            .unwrap_or(false)
    });
    Ok(result(
        "uftp",
        args.size,
        seconds,
        sender_cpu,
        receiver_cpu,
        args.receivers,
        verified,
        format!("-Y none -R -1 -b {block}"),
    ))
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
