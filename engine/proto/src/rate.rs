//! Throughput, loss and round-trip estimates per client, and the rules that set each tier's
//! rate and put each client on a tier (R11, R12), sans-IO.
//!
//! ```text
//!  client: LossMeter (serial gaps) ─▶ Report{received, lost, interval, rtt} every 200 ms
//!  server: PathEstimate per session (EWMA with variance of goodput and loss; RTT; streak of
//!          congested reports; loss that stays when the rate drops = noise, not congestion)
//!  every control interval, per file:  plan(tiers) ─▶ tier rates (TierControl) + Moves
//! ```
//!
//! A tier is one channel of a file at one rate. The rules, per tier, on fresh reports (made
//! after the tier's last change had time to settle):
//! - nobody congested and the members keep up: the rate rises (doubling while nothing is known,
//!   then by 10 % a step, by 1 % near the rate where members last lost: probing, as TFMCC's
//!   increase after its slow start, RFC 4654 §4);
//! - some congested, others not (policy `Distribution`): the congested ones move to a slower
//!   tier near what actually reached them (an existing one, or a new one while the file has
//!   fewer than `tiers_max`); the others keep their rate: one slow receiver never slows the rest;
//! - everyone congested (or the policies with one tier): the rate drops to 90 % of what reached
//!   them (`Distribution`: the best of them, the others move next; `Slowest`: the worst;
//!   `Average`: the mean), like NORM-CC's rate set from the slowest receiver's report.
//! - "Congested" means a loss above `loss_congested` beyond the member's own noise, in
//!   `sustained_reports` reports in a row. A member whose loss stays when its rate drops has a
//!   noisy path, not a full one: that loss (less what a rate above the most it was seen to
//!   receive overflows) becomes its noise floor, so a lossy link cannot drag a rate to zero;
//!   its repairs stay on its own tier, away from the others.
//! - a tier whose rate rises near the next faster tier's merges into it (members keep their
//!   bitmaps; an empty tier closes); with no room for another tier, two within 10 % become one.
//! - a member that keeps up on a tier others hold back moves up to the next faster one
//!   (`climbs`, RLM's join experiments); if it loses there it moves back down, and may not try
//!   that rate again for 5 s, then 10, 20, up to 80 s.

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::time::Instant;

/// How a file's tier rates follow its clients (R11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierPolicy {
    /// Several tiers, each client on the one its measured throughput matches (default).
    Distribution,
    /// One tier at the clients' average throughput.
    Average,
    /// One tier at the slowest client's throughput (least common denominator).
    Slowest,
}

impl TierPolicy {
    pub fn name(self) -> &'static str {
        match self {
            TierPolicy::Distribution => "distribution",
            TierPolicy::Average => "average",
            TierPolicy::Slowest => "slowest",
        }
    }

    pub fn from_name(name: &str) -> Option<TierPolicy> {
        match name {
            "distribution" => Some(TierPolicy::Distribution),
            "average" => Some(TierPolicy::Average),
            "slowest" => Some(TierPolicy::Slowest),
            _ => None,
        }
    }
}

impl core::fmt::Display for TierPolicy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug)]
pub struct RateConfig {
    pub policy: TierPolicy,
    /// Tiers one file runs on at most (`Distribution`; the other policies use one).
    pub tiers_max: usize,
    /// The rate of a file's first tier, bits/s (it rises from there while nobody loses).
    pub initial_rate: u64,
    /// No tier goes faster (the operator's `--rate`), or slower.
    pub rate_max: u64,
    pub rate_min: u64,
    /// How often tier rates and assignments are reconsidered.
    pub control_interval: Duration,
    /// After a tier's rate changes, reports are read after this long. Out of slow start this
    /// is what paces increases near the path's rate and decreases (with a 100 ms step, 150 ms made
    /// a 5 Mbit/s tier probe twice as often and its receiver take 132-161 s for 32 MiB instead
    /// of 63-80 s).
    pub settle: Duration,
    /// After a slow-start increase, reports are read after this long. Zero: a client that
    /// hears of a slow-start rise starts a new report interval then, a round trip after the
    /// rise, so its next report is wholly at the new rate (a decrease's old queues take longer
    /// to drain: `settle`).
    pub probe_settle: Duration,
    /// After a member moves, its reports are read after this long (it changes groups: a switch
    /// without fast leave keeps sending it the old one for a while).
    pub move_settle: Duration,
    /// Loss (above the member's noise floor) that counts as congestion, as a fraction.
    pub loss_congested: f64,
    /// Congested reports in a row before anything is done about it (hysteresis).
    pub sustained_reports: u32,
    /// A member stays at least this long on a tier before it is moved again (hysteresis).
    pub dwell: Duration,
    /// How long the rate at which a tier's members last lost is remembered (increase slows
    /// near it).
    pub loss_memory: Duration,
}

impl Default for RateConfig {
    fn default() -> RateConfig {
        RateConfig {
            policy: TierPolicy::Distribution,
            tiers_max: 4,
            initial_rate: 1_000_000_000,
            rate_max: 40_000_000_000,
            rate_min: 1_000_000,
            control_interval: Duration::from_millis(50),
            settle: Duration::from_millis(250),
            probe_settle: Duration::ZERO,
            move_settle: Duration::from_millis(500),
            loss_congested: 0.02,
            sustained_reports: 2,
            dwell: Duration::from_secs(1),
            loss_memory: Duration::from_secs(10),
        }
    }
}

impl RateConfig {
    /// Tiers a file may have under this policy.
    pub fn tiers_allowed(&self) -> usize {
        match self.policy {
            TierPolicy::Distribution => self.tiers_max.max(1),
            TierPolicy::Average | TierPolicy::Slowest => 1,
        }
    }

    fn clamp(&self, rate: f64) -> u64 {
        (rate as u64).clamp(self.rate_min, self.rate_max.max(self.rate_min))
    }
}

/// An exponentially weighted moving average with its variance.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    mean: f64,
    variance: f64,
    samples: u64,
}

impl Ewma {
    pub fn update(&mut self, sample: f64, weight: f64) {
        debug_assert!((0.0..=1.0).contains(&weight), "EWMA weight within 0..=1");
        if self.samples == 0 {
            self.mean = sample;
            self.variance = 0.0;
        } else {
            let delta = sample - self.mean;
            self.mean += weight * delta;
            self.variance = (1.0 - weight) * (self.variance + weight * delta * delta);
        }
        self.samples += 1;
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn stddev(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }
}

/// Weight of a new report in the averages (about the last 4 reports, under a second).
const EWMA_WEIGHT: f64 = 0.25;
/// Shortest and longest interval a report may claim (anything else is clamped).
const REPORT_INTERVAL_MIN: Duration = Duration::from_millis(10);
const REPORT_INTERVAL_MAX: Duration = Duration::from_secs(10);

/// The longest claimed interval of a report that does not count (it straddled a change of its
/// tier) and still says its member kept up across the change (`kept_up_while_rising`,
/// `kept_up_uncounted_at`): twice a client's 200 ms. A report claiming 71 minutes never
/// counts, whenever it comes: one liar claiming that, everything received and nothing lost,
/// every 200 ms, was waited for for good, and held a tier at 80 Mbit/s over honest members'
/// 41 Mbit/s paths for 29.5 s, 48.5 % lost (atk26b G1). Within this, a report straddles only
/// while the tier changes, and counts once it holds.
const STRADDLING_KEPT_UP_INTERVAL_MAX: Duration = Duration::from_millis(400);

/// The interval a report's counts are read over: what it claims, clamped.
pub fn report_interval_read(claimed: Duration) -> Duration {
    claimed.clamp(REPORT_INTERVAL_MIN, REPORT_INTERVAL_MAX)
}

/// Loss above this in a report: the rate was far above the path, and what got through only a
/// floor of what the path carries.
const HEAVY_LOSS: f64 = 0.5;
/// A report over an interval wholly at its tier's rate that received less than this share of
/// what the tier sent lost the rest, whatever it counted (see [`PathEstimate::observe`]).
const SENT_SHORTFALL: f64 = 0.25;
/// A member whose noise floor is above this keeps its own tier (its repairs would burden
/// others).
const NOISY: f64 = 0.05;
/// A report that counts more than this many times the datagrams its tier sent over its
/// interval as lost counts gaps from before the interval.
const OVERCOUNTED: f64 = 1.5;
/// A report's loss is congestion only this many standard deviations of its sampling spread
/// (binomial, around the member's noise floor) above the floor, besides the margin.
const NOISE_SPREAD_SIGMAS: f64 = 2.0;
/// A noise floor follows a higher loss only at rates up to this ratio of the one it was learnt
/// at (see [`PathEstimate::observe`]).
const NOISE_FOLLOWS_UP_WITHIN: f64 = 1.05;

/// What a report can say about its member's tier as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counts {
    /// Made wholly after the tier's last change settled: everything in it counts.
    Settled,
    /// Made partly before, but the tier has only risen since: a loss in it counts (the member
    /// would lose at least as much now), its goodput does not. Without this, a member that
    /// cannot keep up on a tier that other members keep raising never makes a report that
    /// counts, and never moves.
    LossOnly,
    /// Made partly before a change that may have cured a loss: it says nothing.
    Unsettled,
    /// Made wholly on the member's new tier but before its move settled (`move_settle`): the
    /// old group may still crowd its link (a switch without fast leave floods it for a while),
    /// so a loss in it says nothing, but one that kept up without loss counts as settled: the
    /// new tier did reach it whole. (Read as nothing, a 500 Mbit/s receiver moved to a new tier
    /// at 359 Mbit/s waited 0.8 s for its first rise, most of a 32 MiB file.)
    CleanOnly,
    /// Made wholly on the member's new tier before its move settled, after the tier changed
    /// since the move: it counts as [`Counts::Settled`] for the rate (read only when clean, a
    /// floor ramp stepped past a 3 Gbit/s path: hx_attack17 R-B), but its loss may still be
    /// the old group's flood, not the path's own: it teaches no noise floor and no capacity.
    /// (Taken as the loss that stayed after the move, a flood of 450 ms taught a 50 Mbit/s
    /// receiver a 0.95 noise floor: never congested again, its tier went to 5 Gbit/s and stayed
    /// there: hx_attack23.)
    SettledInMove,
    /// Made after the tier's last change settled, by a client that could place no gaps
    /// (nothing it received since it joined or moved had verified: `Report::loss_judged`):
    /// only a shortfall against what the tier sent counts. Counted as no loss, such reports
    /// let a 5 Mbit/s receiver's new tier climb to 10 Mbit/s in the 4 s before its first hash
    /// block above the data came round.
    Unjudged,
}

impl Counts {
    pub fn settled_if(settled: bool) -> Counts {
        if settled {
            Counts::Settled
        } else {
            Counts::Unsettled
        }
    }
}

/// What the server knows of one client's path (R12), from its reports.
#[derive(Clone, Debug, Default)]
pub struct PathEstimate {
    goodput: Ewma,
    loss: Ewma,
    rtt: Option<Duration>,
    /// The last report's goodput (bits/s) and loss fraction.
    last_goodput: f64,
    /// The share of what its tier's sender really sent over the last report's interval that
    /// reached it (of the nominal rate where the sender's count is not known).
    last_sent_share: f64,
    last_loss: f64,
    /// Congested reports in a row.
    congested_streak: u32,
    /// Its last counted report got `SENT_KEEP_UP_SHARE` of what the sender really sent over
    /// its interval, where that fell short of the rate (`SENDER_SHORT_BELOW`).
    kept_up_with_short_sender: bool,
    /// Reports since the member's tier last changed (rate or membership) and settled.
    fresh_reports: u32,
    /// Reports since the last one that counted (see `just_lost`).
    uncounted_since: u32,
    /// Reports in a row, none of which counted, made while its tier only rose, each losing no
    /// more than `loss_congested` and receiving `CLIMB_KEEP_UP_SHARE` of what was sent: a
    /// member that keeps up with a tier that rises every few hundred milliseconds, whose
    /// reports all straddle a change (its own phase), never counts, and was never a candidate
    /// to climb (fleet simulation, seed 15: unlimited clients on a 500 Mbit/s tier rising and
    /// falling every 4 s for 26 s; s25).
    kept_up_while_rising: u32,
    /// Its latest report did not count (it straddled a change of its tier) but lost no more than
    /// `loss_congested` and got `CLIMB_KEEP_UP_SHARE` of what was sent: it kept up across the
    /// change. When the endpoint last heard such a report, see `kept_up_uncounted_at`.
    last_kept_up_uncounted: bool,
    /// When its latest report that kept up without counting came (see `may_yet_keep_up`):
    /// a member whose 200 ms reports all straddle its tier's changes never counts, and one
    /// liar whose 40 ms reports raised and lowered the tier every ~325 ms kept honest members'
    /// reports from ever counting and set the rate alone (honest 100 Mbit/s members at 0.198
    /// of their path: atk25 F2).
    kept_up_uncounted_at: Option<Instant>,
    /// When its last counted report came, where the endpoint says
    /// ([`PathEstimate::note_report_at`]); see `CONGESTION_STALE`.
    counted_at: Option<Instant>,
    /// Loss that stayed when the rate dropped: the path's own, not congestion.
    noise_loss: f64,
    /// The rate `noise_loss` was last learnt at (bits/s): near it the floor follows the loss both
    /// ways; away from it, up only as far as `noise_learnt`.
    noise_rate: u64,
    /// `noise_loss` as last learnt or followed near `noise_rate`: away from that rate the floor
    /// goes back up only to it.
    noise_learnt: f64,
    /// The loss that made the last decrease or move (to tell congestion from noise after it).
    loss_before_relief: Option<f64>,
    /// Goodput of its last congested report: what its path carries.
    known_capacity: Option<f64>,
    /// The most it has received in one report, never above the rate it was sent: what its
    /// path has been seen to take (see `COLLAPSE_SHARE`).
    best_goodput: f64,
    reports: u64,
    /// Its moves up to faster tiers, and where it may not try again yet.
    climb: Climb,
}

