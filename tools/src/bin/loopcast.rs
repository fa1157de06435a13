//! `loopcast`: the client and packer. See `loopcast --help`.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use loopcast_archive::files::{self, OutputError};
use loopcast_archive::{
    pack, ArchiveError, ArchiveFile, MasterKey, Overwrite, PackOptions, PackPhase,
};
use loopcast_client::{ClientError, FollowError, FollowOptions, KeptPartial};
use loopcast_proto::info::{
    hex, RootHash, Watermark, DATAGRAM_SIZE_MTU_1500, DATAGRAM_SIZE_MTU_9000,
};
use loopcast_store::KeyStore;
use loopcast_tools::{init_logging, parse_size, ByteProgress};

/// Exit codes of `loopcast` (also in docs/architecture.md, "Exit codes").
mod exit_code {
    pub const GENERIC: u8 = 1;
    /// Bad arguments (clap uses 2 for its own).
    pub const USAGE: u8 = 2;
    /// Refused: by the server, or an existing output without --force, or an output another
    /// download holds.
    pub const REFUSED: u8 = 3;
    /// No answer from the server, or no new data for --stall-timeout.
    pub const TIMEOUT: u8 = 4;
    pub const DISK_FULL: u8 = 5;
    /// A hash, root or decryption check failed.
    pub const VERIFICATION: u8 = 6;
    /// Ctrl-C or SIGTERM (partial downloads are kept for resume; partial extracts and packs are
    /// removed).
    pub const INTERRUPTED: u8 = 130;
    /// `get --follow`: the player stopped reading (what a shell reports for a SIGPIPE death);
    /// the partial download is kept for resume.
    pub const BROKEN_PIPE: u8 = 141;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    other error (e.g. an output path that cannot be written: no such directory, no permission)
  2    usage error (bad arguments)
  3    refused: by the server, an existing output (pass --force), or an output another download holds
  4    timeout: no answer from the server, or no new data for --stall-timeout
  5    disk full
  6    verification failed: hash, root or decryption check
  130  interrupted (partial downloads are kept for resume)
  141  get --follow: the player stopped reading (partial download kept for resume); extract
       to a stream: its reader stopped";

/// An error and the exit code it gives.
struct Failure {
    code: u8,
    message: String,
    /// A partial download the failure left on disk (`get --json` reports it).
    partial: Option<KeptPartial>,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            code: exit_code::GENERIC,
            message,
            partial: None,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        message.to_owned().into()
    }
}

/// A bad argument: exit code 2, like clap's own usage errors.
fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: exit_code::USAGE,
        message: message.into(),
        partial: None,
    }
}

fn io_failure(message: String, source: &std::io::Error) -> Failure {
    if files::is_disk_full(source) {
        Failure {
            code: exit_code::DISK_FULL,
            message: format!("disk full: {message}"),
            partial: None,
        }
    } else {
        message.into()
    }
}

impl From<OutputError> for Failure {
    fn from(error: OutputError) -> Failure {
        let code = match error {
            OutputError::Exists(_) => exit_code::REFUSED,
            _ => exit_code::GENERIC,
        };
        Failure {
            code,
            message: error.to_string(),
            partial: None,
        }
    }
}

impl From<ArchiveError> for Failure {
    fn from(error: ArchiveError) -> Failure {
        let message = error.to_string();
        let code = match error {
            ArchiveError::Output(output) => return output.into(),
            ArchiveError::Io { source, .. } => return io_failure(message, &source),
            ArchiveError::DecryptFailed { .. }
            | ArchiveError::Corrupt { .. }
            | ArchiveError::WrongLength { .. } => exit_code::VERIFICATION,
            // A packing option out of range (--level 30, --frame-size 0): a usage error, as
            // clap's own are (it exited 1).
            ArchiveError::InvalidOption(_) => exit_code::USAGE,
            _ => exit_code::GENERIC,
        };
        Failure {
            code,
            message,
            partial: None,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let message = error.to_string();
        let partial = error.kept_partial();
        let code = match error {
            ClientError::Output(output) => return output.into(),
            ClientError::Io { source, .. } => return io_failure(message, &source),
            ClientError::Rejected { .. } | ClientError::Locked { .. } => exit_code::REFUSED,
            ClientError::NoAnswer { .. }
            | ClientError::ServerLost { .. }
            | ClientError::Stalled { .. } => exit_code::TIMEOUT,
            ClientError::NeedsKeys { .. } => exit_code::GENERIC,
            ClientError::FileChanged { .. } => exit_code::VERIFICATION,
            ClientError::DiskFull { .. } | ClientError::DiskFullWhileReceiving { .. } => {
                exit_code::DISK_FULL
            }
            ClientError::RootMismatch { .. } | ClientError::VerificationFailed { .. } => {
                exit_code::VERIFICATION
            }
            ClientError::Interrupted { .. } => exit_code::INTERRUPTED,
            ClientError::FollowStopped { ref source, .. } | ClientError::Follow(ref source) => {
                follow_exit_code(source)
            }
        };
        Failure {
            code,
            message,
            partial,
        }
    }
}

fn follow_exit_code(error: &FollowError) -> u8 {
    match error {
        FollowError::PlayerGone { .. } => exit_code::BROKEN_PIPE,
        FollowError::Interrupted { .. } => exit_code::INTERRUPTED,
        // As `extract -o -` into the same stream says it.
        FollowError::Write(error) if files::is_disk_full(error) => exit_code::DISK_FULL,
        FollowError::Archive(
            ArchiveError::DecryptFailed { .. }
            | ArchiveError::Corrupt { .. }
            | ArchiveError::WrongLength { .. },
        ) => exit_code::VERIFICATION,
        _ => exit_code::GENERIC,
    }
}

/// Set while a pack or extract writes its temporary: an interrupt then removes it and exits
/// (130) at once. Otherwise an interrupt only raises the returned flag (a download saves its
/// state and stops).
static REMOVE_TEMPORARIES_ON_INTERRUPT: AtomicBool = AtomicBool::new(false);

fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if REMOVE_TEMPORARIES_ON_INTERRUPT.load(Ordering::SeqCst) {
            files::remove_live_temporaries();
            eprintln!("loopcast: interrupted; partial output removed");
            std::process::exit(i32::from(exit_code::INTERRUPTED));
        }
        handler_flag.store(true, Ordering::Relaxed);
    });
    flag
}

