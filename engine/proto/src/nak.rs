//! Client-side NAK planning (R10): which serials the loop has gone past without them arriving,
//! and when to ask the server to send them again ahead of the loop.
//!
//! The loop visits serials in order, wrapping at `loop_len`. The planner follows the highest
//! serial seen in the current pass (the *frontier*) and a *cursor* that trails it: everything
//! between the cursor and the frontier (less a small reordering margin) has gone by, so any
//! serial there that was not seen is lost. Each poll scans forward from the cursor, gathers up
//! to `NAK_RANGES_MAX` missing ranges and moves the cursor past them. Ranges asked for are
//! remembered (up to `OUTSTANDING_MAX`); whatever of them is still missing `repair_timeout`
//! later is asked for again (a repair can be lost too, typically in the same overload that lost
//! the original). Past that bound, the loop itself brings a serial round again.
//!
//! Datagrams that arrive out of loop order (repairs, reordering) never move the frontier
//! backwards: a serial counts as "ahead" only if it is less than half a loop past the frontier.
//!
//! NAK suppression between multicast receivers (Timer A, the NAK data timer) is not here yet:
//! the server merges duplicate ranges in its repair queue instead.

use core::time::Duration;
use std::collections::VecDeque;

use crate::bitmap::Bitmap;
use crate::time::Instant;
use crate::wire::control::NAK_RANGES_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NakConfig {
    /// At most one NAK per interval.
    pub interval: Duration,
    /// Serials this close behind the frontier are not yet counted as lost (they may still be
    /// in flight out of order).
    pub reorder_margin: u32,
    /// A range asked for and still (partly) missing this long after is asked for again.
    pub repair_timeout: Duration,
}

/// Asked-for ranges remembered for re-asking at most.
pub const OUTSTANDING_MAX: usize = 4096;

impl Default for NakConfig {
    fn default() -> NakConfig {
        NakConfig {
            interval: Duration::from_millis(10),
            reorder_margin: 256,
            repair_timeout: Duration::from_millis(100),
        }
    }
}

pub struct NakPlanner {
    config: NakConfig,
    seen: Bitmap,
    /// Highest serial seen in the current pass, and the scan position trailing it.
    frontier: Option<u32>,
    cursor: u32,
    /// How far the frontier and the cursor have moved in all, so a cursor a whole loop
    /// behind is told apart from one that has caught up.
    frontier_travel: u64,
    cursor_travel: u64,
    last_nak: Option<Instant>,
    /// Ranges asked for, oldest first, with when they were asked.
    outstanding: VecDeque<(u32, u32, Instant)>,
    naks_sent: u64,
    serials_naked: u64,
}

impl NakPlanner {
    /// A planner for a loop of `held.len()` serials, of which those set in `held` are already
    /// held (e.g. after a resume).
    pub fn new(config: NakConfig, held: &Bitmap) -> NakPlanner {
        assert!(!held.is_empty(), "a loop has at least one serial");
        NakPlanner {
            config,
            seen: held.clone(),
            frontier: None,
            cursor: 0,
            frontier_travel: 0,
            cursor_travel: 0,
            last_nak: None,
            outstanding: VecDeque::new(),
            naks_sent: 0,
            serials_naked: 0,
        }
    }

    fn loop_len(&self) -> u32 {
        self.seen.len()
    }

    /// Distance going forward from `from` to `to` around the loop.
    fn ahead(&self, from: u32, to: u32) -> u32 {
        if to >= from {
            to - from
        } else {
            self.loop_len() - from + to
        }
    }

    /// Records that `serial` arrived (stored, or a duplicate of something held).
    pub fn saw(&mut self, serial: u32) {
        if serial >= self.loop_len() {
            return;
        }
        self.seen.set(serial);
        match self.frontier {
            None => {
                // The first serial of this session: the loop joined here, so scanning starts here.
                self.frontier = Some(serial);
                self.cursor = serial;
            }
            Some(frontier) => {
                let ahead = self.ahead(frontier, serial);
                if ahead > 0 && ahead < self.loop_len().div_ceil(2) {
                    self.frontier = Some(serial);
                    self.frontier_travel += u64::from(ahead);
                }
            }
        }
    }

