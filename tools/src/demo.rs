//! `loopcast demo`: a sample file, packed, served and downloaded by several clients (some
//! joining mid-loop), all in this process, over real UDP sockets. Multicast runs only inside
//! a private user + network namespace; where the kernel refuses one, everything falls back to
//! unicast on the host's loopback, and the report says so.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, Instant};

use loopcast_archive::{pack, ArchiveFile, MasterKey, Overwrite, PackOptions};
use loopcast_node::{MulticastConfig, ServerConfig};
use loopcast_proto::info::{hex, Watermark, DATAGRAM_SIZE_MTU_1500};
use loopcast_store::KeyStore;

use crate::{format_rate, hash_file, init_logging, parse_rate, parse_size, write_sample_file};

#[derive(clap::Args, Clone)]
pub struct DemoArgs {
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Size of the generated sample file.
    #[arg(long, default_value = "48M", value_parser = parse_size)]
    pub size: u64,
    /// Number of clients (2..=16); the later ones start later, joining the multicast loop
    /// mid-way; the fourth asks for unicast (a unicast client gets its own loop, which starts
    /// at what it lacks: the file's start, so it joins at 0 %, as every client does with
    /// --no-netns).
    // Parsed as a signed number so that a negative count is refused with the range, not read
    // as an unknown option ("unexpected argument '-1'": s21 new-user review).
    #[arg(
        long,
        default_value_t = 4,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i64).range(2..=16)
    )]
    pub clients: i64,
    /// Channel rate, e.g. 400M, 1G or unpaced.
    #[arg(long, default_value = "400M", value_parser = parse_rate)]
    pub rate: u64,
    /// Stay in the host's network namespace (unicast on loopback only, no multicast: each
    /// client gets its own loop from the file's start).
    #[arg(long)]
    pub no_netns: bool,
    /// Keep the working directory (sample, archive, key database, downloads).
    #[arg(long)]
    pub keep: bool,
}

struct Network {
    mode: &'static str,
    multicast: bool,
    reason: String,
}

struct ClientResult {
    client: usize,
    transport: String,
    note: String,
    join_serial: Option<u32>,
    started_after: Duration,
    bytes: u64,
    seconds: f64,
    verified: bool,
    error: Option<String>,
}

const DEMO_GROUP_PROBE: Ipv4Addr = Ipv4Addr::new(239, 77, 0, 250);

fn choose_network(no_netns: bool) -> Network {
    if no_netns {
        return Network {
            mode: "host loopback",
            multicast: false,
            reason: "--no-netns: unicast on the host's loopback (multicast is never sent in the host's namespace)".into(),
        };
    }
    match loopcast_dataplane::netns::enter_private_network() {
        Ok(()) => match loopcast_dataplane::netns::probe_loopback_multicast(DEMO_GROUP_PROBE) {
            Ok(()) => Network {
                mode: "private user+network namespace",
                multicast: true,
                reason: "unprivileged namespace with multicast on loopback".into(),
            },
            Err(why) => Network {
                mode: "private user+network namespace",
                multicast: false,
                reason: format!("multicast probe failed ({why}); clients use unicast"),
            },
        },
        Err(why) => Network {
            mode: "host loopback",
            multicast: false,
            reason: format!(
                "{why}; multicast is never sent in the host's namespace, so clients use unicast"
            ),
        },
    }
}

pub fn run(args: &DemoArgs) -> ExitCode {
    // First, while single-threaded: the private network.
    let network = choose_network(args.no_netns);
    init_logging("warn");
    match run_demo(args, &network) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("loopcast demo: error: {message}");
            ExitCode::FAILURE
        }
    }
}

struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn run_demo(args: &DemoArgs, network: &Network) -> Result<bool, String> {
    let clients = usize::try_from(args.clients).expect("--clients is parsed within 2..=16");
    let say = |text: String| {
        if !args.json {
            eprintln!("{text}");
        }
    };
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    let work = WorkDir {
        path: std::env::temp_dir().join(format!(
            "loopcast-demo-{}-{}",
            std::process::id(),
            u32::from_ne_bytes(nonce)
        )),
        keep: args.keep,
    };
    let media = work.path.join("media");
    std::fs::create_dir_all(&media)
        .map_err(|e| format!("cannot create {}: {e}", media.display()))?;
    say(format!("network: {} — {}", network.mode, network.reason));

    // 1. A sample file, packed (zstd + AES-256-GCM + watermark) into the media database.
    let sample = work.path.join("sample.bin");
    write_sample_file(&sample, args.size, 0x10095ca5)
        .map_err(|e| format!("cannot write sample: {e}"))?;
    let original_hash = hash_file(&sample).map_err(|e| e.to_string())?;
    let keys_path = media.join("keys.db");
    let keys = KeyStore::open(&keys_path, true).map_err(|e| e.to_string())?;
    let key = MasterKey::generate().map_err(|e| e.to_string())?;
    let options = PackOptions {
        name: "sample.bin".into(),
        frame_raw_size: 1 << 20,
        datagram_size: DATAGRAM_SIZE_MTU_1500,
        compression_level: 3,
        master_key: Some(key),
        watermark: Some(Watermark {
            owner: "loopcast-demo".into(),
            notice: "(c) 2026 loopcast demo content".into(),
        }),
    };
    let packed = pack(
        &sample,
        &media.join("sample.bin.lca"),
        &options,
        Overwrite::Replace,
        &|_| {},
    )
    .map_err(|e| e.to_string())?;
    let key = options.master_key.as_ref().expect("set above");
    keys.put(&packed.info.file_id.to_string(), "sample.bin", key)
        .map_err(|e| e.to_string())?;
    say(format!(
        "packed {:.1} MiB into a {:.1} MiB archive in {:.2} s (frames: {} zstd, {} raw; {} datagrams per loop)",
        args.size as f64 / f64::from(1u32 << 20),
        packed.archive_bytes as f64 / f64::from(1u32 << 20),
        packed.elapsed.as_secs_f64(),
        packed.frames_compressed,
        packed.frames_raw,
        packed.info.loop_len
    ));

    // 2. The server, on loopback (inside the private namespace when we have one).
    let mut config = ServerConfig::new(media.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.rate_bits_per_s = args.rate;
    config.session_timeout = Duration::from_secs(3);
    if network.multicast {
        config.multicast = Some(MulticastConfig {
            group_base: Ipv4Addr::new(239, 77, 1, 0),
            port: 7701,
            interface: Ipv4Addr::LOCALHOST,
            ttl: 1,
        });
    }
    let socket = loopcast_node::bind(&config).map_err(|e| e.to_string())?;
    let server_addr = socket.local_addr().map_err(|e| e.to_string())?;
    let shutdown = crate::shutdown_flag();
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || loopcast_node::run_on(config, socket, shutdown))
    };
    let loop_seconds = if args.rate == 0 {
        0.3
    } else {
        packed.archive_bytes as f64 * 8.0 / args.rate as f64
    };
    say(format!(
        "server on {server_addr}, channel rate {}, one loop = {:.2} s; starting {clients} clients",
        format_rate(args.rate),
        loop_seconds
    ));

    // 3. Clients: two at the start, the rest joining part-way through the first loop.
    let bars = indicatif::MultiProgress::new();
    if args.json || !std::io::stderr().is_terminal() {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|index| {
            let delay = Duration::from_secs_f64(
                loop_seconds * [0.0, 0.0, 0.35, 0.7][index.min(3)] + 0.05 * index as f64,
            );
            let unicast_only = index == 3 || !network.multicast;
            let work_path = work.path.clone();
            let keys_path = keys_path.clone();
            let cancel = shutdown.clone();
            let bar = bars.add(indicatif::ProgressBar::new(packed.archive_bytes));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "client {prefix} [{bar:40}] {bytes}/{total_bytes} {msg}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_prefix((index + 1).to_string());
            std::thread::spawn(move || {
                run_client(
                    index + 1,
                    delay,
                    unicast_only,
                    server_addr,
                    &work_path,
                    &keys_path,
                    original_hash,
                    &cancel,
                    &bar,
                    started,
                )
            })
        })
        .collect();
    let results: Vec<ClientResult> = handles
        .into_iter()
        .enumerate()
        .map(|(index, handle)| {
            handle.join().unwrap_or_else(|_| ClientResult {
                client: index + 1,
                transport: "-".into(),
                note: String::new(),
                join_serial: None,
                started_after: Duration::ZERO,
                bytes: 0,
                seconds: 0.0,
                verified: false,
                error: Some("client thread panicked".into()),
            })
        })
        .collect();
    bars.clear().ok();
    shutdown.store(true, Ordering::Relaxed);
    match server.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(format!("server failed: {error}")),
        Err(_) => return Err("server thread panicked".into()),
    }

    let all_verified = results.iter().all(|r| r.verified);
    let loop_len = packed.info.loop_len;
    if args.json {
        let clients_json: Vec<_> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "client": r.client,
                    "transport": r.transport,
                    "transport_note": r.note,
                    "started_after_s": r.started_after.as_secs_f64(),
                    "join_serial": r.join_serial,
                    "join_fraction": r.join_serial.map(|s| f64::from(s) / f64::from(loop_len)),
                    "bytes": r.bytes,
                    "seconds": r.seconds,
                    "mb_per_s": r.bytes as f64 / 1e6 / r.seconds.max(1e-9),
                    "verified": r.verified,
                    "error": r.error,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "network": {"mode": network.mode, "multicast": network.multicast, "reason": network.reason},
                "file": {
                    "name": packed.info.name, "original_bytes": packed.info.original_size,
                    "archive_bytes": packed.archive_bytes, "root": packed.info.root().to_hex(),
                    "original_blake3": hex(&original_hash), "loop_datagrams": loop_len,
                },
                "rate_bits_per_s": args.rate,
                "clients": clients_json,
                "all_verified": all_verified,
            })
        );
    } else {
        // Said at the start on stderr; again here only where the two go to different places
        // (on one terminal, or `2>&1 | tee log`, it showed twice), in the same words. Where
        // they are one, a blank line parts the table from the progress above it.
        if stdout_and_stderr_are_one() {
            println!();
        } else {
            println!("network: {} — {}", network.mode, network.reason);
        }
        println!(
            "{:<7} {:<10} {:<22} {:>13} {:>8} {:>8}  verified",
            "client", "transport", "join point", "archive bytes", "seconds", "MB/s"
        );
        for r in &results {
            let join = match r.join_serial {
                Some(serial) => format!(
                    "{:.0}% (serial {serial})",
                    100.0 * f64::from(serial) / f64::from(loop_len)
                ),
                None => "-".into(),
            };
            println!(
                "{:<7} {:<10} {:<22} {:>13} {:>8.2} {:>8.1}  {}",
                r.client,
                r.transport,
                join,
                r.bytes,
                r.seconds,
                r.bytes as f64 / 1e6 / r.seconds.max(1e-9),
                if r.verified {
                    "yes".to_owned()
                } else {
                    format!("NO: {}", r.error.as_deref().unwrap_or("?"))
                }
            );
        }
        for r in results.iter().filter(|r| !r.note.is_empty()) {
            println!("  client {}: {}", r.client, r.note);
        }
        println!(
            "{}",
            if all_verified {
                "all clients verified: archive root and original BLAKE3 match"
            } else {
                "SOME CLIENTS FAILED"
            }
        );
        if args.keep {
            println!("work directory kept: {}", work.path.display());
        }
    }
    Ok(all_verified)
}