/// A member's tries at a faster tier (RLM's join experiments: McCanne, Jacobson and Vetterli,
/// 1996): a try that ends in a move back down bars that rate for a while, twice as long each
/// time it fails again, so a member whose path cannot take it tries rarely, and one whose
/// path grew gets there.
#[derive(Clone, Copy, Debug, Default)]
struct Climb {
    /// The rate of the tier it last moved up to, and when (a try, until it held there
    /// `CLIMB_PROVEN`).
    trying: Option<(u64, Instant)>,
    /// No move up to a tier at `rate` or faster before `until`: it was moved off one there.
    barred: Option<(u64, Instant)>,
    /// How long the next failed try bars (doubling).
    backoff: Duration,
}

/// Shortest and longest bar after a move down.
const CLIMB_BACKOFF_MIN: Duration = Duration::from_secs(5);
const CLIMB_BACKOFF_MAX: Duration = Duration::from_secs(80);
/// A member that stayed this long on the tier it moved up to made it: a later move down is
/// not a failed try (the bar starts from `CLIMB_BACKOFF_MIN` again).
const CLIMB_PROVEN: Duration = Duration::from_secs(10);

impl PathEstimate {
    /// One report: `received` and `lost` datagrams of `datagram_bits` over `interval`, at a tier
    /// running at `rate`, whose sender sent `sent` datagrams over the interval where known (it
    /// can fall short of the rate); `rtt` as the client measured it. Counts are hostile:
    /// goodput is clamped to twice the rate the client was sent (it cannot receive more).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        config: &RateConfig,
        received: u32,
        lost: u32,
        interval: Duration,
        datagram_bits: u64,
        rate: u64,
        sent: Option<u64>,
        rtt: Option<Duration>,
        counts: Counts,
    ) {
        let interval = report_interval_read(interval);
        self.last_kept_up_uncounted = false;
        let goodput = (f64::from(received) * datagram_bits as f64 / interval.as_secs_f64())
            .min(2.0 * rate as f64);
        self.goodput.update(goodput, EWMA_WEIGHT);
        self.last_goodput = goodput;
        self.best_goodput = self.best_goodput.max(goodput.min(rate as f64));
        self.reports += 1;
        if let Some(rtt) = rtt.filter(|rtt| *rtt < Duration::from_secs(10)) {
            self.rtt = Some(rtt);
        }
        // Far below its tier's rate, a client can place few gaps: most of what arrives waits
        // for hash blocks that were lost too, and the loop may go round between two arrivals
        // (a 5 Mbit/s receiver on a 1 Gbit/s tier reported 21 datagrams and no loss every
        // 50 ms for 1.6 s). What the tier sent over the whole interval is known here: received
        // under `SENT_SHORTFALL` of it, the rest was lost (with nothing received, the join may
        // not have taken yet). What was sent is the data plane's count where the driver gives
        // it: a sender can fall far short of its nominal rate (a 2-core host's 8 Gbit/s tier for
        // three receivers sent 2-4), and against the rate, full reports read as mostly lost.
        let nominal = rate as f64 * interval.as_secs_f64() / datagram_bits.max(1) as f64;
        let sent = sent.map_or(nominal, |sent| nominal.min(sent as f64));
        self.last_sent_share = if sent > 0.0 {
            f64::from(received) / sent
        } else {
            1.0
        };
        let kept_up_with_short_sender = sent < SENDER_SHORT_BELOW * nominal
            && sent > 0.0
            && f64::from(received) >= SENT_KEEP_UP_SHARE * sent;
        let short = matches!(
            counts,
            Counts::Settled | Counts::SettledInMove | Counts::Unjudged | Counts::CleanOnly
        ) && received > 0
            && f64::from(received) < SENT_SHORTFALL * sent;
        let lost = if short {
            lost.max((sent - f64::from(received)).min(f64::from(u32::MAX)) as u32)
        } else if counts == Counts::Unjudged {
            self.uncounted_since += 1;
            return;
        } else {
            lost
        };
        let placed = u64::from(received) + u64::from(lost);
        if placed == 0 {
            // Nothing arrived and nothing went by: no loss sample (e.g. the channel is idle).
            self.uncounted_since += 1;
            return;
        }
        // A report that places more than `OVERCOUNTED` times what its tier sent over its
        // interval, received and lost together, holds gaps from before it: a flood far past the
        // path leaves gaps that are placed as their hash blocks come, in the reports after it.
        // Its own interval lost at most what its arrivals fell short of what was sent: counted
        // whole, such reports kept clean receivers "congested" on a tier they took, and every
        // decrease of a tier they shared with a lossy receiver followed it down (three 50 Mbit/s
        // receivers at 13-20 Mbit/s for 8 s in the namespace bench). Honest reports place about
        // what was sent (a link's queue draining after a decrease adds a little).
        let overcounted = placed as f64 > OVERCOUNTED * sent.max(1.0);
        let (lost, total) = if overcounted {
            let lost_now = (sent - f64::from(received)).max(0.0);
            (lost_now, f64::from(received) + lost_now)
        } else {
            (f64::from(lost), placed as f64)
        };
        if total <= 0.0 {
            // Placed more than a tier that sent nothing: no loss sample either.
            self.uncounted_since += 1;
            return;
        }
        let loss = lost / total;
        self.loss.update(loss, EWMA_WEIGHT);
        self.last_loss = loss;
        // The margin also holds the report's own sampling spread around the noise: a report
        // of n datagrams on a path that drops a share p at random reads p within about
        // 2 sqrt(p (1 - p) / n) (at 20 % loss and a few Mbit/s, n is a few hundred and that is
        // 4-5 points: two such reports in a row read as congestion, and each cut the tier by
        // a third, down to 1.4 Mbit/s on a 50 Mbit/s path in the namespace bench).
        let noise = self.noise_loss;
        let spread = NOISE_SPREAD_SIGMAS * (noise * (1.0 - noise) / total).sqrt();
        let margin = config.loss_congested.max(0.25 * noise) + spread;
        let congested = loss - noise > margin;
        match counts {
            Counts::Settled | Counts::SettledInMove | Counts::Unjudged => {}
            // Lost at a rate the tier has only raised since: congested at today's too.
            Counts::LossOnly if congested => {}
            // Kept up on the new tier, whatever the old group still does to its link: no loss,
            // and nearly all that was sent. (A first report 23 ms after a move got 93 of 153
            // datagrams, the rest sent before the join took, and no loss: counted, its
            // goodput set a new 408.7 Mbit/s tier to 41.1.)
            Counts::CleanOnly
                if !congested && f64::from(received) >= FLOOR_KEEP_UP_SHARE * sent => {}
            // Made before the tier's last change settled: says nothing about it. But one made
            // while the tier only rose that got nearly all that was sent, without congestion's
            // loss, says the member kept up with it (see `kept_up_while_rising`).
            Counts::LossOnly | Counts::Unsettled | Counts::CleanOnly => {
                let kept_up = loss <= config.loss_congested
                    && f64::from(received) >= CLIMB_KEEP_UP_SHARE * sent
                    && interval <= STRADDLING_KEPT_UP_INTERVAL_MAX;
                self.last_kept_up_uncounted = kept_up;
                let kept_up_rising = kept_up && counts == Counts::LossOnly;
                self.kept_up_while_rising = if kept_up_rising {
                    self.kept_up_while_rising.saturating_add(1)
                } else {
                    0
                };
                self.uncounted_since += 1;
                return;
            }
        }
        self.kept_up_while_rising = 0;
        self.last_kept_up_uncounted = false;
        self.fresh_reports += 1;
        self.uncounted_since = 0;
        self.kept_up_with_short_sender = kept_up_with_short_sender;
        // An overcounted report says nothing about the path's own loss either (nine 50 Mbit/s
        // receivers relieved from a 1 Gbit/s start took 84 % from such a report for their
        // noise, were never congested again, and kept their tier 20-35 % above their links for
        // 10 s; counted on the lost alone, a flood's gaps over two reports were under 1.5x what
        // was sent in each and taught a 0.55 noise floor: hx_attack20 R5): the next report
        // decides.
        // Nor does one made while the old group may still crowd the link (it teaches no noise
        // floor and no capacity either): the loss kept from before the move waits for a report
        // after it settles.
        let of_the_path = counts != Counts::SettledInMove;
        if let Some(before) = self
            .loss_before_relief
            .take_if(|_| !overcounted && of_the_path)
        {
            // The rate dropped to what the path carried (or the member moved) because of
            // this loss: if it stayed, it is the path's own. Only what the path's measured
            // capacity does not explain: a rate still above it (a move to a tier within 5 %
            // of what reached the member) loses the excess whatever the path's noise is.
            // (Taken whole, a 50 Mbit/s member moved to a 51.4 Mbit/s tier learnt its 2.8 %
            // overflow as noise, and the floor then followed each gentle probe up to 6.6 %, on
            // a 53.6 Mbit/s tier, for good: the fleet simulation with the majority fall, s24.)
            let own = loss - self.loss_past_capacity(rate);
            if own >= 0.5 * before && own > config.loss_congested {
                self.noise_loss = self.noise_loss.max(own.min(before));
                self.noise_rate = rate;
                self.noise_learnt = self.noise_loss;
            }
        }
        // Congested: it loses beyond its noise (by more than the noise's own spread, about a
        // quarter of it). The round trip is kept and shown but does not decide: a client's
        // samples include its own wait between receive batches (up to tens of milliseconds at
        // low rates), which read as a queue that is not there and drove rates down in the
        // namespace tests.
        if congested {
            self.congested_streak += 1;
            if of_the_path {
                self.known_capacity = Some(goodput.min(rate as f64));
            }
        } else {
            self.congested_streak = 0;
            // The noise floor follows the path's loss while it is not congested: near the rate
            // it was learnt at, both ways; away from it, down, and up only as far as what was
            // learnt. Faster, a loss just under the margin may be the start of congestion:
            // followed past what was learnt, each such report raised the floor a tenth of the
            // margin, and the margin with it, until the member read as noisy and tiers held it
            // far below its path (hx_attack20 R7). Followed only down there, a lossy member's
            // floor sank to the low end of its reports' spread, and its own loss read as
            // congestion (a 5 Mbit/s tier capped above the rate its 10 % floor was learnt at
            // fell 12-16 times in 240 s, to 0.48 of the cap: hx_attack21 R1).
            // It follows a higher loss only as far as the path's measured capacity does not
            // explain it: above that capacity, a rate a step higher loses a step more, and
            // followed, the floor rose with each gentle probe past the path (a 50 Mbit/s
            // member's from 2.8 % to 6.6 %, its tier held at 53.6 Mbit/s: s24). Random loss
            // rises with the rate nowhere: what stays beyond the capacity's share is the path's.
            if self.noise_loss > 0.0 && of_the_path {
                let own = if loss > self.noise_loss {
                    (loss - self.loss_past_capacity(rate)).max(self.noise_loss)
                } else {
                    loss
                };
                let followed = 0.9 * self.noise_loss + 0.1 * own;
                if rate as f64 <= NOISE_FOLLOWS_UP_WITHIN * self.noise_rate as f64 {
                    self.noise_loss = followed;
                    self.noise_learnt = followed;
                } else {
                    self.noise_loss = followed.min(self.noise_loss.max(self.noise_learnt));
                }
            }
        }
    }

    /// The member's tier changed (its rate, or the member moved): reports from now on start a
    /// new count. With `relief` (a slower rate because it lost), the loss that caused it is
    /// kept, to tell afterwards whether it was congestion or the path's own.
    ///
    /// `relief` is the member's new rate if it is lower because someone lost. If it is within
    /// what the member's path carried, a loss that stays afterwards is the path's own (noise).
    pub fn new_epoch(&mut self, relief: Option<u64>) {
        if let Some(rate) = relief {
            let within = self
                .known_capacity
                .is_some_and(|capacity| rate as f64 <= 1.05 * capacity);
            if self.congested_streak > 0 && within {
                self.loss_before_relief = Some(self.last_loss);
            }
            self.congested_streak = 0;
        }
        self.fresh_reports = 0;
    }

    /// The member moved from a tier at `from_rate` to one at `to_rate`: reports start a new
    /// count ([`PathEstimate::new_epoch`]), and its tries at faster tiers are remembered. A
    /// move down (`relief`) bars `from_rate` and faster for `CLIMB_BACKOFF_MIN`, doubling
    /// (up to `CLIMB_BACKOFF_MAX`) while it is moved off each tier it tried.
    pub fn moved(&mut self, now: Instant, from_rate: u64, to_rate: u64, relief: bool) {
        self.new_epoch(relief.then_some(to_rate));
        self.kept_up_while_rising = 0;
        // Nothing counted yet on its new tier: what it said on the old one does not make it a
        // member the new tier waits for (`may_yet_keep_up`; one moved down because it lost,
        // its streak reset by the move, held a tier whose members all lost 1 s: hx_attack22 R4).
        self.counted_at = None;
        self.kept_up_uncounted_at = None;
        let climb = &mut self.climb;
        if relief {
            // Moved down within `CLIMB_PROVEN` of its last move up: that try failed, whatever
            // `from_rate` says (when everyone on a tier loses, its rate falls in the same plan
            // that moves them, and the endpoint reads it after: a try at 500 Mbit/s ended
            // "from" 400 and reset the bar to 5 s each time).
            let failed_try = climb
                .trying
                .is_some_and(|(_, at)| now.saturating_since(at) < CLIMB_PROVEN);
            let in_force = climb.barred.filter(|&(_, until)| now < until);
            climb.barred = match in_force {
                // A further step down while barred (moved off the tier it tried to one still
                // too fast, then on down): the bar stands, and covers this rate too. (It was
                // replaced by a fresh 5 s one: a member 2 tiers down tried every 5-7 s.)
                Some((rate, until)) if !failed_try => {
                    Some((rate.min(from_rate), until.max(now + CLIMB_BACKOFF_MIN)))
                }
                _ => {
                    climb.backoff = if failed_try {
                        (climb.backoff * 2).clamp(CLIMB_BACKOFF_MIN, CLIMB_BACKOFF_MAX)
                    } else {
                        CLIMB_BACKOFF_MIN
                    };
                    Some((from_rate, now + climb.backoff))
                }
            };
            climb.trying = None;
        } else if to_rate > from_rate {
            climb.trying = Some((to_rate, now));
        }
    }

    /// Whether a move up to a tier at `rate` is allowed now (not barred by a recent move down
    /// from there or slower).
    pub fn may_climb_to(&self, now: Instant, rate: u64) -> bool {
        self.climb
            .barred
            .is_none_or(|(barred, until)| now >= until || (rate as f64) < 0.95 * barred as f64)
    }

    pub fn goodput(&self) -> &Ewma {
        &self.goodput
    }

    pub fn loss(&self) -> &Ewma {
        &self.loss
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    pub fn reports(&self) -> u64 {
        self.reports
    }

    pub fn noise_loss(&self) -> f64 {
        self.noise_loss
    }

    /// Its last report lost most of what was sent: what reached it then is only a floor of what
    /// its path carries.
    pub fn heavy_loss(&self) -> bool {
        self.last_loss > HEAVY_LOSS
    }

    /// As [`PathEstimate::heavy_loss`], or what reached it was far below its tier's `rate`:
    /// far below it most of what arrives cannot be verified yet (the hash blocks were lost
    /// too), and a client that has verified nothing yet cannot place gaps (a 50 Mbit/s
    /// receiver on a 1 Gbit/s tier reported 10-38 % loss while receiving 3 % of it, and was
    /// moved to a tier that crept up in 1 % steps instead of ramping). Only for where a
    /// member moves: a tier's own nominal rate can be above what its sender manages, so this
    /// does not decide how a tier slows.
    pub fn overloaded(&self, rate: u64) -> bool {
        self.heavy_loss() || self.last_goodput < (1.0 - HEAVY_LOSS) * rate as f64
    }

    /// Its latest report counted and found loss: the tier waits for its next before going
    /// faster. Only the latest: a member that lost once and then sent only reports that do not
    /// count (a lying one claiming long intervals, or that it could place no gaps) held a
    /// shared tier's rate for good.
    fn just_lost(&self) -> bool {
        self.congested_streak > 0 && self.uncounted_since == 0
    }

    fn is_fresh(&self) -> bool {
        self.fresh_reports > 0
    }

    /// It kept up in its recent reports, counted or not (see `kept_up_while_rising`).
    fn kept_up_lately(&self) -> bool {
        self.is_fresh() || self.kept_up_while_rising >= KEPT_UP_WHILE_RISING_REPORTS
    }

    fn is_congested(&self, config: &RateConfig) -> bool {
        self.congested_streak >= config.sustained_reports
    }

    /// A report of this member was handled at `now` ([`PathEstimate::observe`] first): if it
    /// counted, its congestion is current as of `now` (see `CONGESTION_STALE`).
    pub fn note_report_at(&mut self, now: Instant) {
        if self.uncounted_since == 0 && self.reports > 0 {
            self.counted_at = Some(now);
        } else {
            self.kept_up_uncounted_at = self.last_kept_up_uncounted.then_some(now);
        }
    }

    /// Congested, and as of a counted report within `CONGESTION_STALE` where the endpoint
    /// told when ([`PathEstimate::note_report_at`]).
    fn holds_congestion(&self, config: &RateConfig, now: Instant) -> bool {
        self.is_congested(config) && self.counted_lately(now)
    }

    /// Its last counted report is within `CONGESTION_STALE` (or the endpoint did not say when).
    fn counted_lately(&self, now: Instant) -> bool {
        self.counted_at
            .is_none_or(|at| now.saturating_since(at) < CONGESTION_STALE)
    }

    /// Not heard since its tier last changed, but its last counted report, within
    /// `CONGESTION_STALE`, kept up, or a report that straddled a change did since, within it
    /// too (`kept_up_uncounted_at`): it will soon say whether it keeps up now (see `plan`).
    fn may_yet_keep_up(&self, now: Instant) -> bool {
        let kept_up_uncounted_lately = self
            .kept_up_uncounted_at
            .is_some_and(|at| now.saturating_since(at) < CONGESTION_STALE);
        !self.is_fresh()
            && self.congested_streak == 0
            && ((self.counted_at.is_some() && self.counted_lately(now)) || kept_up_uncounted_lately)
    }

    /// What reached the member in its last report: its path's capacity when congested
    /// (never above `rate`).
    fn capacity(&self, rate: u64) -> f64 {
        self.last_goodput.min(rate as f64)
    }

    /// How much more of a tier at `rate` than its noise floor the member would lose if its
    /// path took no more than the most it has been seen to receive (`best_goodput`, the floor
    /// taken off: a path that drops a share `n` at random and carries `c` receives `(1 - n) c`
    /// at most, so at `rate` it loses `1 - (1 - n) min(rate, c) / rate`). None at rates it has
    /// been seen to take. Not the capacity of its last congested report: that is often the
    /// very report whose loss stays and is learnt as noise (what the noise left of a rate
    /// below the path), and by it a 10 % floor learnt at 20 Mbit/s could not follow its path
    /// at 20.5.
    fn loss_past_capacity(&self, rate: u64) -> f64 {
        if self.best_goodput <= 0.0 {
            return 0.0;
        }
        ((1.0 - self.noise_loss) - self.best_goodput / rate.max(1) as f64).max(0.0)
    }

    /// The capacity measured the last time this member was congested, if ever.
    pub fn known_capacity(&self) -> Option<f64> {
        self.known_capacity
    }
}

