//! `loopcastd`: the distribution server. See `loopcastd serve --help`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use loopcast_node::{MulticastConfig, ServerConfig};
use loopcast_tools::{default_admin_socket, format_rate, init_logging, parse_rate};

#[derive(Parser)]
#[command(
    name = "loopcastd",
    version,
    about = "loopcast distribution server: loops archives over multicast or unicast UDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the archives of a media database directory.
    ///
    /// Archives packed into the directory while it runs are served at the first request for
    /// them (the log says "archive found"); one packed again (--force) is picked up at its next
    /// request. SIGHUP rescans the directory at once and reads --config again (rate cap, tier
    /// policy and tiers, initial rate, session timeout, --no-verify, a fleet server's location
    /// and heartbeat interval apply live; the rest is warned as needing a restart). SIGINT or
    /// SIGTERM stops it.
    #[command(args_override_self = true)]
    Serve(ServeArgs),
    /// Run a traffic director: servers send it heartbeats, clients ask it for a file and are
    /// sent to a server that has it (run two or more; clients and servers know them all).
    #[command(args_override_self = true)]
    Direct(DirectArgs),
    /// Write a new fleet key (32 random bytes, hex, mode 0600) to FILE; never replaces one.
    /// Copy it to every server and director of the fleet.
    FleetKey {
        /// Where to write it.
        file: PathBuf,
    },
    /// Check every archive of a media directory whole and record the good ones, so servers
    /// do not hash them again
    ///
    /// Each datagram of every *.lca archive in DIR is checked against the root its header
    /// names, on all cores, and the good ones are recorded in DIR/.loopcast-verified (a hidden
    /// file beside the archives), so a server does not hash an unchanged archive again before
    /// it serves it. Every run checks every archive again (bit rot inside an unchanged file is
    /// found only so), unless --skip-recorded. Run it after adding media, as the media's owner,
    /// and after any chown or chmod of the archives (a record holds only while the file's
    /// change time has not moved). Exits 1 if any archive is corrupt or unreadable, or if the
    /// records of the archives it hashed cannot be written (DIR not writable: servers then
    /// hash those archives on open, as before).
    Check {
        /// Media database directory (as `serve --media`).
        #[arg(long, value_name = "DIR")]
        media: PathBuf,
        /// One JSON object per archive on stdout instead of a line of text, then one
        /// {"summary": {...}} object with the counts (its recorded_in is null and its error
        /// says why if the records could not be written).
        #[arg(long)]
        json: bool,
        /// Hash only archives without a record, or whose record no longer matches them (new
        /// or changed since their last check: size, inode, mtime or ctime); the others are
        /// listed as skipped. Quick after adding media to a large directory; run a full check
        /// now and then all the same.
        #[arg(long)]
        skip_recorded: bool,
    },
}

