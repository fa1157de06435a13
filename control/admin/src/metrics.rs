//! A Prometheus text endpoint (`GET /metrics`) beside the admin socket, from the same status
//! snapshot the control loop publishes (never from the loop itself).
//!
//! Hand-written on purpose: one route, one thread, bounded (one connection at a time, 2 s and
//! 4 KiB for its request, the answer from a snapshot at most 50 ms old); an HTTP crate would
//! bring an async runtime into a daemon that has none. Bound to localhost by default: the
//! counters say who the clients are. What it exports, from the status JSON:
//! - every number in `counters` as `<prefix>_<name>_total`, typed counter (the status JSON's
//!   name with the suffix Prometheus asks of a counter);
//! - the count of `sessions`, `channels` and `servers` as `<prefix>_sessions` etc.;
//! - per channel (server): its rate, sessions, and bytes and repairs sent (counters, `_total`),
//!   labelled by file, channel id (stable while it runs) and tier (position among the file's
//!   tiers, which shifts when another closes);
//! - per server (director): sessions and whether it is online, labelled by address.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_LEN_MAX: usize = 4096;
/// The accept loop looks for a stop this often.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// Renders the status JSON as Prometheus text: each metric family in one group under its
/// `# TYPE` line (`counters` are counters; list sizes, rates, sessions and online are gauges;
/// per channel, bytes and repairs sent are counters).
pub fn render(prefix: &str, status: &serde_json::Value) -> String {
    let mut out = String::new();
    let name = |metric: &str| format!("{prefix}_{metric}");
    if let Some(counters) = status["counters"].as_object() {
        for (key, value) in counters {
            if let Some(number) = value.as_f64() {
                let metric = counter_name(name(&sanitize(key)));
                let _ = writeln!(out, "# TYPE {metric} counter\n{metric} {number}");
            }
        }
    }
    for list in ["sessions", "channels", "servers"] {
        if let Some(items) = status[list].as_array() {
            let metric = name(list);
            let _ = writeln!(out, "# TYPE {metric} gauge\n{metric} {}", items.len());
        }
    }
    let channels: Vec<&serde_json::Value> = status["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for (field, kind) in [
        ("rate_bits_per_s", "gauge"),
        ("bytes_sent", "counter"),
        ("sessions", "gauge"),
        ("repair_datagrams", "counter"),
    ] {
        let mut metric = name(&format!("channel_{field}"));
        if kind == "counter" {
            metric = counter_name(metric);
        }
        let mut typed = false;
        for channel in &channels {
            let Some(number) = channel[field].as_f64() else {
                continue;
            };
            if !typed {
                let _ = writeln!(out, "# TYPE {metric} {kind}");
                typed = true;
            }
            // `channel` keeps a series its own while the channel runs: `tier` (a position
            // among the file's tiers) shifts when another tier closes, and a counter under it
            // would read as reset.
            let _ = writeln!(
                out,
                "{metric}{{file=\"{}\",channel=\"{}\",tier=\"{}\"}} {number}",
                escape(channel["file"].as_str().unwrap_or("")),
                channel["channel"].as_u64().unwrap_or(0),
                channel["tier"].as_u64().unwrap_or(0)
            );
        }
    }
    let servers: Vec<&serde_json::Value> =
        status["servers"].as_array().into_iter().flatten().collect();
    let server_labels = |server: &serde_json::Value| {
        format!(
            "server=\"{}\",location=\"{}\"",
            escape(server["address"].as_str().unwrap_or("")),
            escape(server["location"].as_str().unwrap_or(""))
        )
    };
    if !servers.is_empty() {
        let metric = name("server_online");
        let _ = writeln!(out, "# TYPE {metric} gauge");
        for server in &servers {
            let online = u8::from(server["state"] == "online");
            let _ = writeln!(out, "{metric}{{{}}} {online}", server_labels(server));
        }
        let metric = name("server_sessions");
        let _ = writeln!(out, "# TYPE {metric} gauge");
        for server in &servers {
            if let Some(sessions) = server["sessions"].as_f64() {
                let _ = writeln!(out, "{metric}{{{}}} {sessions}", server_labels(server));
            }
        }
    }
    out
}

/// A counter's name ends in `_total` (Prometheus' naming rule; OpenMetrics requires it).
fn counter_name(metric: String) -> String {
    if metric.ends_with("_total") {
        metric
    } else {
        metric + "_total"
    }
}

fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The running endpoint; dropping it stops the thread.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    address: SocketAddr,
}

