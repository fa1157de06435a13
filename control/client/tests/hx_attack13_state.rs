//! Attack review of s12: the state file `<output>.part.state` is now read before the Offer
//! (`state::peek`, `Bitmap::longest_clear_run_start`, R14). Whoever can write beside the output
//! can forge one (its checksum is unkeyed BLAKE3): it must never panic, and what it yields
//! stays inside the bitmap it claims. (Measured by the reviewer, not run here: the largest
//! state read before the Offer, 2^30 datagrams with alternating bits, 128 MiB, read in 0.07 s,
//! peeked in 0.33 s, scanned in 1.6 s, about 256 MiB at the peak; one byte over is refused
//! unread.)

use loopcast_client::state;
use loopcast_proto::bitmap::Bitmap;
use loopcast_proto::testkit::longest_clear_run_start_bit_by_bit;
use proptest::prelude::*;

/// A state file with any header values, re-checksummed.
fn forge(len: u32, word_count: u32, words: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"LCST");
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[9u8; 32]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&word_count.to_be_bytes());
    for w in words {
        out.extend_from_slice(&w.to_be_bytes());
    }
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

/// Forged headers: len 0, word counts that do not fit len (short, long, u32::MAX), bits past
/// the end, every prefix of each: `peek` answers None or a bitmap whose longest clear run
/// starts inside it.
#[test]
fn held_forged_state_headers_never_panic() {
    let cases: Vec<(u32, u32, Vec<u64>)> = vec![
        (0, 0, vec![]),
        (0, 1, vec![0]),
        (1, 0, vec![]),
        (1, 1, vec![2]), // a bit past the end
        (1, 1, vec![1]),
        (1, 1, vec![0]),
        (64, 1, vec![u64::MAX]),
        (65, 2, vec![u64::MAX, 0]),
        (65, 2, vec![u64::MAX, 1]),
        (65, 1, vec![0]),
        (u32::MAX, 1, vec![1]),
        (u32::MAX, u32::MAX, vec![1, 2, 3]),
        (128, 3, vec![0, 0, 0]),
    ];
    for (len, word_count, words) in cases {
        let bytes = forge(len, word_count, &words);
        let start = state::peek(&bytes).and_then(|(_, have)| have.longest_clear_run_start());
        if let Some(start) = start {
            assert!(start < len, "{len} {word_count} {words:?}: {start}");
        }
        for cut in 0..bytes.len() {
            let _ = state::peek(&bytes[..cut]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]
    /// Word-shaped inputs (all-zero, all-one and mixed words, tails of every width, lengths to
    /// 5,000): the word-stepping scan agrees with looking at every bit.
    #[test]
    fn held_longest_clear_run_start_agrees_with_a_reference_on_word_shaped_bitmaps(
        len in 1u32..5_000,
        kinds in proptest::collection::vec(0u8..6, 1..80),
        noise in any::<u64>(),
    ) {
        let count = (len as usize).div_ceil(64);
        let mut words: Vec<u64> = (0..count)
            .map(|i| match kinds[i % kinds.len()] {
                0 | 1 => 0,
                2 | 3 => u64::MAX,
                4 => noise.rotate_left(i as u32),
                _ => 1u64 << (i % 64),
            })
            .collect();
        if len % 64 != 0 {
            *words.last_mut().unwrap() &= (1u64 << (len % 64)) - 1;
        }
        let bitmap = Bitmap::from_words(len, words).unwrap();
        prop_assert_eq!(
            bitmap.longest_clear_run_start(),
            longest_clear_run_start_bit_by_bit(&bitmap)
        );
    }
}