#[derive(clap::Args)]
struct DirectArgs {
    /// A TOML file of settings: keys are this command's long flags (e.g. listen =
    /// "0.0.0.0:7700", heartbeat_misses = 3); flags on the command line override it. Example:
    /// packaging/loopcastd-direct.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// UDP address for clients' requests (and servers' first heartbeats).
    #[arg(long, default_value = "0.0.0.0:7700")]
    listen: SocketAddr,
    /// Where servers' heartbeats go, on a port of their own that is read first, so a flood of
    /// client requests on --listen cannot crowd them out and make a live server look dead: a
    /// PORT (on --listen's address), an ADDRESS:PORT, or "off" (heartbeats on --listen only).
    /// Servers need no setting for it: they name the director by --listen, and the director
    /// answers their first heartbeat from this port, where they send from then on.
    #[arg(long, default_value = "7702", value_parser = parse_heartbeat_listen)]
    heartbeat_listen: HeartbeatListen,
    /// The fleet's shared key (see `loopcastd fleet-key`): heartbeats without it are dropped.
    #[arg(long)]
    fleet_key: PathBuf,
    /// Prometheus text metrics (GET /metrics) on this TCP address, or "off".
    #[arg(long, default_value = "127.0.0.1:9771", value_parser = parse_metrics)]
    metrics: MetricsAddress,
    /// A server is declared dead after this many heartbeat intervals without one.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    heartbeat_misses: u32,
    /// Admin socket for loopcastctl (default as for serve, named loopcastd-direct.sock).
    #[arg(long)]
    admin_socket: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML file of settings: keys are this command's long flags (e.g. media = "/srv/media",
    /// director = ["10.0.0.2", "10.0.0.3"], no_multicast = true); flags on the command line
    /// override it (list flags such as --director add to it). Example:
    /// packaging/loopcastd-serve.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Media database directory: *.lca archives (made by `loopcast pack --media DIR`). Where
    /// the server may write, it records the archives it checked in DIR/.loopcast-verified (as
    /// `loopcastd check` does), and does not hash them again while they are unchanged.
    #[arg(long, value_name = "DIR")]
    media: PathBuf,
    /// UDP address for client requests.
    #[arg(long, default_value = "0.0.0.0:7700")]
    listen: SocketAddr,
    /// Most a channel sends to any one destination, in bits/s of UDP payload (e.g. 100M, 1G).
    /// Without it, every channel finds the fastest rate its clients take without sustained loss
    /// (up to 40G), and backs off when they lose; with it, the same up to this cap. With
    /// --fixed-rate, the rate every channel is paced at, or no pacing at all with "unpaced".
    /// Not a total: a channel sends its loop to each of its destinations (its multicast group,
    /// each unicast client on it), and a unicast client's repairs to that client alone, all
    /// from one budget of this rate; so each destination receives at most this rate, and a
    /// channel with N destinations puts up to N times it on the wire. Each tier and each
    /// unicast client's own channel has a budget of its own. To cap a link, use the host's
    /// traffic shaping.
    #[arg(long, value_parser = parse_rate, allow_hyphen_values = true)]
    rate: Option<u64>,
    /// One channel per file, paced at --rate: no tiers, no automatic rates, no channels of their
    /// own for unicast clients. The channel sends its loop to every destination (the multicast
    /// group, and each unicast client), and a unicast client's repairs to it alone; both come
    /// out of one token bucket of --rate. Each destination receives at most --rate (less while
    /// another client's repairs are sent), and with N unicast clients the channel sends up to
    /// N x --rate on the wire (plus --rate to the group): two unicast clients at --rate 20M,
    /// up to 40 Mbit/s.
    #[arg(long, requires = "rate")]
    fixed_rate: bool,
    /// How a file's speed tiers follow its clients: "distribution" (several tiers, each client
    /// on the one its measured throughput matches), "average" (one tier at the clients'
    /// average) or "slowest" (one tier at the slowest client's throughput).
    #[arg(long, default_value = "distribution", value_parser = parse_policy, conflicts_with = "fixed_rate")]
    tier_policy: loopcast_proto::rate::TierPolicy,
    /// Most shared tiers (channels at different rates, each with its own multicast group) one
    /// file runs on at once ("distribution"). A unicast client's own channel, whose rate
    /// follows it alone, is not counted: `loopcastctl channels` lists those too.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16), conflicts_with = "fixed_rate")]
    tiers: u8,
    /// Rate a file's first tier starts at before clients report (it rises while they keep up,
    /// and drops to what reaches them when they lose), and so does the tier of its own that a
    /// client joining while every tier of the file runs slower gets; at least 1M, at most
    /// --rate and 40G. Default: 1G, or --rate if that is lower.
    #[arg(
        long,
        value_parser = parse_initial_rate,
        conflicts_with = "fixed_rate",
        allow_hyphen_values = true
    )]
    initial_rate: Option<u64>,
    /// Never use multicast: every client gets a unicast copy.
    #[arg(long)]
    no_multicast: bool,
    /// First multicast group; channels use base+1, base+2, ... within its /24.
    #[arg(long, default_value = "239.77.1.0")]
    multicast_group: Ipv4Addr,
    /// UDP port multicast channels send to.
    #[arg(long, default_value_t = 7701)]
    multicast_port: u16,
    /// Address of the interface to send multicast from (0.0.0.0: the kernel's choice).
    #[arg(long, default_value = "0.0.0.0")]
    multicast_interface: Ipv4Addr,
    /// Multicast TTL (hops).
    #[arg(long, default_value_t = 8)]
    multicast_ttl: u32,
    /// Admin socket for loopcastctl. Default: $XDG_RUNTIME_DIR/loopcast/loopcastd.sock, else
    /// /run/loopcast/loopcastd.sock (root) or /tmp/loopcast-<uid>/loopcastd.sock. Its directory is
    /// created mode 0700 if missing; one that is another user's or writable by others is refused.
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Seconds of client silence before its session ends.
    #[arg(long, default_value_t = 5)]
    session_timeout: u64,
    /// Sender threads, each pinned to a core, that run the channels.
    #[arg(long, default_value_t = 1)]
    send_threads: usize,
    /// Skip verifying each archive's hash tree when its channel opens. Without it, an archive
    /// is hashed when its channel first opens, unless DIR/.loopcast-verified records it as
    /// checked and unchanged since (see `loopcastd check`).
    #[arg(long)]
    no_verify: bool,
    /// A director of the fleet as clients know it (HOST[:PORT], default port 7700); repeat or
    /// comma-separate for each. The server sends every director a heartbeat (state, load,
    /// files) so they route clients to it: the first to this address, the rest to the port the
    /// director answers from (its --heartbeat-listen). A client asking for a file this server
    /// lacks is sent here (R7). Needs --fleet-key.
    #[arg(long = "director", value_delimiter = ',', requires = "fleet_key")]
    directors: Vec<String>,
    /// The fleet's shared key (see `loopcastd fleet-key`).
    #[arg(long, requires = "directors")]
    fleet_key: Option<PathBuf>,
    /// Where clients reach this server, as directors tell them (default: --listen, which must
    /// then name an address, not 0.0.0.0).
    #[arg(long)]
    advertise: Option<String>,
    /// This server's location label (directors prefer it for clients that ask for it).
    #[arg(long, default_value = "")]
    location: String,
    /// Prometheus text metrics (GET /metrics) on this TCP address, or "off". Keep it on
    /// localhost or a management network: the counters tell who the clients are.
    #[arg(long, default_value = "127.0.0.1:9770", value_parser = parse_metrics)]
    metrics: MetricsAddress,
    /// Milliseconds between heartbeats (directors declare the server dead after 3 missed).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(20..=10_000))]
    heartbeat_ms: u64,
}

