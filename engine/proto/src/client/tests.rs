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
    while let Some((to, bytes)) = client.poll_transmit() {
        assert_eq!(to, server(), "one server configured: everything goes to it");
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

fn offer_info() -> crate::info::FileInfo {
    sample_info(10_000, DATAGRAM_SIZE_MTU_1500, 2)
}

fn offer(request_id: u64, transport: Transport) -> Vec<u8> {
    ControlMessage::Offer {
        request_id,
        session: SessionId(77),
        token: Token(99),
        transport,
        channel: "239.77.1.1:7701".parse().unwrap(),
        rate_bits_per_s: 1_000_000,
        info: offer_info(),
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

/// Once the driver has joined the group, the client asks for a Sync with its token (the one
/// sent with the Offer came before the join); once joined, it asks no more.
#[test]
fn a_client_that_joined_its_group_asks_for_a_sync_with_its_token() {
    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    client.handle_control(at(1), server(), &offer(id, Transport::Multicast));
    let (session_id, token) = match ControlMessage::parse(&offer(id, Transport::Multicast)) {
        Ok(ControlMessage::Offer { session, token, .. }) => (session, token),
        other => panic!("not an offer: {other:?}"),
    };
    sent(&mut client);
    client.multicast_joined(at(2));
    let wanted = ControlMessage::SyncWanted {
        session: session_id,
        token,
    };
    assert_eq!(sent(&mut client), vec![wanted.clone()]);
    // No Sync came (it may have reached the group before the network forwarded it to us):
    // asked again 10 ms and then 30 ms later, and no more (the server honours 3).
    let mut times = Vec::new();
    for ms in 3..1_400 {
        client.handle_timeout(at(ms));
        for message in sent(&mut client) {
            if message == wanted {
                times.push(ms);
            }
        }
    }
    assert_eq!(times, vec![12, 42], "the retries");
    assert_eq!(client.transport(), None, "still waiting for a Sync");

    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    client.handle_control(at(1), server(), &offer(id, Transport::Multicast));
    client.multicast_joined(at(2));
    let file_id = sample_info(10_000, DATAGRAM_SIZE_MTU_1500, 2).file_id;
    client.handle_sync(at(3), file_id);
    sent(&mut client);
    client.multicast_joined(at(4));
    for ms in 4..100 {
        client.handle_timeout(at(ms));
        assert!(
            !sent(&mut client)
                .iter()
                .any(|m| matches!(m, ControlMessage::SyncWanted { .. })),
            "no SyncWanted once joined"
        );
    }
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

/// A session joined on multicast at 20 ms (Offer at 10 ms, SYNC at 20 ms) for a 10 MB file,
/// with what it sent and told so far taken.
fn joined_on_multicast() -> ClientSession {
    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    let info = sample_info(10_000_000, DATAGRAM_SIZE_MTU_1500, 2);
    let mut big_offer = ControlMessage::parse(&offer(id, Transport::Multicast)).unwrap();
    if let ControlMessage::Offer { info: i, .. } = &mut big_offer {
        *i = info.clone();
    }
    client.handle_control(at(10), server(), &big_offer.to_bytes());
    client.handle_sync(at(20), info.file_id);
    events(&mut client);
    sent(&mut client);
    client
}

fn reports_sent(client: &mut ClientSession) -> Vec<ControlMessage> {
    sent(client)
        .into_iter()
        .filter(|m| matches!(m, ControlMessage::Report { .. }))
        .collect()
}

#[test]
fn reports_come_more_often_while_the_tier_ramps_up_but_each_covers_enough_datagrams() {
    let mut client = joined_on_multicast();
    let group: SocketAddr = "239.77.1.1:7701".parse().unwrap();
    let feedback = |rate_bits_per_s| {
        ControlMessage::Feedback {
            session: SessionId(77),
            echo_us: 0,
            tier_id: 1,
            tier: 0,
            tiers: 1,
            transport: Transport::Multicast,
            channel: group,
            rate_bits_per_s,
        }
        .to_bytes()
    };
    // Reports in 10 ms steps: how many were sent over [from, to).
    let count_reports = |client: &mut ClientSession, from: u64, to: u64| {
        (from..to)
            .step_by(10)
            .map(|ms| {
                client.handle_timeout(at(ms));
                reports_sent(client).len()
            })
            .sum::<usize>()
    };
    // Offered 1 Mbit/s: 256 datagrams take seconds, so even while nothing is known (the tier
    // may be ramping) reports keep the usual 200 ms: the first at 220 ms.
    assert_eq!(count_reports(&mut client, 200, 230), 1);
    assert_eq!(count_reports(&mut client, 230, 630), 2, "every 200 ms");
    // Slow start doubles a fast rate: every 50 ms (256 datagrams take 3 ms at 1 Gbit/s).
    client.handle_control(at(630), server(), &feedback(1_000_000_000));
    client.handle_control(at(640), server(), &feedback(2_000_000_000));
    client.handle_timeout(at(640));
    reports_sent(&mut client);
    assert_eq!(count_reports(&mut client, 650, 850), 4, "every 50 ms");
    // Feedback at the same rate (the step is being judged): still every 50 ms.
    client.handle_control(at(850), server(), &feedback(2_000_000_000));
    assert_eq!(count_reports(&mut client, 850, 1_050), 4, "every 50 ms");
    // A few percent a step near the path's rate: the usual 200 ms.
    client.handle_control(at(1_050), server(), &feedback(2_040_000_000));
    client.handle_timeout(at(1_050));
    reports_sent(&mut client);
    assert_eq!(count_reports(&mut client, 1_060, 1_860), 4, "every 200 ms");
    // A rate that holds through many Feedbacks (its members do not keep up): the usual
    // interval again after a few.
    client.handle_control(at(1_860), server(), &feedback(4_000_000_000));
    for ms in (1_870..1_950).step_by(10) {
        client.handle_control(at(ms), server(), &feedback(4_000_000_000));
    }
    client.handle_timeout(at(1_950));
    reports_sent(&mut client);
    assert_eq!(count_reports(&mut client, 1_960, 2_360), 2, "every 200 ms");
    // A slow tier doubling (20 to 40 Mbit/s): each report waits for 256 datagrams, ~75 ms.
    client.handle_control(at(2_360), server(), &feedback(20_000_000));
    client.handle_control(at(2_370), server(), &feedback(40_000_000));
    client.handle_timeout(at(2_370));
    reports_sent(&mut client);
    // (Before 3 s: the session hears no data and would ask again.)
    let reports = count_reports(&mut client, 2_380, 2_780);
    assert_eq!(reports, 5, "every 74 ms, on a 10 ms grid: 80 ms");
}

/// New-user review: a second client joined a 40 Mbit/s receiver's tier and its first Report
/// covered the join as well as the data after it (half its interval with nothing arriving
/// yet): it read as receiving half the rate, and the tier was halved for both. The first
/// Report's interval starts with the first datagram.
#[test]
fn the_first_report_covers_the_time_data_flows_not_the_wait_for_it() {
    let mut client = joined_on_multicast(); // joined at 20 ms, no data yet
    client.handle_timeout(at(100));
    reports_sent(&mut client);
    client.handle_data(at(150));
    for serial in 0..50 {
        client.observe_serial(serial, false);
    }
    let mut interval = None;
    for ms in (150..=400).step_by(10) {
        client.handle_timeout(at(ms));
        if let Some(ControlMessage::Report {
            interval_us,
            received,
            ..
        }) = reports_sent(&mut client).first()
        {
            interval = Some((ms, *interval_us, *received));
            break;
        }
    }
    let (at_ms, interval_us, received) = interval.expect("a report within the interval");
    assert_eq!(
        u64::from(interval_us),
        (at_ms - 150) * 1_000,
        "from the first datagram at 150 ms to the report at {at_ms} ms"
    );
    assert_eq!(received, 50);
}

#[test]
fn reports_carry_loss_from_serial_gaps_and_feedback_moves_the_session() {
    let mut client = joined_on_multicast();
    // 0..10 arrive, 10..20 go by, 20..100 arrive, and a repair far behind.
    for serial in (0..10).chain(20..100).chain([2]) {
        client.observe_serial(serial, false);
    }
    client.handle_timeout(at(220));
    let reports = reports_sent(&mut client);
    let [ControlMessage::Report {
        sent_at_us,
        interval_us,
        received,
        lost,
        rtt_us,
        ..
    }] = reports[..]
    else {
        panic!("one Report: {reports:?}")
    };
    assert_eq!((received, lost, rtt_us), (91, 10, 0));
    assert_eq!(interval_us, 200_000);
    assert!(matches!(
        reports[0],
        ControlMessage::Report {
            loss_judged: true,
            ..
        }
    ));
    // The server answers 3 ms later and puts us on another group: RTT measured, Moved.
    let group: SocketAddr = "239.77.1.2:7701".parse().unwrap();
    let feedback = |echo_us| {
        ControlMessage::Feedback {
            session: SessionId(77),
            echo_us,
            tier_id: 5,
            tier: 0,
            tiers: 2,
            transport: Transport::Multicast,
            channel: group,
            rate_bits_per_s: 50_000_000,
        }
        .to_bytes()
    };
    client.handle_control(at(223), server(), &feedback(sent_at_us));
    assert_eq!(client.rtt(), Some(Duration::from_millis(3)));
    assert_eq!(
        events(&mut client),
        vec![ClientEvent::Moved {
            transport: Transport::Multicast,
            channel: group,
            tier: 0,
            tiers: 2,
            rate_bits_per_s: 50_000_000,
        }]
    );
    // The same Feedback again (duplicated, or the next one): no second move, no RTT sample.
    client.handle_control(at(900), server(), &feedback(sent_at_us));
    assert!(events(&mut client).is_empty());
    assert_eq!(client.rtt(), Some(Duration::from_millis(3)));
    assert_eq!(client.moves(), 1);
    // A forged Feedback from elsewhere changes nothing.
    let mut forged = ControlMessage::parse(&feedback(sent_at_us)).unwrap();
    if let ControlMessage::Feedback { channel, .. } = &mut forged {
        *channel = "239.9.9.9:7701".parse().unwrap();
    }
    client.handle_control(
        at(901),
        "192.0.2.66:7700".parse().unwrap(),
        &forged.to_bytes(),
    );
    assert!(events(&mut client).is_empty());
    assert_eq!(client.tier().unwrap().channel, group);
    // After the move the meter starts over: the jump to the new tier's loop is not loss.
    client.observe_serial(5_000, false);
    client.observe_serial(5_001, false);
    client.handle_timeout(at(1_000));
    let lost: Vec<u32> = sent(&mut client)
        .into_iter()
        .filter_map(|m| match m {
            ControlMessage::Report { lost, rtt_us, .. } => {
                assert_eq!(rtt_us, 3_000, "the measured round trip is reported");
                Some(lost)
            }
            _ => None,
        })
        .collect();
    assert_eq!(lost.iter().sum::<u32>(), 0, "{lost:?}");
}

// Fleet (R16, R17): entry points, redirects, failover.

fn director(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, last], 7700))
}

fn fleet_server(last: u8) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, last], 7700))
}