/// One tier's rate and how it changes.
#[derive(Clone, Debug)]
pub struct TierControl {
    rate: u64,
    /// Nothing known yet: the rate doubles while nobody loses.
    slow_start: bool,
    /// The rate at which members last lost, and when.
    loss_rate: Option<(u64, Instant)>,
    /// Reports made before this say nothing about the current rate and membership.
    settled_at: Instant,
    /// Increases in a row past any remembered loss: after a few, the path seems to have grown
    /// and slow start resumes (capacity found again in seconds, not minutes).
    clean_increases: u32,
    /// Increases in a row near the rate where it last lost.
    near_increases: u32,
    /// Slow start from a floor (what reached members under a heavy overload): gentler steps,
    /// and a loss in it is where the path is.
    from_floor: bool,
    /// Its rate has only risen since it opened or last fell.
    rising: bool,
    /// Its rate last fell to a floor, and nothing is remembered since: slow start resumes
    /// gently (see [`TierControl::decrease_to`]).
    floored: bool,
    /// In slow start, the last rate its members kept up with (the one it rose from last): a
    /// collapse on the next step falls no lower than 90 % of it (not from a floor, whose steps
    /// are small and whose members' path is near; see [`TierControl::decrease_to`]).
    kept_up_at: Option<u64>,
    /// Since when a member that just lost has kept it from rising (see `JUST_LOST_HOLD_MAX`).
    held_since: Option<Instant>,
}

