//! `loopcast-bench control` (issue 11): the control plane's machines on one core, in process.
//!
//! - **Reports**: a server endpoint (`proto::endpoint::Endpoint`, automatic rates) with N
//!   validated multicast clients; their Reports are fed as fast as the core takes them (parse,
//!   estimate, tier decisions, Feedback), on virtual time advancing 200 ms per client round.
//! - **Routing**: a director (`proto::director::Director`) holding S servers' heartbeats with F
//!   files each answers Requests for random names (parse, route, Redirect).
//! - **Admin latency**: while the reports run, another thread asks the admin socket for
//!   `status` back to back; the histogram of its answer times (the loop publishes a snapshot
//!   every 50 ms, as the daemons do).
//!
//! The figure to compare with is the target (100,000 reports a second, p99 admin
//! latency 10 ms), and a ceiling measured in the same run: parsing the same Report bytes alone.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use loopcast_proto::carousel::SessionId;
use loopcast_proto::director::{Director, DirectorConfig};
use loopcast_proto::endpoint::{Endpoint, EndpointConfig, MulticastGroups};
use loopcast_proto::heartbeat::{FleetConfig, HeartbeatSender, Load};
use loopcast_proto::info::{FileInfo, RootHash};
use loopcast_proto::rng::SeededRng;
use loopcast_proto::time::Instant;
use loopcast_proto::wire::control::{ControlMessage, RequestHints, Token, Transport};
use loopcast_proto::wire::fleet::{CatalogEntry, FleetKey};

use crate::fleet_sim::client_address;

pub struct ControlArgs {
    pub clients: usize,
    pub seconds: f64,
    pub servers: usize,
    pub files_per_server: usize,
}

/// A small real archive's info (the endpoint needs a file to offer).
fn sample_info(dir: &std::path::Path) -> Result<FileInfo, String> {
    let input = dir.join("control.bin");
    crate::write_sample_file(&input, 8 << 20, 7).map_err(|e| e.to_string())?;
    let archive = dir.join("control.bin.lca");
    let options = loopcast_archive::PackOptions {
        name: "control.bin".into(),
        frame_raw_size: 1 << 20,
        datagram_size: loopcast_proto::info::DATAGRAM_SIZE_MTU_1500,
        compression_level: 0,
        master_key: None,
        watermark: None,
    };
    loopcast_archive::pack(
        &input,
        &archive,
        &options,
        loopcast_archive::Overwrite::Replace,
        &|_| {},
    )
    .map_err(|e| e.to_string())?;
    let info = loopcast_archive::ArchiveFile::open(&archive)
        .map_err(|e| e.to_string())?
        .info()
        .clone();
    Ok(info)
}

fn drain(endpoint: &mut Endpoint) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(transmit) = endpoint.poll_transmit() {
        out.push(transmit.bytes);
    }
    while endpoint.poll_command().is_some() {}
    while endpoint.poll_event().is_some() {}
    out
}

/// An endpoint with `clients` validated multicast sessions, and their session ids.
fn endpoint_with_clients(
    info: &FileInfo,
    clients: usize,
) -> (Endpoint, FileInfo, Vec<SessionId>, Instant) {
    let mut config = EndpointConfig::new(SocketAddr::from(([10, 255, 0, 1], 7700)));
    config.multicast = Some(MulticastGroups {
        group_base: Ipv4Addr::new(239, 77, 1, 0),
        port: 7701,
    });
    config.sessions_max = clients + 16;
    config.unvalidated_max = clients + 16;
    config.addresses_max = clients + 16;
    config.requests_per_address_burst = 1_000;
    let mut now = Instant::ZERO;
    let mut endpoint = Endpoint::new(config, SeededRng::from_u64(1), now);
    let mut files = info.clone();
    let mut sessions = Vec::with_capacity(clients);
    for index in 0..clients {
        let from = client_address(index);
        let request = ControlMessage::Request {
            request_id: index as u64,
            multicast_ok: true,
            name: info.name.clone(),
            hints: RequestHints::default(),
        }
        .to_bytes();
        endpoint.handle_control(now, from, &request, &mut files);
        let offer = drain(&mut endpoint)
            .into_iter()
            .find_map(|bytes| match ControlMessage::parse(&bytes) {
                Ok(ControlMessage::Offer { session, token, .. }) => Some((session, token)),
                _ => None,
            });
        let Some((session, token)) = offer else {
            continue;
        };
        let joined: Vec<u8> = ControlMessage::Joined {
            session,
            token: Token(token.0),
            transport: Transport::Multicast,
        }
        .to_bytes();
        endpoint.handle_control(now, from, &joined, &mut files);
        drain(&mut endpoint);
        sessions.push(session);
        now = now + Duration::from_micros(10);
    }
    (endpoint, files, sessions, now)
}