/// A client that knows two directors.
fn fleet_session() -> ClientSession {
    let mut config = ClientConfig::new(director(1), "film");
    config.alternates = vec![director(2)];
    config.location = "paris".into();
    ClientSession::new(config, SeededRng::from_u64(5), at(0))
}

/// (destination, message) of every datagram the client would send now.
fn sent_to(client: &mut ClientSession) -> Vec<(SocketAddr, ControlMessage)> {
    let mut out = Vec::new();
    while let Some((to, bytes)) = client.poll_transmit() {
        out.push((to, ControlMessage::parse(&bytes).unwrap()));
    }
    out
}

fn redirect(request_id: u64, server: SocketAddr) -> Vec<u8> {
    ControlMessage::Redirect { request_id, server }.to_bytes()
}

fn request_hints(message: &ControlMessage) -> (u64, RequestHints) {
    match message {
        ControlMessage::Request {
            request_id, hints, ..
        } => (*request_id, hints.clone()),
        other => panic!("not a Request: {other:?}"),
    }
}

#[test]
fn requests_go_to_each_director_in_turn_until_one_answers() {
    let mut client = fleet_session();
    let mut destinations = Vec::new();
    for ms in (0..2000).step_by(100) {
        client.handle_timeout(at(ms));
        for (to, message) in sent_to(&mut client) {
            let (_, hints) = request_hints(&message);
            assert_eq!(hints.location, "paris");
            destinations.push(to);
        }
    }
    assert_eq!(
        destinations,
        [director(1), director(2), director(1), director(2)],
        "one entry point per retry (500 ms)"
    );
}

