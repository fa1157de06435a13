//! Attack review of 2d312cd (a client asks at once for the hash blocks that pending datagrams
//! wait for: `Receiver::take_wanted_blocks`, `NakPlanner::want_block`). `finding_*` tests
//! assert what SHOULD hold and fail while the attack works; `held_*` tests show defences that
//! held. Sans-IO: a real file's loop (`assemble_in_memory`) reaches real `Receiver`s and
//! `NakPlanner`s wired as the client driver wires them (as in `verified_as_it_arrives.rs`); a
//! small server sends asked serials ahead of the loop in up to half of its slots (merging a
//! range into one already queued, as `Carousel::queue_repair` does), and on multicast relays
//! every NAK to the group as NakHeard. A host on the group injects forged datagrams (sound
//! header, wrong bytes: pending while the parent is missing) and replays genuine ones.
//!
//! Findings: F1 block asks skipped R10 suppression (no delay, a heard NakHeard did not stop
//! them), and forged datagrams under blocks ahead of the loop made every receiver ask for
//! them: new with 2d312cd, fixed in the same session (suppression delay and heard check for
//! block asks; no block asks ahead of the frontier without a backlog). F2 a forged pending
//! block, once rejected, stayed "seen" in the planner and was never asked again (block asks,
//! backlog and scan all skipped it): the root cause predates 2d312cd (550aebf: 0 of 783
//! verified a quarter loop in, complete after 3,808 ticks), it then defeated the change's
//! fix; fixed (`Receiver::take_rejected`, `NakPlanner::forget`). F3 a burst of forged
//! datagrams just before a join filled `BLOCK_ASKS_MAX` and crowded out the join point's own
//! blocks: fixed (answered asks free their place, wants wait instead of being dropped, those
//! ahead of the frontier are dropped once it is set, and a waiting block named again, as the
//! loop's own pending datagrams name theirs with every arrival, goes before the others).
mod replay_sim;
use replay_sim::random_file;

use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;

use loopcast_proto::bitmap::Bitmap;
use loopcast_proto::client::{account_datagram, metered, want_what_verification_needs};
use loopcast_proto::info::FileInfo;
use loopcast_proto::layout::{Parent, TreeShape};
use loopcast_proto::nak::{NakConfig, NakPlanner};
use loopcast_proto::rate::LossMeter;
use loopcast_proto::receiver::{Outcome, Receiver, WANTED_BLOCKS_MAX};
use loopcast_proto::rng::SeededRng;
use loopcast_proto::wire::control::NAK_RANGES_MAX;
use loopcast_proto::wire::datagram::{DatagramHeader, FileId, DATAGRAM_HEADER_LEN};
use loopcast_proto::Instant;

/// One datagram every 100 us (about 115 Mbit/s).
const TICK: Duration = Duration::from_micros(100);

struct File {
    info: FileInfo,
    datagrams: Vec<Vec<u8>>,
    shape: TreeShape,
}

fn make_file(data: usize, seed: u64) -> File {
    let (info, datagrams) = random_file(data, seed, FileId(0x16));
    let shape = info.shape().unwrap();
    File {
        info,
        datagrams,
        shape,
    }
}

/// 3,000 data datagrams: 69 level-1 blocks under two top-level blocks (the commit's case).
fn small() -> &'static File {
    static FILE: OnceLock<File> = OnceLock::new();
    FILE.get_or_init(|| make_file(3_000, 7))
}

/// A forged copy: the header is sound, the bytes are not the file's.
fn forged(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[DATAGRAM_HEADER_LEN] ^= 0x5a;
    out
}

/// (level, index) of the node at `serial`.
fn node_at(file: &File, serial: u32) -> (u8, u32) {
    for level in 0..=file.shape.depth() {
        for index in 0..file.shape.node_count(level) {
            if file.shape.serial_of(level, index) == serial {
                return (level, index);
            }
        }
    }
    panic!("no node at {serial}")
}

/// The serials of the ancestors of (level, index), nearest first.
fn ancestors(file: &File, level: u8, index: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let (mut level, mut index) = (level, index);
    while let Parent::Block {
        level: l, index: i, ..
    } = file.shape.parent(level, index)
    {
        (level, index) = (l, i);
        out.push(file.shape.serial_of(level, index));
    }
    out
}

