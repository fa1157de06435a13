//! Tools for testing parsers against hostile bytes: compiled for this crate's tests, and for other
//! crates' tests through the `testkit` feature (only dev-dependencies enable it, so a plain
//! `cargo build` leaves it out).
//!
//! Every parser in loopcast gets two kinds of property test, besides the committed attack corpus
//! (tests/corpus/README.md): arbitrary bytes ([`hostile_bytes`]) and a valid encoding damaged
//! the way an attacker or a bad disk would damage it ([`mutated`]): bits flipped, cut short,
//! extended, bytes spliced in, and integer fields (lengths, counts, serials) set to boundary
//! values. The properties are the same everywhere: no panic; what parses re-emits to bytes that
//! parse to the same value; and what parses describes a valid value.

use proptest::prelude::*;
use proptest::sample::Index;

use crate::bitmap::Bitmap;
use crate::info::{hash_fanout, payload_capacity, FileInfo, Watermark};
use crate::layout::TreeShape;
use crate::wire::datagram::FileId;

/// Cases each parser property runs in CI (deliverable: at least 10,000 per parser and kind).
pub const PARSER_CASES: u32 = 10_000;

/// proptest configuration for parser properties: [`PARSER_CASES`] cases, and no failure
/// persistence files (a failure prints its minimal input; keep it as a regression test).
pub fn parser_config() -> ProptestConfig {
    ProptestConfig {
        cases: PARSER_CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An integer an attacker writes into a field: the edges where length and bounds checks break.
#[derive(Clone, Copy, Debug)]
pub enum Boundary {
    Zero,
    One,
    Max,
    MaxMinusOne,
    /// Only the top bit set (the first "negative" value if the field is read as signed).
    HighBit,
    Small(u16),
    Any(u64),
}

impl Boundary {
    fn value(self, width: usize) -> u64 {
        let bits = 8 * width as u32;
        let max = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        match self {
            Boundary::Zero => 0,
            Boundary::One => 1,
            Boundary::Max => max,
            Boundary::MaxMinusOne => max - 1,
            Boundary::HighBit => 1u64 << (bits - 1),
            Boundary::Small(value) => u64::from(value) & max,
            Boundary::Any(value) => value & max,
        }
    }
}

/// One piece of damage to an encoding. Positions are [`Index`]es so that a mutation fits any
/// length and shrinks well.
#[derive(Clone, Debug)]
pub enum Mutation {
    FlipBit(Index),
    /// Keep only a strict prefix.
    Truncate(Index),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Replace up to `remove` bytes at `at` by `insert` (the length may change).
    Splice {
        at: Index,
        remove: usize,
        insert: Vec<u8>,
    },
    /// Overwrite a big-endian integer of `width` bytes (1, 2, 4 or 8) at `at`: lengths, counts,
    /// serials and levels set to the values where checks break.
    Field {
        at: Index,
        width: usize,
        value: Boundary,
    },
}

impl Mutation {
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        match self {
            Mutation::FlipBit(at) => {
                if len > 0 {
                    let bit = at.index(len * 8);
                    bytes[bit / 8] ^= 1 << (bit % 8);
                }
            }
            Mutation::Truncate(at) => {
                if len > 0 {
                    bytes.truncate(at.index(len));
                }
            }
            Mutation::Extend(more) => bytes.extend_from_slice(more),
            Mutation::Splice { at, remove, insert } => {
                let start = at.index(len + 1);
                let end = start.saturating_add(*remove).min(len);
                bytes.splice(start..end, insert.iter().copied());
            }
            Mutation::Field { at, width, value } => {
                if len >= *width {
                    let start = at.index(len - width + 1);
                    let raw = value.value(*width).to_be_bytes();
                    bytes[start..start + width].copy_from_slice(&raw[8 - width..]);
                }
            }
        }
    }
}

pub fn boundary() -> impl Strategy<Value = Boundary> {
    prop_oneof![
        Just(Boundary::Zero),
        Just(Boundary::One),
        Just(Boundary::Max),
        Just(Boundary::MaxMinusOne),
        Just(Boundary::HighBit),
        any::<u16>().prop_map(|v| Boundary::Small(v % 300)),
        any::<u64>().prop_map(Boundary::Any),
    ]
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::FlipBit),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        2 => (any::<Index>(), 0usize..16, proptest::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(at, remove, insert)| Mutation::Splice { at, remove, insert }),
        3 => (any::<Index>(), prop_oneof![Just(1usize), Just(2), Just(4), Just(8)], boundary())
            .prop_map(|(at, width, value)| Mutation::Field { at, width, value }),
    ]
}

