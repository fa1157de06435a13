//! `loopcast-bench e2e`: whole files from a server to R receivers, each in its own network
//! namespace on a bridge (created here, removed on drop), verified; and the same file moved by
//! UFTP and udpcast over the same topology when they are installed (`peers`). Reports wall time,
//! Gbit/s, CPU seconds per GB on the sending and the receiving side, the bytes the server's
//! interface sent, and per receiver its time, goodput and counters.
//!
//! With `--link-rates 5M,50M,500M,0` each receiver is behind a `tc tbf` link of that rate
//! (0: unlimited; [`BridgeTopology::set_link_rate`]), and each receiver's time is set against
//! the targets (issue 10): within 1.3 x (file size / its link rate), and for an unlimited receiver
//! among limited ones, within 1.3 x its time alone (run first, on the same bed). Without
//! `--rate`, loopcastd is started without one: its automatic rates are what is measured.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::hash_file;
use crate::topology::BridgeTopology;

pub struct E2eArgs {
    /// Receivers behind unlimited links (ignored when `link_rates` is given).
    pub receivers: usize,
    pub size: u64,
    pub jumbo: bool,
    /// loopcast's `--rate`; None: loopcastd is started without it (its automatic rates).
    pub rate: Option<String>,
    /// One receiver per entry, behind a `tc tbf` link of that rate in bits/s (0: unlimited).
    pub link_rates: Vec<u64>,
    /// Random loss in percent on receiver `i`'s link (missing entries: none).
    pub link_loss: Vec<u8>,
    /// Peer tools to run after loopcast: any of "uftp", "udpcast".
    pub peers: Vec<String>,
    pub timeout: Duration,
}

impl E2eArgs {
    /// The link rate of each receiver, in order (receiver `i` is host `i + 1`).
    fn links(&self) -> Vec<u64> {
        if self.link_rates.is_empty() {
            vec![0; self.receivers.max(1)]
        } else {
            self.link_rates.clone()
        }
    }

    /// The loss of each receiver's link in percent, one per receiver.
    fn losses(&self, receivers: usize) -> Vec<u8> {
        (0..receivers)
            .map(|i| self.link_loss.get(i).copied().unwrap_or(0))
            .collect()
    }
}

/// A per-receiver list on the command line: values separated by commas, each repeated N times
/// with a trailing `xN` (`50Mx10` is ten receivers at 50 Mbit/s; `20,0x9` is one at 20 % loss
/// and nine without).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerReceiver<T>(pub Vec<T>);

/// Most receivers one list may describe (the bed's /24 holds at most 200).
const PER_RECEIVER_MAX: usize = 200;

impl<T: Clone> PerReceiver<T> {
    pub fn parse(text: &str, value: impl Fn(&str) -> Result<T, String>) -> Result<Self, String> {
        let mut values = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let (one, times) = match item.rsplit_once(['x', 'X']) {
                Some((one, times))
                    if !times.is_empty() && times.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    let times: usize = times
                        .parse()
                        .map_err(|_| format!("bad repeat count in {item:?}"))?;
                    (one, times)
                }
                _ => (item, 1),
            };
            if times == 0 || values.len() + times > PER_RECEIVER_MAX {
                return Err(format!(
                    "{item:?}: between 1 and {PER_RECEIVER_MAX} receivers in all"
                ));
            }
            let one = value(one)?;
            values.extend(std::iter::repeat_n(one, times));
        }
        Ok(PerReceiver(values))
    }
}

/// The most loss a link may be given, percent (nftables' `numgen random mod 100` draws 0-99).
const LOSS_PERCENT_MAX: u8 = 99;

/// A link's loss in percent, 0-99.
pub fn parse_loss_percent(text: &str) -> Result<u8, String> {
    let digits = text.trim().trim_end_matches('%');
    match digits.parse::<u8>() {
        Ok(percent) if percent <= LOSS_PERCENT_MAX => Ok(percent),
        _ => Err(format!(
            "bad loss {text:?}: a whole percentage, 0-{LOSS_PERCENT_MAX} (e.g. 20 or 20%; a receiver \
             that gets nothing never finishes)"
        )),
    }
}

/// What every run of one tool shares: the topology's names, files and binaries.
struct Bed<'a> {
    args: &'a E2eArgs,
    tag: String,
    dir: PathBuf,
    input: PathBuf,
    original: [u8; 32],
    media: PathBuf,
    loopcast: PathBuf,
    loopcastd: PathBuf,
    loopcastctl: PathBuf,
    /// Link rate of receiver host `i + 1`.
    links: Vec<u64>,
    /// Link loss of receiver host `i + 1`, percent.
    losses: Vec<u8>,
}

impl Bed<'_> {
    /// Bytes the server's interface has sent so far (whatever the tool: read in its namespace).
    fn server_tx_bytes(&self) -> Result<u64, String> {
        let output = Command::new("ip")
            .args(["netns", "exec", &format!("{}-s", self.tag)])
            .args(["cat", "/sys/class/net/veth0/statistics/tx_bytes"])
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| "cannot read the server's tx_bytes".to_owned())
    }
}

/// Server at 10.80.0.1 in `<tag>-s`, receivers at 10.80.0.2.. in `<tag>-r<i>`.
fn build(tag: &str, receivers: usize, mtu: u32) -> Result<BridgeTopology, String> {
    let names: Vec<(String, String)> = (0..=receivers)
        .map(|i| {
            (
                if i == 0 {
                    "s".to_owned()
                } else {
                    format!("r{i}")
                },
                format!("10.80.0.{}", i + 1),
            )
        })
        .collect();
    let hosts: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect();
    let topology = BridgeTopology::build(tag, &hosts, mtu)?;
    for (ns, _) in &topology.hosts {
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.udp_rmem_min=4096",
            ])
            .status();
    }
    raise_socket_buffer_caps();
    Ok(topology)
}

/// The host's caps on socket buffers (`net.core` is the machine's, not a namespace's), raised
/// so that no tool's buffers (UFTP asks for 64 MiB) are capped below what it asks for.
const SOCKET_BUFFER_SYSCTLS: [&str; 2] = ["net.core.rmem_max", "net.core.wmem_max"];
/// What [`SOCKET_BUFFER_SYSCTLS`] are raised to (never lowered).
const SOCKET_BUFFER_CAP_BYTES: u64 = 64 << 20;

/// One sysctl the bench changed: its name, the value before (None: unreadable) and after.
#[derive(Debug, PartialEq)]
struct SysctlChange {
    name: &'static str,
    old: Option<u64>,
    new: u64,
}

