//! The daemon side of the admin socket: a thread of its own, so that no admin client can ever
//! hold up the control loop (issue 9, defect 8: idle connections used to block it for 2 s each).
//!
//! ```text
//!  control loop ──publish_status(every ≥ 50 ms)──▶ StatusBoard (Mutex<Arc<Value>>)
//!                                                        │ read by
//!  clients ──connect──▶ accept thread (mio) ──peer ok, slot free──▶ one thread per connection
//!                          │ refused at once: wrong peer, all slots busy (counted)
//! ```
//!
//! Bounds: at most `connections_max` connections are served at a time (more are answered
//! `busy` and closed at once); each has `idle_timeout` in total to send its request line and
//! again to take the answer; a request line is at most `request_len_max` bytes. A slow or
//! silent client costs one of the slots for at most that long, and nothing else.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UnixListener as MioUnixListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::location::{self, PlaceError};
use crate::{peer_allowed, peer_uid, AdminRequest, IO_TIMEOUT, REQUEST_LEN_MAX};

/// Connections served at the same time by default.
pub const CONNECTIONS_MAX: usize = 16;
/// The control loop rebuilds the status at most this often (it is O(sessions)).
pub const STATUS_PUBLISH_INTERVAL: Duration = Duration::from_millis(50);
/// The accept thread wakes at least this often (to retry after an accept error).
const ACCEPT_POLL_CEILING: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub connections_max: usize,
    /// Time a connection has to send its request line, and again to take the answer.
    pub idle_timeout: Duration,
    pub request_len_max: usize,
    /// Commands besides `status` that the daemon acts on (e.g. "drain"): the admin thread
    /// queues them (at most `ACTIONS_QUEUED_MAX`) for the control loop, which takes them with
    /// [`AdminServer::take_actions`], and answers `{"accepted": command}`.
    pub actions: Vec<&'static str>,
    /// Commands (with an argument) whose answer the control loop gives (e.g. `stop-channel`,
    /// "how many clients were told"): the admin thread queues them (at most
    /// `ACTIONS_QUEUED_MAX`), the loop takes them with [`AdminServer::take_answered`] and
    /// answers each with [`PendingAnswer::answer`]; the connection waits for it at most
    /// `idle_timeout`.
    pub answered: Vec<&'static str>,
}

/// A command the control loop is to carry out and answer.
#[derive(Debug)]
pub struct PendingAnswer {
    pub command: String,
    pub argument: Option<String>,
    reply: std::sync::mpsc::SyncSender<serde_json::Value>,
}

impl PendingAnswer {
    /// The answer the waiting client gets (if it still waits).
    pub fn answer(self, value: serde_json::Value) {
        let _ = self.reply.try_send(value);
    }
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            connections_max: CONNECTIONS_MAX,
            idle_timeout: IO_TIMEOUT,
            request_len_max: REQUEST_LEN_MAX,
            actions: Vec::new(),
            answered: Vec::new(),
        }
    }
}

/// Actions waiting for the control loop, at most (more are refused as busy).
const ACTIONS_QUEUED_MAX: usize = 16;

/// What the admin thread did, for `status` (`"admin"` in the answer).
#[derive(Debug, Default)]
struct AdminCounters {
    connections_accepted: AtomicU64,
    refused_busy: AtomicU64,
    refused_peer: AtomicU64,
    accept_errors: AtomicU64,
    requests_answered: AtomicU64,
    requests_bad: AtomicU64,
    requests_too_long: AtomicU64,
    requests_timed_out: AtomicU64,
}

/// State shared by the control loop (writer of the status) and the admin threads.
struct Shared {
    config: AdminConfig,
    /// The latest status the control loop published, and when.
    status: Mutex<Option<(Instant, Arc<serde_json::Value>)>>,
    connections_open: AtomicUsize,
    counters: AdminCounters,
    stop: AtomicBool,
    /// Accepted actions the control loop has not taken yet.
    actions: Mutex<std::collections::VecDeque<String>>,
    /// Answered commands the control loop has not taken yet.
    answered: Mutex<std::collections::VecDeque<PendingAnswer>>,
}

