//! The carousel (R9, R10): loops a file's datagrams, paced by a token bucket, with repairs
//! served ahead of the loop within a bounded share of the rate.
//!
//! Pacing only: who is listening (membership, expiry) is the server endpoint's business
//! (`crate::endpoint`); a carousel sends whenever its driver asks. Drive it like this:
//! 1. `queue_repair` for NAKed ranges;
//! 2. call `poll_transmit(now)` until it returns `None`, sending each range it gives;
//! 3. sleep until `poll_timeout()`.
//!
//! A client joins at whatever serial is next: the loop does not restart for it. It has seen
//! every datagram once the loop has advanced `loop_len` datagrams past its join point.

use core::time::Duration;
use std::collections::VecDeque;

use std::net::SocketAddr;

use crate::time::Instant;

/// Opaque id of a client session on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarouselConfig {
    pub loop_len: u32,
    pub datagram_size: u16,
    /// Target rate in bits per second of UDP payload; 0 = unpaced.
    pub rate_bits_per_s: u64,
    /// Largest number of datagrams handed out by one `poll_transmit`.
    pub batch_datagrams_max: u32,
    /// Largest share of the rate repairs may take while the loop also has work, in percent
    /// (1..=100). At 50 the loop sends at least one datagram for every repair, so a flood of
    /// NAKs can slow the loop to half its rate but never stop it (R10 fairness).
    pub repair_share_percent: u8,
}

/// The default repair share: half the channel's rate.
pub const REPAIR_SHARE_PERCENT_DEFAULT: u8 = 50;
/// Repair credit saved up at most, in datagrams (a burst of repairs after a quiet spell).
const REPAIR_CREDIT_DATAGRAMS_MAX: u64 = 64;
/// Loop datagrams handed out at most per poll while repairs wait, so the two interleave.
const LOOP_RUN_WHILE_REPAIRING_MAX: u32 = 64;

/// A contiguous run of serials to send now: `first .. first + count`, never wrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub first: u32,
    pub count: u32,
    /// A repair sent ahead of the loop (R10), not the loop's own progress.
    pub repair: bool,
    /// A repair for one receiver (a unicast session): only it needs it. `None`: every
    /// destination of the channel (the loop itself, or a repair for a multicast group).
    pub to: Option<SocketAddr>,
}

/// Ranges at most waiting for repair on one carousel; more are refused (and counted by the
/// caller) rather than grown without bound by a flood of NAKs.
pub const REPAIR_QUEUE_MAX: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairError {
    /// The range is empty or runs past the end of the loop.
    OutOfRange,
    /// `REPAIR_QUEUE_MAX` distinct ranges are already waiting.
    Full,
}

/// Token bucket over bytes. Tokens are kept in byte-nanoseconds-per-second units
/// (bytes * 1e9) so integer arithmetic loses nothing between polls.
#[derive(Clone, Copy, Debug)]
struct TokenBucket {
    rate_bytes_per_s: u64,
    tokens_scaled: u128,
    burst_scaled: u128,
    last_refill: Instant,
}

const NANOS_PER_S: u128 = 1_000_000_000;
/// Largest quantum of a slow paced channel, in datagrams (see `set_rate`).
const PACED_QUANTUM_MAX_SMALL_DATAGRAMS: u64 = 8;
/// Most datagrams a paced channel may send at once to catch up after a late wake-up.
const PACED_CATCH_UP_DATAGRAMS_MAX: u64 = 64;

impl TokenBucket {
    fn new(rate_bits_per_s: u64, burst_bytes: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate_bytes_per_s: rate_bits_per_s / 8,
            tokens_scaled: 0,
            burst_scaled: u128::from(burst_bytes) * NANOS_PER_S,
            last_refill: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = u128::from(now.as_nanos().saturating_sub(self.last_refill.as_nanos()));
        self.last_refill = self.last_refill.max(now);
        self.tokens_scaled = (self.tokens_scaled + elapsed * u128::from(self.rate_bytes_per_s))
            .min(self.burst_scaled);
    }

