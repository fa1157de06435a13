//! Issue 10, session 9: hostile inputs to the NAK planner's overload verdict
//! (`NakPlanner::is_overloaded`: more than 25 % of the recent scan missing, the client asks for
//! nothing the scan finds). A host on the multicast group holds genuine datagrams of the file
//! (the loop sends every one of them every pass); replayed, each verifies.

use core::time::Duration;

use loopcast_proto::bitmap::Bitmap;
use loopcast_proto::client::{account_datagram, Metered};
use loopcast_proto::nak::{NakConfig, NakPlanner};
use loopcast_proto::rate::LossMeter;
use loopcast_proto::receiver::Outcome;
use loopcast_proto::Instant;

const LOOP_LEN: u32 = 200_000;
/// The tier's rate, datagrams a second (about 115 Mbit/s at 1,440 bytes).
const RATE: u32 = 10_000;

/// One received datagram through the client's own accounting, verified (genuine or replayed).
fn account(meter: &mut LossMeter, nak: &mut NakPlanner, serial: u32, now: Instant) {
    let metered = Metered {
        serial,
        progress: nak.is_progress(serial, now),
    };
    let outcome = Outcome::Store {
        serial,
        verified: true,
    };
    account_datagram(meter, nak, Some(metered), &outcome, now);
}

struct Run {
    /// When the one serial the path lost was first asked for, ms after it went by.
    asked_after_ms: Option<u64>,
    overloaded_ms: u64,
    serials_asked: u64,
    left_to_loop: u64,
}

/// The loop sends `RATE` datagrams a second, ten a millisecond, and all but serial 5,000 reach
/// the victim (its path loses nothing else). Every `replay_every_ms` (0: never) the attacker
/// replays `burst` genuine datagrams, each `jump` serials past the victim's frontier (as far as
/// it can tell: the loop's position, which it sees on the group, plus what it jumped before).
fn run(replay_every_ms: u64, burst: u32, jump: u32) -> Run {
    let mut nak = NakPlanner::new(NakConfig::default(), &Bitmap::new(LOOP_LEN));
    nak.set_loop_rate(Some(f64::from(RATE)));
    let mut meter = LossMeter::new(LOOP_LEN);
    let lost = 5_000u32;
    let mut attacker_frontier = 0u32;
    let mut run = Run {
        asked_after_ms: None,
        overloaded_ms: 0,
        serials_asked: 0,
        left_to_loop: 0,
    };
    for ms in 0..3_000u64 {
        let now = Instant::ZERO + Duration::from_millis(ms);
        for i in 0..10 {
            let serial = (ms as u32 * 10 + i) % LOOP_LEN;
            if serial != lost {
                account(&mut meter, &mut nak, serial, now);
            }
        }
        attacker_frontier = attacker_frontier.max(ms as u32 * 10 + 9);
        if replay_every_ms > 0 && ms % replay_every_ms == 0 && ms >= 100 {
            let at = now + Duration::from_micros(500);
            for _ in 0..burst {
                attacker_frontier += jump;
                account(&mut meter, &mut nak, attacker_frontier % LOOP_LEN, at);
            }
        }
        let poll_at = now + Duration::from_micros(900);
        if let Some(ranges) = nak.poll_nak(poll_at) {
            for (first, count) in ranges {
                run.serials_asked += u64::from(count);
                if (first..first + count).contains(&lost) && run.asked_after_ms.is_none() {
                    run.asked_after_ms = Some(ms - u64::from(lost / 10));
                }
            }
        }
        if nak.is_overloaded() {
            run.overloaded_ms += 1;
        }
    }
    run.left_to_loop = nak.serials_left_to_loop();
    eprintln!(
        "replay every {replay_every_ms} ms, {burst} x {jump}: lost serial asked after {:?} ms, overloaded {} ms of 3,000, {} serials asked, {} left to the loop",
        run.asked_after_ms, run.overloaded_ms, run.serials_asked, run.left_to_loop
    );
    run
}

/// Without an attacker the one loss is asked for within a few tens of milliseconds (the
/// reordering margin is 256 serials, 26 ms at this rate), and the victim is never overloaded.
#[test]
fn a_loss_free_path_asks_for_its_one_loss_at_once() {
    let run = run(0, 0, 0);
    assert!(run.asked_after_ms.is_some_and(|ms| ms < 100));
    assert_eq!(run.overloaded_ms, 0);
}

/// A host on the group replays one genuine datagram a few hundred serials past the victim's
/// frontier every 50 ms (20 datagrams a second against the loop's 10,000). Verified, each is
/// the loop's progress (within the planner's progress window), so everything it jumps over
/// reads as gone by and missing: the victim must not be held "overloaded" by it and stop
/// asking for what its path really lost (left to the loop: 20 s here).
#[test]
fn replayed_genuine_datagrams_do_not_make_a_loss_free_client_overloaded() {
    let run = run(50, 1, 500);
    assert!(
        run.overloaded_ms < 300,
        "overloaded {} ms of 3,000 by 20 replays a second",
        run.overloaded_ms
    );
    assert!(
        run.asked_after_ms.is_some_and(|ms| ms < 200),
        "the one real loss was asked for after {:?} ms",
        run.asked_after_ms
    );
}

/// The same with a burst of replays in one instant: each within the progress window of the
/// last.
#[test]
fn a_burst_of_replays_in_one_instant_does_not_make_a_loss_free_client_overloaded() {
    let run = run(500, 20, 500);
    assert!(
        run.overloaded_ms < 300,
        "overloaded {} ms of 3,000 by a burst of 20 replays every 500 ms",
        run.overloaded_ms
    );
    assert!(
        run.asked_after_ms.is_some_and(|ms| ms < 200),
        "the one real loss was asked for after {:?} ms",
        run.asked_after_ms
    );
}