/// The running admin socket. Dropping it stops the accept thread and removes the socket file
/// (if it is still the one this server bound).
pub struct AdminServer {
    shared: Arc<Shared>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    /// (device, inode) of the socket file this server created.
    socket_identity: (u64, u64),
    last_published: Option<Instant>,
}

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Place(#[from] PlaceError),
    #[error("admin socket {path}: cannot start its thread: {source}")]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AdminServer {
    /// Binds `path` (see [`location::bind`]: private directory, stale socket replaced, live one
    /// refused) and starts the accept thread.
    pub fn start(path: &Path, config: AdminConfig) -> Result<AdminServer, StartError> {
        assert!(config.connections_max > 0, "admin: connections_max is zero");
        assert!(config.request_len_max > 0, "admin: request_len_max is zero");
        let thread_error = |source| StartError::Thread {
            path: path.to_owned(),
            source,
        };
        let listener = location::bind(path)?;
        let meta = std::fs::symlink_metadata(path).map_err(|source| PlaceError::Inspect {
            path: path.to_owned(),
            source,
        })?;
        let socket_identity = (meta.dev(), meta.ino());
        let remove_socket = || {
            let _ = std::fs::remove_file(path);
        };
        let (poll, listener, waker) = register(listener).map_err(|e| {
            remove_socket();
            thread_error(e)
        })?;
        let shared = Arc::new(Shared {
            config,
            status: Mutex::new(None),
            connections_open: AtomicUsize::new(0),
            counters: AdminCounters::default(),
            stop: AtomicBool::new(false),
            actions: Mutex::new(std::collections::VecDeque::new()),
            answered: Mutex::new(std::collections::VecDeque::new()),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("loopcast-admin".into())
            .spawn(move || accept_loop(poll, listener, &thread_shared))
            .map_err(|e| {
                remove_socket();
                thread_error(e)
            })?;
        Ok(AdminServer {
            shared,
            waker,
            thread: Some(thread),
            path: path.to_owned(),
            socket_identity,
            last_published: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader of the latest published status, for another thread (the metrics endpoint).
    pub fn status_reader(&self) -> impl Fn() -> Option<Arc<serde_json::Value>> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            shared
                .status
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .as_ref()
                .map(|(_, value)| Arc::clone(value))
        }
    }

    /// The actions (see [`AdminConfig::actions`]) accepted since the last call, in order.
    pub fn take_actions(&mut self) -> Vec<String> {
        let mut queue = self
            .shared
            .actions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queue.drain(..).collect()
    }

    /// The answered commands (see [`AdminConfig::answered`]) queued since the last call, in
    /// order; answer each.
    pub fn take_answered(&mut self) -> Vec<PendingAnswer> {
        let mut queue = self
            .shared
            .answered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queue.drain(..).collect()
    }

    /// Called by the control loop on every pass: rebuilds the status with `status` when the
    /// last one is at least [`STATUS_PUBLISH_INTERVAL`] old (the first call always publishes).
    /// The admin thread answers `status` from the latest one, never from the loop itself.
    pub fn publish_status(&mut self, status: impl FnOnce() -> serde_json::Value) {
        let now = Instant::now();
        if let Some(last) = self.last_published {
            if now.duration_since(last) < STATUS_PUBLISH_INTERVAL {
                return;
            }
        }
        self.last_published = Some(now);
        let value = Arc::new(status());
        // A poisoned lock only means an admin thread panicked while cloning an Arc; the value
        // inside is still whole.
        let mut slot = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some((now, value));
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Connection threads end on their own within their timeouts; they hold no socket file.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.socket_identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The accept thread's poll: the listener (non-blocking) and a waker for shutdown.
fn register(
    listener: std::os::unix::net::UnixListener,
) -> std::io::Result<(Poll, MioUnixListener, Waker)> {
    listener.set_nonblocking(true)?;
    let mut listener = MioUnixListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    Ok((poll, listener, waker))
}

fn accept_loop(mut poll: Poll, listener: MioUnixListener, shared: &Arc<Shared>) {
    let mut events = Events::with_capacity(4);
    while !shared.stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(ACCEPT_POLL_CEILING)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "admin socket: poll failed; admin thread stops");
                return;
            }
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        // Accept until the backlog is empty; bounded, so a flood cannot pin this thread.
        for _ in 0..1024 {
            match listener.accept() {
                Ok((stream, _)) => {
                    admit(UnixStream::from(std::os::fd::OwnedFd::from(stream)), shared);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. EMFILE: counted, retried on the next wake-up (at most 100 ms).
                    shared
                        .counters
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "admin accept");
                    break;
                }
            }
        }
    }
}

/// Writes one answer line to a connection that is being turned away, without ever blocking.
fn turn_away(mut stream: UnixStream, answer: serde_json::Value) {
    let _ = stream.set_nonblocking(true);
    let mut text = answer.to_string();
    text.push('\n');
    let _ = stream.write_all(text.as_bytes());
}

/// Decides on a new connection at once: a foreign peer or a full house is turned away;
/// anything else gets a thread of its own and a slot until it ends.
fn admit(stream: UnixStream, shared: &Arc<Shared>) {
    let counters = &shared.counters;
    match peer_uid(&stream) {
        Ok(uid) if peer_allowed(uid) => {}
        Ok(uid) => {
            counters.refused_peer.fetch_add(1, Ordering::Relaxed);
            turn_away(
                stream,
                serde_json::json!({"error": format!("permission denied for uid {uid}")}),
            );
            return;
        }
        Err(e) => {
            counters.refused_peer.fetch_add(1, Ordering::Relaxed);
            turn_away(
                stream,
                serde_json::json!({"error": format!("cannot check peer credentials: {e}")}),
            );
            return;
        }
    }
    let max = shared.config.connections_max;
    // Only this thread increments, so load-then-add cannot overshoot.
    if shared.connections_open.load(Ordering::Acquire) >= max {
        counters.refused_busy.fetch_add(1, Ordering::Relaxed);
        turn_away(
            stream,
            serde_json::json!({
                "error": format!("busy: {max} admin connections open; try again"),
                "retry": true,
            }),
        );
        return;
    }
    // mio accepts non-blocking; this connection's thread uses blocking reads with timeouts.
    if let Err(e) = stream.set_nonblocking(false) {
        counters.accept_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(error = %e, "admin connection");
        return;
    }
    shared.connections_open.fetch_add(1, Ordering::AcqRel);
    counters
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    let slot = Slot(Arc::clone(shared));
    let spawned = std::thread::Builder::new()
        .name("loopcast-admin-conn".into())
        .spawn(move || serve(stream, &slot.0));
    if let Err(e) = spawned {
        // The closure (and with it the slot) was dropped: the count is already back.
        counters.accept_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(error = %e, "admin: cannot start a connection thread");
    }
}

/// One connection slot; given back when dropped (panic included).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::AcqRel);
    }
}