/// A valid encoding from `valid`, then one to four mutations.
pub fn mutated(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, proptest::collection::vec(mutation(), 1..=4)).prop_map(|(mut bytes, mutations)| {
        for mutation in &mutations {
            mutation.apply(&mut bytes);
        }
        bytes
    })
}

/// Arbitrary bytes up to `max_len` long; half of them start with `prefix` (a format's magic and
/// version), so that they get past the first checks and reach the fields behind them.
pub fn hostile_bytes(prefix: &'static [u8], max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(any::<u8>(), 0..max_len);
    prop_oneof![
        noise.clone(),
        noise.prop_map(move |tail| {
            let mut bytes = prefix.to_vec();
            bytes.extend_from_slice(&tail);
            bytes
        }),
    ]
}

/// A consistent file info for a frame stream of `stream_len` bytes (top hashes arbitrary):
/// encrypted when `seed` is even, watermarked when it is a multiple of 3.
pub fn sample_info(stream_len: u64, datagram_size: u16, seed: u8) -> FileInfo {
    let capacity = payload_capacity(datagram_size) as u64;
    let data = u32::try_from(stream_len.div_ceil(capacity)).expect("stream fits 2^32 datagrams");
    let shape = TreeShape::new(data, hash_fanout(datagram_size)).expect("a valid stream length");
    FileInfo {
        file_id: FileId(0x1122_3344_5566_7700 | u64::from(seed)),
        encrypted: seed.is_multiple_of(2),
        watermark: seed.is_multiple_of(3).then(|| Watermark {
            owner: "owner-7".into(),
            notice: "(c) 2026 loopcast test".into(),
        }),
        original_size: stream_len,
        original_hash: [seed; 32],
        frame_raw_size: 1 << 20,
        frame_count: stream_len.div_ceil(1 << 20).max(1),
        frame_stream_len: stream_len,
        datagram_size,
        data_datagram_count: data,
        loop_len: shape.loop_len(),
        name: format!("file-{seed}.bin"),
        top_hashes: vec![[seed.wrapping_add(1); 32]; shape.top_count()],
    }
}

/// An info whose counts agree with each other but describe about 3.6 billion datagrams: cheap
/// to send, and (before issue 9's fix) seconds of CPU and gigabytes to parse.
pub fn huge_consistent_info() -> FileInfo {
    let mut info = sample_info(1000, crate::info::DATAGRAM_SIZE_MIN, 1);
    let data = 3_600_000_000u32;
    info.data_datagram_count = data;
    info.frame_stream_len =
        u64::from(data) * payload_capacity(crate::info::DATAGRAM_SIZE_MIN) as u64;
    info.original_size = info.frame_stream_len;
    info.frame_count = info.original_size.div_ceil(u64::from(info.frame_raw_size));
    info.loop_len = u32::MAX;
    info
}

/// [`Bitmap::longest_clear_run_start`] bit by bit, for property tests of its word steps: the
/// start of the longest clear run going round, the lowest such start on ties.
pub fn longest_clear_run_start_bit_by_bit(bitmap: &Bitmap) -> Option<u32> {
    let len = bitmap.len();
    if bitmap.count_ones() == 0 || bitmap.is_full() {
        return None;
    }
    let run_at = |start: u32| {
        (0..len)
            .take_while(|k| !bitmap.get((start + k) % len))
            .count()
    };
    // A run starts where a clear bit follows a set one (going round).
    (0..len)
        .filter(|&i| !bitmap.get(i) && bitmap.get((i + len - 1) % len))
        .max_by_key(|&i| (run_at(i), std::cmp::Reverse(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_mutation_writes_big_endian_boundaries() {
        let mut bytes = vec![0u8; 6];
        Mutation::Field {
            at: any_index_at_start(),
            width: 2,
            value: Boundary::Max,
        }
        .apply(&mut bytes);
        assert_eq!(bytes, [0xff, 0xff, 0, 0, 0, 0]);
        Mutation::Field {
            at: any_index_at_start(),
            width: 4,
            value: Boundary::HighBit,
        }
        .apply(&mut bytes);
        assert_eq!(bytes, [0x80, 0, 0, 0, 0, 0]);
    }

    /// An `Index` that maps to position 0 whatever the size.
    fn any_index_at_start() -> Index {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let mut tree = any::<Index>().new_tree(&mut runner).unwrap();
        while tree.simplify() {}
        tree.current()
    }
}
