//! Helpers: binaries, scratch directories, child processes killed by PID on drop.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary `name` of this build; with `LOOPCAST_E2E_BINARIES=DIR`, `DIR/name` instead (to
/// run the suite against another build, e.g. an older commit's, and see which tests it fails).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("LOOPCAST_E2E_BINARIES") {
        return PathBuf::from(dir).join(name);
    }
    let path = match name {
        "loopcast" => env!("CARGO_BIN_EXE_loopcast"),
        "loopcastd" => env!("CARGO_BIN_EXE_loopcastd"),
        "loopcastctl" => env!("CARGO_BIN_EXE_loopcastctl"),
        "loopcast-bench" => env!("CARGO_BIN_EXE_loopcast-bench"),
        other => panic!("unknown binary {other}"),
    };
    PathBuf::from(path)
}

pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "loopcast-e2e-{tag}-{}-{}",
            std::process::id(),
            u32::from_ne_bytes(nonce)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // Namespaced helpers may run as another user (tests as root, demo as lcuser); keep it open.
        Scratch(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process ended by PID when dropped (test failure included).
pub struct Proc {
    pub child: Child,
    pub label: String,
}

impl Proc {
    pub fn spawn(label: &str, command: &mut Command) -> Proc {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        Proc {
            child,
            label: label.to_owned(),
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns its output.
    pub fn terminate(mut self) -> Output {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }

    /// Waits (bounded) for exit and returns the output; panics on timeout.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let child =
                    std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
                let output = child.wait_with_output().unwrap();
                panic!(
                    "{} did not finish within {timeout:?}\nstderr: {}",
                    self.label,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }

    /// Waits (bounded) for a `--json` command to succeed and returns its JSON report; panics
    /// with its label and stderr if it fails.
    pub fn report(self, timeout: Duration) -> serde_json::Value {
        let label = self.label.clone();
        let output = self.wait(timeout);
        assert!(
            output.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        json_of(&output)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGHUP to `daemon` (it reloads its config file).
pub fn hang_up(daemon: &Proc) {
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

/// A director and one server on loopback, each run from a config file (`--config`) that a
/// test rewrites and then sends SIGHUP. Both files hold the addresses, sockets and metrics
/// off; the rest (`fleet_key` and what the test changes) comes as extra TOML lines.
pub struct ConfiguredFleet {
    pub director: Proc,
    pub server: Proc,
    pub director_admin: PathBuf,
    pub server_admin: PathBuf,
    director_config: PathBuf,
    server_config: PathBuf,
    director_base: String,
    server_base: String,
}

impl ConfiguredFleet {
    pub fn start(
        scratch: &Scratch,
        media: &Path,
        director_extra: &str,
        server_extra: &str,
    ) -> ConfiguredFleet {
        let director_port = free_udp_port();
        let director_admin = scratch.path("director.sock");
        let server_admin = scratch.path("server.sock");
        let director_base = format!(
            "listen = \"127.0.0.1:{director_port}\"\nheartbeat_listen = \"127.0.0.1:0\"\nadmin_socket = {:?}\nmetrics = \"off\"\n",
            director_admin.display().to_string()
        );
        let server_base = format!(
            "media = {:?}\nlisten = \"127.0.0.1:{}\"\nno_multicast = true\nadmin_socket = {:?}\nmetrics = \"off\"\ndirector = [\"127.0.0.1:{director_port}\"]\n",
            media.display().to_string(),
            free_udp_port(),
            server_admin.display().to_string()
        );
        let director_config = scratch.path("direct.toml");
        let server_config = scratch.path("serve.toml");
        std::fs::write(&director_config, format!("{director_base}{director_extra}")).unwrap();
        std::fs::write(&server_config, format!("{server_base}{server_extra}")).unwrap();
        let director = Proc::spawn(
            "loopcastd direct",
            Command::new(bin("loopcastd"))
                .args(["direct", "--config"])
                .arg(&director_config),
        );
        wait_for_admin(&director_admin);
        let server = Proc::spawn(
            "loopcastd serve",
            Command::new(bin("loopcastd"))
                .args(["serve", "--config"])
                .arg(&server_config),
        );
        wait_for_admin(&server_admin);
        ConfiguredFleet {
            director,
            server,
            director_admin,
            server_admin,
            director_config,
            server_config,
            director_base,
            server_base,
        }
    }

    /// Rewrites both files with these extra lines, and sends each daemon SIGHUP.
    pub fn reload_with(&self, director_extra: &str, server_extra: &str) {
        std::fs::write(
            &self.director_config,
            format!("{}{director_extra}", self.director_base),
        )
        .unwrap();
        std::fs::write(
            &self.server_config,
            format!("{}{server_extra}", self.server_base),
        )
        .unwrap();
        hang_up(&self.server);
        hang_up(&self.director);
    }
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("command starts");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `loopcastd check --media MEDIA EXTRA...`, to run as the test needs (`.output()`, `run_ok`).
pub fn loopcastd_check(media: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(bin("loopcastd"));
    command.args(["check", "--media"]).arg(media).args(extra);
    command
}

pub fn json_of(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Deterministic test content: half text, half noise.
pub fn write_content(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let data: Vec<u8> = (0..len)
        .map(|i| {
            if (i >> 18) % 3 == 0 {
                b"carousel"[i % 8]
            } else {
                next_byte(&mut state)
            }
        })
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

/// One pseudo-random byte from an xorshift64 state (non-zero): the tests' only noise source.
pub fn next_byte(state: &mut u64) -> u8 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state as u8
}

/// `len` pseudo-random bytes from `state`.
pub fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len).map(|_| next_byte(state)).collect()
}

/// Packs `input` into `media` (encrypted, watermarked); returns the pack JSON.
pub fn pack_into(input: &Path, media: &Path, extra: &[&str]) -> serde_json::Value {
    let output = run_ok(
        Command::new(bin("loopcast"))
            .arg("pack")
            .arg(input)
            .arg("--media")
            .arg(media)
            .args(["--owner", "e2e-studio", "--notice", "(c) e2e", "--json"])
            .args(extra),
    );
    json_of(&output)
}

/// `datagram_size` and `loop_len` of an archive, from `loopcast inspect`.
pub fn shape_of(archive: &Path) -> (usize, u32) {
    let inspect = json_of(&run_ok(
        Command::new(bin("loopcast"))
            .args(["inspect", "--json"])
            .arg(archive),
    ));
    (
        inspect["datagram_size"].as_u64().unwrap() as usize,
        inspect["loop_len"].as_u64().unwrap() as u32,
    )
}

/// `loopcastctl status --json` against the daemon's admin socket.
pub fn status_of(admin: &Path) -> serde_json::Value {
    json_of(&run_ok(
        Command::new(bin("loopcastctl"))
            .arg("--socket")
            .arg(admin)
            .args(["status", "--json"]),
    ))
}

/// Starts loopcastd inside network namespace `ns`, listening on `ip:7700`, sending multicast
/// from `ip` with TTL 1 at `rate`, and waits until its admin socket answers.
pub fn serve_in_namespace(ns: &str, ip: &str, media: &Path, admin: &Path, rate: &str) -> Proc {
    serve_in_namespace_with(ns, ip, media, admin, &["--rate", rate])
}

/// As [`serve_in_namespace`], with `extra` flags instead of a `--rate` (none: the server's
/// automatic rates).
pub fn serve_in_namespace_with(
    ns: &str,
    ip: &str,
    media: &Path,
    admin: &Path,
    extra: &[&str],
) -> Proc {
    let server = Proc::spawn(
        "loopcastd",
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin("loopcastd"))
            .arg("serve")
            .arg("--media")
            .arg(media)
            .args(["--listen", &format!("{ip}:7700")])
            .args(["--multicast-interface", ip, "--multicast-ttl", "1"])
            .arg("--admin-socket")
            .arg(admin)
            .args(extra),
    );
    wait_for_admin(admin);
    server
}

/// Loads an nftables ruleset (`nft -f -` syntax) into network namespace `ns`.
pub fn load_nft_rules(ns: &str, rules: &str) {
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
    let nft = nft.wait_with_output().unwrap();
    assert!(
        nft.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&nft.stderr)
    );
}

/// Asserts that no network namespace whose name contains `tag` is left.
pub fn assert_no_namespaces_left(tag: &str) {
    let leftover = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&leftover.stdout).contains(tag),
        "namespaces left behind"
    );
}

/// Waits until `loopcastctl status` answers on `socket`.
pub fn wait_for_admin(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let ok = Command::new(bin("loopcastctl"))
            .arg("--socket")
            .arg(socket)
            .args(["status", "--json"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("daemon admin socket {} never answered", socket.display());
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What a test needs from the machine beyond loopback. The harness checks it before the test
/// runs: if it is missing for a normal user, the test is reported ignored with the reason; if
/// it is missing as root (as in CI), the test fails, because there it must run.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Root itself (acting as other users, mounting a tmpfs in a private mount namespace).
    Root(&'static str),
    /// Root, for `ip netns` (iproute2).
    RootNetns,
    /// Root, for `ip netns` and nftables inside the namespaces.
    RootNetnsNft,
    /// Network namespaces one way or another: root with iproute2, or (as a normal user) an
    /// unprivileged user+network namespace (`unshare -Urn`) with iproute2.
    Namespaces,
    /// An unprivileged user+network namespace, as `loopcast demo` makes for itself.
    UserNamespace,
    /// A program, and where .ci/run gets it.
    Program(&'static str, &'static str),
}

/// Whether `program args` runs and exits 0.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn iproute2() -> bool {
    runs("ip", &["-V"])
}

fn nftables() -> bool {
    runs("nft", &["--version"])
}

fn user_namespaces() -> bool {
    runs("unshare", &["--user", "--map-root-user", "--net", "true"])
}

impl Need {
    /// `Ok(None)`: the test can run. `Ok(Some(reason))`: it cannot, and this is not root, so it
    /// is ignored. `Err(reason)`: as root it cannot run, which is a failure.
    pub fn check(self) -> Result<Option<String>, String> {
        let root = is_root();
        let missing: Option<&str> = match self {
            Need::Root(why) if !root => return Ok(Some(format!("needs root {why}"))),
            Need::RootNetns | Need::RootNetnsNft if !root => {
                return Ok(Some(match self {
                    Need::RootNetns => "needs root for ip netns".into(),
                    _ => "needs root for ip netns and nftables inside the namespaces".into(),
                }));
            }
            Need::RootNetns | Need::Namespaces if !iproute2() => Some("ip (iproute2)"),
            Need::RootNetnsNft if !iproute2() => Some("ip (iproute2)"),
            Need::RootNetnsNft if !nftables() => Some("nft (nftables)"),
            Need::Namespaces if !root && !user_namespaces() => {
                return Ok(Some(
                    "needs root for ip netns, or unprivileged user namespaces (unshare -Urn); \
                     this machine allows neither"
                        .into(),
                ));
            }
            Need::UserNamespace if !user_namespaces() => {
                Some("an unprivileged user+network namespace (unshare -Urn)")
            }
            Need::Program(program, package) if !runs(program, &["--version"]) => {
                let what = format!("{program} ({package})");
                return if root {
                    Err(format!(
                        "running as root, so this test must run, but {what} is not available \
                         (.ci/run installs it)"
                    ))
                } else {
                    Ok(Some(format!("needs {what}, which is not available")))
                };
            }
            _ => None,
        };
        match missing {
            None => Ok(None),
            Some(what) if root => Err(format!(
                "running as root, so this test must run, but {what} is not available \
                 (.ci/run installs iproute2, nftables, util-linux and systemd)"
            )),
            Some(what) => Ok(Some(format!("needs {what}, which is not available"))),
        }
    }
}

/// One e2e test for the libtest-mimic harness: `need` is checked first (see [`Need`]); a panic
/// in `body` fails the test.
pub fn trial(name: &str, need: Option<Need>, body: fn()) -> libtest_mimic::Trial {
    libtest_mimic::Trial::ignorable_test(name, move || {
        if let Some(need) = need {
            match need.check() {
                Ok(None) => {}
                Ok(Some(reason)) => return Ok(libtest_mimic::Completion::ignored_with(reason)),
                Err(failure) => return Err(failure.into()),
            }
        }
        body();
        Ok(libtest_mimic::Completion::Completed)
    })
}

/// `loopcastd serve` on 127.0.0.1:`port` without multicast (the host namespace never gets
/// multicast), its admin socket at `admin`, plus `extra` flags.
pub fn loopcastd_on_loopback(port: u16, media: &Path, admin: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(bin("loopcastd"));
    command
        .args([
            "serve",
            "--no-multicast",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--media")
        .arg(media)
        .arg("--admin-socket")
        .arg(admin)
        .args(extra);
    command
}

/// A loopcastd serving on 127.0.0.1 without multicast (the host namespace never gets multicast).
pub struct UnicastServer {
    pub process: Proc,
    pub port: u16,
    pub admin: PathBuf,
}

impl UnicastServer {
    /// Starts the daemon on `media` with `extra` flags and waits until its admin socket answers.
    pub fn start(scratch: &Scratch, media: &Path, extra: &[&str]) -> UnicastServer {
        let port = free_udp_port();
        let admin = scratch.path("admin.sock");
        let process = Proc::spawn(
            "loopcastd",
            &mut loopcastd_on_loopback(port, media, &admin, extra),
        );
        wait_for_admin(&admin);
        UnicastServer {
            process,
            port,
            admin,
        }
    }

    /// `loopcastctl status --json`, once the daemon's status snapshot is newer than anything
    /// the test did before the call (the control loop publishes it at least every ~150 ms).
    pub fn status(&self) -> serde_json::Value {
        std::thread::sleep(std::time::Duration::from_millis(250));
        status_of(&self.admin)
    }

    /// Waits until the status counter `name` reaches `at_least`; fails the test with `what` and
    /// the last status if it does not within `within`.
    pub fn wait_for_counter(
        &self,
        name: &str,
        at_least: u64,
        within: std::time::Duration,
        what: &str,
    ) -> serde_json::Value {
        let started = std::time::Instant::now();
        loop {
            let status = self.status();
            if status["counters"][name].as_u64().unwrap_or(0) >= at_least {
                return status;
            }
            assert!(started.elapsed() < within, "{what}: {status}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
