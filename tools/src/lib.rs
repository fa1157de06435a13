//! Shared helpers for loopcast's thin binaries: argument parsing of rates and sizes,
//! logging set-up, progress bars, CPU time, and the demo.

pub mod control_bench;
pub mod demo;
pub mod e2e_bench;
pub mod fleet_bench;
pub mod fleet_sim;
pub mod session_bench;
pub mod topology;

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Parses a rate in bits per second: `250M`, `1G`, `800k`, `1500000`, or `unpaced` (0).
/// The fastest rate [`parse_rate`] takes: 1 Tbit/s.
pub const RATE_MAX_BITS_PER_S: u64 = 1_000_000_000_000;

pub fn parse_rate(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    if lower == "unpaced" || lower == "0" {
        return Ok(0);
    }
    let lower = lower
        .trim_end_matches("bit/s")
        .trim_end_matches("bps")
        .trim_end_matches("bit");
    let (digits, multiplier) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1e3),
        Some('m') => (&lower[..lower.len() - 1], 1e6),
        Some('g') => (&lower[..lower.len() - 1], 1e9),
        _ => (lower, 1.0),
    };
    let value: f64 = digits
        .parse()
        .map_err(|_| format!("bad rate {text:?}: use e.g. 250M, 1G, 800k or unpaced"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!(
            "bad rate {text:?}: must be positive (no pacing at all is \"unpaced\")"
        ));
    }
    // (A 24-digit rate saturated to 18446744073.71 Gbit/s, and was paced as that.)
    if value * multiplier > RATE_MAX_BITS_PER_S as f64 {
        return Err(format!(
            "rate {text:?} is above 1000G: faster than any link (a number alone is bits per second)"
        ));
    }
    let bits = (value * multiplier) as u64;
    if bits < 8_000 {
        let hint = if multiplier == 1.0 {
            format!(" (a number alone is bits per second: {value}M is megabits)")
        } else {
            String::new()
        };
        return Err(format!("rate {text:?} is below 8 kbit/s{hint}"));
    }
    Ok(bits)
}

/// Parses a byte size: `64M`, `1G`, `4096`, `512K` (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let upper = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, multiplier) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 1u64 << 10),
        Some('M') => (&upper[..upper.len() - 1], 1 << 20),
        Some('G') => (&upper[..upper.len() - 1], 1 << 30),
        _ => (upper, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(multiplier))
        .ok_or_else(|| format!("bad size {text:?}: use e.g. 64M, 1G, 4096"))
}

pub use loopcast_proto::rate::format_rate;

/// Logs to stderr; `RUST_LOG` overrides the default level.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// A flag set by SIGINT/SIGTERM (installed once per process).
pub fn shutdown_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    let _ = ctrlc::set_handler(move || {
        handler_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    flag
}

/// The daemons' signals (`loopcastd serve|direct`): SIGINT and SIGTERM set the first flag (stop),
/// SIGHUP the second (read the config file again, rescan). Unlike [`shutdown_flag`], a SIGHUP
/// never stops the daemon. The loops look at both on every wake-up (at least every 100 ms).
pub fn daemon_signals() -> std::io::Result<(Arc<AtomicBool>, Arc<AtomicBool>)> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let shutdown = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGINT, Arc::clone(&shutdown))?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&shutdown))?;
    signal_hook::flag::register(SIGHUP, Arc::clone(&reload))?;
    Ok((shutdown, reload))
}

/// A byte progress bar on a terminal; hidden when stderr is not one (piped, CI). See
/// [`ByteProgress`] for progress that shows on both.
pub fn byte_bar(total: u64, message: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(if total == 0 {
        waiting_style()
    } else {
        bar_style()
    });
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn bar_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .expect("static template")
    .progress_chars("=> ")
}

/// Before the size is known (a download before the server's offer): a spinner and the time
/// waited, not a bar (a bar of 0 bytes of 0 drew full).
fn waiting_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template("{msg:>12} {spinner} waiting, {elapsed}")
        .expect("static template")
}

