//! Deterministic simulation of the real machines: the server `Endpoint` with a pacing
//! `Carousel` per channel, and several clients (`ClientSession` + `Receiver` + `NakPlanner`)
//! wired through a seeded virtual network (random and burst loss, duplication, reordering,
//! delay, a rate-limited bottleneck with tail drop) on a virtual
//! clock, with an adversary that injects forged datagrams (spoofing the server's address),
//! spoofed Requests for a victim that never answers, replayed and random control messages, and
//! a server restart. Any failure prints its seed and a one-line replay command.
//!
//! Properties checked on every seed: every honest client completes with output equal to the
//! original; nothing unverified is published (a client publishes only when every stored
//! datagram re-verifies, and what it publishes is compared with the original); the loop keeps
//! advancing while anyone is validated; the endpoint's tables stay within their bounds; bytes
//! sent to the victim are at most three times what was sent in its name.

use core::time::Duration;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use loopcast_proto::assemble::{assemble_in_memory, InMemoryFile};
use loopcast_proto::carousel::{Carousel, CarouselConfig, REPAIR_SHARE_PERCENT_DEFAULT};
use loopcast_proto::client::{ClientConfig, ClientEvent, ClientSession};
use loopcast_proto::endpoint::{
    ChannelId, DataCommand, Endpoint, EndpointConfig, FileLookup, Transmit,
};
use loopcast_proto::info::{FileInfo, DATAGRAM_SIZE_MTU_1500};
use loopcast_proto::nak::{NakConfig, NakPlanner};
use loopcast_proto::receiver::{Outcome, Receiver};
use loopcast_proto::rng::SeededRng;
use loopcast_proto::wire::control::{ControlMessage, RejectCode, Token, Transport};
use loopcast_proto::wire::datagram::FileId;
use loopcast_proto::Instant;

const RATE_BITS_PER_S: u64 = 20_000_000;
const TICK: Duration = Duration::from_millis(1);
const SIM_LIMIT: Duration = Duration::from_secs(60);

struct Files(FileInfo);

impl FileLookup for Files {
    fn lookup(&mut self, name: &str) -> Result<FileInfo, (RejectCode, String)> {
        if name == self.0.name {
            Ok(self.0.clone())
        } else {
            Err((RejectCode::NotFound, "no such file".into()))
        }
    }
}

