//! Attack review of d6e22a0 (`Endpoint::own_in_place`: a unicast client alone on the channel
//! opened for its request, which never ran, gets that channel as its own in place, its group
//! slot given back). Every case drives the endpoint with bytes and `now`, and after every step
//! checks `assert_invariants` plus what the endpoint's invariants do not cover: distinct groups,
//! solo channels (no group, one unicast session), validated multicast sessions on a channel
//! with a group, channel and solo limits, a model of the data plane fed by the commands (open
//! channels = `data_open`, destinations = validated unicast clients + the group while it has
//! multicast members), the amplification bound for addresses never proven, and, at the end,
//! that no group slot leaked (with every channel closed, new tiers get .1, .2, ... again).
#![allow(dead_code)]

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{SocketAddr, SocketAddrV4};

use loopcast_proto::assemble::{assemble_in_memory, InMemoryFile};
use loopcast_proto::carousel::SessionId;
use loopcast_proto::endpoint::{
    ChannelId, ChannelView, DataCommand, Endpoint, EndpointConfig, Event, FileLookup,
    MulticastGroups, Via,
};
use loopcast_proto::info::{FileInfo, DATAGRAM_SIZE_MTU_1500};
use loopcast_proto::rate::{RateConfig, TierPolicy};
use loopcast_proto::rng::SeededRng;
use loopcast_proto::wire::control::{ControlMessage, RejectCode, RequestHints, Token, Transport};
use loopcast_proto::wire::datagram::FileId;
use loopcast_proto::Instant;

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

struct Files(Vec<FileInfo>);

impl FileLookup for Files {
    fn lookup(&mut self, name: &str) -> Result<FileInfo, (RejectCode, String)> {
        self.0
            .iter()
            .find(|f| f.name == name)
            .cloned()
            .ok_or((RejectCode::NotFound, format!("no {name}")))
    }
}

fn files(n: usize) -> Files {
    Files(
        (0..n)
            .map(|i| {
                assemble_in_memory(&InMemoryFile {
                    file_id: FileId(1000 + i as u64),
                    name: &format!("f{i}.bin"),
                    datagram_size: DATAGRAM_SIZE_MTU_1500,
                    frame_stream: &vec![i as u8; 20_000 + i * 1_000],
                    watermark: None,
                })
                .0
            })
            .collect(),
    )
}

const BASE: [u8; 4] = [239, 77, 1, 0];

fn config(channels_max: usize, multicast: bool, policy: TierPolicy) -> EndpointConfig {
    let mut config = EndpointConfig::new("10.0.0.1:7700".parse().unwrap());
    config.adaptive = Some(RateConfig {
        policy,
        ..RateConfig::default()
    });
    config.rate_bits_per_s = 0;
    config.channels_max = channels_max;
    config.sessions_per_address_max = 4;
    if multicast {
        config.multicast = Some(MulticastGroups {
            group_base: BASE.into(),
            port: 7701,
        });
    }
    config
}

#[derive(Clone, Copy, Debug)]
struct Offer {
    client: SocketAddr,
    session: SessionId,
    token: Token,
    transport: Transport,
}

struct H {
    ep: Endpoint,
    files: Files,
    now: u64,
    /// The data plane: open channels and their destinations.
    dp: BTreeMap<ChannelId, BTreeSet<SocketAddr>>,
    offers: Vec<Offer>,
    /// Addresses whose offers the attacker never sees (spoofed sources).
    blind: HashSet<SocketAddr>,
    sent: HashMap<SocketAddr, usize>,
    received: HashMap<SocketAddr, usize>,
    proven: HashSet<SocketAddr>,
    open_commands: Vec<DataCommand>,
    events: Vec<Event>,
    rejects: Vec<RejectCode>,
    /// Groups held before the current step.
    groups_before: HashSet<SocketAddrV4>,
    /// Shared channels before the current step, and how many became a client's own in place.
    shared_before: HashSet<ChannelId>,
    in_place: usize,
}

