//! Adversarial tests of how the endpoint carries out the tier planner's moves (session 8:
//! moves up, near-duplicate merges), with hostile validated clients' Reports.

use super::*;

/// A report of 200 ms at `rate`: `lost_share` of what was sent lost.
fn report_at(session: SessionId, rate: u64, lost_share: f64) -> Vec<u8> {
    let sent = rate as f64 * 0.2 / (f64::from(DATAGRAM_SIZE_MTU_1500) * 8.0);
    ControlMessage::Report {
        session,
        sent_at_us: 1,
        interval_us: 200_000,
        received: ((1.0 - lost_share) * sent) as u32,
        lost: (lost_share * sent) as u32,
        rtt_us: 1_000,
        loss_judged: true,
    }
    .to_bytes()
}

fn rate_of(endpoint: &Endpoint, session: SessionId) -> u64 {
    endpoint
        .sessions()
        .find(|v| v.session == session)
        .expect("session")
        .rate_bits_per_s
}

#[test]
fn a_move_up_to_a_tier_a_merge_closes_in_the_same_step_does_not_crash_the_server() {
    let (mut endpoint, mut files) = adaptive_endpoint(true);
    let config = endpoint.rate_config().expect("adaptive");
    let name = files.name.clone();
    // Three tiers: 40 Mbit/s (a member that may go faster, and one that holds the tier back),
    // 90 Mbit/s (one member, about to merge into the next: 90 >= 85 % of 100) and 100 Mbit/s.
    let clients = [
        "192.0.2.1:6000",
        "192.0.2.2:6000",
        "192.0.2.3:6000",
        "192.0.2.4:6000",
    ];
    let [keeps_up, holds_back, merging, fast] =
        clients.map(|c| member(&mut endpoint, &mut files, at(0), c));
    let first = endpoint.tiers_by_name[&name][0];
    endpoint.set_tier(first, TierControl::new_known(&config, at(0), 100_000_000));
    let slow = endpoint
        .open_tier(at(0), &name, 40_000_000, first, TierStart::Known)
        .expect("room");
    let middle = endpoint
        .open_tier(at(0), &name, 90_000_000, first, TierStart::Known)
        .expect("room");
    endpoint.move_session(at(0), keeps_up, slow, false);
    endpoint.move_session(at(0), holds_back, slow, true);
    endpoint.move_session(at(560), merging, middle, false);
    drain(&mut endpoint);
    assert_eq!(rate_of(&endpoint, merging), 90_000_000);
    assert_eq!(rate_of(&endpoint, fast), 100_000_000);
    // The one that holds the tier back loses (once: the tier waits), the other reports all of
    // it; the control step comes as the member on 90 Mbit/s has stayed there a second (it
    // merges). Before: the move up went to the 90 Mbit/s tier, closed a moment before by the
    // merge, and the server panicked (`self.channels[&to]`).
    endpoint.handle_control(
        at(1_500),
        addr(clients[1]),
        &report_at(holds_back, 40_000_000, 0.3),
        &mut files,
    );
    drain(&mut endpoint);
    endpoint.handle_control(
        at(1_550),
        addr(clients[0]),
        &report_at(keeps_up, 40_000_000, 0.0),
        &mut files,
    );
    endpoint.handle_timeout(at(1_560));
    drain(&mut endpoint);
    assert_eq!(rate_of(&endpoint, merging), 100_000_000, "merged");
    // The next step, it moves up to the tier still open.
    endpoint.handle_timeout(at(1_650));
    drain(&mut endpoint);
    // Everyone still served, each on an open tier.
    assert_eq!(endpoint.session_count(), 4);
    assert_eq!(rate_of(&endpoint, keeps_up), 100_000_000, "it moved up");
}