fn frontier_is_set(nak: &NakPlanner, loop_len: u32) -> bool {
    // With no frontier every serial is progress; with one, of two serials half a loop apart
    // at least one is not.
    !(nak.is_progress(0, Instant::ZERO) && nak.is_progress(loop_len / 2, Instant::ZERO))
}

struct Victim {
    receiver: Receiver,
    nak: NakPlanner,
    meter: LossMeter,
    /// The change's wiring (`want_blocks(take_wanted_blocks())`); false: as before it.
    ask_blocks: bool,
    at_quarter: (u64, u32),
    complete_at: Option<u64>,
    /// The serial whose arrival first set the frontier (the join point), and when.
    joined: Option<(u32, u64)>,
    asked: HashMap<u32, u32>,
    asked_total: u64,
    first_asked: HashMap<u32, u64>,
}

impl Victim {
    fn new(file: &File, unicast: bool, ask_blocks: bool, seed: u64) -> Victim {
        let loop_len = file.info.loop_len;
        let config = NakConfig {
            suppression_delay: (!unicast).then_some(Duration::from_millis(20)),
            backlog_window: if unicast { 256 } else { 0 },
            random_seed: seed,
            ..NakConfig::default()
        };
        let mut nak = NakPlanner::new(config, &Bitmap::new(loop_len));
        nak.set_loop_rate(Some(1.0 / TICK.as_secs_f64()));
        Victim {
            receiver: Receiver::new(file.info.clone()),
            nak,
            meter: LossMeter::new(loop_len),
            ask_blocks,
            at_quarter: (0, 0),
            complete_at: None,
            joined: None,
            asked: HashMap::new(),
            asked_total: 0,
            first_asked: HashMap::new(),
        }
    }

    fn deliver(&mut self, file: &File, bytes: &[u8], tick: u64) -> Outcome {
        let now = Instant::ZERO + TICK * tick as u32;
        let was_set = frontier_is_set(&self.nak, file.info.loop_len);
        let outcome = self.receiver.handle_datagram(bytes);
        account_datagram(
            &mut self.meter,
            &mut self.nak,
            metered(bytes, file.info.file_id),
            &outcome,
            now,
        );
        if self.ask_blocks {
            want_what_verification_needs(&mut self.receiver, &mut self.nak);
        } else {
            self.receiver.take_wanted_blocks().for_each(drop);
            self.receiver.take_rejected().for_each(drop);
        }
        if !was_set && self.joined.is_none() && frontier_is_set(&self.nak, file.info.loop_len) {
            let serial = DatagramHeader::parse(bytes).expect("sound header").serial.0;
            self.joined = Some((serial, tick));
        }
        outcome
    }

    fn poll(&mut self, tick: u64) -> Option<Vec<(u32, u32)>> {
        let now = Instant::ZERO + TICK * tick as u32;
        let ranges = self.nak.poll_nak(now)?;
        assert!(ranges.len() <= NAK_RANGES_MAX, "{} ranges", ranges.len());
        for &(first, count) in &ranges {
            for serial in first..first + count {
                *self.asked.entry(serial).or_default() += 1;
                self.first_asked.entry(serial).or_insert(tick);
            }
            self.asked_total += u64::from(count);
        }
        Some(ranges)
    }
}

struct Setup<'a> {
    file: &'a File,
    join_share: f64,
    unicast: bool,
    victims: usize,
    ask_blocks: bool,
    loss_per_mille: u64,
    /// Ticks a NAK takes to the server (victim i's: this + i), and NakHeard back.
    latency: u64,
    /// Datagrams a host on the group sends, by tick (delivered to every victim before the
    /// loop's datagram of that tick).
    attack: Vec<(u64, Vec<u8>)>,
    max_loops: f64,
}

struct Run {
    victims: Vec<Victim>,
    /// Repairs the server sent, by serial.
    repairs: HashMap<u32, u32>,
    repairs_total: u64,
    loop_len: u32,
}