impl H {
    fn new(config: EndpointConfig, nfiles: usize, seed: u64) -> H {
        H {
            ep: Endpoint::new(config, SeededRng::from_u64(seed), Instant::ZERO),
            files: files(nfiles),
            now: 0,
            dp: BTreeMap::new(),
            offers: Vec::new(),
            blind: HashSet::new(),
            sent: HashMap::new(),
            received: HashMap::new(),
            proven: HashSet::new(),
            open_commands: Vec::new(),
            events: Vec::new(),
            rejects: Vec::new(),
            groups_before: HashSet::new(),
            shared_before: HashSet::new(),
            in_place: 0,
        }
    }

    fn name(&self, i: usize) -> String {
        self.files.0[i].name.clone()
    }

    fn send(&mut self, from: SocketAddr, msg: &ControlMessage) {
        let bytes = msg.to_bytes();
        *self.received.entry(from).or_default() += bytes.len();
        self.ep
            .handle_control(at(self.now), from, &bytes, &mut self.files);
        self.pump();
    }

    fn request(&mut self, from: SocketAddr, id: u64, file: &str, mc: bool, hints: RequestHints) {
        self.send(
            from,
            &ControlMessage::Request {
                request_id: id,
                multicast_ok: mc,
                name: file.to_owned(),
                hints,
            },
        );
    }

    fn last_offer(&self, client: SocketAddr) -> Offer {
        *self
            .offers
            .iter()
            .rev()
            .find(|o| o.client == client)
            .expect("an offer")
    }

