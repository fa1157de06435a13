//! `loopcastctl`: talks to a running loopcastd over its admin socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loopcast_tools::{default_admin_socket, format_rate};

#[derive(Parser)]
#[command(
    name = "loopcastctl",
    version,
    about = "Admin tool for a running loopcastd (owner-only Unix socket)"
)]
struct Cli {
    /// The daemon's admin socket. Default: $XDG_RUNTIME_DIR/loopcast/loopcastd.sock, else
    /// /run/loopcast/loopcastd.sock (root) or /tmp/loopcast-<uid>/loopcastd.sock. A socket or
    /// directory owned by another user (not root) is refused.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Channels, sessions, send path and counters.
    Status {
        /// Print the daemon's JSON answer as is.
        #[arg(long)]
        json: bool,
    },
    /// Clients: file, speed tier, throughput, loss and round trip as their reports say, progress.
    Clients {
        /// A JSON array, one object per client.
        #[arg(long)]
        json: bool,
    },
    /// Channels: each file's speed tiers with their rates, the tier policy, clients and traffic.
    Channels {
        /// A JSON array, one object per channel (tier).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.unwrap_or_else(default_admin_socket);
    let answer = match loopcast_admin::request(&socket, "status") {
        Ok(answer) => answer,
        Err(error) => {
            eprintln!("loopcastctl: error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(error) = answer.get("error").and_then(|e| e.as_str()) {
        eprintln!("loopcastctl: daemon said: {error}");
        return ExitCode::FAILURE;
    }
    match cli.command {
        Command::Status { json: true } => println!("{answer}"),
        Command::Status { json: false } => print_status(&answer),
        Command::Clients { json: true } => println!("{}", answer["sessions"]),
        Command::Clients { json: false } => print_clients(&answer),
        Command::Channels { json: true } => println!("{}", answer["channels"]),
        Command::Channels { json: false } => print_channels(&answer),
    }
    ExitCode::SUCCESS
}

fn text(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

fn rate_of(v: &serde_json::Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), format_rate)
}

fn tier_of(v: &serde_json::Value) -> String {
    match (v["tier"].as_u64(), v["tiers"].as_u64()) {
        (Some(tier), Some(tiers)) => format!("{}/{}", tier + 1, tiers),
        _ => "-".to_owned(),
    }
}

/// One row per client: who, which file, which tier, what its reports say.
fn print_clients(answer: &serde_json::Value) {
    let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<22} {:<20} {:<9} {:>5} {:>14} {:>14} {:>7} {:>9} {:>7}",
        "CLIENT", "FILE", "TRANSPORT", "TIER", "TIER RATE", "THROUGHPUT", "LOSS", "RTT", "HELD"
    );
    for s in &sessions {
        let held = match (s["held"].as_u64(), answer_loop_len(answer, s)) {
            (Some(held), Some(total)) if total > 0 => {
                format!("{:.0}%", held as f64 * 100.0 / total as f64)
            }
            _ => "-".to_owned(),
        };
        let transport = if s["validated"].as_bool().unwrap_or(false) {
            text(&s["transport"])
        } else {
            "pending".to_owned()
        };
        println!(
            "{:<22} {:<20} {:<9} {:>5} {:>14} {:>14} {:>7} {:>9} {:>7}",
            text(&s["client"]),
            s["file"].as_str().unwrap_or("-"),
            transport,
            tier_of(s),
            rate_of(&s["tier_rate_bits_per_s"]),
            if s["reports"].as_u64().unwrap_or(0) > 0 {
                rate_of(&s["goodput_bits_per_s"])
            } else {
                "-".to_owned()
            },
            s["loss"]
                .as_f64()
                .filter(|_| s["reports"].as_u64().unwrap_or(0) > 0)
                .map_or("-".to_owned(), |l| format!("{:.1}%", l * 100.0)),
            s["rtt_us"]
                .as_u64()
                .map_or("-".to_owned(), |r| format!("{:.2} ms", r as f64 / 1e3)),
            held
        );
    }
    if sessions.is_empty() {
        println!("(no clients)");
    }
}

fn answer_loop_len(answer: &serde_json::Value, session: &serde_json::Value) -> Option<u64> {
    answer["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel"] == session["channel"])?["loop_len"]
        .as_u64()
}

/// One row per channel (a file's tier).
fn print_channels(answer: &serde_json::Value) {
    let mut channels = answer["channels"].as_array().cloned().unwrap_or_default();
    channels.sort_by_key(|c| (text(&c["file"]), c["tier"].as_u64()));
    println!(
        "{:<20} {:>5} {:>14} {:<12} {:<20} {:>7} {:>14} {:>10}",
        "FILE", "TIER", "RATE", "POLICY", "GROUP", "CLIENTS", "SENT", "REPAIRED"
    );
    for c in &channels {
        println!(
            "{:<20} {:>5} {:>14} {:<12} {:<20} {:>7} {:>14} {:>10}",
            text(&c["file"]),
            tier_of(c),
            rate_of(&c["rate_bits_per_s"]),
            text(&c["policy"]),
            c["group"].as_str().unwrap_or("unicast only"),
            c["sessions"],
            format!("{} B", c["bytes_sent"]),
            c["repair_datagrams"]
        );
    }
    if channels.is_empty() {
        println!("(no channels)");
    }
}

fn print_status(answer: &serde_json::Value) {
    // The probe's reason speaks of the path it found; a thread that stepped down since (e.g.
    // zero-copy notifications kept reporting copies) says so by its path.
    let probed = text(&answer["send_path_reason"]);
    let path = text(&answer["send_path"]);
    if probed.starts_with(&format!("{path} ")) {
        println!("send path   {path} ({probed})");
    } else {
        println!("send path   {path} (stepped down at run time; the probe said: {probed})");
    }
    println!("archives    {}", answer["archives"]);
    let channels = answer["channels"].as_array().cloned().unwrap_or_default();
    println!("channels    {}", channels.len());
    for c in &channels {
        println!(
            "  {:<24} tier {:<5} {:<22} {:>14} loop {}/{} mcast {} ucast {} sent {} B repaired {} refused {}",
            text(&c["file"]),
            tier_of(c),
            c["group"].as_str().unwrap_or("unicast only"),
            format_rate(c["rate_bits_per_s"].as_u64().unwrap_or(0)),
            c["next_serial"],
            c["loop_len"],
            c["multicast_sessions"],
            c["unicast_sessions"],
            c["bytes_sent"],
            c["repair_datagrams"],
            c["repairs_refused"]
        );
    }
    let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
    println!("sessions    {}", sessions.len());
    for s in &sessions {
        println!(
            "  {} {:<22} {:<9} {:<11} held {}",
            text(&s["session"]),
            text(&s["client"]),
            text(&s["transport"]),
            if s["validated"].as_bool().unwrap_or(false) {
                "validated"
            } else {
                "unvalidated"
            },
            s["held"]
        );
    }
    println!("counters");
    if let Some(counters) = answer["counters"].as_object() {
        // Four to a line, name then value, in the daemon's order.
        let cells: Vec<String> = counters
            .iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        for row in cells.chunks(4) {
            let row: Vec<String> = row.iter().map(|cell| format!("{cell:<34}")).collect();
            println!("  {}", row.join("").trim_end());
        }
    }
}