impl MetricsServer {
    /// Serves `GET /metrics` on `address` from what `snapshot` returns (the latest status).
    pub fn start(
        address: SocketAddr,
        prefix: &'static str,
        snapshot: impl Fn() -> Option<Arc<serde_json::Value>> + Send + 'static,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("loopcast-metrics".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => answer(stream, prefix, &snapshot),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(ACCEPT_POLL)
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "metrics accept error");
                            std::thread::sleep(ACCEPT_POLL);
                        }
                    }
                }
            })?;
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
            address,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The endpoint beside `admin`'s status, if an address is asked for; a port that cannot be
    /// bound is logged and the daemon runs on (metrics are not worth refusing service over).
    pub fn start_beside(
        address: Option<SocketAddr>,
        admin: Option<&crate::AdminServer>,
        prefix: &'static str,
    ) -> Option<MetricsServer> {
        let (address, admin) = (address?, admin?);
        match MetricsServer::start(address, prefix, admin.status_reader()) {
            Ok(server) => {
                tracing::info!(address = %server.address(), "metrics at http://{}/metrics", server.address());
                Some(server)
            }
            Err(error) => {
                tracing::warn!(%address, %error, "no metrics endpoint: cannot bind it");
                None
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(
    mut stream: TcpStream,
    prefix: &str,
    snapshot: &impl Fn() -> Option<Arc<serde_json::Value>>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let mut request = Vec::with_capacity(512);
    let mut buffer = [0u8; 512];
    // Up to the end of the request head, within the bounds.
    while request.len() < REQUEST_LEN_MAX && !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let (status, body) = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics" {
        match snapshot() {
            Some(value) => ("200 OK", render(prefix, &value)),
            None => ("503 Service Unavailable", "starting\n".to_owned()),
        }
    } else {
        ("404 Not Found", "try GET /metrics\n".to_owned())
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_lists_and_labelled_channels_render_as_prometheus_text() {
        let status = serde_json::json!({
            "counters": {"requests": 12, "sessions_expired": 1, "note": "x"},
            "sessions": [{}, {}],
            "channels": [{"file": "a \"b\".mkv", "channel": 7, "tier": 1, "rate_bits_per_s": 1000, "bytes_sent": 5, "sessions": 2, "repair_datagrams": 0}],
        });
        let text = render("loopcastd", &status);
        assert!(text.contains("loopcastd_requests_total 12\n"), "{text}");
        assert!(
            text.contains("loopcastd_sessions_expired_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "loopcastd_channel_bytes_sent_total{file=\"a \\\"b\\\".mkv\",channel=\"7\",tier=\"1\"} 5\n"
            ),
            "{text}"
        );
        assert!(text.contains("loopcastd_sessions 2\n"), "{text}");
        assert!(text.contains("loopcastd_channels 1\n"), "{text}");
        assert!(
            text.contains(
                "loopcastd_channel_rate_bits_per_s{file=\"a \\\"b\\\".mkv\",channel=\"7\",tier=\"1\"} 1000\n"
            ),
            "{text}"
        );
        assert!(!text.contains("note"), "only numbers: {text}");
    }

    /// Every family in one group under one `# TYPE` line (the text format asks it; before,
    /// two channels' samples interleaved their families and nothing was typed).
    #[test]
    fn every_family_is_one_group_under_its_type_line() {
        let channel = |file: &str| {
            serde_json::json!({"file": file, "tier": 0, "rate_bits_per_s": 1, "bytes_sent": 2,
                "sessions": 3, "repair_datagrams": 4})
        };
        let server = |address: &str, state: &str| serde_json::json!({"address": address, "location": "", "state": state, "sessions": 1});
        let status = serde_json::json!({
            "counters": {"requests": 12, "redirects": 3},
            "channels": [channel("a"), channel("b"), channel("c")],
            "servers": [server("10.0.0.1:7700", "online"), server("10.0.0.2:7700", "dead")],
        });
        let text = render("loopcastd", &status);
        let mut typed: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split(' ');
                let family = words.next().unwrap().to_owned();
                assert!(matches!(words.next(), Some("counter" | "gauge")), "{line}");
                assert!(!typed.contains(&family), "{family} typed twice:\n{text}");
                typed.push(family);
                continue;
            }
            let family = line.split(['{', ' ']).next().unwrap();
            assert_eq!(
                Some(family),
                typed.last().map(String::as_str),
                "a sample outside its family's group:\n{text}"
            );
        }
        assert!(
            text.contains("# TYPE loopcastd_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE loopcastd_channel_bytes_sent_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE loopcastd_server_online gauge\n"),
            "{text}"
        );
        assert_eq!(text.matches("loopcastd_channel_sessions{").count(), 3);
    }

    #[test]
    fn the_endpoint_answers_metrics_and_nothing_else() {
        let status = Arc::new(serde_json::json!({"counters": {"requests": 3}}));
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), "loopcastd", move || {
            Some(status.clone())
        })
        .unwrap();
        let get = |path: &str| {
            let mut stream = TcpStream::connect(server.address()).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        };
        let answer = get("/metrics");
        assert!(answer.starts_with("HTTP/1.0 200 OK"), "{answer}");
        assert!(answer.ends_with("loopcastd_requests_total 3\n"), "{answer}");
        assert!(get("/").starts_with("HTTP/1.0 404"));
        // A client that sends nothing costs at most the timeout, then the next is served.
        let _silent = TcpStream::connect(server.address()).unwrap();
        assert!(get("/metrics").starts_with("HTTP/1.0 200 OK"));
    }
}