    fn joined(&mut self, o: Offer, transport: Transport) {
        self.send(
            o.client,
            &ControlMessage::Joined {
                session: o.session,
                token: o.token,
                transport,
            },
        );
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
        self.ep.handle_timeout(at(self.now));
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            if t.via == Via::Control {
                *self.sent.entry(t.destination).or_default() += t.bytes.len();
            } else {
                let SocketAddr::V4(g) = t.destination else {
                    panic!("group transmit to v6")
                };
                assert!(
                    self.groups_before.contains(&g)
                        || self.ep.channels().any(|c| c.group == Some(g)),
                    "{:?} to a group no channel held: {g}",
                    ControlMessage::parse(&t.bytes)
                );
            }
            match ControlMessage::parse(&t.bytes) {
                Ok(ControlMessage::Offer {
                    session,
                    token,
                    transport,
                    ..
                }) if !self.blind.contains(&t.destination) => self.offers.push(Offer {
                    client: t.destination,
                    session,
                    token,
                    transport,
                }),
                Ok(ControlMessage::Reject { code, .. }) => self.rejects.push(code),
                _ => {}
            }
        }
        while let Some(e) = self.ep.poll_event() {
            if let Event::SessionValidated {
                client, channel, ..
            } = &e
            {
                self.proven.insert(*client);
                if self.shared_before.contains(channel)
                    && self
                        .ep
                        .channels()
                        .any(|c| c.channel == *channel && c.own_channel)
                {
                    self.in_place += 1;
                }
            }
            self.events.push(e);
        }
        while let Some(c) = self.ep.poll_command() {
            self.apply(c);
        }
        self.check();
        self.groups_before = self.ep.channels().filter_map(|c| c.group).collect();
        self.shared_before = self
            .ep
            .channels()
            .filter(|c| !c.own_channel)
            .map(|c| c.channel)
            .collect();
    }

    fn apply(&mut self, c: DataCommand) {
        match &c {
            DataCommand::OpenChannel { channel, .. } => {
                assert!(
                    self.dp.insert(*channel, BTreeSet::new()).is_none(),
                    "{c:?}: opened twice"
                );
                self.open_commands.push(c.clone());
            }
            DataCommand::CloseChannel { channel } => {
                let dests = self
                    .dp
                    .remove(channel)
                    .expect("close of a channel not open");
                assert!(
                    dests.is_empty(),
                    "{channel:?} closed with destinations {dests:?}"
                );
            }
            DataCommand::AddDestination {
                channel,
                destination,
            } => {
                if let SocketAddr::V4(v4) = destination {
                    if v4.ip().octets()[..3] != BASE[..3] {
                        assert!(
                            self.proven.contains(destination),
                            "data to an unproven address {destination}"
                        );
                    }
                }
                // The data plane holds a set of destinations: the endpoint adds each once.
                let d = self.dp.get_mut(channel).expect("add on a channel not open");
                assert!(
                    d.insert(*destination),
                    "{destination} added twice to {channel:?}"
                );
            }
            DataCommand::RemoveDestination {
                channel,
                destination,
            } => {
                let d = self
                    .dp
                    .get_mut(channel)
                    .expect("remove on a channel not open");
                assert!(d.remove(destination), "remove of a non-destination");
            }
            DataCommand::QueueRepair { channel, to, .. } => {
                let d = self.dp.get(channel).expect("repair on a channel not open");
                if let Some(to) = to {
                    assert!(d.contains(to), "{c:?}: repair to a non-destination");
                }
            }
            DataCommand::SetRate { channel, .. } => {
                assert!(self.dp.contains_key(channel), "{c:?} on a channel not open");
            }
        }
    }

    fn check(&self) {
        self.ep.assert_invariants();
        let cfg = self.ep.config().clone();
        let chans: Vec<ChannelView> = self.ep.channels().collect();
        assert!(chans.len() <= cfg.channels_max, "channels over the limit");
        let solo = chans.iter().filter(|c| c.own_channel).count();
        assert!(
            solo <= cfg.channels_max / 2,
            "solo channels over half the limit"
        );
        let mut groups = HashSet::new();
        for c in &chans {
            if let Some(g) = c.group {
                assert!(groups.insert(g), "two channels share group {g}");
                assert!(cfg.multicast.is_some());
            }
        }
        let sessions: Vec<_> = self.ep.sessions().collect();
        for c in &chans {
            let mine: Vec<_> = sessions.iter().filter(|s| s.channel == c.channel).collect();
            if c.own_channel {
                assert!(c.group.is_none(), "a solo channel with a group");
                assert_eq!(mine.len(), 1, "a solo channel with {} sessions", mine.len());
                assert_eq!(
                    mine[0].transport,
                    Transport::Unicast,
                    "a multicast session solo"
                );
            }
            for s in &mine {
                if s.transport == Transport::Multicast {
                    assert!(
                        c.group.is_some(),
                        "a multicast session {:?} (validated {}) on group-less {:?}",
                        s.session,
                        s.validated,
                        c.channel
                    );
                }
            }
            // The data plane model.
            let mut want: BTreeSet<SocketAddr> = BTreeSet::new();
            for s in &mine {
                if s.validated && s.transport == Transport::Unicast {
                    want.insert(s.client);
                }
            }
            if c.multicast_members > 0 {
                want.insert(SocketAddr::V4(c.group.expect("members have a group")));
            }
            match self.dp.get(&c.channel) {
                Some(d) => {
                    assert!(c.data_open);
                    assert_eq!(d, &want, "destinations of {:?}", c.channel);
                }
                None => {
                    assert!(!c.data_open, "{:?} data_open but never opened", c.channel);
                    assert!(
                        want.is_empty(),
                        "destinations wanted on {:?} not open",
                        c.channel
                    );
                }
            }
        }
        for id in self.dp.keys() {
            assert!(
                chans.iter().any(|c| c.channel == *id),
                "the data plane runs {id:?}, closed in the endpoint"
            );
        }
        for (addr, &sent) in &self.sent {
            if !self.proven.contains(addr) {
                let got = self.received.get(addr).copied().unwrap_or(0);
                assert!(
                    sent <= 3 * got,
                    "{addr}: {sent} bytes sent for {got} received"
                );
            }
        }
    }

    /// Every session leaves, then `n` files are asked for by multicast clients: with no slot
    /// leaked, their tiers get .1 .. .n.
    fn no_slot_leaked(&mut self, n: usize) {
        let all: Vec<_> = self.ep.sessions().map(|s| (s.client, s.session)).collect();
        for (client, session) in all {
            self.send(client, &ControlMessage::Leave { session });
        }
        assert_eq!(self.ep.channel_count(), 0, "channels left with no sessions");
        assert!(
            self.dp.is_empty(),
            "data plane channels left: {:?}",
            self.dp
        );
        if self.ep.config().multicast.is_none() {
            return;
        }
        self.tick(120_000); // rate limits refill, addresses forgotten
        for i in 0..n {
            let client: SocketAddr = format!("198.51.100.{}:5000", 1 + i).parse().unwrap();
            let name = self.name(i);
            self.request(client, 77, &name, true, RequestHints::default());
        }
        let mut groups: Vec<SocketAddrV4> = self.ep.channels().filter_map(|c| c.group).collect();
        groups.sort();
        let want: Vec<SocketAddrV4> = (1..=n as u8)
            .map(|k| SocketAddrV4::new([BASE[0], BASE[1], BASE[2], k].into(), 7701))
            .collect();
        assert_eq!(groups, want, "group slots leaked");
    }
}

