use super::*;
use crate::assemble::{assemble_in_memory, InMemoryFile};
use crate::info::{DATAGRAM_SIZE_MIN, DATAGRAM_SIZE_MTU_1500};
use crate::wire::datagram::FileId;
use proptest::prelude::*;

fn sample(stream_len: usize, datagram_size: u16) -> (FileInfo, Vec<Vec<u8>>) {
    let stream: Vec<u8> = (0..stream_len).map(|i| (i * 31 % 251) as u8).collect();
    assemble_in_memory(&InMemoryFile {
        file_id: FileId(42),
        name: "sample.bin",
        datagram_size,
        frame_stream: &stream,
        watermark: None,
    })
}

fn feed_loop_from(receiver: &mut Receiver, datagrams: &[Vec<u8>], start: usize) {
    for offset in 0..datagrams.len() {
        let serial = (start + offset) % datagrams.len();
        let outcome = receiver.handle_datagram(&datagrams[serial]);
        assert!(
            matches!(outcome, Outcome::Store { .. }),
            "serial {serial}: {outcome:?}"
        );
    }
}

#[test]
fn in_order_loop_completes_with_everything_verified_on_arrival() {
    let (info, datagrams) = sample(500_000, DATAGRAM_SIZE_MTU_1500);
    let mut receiver = Receiver::new(info);
    for bytes in &datagrams {
        assert!(matches!(
            receiver.handle_datagram(bytes),
            Outcome::Store { verified: true, .. }
        ));
    }
    assert!(receiver.is_complete());
    assert_eq!(receiver.pending_count(), 0);
}

#[test]
fn duplicates_are_recognised() {
    let (info, datagrams) = sample(10_000, DATAGRAM_SIZE_MTU_1500);
    let mut receiver = Receiver::new(info);
    receiver.handle_datagram(&datagrams[0]);
    assert_eq!(
        receiver.handle_datagram(&datagrams[0]),
        Outcome::Duplicate { serial: 0 }
    );
}

