//! `loopcast-bench`: measurements, each next to a ceiling measured in the same run.
//!
//! - `ceiling`: raw sendmmsg + UDP GSO blaster (the send reference).
//! - `send`: loopcast's send path (mmap'd archive, carousel, BatchSender) vs the ceiling.
//! - `pack`: the packer vs memcpy and AES-256-GCM (all cores) over the same bytes.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use clap::{Parser, Subcommand};
use loopcast_archive::{pack, ArchiveFile, MasterKey, PackOptions};
use loopcast_dataplane::ceiling::blast;
use loopcast_dataplane::mapped::MappedArchive;
use loopcast_dataplane::send::{probe_send_path, DataSender, SendPath, MESSAGES_MAX};
use loopcast_proto::carousel::{Carousel, CarouselConfig, SessionId};
use loopcast_proto::info::{DATAGRAM_SIZE_MTU_1500, DATAGRAM_SIZE_MTU_9000};
use loopcast_tools::{cpu_time, init_logging, parse_size};
use rayon::prelude::*;
use socket2::SockAddr;

#[derive(Parser)]
#[command(
    name = "loopcast-bench",
    version,
    about = "loopcast benchmarks; every figure comes with a ceiling measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Args, Clone)]
struct SendArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Use 9000-MTU datagrams (8944 bytes) instead of 1440.
    #[arg(long)]
    jumbo: bool,
    /// Force a send path for `send` (default: the best the kernel offers), e.g. sendmmsg+gso.
    #[arg(long)]
    path: Option<String>,
    /// Archive size for `send`.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    size: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Scenario {
    /// Raw sendmmsg + GSO blaster to a loopback sink.
    Ceiling(SendArgs),
    /// One unpaced channel of loopcast's send path vs the ceiling, same run.
    Send(SendArgs),
    /// Packing throughput vs memcpy and AES-256-GCM ceilings.
    Pack {
        /// Bytes to pack (incompressible).
        #[arg(long, default_value = "512M", value_parser = parse_size)]
        size: u64,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    init_logging("warn");
    let result = match Cli::parse().scenario {
        Scenario::Ceiling(args) => {
            run_ceiling(&args).map(|m| print_one(&m.to_json(), args.json, &m.describe("ceiling")))
        }
        Scenario::Send(args) => run_send(&args),
        Scenario::Pack { size, json } => run_pack(size, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loopcast-bench: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_one(json: &serde_json::Value, as_json: bool, human: &str) {
    if as_json {
        println!("{json}");
    } else {
        println!("{human}");
    }
}

#[derive(Clone, Copy)]
struct SendMeasure {
    bytes: u64,
    datagrams: u64,
    seconds: f64,
    cpu_seconds: f64,
    datagram_size: usize,
}

impl SendMeasure {
    fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e9 / self.seconds
    }
    fn pps(&self) -> f64 {
        self.datagrams as f64 / self.seconds
    }
    fn cpu_s_per_gb(&self) -> f64 {
        self.cpu_seconds / (self.bytes as f64 / 1e9)
    }
    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "gbps": self.gbps(), "pps": self.pps(), "cpu_s_per_gb": self.cpu_s_per_gb(),
            "datagram_size": self.datagram_size, "seconds": self.seconds, "bytes": self.bytes,
        })
    }
    fn describe(&self, label: &str) -> String {
        format!("{label:<10} {:>7.2} Gbit/s {:>10.0} datagrams/s {:>6.3} CPU s/GB ({} B datagrams, {:.1} s)",
            self.gbps(), self.pps(), self.cpu_s_per_gb(), self.datagram_size, self.seconds)
    }
}

fn sink() -> Result<(UdpSocket, SockAddr), String> {
    let sink = loopcast_dataplane::socket::bind_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .map_err(|e| e.to_string())?;
    let addr = SockAddr::from(sink.local_addr().map_err(|e| e.to_string())?);
    Ok((sink, addr))
}

fn datagram_size(args: &SendArgs) -> u16 {
    if args.jumbo {
        DATAGRAM_SIZE_MTU_9000
    } else {
        DATAGRAM_SIZE_MTU_1500
    }
}

fn run_ceiling(args: &SendArgs) -> Result<SendMeasure, String> {
    let (_sink, destination) = sink()?;
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    let size = usize::from(datagram_size(args));
    let cpu_before = cpu_time();
    let report = blast(
        &sender,
        &destination,
        size,
        Duration::from_secs_f64(args.seconds),
        u64::MAX,
    )
    .map_err(|e| format!("blaster: {e}"))?;
    Ok(SendMeasure {
        bytes: report.bytes,
        datagrams: report.datagrams,
        seconds: report.elapsed.as_secs_f64(),
        cpu_seconds: (cpu_time() - cpu_before).as_secs_f64(),
        datagram_size: size,
    })
}