impl TierControl {
    /// A tier in slow start: its first report is read as soon as the rate shows, as after
    /// every slow-start step.
    pub fn new(config: &RateConfig, now: Instant, rate: u64) -> TierControl {
        TierControl {
            rate: config.clamp(rate as f64),
            slow_start: true,
            loss_rate: None,
            settled_at: now + config.probe_settle,
            clean_increases: 0,
            near_increases: 0,
            from_floor: false,
            rising: true,
            floored: false,
            kept_up_at: None,
            held_since: None,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Still doubling: each report that counts may raise it at once.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// Its rate has only risen since it opened or last fell: a loss reported from before the
    /// latest rise still counts ([`Counts::LossOnly`]).
    pub fn is_rising(&self) -> bool {
        self.rising
    }

    /// Reports made from now are about the tier as it is now.
    pub fn settled_at(&self) -> Instant {
        self.settled_at
    }

    /// A rate nothing changes (no adaptive control); 0 = unpaced.
    pub fn fixed(rate: u64) -> TierControl {
        TierControl {
            rate,
            slow_start: false,
            loss_rate: None,
            settled_at: Instant::ZERO,
            clean_increases: 0,
            near_increases: 0,
            from_floor: false,
            rising: false,
            floored: false,
            kept_up_at: None,
            held_since: None,
        }
    }

    /// A tier opened for members whose capacity was measured under a heavy overload (a floor:
    /// a shallow queue overflowing in bursts passes less than its link's rate): nothing
    /// remembered; a gentle slow start (`FLOOR_STEP` a step) from there, so the link's rate is
    /// found in a few report intervals, not in 10 % steps of a settle each.
    pub fn new_floor(config: &RateConfig, now: Instant, rate: u64) -> TierControl {
        TierControl {
            from_floor: true,
            ..TierControl::new(config, now, rate)
        }
    }

    /// A tier opened for members that lost on a faster one, getting most of its rate: their
    /// capacity is known, so it starts near it without slow start. It opens at
    /// `LOSS_FALL_SHARE` of what reached them there (as a tier that falls in place,
    /// [`TierControl::decrease_to`]), and that, not its own rate, is remembered as where they
    /// lose: it climbs back to just below it and probes gently there. (Remembering its own
    /// rate, it read 5 % above it as a path that had grown and rose 10 % a step past the link:
    /// nine 50 Mbit/s receivers moved to a tier at 43.5 Mbit/s saw 45.9, 50.5, 55.6 and 61.2
    /// in 2.3 s, lost, and took 8.5 s for 32 MiB against 6.5 for the same nine whose tier fell
    /// in place.)
    pub fn new_known(config: &RateConfig, now: Instant, rate: u64) -> TierControl {
        TierControl {
            loss_rate: Some(((rate as f64 / LOSS_FALL_SHARE) as u64, now)),
            ..TierControl::new_short(config, now, rate)
        }
    }

    /// A tier opened for members that got under half of their tier's rate out of slow start
    /// (a receiver that stalled for its CPU, or one far past its path): what reached them may
    /// be far below what their path carries, so only the tier's own rate is remembered as
    /// where they lose, and 5 % above it the rate climbs 10 % a step, then slow-starts.
    /// (Remembering what reached a receiver that stalled at 1.4 Gbit/s on an 8 Gbit/s tier,
    /// its new tier would creep from 1.27 to 1.48 Gbit/s in 0.5-2 % steps, nine settles, about
    /// 5 s, before rising faster; with that rule three receivers at MTU 1500 took 4.3-9.1 s,
    /// median 5.5, against 4.4-8.1, median 4.9, alternated.)
    pub fn new_short(config: &RateConfig, now: Instant, rate: u64) -> TierControl {
        TierControl {
            slow_start: false,
            loss_rate: Some((rate, now)),
            settled_at: now + config.settle,
            ..TierControl::new(config, now, rate)
        }
    }

    /// Back within `config`'s bounds (the operator changed the cap while it ran): whether its
    /// rate changed.
    pub fn clamp_to(&mut self, config: &RateConfig, now: Instant) -> bool {
        let clamped = config.clamp(self.rate as f64);
        if clamped == self.rate {
            return false;
        }
        self.kept_up_at = None;
        self.set_rate(config, now, clamped);
        true
    }

    fn set_rate(&mut self, config: &RateConfig, now: Instant, rate: u64) {
        self.held_since = None;
        self.rate = config.clamp(rate as f64);
        self.settled_at = now + config.settle;
    }

    /// A slow-start step: read again as soon as the new rate shows.
    fn set_probe_rate(&mut self, config: &RateConfig, now: Instant, rate: u64) {
        self.set_rate(config, now, rate);
        self.settled_at = now + config.probe_settle;
    }

    fn increase(&mut self, config: &RateConfig, now: Instant) {
        self.increase_from(config, now, self.rate as f64);
    }

    /// Members kept up, `sent` being what the sender really sent them (bits/s; the rate,
    /// unless the sender falls short of it). Where they last lost is what reached them then,
    /// so the rate is judged near it by what reaches them now: a sender short of its rate (the
    /// receiver beside it on a 2-core host, pacing at 7.2 Gbit/s, sent 4.7) otherwise crept up
    /// 0.5-2 % a settle from a nominal rate near the loss, never reaching the 10 Gbit/s
    /// nominal that gets 6.5 through (1 GiB at MTU 1500: 1.7-2.1 s against 1.3).
    fn increase_from(&mut self, config: &RateConfig, now: Instant, sent: f64) {
        let rate = self.rate as f64;
        let real = if sent < SENDER_SHORT_BELOW * rate {
            sent.max(1.0)
        } else {
            rate
        };
        let remembered = self
            .loss_rate
            .filter(|&(_, when)| now.saturating_since(when) < config.loss_memory)
            .map(|(lost_at, _)| lost_at as f64)
            // Past where it last lost, without loss: the path has grown.
            .filter(|&lost_at| real < 1.05 * lost_at);
        self.rising = true;
        let next = if self.slow_start {
            // Doubling, gentler past 8 Gbit/s where receivers are CPU-bound and an
            // overshoot costs a second of duplicates, and from a floor (the path's rate is
            // near).
            if self.from_floor {
                rate * FLOOR_STEP
            } else if rate < SLOW_START_GENTLE_ABOVE {
                rate * 2.0
            } else {
                rate * 1.5
            }
        } else {
            match remembered {
                // Back up to just below where it lost, quickly.
                Some(lost_at) if real < 0.9 * lost_at => rate * (0.95 * lost_at / real).min(1.1),
                // Near it: probe gently (0.5 %, 1 %, then 2 % a step), as CUBIC's plateau.
                Some(_) => {
                    self.near_increases += 1;
                    rate * (1.0 + 0.0025 * f64::from(1u32 << self.near_increases.min(3)))
                }
                None => {
                    self.loss_rate = None;
                    self.clean_increases += 1;
                    if self.clean_increases >= RESUME_SLOW_START_AFTER {
                        self.slow_start = true;
                        self.from_floor = self.floored;
                    }
                    rate * 1.1
                }
            }
        };
        let next = next.max(rate + 1.0) as u64;
        if self.slow_start {
            self.kept_up_at = Some(self.rate);
            self.set_probe_rate(config, now, next);
        } else {
            self.set_rate(config, now, next);
        }
    }

    /// Slow start ends at this rate, remembered as where members lose (the rate stays).
    fn found_loss(&mut self, config: &RateConfig, now: Instant) {
        self.stop_rising(false);
        self.loss_rate = Some((self.rate, now));
        self.settled_at = now + config.settle;
    }

    /// A slow start that made no step for a dwell ends where it is, without a loss to
    /// remember: the rate rises from here by steps (see the merge in [`plan`]).
    fn end_stalled_slow_start(&mut self) {
        self.slow_start = false;
        self.from_floor = false;
        self.rising = false;
    }

    /// Members lost: slow start and every run of increases end (`floored`: at a floor, see
    /// [`TierControl::decrease_to`]).
    fn stop_rising(&mut self, floored: bool) {
        self.slow_start = false;
        self.from_floor = false;
        self.floored = floored;
        self.rising = false;
        self.clean_increases = 0;
        self.near_increases = 0;
    }

    /// Down to 90 % of `capacity`, what reached the members. Measured under the heavy overload
    /// of a first probe (`heavy`: most of the rate lost, out of slow start) that is only a
    /// floor (a shallow queue overflowing in bursts passes less than its link's rate), so it is
    /// not remembered as where they lose: the rate rises from there by 10 % a step, and slow
    /// start resumes after a few, gently (`FLOOR_STEP` a step, as [`TierControl::new_floor`]):
    /// the path is near. (It doubled: a 5 Mbit/s receiver's tier went from 5.8 to 11.6 Mbit/s
    /// and it lost half of what was sent for 0.45 s. Slow-starting gently at once kept the tier
    /// in slow start, where members neither climb nor merge, for longer: in the fleet
    /// simulation seed 24 fell from 98.75 % to 94.85 % matched.)
    fn decrease_to(
        &mut self,
        config: &RateConfig,
        now: Instant,
        capacity: f64,
        heavy: bool,
        proven: f64,
    ) {
        // Only the first loss (out of slow start, far above the path) is read as a floor; a
        // heavy loss later (a probe that overshot, slow start resumed included) is where the
        // path is.
        let floor = heavy
            && self.slow_start
            && !self.from_floor
            && self.clean_increases < RESUME_SLOW_START_AFTER;
        // A slow-start step that overshot falls no lower than 90 % of the step before, which
        // its members kept up with: what reaches a receiver flooded far past its rate is less
        // than it takes (on a 2-core host the flood's own cost starves it: 1 GiB at MTU 1500
        // fell from 12 Gbit/s to 4.1 after a clean 8 Gbit/s, and crept up 1 % a step, 2.4 s
        // instead of 1.3). (Out of slow start too was tried: a member whose path really
        // slowed then fell in many steps, each re-armed by another member's report raising
        // the rate between two decreases: hx_attack14.)
        let kept_up = match self.kept_up_at {
            Some(rate) if self.slow_start && rate < self.rate => rate as f64,
            _ => 0.0,
        };
        self.stop_rising(floor);
        self.kept_up_at = None;
        // Only a collapse, and only of a member seen to take the step before (`proven`, its
        // best report): a path that carries a little less than that step (a member that lost
        // there too, while others raised the tier), or one that never took it (it joined
        // during the step), is where it loses.
        let collapse = capacity < COLLAPSE_SHARE * kept_up && proven >= COLLAPSE_SHARE * kept_up;
        let capacity = if collapse { kept_up } else { capacity };
        self.loss_rate = (!floor).then_some((capacity as u64, now));
        self.set_rate(
            config,
            now,
            (LOSS_FALL_SHARE * capacity).min(self.rate as f64) as u64,
        );
    }
}

/// Members that lost get this share of what reached them: a tier falls to it, and a tier
/// opened for members that lost opens at it.
const LOSS_FALL_SHARE: f64 = 0.9;
/// What reached the members after a slow-start step, below this share of the step before
/// (which they kept up with), is a collapse under the overload, not their path's rate.
const COLLAPSE_SHARE: f64 = 0.75;
/// Slow start from a floor grows by this much a step.
const FLOOR_STEP: f64 = 1.12;
/// In slow start from a floor, members that get less than this share of what was sent found
/// their path's rate (a step of `FLOOR_STEP` past it gives them 0.89 of it).
const FLOOR_KEEP_UP_SHARE: f64 = 0.93;
/// A rise of at least this is a slow-start step to a client (it reports more often, and starts
/// a new interval at once): below every slow-start step, above the +10 % of a probe.
pub const SLOW_START_STEP_MIN: f64 = 1.11;
const _: () = assert!(FLOOR_STEP >= SLOW_START_STEP_MIN && SLOW_START_STEP_MIN > 1.1);
/// Slow start grows by half instead of doubling from this rate, bits/s. It was 2 Gbit/s; with
/// the whole-file check no longer after the last datagram (client `check.rs`), doubling to
/// 8 Gbit/s took 1 GiB at MTU 9000 in 1.23-1.63 s (median 1.31, 7 runs) against 1.36-1.53
/// (median 1.41, 6 runs) with 2 Gbit/s, same build otherwise: one or two steps less ramp.
const SLOW_START_GENTLE_ABOVE: f64 = 8e9;
/// Increases of 10 % in a row, with no loss remembered, before the rate doubles again.
const RESUME_SLOW_START_AFTER: u32 = 3;

/// One member as the planner sees it.
pub struct MemberPlan<'a> {
    pub id: u64,
    /// Who it is on the network, as the server sees it ([`host_of`]: its IPv4 address, or its
    /// IPv6 /48): a tier's majority is counted in hosts, not sessions (one host may hold many).
    pub host: u64,
    pub estimate: &'a PathEstimate,
    /// When it was last moved between tiers (`None`: never; it may move at once).
    pub moved_at: Option<Instant>,
}

/// Who a client is on the network, for counting a tier's majority in hosts
/// (`MemberPlan::host`): what one subscriber is usually given. Its IPv4 address (one per home
/// or NAT), or the /48 of its IPv6 one (a subscriber gets a /48 or /56, RFC 6177: counted by
/// /64, one /56 was 256 hosts, and 16 of them outvoted 15 honest hosts and dragged their tier
/// to the 1 Mbit/s floor, atk26 F-B). An IPv4-mapped IPv6 address is the IPv4 host. IPv4 keys
/// are below 2^32; IPv6 keys have the 2^63 bit set. Built on [`address_key`]: an address that
/// embeds an IPv4 client is that IPv4 host, and a link-local address is a host of its own.
pub fn host_of(ip: IpAddr) -> u64 {
    match address_key(ip) {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            (3 << 62) | (u128::from(v6) as u64 & (u64::MAX >> 2))
        }
        IpAddr::V6(v6) => (1 << 63) | (u128::from(v6) >> 80) as u64,
    }
}

/// What the per-address limits (sessions, requests, NAK budget) count as one address: an IPv4
/// address, or an IPv6 /64 (one host or LAN is given a whole /64, and picks any address in it:
/// counted per IPv6 address, one /64 held any number of sessions and request tokens, hx
/// attack26). An IPv4-mapped IPv6 address is its IPv4 one. (A tier's majority counts coarser
/// hosts: `host_of`.)
///
/// Where the prefix says nothing of who the client is, what does: an IPv4 address a translator
/// or Teredo embeds (`embedded_ipv4`), and a link-local address whole (counted by /64,
/// every IPv4 user behind SIIT, every user of one Teredo server, and every link-local client
/// was one address: 16 sessions locked all the others out, atk26b H1).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None if v6.is_unicast_link_local() => IpAddr::V6(v6),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The IPv4 client an IPv6 address stands for, where it embeds one: the NAT64 / SIIT
/// well-known prefix 64:ff9b::/96 (RFC 6052) and Teredo 2001::/32 (RFC 4380: the client's
/// public address, inverted, in the last 32 bits).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let low = bits as u32;
    if bits >> 32 == 0x64_ff9b << 64 {
        Some(Ipv4Addr::from(low))
    } else if bits >> 96 == 0x2001_0000 {
        Some(Ipv4Addr::from(!low))
    } else {
        None
    }
}

/// One tier as the planner sees it.
pub struct TierPlan<'a> {
    pub control: &'a mut TierControl,
    pub members: Vec<MemberPlan<'a>>,
    /// One unicast client's own channel: its rate follows that client alone; it is never
    /// merged, and nobody moves into it.
    pub solo: bool,
    /// What the tier's sender really sent lately, bits/s, where the data plane says (it can
    /// fall short of the rate: a 2-core host's 8 Gbit/s tier for three receivers sent 1-4.4).
    /// The server's own count, never a client's claim.
    pub sent_rate: Option<f64>,
}

/// Where the planner sends a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The tier at this index of the `tiers` given to `plan`.
    Tier(usize),
    /// A tier to open at this rate (the `n`th new one of this plan: several members may go to
    /// the same new tier).
    New {
        index: usize,
        rate: u64,
        start: TierStart,
    },
}

