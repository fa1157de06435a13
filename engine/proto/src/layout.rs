//! The shape of a file's hash tree and where each node sits in the loop.
//!
//! Level 0 holds the data datagrams. A hash block at level k+1 holds the BLAKE3 hashes of up
//! to `fanout` consecutive nodes of level k. Levels are added until one has at most
//! `TOP_HASHES_MAX` nodes; their hashes (the top hashes) travel in the file info, whose own
//! hash is the root a client is given.
//!
//! The loop sends the tree in pre-order: every hash block directly before the subtree it
//! covers. A client that joins anywhere therefore receives each level-1 block right before
//! the data it verifies, and holds data that arrived before its ancestors only until the
//! next ancestor comes round (see `receiver`), so one full loop always suffices.

/// At most this many hashes ride in the file info (so the info fits in one datagram).
pub const TOP_HASHES_MAX: usize = 16;
/// Size of one hash in a hash block or the info.
pub const HASH_LEN: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeShape {
    fanout: u32,
    /// `node_counts[0]` is the number of data datagrams; `node_counts[k]` of level-k blocks.
    node_counts: Vec<u32>,
    /// `block_serials[k - 1][i]` is the loop position of hash block (level k, index i).
    block_serials: Vec<Vec<u32>>,
    loop_len: u32,
}

/// What a file info states about its tree: see [`TreeShape::dimensions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeDimensions {
    pub loop_len: u32,
    pub top_count: usize,
}

/// Node count of each level (data first) and the loop length: arithmetic on the counts only.
fn level_counts(data_datagram_count: u32, fanout: u32) -> Result<(Vec<u32>, u32), ShapeError> {
    if data_datagram_count == 0 {
        return Err(ShapeError::Empty);
    }
    if fanout < 2 {
        return Err(ShapeError::FanoutTooSmall);
    }
    let mut node_counts = vec![data_datagram_count];
    let mut total = u64::from(data_datagram_count);
    while *node_counts.last().expect("node_counts starts non-empty") as usize > TOP_HASHES_MAX {
        let below = *node_counts.last().expect("node_counts starts non-empty");
        let blocks = below.div_ceil(fanout);
        node_counts.push(blocks);
        total += u64::from(blocks);
    }
    let loop_len = u32::try_from(total).map_err(|_| ShapeError::TooLarge)?;
    Ok((node_counts, loop_len))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeError {
    /// No data datagrams: every archive has at least one frame and so one datagram.
    Empty,
    /// Fanout below 2 cannot shrink a level.
    FanoutTooSmall,
    /// More datagrams than a 32-bit serial can number.
    TooLarge,
}

/// Who vouches for a node: a hash block one level up, or the file info's top hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parent {
    Block { level: u8, index: u32, slot: usize },
    Top { slot: usize },
}

impl TreeShape {
    /// Builds the tree's serial tables: O(number of hash blocks) time and memory. Check counts
    /// from untrusted input with [`TreeShape::dimensions`] first.
    pub fn new(data_datagram_count: u32, fanout: u32) -> Result<TreeShape, ShapeError> {
        let (node_counts, loop_len) = level_counts(data_datagram_count, fanout)?;
        let mut shape = TreeShape {
            fanout,
            block_serials: node_counts[1..]
                .iter()
                .map(|&count| vec![0; count as usize])
                .collect(),
            node_counts,
            loop_len,
        };
        let mut next_serial = 0u32;
        let top_level = shape.depth();
        for index in 0..shape.node_counts[usize::from(top_level)] {
            shape.assign_serials(top_level, index, &mut next_serial);
        }
        assert_eq!(next_serial, loop_len, "pre-order walk must cover the loop");
        Ok(shape)
    }

    /// Loop length and number of top hashes of the tree over `data_datagram_count` datagrams,
    /// without building it: O(depth), so a file info from the network is checked before
    /// anything is sized by its counts.
    pub fn dimensions(data_datagram_count: u32, fanout: u32) -> Result<TreeDimensions, ShapeError> {
        let (node_counts, loop_len) = level_counts(data_datagram_count, fanout)?;
        Ok(TreeDimensions {
            loop_len,
            top_count: *node_counts.last().expect("node_counts is never empty") as usize,
        })
    }

