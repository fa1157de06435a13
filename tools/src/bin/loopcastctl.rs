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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.unwrap_or_else(default_admin_socket);
    let Command::Status { json } = cli.command;
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
    if json {
        println!("{answer}");
        return ExitCode::SUCCESS;
    }
    let text = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
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
            "  {:<24} {:<22} {:>14} loop {}/{} mcast {} ucast {} sent {} B repaired {} refused {}",
            text(&c["file"]),
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
    ExitCode::SUCCESS
}
