//! `loopcast-bench failover` (issue 11): the real daemons as processes on the host's loopback
//! (unicast; no root needed): two directors, two servers holding the same archive, N clients
//! asking through the directors. Once every client is receiving, the server with the most
//! clients is killed (SIGKILL). Measured per run: the time from the kill to the last of its
//! clients storing a datagram from another server (`failover_seconds`), the duplicates its
//! clients received as a fraction of the file (`duplicate_fraction`), and whether every copy
//! verified (`all_verified`: the client's whole-file check against the root, and the bench's
//! byte comparison with the server's archive).

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct FailoverArgs {
    pub clients: usize,
    pub size: u64,
    pub rate_bits_per_s: u64,
    /// `--fixed-rate` on the servers: one shared channel per file instead of a channel per
    /// unicast client whose rate follows it (capped at `rate_bits_per_s`).
    pub fixed_rate: bool,
    pub runs: usize,
}

/// A child process killed by PID when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary `name` beside this one (cargo puts loopcast, loopcastd and loopcast-bench in
/// one directory).
fn sibling(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = me.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found beside {} (build all binaries: cargo build --release --bins)",
            path.display(),
            me.display()
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

fn spawn(command: &mut Command) -> Result<Daemon, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Daemon)
        .map_err(|e| format!("cannot start {command:?}: {e}"))
}

fn status(admin: &Path) -> Option<serde_json::Value> {
    loopcast_admin::request(admin, "status").ok()
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("timed out waiting for {what}"))
}

struct FleetServer {
    daemon: Daemon,
    admin: PathBuf,
}

fn sessions_of(server: &FleetServer) -> usize {
    status(&server.admin)
        .and_then(|s| s["sessions"].as_array().map(Vec::len))
        .unwrap_or(0)
}

