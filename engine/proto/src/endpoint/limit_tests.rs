//! Resource limits under hostile clients (issue 10): channels opened per unicast client.

use super::*;
use crate::info::DATAGRAM_SIZE_MTU_1500;
use crate::testkit::sample_info;

struct TwoFiles(Vec<FileInfo>);

impl FileLookup for TwoFiles {
    fn lookup(&mut self, name: &str) -> Result<FileInfo, (RejectCode, String)> {
        self.0
            .iter()
            .find(|info| info.name == name)
            .cloned()
            .ok_or((RejectCode::NotFound, format!("no file named {name:?}")))
    }
}

pub(super) fn request(id: u64, name: &str) -> Vec<u8> {
    ControlMessage::Request {
        request_id: id,
        multicast_ok: false,
        name: name.into(),
        hints: Default::default(),
    }
    .to_bytes()
}

fn drain(endpoint: &mut Endpoint) -> Vec<ControlMessage> {
    let mut out = Vec::new();
    while let Some(t) = endpoint.poll_transmit() {
        out.extend(ControlMessage::parse(&t.bytes).ok());
    }
    while endpoint.poll_command().is_some() {}
    while endpoint.poll_event().is_some() {}
    endpoint.assert_invariants();
    out
}

/// Unicast clients of one file each get a channel of their own (R12). A few addresses' worth of
/// them (16 addresses x 16 sessions, all validated: an attacker needs only to receive) must
/// not take every channel the server has: another file must still be served.
#[test]
fn unicast_clients_of_one_file_cannot_take_every_channel_from_other_files() {
    let mut config = EndpointConfig::new("10.0.0.1:7700".parse().unwrap());
    config.adaptive = Some(RateConfig::default());
    let channels_max = config.channels_max;
    let per_address = config.sessions_per_address_max;
    let mut endpoint = Endpoint::new(config, SeededRng::from_u64(7), Instant::ZERO);
    let first = sample_info(1_000_000, DATAGRAM_SIZE_MTU_1500, 1);
    let other = sample_info(1_000_000, DATAGRAM_SIZE_MTU_1500, 2);
    let mut files = TwoFiles(vec![first.clone(), other.clone()]);
    let now = Instant::ZERO + Duration::from_millis(10);
    let addresses = channels_max.div_ceil(per_address) + 1;
    let mut id = 0u64;
    for a in 0..addresses {
        let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, a as u8 + 1)), 5000);
        for _ in 0..per_address {
            id += 1;
            endpoint.handle_control(now, client, &request(id, &first.name), &mut files);
            for message in drain(&mut endpoint) {
                if let ControlMessage::Offer { session, token, .. } = message {
                    let joined = ControlMessage::Joined {
                        session,
                        token,
                        transport: Transport::Unicast,
                    }
                    .to_bytes();
                    endpoint.handle_control(now, client, &joined, &mut files);
                    drain(&mut endpoint);
                }
            }
        }
    }
    assert!(endpoint.channel_count() <= channels_max);
    // A client of another file.
    let client: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    endpoint.handle_control(now, client, &request(1, &other.name), &mut files);
    let answers = drain(&mut endpoint);
    assert!(
        answers
            .iter()
            .any(|m| matches!(m, ControlMessage::Offer { .. })),
        "after {} unicast clients of one file ({} channels open), another file was refused: {answers:?}",
        addresses * per_address,
        endpoint.channel_count()
    );
    // And more clients of the first file, from new addresses: served (sharing a tier), and the
    // channel count stays within its bound.
    for a in 0..4u8 {
        let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, a + 1)), 5000);
        endpoint.handle_control(now, client, &request(99, &first.name), &mut files);
        let answers = drain(&mut endpoint);
        assert!(
            answers
                .iter()
                .any(|m| matches!(m, ControlMessage::Offer { .. })),
            "{answers:?}"
        );
        assert!(endpoint.channel_count() <= channels_max);
    }
}

