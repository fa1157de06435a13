//! The admin socket (R23). One request per connection: the client writes one JSON object on
//! one line (`{"command":"status"}`), the daemon answers with one JSON object on one line.
//! The socket file is created mode 0600, and every connection's peer credentials are checked:
//! only the daemon's own user (or root) is let in.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest request line accepted.
pub const REQUEST_LEN_MAX: usize = 4096;
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminRequest {
    pub command: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the daemon's admin socket {path}: {source} (is loopcastd running, and is this its socket?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {path}: bad answer: {reason}")]
    BadAnswer { path: PathBuf, reason: String },
}

/// Binds the admin socket, replacing a stale socket file, mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() && UnixStream::connect(path).is_err() {
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Peer uid of a connection, from the kernel (SO_PEERCRED).
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let credentials =
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(std::io::Error::from)?;
    Ok(credentials.uid())
}

/// Whether a peer may use the socket: the daemon's own user, or root.
pub fn peer_allowed(peer: u32) -> bool {
    peer == 0 || peer == nix::unistd::geteuid().as_raw()
}

/// Serves one connection: checks the peer, reads one request, writes `answer(request)`.
/// Bounded in size and time; never panics on bad input.
pub fn serve_connection(
    stream: UnixStream,
    answer: impl FnOnce(&AdminRequest) -> serde_json::Value,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let reply = match peer_uid(&stream) {
        Ok(uid) if peer_allowed(uid) => {
            let mut line = String::new();
            let mut reader = BufReader::new(stream.take(REQUEST_LEN_MAX as u64));
            match reader.read_line(&mut line) {
                Ok(_) => match serde_json::from_str::<AdminRequest>(line.trim()) {
                    Ok(request) => answer(&request),
                    Err(e) => serde_json::json!({"error": format!("bad request: {e}")}),
                },
                Err(e) => serde_json::json!({"error": format!("cannot read request: {e}")}),
            }
        }
        Ok(uid) => serde_json::json!({"error": format!("permission denied for uid {uid}")}),
        Err(e) => serde_json::json!({"error": format!("cannot check peer credentials: {e}")}),
    };
    let mut text = reply.to_string();
    text.push('\n');
    writer.write_all(text.as_bytes())
}

/// Client side: sends one command, returns the daemon's JSON answer.
pub fn request(path: &Path, command: &str) -> Result<serde_json::Value, AdminError> {
    let io = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| AdminError::Connect {
        path: path.to_owned(),
        source,
    })?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(&AdminRequest {
        command: command.to_owned(),
    })
    .expect("a plain struct serialises");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream.take(1 << 20))
        .read_line(&mut answer)
        .map_err(io)?;
    serde_json::from_str(answer.trim()).map_err(|e| AdminError::BadAnswer {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_over_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("loopcast-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.sock");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                serve_connection(
                    stream,
                    |request| serde_json::json!({"echo": request.command}),
                )
                .unwrap();
            }
        });
        assert_eq!(request(&path, "status").unwrap()["echo"], "status");
        // Garbage gets an error answer, not a crash.
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"{not json\n").unwrap();
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).unwrap();
        assert!(answer.contains("bad request"), "{answer}");
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
