//! A seeded random source for the sans-IO machines: session ids, address-validation tokens and
//! timer jitter. BLAKE3 in keyed mode over a counter, so the output is unpredictable to anyone
//! who does not know the seed (drivers seed it from the OS; simulations from a test seed, which
//! makes every run replayable).

#[derive(Clone)]
pub struct SeededRng {
    key: [u8; 32],
    counter: u64,
}

impl SeededRng {
    pub fn from_seed(seed: [u8; 32]) -> SeededRng {
        SeededRng {
            key: seed,
            counter: 0,
        }
    }

    /// For tests and simulations: a full key derived from a small seed.
    pub fn from_u64(seed: u64) -> SeededRng {
        SeededRng::from_seed(*blake3::hash(&seed.to_le_bytes()).as_bytes())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.counter += 1;
        let block = blake3::keyed_hash(&self.key, &self.counter.to_le_bytes());
        u64::from_le_bytes(block.as_bytes()[..8].try_into().expect("8 of 32 bytes"))
    }

    /// A value in `0..bound` (`bound > 0`); the bias is below 2^-32 for the bounds we use.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "an empty range has no values");
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let mut a = SeededRng::from_u64(7);
        let mut b = SeededRng::from_u64(7);
        let mut c = SeededRng::from_u64(8);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.windows(2).all(|w| w[0] != w[1]));
    }
}