fn a(i: u32) -> SocketAddr {
    format!("192.0.2.{}:{}", 10 + i % 200, 6000 + i / 200)
        .parse()
        .unwrap()
}

fn adaptive(channels_max: usize) -> H {
    H::new(config(channels_max, true, TierPolicy::Distribution), 8, 7)
}

// ---------------------------------------------------------------------------------------------
// Targeted cases
// ---------------------------------------------------------------------------------------------

/// Two clients ask for the same file before either joins; the unicast one joins first. The
/// shared tier (with the multicast client pending) must stay shared with its group.
#[test]
fn held_race_two_clients_same_file_unicast_joins_first() {
    for first_mc in [true, false] {
        let mut h = adaptive(16);
        let name = h.name(0);
        h.request(a(1), 1, &name, first_mc, RequestHints::default());
        h.request(a(2), 1, &name, true, RequestHints::default());
        let (oa, ob) = (h.last_offer(a(1)), h.last_offer(a(2)));
        assert_eq!(ob.transport, Transport::Multicast);
        let shared = h.ep.channels().next().unwrap();
        h.joined(oa, Transport::Unicast);
        let now_shared =
            h.ep.channels()
                .find(|c| c.channel == shared.channel)
                .unwrap();
        assert!(!now_shared.own_channel && now_shared.group == shared.group);
        h.joined(ob, Transport::Multicast);
        let b = h.ep.sessions().find(|s| s.session == ob.session).unwrap();
        assert_eq!(
            (b.transport, b.channel),
            (Transport::Multicast, shared.channel)
        );
        h.no_slot_leaked(4);
    }
}

/// A's request channel becomes its own; B then asks multicast: it gets a new shared tier on the
/// freed group; a retransmitted Request of A's still gets A's (unicast) offer.
#[test]
fn held_in_place_then_multicast_newcomer_and_retransmit() {
    let mut h = adaptive(16);
    let name = h.name(0);
    h.request(a(1), 1, &name, true, RequestHints::default());
    let oa = h.last_offer(a(1));
    h.joined(oa, Transport::Unicast);
    h.request(a(1), 1, &name, true, RequestHints::default()); // retransmit
    assert_eq!(h.last_offer(a(1)).session, oa.session);
    assert_eq!(h.last_offer(a(1)).transport, Transport::Unicast);
    h.joined(oa, Transport::Multicast); // a late/forged switch back
    h.request(a(2), 1, &name, true, RequestHints::default());
    let ob = h.last_offer(a(2));
    assert_eq!(ob.transport, Transport::Multicast);
    h.joined(ob, Transport::Multicast);
    h.joined(oa, Transport::Unicast);
    h.joined(ob, Transport::Unicast); // B moves to unicast: own channel, shared one closes
    h.joined(ob, Transport::Multicast);
    h.tick(10);
    h.no_slot_leaked(4);
}