    fn available_bytes(&self) -> u64 {
        u64::try_from(self.tokens_scaled / NANOS_PER_S).unwrap_or(u64::MAX)
    }

    fn take(&mut self, bytes: u64) {
        let scaled = u128::from(bytes) * NANOS_PER_S;
        assert!(scaled <= self.tokens_scaled, "token bucket overdrawn");
        self.tokens_scaled -= scaled;
    }

    /// When `bytes` tokens will be available.
    fn ready_at(&self, bytes: u64) -> Instant {
        let needed = (u128::from(bytes) * NANOS_PER_S).saturating_sub(self.tokens_scaled);
        if needed == 0 || self.rate_bytes_per_s == 0 {
            return self.last_refill;
        }
        let wait_nanos = needed.div_ceil(u128::from(self.rate_bytes_per_s));
        self.last_refill + Duration::from_nanos(u64::try_from(wait_nanos).unwrap_or(u64::MAX))
    }
}

pub struct Carousel {
    config: CarouselConfig,
    next_serial: u32,
    sent_total: u64,
    bucket: Option<TokenBucket>,
    /// Datagrams per wake-up when paced: about 1 ms of the rate, at least 1.
    paced_batch_datagrams: u32,
    /// Repair allowance in percent-datagrams: a loop datagram earns `share`, a repair costs
    /// `100 - share` (see `CarouselConfig::repair_share_percent`).
    repair_credit: u64,
    /// Repairs waiting, in the order asked, overlapping and adjacent ranges merged.
    repairs: VecDeque<Transmit>,
}

impl Carousel {
    pub fn new(config: CarouselConfig, now: Instant) -> Carousel {
        assert!(config.loop_len > 0, "a loop has at least one datagram");
        assert!(config.datagram_size > 0, "datagram size must be positive");
        assert!(
            config.batch_datagrams_max > 0,
            "batches hold at least one datagram"
        );
        assert!(
            (1..=100).contains(&config.repair_share_percent),
            "repair share is 1..=100 percent, got {}",
            config.repair_share_percent
        );
        let mut carousel = Carousel {
            config,
            next_serial: 0,
            sent_total: 0,
            bucket: None,
            paced_batch_datagrams: 1,
            repair_credit: Self::repair_credit_max(config.repair_share_percent),
            repairs: VecDeque::new(),
        };
        carousel.set_rate(config.rate_bits_per_s, now);
        carousel
    }

    pub fn config(&self) -> &CarouselConfig {
        &self.config
    }

    /// Changes the rate while running. The bucket starts empty at the new rate.
    pub fn set_rate(&mut self, rate_bits_per_s: u64, now: Instant) {
        self.config.rate_bits_per_s = rate_bits_per_s;
        if rate_bits_per_s == 0 {
            self.bucket = None;
            return;
        }
        let size = u64::from(self.config.datagram_size);
        // Quantum: about 1 ms of the rate, but up to 8 datagrams (one GSO send instead of
        // eight) as long as that is no more than 5 ms of the rate: a rate measured over 100 ms
        // then sees at most 5 % of quantisation error, while many slow channels cost few
        // syscalls (each send costs the kernel ~4 µs whatever its size, so 1,000 channels at
        // 10 Mbit/s in 1-datagram sends would need more than one core).
        let per_ms = rate_bits_per_s / 8 / 1000 / size;
        let per_5ms = rate_bits_per_s / 8 / 200 / size;
        let quantum = per_ms.max(per_5ms.min(PACED_QUANTUM_MAX_SMALL_DATAGRAMS));
        self.paced_batch_datagrams =
            u32::try_from(quantum.clamp(1, u64::from(self.config.batch_datagrams_max)))
                .expect("clamped to a u32");
        // Burst: two quanta, or up to 20 ms of the rate (at most 64 datagrams) if that is more,
        // so a sender thread that is descheduled for a few milliseconds catches up instead of
        // losing rate, without line-rate bursts of more than a few dozen datagrams.
        let per_20ms = rate_bits_per_s / 8 / 50 / size;
        let burst_datagrams = (2 * u64::from(self.paced_batch_datagrams))
            .max(per_20ms.min(PACED_CATCH_UP_DATAGRAMS_MAX));
        let burst = burst_datagrams * size;
        self.bucket = Some(TokenBucket::new(rate_bits_per_s, burst, now));
    }