/// `loopcastd serve|direct --config FILE ...`: the file's settings go in as flags right after
/// the subcommand, so the command line's own flags (later) override them.
fn with_config_file(argv: Vec<String>) -> Result<Vec<String>, String> {
    let Some(subcommand) = argv.get(1).cloned() else {
        return Ok(argv);
    };
    let Some(path) = config_file(&argv) else {
        return Ok(argv);
    };
    let command = Cli::command();
    let Some(sub) = command.find_subcommand(&subcommand) else {
        return Ok(argv); // clap says what is wrong
    };
    let settings = loopcast_tools::config_args(&path, sub)?;
    let mut out = argv[..2].to_vec();
    out.extend(settings);
    out.extend(argv[2..].iter().cloned());
    Ok(out)
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("loopcastd: error: {message}");
    ExitCode::FAILURE
}

/// The director's settings from its arguments (at start and on SIGHUP alike).
fn direct_config(args: &DirectArgs) -> Result<loopcast_director::DirectConfig, String> {
    let fleet_key = loopcast_tools::load_fleet_key(&args.fleet_key)?;
    let admin_socket = args
        .admin_socket
        .clone()
        .unwrap_or_else(|| default_admin_socket().with_file_name("loopcastd-direct.sock"));
    let heartbeat_listen = match args.heartbeat_listen {
        HeartbeatListen::Off => None,
        HeartbeatListen::Port(port) => Some(SocketAddr::new(args.listen.ip(), port)),
        HeartbeatListen::Address(address) => Some(address),
    };
    if heartbeat_listen == Some(args.listen) && args.listen.port() != 0 {
        return Err(format!(
            "--heartbeat-listen {} is --listen's own address: give another port, or \"off\"",
            args.listen
        ));
    }
    Ok(loopcast_director::DirectConfig {
        listen: args.listen,
        heartbeat_listen,
        fleet_key,
        heartbeat_misses: args.heartbeat_misses,
        admin_socket: Some(admin_socket),
        metrics: args.metrics.0,
    })
}