fn run_send(args: &SendArgs) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("loopcast-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cleanup = scopeguard(dir.clone());
    let input = dir.join("send.bin");
    write_random(&input, args.size)?;
    let archive_path = dir.join("send.lca");
    let options = PackOptions {
        name: "send.bin".into(),
        frame_raw_size: 1 << 20,
        datagram_size: datagram_size(args),
        compression_level: 0,
        master_key: None,
        watermark: None,
    };
    pack(&input, &archive_path, &options, &|_| {}).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&input);
    let archive = ArchiveFile::open(&archive_path).map_err(|e| e.to_string())?;
    let map = MappedArchive::map(archive.file(), archive.path()).map_err(|e| e.to_string())?;
    let info = archive.info().clone();
    let size = usize::from(info.datagram_size);
    // Warm the page cache: the channel serves from memory, as on a server with the file hot.
    let mut touch = 0u64;
    for page in map.bytes().chunks(4096) {
        touch = touch.wrapping_add(u64::from(page[0]));
    }
    std::hint::black_box(touch);

    let ceiling = run_ceiling(args)?;
    let (path, reason) = match &args.path {
        Some(name) => (
            SendPath::from_name(name).ok_or_else(|| {
                let names: Vec<_> = SendPath::ALL.iter().map(|p| p.name()).collect();
                format!("unknown send path {name:?}; one of {}", names.join(", "))
            })?,
            "chosen with --path".to_owned(),
        ),
        None => probe_send_path(),
    };
    let (_sink, destination) = sink()?;
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    let mut sender =
        DataSender::new(path).map_err(|e| format!("cannot start {}: {e}", path.name()))?;
    let epoch = Instant::now();
    let now = || loopcast_proto::Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
    let mut carousel = Carousel::new(
        CarouselConfig {
            loop_len: info.loop_len,
            datagram_size: info.datagram_size,
            rate_bits_per_s: 0,
            batch_datagrams_max: (sender.segments_per_message(size) * MESSAGES_MAX) as u32,
            member_timeout: Duration::from_secs(3600),
            members_max: 1,
        },
        now(),
    );
    carousel.join(now(), SessionId(1)).map_err(|_| "join")?;
    let cpu_before = cpu_time();
    let started = Instant::now();
    let budget = Duration::from_secs_f64(args.seconds);
    let mut datagrams = 0u64;
    while started.elapsed() < budget {
        let transmit = carousel.poll_transmit(now()).ok_or("carousel stalled")?;
        let start = loopcast_archive::format::datagram_offset(&info, transmit.first) as usize;
        let region = &map.bytes()[start..start + transmit.count as usize * size];
        datagrams += sender
            .send(&socket, &destination, region, size)
            .map_err(|e| e.to_string())? as u64;
    }
    let ours = SendMeasure {
        bytes: datagrams * size as u64,
        datagrams,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: (cpu_time() - cpu_before).as_secs_f64(),
        datagram_size: size,
    };
    let ratio = ours.gbps() / ceiling.gbps();
    drop(cleanup);
    let counters = sender.counters();
    let final_path = sender.path();
    let path_note = if final_path == path {
        reason.clone()
    } else {
        format!("started on {} ({reason}), stepped down", path.name())
    };
    if args.json {
        let mut json = ours.to_json();
        json["ratio_to_ceiling"] = serde_json::json!(ratio);
        json["send_path"] = serde_json::json!(final_path.name());
        json["send_path_reason"] = serde_json::json!(path_note);
        json["zc_notifications"] = serde_json::json!(counters.zc_notifications);
        json["zc_copied"] = serde_json::json!(counters.zc_copied);
        json["syscalls"] = serde_json::json!(counters.syscalls);
        json["ceiling"] = ceiling.to_json();
        json["destination"] = serde_json::json!("unicast loopback sink");
        println!("{json}");
    } else {
        println!("{}", ceiling.describe("ceiling"));
        println!("{}", ours.describe("loopcast"));
        println!(
            "ratio      {ratio:.3} of ceiling (send path {}: {path_note})",
            final_path.name()
        );
    }
    Ok(())
}

struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn scopeguard(dir: PathBuf) -> RemoveDir {
    RemoveDir(dir)
}

fn write_random(path: &std::path::Path, len: u64) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).map_err(|e| e.to_string())?,
    );
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let mut counter = 0u64;
    while written < len {
        // BLAKE3 in XOF mode as a fast, incompressible byte source.
        let mut reader = blake3::Hasher::new()
            .update(&counter.to_le_bytes())
            .finalize_xof();
        reader.fill(&mut block);
        let take = (len - written).min(block.len() as u64) as usize;
        out.write_all(&block[..take]).map_err(|e| e.to_string())?;
        written += take as u64;
        counter += 1;
    }
    out.flush().map_err(|e| e.to_string())
}