#[test]
fn foreign_file_is_dropped() {
    let (info, _) = sample(10_000, DATAGRAM_SIZE_MTU_1500);
    let stream = vec![9u8; 10_000];
    let (_, other) = assemble_in_memory(&InMemoryFile {
        file_id: FileId(43),
        name: "other.bin",
        datagram_size: DATAGRAM_SIZE_MTU_1500,
        frame_stream: &stream,
        watermark: None,
    });
    let mut receiver = Receiver::new(info);
    assert_eq!(
        receiver.handle_datagram(&other[0]),
        Outcome::Dropped(DropReason::Foreign)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// R9: a client joining at any point has every datagram, verified, after one loop.
    #[test]
    fn join_anywhere_completes_in_one_loop(stream_len in 1usize..400_000, start in any::<usize>(), small in any::<bool>()) {
        let size = if small { DATAGRAM_SIZE_MIN } else { DATAGRAM_SIZE_MTU_1500 };
        let (info, datagrams) = sample(stream_len, size);
        let mut receiver = Receiver::new(info);
        feed_loop_from(&mut receiver, &datagrams, start % datagrams.len());
        prop_assert!(receiver.is_complete());
        prop_assert_eq!(receiver.pending_count(), 0);
        prop_assert_eq!(receiver.counters().dropped_total(), 0);
    }

    /// Any flipped bit in any datagram is detected: the datagram is dropped at once, or it
    /// is held pending and rejected when its parent arrives; it is never marked held.
    #[test]
    fn flipped_bit_never_accepted(stream_len in 1usize..200_000, victim in any::<usize>(), bit in any::<usize>(), start in any::<usize>()) {
        let (info, mut datagrams) = sample(stream_len, DATAGRAM_SIZE_MIN);
        let victim = victim % datagrams.len();
        let bit = bit % (datagrams[victim].len() * 8);
        datagrams[victim][bit / 8] ^= 1 << (bit % 8);
        let mut receiver = Receiver::new(info);
        let start = start % datagrams.len();
        for offset in 0..datagrams.len() {
            let serial = (start + offset) % datagrams.len();
            receiver.handle_datagram(&datagrams[serial]);
        }
        prop_assert!(!receiver.have().get(victim as u32), "corrupt datagram {} marked held", victim);
        prop_assert!(!receiver.is_complete());
    }

    #[test]
    fn garbage_never_panics(stream_len in 1usize..50_000, bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let (info, _) = sample(stream_len, DATAGRAM_SIZE_MTU_1500);
        let mut receiver = Receiver::new(info);
        let _ = receiver.handle_datagram(&bytes);
    }
}

#[test]
fn resume_keeps_verified_blocks_and_forgets_corrupt_ones() {
    let (info, datagrams) = sample(300_000, DATAGRAM_SIZE_MIN);
    let mut first = Receiver::new(info.clone());
    let half = datagrams.len() / 2;
    for bytes in &datagrams[..half] {
        first.handle_datagram(bytes);
    }
    let held_before = first.have().count_ones();
    let bitmap = first.have().clone();
    // Storage as the driver wrote it, with the first hash block corrupted.
    let mut storage = datagrams.clone();
    storage[0][40] ^= 0xff;
    let mut resumed = Receiver::resume(info, bitmap, |serial| {
        Some(storage[serial as usize].clone())
    });
    assert!(
        resumed.have().count_ones() < held_before,
        "corrupt block and its subtree forgotten"
    );
    for bytes in &datagrams {
        resumed.handle_datagram(bytes);
    }
    assert!(resumed.is_complete());
}

#[test]
fn a_forged_copy_of_a_held_serial_is_dropped_not_counted_as_a_duplicate() {
    let (info, datagrams) = sample(200_000, DATAGRAM_SIZE_MTU_1500);
    let mut receiver = Receiver::new(info);
    for bytes in &datagrams {
        receiver.handle_datagram(bytes);
    }
    let serial = datagrams.len() / 2;
    assert_eq!(
        receiver.handle_datagram(&datagrams[serial]),
        Outcome::Duplicate {
            serial: serial as u32
        }
    );
    let mut forged = datagrams[serial].clone();
    *forged.last_mut().unwrap() ^= 1;
    assert_eq!(
        receiver.handle_datagram(&forged),
        Outcome::Dropped(DropReason::HashMismatch),
        "a forged copy must not pass for the loop's position"
    );
}

#[test]
fn of_two_different_pending_copies_the_first_is_kept_and_a_forged_first_is_received_again() {
    let (mut receiver, datagrams, shape, serial, _forged) = a_forgery_held_pending();
    assert_eq!(
        receiver.handle_datagram(&datagrams[serial]),
        Outcome::Dropped(DropReason::PendingConflict),
        "one copy per pending serial: what was stored is what will be checked"
    );
    // The parent arrives: the forged copy fails, the serial is not held, and the genuine one
    // is accepted when it comes round.
    let parent = shape.serial_of(1, 0) as usize;
    receiver.handle_datagram(&datagrams[parent]);
    assert!(!receiver.have().get(serial as u32));
    assert!(matches!(
        receiver.handle_datagram(&datagrams[serial]),
        Outcome::Store { verified: true, .. }
    ));
}

/// A forger sends its copy of a serial whose parent has not arrived twice: the second copy
/// matches the pending hash, but nothing proves it genuine, so it must not come back as a
/// `Duplicate` (which the client takes for the loop's position: its NAK frontier and loss
/// meter jumped to the forged serial, and a loss-free receiver reported ~50% loss; e2e
/// `attacks::forged_serials_ahead_do_not_poison_the_reported_loss`).
#[test]
fn a_second_copy_of_a_pending_forgery_is_not_a_duplicate() {
    let (mut receiver, _, _, _, forged) = a_forgery_held_pending();
    assert_eq!(
        receiver.handle_datagram(&forged),
        Outcome::Dropped(DropReason::PendingDuplicate),
        "an unverified copy seen twice is still unverified"
    );
    assert_eq!(receiver.counters().duplicates, 0);
}

/// A receiver that joined after the first hash block and holds, pending its parent, a forged
/// copy of data datagram 1: (receiver, the genuine datagrams, the tree's shape, that serial,
/// the forged copy).
fn a_forgery_held_pending() -> (Receiver, Vec<Vec<u8>>, TreeShape, usize, Vec<u8>) {
    let (info, datagrams) = sample(200_000, DATAGRAM_SIZE_MTU_1500);
    let shape = TreeShape::new(
        info.data_datagram_count,
        crate::info::hash_fanout(info.datagram_size),
    )
    .unwrap();
    let mut receiver = Receiver::new(info);
    let serial = shape.serial_of(0, 1) as usize;
    let mut forged = datagrams[serial].clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(matches!(
        receiver.handle_datagram(&forged),
        Outcome::Store {
            verified: false,
            ..
        }
    ));
    (receiver, datagrams, shape, serial, forged)
}

#[test]
fn a_pending_datagram_names_the_missing_blocks_it_waits_for_highest_first() {
    // 3,000 data datagrams at MTU 1500: 69 level-1 blocks under two top-level blocks.
    let (info, datagrams) = sample(3_000 * 1_400, DATAGRAM_SIZE_MTU_1500);
    let shape = info.shape().unwrap();
    assert_eq!((shape.depth(), shape.top_count()), (2, 2));
    let mut receiver = Receiver::new(info);
    let data = |index: u32| shape.serial_of(0, index) as usize;
    // Joined at data 500 (level-1 block 11, under top-level block 0): both are named.
    assert!(matches!(
        receiver.handle_datagram(&datagrams[data(500)]),
        Outcome::Store {
            verified: false,
            ..
        }
    ));
    let wanted: Vec<u32> = receiver.take_wanted_blocks().collect();
    assert_eq!(wanted, [shape.serial_of(2, 0), shape.serial_of(1, 11)]);
    assert_eq!(receiver.take_wanted_blocks().count(), 0, "taken once");
    // The level-1 block arrives (pending itself): the next datagram names only the top one.
    receiver.handle_datagram(&datagrams[shape.serial_of(1, 11) as usize]);
    receiver.handle_datagram(&datagrams[data(501)]);
    let wanted: Vec<u32> = receiver.take_wanted_blocks().collect();
    assert_eq!(wanted, [shape.serial_of(2, 0)]);
    // With the top-level block, everything pending verifies and nothing more is wanted.
    receiver.handle_datagram(&datagrams[shape.serial_of(2, 0) as usize]);
    assert_eq!(receiver.pending_count(), 0);
    assert!(receiver.have().get(data(500) as u32) && receiver.have().get(data(501) as u32));
    assert!(matches!(
        receiver.handle_datagram(&datagrams[data(502)]),
        Outcome::Store { verified: true, .. }
    ));
    assert_eq!(receiver.take_wanted_blocks().count(), 0);
    // A datagram under a block not yet held (block 40's data) names only that block.
    receiver.handle_datagram(&datagrams[data(40 * 44 + 3)]);
    let wanted: Vec<u32> = receiver.take_wanted_blocks().collect();
    assert_eq!(wanted, [shape.serial_of(1, 40)]);
}

#[test]
fn wanted_blocks_stay_bounded_when_nobody_takes_them() {
    let (info, datagrams) = sample(3_000 * 1_400, DATAGRAM_SIZE_MTU_1500);
    let shape = info.shape().unwrap();
    let mut receiver = Receiver::new(info);
    for index in 0..shape.data_count() {
        receiver.handle_datagram(&datagrams[shape.serial_of(0, index) as usize]);
    }
    let wanted: Vec<u32> = receiver.take_wanted_blocks().collect();
    assert_eq!(wanted.len(), WANTED_BLOCKS_MAX);
}