fn direct(args: DirectArgs, argv: Vec<String>) -> ExitCode {
    init_logging("info");
    let config = match direct_config(&args) {
        Ok(config) => config,
        Err(error) => return fail(error),
    };
    let admin_socket = config.admin_socket.as_ref().expect("set above");
    if let Err(error) = loopcast_admin::location::preflight(admin_socket) {
        return fail(error);
    }
    let (shutdown, reload_requested) = match loopcast_tools::daemon_signals() {
        Ok(flags) => flags,
        Err(error) => return fail(format!("cannot install signal handlers: {error}")),
    };
    let reload =
        loopcast_director::Reload::new(
            reload_requested,
            config_file(&argv),
            move || match reparse(&argv)? {
                Command::Direct(args) => direct_config(&args).map_err(|error| {
                    let file = config_file(&argv).unwrap_or_default();
                    format!("config {}: {error}", file.display())
                }),
                _ => Err("the command line is no longer `direct`".into()),
            },
        );
    match loopcast_director::run_reloadable(config, shutdown, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(error),
    }
}

/// `--director`, `--fleet-key`, `--advertise`: the server's part in a fleet (R15).
fn fleet_config(args: &ServeArgs) -> Result<Option<loopcast_node::FleetConfig>, String> {
    if args.directors.is_empty() {
        return Ok(None);
    }
    let directors = args
        .directors
        .iter()
        .map(|d| loopcast_tools::resolve_address(d))
        .collect::<Result<Vec<_>, _>>()?;
    let key = loopcast_tools::load_fleet_key(args.fleet_key.as_ref().expect("clap requires it"))?;
    let advertise = match &args.advertise {
        Some(text) => loopcast_tools::resolve_address(text)?,
        None if args.listen.ip().is_unspecified() => {
            return Err(format!(
                "--listen {} names no address directors could send clients to: add --advertise HOST[:PORT]",
                args.listen
            ))
        }
        None => args.listen,
    };
    if args.location.len() > loopcast_proto::wire::control::LOCATION_LEN_MAX {
        return Err(format!(
            "--location is longer than {} bytes",
            loopcast_proto::wire::control::LOCATION_LEN_MAX
        ));
    }
    Ok(Some(loopcast_node::FleetConfig {
        directors,
        key,
        advertise,
        location: args.location.clone(),
        interval: Duration::from_millis(args.heartbeat_ms),
        rate_bits_per_s_max: args.rate.unwrap_or(0),
    }))
}

/// `--heartbeat-listen PORT|ADDRESS:PORT|off`.
#[derive(Clone, Copy, Debug)]
enum HeartbeatListen {
    Off,
    Port(u16),
    Address(SocketAddr),
}

fn parse_heartbeat_listen(text: &str) -> Result<HeartbeatListen, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(HeartbeatListen::Off);
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(HeartbeatListen::Port(port));
    }
    text.parse::<SocketAddr>()
        .map(HeartbeatListen::Address)
        .map_err(|_| format!("{text:?} is not a port, an ADDRESS:PORT or \"off\""))
}

/// `--metrics ADDR` or `--metrics off`.
#[derive(Clone, Copy, Debug)]
struct MetricsAddress(Option<SocketAddr>);

fn parse_metrics(text: &str) -> Result<MetricsAddress, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddress(None));
    }
    loopcast_tools::resolve_address(text).map(|a| MetricsAddress(Some(a)))
}

fn parse_policy(text: &str) -> Result<loopcast_proto::rate::TierPolicy, String> {
    loopcast_proto::rate::TierPolicy::from_name(text)
        .ok_or_else(|| format!("unknown tier policy {text:?}: distribution, average or slowest"))
}

/// `--initial-rate`: a real rate within the automatic range (`RateConfig::rate_min` to
/// `rate_max`);
/// "unpaced" or 0 mean nothing for a rate that is about to be measured.
fn parse_initial_rate(text: &str) -> Result<u64, String> {
    let defaults = loopcast_proto::rate::RateConfig::default();
    match parse_rate(text)? {
        rate if rate < defaults.rate_min => Err(format!(
            "{text:?} is below the slowest automatic rate, {}",
            format_rate(defaults.rate_min)
        )),
        // (It was taken, and the start-up line said "at most 40G, starting at 50G".)
        rate if rate > defaults.rate_max => Err(format!(
            "{text:?} is above the fastest automatic rate, {}",
            format_rate(defaults.rate_max)
        )),
        rate => Ok(rate),
    }
}

