//! Receiver state (R9, R14): which datagrams of a file a client holds and has verified.
//!
//! The driver hands every received datagram to [`Receiver::handle_datagram`]. The answer
//! says whether to store it (at `archive_offset(serial)`) or drop it, and why. Verification
//! needs no key: each datagram's BLAKE3 hash must match the hash in its parent block, and the
//! top hashes are vouched for by the root (the hash of the file info).
//!
//! A datagram whose parent block has not arrived yet (a client that joined mid-loop) is stored
//! and its hash kept as *pending*; it becomes verified when the parent arrives and matches.
//! Pending state is bounded; past the bound a datagram is dropped (it comes round again).
//!
//! What a pending datagram waits for is named at once ([`Receiver::take_wanted_blocks`]): its
//! ancestors that are neither verified nor pending themselves. They lie behind it in the loop
//! (pre-order), so without an ask they come only with the next pass or the end of a backward
//! walk: a client that joined mid-loop of a 209 MiB file, whose two top blocks each cover half of
//! it, held half of what it had received unverified until the end (progress showed 27 % at
//! 10 s of 18 s, and an interrupt kept only the verified half).

use std::collections::HashMap;

use crate::bitmap::Bitmap;
use crate::info::FileInfo;
use crate::layout::{Parent, TreeShape, HASH_LEN};
use crate::wire::datagram::{payload, DatagramHeader, DatagramKind};

/// Pending data hashes held at most (about 64 MiB of state at the bound).
pub const PENDING_DATA_MAX: usize = 1 << 20;
/// Bytes of pending hash-block payloads held at most.
pub const PENDING_BLOCK_BYTES_MAX: usize = 64 << 20;
/// Wanted hash blocks not yet taken by the caller, at most (a join names one per level).
pub const WANTED_BLOCKS_MAX: usize = 64;
/// Rejected pending serials not yet taken by the caller, at most (one per forged datagram held).
pub const REJECTED_MAX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a loopcast datagram, or its header is malformed.
    Malformed,
    /// A datagram of another file (or another loop length).
    Foreign,
    /// Its length is not the archive's datagram size.
    WrongSize,
    /// (level, index) do not exist in this tree, or the serial does not match them.
    BadPosition,
    /// Its hash differs from the one its verified parent gives: corrupt or forged.
    HashMismatch,
    /// Its parent has not arrived and pending state is full.
    PendingFull,
    /// A different copy of the same serial is already pending: the first one kept decides
    /// (forged or genuine, never both).
    PendingConflict,
    /// The same copy of the serial is already pending. Not a duplicate: nothing proves it
    /// genuine yet, and a forger can send its copy twice (a duplicate passes for the loop's
    /// position, which NAK planning and the loss meter follow).
    PendingDuplicate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write the datagram at `serial`'s slot. `verified` says whether it is already proven;
    /// if not, it is pending until its parent arrives.
    Store {
        serial: u32,
        verified: bool,
    },
    /// Already held, and this copy is the genuine datagram (its hash matched).
    Duplicate {
        serial: u32,
    },
    Dropped(DropReason),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverCounters {
    pub received: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub dropped_malformed: u64,
    pub dropped_foreign: u64,
    pub dropped_wrong_size: u64,
    pub dropped_bad_position: u64,
    pub dropped_hash_mismatch: u64,
    pub dropped_pending_full: u64,
    pub dropped_pending_conflict: u64,
    pub dropped_pending_duplicate: u64,
    /// Pending datagrams that failed verification once their parent arrived.
    pub pending_rejected: u64,
}

impl ReceiverCounters {
    /// Datagrams that failed their hash check: at once against a hash block held, or once the
    /// block they waited for arrived. Genuine datagrams never do: they were damaged or forged.
    pub fn failed_hash(&self) -> u64 {
        self.dropped_hash_mismatch + self.pending_rejected
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_malformed
            + self.dropped_foreign
            + self.dropped_wrong_size
            + self.dropped_bad_position
            + self.dropped_hash_mismatch
            + self.dropped_pending_full
            + self.dropped_pending_conflict
            + self.dropped_pending_duplicate
            + self.pending_rejected
    }
}

struct PendingBlock {
    hash: [u8; 32],
    payload: Box<[u8]>,
}