    /// How long one paced quantum takes at the current rate; `None` when unpaced. Drivers with
    /// many channels start each one at a different phase within this interval, so their
    /// deadlines spread over time instead of all falling due at once.
    pub fn quantum_interval(&self) -> Option<Duration> {
        let bucket = self.bucket.as_ref()?;
        let bytes = u128::from(self.paced_batch_datagrams) * u128::from(self.config.datagram_size);
        let nanos = bytes * NANOS_PER_S / u128::from(bucket.rate_bytes_per_s.max(1));
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    pub fn next_serial(&self) -> u32 {
        self.next_serial
    }

    /// Continues the loop from `serial` (a new tier starts where the tier its clients come
    /// from is, so they continue where they were instead of going over what they hold).
    pub fn skip_to(&mut self, serial: u32) {
        if serial < self.config.loop_len {
            self.next_serial = serial;
        }
    }

    pub fn sent_total(&self) -> u64 {
        self.sent_total
    }

    pub fn loops_completed(&self) -> u64 {
        self.sent_total / u64::from(self.config.loop_len)
    }

    /// Queues `first .. first + count` to be sent ahead of the loop, at the channel's rate. A
    /// range overlapping or adjoining one already waiting is merged into it, so repeated NAKs for
    /// the same loss cost one repair.
    pub fn queue_repair(
        &mut self,
        first: u32,
        count: u32,
        to: Option<SocketAddr>,
    ) -> Result<(), RepairError> {
        let end = first.checked_add(count).ok_or(RepairError::OutOfRange)?;
        if count == 0 || end > self.config.loop_len {
            return Err(RepairError::OutOfRange);
        }
        for queued in self.repairs.iter_mut().filter(|q| q.to == to) {
            let queued_end = queued.first + queued.count;
            if first <= queued_end && queued.first <= end {
                let merged_first = queued.first.min(first);
                queued.count = queued_end.max(end) - merged_first;
                queued.first = merged_first;
                return Ok(());
            }
        }
        if self.repairs.len() >= REPAIR_QUEUE_MAX {
            return Err(RepairError::Full);
        }
        if self.repairs.capacity() == 0 {
            // Allocated once, on the first repair: channels that never repair cost nothing.
            self.repairs.reserve_exact(REPAIR_QUEUE_MAX);
        }
        self.repairs.push_back(Transmit {
            first,
            count,
            repair: true,
            to,
        });
        Ok(())
    }

    /// Datagrams waiting for repair.
    pub fn repairs_pending(&self) -> u64 {
        self.repairs.iter().map(|r| u64::from(r.count)).sum()
    }

    fn repair_credit_max(share_percent: u8) -> u64 {
        REPAIR_CREDIT_DATAGRAMS_MAX * u64::from(100 - share_percent).max(1)
    }

    /// Repair datagrams the share allows now (all of them at a share of 100).
    fn repairs_allowed(&self) -> u32 {
        let share = self.config.repair_share_percent;
        if share >= 100 {
            return u32::MAX;
        }
        u32::try_from(self.repair_credit / u64::from(100 - share)).unwrap_or(u32::MAX)
    }

    /// The next range to send now, or `None` (pacing says wait).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        // Repairs go ahead of the loop within their share; both draw on the same tokens, so
        // the rate holds.
        let repairs_allowed = self.repairs_allowed();
        let repairing = self.repairs.front().is_some() && repairs_allowed > 0;
        let wanted = match self.repairs.front() {
            Some(repair) if repairing => repair.count.min(repairs_allowed),
            Some(_) => (self.config.loop_len - self.next_serial).min(LOOP_RUN_WHILE_REPAIRING_MAX),
            None => self.config.loop_len - self.next_serial,
        };
        let size = u64::from(self.config.datagram_size);
        let count = match &mut self.bucket {
            None => self.config.batch_datagrams_max.min(wanted),
            Some(bucket) => {
                bucket.refill(now);
                let affordable = bucket.available_bytes() / size;
                if affordable == 0 {
                    return None;
                }
                let count = u32::try_from(affordable)
                    .unwrap_or(u32::MAX)
                    .min(self.config.batch_datagrams_max)
                    .min(wanted);
                bucket.take(u64::from(count) * size);
                count
            }
        };
        debug_assert!(count > 0, "a transmit carries at least one datagram");
        let share = u64::from(self.config.repair_share_percent);
        if repairing {
            let repair = self.repairs.front_mut().expect("checked above");
            let transmit = Transmit {
                first: repair.first,
                count,
                repair: true,
                to: repair.to,
            };
            repair.first += count;
            repair.count -= count;
            if repair.count == 0 {
                self.repairs.pop_front();
            }
            if share < 100 {
                let cost = u64::from(count) * (100 - share);
                debug_assert!(
                    cost <= self.repair_credit,
                    "repairs stay within their share"
                );
                self.repair_credit -= cost;
            }
            return Some(transmit);
        }
        let transmit = Transmit {
            first: self.next_serial,
            count,
            repair: false,
            to: None,
        };
        self.next_serial += count;
        if self.next_serial == self.config.loop_len {
            self.next_serial = 0;
        }
        self.sent_total += u64::from(count);
        self.repair_credit = (self.repair_credit + u64::from(count) * share)
            .min(Self::repair_credit_max(self.config.repair_share_percent));
        Some(transmit)
    }