fn queue_repair(queue: &mut VecDeque<(u32, u32)>, first: u32, count: u32) {
    let end = first + count;
    for queued in queue.iter_mut() {
        let queued_end = queued.0 + queued.1;
        if first <= queued_end && queued.0 <= end {
            let merged = queued.0.min(first);
            queued.1 = queued_end.max(end) - merged;
            queued.0 = merged;
            return;
        }
    }
    if queue.len() < 8_192 {
        queue.push_back((first, count));
    }
}

fn run(setup: Setup<'_>) -> Run {
    let file = setup.file;
    let loop_len = file.info.loop_len;
    let mut victims: Vec<Victim> = (0..setup.victims)
        .map(|i| Victim::new(file, setup.unicast, setup.ask_blocks, 0x5eed + i as u64))
        .collect();
    let mut rng = SeededRng::from_u64(11);
    let mut next = (f64::from(loop_len) * setup.join_share) as u32;
    let mut queue: VecDeque<(u32, u32)> = VecDeque::new();
    // (arrives at, ranges) for NAKs at the server, and NakHeard at the victims.
    let mut naks: VecDeque<(u64, Vec<(u32, u32)>)> = VecDeque::new();
    let mut heard: VecDeque<(u64, Vec<(u32, u32)>)> = VecDeque::new();
    let mut attack: VecDeque<(u64, Vec<u8>)> = setup.attack.into();
    let mut repairs: HashMap<u32, u32> = HashMap::new();
    let mut repairs_total = 0u64;
    let end = (f64::from(loop_len) * setup.max_loops) as u64;
    for tick in 0..end {
        let now = Instant::ZERO + TICK * tick as u32;
        // NAKs reach the server (not necessarily in order of sending).
        let mut arrived: Vec<(u64, Vec<(u32, u32)>)> = Vec::new();
        naks.retain(|(at, ranges)| {
            if *at <= tick {
                arrived.push((*at, ranges.clone()));
                false
            } else {
                true
            }
        });
        arrived.sort_by_key(|(at, _)| *at);
        for (_, ranges) in arrived {
            for &(first, count) in &ranges {
                queue_repair(&mut queue, first, count);
            }
            if !setup.unicast {
                heard.push_back((tick + setup.latency, ranges));
            }
        }
        while heard.front().is_some_and(|(at, _)| *at <= tick) {
            let (_, ranges) = heard.pop_front().unwrap();
            for victim in &mut victims {
                victim.nak.heard(now, &ranges);
            }
        }
        while attack.front().is_some_and(|(at, _)| *at <= tick) {
            let (_, bytes) = attack.pop_front().unwrap();
            for victim in &mut victims {
                victim.deliver(file, &bytes, tick);
            }
        }
        let repair = if tick % 2 == 0 {
            queue.front_mut().map(|(first, count)| {
                let serial = *first;
                *first += 1;
                *count -= 1;
                serial
            })
        } else {
            None
        };
        if queue.front().is_some_and(|&(_, count)| count == 0) {
            queue.pop_front();
        }
        let serial = match repair {
            Some(serial) => {
                *repairs.entry(serial).or_default() += 1;
                repairs_total += 1;
                serial
            }
            None => {
                let serial = next;
                next = (next + 1) % loop_len;
                serial
            }
        };
        for (i, victim) in victims.iter_mut().enumerate() {
            if rng.below(1000) >= setup.loss_per_mille && victim.complete_at.is_none() {
                victim.deliver(file, &file.datagrams[serial as usize], tick);
            }
            if let Some(ranges) = victim.poll(tick) {
                naks.push_back((tick + setup.latency + i as u64, ranges));
            }
            if tick == u64::from(loop_len / 4) {
                victim.at_quarter = (
                    victim.receiver.counters().stored,
                    victim.receiver.have().count_ones(),
                );
            }
            if victim.complete_at.is_none() && victim.receiver.is_complete() {
                victim.complete_at = Some(tick);
            }
        }
        if victims.iter().all(|v| v.complete_at.is_some()) {
            break;
        }
    }
    Run {
        victims,
        repairs,
        repairs_total,
        loop_len,
    }
}

fn setup(file: &File) -> Setup<'_> {
    Setup {
        file,
        join_share: 0.27,
        unicast: true,
        victims: 1,
        ask_blocks: true,
        loss_per_mille: 0,
        latency: 10,
        attack: Vec::new(),
        max_loops: 2.5,
    }
}