fn report(session: SessionId, received: u32, lost: u32) -> Vec<u8> {
    ControlMessage::Report {
        session,
        sent_at_us: 1,
        interval_us: 200_000,
        received,
        lost,
        rtt_us: 1_000,
        loss_judged: true,
    }
    .to_bytes()
}

/// A multicast member of `client` on `files`' first file.
fn member(
    endpoint: &mut Endpoint,
    files: &mut TwoFiles,
    now: Instant,
    client: SocketAddr,
) -> SessionId {
    let name = files.0[0].name.clone();
    let mut request = request(1, &name);
    // Multicast welcome.
    request = {
        let mut message = ControlMessage::parse(&request).unwrap();
        if let ControlMessage::Request { multicast_ok, .. } = &mut message {
            *multicast_ok = true;
        }
        message.to_bytes()
    };
    endpoint.handle_control(now, client, &request, files);
    let (session, token) = drain(endpoint)
        .into_iter()
        .find_map(|m| match m {
            ControlMessage::Offer { session, token, .. } => Some((session, token)),
            _ => None,
        })
        .expect("an Offer");
    let joined = ControlMessage::Joined {
        session,
        token,
        transport: Transport::Multicast,
    }
    .to_bytes();
    endpoint.handle_control(now, client, &joined, files);
    drain(endpoint);
    session
}

/// R12: "one slow receiver never slows the rest". A member of a shared multicast tier that
/// reports it gets nearly all of the rate (95 %) but loses 5 % (a lying receiver, or an honest
/// one on a path with 5 % random loss) is congested yet "close to the rate", so it stays, and
/// the tier's rate stops rising: for everyone on it, for as long as it likes.
#[test]
fn one_member_with_steady_loss_near_the_rate_does_not_freeze_the_shared_tier() {
    let mut config = EndpointConfig::new("10.0.0.1:7700".parse().unwrap());
    config.adaptive = Some(RateConfig::default());
    config.rate_bits_per_s = 4_000_000_000;
    config.multicast = Some(MulticastGroups {
        group_base: Ipv4Addr::new(239, 77, 1, 0),
        port: 7701,
    });
    let mut endpoint = Endpoint::new(config, SeededRng::from_u64(3), Instant::ZERO);
    let first = sample_info(1_000_000, DATAGRAM_SIZE_MTU_1500, 1);
    let mut files = TwoFiles(vec![first]);
    let honest: SocketAddr = "192.0.2.10:6000".parse().unwrap();
    let steady: SocketAddr = "192.0.2.11:6000".parse().unwrap();
    let now = Instant::ZERO;
    let honest_session = member(&mut endpoint, &mut files, now, honest);
    let steady_session = member(&mut endpoint, &mut files, now, steady);
    let start_rate = endpoint.channels().next().unwrap().rate_bits_per_s;
    let mut honest_rate = start_rate;
    for step in 1..=100u64 {
        let now = Instant::ZERO + Duration::from_millis(step * 200);
        let rate = endpoint
            .sessions()
            .find(|s| s.session == honest_session)
            .unwrap()
            .rate_bits_per_s;
        honest_rate = rate;
        let per_report = (rate as f64 * 0.2 / (1440.0 * 8.0)) as u32;
        endpoint.handle_control(
            now,
            honest,
            &report(honest_session, per_report, 0),
            &mut files,
        );
        let steady_rate = endpoint
            .sessions()
            .find(|s| s.session == steady_session)
            .unwrap()
            .rate_bits_per_s;
        let per_report = (steady_rate as f64 * 0.2 / (1440.0 * 8.0)) as u32;
        endpoint.handle_control(
            now,
            steady,
            &report(steady_session, per_report * 95 / 100, per_report * 5 / 100),
            &mut files,
        );
        endpoint.handle_timeout(now);
        drain(&mut endpoint);
    }
    assert!(
        honest_rate >= 2 * start_rate,
        "20 s on, the loss-free member's rate is still {honest_rate} (started at {start_rate})"
    );
}