#[derive(Clone)]
struct Packet {
    deliver_at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

struct Network {
    rng: SeededRng,
    /// (deliver at, sequence) → packet, so equal times keep their order.
    in_flight: BTreeMap<(Instant, u64), Packet>,
    sequence: u64,
    /// Loss per destination address, per mille.
    loss_per_mille: HashMap<SocketAddr, u64>,
    /// Burst loss (Gilbert model): in a burst every datagram to that address is lost; a burst
    /// starts with `burst_start_per_mille` and ends with 1 in 8 per datagram.
    in_burst: HashMap<SocketAddr, bool>,
    burst_start_per_mille: u64,
    /// A bottleneck in front of each client: at most this many bytes per millisecond are
    /// delivered; what queues beyond 64 KiB is dropped (a router's tail drop).
    bottleneck_bytes_per_ms: u64,
    queued_until: HashMap<SocketAddr, Instant>,
}

impl Network {
    fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let loss = self.loss_per_mille.get(&to).copied().unwrap_or(0);
        if self.rng.below(1000) < loss {
            return;
        }
        let burst = self.in_burst.entry(to).or_insert(false);
        *burst = if *burst {
            self.rng.below(8) != 0
        } else {
            self.rng.below(1000) < self.burst_start_per_mille
        };
        if *burst {
            return;
        }
        // The bottleneck: serialisation delay, and tail drop past 64 KiB queued.
        let mut extra = Duration::ZERO;
        if self.loss_per_mille.contains_key(&to) {
            let queued_until = self.queued_until.entry(to).or_insert(now);
            let start = (*queued_until).max(now);
            let backlog_bytes = start.saturating_since(now).as_micros() as u64
                * self.bottleneck_bytes_per_ms
                / 1000;
            if backlog_bytes > 64 << 10 {
                return;
            }
            let serialise =
                Duration::from_micros(bytes.len() as u64 * 1000 / self.bottleneck_bytes_per_ms);
            *queued_until = start + serialise;
            extra = queued_until.saturating_since(now);
        }
        let copies = if self.rng.below(100) == 0 { 2 } else { 1 };
        for _ in 0..copies {
            // 1–6 ms: enough jitter to reorder.
            let delay = extra + Duration::from_micros(1000 + self.rng.below(5000));
            self.sequence += 1;
            self.in_flight.insert(
                (now + delay, self.sequence),
                Packet {
                    deliver_at: now + delay,
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn due(&mut self, now: Instant) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.get().deliver_at > now {
                break;
            }
            out.push(entry.remove());
        }
        out
    }
}

struct Server {
    endpoint: Endpoint,
    carousels: HashMap<ChannelId, (Carousel, Vec<SocketAddr>)>,
}

impl Server {
    fn new(seed: u64, address: SocketAddr, now: Instant) -> Server {
        let mut config = EndpointConfig::new(address);
        config.rate_bits_per_s = RATE_BITS_PER_S;
        config.sessions_per_address_max = 4;
        config.addresses_max = 64;
        Server {
            endpoint: Endpoint::new(config, SeededRng::from_u64(seed), now),
            carousels: HashMap::new(),
        }
    }
}

struct Client {
    address: SocketAddr,
    session: ClientSession,
    start_at: Instant,
    started: bool,
    receiver: Option<Receiver>,
    nak: Option<NakPlanner>,
    nak_config: NakConfig,
    /// Serials asked for over the whole run (planners are rebuilt after a failed check).
    serials_naked: u64,
    /// The client's "disk": what was written at each serial.
    stored: Vec<Option<Vec<u8>>>,
    published: bool,
}

fn server_address() -> SocketAddr {
    "10.0.0.1:7700".parse().unwrap()
}

/// Runs one seed; panics (with the seed) if a property fails.
fn simulate(seed: u64) {
    let replay = format!(
        "seed {seed}; replay: LOOPCAST_SIM_SEED={seed} cargo test --release -p loopcast-proto --test sim"
    );
    let mut rng = SeededRng::from_u64(seed);
    let datagram_count = 100 + rng.below(300) as usize;
    let stream: Vec<u8> = (0..datagram_count * 1408)
        .map(|_| rng.next_u64() as u8)
        .collect();
    let (info, original) = assemble_in_memory(&InMemoryFile {
        file_id: FileId(seed),
        name: "sim.bin",
        datagram_size: DATAGRAM_SIZE_MTU_1500,
        frame_stream: &stream,
        watermark: None,
    });
    let loop_len = info.loop_len;
    let mut files = Files(info.clone());
    let mut network = Network {
        rng: SeededRng::from_u64(seed ^ 0xdead),
        in_flight: BTreeMap::new(),
        sequence: 0,
        loss_per_mille: HashMap::new(),
        in_burst: HashMap::new(),
        burst_start_per_mille: rng.below(10),
        // 16–48 Mbit/s: some clients' paths are slower than the 20 Mbit/s channel.
        bottleneck_bytes_per_ms: 2_000 + rng.below(4_000),
        queued_until: HashMap::new(),
    };
    let mut now = Instant::ZERO;
    let mut server = Server::new(seed, server_address(), now);
    let client_count = 2 + rng.below(3) as usize;
    let mut clients: Vec<Client> = (0..client_count)
        .map(|i| {
            let address: SocketAddr = format!("10.0.1.{}:5000", i + 1).parse().unwrap();
            network.loss_per_mille.insert(address, rng.below(100));
            let mut config = ClientConfig::new(server_address(), "sim.bin");
            config.multicast_ok = false;
            let start_at = now + Duration::from_millis(rng.below(500));
            Client {
                address,
                session: ClientSession::new(config, SeededRng::from_u64(seed + i as u64), start_at),
                start_at,
                started: false,
                receiver: None,
                nak: None,
                // Half the clients ask for what lies behind their join point (the backlog).
                nak_config: NakConfig {
                    backlog_window: if rng.below(2) == 0 { 0 } else { 64 },
                    ..NakConfig::default()
                },
                serials_naked: 0,
                stored: vec![None; loop_len as usize],
                published: false,
            }
        })
        .collect();
    let restart_at = (rng.below(3) == 0).then(|| now + Duration::from_millis(200 + rng.below(800)));
    let adversary: SocketAddr = "10.0.6.6:6666".parse().unwrap();
    let victim_ip: IpAddr = "10.0.9.9".parse().unwrap();
    let mut victim_sent_in_name = 0u64;
    let mut victim_received = 0u64;
    let mut captured: Vec<Vec<u8>> = Vec::new();
    let mut last_loop_progress = (now, 0u64);
    let mut repair_datagrams_sent = 0u64;

    while now.saturating_since(Instant::ZERO) < SIM_LIMIT {
        // Server restart: everything in the endpoint and the data plane is lost.
        if restart_at.is_some_and(|at| now >= at && now < at + TICK) {
            server = Server::new(seed.wrapping_add(1), server_address(), now);
        }
        // The adversary.
        match rng.below(20) {
            0 => {
                // Spoofed Request in the victim's name.
                let bytes = ControlMessage::Request {
                    request_id: rng.next_u64(),
                    multicast_ok: false,
                    name: "sim.bin".into(),
                }
                .to_bytes();
                victim_sent_in_name += bytes.len() as u64;
                let from = SocketAddr::new(victim_ip, 1000 + rng.below(1000) as u16);
                network.send(now, from, server_address(), bytes);
            }
            1 => {
                // A forged datagram "from the server" to a client: a genuine header, a wrong
                // payload, for a serial it may not have yet.
                let serial = rng.below(u64::from(loop_len)) as usize;
                let mut forged = original[serial].clone();
                let at = 32 + rng.below(forged.len() as u64 - 32) as usize;
                forged[at] ^= 1 + rng.below(255) as u8;
                let to = clients[rng.below(client_count as u64) as usize].address;
                network.send(now, server_address(), to, forged);
            }
            2 => {
                // Random control messages about random sessions.
                let session = loopcast_proto::carousel::SessionId(rng.next_u64());
                let message = match rng.below(4) {
                    0 => ControlMessage::Status {
                        session,
                        held: 0,
                        loop_len,
                        done: true,
                    },
                    1 => ControlMessage::Leave { session },
                    2 => ControlMessage::Nak {
                        session,
                        ranges: vec![(0, loop_len)],
                    },
                    _ => ControlMessage::Joined {
                        session,
                        token: Token(rng.next_u64()),
                        transport: Transport::Unicast,
                    },
                };
                network.send(now, adversary, server_address(), message.to_bytes());
            }
            3 if !captured.is_empty() => {
                // Replay a captured client message from the adversary's own address.
                let bytes = captured[rng.below(captured.len() as u64) as usize].clone();
                network.send(now, adversary, server_address(), bytes);
            }
            _ => {}
        }
        // Clients.
        for client in clients.iter_mut() {
            if now < client.start_at || client.published {
                continue;
            }
            client.started = true;
            if let (Some(receiver), Some(nak)) = (client.receiver.as_ref(), client.nak.as_mut()) {
                client
                    .session
                    .set_progress(receiver.have().count_ones(), loop_len);
                if let Some(ranges) = nak.poll_nak(now) {
                    client.session.send_nak(ranges);
                }
            }
            client.session.handle_timeout(now);
            while let Some(bytes) = client.session.poll_transmit() {
                if captured.len() < 64 {
                    captured.push(bytes.clone());
                }
                network.send(now, client.address, server_address(), bytes);
            }
            while let Some(event) = client.session.poll_event() {
                match event {
                    ClientEvent::Offered { info: offered, .. } => {
                        assert_eq!(*offered, info, "{replay}: the offer describes the file");
                        if client.receiver.is_none() {
                            let receiver = Receiver::new(info.clone());
                            client.nak =
                                Some(NakPlanner::new(NakConfig::default(), receiver.have()));
                            client.receiver = Some(receiver);
                        }
                    }
                    ClientEvent::Rejected { code, message } => {
                        panic!(
                            "{replay}: client {} refused: {code:?} {message}",
                            client.address
                        )
                    }
                    ClientEvent::NoAnswer => {
                        panic!("{replay}: client {} got no answer", client.address)
                    }
                    ClientEvent::Joined { .. } | ClientEvent::SessionLost { .. } => {}
                }
            }
        }
        // Server: control first, then data.
        for packet in network.due(now) {
            if packet.to == server_address() {
                server
                    .endpoint
                    .handle_control(now, packet.from, &packet.bytes, &mut files);
                continue;
            }
            if packet.to.ip() == victim_ip {
                victim_received += packet.bytes.len() as u64;
                continue;
            }
            let Some(client) = clients.iter_mut().find(|c| c.address == packet.to) else {
                continue;
            };
            if ControlMessage::is_control(&packet.bytes) {
                client
                    .session
                    .handle_control(now, packet.from, &packet.bytes);
                continue;
            }
            // Unicast data is accepted from the server's host only (the forger spoofs it).
            if packet.from.ip() != server_address().ip() {
                continue;
            }
            let (Some(receiver), Some(nak)) = (client.receiver.as_mut(), client.nak.as_mut())
            else {
                continue;
            };
            match receiver.handle_datagram(&packet.bytes) {
                Outcome::Store { serial, .. } => {
                    client.stored[serial as usize] = Some(packet.bytes.clone());
                    nak.saw(serial);
                    client.session.handle_data(now);
                }
                Outcome::Duplicate { serial } => {
                    nak.saw(serial);
                    client.session.handle_data(now);
                }
                Outcome::Dropped(_) => {}
            }
        }
        server.endpoint.handle_timeout(now);
        while let Some(command) = server.endpoint.poll_command() {
            match command {
                DataCommand::OpenChannel {
                    channel,
                    rate_bits_per_s,
                    ..
                } => {
                    let carousel = Carousel::new(
                        CarouselConfig {
                            loop_len,
                            datagram_size: DATAGRAM_SIZE_MTU_1500,
                            rate_bits_per_s,
                            batch_datagrams_max: 64,
                            repair_share_percent: REPAIR_SHARE_PERCENT_DEFAULT,
                        },
                        now,
                    );
                    server.carousels.insert(channel, (carousel, Vec::new()));
                }
                DataCommand::CloseChannel { channel } => {
                    server.carousels.remove(&channel);
                }
                DataCommand::AddDestination {
                    channel,
                    destination,
                } => {
                    let (_, destinations) = server.carousels.get_mut(&channel).expect("open");
                    assert!(
                        clients.iter().any(|c| c.address == destination),
                        "{replay}: data to {destination}, which never validated"
                    );
                    destinations.push(destination);
                }
                DataCommand::RemoveDestination {
                    channel,
                    destination,
                } => {
                    if let Some((_, destinations)) = server.carousels.get_mut(&channel) {
                        destinations.retain(|d| *d != destination);
                    }
                }
                DataCommand::QueueRepair {
                    channel,
                    first,
                    count,
                    to,
                } => {
                    if let Some((carousel, _)) = server.carousels.get_mut(&channel) {
                        let _ = carousel.queue_repair(first, count, to);
                    }
                }
            }
        }
        while let Some(Transmit {
            destination, bytes, ..
        }) = server.endpoint.poll_transmit()
        {
            network.send(now, server_address(), destination, bytes);
        }
        while server.endpoint.poll_event().is_some() {}
        server.endpoint.assert_invariants();
        let mut sent_total = 0;
        for (carousel, destinations) in server.carousels.values_mut() {
            while let Some(transmit) = carousel.poll_transmit(now) {
                let targets: Vec<SocketAddr> = destinations
                    .iter()
                    .copied()
                    .filter(|d| transmit.to.is_none_or(|to| to == *d))
                    .collect();
                if transmit.repair {
                    repair_datagrams_sent += u64::from(transmit.count) * targets.len() as u64;
                }
                for serial in transmit.first..transmit.first + transmit.count {
                    for &destination in targets.iter() {
                        network.send(
                            now,
                            server_address(),
                            destination,
                            original[serial as usize].clone(),
                        );
                    }
                }
            }
            sent_total += carousel.sent_total();
        }
        // The loop keeps advancing while any channel runs (repairs take at most their share).
        if server.carousels.values().any(|(_, d)| !d.is_empty()) {
            if sent_total > last_loop_progress.1 {
                last_loop_progress = (now, sent_total);
            }
            assert!(
                now.saturating_since(last_loop_progress.0) < Duration::from_millis(100),
                "{replay}: the loop stopped advancing"
            );
        } else {
            last_loop_progress = (now, sent_total);
        }
        // Publishing: only when every stored datagram re-verifies against the root.
        for client in clients.iter_mut() {
            let Some(receiver) = client.receiver.as_mut() else {
                continue;
            };
            if client.published || !receiver.is_complete() {
                continue;
            }
            let mut all_good = true;
            for serial in 0..loop_len {
                let bytes = client.stored[serial as usize].clone().unwrap_or_default();
                all_good &= receiver.recheck_serial(serial, &bytes);
            }
            if all_good {
                for (serial, stored) in client.stored.iter().enumerate() {
                    assert_eq!(
                        stored.as_deref(),
                        Some(&original[serial][..]),
                        "{replay}: client {} published a wrong datagram at serial {serial}",
                        client.address
                    );
                }
                client.published = true;
                client.session.complete(now);
                while let Some(bytes) = client.session.poll_transmit() {
                    network.send(now, client.address, server_address(), bytes);
                }
            } else {
                client.serials_naked += client.nak.as_ref().map_or(0, |n| n.serials_naked());
                client.nak = Some(NakPlanner::new(client.nak_config, receiver.have()));
            }
        }
        if clients.iter().all(|c| c.published) {
            break;
        }
        now = now + TICK;
    }
    for client in &clients {
        assert!(
            client.published,
            "{replay}: client {} did not finish within {SIM_LIMIT:?} (held {:?}/{loop_len})",
            client.address,
            client.receiver.as_ref().map(|r| r.have().count_ones())
        );
    }
    // Repairs follow what the receivers miss: at most a loop per session (a restart or a lost
    // session starts a new one), never a multiple of it.
    let sessions: u64 = clients.iter().map(|c| 1 + c.session.rerequests()).sum();
    assert!(
        repair_datagrams_sent <= sessions * u64::from(loop_len),
        "{replay}: {repair_datagrams_sent} repair datagrams for {sessions} sessions of a {loop_len}-serial loop"
    );
    assert!(
        victim_received <= 3 * victim_sent_in_name,
        "{replay}: {victim_received} bytes to the victim for {victim_sent_in_name} sent in its name"
    );
}

#[test]
fn every_seed_completes_verified_bounded_and_without_amplification() {
    if let Some(seed) = std::env::var("LOOPCAST_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        simulate(seed);
        return;
    }
    let seeds: u64 = std::env::var("LOOPCAST_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    for seed in 0..seeds {
        simulate(seed);
    }
}