// ---------------------------------------------------------------------------------------------
// F1: block asks bypass multicast NAK suppression (R10).
// ---------------------------------------------------------------------------------------------

/// `victims` multicast receivers join mid-file together; from tick 200 a host on the group
/// sends, every 5 ms, one forged data datagram under each of `k` level-1 blocks ahead of the
/// loop (in the second top-level block's half, which nobody holds yet). Every victim asks for
/// each block (and the top-level block above) at once: no suppression delay, and a NakHeard
/// of the same block from another receiver does not stop it. Returns (repairs of the
/// attacked blocks the server sent, asks of them by all victims).
fn forged_far_ahead(victims: usize, k: u32) -> (u64, u64) {
    let file = small();
    let shape = &file.shape;
    let level1 = shape.node_count(1);
    // Level-1 blocks in the last third of the file (the loop, joined at 0.27, gets there
    // after about a third of a loop).
    let targets: Vec<u32> = (level1 - k..level1).collect();
    let mut attacked: Vec<u32> = Vec::new();
    let mut attack = Vec::new();
    for (n, &x) in targets.iter().enumerate() {
        let child = x * shape.fanout();
        let serial = shape.serial_of(0, child);
        attack.push((
            200 + 50 * n as u64,
            forged(&file.datagrams[serial as usize]),
        ));
        attacked.extend(ancestors(file, 0, child));
    }
    attacked.sort_unstable();
    attacked.dedup();
    let r = run(Setup {
        unicast: false,
        victims,
        attack,
        max_loops: 0.4,
        ..setup(file)
    });
    let repairs: u64 = attacked
        .iter()
        .map(|s| u64::from(r.repairs.get(s).copied().unwrap_or(0)))
        .sum();
    let asks: u64 = r
        .victims
        .iter()
        .map(|v| {
            attacked
                .iter()
                .map(|s| u64::from(v.asked.get(s).copied().unwrap_or(0)))
                .sum::<u64>()
        })
        .sum();
    println!(
        "F1 {victims} victims, {k} forged datagrams: {} blocks named, {asks} asks, {repairs} \
         repairs of them ({} repairs in all)",
        attacked.len(),
        r.repairs_total
    );
    (repairs, asks)
}

#[test]
fn finding_block_asks_ignore_multicast_suppression_and_heard_naks() {
    // The planner alone: another receiver's ask for block 300 was heard (NakHeard) a
    // millisecond ago; this one now wants it too. A gap the scan finds would wait for its
    // suppression delay and, heard, not be asked at all.
    let mut nak = NakPlanner::new(
        NakConfig {
            suppression_delay: Some(Duration::from_millis(20)),
            ..NakConfig::default()
        },
        &Bitmap::new(1_000),
    );
    let t0 = Instant::ZERO + Duration::from_millis(1);
    nak.heard(t0, &[(300, 1)]);
    nak.want_block(300);
    let asked = nak.poll_nak(t0 + Duration::from_millis(1));
    println!("F1 heard 300, then wanted it: NAK {asked:?}");

    // The group: one forged datagram per block, to 1 and to 16 receivers.
    let k = 20;
    let (one_repairs, one_asks) = forged_far_ahead(1, k);
    let (many_repairs, many_asks) = forged_far_ahead(16, k);
    assert!(
        asked.is_none() && many_repairs <= 2 * one_repairs.max(1),
        "a heard block is asked at once ({asked:?}); {k} forged datagrams on the group make \
         1 receiver ask {one_asks} times ({one_repairs} repairs), 16 receivers {many_asks} \
         times ({many_repairs} repairs of blocks the loop brings later in this pass anyway)"
    );
}

// ---------------------------------------------------------------------------------------------
// F2: a forged pending block, once rejected, is never asked for again (the planner counts it
// as seen): the join's ancestors and the backlog's repairs wait for the loop's next pass.
// ---------------------------------------------------------------------------------------------