pub struct Receiver {
    info: FileInfo,
    shape: TreeShape,
    have: Bitmap,
    /// Verified hash-block payloads: `blocks[level - 1][index]`.
    blocks: Vec<Vec<Option<Box<[u8]>>>>,
    pending_data: HashMap<u32, [u8; 32]>,
    pending_blocks: HashMap<(u8, u32), PendingBlock>,
    pending_block_bytes: usize,
    /// Serials of hash blocks that pending datagrams wait for, not yet taken by the caller.
    wanted_blocks: Vec<u32>,
    /// Serials whose pending copy failed verification, not yet taken by the caller.
    rejected: Vec<u32>,
    counters: ReceiverCounters,
}

impl Receiver {
    /// A receiver for a file whose info the caller has checked against the root.
    pub fn new(info: FileInfo) -> Receiver {
        let shape = info.shape().expect("a parsed FileInfo has a valid shape");
        let blocks = (1..=shape.depth())
            .map(|level| vec![None; shape.node_count(level) as usize])
            .collect();
        Receiver {
            have: Bitmap::new(shape.loop_len()),
            info,
            shape,
            blocks,
            pending_data: HashMap::new(),
            pending_blocks: HashMap::new(),
            pending_block_bytes: 0,
            wanted_blocks: Vec::new(),
            rejected: Vec::new(),
            counters: ReceiverCounters::default(),
        }
    }

    /// Resumes from a persisted bitmap (R14). Hash blocks marked as held are re-read through
    /// `read_slot` and re-verified top-down; any that fail (or whose parent is not held) are
    /// forgotten. Data bits are kept as they are: the client's whole-file check before
    /// publishing proves them (a failure is forgotten through `recheck_serial`).
    pub fn resume(
        info: FileInfo,
        have: Bitmap,
        mut read_slot: impl FnMut(u32) -> Option<Vec<u8>>,
    ) -> Receiver {
        let mut receiver = Receiver::new(info);
        assert_eq!(
            have.len(),
            receiver.shape.loop_len(),
            "bitmap length must match the loop"
        );
        receiver.have = have;
        for level in (1..=receiver.shape.depth()).rev() {
            for index in 0..receiver.shape.node_count(level) {
                let serial = receiver.shape.serial_of(level, index);
                if !receiver.have.get(serial) {
                    continue;
                }
                let verified = match (receiver.expected_hash(level, index), read_slot(serial)) {
                    (Some(expected), Some(bytes)) => {
                        *blake3::hash(&bytes).as_bytes() == expected
                            && bytes.len() == usize::from(receiver.info.datagram_size)
                    }
                    _ => false,
                };
                if verified {
                    let bytes = read_slot(serial).expect("read just above");
                    let header = DatagramHeader::parse(&bytes).expect("hash-verified bytes parse");
                    receiver.blocks[usize::from(level) - 1][index as usize] =
                        Some(payload(&bytes, &header).into());
                } else {
                    receiver.have.clear(serial);
                }
            }
        }
        // Data whose level-1 block is gone cannot be trusted either.
        if receiver.shape.depth() >= 1 {
            for index in 0..receiver.shape.data_count() {
                let serial = receiver.shape.serial_of(0, index);
                if receiver.have.get(serial) && receiver.expected_hash(0, index).is_none() {
                    receiver.have.clear(serial);
                }
            }
        }
        receiver
    }

    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    pub fn shape(&self) -> &TreeShape {
        &self.shape
    }

    pub fn have(&self) -> &Bitmap {
        &self.have
    }

    pub fn counters(&self) -> ReceiverCounters {
        self.counters
    }

    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    pub fn pending_count(&self) -> usize {
        self.pending_data.len() + self.pending_blocks.len()
    }

