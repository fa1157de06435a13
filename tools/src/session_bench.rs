//! Benchmarks of the session layer (issue 9's targets), each against a ceiling or a peer
//! measured in the same run, on the host's loopback (unicast; no root needed):
//!
//! - `verify`: the client's final whole-file check (`ArchiveFile::verify`, all cores) vs plain
//!   multi-threaded BLAKE3 (`update_mmap_rayon`) over the same file, both from the page cache.
//! - `resume`: a download resumed at 90 % held vs a fresh download of the same file.
//! - `flood`: a download while a flood of hostile packets hits both the server's request port
//!   and the client's port, vs the same download undisturbed.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loopcast_archive::{pack, ArchiveFile, Overwrite, PackOptions};
use loopcast_node::ServerConfig;
use loopcast_proto::info::DATAGRAM_SIZE_MTU_1500;
use loopcast_proto::wire::control::ControlMessage;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Result<Scratch, String> {
    let dir = std::env::temp_dir().join(format!("loopcast-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(Scratch(dir))
}

/// Packs `size` bytes of sample content (unencrypted, stored raw) into `media/bench.bin.lca`.
fn packed(dir: &Path, size: u64) -> Result<PathBuf, String> {
    let input = dir.join("bench.bin");
    crate::write_sample_file(&input, size, 0x5eed).map_err(|e| e.to_string())?;
    let media = dir.join("media");
    std::fs::create_dir_all(&media).map_err(|e| e.to_string())?;
    let archive = media.join("bench.bin.lca");
    let options = PackOptions {
        name: "bench.bin".into(),
        frame_raw_size: 1 << 20,
        datagram_size: DATAGRAM_SIZE_MTU_1500,
        compression_level: 0,
        master_key: None,
        watermark: None,
    };
    pack(&input, &archive, &options, Overwrite::Replace, &|_| {}).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&input);
    Ok(archive)
}

/// A loopcastd on 127.0.0.1 (no multicast) on a thread; stopped on drop.
struct Server {
    address: SocketAddr,
    shutdown: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), loopcast_node::ServerError>>>,
}

