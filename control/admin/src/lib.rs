//! The admin socket (R23). One request per connection: the client writes one JSON object on
//! one line (`{"command":"status"}`), the daemon answers with one JSON object on one line.
//!
//! - [`location`]: where the socket lives (a private directory, never a predictable name in a
//!   world-writable one) and the checks both sides make before trusting a path.
//! - [`server`]: the daemon side, on a thread of its own: bounded connections, a per-connection
//!   timeout, answers `status` from the snapshot the control loop publishes.
//! - [`request`]: the client side (`loopcastctl`): checks the socket file and its directory, then
//!   the peer's credentials, then asks.
//!
//! The socket file is mode 0600, and every connection's peer credentials (SO_PEERCRED) are
//! checked on both ends: the daemon lets in only its own user or root, and the client talks only
//! to a daemon of its own user or root.

pub mod location;
pub mod metrics;
pub mod reload;
pub mod server;

/// A fresh private directory for tests, removed on drop.
#[cfg(test)]
pub(crate) mod test_dir {
    use std::os::unix::fs::DirBuilderExt;
    use std::path::PathBuf;

    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).unwrap();
            let dir = std::env::temp_dir().join(format!(
                "loopcast-admin-{tag}-{}-{:x}",
                std::process::id(),
                u64::from_ne_bytes(nonce)
            ));
            std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use location::{default_socket_path, default_socket_path_here, PlaceError};
pub use server::{AdminConfig, AdminServer, PendingAnswer, StartError};

/// Longest request line accepted.
pub const REQUEST_LEN_MAX: usize = 4096;
/// Time a connection has to send its request, and again to take its answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer a client reads.
pub const ANSWER_LEN_MAX: u64 = 64 << 20;
/// How long a client keeps retrying while the daemon says "busy" or "starting".
pub const RETRY_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminRequest {
    pub command: String,
    /// What the command acts on, for commands that take one (`stop-channel`: the channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argument: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The socket file or its directory is not to be trusted (or missing); the message says why.
    #[error("{0}")]
    Untrusted(#[from] PlaceError),
    #[error("cannot reach the daemon's admin socket {path}: {source} (is loopcastd running, and is this its socket?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing the admin socket {path}: the process listening there runs as uid {uid}, \
         neither yours ({own}) nor root's"
    )]
    Peer { path: PathBuf, uid: u32, own: u32 },
    #[error("admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {path}: bad answer: {reason}")]
    BadAnswer { path: PathBuf, reason: String },
}

/// Peer uid of a connection, from the kernel (SO_PEERCRED).
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let credentials =
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(std::io::Error::from)?;
    Ok(credentials.uid())
}

/// Whether a peer may use the socket (or be trusted by a client): our own user, or root.
pub fn peer_allowed(peer: u32) -> bool {
    peer == 0 || peer == location::effective_uid()
}

/// Client side: sends one command, returns the daemon's JSON answer. Before connecting, checks
/// the socket file and its directory ([`location::check_trusted_socket`]); after, the peer's
/// credentials. While the daemon answers `"retry": true` (all admin slots busy, or starting),
/// tries again for up to [`RETRY_FOR`].
pub fn request(path: &Path, command: &str) -> Result<serde_json::Value, AdminError> {
    request_with(path, command, None)
}