/// The first requester never joins and expires; a second client of the same file (asked while
/// the first was pending) is then alone on the never-run channel and takes it in place.
#[test]
fn held_pending_first_client_expires_then_second_in_place() {
    let mut h = adaptive(16);
    let name = h.name(0);
    h.request(a(1), 1, &name, true, RequestHints::default());
    h.tick(2_000);
    h.request(a(2), 1, &name, false, RequestHints::default());
    h.tick(1_500); // a(1) expires unvalidated
    assert_eq!(h.ep.session_count(), 1);
    let ob = h.last_offer(a(2));
    h.joined(ob, Transport::Unicast);
    let c: Vec<_> = h.ep.channels().collect();
    assert_eq!(c.len(), 1);
    assert!(c[0].own_channel && c[0].group.is_none());
    // A forged Joined for the expired session (no token) changes nothing.
    let oa = h.last_offer(a(1));
    h.joined(oa, Transport::Multicast);
    h.no_slot_leaked(3);
}

/// R17: a resumed client on the tier opened for it starts its own loop where it was.
#[test]
fn held_resume_hint_in_place_starts_at_resume_point() {
    let mut h = adaptive(16);
    let name = h.name(0);
    h.request(a(1), 1, &name, true, RequestHints::default());
    let oa = h.last_offer(a(1));
    h.joined(oa, Transport::Multicast);
    let hints = RequestHints {
        resume_at: Some(5),
        throughput_bits_per_s: u64::MAX,
        ..RequestHints::default()
    };
    h.request(a(2), 1, &name, true, hints);
    let ob = h.last_offer(a(2));
    assert_eq!(h.ep.channel_count(), 2);
    h.joined(ob, Transport::Unicast);
    let last = h.open_commands.last().unwrap().clone();
    match last {
        DataCommand::OpenChannel {
            start_at,
            start_like,
            ..
        } => assert_eq!((start_at, start_like), (Some(5), None)),
        other => panic!("{other:?}"),
    }
    h.no_slot_leaked(4);
}

/// At the channel limit: the request channel still becomes its client's own (no channel
/// added), solo channels stay within half the limit, nothing exceeds it. Reports how a later
/// multicast client of the same file fares (before d6e22a0 it shared the tier).
#[test]
fn held_channel_limit_in_place_and_later_multicast_client() {
    let mut h = adaptive(4);
    for i in 0..4 {
        let name = h.name(i);
        h.request(a(i as u32), 1, &name, true, RequestHints::default());
    }
    for i in 0..4 {
        let o = h.last_offer(a(i));
        h.joined(o, Transport::Unicast);
    }
    let solo = h.ep.channels().filter(|c| c.own_channel).count();
    assert_eq!(solo, 2);
    assert_eq!(h.ep.channel_count(), 4);
    let name = h.name(0);
    h.rejects.clear();
    h.request(a(9), 1, &name, true, RequestHints::default());
    eprintln!(
        "multicast newcomer for a file whose only channel is solo, at the limit: rejects {:?}",
        h.rejects
    );
    h.no_slot_leaked(4);
}

