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
        let mut ones = 0;
        let mut at = range.start;
        while at < range.end {
            let word = self.words[(at / 64) as usize];
            let from = at % 64;
            let to = (range.end - (at - from)).min(64);
            let mask = if to - from == 64 {
                u64::MAX
            } else {
                ((1u64 << (to - from)) - 1) << from
            };
            ones += (word & mask).count_ones();
            at += to - from;
        }
        ones
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