/// Raises [`SOCKET_BUFFER_SYSCTLS`] below [`SOCKET_BUFFER_CAP_BYTES`] and says so on stderr, in
/// one line naming each with its old and new value (it was done silently). They stay raised.
fn raise_socket_buffer_caps() {
    let path_of = |name: &str| Path::new("/proc/sys").join(name.replace('.', "/"));
    let current: Vec<(&'static str, Option<u64>)> = SOCKET_BUFFER_SYSCTLS
        .iter()
        .map(|&name| {
            let value = std::fs::read_to_string(path_of(name))
                .ok()
                .and_then(|text| text.trim().parse().ok());
            (name, value)
        })
        .collect();
    let mut changed = Vec::new();
    for change in socket_buffer_raises(&current) {
        match std::fs::write(path_of(change.name), change.new.to_string()) {
            Ok(()) => changed.push(change),
            Err(error) => eprintln!(
                "loopcast-bench: cannot raise {} to {}: {error}",
                change.name, change.new
            ),
        }
    }
    if let Some(line) = sysctl_change_line(&changed) {
        eprintln!("{line}");
    }
}

/// Which of `current` (name, value) to raise: those below [`SOCKET_BUFFER_CAP_BYTES`] or
/// unreadable; a higher value is left as it is.
fn socket_buffer_raises(current: &[(&'static str, Option<u64>)]) -> Vec<SysctlChange> {
    current
        .iter()
        .filter(|(_, value)| value.is_none_or(|value| value < SOCKET_BUFFER_CAP_BYTES))
        .map(|&(name, old)| SysctlChange {
            name,
            old,
            new: SOCKET_BUFFER_CAP_BYTES,
        })
        .collect()
}

/// The one line that says what the bench changed on the host, or None if nothing.
fn sysctl_change_line(changes: &[SysctlChange]) -> Option<String> {
    if changes.is_empty() {
        return None;
    }
    let each: Vec<String> = changes
        .iter()
        .map(|change| {
            let old = change.old.map_or("?".to_owned(), |old| old.to_string());
            format!("{} {old} -> {}", change.name, change.new)
        })
        .collect();
    Some(format!(
        "loopcast-bench: raised the host's socket buffer caps for the run: {} (not restored afterwards)",
        each.join(", ")
    ))
}

fn in_ns(ns: &str, program: &Path) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).arg(program);
    command
}

/// Set by SIGINT or SIGTERM once [`run`] has started: the run stops at its next wait or phase
/// and fails, so its namespaces and files are removed on the way out (a Ctrl-C that ended the
/// process left five namespaces and the run's directory, the packed file and partial copies,
/// behind).
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The error an interrupted run returns.
pub const INTERRUPTED_MESSAGE: &str = "interrupted; namespaces and files of the run removed";

fn interrupted() -> bool {
    INTERRUPTED
        .get()
        .is_some_and(|flag| flag.load(Ordering::Relaxed))
}

fn stop_if_interrupted() -> Result<(), String> {
    if interrupted() {
        Err(INTERRUPTED_MESSAGE.to_owned())
    } else {
        Ok(())
    }
}

/// Waits for every child until `deadline`; on timeout, ends all of them (by PID) and fails.
/// Returns each child's output and when it was seen to exit (within 10 ms), in the given order.
fn wait_all(
    children: Vec<(String, Child)>,
    deadline: Instant,
) -> Result<Vec<(String, std::process::Output, Instant)>, String> {
    let outcomes = wait_each(children, deadline);
    stop_if_interrupted()?;
    let late: Vec<&str> = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(label, _)| label.as_str())
        .collect();
    if !late.is_empty() {
        return Err(format!("{} did not finish in time", late.join(", ")));
    }
    outcomes
        .into_iter()
        .map(|(label, outcome)| outcome.map(|(output, finished)| (label, output, finished)))
        .collect()
}

/// Each child's output and when it was seen to exit (within 10 ms), in the given order; a
/// child still running at `deadline`, or when the run is interrupted, is ended (by PID) and
/// reported as an error.
#[allow(clippy::type_complexity)]
fn wait_each(
    children: Vec<(String, Child)>,
    deadline: Instant,
) -> Vec<(String, Result<(std::process::Output, Instant), String>)> {
    let mut slots: Vec<(String, Child, Option<Instant>)> = children
        .into_iter()
        .map(|(label, child)| (label, child, None))
        .collect();
    loop {
        for (_, child, finished) in slots.iter_mut() {
            if finished.is_none() && !matches!(child.try_wait(), Ok(None)) {
                *finished = Some(Instant::now());
            }
        }
        if slots.iter().all(|(.., finished)| finished.is_some())
            || Instant::now() > deadline
            || interrupted()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    slots
        .into_iter()
        .map(|(label, mut child, finished)| {
            let outcome = match finished {
                Some(finished) => child
                    .wait_with_output()
                    .map(|output| (output, finished))
                    .map_err(|e| e.to_string()),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err("did not finish in time".to_owned())
                }
            };
            (label, outcome)
        })
        .collect()
}