#[derive(Parser)]
#[command(
    name = "loopcast",
    version,
    about = "loopcast: pack media files into archives and download them from a loopcastd carousel",
    long_about = "loopcast distributes large files to many clients at once by looping each file over UDP \
multicast (or unicast where multicast is unavailable). This tool packs files into archives for a \
server's media database, downloads them (resuming where it stopped), inspects and extracts them, \
and runs a self-contained demo.",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pack a file into an archive (zstd, AES-256-GCM, optional watermark) and store its key.
    #[command(after_help = EXIT_CODES_HELP)]
    Pack(PackArgs),
    /// Show an archive's header, watermark, sizes, hashes and frames.
    Inspect(InspectArgs),
    /// Download a file from a loopcastd server; resumes a partial download.
    ///
    /// Progress goes to stderr: a bar on a terminal; elsewhere (a pipe, a log, the journal) a
    /// line every 10 s ("receiving: 42 % (440.00 MiB of 1.00 GiB), 46.1 MB/s"); none with --json.
    #[command(after_help = EXIT_CODES_HELP)]
    Get(GetArgs),
    /// Decrypt and decompress an archive to the original file, checking its hash.
    #[command(after_help = EXIT_CODES_HELP)]
    Extract(ExtractArgs),
    /// List the files a server (or a fleet's directors) offers: name, size, root.
    Ls(LsArgs),
    /// Run a self-contained demo: a server and several clients on a private network.
    Demo(loopcast_tools::demo::DemoArgs),
}

