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

fn request(id: u64, name: &str) -> Vec<u8> {
    ControlMessage::Request {
        request_id: id,
        multicast_ok: false,
        name: name.into(),
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