    /// The serials of the hash blocks that datagrams held pending since the last call wait
    /// for (ancestors neither verified nor pending), highest level first for each, each once
    /// per call, at most `WANTED_BLOCKS_MAX`. The caller asks for them ahead of the loop
    /// ([`crate::nak::NakPlanner::want_block`]). Nothing here is proven: a forged datagram names
    /// the blocks above its claimed position, which are genuine blocks of this file that
    /// verification needs anyway.
    pub fn take_wanted_blocks(&mut self) -> std::vec::Drain<'_, u32> {
        self.wanted_blocks.drain(..)
    }

    /// The serials whose pending copy failed verification when its parent arrived since the
    /// last call (forged, or damaged): not held after all, to be received again. Their copy
    /// was counted as arrived ([`crate::nak::NakPlanner::saw_unverified`]); the caller tells
    /// the NAK planner ([`crate::nak::NakPlanner::forget`]). At most `REJECTED_MAX`.
    pub fn take_rejected(&mut self) -> std::vec::Drain<'_, u32> {
        self.rejected.drain(..)
    }

    fn note_rejected(&mut self, level: u8, index: u32) {
        self.counters.pending_rejected += 1;
        if self.rejected.len() < REJECTED_MAX {
            self.rejected.push(self.shape.serial_of(level, index));
        }
    }

    /// Notes the ancestors of (level, index) that are neither verified nor pending.
    fn want_missing_ancestors(&mut self, level: u8, index: u32) {
        let first = self.wanted_blocks.len();
        let (mut level, mut index) = (level, index);
        while let Parent::Block {
            level: parent_level,
            index: parent_index,
            ..
        } = self.shape.parent(level, index)
        {
            (level, index) = (parent_level, parent_index);
            if self.blocks[usize::from(level) - 1][index as usize].is_some() {
                break;
            }
            let serial = self.shape.serial_of(level, index);
            if !self.pending_blocks.contains_key(&(level, index))
                && !self.wanted_blocks.contains(&serial)
                && self.wanted_blocks.len() < WANTED_BLOCKS_MAX
            {
                self.wanted_blocks.push(serial);
            }
        }
        // Highest first: the loop's own order (pre-order), and each verifies the next.
        self.wanted_blocks[first..].reverse();
    }

    /// The hash that node (level, index) must have, if its parent is verified.
    pub fn expected_hash(&self, level: u8, index: u32) -> Option<[u8; 32]> {
        let (hashes, slot): (&[u8], usize) = match self.shape.parent(level, index) {
            Parent::Top { slot } => return self.info.top_hashes.get(slot).copied(),
            Parent::Block { level, index, slot } => (
                self.blocks[usize::from(level) - 1][index as usize].as_deref()?,
                slot,
            ),
        };
        let start = slot * HASH_LEN;
        let mut out = [0u8; 32];
        out.copy_from_slice(hashes.get(start..start + HASH_LEN)?);
        Some(out)
    }

    pub fn handle_datagram(&mut self, bytes: &[u8]) -> Outcome {
        self.handle_datagram_hashed(bytes, None)
    }

    /// As [`Receiver::handle_datagram`], with the datagram's BLAKE3 hash already computed by
    /// the caller (e.g. for a whole batch across threads). `hash` must be `blake3::hash(bytes)`
    /// of these very bytes: it is trusted (a pending datagram is kept under it until its parent
    /// arrives), and debug builds check it.
    pub fn handle_datagram_hashed(&mut self, bytes: &[u8], hash: Option<&[u8; 32]>) -> Outcome {
        self.counters.received += 1;
        let outcome = self.classify(bytes, hash);
        match outcome {
            Outcome::Store { .. } => self.counters.stored += 1,
            Outcome::Duplicate { .. } => self.counters.duplicates += 1,
            Outcome::Dropped(reason) => {
                let counter = match reason {
                    DropReason::Malformed => &mut self.counters.dropped_malformed,
                    DropReason::Foreign => &mut self.counters.dropped_foreign,
                    DropReason::WrongSize => &mut self.counters.dropped_wrong_size,
                    DropReason::BadPosition => &mut self.counters.dropped_bad_position,
                    DropReason::HashMismatch => &mut self.counters.dropped_hash_mismatch,
                    DropReason::PendingFull => &mut self.counters.dropped_pending_full,
                    DropReason::PendingConflict => &mut self.counters.dropped_pending_conflict,
                    DropReason::PendingDuplicate => &mut self.counters.dropped_pending_duplicate,
                };
                *counter += 1;
            }
        }
        outcome
    }

    fn classify(&mut self, bytes: &[u8], precomputed: Option<&[u8; 32]>) -> Outcome {
        let Ok(header) = DatagramHeader::parse(bytes) else {
            return Outcome::Dropped(DropReason::Malformed);
        };
        if header.file_id != self.info.file_id || header.loop_len != self.info.loop_len {
            return Outcome::Dropped(DropReason::Foreign);
        }
        if bytes.len() != usize::from(self.info.datagram_size) {
            return Outcome::Dropped(DropReason::WrongSize);
        }
        let (level, index) = (header.level, header.index);
        if !self.shape.contains(level, index)
            || self.shape.serial_of(level, index) != header.serial.0
        {
            return Outcome::Dropped(DropReason::BadPosition);
        }
        let serial = header.serial.0;
        let hash = match precomputed {
            Some(hash) => {
                debug_assert_eq!(
                    hash,
                    blake3::hash(bytes).as_bytes(),
                    "a precomputed hash must be the hash of these bytes"
                );
                *hash
            }
            None => *blake3::hash(bytes).as_bytes(),
        };
        if self.have.get(serial) {
            // Held already: a duplicate only if it is the genuine datagram (a replayed or forged
            // copy must not pass for the loop's position, which NAK planning follows).
            return match self.expected_hash(level, index) {
                Some(expected) if expected == hash => Outcome::Duplicate { serial },
                _ => Outcome::Dropped(DropReason::HashMismatch),
            };
        }
        match self.expected_hash(level, index) {
            Some(expected) if expected == hash => {
                self.accept(level, index, payload(bytes, &header));
                Outcome::Store {
                    serial,
                    verified: true,
                }
            }
            Some(_) => Outcome::Dropped(DropReason::HashMismatch),
            None => self.hold_pending(&header, hash, bytes),
        }
    }

    fn hold_pending(&mut self, header: &DatagramHeader, hash: [u8; 32], bytes: &[u8]) -> Outcome {
        let serial = header.serial.0;
        match header.kind {
            DatagramKind::Data => {
                // One copy per serial until its parent decides: the first one kept stays, a
                // different one is dropped (the bytes a caller stored are then always the bytes
                // whose hash is pending; if the first was forged, the serial is received again).
                match self.pending_data.get(&header.index) {
                    Some(kept) if *kept == hash => {
                        return Outcome::Dropped(DropReason::PendingDuplicate)
                    }
                    Some(_) => return Outcome::Dropped(DropReason::PendingConflict),
                    None => {}
                }
                if self.pending_data.len() >= PENDING_DATA_MAX {
                    return Outcome::Dropped(DropReason::PendingFull);
                }
                self.pending_data.insert(header.index, hash);
            }
            DatagramKind::HashBlock => {
                let block = payload(bytes, header);
                let key = (header.level, header.index);
                match self.pending_blocks.get(&key) {
                    Some(kept) if kept.hash == hash => {
                        return Outcome::Dropped(DropReason::PendingDuplicate)
                    }
                    Some(_) => return Outcome::Dropped(DropReason::PendingConflict),
                    None => {}
                }
                let replaced = 0;
                if self.pending_block_bytes - replaced + block.len() > PENDING_BLOCK_BYTES_MAX {
                    return Outcome::Dropped(DropReason::PendingFull);
                }
                self.pending_block_bytes = self.pending_block_bytes - replaced + block.len();
                self.pending_blocks.insert(
                    key,
                    PendingBlock {
                        hash,
                        payload: block.into(),
                    },
                );
            }
        }
        self.want_missing_ancestors(header.level, header.index);
        Outcome::Store {
            serial,
            verified: false,
        }
    }

    /// Marks a verified node as held; for a hash block, stores it and resolves pending children.
    fn accept(&mut self, level: u8, index: u32, block_payload: &[u8]) {
        let mut work: Vec<(u8, u32, Box<[u8]>)> = Vec::new();
        self.mark_held(level, index);
        if level == 0 {
            return;
        }
        work.push((level, index, block_payload.into()));
        while let Some((level, index, hashes)) = work.pop() {
            self.blocks[usize::from(level) - 1][index as usize] = Some(hashes);
            for child in self.shape.children(level, index) {
                let expected = self
                    .expected_hash(level - 1, child)
                    .expect("parent block was stored just above");
                if level - 1 == 0 {
                    if let Some(hash) = self.pending_data.remove(&child) {
                        if hash == expected {
                            self.mark_held(0, child);
                        } else {
                            self.note_rejected(0, child);
                        }
                    }
                } else if let Some(pending) = self.pending_blocks.remove(&(level - 1, child)) {
                    self.pending_block_bytes -= pending.payload.len();
                    if pending.hash == expected {
                        self.mark_held(level - 1, child);
                        work.push((level - 1, child, pending.payload));
                    } else {
                        self.note_rejected(level - 1, child);
                    }
                }
            }
        }
    }

    fn mark_held(&mut self, level: u8, index: u32) {
        let serial = self.shape.serial_of(level, index);
        self.have.set(serial);
    }

    /// Final pass before publishing, for any node: re-hash the datagram held at `serial` as
    /// read back from storage. A mismatch (or bytes that are not that node's datagram at all)
    /// forgets it (it will be received again) and returns false.
    pub fn recheck_serial(&mut self, serial: u32, stored: &[u8]) -> bool {
        let node = DatagramHeader::parse(stored).ok().filter(|h| {
            self.shape.contains(h.level, h.index)
                && self.shape.serial_of(h.level, h.index) == serial
        });
        let good = node.is_some_and(|h| {
            self.expected_hash(h.level, h.index) == Some(*blake3::hash(stored).as_bytes())
        });
        if !good && serial < self.have.len() {
            self.have.clear(serial);
        }
        good
    }
}

#[cfg(test)]
mod tests;
