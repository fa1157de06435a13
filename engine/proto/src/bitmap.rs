//! A fixed-size bitmap over loop serials.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u32,
    ones: u32,
}

impl Bitmap {
    pub fn new(len: u32) -> Bitmap {
        Bitmap {
            words: vec![0; (len as usize).div_ceil(64)],
            len,
            ones: 0,
        }
    }

    /// Rebuilds a bitmap from persisted words; `None` if the words do not fit `len`
    /// (wrong count, or bits set past the end).
    pub fn from_words(len: u32, words: Vec<u64>) -> Option<Bitmap> {
        if words.len() != (len as usize).div_ceil(64) {
            return None;
        }
        let tail_bits = len % 64;
        if tail_bits != 0 {
            let last = *words.last().expect("len > 0 when tail_bits != 0");
            if last >> tail_bits != 0 {
                return None;
            }
        }
        let ones = words.iter().map(|w| w.count_ones()).sum();
        Some(Bitmap { words, len, ones })
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn count_ones(&self) -> u32 {
        self.ones
    }

    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    pub fn get(&self, index: u32) -> bool {
        assert!(
            index < self.len,
            "bit {index} outside bitmap of {}",
            self.len
        );
        self.words[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    /// True if every bit of `range` is set (an empty range: true). Word at a time.
    pub fn all_set(&self, range: core::ops::Range<u32>) -> bool {
        let len = range.len() as u32;
        self.count_ones_in(range) == len
    }

    /// The bits of `range` that are set. Word at a time.
    pub fn count_ones_in(&self, range: core::ops::Range<u32>) -> u32 {
        assert!(
            range.end <= self.len,
            "bits {range:?} outside bitmap of {}",
            self.len
        );
        word_masks(range)
            .map(|(word, mask)| (self.words[word] & mask).count_ones())
            .sum()
    }

    /// Sets a bit; returns true if it was clear.
    pub fn set(&mut self, index: u32) -> bool {
        assert!(
            index < self.len,
            "bit {index} outside bitmap of {}",
            self.len
        );
        let word = &mut self.words[(index / 64) as usize];
        let mask = 1 << (index % 64);
        let was_clear = *word & mask == 0;
        *word |= mask;
        if was_clear {
            self.ones += 1;
        }
        was_clear
    }

    /// Sets every bit of `range`. Word at a time (a heard range of 1,024 serials is 17 words).
    pub fn set_range(&mut self, range: core::ops::Range<u32>) {
        assert!(
            range.end <= self.len,
            "bits {range:?} outside bitmap of {}",
            self.len
        );
        self.ones += range.len() as u32 - self.count_ones_in(range.clone());
        for (word, mask) in word_masks(range) {
            self.words[word] |= mask;
        }
    }

    /// Clears every bit.
    pub fn clear_all(&mut self) {
        self.words.fill(0);
        self.ones = 0;
    }

    /// Clears a bit; returns true if it was set.
    pub fn clear(&mut self, index: u32) -> bool {
        assert!(
            index < self.len,
            "bit {index} outside bitmap of {}",
            self.len
        );
        let word = &mut self.words[(index / 64) as usize];
        let mask = 1 << (index % 64);
        let was_set = *word & mask != 0;
        *word &= !mask;
        if was_set {
            self.ones -= 1;
        }
        was_set
    }

    /// Where the longest run of clear bits begins, going round (a run that reaches the end
    /// goes on at 0): what a partial download lacks most, in one piece, so a loop started
    /// there sends it that first (R14). `None` if every bit is set, or none.
    pub fn longest_clear_run_start(&self) -> Option<u32> {
        if self.ones == 0 || self.ones == self.len {
            return None;
        }
        // (length, start) of the longest run closed so far, and the one at 0.
        let mut best = (0u32, 0u32);
        let mut from_zero = 0u32;
        let mut open: Option<u32> = None;
        let mut close = |start: u32, end: u32| {
            if start == 0 {
                from_zero = end;
            }
            if end - start > best.0 {
                best = (end - start, start);
            }
        };
        let mut index = 0;
        while index < self.len {
            let word = self.words[(index / 64) as usize];
            // Whole words at once where they are all one way (a held or missing stretch).
            if index % 64 == 0 && self.len - index >= 64 && (word == 0 || word == u64::MAX) {
                if word == 0 {
                    open.get_or_insert(index);
                } else if let Some(start) = open.take() {
                    close(start, index);
                }
                index += 64;
                continue;
            }
            if self.get(index) {
                if let Some(start) = open.take() {
                    close(start, index);
                }
            } else {
                open.get_or_insert(index);
            }
            index += 1;
        }
        if let Some(start) = open {
            // Reaches the end: it goes on with the run at 0, if there is one.
            let length = self.len - start + if start == 0 { 0 } else { from_zero };
            if length > best.0 {
                best = (length, start);
            }
        }
        Some(best.1)
    }
}

/// The words `range` touches, each with the mask of its bits in `range`.
fn word_masks(range: core::ops::Range<u32>) -> impl Iterator<Item = (usize, u64)> {
    let mut at = range.start;
    core::iter::from_fn(move || {
        if at >= range.end {
            return None;
        }
        let from = at % 64;
        let to = (range.end - (at - from)).min(64);
        let mask = if to - from == 64 {
            u64::MAX
        } else {
            ((1u64 << (to - from)) - 1) << from
        };
        let word = (at / 64) as usize;
        at += to - from;
        Some((word, mask))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_killed_download_resumes_where_its_held_stretch_ended() {
        let mut held = Bitmap::new(1000);
        for serial in 300..700 {
            held.set(serial);
        }
        assert_eq!(
            held.longest_clear_run_start(),
            Some(700),
            "700..1000 and on to 0..300"
        );
        held.clear(500);
        assert_eq!(
            held.longest_clear_run_start(),
            Some(700),
            "a hole inside is shorter"
        );
        let mut wrapped = Bitmap::new(200);
        for serial in (150..200).chain(0..10) {
            wrapped.set(serial);
        }
        assert_eq!(wrapped.longest_clear_run_start(), Some(10));
        assert_eq!(
            Bitmap::new(64).longest_clear_run_start(),
            None,
            "nothing held"
        );
    }

    proptest! {
        /// Whole-word steps and the run going round agree with looking at every bit.
        #[test]
        fn longest_clear_run_start_is_the_bitwise_one(
            len in 1u32..400,
            runs in proptest::collection::vec((any::<u32>(), 0u32..200, any::<bool>()), 0..6),
        ) {
            let mut bitmap = Bitmap::new(len);
            for (start, length, set) in runs {
                for k in 0..length {
                    let index = (start % len + k) % len;
                    if set { bitmap.set(index); } else { bitmap.clear(index); }
                }
            }
            prop_assert_eq!(
                bitmap.longest_clear_run_start(),
                crate::testkit::longest_clear_run_start_bit_by_bit(&bitmap)
            );
        }

        /// `set_range` sets exactly the bits of the range, and counts them once.
        #[test]
        fn set_range_is_setting_every_bit_of_it(
            len in 1u32..300,
            before in proptest::collection::vec(any::<u32>(), 0..20),
            a in any::<u32>(),
            b in any::<u32>(),
        ) {
            let mut by_range = Bitmap::new(len);
            for index in &before {
                by_range.set(index % len);
            }
            let mut by_bit = by_range.clone();
            let (a, b) = (a % (len + 1), b % (len + 1));
            let range = a.min(b)..a.max(b);
            by_range.set_range(range.clone());
            for index in range {
                by_bit.set(index);
            }
            prop_assert_eq!(&by_range, &by_bit);
            by_range.clear_all();
            prop_assert_eq!(by_range, Bitmap::new(len));
        }

        /// `all_set` agrees with asking every bit of the range.
        #[test]
        fn all_set_is_every_bit_of_the_range(
            len in 1u32..300,
            clear in proptest::collection::vec(any::<u32>(), 0..4),
            a in any::<u32>(),
            b in any::<u32>(),
        ) {
            let mut bitmap = Bitmap::new(len);
            for index in 0..len {
                bitmap.set(index);
            }
            for c in clear {
                bitmap.clear(c % len);
            }
            let (a, b) = (a % (len + 1), b % (len + 1));
            let range = a.min(b)..a.max(b);
            prop_assert_eq!(bitmap.all_set(range.clone()), range.clone().all(|i| bitmap.get(i)));
        }
    }
}