/// Group slots exhausted (channels_max 300, 254 groups): a channel opened without a group
/// becomes a unicast client's own (nothing to release); freeing one multicast tier gives its
/// slot to the next; never two channels on one group.
#[test]
fn held_group_exhaustion_and_reuse() {
    let mut cfg = config(600, true, TierPolicy::Slowest);
    cfg.unvalidated_max = 4096;
    let mut h = H::new(cfg, 262, 3);
    for i in 0..254u32 {
        let name = h.name(i as usize);
        h.request(a(i), 1, &name, true, RequestHints::default());
        let o = h.last_offer(a(i));
        assert_eq!(o.transport, Transport::Multicast);
        h.joined(o, Transport::Multicast);
    }
    // No group left: offered unicast although multicast was asked for.
    let name = h.name(254);
    h.request(a(300), 1, &name, true, RequestHints::default());
    let o = h.last_offer(a(300));
    assert_eq!(o.transport, Transport::Unicast);
    h.joined(o, Transport::Multicast); // asks multicast anyway: unicast
    let v = h.ep.sessions().find(|s| s.session == o.session).unwrap();
    assert!(v.own_channel && v.transport == Transport::Unicast);
    // One multicast client leaves: its slot goes to the next file.
    let o0 = h.last_offer(a(0));
    h.send(
        a(0),
        &ControlMessage::Leave {
            session: o0.session,
        },
    );
    let name = h.name(255);
    h.request(a(301), 1, &name, true, RequestHints::default());
    let o = h.last_offer(a(301));
    assert_eq!(o.transport, Transport::Multicast);
    // ... and that one joins unicast instead: group given back in place.
    h.joined(o, Transport::Unicast);
    let name = h.name(256);
    h.request(a(302), 1, &name, true, RequestHints::default());
    assert_eq!(h.last_offer(a(302)).transport, Transport::Multicast);
    h.tick(100);
}

/// Forged Joined/Leave/Report/NAK from other addresses, or with a wrong token, for a pending
/// session alone on its channel: nothing changes (no channel made solo, no slot freed).
#[test]
fn held_forged_control_for_a_pending_session() {
    let mut h = adaptive(16);
    let name = h.name(0);
    h.request(a(1), 1, &name, true, RequestHints::default());
    let o = h.last_offer(a(1));
    let before: Vec<_> = h.ep.channels().collect();
    for from in [a(2), a(1)] {
        let bad = Token(o.token.0 ^ 1);
        for transport in [Transport::Unicast, Transport::Multicast] {
            h.send(
                from,
                &ControlMessage::Joined {
                    session: o.session,
                    token: if from == a(1) { bad } else { o.token },
                    transport,
                },
            );
        }
        h.send(
            from,
            &ControlMessage::Nak {
                session: o.session,
                ranges: vec![(0, 10)],
            },
        );
        h.send(
            from,
            &ControlMessage::Report {
                session: o.session,
                sent_at_us: 1,
                interval_us: 50_000,
                received: 1,
                lost: 1_000,
                rtt_us: 1,
                loss_judged: true,
            },
        );
    }
    h.send(a(2), &ControlMessage::Leave { session: o.session });
    assert_eq!(h.ep.channels().collect::<Vec<_>>(), before);
    h.no_slot_leaked(2);
}

// ---------------------------------------------------------------------------------------------
// Randomised: many addresses, races, forged and replayed control, expiry, limits
// ---------------------------------------------------------------------------------------------