#[allow(clippy::too_many_arguments)]
fn run_client(
    client: usize,
    delay: Duration,
    unicast_only: bool,
    server: SocketAddr,
    work: &Path,
    keys_path: &Path,
    original_hash: [u8; 32],
    cancel: &AtomicBool,
    bar: &indicatif::ProgressBar,
    demo_started: Instant,
) -> ClientResult {
    std::thread::sleep(delay);
    let started_after = demo_started.elapsed();
    let mut result = ClientResult {
        client,
        transport: "-".into(),
        note: String::new(),
        join_serial: None,
        started_after,
        bytes: 0,
        seconds: 0.0,
        verified: false,
        error: None,
    };
    let dir = work.join(format!("client-{client}"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        result.error = Some(e.to_string());
        return result;
    }
    let mut config =
        loopcast_client::GetConfig::new(server, "sample.bin", dir.join("sample.bin.lca"));
    config.allow_multicast = !unicast_only;
    config.multicast_interface = Ipv4Addr::LOCALHOST;
    config.stall_timeout = Duration::from_secs(20);
    bar.set_message("requesting");
    let report = loopcast_client::get(&config, cancel, &mut |p| {
        bar.set_length(p.archive_bytes);
        bar.set_position(p.archive_bytes * u64::from(p.held) / u64::from(p.total.max(1)));
    });
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            bar.abandon_with_message(format!("failed: {error}"));
            result.error = Some(error.to_string());
            return result;
        }
    };
    result.transport = report.transport.to_string();
    result.note = if unicast_only && client == 4 {
        format!("asked for unicast; {}", report.transport_note)
    } else {
        report.transport_note.clone()
    };
    result.join_serial = report.join_serial;
    result.bytes = report.archive_bytes;
    result.seconds = report.elapsed.as_secs_f64();
    bar.set_message("extracting");
    let verify = || -> Result<(), String> {
        let archive = ArchiveFile::open(&config.output).map_err(|e| e.to_string())?;
        let store = KeyStore::open(keys_path, false).map_err(|e| e.to_string())?;
        let key = store
            .get(&archive.info().file_id.to_string())
            .map_err(|e| e.to_string())?;
        let original = dir.join("sample.bin");
        archive
            .extract(Some(&key), &original, Overwrite::Replace, &|_, _| {})
            .map_err(|e| e.to_string())?;
        if hash_file(&original).map_err(|e| e.to_string())? != original_hash {
            return Err("extracted file differs from the original".into());
        }
        Ok(())
    };
    match verify() {
        Ok(()) => {
            result.verified = true;
            bar.finish_with_message(format!("done, verified ({})", result.transport));
        }
        Err(error) => {
            bar.abandon_with_message(format!("verification failed: {error}"));
            result.error = Some(error);
        }
    }
    result
}

/// Whether stdout and stderr reach the same place (one terminal, one pipe, one file).
fn stdout_and_stderr_are_one() -> bool {
    use std::os::unix::fs::MetadataExt;
    let identity = |fd: u8| {
        std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(|m| (m.dev(), m.ino(), m.rdev()))
    };
    matches!((identity(1), identity(2)), (Some(out), Some(err)) if out == err)
}