    /// When the driver should next call `poll_transmit`. A past instant means "now".
    pub fn poll_timeout(&self) -> Instant {
        match &self.bucket {
            None => Instant::ZERO,
            Some(bucket) => bucket.ready_at(
                u64::from(self.paced_batch_datagrams) * u64::from(self.config.datagram_size),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(loop_len: u32, rate_bits_per_s: u64) -> CarouselConfig {
        CarouselConfig {
            loop_len,
            datagram_size: 1440,
            rate_bits_per_s,
            batch_datagrams_max: 44,
            repair_share_percent: 100,
        }
    }

    #[test]
    fn loops_round_and_counts_loops() {
        let mut carousel = Carousel::new(config(100, 0), Instant::ZERO);
        let mut sent = 0u64;
        for _ in 0..10 {
            sent += u64::from(carousel.poll_transmit(Instant::ZERO).unwrap().count);
        }
        assert!(sent > 100, "the loop wrapped");
        assert!(carousel.loops_completed() >= 1);
    }

    #[test]
    fn a_repair_flood_takes_at_most_its_share_and_the_loop_keeps_advancing() {
        let mut cfg = config(10_000, 0);
        cfg.repair_share_percent = REPAIR_SHARE_PERCENT_DEFAULT;
        let mut carousel = Carousel::new(cfg, Instant::ZERO);
        let (mut loop_sent, mut repair_sent) = (0u64, 0u64);
        for round in 0..2_000u32 {
            // A receiver (or an attacker) keeps the repair queue full.
            let _ = carousel.queue_repair((round * 37) % 9_000, 200, None);
            let t = carousel.poll_transmit(Instant::ZERO).unwrap();
            if t.repair {
                repair_sent += u64::from(t.count);
            } else {
                loop_sent += u64::from(t.count);
            }
        }
        assert!(loop_sent > 0, "the loop advanced");
        assert!(
            repair_sent <= loop_sent + REPAIR_CREDIT_DATAGRAMS_MAX,
            "repairs {repair_sent} exceed half the traffic (loop {loop_sent})"
        );
        assert!(
            repair_sent * 2 >= loop_sent,
            "repairs still got their share: {repair_sent} vs {loop_sent}"
        );
    }

    #[test]
    fn repairs_go_ahead_of_the_loop_at_the_channel_rate_without_moving_it() {
        let rate = 10_000_000;
        let mut carousel = Carousel::new(config(1000, rate), Instant::ZERO);
        let mut now = Instant::ZERO;
        let mut loop_sent = 0u64;
        while loop_sent < 100 {
            if let Some(t) = carousel.poll_transmit(now) {
                assert!(!t.repair);
                loop_sent += u64::from(t.count);
            }
            now = carousel.poll_timeout().max(now);
        }
        let serial_before = carousel.next_serial();
        let seen_before = carousel.sent_total();
        carousel.queue_repair(500, 10, None).unwrap();
        carousel.queue_repair(505, 10, None).unwrap(); // overlaps: merged into 500..515
        carousel.queue_repair(515, 5, None).unwrap(); // adjoins: merged into 500..520
        carousel.queue_repair(900, 2, None).unwrap();
        assert_eq!(carousel.repairs_pending(), 22);
        let mut repaired = Vec::new();
        let start = now;
        while repaired.len() < 22 {
            if let Some(t) = carousel.poll_transmit(now) {
                assert!(t.repair, "nothing of the loop goes out while repairs wait");
                assert!(t.first + t.count <= 1000);
                repaired.extend(t.first..t.first + t.count);
            }
            now = carousel.poll_timeout().max(now);
        }
        let expected: Vec<u32> = (500..520).chain(900..902).collect();
        assert_eq!(
            repaired, expected,
            "each asked serial once, in the order asked"
        );
        assert_eq!(
            carousel.next_serial(),
            serial_before,
            "the loop position is untouched"
        );
        assert_eq!(
            carousel.sent_total(),
            seen_before,
            "repairs do not count as loop progress"
        );
        // 22 datagrams at 10 Mbit/s take about 25 ms: repairs are paced like the loop.
        let took = now.saturating_since(start);
        let at_rate = Duration::from_secs_f64(22.0 * 1440.0 * 8.0 / rate as f64);
        assert!(
            took + Duration::from_millis(10) >= at_rate,
            "repairs took {took:?}, at rate {at_rate:?}"
        );
        assert!(
            !carousel
                .poll_transmit(now + Duration::from_secs(1))
                .unwrap()
                .repair
        );
    }

    #[test]
    fn repair_requests_out_of_range_or_beyond_the_queue_are_refused() {
        let mut carousel = Carousel::new(config(1000, 0), Instant::ZERO);
        assert_eq!(
            carousel.queue_repair(0, 0, None),
            Err(RepairError::OutOfRange)
        );
        assert_eq!(
            carousel.queue_repair(999, 2, None),
            Err(RepairError::OutOfRange)
        );
        assert_eq!(
            carousel.queue_repair(u32::MAX, 2, None),
            Err(RepairError::OutOfRange)
        );
        for index in 0..REPAIR_QUEUE_MAX as u32 {
            carousel.queue_repair(index * 3, 1, None).unwrap();
        }
        assert_eq!(carousel.queue_repair(999, 1, None), Err(RepairError::Full));
        assert_eq!(
            carousel.queue_repair(3, 1, None),
            Ok(()),
            "a repeat merges even when full"
        );
        assert_eq!(carousel.repairs_pending(), REPAIR_QUEUE_MAX as u64);
    }

    /// Drives a paced carousel on virtual time for `seconds` and returns bytes sent.
    fn run_paced(carousel: &mut Carousel, start: Instant, seconds: u64) -> u64 {
        let end = start + Duration::from_secs(seconds);
        let mut now = start;
        let mut bytes = 0u64;
        while now < end {
            while let Some(t) = carousel.poll_transmit(now) {
                bytes += u64::from(t.count) * 1440;
            }
            let next = carousel.poll_timeout();
            assert!(next > now, "pacing must make progress");
            now = next;
        }
        bytes
    }

    proptest! {
        /// A member joining at any point has been sent every serial within one loop.
        #[test]
        fn late_joiner_sees_every_serial_within_one_loop(loop_len in 1u32..5000, skip in 0u32..20_000) {
            let mut carousel = Carousel::new(config(loop_len, 0), Instant::ZERO);
            let mut skipped = 0;
            while skipped < skip {
                skipped += carousel.poll_transmit(Instant::ZERO).unwrap().count;
            }
            let mut seen = vec![false; loop_len as usize];
            let mut sent = 0u32;
            while sent < loop_len {
                let t = carousel.poll_transmit(Instant::ZERO).unwrap();
                prop_assert!(t.first + t.count <= loop_len, "transmits never wrap");
                let take = t.count.min(loop_len - sent);
                for serial in t.first..t.first + take {
                    seen[serial as usize] = true;
                }
                sent += t.count;
            }
            prop_assert!(seen.iter().all(|&s| s));
        }

        /// Whatever repairs are asked, the serials sent as repairs are exactly the union of
        /// the ranges accepted, and no more datagrams than were asked.
        #[test]
        fn repairs_send_exactly_what_was_asked(
            loop_len in 1u32..3000,
            asks in proptest::collection::vec((0u32..3000, 1u32..200), 0..300),
        ) {
            let mut carousel = Carousel::new(config(loop_len, 0), Instant::ZERO);
            let mut wanted = vec![false; loop_len as usize];
            let mut asked = 0u64;
            for (first, count) in asks {
                match carousel.queue_repair(first, count, None) {
                    Ok(()) => {
                        for serial in first..first + count {
                            wanted[serial as usize] = true;
                        }
                        asked += u64::from(count);
                    }
                    Err(RepairError::OutOfRange) => prop_assert!(first + count > loop_len),
                    Err(RepairError::Full) => {}
                }
            }
            let mut got = vec![false; loop_len as usize];
            let mut sent = 0u64;
            while let Some(t) = carousel.poll_transmit(Instant::ZERO) {
                if !t.repair {
                    break;
                }
                for serial in t.first..t.first + t.count {
                    got[serial as usize] = true;
                }
                sent += u64::from(t.count);
            }
            prop_assert_eq!(got, wanted);
            prop_assert!(sent <= asked);
            prop_assert_eq!(carousel.repairs_pending(), 0);
        }

        /// Paced output stays within 2% of the target over 2 virtual seconds, and still after a re-rate.
        #[test]
        fn pacing_holds_rate(rate_mbit in 1u64..2000, new_rate_mbit in 1u64..2000) {
            let rate = rate_mbit * 1_000_000;
            let mut carousel = Carousel::new(config(1000, rate), Instant::ZERO);
            let bytes = run_paced(&mut carousel, Instant::ZERO, 2);
            let achieved = bytes as f64 * 8.0 / 2.0;
            prop_assert!((achieved / rate as f64 - 1.0).abs() < 0.02, "rate {} got {}", rate, achieved);

            let start = Instant::ZERO + Duration::from_secs(2);
            let new_rate = new_rate_mbit * 1_000_000;
            carousel.set_rate(new_rate, start);
            let bytes = run_paced(&mut carousel, start, 2);
            let achieved = bytes as f64 * 8.0 / 2.0;
            prop_assert!((achieved / new_rate as f64 - 1.0).abs() < 0.02, "re-rate {} got {}", new_rate, achieved);
        }
    }
}