fn run_pack(size: u64, json: bool) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("loopcast-bench-pack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _cleanup = scopeguard(dir.clone());
    let input = dir.join("pack.bin");
    write_random(&input, size)?;
    let data = std::fs::read(&input).map_err(|e| e.to_string())?;
    let threads = rayon::current_num_threads();

    // Ceiling 1: memcpy of the same bytes, all cores, 1 MiB blocks.
    // Touch every page of the target first, so the ceiling measures copying, not page faults.
    let mut target = vec![1u8; data.len()];
    target
        .par_chunks_mut(1 << 20)
        .for_each(|block| block.fill(2));
    let started = Instant::now();
    target
        .par_chunks_mut(1 << 20)
        .zip(data.par_chunks(1 << 20))
        .for_each(|(t, s)| t.copy_from_slice(s));
    let memcpy_mb_s = size as f64 / 1e6 / started.elapsed().as_secs_f64();
    std::hint::black_box(&target);

    // Ceiling 2: AES-256-GCM (aes-gcm crate) sealing 1 MiB blocks, all cores.
    let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).expect("32-byte key");
    let started = Instant::now();
    target.par_chunks_mut(1 << 20).for_each(|block| {
        let _tag = cipher
            .encrypt_inout_detached(&[0u8; 12].into(), b"", block.into())
            .expect("in limits");
    });
    let aes_mb_s = size as f64 / 1e6 / started.elapsed().as_secs_f64();
    drop(target);

    // Ceiling 3: writing the same number of bytes to the same file system, with fsync (an
    // archive is written and fsynced, so the disk bounds packing too).
    let started = Instant::now();
    {
        use std::io::Write;
        let disk_path = dir.join("disk.bin");
        let mut file = std::fs::File::create(&disk_path).map_err(|e| e.to_string())?;
        for block in data.chunks(4 << 20) {
            file.write_all(block).map_err(|e| e.to_string())?;
        }
        file.sync_all().map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&disk_path);
    }
    let disk_mb_s = size as f64 / 1e6 / started.elapsed().as_secs_f64();
    drop(data);

    let mut results = Vec::new();
    for (label, level, encrypt) in [
        ("pack (zstd 3 + AES-GCM)", 3, true),
        ("pack (AES-GCM, no zstd)", 0, true),
        ("pack (no zstd, no AES)", 0, false),
    ] {
        let options = PackOptions {
            name: "pack.bin".into(),
            frame_raw_size: 1 << 20,
            datagram_size: DATAGRAM_SIZE_MTU_1500,
            compression_level: level,
            master_key: encrypt.then(|| MasterKey::from_bytes([9; 32])),
            watermark: None,
        };
        let output = dir.join("pack.lca");
        let cpu_before = cpu_time();
        let summary = pack(&input, &output, &options, &|_| {}).map_err(|e| e.to_string())?;
        let cpu = (cpu_time() - cpu_before).as_secs_f64();
        let mb_s = size as f64 / 1e6 / summary.elapsed.as_secs_f64();
        let _ = std::fs::remove_file(&output);
        results.push((label, mb_s, cpu / (size as f64 / 1e9)));
    }
    if json {
        let packs: Vec<_> = results
            .iter()
            .map(|(label, mb_s, cpu)| {
                serde_json::json!({
                    "scenario": label, "mb_per_s": mb_s, "ratio_to_aes_gcm": mb_s / aes_mb_s,
                    "ratio_to_memcpy": mb_s / memcpy_mb_s, "ratio_to_disk": mb_s / disk_mb_s, "cpu_s_per_gb": cpu,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "bytes": size, "threads": threads, "memcpy_mb_per_s": memcpy_mb_s, "aes_gcm_mb_per_s": aes_mb_s,
                "disk_write_fsync_mb_per_s": disk_mb_s, "pack": packs,
            })
        );
    } else {
        println!("{} MiB incompressible input, {threads} threads", size >> 20);
        println!("ceiling memcpy          {memcpy_mb_s:>9.1} MB/s");
        println!("ceiling AES-256-GCM     {aes_mb_s:>9.1} MB/s");
        println!("ceiling disk+fsync      {disk_mb_s:>9.1} MB/s");
        for (label, mb_s, cpu) in &results {
            println!(
                "{label:<24}{mb_s:>9.1} MB/s  {:.3} of AES-GCM, {:.3} of memcpy, {:.3} of disk, {cpu:.2} CPU s/GB",
                mb_s / aes_mb_s,
                mb_s / memcpy_mb_s,
                mb_s / disk_mb_s
            );
        }
    }
    Ok(())
}
