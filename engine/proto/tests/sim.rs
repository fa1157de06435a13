//! Deterministic simulation: one carousel, several receivers joining at different times, a
//! seeded lossy network and a virtual clock. Any failure replays from its seed.
//!
//! Checks R9 end to end in the core: every receiver completes (verified), a receiver that loses
//! nothing completes within one loop of joining, and the channel goes idle once every receiver
//! has said it is done. `simulate_with_naks` adds R10: NAKs, repairs ahead of the loop, and
//! lossy receivers that finish in about one loop.

use core::time::Duration;

use loopcast_proto::assemble::{assemble_in_memory, InMemoryFile};
use loopcast_proto::carousel::{Carousel, CarouselConfig, SessionId};
use loopcast_proto::info::{FileInfo, DATAGRAM_SIZE_MTU_1500};
use loopcast_proto::receiver::{Outcome, Receiver};
use loopcast_proto::wire::datagram::FileId;
use loopcast_proto::Instant;
use proptest::prelude::*;

/// xorshift64*: the simulation's only randomness, from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance_per_mille(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

struct SimClient {
    session: SessionId,
    join_at: Instant,
    loss_per_mille: u64,
    receiver: Receiver,
    joined: bool,
    done: bool,
    sent_at_join: u64,
    sent_at_done: Option<u64>,
}

/// The channel every simulation runs: 100 Mbit/s, batches of 64, a 5 s member timeout.
const SIM_RATE_BITS_PER_S: u64 = 100_000_000;

/// A random file of `stream_len` bytes from `rng`, assembled into datagrams, and a carousel
/// for it at `SIM_RATE_BITS_PER_S`.
fn file_and_carousel(
    seed: u64,
    stream_len: usize,
    rng: &mut Rng,
) -> (FileInfo, Vec<Vec<u8>>, Carousel) {
    let stream: Vec<u8> = (0..stream_len).map(|_| rng.next() as u8).collect();
    let (info, datagrams) = assemble_in_memory(&InMemoryFile {
        file_id: FileId(seed),
        name: "sim.bin",
        datagram_size: DATAGRAM_SIZE_MTU_1500,
        frame_stream: &stream,
        watermark: None,
    });
    let carousel = Carousel::new(
        CarouselConfig {
            loop_len: info.loop_len,
            datagram_size: info.datagram_size,
            rate_bits_per_s: SIM_RATE_BITS_PER_S,
            batch_datagrams_max: 64,
            member_timeout: Duration::from_secs(5),
            members_max: 16,
        },
        Instant::ZERO,
    );
    (info, datagrams, carousel)
}

