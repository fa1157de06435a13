//! A client verifies what it receives as it arrives, wherever in the loop it joined (issue 10,
//! new-user finding of session 14).
//!
//! The loop sends the hash tree in pre-order: every block before what it covers. What arrives
//! without its ancestors waits, unverified, until they come. Two ways that happened for most
//! of a file: a client joining in the middle of a top-level block's subtree (the block lies
//! behind it), and a unicast client's backlog, which walks backwards from the join point and
//! so asks for a subtree's data long before the top-level block at its start. A 209 MiB file
//! has two top-level blocks, each over half of it: a unicast `get` at 100 Mbit/s showed 27 %
//! at 10 s of an 18 s download (the backlog's half waited for the middle of the file), and an
//! interrupt at 6 s kept 26,002 of the 51,800 datagrams received.
//!
//! Here a real file's loop (`assemble_in_memory`, two top-level blocks) reaches a real
//! `Receiver` and `NakPlanner` wired as the client driver wires them; a small server sends the
//! asked serials ahead of the loop, in order, in up to half of its slots.

mod replay_sim;
use replay_sim::random_file;

use core::time::Duration;
use std::collections::VecDeque;

use loopcast_proto::bitmap::Bitmap;
use loopcast_proto::client::{account_datagram, metered, want_what_verification_needs};
use loopcast_proto::nak::{NakConfig, NakPlanner};
use loopcast_proto::rate::LossMeter;
use loopcast_proto::receiver::Receiver;
use loopcast_proto::rng::SeededRng;
use loopcast_proto::wire::datagram::FileId;
use loopcast_proto::Instant;

/// Data datagrams: 69 level-1 blocks under two top-level (level-2) blocks at MTU 1500.
const DATA: usize = 3_000;
/// One datagram every 100 us (about 115 Mbit/s).
const TICK: Duration = Duration::from_micros(100);
/// Repairs queued at the server at most (its repair queue is bounded too).
const REPAIR_QUEUE_MAX: usize = 8_192;

struct Run {
    /// (stored, verified) after the loop has sent a quarter of itself since the join.
    at_quarter: (u64, u32),
    /// Ticks until the whole file was held and verified.
    ticks_to_complete: Option<u64>,
    loop_len: u32,
    block_serials: u64,
}

/// The loop starts at `join` and runs until the client holds the file (or two loops pass);
/// `unicast`: NAKs at once and the backlog on, else multicast's suppression and no backlog.
fn run(join_share: f64, unicast: bool, loss_per_mille: u64) -> Run {
    let (info, datagrams) = random_file(DATA, 7, FileId(0x10));
    let shape = info.shape().unwrap();
    assert_eq!(
        shape.depth(),
        2,
        "the case of the finding: a two-level tree"
    );
    assert_eq!(
        shape.top_count(),
        2,
        "two top-level blocks, each over half the file"
    );
    let loop_len = info.loop_len;
    let mut receiver = Receiver::new(info.clone());
    let config = NakConfig {
        suppression_delay: (!unicast).then_some(Duration::from_millis(20)),
        // The client's window (2,048) is 1.3 % of the 209 MiB file's loop; the first window
        // of backlog asks is queued at the server before the blocks its repairs turn out to
        // need. Here the same number would be two thirds of the loop: a smaller one keeps the
        // proportion closer.
        backlog_window: if unicast { 256 } else { 0 },
        ..NakConfig::default()
    };
    let mut nak = NakPlanner::new(config, &Bitmap::new(loop_len));
    nak.set_loop_rate(Some(1.0 / TICK.as_secs_f64()));
    let mut meter = LossMeter::new(loop_len);
    let mut rng = SeededRng::from_u64(11);
    let join = (f64::from(loop_len) * join_share) as u32;
    let mut next = join;
    let mut repairs: VecDeque<u32> = VecDeque::new();
    let mut run = Run {
        at_quarter: (0, 0),
        ticks_to_complete: None,
        loop_len,
        block_serials: 0,
    };
    for tick in 0..2 * u64::from(loop_len) {
        let now = Instant::ZERO + TICK * tick as u32;
        // Repairs in up to half of the slots, the loop in the rest.
        let repair = if tick % 2 == 0 {
            repairs.pop_front()
        } else {
            None
        };
        let serial = match repair {
            Some(serial) => serial,
            None => {
                let serial = next;
                next = (next + 1) % loop_len;
                serial
            }
        };
        if rng.below(1000) >= loss_per_mille {
            let bytes = &datagrams[serial as usize];
            let outcome = receiver.handle_datagram(bytes);
            account_datagram(
                &mut meter,
                &mut nak,
                metered(bytes, info.file_id),
                &outcome,
                now,
            );
            want_what_verification_needs(&mut receiver, &mut nak);
        }
        if let Some(ranges) = nak.poll_nak(now) {
            for (first, count) in ranges {
                for serial in first..first + count {
                    assert!(serial < loop_len, "asked for a serial outside the loop");
                    if repairs.len() < REPAIR_QUEUE_MAX {
                        repairs.push_back(serial);
                    }
                }
            }
        }
        if tick == u64::from(loop_len / 4) {
            run.at_quarter = (receiver.counters().stored, receiver.have().count_ones());
        }
        if receiver.is_complete() {
            run.ticks_to_complete = Some(tick);
            break;
        }
    }
    run.block_serials = nak.block_serials();
    run
}