/// How often long work prints a progress line where stderr is not a terminal.
pub const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Progress of long work (packing, receiving, extracting) on stderr: a bar on a terminal;
/// elsewhere (a pipe, a log file, the journal) a plain line every [`PLAIN_PROGRESS_EVERY`],
/// so whoever reads the log sees the work moving. Work done sooner prints no line.
pub struct ByteProgress {
    bar: indicatif::ProgressBar,
    plain: Option<std::sync::Mutex<PlainProgress>>,
    /// Whether the bar has shown an amount above 0 yet (the first is where its speed starts).
    shown: std::sync::atomic::AtomicBool,
}

impl ByteProgress {
    /// `quiet`: nothing at all (e.g. `--json`, whose readers want only the report).
    pub fn new(total: u64, message: &str, quiet: bool) -> ByteProgress {
        let terminal = std::io::stderr().is_terminal();
        ByteProgress {
            bar: if quiet || !terminal {
                indicatif::ProgressBar::hidden()
            } else {
                byte_bar(total, message)
            },
            plain: (!quiet && !terminal).then(|| {
                std::sync::Mutex::new(PlainProgress::new(
                    message,
                    PLAIN_PROGRESS_EVERY,
                    std::time::Instant::now(),
                ))
            }),
            shown: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn set_message(&self, message: &str) {
        self.bar.set_message(message.to_owned());
        if let Some(plain) = &self.plain {
            plain.lock().expect("progress lock").label = message.to_owned();
        }
    }

    /// `done` of `total` bytes (`total` 0: not known yet).
    pub fn update(&self, done: u64, total: u64) {
        if total > 0 && self.bar.length() == Some(0) {
            self.bar.set_style(bar_style());
        }
        self.bar.set_length(total);
        self.bar.set_position(done);
        if done > 0 && !self.shown.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // The speed and time left are this run's: a resumed download's earlier part
            // arrived before it (counted, it showed 146 MiB/s and "eta 1s" for 11 s). Setting
            // the length records the amount in the estimator now (a set position waits for the
            // steady tick), and the reset then forgets the rate it implied.
            self.bar.set_length(total);
            self.bar.reset_eta();
        }
        if let Some(plain) = &self.plain {
            let line =
                plain
                    .lock()
                    .expect("progress lock")
                    .line(std::time::Instant::now(), done, total);
            if let Some(line) = line {
                eprintln!("{line}");
            }
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The plain progress lines of [`ByteProgress`], as a clock-driven rule (testable).
#[derive(Clone, Debug)]
pub struct PlainProgress {
    label: String,
    every: Duration,
    next: std::time::Instant,
    /// Where the speed is measured from: the last line (or the start, and the first amount
    /// seen: a resumed download's earlier part is not this run's speed).
    since: Option<(std::time::Instant, u64)>,
    started: std::time::Instant,
}

impl PlainProgress {
    pub fn new(label: &str, every: Duration, started: std::time::Instant) -> PlainProgress {
        PlainProgress {
            label: label.to_owned(),
            every,
            next: started + every,
            since: None,
            started,
        }
    }

    /// The line to print at `now`, if one is due: "receiving: 41 % (420.0 MiB of 1.00 GiB),
    /// 44.0 MB/s" (without a total: the bytes and the speed only). The speed is over the time
    /// since the last line, so a stall shows as one ("0.0 MB/s"), not as a slowly falling
    /// average.
    pub fn line(&mut self, now: std::time::Instant, done: u64, total: u64) -> Option<String> {
        let (since, done_then) = *self.since.get_or_insert((self.started, done));
        if now < self.next {
            return None;
        }
        // The next line is `every` after this one, not a burst to catch up after a pause.
        self.next = now + self.every;
        self.since = Some((now, done));
        let seconds = now.saturating_duration_since(since).as_secs_f64();
        let speed = done.saturating_sub(done_then) as f64 / 1e6 / seconds.max(1e-9);
        let done_text = indicatif::BinaryBytes(done);
        Some(match (done.min(total) * 100).checked_div(total) {
            Some(percent) => format!(
                "{}: {percent} % ({done_text} of {}), {speed:.1} MB/s",
                self.label,
                indicatif::BinaryBytes(total)
            ),
            None => format!("{}: {done_text}, {speed:.1} MB/s", self.label),
        })
    }
}

/// Runs `main`; a panic from the standard print macros failing to write stdout ends the
/// program after unwinding (so what it set up, namespaces included, is still removed by its
/// drops): into a closed pipe (`loopcast-bench ... | head`) quietly with 141, as a shell reports
/// a SIGPIPE death; any other write error (a full disk, `> /dev/full`) with "PROGRAM: cannot
/// write to stdout: ERROR" and 1. Before, both printed "failed printing to stdout" with a
/// backtrace and exited 101. Any other panic is reported as usual.
pub fn exit_cleanly_on_stdout_errors(
    main: fn() -> std::process::ExitCode,
) -> std::process::ExitCode {
    const PRINT_FAILED: &str = "failed printing to stdout: ";
    fn write_error(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
        payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .and_then(|message| message.strip_prefix(PRINT_FAILED))
    }
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if write_error(info.payload()).is_none() {
            report(info);
        }
    }));
    match std::panic::catch_unwind(main) {
        Ok(code) => code,
        Err(payload) => match write_error(payload.as_ref()) {
            Some(error) if error.contains("Broken pipe") => std::process::ExitCode::from(141),
            Some(error) => {
                eprintln!("{}: cannot write to stdout: {error}", program_name());
                std::process::ExitCode::FAILURE
            }
            None => std::panic::resume_unwind(payload),
        },
    }
}

/// This program's name, as it was started ("loopcast" if that cannot be read).
fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "loopcast".to_owned())
}