#[test]
fn a_redirect_sends_the_request_to_the_server_it_names_and_only_that_server_may_offer() {
    let mut client = fleet_session();
    client.handle_timeout(at(0));
    let (to, first) = sent_to(&mut client).remove(0);
    assert_eq!(to, director(1));
    let (id, _) = request_hints(&first);
    // A redirect for another request, or from a stranger, changes nothing.
    client.handle_control(at(5), director(1), &redirect(id ^ 1, fleet_server(66)));
    client.handle_control(at(5), fleet_server(66), &redirect(id, fleet_server(66)));
    assert!(sent_to(&mut client).is_empty());
    assert_eq!(client.dropped(), 2);
    // The director's answer: the same request goes to the server at once.
    client.handle_control(at(10), director(1), &redirect(id, fleet_server(1)));
    let again = sent_to(&mut client);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, fleet_server(1));
    assert_eq!(request_hints(&again[0].1).0, id);
    // Only the entry points and the named server may answer now: a stranger's Offer is dropped.
    client.handle_control(at(12), fleet_server(66), &offer(id, Transport::Unicast));
    assert!(events(&mut client).is_empty());
    client.handle_control(at(15), fleet_server(1), &offer(id, Transport::Unicast));
    assert!(matches!(
        events(&mut client)[0],
        ClientEvent::Offered { .. }
    ));
    assert_eq!(client.peer(), fleet_server(1));
    // The Joined goes to the server, not the director.
    assert!(sent_to(&mut client)
        .iter()
        .all(|(to, _)| *to == fleet_server(1)));
}