/// How a tier opened for moved members finds its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierStart {
    /// Its members' capacity was measured where they lost, getting most of the rate: it
    /// starts near it, no slow start ([`TierControl::new_known`]).
    Known,
    /// They got under half of the rate, out of slow start: it starts at 90 % of what reached
    /// them, and climbs quickly past it ([`TierControl::new_short`]).
    Short,
    /// What reached them was measured under a heavy overload, a floor: a gentle slow start
    /// from there ([`TierControl::new_floor`]).
    Floor,
    /// Members that kept up on a tier held back by others: nothing is known above, it doubles
    /// from there ([`TierControl::new`]).
    SlowStart,
}

impl TierStart {
    /// The control of a tier opened this way at `rate`.
    pub fn control(self, config: &RateConfig, now: Instant, rate: u64) -> TierControl {
        match self {
            TierStart::Known => TierControl::new_known(config, now, rate),
            TierStart::Short => TierControl::new_short(config, now, rate),
            TierStart::Floor => TierControl::new_floor(config, now, rate),
            TierStart::SlowStart => TierControl::new(config, now, rate),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub member: u64,
    pub from: usize,
    pub to: Target,
    /// A slower tier because it lost (else: a merge into a faster one).
    pub relief: bool,
}

/// Two tiers whose rates are this close (ratio), in a file with no room for another, merge.
const NEAR_DUPLICATE: f64 = 1.1;
/// A member moves up only to a tier at least this much faster, and not if it lost below that.
const CLIMB_STEP_MIN: f64 = 1.2;
/// A member moves up only if it receives this share of its tier's rate.
const CLIMB_KEEP_UP_SHARE: f64 = 0.9;
/// Uncounted reports in a row that kept up with a rising tier that make a member a candidate
/// to climb (`PathEstimate::kept_up_while_rising`): about 0.6 s.
const KEPT_UP_WHILE_RISING_REPORTS: u32 = 3;
/// Two rates this close (ratio) are one tier: members go to the existing one.
const SAME_TIER_RATIO: f64 = 1.5;
/// A tier whose rate reaches this share of the next faster tier's merges into it.
const MERGE_SHARE: f64 = 0.85;
/// A congested member moves to a slower tier only if its path carries less than this share of
/// what its tier really sends (at most the rate; [`TierPlan::sent_rate`]).
const MOVE_BELOW_SHARE: f64 = 0.85;
/// A tier's sender that sent under this share of its rate over the last `TierPlan::sent_rate`
/// window falls short of the rate.
const SENDER_SHORT_BELOW: f64 = 0.85;
/// ... and, while the sender falls short of the rate (`SENDER_SHORT_BELOW`), only if it
/// carries less than this share of what the tier really sends. A short sender is short of
/// cores (or of its link): another tier costs it more, and a member's loss may have the same
/// cause (three receivers on a 2-core host lost 30-43 % in bursts when the cores ran out, each
/// in turn). A member that gets half of what is sent needs about two loops at the tier's
/// rate, no longer than a loop on a tier of its own at 90 % of what reaches it, and costs no
/// second stream.
const SHORT_SENDER_MOVE_BELOW_SHARE: f64 = 0.5;
/// Congested reports in a row after which a member that gets most of the rate leaves a tier
/// whose other members keep up.
const HELD_LOSS_REPORTS: u32 = 5;
/// Members must receive at least this share of the rate before it rises (else the rate is not
/// what limits them: they are starting, or stalled).
const KEEP_UP_SHARE: f64 = 0.5;
/// A congested member whose last counted report is older than this holds nothing: it lost in
/// two reports and then sent only reports that do not count (or none), and held a file's first
/// tier at 2 Gbit/s for good while the others could take 40 (hx_attack17). An honest member
/// reports every 200 ms at the most.
const CONGESTION_STALE: Duration = Duration::from_secs(1);
/// A tier waits for members that just lost (see `plan`) this long at most, however they time
/// their reports, before it rises past them.
const JUST_LOST_HOLD_MAX: Duration = Duration::from_millis(250);
/// Members keep up with a sender short of its rate (see `SENDER_SHORT_BELOW`) that get this
/// share of what it really sent, below `SLOW_START_STRICT_ABOVE` (above it in slow start, a
/// share of the rate itself: `SLOW_START_KEEP_UP_SHARE`).
const SENT_KEEP_UP_SHARE: f64 = 0.85;
/// Slow start asks `SLOW_START_KEEP_UP_SHARE` of the rate received above this rate, bits/s.
const SLOW_START_STRICT_ABOVE: f64 = 4e9;
/// In slow start past `SLOW_START_STRICT_ABOVE`, members must receive this share of the rate
/// before it rises: a rate the sender itself does not reach (a 2-core host sends 7-10 Gbit/s)
/// shows no loss, and rising on past it overshot to 15-23 Gbit/s, whose loss, when the sender
/// caught up, cost a fifth of a 1 GiB file in repairs. (Below it, a client still starting up
/// receives less than it will: with this share from the start, the first step took 360 ms
/// instead of 50, and from 2 Gbit/s the second 260 ms.)
const SLOW_START_KEEP_UP_SHARE: f64 = 0.8;

/// Reconsiders one file's tiers: sets each tier's rate (in its `TierControl`) and returns the
/// members to move. Tiers may be given in any order; targets index the slice as given.
pub fn plan(config: &RateConfig, now: Instant, tiers: &mut [TierPlan<'_>]) -> Vec<Move> {
    let mut moves = Vec::new();
    // (rate, start) of the tiers this plan opens.
    let mut new_tiers: Vec<(u64, TierStart)> = Vec::new();
    // Tiers whose members all lost, to join a tier near where theirs would fall (see below).
    let mut joining: Vec<(usize, Target, Fall)> = Vec::new();
    let tiers_allowed = config.tiers_allowed();
    // Shared tiers only are places to move to.
    let rates: Vec<Option<u64>> = tiers
        .iter()
        .map(|t| (!t.solo).then_some(t.control.rate))
        .collect();
    for (index, tier) in tiers.iter_mut().enumerate() {
        if now < tier.control.settled_at {
            continue;
        }
        let rate = tier.control.rate;
        // What the sender really sends: a member that receives most of that has a path that
        // takes what the tier sends, whatever its nominal rate.
        let sent = tier
            .sent_rate
            .map_or(rate as f64, |sent| sent.clamp(0.0, rate as f64));
        let sender_keeps_up = sent >= SENDER_SHORT_BELOW * rate as f64;
        let fresh: Vec<&MemberPlan<'_>> = tier
            .members
            .iter()
            .filter(|m| m.estimate.is_fresh())
            .collect();
        if fresh.is_empty() {
            continue;
        }
        let (congested, clear): (Vec<&MemberPlan<'_>>, Vec<&MemberPlan<'_>>) = fresh
            .iter()
            .partition(|m| m.estimate.holds_congestion(config, now));
        if congested.is_empty() {
            if clear.iter().any(|m| m.estimate.just_lost()) {
                // Someone just lost: wait for the next report before going faster, for at
                // most `JUST_LOST_HOLD_MAX` in all (a member alternating clean and lossy
                // reports, never congested in a row so never moved, held a file's first tier
                // at its first rate for everyone: hx_attack14 R4). Past it the tier rises: an
                // honest one loses more there, is congested, and moves or slows the tier.
                let since = *tier.control.held_since.get_or_insert(now);
                if now.saturating_since(since) < JUST_LOST_HOLD_MAX {
                    continue;
                }
            } else {
                tier.control.held_since = None;
            }
            // The mean of its hosts' means: one host's many sessions weigh as one (16 quiet
            // sessions of one host, each claiming 1.2 Mbit/s, pulled the mean under half the
            // rate and kept a tier beside honest members from rising: atk26 side note).
            let mean = host_mean(&clear, |m| m.estimate.capacity(rate));
            // Judged by the upper median member, not the mean: one member claiming a quarter
            // of the rate and no loss dragged the mean under the share every step, and honest
            // members behind faster paths to 0.57 of their start (hx_attack20 R1).
            let typical = upper_median(clear.iter().map(|m| m.estimate.capacity(rate)));
            // Each member judged against what the sender sent over its own report: over
            // another window, a sender short of the rate for a moment (a 2-core host still
            // sending a faster tier) read as a path of half the rate, and a new 411.8 Mbit/s
            // tier for a 500 Mbit/s receiver fell to 184.8.
            let typical_share = upper_median(clear.iter().map(|m| m.estimate.last_sent_share));
            if tier.control.slow_start
                && tier.control.from_floor
                && typical < FLOOR_KEEP_UP_SHARE * sent
                && typical_share < FLOOR_KEEP_UP_SHARE
            {
                // From a floor the path's rate is near, and a step past it shows at once as
                // members getting less than was sent (a link's queue hides the loss for a
                // while): what they get is the path's rate. (Read as keeping up while they got
                // half, nine receivers behind 50 Mbit/s links saw their tier step every 60 ms
                // to 77-122 Mbit/s before the loss showed, lost a third, and split over two
                // tiers: 11.6 s for 32 MiB against 6.4.) A step past the path gives them 0.89 of
                // what was sent; far less, when they took the step before whole, is a stall of
                // their hosts, not their path, and the tier falls as a collapse does (one report
                // of a CPU-bound receiver on a 2-core host got 1.4 Gbit/s after 2.4 at the step
                // before, and its tier fell from 4.18 Gbit/s to 1.27, then rose 10 % every
                // 0.6 s). Proven by the upper median member too.
                let proven = upper_median(clear.iter().map(|m| m.estimate.best_goodput));
                tier.control
                    .decrease_to(config, now, typical, false, proven);
                continue;
            }
            let keeping_up = if tier.control.slow_start && rate as f64 > SLOW_START_STRICT_ABOVE {
                mean >= SLOW_START_KEEP_UP_SHARE * rate as f64
            } else {
                // Half the rate, or most of what a short sender sent (four receivers joining
                // a 1 Gbit/s tier on a 2-core host: it sent 390-700 Mbit/s, the unlimited
                // one got all of it and read as not keeping up, and the tier waited three
                // reports before doubling).
                mean >= KEEP_UP_SHARE * rate as f64
                    || (tier.control.slow_start
                        && clear.iter().all(|m| m.estimate.kept_up_with_short_sender))
            };
            if keeping_up && rate < config.rate_max {
                tier.control.increase_from(config, now, sent);
            }
            continue;
        }
        if config.policy == TierPolicy::Average {
            // The mean of what each member's path carries. While some member has never lost,
            // its capacity is unknown: keep probing upward (the others are expected to lose).
            let known: Vec<f64> = fresh
                .iter()
                .filter_map(|m| m.estimate.known_capacity())
                .collect();
            if known.len() < fresh.len() {
                if clear.iter().all(|m| m.estimate.congested_streak == 0) && rate < config.rate_max
                {
                    tier.control.increase(config, now);
                }
            } else {
                let mean = known.iter().sum::<f64>() / known.len() as f64;
                if mean < rate as f64 {
                    tier.control.decrease_to(config, now, mean, false, 0.0);
                }
            }
            continue;
        }
        if config.policy == TierPolicy::Distribution {
            // What the tier's best members take: the rate if some keep up, else the most that
            // reached any member that lost.
            // Members not yet heard on a tier still in slow start (they joined a few
            // milliseconds after the first, whose report came alone) count as keeping up:
            // the ones that lost move, the rate stays for the others. (Read as everyone,
            // the first report of a 5 Mbit/s receiver set a new tier's rate to 4.4 Mbit/s for
            // an unlimited receiver that joined 5 ms later: 7.5 s for 4 MiB instead of 0.1.)
            // Only where every member that lost may move now: else a member that never
            // reports would hold the rate for one that cannot leave yet (hx_attack12).
            let unheard = tier.control.slow_start
                && tier.members.len() > fresh.len()
                && congested.iter().all(|m| dwelt(config, now, m));
            let settled_clear = unheard || clear.iter().any(|m| m.estimate.congested_streak == 0);
            // With members keeping up: what the tier really sent (three receivers on a 2-core
            // host: the sender of an 8 Gbit/s tier sent 1-4.4, and a member that got 93 % of
            // it and lost 7 % read as a path of half the rate and moved; on a tier of its own
            // it cost the sender the same cores again, and the others lost next: 3-4 tiers,
            // 4.4-9.1 s for 1 GiB against 2.6 with one).
            let reference = if settled_clear {
                sent
            } else {
                congested
                    .iter()
                    .chain(clear.iter())
                    .map(|m| m.estimate.capacity(rate))
                    .fold(0.0, f64::max)
            };
            // The congested members whose path carries clearly less than that go slower; the
            // others keep their rate. One that lost but still got most of it stays (a passing
            // loss; or the tier is only a little too fast for it, which costs it a few repairs
            // and nobody else anything).
            // One that keeps losing while others keep up at this rate goes too, however much
            // of the rate it gets: held, it stops the tier rising for everyone (its loss may be
            // its path's own, learnt only after a move or a decrease; on its own tier it is).
            // While the sender falls short of the rate, held twice as long (the tier cannot
            // rise much anyway; held for good, it would never rise: hx_attack14).
            let (share, held_for) = if sender_keeps_up {
                (MOVE_BELOW_SHARE, HELD_LOSS_REPORTS)
            } else {
                (SHORT_SENDER_MOVE_BELOW_SHARE, 2 * HELD_LOSS_REPORTS)
            };
            // The best of those that lost got all of the rate: it would not fall.
            let rate_stays = congested
                .iter()
                .any(|m| m.estimate.capacity(rate) >= rate as f64);
            let mut movable: Vec<&MemberPlan<'_>> = congested
                .iter()
                .copied()
                .filter(|m| dwelt(config, now, m))
                .filter(|m| {
                    m.estimate.capacity(rate) < share * reference
                        // (Also where the rate holds as nobody keeps up: a member that says
                        // it lost but got the whole rate sets it where it is, and the others
                        // stayed in loss for good: hx_attack22 R2.)
                        || ((settled_clear || rate_stays)
                            && m.estimate.congested_streak >= held_for)
                })
                .collect();
            movable.sort_by(|a, b| {
                b.estimate
                    .capacity(rate)
                    .total_cmp(&a.estimate.capacity(rate))
            });
            let mut moved = 0;
            for member in &movable {
                let target_rate = LOSS_FALL_SHARE * member.estimate.capacity(rate);
                // Held (most of the rate reaches it): only to a tier near what it takes.
                let held = member.estimate.capacity(rate) >= MOVE_BELOW_SHARE * reference;
                let start = match (member.estimate.overloaded(rate), tier.control.slow_start) {
                    (true, true) => TierStart::Floor,
                    (true, false) => TierStart::Short,
                    (false, _) => TierStart::Known,
                };
                let target = choose_slower(
                    config,
                    &rates,
                    &mut new_tiers,
                    index,
                    target_rate,
                    tiers_allowed,
                    start,
                    held,
                );
                if let Some(to) = target {
                    moved += 1;
                    moves.push(Move {
                        member: member.id,
                        from: index,
                        to,
                        relief: true,
                    });
                }
            }
            // A tier still doubling whose members lose here and have nowhere to go has found
            // where they lose: it stops doubling there (held in slow start, the members that
            // keep up never moved up, `climbs`, and those that lose stayed losing: fleet
            // simulation seed 40, 37 50 Mbit/s clients on a 55 Mbit/s tier for good).
            if tier.control.slow_start && settled_clear && moved < movable.len() {
                tier.control.found_loss(config, now);
            }
            // Some keep up, or some only just lost (they may be congested next report), or
            // some kept up before the tier's last change and have not reported since: the rate
            // holds. Else everyone left lost: the best of them sets the rate. (Members report
            // every 200 ms, each in its own time, and a tier's change settles in 250: the first
            // report after it is often one member's alone. Read as everyone's, a randomly lossy
            // member's own loss set the rate of the clean members beside it: three 50 Mbit/s
            // receivers followed a 20 % lossy one from 43.5 Mbit/s down to 13.4 in 2 s and
            // took 16.8 s for 32 MiB against 6.2.) The wait is for members that counted lately
            // (`CONGESTION_STALE`): one that stops reporting holds nothing.
            let awaited = tier.members.iter().any(|m| m.estimate.may_yet_keep_up(now));
            // (One that lost and then sent nothing that counts, past `CONGESTION_STALE`, holds
            // nothing either: read as "just lost" for good, it held honest members in loss for
            // good: hx_attack22 R3.)
            let holding_clear = clear
                .iter()
                .any(|m| m.estimate.congested_streak == 0 || m.estimate.counted_lately(now));
            if settled_clear || holding_clear || moved == congested.len() || awaited {
                // Most of the tier loses here and has nowhere slower to go (no room for
                // another tier, none near): the tier serves them, as its rate follows what
                // most of its members take. (Held by the few that keep up, it kept them in
                // loss for good: a liar that claimed a mild loss on the shared tier was moved
                // first and opened the last tier at 0.9x its claim; four honest 60 Mbit/s
                // members joined it at 75.6, the liar then reported clean, and they lost 21 %
                // for 30 s against 1.8 % without it: atk23.) A minority cannot pull it down.
                // Only a loss that lasts (as long as a member close to the rate is held
                // before it moves): a member put on a tier too fast for it for a moment (a
                // newcomer, or one moved while the tiers were changing) is usually elsewhere
                // a report later, and falling for it cost the fleet simulation's clients of
                // other classes their match (seeds 1-40: 99.89 % matched against 99.96 %).
                // The majority is one of hosts, not of sessions: one host may hold up to
                // `sessions_per_address_max` sessions, and with one vote each, one host's
                // sessions claiming a loss dragged a tier of fewer honest members to the floor
                // (hx_attack25 F1).
                let leaving = moving_from(&moves, index);
                let stranded: Vec<&MemberPlan<'_>> = movable
                    .iter()
                    .copied()
                    .filter(|m| {
                        leaving.binary_search(&m.id).is_err()
                            && m.estimate.congested_streak >= HELD_LOSS_REPORTS
                    })
                    .collect();
                // Its electorate: the members heard since the tier last changed, and those it
                // waits for (`may_yet_keep_up`: their reports straddled its changes; counting
                // only the fresh, one liar whose reports alone counted was all of it).
                let electorate: Vec<&MemberPlan<'_>> = tier
                    .members
                    .iter()
                    .filter(|m| m.estimate.is_fresh() || m.estimate.may_yet_keep_up(now))
                    .collect();
                let votes = stranded_host_votes(&electorate, &stranded, rate);
                if 2 * votes.len() > distinct_hosts(&electorate) {
                    let setter = median_member(&votes, rate);
                    let capacity = setter.estimate.capacity(rate);
                    if capacity < rate as f64 {
                        tier.control.decrease_to(
                            config,
                            now,
                            capacity,
                            setter.estimate.heavy_loss(),
                            setter.estimate.best_goodput,
                        );
                    }
                }
                continue;
            }
        }
        let by_capacity = |a: &&&MemberPlan<'_>, b: &&&MemberPlan<'_>| {
            a.estimate
                .capacity(rate)
                .total_cmp(&b.estimate.capacity(rate))
        };
        let setter = match config.policy {
            // Everyone lost: the best of them sets the rate (the others moved, or move next).
            TierPolicy::Distribution => congested.iter().max_by(by_capacity),
            TierPolicy::Slowest => congested.iter().min_by(by_capacity),
            TierPolicy::Average => unreachable!("handled above"),
        };
        if let Some(setter) = setter {
            let capacity = setter.estimate.capacity(rate);
            // Where another tier already runs near the rate this one would fall to, its
            // members join that one instead: two tiers at one rate send the file twice, and
            // each later merge or split of them moves members at the link's edge (nine
            // 50 Mbit/s receivers, one heard 40 ms after the others: the eight went to a tier
            // at 43.6 Mbit/s, the first then fell to 43.5 for the ninth, and the two ramped,
            // merged at 52.7 and split again for 6 s: 13.9 s for 32 MiB against 6.4).
            let joins = (config.policy == TierPolicy::Distribution && !tier.solo)
                .then(|| near_slower_tier(&rates, &new_tiers, index, LOSS_FALL_SHARE * capacity))
                .flatten()
                .filter(|_| {
                    let leaving = moving_from(&moves, index);
                    tier.members.iter().all(|m| {
                        leaving.binary_search(&m.id).is_ok()
                            || (m.estimate.holds_congestion(config, now)
                                && m.estimate.is_fresh()
                                && dwelt(config, now, m))
                    })
                });
            let fall = Fall {
                capacity,
                heavy: setter.estimate.heavy_loss(),
                proven: setter.estimate.best_goodput,
            };
            if let Some(to) = joins {
                // Once every tier is planned: the tier joined must keep members.
                joining.push((index, to, fall));
            } else if capacity < rate as f64 {
                tier.control
                    .decrease_to(config, now, fall.capacity, fall.heavy, fall.proven);
            }
        }
    }
    for &(index, to, fall) in &joining {
        // (A tier joined by one whose members all leave it in this plan, or that joins another
        // itself, would close under them.)
        // Nor one whose rate this plan moved away from near where this one would fall (it fell
        // or doubled: joined at the rate it had before the plan, 49 Mbit/s members landed on
        // 4.5 or 90 Mbit/s: hx_attack22 R1).
        let kept = match to {
            Target::Tier(to) => {
                let leaving = moves.iter().filter(|m| m.from == to).count();
                let to_rate = tiers[to].control.rate as f64;
                (leaving == 0 || tiers[to].members.len() > leaving)
                    && !joining.iter().any(|&(from, _, _)| from == to)
                    && to_rate < tiers[index].control.rate as f64
                    && (to_rate / (LOSS_FALL_SHARE * fall.capacity).max(1.0))
                        .ln()
                        .abs()
                        <= NEAR_DUPLICATE.ln()
            }
            Target::New { .. } => true,
        };
        if !kept {
            let control = &mut *tiers[index].control;
            if fall.capacity < control.rate as f64 {
                control.decrease_to(config, now, fall.capacity, fall.heavy, fall.proven);
            }
            continue;
        }
        let leaving = moving_from(&moves, index);
        for member in &tiers[index].members {
            if leaving.binary_search(&member.id).is_err() {
                moves.push(Move {
                    member: member.id,
                    from: index,
                    to,
                    relief: true,
                });
            }
        }
    }
    // Merges: a tier that rose near the next faster one joins it (noisy members stay).
    let no_room = !has_room(&rates, &new_tiers, tiers_allowed);
    let mut order: Vec<usize> = (0..tiers.len()).filter(|&i| !tiers[i].solo).collect();
    order.sort_by_key(|&i| tiers[i].control.rate);
    for pair in order.windows(2) {
        let (slow, fast) = (pair[0], pair[1]);
        let slow_rate = tiers[slow].control.rate as f64;
        let fast_rate = tiers[fast].control.rate as f64;
        if touches(&moves, slow) || touches(&moves, fast) {
            continue;
        }
        // Two tiers this close with no room for another: one too many (members that could go
        // faster will: `climbs`). The faster one's members join the slower (nobody loses more).
        if no_room && NEAR_DUPLICATE * slow_rate >= fast_rate {
            for member in &tiers[fast].members {
                if dwelt(config, now, member) {
                    moves.push(Move {
                        member: member.id,
                        from: fast,
                        to: Target::Tier(slow),
                        relief: false,
                    });
                }
            }
            continue;
        }
        if slow_rate < MERGE_SHARE * fast_rate || now < tiers[slow].control.settled_at {
            continue;
        }
        // Only a tier that got there and holds: not while it is still doubling (it has not
        // yet found where its members lose), and not while a member is losing; and only into
        // one that got there too (a tier ramping from a floor is a probe: eight 50 Mbit/s
        // receivers merged into one at 54.8 Mbit/s that went on to 61.3, lost there, and moved
        // back down a second later).
        // A tier whose last step is older than the dwell is not ramping any more, whatever its
        // flag says: one whose members send no report that counts never steps again, and held
        // as a probe for good it kept a second stream going beside the slower tier (hx_attack20
        // R3).
        let fast_probing = tiers[fast].control.slow_start
            && now.saturating_since(tiers[fast].control.settled_at) < config.dwell;
        let holds = !tiers[slow].control.slow_start
            && !fast_probing
            && tiers[slow]
                .members
                .iter()
                .all(|m| m.estimate.congested_streak == 0);
        if !holds {
            continue;
        }
        let mut merging = false;
        for member in &tiers[slow].members {
            if member.estimate.noise_loss() > NOISY && !tiers[fast].members.is_empty() {
                continue;
            }
            // Nor one moved down from there lately (it lost there: merged up, it would lose
            // again and move down again, every few seconds).
            if !dwelt(config, now, member)
                || !member.estimate.may_climb_to(now, tiers[fast].control.rate)
            {
                continue;
            }
            moves.push(Move {
                member: member.id,
                from: slow,
                to: Target::Tier(fast),
                relief: false,
            });
            merging = true;
        }
        // A tier that takes a merge while its slow start stalled (no step for a dwell) is not
        // ramping: it stops doubling, so the merged members' first reports raise it by a step,
        // not to twice their path. A member that claims a third of every rate and no loss
        // parked a tier at 0.97 of an honest tier's path; the honest tier merged in, its first
        // report lifted the mean past half the rate, and the tier doubled to 1.94x that path
        // (hx_attack21 R2).
        if merging && tiers[fast].control.slow_start {
            tiers[fast].control.end_stalled_slow_start();
        }
    }
    if config.policy == TierPolicy::Distribution {
        climbs(config, now, tiers, &rates, &mut new_tiers, &mut moves);
    }
    // No move to a tier that every member leaves in this plan (the endpoint closes a tier when
    // its last member leaves): a member sent to an existing slower tier by one tier's plan,
    // whose own members all moved on in the next tier's. It stays, for the next plan.
    let leaving: Vec<usize> = (0..tiers.len())
        .map(|tier| moves.iter().filter(|m| m.from == tier).count())
        .collect();
    moves.retain(|m| match m.to {
        Target::Tier(to) => leaving[to] == 0 || tiers[to].members.len() > leaving[to],
        Target::New { .. } => true,
    });
    moves
}

/// Moves up: a member that receives all of its tier's rate, on a tier that other members hold
/// back (one of them loses, or lost near this rate lately: the tier will not rise much), goes
/// to the next faster tier (one that rose and merged would have taken it along; this one will
/// not rise). If there is none, and room for one, a new tier opens for such members at twice
/// the rate, in slow start. A member whose path cannot take it loses there and moves back
/// down; [`PathEstimate::moved`] then bars that rate, longer each time. Without this a client
/// put on a slow tier (joining when the tier near its path was not there, or moved down
/// during a loss) stayed there for good: in the fleet simulation 3-16 % of the clients were
/// on a tier too slow for their link 10 s after joining, on some seeds.
fn climbs(
    config: &RateConfig,
    now: Instant,
    tiers: &[TierPlan<'_>],
    rates: &[Option<u64>],
    new_tiers: &mut Vec<(u64, TierStart)>,
    moves: &mut Vec<Move>,
) {
    for (index, tier) in tiers.iter().enumerate() {
        let control = &tier.control;
        let rate = control.rate;
        // A tier in slow start rises by itself. (Held in slow start by a member that loses,
        // it keeps its members: letting them climb from there did worse in the fleet
        // simulation, 88-97 % matched at 10 s over 5 seeds against 90-99 %.)
        // Not a tier this plan just changed (its rate, `settled_at` moved on): a tier whose
        // rate creeps up near where its members lost holds the clients of its class, and
        // a member there that never lost yet is more likely one of them than one that could
        // go faster (letting it try cost 1 % matched on average in the fleet simulation).
        if tier.solo || control.slow_start || now < control.settled_at || rate >= config.rate_max {
            continue;
        }
        // A tier whose membership this plan already changes is judged again next time.
        if touches(moves, index) {
            continue;
        }
        let near_its_path = |estimate: &PathEstimate| {
            estimate.congested_streak > 0
                || estimate
                    .known_capacity
                    .is_some_and(|capacity| capacity <= CLIMB_STEP_MIN * rate as f64)
        };
        let lost_near = control.loss_rate.is_some_and(|(lost_at, when)| {
            now.saturating_since(when) < config.loss_memory
                && rate as f64 >= MERGE_SHARE * lost_at as f64
        });
        let candidates: Vec<&MemberPlan<'_>> = tier
            .members
            .iter()
            .filter(|m| {
                let e = m.estimate;
                e.kept_up_lately()
                    && !near_its_path(e)
                    && e.last_loss <= config.loss_congested
                    && e.noise_loss <= NOISY
                    && e.last_goodput >= CLIMB_KEEP_UP_SHARE * rate as f64
                    && dwelt(config, now, m)
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let held = lost_near
            || tier
                .members
                .iter()
                .any(|m| near_its_path(m.estimate) && m.estimate.is_fresh());
        if !held {
            continue; // it rises by itself, and merges when it nears the next
        }
        let next_faster = rates
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, (*r)?)))
            .filter(|&(_, r)| r as f64 >= CLIMB_STEP_MIN * rate as f64)
            .min_by_key(|&(i, r)| (r, i));
        // Nor to a tier that members leave in this plan (a merge may empty it, and the
        // endpoint closes a tier when its last member leaves): next time.
        if next_faster.is_some_and(|(faster, _)| moves.iter().any(|m| m.from == faster)) {
            continue;
        }
        let to_rate = match next_faster {
            Some((_, faster_rate)) => faster_rate,
            None if has_room(rates, new_tiers, config.tiers_allowed()) => {
                config.clamp(2.0 * rate as f64)
            }
            None => continue,
        };
        let climbers: Vec<u64> = candidates
            .iter()
            .filter(|m| m.estimate.may_climb_to(now, to_rate))
            .map(|m| m.id)
            .collect();
        if climbers.is_empty() || to_rate <= rate {
            continue;
        }
        let to = match next_faster {
            Some((faster, _)) => Target::Tier(faster),
            None => {
                new_tiers.push((to_rate, TierStart::SlowStart));
                Target::New {
                    index: new_tiers.len() - 1,
                    rate: to_rate,
                    start: TierStart::SlowStart,
                }
            }
        };
        moves.extend(climbers.into_iter().map(|member| Move {
            member,
            from: index,
            to,
            relief: false,
        }));
    }
}

/// Where a tier whose members all lost falls to ([`TierControl::decrease_to`]'s arguments).
#[derive(Clone, Copy, Debug)]
struct Fall {
    capacity: f64,
    heavy: bool,
    proven: f64,
}

/// An existing shared tier slower than tier `from`, or one opened in this plan, within
/// `NEAR_DUPLICATE` of `target_rate`: the nearest.
fn near_slower_tier(
    rates: &[Option<u64>],
    new_tiers: &[(u64, TierStart)],
    from: usize,
    target_rate: f64,
) -> Option<Target> {
    let from_rate = rates[from]? as f64;
    let distance = |rate: f64| (rate / target_rate.max(1.0)).ln().abs();
    let existing = rates
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((Target::Tier(i), (*r)? as f64)))
        .filter(|&(to, _)| to != Target::Tier(from));
    let planned = new_tiers
        .iter()
        .enumerate()
        .map(|(index, &(rate, start))| (Target::New { index, rate, start }, rate as f64));
    existing
        .chain(planned)
        .filter(|&(_, r)| r < from_rate && distance(r) <= NEAR_DUPLICATE.ln())
        .min_by(|a, b| distance(a.1).total_cmp(&distance(b.1)))
        .map(|(to, _)| to)
}

/// Whether the file may open another tier: its shared tiers (`rates`) and those this plan
/// opens (`new_tiers`) are fewer than `tiers_allowed`.
fn has_room(rates: &[Option<u64>], new_tiers: &[(u64, TierStart)], tiers_allowed: usize) -> bool {
    rates.iter().flatten().count() + new_tiers.len() < tiers_allowed
}

/// The members `moves` already take off tier `tier`, sorted (for `binary_search`: scanning the
/// moves for each member of a tier of thousands was quadratic, 76 ms a plan at 20,000 members
/// half of which moved: atk26 F-C).
fn moving_from(moves: &[Move], tier: usize) -> Vec<u64> {
    let mut members: Vec<u64> = moves
        .iter()
        .filter(|m| m.from == tier)
        .map(|m| m.member)
        .collect();
    members.sort_unstable();
    members
}

/// Whether a move in `moves` leaves tier `tier` or goes to it.
fn touches(moves: &[Move], tier: usize) -> bool {
    moves
        .iter()
        .any(|m| m.from == tier || m.to == Target::Tier(tier))
}

/// The upper median of `values` (of two, the larger): what most members reach, that a
/// minority cannot pull down. `values` must not be empty.
fn upper_median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    assert!(!values.is_empty(), "the median of no members");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The mean over the hosts of `members` of each host's mean `value`: a host's many sessions
/// weigh as one. With one member a host, or one host in all, the plain mean. `members` must
/// not be empty.
fn host_mean(members: &[&MemberPlan<'_>], value: impl Fn(&MemberPlan<'_>) -> f64) -> f64 {
    assert!(!members.is_empty(), "the mean of no members");
    let mut by_host: Vec<(u64, f64)> = members.iter().map(|m| (m.host, value(m))).collect();
    by_host.sort_unstable_by_key(|&(host, _)| host);
    let (mut sum_of_means, mut hosts) = (0.0, 0usize);
    for group in by_host.chunk_by(|a, b| a.0 == b.0) {
        sum_of_means += group.iter().map(|&(_, v)| v).sum::<f64>() / group.len() as f64;
        hosts += 1;
    }
    sum_of_means / hosts as f64
}

/// How many hosts `members` come from.
fn distinct_hosts(members: &[&MemberPlan<'_>]) -> usize {
    let mut hosts: Vec<u64> = members.iter().map(|m| m.host).collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts.len()
}

/// One vote per host all of whose `electorate` members are `stranded`: its stranded member that
/// takes the most at `rate` (a host with one member that keeps up does not vote for a fall,
/// and a host's many sessions weigh as one).
fn stranded_host_votes<'m, 'a>(
    electorate: &[&'m MemberPlan<'a>],
    stranded: &[&'m MemberPlan<'a>],
    rate: u64,
) -> Vec<&'m MemberPlan<'a>> {
    // Sorted, so a tier of thousands costs n log n, not n^2.
    let mut stranded_ids: Vec<u64> = stranded.iter().map(|m| m.id).collect();
    stranded_ids.sort_unstable();
    let mut hosts_keeping_up: Vec<u64> = electorate
        .iter()
        .filter(|m| stranded_ids.binary_search(&m.id).is_err())
        .map(|m| m.host)
        .collect();
    hosts_keeping_up.sort_unstable();
    let mut votes: Vec<&'m MemberPlan<'a>> = stranded
        .iter()
        .copied()
        .filter(|m| hosts_keeping_up.binary_search(&m.host).is_err())
        .collect();
    // By host, the one that takes the most first; then that one of each host.
    votes.sort_by(|a, b| {
        a.host.cmp(&b.host).then(
            b.estimate
                .capacity(rate)
                .total_cmp(&a.estimate.capacity(rate)),
        )
    });
    votes.dedup_by_key(|m| m.host);
    votes
}

/// The upper median of `members` by capacity at `rate` (of two, the faster): what a tier
/// falling for them falls to, that a minority of them can neither raise nor lower. `members`
/// must not be empty.
fn median_member<'m, 'a>(members: &[&'m MemberPlan<'a>], rate: u64) -> &'m MemberPlan<'a> {
    assert!(!members.is_empty(), "the median of no members");
    let mut by_capacity = members.to_vec();
    by_capacity.sort_by(|a, b| {
        a.estimate
            .capacity(rate)
            .total_cmp(&b.estimate.capacity(rate))
    });
    by_capacity[members.len() / 2]
}

/// Whether a member has stayed on its tier long enough to move again (hysteresis).
fn dwelt(config: &RateConfig, now: Instant, member: &MemberPlan<'_>) -> bool {
    member
        .moved_at
        .is_none_or(|at| now.saturating_since(at) >= config.dwell)
}

/// The tier a congested member of tier `from` goes to: the existing slower tier (or one opened
/// in this plan) nearest `target_rate`, if within `SAME_TIER_RATIO`; else a new tier while
/// there is room (opened as `start` says); else (unless `near_only`) the existing slower tier
/// nearest `target_rate`. `None`: nowhere slower (the member stays; its tier does not slow
/// down for it).
#[allow(clippy::too_many_arguments)]
fn choose_slower(
    config: &RateConfig,
    rates: &[Option<u64>],
    new_tiers: &mut Vec<(u64, TierStart)>,
    from: usize,
    target_rate: f64,
    tiers_allowed: usize,
    start: TierStart,
    near_only: bool,
) -> Option<Target> {
    let from_rate = rates[from]? as f64;
    let target_rate = target_rate.max(config.rate_min as f64);
    let distance = |rate: f64| (rate / target_rate).ln().abs();
    let slower = || {
        rates
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, (*r)? as f64)))
            .filter(move |&(i, r)| i != from && r < from_rate)
    };
    let existing = slower().map(|(i, r)| (Target::Tier(i), r));
    let planned = new_tiers
        .iter()
        .enumerate()
        .map(|(index, &(rate, start))| (Target::New { index, rate, start }, rate as f64));
    let nearest = existing
        .chain(planned)
        .min_by(|a, b| distance(a.1).total_cmp(&distance(b.1)));
    if let Some((target, rate)) = nearest {
        if distance(rate) <= SAME_TIER_RATIO.ln() {
            return Some(target);
        }
    }
    if has_room(rates, new_tiers, tiers_allowed) && target_rate < from_rate {
        let rate = config.clamp(target_rate);
        new_tiers.push((rate, start));
        return Some(Target::New {
            index: new_tiers.len() - 1,
            rate,
            start,
        });
    }
    // No room: the slower tier nearest what reached it (not the slowest: a receiver that lost
    // a little on the fastest tier belongs on the next one down, not with the slowest clients).
    // Not for a member that gets most of its tier's rate: a tier far slower would cost it far
    // more than the few repairs it needs where it is (fleet-sim: 500 Mbit/s clients losing
    // 3 % on a 514 Mbit/s tier went to the 50 Mbit/s one).
    if near_only {
        return None;
    }
    slower()
        .min_by(|a, b| distance(a.1).total_cmp(&distance(b.1)))
        .map(|(i, _)| Target::Tier(i))
}