    /// When `poll_nak` may next have something to send; `None` before the first datagram.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.frontier?;
        Some(match self.last_nak {
            None => Instant::ZERO,
            Some(at) => at + self.config.interval,
        })
    }

    /// The ranges to NAK now (`first`, `count`), or `None` if it is too early or nothing that
    /// has gone by is missing.
    pub fn poll_nak(&mut self, now: Instant) -> Option<Vec<(u32, u32)>> {
        let frontier = self.frontier?;
        if self
            .last_nak
            .is_some_and(|at| now.saturating_since(at) < self.config.interval)
        {
            return None;
        }
        let loop_len = self.loop_len();
        if self.frontier_travel - self.cursor_travel > u64::from(loop_len) {
            // More than a loop behind: the oldest part has come round again; rescan one loop.
            self.cursor = frontier;
            self.cursor_travel = self.frontier_travel - u64::from(loop_len);
        }
        let gone_by = u32::try_from(self.frontier_travel - self.cursor_travel)
            .expect("at most one loop")
            .saturating_sub(self.config.reorder_margin);
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        // First what was asked before and is still missing after the repair timeout.
        while let Some(&(first, count, asked)) = self.outstanding.front() {
            if now.saturating_since(asked) < self.config.repair_timeout
                || ranges.len() == NAK_RANGES_MAX
            {
                break;
            }
            self.outstanding.pop_front();
            let mut serial = first;
            while serial < first + count && ranges.len() < NAK_RANGES_MAX {
                if self.seen.get(serial) {
                    serial += 1;
                    continue;
                }
                let start = serial;
                while serial < first + count && !self.seen.get(serial) {
                    serial += 1;
                }
                ranges.push((start, serial - start));
            }
            if serial < first + count {
                // No room left in this NAK: the rest waits at the front for the next one.
                self.outstanding
                    .push_front((serial, first + count - serial, asked));
            }
        }
        let mut scanned = 0u32;
        while scanned < gone_by {
            let serial = self.cursor;
            if !self.seen.get(serial) {
                // Ranges never wrap: one ending at the loop's end cannot be extended by 0.
                let extends = ranges
                    .last()
                    .is_some_and(|&(first, count)| first + count == serial);
                if extends {
                    ranges.last_mut().expect("checked").1 += 1;
                } else if ranges.len() == NAK_RANGES_MAX {
                    break;
                } else {
                    ranges.push((serial, 1));
                }
            }
            scanned += 1;
            self.cursor_travel += 1;
            self.cursor = if serial + 1 == loop_len {
                0
            } else {
                serial + 1
            };
        }
        if ranges.is_empty() {
            return None;
        }
        for &(first, count) in &ranges {
            if self.outstanding.len() < OUTSTANDING_MAX {
                self.outstanding.push_back((first, count, now));
            }
        }
        self.last_nak = Some(now);
        self.naks_sent += 1;
        self.serials_naked += ranges.iter().map(|&(_, n)| u64::from(n)).sum::<u64>();
        Some(ranges)
    }

    pub fn naks_sent(&self) -> u64 {
        self.naks_sent
    }

    /// Serials asked for, counting a serial again each time it is asked.
    pub fn serials_naked(&self) -> u64 {
        self.serials_naked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn planner(loop_len: u32, margin: u32) -> NakPlanner {
        NakPlanner::new(
            NakConfig {
                interval: Duration::from_millis(10),
                reorder_margin: margin,
                // Long: these tests look at first asks; `lost_repairs_are_asked_again` at re-asks.
                repair_timeout: Duration::from_secs(3600),
            },
            &Bitmap::new(loop_len),
        )
    }

    #[test]
    fn nothing_to_ask_before_anything_arrives_or_when_nothing_is_missing() {
        let mut nak = planner(100, 0);
        assert_eq!(nak.poll_timeout(), None);
        assert_eq!(nak.poll_nak(Instant::ZERO), None);
        for serial in 10..50 {
            nak.saw(serial);
        }
        assert_eq!(nak.poll_nak(Instant::ZERO), None);
    }

    #[test]
    fn gaps_behind_the_frontier_are_asked_once_and_rate_limited() {
        let mut nak = planner(1000, 4);
        for serial in (100..200).filter(|s| !(120..125).contains(s) && *s != 150) {
            nak.saw(serial);
        }
        let t0 = Instant::ZERO + Duration::from_secs(1);
        assert_eq!(nak.poll_nak(t0), Some(vec![(120, 5), (150, 1)]));
        // Too soon for another NAK, and nothing new has gone by anyway.
        assert_eq!(nak.poll_nak(t0 + Duration::from_millis(1)), None);
        assert_eq!(nak.poll_timeout(), Some(t0 + Duration::from_millis(10)));
        // Repairs arrive out of order: they do not move the frontier backwards.
        nak.saw(150);
        nak.saw(120);
        for serial in 200..300 {
            nak.saw(serial);
        }
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(20)),
            None,
            "asked once per pass"
        );
        assert_eq!(nak.naks_sent(), 1);
        assert_eq!(nak.serials_naked(), 6);
    }

    #[test]
    fn lost_repairs_are_asked_again_after_the_repair_timeout() {
        let mut nak = NakPlanner::new(
            NakConfig {
                interval: Duration::from_millis(10),
                reorder_margin: 0,
                repair_timeout: Duration::from_millis(100),
            },
            &Bitmap::new(1000),
        );
        nak.saw(0);
        nak.saw(100);
        let t0 = Instant::ZERO;
        assert_eq!(nak.poll_nak(t0), Some(vec![(1, 99)]));
        // Part of the repair arrives; the rest is lost again.
        for serial in 1..50 {
            nak.saw(serial);
        }
        nak.saw(70);
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(50)),
            None,
            "not yet"
        );
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(100)),
            Some(vec![(50, 20), (71, 29)]),
            "only what is still missing"
        );
        for serial in 50..100 {
            nak.saw(serial);
        }
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(300)),
            None,
            "all repaired"
        );
    }

    #[test]
    fn the_reorder_margin_holds_back_the_newest_gaps() {
        let mut nak = planner(1000, 10);
        nak.saw(0);
        nak.saw(15);
        // 1..15 is missing, but 5..15 is within 10 of the frontier: only 1..5 is lost yet.
        assert_eq!(nak.poll_nak(Instant::ZERO), Some(vec![(1, 4)]));
        nak.saw(40);
        assert_eq!(
            nak.poll_nak(Instant::ZERO + Duration::from_millis(10)),
            Some(vec![(5, 10), (16, 14)])
        );
    }

    #[test]
    fn the_pass_wraps_at_the_end_of_the_loop_without_a_wrapping_range() {
        let mut nak = planner(100, 0);
        nak.saw(90);
        nak.saw(99);
        nak.saw(30);
        // 30 is 31 ahead of 99: the frontier moved on; 91..99 and 0..30 are lost.
        assert_eq!(nak.poll_nak(Instant::ZERO), Some(vec![(91, 8), (0, 30)]));
    }

    #[test]
    fn a_resumed_planner_does_not_ask_for_what_it_holds() {
        let mut held = Bitmap::new(100);
        for serial in 0..50 {
            held.set(serial);
        }
        let mut nak = NakPlanner::new(NakConfig::default(), &held);
        let mut nak_margin0 = NakPlanner::new(
            NakConfig {
                reorder_margin: 0,
                ..NakConfig::default()
            },
            &held,
        );
        for planner in [&mut nak, &mut nak_margin0] {
            planner.saw(10);
            planner.saw(49);
        }
        assert_eq!(nak_margin0.poll_nak(Instant::ZERO), None);
    }

    proptest! {
        /// Whatever arrives, over passes of the loop every serial that never arrived is asked
        /// for, no held serial is ever asked for, and ranges are non-empty, in the loop, bounded.
        #[test]
        fn every_lost_serial_is_asked_and_nothing_held(
            loop_len in 1u32..2000,
            start in 0u32..2000,
            lost in proptest::collection::vec(any::<bool>(), 2000),
        ) {
            let start = start % loop_len;
            // Loss bursts shorter than half the loop (a longer burst holds the frontier back
            // until the next pass), and the pass's last serial arrives.
            let every = (loop_len / 4).max(1);
            let arrives = |step: u32| step.is_multiple_of(every) || step == loop_len - 1;
            let mut nak = planner(loop_len, 0);
            let mut asked = vec![false; loop_len as usize];
            let mut now = Instant::ZERO;
            // One pass starting at `start`, with some serials lost, then the start serial
            // again (the next pass begins), so the whole pass has gone by.
            for step in 0..loop_len {
                let serial = (start + step) % loop_len;
                if !lost[serial as usize] || arrives(step) {
                    nak.saw(serial);
                }
                if step % 97 == 0 {
                    now = now + Duration::from_millis(10);
                    while let Some(ranges) = nak.poll_nak(now) {
                        for (first, count) in ranges {
                            prop_assert!(count > 0 && first + count <= loop_len);
                            for s in first..first + count { asked[s as usize] = true; }
                        }
                        now = now + Duration::from_millis(10);
                    }
                }
            }
            nak.saw(start);
            loop {
                now = now + Duration::from_millis(10);
                match nak.poll_nak(now) {
                    Some(ranges) => {
                        prop_assert!(ranges.len() <= NAK_RANGES_MAX);
                        for (first, count) in ranges {
                            prop_assert!(count > 0 && first + count <= loop_len);
                            for s in first..first + count { asked[s as usize] = true; }
                        }
                    }
                    None => break,
                }
            }
            for serial in 0..loop_len {
                let step = (serial + loop_len - start) % loop_len;
                let arrived = !lost[serial as usize] || arrives(step);
                prop_assert_eq!(asked[serial as usize], !arrived, "serial {}", serial);
            }
        }
    }
}