/// `blocks_min`: the fewest hash blocks asked (none for a client that joined at the file's
/// start with nothing held: nothing lies behind its join point, and the loop brings the
/// blocks in order).
#[track_caller]
fn assert_verifies_as_it_arrives(run: &Run, what: &str, blocks_min: u64) {
    let (stored, verified) = run.at_quarter;
    assert!(stored > 0, "{what}: nothing arrived");
    assert!(
        f64::from(verified) >= 0.95 * stored as f64,
        "{what}: a quarter of the loop after joining, {verified} of {stored} datagrams \
         received are verified (the rest wait, unverified, for blocks behind the join point)"
    );
    let ticks = run.ticks_to_complete.expect("the file completes");
    assert!(
        ticks < u64::from(run.loop_len) * 3 / 2,
        "{what}: took {ticks} datagram times for a loop of {}",
        run.loop_len
    );
    // The join point's missing ancestors, and on unicast those of each stretch the backlog
    // asks for: never more than the file's hash blocks (71), each asked about once.
    assert!(
        (blocks_min..=71).contains(&run.block_serials),
        "{what}: asked {} hash blocks",
        run.block_serials
    );
}

#[test]
fn a_unicast_client_verifies_what_arrives_at_once_from_the_start_or_mid_file() {
    // From the start nothing is behind the join point: no backlog, and no block to ask (s25;
    // the backlog walked back from the end of the file, which the loop brings next).
    for join_share in [0.0, 0.13, 0.27, 0.41, 0.77] {
        let run = run(join_share, true, 0);
        let blocks_min = if join_share == 0.0 { 0 } else { 1 };
        assert_verifies_as_it_arrives(
            &run,
            &format!("unicast, joined at {join_share}"),
            blocks_min,
        );
    }
}

#[test]
fn a_multicast_client_joining_mid_file_verifies_what_arrives_at_once() {
    for join_share in [0.13, 0.27, 0.41, 0.77] {
        let run = run(join_share, false, 0);
        assert_verifies_as_it_arrives(&run, &format!("multicast, joined at {join_share}"), 1);
    }
}

#[test]
fn a_lossy_join_still_verifies_what_arrives_at_once() {
    // 5 % loss: the blocks asked for can be lost too, and are asked again.
    for seed_share in [0.2, 0.3, 0.6] {
        for unicast in [true, false] {
            let run = run(seed_share, unicast, 50);
            let (stored, verified) = run.at_quarter;
            assert!(
                f64::from(verified) >= 0.9 * stored as f64,
                "joined at {seed_share} (unicast {unicast}) with 5 % loss: {verified} of \
                 {stored} verified a quarter loop in"
            );
            assert!(run.ticks_to_complete.is_some(), "completes");
        }
    }
}