    fn assign_serials(&mut self, level: u8, index: u32, next_serial: &mut u32) {
        if level == 0 {
            *next_serial += 1;
            return;
        }
        self.block_serials[usize::from(level) - 1][index as usize] = *next_serial;
        *next_serial += 1;
        let children = self.children(level, index);
        if level == 1 {
            *next_serial += children.end - children.start;
        } else {
            for child in children {
                self.assign_serials(level - 1, child, next_serial);
            }
        }
    }

    pub fn fanout(&self) -> u32 {
        self.fanout
    }

    /// Number of hash-block levels (0 when the data hashes fit in the info).
    pub fn depth(&self) -> u8 {
        u8::try_from(self.node_counts.len() - 1).expect("depth is tiny: fanout >= 2")
    }

    pub fn loop_len(&self) -> u32 {
        self.loop_len
    }

    pub fn data_count(&self) -> u32 {
        self.node_counts[0]
    }

    pub fn node_count(&self, level: u8) -> u32 {
        self.node_counts
            .get(usize::from(level))
            .copied()
            .unwrap_or(0)
    }

    /// Number of hashes carried in the file info.
    pub fn top_count(&self) -> usize {
        *self.node_counts.last().expect("node_counts is never empty") as usize
    }

    /// True if (level, index) names a node of this tree.
    pub fn contains(&self, level: u8, index: u32) -> bool {
        index < self.node_count(level) && level <= self.depth()
    }

    /// Loop position of a node. Panics if the node does not exist (check `contains`).
    pub fn serial_of(&self, level: u8, index: u32) -> u32 {
        assert!(self.contains(level, index), "no node ({level}, {index})");
        if level > 0 {
            return self.block_serials[usize::from(level) - 1][index as usize];
        }
        if self.depth() == 0 {
            return index;
        }
        // Data follows its level-1 block directly.
        self.block_serials[0][(index / self.fanout) as usize] + 1 + index % self.fanout
    }

    /// Children of a hash block, as indexes into level - 1.
    pub fn children(&self, level: u8, index: u32) -> core::ops::Range<u32> {
        assert!(level >= 1, "data datagrams have no children");
        let below = self.node_count(level - 1);
        let start = index.saturating_mul(self.fanout).min(below);
        let end = (index.saturating_add(1))
            .saturating_mul(self.fanout)
            .min(below);
        start..end
    }

    pub fn parent(&self, level: u8, index: u32) -> Parent {
        if level == self.depth() {
            Parent::Top {
                slot: index as usize,
            }
        } else {
            Parent::Block {
                level: level + 1,
                index: index / self.fanout,
                slot: (index % self.fanout) as usize,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_datagram_has_no_blocks() {
        let shape = TreeShape::new(1, 44).unwrap();
        assert_eq!(shape.depth(), 0);
        assert_eq!(shape.loop_len(), 1);
        assert_eq!(shape.serial_of(0, 0), 0);
    }

    #[test]
    fn empty_is_rejected() {
        assert_eq!(TreeShape::new(0, 44), Err(ShapeError::Empty));
    }

    proptest! {
        /// Every node gets a distinct serial, every serial is used, and each block
        /// precedes all of its children (pre-order).
        #[test]
        fn serials_are_a_preorder_permutation(data in 1u32..20_000, fanout in 2u32..300) {
            let shape = TreeShape::new(data, fanout).unwrap();
            let mut seen = vec![false; shape.loop_len() as usize];
            for level in 0..=shape.depth() {
                for index in 0..shape.node_count(level) {
                    let serial = shape.serial_of(level, index) as usize;
                    prop_assert!(!seen[serial], "serial {} used twice", serial);
                    seen[serial] = true;
                    if level > 0 {
                        for child in shape.children(level, index) {
                            prop_assert!(shape.serial_of(level - 1, child) as usize > serial);
                        }
                    }
                }
            }
            prop_assert!(seen.iter().all(|&s| s));
            prop_assert!(shape.top_count() <= TOP_HASHES_MAX);
        }

        /// The file info's cheap check agrees with the tree it stands for.
        #[test]
        fn dimensions_agree_with_the_built_tree(data in 0u32..2_000_000, fanout in 0u32..300) {
            match (TreeShape::new(data, fanout), TreeShape::dimensions(data, fanout)) {
                (Ok(shape), Ok(tree)) => {
                    prop_assert_eq!(tree.loop_len, shape.loop_len());
                    prop_assert_eq!(tree.top_count, shape.top_count());
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
            }
        }
    }
}