/// Unicast (backlog on), joined at 0.27 of the file, inside the first top-level block's
/// subtree. With `attack`, a host on path sends, before the loop's first datagram, a forged
/// copy of every level-1 block from the start of the file to the join point (~19 datagrams):
/// each is pending (its top-level parent is missing), so `want_missing_ancestors` skips it
/// and the planner marks its serial seen; when the top-level block arrives (asked at once)
/// they are rejected, but the planner still counts them as held: neither the block asks, nor
/// the backlog, nor the scan ask for them again.
fn planted_level1(attack: bool, ask_blocks: bool, unicast: bool) -> Run {
    let file = small();
    let shape = &file.shape;
    let loop_len = file.info.loop_len;
    let join = (f64::from(loop_len) * 0.27) as u32;
    let mut planted = Vec::new();
    if attack {
        for x in 0..shape.node_count(1) {
            let serial = shape.serial_of(1, x);
            // Level-1 blocks behind the join point, and the join point's own.
            if serial <= join + 1 {
                planted.push((0u64, forged(&file.datagrams[serial as usize])));
            }
        }
    }
    let r = run(Setup {
        unicast,
        ask_blocks,
        attack: planted,
        ..setup(file)
    });
    let v = &r.victims[0];
    println!(
        "F2 attack {attack} asks {ask_blocks} unicast {unicast}: at a quarter loop {} of {} \
         stored verified; complete after {:?} ticks (loop {loop_len}); rejected pending {}",
        v.at_quarter.1,
        v.at_quarter.0,
        v.complete_at,
        v.receiver.counters().pending_rejected
    );
    r
}

#[test]
fn finding_a_rejected_forged_block_is_never_asked_again() {
    let clean = planted_level1(false, true, true);
    let attacked = planted_level1(true, true, true);
    // As before the change, for the record.
    let before_clean = planted_level1(false, false, true);
    let before_attacked = planted_level1(true, false, true);
    let _ = (before_clean, before_attacked);
    let loop_len = attacked.loop_len;
    let v = &attacked.victims[0];
    let (stored, verified) = v.at_quarter;
    let clean_ticks = clean.victims[0].complete_at.expect("completes");
    assert!(
        f64::from(verified) >= 0.9 * stored as f64
            && v.complete_at
                .is_some_and(|t| t <= clean_ticks + u64::from(loop_len) / 10),
        "{} forged datagrams: a quarter loop in, {verified} of {stored} datagrams received are \
         verified; complete after {:?} ticks (without them: {clean_ticks}; loop {loop_len})",
        attacked.victims[0].receiver.counters().pending_rejected,
        v.complete_at
    );
}

// ---------------------------------------------------------------------------------------------
// F3: a burst of forged datagrams fills the block asks (BLOCK_ASKS_MAX) with blocks the loop
// brings anyway; answered asks keep their place for BLOCK_ASK_EXPIRY, and wants past the
// bound are dropped: the join point's own ancestors are not asked for half a second.
// ---------------------------------------------------------------------------------------------

/// 30,000 data datagrams: 667 level-1 blocks.
fn large() -> &'static File {
    static FILE: OnceLock<File> = OnceLock::new();
    FILE.get_or_init(|| make_file(30_000, 9))
}

/// Multicast, joined at 0.27. With `burst`, a host on the group sends, just before the loop's
/// first datagram, one forged data datagram under each of `burst` level-1 blocks in the last
/// half of the file (ahead of the loop). Returns (ticks until the join point's ancestors are
/// all verified, ticks until the first of them is asked, verified share a quarter loop in).
fn crowded(burst: u32, unicast: bool, at: u64) -> (Option<u64>, Option<u64>, f64) {
    let file = large();
    let shape = &file.shape;
    let loop_len = file.info.loop_len;
    let join = (f64::from(loop_len) * 0.27) as u32;
    let (level, index) = node_at(file, join + 1);
    let join_ancestors = ancestors(file, level, index);
    let level1 = shape.node_count(1);
    let attack: Vec<(u64, Vec<u8>)> = (level1 - burst..level1)
        .map(|x| {
            let serial = shape.serial_of(0, x * shape.fanout());
            (at, forged(&file.datagrams[serial as usize]))
        })
        .collect();
    let mut s = Setup {
        unicast,
        attack,
        max_loops: 0.3,
        ..setup(file)
    };
    s.join_share = 0.27;
    let r = run(s);
    let v = &r.victims[0];
    let asked = join_ancestors
        .iter()
        .filter_map(|s| v.first_asked.get(s).copied())
        .min();
    let all_held = join_ancestors.iter().all(|&s| v.receiver.have().get(s));
    let (stored, verified) = v.at_quarter;
    let share = f64::from(verified) / stored.max(1) as f64;
    println!(
        "F3 burst {burst} at tick {at} unicast {unicast} (depth {}, {} level-1): join ancestors {join_ancestors:?} first asked \
         at tick {asked:?}, all held by the end {all_held}; a quarter loop in {verified} of \
         {stored} verified; {} block serials asked",
        shape.depth(),
        level1,
        v.nak.block_serials()
    );
    (all_held.then_some(0), asked, share)
}