/// The config file named on the command line (`--config FILE` or `--config=FILE`), if any.
fn config_file(argv: &[String]) -> Option<PathBuf> {
    let mut config = None;
    for (index, arg) in argv.iter().enumerate().skip(2) {
        if let Some(path) = arg.strip_prefix("--config=") {
            config = Some(PathBuf::from(path));
        } else if arg == "--config" {
            config = argv.get(index + 1).map(PathBuf::from);
        }
    }
    config
}

/// SIGHUP: the config file and the command line read again, as at start, into the subcommand's
/// arguments; every error names the file.
fn reparse(argv: &[String]) -> Result<Command, String> {
    let file = config_file(argv).unwrap_or_default();
    let argv = with_config_file(argv.to_vec())?;
    let cli = Cli::try_parse_from(argv).map_err(|error| {
        let text = error.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        format!(
            "config {}: {}",
            file.display(),
            first.trim_start_matches("error: ")
        )
    })?;
    Ok(cli.command)
}

/// The rate options checked together, and where a file's first tier starts: `--initial-rate`,
/// else the default or the automatic rates' cap (`--rate`) if lower. Refused: "--rate
/// unpaced" without `--fixed-rate` (as a cap it would mean none, which leaving it out already
/// says), a cap below the slowest automatic rate, and an initial rate above the cap (two
/// things that cannot both hold).
fn checked_initial_rate(args: &ServeArgs) -> Result<u64, String> {
    if args.rate == Some(0) && !args.fixed_rate {
        return Err(
            "--rate unpaced (or 0) needs --fixed-rate; without --rate the rates are automatic"
                .into(),
        );
    }
    let defaults = loopcast_proto::rate::RateConfig::default();
    match (
        args.rate.filter(|&rate| rate > 0 && !args.fixed_rate),
        args.initial_rate,
    ) {
        (Some(cap), _) if cap < defaults.rate_min => Err(format!(
            "--rate {} is below the slowest automatic rate, {} (with --fixed-rate any rate goes)",
            format_rate(cap),
            format_rate(defaults.rate_min)
        )),
        (Some(cap), Some(initial)) if initial > cap => Err(format!(
            "--initial-rate {} is above --rate {}: a tier starts at most at the cap",
            format_rate(initial),
            format_rate(cap)
        )),
        (cap, initial) => Ok(initial.unwrap_or(defaults.initial_rate.min(cap.unwrap_or(u64::MAX)))),
    }
}

/// The server's settings from its arguments, checked (at start and on SIGHUP alike).
fn server_config(args: &ServeArgs) -> Result<ServerConfig, String> {
    let initial_rate = checked_initial_rate(args)?;
    if !args.media.is_dir() {
        return Err(format!(
            "media database {} is not a directory",
            args.media.display()
        ));
    }
    let mut config = ServerConfig::new(args.media.clone(), args.listen);
    config.rate_bits_per_s = args.rate.unwrap_or(0);
    // Automatic rates never pass RateConfig::rate_max, whatever --rate says: the cap in force
    // is that, everywhere (`status --json` said 100G where its text said 40G), and the log says
    // so, at start and on a reload alike.
    let rate_max = loopcast_proto::rate::RateConfig::default().rate_max;
    if !args.fixed_rate && config.rate_bits_per_s > rate_max {
        tracing::warn!(
            "--rate {} is above the most automatic rates reach: each channel is capped at {} \
             (with --fixed-rate, --rate is paced as given)",
            format_rate(config.rate_bits_per_s),
            format_rate(rate_max)
        );
        config.rate_bits_per_s = rate_max;
    }
    config.adaptive = (!args.fixed_rate).then(|| loopcast_proto::rate::RateConfig {
        policy: args.tier_policy,
        tiers_max: usize::from(args.tiers),
        initial_rate,
        ..loopcast_proto::rate::RateConfig::default()
    });
    config.session_timeout = Duration::from_secs(args.session_timeout.max(1));
    config.verify_on_open = !args.no_verify;
    config.send_threads = args.send_threads.clamp(1, 64);
    config.metrics = args.metrics.0;
    config.fleet = fleet_config(args)?;
    config.admin_socket = Some(
        args.admin_socket
            .clone()
            .unwrap_or_else(default_admin_socket),
    );
    if !args.no_multicast {
        if !args.multicast_group.is_multicast() {
            return Err(format!(
                "{} is not a multicast group (224.0.0.0/4)",
                args.multicast_group
            ));
        }
        config.multicast = Some(MulticastConfig {
            group_base: args.multicast_group,
            port: args.multicast_port,
            interface: args.multicast_interface,
            ttl: args.multicast_ttl,
        });
    }
    Ok(config)
}