fn pin_to(core: usize) {
    if let Some(id) = core_affinity::get_core_ids().and_then(|ids| ids.get(core).copied()) {
        core_affinity::set_for_current(id);
    }
}

pub fn run_control(args: &ControlArgs) -> Result<serde_json::Value, String> {
    let dir = std::env::temp_dir().join(format!("loopcast-bench-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = run_in(&dir, args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &std::path::Path, args: &ControlArgs) -> Result<serde_json::Value, String> {
    pin_to(0);
    let info = sample_info(dir)?;
    crate::phase(format_args!("control: {} clients joining", args.clients));
    let (mut endpoint, mut files, sessions, mut now) = endpoint_with_clients(&info, args.clients);
    if sessions.len() < args.clients {
        return Err(format!(
            "only {} of {} clients were validated",
            sessions.len(),
            args.clients
        ));
    }
    let reports: Vec<(SocketAddr, Vec<u8>)> = sessions
        .iter()
        .enumerate()
        .map(|(index, &session)| {
            let bytes = ControlMessage::Report {
                session,
                sent_at_us: index as u32,
                interval_us: 200_000,
                received: 1_000 + (index % 7) as u32,
                lost: (index % 5) as u32,
                rtt_us: 500,
                loss_judged: true,
            }
            .to_bytes();
            (client_address(index), bytes)
        })
        .collect();

    // Ceiling in the same run: parsing the same Report bytes alone.
    let started = WallInstant::now();
    let mut parsed = 0u64;
    while started.elapsed().as_secs_f64() < args.seconds.min(1.0) {
        for (_, bytes) in &reports {
            if ControlMessage::parse(bytes).is_ok() {
                parsed += 1;
            }
        }
    }
    let parse_per_s = parsed as f64 / started.elapsed().as_secs_f64();

    // Admin latency under load: a thread on the other core asks for status back to back.
    let admin_path = dir.join("admin.sock");
    let mut admin =
        loopcast_admin::AdminServer::start(&admin_path, loopcast_admin::AdminConfig::default())
            .map_err(|e| e.to_string())?;
    admin.publish_status(|| serde_json::json!({"sessions": sessions.len()}));
    let stop = Arc::new(AtomicBool::new(false));
    let asker = {
        let stop = stop.clone();
        let path = admin_path.clone();
        std::thread::spawn(move || {
            pin_to(1);
            let mut histogram =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut failures = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let asked = WallInstant::now();
                match loopcast_admin::request(&path, "status") {
                    Ok(_) => {
                        let _ = histogram.record(asked.elapsed().as_micros() as u64);
                    }
                    Err(_) => failures += 1,
                }
            }
            (histogram, failures)
        })
    };

    crate::phase(format_args!("control: reports for {:.1} s", args.seconds));
    // Each client reports every 200 ms of virtual time.
    let step = Duration::from_nanos(200_000_000 / reports.len().max(1) as u64);
    let started = WallInstant::now();
    let mut handled = 0u64;
    let mut feedbacks = 0u64;
    let mut next_publish = WallInstant::now();
    'outer: loop {
        for (from, bytes) in &reports {
            now = now + step;
            endpoint.handle_control(now, *from, bytes, &mut files);
            handled += 1;
            if handled.is_multiple_of(256) {
                if endpoint.poll_timeout().is_some_and(|at| at <= now) {
                    endpoint.handle_timeout(now);
                }
                while endpoint.poll_transmit().is_some() {
                    feedbacks += 1;
                }
                while endpoint.poll_command().is_some() {}
                while endpoint.poll_event().is_some() {}
                let wall = WallInstant::now();
                if wall >= next_publish {
                    next_publish = wall + Duration::from_millis(50);
                    let count = endpoint.session_count();
                    admin.publish_status(|| serde_json::json!({"sessions": count}));
                }
                if started.elapsed().as_secs_f64() >= args.seconds {
                    break 'outer;
                }
            }
        }
    }
    let report_seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (histogram, admin_failures) = asker.join().map_err(|_| "admin thread panicked")?;
    drop(admin);
    let reports_per_s = handled as f64 / report_seconds;

    // Routing: a director with the servers' catalogs answers Requests for random names.
    crate::phase(format_args!(
        "control: routing over {} servers x {} files",
        args.servers, args.files_per_server
    ));
    let key = FleetKey::from_secret(b"control bench fleet key, long enough").expect("long");
    let mut director = Director::new(DirectorConfig::new(key.clone(), [0x5a; 32]));
    let director_addr = SocketAddr::from(([10, 200, 0, 1], 7700));
    let t0_unix_ms = 1_800_000_000_000u64;
    for server in 0..args.servers {
        let entries: Vec<CatalogEntry> = (0..args.files_per_server)
            .map(|file| CatalogEntry {
                name: format!(
                    "file-{:05}.bin",
                    (server * 7 + file) % (args.files_per_server * 4)
                ),
                root: RootHash([((server * 7 + file) % 251) as u8; 32]),
                bytes: 1 << 30,
            })
            .collect();
        let mut sorted = entries.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.dedup_by(|a, b| a.name == b.name);
        let pages = loopcast_proto::wire::fleet::catalog_pages(&sorted).len();
        let request_addr = SocketAddr::from(([10, 200, (server >> 8) as u8, server as u8], 7700));
        let mut sender = HeartbeatSender::new(
            FleetConfig {
                directors: vec![director_addr],
                key: key.clone(),
                advertise: request_addr,
                location: String::new(),
                interval: Duration::from_secs(10),
                rate_bits_per_s_max: 0,
            },
            server as u64 + 1,
            t0_unix_ms,
        );
        sender.set_catalog(sorted);
        let load = Load {
            sessions_max: u32::MAX,
            ..Load::default()
        };
        // The first heartbeat is challenged and answered; then one a page.
        for _ in 0..pages + 1 {
            let mut out = sender.poll_transmit(Instant::ZERO, t0_unix_ms, &load, true);
            while let Some((_, bytes)) = out.pop() {
                if let Some(challenge) =
                    director.handle_datagram(Instant::ZERO, t0_unix_ms, request_addr, &bytes)
                {
                    sender
                        .handle_datagram(Instant::ZERO, director_addr, &challenge)
                        .map_err(|e| format!("challenge refused: {e:?}"))?;
                    out = sender.poll_transmit(Instant::ZERO, t0_unix_ms, &load, false);
                }
            }
        }
    }
    let requests: Vec<Vec<u8>> = (0..4096)
        .map(|i| {
            ControlMessage::Request {
                request_id: i as u64,
                multicast_ok: true,
                name: format!("file-{:05}.bin", (i * 31) % (args.files_per_server * 4)),
                hints: RequestHints::default(),
            }
            .to_bytes()
        })
        .collect();
    let client = SocketAddr::from(([192, 0, 2, 1], 5000));
    let started = WallInstant::now();
    let mut routed = 0u64;
    let mut redirects = 0u64;
    while started.elapsed().as_secs_f64() < args.seconds.min(2.0) {
        for request in &requests {
            if let Some(answer) =
                director.handle_datagram(Instant::ZERO, t0_unix_ms, client, request)
            {
                routed += 1;
                if matches!(
                    ControlMessage::parse(&answer),
                    Ok(ControlMessage::Redirect { .. })
                ) {
                    redirects += 1;
                }
            }
        }
    }
    let routes_per_s = routed as f64 / started.elapsed().as_secs_f64();
    let quantile = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
    Ok(serde_json::json!({
        "scenario": "control",
        "clients": sessions.len(),
        "reports_per_s": reports_per_s,
        "reports_handled": handled,
        "feedbacks_sent": feedbacks,
        "report_parse_ceiling_per_s": parse_per_s,
        "ratio_to_parse_ceiling": reports_per_s / parse_per_s,
        "target_reports_per_s": 100_000,
        "routing_decisions_per_s": routes_per_s,
        "routing_servers": args.servers,
        "routing_files_per_server": args.files_per_server,
        "routing_redirect_fraction": redirects as f64 / routed.max(1) as f64,
        "admin_requests": histogram.len(),
        "admin_failures": admin_failures,
        "admin_latency_ms": {
            "p50": quantile(0.5),
            "p99": quantile(0.99),
            "max": histogram.max() as f64 / 1e3,
        },
        "target_admin_p99_ms": 10.0,
    }))
}