#[derive(clap::Args)]
struct PackArgs {
    /// The file to pack.
    input: PathBuf,
    /// Archive to write. Default: <media>/<name>.lca with --media, else <input>.lca.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Media database directory (archives + keys.db).
    #[arg(long)]
    media: Option<PathBuf>,
    /// Key database (SQLite, created mode 0600). Default: <media>/keys.db.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Name clients request the file by. Default: the input's file name.
    #[arg(long)]
    name: Option<String>,
    /// Store frames unencrypted (for content that must not be encrypted).
    #[arg(long)]
    no_encrypt: bool,
    /// Watermark: source/owner id bound into every frame.
    #[arg(long)]
    owner: Option<String>,
    /// Watermark: copyright notice (needs --owner).
    #[arg(long, requires = "owner")]
    notice: Option<String>,
    /// Lay datagrams out for a 9000-byte MTU: 8944 bytes each (default: 1440, for a 1500-byte
    /// MTU).
    #[arg(long)]
    jumbo: bool,
    /// Datagram size in bytes, 256-8952, overriding --jumbo. A datagram is a whole UDP
    /// payload: 8952 is the most a 9000-byte MTU path carries over IPv6 (9000 - 40 IPv6 - 8 UDP
    /// header bytes), and fits over IPv4 too; a datagram larger than the path's MTU allows
    /// is fragmented or dropped.
    #[arg(long, value_parser = parse_datagram_size, allow_hyphen_values = true)]
    datagram_size: Option<u16>,
    /// Raw bytes per frame (compression and encryption unit).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    frame_size: u64,
    /// zstd level, 0 to store frames uncompressed.
    #[arg(long, default_value_t = 3)]
    level: i32,
    /// Replace an existing archive at the output path.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct InspectArgs {
    archive: PathBuf,
    /// Also verify every datagram against the hash tree.
    #[arg(long)]
    verify: bool,
    /// List this many frames (0 = none).
    #[arg(long, default_value_t = 8)]
    frames: usize,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct GetArgs {
    /// Where to ask: a server or a director, HOST[:PORT] (port 7700 if not given), e.g.
    /// 10.0.0.5 or dir1.example:7700. Several, comma-separated, are asked in turn (a fleet's
    /// directors): reached through a fleet, a server that stops is replaced by another with the
    /// same file, and the download continues where it was.
    server: String,
    /// The location to prefer when a director chooses the server (a label its servers carry).
    #[arg(long)]
    location: Option<String>,
    /// Name of the file to fetch.
    name: String,
    /// Where to write the archive. Default: ./<name>.lca.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Do not try multicast; ask for unicast at once.
    #[arg(long)]
    unicast: bool,
    /// Local interface address for multicast reception.
    #[arg(long, default_value = "0.0.0.0")]
    multicast_interface: Ipv4Addr,
    /// Expected root hash (64 hex digits); a different offer is refused.
    #[arg(long)]
    root: Option<String>,
    /// After download, extract the original to this path (encrypted files need --keys).
    #[arg(long)]
    extract: Option<PathBuf>,
    /// Play while it downloads: write the original file's bytes, decrypted and in order,
    /// to stdout as soon as each part is verified, asking for the parts nearest the play
    /// position first; e.g. `loopcast get HOST:7700 film.mkv --follow --keys keys.db | mpv -`.
    /// The archive is still published at --output when complete. Encrypted files need --keys.
    /// Progress, logs and the report go to stderr. If the player stops reading, the download
    /// stops and is kept for resume (exit 141).
    #[arg(long, conflicts_with = "extract")]
    follow: bool,
    /// Key database for --extract and --follow.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Give up after this many seconds without new data (partial file kept). A server's first
    /// answer is waited for this long too, but at most 10 s (then the next server is asked).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    stall_timeout: u64,
    /// Replace an existing output (and --extract target) instead of refusing.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON (on stderr with --follow); on failure (bad arguments too),
    /// {"verified": false, "error": ..., "exit_code": ..., "partial": ...} (the message is also on stderr;
    /// "partial" is a partial download kept for resume, or null). Every field is described in
    /// docs/architecture.md ("What `loopcast get --json` reports").
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ExtractArgs {
    archive: PathBuf,
    /// Where to write the original: a file (written beside it, verified, then renamed into
    /// place), or "-" (or /dev/stdout, a pipe, a device) to stream it. A stream gets each
    /// frame's bytes as soon as they are decoded (encrypted frames authenticated first); the
    /// whole file's size and hash are checked at the end, and a mismatch exits 6; a reader that
    /// stops early (a broken pipe) ends it with exit 141.
    #[arg(short, long)]
    output: PathBuf,
    /// Key database holding the archive's key (not needed for unencrypted archives).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Replace an existing output instead of refusing.
    #[arg(long)]
    force: bool,
}

/// Where `extract` writes: a file, or a stream.
#[derive(Clone, Copy)]
enum ExtractOutput {
    File,
    Stdout,
    /// An existing FIFO or character device (not reached through a symlink), written in order.
    Device,
}

impl ExtractOutput {
    fn of(path: &Path) -> ExtractOutput {
        use std::os::unix::fs::FileTypeExt;
        if path == Path::new("-") || path == Path::new("/dev/stdout") {
            return ExtractOutput::Stdout;
        }
        match std::fs::symlink_metadata(path).map(|m| m.file_type()) {
            Ok(kind) if kind.is_fifo() || kind.is_char_device() => ExtractOutput::Device,
            _ => ExtractOutput::File,
        }
    }
}

#[derive(clap::Args)]
struct LsArgs {
    /// A server or director, HOST[:PORT] (port 7700 if not given); several, comma-separated,
    /// are asked in turn.
    server: String,
    /// One JSON array of {name, bytes, root}.
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds without an answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

fn run_ls(args: LsArgs) -> Result<(), Failure> {
    let addresses = loopcast_tools::resolve_addresses(&args.server).map_err(usage)?;
    let files = loopcast_client::list(&addresses, std::time::Duration::from_secs(args.timeout))?;
    if args.json {
        let list: Vec<serde_json::Value> = files
            .iter()
            .map(|f| serde_json::json!({"name": f.name, "bytes": f.bytes, "root": f.root.to_hex()}))
            .collect();
        println!("{}", serde_json::Value::from(list));
        return Ok(());
    }
    println!("{:<40} {:>16}  ROOT", "NAME", "BYTES");
    for file in &files {
        println!(
            "{:<40} {:>16}  {}",
            file.name,
            file.bytes,
            file.root.to_hex()
        );
    }
    if files.is_empty() {
        println!("(no files)");
    }
    Ok(())
}

fn main() -> ExitCode {
    loopcast_tools::exit_cleanly_on_stdout_errors(run)
}

fn run() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() && get_has_flag(&argv, "--json") => {
            return get_json_usage_error(&argv, &error);
        }
        // Help, version, and other usage errors: as every loopcast tool says them.
        Err(_) => loopcast_tools::parse_command_line::<Cli>(argv),
    };
    if let Command::Demo(args) = &cli.command {
        // The demo may enter a private network namespace: that must happen while single-threaded.
        return loopcast_tools::demo::run(args);
    }
    init_logging("warn");
    let interrupted = interrupt_flag();
    let result = match cli.command {
        Command::Pack(args) => run_pack(args),
        Command::Inspect(args) => run_inspect(args),
        Command::Get(args) => run_get(args, interrupted),
        Command::Extract(args) => run_extract(args),
        Command::Ls(args) => run_ls(args),
        Command::Demo(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("loopcast: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Whether `argv` is `loopcast get` with `flag` among its options (before any `--`).
fn get_has_flag(argv: &[std::ffi::OsString], flag: &str) -> bool {
    argv.get(1).is_some_and(|command| command == "get")
        && argv[2..]
            .iter()
            .take_while(|arg| *arg != "--")
            .any(|arg| arg == flag)
}

/// A usage error of `get --json`: the one JSON object scripts are promised whatever happened
/// (clap's text alone left a script nothing to read), on stdout, or on stderr with `--follow`
/// (stdout is the player's); clap's text on stderr as always. Exit code 2.
fn get_json_usage_error(argv: &[std::ffi::OsString], error: &clap::Error) -> ExitCode {
    let rendered = error.render().to_string();
    // Its first paragraph (the error and what it names), without the usage and help lines.
    let message = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let failure = Failure {
        code: exit_code::USAGE,
        message: message.trim_start_matches("error: ").to_owned(),
        partial: None,
    };
    print_get_failure_json(&failure, get_has_flag(argv, "--follow"));
    eprintln!("{}", rendered.trim_end());
    ExitCode::from(exit_code::USAGE)
}

fn run_pack(args: PackArgs) -> Result<(), Failure> {
    if !args.input.is_file() {
        return Err(format!("{}: no such file", args.input.display()).into());
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .input
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("input has no usable file name; pass --name")?
            .to_owned(),
    };
    let output = match (&args.output, &args.media) {
        (Some(output), _) => output.clone(),
        (None, Some(media)) => media.join(format!("{name}.lca")),
        (None, None) => PathBuf::from(format!("{}.lca", args.input.display())),
    };
    let overwrite = Overwrite::from_force(args.force);
    if let Some(media) = &args.media {
        std::fs::create_dir_all(media)
            .map_err(|e| format!("cannot create {}: {e}", media.display()))?;
    }
    // Before a key is made or stored: the output is usable (and absent unless --force).
    files::check_output(&output, overwrite)?;
    let keys_path = args
        .keys
        .clone()
        .or_else(|| args.media.as_ref().map(|m| m.join("keys.db")));
    let (store, master_key) = if args.no_encrypt {
        (None, None)
    } else {
        let path = keys_path.ok_or(
            "encrypted archives need a key database: pass --keys or --media (or --no-encrypt)",
        )?;
        let store = KeyStore::open(&path, true).map_err(|e| e.to_string())?;
        let key = MasterKey::generate().map_err(|e| format!("no OS randomness: {e}"))?;
        (Some(store), Some(key))
    };
    // (Not for the size --jumbo gives.)
    let overriding = args
        .datagram_size
        .filter(|&size| size != DATAGRAM_SIZE_MTU_9000);
    if let (Some(size), true) = (overriding, args.jumbo) {
        eprintln!("loopcast: note: --datagram-size {size} overrides --jumbo");
    }
    let datagram_size = args.datagram_size.unwrap_or(if args.jumbo {
        DATAGRAM_SIZE_MTU_9000
    } else {
        DATAGRAM_SIZE_MTU_1500
    });
    // Past what a 1500-byte MTU carries, a size (by hand or --jumbo) needs a larger MTU on
    // every path to every client (1500 itself was taken with no word, and is fragmented or
    // dropped there).
    const MTU_1500_PAYLOAD_MAX: u16 = 1500 - 40 - 8;
    if datagram_size > MTU_1500_PAYLOAD_MAX {
        eprintln!(
            "loopcast: note: {datagram_size}-byte datagrams do not fit every 1500-byte MTU path ({MTU_1500_PAYLOAD_MAX} \
             bytes at most over IPv6, 1472 over IPv4): every path to a client needs an MTU of at least {} \
             (over IPv6; {} over IPv4)",
            datagram_size + 48,
            datagram_size + 28
        );
    }
    let frame_raw_size = u32::try_from(args.frame_size).map_err(|_| "frame size too large")?;
    let options = PackOptions {
        name: name.clone(),
        frame_raw_size,
        datagram_size,
        compression_level: args.level,
        master_key,
        watermark: args.owner.clone().map(|owner| Watermark {
            owner,
            notice: args.notice.clone().unwrap_or_default(),
        }),
    };
    let input_len = std::fs::metadata(&args.input).map(|m| m.len()).unwrap_or(0);
    let progress = ByteProgress::new(input_len, "packing", args.json);
    REMOVE_TEMPORARIES_ON_INTERRUPT.store(true, Ordering::SeqCst);
    let summary = pack(&args.input, &output, &options, overwrite, &|p| {
        if let PackPhase::Datagrams = p.phase {
            progress.set_message("datagrams");
        }
        progress.update(p.done, p.total);
    });
    REMOVE_TEMPORARIES_ON_INTERRUPT.store(false, Ordering::SeqCst);
    let summary = summary?;
    progress.finish();
    if let (Some(store), Some(key)) = (&store, &options.master_key) {
        if let Err(error) = store.put(&summary.info.file_id.to_string(), &name, key) {
            let _ = std::fs::remove_file(&output);
            return Err(
                format!("{error}; archive removed, since its key could not be stored").into(),
            );
        }
    }
    let info = &summary.info;
    let seconds = summary.elapsed.as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "archive": output.display().to_string(),
                "name": info.name,
                "file_id": info.file_id.to_string(),
                "root": info.root().to_hex(),
                "original_bytes": info.original_size,
                "archive_bytes": summary.archive_bytes,
                "encrypted": info.encrypted,
                "frames_compressed": summary.frames_compressed,
                "frames_raw": summary.frames_raw,
                "seconds": seconds,
                "mb_per_s": info.original_size as f64 / 1e6 / seconds.max(1e-9),
            })
        );
    } else {
        println!("packed {} -> {}", args.input.display(), output.display());
        println!("  name      {}", info.name);
        println!("  file id   {}", info.file_id);
        println!("  root      {}", info.root().to_hex());
        println!(
            "  size      {} -> {} bytes ({:+.1}%)",
            info.original_size,
            summary.archive_bytes,
            (summary.archive_bytes as f64 / info.original_size.max(1) as f64 - 1.0) * 100.0
        );
        println!(
            "  frames    {} compressed, {} raw; {}",
            summary.frames_compressed,
            summary.frames_raw,
            if info.encrypted {
                "AES-256-GCM"
            } else {
                "not encrypted"
            }
        );
        println!(
            "  speed     {:.1} MB/s ({seconds:.2} s)",
            info.original_size as f64 / 1e6 / seconds.max(1e-9)
        );
    }
    Ok(())
}

fn run_inspect(args: InspectArgs) -> Result<(), Failure> {
    let archive = ArchiveFile::open(&args.archive)?;
    let info = archive.info().clone();
    let shape = archive.shape().clone();
    let mut frames = Vec::new();
    let mut frames_compressed = 0u64;
    let mut stored_total = 0u64;
    archive.for_each_frame(|header, stored| {
        frames_compressed += u64::from(header.is_compressed());
        stored_total += stored.len() as u64;
        if frames.len() < args.frames {
            frames.push(header);
        }
        Ok(())
    })?;
    let verified = if args.verify {
        Some(archive.verify().map(|()| true)?)
    } else {
        None
    };
    let archive_bytes = loopcast_archive::format::archive_len(&info);
    let hash_blocks = info.loop_len - info.data_datagram_count;
    if args.json {
        let frame_list: Vec<_> = frames.iter().map(|f| serde_json::json!({
            "index": f.index, "raw_len": f.raw_len, "stored_len": f.stored_len,
            "compressed": f.is_compressed(), "encrypted": f.is_encrypted(), "watermarked": f.is_watermarked(),
        })).collect();
        println!(
            "{}",
            serde_json::json!({
                "archive": args.archive.display().to_string(),
                "name": info.name, "file_id": info.file_id.to_string(), "root": info.root().to_hex(),
                "encrypted": info.encrypted,
                "watermark": info.watermark.as_ref().map(|w| serde_json::json!({"owner": w.owner, "notice": w.notice})),
                "original_bytes": info.original_size, "original_blake3": hex(&info.original_hash),
                "archive_bytes": archive_bytes, "frame_raw_size": info.frame_raw_size, "frames": info.frame_count,
                "frames_compressed": frames_compressed, "datagram_size": info.datagram_size,
                "data_datagrams": info.data_datagram_count, "hash_blocks": hash_blocks, "loop_len": info.loop_len,
                "tree_depth": shape.depth(), "verified": verified, "frame_list": frame_list,
            })
        );
        return Ok(());
    }
    println!("archive      {}", args.archive.display());
    println!("name         {}", info.name);
    println!("file id      {}", info.file_id);
    println!("root         {}", info.root().to_hex());
    println!(
        "encrypted    {}",
        if info.encrypted {
            "yes (AES-256-GCM, per-frame keys via HKDF-SHA256)"
        } else {
            "no"
        }
    );
    match &info.watermark {
        Some(mark) => println!(
            "watermark    owner {:?}, notice {:?}",
            mark.owner, mark.notice
        ),
        None => println!("watermark    none"),
    }
    println!(
        "original     {} bytes, BLAKE3 {}",
        info.original_size,
        hex(&info.original_hash)
    );
    println!(
        "frames       {} of {} bytes raw; {} compressed, {} stored raw; {} bytes stored",
        info.frame_count,
        info.frame_raw_size,
        frames_compressed,
        info.frame_count - frames_compressed,
        stored_total
    );
    println!(
        "datagrams    {} bytes each: {} data + {} hash blocks = {} per loop (tree depth {})",
        info.datagram_size,
        info.data_datagram_count,
        hash_blocks,
        info.loop_len,
        shape.depth()
    );
    println!(
        "size         {} bytes on disk; overhead {:+.2}% vs original",
        archive_bytes,
        (archive_bytes as f64 / info.original_size.max(1) as f64 - 1.0) * 100.0
    );
    if let Some(verified) = verified {
        println!(
            "verified     {}",
            if verified {
                "every datagram matches the hash tree and root"
            } else {
                "FAILED"
            }
        );
    }
    for frame in &frames {
        println!(
            "  frame {:>6}: raw {:>8} stored {:>8}{}{}{}",
            frame.index,
            frame.raw_len,
            frame.stored_len,
            if frame.is_compressed() {
                " zstd"
            } else {
                " raw"
            },
            if frame.is_encrypted() { " sealed" } else { "" },
            if frame.is_watermarked() {
                " watermarked"
            } else {
                ""
            }
        );
    }
    if info.frame_count as usize > frames.len() && !frames.is_empty() {
        println!(
            "  ... {} more frames",
            info.frame_count as usize - frames.len()
        );
    }
    Ok(())
}

fn run_get(args: GetArgs, cancel: Arc<AtomicBool>) -> Result<(), Failure> {
    let (json, follow) = (args.json, args.follow);
    let result = run_get_inner(args, cancel);
    if let (true, Err(failure)) = (json, &result) {
        print_get_failure_json(failure, follow);
    }
    result
}

/// Scripts get one JSON object whatever happened (interrupted, refused, timed out, bad
/// arguments), on stdout, or on stderr where stdout carries the file (--follow). With the
/// partial download it kept, where and how much (the message says it in words): null where
/// nothing was kept.
fn print_get_failure_json(failure: &Failure, follow: bool) {
    let partial = failure.partial.as_ref();
    let datagrams = partial.and_then(|kept| kept.datagrams);
    let line = serde_json::json!({
        "verified": false,
        "error": failure.message,
        "exit_code": failure.code,
        "partial": partial.map(|kept| kept.path.display().to_string()),
        "held_datagrams": datagrams.map(|(held, _)| held),
        "total_datagrams": datagrams.map(|(_, total)| total),
    });
    if follow {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

fn run_get_inner(args: GetArgs, cancel: Arc<AtomicBool>) -> Result<(), Failure> {
    let mut servers = loopcast_tools::resolve_addresses(&args.server).map_err(usage)?;
    let server = servers.remove(0);
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.lca", args.name)));
    let mut config = loopcast_client::GetConfig::new(server, &args.name, output.clone());
    config.alternates = servers;
    if let Some(location) = &args.location {
        if location.len() > loopcast_proto::wire::control::LOCATION_LEN_MAX {
            return Err(usage(format!(
                "--location is longer than {} bytes",
                loopcast_proto::wire::control::LOCATION_LEN_MAX
            )));
        }
        config.location = location.clone();
    }
    config.allow_multicast = !args.unicast;
    config.multicast_interface = args.multicast_interface;
    config.stall_timeout = std::time::Duration::from_secs(args.stall_timeout);
    config.request_timeout = config.request_timeout.min(config.stall_timeout);
    config.force = args.force;
    if let Some(path) = &args.extract {
        // Before downloading: the extract target is usable too.
        files::check_output(path, Overwrite::from_force(args.force))?;
        // Without a key database only an unencrypted file can be extracted: find out from
        // the Offer, before receiving anything.
        config.needs_unencrypted = args.keys.is_none();
    }
    let follow = if args.follow {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            return Err(usage(
                "--follow writes the file's bytes to stdout, which is a terminal: pipe it into a player or a file",
            ));
        }
        // Without a key database only an unencrypted file can be played: refused at the Offer.
        config.needs_unencrypted = args.keys.is_none();
        let stdout = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("cannot use stdout: {e}"))?;
        let keys = args.keys.clone();
        Some(FollowOptions {
            // Unbuffered: each frame goes to the player as one write.
            sink: Box::new(std::fs::File::from(stdout)),
            key_for: Box::new(move |info| {
                if !info.encrypted {
                    return Ok(None);
                }
                let keys = keys.ok_or("no key database (--keys)")?;
                let store = KeyStore::open(&keys, false).map_err(|e| e.to_string())?;
                store
                    .get(&info.file_id.to_string())
                    .map(Some)
                    .map_err(|e| e.to_string())
            }),
        })
    } else {
        None
    };
    if let Some(root) = &args.root {
        config.expect_root =
            Some(RootHash::from_hex(root).ok_or_else(|| usage("--root must be 64 hex digits"))?);
    }
    let progress = ByteProgress::new(0, "receiving", args.json);
    let report = loopcast_client::get_following(&config, follow, &cancel, &mut |p| {
        progress.update(
            p.archive_bytes * u64::from(p.held) / u64::from(p.total.max(1)),
            p.archive_bytes,
        );
    })
    .map_err(|error| {
        let mut failure = match error {
            ClientError::Output(OutputError::Exists(path)) if path == output => {
                let play = args.follow.then_some(args.keys.as_deref());
                already_downloaded(&path, &args.name, config.expect_root, play)
            }
            error => Failure::from(error),
        };
        if cancel.load(Ordering::Relaxed) {
            // Interrupted while asking, too (that ends as "no answer").
            failure.code = exit_code::INTERRUPTED;
        }
        failure
    })?;
    progress.finish();
    let mut extracted = None;
    if let Some(path) = &args.extract {
        extract_to(&output, path, args.keys.as_deref(), args.force)?;
        extracted = Some(path.clone());
    }
    let seconds = report.elapsed.as_secs_f64();
    // The speed is of what this run received: a resumed download's earlier part is not.
    let loop_len = u64::from(report.info.loop_len.max(1));
    let received_now = report.archive_bytes
        * (loop_len - u64::from(report.resumed_datagrams).min(loop_len))
        / loop_len;
    let mb_per_s = received_now as f64 / 1e6 / seconds.max(1e-9);
    // With --follow, stdout carries the file: the report goes to stderr.
    let mut text = String::new();
    if args.json {
        use std::fmt::Write;
        let _ = writeln!(
            text,
            "{}",
            serde_json::json!({
                "archive": output.display().to_string(), "name": report.info.name, "root": report.root.to_hex(),
                "transport": report.transport.to_string(), "transport_note": report.transport_note,
                "join_serial": report.join_serial, "resumed_datagrams": report.resumed_datagrams,
                "bytes": report.archive_bytes, "seconds": seconds,
                "mb_per_s": mb_per_s,
                "dropped": report.counters.dropped_total(), "duplicates": report.counters.duplicates,
                "naks_sent": report.naks_sent, "serials_naked": report.serials_naked,
                "serials_suppressed": report.serials_suppressed,
                "serials_left_to_loop": report.serials_left_to_loop,
                "first_datagram_seconds": report.first_datagram_after.map(|d| d.as_secs_f64()),
                "publish_seconds": report.publish_time.as_secs_f64(), "replaced": report.replaced,
                "final_check_seconds": report.final_check_time.as_secs_f64(),
                "groups_checked_while_receiving": report.groups_checked_while_receiving,
                "groups_compared_while_receiving": report.groups_compared_while_receiving,
                "groups": report.groups,
                "verified": true, "extracted": extracted.map(|p| p.display().to_string()),
                "session_rerequests": report.session_rerequests,
                "server": report.server.to_string(), "failovers": report.failovers,
                "data_again_after_failover_unix_ms": report.data_again_after_failover_unix_ms,
                "foreign_source_dropped": report.foreign_source_dropped,
                "receiver": receiver_counters_json(&report.counters),
                "tier": report.tier.map(|t| t.tier), "tiers": report.tier.map(|t| t.tiers),
                "tier_rate_bits_per_s": report.tier.map(|t| t.rate_bits_per_s),
                "tier_moves": report.tier_moves,
                "rtt_us": report.rtt.map(|r| r.as_micros() as u64),
                "played_bytes": args.follow.then_some(report.played_bytes),
                "first_play_seconds": report.first_play_after.map(|d| d.as_secs_f64()),
            })
        );
    } else {
        use std::fmt::Write;
        if report.resumed_datagrams > 0 {
            // The speed is of this run's bytes only: say so, and what they were.
            let _ = writeln!(
                text,
                "received {} ({} bytes) in {seconds:.2} s over {} ({}): {mb_per_s:.1} MB/s over this run's {:.1} MB ({:.1} MB were already held)",
                output.display(),
                report.archive_bytes,
                report.transport,
                report.transport_note,
                received_now as f64 / 1e6,
                (report.archive_bytes - received_now) as f64 / 1e6
            );
        } else {
            let _ = writeln!(
                text,
                "received {} ({} bytes) in {seconds:.2} s, {mb_per_s:.1} MB/s over {} ({})",
                output.display(),
                report.archive_bytes,
                report.transport,
                report.transport_note
            );
        }
        let _ = writeln!(text, "  verified against root {}", report.root.to_hex());
        if report.replaced {
            let _ = writeln!(
                text,
                "  replaced the file that was at {} (--force)",
                output.display()
            );
        }
        if report.server.to_string() != args.server || report.failovers > 0 {
            let _ = writeln!(
                text,
                "  from {}{}",
                report.server,
                match report.failovers {
                    0 => String::new(),
                    1 => " (after 1 server failed and another continued)".to_owned(),
                    n => format!(" (after {n} servers failed and others continued)"),
                }
            );
        }
        if let Some(tier) = report.tier {
            let _ = writeln!(
                text,
                "  speed tier {} of {} at {} ({} move{}){}",
                tier.tier + 1,
                tier.tiers,
                loopcast_tools::format_rate(tier.rate_bits_per_s),
                report.tier_moves,
                if report.tier_moves == 1 { "" } else { "s" },
                report
                    .rtt
                    .map(|r| format!(", round trip {:.2} ms", r.as_secs_f64() * 1e3))
                    .unwrap_or_default()
            );
        }
        if report.resumed_datagrams > 0 {
            let _ = writeln!(
                text,
                "  resumed: {} of {} datagrams already held ({:.1} %)",
                report.resumed_datagrams,
                report.info.loop_len,
                f64::from(report.resumed_datagrams) * 100.0 / loop_len as f64
            );
        }
        let dropped = report.counters.dropped_total();
        if dropped > 0 {
            let _ = writeln!(
                text,
                "  dropped {dropped} bad or foreign datagrams (see counters with RUST_LOG=debug)"
            );
        }
        if let Some(path) = extracted {
            let _ = writeln!(text, "  extracted to {}", path.display());
        }
        if args.follow {
            let _ = write!(text, "  played {} bytes to stdout", report.played_bytes);
            if let (Some(play), Some(first)) =
                (report.first_play_after, report.first_datagram_after)
            {
                let _ = write!(
                    text,
                    "; the first {:.2} s after the first datagram",
                    play.saturating_sub(first).as_secs_f64()
                );
            }
            let _ = writeln!(text);
        }
    }
    if args.follow {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    Ok(())
}

/// `pack --datagram-size`: a number of bytes `pack` lays datagrams out at (the message gives
/// the range and why).
fn parse_datagram_size(text: &str) -> Result<u16, String> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let bytes: u64 = match text.parse() {
        Ok(bytes) => bytes,
        // Digits beyond u64 are a size, far too large (it said "not a number of bytes").
        Err(_) if digits(text) => u64::MAX,
        // (Without allow_hyphen_values, clap took "-1" for an option and offered `-- -1`.)
        Err(_) if text.strip_prefix('-').is_some_and(digits) => {
            return Err(format!("{text:?} is not a size: it must be positive"))
        }
        Err(_) => return Err(format!("{text:?} is not a number of bytes")),
    };
    loopcast_archive::check_datagram_size(bytes).map_err(|error| {
        if bytes == u64::MAX {
            error.replace(&u64::MAX.to_string(), text)
        } else {
            error
        }
    })?;
    Ok(u16::try_from(bytes).expect("the accepted range is within u16"))
}

/// `get` to an output that exists: most likely this download (`name`), finished and
/// published by an earlier run. Says how to download it again (--force) and which version it
/// holds, and with `--follow` (`play`: `Some(keys)`) how to play it (`extract -o -`, with the
/// real paths); an archive of another file says which file it holds (it was given the hint to
/// play that one), and one of another version of it than `--root` asks for says so (it too
/// was given the hint); anything but an archive gets the plain refusal.
fn already_downloaded(
    archive: &Path,
    name: &str,
    expect_root: Option<RootHash>,
    play: Option<Option<&Path>>,
) -> Failure {
    let mut failure = already_downloaded_as_it_is(archive, name, expect_root, play);
    // A download with --force that stopped leaves its partial file beside the old output, and
    // only --force gets back to it (new-user review: the refusal never said it was there).
    let part = loopcast_archive::files::with_suffix(archive, ".part");
    if part.symlink_metadata().is_ok() {
        failure.message.push_str(&format!(
            "; a partial download is kept beside it in {}: with --force the download resumes from it",
            part.display()
        ));
    }
    failure
}

/// [`already_downloaded`], without a word on a partial download beside it.
fn already_downloaded_as_it_is(
    archive: &Path,
    name: &str,
    expect_root: Option<RootHash>,
    play: Option<Option<&Path>>,
) -> Failure {
    let refused = Failure::from(OutputError::Exists(archive.to_owned()));
    let Ok(existing) = ArchiveFile::open(archive) else {
        return refused;
    };
    if existing.info().name != name {
        return Failure {
            code: refused.code,
            message: format!(
                "{} already exists and holds another file ({:?}, not {name:?}); choose another --output, or add --force to replace it",
                archive.display(),
                existing.info().name
            ),
            partial: None,
        };
    }
    if let Some(root) = expect_root.filter(|&root| root != existing.info().root()) {
        return Failure {
            code: refused.code,
            message: format!(
                "{} already exists and holds another version of {name:?} (root {}, not the --root {}); choose another --output, or add --force to replace it",
                archive.display(),
                existing.info().root().to_hex(),
                root.to_hex()
            ),
            partial: None,
        };
    }
    // What the root it holds says: the version --root names, or maybe an older one.
    let version = if expect_root.is_some() {
        format!(
            "it is the version --root names; it was verified when it was downloaded, not now (loopcast inspect --verify {} checks it again)",
            shell_word(&archive.display().to_string())
        )
    } else {
        OLDER_VERSION_HINT.to_owned()
    };
    let Some(keys) = play else {
        return Failure {
            code: refused.code,
            message: format!(
                "{} already exists (downloaded before?) and holds root {} of {name:?}; to download it again, add --force; {version}",
                archive.display(),
                existing.info().root().to_hex()
            ),
            partial: None,
        };
    };
    let keys = match (existing.info().encrypted, keys) {
        (false, _) => String::new(),
        (true, Some(keys)) => format!(" --keys {}", shell_word(&keys.display().to_string())),
        (true, None) => " --keys KEYS.db".to_owned(),
    };
    Failure {
        code: refused.code,
        message: format!(
            "{} already exists (downloaded before?); to play it: loopcast extract {} -o -{keys} | mpv - (or another player reading stdin); to download it again, add --force. It holds root {} of {name:?}: {version}",
            archive.display(),
            shell_word(&archive.display().to_string()),
            existing.info().root().to_hex()
        ),
        partial: None,
    }
}

/// After the root an existing copy holds: how to tell it from the version served now.
const OLDER_VERSION_HINT: &str = "if `loopcast ls` shows another root for it now, that copy is an older version (get --root ROOT says at once whether a copy holds that version)";

/// `word` as one shell word: as it is if it holds only characters no shell treats specially,
/// else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The receiver's counters in `get --json`: what arrived, and why anything was dropped.
fn receiver_counters_json(c: &loopcast_proto::receiver::ReceiverCounters) -> serde_json::Value {
    serde_json::json!({
        "received": c.received, "stored": c.stored, "duplicates": c.duplicates,
        "dropped_malformed": c.dropped_malformed, "dropped_foreign": c.dropped_foreign,
        "dropped_wrong_size": c.dropped_wrong_size, "dropped_bad_position": c.dropped_bad_position,
        "dropped_hash_mismatch": c.dropped_hash_mismatch, "dropped_pending_full": c.dropped_pending_full,
        "dropped_pending_conflict": c.dropped_pending_conflict,
        "dropped_pending_duplicate": c.dropped_pending_duplicate, "pending_rejected": c.pending_rejected,
    })
}

fn extract_to(
    archive_path: &Path,
    output: &Path,
    keys: Option<&Path>,
    force: bool,
) -> Result<(u64, ExtractOutput), Failure> {
    let archive = ArchiveFile::open(archive_path)?;
    let key = if archive.info().encrypted {
        let keys = keys.ok_or_else(|| {
            format!(
                "{} is encrypted: pass --keys with its key database",
                archive_path.display()
            )
        })?;
        let store = KeyStore::open(keys, false).map_err(|e| e.to_string())?;
        Some(
            store
                .get(&archive.info().file_id.to_string())
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let destination = ExtractOutput::of(output);
    if matches!(destination, ExtractOutput::Stdout)
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(usage(
            "stdout is a terminal: pipe the original into a file or a player, or name a file with -o",
        ));
    }
    let progress = ByteProgress::new(archive.info().original_size, "extracting", false);
    let report = |done, total| progress.update(done, total);
    let summary = match destination {
        ExtractOutput::File => {
            REMOVE_TEMPORARIES_ON_INTERRUPT.store(true, Ordering::SeqCst);
            let summary =
                archive.extract(key.as_ref(), output, Overwrite::from_force(force), &report);
            REMOVE_TEMPORARIES_ON_INTERRUPT.store(false, Ordering::SeqCst);
            summary
        }
        ExtractOutput::Stdout => {
            let mut stdout = std::io::stdout().lock();
            archive.extract_to_stream(key.as_ref(), &mut stdout, &report)
        }
        ExtractOutput::Device => {
            let mut device = std::fs::OpenOptions::new()
                .write(true)
                .open(output)
                .map_err(|e| format!("cannot open {}: {e}", output.display()))?;
            archive.extract_to_stream(key.as_ref(), &mut device, &report)
        }
    };
    // A reader that stopped early (`| head`): exit 141, as a shell pipeline's
    // writer would, not a generic failure.
    if let Err(ArchiveError::Io { source, .. }) = &summary {
        if source.kind() == std::io::ErrorKind::BrokenPipe {
            progress.finish();
            return Err(Failure {
                code: exit_code::BROKEN_PIPE,
                message: "the reader of the output stopped (broken pipe)".into(),
                partial: None,
            });
        }
    }
    let summary = summary?;
    progress.finish();
    Ok((summary.bytes, destination))
}

fn run_extract(args: ExtractArgs) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let (bytes, destination) = extract_to(
        &args.archive,
        &args.output,
        args.keys.as_deref(),
        args.force,
    )?;
    // On stderr when stdout carries the original.
    let line = format!(
        "extracted {} -> {} ({bytes} bytes, hash verified) in {:.2} s",
        args.archive.display(),
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    match destination {
        ExtractOutput::Stdout => eprintln!("{line}"),
        ExtractOutput::File | ExtractOutput::Device => println!("{line}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_word_quotes_only_what_a_shell_would_split_or_expand() {
        assert_eq!(shell_word("/srv/media/film.lca"), "/srv/media/film.lca");
        assert_eq!(shell_word("my film.lca"), "'my film.lca'");
        assert_eq!(shell_word("it's.lca"), r"'it'\''s.lca'");
        assert_eq!(shell_word("$HOME/*.lca"), "'$HOME/*.lca'");
        assert_eq!(shell_word(""), "''");
    }
}