fn terminate(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One tool's run: wall time to the last receiver, CPU per GB on each side, what the server
/// sent, and one entry per receiver (see [`receiver_entry`]).
#[allow(clippy::too_many_arguments)]
fn result(
    tool: &str,
    bytes: u64,
    seconds: f64,
    sender_cpu: Duration,
    receiver_cpu: Duration,
    receivers: Vec<serde_json::Value>,
    server_sent_bytes: u64,
    note: String,
) -> serde_json::Value {
    let gb = bytes as f64 / 1e9;
    let count = receivers.len().max(1);
    let verified = receivers.iter().all(|r| r["verified"] == true);
    serde_json::json!({
        "tool": tool, "receiver_count": count, "bytes": bytes, "seconds": seconds,
        "gbps": bytes as f64 * 8.0 / 1e9 / seconds.max(1e-9),
        "sender_cpu_s_per_gb": sender_cpu.as_secs_f64() / gb,
        "receiver_cpu_s_per_gb": receiver_cpu.as_secs_f64() / gb / count as f64,
        "verified": verified, "note": note,
        "server_sent_bytes": server_sent_bytes,
        "server_sent_over_file_bytes": server_sent_bytes as f64 / bytes.max(1) as f64,
        // Known for loopcast only ([`with_tiers_opened`]).
        "tiers_opened": serde_json::Value::Null,
        "sent_within_target": serde_json::Value::Null,
        "receivers": receivers,
    })
}

/// Adds the tiers the server opened in a run (its `channels_opened` counter) to `result`, and
/// the target (issue 10): bytes sent <= 1.2 x tiers x file size. The tiers' positions the
/// receivers reported (`get --json` "tier", counted among the tiers open when each last heard)
/// do not count them: in one run the 5 Mbit/s and the unlimited receiver both reported tier 0
/// of three tiers opened.
fn with_tiers_opened(
    mut result: serde_json::Value,
    tiers_opened: Option<u64>,
) -> serde_json::Value {
    let bytes = result["bytes"].as_f64().unwrap_or(0.0);
    let sent = result["server_sent_bytes"]
        .as_f64()
        .unwrap_or(f64::INFINITY);
    result["tiers_opened"] = serde_json::json!(tiers_opened);
    result["sent_within_target"] =
        serde_json::json!(tiers_opened.map(|tiers| sent <= 1.2 * tiers as f64 * bytes));
    result
}

/// The server's `channels_opened` counter. The daemon publishes its status every ~150 ms: a
/// run of a few MiB ends before the snapshot shows its first channel (`tiers_opened` read 0,
/// and "target <= 1.2 x 0 tiers: missed" was printed), so a 0 is read again for up to a second.
fn channels_opened(loopcastctl: &Path, socket: &Path) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let opened = server_counters(loopcastctl, socket)
            .and_then(|counters| counters["channels_opened"].as_u64());
        if opened != Some(0) || Instant::now() >= deadline {
            return opened;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Counters of the loopcastd whose admin socket is `socket` (`loopcastctl status --json`).
fn server_counters(loopcastctl: &Path, socket: &Path) -> Option<serde_json::Value> {
    let output = Command::new(loopcastctl)
        .arg("--socket")
        .arg(socket)
        .args(["status", "--json"])
        .output()
        .ok()?;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(status["counters"].clone())
}

/// One receiver's line in a report: its link, its time from the common start to its verified
/// copy, goodput against its link, and against the target "within 1.3 x (file size / link
/// rate)". `extra` (an object) adds the tool's own counters.
fn receiver_entry(
    host: usize,
    link_rate_bits_per_s: u64,
    file_bytes: u64,
    seconds: Option<f64>,
    verified: bool,
    extra: serde_json::Value,
) -> serde_json::Value {
    // A receiver without a verified copy delivered nothing: no goodput, and a missed target
    // (an interrupted 5 Mbit/s receiver was reported at 3.9 x its link and within target).
    let goodput = seconds
        .filter(|_| verified)
        .map(|s| file_bytes as f64 * 8.0 / s.max(1e-9));
    let limited = link_rate_bits_per_s > 0;
    let target_seconds =
        limited.then(|| LINK_TARGET_FACTOR * file_bytes as f64 * 8.0 / link_rate_bits_per_s as f64);
    let mut entry = serde_json::json!({
        "host": host,
        "link_rate_bits_per_s": link_rate_bits_per_s,
        "seconds": seconds,
        "verified": verified,
        "tier": serde_json::Value::Null,
        "tiers": serde_json::Value::Null,
        "goodput_bits_per_s": goodput,
        "goodput_over_link_rate": goodput.filter(|_| limited).map(|g| g / link_rate_bits_per_s as f64),
        "target_seconds": target_seconds,
        "within_target": target_seconds.map(|t| within(verified, seconds, t)),
    });
    if let (Some(entry), serde_json::Value::Object(extra)) = (entry.as_object_mut(), extra) {
        entry.extend(extra);
    }
    entry
}

/// Whether a receiver met a target of `target_seconds`: a verified copy in that time.
fn within(verified: bool, seconds: Option<f64>, target_seconds: f64) -> bool {
    verified && seconds.is_some_and(|s| s <= target_seconds)
}

/// Issue 10's target: every receiver within 1.3 x (file size / its link rate); the unlimited
/// one within 1.3 x its time alone.
const LINK_TARGET_FACTOR: f64 = 1.3;

/// For each unlimited receiver of `mixed`, its time when it was alone (`alone`) and the ratio.
fn add_alone_times(mixed: &mut serde_json::Value, alone: &serde_json::Value) {
    let Some(alone_seconds) = alone["receivers"][0]["seconds"].as_f64() else {
        return;
    };
    mixed["unlimited_alone_seconds"] = serde_json::json!(alone_seconds);
    mixed["alone"] = alone.clone();
    for entry in mixed["receivers"].as_array_mut().into_iter().flatten() {
        if entry["link_rate_bits_per_s"] == 0 {
            let seconds = entry["seconds"].as_f64();
            entry["seconds_alone"] = serde_json::json!(alone_seconds);
            entry["over_alone"] = serde_json::json!(seconds.map(|s| s / alone_seconds));
            entry["target_seconds"] = serde_json::json!(LINK_TARGET_FACTOR * alone_seconds);
            entry["within_target"] = serde_json::json!(within(
                entry["verified"] == true,
                seconds,
                LINK_TARGET_FACTOR * alone_seconds
            ));
        }
    }
}

/// Each receiver of a tool's `result` (finished or not) gets its link's loss, percent.
fn with_link_losses(result: &mut serde_json::Value, losses: &[u8]) {
    for entry in result["receivers"].as_array_mut().into_iter().flatten() {
        if let Some(host) = entry["host"].as_u64().filter(|&h| h >= 1) {
            entry["link_loss_percent"] = serde_json::json!(losses.get(host as usize - 1));
        }
    }
}

/// Issue 10's target: one receiver of ten at 20 % loss slows the other nine by at most 10 %.
const LOSSY_SLOWDOWN_MAX: f64 = 1.1;

/// For each receiver of `with` that has no loss, its time in the run without the lossy ones
/// (`without`) and the ratio; and for all of them together, the last one's time with and
/// without (`others_slowdown`, the target's figure: at most [`LOSSY_SLOWDOWN_MAX`]).
fn add_times_without_lossy(with: &mut serde_json::Value, without: &serde_json::Value) {
    let mut last_with: Option<f64> = Some(0.0);
    let mut last_without: Option<f64> = Some(0.0);
    let mut worst: Option<f64> = None;
    let baseline = without["receivers"].as_array().cloned().unwrap_or_default();
    for entry in with["receivers"].as_array_mut().into_iter().flatten() {
        let Some(base) = baseline.iter().find(|b| b["host"] == entry["host"]) else {
            continue; // a lossy receiver
        };
        let seconds = entry["seconds"]
            .as_f64()
            .filter(|_| entry["verified"] == true);
        let base_seconds = base["seconds"]
            .as_f64()
            .filter(|_| base["verified"] == true);
        let over = seconds.zip(base_seconds).map(|(s, b)| s / b.max(1e-9));
        entry["seconds_without_lossy"] = serde_json::json!(base_seconds);
        entry["over_without_lossy"] = serde_json::json!(over);
        worst = match (worst, over) {
            (Some(w), Some(o)) => Some(w.max(o)),
            (None, o) => o,
            (w, None) => w,
        };
        last_with = last_with.zip(seconds).map(|(a, b)| a.max(b));
        last_without = last_without.zip(base_seconds).map(|(a, b)| a.max(b));
    }
    let slowdown = last_with.zip(last_without).map(|(w, b)| w / b.max(1e-9));
    with["without_lossy"] = without.clone();
    with["others_seconds"] = serde_json::json!(last_with);
    with["others_seconds_without_lossy"] = serde_json::json!(last_without);
    with["others_slowdown"] = serde_json::json!(slowdown);
    with["others_slowdown_worst_receiver"] = serde_json::json!(worst);
    with["others_within_target"] = serde_json::json!(slowdown.map(|s| s <= LOSSY_SLOWDOWN_MAX));
}

pub fn run(args: &E2eArgs) -> Result<serde_json::Value, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("e2e needs root (ip netns)".into());
    }
    // From here on a Ctrl-C stops the run at its next wait or phase instead of ending the
    // process, so that the namespaces and the run's directory are removed (on drop).
    INTERRUPTED.get_or_init(crate::shutdown_flag);
    let links = args.links();
    let receivers = links.len();
    if receivers > 200 {
        return Err(format!(
            "{receivers} receivers: at most 200 (one /24 for all hosts)"
        ));
    }
    if args.link_loss.len() > receivers {
        return Err(format!(
            "--link-loss gives {} links a loss, but there are {receivers} receiver(s)",
            args.link_loss.len()
        ));
    }
    let tag = format!("lce{}", std::process::id() % 100_000);
    let mtu: u32 = if args.jumbo { 9000 } else { 1500 };
    let dir = std::env::temp_dir().join(format!("loopcast-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _cleanup = RemoveDir(dir.clone());
    let topology = build(&tag, receivers, mtu)?;
    for (i, &rate) in links.iter().enumerate() {
        topology.set_link_rate(i + 1, rate)?;
    }
    let losses = args.losses(receivers);
    for (i, &percent) in losses.iter().enumerate() {
        if percent > 0 {
            topology.set_link_loss(i + 1, percent)?;
        }
    }
    stop_if_interrupted()?;
    let input = dir.join("film.bin");
    crate::phase(format_args!(
        "e2e: {receivers} receiver(s) at MTU {mtu}, links {}; writing and packing a {} byte file",
        links
            .iter()
            .zip(&losses)
            .map(|(&r, &loss)| {
                let rate = crate::format_rate(r).replace("unpaced", "unlimited");
                if loss > 0 {
                    format!("{rate} at {loss} % loss")
                } else {
                    rate
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        args.size
    ));
    crate::write_sample_file(&input, args.size, 77).map_err(|e| e.to_string())?;
    let original = hash_file(&input).map_err(|e| e.to_string())?;
    let exe_dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_owned)
        .ok_or("no exe dir")?;
    let media = dir.join("media");
    let bed = Bed {
        args,
        tag,
        dir: dir.clone(),
        input,
        original,
        media,
        loopcast: exe_dir.join("loopcast"),
        loopcastd: exe_dir.join("loopcastd"),
        loopcastctl: exe_dir.join("loopcastctl"),
        links: links.clone(),
        losses: losses.clone(),
    };
    let mut pack = Command::new(&bed.loopcast);
    pack.arg("pack")
        .arg(&bed.input)
        .arg("--media")
        .arg(&bed.media)
        .arg("--no-encrypt")
        .args(["--level", "0", "--json"]);
    if args.jumbo {
        pack.arg("--jumbo");
    }
    let packed = pack.output().map_err(|e| e.to_string())?;
    if !packed.status.success() {
        return Err(format!(
            "pack failed: {}",
            String::from_utf8_lossy(&packed.stderr)
        ));
    }
    // As an operator does after adding media: the archive is checked whole once and the check
    // recorded, so the servers below do not hash it again on open. That hashing is a cost per
    // archive (like packing), not per transfer; it is reported on its own.
    crate::phase("e2e: loopcastd check (the archive hashed whole once, and recorded)");
    let check_cpu0 = crate::children_cpu_time();
    let check_started = Instant::now();
    let checked = Command::new(&bed.loopcastd)
        .arg("check")
        .arg("--media")
        .arg(&bed.media)
        .output()
        .map_err(|e| e.to_string())?;
    if !checked.status.success() {
        return Err(format!(
            "loopcastd check failed: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        ));
    }
    let check_seconds = check_started.elapsed().as_secs_f64();
    stop_if_interrupted()?;
    let check_cpu = crate::children_cpu_time() - check_cpu0;
    // With lossy receivers among clean ones, the clean ones without them first: the target is
    // "one lossy receiver slows the others by at most 10 %". Else, with an unlimited receiver
    // among limited ones, that receiver alone first: the target is "within 1.3 x its time
    // alone".
    let all: Vec<usize> = (1..=receivers).collect();
    let clean: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&h| losses[h - 1] == 0)
        .collect();
    let lossy_among_clean = !clean.is_empty() && clean.len() < receivers;
    let alone: Option<usize> =
        (!lossy_among_clean && receivers > 1 && links.iter().any(|&r| r > 0))
            .then(|| links.iter().position(|&r| r == 0).map(|i| i + 1))
            .flatten();
    let mut results = Vec::new();
    // The first run whose times set the others' targets, and how they are added to the run of
    // all receivers.
    type Annotate = fn(&mut serde_json::Value, &serde_json::Value);
    let first: Option<(Vec<usize>, &str, Annotate)> = if lossy_among_clean {
        Some((
            clean.clone(),
            " without the lossy receiver(s) first (their times set the others' target)",
            add_times_without_lossy,
        ))
    } else {
        alone.map(|host| {
            (
                vec![host],
                " alone first (its time alone sets its target among the others)",
                add_alone_times as Annotate,
            )
        })
    };
    let loopcast = match first {
        Some((hosts, why, annotate)) => {
            let baseline = run_loopcast(&bed, &hosts, why)?;
            stop_if_interrupted()?;
            let mut everyone = run_loopcast(&bed, &all, "")?;
            annotate(&mut everyone, &baseline);
            everyone
        }
        None => run_loopcast(&bed, &all, "")?,
    };
    let loopcast_receivers = loopcast["receivers"].clone();
    let disk_seconds = loopcast["disk_write_fsync_seconds_before"].clone();
    results.push(loopcast);

    for peer in &args.peers {
        stop_if_interrupted()?;
        crate::phase(format_args!("e2e: {peer} to {receivers} receiver(s)"));
        let outcome = match peer.as_str() {
            "udpcast" => run_udpcast(&bed).map(|r| vec![r]),
            "uftp" => run_uftp_modes(&bed, &all, alone),
            other => Err(format!("unknown peer tool {other:?} (uftp, udpcast)")),
        };
        match outcome {
            Ok(mut peer_results) => {
                for result in &mut peer_results {
                    with_link_losses(result, &losses);
                }
                results.extend(peer_results)
            }
            Err(e) => results.push(serde_json::json!({"tool": peer, "error": e})),
        }
    }
    drop(topology);
    Ok(serde_json::json!({
        "mtu": mtu, "bytes": args.size, "receiver_count": receivers,
        "link_rates_bits_per_s": links,
        "link_loss_percent": losses,
        "rate": args.rate.as_deref().unwrap_or("automatic"),
        "disk_write_fsync_seconds_per_copy": disk_seconds,
        "archive_check_seconds": check_seconds,
        "archive_check_cpu_s_per_gb": check_cpu.as_secs_f64() / (args.size as f64 / 1e9),
        "receivers": loopcast_receivers,
        "results": results,
    }))
}

/// loopcastd in the server namespace (with `--rate` only if given) and `loopcast get` on the
/// receiver hosts `hosts` at once; a fresh server per call (`why`: what the run is for, after
/// the hosts in its progress line).
fn run_loopcast(bed: &Bed, hosts: &[usize], why: &str) -> Result<serde_json::Value, String> {
    let args = bed.args;
    let rate = args.rate.as_deref().unwrap_or("automatic");
    let disk_seconds = level_page_cache(bed)?;
    crate::phase(format_args!(
        "e2e: loopcast at {rate} to receiver(s) {hosts:?}{why}"
    ));
    let cpu0 = crate::children_cpu_time();
    let mut serve = in_ns(&format!("{}-s", bed.tag), &bed.loopcastd);
    serve
        .arg("serve")
        .arg("--media")
        .arg(&bed.media)
        .args([
            "--listen",
            "10.80.0.1:7700",
            "--multicast-interface",
            "10.80.0.1",
            "--multicast-ttl",
            "1",
        ])
        .arg("--admin-socket")
        .arg(bed.dir.join("admin.sock"));
    // A hand-set rate is the rate the channel is paced at (the comparison the automatic rates
    // are held to), not a cap.
    if let Some(rate) = &args.rate {
        serve.args(["--rate", rate, "--fixed-rate"]);
    }
    let server = serve
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("LOOPCAST_BENCH_SERVER_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .map_err(|e| e.to_string())?;
    // While it runs, `loopcastctl --socket <this> clients` shows the tiers it decides.
    eprintln!(
        "loopcastd admin socket: {}",
        bed.dir.join("admin.sock").display()
    );
    std::thread::sleep(Duration::from_millis(500));
    let sent_before = bed.server_tx_bytes()?;
    let started = Instant::now();
    // LOOPCAST_BENCH_CLIENT_LOG=DIR keeps each client's log (with RUST_LOG, e.g.
    // loopcast_client=debug: every Report it sends) as DIR/run<N>-r<i>.log.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Without it, the logs go to the run's own directory (read back for a client that fails):
    // never to a pipe, which nobody reads until the end and which blocks a client once its log
    // passes 64 KiB (RUST_LOG=debug for the server's log reaches the clients too).
    let client_log_dir = match std::env::var_os("LOOPCAST_BENCH_CLIENT_LOG") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("LOOPCAST_BENCH_CLIENT_LOG {}: {e}", dir.display()))?;
            dir
        }
        None => bed.dir.clone(),
    };
    let client_log = |i: usize| client_log_dir.join(format!("run{run}-r{i}.log"));
    let clients: Vec<(String, Child)> = hosts
        .iter()
        .map(|&i| {
            let _ = std::fs::remove_file(bed.dir.join(format!("r{i}.lca")));
            let stderr = Stdio::from(
                std::fs::File::create(client_log(i))
                    .map_err(|e| format!("{}: {e}", client_log(i).display()))?,
            );
            let child = in_ns(&format!("{}-r{i}", bed.tag), &bed.loopcast)
                .args([
                    "get",
                    "10.80.0.1:7700",
                    "film.bin",
                    "--json",
                    "--multicast-interface",
                    &format!("10.80.0.{}", i + 1),
                ])
                .arg("--output")
                .arg(bed.dir.join(format!("r{i}.lca")))
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .map_err(|e| e.to_string())?;
            Ok((format!("loopcast client {i}"), child))
        })
        .collect::<Result<_, String>>()?;
    // A receiver that does not finish in time is reported as such, the others as measured.
    let outcomes = wait_each(clients, started + args.timeout);
    let seconds = started.elapsed().as_secs_f64();
    let sent = bed.server_tx_bytes()?.saturating_sub(sent_before);
    let receiver_cpu = crate::children_cpu_time() - cpu0;
    let tiers_opened = channels_opened(&bed.loopcastctl, &bed.dir.join("admin.sock"));
    terminate(server);
    stop_if_interrupted()?;
    let sender_cpu = crate::children_cpu_time() - cpu0 - receiver_cpu;
    let served = hash_file(&bed.media.join("film.bin.lca")).map_err(|e| e.to_string())?;
    let mut transports = Vec::new();
    let mut entries = Vec::new();
    for (&host, (label, outcome)) in hosts.iter().zip(&outcomes) {
        let (output, finished) = match outcome {
            Ok(done) => done,
            Err(error) => {
                eprintln!("{label}: {error} ({} s)", args.timeout.as_secs());
                transports.push(format!("{label}: not finished"));
                entries.push(receiver_entry(
                    host,
                    bed.links[host - 1],
                    args.size,
                    None,
                    false,
                    serde_json::json!({"error": format!("not finished within {} s", args.timeout.as_secs())}),
                ));
                continue;
            }
        };
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        let copy = bed.dir.join(format!("r{host}.lca"));
        let verified = output.status.success()
            && report["verified"] == true
            && hash_file(&copy).map(|h| h == served).unwrap_or(false);
        remove_copy(&copy);
        transports.push(format!(
            "{} ({:.2} s: first datagram at {:.2} s, publish {:.2} s; {} NAKs for {} serials, {} suppressed, {} duplicates)",
            report["transport"].as_str().unwrap_or("?"),
            report["seconds"].as_f64().unwrap_or(0.0),
            report["first_datagram_seconds"].as_f64().unwrap_or(0.0),
            report["publish_seconds"].as_f64().unwrap_or(0.0),
            report["naks_sent"],
            report["serials_naked"],
            report["serials_suppressed"],
            report["duplicates"]
        ));
        if !output.status.success() {
            eprintln!(
                "{label}: {}",
                std::fs::read_to_string(client_log(host))
                    .unwrap_or_default()
                    .trim()
            );
        }
        entries.push(receiver_entry(
            host,
            bed.links[host - 1],
            args.size,
            Some(finished.duration_since(started).as_secs_f64()),
            verified,
            serde_json::json!({
                // The server's tier for this client, once `get --json` reports it (issue 10).
                "tier": report.get("tier").cloned().unwrap_or(serde_json::Value::Null),
                "tiers": report.get("tiers").cloned().unwrap_or(serde_json::Value::Null),
                "transport": report["transport"],
                "client_seconds": report["seconds"],
                "final_check_seconds": report["final_check_seconds"],
                "groups_checked_while_receiving": report["groups_checked_while_receiving"],
                "groups_compared_while_receiving": report["groups_compared_while_receiving"],
                "groups": report["groups"],
                "duplicates": report["duplicates"],
                "naks_sent": report["naks_sent"],
                "serials_naked": report["serials_naked"],
                "serials_suppressed": report["serials_suppressed"],
                "serials_left_to_loop": report["serials_left_to_loop"],
                "receiver_counters": report["receiver"],
            }),
        ));
    }
    let mut outcome = with_tiers_opened(
        result(
            "loopcast",
            args.size,
            seconds,
            sender_cpu,
            receiver_cpu,
            entries,
            sent,
            format!("rate {rate}, transports {}", transports.join("; ")),
        ),
        tiers_opened,
    );
    outcome["disk_write_fsync_seconds_before"] = serde_json::json!(disk_seconds);
    with_link_losses(&mut outcome, &bed.losses);
    Ok(outcome)
}

/// Before each tool's run, the same page cache: one copy's worth of bytes written, fsynced
/// and removed (its seconds are the disk's ceiling for one durable copy; loopcast's clients
/// fsync before the rename, UFTP and udpcast do not). On a virtual machine whose host backs
/// guest memory only when first touched and takes back what the guest frees, writing into
/// pages freed a moment ago costs a quarter of what fresh ones do (1 GiB: 0.26 s of system
/// CPU against 0.8-2.8 s): without this the tool that ran first took the pages the ceiling's
/// file freed, and the next wrote into fresh ones beside the first one's copies.
fn level_page_cache(bed: &Bed) -> Result<f64, String> {
    crate::phase("e2e: disk ceiling (write + fsync of one copy, then removed)");
    let seconds = disk_write_fsync_seconds(&bed.dir.join("disk-ceiling.bin"), bed.args.size)
        .map_err(|e| format!("disk ceiling: {e}"))?;
    stop_if_interrupted()?;
    Ok(seconds)
}

/// A receiver's copy, checked: removed (its pages freed for the next run's writes) unless
/// LOOPCAST_BENCH_KEEP asks for the run's files.
fn remove_copy(path: &Path) {
    if !keep_files() {
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
    }
}

/// Seconds to write `len` bytes (1 MiB at a time, from memory) and fsync them.
fn disk_write_fsync_seconds(path: &Path, len: u64) -> std::io::Result<f64> {
    use std::io::Write;
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut file = std::fs::File::create(path)?;
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(seconds)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

fn run_udpcast(bed: &Bed) -> Result<serde_json::Value, String> {
    let sender_bin =
        which("udp-sender").ok_or("udpcast not installed (apt-get install udpcast)")?;
    let receiver_bin = which("udp-receiver").ok_or("udpcast not installed")?;
    let receivers = bed.links.len();
    let disk_seconds = level_page_cache(bed)?;
    let cpu0 = crate::children_cpu_time();
    let daemons: Vec<(String, Child)> = (1..=receivers)
        .map(|i| {
            let child = in_ns(&format!("{}-r{i}", bed.tag), &receiver_bin)
                .arg("--file")
                .arg(bed.dir.join(format!("udpcast-{i}.bin")))
                .args(["--interface", "veth0", "--nokbd", "--start-timeout", "15"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            Ok((format!("udp-receiver {i}"), child))
        })
        .collect::<Result<_, String>>()?;
    std::thread::sleep(Duration::from_millis(300));
    let sent_before = bed.server_tx_bytes()?;
    let started = Instant::now();
    let sender = in_ns(&format!("{}-s", bed.tag), &sender_bin)
        .arg("--file")
        .arg(&bed.input)
        .args([
            "--interface",
            "veth0",
            "--nokbd",
            "--min-receivers",
            &receivers.to_string(),
            "--max-wait",
            "10",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    // udpcast can hang (e.g. a rendezvous that never happens): bounded by the run's timeout.
    let receiver_outputs = wait_all(daemons, started + bed.args.timeout);
    let seconds = started.elapsed().as_secs_f64();
    let receiver_cpu = crate::children_cpu_time() - cpu0;
    let Ok(receiver_outputs) = receiver_outputs else {
        terminate(sender);
        return Err(format!(
            "udp-receiver did not finish within {} s (no rendezvous, or too slow)",
            bed.args.timeout.as_secs()
        ));
    };
    let sender_outputs = wait_all(
        vec![("udp-sender".into(), sender)],
        Instant::now() + Duration::from_secs(10),
    );
    let sent = bed.server_tx_bytes()?.saturating_sub(sent_before);
    let sender_cpu = crate::children_cpu_time() - cpu0 - receiver_cpu;
    sender_outputs?;
    let entries = receiver_outputs
        .iter()
        .enumerate()
        .map(|(index, (_, _, finished))| {
            let host = index + 1;
            let copy = bed.dir.join(format!("udpcast-{host}.bin"));
            let verified = hash_file(&copy).map(|h| h == bed.original).unwrap_or(false);
            remove_copy(&copy);
            receiver_entry(
                host,
                bed.links[index],
                bed.args.size,
                Some(finished.duration_since(started).as_secs_f64()),
                verified,
                // udpcast reports neither.
                serde_json::json!({"naks_sent": null, "duplicates": null}),
            )
        })
        .collect();
    let mut result = result(
        "udpcast",
        bed.args.size,
        seconds,
        sender_cpu,
        receiver_cpu,
        entries,
        sent,
        "defaults".into(),
    );
    result["disk_write_fsync_seconds_before"] = serde_json::json!(disk_seconds);
    Ok(result)
}

/// UFTP's rate and congestion-control settings to run, by what the links are: its best
/// per-receiver times, and its congestion control where that could help it.
///
/// Tried on this bed (2 cores, MTU 1500, 4 MiB, links 5M/50M/500M/unlimited; seconds per
/// receiver in that order, bytes the server sent over the file size):
/// - `-C tfmcc` (RFC 4654): 7.6 / 6.6 / 6.6 / 6.6 s, 1.2x: everyone at the slowest's pace.
/// - `-C tfmcc:init=50000`: 7.6 / 7.2 / 5.1 / 5.1 s, 1.4x: starts faster, still converges down.
/// - `-R 50000` (fixed 50 Mbit/s): 7.4 / 0.74 / 0.72 / 0.72 s, 8.9x.
/// - `-R 400000`: 7.4 / 5.6 / 0.12 / 0.12 s, 33x.
/// - `-R -1` (as fast as the interface): 7.4 / 5.9 / 0.13 / 0.13 s, 35x: the fastest for the
///   unlimited receivers and no slower for the 5M one (its link stays full of blocks it still
///   misses, pass after pass), at 35x the bytes: the NAK storm the issue describes.
///
/// No single UFTP setting gives every receiver its own pace (one session has one rate), so on
/// mixed links both are run and reported: `-R -1` (its best times) and `-C tfmcc` (its
/// congestion control, bytes-efficient). On unlimited links only `-R -1` (the fastest there;
/// TFMCC must ramp up to the link). `-B 64 MiB` socket buffers on both sides and `-b` at the
/// largest block for the MTU help UFTP at every rate. LOOPCAST_BENCH_UFTP_OPTIONS="..."
/// replaces the rate and congestion options, to try others on the same bed.
fn uftp_modes(bed: &Bed, hosts: &[usize]) -> Vec<(&'static str, Vec<String>)> {
    let block = if bed.args.jumbo { "8800" } else { "1400" };
    let with = |extra: &[&str]| -> Vec<String> {
        ["-Y", "none", "-b", block, "-B", "67108864"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    if let Some(chosen) = std::env::var_os("LOOPCAST_BENCH_UFTP_OPTIONS") {
        let chosen = chosen.to_string_lossy().into_owned();
        return vec![(
            "custom",
            with(&chosen.split_whitespace().collect::<Vec<_>>()),
        )];
    }
    let limited = hosts.iter().any(|&h| bed.links[h - 1] > 0);
    let mut modes = vec![("unpaced", with(&["-R", "-1"]))];
    if limited {
        modes.push(("tfmcc", with(&["-C", "tfmcc"])));
    }
    modes
}

/// UFTP in each of its modes ([`uftp_modes`]); with `alone` (an unlimited receiver among
/// limited ones), that receiver alone first, unpaced.
fn run_uftp_modes(
    bed: &Bed,
    all: &[usize],
    alone: Option<usize>,
) -> Result<Vec<serde_json::Value>, String> {
    let alone_result = match alone {
        Some(host) => {
            let (_, options) = uftp_modes(bed, &[host]).swap_remove(0);
            Some(run_uftp(bed, &[host], "unpaced", &options)?)
        }
        None => None,
    };
    uftp_modes(bed, all)
        .into_iter()
        .map(|(mode, options)| {
            let mut result = run_uftp(bed, all, mode, &options)?;
            if let Some(alone_result) = &alone_result {
                add_alone_times(&mut result, alone_result);
            }
            Ok(result)
        })
        .collect()
}

/// uftp in the server namespace to uftpd on hosts `hosts`; each receiver's time is when its
/// uftpd logged the file complete (timestamps in UTC, compared with the start).
fn run_uftp(
    bed: &Bed,
    hosts: &[usize],
    mode: &str,
    options: &[String],
) -> Result<serde_json::Value, String> {
    let server_bin = which("uftp").ok_or(
        "UFTP is not installed: no uftp on PATH (apt-get install uftp), so no UFTP figures",
    )?;
    let client_bin = which("uftpd").ok_or(
        "UFTP is not installed: no uftpd on PATH (apt-get install uftp), so no UFTP figures",
    )?;
    let disk_seconds = level_page_cache(bed)?;
    crate::phase(format_args!(
        "e2e: uftp {} to receiver(s) {hosts:?}",
        options.join(" ")
    ));
    let cpu0 = crate::children_cpu_time();
    let name = bed.input.file_name().ok_or("input name")?;
    let mut daemons = Vec::new();
    for &i in hosts {
        let out = bed.dir.join(format!("uftp-{i}"));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        let log = bed.dir.join(format!("uftpd-{i}.log"));
        let _ = std::fs::remove_file(&log);
        let daemon = in_ns(&format!("{}-r{i}", bed.tag), &client_bin)
            // Log timestamps in UTC, so they can be compared with this process's clock.
            .env("TZ", "UTC")
            .args(["-d", "-I", "veth0", "-B", "67108864", "-D"])
            .arg(&out)
            .arg("-P")
            .arg(bed.dir.join(format!("uftpd-{i}.pid")))
            .stdout(Stdio::null())
            // In the foreground (-d) uftpd logs to stderr, whatever -L says.
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| e.to_string())?;
        daemons.push(daemon);
    }
    std::thread::sleep(Duration::from_millis(500));
    let sent_before = bed.server_tx_bytes()?;
    let started = Instant::now();
    let started_wall = std::time::SystemTime::now();
    let server = in_ns(&format!("{}-s", bed.tag), &server_bin)
        .args(options)
        .args(["-I", "veth0", "-H"])
        .arg(
            hosts
                .iter()
                .map(|i| format!("10.80.0.{}", i + 1))
                .collect::<Vec<_>>()
                .join(","),
        )
        .arg(&bed.input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    // On timeout uftp is ended and the receivers that did finish are still reported.
    let timed_out = wait_all(vec![("uftp".into(), server)], started + bed.args.timeout).is_err();
    let seconds = started.elapsed().as_secs_f64();
    let sent = bed.server_tx_bytes()?.saturating_sub(sent_before);
    let sender_cpu = crate::children_cpu_time() - cpu0;
    for daemon in daemons {
        terminate(daemon);
    }
    let receiver_cpu = crate::children_cpu_time() - cpu0 - sender_cpu;
    let start_unix = started_wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let entries = hosts
        .iter()
        .map(|&host| {
            let verified = hash_file(&bed.dir.join(format!("uftp-{host}")).join(name))
                .map(|h| h == bed.original)
                .unwrap_or(false);
            remove_copy(&bed.dir.join(format!("uftp-{host}")));
            // uftpd logs some garbage bytes (an unresolved host name): not UTF-8 throughout.
            let log = String::from_utf8_lossy(
                &std::fs::read(bed.dir.join(format!("uftpd-{host}.log"))).unwrap_or_default(),
            )
            .into_owned();
            let complete = uftpd_complete_unix_seconds(&log).map(|t| t - start_unix);
            let naks: u64 = log.lines().filter_map(uftpd_naks_sent).sum();
            receiver_entry(
                host,
                bed.links[host - 1],
                bed.args.size,
                complete,
                verified,
                // UFTP does not report duplicates.
                serde_json::json!({"naks_sent": naks, "duplicates": null}),
            )
        })
        .collect();
    let mut result = result(
        "uftp",
        bed.args.size,
        seconds,
        sender_cpu,
        receiver_cpu,
        entries,
        sent,
        if timed_out {
            format!(
                "{} (uftp ended after the {} s timeout)",
                options.join(" "),
                bed.args.timeout.as_secs()
            )
        } else {
            options.join(" ")
        },
    );
    result["mode"] = serde_json::json!(mode);
    result["disk_write_fsync_seconds_before"] = serde_json::json!(disk_seconds);
    Ok(result)
}

/// When uftpd logged "File transfer complete", in seconds since the Unix epoch: its lines start
/// `YYYY/MM/DD HH:MM:SS.ffffff: ` (local time; the bench runs it with TZ=UTC).
fn uftpd_complete_unix_seconds(log: &str) -> Option<f64> {
    let line = log
        .lines()
        .find(|line| line.contains("File transfer complete"))?;
    let stamp = line.get(..26)?;
    let number = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute) = (number(11..13)?, number(14..16)?);
    let second: f64 = stamp.get(17..26)?.parse().ok()?;
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + minute * 60) as f64 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The count in a uftpd line "Sent N NAKs for section S".
fn uftpd_naks_sent(line: &str) -> Option<u64> {
    let rest = &line[line.find("Sent ")? + 5..];
    let (count, tail) = rest.split_once(' ')?;
    tail.starts_with("NAKs")
        .then(|| count.parse().ok())
        .flatten()
}

/// LOOPCAST_BENCH_KEEP set to anything but empty or 0: the run's files stay.
fn keep_files() -> bool {
    keep_asked(std::env::var_os("LOOPCAST_BENCH_KEEP").as_deref())
}

fn keep_asked(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        // LOOPCAST_BENCH_KEEP=1 keeps the run's files (peer logs, copies) for a look afterwards.
        if keep_files() {
            crate::phase(format_args!("e2e: files kept in {}", self.0.display()));
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_receiver_lists_repeat_values_and_refuse_nonsense() {
        let rates = PerReceiver::parse("5M,50Mx3,0", crate::parse_rate).unwrap();
        assert_eq!(rates.0, [5_000_000, 50_000_000, 50_000_000, 50_000_000, 0]);
        let losses = PerReceiver::parse("20,0x9", parse_loss_percent).unwrap();
        assert_eq!(losses.0.len(), 10);
        assert_eq!((losses.0[0], losses.0[9]), (20, 0));
        assert_eq!(PerReceiver::parse("7%", parse_loss_percent).unwrap().0, [7]);
        for bad in ["100", "101", "-1", "20x0", "20x201", "x3", "", "0x9,20x200"] {
            assert!(
                PerReceiver::parse(bad, parse_loss_percent).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(PerReceiver::parse("fastx2", crate::parse_rate).is_err());
    }

    #[test]
    fn the_others_slowdown_is_their_last_time_with_the_lossy_one_over_without() {
        let entry = |host: usize, seconds: f64, verified: bool| serde_json::json!({"host": host, "seconds": seconds, "verified": verified});
        let without = serde_json::json!({"receivers": [entry(2, 5.0, true), entry(3, 6.0, true)]});
        let mut with = serde_json::json!({"receivers": [
            entry(1, 30.0, true), entry(2, 5.5, true), entry(3, 6.3, true)
        ]});
        add_times_without_lossy(&mut with, &without);
        let slowdown = with["others_slowdown"].as_f64().unwrap();
        assert!((slowdown - 6.3 / 6.0).abs() < 1e-9, "{slowdown}");
        assert!((with["others_slowdown_worst_receiver"].as_f64().unwrap() - 1.1).abs() < 1e-9);
        assert_eq!(with["others_within_target"], true);
        assert!(
            with["receivers"][0].get("over_without_lossy").is_none(),
            "the lossy one has no baseline"
        );
        // A clean receiver that did not finish with the lossy one: no figure, target missed.
        let mut with =
            serde_json::json!({"receivers": [entry(2, 5.5, true), entry(3, 9.0, false)]});
        add_times_without_lossy(&mut with, &without);
        assert_eq!(with["others_slowdown"], serde_json::Value::Null);
        assert_eq!(with["others_within_target"], serde_json::Value::Null);
    }

    #[test]
    fn loopcast_bench_keep_0_or_empty_keeps_nothing() {
        use std::ffi::OsStr;
        assert!(!keep_asked(None));
        assert!(!keep_asked(Some(OsStr::new("0"))));
        assert!(!keep_asked(Some(OsStr::new(""))));
        assert!(keep_asked(Some(OsStr::new("1"))));
        assert!(keep_asked(Some(OsStr::new("yes"))));
    }

    #[test]
    fn a_receiver_without_a_verified_copy_has_no_goodput_and_misses_its_target() {
        // An 8 MiB file behind a 5 Mbit/s link (target 17.4 s), the receiver interrupted at
        // 3.4 s: before, 19.7 Mbit/s of goodput, 3.9 x its link, and "within_target": true.
        let failed = receiver_entry(
            1,
            5_000_000,
            8 << 20,
            Some(3.4),
            false,
            serde_json::json!({}),
        );
        assert_eq!(failed["verified"], false, "{failed}");
        assert!(failed["goodput_bits_per_s"].is_null(), "{failed}");
        assert!(failed["goodput_over_link_rate"].is_null(), "{failed}");
        assert_eq!(failed["within_target"], false, "{failed}");
        // Not finished at all (timed out): missed too, not unknown.
        let late = receiver_entry(1, 5_000_000, 8 << 20, None, false, serde_json::json!({}));
        assert_eq!(late["within_target"], false, "{late}");
        // The same time with a verified copy is measured as before.
        let done = receiver_entry(
            1,
            5_000_000,
            8 << 20,
            Some(3.4),
            true,
            serde_json::json!({}),
        );
        assert_eq!(done["within_target"], true, "{done}");
        let goodput = done["goodput_bits_per_s"].as_f64().unwrap();
        assert!(
            (goodput - (8 << 20) as f64 * 8.0 / 3.4).abs() < 1.0,
            "{done}"
        );
        // An unlimited receiver is held to its time alone, and only with a verified copy.
        let mut mixed = serde_json::json!({"receivers": [
            receiver_entry(2, 0, 8 << 20, Some(0.2), false, serde_json::json!({})),
            receiver_entry(3, 0, 8 << 20, Some(0.2), true, serde_json::json!({})),
        ]});
        let alone = serde_json::json!({"receivers": [{"seconds": 0.19}]});
        add_alone_times(&mut mixed, &alone);
        assert_eq!(mixed["receivers"][0]["within_target"], false, "{mixed}");
        assert_eq!(mixed["receivers"][1]["within_target"], true, "{mixed}");
    }

    /// The bench raised net.core.rmem_max and wmem_max without a word (and set them to 64 MiB
    /// even where they were higher): now each raise is named with its old and new value, and a
    /// cap already high enough is left alone.
    #[test]
    fn raised_sysctls_are_named_with_old_and_new_values_and_none_is_lowered() {
        let changes = socket_buffer_raises(&[
            ("net.core.rmem_max", Some(212_992)),
            ("net.core.wmem_max", Some(128 << 20)),
        ]);
        assert_eq!(
            changes,
            [SysctlChange {
                name: "net.core.rmem_max",
                old: Some(212_992),
                new: 64 << 20
            }]
        );
        assert_eq!(
            sysctl_change_line(&changes).unwrap(),
            "loopcast-bench: raised the host's socket buffer caps for the run: \
             net.core.rmem_max 212992 -> 67108864 (not restored afterwards)"
        );
        let both = socket_buffer_raises(&[
            ("net.core.rmem_max", Some(212_992)),
            ("net.core.wmem_max", None),
        ]);
        assert_eq!(
            sysctl_change_line(&both).unwrap(),
            "loopcast-bench: raised the host's socket buffer caps for the run: \
             net.core.rmem_max 212992 -> 67108864, net.core.wmem_max ? -> 67108864 (not \
             restored afterwards)"
        );
        assert!(socket_buffer_raises(&[("net.core.rmem_max", Some(64 << 20))]).is_empty());
        assert_eq!(sysctl_change_line(&[]), None);
    }

    #[test]
    fn uftpd_log_lines_give_completion_time_and_naks() {
        let log = "2026/11/26 13:16:12.360593: [DB55AEEE/00:0001]: Sent 104 NAKs for section 1\n\
                   2026/11/26 13:16:12.441407: [DB55AEEE/00:0001]: File transfer complete\n";
        // 2026-11-26 is day 20_783 since the epoch.
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 11, 26), 20_783);
        let seconds = uftpd_complete_unix_seconds(log).unwrap();
        assert!(
            (seconds - (20_783.0 * 86_400.0 + 13.0 * 3600.0 + 16.0 * 60.0 + 12.441407)).abs()
                < 1e-6
        );
        assert_eq!(log.lines().filter_map(uftpd_naks_sent).sum::<u64>(), 104);
        assert_eq!(uftpd_complete_unix_seconds("garbage\n"), None);
        assert_eq!(uftpd_naks_sent("Sent many NAKs"), None);
    }
}