#[test]
fn finding_a_burst_of_forged_datagrams_crowds_out_the_joins_ancestors() {
    let (_, clean_asked, clean_share) = crowded(0, false, 0);
    // For the record: on unicast the backlog's pending repairs name the blocks again once
    // the burst's asks expire; a burst after the join point's first datagram is too late.
    crowded(300, true, 0);
    crowded(300, false, 5);
    let (_, attacked_asked, attacked_share) = crowded(300, false, 0);
    let clean_asked = clean_asked.expect("asked");
    assert!(
        attacked_asked.is_some_and(|t| t <= clean_asked + 200)
            && attacked_share >= 0.9 * clean_share,
        "300 forged datagrams: the join point's ancestors first asked at tick {attacked_asked:?} \
         (without them: {clean_asked}); a quarter loop in {:.0} % verified (without: {:.0} %)",
        attacked_share * 100.0,
        clean_share * 100.0
    );
}

// ---------------------------------------------------------------------------------------------
// Defences that held.
// ---------------------------------------------------------------------------------------------

/// A forged datagram makes a victim ask at most for the blocks above it that it lacks: per
/// victim, about one repair per forged datagram (no amplification beyond the group's size).
#[test]
fn held_one_victim_asks_about_one_block_per_forged_datagram() {
    let (repairs, asks) = forged_far_ahead(1, 20);
    assert!(
        asks <= 21 && repairs <= 21,
        "{asks} asks, {repairs} repairs"
    );
}

/// A host on the group plants forged datagrams far ahead (the victim wants their top-level
/// and level-1 blocks), then replays those genuine blocks, once each, before the loop's first
/// datagram: they verify, but as asked-for repairs they never set the join point; the loop
/// does. (A second copy of one, a duplicate, is no longer asked for and does set it, as any
/// replayed datagram did before the change: the park at the join of hx_attack14.)
#[test]
fn held_replayed_wanted_blocks_do_not_set_the_join_point() {
    let file = small();
    let shape = &file.shape;
    let loop_len = file.info.loop_len;
    let level1 = shape.node_count(1);
    let mut attack = Vec::new();
    let mut replays = Vec::new();
    for x in level1 - 5..level1 {
        let child = x * shape.fanout();
        attack.push((
            0,
            forged(&file.datagrams[shape.serial_of(0, child) as usize]),
        ));
        for serial in ancestors(file, 0, child).into_iter().rev() {
            if !replays.contains(&serial) {
                replays.push(serial);
            }
        }
    }
    attack.extend(
        replays
            .iter()
            .map(|&serial| (1, file.datagrams[serial as usize].clone())),
    );
    let r = run(Setup {
        unicast: false,
        attack,
        max_loops: 0.3,
        ..setup(file)
    });
    let v = &r.victims[0];
    let join = (f64::from(loop_len) * 0.27) as u32;
    let (serial, tick) = v.joined.expect("joined");
    println!("H joined at serial {serial} (tick {tick}); the loop started at {join}");
    assert!(
        (join..join + 200).contains(&serial),
        "the join point was set at {serial}, not by the loop (from {join})"
    );
}

