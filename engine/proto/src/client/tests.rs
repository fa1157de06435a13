//! Every client-session rule, one test each, on virtual time.

use super::*;
use crate::info::tests::sample_info;
use crate::info::DATAGRAM_SIZE_MTU_1500;

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

fn server() -> SocketAddr {
    "192.0.2.1:7700".parse().unwrap()
}

fn session() -> ClientSession {
    ClientSession::new(
        ClientConfig::new(server(), "film"),
        SeededRng::from_u64(3),
        at(0),
    )
}

fn sent(client: &mut ClientSession) -> Vec<ControlMessage> {
    let mut out = Vec::new();
    while let Some(bytes) = client.poll_transmit() {
        out.push(ControlMessage::parse(&bytes).unwrap());
    }
    out
}

fn events(client: &mut ClientSession) -> Vec<ClientEvent> {
    let mut out = Vec::new();
    while let Some(event) = client.poll_event() {
        out.push(event);
    }
    out
}

fn request_id(messages: &[ControlMessage]) -> u64 {
    messages
        .iter()
        .find_map(|m| match m {
            ControlMessage::Request { request_id, .. } => Some(*request_id),
            _ => None,
        })
        .expect("a Request")
}

fn offer(request_id: u64, transport: Transport) -> Vec<u8> {
    ControlMessage::Offer {
        request_id,
        session: SessionId(77),
        token: Token(99),
        transport,
        channel: "239.77.1.1:7701".parse().unwrap(),
        rate_bits_per_s: 1_000_000,
        info: sample_info(10_000, DATAGRAM_SIZE_MTU_1500, 2),
    }
    .to_bytes()
}

#[test]
fn requests_are_retried_then_given_up() {
    let mut client = session();
    client.handle_timeout(at(0));
    assert_eq!(sent(&mut client).len(), 1);
    client.handle_timeout(at(499));
    assert!(sent(&mut client).is_empty());
    client.handle_timeout(at(500));
    assert_eq!(sent(&mut client).len(), 1, "retried after 500 ms");
    client.handle_timeout(at(10_000));
    assert_eq!(events(&mut client), vec![ClientEvent::NoAnswer]);
    assert!(client.is_finished());
}

#[test]
fn an_offer_from_anyone_but_the_server_is_dropped() {
    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    client.handle_control(
        at(1),
        "192.0.2.66:7700".parse().unwrap(),
        &offer(id, Transport::Unicast),
    );
    assert!(events(&mut client).is_empty());
    assert_eq!(client.dropped(), 1);
    client.handle_control(at(1), server(), &offer(id ^ 1, Transport::Unicast));
    assert!(events(&mut client).is_empty(), "another request's offer");
}

#[test]
fn unicast_joins_with_the_token_and_repeats_it_until_data_arrives() {
    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    client.handle_control(at(1), server(), &offer(id, Transport::Unicast));
    let joined = ControlMessage::Joined {
        session: SessionId(77),
        token: Token(99),
        transport: Transport::Unicast,
    };
    assert_eq!(sent(&mut client), vec![joined.clone()]);
    client.handle_timeout(at(251));
    assert!(
        sent(&mut client).contains(&joined),
        "Joined again: the first may be lost"
    );
    client.handle_data(at(300));
    client.handle_timeout(at(600));
    assert!(
        !sent(&mut client).contains(&joined),
        "data arrived: no more Joined"
    );
}

#[test]
fn multicast_confirms_on_sync_or_falls_back_after_the_timeout() {
    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    client.handle_control(at(1), server(), &offer(id, Transport::Multicast));
    let file_id = sample_info(10_000, DATAGRAM_SIZE_MTU_1500, 2).file_id;
    client.handle_sync(at(100), file_id);
    assert_eq!(client.transport(), Some(Transport::Multicast));

    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    client.handle_control(at(1), server(), &offer(id, Transport::Multicast));
    sent(&mut client);
    client.handle_timeout(at(1_501));
    assert_eq!(client.transport(), Some(Transport::Unicast));
    assert!(sent(&mut client).iter().any(|m| matches!(
        m,
        ControlMessage::Joined {
            transport: Transport::Unicast,
            ..
        }
    )));
}

#[test]
fn an_ended_session_or_a_silent_server_makes_the_client_ask_again() {
    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    client.handle_control(at(1), server(), &offer(id, Transport::Unicast));
    client.handle_data(at(2));
    sent(&mut client);
    events(&mut client);
    let ended = ControlMessage::Ended {
        session: SessionId(77),
        reason: EndReason::UnknownSession,
    }
    .to_bytes();
    client.handle_control(at(10), server(), &ended);
    assert!(matches!(
        events(&mut client)[..],
        [ClientEvent::SessionLost { .. }]
    ));
    let again = request_id(&sent(&mut client));
    assert_ne!(again, id, "a new request id");
    // Silence: joined, then nothing for 3 s.
    client.handle_control(at(20), server(), &offer(again, Transport::Unicast));
    client.handle_data(at(30));
    sent(&mut client);
    client.handle_timeout(at(3_030));
    assert!(matches!(
        events(&mut client).last(),
        Some(ClientEvent::SessionLost { .. })
    ));
    assert_eq!(client.rerequests(), 2);
}

#[test]
fn a_forged_ended_for_another_session_is_ignored() {
    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    client.handle_control(at(1), server(), &offer(id, Transport::Unicast));
    events(&mut client);
    let ended = ControlMessage::Ended {
        session: SessionId(78),
        reason: EndReason::ShuttingDown,
    }
    .to_bytes();
    client.handle_control(at(10), server(), &ended);
    assert!(events(&mut client).is_empty());
    assert_eq!(client.session(), Some(SessionId(77)));
}
