//! A fleet client whose server stalls (R17): the failover must not end the download.

use super::*;
use crate::info::tests::sample_info;
use crate::info::DATAGRAM_SIZE_MTU_1500;

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

fn director() -> SocketAddr {
    "198.51.100.1:7700".parse().unwrap()
}

fn server() -> SocketAddr {
    "203.0.113.1:7700".parse().unwrap()
}

fn requests(client: &mut ClientSession) -> Vec<(SocketAddr, u64)> {
    let mut out = Vec::new();
    while let Some((to, bytes)) = client.poll_transmit() {
        if let Ok(ControlMessage::Request { request_id, .. }) = ControlMessage::parse(&bytes) {
            out.push((to, request_id));
        }
    }
    out
}

/// The only server holding the file stalls for a second (a disk hiccup, SIGSTOP, a flood of
/// Requests at the director): the client gives it up after 800 ms and asks the director, which
/// has declared it dead (750 ms) and answers Busy ("every server with the file is full or
/// draining"). Seen with real processes: `loopcast get` through a director ended with exit 3
/// though the server was back 400 ms later. A client that holds part of the file asks again
/// until its re-request deadline instead, and continues when the server is back.
#[test]
fn a_busy_answer_after_a_failover_is_asked_again_not_the_end_of_the_download() {
    let info = sample_info(10_000, DATAGRAM_SIZE_MTU_1500, 2);
    let mut config = ClientConfig::new(director(), "film");
    config.alternates = vec!["198.51.100.2:7700".parse().unwrap()];
    let mut client = ClientSession::new(config, SeededRng::from_u64(9), at(0));
    client.handle_timeout(at(0));
    let (_, id) = requests(&mut client)[0];
    let redirect = ControlMessage::Redirect {
        request_id: id,
        server: server(),
    }
    .to_bytes();
    client.handle_control(at(1), director(), &redirect);
    let offer = ControlMessage::Offer {
        request_id: id,
        session: SessionId(77),
        token: Token(99),
        transport: Transport::Unicast,
        channel: "203.0.113.1:7701".parse().unwrap(),
        rate_bits_per_s: 1_000_000,
        info: info.clone(),
    };
    client.handle_control(at(2), server(), &offer.to_bytes());
    for ms in (10..=500).step_by(10) {
        client.handle_data(at(ms));
        client.observe_serial(ms as u32 / 10, false);
        client.handle_timeout(at(ms));
    }
    requests(&mut client);
    // The server stalls at 500 ms: the client asks the fleet again at 1300 ms.
    let mut asked = None;
    for ms in (510..=1400).step_by(10) {
        client.handle_timeout(at(ms));
        if let Some(&(to, id)) = requests(&mut client).first() {
            asked.get_or_insert((ms, to, id));
        }
    }
    let (ms, to, id) = asked.expect("failed over");
    assert_eq!(to, director());
    let busy = ControlMessage::Reject {
        request_id: id,
        code: RejectCode::Busy,
        message: "every server with \"film\" is full or draining".into(),
    };
    client.handle_control(at(ms + 1), director(), &busy.to_bytes());
    assert!(
        !events(&mut client)
            .iter()
            .any(|e| matches!(e, ClientEvent::Rejected { .. })),
        "the download ended on a Busy during failover"
    );
    // It asks again (the other director, then the first), and the server, back, takes it.
    let mut again = Vec::new();
    for step in 1..=20 {
        client.handle_timeout(at(ms + step * 100));
        again.extend(requests(&mut client));
    }
    assert!(!again.is_empty(), "asked the fleet again");
}

fn events(client: &mut ClientSession) -> Vec<ClientEvent> {
    let mut out = Vec::new();
    while let Some(event) = client.poll_event() {
        out.push(event);
    }
    out
}