/// A rate as people read it ("2.50 Gbit/s"; 0 is "unpaced").
pub fn format_rate(bits_per_s: u64) -> String {
    match bits_per_s {
        0 => "unpaced".into(),
        b if b >= 1_000_000_000 => format!("{:.2} Gbit/s", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} Mbit/s", b as f64 / 1e6),
        b => format!("{:.1} kbit/s", b as f64 / 1e3),
    }
}

/// The client's side of loss measurement: the loop on a channel sends serials in order, so a
/// serial further on than the next expected one means the ones between went by without
/// arriving. Reordering is forgiven: the last `REORDER_WINDOW` serials behind the frontier are
/// kept in a bitmap, and a serial counts as lost only once it falls out of it still missing.
/// Repairs (further behind) count as received, not as the frontier.
#[derive(Clone, Debug, Default)]
pub struct LossMeter {
    loop_len: u32,
    next: Option<u32>,
    /// Bit i: serial `next - 1 - i` arrived.
    window: u64,
    /// Bit i: serial `next + i` arrived unverified (`observe_pending`): it counts as arrived
    /// when a verified serial moves the sequence past it, but never moves the sequence itself.
    pending_ahead: u64,
    received: u32,
    lost: u32,
    /// How far the sequence has moved in all (serials; back on a retraction): where each
    /// counted loss lies, whatever the loop's length.
    travel: u64,
    /// The last moves that counted loss: (the travel of the last serial they counted, how
    /// many serials up to it they passed, how many of those they counted lost), so a
    /// retraction takes back only what they counted past where the loop really is
    /// (`retract_to`); and the furthest serial (travel) that older, forgotten moves counted.
    counted: VecDeque<(u64, u32, u32)>,
    forgotten_to: Option<u64>,
}