#[test]
fn redirects_in_a_row_are_followed_at_most_a_few_times() {
    let mut client = fleet_session();
    client.handle_timeout(at(0));
    let (id, _) = request_hints(&sent_to(&mut client)[0].1);
    let mut from = director(1);
    for hop in 0..10u8 {
        client.handle_control(at(1), from, &redirect(id, fleet_server(hop + 1)));
        let sent = sent_to(&mut client);
        if hop < REDIRECTS_MAX {
            assert_eq!(sent[0].0, fleet_server(hop + 1));
        } else {
            assert!(sent.is_empty(), "redirect {hop} not followed");
        }
        from = fleet_server(hop + 1).min(from.max(fleet_server(REDIRECTS_MAX)));
    }
}

#[test]
fn a_redirected_server_that_never_answers_is_named_to_the_directors() {
    let mut client = fleet_session();
    client.handle_timeout(at(0));
    let (id, _) = request_hints(&sent_to(&mut client)[0].1);
    client.handle_control(at(1), director(1), &redirect(id, fleet_server(1)));
    let mut log = sent_to(&mut client);
    for ms in (100..=1600).step_by(100) {
        client.handle_timeout(at(ms));
        log.extend(sent_to(&mut client));
    }
    let to: Vec<SocketAddr> = log.iter().map(|(to, _)| *to).collect();
    assert_eq!(to[..3], [fleet_server(1), fleet_server(1), director(2)]);
    let (_, hints) = request_hints(&log[2].1);
    assert_eq!(hints.avoid, Some(fleet_server(1)));
}

#[test]
fn a_silent_server_reached_through_the_fleet_is_replaced_with_the_root_and_throughput_told() {
    let mut client = fleet_session();
    client.handle_timeout(at(0));
    let (id, _) = request_hints(&sent_to(&mut client)[0].1);
    client.handle_control(at(1), director(1), &redirect(id, fleet_server(1)));
    client.handle_control(at(2), fleet_server(1), &offer(id, Transport::Unicast));
    sent_to(&mut client); // the Request to the server, then Joined
    let root = match &events(&mut client)[0] {
        ClientEvent::Offered { info, .. } => info.root(),
        other => panic!("{other:?}"),
    };
    // Data flows for a second (the file's loop, over and over).
    let loop_len = offer_info().loop_len;
    let mut serial = 0;
    for ms in (10..=1000).step_by(10) {
        client.handle_data(at(ms));
        for _ in 0..10 {
            client.observe_serial(serial, false);
            serial = (serial + 1) % loop_len;
        }
        client.handle_timeout(at(ms));
        for (_, message) in sent_to(&mut client) {
            assert!(
                !matches!(message, ControlMessage::Request { .. }),
                "asked again at {ms} ms: {message:?} {:?}",
                events(&mut client)
            );
        }
    }
    // The server dies at 1000 ms: nothing more arrives.
    let mut failed_over = None;
    for ms in (1010..=2000).step_by(10) {
        client.handle_timeout(at(ms));
        for (to, message) in sent_to(&mut client) {
            if let ControlMessage::Request { hints, .. } = message {
                failed_over.get_or_insert((ms, to, hints));
            }
        }
    }
    let (ms, to, hints) = failed_over.expect("asked the fleet again");
    assert!((1790..=1810).contains(&ms), "after 800 ms of silence: {ms}");
    assert_eq!(to, director(1));
    assert_eq!(hints.avoid, Some(fleet_server(1)));
    assert_eq!(hints.root, Some(root));
    assert_eq!(
        hints.resume_at,
        Some(serial),
        "the new loop starts where this one was"
    );
    // 10 datagrams of 1440 bytes per 10 ms: about 11.5 Mbit/s.
    let throughput = hints.throughput_bits_per_s;
    assert!(
        (10_000_000..13_000_000).contains(&throughput),
        "{throughput}"
    );
    assert_eq!(client.failovers(), 1);
    assert!(events(&mut client)
        .iter()
        .any(|e| matches!(e, ClientEvent::SessionLost { .. })));
}