/// The command line parsed as `T`, from `argv`. `--help` and `--version` print to stdout and
/// exit 0 as clap does, but a write error is said (one line, exit 1; a closed pipe exits 141
/// quietly): clap's own exit ignored it, and `--help > /dev/full` exited 0 with nothing
/// written. Usage errors go to stderr with clap's exit code, as before. `argv` as the OS gave
/// it (`std::env::args_os()`): a path that is not UTF-8 is a path like any other (read as
/// `String`s, one panicked the program).
pub fn parse_command_line<T: clap::Parser>(
    argv: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> T {
    let error = match T::try_parse_from(argv) {
        Ok(parsed) => return parsed,
        Err(error) => error,
    };
    if error.use_stderr() {
        error.exit();
    }
    let written = error.print().and_then(|()| {
        use std::io::Write;
        std::io::stdout().flush()
    });
    match written {
        Ok(()) => std::process::exit(error.exit_code()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => {
            eprintln!("{}: cannot write to stdout: {e}", program_name());
            std::process::exit(1);
        }
    }
}

/// CPU time (user + system) this process has used so far.
pub fn cpu_time() -> Duration {
    rusage_cpu(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

/// CPU time (user + system) of this process's waited-for children so far.
pub fn children_cpu_time() -> Duration {
    rusage_cpu(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

fn rusage_cpu(who: nix::sys::resource::UsageWho) -> Duration {
    match nix::sys::resource::getrusage(who) {
        Ok(usage) => {
            let to_duration = |tv: nix::sys::time::TimeVal| {
                Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
            };
            to_duration(usage.user_time()) + to_duration(usage.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Default admin socket path (see `loopcast_admin::location`): $XDG_RUNTIME_DIR/loopcast/loopcastd.sock,
/// else /run/loopcast/loopcastd.sock for root, else /tmp/loopcast-<uid>/loopcastd.sock.
pub fn default_admin_socket() -> std::path::PathBuf {
    loopcast_admin::default_socket_path_here()
}

/// A deterministic sample file: runs of text (compressible) and xorshift noise
/// (incompressible), so packing shows both frame kinds.
pub fn write_sample_file(path: &std::path::Path, len: u64, seed: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state = seed | 1;
    let text = b"loopcast: one copy on the wire serves everyone who wants this file. ";
    let mut written = 0u64;
    let mut block = vec![0u8; 1 << 16];
    while written < len {
        let take = (len - written).min(block.len() as u64) as usize;
        let noisy = !(written >> 20).is_multiple_of(4);
        for (i, byte) in block[..take].iter_mut().enumerate() {
            *byte = if noisy {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            } else {
                text[(written as usize + i) % text.len()]
            };
        }
        out.write_all(&block[..take])?;
        written += take as u64;
    }
    out.flush()
}

pub fn hash_file(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok(*hasher.finalize().as_bytes())
}

/// One line of progress on stderr for a long benchmark or tool run (stdout stays for results,
/// so `--json` output is unaffected).
pub fn phase(message: impl std::fmt::Display) {
    eprintln!("loopcast-bench: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_progress_prints_a_line_every_interval_and_none_before() {
        let start = std::time::Instant::now();
        let every = Duration::from_secs(10);
        let mut plain = PlainProgress::new("receiving", every, start);
        assert_eq!(plain.line(start, 0, 0), None, "nothing at the start");
        // A resumed download starts with what it held: its speed is of what arrives now.
        let mut resumed = PlainProgress::new("receiving", every, start);
        assert_eq!(resumed.line(start, 800 << 20, 1 << 30), None);
        let line = resumed
            .line(start + Duration::from_secs(10), 900 << 20, 1 << 30)
            .expect("a line at 10 s");
        assert!(line.ends_with(", 10.5 MB/s"), "{line}");
        assert_eq!(
            plain.line(start + Duration::from_secs(9), 5 << 20, 10 << 20),
            None,
            "work done within the first interval prints nothing"
        );
        let line = plain
            .line(start + Duration::from_secs(10), 440 << 20, 1 << 30)
            .expect("a line at 10 s");
        assert_eq!(line, "receiving: 42 % (440.00 MiB of 1.00 GiB), 46.1 MB/s");
        assert_eq!(
            plain.line(start + Duration::from_secs(15), 600 << 20, 1 << 30),
            None,
            "the next one 10 s after"
        );
        // After a long pause one line, not one per missed interval; its speed is since the
        // last line (50 s for 260 MiB), and a stall shows as one.
        assert!(plain
            .line(start + Duration::from_secs(60), 700 << 20, 0)
            .is_some_and(|line| line.ends_with(", 5.5 MB/s")));
        assert_eq!(
            plain.line(start + Duration::from_secs(61), 700 << 20, 0),
            None
        );
        let unknown = plain
            .line(start + Duration::from_secs(71), 700 << 20, 0)
            .expect("a line at 71 s");
        assert_eq!(
            unknown, "receiving: 700.00 MiB, 0.0 MB/s",
            "without a total, no percentage; nothing for 11 s: a speed of nothing"
        );
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("250M"), Ok(250_000_000));
        assert_eq!(parse_rate("1G"), Ok(1_000_000_000));
        assert_eq!(parse_rate("1.5g"), Ok(1_500_000_000));
        assert_eq!(parse_rate("unpaced"), Ok(0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1M").is_err());
        assert_eq!(parse_rate("1000G"), Ok(RATE_MAX_BITS_PER_S));
        assert!(parse_rate("100000000000000000000000")
            .unwrap_err()
            .contains("above 1000G"));
        assert!(parse_rate("1001g").is_err());
        // A zero with a unit is no rate; the message names the word for no pacing.
        assert!(parse_rate("0M").unwrap_err().contains("\"unpaced\""));
        // A bare number is bits per second: the message says so when it is too small.
        let bare = parse_rate("100").unwrap_err();
        assert!(
            bare.contains("below 8 kbit/s") && bare.contains("100M"),
            "{bare}"
        );
        assert!(!parse_rate("1k").unwrap_err().contains("100M"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }
}

/// The UDP port of `loopcastd serve` and `loopcastd direct` when an address names none.
pub const DEFAULT_PORT: u16 = 7700;

/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address, resolved (first address); the port
/// is [`DEFAULT_PORT`] when not given.
pub fn resolve_address(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let with_port = if text.contains(':') {
        text.to_owned()
    } else {
        format!("{text}:{DEFAULT_PORT}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("bad address {text:?}: {e} (use HOST or HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("address {text:?} resolves to nothing"))
}

/// A comma-separated list of addresses (servers or directors), each as [`resolve_address`].
pub fn resolve_addresses(text: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    let addresses: Vec<std::net::SocketAddr> = text
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(resolve_address)
        .collect::<Result<_, _>>()?;
    if addresses.is_empty() {
        return Err("no address given".into());
    }
    Ok(addresses)
}

/// Reads the fleet's shared secret (R15): 64 hex digits (as `loopcastd fleet-key` writes) or
/// at least 16 raw bytes. A file others can read is refused: with it anyone could register a
/// server and take clients.
pub fn load_fleet_key(
    path: &std::path::Path,
) -> Result<loopcast_proto::wire::fleet::FleetKey, String> {
    use std::os::unix::fs::PermissionsExt;
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("fleet key {}: {e}", path.display()))?;
    if metadata.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "fleet key {} is readable by others; chmod 600 it (anyone with it can register a server)",
            path.display()
        ));
    }
    let raw = std::fs::read(path).map_err(|e| format!("fleet key {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&raw);
    let trimmed = text.trim();
    let secret = if trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&trimmed[2 * i..2 * i + 2], 16).expect("hex checked"))
            .collect()
    } else {
        raw
    };
    loopcast_proto::wire::fleet::FleetKey::from_secret(&secret).ok_or_else(|| {
        format!(
            "fleet key {} is too short: at least 16 bytes (make one with `loopcastd fleet-key {}`)",
            path.display(),
            path.display()
        )
    })
}

/// Writes a new fleet key (32 random bytes, hex) to `path`, mode 0600; never replaces a file.
pub fn write_fleet_key(path: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("random source: {e}"))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} exists: a fleet key is never replaced (every server and director holds a copy); remove it first if you mean to make a new one",
                path.display()
            ),
            _ => format!("{}: {e}", path.display()),
        })?;
    writeln!(file, "{hex}")
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod address_tests {
    use super::*;

    #[test]
    fn an_address_without_a_port_gets_the_default_one() {
        assert_eq!(
            resolve_address("127.0.0.1").unwrap(),
            "127.0.0.1:7700".parse().unwrap()
        );
        assert_eq!(
            resolve_address("::1").unwrap(),
            "[::1]:7700".parse().unwrap()
        );
        assert_eq!(
            resolve_address("[::1]").unwrap(),
            "[::1]:7700".parse().unwrap()
        );
        assert_eq!(
            resolve_address("127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(resolve_address("localhost").unwrap().port(), 7700);
        assert_eq!(
            resolve_addresses("127.0.0.1:1, 127.0.0.2").unwrap(),
            vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.2:7700".parse().unwrap()
            ]
        );
        assert!(resolve_addresses(",").is_err());
        assert!(resolve_address("no such host.invalid").is_err());
    }

    #[test]
    fn a_fleet_key_is_made_private_read_back_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lc-fleet-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fleet.key");
        write_fleet_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(load_fleet_key(&path).is_ok());
        let error = write_fleet_key(&path).unwrap_err();
        assert!(error.contains("exists"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_fleet_key(&path).unwrap_err();
        assert!(error.contains("readable by others"), "{error}");
        let short = dir.join("short.key");
        std::fs::write(&short, "abc").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_fleet_key(&short).unwrap_err().contains("too short"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A config file is at most this long: a swapped-in huge file (or /dev/zero) is refused
/// instead of filling the daemon's memory on SIGHUP.
pub const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// The config file's text: a regular file (a FIFO or device would block or never end) of at
/// most [`CONFIG_BYTES_MAX`] bytes.
fn read_config(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(CONFIG_BYTES_MAX + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > CONFIG_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "longer than {CONFIG_BYTES_MAX} bytes"
        )));
    }
    Ok(text)
}

/// The flags a daemon's config file stands for (`loopcastd serve|direct --config FILE`): a
/// TOML table whose keys are the subcommand's long flags (`-` or `_` alike) and whose values
/// are what the flag takes: a string or number, `true` for a switch (false leaves it off), an
/// array for a flag given several times. Unknown keys, and keys the config cannot set (`config`
/// itself, `help`), are errors that name the file and the key.
pub fn config_args(path: &std::path::Path, command: &clap::Command) -> Result<Vec<String>, String> {
    let text = read_config(path).map_err(|e| format!("config {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("config {}: {e}", path.display()))?;
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .filter(|long| long != "config" && long != "help" && long != "version")
        .collect();
    let mut args = Vec::new();
    for (key, value) in &table {
        let flag = key.replace('_', "-");
        if !known.contains(&flag) {
            return Err(format!(
                "config {}: unknown setting {key:?} for `{}` (settings are its long flags: {})",
                path.display(),
                command.get_name(),
                known.join(", ")
            ));
        }
        let scalar = |value: &toml::Value| -> Result<String, String> {
            match value {
                toml::Value::String(text) => Ok(text.clone()),
                toml::Value::Integer(number) => Ok(number.to_string()),
                toml::Value::Float(number) => Ok(number.to_string()),
                other => Err(format!(
                    "config {}: {key} = {other}: expected a string or a number",
                    path.display()
                )),
            }
        };
        match value {
            toml::Value::Boolean(true) => args.push(format!("--{flag}")),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in items {
                    args.push(format!("--{flag}"));
                    args.push(scalar(item)?);
                }
            }
            other => {
                args.push(format!("--{flag}"));
                args.push(scalar(other)?);
            }
        }
    }
    Ok(args)
}

#[cfg(test)]
mod config_tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn command() -> Command {
        Command::new("serve")
            .arg(Arg::new("media").long("media"))
            .arg(
                Arg::new("no_multicast")
                    .long("no-multicast")
                    .action(ArgAction::SetTrue),
            )
            .arg(
                Arg::new("director")
                    .long("director")
                    .action(ArgAction::Append),
            )
            .arg(Arg::new("heartbeat_ms").long("heartbeat-ms"))
            .arg(Arg::new("config").long("config"))
    }

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("lc-config-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_config_file_becomes_the_flags_it_names() {
        let path = write(
            "ok",
            "media = \"/srv/media\"\nno_multicast = true\ndirector = [\"10.0.0.2\", \"10.0.0.3\"]\nheartbeat-ms = 250\n",
        );
        let args = config_args(&path, &command()).unwrap();
        assert_eq!(
            args,
            [
                "--director",
                "10.0.0.2",
                "--director",
                "10.0.0.3",
                "--heartbeat-ms",
                "250",
                "--media",
                "/srv/media",
                "--no-multicast"
            ]
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_settings_and_bad_values_name_the_file_and_the_key() {
        for (name, text, expected) in [
            ("unknown", "medya = \"x\"\n", "unknown setting \"medya\""),
            ("self", "config = \"x\"\n", "unknown setting \"config\""),
            (
                "table",
                "media = { a = 1 }\n",
                "expected a string or a number",
            ),
            ("syntax", "media = \n", "config "),
        ] {
            let path = write(name, text);
            let error = config_args(&path, &command()).unwrap_err();
            assert!(error.contains(expected), "{name}: {error}");
            assert!(
                error.contains(&path.display().to_string()),
                "{name}: {error}"
            );
            std::fs::remove_file(path).unwrap();
        }
        let missing = std::path::Path::new("/nonexistent/loopcastd.toml");
        assert!(config_args(missing, &command())
            .unwrap_err()
            .contains("/nonexistent"));
    }
}

#[cfg(test)]
mod config_size_tests {
    use super::*;

    /// Attack (s6 review): a config swapped for a huge file, or a symlink to /dev/zero, was
    /// read whole on SIGHUP (or at start); it is refused, naming the file.
    #[test]
    fn a_huge_config_or_a_device_is_refused() {
        let command = clap::Command::new("t").arg(clap::Arg::new("listen").long("listen"));
        let path = std::env::temp_dir().join(format!("hx-config-{}.toml", std::process::id()));
        let mut text = "listen = \"127.0.0.1:7700\"\n".to_string();
        while (text.len() as u64) <= CONFIG_BYTES_MAX {
            text.push_str("# padding padding padding padding padding padding padding\n");
        }
        std::fs::write(&path, &text).unwrap();
        let huge = config_args(&path, &command);
        std::fs::write(&path, "listen = \"127.0.0.1:7700\"\n").unwrap();
        let small = config_args(&path, &command);
        std::fs::remove_file(&path).unwrap();
        assert!(
            huge.is_err_and(|e| e.contains("longer than")),
            "huge file refused"
        );
        assert!(small.is_ok(), "{small:?}");
        let device = config_args(std::path::Path::new("/dev/zero"), &command);
        assert!(device.is_err_and(|e| e.contains("not a regular file")));
    }
}
