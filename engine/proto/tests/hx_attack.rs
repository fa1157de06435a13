//! Hostile inputs to the NAK planner's loop-progress accounting (issue 10, today's changes:
//! a batch's shared reach budget, asked serials as progress within reach): whatever order,
//! timing, rate or serials a network delivers, the planner never panics (debug builds check
//! every u64 subtraction) and never moves its frontier further than the loop can have gone.

use core::time::Duration;

use loopcast_proto::bitmap::Bitmap;
use loopcast_proto::client::{account_datagram, Metered};
use loopcast_proto::nak::{NakConfig, NakPlanner};
use loopcast_proto::receiver::Outcome;
use loopcast_proto::rng::SeededRng;
use loopcast_proto::Instant;

#[test]
fn random_deliveries_asks_rejoins_and_rates_never_panic_the_planner() {
    for seed in 0..40u64 {
        let mut rng = SeededRng::from_u64(0x4a11 + seed);
        let loop_len = 1 + rng.below(5_000) as u32;
        let mut nak = NakPlanner::new(
            NakConfig {
                reorder_margin: rng.below(80) as u32,
                ..NakConfig::default()
            },
            &Bitmap::new(loop_len),
        );
        let mut now = Instant::ZERO;
        for _ in 0..20_000 {
            match rng.below(100) {
                // Most steps: the same instant (one batch) or a little later.
                0..=59 => {}
                60..=89 => now = now + Duration::from_micros(rng.below(3_000)),
                _ => now = now + Duration::from_millis(rng.below(500)),
            }
            let serial = match rng.below(4) {
                0 => rng.below(u64::from(loop_len) + 3) as u32,
                _ => (rng.next_u64() % u64::from(loop_len)) as u32,
            };
            match rng.below(1_000) {
                0..=399 => {
                    nak.saw(serial, now);
                }
                400..=799 => {
                    nak.saw_unverified(serial, now);
                }
                800..=949 => {
                    let _ = nak.poll_nak(now);
                }
                950..=969 => nak.set_loop_rate(match rng.below(4) {
                    0 => None,
                    1 => Some(0.0),
                    2 => Some(1e12),
                    _ => Some(rng.below(1_000_000) as f64),
                }),
                970..=974 => nak.rejoin(),
                _ => {
                    let _ = nak.is_progress(serial, now);
                }
            }
        }
    }
}

/// One received datagram through the client's own accounting (`client::account_datagram`):
/// `verified`, or a forged one held pending (its hash block has not come).
fn account(
    meter: &mut loopcast_proto::rate::LossMeter,
    nak: &mut NakPlanner,
    serial: u32,
    verified: bool,
    now: Instant,
) {
    let metered = Metered { serial };
    let outcome = Outcome::Store { serial, verified };
    account_datagram(meter, nak, Some(metered), &outcome, now);
}

/// Issue 10 (R12), a host on the group: the loop sends 1,000 datagrams a second and every one
/// reaches the victim, verified. A forger sends as many forged datagrams (sound header, wrong
/// payload, far enough ahead that their hash blocks have not come: held pending), each just
/// within the reach `saw_unverified` allows since the frontier last moved. `saw_unverified`
/// says a forger "can then move it only as fast as the loop itself"; the loss this client
/// reports must stay near zero (its path loses nothing).
#[test]
fn a_forger_on_the_group_cannot_run_the_frontier_ahead_of_the_loop_and_fake_loss() {
    let loop_len = 1_000_000;
    let mut nak = NakPlanner::new(NakConfig::default(), &Bitmap::new(loop_len));
    nak.set_loop_rate(Some(1_000.0));
    let mut meter = loopcast_proto::rate::LossMeter::new(loop_len);
    let mut forged_last = 0u32;
    let mut received_total = 0u64;
    let mut lost_total = 0u64;
    for ms in 0..2_000u32 {
        let genuine_at = Instant::ZERO + Duration::from_millis(u64::from(ms));
        account(&mut meter, &mut nak, ms, true, genuine_at);
        // Half a millisecond later, one forged datagram: as far ahead as one step may go
        // (twice the loop's rate since the last move, and the 16 of slack): 17 past the first
        // genuine one, then 18 on from the one it sent before.
        let forged_at = genuine_at + Duration::from_micros(500);
        let serial = if ms == 0 { 17 } else { forged_last + 18 };
        account(&mut meter, &mut nak, serial, false, forged_at);
        forged_last = serial;
        if ms % 50 == 49 {
            let (received, lost) = meter.take();
            received_total += u64::from(received);
            lost_total += u64::from(lost);
        }
    }
    let loss = lost_total as f64 / (received_total + lost_total) as f64;
    eprintln!(
        "forged up to serial {forged_last} after 2,000 genuine serials; reported {received_total} received, {lost_total} lost ({:.0}% loss)",
        loss * 100.0
    );
    assert!(
        loss < 0.05,
        "a forger sending as many datagrams as the loop made a loss-free client report {:.0}% loss",
        loss * 100.0
    );
}