enum RequestLine {
    Line(Vec<u8>),
    TooLong,
    TimedOut,
    Failed(std::io::Error),
}

/// Reads one request line (up to `len_max` bytes before the newline) within `timeout` in total.
/// End of stream ends the line too.
fn read_request_line(stream: &mut UnixStream, len_max: usize, timeout: Duration) -> RequestLine {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::with_capacity(256.min(len_max));
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return RequestLine::TimedOut;
        }
        if let Err(e) = stream.set_read_timeout(Some(left)) {
            return RequestLine::Failed(e);
        }
        let room = (len_max + 1 - line.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return RequestLine::Line(line),
            Ok(n) => {
                if let Some(end) = chunk[..n].iter().position(|&b| b == b'\n') {
                    line.extend_from_slice(&chunk[..end]);
                    return if line.len() > len_max {
                        RequestLine::TooLong
                    } else {
                        RequestLine::Line(line)
                    };
                }
                line.extend_from_slice(&chunk[..n]);
                if line.len() > len_max {
                    return RequestLine::TooLong;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return RequestLine::TimedOut
            }
            Err(e) => return RequestLine::Failed(e),
        }
    }
}

/// Serves one connection on its own thread: one request line in, one answer line out.
fn serve(mut stream: UnixStream, shared: &Shared) {
    let counters = &shared.counters;
    let config = &shared.config;
    let answer = match read_request_line(&mut stream, config.request_len_max, config.idle_timeout) {
        RequestLine::Line(line) => match serde_json::from_slice::<AdminRequest>(trim(&line)) {
            Ok(request) => {
                counters.requests_answered.fetch_add(1, Ordering::Relaxed);
                answer(&request, shared)
            }
            Err(e) => {
                counters.requests_bad.fetch_add(1, Ordering::Relaxed);
                serde_json::json!({"error": format!("bad request: {e}")})
            }
        },
        RequestLine::TooLong => {
            counters.requests_too_long.fetch_add(1, Ordering::Relaxed);
            serde_json::json!({
                "error": format!("bad request: longer than {} bytes", config.request_len_max)
            })
        }
        RequestLine::TimedOut => {
            counters.requests_timed_out.fetch_add(1, Ordering::Relaxed);
            serde_json::json!({
                "error": format!("no request within {} ms", config.idle_timeout.as_millis())
            })
        }
        RequestLine::Failed(e) => {
            tracing::debug!(error = %e, "admin connection");
            return;
        }
    };
    let mut text = answer.to_string();
    text.push('\n');
    let written = stream
        .set_write_timeout(Some(config.idle_timeout))
        .and_then(|()| stream.write_all(text.as_bytes()));
    if let Err(e) = written {
        tracing::debug!(error = %e, "admin connection: answer not taken");
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn answer(request: &AdminRequest, shared: &Shared) -> serde_json::Value {
    match request.command.as_str() {
        "status" => status_answer(shared),
        action if shared.config.actions.contains(&action) => {
            let mut queue = shared
                .actions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if queue.len() >= ACTIONS_QUEUED_MAX {
                return serde_json::json!({"error": "busy: too many commands waiting; try again", "retry": true});
            }
            queue.push_back(action.to_owned());
            serde_json::json!({"accepted": action})
        }
        command if shared.config.answered.contains(&command) => {
            let (reply, answer) = std::sync::mpsc::sync_channel(1);
            {
                let mut queue = shared
                    .answered
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if queue.len() >= ACTIONS_QUEUED_MAX {
                    return serde_json::json!({"error": "busy: too many commands waiting; try again", "retry": true});
                }
                queue.push_back(PendingAnswer {
                    command: command.to_owned(),
                    argument: request.argument.clone(),
                    reply,
                });
            }
            let wait = shared.config.idle_timeout;
            answer.recv_timeout(wait).unwrap_or_else(|_| {
                serde_json::json!({"error": format!(
                    "the daemon did not answer {command} within {} ms; its log says whether it acted",
                    wait.as_millis()
                )})
            })
        }
        other => {
            let mut known = vec!["status"];
            known.extend(shared.config.actions.iter().copied());
            known.extend(shared.config.answered.iter().copied());
            serde_json::json!({"error": format!("unknown command {other:?}; try one of {known:?}")})
        }
    }
}

/// The latest published status with the admin thread's own live counters added as `"admin"`.
fn status_answer(shared: &Shared) -> serde_json::Value {
    let latest = shared
        .status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let Some((published, status)) = latest else {
        return serde_json::json!({"error": "the daemon is starting; try again", "retry": true});
    };
    let counters = &shared.counters;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let admin = serde_json::json!({
        "status_age_ms": published.elapsed().as_millis() as u64,
        "connections_open": shared.connections_open.load(Ordering::Relaxed),
        "connections_max": shared.config.connections_max,
        "connections_accepted": load(&counters.connections_accepted),
        "refused_busy": load(&counters.refused_busy),
        "refused_peer": load(&counters.refused_peer),
        "accept_errors": load(&counters.accept_errors),
        "requests_answered": load(&counters.requests_answered),
        "requests_bad": load(&counters.requests_bad),
        "requests_too_long": load(&counters.requests_too_long),
        "requests_timed_out": load(&counters.requests_timed_out),
    });
    let mut reply = (*status).clone();
    match reply.as_object_mut() {
        Some(object) => {
            object.insert("admin".into(), admin);
            reply
        }
        None => serde_json::json!({"status": reply, "admin": admin}),
    }
}