impl Server {
    fn start(media: &Path, rate_bits_per_s: u64) -> Result<Server, String> {
        let mut config =
            ServerConfig::new(media.to_owned(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        config.rate_bits_per_s = rate_bits_per_s;
        let socket = loopcast_node::bind(&config).map_err(|e| e.to_string())?;
        let address = socket.local_addr().map_err(|e| e.to_string())?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = shutdown.clone();
        let thread = std::thread::spawn(move || loopcast_node::run_on(config, socket, flag));
        Ok(Server {
            address,
            shutdown,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Downloads into `output` (replacing it), stopping once `stop_at_held` datagrams are held if
/// given (the partial download is kept for resume). Returns the elapsed time and the report.
fn download(
    server: SocketAddr,
    output: &Path,
    bind: Option<SocketAddr>,
    stop_at_fraction: Option<f64>,
) -> Result<(Duration, Option<loopcast_client::GetReport>), String> {
    let mut config = loopcast_client::GetConfig::new(server, "bench.bin", output.to_owned());
    config.allow_multicast = false;
    config.force = true;
    config.bind = bind;
    let cancel = AtomicBool::new(false);
    let started = Instant::now();
    let result = loopcast_client::get(&config, &cancel, &mut |progress| {
        if let Some(fraction) = stop_at_fraction {
            if f64::from(progress.held) >= fraction * f64::from(progress.total) {
                cancel.store(true, Ordering::Relaxed);
            }
        }
    });
    let elapsed = started.elapsed();
    match result {
        Ok(report) => Ok((elapsed, Some(report))),
        Err(loopcast_client::ClientError::Interrupted { .. }) if stop_at_fraction.is_some() => {
            Ok((elapsed, None))
        }
        Err(error) => Err(error.to_string()),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Drops the page cache (root only), so the next read comes from the disk.
fn drop_page_cache(path: &Path) -> Result<(), String> {
    // Write back this file's dirty pages first, or they stay cached.
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| e.to_string())?;
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n")
        .map_err(|e| format!("cannot drop the page cache (--cold needs root): {e}"))
}

/// The final whole-file check vs plain multi-threaded BLAKE3 over the same bytes; `cold`: each
/// read comes from the disk (the page cache is dropped before each side), as after a download
/// larger than memory, else both read from the page cache (the CPU cost).
pub fn run_verify(size: u64, runs: usize, cold: bool) -> Result<serde_json::Value, String> {
    let dir = scratch("verify")?;
    crate::phase(format_args!("verify: packing {size} bytes"));
    let archive = packed(&dir.0, size)?;
    let bytes = std::fs::metadata(&archive)
        .map_err(|e| e.to_string())?
        .len();
    // Warm the page cache: both sides then read from memory, the ceiling is hashing.
    crate::hash_file(&archive).map_err(|e| e.to_string())?;
    let mut plain = Vec::new();
    let mut check = Vec::new();
    for run in 0..runs.max(1) {
        crate::phase(format_args!("verify: run {}", run + 1));
        if cold {
            drop_page_cache(&archive)?;
        }
        let started = Instant::now();
        crate::hash_file(&archive).map_err(|e| e.to_string())?;
        plain.push(started.elapsed().as_secs_f64());
        if cold {
            drop_page_cache(&archive)?;
        }
        let started = Instant::now();
        // The client's final check: the tree walk with the multi-lane hasher.
        ArchiveFile::open(&archive)
            .and_then(|a| a.verify_with(&loopcast_dataplane::hash_lanes::hash_many))
            .map_err(|e| e.to_string())?;
        check.push(started.elapsed().as_secs_f64());
    }
    // The structural ceiling: BLAKE3 of every datagram on its own (as the format requires),
    // all cores, from memory, without any tree work.
    let map = std::fs::read(&archive).map_err(|e| e.to_string())?;
    let size = usize::from(DATAGRAM_SIZE_MTU_1500);
    let mut per_datagram = Vec::new();
    for _ in 0..runs.max(1) {
        use rayon::prelude::*;
        let started = Instant::now();
        let folded = map[4096..]
            .par_chunks(size)
            .map(|d| blake3::hash(d).as_bytes()[0])
            .reduce(|| 0u8, |a, b| a ^ b);
        std::hint::black_box(folded);
        per_datagram.push(started.elapsed().as_secs_f64());
    }
    drop(map);
    let ratios: Vec<f64> = plain.iter().zip(&check).map(|(p, c)| p / c).collect();
    let per_datagram_ratios: Vec<f64> = per_datagram
        .iter()
        .zip(&check)
        .map(|(p, c)| p / c)
        .collect();
    let plain_s = median(&mut plain.clone());
    let check_s = median(&mut check.clone());
    Ok(serde_json::json!({
        "scenario": "verify",
        "page_cache": if cold { "dropped before each read" } else { "warm" },
        "bytes": bytes,
        "threads": rayon::current_num_threads(),
        "plain_blake3_s": plain,
        "final_check_s": check,
        "plain_blake3_gb_s": bytes as f64 / 1e9 / plain_s,
        "final_check_gb_s": bytes as f64 / 1e9 / check_s,
        "ratio_to_plain_blake3": ratios,
        "ratio_median": median(&mut ratios.clone()),
        "per_datagram_blake3_s": per_datagram,
        "ratio_to_per_datagram_blake3": per_datagram_ratios,
    }))
}

/// A download resumed at 90 % held vs a fresh download of the same file, same server.
pub fn run_resume(
    size: u64,
    rate_bits_per_s: u64,
    runs: usize,
) -> Result<serde_json::Value, String> {
    let dir = scratch("resume")?;
    crate::phase(format_args!("resume: packing {size} bytes"));
    let archive = packed(&dir.0, size)?;
    let bytes = std::fs::metadata(&archive)
        .map_err(|e| e.to_string())?
        .len();
    let server = Server::start(&dir.0.join("media"), rate_bits_per_s)?;
    let output = dir.0.join("out.lca");
    let mut fresh = Vec::new();
    let mut resumed = Vec::new();
    // What the resumed run really started with (the stop is asked at 90 %, and datagrams in
    // flight still land), and the least time the rest takes at the rate.
    let mut held_fraction = Vec::new();
    let mut floor = Vec::new();
    for run in 0..runs.max(1) {
        crate::phase(format_args!("resume: run {}: fresh download", run + 1));
        let _ = std::fs::remove_file(&output);
        let (elapsed, _) = download(server.address, &output, None, None)?;
        fresh.push(elapsed.as_secs_f64());
        std::fs::remove_file(&output).map_err(|e| e.to_string())?;
        crate::phase(format_args!(
            "resume: run {}: stop at 90 %, then resume",
            run + 1
        ));
        if download(server.address, &output, None, Some(0.9))?
            .1
            .is_some()
        {
            return Err("the download finished before it could be stopped at 90 %; use a larger --size or a lower --rate".into());
        }
        let (elapsed, report) = download(server.address, &output, None, None)?;
        let report = report.ok_or("the resumed download did not finish")?;
        if report.resumed_datagrams == 0 {
            return Err("the second download did not resume".into());
        }
        resumed.push(elapsed.as_secs_f64());
        let held = f64::from(report.resumed_datagrams) / f64::from(report.info.loop_len.max(1));
        held_fraction.push(held);
        floor.push((1.0 - held) * bytes as f64 * 8.0 / rate_bits_per_s.max(1) as f64);
        let _ = std::fs::remove_file(&output);
    }
    let ratios: Vec<f64> = resumed.iter().zip(&fresh).map(|(r, f)| r / f).collect();
    Ok(serde_json::json!({
        "scenario": "resume",
        "bytes": bytes,
        "rate_bits_per_s": rate_bits_per_s,
        "fresh_s": fresh,
        "resumed_at_90_percent_s": resumed,
        "held_fraction_at_resume": held_fraction,
        "rest_at_rate_s": floor,
        "ratio_to_fresh": ratios,
        "ratio_median": median(&mut ratios.clone()),
    }))
}

/// Floods `targets` with `packets` hostile datagrams (round robin: forged Requests, Status and
/// Naks for random sessions, garbage, forged loop datagrams), from a few loopback addresses.
fn flood(
    targets: Vec<SocketAddr>,
    packets: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let sources: Vec<UdpSocket> = (2..6)
            .filter_map(|host| UdpSocket::bind((Ipv4Addr::new(127, 0, 0, host), 0)).ok())
            .collect();
        let mut sent = 0u64;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let garbage: Vec<u8> = (0..1440).map(|i| (i * 7) as u8).collect();
        while sent < packets && !stop.load(Ordering::Relaxed) {
            let session = loopcast_proto::carousel::SessionId(next());
            let bytes = match sent % 5 {
                0 => ControlMessage::Request {
                    request_id: next(),
                    multicast_ok: false,
                    name: "bench.bin".into(),
                    hints: Default::default(),
                }
                .to_bytes(),
                1 => ControlMessage::Status {
                    session,
                    held: 0,
                    loop_len: 1,
                    done: false,
                }
                .to_bytes(),
                2 => ControlMessage::Nak {
                    session,
                    ranges: vec![(0, 1000)],
                }
                .to_bytes(),
                3 => {
                    let mut forged = garbage.clone();
                    forged[..2].copy_from_slice(b"LC");
                    forged[2] = 1;
                    forged
                }
                _ => garbage[..(next() % 1440) as usize].to_vec(),
            };
            let source = &sources[(sent % sources.len() as u64) as usize];
            let target = targets[(sent % targets.len() as u64) as usize];
            if source.send_to(&bytes, target).is_ok() {
                sent += 1;
            }
            if sent.is_multiple_of(64) {
                // Bounded in time too: about 100k packets a second at most.
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        sent
    })
}

/// A download under a hostile flood at both ends vs the same download undisturbed.
pub fn run_flood(
    size: u64,
    rate_bits_per_s: u64,
    packets: u64,
    runs: usize,
) -> Result<serde_json::Value, String> {
    let dir = scratch("flood")?;
    crate::phase(format_args!("flood: packing {size} bytes"));
    let archive = packed(&dir.0, size)?;
    let original = crate::hash_file(&archive).map_err(|e| e.to_string())?;
    let server = Server::start(&dir.0.join("media"), rate_bits_per_s)?;
    let output = dir.0.join("out.lca");
    let client_port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let client = SocketAddr::from((Ipv4Addr::LOCALHOST, client_port));
    let mut quiet = Vec::new();
    let mut flooded = Vec::new();
    let mut sent_total = Vec::new();
    for run in 0..runs.max(1) {
        crate::phase(format_args!("flood: run {}: undisturbed", run + 1));
        let (elapsed, _) = download(server.address, &output, Some(client), None)?;
        quiet.push(elapsed.as_secs_f64());
        std::fs::remove_file(&output).map_err(|e| e.to_string())?;
        crate::phase(format_args!(
            "flood: run {}: under a {packets}-packet flood",
            run + 1
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let flooder = flood(vec![server.address, client], packets, stop.clone());
        let (elapsed, _) = download(server.address, &output, Some(client), None)?;
        stop.store(true, Ordering::Relaxed);
        let sent = flooder.join().map_err(|_| "flood thread panicked")?;
        if crate::hash_file(&output).map_err(|e| e.to_string())? != original {
            return Err("the flooded download differs from the original".into());
        }
        flooded.push(elapsed.as_secs_f64());
        sent_total.push(sent);
        std::fs::remove_file(&output).map_err(|e| e.to_string())?;
    }
    let ratios: Vec<f64> = flooded.iter().zip(&quiet).map(|(f, q)| f / q).collect();
    Ok(serde_json::json!({
        "scenario": "flood",
        "bytes": std::fs::metadata(&archive).map_err(|e| e.to_string())?.len(),
        "rate_bits_per_s": rate_bits_per_s,
        "flood_packets_target": packets,
        "flood_packets_sent_during_download": sent_total,
        "undisturbed_s": quiet,
        "flooded_s": flooded,
        "ratio_to_undisturbed": ratios,
        "ratio_median": median(&mut ratios.clone()),
        "output_identical": true,
    }))
}