/// The project's seeded generator, with the draws the fuzz makes.
struct Rng(SeededRng);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Channels made a client's own in place during the run.
fn fuzz(seed: u64, cfg: EndpointConfig, steps: usize) -> usize {
    let mut r = Rng(SeededRng::from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ));
    let channels_max = cfg.channels_max;
    let mut h = H::new(cfg, 8, seed);
    let honest: Vec<SocketAddr> = (0..10).map(a).collect();
    let spoofed: Vec<SocketAddr> = (50..56).map(a).collect();
    for s in &spoofed {
        h.blind.insert(*s);
    }
    let mut known: Vec<SessionId> = Vec::new();
    for _ in 0..steps {
        let op = r.below(100);
        let client = if r.chance(75) {
            honest[r.below(honest.len() as u64) as usize]
        } else {
            spoofed[r.below(spoofed.len() as u64) as usize]
        };
        match op {
            0..=24 => {
                let file = r.below(4) as usize;
                let name = if file == 3 && r.chance(20) {
                    "nope".to_owned()
                } else {
                    h.name(file % 3)
                };
                let hints = if r.chance(30) {
                    RequestHints {
                        resume_at: Some(r.below(40) as u32),
                        throughput_bits_per_s: [0, 1, 1_000_000, u64::MAX][r.below(4) as usize],
                        ..RequestHints::default()
                    }
                } else {
                    RequestHints::default()
                };
                let id = r.below(4);
                let mc = r.chance(60);
                h.request(client, id, &name, mc, hints);
            }
            25..=49 if !h.offers.is_empty() => {
                let o = h.offers[r.below(h.offers.len() as u64) as usize];
                known.push(o.session);
                let transport = if r.chance(50) {
                    Transport::Unicast
                } else {
                    Transport::Multicast
                };
                let from = if r.chance(90) { o.client } else { client };
                let token = if r.chance(90) {
                    o.token
                } else {
                    Token(r.next())
                };
                h.send(
                    from,
                    &ControlMessage::Joined {
                        session: o.session,
                        token,
                        transport,
                    },
                );
            }
            50..=57 if !h.offers.is_empty() => {
                let o = h.offers[r.below(h.offers.len() as u64) as usize];
                let from = if r.chance(70) { o.client } else { client };
                h.send(from, &ControlMessage::Leave { session: o.session });
            }
            58..=67 if !h.offers.is_empty() => {
                let o = h.offers[r.below(h.offers.len() as u64) as usize];
                h.send(
                    o.client,
                    &ControlMessage::Report {
                        session: o.session,
                        sent_at_us: r.next() as u32,
                        interval_us: r.below(200_000) as u32,
                        received: r.below(5_000) as u32,
                        lost: r.below(5_000) as u32,
                        rtt_us: r.below(100_000) as u32,
                        loss_judged: r.chance(80),
                    },
                );
            }
            68..=72 if !h.offers.is_empty() => {
                let o = h.offers[r.below(h.offers.len() as u64) as usize];
                let first = r.below(30) as u32;
                h.send(
                    o.client,
                    &ControlMessage::Nak {
                        session: o.session,
                        ranges: vec![(first, 1 + r.below(10) as u32)],
                    },
                );
            }
            73..=75 if !h.offers.is_empty() => {
                let o = h.offers[r.below(h.offers.len() as u64) as usize];
                h.send(
                    o.client,
                    &ControlMessage::Status {
                        session: o.session,
                        held: r.below(50) as u32,
                        loop_len: 0,
                        done: r.chance(30),
                    },
                );
            }
            76..=77 if !h.offers.is_empty() => {
                let o = h.offers[r.below(h.offers.len() as u64) as usize];
                h.send(
                    o.client,
                    &ControlMessage::SyncWanted {
                        session: o.session,
                        token: o.token,
                    },
                );
            }
            78..=79 => {
                // Forged Joined for a session seen, from a spoofed address with a guess.
                if let Some(&s) = known.get(r.below(known.len().max(1) as u64) as usize) {
                    h.send(
                        client,
                        &ControlMessage::Joined {
                            session: s,
                            token: Token(r.next()),
                            transport: Transport::Unicast,
                        },
                    );
                }
            }
            80 => {
                let ids: Vec<ChannelId> = h.ep.channels().map(|c| c.channel).collect();
                if let Some(&c) = ids.get(r.below(ids.len().max(1) as u64) as usize) {
                    if r.chance(50) {
                        let now = at(h.now);
                        h.ep.stop_channel(now, c);
                    } else {
                        let now = at(h.now);
                        h.ep.handle_channel_failed(now, c);
                    }
                    h.pump();
                }
            }
            81..=83 => {
                let ids: Vec<ChannelId> = h.ep.channels().map(|c| c.channel).collect();
                if let Some(&c) = ids.get(r.below(ids.len().max(1) as u64) as usize) {
                    let now = at(h.now);
                    h.ep.handle_channel_sent(now, c, r.below(1_000_000));
                    h.pump();
                }
            }
            84 => {
                let policy = [
                    TierPolicy::Distribution,
                    TierPolicy::Average,
                    TierPolicy::Slowest,
                ][r.below(3) as usize];
                let rc = RateConfig {
                    policy,
                    tiers_max: 1 + r.below(4) as usize,
                    ..RateConfig::default()
                };
                let now = at(h.now);
                h.ep.reconfigure(now, 0, Some(rc), Duration::from_secs(1 + r.below(5)));
                h.pump();
            }
            _ => {
                let ms = [0, 1, 10, 50, 200, 1_000, 4_000][r.below(7) as usize];
                h.tick(ms);
            }
        }
    }
    let n = channels_max.min(8);
    let in_place = h.in_place;
    h.no_slot_leaked(n);
    in_place
}

