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
use loopcast_archive::{pack, ArchiveFile, MasterKey, Overwrite, PackOptions};
use loopcast_dataplane::ceiling::blast;
use loopcast_dataplane::mapped::MappedArchive;
use loopcast_dataplane::send::{probe_send_path, DataSender, SendPath, MESSAGES_MAX};
use loopcast_proto::carousel::{Carousel, CarouselConfig};
use loopcast_proto::info::{DATAGRAM_SIZE_MTU_1500, DATAGRAM_SIZE_MTU_9000};
use loopcast_tools::e2e_bench::PerReceiver;
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
    /// Sender threads (each pinned to a core). With --tiers or --files, runs the sender pool.
    #[arg(long)]
    cores: Option<usize>,
    /// Comma-separated tier rates per file, e.g. 10M,100M,1G,unpaced (runs the sender pool).
    #[arg(long)]
    tiers: Option<String>,
    /// Number of distinct files (archives), each sent at every tier (runs the sender pool).
    #[arg(long)]
    files: Option<usize>,
    /// Send to this address instead of a loopback sink (e.g. a multicast group).
    #[arg(long)]
    dest: Option<SocketAddr>,
    /// Interface address to send multicast from (with --dest).
    #[arg(long)]
    multicast_interface: Option<Ipv4Addr>,
    /// Measure multicast over a veth bridge between network namespaces this bench creates and
    /// removes (needs root and iproute2).
    #[arg(long)]
    netns: bool,
    /// Force a send path for `send` (default: the best the kernel offers), e.g. sendmmsg+gso.
    #[arg(long)]
    path: Option<String>,
    /// Window over which a paced channel's achieved rate is compared with its target.
    #[arg(long, default_value_t = 100)]
    pacing_window_ms: u64,
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
    /// Whole files from a server to R receivers in namespaces (verified); with --peers, UFTP and
    /// udpcast over the same topology. Needs root.
    ///
    /// Per receiver (`receivers` in --json; a line each without it): `seconds` from the common
    /// start to its verified copy; `target_seconds`, the target: 1.3 x (file size / its
    /// link rate), and for an unlimited receiver among limited ones 1.3 x its time alone
    /// (`seconds_alone`, measured first on the same bed); `within_target` (false without a
    /// verified copy); `goodput_bits_per_s` (file bits / seconds) and `goodput_over_link_rate`;
    /// `tier`, the speed tier it last heard, its place by rate among the `tiers` open then
    /// (0 the slowest; a position, not an id: receivers on different tiers can both report 0;
    /// the text output counts from 1, as `loopcast get` and `loopcastctl` do); `duplicates`,
    /// datagrams it received again (null for UFTP and udpcast, which do not report them; "n/a"
    /// in the text); `naks_sent` and `serials_naked`, its NAKs and the serials they asked for
    /// (udpcast reports none); `serials_left_to_loop`, serials it did not ask for because it was
    /// overloaded (over a quarter of what went by missing: its tier faster than its link), left
    /// for the loop to bring (a running total: one left again after a move counts again);
    /// `client_seconds` (loopcast only), the client's own `seconds` from `loopcast get --json`:
    /// from the get's start to its copy verified and published, without its process start-up
    /// and exit that `seconds` includes; the other fields as in `loopcast get --json`
    /// (docs/architecture.md).
    ///
    /// Per tool (`results`): `seconds` to the last receiver; `gbps`, the file's size in Gbit
    /// over those `seconds` (one copy's rate to the last receiver, not a sum over receivers);
    /// CPU seconds per GB on each side,
    /// `server_sent_bytes` (the server interface's transmitted bytes) and its ratio to the file,
    /// and for loopcast `tiers_opened` (channels the server opened) and `sent_within_target`
    /// (sent <= 1.2 x tiers_opened x file size); with an unlimited receiver among limited ones,
    /// `alone` is its run alone and `unlimited_alone_seconds` that receiver's `seconds` in it
    /// (loopcast and UFTP; the `seconds_alone` of each unlimited receiver). Before each tool's run one copy's worth of bytes is written,
    /// fsynced and removed, so every tool starts from the same page cache; its seconds are
    /// that run's `disk_write_fsync_seconds_before` (the top level's
    /// `disk_write_fsync_seconds_per_copy` is loopcast's), the disk's time for one durable
    /// copy (loopcast's clients fsync; UFTP and udpcast do not). Each receiver's copy is
    /// removed once checked.
    ///
    /// LOOPCAST_BENCH_SERVER_LOG=1 shows loopcastd's log (with RUST_LOG, e.g.
    /// loopcast_node=debug); LOOPCAST_BENCH_CLIENT_LOG=DIR keeps each loopcast client's log as
    /// DIR/run<N>-r<i>.log (DIR made if missing; N counts this invocation's loopcast runs from 0,
    /// a first run without the lossy receivers or of the unlimited one alone coming first; i is
    /// the receiver, from 1). With RUST_LOG=loopcast_client=debug a log holds every Report the
    /// client sent: datagrams it counted received and lost, over what interval, on which tier
    /// (numbered from 1, of how many). LOOPCAST_BENCH_KEEP=1 keeps the run's files and copies.
    /// Ctrl-C stops the run and removes its namespaces and files (exit 130).
    ///
    /// The host's net.core.rmem_max and net.core.wmem_max are raised to 64 MiB where lower (a
    /// line on stderr names each with its old and new value) and are not restored afterwards.
    E2e {
        /// Receivers, each behind an unlimited link (see --link-rates).
        #[arg(long, default_value_t = 1)]
        receivers: usize,
        /// The file's size, e.g. 8M, 1G.
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
        /// MTU 9000 on the bed, and the file packed for it (`pack --jumbo`).
        #[arg(long)]
        jumbo: bool,
        /// loopcast channel rate, fixed (loopcastd --rate R --fixed-rate); without it loopcastd chooses its rates.
        #[arg(long)]
        rate: Option<String>,
        /// One receiver per rate, each behind a tc tbf link of that rate (0 = unlimited), e.g.
        /// 5M,50M,500M,0, or 50Mx10 for ten at 50 Mbit/s; overrides --receivers.
        #[arg(long, value_parser = parse_link_rates)]
        link_rates: Option<PerReceiver<u64>>,
        /// Random loss on each receiver's link in percent (0-99), in receiver order (missing
        /// ones: none; more entries than receivers is an error), e.g. 20 (the first receiver
        /// loses 20 % of the UDP it is sent, data and control alike) or 0x9,20. Needs nftables
        /// (nft). Each receiver's `link_loss_percent` says it. With lossy receivers among clean
        /// ones, loopcast runs the clean ones alone first (`without_lossy`, the whole result of
        /// that run), and the report adds: per clean receiver `seconds_without_lossy` and
        /// `over_without_lossy` (its time with the lossy ones over without); `others_seconds`
        /// and `others_seconds_without_lossy` (the last clean receiver's time, with and without);
        /// `others_slowdown` (their ratio), `others_slowdown_worst_receiver` (the largest
        /// single ratio) and `others_within_target` (others_slowdown <= 1.1: one lossy receiver
        /// slows the others by at most 10 %). loopcast only: the peers run all receivers once.
        #[arg(long, value_parser = parse_link_loss)]
        link_loss: Option<PerReceiver<u8>>,
        /// Also run these peers over the same topology, e.g. uftp,udpcast.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        /// A receiver not finished after this many seconds is ended and reported as not
        /// finished.
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
        /// One JSON object (fields above) instead of a line per tool and per receiver.
        #[arg(long)]
        json: bool,
    },
    /// Join a multicast group and drain it for a while, counting what arrives (used by --netns).
    Sink {
        #[arg(long)]
        group: SocketAddr,
        #[arg(long)]
        interface: Ipv4Addr,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// The client's final whole-file check vs plain multi-threaded BLAKE3 over the same file.
    Verify {
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Drop the page cache before each side (root): both read from the disk.
        #[arg(long)]
        cold: bool,
        #[arg(long)]
        json: bool,
    },
    /// A download resumed at 90 % held vs a fresh one (loopback, unicast).
    Resume {
        #[arg(long, default_value = "256M", value_parser = parse_size)]
        size: u64,
        /// loopcast channel rate.
        #[arg(long, default_value = "400M")]
        rate: String,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// A download under a flood of hostile packets at the server and the client vs the same
    /// download undisturbed (loopback, unicast).
    Flood {
        #[arg(long, default_value = "256M", value_parser = parse_size)]
        size: u64,
        #[arg(long, default_value = "400M")]
        rate: String,
        #[arg(long, default_value_t = 200_000)]
        packets: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// Failover (R17): two directors, two servers with the same archive and N clients on
    /// loopback; the server with the most clients is killed mid-transfer. Reports the time to
    /// the last of its clients receiving again, duplicates, and that every copy verified.
    Failover {
        /// Clients, 1-64.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        clients: u32,
        #[arg(long, default_value = "64M", value_parser = parse_size)]
        size: u64,
        /// Each channel's rate cap, per destination (automatic rates below it; with
        /// --fixed-rate, the rate each channel is paced at; see loopcastd serve --help).
        #[arg(long, default_value = "200M", value_parser = loopcast_tools::parse_rate)]
        rate: u64,
        /// Servers run one shared channel per file paced at --rate (loopcastd --fixed-rate).
        #[arg(long)]
        fixed_rate: bool,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// The control plane on one core (in process): client reports a server endpoint handles
    /// per second, routing decisions a director makes per second, and the admin socket's
    /// answer times meanwhile.
    Control {
        /// Clients reporting, 1-1000000.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        clients: u32,
        /// Seconds of reports, 0.5-600.
        #[arg(long, default_value_t = 5.0, value_parser = parse_control_seconds)]
        seconds: f64,
        /// Servers the director routes over, 1-4096.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=4096))]
        servers: u32,
        /// Files each server holds, 1-10000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        files_per_server: u32,
        #[arg(long)]
        json: bool,
    },
    /// A simulated fleet (real director, server and client machines) on virtual time. Clients
    /// ask over the first 5 virtual seconds, each behind a link of 5M, 50M, 500M or unlimited;
    /// it reports the share on the server and tier matching their link 10 s after asking, then
    /// kills one server at 16 s and times its clients' move to the others.
    FleetSim {
        /// Clients, each with its own link and its own time to ask; 1-13107199.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..(200 << 16)))]
        clients: u32,
        /// Servers, each with the same file (one is killed when there are two or more); 1-250.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=250))]
        servers: u16,
        /// Directors the clients ask (each knows every server); 1-250.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=250))]
        directors: u16,
        /// Virtual seconds to run, 1-3600 (the 10 s match check needs over 10, the server kill
        /// over 26).
        #[arg(long, default_value_t = 30.0, value_parser = parse_fleet_seconds)]
        seconds: f64,
        /// Seed of every random choice (links, arrival times, machines' own seeds): the same
        /// seed gives the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One JSON report on stdout instead of the line for people.
        #[arg(long)]
        json: bool,
    },
    /// Packing throughput vs memcpy and AES-256-GCM ceilings.
    Pack {
        /// Bytes to pack (incompressible).
        #[arg(long, default_value = "512M", value_parser = parse_size)]
        size: u64,
        #[arg(long)]
        json: bool,
    },
}

/// `fleet-sim --seconds`: virtual seconds, 1 to 3600 (it ran 1 s for 0, quietly).
fn parse_control_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.5..=600.0).contains(&seconds) => Ok(seconds),
        Ok(_) => Err(format!("{text:?} is outside 0.5..=600 seconds")),
        Err(_) => Err(format!("{text:?} is not a number of seconds")),
    }
}