/// `loopcastd check`: see its help.
fn check(media: &std::path::Path, json: bool, skip_recorded: bool) -> ExitCode {
    use loopcast_node::verified::CheckFailure;
    let mut corrupt = 0usize;
    let mut unchecked = 0usize;
    let mut good = 0usize;
    let mut skipped = 0usize;
    let outcome = loopcast_node::verified::check_directory(media, skip_recorded, |checked| {
        match &checked.outcome {
            Ok(()) if checked.skipped => skipped += 1,
            Ok(()) => good += 1,
            Err(CheckFailure::Corrupt(_)) => corrupt += 1,
            Err(_) => unchecked += 1,
        }
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "file": checked.file,
                    "bytes": checked.bytes,
                    "seconds": checked.seconds,
                    "verified": checked.outcome.is_ok() && !checked.skipped,
                    "skipped": checked.skipped,
                    "corrupt": matches!(checked.outcome, Err(CheckFailure::Corrupt(_))),
                    "error": checked.outcome.as_ref().err().map(ToString::to_string),
                })
            );
        } else {
            match &checked.outcome {
                Ok(()) if checked.skipped => println!(
                    "{}: skipped, recorded and unchanged since its last check",
                    checked.file
                ),
                Ok(()) => println!(
                    "{}: verified, {} bytes in {:.2} s ({:.2} GB/s)",
                    checked.file,
                    checked.bytes,
                    checked.seconds,
                    checked.bytes as f64 / checked.seconds.max(1e-9) / 1e9
                ),
                Err(failure) => println!("{}: {failure}", checked.file),
            }
        }
    });
    let records = media.join(loopcast_node::verified::RECORDS_FILE);
    let failed = || {
        let mut parts = Vec::new();
        if corrupt > 0 {
            parts.push(format!(
                "{corrupt} archive(s) corrupt (servers refuse them)"
            ));
        }
        if unchecked > 0 {
            parts.push(format!(
                "{unchecked} not checked (unreadable, or changed meanwhile)"
            ));
        }
        parts.push(format!("{good} verified"));
        if skipped > 0 {
            parts.push(format!("{skipped} skipped (recorded, unchanged)"));
        }
        parts.join("; ")
    };
    let bad = corrupt + unchecked;
    // The summary ends every listing, also one whose records could not be written (the error
    // then; a script must not be left without its counts). No archives, or no directory: no
    // listing, no summary.
    if json && good + skipped + bad > 0 {
        let error = outcome.as_ref().err();
        println!(
            "{}",
            serde_json::json!({"summary": {
                "verified": good,
                "skipped": skipped,
                "corrupt": corrupt,
                "unchecked": unchecked,
                "recorded_in": error.is_none().then(|| records.display().to_string()),
                "error": error,
            }})
        );
    }
    match outcome {
        Err(error) => {
            eprintln!("loopcastd: error: {error}");
            if bad > 0 {
                eprintln!("loopcastd: {}", failed());
            }
            ExitCode::FAILURE
        }
        Ok(checked) if checked.is_empty() => {
            eprintln!(
                "no archives (*.lca) in {}: nothing checked, nothing recorded",
                media.display()
            );
            ExitCode::SUCCESS
        }
        Ok(_) if bad > 0 => {
            eprintln!(
                "loopcastd: {} (recorded in {})",
                failed(),
                records.display()
            );
            ExitCode::FAILURE
        }
        Ok(_) => {
            if !json {
                let skipped = if skipped > 0 {
                    format!(", {skipped} skipped (recorded, unchanged)")
                } else {
                    String::new()
                };
                eprintln!(
                    "{good} archive(s) verified{skipped}, recorded in {}",
                    records.display()
                );
            }
            ExitCode::SUCCESS
        }
    }
}