/// Moves remembered in `LossMeter::counted`.
const COUNTED_MOVES_MAX: usize = 64;

/// Serials behind the frontier that may still arrive late (reordered) without counting as lost.
const REORDER_WINDOW: u32 = 64;

impl LossMeter {
    pub fn new(loop_len: u32) -> LossMeter {
        LossMeter {
            loop_len,
            ..LossMeter::default()
        }
    }

    /// The serial the loop brings next, as far as verified datagrams have shown it.
    pub fn position(&self) -> Option<u32> {
        self.next
    }

    /// A verified datagram of the file arrived (new or duplicate). A `repair` (a serial this
    /// client or another asked for) counts as received but says nothing of the loop's
    /// progress: one asked more than half a loop back would otherwise read as the loop jumping
    /// ahead, and everything between as lost.
    pub fn observe(&mut self, serial: u32, repair: bool) {
        if self.loop_len == 0 || serial >= self.loop_len {
            return;
        }
        self.received = self.received.saturating_add(1);
        if repair {
            // It arrived: never counted lost when the sequence passes it (a serial asked for
            // and then brought by the loop in order was, and every asked stretch the loop went
            // through read as a jump: 10-15 % false loss on a 5 Mbit/s tier).
            self.mark_arrived(serial);
            return;
        }
        self.move_to(serial);
    }