fn parse_fleet_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (1.0..=3_600.0).contains(&seconds) => Ok(seconds),
        Ok(_) => Err(format!("{text:?} is outside 1..=3600 virtual seconds")),
        Err(_) => Err(format!("{text:?} is not a number of seconds")),
    }
}

fn main() -> ExitCode {
    loopcast_tools::exit_cleanly_on_stdout_errors(run)
}

fn run() -> ExitCode {
    init_logging("warn");
    let result = match loopcast_tools::parse_command_line::<Cli>(std::env::args_os()).scenario {
        Scenario::Send(args) if args.netns => run_in_netns("send", &args),
        Scenario::Ceiling(args) if args.netns => run_in_netns("ceiling", &args),
        Scenario::Ceiling(args) => run_ceiling(&args, None)
            .map(|m| print_one(&m.to_json(), args.json, &m.describe("ceiling"))),
        Scenario::Send(args)
            if args.cores.is_some() || args.tiers.is_some() || args.files.is_some() =>
        {
            run_pool(&args)
        }
        Scenario::Send(args) => run_send(&args),
        Scenario::Pack { size, json } => run_pack(size, json),
        Scenario::Verify {
            size,
            runs,
            cold,
            json,
        } => print_session(
            loopcast_tools::session_bench::run_verify(size, runs, cold),
            json,
        ),
        Scenario::Resume {
            size,
            rate,
            runs,
            json,
        } => loopcast_tools::parse_rate(&rate).and_then(|rate| {
            print_session(
                loopcast_tools::session_bench::run_resume(size, rate, runs),
                json,
            )
        }),
        Scenario::Flood {
            size,
            rate,
            packets,
            runs,
            json,
        } => loopcast_tools::parse_rate(&rate).and_then(|rate| {
            print_session(
                loopcast_tools::session_bench::run_flood(size, rate, packets, runs),
                json,
            )
        }),
        Scenario::E2e {
            receivers,
            size,
            jumbo,
            rate,
            link_rates,
            link_loss,
            peers,
            timeout_s,
            json,
        } => loopcast_tools::e2e_bench::run(&loopcast_tools::e2e_bench::E2eArgs {
            receivers: receivers.max(1),
            size,
            jumbo,
            rate,
            link_rates: link_rates.map(|l| l.0).unwrap_or_default(),
            link_loss: link_loss.map(|l| l.0).unwrap_or_default(),
            peers,
            timeout: Duration::from_secs(timeout_s),
        })
        .and_then(|report| {
            if json {
                println!("{report}");
            } else {
                print_e2e(&report);
            }
            // A run where loopcast left a receiver without a verified copy is a failed run,
            // whatever its figures.
            match loopcast_unverified(&report) {
                0 => Ok(()),
                n => Err(format!(
                    "loopcast left {n} receiver(s) without a verified copy (see the report)"
                )),
            }
        }),
        Scenario::Sink {
            group,
            interface,
            seconds,
        } => run_sink(group, interface, seconds),
        Scenario::FleetSim {
            clients,
            servers,
            directors,
            seconds,
            seed,
            json,
        } => loopcast_tools::fleet_sim::run_fleet_sim(&loopcast_tools::fleet_sim::FleetSimArgs {
            clients: clients as usize,
            servers: usize::from(servers),
            directors: usize::from(directors),
            seconds,
            seed,
        })
        .map(|report| {
            let line = loopcast_tools::fleet_sim::describe(&report);
            print_one(&report, json, &line)
        }),
        Scenario::Control {
            clients,
            seconds,
            servers,
            files_per_server,
            json,
        } => loopcast_tools::control_bench::run_control(&loopcast_tools::control_bench::ControlArgs {
            clients: clients as usize,
            seconds,
            servers: servers as usize,
            files_per_server: files_per_server as usize,
        })
        .map(|report| {
            if json {
                println!("{report}");
            } else {
                println!(
                    "control: {} clients: {:.0} reports/s on one core (parsing them alone: {:.0}/s; target 100000); admin status p50 {:.2} ms p99 {:.2} ms meanwhile (target p99 10 ms); director: {:.0} routing decisions/s over {} servers",
                    report["clients"],
                    report["reports_per_s"].as_f64().unwrap_or(0.0),
                    report["report_parse_ceiling_per_s"].as_f64().unwrap_or(0.0),
                    report["admin_latency_ms"]["p50"].as_f64().unwrap_or(0.0),
                    report["admin_latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                    report["routing_decisions_per_s"].as_f64().unwrap_or(0.0),
                    report["routing_servers"],
                );
            }
        }),
        Scenario::Failover {
            clients,
            size,
            rate,
            fixed_rate,
            runs,
            json,
        } => loopcast_tools::fleet_bench::run_failover(&loopcast_tools::fleet_bench::FailoverArgs {
            clients: clients as usize,
            size,
            rate_bits_per_s: rate.max(1_000_000),
            fixed_rate,
            runs,
        })
        .map(|report| {
            if json {
                println!("{report}");
            } else {
                let range = |name: &str, scale: f64| {
                    format!(
                        "{:.3}-{:.3}",
                        report[name][0].as_f64().unwrap_or(f64::NAN) * scale,
                        report[name][1].as_f64().unwrap_or(f64::NAN) * scale
                    )
                };
                println!(
                    "failover: {} clients, {} runs: server death to its last client receiving again {} s (target 1.5 s); duplicates {} % of the file (target 1 %); all verified: {}",
                    report["clients"],
                    report["runs"].as_array().map_or(0, Vec::len),
                    range("failover_seconds_range", 1.0),
                    range("duplicate_fraction_range", 100.0),
                    report["all_verified"]
                );
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loopcast-bench: error: {message}");
            if message == loopcast_tools::e2e_bench::INTERRUPTED_MESSAGE {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn parse_link_rates(text: &str) -> Result<PerReceiver<u64>, String> {
    PerReceiver::parse(text, loopcast_tools::parse_rate)
}

fn parse_link_loss(text: &str) -> Result<PerReceiver<u8>, String> {
    PerReceiver::parse(text, loopcast_tools::e2e_bench::parse_loss_percent)
}

/// Receivers loopcast (the report's first result) left without a verified copy.
fn loopcast_unverified(report: &serde_json::Value) -> usize {
    report["results"][0]["receivers"]
        .as_array()
        .map_or(0, |r| r.iter().filter(|e| e["verified"] != true).count())
}

/// Seconds in a report line, "-" where there are none (not finished).
fn seconds_text(v: &serde_json::Value) -> String {
    v.as_f64().map_or("-".to_owned(), |s| format!("{s:.2} s"))
}

/// The e2e report for a person: one line per tool, then one per receiver.
fn print_e2e(report: &serde_json::Value) {
    println!(
        "e2e: {} receiver(s), {} bytes, MTU {}, loopcast rate {}; disk ceiling {:.2} s to write and fsync one copy",
        report["receiver_count"], report["bytes"], report["mtu"], report["rate"].as_str().unwrap_or("?"),
        report["disk_write_fsync_seconds_per_copy"].as_f64().unwrap_or(0.0)
    );
    for r in report["results"].as_array().into_iter().flatten() {
        let tool = match r["mode"].as_str() {
            Some(mode) => format!("{} {mode}", r["tool"].as_str().unwrap_or("?")),
            None => r["tool"].as_str().unwrap_or("?").to_owned(),
        };
        if let Some(error) = r.get("error") {
            println!("  {tool:<14} {}", error.as_str().unwrap_or("?"));
            continue;
        }
        // The target for bytes sent, where the server's tier count is known (loopcast).
        let sent_target = match (
            r["tiers_opened"].as_u64(),
            r["sent_within_target"].as_bool(),
        ) {
            (Some(tiers), Some(met)) => format!(
                " (target <= 1.2 x {tiers} tier{}: {})",
                if tiers == 1 { "" } else { "s" },
                if met { "met" } else { "missed" }
            ),
            _ => String::new(),
        };
        println!(
            "  {tool:<14} {:>7.2} s {:>13}  sender {:.2} CPU s/GB  receiver {:.2} CPU s/GB  server sent {:.2} x the file{sent_target}  verified {}  ({})",
            r["seconds"].as_f64().unwrap_or(0.0),
            match r["gbps"].as_f64() {
                Some(gbps) if gbps > 0.0 => loopcast_tools::format_rate((gbps * 1e9) as u64),
                _ => "-".to_owned(),
            },
            r["sender_cpu_s_per_gb"].as_f64().unwrap_or(0.0), r["receiver_cpu_s_per_gb"].as_f64().unwrap_or(0.0),
            r["server_sent_over_file_bytes"].as_f64().unwrap_or(0.0), r["verified"], r["note"].as_str().unwrap_or(""));
        for receiver in r["receivers"].as_array().into_iter().flatten() {
            println!("{}", e2e_receiver_line(receiver));
        }
        if let Some(slowdown) = r["others_slowdown"].as_f64() {
            println!(
                "    the receivers without loss: last done at {} with the lossy one(s), {} without: {slowdown:.3} x (target <= 1.1: {}; worst single receiver {})",
                seconds_text(&r["others_seconds"]),
                seconds_text(&r["others_seconds_without_lossy"]),
                if slowdown <= 1.1 { "met" } else { "missed" },
                r["others_slowdown_worst_receiver"].as_f64().map_or("-".to_owned(), |w| format!("{w:.3} x")),
            );
        }
    }
}

/// One receiver's line of the e2e report. A count the tool does not report (UFTP's
/// duplicates, udpcast's duplicates and NAKs: null in the JSON) reads "n/a", not "null".
fn e2e_receiver_line(receiver: &serde_json::Value) -> String {
    let count = |v: &serde_json::Value| v.as_u64().map_or("n/a".to_owned(), |n| n.to_string());
    let link = receiver["link_rate_bits_per_s"].as_u64().unwrap_or(0);
    let link = match (link, receiver["link_loss_percent"].as_u64().unwrap_or(0)) {
        (0, 0) => "unlimited".to_owned(),
        (0, loss) => format!("unlimited, {loss} % loss"),
        (rate, 0) => loopcast_tools::format_rate(rate),
        (rate, loss) => format!("{}, {loss} % loss", loopcast_tools::format_rate(rate)),
    };
    format!(
        "    r{} link {:>24}  tier {:<8} {:>9}  goodput {:>8.1} Mbit/s{}  target {} ({})  duplicates {}  NAKs {}  verified {}",
        receiver["host"],
        link,
        // Counted from 1 here, as `loopcast get` and `loopcastctl` count.
        match (receiver["tier"].as_u64(), receiver["tiers"].as_u64()) {
            (Some(tier), Some(tiers)) => format!("{}/{tiers}", tier + 1),
            (Some(tier), None) => (tier + 1).to_string(),
            _ => "-".to_owned(),
        },
        seconds_text(&receiver["seconds"]),
        receiver["goodput_bits_per_s"].as_f64().unwrap_or(0.0) / 1e6,
        receiver["goodput_over_link_rate"].as_f64().map_or(String::new(), |g| format!(" ({g:.2} of link)")),
        seconds_text(&receiver["target_seconds"]),
        match receiver["within_target"].as_bool() { Some(true) => "met", Some(false) => "missed", None => "-" },
        count(&receiver["duplicates"]),
        count(&receiver["naks_sent"]),
        receiver["verified"],
    )
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

/// Destination and sending socket: `--dest` (multicast via `--multicast-interface`), or a
/// loopback sink that is never read.
fn endpoints(args: &SendArgs) -> Result<(Option<UdpSocket>, SockAddr, UdpSocket), String> {
    match args.dest {
        Some(dest) => {
            let socket =
                loopcast_dataplane::socket::bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
                    .map_err(|e| e.to_string())?;
            if let (std::net::IpAddr::V4(group), Some(interface)) =
                (dest.ip(), args.multicast_interface)
            {
                if group.is_multicast() {
                    loopcast_dataplane::socket::set_multicast_sender(&socket, interface, 1)
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok((None, SockAddr::from(dest), socket))
        }
        None => {
            let (sink, destination) = sink()?;
            let socket =
                loopcast_dataplane::socket::bind_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                    .map_err(|e| e.to_string())?;
            Ok((Some(sink), destination, socket))
        }
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

/// The raw sendmmsg+GSO blaster: over one cache-hot buffer (`region` None), or over the same
/// bytes a real sender reads (`region`: the mapped archive's datagrams).
fn run_ceiling(args: &SendArgs, region: Option<&[u8]>) -> Result<SendMeasure, String> {
    let (_sink, destination, sender) = endpoints(args)?;
    let size = usize::from(datagram_size(args));
    let duration = Duration::from_secs_f64(args.seconds);
    let what = match region {
        None => "ceiling: raw sendmmsg+GSO blaster",
        Some(_) => "ceiling over the archive's bytes: raw sendmmsg+GSO",
    };
    loopcast_tools::phase(format_args!("{what} for {} s", args.seconds));
    let cpu_before = cpu_time();
    let report = match region {
        None => blast(&sender, &destination, size, duration, u64::MAX),
        Some(region) => loopcast_dataplane::ceiling::blast_over(
            &sender,
            &destination,
            region,
            size,
            duration,
            u64::MAX,
        ),
    }
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
    loopcast_tools::phase(format_args!("packing a {} byte archive", args.size));
    pack(&input, &archive_path, &options, Overwrite::Replace, &|_| {})
        .map_err(|e| e.to_string())?;
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

    let ceiling = run_ceiling(args, None)?;
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
    let (_sink, destination, socket) = endpoints(args)?;
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
            repair_share_percent: 100,
        },
        now(),
    );
    loopcast_tools::phase(format_args!(
        "send: one channel, {} for {} s",
        sender.path().name(),
        args.seconds
    ));
    let cpu_before = cpu_time();
    let started = Instant::now();
    let budget = Duration::from_secs_f64(args.seconds);
    let mut datagrams = 0u64;
    // How long each batch (one `send`: up to MESSAGES_MAX GSO messages) takes, in ns.
    let mut batch_latency =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    while started.elapsed() < budget {
        let transmit = carousel.poll_transmit(now()).ok_or("carousel stalled")?;
        let start = loopcast_archive::format::datagram_offset(&info, transmit.first) as usize;
        let region = &map.bytes()[start..start + transmit.count as usize * size];
        let batch_started = Instant::now();
        datagrams += sender
            .send(&socket, &destination, region, size)
            .map_err(|e| e.to_string())? as u64;
        let _ = batch_latency.record(batch_started.elapsed().as_nanos().max(1) as u64);
    }
    let ours = SendMeasure {
        bytes: datagrams * size as u64,
        datagrams,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: (cpu_time() - cpu_before).as_secs_f64(),
        datagram_size: size,
    };
    let ratio = ours.gbps() / ceiling.gbps();
    let datagrams_region = &map.bytes()[loopcast_archive::format::DATAGRAMS_OFFSET as usize..];
    let same_bytes = run_ceiling(args, Some(datagrams_region))?;
    let ratio_same_bytes = ours.gbps() / same_bytes.gbps();
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
        json["ceiling_same_bytes"] = same_bytes.to_json();
        json["batch_latency_us"] = serde_json::json!({
            "batches": batch_latency.len(),
            "p50": batch_latency.value_at_quantile(0.5) as f64 / 1000.0,
            "p99": batch_latency.value_at_quantile(0.99) as f64 / 1000.0,
            "max": batch_latency.max() as f64 / 1000.0,
        });
        json["ratio_to_same_bytes_ceiling"] = serde_json::json!(ratio_same_bytes);
        json["destination"] = serde_json::json!(match args.dest {
            Some(dest) => dest.to_string(),
            None => "unicast loopback sink".to_owned(),
        });
        println!("{json}");
    } else {
        println!("{}", ceiling.describe("ceiling"));
        println!("{}", ours.describe("loopcast"));
        println!(
            "ratio      {ratio:.3} of ceiling (send path {}: {path_note})",
            final_path.name()
        );
        println!(
            "batches    {} of up to {} datagrams: latency p50 {:.1} us, p99 {:.1} us, max {:.1} us",
            batch_latency.len(),
            carousel.config().batch_datagrams_max,
            batch_latency.value_at_quantile(0.5) as f64 / 1000.0,
            batch_latency.value_at_quantile(0.99) as f64 / 1000.0,
            batch_latency.max() as f64 / 1000.0
        );
        println!("{}", same_bytes.describe("same bytes"));
        println!(
            "ratio      {ratio_same_bytes:.3} of the ceiling over the archive's own bytes (raw sendmmsg+GSO walking the same map)"
        );
    }
    Ok(())
}

/// Receives multicast on `group` for `seconds` and prints `{"datagrams":..,"bytes":..}`.
fn run_sink(group: SocketAddr, interface: Ipv4Addr, seconds: f64) -> Result<(), String> {
    let std::net::IpAddr::V4(group_ip) = group.ip() else {
        return Err("sink needs an IPv4 multicast group".into());
    };
    let socket =
        loopcast_dataplane::socket::bind_multicast_receiver(group_ip, group.port(), interface)
            .map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut inbox = loopcast_dataplane::recv::BatchReceiver::new(64, 9216);
    let (mut datagrams, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        let count = inbox.receive(&socket).map_err(|e| e.to_string())?;
        for index in 0..count {
            datagrams += 1;
            bytes += inbox.datagram(index).bytes.len() as u64;
        }
    }
    println!(
        "{}",
        serde_json::json!({"datagrams": datagrams, "bytes": bytes})
    );
    Ok(())
}

/// Builds sender and receiver namespaces on a bridge (the topology of `loopcast_tools::topology`),
/// runs this scenario inside the sender's, multicast to a group the receiver joins at the
/// bridge, and removes everything afterwards.
fn run_in_netns(scenario: &str, args: &SendArgs) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("--netns needs root (ip netns); run as root or drop --netns".into());
    }
    let tag = format!("lcb{}", std::process::id() % 100_000);
    let mtu: u32 = if args.jumbo { 9000 } else { 1500 };
    let topology = loopcast_tools::topology::BridgeTopology::build(
        &tag,
        &[("a", "10.79.0.1"), ("b", "10.79.0.2")],
        mtu,
    )?;
    let (sender_ns, receiver_ns) = (topology.hosts[0].0.clone(), topology.hosts[1].0.clone());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // A receiver that joins the group, so datagrams are really delivered (segmented, queued).
    let sink_seconds = args.seconds * 2.0 + 8.0;
    let sink = std::process::Command::new("ip")
        .args(["netns", "exec", &receiver_ns])
        .arg(&exe)
        .args([
            "sink",
            "--group",
            "239.77.9.1:7009",
            "--interface",
            "10.79.0.2",
            "--seconds",
            &sink_seconds.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the sink: {e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    let mut command = std::process::Command::new("ip");
    command
        .args(["netns", "exec", &sender_ns])
        .arg(exe)
        .arg(scenario)
        .args([
            "--dest",
            "239.77.9.1:7009",
            "--multicast-interface",
            "10.79.0.1",
        ])
        .args([
            "--seconds",
            &args.seconds.to_string(),
            "--size",
            &format!("{}", args.size),
        ]);
    if args.jumbo {
        command.arg("--jumbo");
    }
    if let Some(path) = &args.path {
        command.args(["--path", path]);
    }
    if let Some(cores) = args.cores {
        command.args(["--cores", &cores.to_string()]);
    }
    if let Some(tiers) = &args.tiers {
        command.args(["--tiers", tiers]);
    }
    if let Some(files) = args.files {
        command.args(["--files", &files.to_string()]);
    }
    command.args(["--pacing-window-ms", &args.pacing_window_ms.to_string()]);
    if args.json {
        command.arg("--json");
    }
    let output = command.output().map_err(|e| e.to_string())?;
    let sink_output = sink.wait_with_output().map_err(|e| e.to_string())?;
    drop(topology);
    let received: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&sink_output.stdout).trim())
            .unwrap_or(serde_json::Value::Null);
    if !output.status.success() {
        return Err(format!(
            "bench inside the namespace failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    if args.json {
        let mut json: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
        json["destination"] = serde_json::json!(format!(
            "multicast 239.77.9.1 over a veth bridge between namespaces, MTU {mtu}"
        ));
        json["receiver"] = received;
        println!("{json}");
    } else {
        println!(
            "multicast over a veth bridge between namespaces (MTU {mtu}), one joined receiver"
        );
        print!("{text}");
        println!(
            "receiver   got {} datagrams ({} bytes) over both runs",
            received["datagrams"], received["bytes"]
        );
    }
    Ok(())
}

/// Anonymous resident memory of this process (excludes file-backed page cache), in bytes.
fn rss_anon_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The sender pool: `files` archives x `tiers` rates on `cores` pinned threads, against the
/// single-core ceiling measured in the same run; pacing error per tier from 100 ms windows.
fn run_pool(args: &SendArgs) -> Result<(), String> {
    use loopcast_dataplane::pool::{
        ChannelId, ChannelSpec, ChannelStats, LoopPiece, PoolConfig, SenderPool,
    };
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let cores = args.cores.unwrap_or(1).max(1);
    let files = args.files.unwrap_or(1).max(1);
    let tiers: Vec<u64> = match &args.tiers {
        Some(list) => list
            .split(',')
            .map(loopcast_tools::parse_rate)
            .collect::<Result<_, _>>()?,
        None => vec![0],
    };
    let dir = std::env::temp_dir().join(format!("loopcast-bench-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _cleanup = scopeguard(dir.clone());
    let file_size = (args.size / files as u64).max(1 << 20);
    let input = dir.join("file.bin");
    write_random(&input, file_size)?;
    let options = PackOptions {
        name: "file.bin".into(),
        frame_raw_size: 1 << 20,
        datagram_size: datagram_size(args),
        compression_level: 0,
        master_key: None,
        watermark: None,
    };
    let first = dir.join("file-0.lca");
    pack(&input, &first, &options, Overwrite::Replace, &|_| {}).map_err(|e| e.to_string())?;
    let mut archives = Vec::new();
    for index in 0..files {
        let path = dir.join(format!("file-{index}.lca"));
        if index > 0 {
            std::fs::copy(&first, &path).map_err(|e| e.to_string())?;
        }
        let archive = ArchiveFile::open(&path).map_err(|e| e.to_string())?;
        let map = MappedArchive::map(archive.file(), archive.path()).map_err(|e| e.to_string())?;
        let mut touch = 0u64;
        for page in map.bytes().chunks(4096) {
            touch = touch.wrapping_add(u64::from(page[0]));
        }
        std::hint::black_box(touch);
        archives.push((archive.info().clone(), Arc::new(map)));
    }
    let ceiling = run_ceiling(args, None)?;
    let (path, reason) = match &args.path {
        Some(name) => (
            SendPath::from_name(name).ok_or("unknown --path")?,
            "chosen with --path".to_owned(),
        ),
        None => probe_send_path(),
    };
    let (_sink, destination, _) = endpoints(args)?;
    let destination = destination
        .as_socket()
        .ok_or("destination is not an IP address")?;
    let bind: SocketAddr = if args.dest.is_some() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::LOCALHOST, 0).into()
    };

    let mut pool = SenderPool::start(&PoolConfig {
        threads: cores,
        send_path: path,
        bind,
        multicast_interface: args.multicast_interface,
        multicast_ttl: 1,
        pin_threads: true,
    })
    .map_err(|e| e.to_string())?;
    let mut channels: Vec<(usize, Arc<ChannelStats>)> = Vec::new();
    let mut rss_after_first = 0u64;
    for (tier_index, &rate) in tiers.iter().enumerate() {
        for (file_index, (info, map)) in archives.iter().enumerate() {
            let stats = Arc::new(ChannelStats::default());
            pool.add_channel(ChannelSpec {
                id: ChannelId((tier_index * files + file_index) as u64),
                pieces: vec![LoopPiece {
                    archive: map.clone(),
                    offset: loopcast_archive::format::DATAGRAMS_OFFSET as usize,
                    count: info.loop_len,
                }],
                datagram_size: info.datagram_size,
                rate_bits_per_s: rate,
                destinations: vec![destination],
                repair_share_percent: loopcast_proto::carousel::REPAIR_SHARE_PERCENT_DEFAULT,
                start_serial: 0,
                stats: stats.clone(),
            })
            .map_err(|e| format!("cannot add channel: {e:?}"))?;
            channels.push((tier_index, stats));
        }
        if tier_index == 0 {
            std::thread::sleep(Duration::from_millis(50));
            rss_after_first = rss_anon_bytes();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_after_all = rss_anon_bytes();
    let rss_per_extra_tier = if tiers.len() > 1 {
        Some(
            rss_after_all.saturating_sub(rss_after_first) / (tiers.len() as u64 - 1) / files as u64,
        )
    } else {
        None
    };
    // Pacing error per paced tier, in per-mille of the target, over --pacing-window-ms windows.
    let mut histograms: Vec<hdrhistogram::Histogram<u64>> = tiers
        .iter()
        .map(|_| hdrhistogram::Histogram::new(3).expect("valid sigfig"))
        .collect();
    let thread_bytes = |pool: &SenderPool| -> u64 {
        pool.thread_stats()
            .iter()
            .map(|t| t.bytes.load(Ordering::Relaxed))
            .sum()
    };
    loopcast_tools::phase(format_args!(
        "send: {} channel(s) on {cores} thread(s) for {} s",
        channels.len(),
        args.seconds
    ));
    // Lateness and pass length over the measurement only, not the start-up.
    for thread in pool.thread_stats() {
        thread.late_passes.store(0, Ordering::Relaxed);
        thread.max_lateness_ns.store(0, Ordering::Relaxed);
        thread.max_pass_ns.store(0, Ordering::Relaxed);
    }
    let cpu_before = cpu_time();
    let started = Instant::now();
    let bytes_before = thread_bytes(&pool);
    let window = Duration::from_millis(args.pacing_window_ms.max(1));
    let mut previous: Vec<u64> = channels
        .iter()
        .map(|(_, s)| s.bytes.load(Ordering::Relaxed))
        .collect();
    // The sampler shares two cores with the sender, so it can itself be descheduled: each
    // snapshot of the counters is bracketed by two clock reads, stamped at their midpoint, and
    // a window whose snapshot took longer than 1 ms (the sampler, not the sender, was late)
    // is not recorded; the count of such windows is reported.
    let snapshot = |into: &mut Vec<u64>| -> (Instant, bool) {
        let before = Instant::now();
        into.clear();
        into.extend(
            channels
                .iter()
                .map(|(_, s)| s.bytes.load(Ordering::Relaxed)),
        );
        let after = Instant::now();
        let taken = after - before;
        (before + taken / 2, taken <= Duration::from_millis(1))
    };
    let mut current: Vec<u64> = Vec::with_capacity(channels.len());
    let (mut window_start, _) = snapshot(&mut previous);
    let mut windows_skipped = 0u64;
    while started.elapsed().as_secs_f64() < args.seconds {
        std::thread::sleep(window);
        let (stamp, clean) = snapshot(&mut current);
        let elapsed = (stamp - window_start).as_secs_f64();
        window_start = stamp;
        if !clean {
            windows_skipped += 1;
            std::mem::swap(&mut previous, &mut current);
            continue;
        }
        for (index, (tier, _)) in channels.iter().enumerate() {
            let rate = tiers[*tier];
            if rate > 0 {
                let achieved = (current[index] - previous[index]) as f64 * 8.0 / elapsed;
                let error_per_mille = ((achieved / rate as f64 - 1.0).abs() * 1000.0) as u64;
                let _ = histograms[*tier].record(error_per_mille.min(1_000_000));
            }
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = thread_bytes(&pool) - bytes_before;
    let cpu = (cpu_time() - cpu_before).as_secs_f64();
    let final_path =
        SendPath::ALL[pool.thread_stats()[0].send_path.load(Ordering::Relaxed) as usize];
    let pool_stats: Vec<(u64, u64, u64)> = pool
        .thread_stats()
        .iter()
        .map(|t| {
            (
                t.late_passes.load(Ordering::Relaxed),
                t.max_lateness_ns.load(Ordering::Relaxed),
                t.max_pass_ns.load(Ordering::Relaxed),
            )
        })
        .collect();
    drop(pool);
    let size = usize::from(datagram_size(args));
    let ours = SendMeasure {
        bytes,
        datagrams: bytes / size as u64,
        seconds,
        cpu_seconds: cpu,
        datagram_size: size,
    };
    let ratio = ours.gbps() / ceiling.gbps();
    let tier_reports: Vec<serde_json::Value> = tiers
        .iter()
        .enumerate()
        .map(|(i, &rate)| {
            let h = &histograms[i];
            serde_json::json!({
                "rate_bits_per_s": rate,
                "channels": files,
                "pacing_error_p50": if rate > 0 { Some(h.value_at_quantile(0.5) as f64 / 1000.0) } else { None },
                "pacing_error_p99": if rate > 0 { Some(h.value_at_quantile(0.99) as f64 / 1000.0) } else { None },
            })
        })
        .collect();
    if args.json {
        let mut json = ours.to_json();
        json["ratio_to_ceiling"] = serde_json::json!(ratio);
        json["send_path"] = serde_json::json!(final_path.name());
        json["send_path_reason"] = serde_json::json!(reason);
        json["threads"] = serde_json::json!(cores);
        json["channels"] = serde_json::json!(channels.len());
        json["tiers"] = serde_json::json!(tier_reports);
        json["rss_anon_bytes_per_extra_tier"] = serde_json::json!(rss_per_extra_tier);
        json["pacing_windows_skipped"] = serde_json::json!(windows_skipped);
        json["pacing_window_ms"] = serde_json::json!(args.pacing_window_ms);
        json["threads_late"] = serde_json::json!(pool_stats
            .iter()
            .map(|(late, worst, pass)| serde_json::json!({"late_passes": late, "max_lateness_ms": *worst as f64 / 1e6, "max_pass_ms": *pass as f64 / 1e6}))
            .collect::<Vec<_>>());
        json["ceiling"] = ceiling.to_json();
        println!("{json}");
    } else {
        println!("{}", ceiling.describe("ceiling"));
        println!("{}", ours.describe("pool"));
        println!("ratio      {ratio:.3} of the one-core ceiling; {cores} thread(s), {} channel(s), send path {}", channels.len(), final_path.name());
        for report in &tier_reports {
            println!(
                "tier {:>14}: {} channel(s), pacing error p50 {} p99 {} ({} ms windows)",
                loopcast_tools::format_rate(report["rate_bits_per_s"].as_u64().unwrap_or(0)),
                report["channels"],
                report["pacing_error_p50"],
                report["pacing_error_p99"],
                args.pacing_window_ms
            );
        }
        for (index, thread) in pool_stats.iter().enumerate() {
            println!(
                "thread {index}   {} pass(es) more than 1 ms late, worst {:.2} ms; longest pass {:.2} ms",
                thread.0,
                thread.1 as f64 / 1e6,
                thread.2 as f64 / 1e6
            );
        }
        if windows_skipped > 0 {
            println!("pacing     {windows_skipped} window(s) not counted: the sampler itself was descheduled mid-snapshot");
        }
        if let Some(per_tier) = rss_per_extra_tier {
            println!("memory     {per_tier} bytes of anonymous RSS per extra tier of a file");
        }
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

/// Prints a session benchmark's result: the JSON object, or its scenario and ratios.
fn print_session(result: Result<serde_json::Value, String>, json: bool) -> Result<(), String> {
    let report = result?;
    if json {
        println!("{report}");
    } else {
        println!(
            "{}: ratio median {:.3}; {report}",
            report["scenario"],
            report["ratio_median"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
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
        let summary = pack(&input, &output, &options, Overwrite::Replace, &|_| {})
            .map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn an_e2e_run_with_an_unverified_loopcast_receiver_counts_as_failed() {
        let report = |verified: [bool; 2]| {
            serde_json::json!({"results": [
                {"tool": "loopcast", "receivers": [{"verified": verified[0]}, {"verified": verified[1]}]},
                {"tool": "uftp", "receivers": [{"verified": false}]},
            ]})
        };
        assert_eq!(
            super::loopcast_unverified(&report([true, true])),
            0,
            "a peer's miss is its own"
        );
        assert_eq!(super::loopcast_unverified(&report([true, false])), 1);
    }

    use super::e2e_receiver_line;

    /// `e2e --help` describes the JSON fields a new user asked about (it named none of them).
    #[test]
    fn e2e_help_describes_gbps_unlimited_alone_seconds_and_client_seconds() {
        use clap::CommandFactory;
        let mut command = super::Cli::command();
        let help = command
            .find_subcommand_mut("e2e")
            .expect("an e2e subcommand")
            .render_long_help()
            .to_string();
        for field in ["`gbps`", "`unlimited_alone_seconds`", "`client_seconds`"] {
            assert!(help.contains(field), "{field} missing: {help}");
        }
    }

    /// UFTP reports no duplicates (its entry has none: null in the JSON): the text said
    /// "duplicates null"; it says "n/a", and a count a tool does report stays a number.
    #[test]
    fn a_count_the_tool_does_not_report_reads_n_a_not_null() {
        let uftp = serde_json::json!({
            "host": 1, "link_rate_bits_per_s": 0, "seconds": 2.5, "verified": true,
            "tier": null, "tiers": null, "goodput_bits_per_s": 3.2e9,
            "goodput_over_link_rate": null, "target_seconds": null, "within_target": null,
            "naks_sent": 104,
        });
        let line = e2e_receiver_line(&uftp);
        assert!(
            line.contains("duplicates n/a  NAKs 104  verified true"),
            "{line}"
        );
        assert!(!line.contains("null"), "{line}");
        let mut loopcast = uftp;
        loopcast["duplicates"] = serde_json::json!(7);
        let line = e2e_receiver_line(&loopcast);
        assert!(line.contains("duplicates 7  NAKs 104"), "{line}");
    }
}