fn main() -> ExitCode {
    loopcast_tools::exit_cleanly_on_stdout_errors(run)
}

fn run() -> ExitCode {
    // As strings: the config file's options join them, and a SIGHUP parses them again.
    let argv: Vec<String> = match std::env::args_os()
        .map(|arg| arg.into_string())
        .collect::<Result<_, _>>()
    {
        Ok(argv) => argv,
        Err(arg) => {
            eprintln!(
                "loopcastd: error: the argument {:?} is not valid UTF-8: loopcastd reads its options and paths as UTF-8 (give the directory or file a UTF-8 name, or a symlink with one)",
                arg.to_string_lossy()
            );
            return ExitCode::from(2);
        }
    };
    let cli = match with_config_file(argv.clone()) {
        Ok(expanded) => loopcast_tools::parse_command_line::<Cli>(expanded),
        Err(error) => {
            eprintln!("loopcastd: error: {error}");
            return ExitCode::from(2);
        }
    };
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Direct(args) => return direct(args, argv),
        Command::Check {
            media,
            json,
            skip_recorded,
        } => return check(&media, json, skip_recorded),
        Command::FleetKey { file } => {
            return match loopcast_tools::write_fleet_key(&file) {
                Ok(()) => {
                    println!("wrote a new fleet key to {} (mode 0600): copy it to every server and director", file.display());
                    ExitCode::SUCCESS
                }
                Err(error) => fail(error),
            }
        }
    };
    // Rate options that contradict each other are usage errors, before anything starts.
    if let Err(error) = checked_initial_rate(&args) {
        // With `serve`'s usage line, not the top-level one.
        let mut command = Cli::command();
        command.build();
        command
            .find_subcommand_mut("serve")
            .expect("serve is a subcommand")
            .error(clap::error::ErrorKind::ArgumentConflict, error)
            .exit();
    }
    init_logging("info");
    // Name the hashing threads (archive checks beside the loop), so `top -H` tells them apart.
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|index| format!("loopcast-hash{index}"))
        .build_global();
    let config = match server_config(&args) {
        Ok(config) => config,
        Err(error) => return fail(error),
    };
    let admin_socket = config.admin_socket.as_ref().expect("set above");
    // Before the request port: a second daemon is told about the first, not about the port.
    if let Err(error) = loopcast_admin::location::preflight(admin_socket) {
        eprintln!("loopcastd: error: {error}");
        return ExitCode::FAILURE;
    }
    let rate = match (config.rate_bits_per_s, args.fixed_rate) {
        (rate, true) => format!("fixed {}", format_rate(rate)),
        (0, false) => format!(
            "automatic, at most {}",
            format_rate(loopcast_proto::rate::RateConfig::default().rate_max)
        ),
        (cap, false) => format!("automatic, at most {}", format_rate(cap)),
    };
    let rate = match &config.adaptive {
        Some(adaptive) => format!("{rate}, starting at {}", format_rate(adaptive.initial_rate)),
        None => rate,
    };
    if args.fixed_rate {
        // One channel per file: no policy, no tiers to speak of.
        tracing::info!(%rate, admin = %admin_socket.display(), "starting");
    } else {
        tracing::info!(%rate, policy = %args.tier_policy, tiers = args.tiers, admin = %admin_socket.display(), "starting");
    }
    let (shutdown, reload_requested) = match loopcast_tools::daemon_signals() {
        Ok(flags) => flags,
        Err(error) => return fail(format!("cannot install signal handlers: {error}")),
    };
    let reload =
        loopcast_node::Reload::new(reload_requested, config_file(&argv), move || match reparse(
            &argv,
        )? {
            Command::Serve(args) => server_config(&args).map_err(|error| {
                let file = config_file(&argv).unwrap_or_default();
                format!("config {}: {error}", file.display())
            }),
            _ => Err("the command line is no longer `serve`".into()),
        });
    match loopcast_node::run_reloadable(config, shutdown, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loopcastd: error: {error}");
            ExitCode::FAILURE
        }
    }
}
