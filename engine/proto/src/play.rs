//! Play position (R13, `get --follow`): how much of a file can be played while it arrives.
//!
//! The original's bytes are in the frame stream, which the data datagrams carry in *data*
//! order (index 0, 1, ...), while the loop sends them in *loop* order (pre-order, hash blocks
//! between). A follower can play the frame stream up to the first data datagram it does not
//! hold verified: the *verified prefix*. [`PlayCursor`] keeps that prefix as the receiver's
//! bitmap fills, and names the loop serial the follower needs next, so the NAK planner can
//! ask for what lies right after the play position first ([`crate::nak::NakPlanner::set_play_position`]).
//!
//! ```text
//!  loop order:  B2 B1 d0 d1 d2 B1 d3 d4 d5 ...      (B = hash block, d = data)
//!  data order:  d0 d1 d2 d3 d4 d5 ...  ──prefix──▶ frame-stream bytes playable
//! ```
//!
//! Sans-IO: it reads a bitmap and a tree shape and does arithmetic.

use crate::bitmap::Bitmap;
use crate::info::FileInfo;
use crate::layout::TreeShape;

/// The verified prefix of a file's data datagrams, in data order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlayCursor {
    /// Data datagrams `0 .. next_data` are all held (verified).
    next_data: u32,
}

impl PlayCursor {
    pub fn new() -> PlayCursor {
        PlayCursor { next_data: 0 }
    }

    /// Moves over the held data datagrams that follow the prefix; returns the prefix length
    /// (in data datagrams). `have` is the receiver's bitmap, indexed by loop serial, whose set
    /// bits are verified datagrams.
    pub fn advance(&mut self, shape: &TreeShape, have: &Bitmap) -> u32 {
        assert_eq!(have.len(), shape.loop_len(), "bitmap of another loop");
        while self.next_data < shape.data_count() && have.get(shape.serial_of(0, self.next_data)) {
            self.next_data += 1;
        }
        self.next_data
    }

    /// Data datagrams `0 .. prefix` are held.
    pub fn prefix(&self) -> u32 {
        self.next_data
    }

    /// The prefix no longer holds from `index` on (a datagram failed a re-check and is to be
    /// received again).
    pub fn retreat_to(&mut self, index: u32) {
        self.next_data = self.next_data.min(index);
    }

    /// Frame-stream bytes `0 .. n` carried by the prefix.
    pub fn stream_bytes(&self, info: &FileInfo) -> u64 {
        (u64::from(self.next_data) * info.payload_capacity() as u64).min(info.frame_stream_len)
    }

    /// True once the whole frame stream is in the prefix.
    pub fn is_complete(&self, shape: &TreeShape) -> bool {
        self.next_data == shape.data_count()
    }

    /// The loop serial playback waits for: the first data datagram after the prefix or, if
    /// one of its hash-block ancestors is missing (it cannot be verified without them), the
    /// highest missing one. Walking the loop forward from that serial visits the ancestors'
    /// first children down to that datagram and then the data after it (pre-order): exactly
    /// what playback needs next, in that order. `None` once the prefix is complete.
    pub fn wanted_serial(&self, shape: &TreeShape, have: &Bitmap) -> Option<u32> {
        if self.is_complete(shape) {
            return None;
        }
        let mut wanted = shape.serial_of(0, self.next_data);
        let mut index = self.next_data;
        for level in 1..=shape.depth() {
            index /= shape.fanout();
            let serial = shape.serial_of(level, index);
            if !have.get(serial) {
                wanted = serial;
            }
        }
        Some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(shape: &TreeShape, serials: impl IntoIterator<Item = u32>) -> Bitmap {
        let mut have = Bitmap::new(shape.loop_len());
        for serial in serials {
            have.set(serial);
        }
        have
    }

    #[test]
    fn the_prefix_follows_data_order_not_loop_order() {
        // fanout 4, 160 data: level 1 has 40 blocks, level 2 has 10 (<= 16: top).
        let shape = TreeShape::new(160, 4).unwrap();
        assert_eq!(shape.depth(), 2);
        let data = |i: u32| shape.serial_of(0, i);
        let mut cursor = PlayCursor::new();
        // The loop joined mid-file: data 10..40 held, none before.
        let mut have = held(&shape, (10..160).map(data));
        assert_eq!(cursor.advance(&shape, &have), 0);
        // Data 0..5 arrive (repairs): the prefix is 5, not 160.
        for i in 0..5 {
            have.set(data(i));
        }
        assert_eq!(cursor.advance(&shape, &have), 5);
        // 5..10 arrive: the prefix joins what was held and runs to the end.
        for i in 5..10 {
            have.set(data(i));
        }
        assert_eq!(cursor.advance(&shape, &have), 160);
        assert!(cursor.is_complete(&shape));
        assert_eq!(cursor.wanted_serial(&shape, &have), None);
    }

    #[test]
    fn the_wanted_serial_is_the_highest_missing_ancestor_then_the_data() {
        let shape = TreeShape::new(160, 4).unwrap();
        let cursor = PlayCursor::new();
        let nothing = Bitmap::new(shape.loop_len());
        // Nothing held: the level-2 block over data 0 comes first in the loop (serial 0).
        assert_eq!(shape.serial_of(2, 0), 0);
        assert_eq!(cursor.wanted_serial(&shape, &nothing), Some(0));
        // With the level-2 block held, its first level-1 block is wanted.
        let have = held(&shape, [shape.serial_of(2, 0)]);
        assert_eq!(
            cursor.wanted_serial(&shape, &have),
            Some(shape.serial_of(1, 0))
        );
        // With both held, the data itself.
        let have = held(&shape, [shape.serial_of(2, 0), shape.serial_of(1, 0)]);
        assert_eq!(
            cursor.wanted_serial(&shape, &have),
            Some(shape.serial_of(0, 0))
        );
        // Mid-group: data 0..6 held with their blocks; data 6 is wanted.
        let mut have = held(&shape, (0..6).map(|i| shape.serial_of(0, i)));
        for (level, index) in [(2, 0), (1, 0), (1, 1)] {
            have.set(shape.serial_of(level, index));
        }
        let mut cursor = PlayCursor::new();
        assert_eq!(cursor.advance(&shape, &have), 6);
        assert_eq!(
            cursor.wanted_serial(&shape, &have),
            Some(shape.serial_of(0, 6))
        );
    }

    #[test]
    fn stream_bytes_stop_at_the_end_of_the_frame_stream_and_retreat_moves_back() {
        // A stream of 10.5 datagrams' payload: the last datagram is short.
        let capacity = crate::info::payload_capacity(1440) as u64;
        let info = crate::testkit::sample_info(10 * capacity + capacity / 2, 1440, 1);
        let shape = info.shape().unwrap();
        let mut cursor = PlayCursor::new();
        let all = held(&shape, 0..shape.loop_len());
        assert_eq!(cursor.advance(&shape, &all), shape.data_count());
        assert_eq!(cursor.stream_bytes(&info), info.frame_stream_len);
        assert!(info.frame_stream_len <= u64::from(shape.data_count()) * capacity);
        cursor.retreat_to(3);
        assert_eq!(cursor.prefix(), 3);
        assert_eq!(cursor.stream_bytes(&info), 3 * capacity);
        cursor.retreat_to(7);
        assert_eq!(cursor.prefix(), 3, "retreat never moves forward");
    }
}