/// As [`request`], with the command's argument (e.g. `stop-channel` and the channel).
pub fn request_with(
    path: &Path,
    command: &str,
    argument: Option<&str>,
) -> Result<serde_json::Value, AdminError> {
    let give_up_at = Instant::now() + RETRY_FOR;
    loop {
        let answer = request_once_with(path, command, argument)?;
        let retry = answer.get("retry").and_then(|r| r.as_bool()) == Some(true);
        if !retry || Instant::now() >= give_up_at {
            return Ok(answer);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
fn request_once(path: &Path, command: &str) -> Result<serde_json::Value, AdminError> {
    request_once_with(path, command, None)
}

fn request_once_with(
    path: &Path,
    command: &str,
    argument: Option<&str>,
) -> Result<serde_json::Value, AdminError> {
    let io = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    let own = location::effective_uid();
    // A daemon that systemd runs as a user of its own, in a directory root gave it: that uid.
    let delegated = location::check_trusted_socket(path, own)?;
    let mut stream = UnixStream::connect(path).map_err(|source| AdminError::Connect {
        path: path.to_owned(),
        source,
    })?;
    // The checks above are on a name, which can change under us; the peer cannot.
    let uid = peer_uid(&stream).map_err(io)?;
    if !peer_allowed(uid) && delegated != Some(uid) {
        return Err(AdminError::Peer {
            path: path.to_owned(),
            uid,
            own,
        });
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(&AdminRequest {
        command: command.to_owned(),
        argument: argument.map(str::to_owned),
    })
    .expect("a struct of strings serialises");
    line.push('\n');
    // A daemon that turns us away ("busy") answers and closes before reading: the write may
    // fail while its answer is waiting to be read, so read before reporting a failed write.
    let written = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(stream.take(ANSWER_LEN_MAX)).read_line(&mut answer);
    match (written, read) {
        (_, Ok(n)) if n > 0 => {}
        (Err(e), _) => return Err(io(e)),
        (Ok(()), Err(e)) => return Err(io(e)),
        (Ok(()), Ok(_)) => {}
    }
    serde_json::from_str(answer.trim()).map_err(|e| AdminError::BadAnswer {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_dir::TempDir;

    fn raw_exchange(path: &Path, request: &[u8]) -> String {
        let mut raw = UnixStream::connect(path).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A connection turned away may already be closed: its answer is still there to read.
        let _ = raw.write_all(request);
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).unwrap();
        answer
    }

    fn small(connections_max: usize, idle_ms: u64) -> AdminConfig {
        AdminConfig {
            connections_max,
            idle_timeout: Duration::from_millis(idle_ms),
            request_len_max: REQUEST_LEN_MAX,
            actions: Vec::new(),
            answered: Vec::new(),
        }
    }

    #[test]
    fn answered_commands_carry_their_argument_and_the_loops_answer() {
        let temp = TempDir::new("answered");
        let path = temp.0.join("admin.sock");
        let config = AdminConfig {
            answered: vec!["stop-channel"],
            idle_timeout: Duration::from_millis(500),
            ..AdminConfig::default()
        };
        let mut server = AdminServer::start(&path, config).unwrap();
        server.publish_status(|| serde_json::json!({}));
        let asking = {
            let path = path.clone();
            std::thread::spawn(move || request_with(&path, "stop-channel", Some("7")).unwrap())
        };
        // The control loop takes it on a later pass and answers.
        let pending = loop {
            let mut taken = server.take_answered();
            if let Some(pending) = taken.pop() {
                break pending;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(pending.command, "stop-channel");
        assert_eq!(pending.argument.as_deref(), Some("7"));
        pending.answer(serde_json::json!({"stopped": 7, "clients_told": 2}));
        let answer = asking.join().unwrap();
        assert_eq!(answer["clients_told"], 2, "{answer}");
        // A loop that never answers: the client is told so in time, not left hanging.
        let started = Instant::now();
        let answer = request_with(&path, "stop-channel", Some("8")).unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains("did not answer"), "{message}");
        assert_eq!(server.take_answered().len(), 1, "still queued for the loop");
    }

    #[test]
    fn actions_are_queued_for_the_control_loop_bounded_and_others_refused() {
        let temp = TempDir::new("actions");
        let path = temp.0.join("admin.sock");
        let config = AdminConfig {
            actions: vec!["drain", "undrain"],
            ..AdminConfig::default()
        };
        let mut server = AdminServer::start(&path, config).unwrap();
        server.publish_status(|| serde_json::json!({}));
        assert_eq!(request(&path, "drain").unwrap()["accepted"], "drain");
        assert_eq!(request(&path, "undrain").unwrap()["accepted"], "undrain");
        assert_eq!(server.take_actions(), ["drain", "undrain"]);
        assert!(server.take_actions().is_empty(), "taken once");
        // The loop is slow to take them: at most 16 wait, the rest are told to retry.
        for _ in 0..16 {
            assert_eq!(request_once(&path, "drain").unwrap()["accepted"], "drain");
        }
        let busy = request_once(&path, "drain").unwrap();
        assert_eq!(busy["retry"], true, "{busy}");
        assert_eq!(server.take_actions().len(), 16);
        let unknown = request(&path, "reboot").unwrap();
        let message = unknown["error"].as_str().unwrap();
        assert!(message.contains("drain"), "names what it knows: {message}");
    }

    #[test]
    fn status_round_trip_over_a_real_socket_and_bad_input_is_an_error_answer() {
        let temp = TempDir::new("roundtrip");
        let path = temp.0.join("admin.sock");
        let mut server = AdminServer::start(&path, AdminConfig::default()).unwrap();
        // Before the first snapshot: "starting", marked retryable.
        let answer = request_once(&path, "status").unwrap();
        assert_eq!(answer["retry"], true, "{answer}");
        server.publish_status(|| serde_json::json!({"channels": [], "archives": 3}));
        let answer = request(&path, "status").unwrap();
        assert_eq!(answer["archives"], 3, "{answer}");
        assert_eq!(answer["admin"]["connections_max"], 16, "{answer}");
        let answer = request(&path, "reboot").unwrap();
        assert!(answer["error"]
            .as_str()
            .unwrap()
            .contains("unknown command"));
        // Garbage and oversized lines get an error answer, not a crash.
        assert!(raw_exchange(&path, b"{not json\n").contains("bad request"));
        let long = vec![b'x'; REQUEST_LEN_MAX + 10];
        let answer = raw_exchange(&path, &long);
        assert!(answer.contains("longer than 4096 bytes"), "{answer}");
        let answer = request(&path, "status").unwrap();
        assert_eq!(answer["admin"]["requests_bad"], 1, "{answer}");
        assert_eq!(answer["admin"]["requests_too_long"], 1, "{answer}");
        // Shutdown removes the socket file.
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn idle_connections_cost_a_bounded_slot_for_a_bounded_time() {
        let temp = TempDir::new("idle");
        let path = temp.0.join("admin.sock");
        let mut server = AdminServer::start(&path, small(4, 400)).unwrap();
        server.publish_status(|| serde_json::json!({"ok": true}));
        let idle: Vec<UnixStream> = (0..4)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // A fifth is turned away at once, with a retryable answer.
        let started = Instant::now();
        let answer: serde_json::Value =
            serde_json::from_str(&raw_exchange(&path, b"{\"command\":\"status\"}\n")).unwrap();
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(answer["retry"], true, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().starts_with("busy"),
            "{answer}"
        );
        // A client retries and gets through once the idle ones have timed out.
        let answer = request(&path, "status").unwrap();
        assert_eq!(answer["ok"], true, "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(
            answer["admin"]["refused_busy"].as_u64().unwrap() >= 1,
            "{answer}"
        );
        // The idle ones were told why they were closed.
        for stream in idle {
            let mut text = String::new();
            BufReader::new(stream).read_line(&mut text).unwrap();
            assert!(text.contains("no request within 400 ms"), "{text}");
        }
    }

    #[test]
    fn a_trickling_client_is_cut_off_at_the_deadline_not_per_read() {
        let temp = TempDir::new("trickle");
        let path = temp.0.join("admin.sock");
        let mut server = AdminServer::start(&path, small(2, 300)).unwrap();
        server.publish_status(|| serde_json::json!({"ok": true}));
        let mut slow = UnixStream::connect(&path).unwrap();
        let started = Instant::now();
        let mut cut_off = false;
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(50));
            if slow.write_all(b" ").is_err() {
                cut_off = true;
                break;
            }
        }
        let mut text = String::new();
        slow.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = BufReader::new(&slow).read_line(&mut text);
        assert!(
            cut_off || text.contains("no request within"),
            "still open after {:?}: {text}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_millis(1500));
    }

    #[test]
    fn socket_replaced_by_someone_else_is_not_removed_on_shutdown() {
        let temp = TempDir::new("replaced");
        let path = temp.0.join("admin.sock");
        let server = AdminServer::start(&path, AdminConfig::default()).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        drop(server);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    }
}