fn simulate(seed: u64, stream_len: usize, losses: &[u64]) {
    let mut rng = Rng(seed | 1);
    let (info, datagrams, mut carousel) = file_and_carousel(seed, stream_len, &mut rng);
    let loop_len = u64::from(info.loop_len);
    let loop_time_ns =
        loop_len * u64::from(info.datagram_size) * 8 * 1_000_000_000 / SIM_RATE_BITS_PER_S;
    let mut clients: Vec<SimClient> = losses
        .iter()
        .enumerate()
        .map(|(i, &loss)| SimClient {
            session: SessionId(i as u64 + 1),
            join_at: Instant::from_nanos(rng.next() % (loop_time_ns * 2)),
            loss_per_mille: loss,
            receiver: Receiver::new(info.clone()),
            joined: false,
            done: false,
            sent_at_join: 0,
            sent_at_done: None,
        })
        .collect();
    clients[0].join_at = Instant::ZERO;
    let mut now = Instant::ZERO;
    let deadline = Instant::from_nanos(loop_time_ns * 40);
    while now < deadline {
        for client in clients.iter_mut().filter(|c| !c.joined && c.join_at <= now) {
            carousel
                .join(now, client.session)
                .expect("room for every client");
            client.joined = true;
            client.sent_at_join = carousel.sent_total();
        }
        carousel.handle_timeout(now);
        assert_eq!(
            carousel.poll_expired(),
            None,
            "seed {seed}: a live client expired"
        );
        while let Some(transmit) = carousel.poll_transmit(now) {
            for serial in transmit.first..transmit.first + transmit.count {
                for client in clients.iter_mut().filter(|c| c.joined && !c.done) {
                    if rng.chance_per_mille(client.loss_per_mille) {
                        continue;
                    }
                    let outcome = client.receiver.handle_datagram(&datagrams[serial as usize]);
                    assert!(
                        !matches!(outcome, Outcome::Dropped(_)),
                        "seed {seed}: {outcome:?}"
                    );
                }
            }
        }
        for client in clients.iter_mut().filter(|c| c.joined && !c.done) {
            carousel.heard(now, client.session);
            if client.receiver.is_complete() {
                client.done = true;
                client.sent_at_done = Some(carousel.sent_total());
                assert!(carousel.leave(client.session));
            }
        }
        if clients.iter().all(|c| c.done) {
            break;
        }
        let next = carousel
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(1))
            .max(now + Duration::from_micros(10));
        let next_join = clients
            .iter()
            .filter(|c| !c.joined)
            .map(|c| c.join_at)
            .min();
        now = next_join.map_or(next, |join| {
            join.min(next).max(now + Duration::from_micros(1))
        });
    }
    for client in &clients {
        assert!(
            client.done,
            "seed {seed}: client {:?} incomplete at the deadline",
            client.session
        );
        let sent = client.sent_at_done.expect("done") - client.sent_at_join;
        if client.loss_per_mille == 0 {
            assert!(
                sent <= loop_len + 64,
                "seed {seed}: lossless client needed {sent} > one loop of {loop_len}"
            );
        }
    }
    assert!(
        carousel.is_idle(),
        "seed {seed}: channel still has members after everyone finished"
    );
    assert_eq!(
        carousel.poll_transmit(now),
        None,
        "seed {seed}: idle channel sends nothing"
    );
}