    /// The sequence reaches `serial`: what it passes without arrival is lost (once out of the
    /// window); one behind it takes back its loss within the window.
    fn move_to(&mut self, serial: u32) {
        let Some(next) = self.next else {
            self.next = Some((serial + 1) % self.loop_len);
            // Before the first datagram nothing was expected.
            self.window = u64::MAX;
            self.pending_ahead = 0;
            return;
        };
        let ahead = self.forward(next, serial);
        // Further than half the loop ahead is really behind: a repair, or a late datagram.
        if ahead < self.loop_len / 2 || self.loop_len < 4 {
            // Unverified serials that arrived between `next` and this one did arrive: the
            // sequence passes them in order first.
            let mut passed = if ahead >= REORDER_WINDOW {
                self.pending_ahead
            } else {
                self.pending_ahead & ((1u64 << ahead) - 1)
            };
            while passed != 0 {
                let offset = passed.trailing_zeros();
                passed &= passed - 1;
                let from = self.next.expect("set above");
                let pending = (next + offset) % self.loop_len;
                self.advance(pending, self.forward(from, pending));
            }
            let from = self.next.expect("set above");
            self.advance(serial, self.forward(from, serial));
            let shift = ahead + 1;
            self.pending_ahead = if shift >= REORDER_WINDOW {
                0
            } else {
                self.pending_ahead >> shift
            };
        } else {
            let behind = self.loop_len - ahead; // 1 = the serial just before `next`
            if behind <= REORDER_WINDOW {
                self.window |= 1 << (behind - 1);
            }
        }
    }

    /// The loop's progress was taken back to `serial` ([`crate::nak::NakPlanner::take_retracted`]):
    /// a host on the group had walked it ahead, or it was never where the loop is. What the
    /// sequence passed beyond `serial` (less than half a loop) the loop has not yet brought:
    /// whatever of it left the window was counted lost, and is taken back (some of it may
    /// have arrived: a loss hidden, never one made up).
    pub fn retract_to(&mut self, serial: u32) {
        let Some(next) = self.next.filter(|_| serial < self.loop_len) else {
            return;
        };
        let passed = self.forward(serial, next).saturating_sub(1);
        if passed == 0 || passed >= self.loop_len / 2 {
            return;
        }
        // Take back what the moves past `serial` counted lost there (only there: what they
        // counted up to it the loop had passed). Moves forgotten since: all they passed
        // beyond it counts as taken back (a loss hidden, never one made up).
        let at = self
            .travel
            .saturating_sub(u64::from(passed))
            .saturating_sub(1);
        let mut back = 0u64;
        self.counted.retain_mut(|(last, span, lost)| {
            let beyond = last.saturating_sub(at);
            if beyond == 0 {
                return true;
            }
            let beyond = u32::try_from(beyond).unwrap_or(u32::MAX).min(*span);
            let taken = (*lost).min(beyond);
            back += u64::from(taken);
            *lost -= taken;
            *span -= beyond;
            *last = at;
            *lost > 0
        });
        if let Some(forgotten) = self.forgotten_to.filter(|&to| to > at) {
            back += forgotten - at;
            self.forgotten_to = Some(at);
        }
        self.lost = self
            .lost
            .saturating_sub(u32::try_from(back).unwrap_or(u32::MAX));
        self.travel = self.travel.saturating_sub(u64::from(passed));
        self.next = Some((serial + 1) % self.loop_len);
        if passed < REORDER_WINDOW {
            // The window slides back: what arrived of the serials passed is pending ahead
            // again, and what it held behind `serial` stays (a late run of a few dozen
            // serials retracted the frontier, and counted what had arrived as lost).
            let mut pending = self.pending_ahead << passed;
            for j in 0..passed {
                if self.window & (1 << (passed - 1 - j)) != 0 {
                    pending |= 1 << j;
                }
            }
            self.pending_ahead = pending;
            self.window = (self.window >> passed) | !(u64::MAX >> passed);
        } else {
            // Behind `serial` the loop went by in order (it arrived there just now).
            self.window = u64::MAX;
            self.pending_ahead = 0;
        }
    }

    /// The loop's progress jumped to a lead that had already arrived
    /// ([`crate::nak::NakPlanner::take_promoted`]): the sequence moves to `first` (what it
    /// passes without arrival is lost) and on to `last`, the chain of arrivals after it
    /// (counted as received when they came), of which `missing` did not arrive.
    pub fn jump_over(&mut self, first: u32, last: u32, missing: u32) {
        if self.loop_len == 0 || first >= self.loop_len || last >= self.loop_len {
            return;
        }
        self.lost = self.lost.saturating_add(missing);
        self.move_to(first);
        let next = self.next.expect("moved");
        let ahead = self.forward(next, (last + 1) % self.loop_len);
        if ahead > 0 && (ahead < self.loop_len / 2 || self.loop_len < 4) {
            self.travel += u64::from(ahead);
            // What the window still holds as not arrived behind `first` was lost (the loop
            // went on past the chain): reset unread, every burst just over a step was
            // reported 63 short.
            self.lost = self
                .lost
                .saturating_add(REORDER_WINDOW - self.window.count_ones());
            self.next = Some((last + 1) % self.loop_len);
            self.window = u64::MAX;
            self.pending_ahead = 0;
        }
    }

    /// A datagram of the file with a sound header arrived that is not verified (its hash block
    /// has not come, or it failed): received, and arrived if the sequence passes it, but it
    /// never moves the sequence. Anyone can send such a datagram (a forger on a multicast
    /// group); one far ahead must not make the genuine serials it jumped over read as lost.
    pub fn observe_pending(&mut self, serial: u32) {
        if self.loop_len == 0 || serial >= self.loop_len {
            return;
        }
        self.received = self.received.saturating_add(1);
        self.mark_arrived(serial);
    }

    /// `serial` arrived without moving the sequence: it counts as arrived if the sequence
    /// passes it within the window ahead, or takes back its loss within the window behind.
    fn mark_arrived(&mut self, serial: u32) {
        let Some(next) = self.next else {
            return;
        };
        let ahead = self.forward(next, serial);
        if ahead < REORDER_WINDOW && (ahead < self.loop_len / 2 || self.loop_len < 4) {
            self.pending_ahead |= 1 << ahead;
        } else if ahead >= self.loop_len / 2 {
            let behind = self.loop_len - ahead;
            if behind <= REORDER_WINDOW {
                self.window |= 1 << (behind - 1);
            }
        }
    }

    /// The sequence moves to `serial`, `ahead` places past `next`.
    fn advance(&mut self, serial: u32, ahead: u32) {
        // The frontier moves `ahead + 1` places: what leaves the window still missing was
        // lost, and so were skipped serials that do not even fit in it.
        let shift = ahead + 1;
        let leaving = if shift >= REORDER_WINDOW {
            self.window
        } else {
            self.window >> (REORDER_WINDOW - shift)
        };
        let left = shift.min(REORDER_WINDOW);
        let missing = left - leaving.count_ones();
        let skipped_beyond = ahead.saturating_sub(REORDER_WINDOW - 1);
        self.lost = self.lost.saturating_add(missing + skipped_beyond);
        self.travel += u64::from(shift);
        if missing + skipped_beyond > 0 {
            if self.counted.len() >= COUNTED_MOVES_MAX {
                if let Some((last, ..)) = self.counted.pop_front() {
                    self.forgotten_to = Some(self.forgotten_to.map_or(last, |to| to.max(last)));
                }
            }
            let last = self.travel.saturating_sub(u64::from(REORDER_WINDOW));
            self.counted
                .push_back((last, shift, missing + skipped_beyond));
        }
        self.window = if shift >= REORDER_WINDOW {
            1
        } else {
            (self.window << shift) | 1
        };
        self.next = Some((serial + 1) % self.loop_len);
    }

    /// A stretch of the loop went by in order: `received` of its datagrams arrived and `lost`
    /// did not. For a simulation whose data plane is abstracted (a fleet of 100,000 clients
    /// cannot be fed datagram by datagram); a receiver calls [`LossMeter::observe`].
    pub fn observe_stretch(&mut self, received: u32, lost: u32) {
        if self.loop_len == 0 {
            return;
        }
        let went_by = (u64::from(received) + u64::from(lost)) % u64::from(self.loop_len);
        self.travel += went_by;
        let next = u64::from(self.next.unwrap_or(0));
        self.next = Some(((next + went_by) % u64::from(self.loop_len)) as u32);
        // Everything behind the new frontier is accounted for.
        self.window = u64::MAX;
        self.pending_ahead = 0;
        self.received = self.received.saturating_add(received);
        self.lost = self.lost.saturating_add(lost);
    }

    /// The channel changed (a tier move): the next datagram starts a new sequence.
    pub fn restart(&mut self) {
        self.next = None;
        self.window = 0;
        self.pending_ahead = 0;
        self.counted.clear();
        self.forgotten_to = None;
    }

    /// Distance going forward from `from` to `to` around the loop (in u64: a loop may have
    /// up to `u32::MAX` serials).
    fn forward(&self, from: u32, to: u32) -> u32 {
        let len = u64::from(self.loop_len);
        ((u64::from(to) + len - u64::from(from)) % len) as u32
    }

    /// The counts since the last take, reset. Serials still within the reordering window are
    /// counted when they leave it.
    pub fn take(&mut self) -> (u32, u32) {
        let counts = (self.received, self.lost);
        self.received = 0;
        self.lost = 0;
        counts
    }
}

#[cfg(test)]
mod tests;