pub fn run_failover(args: &FailoverArgs) -> Result<serde_json::Value, String> {
    let dir = std::env::temp_dir().join(format!("loopcast-bench-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = run_in(&dir, args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, args: &FailoverArgs) -> Result<serde_json::Value, String> {
    let (loopcastd, loopcast) = (sibling("loopcastd")?, sibling("loopcast")?);
    crate::phase(format_args!("failover: packing {} bytes", args.size));
    let input = dir.join("bench.bin");
    crate::write_sample_file(&input, args.size, 0xfa11).map_err(|e| e.to_string())?;
    let packed = dir.join("packed");
    let status_of_pack = Command::new(&loopcast)
        .arg("pack")
        .arg(&input)
        .arg("--media")
        .arg(&packed)
        .args(["--no-encrypt", "--level", "0", "--json"])
        .output()
        .map_err(|e| e.to_string())?;
    if !status_of_pack.status.success() {
        return Err(format!(
            "pack failed: {}",
            String::from_utf8_lossy(&status_of_pack.stderr)
        ));
    }
    let archive = packed.join("bench.bin.lca");
    let key = dir.join("fleet.key");
    crate::write_fleet_key(&key)?;
    let mut runs = Vec::new();
    for run in 0..args.runs.max(1) {
        crate::phase(format_args!("failover: run {}", run + 1));
        runs.push(one_run(
            dir, args, &loopcastd, &loopcast, &archive, &key, run,
        )?);
    }
    let field = |name: &str| -> Vec<f64> {
        runs.iter()
            .filter_map(|r: &serde_json::Value| r[name].as_f64())
            .collect()
    };
    let failover = field("failover_seconds");
    let duplicates = field("duplicate_fraction");
    let range = |values: &[f64]| {
        serde_json::json!([
            values.iter().copied().fold(f64::INFINITY, f64::min),
            values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        ])
    };
    let all_verified = runs.iter().all(|r| r["all_verified"] == true);
    Ok(serde_json::json!({
        "scenario": "failover",
        "clients": args.clients,
        "bytes": args.size,
        "rate_bits_per_s": args.rate_bits_per_s,
        "fixed_rate": args.fixed_rate,
        // The worst run: what an operator can count on.
        "failover_seconds": failover.iter().copied().fold(0.0, f64::max),
        "duplicate_fraction": duplicates.iter().copied().fold(0.0, f64::max),
        "all_verified": all_verified,
        "failover_seconds_range": range(&failover),
        "duplicate_fraction_range": range(&duplicates),
        "target_failover_seconds": 1.5,
        "target_duplicate_fraction": 0.01,
        "runs": runs,
    }))
}

fn one_run(
    dir: &Path,
    args: &FailoverArgs,
    loopcastd: &Path,
    loopcast: &Path,
    archive: &Path,
    key: &Path,
    run: usize,
) -> Result<serde_json::Value, String> {
    let run_dir = dir.join(format!("run-{run}"));
    std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
    let mut directors = Vec::new();
    let mut director_addresses = Vec::new();
    for index in 0..2 {
        let port = free_port()?;
        let admin = run_dir.join(format!("director-{index}.sock"));
        let daemon = spawn(
            Command::new(loopcastd)
                .args(["direct", "--listen", &format!("127.0.0.1:{port}")])
                // Two directors on one address: each its own heartbeat port.
                .args(["--heartbeat-listen", "127.0.0.1:0"])
                .arg("--fleet-key")
                .arg(key)
                .arg("--admin-socket")
                .arg(&admin),
        )?;
        wait_until("a director", Duration::from_secs(10), || {
            status(&admin).is_some()
        })?;
        directors.push((daemon, admin));
        director_addresses.push(format!("127.0.0.1:{port}"));
    }
    let mut servers = Vec::new();
    for index in 0..2 {
        let media = run_dir.join(format!("media-{index}"));
        std::fs::create_dir_all(&media).map_err(|e| e.to_string())?;
        std::fs::copy(archive, media.join("bench.bin.lca")).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let admin = run_dir.join(format!("server-{index}.sock"));
        let daemon = spawn(
            Command::new(loopcastd)
                .args([
                    "serve",
                    "--no-multicast",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .arg("--media")
                .arg(&media)
                .arg("--admin-socket")
                .arg(&admin)
                .args(["--rate", &args.rate_bits_per_s.to_string()])
                .args(args.fixed_rate.then_some("--fixed-rate"))
                .args(["--director", &director_addresses.join(",")])
                .arg("--fleet-key")
                .arg(key),
        )?;
        wait_until("a server", Duration::from_secs(10), || {
            status(&admin).is_some()
        })?;
        servers.push(FleetServer { daemon, admin });
    }
    wait_until(
        "the directors to list both servers",
        Duration::from_secs(10),
        || {
            directors.iter().all(|(_, admin)| {
                status(admin).is_some_and(|s| {
                    s["servers"].as_array().is_some_and(|list| {
                        list.len() == 2
                            && list.iter().all(|v| {
                                v["state"] == "online"
                                    && v["files"].as_array().is_some_and(|f| !f.is_empty())
                            })
                    })
                })
            })
        },
    )?;
    let mut clients = Vec::new();
    for index in 0..args.clients {
        let output = run_dir.join(format!("client-{index}.lca"));
        let child = Command::new(loopcast)
            .args([
                "get",
                &director_addresses.join(","),
                "bench.bin",
                "--unicast",
                "--json",
                "--force",
            ])
            .arg("--output")
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        clients.push((child, output));
    }
    wait_until("every client on a server", Duration::from_secs(20), || {
        servers.iter().map(sessions_of).sum::<usize>() >= args.clients
    })?;
    // A third of the way into the file at the server's rate.
    let loop_seconds = args.size as f64 * 8.0 / args.rate_bits_per_s as f64;
    std::thread::sleep(Duration::from_secs_f64(loop_seconds / 3.0));
    let (victim_index, victim_clients) = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (i, sessions_of(s)))
        .max_by_key(|&(_, n)| n)
        .expect("two servers");
    let mut victim = servers.remove(victim_index);
    victim.daemon.0.kill().map_err(|e| e.to_string())?;
    let killed_unix_ms = loopcast_proto::time::unix_time_ms();
    let _ = victim.daemon.0.wait();
    let deadline = Instant::now() + Duration::from_secs_f64(30.0 + 3.0 * loop_seconds.max(1.0));
    let mut reports = Vec::new();
    for (mut child, output) in clients {
        loop {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("a client did not finish".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("client report: {e}"))?;
        let same = std::fs::read(&output).ok() == std::fs::read(archive).ok();
        reports.push((report, same));
    }
    let moved: Vec<&(serde_json::Value, bool)> = reports
        .iter()
        .filter(|(r, _)| r["failovers"].as_u64().unwrap_or(0) > 0)
        .collect();
    let gaps: Vec<f64> = moved
        .iter()
        .filter_map(|(r, _)| r["data_again_after_failover_unix_ms"].as_u64())
        .map(|at| at.saturating_sub(killed_unix_ms) as f64 / 1e3)
        .collect();
    let duplicates: u64 = moved
        .iter()
        .map(|(r, _)| r["duplicates"].as_u64().unwrap_or(0))
        .sum();
    let stored: u64 = moved
        .iter()
        .map(|(r, _)| r["receiver"]["stored"].as_u64().unwrap_or(0))
        .sum();
    let all_verified = reports
        .iter()
        .all(|(r, same)| r["verified"] == true && *same);
    let seconds: Vec<f64> = reports
        .iter()
        .filter_map(|(r, _)| r["seconds"].as_f64())
        .collect();
    Ok(serde_json::json!({
        "victim_clients": victim_clients,
        "clients_moved": moved.len(),
        "failover_seconds": if gaps.len() == moved.len() && !gaps.is_empty() {
            serde_json::json!(gaps.iter().copied().fold(0.0, f64::max))
        } else {
            serde_json::Value::Null
        },
        "per_client_failover_seconds": gaps,
        "duplicate_fraction": if stored > 0 { duplicates as f64 / stored as f64 } else { 0.0 },
        "all_verified": all_verified,
        "client_seconds": seconds,
    }))
}