#[test]
fn lossless_and_lossy_clients_all_complete() {
    simulate(7, 2_000_000, &[0, 0, 10, 50]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_seed_completes(seed in any::<u64>(), stream_len in 1usize..1_500_000, loss in 0u64..200) {
        simulate(seed, stream_len, &[0, loss, loss / 2]);
    }
}

/// R10 in the core: lossy receivers with a `NakPlanner` each, NAKs delivered to the carousel's
/// repair queue, repairs multicast to everyone (and lost at the same rates). Every receiver
/// completes, and one that loses a share of the loop needs little more than one loop, where
/// without repair it would wait for most of a second.
fn simulate_with_naks(seed: u64, stream_len: usize, losses: &[u64]) -> u64 {
    simulate_naks(seed, stream_len, losses, 0, false)
}

/// As above; `shared_loss_per_mille` loses a datagram for every receiver at once (loss before
/// the fan-out, where NAK suppression pays), and `suppress` turns on R10 suppression: each
/// receiver waits a random delay before asking, and the server relays every NAK to all
/// receivers (`NakPlanner::heard`). Returns the serials all receivers asked for in total.
fn simulate_naks(
    seed: u64,
    stream_len: usize,
    losses: &[u64],
    shared_loss_per_mille: u64,
    suppress: bool,
) -> u64 {
    use loopcast_proto::nak::{NakConfig, NakPlanner};
    let mut rng = Rng(seed | 1);
    let (info, datagrams, mut carousel) = file_and_carousel(seed, stream_len, &mut rng);
    let loop_len = u64::from(info.loop_len);
    struct NakClient {
        session: SessionId,
        loss_per_mille: u64,
        receiver: Receiver,
        nak: NakPlanner,
        done: bool,
        sent_at_done: Option<u64>,
    }
    let mut clients: Vec<NakClient> = losses
        .iter()
        .enumerate()
        .map(|(i, &loss)| {
            let receiver = Receiver::new(info.clone());
            let config = NakConfig {
                suppression_delay: suppress.then_some(Duration::from_millis(20)),
                random_seed: seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ..NakConfig::default()
            };
            let nak = NakPlanner::new(config, receiver.have());
            NakClient {
                session: SessionId(i as u64 + 1),
                loss_per_mille: loss,
                receiver,
                nak,
                done: false,
                sent_at_done: None,
            }
        })
        .collect();
    for client in &clients {
        carousel.join(Instant::ZERO, client.session).unwrap();
    }
    let mut now = Instant::ZERO;
    let deadline = Instant::ZERO + Duration::from_secs(600);
    while now < deadline && !clients.iter().all(|c| c.done) {
        while let Some(transmit) = carousel.poll_transmit(now) {
            for serial in transmit.first..transmit.first + transmit.count {
                if rng.chance_per_mille(shared_loss_per_mille) {
                    continue;
                }
                for client in clients.iter_mut().filter(|c| !c.done) {
                    if rng.chance_per_mille(client.loss_per_mille) {
                        continue;
                    }
                    match client.receiver.handle_datagram(&datagrams[serial as usize]) {
                        Outcome::Store { serial, .. } | Outcome::Duplicate { serial } => {
                            client.nak.saw(serial)
                        }
                        Outcome::Dropped(reason) => panic!("seed {seed}: dropped {reason:?}"),
                    }
                }
            }
        }
        let mut relayed: Vec<Vec<(u32, u32)>> = Vec::new();
        for client in clients.iter_mut().filter(|c| !c.done) {
            carousel.heard(now, client.session);
            if client.receiver.is_complete() {
                client.done = true;
                client.sent_at_done = Some(carousel.sent_total());
                carousel.leave(client.session);
                continue;
            }
            // NAKs travel on the control path, which loses them at the same rate.
            if let Some(ranges) = client.nak.poll_nak(now) {
                if !rng.chance_per_mille(client.loss_per_mille) {
                    for &(first, count) in &ranges {
                        let _ = carousel.queue_repair(first, count);
                    }
                    relayed.push(ranges);
                }
            }
        }
        if suppress {
            // The server relays each NAK to the group; receivers lose relays like data.
            for ranges in &relayed {
                for client in clients.iter_mut().filter(|c| !c.done) {
                    if !rng.chance_per_mille(client.loss_per_mille) {
                        client.nak.heard(now, ranges);
                    }
                }
            }
        }
        let next = carousel
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(1));
        let nak_next = clients
            .iter()
            .filter(|c| !c.done)
            .filter_map(|c| c.nak.poll_timeout())
            .min()
            .unwrap_or(next);
        now = next.min(nak_next).max(now + Duration::from_micros(10));
    }
    let total_loss: u64 = losses.iter().sum::<u64>() + shared_loss_per_mille * losses.len() as u64;
    for client in &clients {
        assert!(
            client.done,
            "seed {seed}: client {:?} incomplete",
            client.session
        );
        let sent = client.sent_at_done.expect("done");
        // One loop, plus the repairs everyone asked for (lost copies asked again), plus the
        // planner's reorder margin at the end of the pass, plus one repair timeout of the loop
        // (a lost repair is asked again 100 ms later: 868 datagrams at 100 Mbit/s).
        let repair_timeout_datagrams = SIM_RATE_BITS_PER_S / 8 / 1440 / 10;
        let bound =
            loop_len + loop_len * total_loss * 3 / 1000 + 2 * 256 + 64 + repair_timeout_datagrams;
        assert!(
            sent <= bound,
            "seed {seed}: client {:?} (loss {}‰) needed {sent} datagrams for a loop of {loop_len} (bound {bound})",
            client.session,
            client.loss_per_mille
        );
    }
    clients.iter().map(|c| c.nak.serials_naked()).sum()
}

#[test]
fn suppression_saves_naks_for_shared_losses_and_still_finishes_in_about_one_loop() {
    // Five receivers; most loss is shared (before the fan-out), a little is their own.
    let losses = [2, 2, 2, 2, 2];
    let without = simulate_naks(23, 12_000_000, &losses, 30, false);
    let with = simulate_naks(23, 12_000_000, &losses, 30, true);
    eprintln!("serials asked for by five receivers: {without} without suppression, {with} with");
    assert!(
        with * 2 < without,
        "suppression should at least halve the serials asked for: {with} with vs {without} without"
    );
}

#[test]
fn with_naks_lossy_clients_finish_in_about_one_loop() {
    simulate_with_naks(11, 12_000_000, &[0, 20, 50, 100]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn with_naks_any_seed_completes_in_about_one_loop(seed in any::<u64>(), stream_len in 4_000_000usize..10_000_000, loss in 0u64..100) {
        simulate_with_naks(seed, stream_len, &[loss, loss / 2, 0]);
    }
}
