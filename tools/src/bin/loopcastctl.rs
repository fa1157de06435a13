//! `loopcastctl`: talks to a running loopcastd over its admin socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loopcast_tools::{default_admin_socket, format_rate};

#[derive(Parser)]
#[command(
    name = "loopcastctl",
    version,
    about = "Admin tool for a running loopcastd server or director (owner-only Unix socket)"
)]
struct Cli {
    /// The daemon's admin socket. Default: $XDG_RUNTIME_DIR/loopcast/loopcastd.sock, else
    /// /run/loopcast/loopcastd.sock (root) or /tmp/loopcast-<uid>/loopcastd.sock; for `servers`
    /// and `files`, the director's loopcastd-direct.sock in the same directory (as root, if that
    /// is missing, the packaged unit's /run/loopcast-direct/loopcastd-direct.sock). A socket or
    /// directory owned by another user (not root) is refused. Also spelled --admin-socket, as
    /// loopcastd's option for the same path.
    #[arg(long, global = true, alias = "admin-socket")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Channels, sessions, send path, settings and counters (a server); servers, files and
    /// counters (a director).
    Status {
        /// Print the daemon's JSON answer as is.
        #[arg(long)]
        json: bool,
    },
    /// (server) Clients: file, speed tier, throughput, loss and round trip as their reports say,
    /// progress, and OWN LOSS: the loss the server takes for the client's path's own (random
    /// loss that stayed when its rate dropped, so not congestion: loss up to it does not slow
    /// its tier). LOSS is an average of its recent reports and OWN LOSS a floor learnt over a
    /// longer time, so one can be above the other for a while.
    Clients {
        /// A JSON array, one object per client, each naming this server (its advertised
        /// address in a fleet): the views of a fleet's servers join into one. Units differ from
        /// the table's: `tier` counts from 0 among the file's `tiers` (the table's 1/2 is 0),
        /// `goodput_bits_per_s` is THROUGHPUT (with its `goodput_stddev_bits_per_s`), `loss` a
        /// fraction (0.05 is 5.0%), `held` datagrams (HELD is that share of its `channel`'s
        /// `loop_len`), `rtt_us` microseconds, `noise_loss` OWN LOSS as a
        /// fraction (0.0 where the table shows "-"); throughput and loss mean nothing until
        /// `reports` is above 0 (the table shows "-").
        #[arg(long)]
        json: bool,
    },
    /// (server) Channels: each file's speed tiers with their rates, the tier policy, clients and
    /// traffic.
    Channels {
        /// A JSON array, one object per channel (tier): `tier` counts from 0 among the file's
        /// `tiers` (the table's 1/2 is 0), `rate_bits_per_s`, `bytes_sent` (SENT),
        /// `repair_datagrams` (REPAIRED), `sessions` (CLIENTS) with its multicast and unicast
        /// parts, `next_serial` where the loop is of `loop_len`.
        #[arg(long)]
        json: bool,
    },
    /// A table refreshed every --interval seconds until interrupted: clients and channels (a
    /// server), or servers (a director).
    Watch {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// (server) Send every client to the fleet's other servers and take no new ones from the
    /// directors (maintenance); clients continue where they were. Undo with `undrain`.
    Drain,
    /// (server) Take new clients from the directors again after `drain`.
    Undrain,
    /// (server) Stop one channel (a file's tier, by the CHANNEL id `loopcastctl channels`
    /// shows): its clients are told to ask again (as on a drain) and continue from what they
    /// hold, here on a new channel or, in a fleet, on another server that has the file.
    StopChannel {
        /// The channel's id (CHANNEL in `loopcastctl channels`).
        channel: u64,
        /// Print the daemon's JSON answer as is.
        #[arg(long)]
        json: bool,
    },
    /// (director) The fleet's servers: state, location, load, files, when last heard.
    Servers {
        /// A JSON array, one object per server.
        #[arg(long)]
        json: bool,
    },
    /// (director) The fleet's files: name, root, size and the live servers that hold each.
    Files {
        /// A JSON array, one object per file version (name and root).
        #[arg(long)]
        json: bool,
    },
}

/// Where the packaged director unit (packaging/systemd/loopcastd-direct.service) puts its socket.
const PACKAGED_DIRECTOR_SOCKET: &str = "/run/loopcast-direct/loopcastd-direct.sock";

fn main() -> ExitCode {
    loopcast_tools::exit_cleanly_on_stdout_errors(run)
}

fn run() -> ExitCode {
    let cli: Cli = loopcast_tools::parse_command_line(std::env::args_os());
    // `servers` and `files` are a director's view: by default ask where `loopcastd direct`
    // puts its socket by default.
    // The packaged unit (systemd, a user of its own) has a runtime directory of its own:
    // /run/loopcast-direct. Whichever exists is asked.
    let socket = cli.socket.clone().unwrap_or_else(|| match cli.command {
        Command::Servers { .. } | Command::Files { .. } => {
            let default = default_admin_socket().with_file_name("loopcastd-direct.sock");
            let packaged = std::path::PathBuf::from(PACKAGED_DIRECTOR_SOCKET);
            if !default.exists()
                && loopcast_admin::location::effective_uid() == 0
                && packaged.exists()
            {
                packaged
            } else {
                default
            }
        }
        _ => default_admin_socket(),
    });
    if let Command::Drain | Command::Undrain = cli.command {
        let action = if matches!(cli.command, Command::Drain) {
            "drain"
        } else {
            "undrain"
        };
        return match loopcast_admin::request_with(&socket, action, None) {
            Ok(answer) if answer["accepted"] == action => {
                if action == "drain" {
                    println!(
                        "drain: {} client(s) told to continue on the fleet's other servers; the directors send no new ones here ({})",
                        answer["clients_told"],
                        socket.display()
                    );
                } else {
                    println!(
                        "undrain: the directors send new clients here again ({})",
                        socket.display()
                    );
                }
                ExitCode::SUCCESS
            }
            Ok(answer) => {
                eprintln!(
                    "loopcastctl: daemon said: {}",
                    answer["error"].as_str().unwrap_or("no answer to that")
                );
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("loopcastctl: error: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::StopChannel { channel, json } = cli.command {
        return stop_channel(&socket, channel, json);
    }
    if let Command::Watch { interval, count } = cli.command {
        let interval = std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
        let mut shown = 0u64;
        loop {
            let answer = match loopcast_admin::request(&socket, "status") {
                Ok(answer) => answer,
                Err(error) => {
                    eprintln!("loopcastctl: error: {error}");
                    return ExitCode::FAILURE;
                }
            };
            // Clear the screen and home the cursor (a terminal); plain separators otherwise.
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                print!("\x1b[2J\x1b[H");
            } else if shown > 0 {
                println!();
            }
            println!(
                "{}  (every {:.1} s)",
                socket.display(),
                interval.as_secs_f64()
            );
            if answer["role"] == "director" {
                print_servers(&answer);
            } else {
                print_clients(&answer);
                println!();
                print_channels(&answer);
            }
            shown += 1;
            if count != 0 && shown >= count {
                return ExitCode::SUCCESS;
            }
            std::thread::sleep(interval);
        }
    }
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
    let director = answer["role"] == "director";
    match (&cli.command, director) {
        (Command::Servers { .. } | Command::Files { .. }, false) => {
            eprintln!(
                "loopcastctl: {} is a server's socket; servers and files are a director's view (loopcastd direct, default socket loopcastd-direct.sock)",
                socket.display()
            );
            return ExitCode::FAILURE;
        }
        (Command::Clients { .. } | Command::Channels { .. }, true) => {
            eprintln!(
                "loopcastctl: {} is a director's socket; clients and channels are a server's view",
                socket.display()
            );
            return ExitCode::FAILURE;
        }
        _ => {}
    }
    match cli.command {
        Command::Status { json: true } => println!("{answer}"),
        Command::Status { json: false } if director => print_director(&answer),
        Command::Status { json: false } => print_status(&answer),
        Command::Servers { json: true } => println!("{}", answer["servers"]),
        Command::Servers { json: false } => print_servers(&answer),
        Command::Files { json: true } => {
            println!("{}", serde_json::Value::from(fleet_files(&answer)))
        }
        Command::Files { json: false } => print_files(&answer),
        Command::Drain | Command::Undrain | Command::Watch { .. } | Command::StopChannel { .. } => {
            unreachable!("answered above")
        }
        Command::Clients { json: true } => println!("{}", answer["sessions"]),
        Command::Clients { json: false } => print_clients(&answer),
        Command::Channels { json: true } => println!("{}", answer["channels"]),
        Command::Channels { json: false } => print_channels(&answer),
    }
    ExitCode::SUCCESS
}

/// `stop-channel CHANNEL`: the server stops it and says how many clients it told.
fn stop_channel(socket: &std::path::Path, channel: u64, json: bool) -> ExitCode {
    let answer =
        match loopcast_admin::request_with(socket, "stop-channel", Some(&channel.to_string())) {
            Ok(answer) => answer,
            Err(error) => {
                eprintln!("loopcastctl: error: {error}");
                return ExitCode::FAILURE;
            }
        };
    if json {
        println!("{answer}");
    }
    if let Some(error) = answer.get("error").and_then(|e| e.as_str()) {
        if !json {
            eprintln!("loopcastctl: daemon said: {error}");
        }
        return ExitCode::FAILURE;
    }
    if !json {
        println!(
            "stopped channel {channel} ({} tier {}): {} client(s) told to ask again",
            text(&answer["file"]),
            tier_of(&answer),
            answer["clients_told"]
        );
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
    if v["own_channel"].as_bool() == Some(true) {
        // A unicast client's channel of its own (its rate follows it alone).
        return "own".to_owned();
    }
    match (v["tier"].as_u64(), v["tiers"].as_u64()) {
        (Some(tier), Some(tiers)) => format!("{}/{}", tier + 1, tiers),
        _ => "-".to_owned(),
    }
}

/// One row per client: who, which file, which tier, what its reports say.
fn print_clients(answer: &serde_json::Value) {
    let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<22} {:<20} {:>7} {:<9} {:>5} {:>14} {:>14} {:>7} {:>9} {:>7}  OWN LOSS",
        "CLIENT",
        "FILE",
        "CHANNEL",
        "TRANSPORT",
        "TIER",
        "TIER RATE",
        "THROUGHPUT",
        "LOSS",
        "RTT",
        "HELD",
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
            "{:<22} {:<20} {:>7} {:<9} {:>5} {:>14} {:>14} {:>7} {:>9} {:>7}  {}",
            text(&s["client"]),
            s["file"].as_str().unwrap_or("-"),
            text(&s["channel"]),
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
            held,
            // The loss that is its path's own (random, staying at lower rates): not congestion.
            s["noise_loss"]
                .as_f64()
                .filter(|&n| n >= 0.001)
                .map_or("-".to_owned(), |n| format!("{:.1}%", n * 100.0)),
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
        "{:>7} {:<20} {:>5} {:>14} {:<12} {:<20} {:>7} {:>14} {:>10}",
        "CHANNEL", "FILE", "TIER", "RATE", "POLICY", "GROUP", "CLIENTS", "SENT", "REPAIRED"
    );
    for c in &channels {
        println!(
            "{:>7} {:<20} {:>5} {:>14} {:<12} {:<20} {:>7} {:>14} {:>10}",
            text(&c["channel"]),
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

/// One row per server a director knows.
fn print_servers(answer: &serde_json::Value) {
    let servers = answer["servers"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<24} {:<9} {:<12} {:>11} {:>8} {:>24} {:>6} {:>11}",
        "SERVER", "STATE", "LOCATION", "SESSIONS", "CHANNELS", "RATE (OF MAX)", "FILES", "HEARD"
    );
    for s in &servers {
        let max = s["sessions_max"].as_u64().unwrap_or(0);
        let rate_max = s["rate_bits_per_s_max"].as_u64().unwrap_or(0);
        if s["state"] == "dead" {
            // Its last load is history, not now: only when it was last heard.
            println!(
                "{:<24} {:<9} {:<12} {:>11} {:>8} {:>24} {:>6} {:>11}",
                text(&s["address"]),
                "dead",
                s["location"]
                    .as_str()
                    .filter(|l| !l.is_empty())
                    .unwrap_or("-"),
                "-",
                "-",
                "-",
                s["files"].as_array().map_or(0, Vec::len),
                format!("{} ms ago", s["last_heard_ms"])
            );
            continue;
        }
        println!(
            "{:<24} {:<9} {:<12} {:>11} {:>8} {:>24} {:>6} {:>11}",
            text(&s["address"]),
            text(&s["state"]),
            s["location"]
                .as_str()
                .filter(|l| !l.is_empty())
                .unwrap_or("-"),
            format!("{}/{}", s["sessions"], max),
            text(&s["channels"]),
            {
                // No channel: nothing sent (a rate of 0 would read as "unpaced").
                let now = if s["channels"].as_u64().unwrap_or(0) == 0 {
                    "idle".to_owned()
                } else {
                    rate_of(&s["rate_bits_per_s"])
                };
                if rate_max > 0 {
                    format!("{now} (of {})", format_rate(rate_max))
                } else {
                    now
                }
            },
            s["files"].as_array().map_or(0, Vec::len),
            format!("{} ms ago", s["last_heard_ms"])
        );
    }
    if servers.is_empty() {
        println!("(no servers: are they started with --director and the same --fleet-key?)");
    }
}

/// Every file version (name and root) the fleet holds, with the live servers that hold it.
fn fleet_files(answer: &serde_json::Value) -> Vec<serde_json::Value> {
    type Holders = (u64, Vec<String>);
    let mut files: std::collections::BTreeMap<(String, String), Holders> =
        std::collections::BTreeMap::new();
    for server in answer["servers"].as_array().cloned().unwrap_or_default() {
        let live = server["state"] == "online";
        for file in server["files"].as_array().cloned().unwrap_or_default() {
            let entry = files
                .entry((text(&file["name"]), text(&file["root"])))
                .or_insert((file["bytes"].as_u64().unwrap_or(0), Vec::new()));
            if live {
                entry.1.push(text(&server["address"]));
            }
        }
    }
    files
        .into_iter()
        .map(|((name, root), (bytes, servers))| {
            serde_json::json!({"name": name, "root": root, "bytes": bytes, "servers": servers})
        })
        .collect()
}

fn print_files(answer: &serde_json::Value) {
    let files = fleet_files(answer);
    println!(
        "{:<32} {:<18} {:>14}  SERVERS (online)",
        "FILE", "ROOT", "BYTES"
    );
    for f in &files {
        let servers: Vec<String> = f["servers"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        let root = text(&f["root"]);
        println!(
            "{:<32} {:<18} {:>14}  {}",
            text(&f["name"]),
            format!("{}…", &root[..16.min(root.len())]),
            text(&f["bytes"]),
            if servers.is_empty() {
                "none online".to_owned()
            } else {
                servers.join(", ")
            }
        );
    }
    if files.is_empty() {
        println!("(no files)");
    }
}

fn print_director(answer: &serde_json::Value) {
    let servers = answer["servers"].as_array().cloned().unwrap_or_default();
    let online = servers.iter().filter(|s| s["state"] == "online").count();
    println!(
        "director    {} server(s), {online} online, {} file(s); see `loopcastctl servers` and `loopcastctl files`",
        servers.len(),
        fleet_files(answer).len()
    );
    print_counters(answer);
}

fn print_counters(answer: &serde_json::Value) {
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
    if let Some(settings) = answer["settings"].as_object() {
        let rate = settings["rate_bits_per_s"].as_u64().unwrap_or(0);
        if settings["fixed_rate"] == true {
            println!("settings    fixed rate {}", format_rate(rate));
        } else {
            // As loopcastd's start-up line says it: automatic rates never pass
            // RateConfig::rate_max, whatever --rate says ("rate cap none" read as unbounded).
            let rate_max = loopcast_proto::rate::RateConfig::default().rate_max;
            let cap = if rate == 0 {
                rate_max
            } else {
                rate.min(rate_max)
            };
            println!(
                "settings    rate automatic, at most {}, starting at {}, policy {}, tiers {}, session timeout {} s",
                format_rate(cap),
                settings["initial_rate_bits_per_s"]
                    .as_u64()
                    .map_or("-".to_owned(), format_rate),
                text(&settings["policy"]),
                settings["tiers"],
                settings["session_timeout_s"]
            );
        }
    }
    if let Some(fleet) = answer["fleet"].as_object() {
        let directors: Vec<String> = fleet["directors"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        println!(
            "fleet       {} (heartbeats to {})",
            text(&fleet["state"]),
            directors.join(", ")
        );
    }
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
    print_counters(answer);
}