/// Forged pending datagrams every tick from before the join (a distinct data serial each,
/// all over the file) cannot keep the frontier unset: the join point's ancestors are asked at
/// once and the loop's next datagrams verify.
#[test]
fn held_forged_pending_floods_cannot_keep_the_frontier_unset() {
    let file = small();
    let shape = &file.shape;
    let mut rng = SeededRng::from_u64(3);
    let attack: Vec<(u64, Vec<u8>)> = (0..2_000u64)
        .map(|tick| {
            let index = rng.below(u64::from(shape.data_count())) as u32;
            (
                tick,
                forged(&file.datagrams[shape.serial_of(0, index) as usize]),
            )
        })
        .collect();
    for attack in [Vec::new(), attack] {
        let forging = !attack.is_empty();
        let r = run(Setup {
            unicast: false,
            attack,
            max_loops: 1.0,
            ..setup(file)
        });
        let v = &r.victims[0];
        println!(
            "H flood {forging}: joined {:?}; a quarter loop in {} of {} verified",
            v.joined, v.at_quarter.1, v.at_quarter.0
        );
        let (_, tick) = v.joined.expect("joined");
        assert!(tick < 200, "frontier set only at tick {tick}");
    }
}

/// Hostile serials never panic; a million wanted blocks cost at most `BLOCK_ASKS_MAX` (256)
/// asks per expiry, at most a quarter of a NAK's ranges, and leave the scan its room; a
/// receiver names at most `WANTED_BLOCKS_MAX` blocks between takes, however many forged
/// datagrams arrive, at a few microseconds each.
#[test]
fn held_hostile_serials_and_floods_are_bounded() {
    let loop_len = 100_000;
    let mut nak = NakPlanner::new(NakConfig::default(), &Bitmap::new(loop_len));
    nak.want_blocks([u32::MAX, loop_len, loop_len + 1, loop_len - 1, 0]);
    let t0 = Instant::ZERO;
    // A frontier with a long gap behind it for the scan.
    for serial in (1_000..1_400).chain(3_000..3_400) {
        nak.saw(serial, t0);
    }
    let start = std::time::Instant::now();
    nak.want_blocks((0..1_000_000u32).map(|s| s.wrapping_mul(2_654_435_761) % loop_len));
    let mut now = t0 + Duration::from_millis(5);
    let mut blocks_before = nak.block_serials();
    let mut block_ranges_max = 0;
    let mut gap_asked = false;
    for _ in 0..200 {
        if let Some(ranges) = nak.poll_nak(now) {
            assert!(ranges.len() <= NAK_RANGES_MAX);
            gap_asked |= ranges.iter().any(|&(f, n)| (f..f + n).contains(&1_500));
            let blocks = (nak.block_serials() - blocks_before) as usize;
            blocks_before = nak.block_serials();
            block_ranges_max = block_ranges_max.max(blocks.min(ranges.len()));
        }
        now = now + Duration::from_millis(10);
    }
    let elapsed = start.elapsed();
    println!(
        "H 1e6 wants: {} block serials asked over 2 s, at most {block_ranges_max} a NAK; \
         {elapsed:?}",
        nak.block_serials()
    );
    // 2 s of expiries: the first 256 asked, then again every 500 ms while unanswered.
    assert!(nak.block_serials() <= 256 * 5);
    assert!(block_ranges_max <= NAK_RANGES_MAX / 4);
    assert!(gap_asked, "the scan's gap was asked alongside the blocks");
    assert!(elapsed < Duration::from_secs(2));

    // The receiver: every serial of the file forged, twice over.
    let file = small();
    let mut receiver = Receiver::new(file.info.clone());
    let start = std::time::Instant::now();
    let mut named = 0usize;
    let mut most = 0usize;
    for round in 0..2 {
        for (serial, bytes) in file.datagrams.iter().enumerate() {
            let mut bytes = forged(bytes);
            bytes[DATAGRAM_HEADER_LEN + 1] ^= round;
            receiver.handle_datagram(&bytes);
            if serial % 500 == 0 {
                let n = receiver.take_wanted_blocks().count();
                most = most.max(n);
                named += n;
            }
        }
    }
    let per = start.elapsed() / (2 * file.datagrams.len() as u32);
    println!("H receiver: {named} blocks named, at most {most} per take; {per:?} a datagram");
    assert!(most <= WANTED_BLOCKS_MAX);
    assert!(per < Duration::from_micros(50));
}