#[test]
fn held_fuzz_small_limits_multicast() {
    let mut in_place = 0;
    for seed in 1..=60 {
        for channels_max in [1, 2, 3, 4, 6] {
            let policy = [TierPolicy::Distribution, TierPolicy::Slowest][(seed % 2) as usize];
            in_place += fuzz(
                seed * 10 + channels_max as u64,
                config(channels_max, true, policy),
                1_500,
            );
        }
    }
    eprintln!("in place: {in_place}");
    assert!(in_place > 100, "the fuzz reaches own_in_place");
}

#[test]
fn held_fuzz_roomy_and_unicast_only() {
    let mut in_place = 0;
    for seed in 1..=40 {
        in_place += fuzz(seed, config(256, true, TierPolicy::Distribution), 2_000);
        in_place += fuzz(
            seed + 1000,
            config(5, false, TierPolicy::Distribution),
            1_500,
        );
    }
    eprintln!("in place: {in_place}");
    assert!(in_place > 100, "the fuzz reaches own_in_place");
}

// ---------------------------------------------------------------------------------------------
// Side finding, older than d6e22a0 and fixed in f5b09c9: two unicast sessions of one socket
// address on one shared tier (fixed rates, or no room for own channels) share one data-plane
// destination (the pool keeps destinations as a set); the first to leave took the other's data
// away.
// ---------------------------------------------------------------------------------------------

#[test]
fn one_address_two_unicast_sessions_on_one_tier_keep_their_data_when_one_leaves() {
    let mut cfg = config(16, true, TierPolicy::Distribution);
    cfg.adaptive = None;
    cfg.rate_bits_per_s = 10_000_000;
    let mut ep = Endpoint::new(cfg, SeededRng::from_u64(5), Instant::ZERO);
    let mut fs = files(1);
    let name = fs.0[0].name.clone();
    let x = a(1);
    let mut offers = Vec::new();
    for id in [1, 2] {
        let req = ControlMessage::Request {
            request_id: id,
            multicast_ok: false,
            name: name.clone(),
            hints: RequestHints::default(),
        };
        ep.handle_control(at(0), x, &req.to_bytes(), &mut fs);
        while let Some(t) = ep.poll_transmit() {
            if let Ok(ControlMessage::Offer { session, token, .. }) =
                ControlMessage::parse(&t.bytes)
            {
                offers.push((session, token));
            }
        }
    }
    for &(session, token) in &offers {
        let j = ControlMessage::Joined {
            session,
            token,
            transport: Transport::Unicast,
        };
        ep.handle_control(at(1), x, &j.to_bytes(), &mut fs);
    }
    while ep.poll_command().is_some() {}
    ep.handle_control(
        at(2),
        x,
        &ControlMessage::Leave {
            session: offers[0].0,
        }
        .to_bytes(),
        &mut fs,
    );
    ep.assert_invariants();
    let still = ep
        .sessions()
        .any(|s| s.session == offers[1].0 && s.validated);
    let removed = std::iter::from_fn(|| ep.poll_command()).any(
        |c| matches!(c, DataCommand::RemoveDestination { destination, .. } if destination == x),
    );
    assert!(
        !(still && removed),
        "the address's other session is still on the tier, but its destination was removed"
    );
}