#[test]
fn without_a_fleet_a_silent_server_is_asked_again_itself_after_the_longer_silence() {
    let mut client = session();
    client.handle_timeout(at(0));
    let id = request_id(&sent(&mut client));
    client.handle_control(at(1), server(), &offer(id, Transport::Unicast));
    sent(&mut client);
    client.handle_data(at(10));
    for ms in (20..=2900).step_by(10) {
        client.handle_timeout(at(ms));
        assert!(
            !sent(&mut client)
                .iter()
                .any(|m| matches!(m, ControlMessage::Request { .. })),
            "no failover at {ms} ms: no fleet"
        );
    }
    client.handle_timeout(at(3010));
    assert!(sent(&mut client)
        .iter()
        .any(|m| matches!(m, ControlMessage::Request { .. })));
    assert_eq!(client.failovers(), 0);
}

/// `get --root`: the director hears the root the client wants from the first Request on, so
/// it routes only to a server with those bytes.
#[test]
fn the_root_the_client_wants_goes_with_its_first_request() {
    let mut config = ClientConfig::new(director(1), "film");
    config.root = Some(crate::info::RootHash([9; 32]));
    let mut client = ClientSession::new(config, SeededRng::from_u64(5), at(0));
    client.handle_timeout(at(0));
    let (_, hints) = request_hints(&sent_to(&mut client)[0].1);
    assert_eq!(hints.root, Some(crate::info::RootHash([9; 32])));
}

/// Datagrams that arrived but none verified (a mid-loop joiner waits for the hash block
/// above its data): the Report says its loss is not judged, so the server reads only a
/// shortfall from it (`rate::Counts::Unjudged`).
#[test]
fn a_report_before_anything_verified_says_its_loss_is_not_judged() {
    let mut client = joined_on_multicast();
    let mut nak = NakPlanner::new(
        crate::nak::NakConfig::default(),
        &crate::bitmap::Bitmap::new(100),
    );
    for serial in 0..50 {
        client.account_datagram(
            &mut nak,
            Some(Metered { serial }),
            &Outcome::Store {
                serial,
                verified: false,
            },
            at(100),
        );
    }
    client.handle_timeout(at(220));
    let reports = reports_sent(&mut client);
    let [ControlMessage::Report {
        received,
        lost,
        loss_judged,
        ..
    }] = reports[..]
    else {
        panic!("one Report: {reports:?}")
    };
    assert_eq!((received, lost, loss_judged), (50, 0, false));
}

#[test]
fn a_partial_download_from_an_earlier_run_asks_for_its_loop_where_it_lacks() {
    let mut config = ClientConfig::new(server(), "film");
    config.resume_at = Some(4_848);
    let mut client = ClientSession::new(config, SeededRng::from_u64(3), at(0));
    client.handle_timeout(at(0));
    let requests: Vec<RequestHints> = sent(&mut client)
        .iter()
        .filter(|m| matches!(m, ControlMessage::Request { .. }))
        .map(|m| request_hints(m).1)
        .collect();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].resume_at, Some(4_848));
    // A first download asks for no place.
    let mut fresh = session();
    fresh.handle_timeout(at(0));
    let first = sent(&mut fresh);
    assert_eq!(request_hints(&first[0]).1.resume_at, None);
}
