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
//! A receiver that loses much of what goes by (more than `OVERLOAD_LOSS_PERCENT` of the recent
//! scan) asks for nothing the scan finds and re-asks nothing: its tier is faster than its path,
//! and every repair would take the tier's repair share to send it what its path then cannot
//! carry (a 50 Mbit/s receiver that started on a 4 Gbit/s tier asked 69,098 serials of a
//! 24,388-serial loop and received 6,904 duplicates). The gaps it finds, and the asks that
//! come due again, wait. If it keeps up
//! again on the same loop (a probe that overshot its path for a moment) and they are few (at
//! most an eighth of the loop), it asks for them then: left to the loop, a 500 Mbit/s receiver
//! waited almost a whole second pass for 2,000 serials. Else (its tier slowed to its path after
//! it lost most of the loop, or it moved to another tier) the loop brings them, in order and
//! without repairs that the loop would bring again. Play asks (R13) go out throughout.
//!
//! Datagrams that arrive out of loop order (repairs, reordering) never move the frontier
//! backwards: a serial counts as "ahead" only if it is less than half a loop past the frontier.
//!
//! Gaps *behind* the join point (a resumed client's holes, a late joiner's start of the file)
//! would otherwise wait for the loop to come round. With the backlog on, the planner also walks
//! backwards from the join point, the part of the loop that comes last, and asks for what is
//! missing there ahead of the loop (a client that held nothing when it began stops at the
//! file's start: past it is what the loop brings next in this pass), at most `backlog_window` serials in flight at a time (so
//! the asks follow the rate at which repairs arrive), until it meets the frontier. Backlog asks
//! are not re-asked: what they miss, the loop brings. So resume time follows what is missing,
//! not the loop's length.
//!
//! A follower (R13, `get --follow`) plays the file while it arrives and needs it in data order
//! from its *play position* ([`crate::play::PlayCursor::wanted_serial`]). With a play position
//! set, every NAK first asks for what is missing walking *forward* from it, at most
//! `play_window` serials ahead and at most that many in flight, stopping short of the frontier
//! (from there on the loop itself is delivering). Play asks not answered within
//! `play_expiry` are asked again: a lost repair there stalls playback. Like backlog repairs,
//! play repairs never move the frontier. The play walk replaces the backlog (it covers the same
//! gaps, from the other end): backlog asks would sit in the server's repair queue ahead of the
//! next play asks. The window is small (512, about 0.7 MB) so that what is in flight drains
//! well within the expiry at modest rates and the nearest serials are never queued behind it.
//!
//! Before all of these, every NAK asks for the hash blocks that datagrams held unverified wait
//! for ([`NakPlanner::want_block`]), also before the first verified datagram sets the
//! frontier: a client that joins mid-loop verifies nothing it receives until the join point's
//! ancestors arrive, and they lie behind it in the loop. Block asks not answered within
//! `BLOCK_ASK_EXPIRY` are asked again; like play and backlog repairs, they never move the
//! frontier.

use core::time::Duration;
use std::collections::{HashSet, VecDeque};

use crate::bitmap::Bitmap;
use crate::carousel::REPAIR_SHARE_PERCENT_DEFAULT;
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
    /// Multicast NAK suppression (R10): a gap found by the scan is asked for only after a
    /// random delay of up to this (Timer A), and not at all if meanwhile another receiver's
    /// NAK for it is heard (`heard`). `None` (unicast): ask at once.
    pub suppression_delay: Option<Duration>,
    /// Seeds the random delays (the planner is sans-IO; the driver supplies randomness).
    pub random_seed: u64,
    /// Serials behind the join point asked ahead of the loop and not yet arrived, at most;
    /// 0 turns the backlog off.
    pub backlog_window: u32,
    /// A backlog ask not answered within this long stops counting against the window.
    pub backlog_expiry: Duration,
    /// With a play position set: serials ahead of it looked at, and asked and not yet arrived,
    /// at most.
    pub play_window: u32,
    /// A play ask not answered within this long is asked again.
    pub play_expiry: Duration,
}

/// Asked-for ranges remembered for re-asking at most; also the bound on gaps waiting for their
/// suppression delay.
pub const OUTSTANDING_MAX: usize = 4096;
/// Serials of one range heard from the group that count as asked (see [`NakPlanner::heard`]).
const HEARD_RANGE_MAX: u32 = 1024;
/// Whether a far arrival is another receiver's repair is judged by stretches of 64 serials
/// (a bitmap of a 64th of the loop; a host on the group can forge heard ranges anyway).
const HEARD_LATELY_SHIFT: u32 = 6;
/// An ask is re-asked at most this long after the repair timeout, however much is queued
/// before it (a repair lost at the end of a long queue is still asked again).
const REPAIR_QUEUE_WAIT_MAX: Duration = Duration::from_secs(5);
/// An unverified datagram moves the frontier at most this much beyond what the loop's rate
/// allows (see [`NakPlanner::saw_unverified`]).
const PENDING_SLACK: u32 = 16;
/// Unverified datagrams move the frontier only after this long without a verified one.
const UNVERIFIED_AFTER_QUIET: Duration = Duration::from_millis(50);
/// The progress window is at least twice this (see [`NakPlanner::is_progress`]).
const PROGRESS_WINDOW_MIN: u32 = 64;
/// A verified datagram further than this past the frontier is a *lead*, not yet the loop's
/// progress (see [`NakPlanner::saw`]): a host on the group replaying genuine datagrams a few
/// hundred serials ahead made a loss-free client report 46 % loss and ask for 14,000 serials
/// in 3 s. The same as the loss meter's reordering window, so a step the frontier takes at
/// once is one the meter can still take back.
const LONG_JUMP: u32 = 64;
/// A lead becomes the loop's progress once the frontier has not moved for this long, at
/// least (the loop went quiet at the frontier: what lies between was lost) ...
const LEAD_QUIET_MIN: Duration = Duration::from_millis(2);
/// ... and at most; with the tier's rate known, the time its loop takes to send
/// `2 * LONG_JUMP`; else `LEAD_QUIET_UNKNOWN_RATE`.
const LEAD_QUIET_MAX: Duration = Duration::from_millis(50);
const LEAD_QUIET_UNKNOWN_RATE: Duration = Duration::from_millis(20);
/// Stray arrivals in a row (and `lead_quiet`) that move the frontier to where they are (see
/// [`NakPlanner::saw`]).
const STRAYS_MAX: u32 = 16;
/// ... that outnumber the arrivals near the frontier meanwhile at least this many times.
const STRAYS_PER_NEAR: u32 = 8;
/// A stray is further from the frontier than the loop goes in this long ...
const STRAY_DISTANCE_TIME: Duration = Duration::from_millis(250);
/// ... and than this many progress windows.
const STRAY_DISTANCE_WINDOWS: u32 = 8;
/// Far arrivals heard as other receivers' repairs, counted before their pace is judged against
/// the frontier's (see [`NakPlanner::frontier_keeps_pace`]), ...
const HEARD_PACE_MIN: u32 = 256;
/// ... which must have travelled at least this share of their count meanwhile (repairs are at
/// most the tier's repair share, half: the loop sends one for each, and moves the frontier) ...
const HEARD_PACE_SHARE: u32 = 4;
/// ... counted afresh after this many, or after `HEARD_PACE_QUIET` without one.
const HEARD_PACE_WINDOW: u32 = 4096;
const HEARD_PACE_QUIET: Duration = Duration::from_secs(1);
/// Frontier changes remembered for the scan limit, at most (one an instant).
const FRONTIER_HISTORY_MAX: usize = 256;
/// A receiver missing more than this share of the recent scan is overloaded: it asks nothing
/// the scan finds (see the module doc). Above a tier's rate by a few percent, a path loses a
/// few percent; a receiver ever further above its path loses ever more.
const OVERLOAD_LOSS_PERCENT: u64 = 25;
/// The recent scan: serials looked at, halved (with those missing) past twice this and every
/// `OVERLOAD_HALF_LIFE`; the verdict waits for at least this many (so on a tier slower than
/// about 1,000 datagrams a second, 12 Mbit/s, there is none: its receivers ask as before).
const OVERLOAD_SCAN: u64 = 512;
/// Gaps found while overloaded are asked for once it keeps up again only if they are at most
/// this share of the loop (see the module doc).
const DEFERRED_ASK_SHARE: u32 = 8;
/// Block asks in flight (asked, not arrived, not expired) at most; the rest wait their turn.
const BLOCK_ASKS_MAX: usize = 256;
/// Waiting blocks named again between two NAKs that go to the front of the queue, at most.
const BLOCKS_NAMED_AGAIN_MAX: usize = 64;
/// A block ask not answered within this long is asked again.
const BLOCK_ASK_EXPIRY: Duration = Duration::from_millis(500);
/// What the scan found this long ago counts half: a receiver whose tier slowed down to its
/// path asks again within a second, however much it lost before (counted by serials alone,
/// a 5 Mbit/s receiver that had been on a 1 Gbit/s tier asked nothing for 2.7 s, and waited a
/// loop for what it lost meanwhile: 1,082 duplicates of a 3,050-serial file).
const OVERLOAD_HALF_LIFE: Duration = Duration::from_millis(250);

impl Default for NakConfig {
    fn default() -> NakConfig {
        NakConfig {
            interval: Duration::from_millis(10),
            reorder_margin: 256,
            repair_timeout: Duration::from_millis(100),
            suppression_delay: None,
            random_seed: 0x9e37_79b9_7f4a_7c15,
            backlog_window: 0,
            backlog_expiry: Duration::from_secs(1),
            play_window: 512,
            play_expiry: Duration::from_millis(500),
        }
    }
}

/// Verified datagrams far ahead of the frontier (see [`NakPlanner::saw`]): the nearest, and
/// the chain of arrivals that followed it within the loop's reach.
#[derive(Clone, Copy, Debug)]
struct Lead {
    first: u32,
    last: u32,
    /// When the first lead arrived, and when `last` did.
    since: Instant,
    last_at: Instant,
    /// Arrivals of the chain (`first` and those after it).
    arrived: u32,
}

/// Far arrivals heard as other receivers' repairs counted (the last at `last`), and the
/// frontier's moves when counting began (see [`NakPlanner::frontier_keeps_pace`]).
#[derive(Clone, Copy, Debug)]
struct HeardPace {
    last: Instant,
    moves_at: u64,
    count: u32,
}

/// A run of verified loop datagrams far from the frontier (see `NakPlanner::note_stray`).
#[derive(Clone, Copy, Debug)]
struct Strays {
    count: u32,
    /// Arrivals near the frontier meanwhile.
    near: u32,
    since: Instant,
    /// The last stray, and how many in a row came in loop order (each a step past the last).
    last: u32,
    in_order: u32,
}

/// What a verified arrival is to the planner (see [`NakPlanner::is_progress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    /// The loop's progress: it moves the frontier.
    Progress,
    /// Far ahead of the frontier: a lead (see [`NakPlanner::saw`]).
    Lead,
    /// Behind the frontier, a repair, or further ahead than the loop can have gone.
    Other,
}

/// Serials heard asked for by other receivers, by age: the current generation and the one
/// before, each a bitmap of stretches of `1 << shift` serials, swapped every `generation`.
/// A serial heard counts for more than one generation and at most two. Exact whatever the
/// number of ranges heard: a map of ranges looked up among the 8 starting nearest below a
/// serial was masked by 8 one-serial ranges above each genuine start, and one full at
/// `OUTSTANDING_MAX` ranges was purged after 100 ms while repairs were still queued
/// (hx_attack14 N2a, N2b).
struct HeardWindow {
    generation: Duration,
    shift: u32,
    current: Bitmap,
    previous: Bitmap,
    /// When `current` began (`None`: nothing heard yet).
    started: Option<Instant>,
}

impl HeardWindow {
    fn new(loop_len: u32, generation: Duration, shift: u32) -> HeardWindow {
        assert!(
            generation > Duration::ZERO,
            "a heard generation lasts some time"
        );
        let stretches = loop_len.div_ceil(1 << shift);
        HeardWindow {
            generation,
            shift,
            current: Bitmap::new(stretches),
            previous: Bitmap::new(stretches),
            started: None,
        }
    }

    /// How many generations have begun since `current` did (0, 1, or 2 for two or more).
    fn generations_since(&self, now: Instant) -> u32 {
        self.started.map_or(2, |at| {
            let age = now.saturating_since(at);
            if age < self.generation {
                0
            } else if age < 2 * self.generation {
                1
            } else {
                2
            }
        })
    }

    fn note(&mut self, serials: core::ops::Range<u32>, now: Instant) {
        match self.generations_since(now) {
            0 => {}
            1 => {
                core::mem::swap(&mut self.current, &mut self.previous);
                self.current.clear_all();
                self.started = self.started.map(|at| at + self.generation);
            }
            _ => {
                self.current.clear_all();
                self.previous.clear_all();
                self.started = Some(now);
            }
        }
        let stretches = serials.start >> self.shift..((serials.end - 1) >> self.shift) + 1;
        self.current.set_range(stretches);
    }

    fn contains(&self, serial: u32, now: Instant) -> bool {
        let stretch = serial >> self.shift;
        match self.generations_since(now) {
            0 => self.current.get(stretch) || self.previous.get(stretch),
            1 => self.current.get(stretch),
            _ => false,
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
    /// When the last NAK went out (at most one per interval).
    last_nak: Option<Instant>,
    /// Ranges asked for (by us, or heard from others), oldest first, with when each is due
    /// to be asked again if still missing.
    outstanding: VecDeque<(u32, u32, Instant)>,
    /// Serials asked for (by us, or heard from others) that have not arrived: when one does, it
    /// is a repair, and never moves the frontier. (Without this a repair of a serial more than
    /// half a loop behind read as the loop jumping ahead, and everything "skipped" was asked
    /// for: on a 61 s loop a 5 Mbit/s receiver saw 6,000 serials "lost" at once and received
    /// the file nearly three times.)
    asked: Bitmap,
    /// The serials of `asked` this receiver asked for itself (not only heard): arriving far
    /// from the frontier, they are its own repairs whatever the frontier does. Heard ones
    /// outlived what was heard and then read as our own (hx_attack15 N2: a victim parked for
    /// as long as forged ranges lasted, with no further traffic).
    asked_by_us: Bitmap,
    /// Serials in `outstanding` (arrived or not): what may still be queued at the server.
    outstanding_serials: u64,
    /// Datagrams a second the channel sends (its tier's rate), if known: how far the loop can
    /// have gone, and (its repair share) how fast repairs arrive, so an ask waits for
    /// everything asked before it to be sent before it is asked again.
    loop_rate: Option<f64>,
    /// When the frontier last moved.
    frontier_at: Option<Instant>,
    /// (`frontier_travel`, `frontier_at`) before the first move at `frontier_at`: datagrams
    /// read in one batch share one `now`, so their reach is measured from here together (from
    /// the last move each, a batch at 97 % loss, its datagrams ~30 serials apart, could move
    /// the frontier no further than `PENDING_SLACK` past its first, and the loss meter read
    /// 15 % loss).
    reach_anchor: Option<(u64, Instant)>,
    /// When a verified datagram last arrived: while they do, an unverified one never moves the
    /// frontier (see [`NakPlanner::saw_unverified`]).
    verified_at: Option<Instant>,
    /// Gaps found but waiting for their suppression delay: (first, count, ask at).
    waiting: VecDeque<(u32, u32, Instant)>,
    /// Serials other receivers asked for within about the repair timeout (they are not
    /// asked again meanwhile), and within about `heard_as_repair`'s window (arriving, they
    /// are their repairs, not the loop). Allocated when something is first heard.
    heard_recently: Option<HeardWindow>,
    heard_lately: Option<HeardWindow>,
    /// Where this session's loop joined: the first verified datagram's serial.
    join: Option<u32>,
    /// It held nothing when it began: its backlog walk stops at the file's start (what lies
    /// beyond, the end of the file, is what the loop brings next in this pass).
    held_nothing: bool,
    /// Hash blocks wanted (see [`NakPlanner::want_block`]) and not arrived, asked or not
    /// (allocated with the first).
    block_bits: Option<Bitmap>,
    /// Blocks wanted since the last NAK (their suppression delay starts at the next poll),
    /// wanted and waiting with when to ask (or due again), and asked with when.
    blocks_new: Vec<u32>,
    blocks_wanted: VecDeque<(u32, Instant)>,
    blocks_asked: VecDeque<(u32, Instant)>,
    /// The serials of `blocks_asked` (at most `BLOCK_ASKS_MAX`).
    blocks_in_flight: HashSet<u32>,
    /// Waiting blocks named again since the last NAK (see [`NakPlanner::want_block`]), at most
    /// `BLOCKS_NAMED_AGAIN_MAX`, and those waiting for their delay, asked before the others.
    blocks_named_again: Vec<u32>,
    blocks_urgent: VecDeque<(u32, Instant)>,
    block_serials: u64,
    /// The backward walk from the join point: the next serial to look at, and whether it is on.
    backlog_next: Option<u32>,
    /// Serials the backlog asked for and that have not arrived (allocated with the backlog).
    backlog_bits: Option<Bitmap>,
    /// Backlog ranges asked and when; their unseen serials count against the window.
    backlog_asked: VecDeque<(u32, u32, Instant)>,
    /// Serials of `backlog_bits` whose ask expired (no longer in flight; still repairs).
    backlog_expired: Option<Bitmap>,
    backlog_serials: u64,
    /// The follower's play position (a loop serial), if any.
    play: Option<u32>,
    /// Serials the play walk asked for that have not arrived (allocated with the position);
    /// its count of ones is what is in flight.
    play_bits: Option<Bitmap>,
    /// Play ranges asked and when, oldest first (each expires after `play_expiry`).
    play_asked: VecDeque<(u32, u32, Instant)>,
    play_serials: u64,
    random: u64,
    /// The recent scan (see `OVERLOAD_SCAN`): serials looked at, and how many were missing.
    scan_recent: u64,
    scan_recent_missing: u64,
    /// When the recent scan was last halved for its age.
    scan_halved_at: Option<Instant>,
    /// Datagrams that arrived (any, verified or not), and what the tier's rate sent, over the
    /// same recent time as the scan (halved with it); see [`NakPlanner::is_overloaded`].
    arrived_recent: u64,
    sent_recent: f64,
    sent_counted_at: Option<Instant>,
    naks_sent: u64,
    serials_naked: u64,
    serials_suppressed: u64,
    serials_left_to_loop: u64,
    /// Gaps found (or due to be asked again) while overloaded, waiting for it to keep up again
    /// (see the module doc), at most `OUTSTANDING_MAX`: (first, count, missing when deferred);
    /// and the sum of their missing.
    deferred: VecDeque<(u32, u32, u32)>,
    deferred_serials: u64,
    /// Far arrivals not yet the loop's progress, and the last promoted to it that the loss
    /// meter has not been told of ([`NakPlanner::take_promoted`]).
    lead: Option<Lead>,
    promoted: Option<(u32, u32, u32)>,
    /// The last verified arrival behind the frontier that was neither held nor asked for,
    /// and when: the loop itself arriving behind a frontier that ran ahead of it.
    straggler: Option<(u32, Instant)>,
    leads_promoted: u64,
    retractions: u64,
    /// The serial a retraction took the frontier back to, not yet told to the loss meter
    /// ([`NakPlanner::take_retracted`]).
    retracted: Option<u32>,
    /// Verified arrivals of the loop far from the frontier, those that were progress or leads
    /// meanwhile, and since when (see `note_stray`).
    strays: Option<Strays>,
    /// The frontier started again elsewhere (`note_stray`), not yet told to the loss meter.
    restarted: bool,
    heard_pace: Option<HeardPace>,
    /// Arrivals that moved the frontier (each once, however far it moved).
    frontier_moves: u64,
    /// The frontier's travel at each instant it changed over the last `lead_quiet` (and the
    /// last before): the scan goes no further than the least of them (see `scan_limit`).
    frontier_history: VecDeque<(Instant, u64)>,
}

impl NakPlanner {
    /// A planner for a loop of `held.len()` serials, of which those set in `held` are already
    /// held (e.g. after a resume).
    pub fn new(config: NakConfig, held: &Bitmap) -> NakPlanner {
        assert!(!held.is_empty(), "a loop has at least one serial");
        NakPlanner {
            config,
            held_nothing: held.count_ones() == 0,
            seen: held.clone(),
            frontier: None,
            cursor: 0,
            frontier_travel: 0,
            cursor_travel: 0,
            last_nak: None,
            outstanding: VecDeque::new(),
            outstanding_serials: 0,
            asked: Bitmap::new(held.len()),
            asked_by_us: Bitmap::new(held.len()),
            loop_rate: None,
            frontier_at: None,
            reach_anchor: None,
            verified_at: None,
            waiting: VecDeque::new(),
            heard_recently: None,
            heard_lately: None,
            join: None,
            block_bits: None,
            blocks_new: Vec::new(),
            blocks_wanted: VecDeque::new(),
            blocks_asked: VecDeque::new(),
            blocks_in_flight: HashSet::new(),
            blocks_named_again: Vec::new(),
            blocks_urgent: VecDeque::new(),
            block_serials: 0,
            backlog_next: None,
            backlog_bits: None,
            backlog_asked: VecDeque::new(),
            backlog_expired: None,
            backlog_serials: 0,
            play: None,
            play_bits: None,
            play_asked: VecDeque::new(),
            play_serials: 0,
            random: config.random_seed | 1,
            scan_recent: 0,
            scan_recent_missing: 0,
            scan_halved_at: None,
            arrived_recent: 0,
            sent_recent: 0.0,
            sent_counted_at: None,
            naks_sent: 0,
            serials_naked: 0,
            serials_suppressed: 0,
            serials_left_to_loop: 0,
            deferred: VecDeque::new(),
            deferred_serials: 0,
            lead: None,
            promoted: None,
            straggler: None,
            leads_promoted: 0,
            retractions: 0,
            retracted: None,
            strays: None,
            restarted: false,
            heard_pace: None,
            frontier_moves: 0,
            frontier_history: VecDeque::new(),
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

    fn before(&self, serial: u32) -> u32 {
        if serial == 0 {
            self.loop_len() - 1
        } else {
            serial - 1
        }
    }

    /// Turns the backlog on or off (see the module doc), e.g. off on a multicast channel where
    /// repairs reach every receiver.
    pub fn set_backlog_window(&mut self, window: u32) {
        self.config.backlog_window = window;
        if window == 0 {
            self.backlog_next = None;
        }
    }

    /// Serials asked from the backlog so far.
    pub fn backlog_serials(&self) -> u64 {
        self.backlog_serials
    }

    /// A hash block that datagrams held unverified wait for
    /// ([`crate::receiver::Receiver::take_wanted_blocks`]): asked first in a NAK (even before
    /// the frontier is set), on multicast after the suppression delay and not if another
    /// receiver was heard asking for it, and again every `BLOCK_ASK_EXPIRY` until it arrives.
    /// A block lies before what it covers in the loop, so otherwise only the loop's next pass,
    /// or the end of the backlog's walk, brings it. Not if it is held or already wanted; nor
    /// where this pass of the loop has gone since the join (the scan finds a block lost there
    /// and asks for it itself); nor, without a backlog, ahead of the frontier, where the loop
    /// brings it before what it covers (what waits for it there came from a host on the
    /// group: on multicast, forged datagrams under blocks ahead of the loop made every
    /// receiver ask for them). At most `BLOCK_ASKS_MAX` are in flight; the others wait their
    /// turn (each serial once: the queue is bounded by the loop).
    pub fn want_block(&mut self, serial: u32) {
        self.want(serial, false);
    }

    /// `serial`, counted as held, turned out not to be: its copy was held pending and failed
    /// verification when its parent arrived (a forgery). Without this it stayed "seen", and
    /// neither the scan, the backlog nor a block ask asked for it again (a host on path that
    /// planted forged level-1 blocks behind a unicast joiner delayed it by 0.4 of a loop).
    /// It is asked again ahead of the loop, as a wanted block is.
    pub fn forget(&mut self, serial: u32) {
        if serial >= self.loop_len() {
            return;
        }
        self.seen.clear(serial);
        self.want(serial, true);
    }

    fn want(&mut self, serial: u32, scanned_too: bool) {
        let loop_len = self.loop_len();
        if serial >= loop_len || self.seen.get(serial) || self.asked_by_us.get(serial) {
            return;
        }
        if let Some(join) = self.join {
            let scanned = self.frontier_travel >= u64::from(loop_len)
                || u64::from(self.ahead(join, serial)) <= self.frontier_travel;
            if (scanned && !scanned_too) || self.loop_brings_first(serial) {
                return;
            }
        }
        let bits = self.block_bits.get_or_insert_with(|| Bitmap::new(loop_len));
        if bits.get(serial) {
            // Named again while it waits: the loop's own pending datagrams name what they
            // wait for with every arrival, a forged one names its blocks once. It goes to the
            // front (a burst of forged datagrams just before a join had queued 600 blocks
            // ahead of the join point's own: hx_attack16 F3).
            if !self.blocks_in_flight.contains(&serial)
                && self.blocks_named_again.len() < BLOCKS_NAMED_AGAIN_MAX
                && !self.blocks_named_again.contains(&serial)
            {
                self.blocks_named_again.push(serial);
            }
            return;
        }
        bits.set(serial);
        self.blocks_new.push(serial);
    }

    /// [`NakPlanner::want_block`] for each of `serials`, e.g.
    /// `nak.want_blocks(receiver.take_wanted_blocks())` after receiving.
    pub fn want_blocks(&mut self, serials: impl IntoIterator<Item = u32>) {
        for serial in serials {
            self.want_block(serial);
        }
    }

    /// Whether `serial` lies ahead of the frontier, where the loop brings a block before what
    /// it covers, and no backlog asks for what lies there: what waits for it came from a host
    /// on the group (a forged datagram), not from the loop or a repair.
    fn loop_brings_first(&self, serial: u32) -> bool {
        self.frontier.is_some_and(|frontier| {
            let ahead = self.ahead(frontier, serial);
            self.config.backlog_window == 0 && ahead > 0 && ahead < self.loop_len().div_ceil(2)
        })
    }

    /// Whether `serial` is a wanted block (asked or about to be).
    fn is_block_ask(&self, serial: u32) -> bool {
        self.block_bits
            .as_ref()
            .is_some_and(|bits| bits.get(serial))
    }

    /// Hash-block serials asked by [`NakPlanner::want_block`] so far.
    pub fn block_serials(&self) -> u64 {
        self.block_serials
    }

    /// Appends the wanted blocks that are due (and those whose ask expired unanswered) as
    /// ranges, in serial order, at most a quarter of a NAK's ranges and `BLOCK_ASKS_MAX` in
    /// flight.
    fn append_blocks(&mut self, ranges: &mut Vec<(u32, u32)>, now: Instant) {
        // Answered asks free their place; unanswered ones past the expiry are due again.
        let (seen, in_flight, mut again) = (&self.seen, &mut self.blocks_in_flight, Vec::new());
        self.blocks_asked.retain(|&(serial, at)| {
            let expired = now.saturating_since(at) >= BLOCK_ASK_EXPIRY;
            if expired && !seen.get(serial) {
                again.push(serial);
            }
            let keep = !expired && !seen.get(serial);
            if !keep {
                in_flight.remove(&serial);
            }
            keep
        });
        // New wants (and those named again, to the front) wait for their suppression delay
        // (multicast), as a gap the scan finds.
        for serial in std::mem::take(&mut self.blocks_named_again) {
            let ask_at = self.ask_at(now);
            self.blocks_urgent.push_back((serial, ask_at));
        }
        for serial in again.into_iter().rev() {
            self.blocks_wanted.push_front((serial, now));
        }
        for serial in std::mem::take(&mut self.blocks_new) {
            let ask_at = self.ask_at(now);
            self.blocks_wanted.push_back((serial, ask_at));
        }
        let mut serials: Vec<u32> = Vec::new();
        // Those named again first (each queue in the order of its delays), then the rest.
        let mut urgent = true;
        while serials.len() < NAK_RANGES_MAX / 4 && self.blocks_asked.len() < BLOCK_ASKS_MAX {
            let queue = if urgent {
                &mut self.blocks_urgent
            } else {
                &mut self.blocks_wanted
            };
            let Some(&(serial, _)) = queue.front().filter(|&&(_, at)| at <= now) else {
                if urgent {
                    urgent = false;
                    continue;
                }
                break;
            };
            queue.pop_front();
            // Arrived meanwhile (out of `block_bits` already: `no_longer_asked`), or asked
            // already (a block named again is in the queue twice).
            if self.seen.get(serial)
                || !self.is_block_ask(serial)
                || self.blocks_in_flight.contains(&serial)
            {
                continue;
            }
            // Wanted before the frontier was set, and ahead of it now (a burst of forged
            // datagrams before the join crowded out the join point's own blocks).
            if self.loop_brings_first(serial) {
                if let Some(bits) = self.block_bits.as_mut() {
                    bits.clear(serial);
                }
                continue;
            }
            if self.heard_recently(serial, now) {
                // Another receiver asked for it: its repair reaches us too. Asked again after
                // the expiry if it does not.
                self.serials_suppressed += 1;
            } else {
                serials.push(serial);
            }
            self.blocks_asked.push_back((serial, now));
            self.blocks_in_flight.insert(serial);
        }
        serials.sort_unstable();
        serials.dedup();
        for &serial in &serials {
            match ranges.last_mut() {
                Some((first, count)) if *first + *count == serial => *count += 1,
                _ => ranges.push((serial, 1)),
            }
        }
        self.block_serials += serials.len() as u64;
    }

    /// Sets (or clears) the follower's play position: the loop serial playback waits for. From
    /// the next NAK on, what is missing walking forward from it is asked first.
    pub fn set_play_position(&mut self, serial: Option<u32>) {
        self.play = serial.filter(|&s| s < self.loop_len());
        if self.play.is_some() && self.play_bits.is_none() {
            self.play_bits = Some(Bitmap::new(self.loop_len()));
        }
    }

    /// Serials asked by the play walk so far.
    pub fn play_serials(&self) -> u64 {
        self.play_serials
    }

    /// Appends play ranges (walking forward from the play position) while the window has room,
    /// using at most half of a NAK's ranges so the gap scan keeps going.
    fn append_play(&mut self, ranges: &mut Vec<(u32, u32)>, now: Instant) {
        let (Some(play), Some(frontier)) = (self.play, self.frontier) else {
            return;
        };
        // Taken for the walk (which reads `self` too) and put back below.
        let mut bits = self
            .play_bits
            .take()
            .expect("allocated with the play position");
        // Expired asks: their unseen serials may be asked again.
        while let Some(&(first, count, at)) = self.play_asked.front() {
            if now.saturating_since(at) < self.config.play_expiry {
                break;
            }
            self.play_asked.pop_front();
            for serial in first..first + count {
                bits.clear(serial);
            }
        }
        let window = self.config.play_window;
        let mut room = window.saturating_sub(bits.count_ones());
        let margin = self.config.reorder_margin;
        let ahead_of_frontier = self.ahead(frontier, play);
        if (1..=2 * margin).contains(&ahead_of_frontier) {
            // The loop is about to deliver the play position anyway.
            room = 0;
        }
        let ranges_max = ranges.len() + NAK_RANGES_MAX / 2;
        let mut run: Option<(u32, u32)> = None; // (first, count)
        let mut serial = play;
        let mut scanned = 0u32;
        loop {
            // Stop at the frontier less the reorder margin (from there the loop delivers, and
            // what is within the margin behind it may still be in flight), at the window's end,
            // at a wrap of the whole loop, or when the NAK's share of ranges is used.
            let done = scanned >= window
                || scanned >= self.loop_len()
                || room == 0
                || self.ahead(serial, frontier) <= margin
                || ranges.len() + usize::from(run.is_some()) >= ranges_max;
            let wanted =
                !done && !self.seen.get(serial) && !bits.get(serial) && !self.is_block_ask(serial);
            let wraps = serial == 0;
            if let Some((first, count)) = run.filter(|_| done || !wanted || wraps) {
                ranges.push((first, count));
                self.play_asked.push_back((first, count, now));
                self.play_serials += u64::from(count);
                run = None;
            }
            if done {
                break;
            }
            if wanted {
                bits.set(serial);
                room -= 1;
                run = Some(match run {
                    Some((first, count)) => (first, count + 1),
                    None => (serial, 1),
                });
            }
            scanned += 1;
            serial = if serial + 1 == self.loop_len() {
                0
            } else {
                serial + 1
            };
        }
        self.play_bits = Some(bits);
    }

    /// Appends backlog ranges (walking backwards from the join point) while the window has
    /// room and the NAK has space.
    fn append_backlog(&mut self, ranges: &mut Vec<(u32, u32)>, now: Instant) {
        let Some(mut next) = self.backlog_next else {
            return;
        };
        let frontier = self.frontier.expect("the backlog starts with the frontier");
        let expiry = self.config.backlog_expiry;
        // Expired asks stop counting against the window (their serials stay marked: if they
        // arrive late they are still repairs).
        while let Some(&(first, count, at)) = self.backlog_asked.front() {
            if now.saturating_since(at) < expiry {
                break;
            }
            self.backlog_asked.pop_front();
            let (bits, expired) = (
                self.backlog_bits
                    .as_ref()
                    .expect("allocated with the backlog"),
                self.backlog_expired
                    .as_mut()
                    .expect("allocated with the backlog"),
            );
            for serial in (first..first + count).filter(|&s| bits.get(s)) {
                expired.set(serial);
            }
        }
        // Asked, not arrived, not expired: kept as two counts instead of walking every serial
        // of every live ask on each NAK (at 2 Gbit/s that walk was 5 % of the client's CPU).
        let in_flight = self.backlog_bits.as_ref().map_or(0, Bitmap::count_ones)
            - self.backlog_expired.as_ref().map_or(0, Bitmap::count_ones);
        let window = self.config.backlog_window;
        if in_flight > window / 2 {
            return;
        }
        let mut room = window - in_flight;
        // Stop where the loop is about to deliver anyway: within two reorder margins ahead of
        // the frontier, and within twice what is in flight. Asks are served from the same
        // token bucket as the loop, at most half of it, in the order asked (the nearest to the
        // frontier last): an ask nearer than what is queued before it reaches the client after
        // the loop has brought the same serial, a duplicate. Stopping early costs nothing: the
        // loop then has the whole rate.
        let reorder_stop = 2 * self.config.reorder_margin + 1;
        let mut run: Option<(u32, u32)> = None; // (lowest, highest) of the current missing run
        let mut scanned = 0u32;
        loop {
            let stop_within = reorder_stop.max(2 * (window - room));
            // A client that held nothing walks back only to the file's start: past it lies
            // what the loop brings next in this pass, all of it missing. Asked ahead of the
            // loop, on a client's own unicast channel (repairs share its rate) it came no
            // sooner, and the loop overtook the queued asks: a 24 MiB download at 20 Mbit/s
            // asked 11,551 serials and received 4,632 twice, 13.2 s instead of 10.5 (s25).
            let at_wrap = next == self.loop_len() - 1;
            let done = (self.held_nothing && at_wrap)
                || self.ahead(frontier, next) < stop_within
                || room == 0
                || scanned >= self.loop_len()
                || ranges.len() + usize::from(run.is_some()) >= NAK_RANGES_MAX;
            let missing = !done
                && !self.seen.get(next)
                && !self.play_bits.as_ref().is_some_and(|bits| bits.get(next))
                && !self.is_block_ask(next);
            // A run ends at a held serial, at the wrap (ranges never wrap), or when done.
            let wraps = at_wrap && run.is_some();
            if let Some((low, high)) = run.filter(|_| done || !missing || wraps) {
                let bits = self
                    .backlog_bits
                    .as_mut()
                    .expect("allocated with the backlog");
                for serial in low..=high {
                    bits.set(serial);
                }
                ranges.push((low, high - low + 1));
                self.backlog_asked.push_back((low, high - low + 1, now));
                self.backlog_serials += u64::from(high - low + 1);
                run = None;
            }
            if done {
                break;
            }
            if missing {
                run = Some(match run {
                    Some((_, high)) => (next, high),
                    None => (next, next),
                });
                room -= 1;
            }
            scanned += 1;
            next = self.before(next);
        }
        let wrapped = self.held_nothing && next == self.loop_len() - 1;
        self.backlog_next =
            if wrapped || self.ahead(frontier, next) < reorder_stop.max(2 * (window - room)) {
                None
            } else {
                Some(next)
            };
    }

    /// The session moved to another channel (a speed tier, R11): that loop is somewhere else,
    /// and what was asked of the old one will not arrive here. Everything about the old loop
    /// goes (frontier, scan cursor, asks outstanding or waiting, ranges heard from its
    /// receivers, play and backlog asks); what is held stays, and the next datagram is the new
    /// join point. Kept, the old asks were asked again of the new tier every repair timeout,
    /// and their repairs arrived just before the new loop brought the same serials: a
    /// 5 Mbit/s receiver moved off a 1 Gbit/s tier received 42 % duplicates.
    pub fn rejoin(&mut self) {
        self.frontier = None;
        self.frontier_at = None;
        self.reach_anchor = None;
        self.verified_at = None;
        self.cursor = 0;
        self.frontier_travel = 0;
        self.cursor_travel = 0;
        self.outstanding.clear();
        self.outstanding_serials = 0;
        self.asked = Bitmap::new(self.seen.len());
        self.asked_by_us = Bitmap::new(self.seen.len());
        self.waiting.clear();
        self.heard_recently = None;
        self.heard_lately = None;
        self.join = None;
        self.block_bits = None;
        self.blocks_new.clear();
        self.blocks_wanted.clear();
        self.blocks_asked.clear();
        self.blocks_in_flight.clear();
        self.blocks_named_again.clear();
        self.blocks_urgent.clear();
        self.backlog_next = None;
        self.backlog_bits = None;
        self.backlog_expired = None;
        self.backlog_asked.clear();
        if let Some(bits) = self.play_bits.as_mut() {
            *bits = Bitmap::new(self.seen.len());
        }
        self.play_asked.clear();
        self.forget_scan();
        self.leave_deferred_to_loop();
        self.lead = None;
        self.promoted = None;
        self.straggler = None;
        self.retracted = None;
        self.strays = None;
        self.restarted = false;
        self.heard_pace = None;
        self.frontier_history.clear();
    }

    /// `first .. first + count` waits for the overload to pass (what of it is still missing).
    fn defer(&mut self, first: u32, count: u32) {
        let missing = (first..first + count)
            .filter(|&serial| !self.seen.get(serial))
            .count() as u32;
        if missing == 0 {
            return;
        }
        if self.deferred.len() < OUTSTANDING_MAX {
            self.deferred.push_back((first, count, missing));
            self.deferred_serials += u64::from(missing);
        } else {
            self.serials_left_to_loop += u64::from(missing);
        }
    }

    fn leave_deferred_to_loop(&mut self) {
        self.serials_left_to_loop += self.deferred_serials;
        self.deferred.clear();
        self.deferred_serials = 0;
    }

    fn forget_scan(&mut self) {
        self.scan_recent = 0;
        self.scan_recent_missing = 0;
        self.scan_halved_at = None;
        self.arrived_recent = 0;
        self.sent_recent = 0.0;
        self.sent_counted_at = None;
    }

    /// Whether the recent scan found more than `OVERLOAD_LOSS_PERCENT` missing (over at least
    /// `OVERLOAD_SCAN` serials): see the module doc. With the tier's rate known, only if as
    /// much fell short of arriving: a host on the group replaying a few genuine datagrams just
    /// ahead of the frontier makes the loop's own serials read as missing when the scan passes
    /// them (20 replays a second held a loss-free client overloaded 92 % of the time, and it
    /// asked for its one real loss after a second instead of 25 ms); it cannot make fewer
    /// arrive.
    pub fn is_overloaded(&self) -> bool {
        let short = self.loop_rate.is_none()
            || (self.arrived_recent as f64) * 100.0
                < self.sent_recent * (100 - OVERLOAD_LOSS_PERCENT) as f64;
        self.scan_recent >= OVERLOAD_SCAN
            && self.scan_recent_missing * 100 > self.scan_recent * OVERLOAD_LOSS_PERCENT
            && short
    }

    /// The scan looked at `scanned` more serials at `now`, `missing` of them not held.
    fn scanned(&mut self, scanned: u32, missing: u32, now: Instant) {
        debug_assert!(missing <= scanned, "{missing} missing of {scanned} scanned");
        let halved_at = *self.scan_halved_at.get_or_insert(now);
        let mut halvings =
            now.saturating_since(halved_at).as_nanos() / OVERLOAD_HALF_LIFE.as_nanos();
        if halvings > 0 {
            self.scan_halved_at = Some(now);
        }
        self.scan_recent += u64::from(scanned);
        self.scan_recent_missing += u64::from(missing);
        if let Some(rate) = self.loop_rate {
            let since = self
                .sent_counted_at
                .map_or(Duration::ZERO, |at| now.saturating_since(at));
            self.sent_recent += rate * since.as_secs_f64();
        }
        self.sent_counted_at = Some(now);
        while (halvings > 0 || self.scan_recent > 2 * OVERLOAD_SCAN) && self.scan_recent > 0 {
            halvings = halvings.saturating_sub(1);
            self.scan_recent /= 2;
            self.scan_recent_missing /= 2;
            self.arrived_recent /= 2;
            self.sent_recent /= 2.0;
        }
    }

    /// Whether `serial`, arriving at `now`, is the loop's progress: it moves the frontier, and
    /// whatever it jumps over has gone by. Only a step of at most `LONG_JUMP` serials past the
    /// frontier, and (with the tier's rate known) within the loop's reach since the frontier
    /// last moved (twice its rate's worth, and `LONG_JUMP`). Not progress: a serial behind the
    /// frontier (or more than half a loop ahead, which is behind), one the backlog or play
    /// walk asked for, one further ahead than the loop can have gone (a repair sent twice, or
    /// a stale datagram), and a *lead*: a verified one further ahead than a step, which moves
    /// the frontier only once the loop falls quiet behind it (see [`NakPlanner::saw`]). The
    /// loss this client reports counts the same way (see [`crate::client::account_datagram`]).
    pub fn is_progress(&self, serial: u32, now: Instant) -> bool {
        self.classify(serial, now) == Arrival::Progress
    }

    fn classify(&self, serial: u32, now: Instant) -> Arrival {
        if serial >= self.loop_len() {
            return Arrival::Other;
        }
        let Some(frontier) = self.frontier else {
            return Arrival::Progress;
        };
        let ahead = self.ahead(frontier, serial);
        if self.is_explicit(serial) || ahead == 0 || ahead >= self.loop_len().div_ceil(2) {
            return Arrival::Other;
        }
        // A step, whenever it comes: a receiver reading a backlog gets thousands of the
        // loop's datagrams at one instant, microseconds after the last batch. (A host on the
        // group walking the frontier ahead a step at a time is undone by `note_straggler`,
        // and the scan waits for that: `scan_limit`.)
        if ahead <= LONG_JUMP {
            return Arrival::Progress;
        }
        let window = self.progress_window();
        if self.asked.get(serial) && ahead > window {
            // Asked for: the loop bringing it in order, or a repair sent ahead of it. Only as
            // far as the loop can have gone (a stretch asked for and then brought by the loop
            // otherwise never moved the frontier, and read as a jump past it: 10-15 % false
            // loss on a 5 Mbit/s tier).
            return match self.within_reach(ahead, now, window) {
                Some(true) => Arrival::Lead,
                _ => Arrival::Other,
            };
        }
        if ahead <= window || self.within_reach(ahead, now, window).unwrap_or(true) {
            Arrival::Lead
        } else {
            Arrival::Other
        }
    }

    /// How long the frontier stays still before a lead becomes the loop's progress.
    fn lead_quiet(&self) -> Duration {
        match self.loop_rate {
            Some(rate) => Duration::from_secs_f64(f64::from(2 * LONG_JUMP) / rate)
                .clamp(LEAD_QUIET_MIN, LEAD_QUIET_MAX),
            None => LEAD_QUIET_UNKNOWN_RATE,
        }
    }

    /// A verified `serial` far ahead of the frontier arrived at `now`: the nearest lead is
    /// kept (a nearer one replaces it, keeping its age), and the chain of arrivals after it
    /// within the loop's reach from its last.
    fn note_lead(&mut self, serial: u32, now: Instant) {
        let frontier = self.frontier.expect("a lead is ahead of a frontier");
        let Some(mut lead) = self.lead else {
            self.lead = Some(Lead {
                first: serial,
                last: serial,
                since: now,
                last_at: now,
                arrived: 1,
            });
            return;
        };
        let reach = match self.loop_rate {
            Some(rate) => {
                let reach = 2.0 * rate * now.saturating_since(lead.last_at).as_secs_f64();
                LONG_JUMP.saturating_add(reach.min(f64::from(u32::MAX)) as u32)
            }
            None => self.progress_window(),
        };
        if self.ahead(frontier, serial) < self.ahead(frontier, lead.first) {
            let extends = self.ahead(serial, lead.last) <= reach;
            lead.first = serial;
            lead.arrived += 1;
            if !extends {
                lead.last = serial;
                lead.last_at = now;
                lead.arrived = 1;
            }
        } else {
            let on = self.ahead(lead.last, serial);
            if on == 0 || on > reach {
                return;
            }
            lead.last = serial;
            lead.last_at = now;
            lead.arrived += 1;
        }
        self.lead = Some(lead);
    }

    /// The lead becomes the loop's progress if the frontier has not moved for `lead_quiet`
    /// since it arrived: what the loop sent between them was lost (a burst of loss longer
    /// than a step). While the loop goes on arriving short of it (a host on the group
    /// replayed it, or it was a repair of another receiver's), it never does, and it is
    /// dropped once the frontier passes it.
    fn promote_lead(&mut self, now: Instant) {
        let (Some(lead), Some(frontier), Some(frontier_at)) =
            (self.lead, self.frontier, self.frontier_at)
        else {
            return;
        };
        if now < frontier_at.max(lead.since) + self.lead_quiet() {
            return;
        }
        self.lead = None;
        let ahead = self.ahead(frontier, lead.last);
        if ahead == 0 || ahead >= self.loop_len().div_ceil(2) {
            return;
        }
        self.move_frontier(frontier, lead.last, now);
        // Quiet for `lead_quiet`: the scan need not wait for the loop to undo it.
        self.frontier_history.clear();
        self.note_frontier(now);
        self.straggler = None;
        self.leads_promoted += 1;
        let missing = (self.ahead(lead.first, lead.last) + 1).saturating_sub(lead.arrived);
        self.promoted = Some(match self.promoted {
            Some((first, _, earlier)) => (first, lead.last, earlier + missing),
            None => (lead.first, lead.last, missing),
        });
    }

    /// The lead the frontier last moved to (`first`, `last` of its chain, and how many of
    /// the chain did not arrive), once: the loss meter counts what lies between its position
    /// and `first` as lost, and those ([`crate::rate::LossMeter::jump_over`]).
    pub fn take_promoted(&mut self) -> Option<(u32, u32, u32)> {
        self.promoted.take()
    }

    /// Leads that became the loop's progress, and times a frontier that ran ahead of the loop
    /// was taken back to it.
    pub fn leads_promoted(&self) -> u64 {
        self.leads_promoted
    }

    pub fn retractions(&self) -> u64 {
        self.retractions
    }

    /// Whether `serial` (not yet recorded) is the loop arriving behind the frontier: neither
    /// held nor asked for, and where the scan has not yet been.
    fn is_straggler(&self, serial: u32) -> bool {
        let Some(frontier) = self.frontier else {
            return false;
        };
        let behind = u64::from(self.ahead(serial, frontier));
        let unscanned = self.frontier_travel.saturating_sub(self.cursor_travel);
        (1..=unscanned).contains(&behind)
            && behind < u64::from(self.loop_len().div_ceil(2))
            && !self.seen.get(serial)
            && !self.asked.get(serial)
            && !self.is_explicit(serial)
    }

    /// Serials strictly between `from` and `to` (going forward around the loop) held.
    fn seen_between(&self, from: u32, to: u32) -> u32 {
        let start = from + 1;
        if start >= self.loop_len() {
            self.seen.count_ones_in(0..to)
        } else if start <= to {
            self.seen.count_ones_in(start..to)
        } else {
            self.seen.count_ones_in(start..self.loop_len()) + self.seen.count_ones_in(0..to)
        }
    }

    /// Whether `serial` is far from the frontier either way: further than the loop goes in
    /// `STRAY_DISTANCE_TIME` at its rate, and than `STRAY_DISTANCE_WINDOWS` progress windows
    /// (a datagram of one sender thread a few milliseconds late at 1 Gbit/s is a few
    /// thousand serials behind, and left the frontier where it was).
    fn is_far(&self, frontier: u32, serial: u32) -> bool {
        let ahead = self.ahead(frontier, serial);
        let distance = ahead.min(self.loop_len() - ahead);
        let by_rate = self
            .loop_rate
            .map_or(0.0, |rate| rate * STRAY_DISTANCE_TIME.as_secs_f64());
        f64::from(distance)
            > by_rate.max(f64::from(STRAY_DISTANCE_WINDOWS * self.progress_window()))
    }

    /// A verified datagram nobody asked for arrived far from the frontier (`is_far`), neither
    /// progress nor a lead nor a straggler. The loop's own, every one of them for
    /// `lead_quiet` and at least `STRAYS_MAX`, means the frontier is not where the
    /// loop is (the first datagram after a tier move was a stale one of the old tier, or a
    /// host on the group replayed one just then): it was stuck there for up to a whole pass,
    /// reporting no loss and asking for nothing. The frontier starts again here, as at a
    /// join (what lies between is left to the loop).
    fn note_stray(&mut self, serial: u32, now: Instant) {
        let step = self.strays.map(|run| self.ahead(run.last, serial));
        let run = self.strays.get_or_insert(Strays {
            count: 0,
            near: 0,
            since: now,
            last: serial,
            in_order: 0,
        });
        run.count += 1;
        run.in_order = if step.is_some_and(|step| (1..=LONG_JUMP).contains(&step)) {
            run.in_order + 1
        } else {
            0
        };
        run.last = serial;
        // The loop itself, arriving in order, whatever else arrives near the frontier (a host
        // replaying datagrams next to a frontier it parked, at an eighth of what a victim
        // losing 30 % receives, kept it parked and hid all its loss).
        let outnumbered = run.count >= STRAYS_PER_NEAR * run.near || run.in_order >= STRAYS_MAX;
        if run.count < STRAYS_MAX
            || !outnumbered
            || now.saturating_since(run.since) < self.lead_quiet()
        {
            return;
        }
        self.strays = None;
        self.frontier = Some(serial);
        self.frontier_at = Some(now);
        self.reach_anchor = None;
        self.cursor = serial;
        self.cursor_travel = self.frontier_travel;
        self.lead = None;
        self.straggler = None;
        self.frontier_history.clear();
        self.note_frontier(now);
        // What the meter was yet to hear of the old frontier (a retraction, or a lead taken
        // at the start of this very datagram) is void: the meter starts again here.
        self.retracted = None;
        self.promoted = None;
        self.restarted = true;
        self.retractions += 1;
    }

    /// Whether the frontier started again elsewhere since last asked, once: the loss meter
    /// starts its sequence again too ([`crate::rate::LossMeter::restart`]; what it counted
    /// while the frontier was elsewhere were arrivals, never losses).
    pub fn take_restarted(&mut self) -> bool {
        std::mem::take(&mut self.restarted)
    }

    /// Whether the backlog or play walk, or a block ask, asked for `serial` (a repair, never
    /// the loop).
    fn is_explicit(&self, serial: u32) -> bool {
        self.is_block_ask(serial)
            || [&self.backlog_bits, &self.play_bits]
                .into_iter()
                .any(|bits| bits.as_ref().is_some_and(|bits| bits.get(serial)))
    }

    /// A straggler arrived. Two in loop order, a step apart and within `lead_quiet`, are the
    /// loop itself behind the frontier: a host on the group walked it ahead with replayed
    /// datagrams, a step at a time. The frontier goes back to the loop (no further back than
    /// the scan has gone), so what lies between is not read as gone by.
    fn note_straggler(&mut self, serial: u32, now: Instant) {
        let in_order = self.straggler.is_some_and(|(last, at)| {
            now.saturating_since(at) <= self.lead_quiet()
                && (1..=LONG_JUMP).contains(&self.ahead(last, serial))
        });
        self.straggler = Some((serial, now));
        let Some(frontier) = self.frontier.filter(|_| in_order) else {
            return;
        };
        // Only if most of what lies between has not arrived: a receiver that keeps up also
        // gets, behind its frontier, the repairs other receivers asked for (in order), and
        // going back over what it holds would read its own arrivals as lost.
        let between = self.ahead(serial, frontier) - 1;
        if 2 * self.seen_between(serial, frontier) >= between {
            return;
        }
        let back = u64::from(self.ahead(serial, frontier));
        let Some(travel) = self
            .frontier_travel
            .checked_sub(back)
            .filter(|&travel| travel >= self.cursor_travel)
        else {
            return;
        };
        self.frontier = Some(serial);
        self.frontier_travel = travel;
        self.frontier_at = Some(now);
        self.reach_anchor = None;
        self.straggler = None;
        self.retractions += 1;
        self.retracted = Some(serial);
        self.note_frontier(now);
    }

    /// The serial the frontier was last taken back to, once: the loss meter takes back what
    /// it counted lost past it ([`crate::rate::LossMeter::retract_to`]).
    pub fn take_retracted(&mut self) -> Option<u32> {
        self.retracted.take()
    }

    /// Records the frontier's travel after it changed at `now`.
    fn note_frontier(&mut self, now: Instant) {
        match self.frontier_history.back_mut() {
            Some((at, travel)) if *at == now => *travel = self.frontier_travel,
            _ => {
                if self.frontier_history.len() >= FRONTIER_HISTORY_MAX {
                    self.frontier_history.pop_front();
                }
                self.frontier_history.push_back((now, self.frontier_travel));
            }
        }
    }

    /// How far the scan may go: the least travel the frontier had over the last `lead_quiet`.
    /// A host on the group that walks the frontier ahead, a datagram at a time, between two
    /// of the loop's, is undone by the loop's next two (`note_straggler`) before anything it
    /// jumped over is read as gone by.
    fn scan_limit(&mut self, now: Instant) -> u64 {
        let window_start = now.saturating_sub(self.lead_quiet());
        while self.frontier_history.len() > 1 && self.frontier_history[1].0 <= window_start {
            self.frontier_history.pop_front();
        }
        self.frontier_history
            .iter()
            .map(|&(_, travel)| travel)
            .min()
            .map_or(self.frontier_travel, |least| {
                least.min(self.frontier_travel)
            })
    }

    /// Whether the loop can have gone `ahead` serials on from the frontier: twice what the
    /// tier's rate sends in the time since the frontier last moved before `now`, plus `slack`,
    /// less what moves at `now` already used of it. `None`: the rate is unknown.
    fn within_reach(&self, ahead: u32, now: Instant, slack: u32) -> Option<bool> {
        let rate = self.loop_rate?;
        let (from_travel, from_at) = match (self.frontier_at?, self.reach_anchor) {
            (at, Some(anchor)) if at == now => anchor,
            (at, _) => (self.frontier_travel, at),
        };
        let reachable = rate * now.saturating_since(from_at).as_secs_f64() * 2.0;
        let travel = self.frontier_travel - from_travel + u64::from(ahead);
        Some(travel as f64 <= reachable + f64::from(slack))
    }

    /// The loop's progress reached `serial` (from `frontier`) at `now`.
    fn move_frontier(&mut self, frontier: u32, serial: u32, now: Instant) {
        if let Some(at) = self.frontier_at.filter(|&at| at != now) {
            self.reach_anchor = Some((self.frontier_travel, at));
        }
        self.frontier = Some(serial);
        self.frontier_at = Some(now);
        self.frontier_travel += u64::from(self.ahead(frontier, serial));
        self.frontier_moves += 1;
        self.note_frontier(now);
        if let Some(lead) = self.lead {
            let to_lead = self.ahead(serial, lead.first);
            if to_lead == 0 || to_lead >= self.loop_len().div_ceil(2) {
                // The loop reached the lead: it was not the loop.
                self.lead = None;
            }
        }
    }

    /// Serials just ahead of the frontier that are the loop's progress even if asked for.
    fn progress_window(&self) -> u32 {
        2 * self.config.reorder_margin.max(PROGRESS_WINDOW_MIN)
    }

    /// Records that `serial` arrived verified (stored, or a duplicate of something held).
    ///
    /// One further than a step ahead of the frontier is a lead: seen, but the frontier moves
    /// to it only once the loop has fallen quiet behind it for `lead_quiet` (a burst of loss:
    /// the meter and the scan then count what lies between as lost). A host on the group
    /// replaying genuine datagrams far ahead never makes a loss-free client read the loop's
    /// own serials as gone by: the loop goes on arriving behind the lead. One walking the
    /// frontier ahead a step at a time is undone by the loop's next two datagrams
    /// (`note_straggler`).
    ///
    /// Returns whether it moved the frontier (the loss this client reports counts it the
    /// same way: [`crate::client::account_datagram`]).
    pub fn saw(&mut self, serial: u32, now: Instant) -> bool {
        if serial >= self.loop_len() {
            return false;
        }
        self.promote_lead(now);
        let arrival = self.classify(serial, now);
        let straggler = self.is_straggler(serial);
        let explicit = self.is_explicit(serial);
        let asked_by_us = self.asked_by_us.get(serial);
        self.seen.set(serial);
        self.arrived_recent += 1;
        // Verified datagrams arrive: they alone may move the frontier for a while (whether
        // this one does or not: a forger ahead of it must not keep the rule off).
        self.verified_at = Some(now);
        match self.frontier {
            None if explicit => {
                // A block asked for before anything verified: a repair, not the loop.
                self.no_longer_asked(serial);
                false
            }
            None => {
                // The first serial of this session: the loop joined here, so scanning starts here,
                // and the backlog walks backwards from here.
                self.join = Some(serial);
                self.frontier = Some(serial);
                self.frontier_at = Some(now);
                self.note_frontier(now);
                self.cursor = serial;
                if self.config.backlog_window > 0 {
                    self.backlog_bits = Some(Bitmap::new(self.loop_len()));
                    self.backlog_expired = Some(Bitmap::new(self.loop_len()));
                    self.backlog_next = Some(self.before(serial));
                }
                true
            }
            Some(frontier) => {
                self.no_longer_asked(serial);
                // Far from the frontier, and no repair of ours, nor one another receiver asked
                // for while the loop keeps moving the frontier (see below).
                let stray = arrival == Arrival::Other
                    && !straggler
                    && !explicit
                    && self.is_far(frontier, serial)
                    && !if self.heard_as_repair(serial, now) {
                        self.frontier_keeps_pace(now)
                    } else {
                        asked_by_us
                    };
                // Only the loop's progress moves the frontier: a repair that did would make
                // everything it jumped over count as lost.
                match arrival {
                    Arrival::Progress => self.move_frontier(frontier, serial, now),
                    Arrival::Lead => self.note_lead(serial, now),
                    Arrival::Other if straggler => self.note_straggler(serial, now),
                    // Not a repair another receiver asked for: on a multicast tier those come in
                    // order, a batch at a time between the loop's (the data plane sends up to a
                    // GSO batch of each), and were taken for the loop itself: three receivers
                    // of 1 GiB had their frontiers dragged to the repairs and back every few
                    // milliseconds, each time starting their loss count again and leaving what
                    // lay between to the next pass (one of them received 697,000 duplicates).
                    // Only while the loop keeps moving the frontier: a host on the group that
                    // parks the frontier and forges NakHeard over the loop's next serials
                    // (hx_attack14) must not keep it parked. Heard ranges set `asked` too: a
                    // serial asked for and heard lately is judged as heard (with the frontier
                    // still, the loop arriving far from it in a forged range is the loop); one
                    // only this receiver asked for is its own repair, always.
                    Arrival::Other if stray => self.note_stray(serial, now),
                    Arrival::Other => {}
                }
                if arrival != Arrival::Other {
                    // Near the frontier: the run of strays goes on only while they far
                    // outnumber these (a host on the group replaying one datagram next to a
                    // frontier it had parked far away, every 10 ms, kept it there).
                    if let Some(run) = self.strays.as_mut() {
                        run.near += 1;
                        if run.near * STRAYS_PER_NEAR > run.count + STRAYS_MAX
                            && run.in_order < STRAYS_MAX
                        {
                            self.strays = None;
                        }
                    }
                }
                arrival == Arrival::Progress
            }
        }
    }

    /// Records that `serial` arrived unverified (pending its hash block): held, so not asked,
    /// but never the loop's progress. Anyone can send a datagram with a sound header (a host
    /// on a multicast group): one far ahead that moved the frontier would make the genuine
    /// serials it jumped over read as gone by (asked for, and counted as lost).
    ///
    /// With the tier's rate known and nothing verified for `UNVERIFIED_AFTER_QUIET`, one no
    /// further ahead than the loop can have gone since the frontier last moved (twice its
    /// rate's worth, and `PENDING_SLACK`, with no reordering window) does move it: when hash
    /// blocks are lost in an overload most of what arrives is pending, and a frontier that
    /// waited for verification asked for nothing until then (the simulation's overloaded
    /// start: 1.25 s became 1.71 s). While verified datagrams arrive a forger cannot move it
    /// at all; otherwise at most twice as fast as the loop.
    ///
    /// Returns whether it moved the frontier (the loss this client reports counts it the same
    /// way: a receiver far below its tier's rate gets almost nothing verified, and counting
    /// only verified datagrams it reported no loss at all and was never moved off a 1 Gbit/s
    /// tier).
    pub fn saw_unverified(&mut self, serial: u32, now: Instant) -> bool {
        if serial >= self.loop_len() {
            return false;
        }
        self.promote_lead(now);
        // While verified datagrams arrive, they alone move the frontier: a forger on the group
        // sending pending datagrams just within reach, each at its own instant, renewed the
        // slack every time and ran the frontier 18 times as fast as the loop (89 % false
        // loss for a client that lost nothing). Unverified ones stand in only when nothing
        // has verified for a while (an overload that loses the hash blocks too).
        let verified_recently = self
            .verified_at
            .is_some_and(|at| now.saturating_since(at) < UNVERIFIED_AFTER_QUIET);
        let progress = !verified_recently
            && self.frontier.is_some_and(|frontier| {
                let ahead = self.ahead(frontier, serial);
                ahead > 0
                    && ahead < self.loop_len().div_ceil(2)
                    && self.within_reach(ahead, now, PENDING_SLACK) == Some(true)
            });
        self.seen.set(serial);
        self.arrived_recent += 1;
        self.no_longer_asked(serial);
        if let (true, Some(frontier)) = (progress, self.frontier) {
            self.move_frontier(frontier, serial, now);
        }
        progress
    }

    /// What was asked for has arrived (as a repair, or the loop brought it): out of every ask.
    fn no_longer_asked(&mut self, serial: u32) {
        if let Some(bits) = self.backlog_bits.as_mut() {
            bits.clear(serial);
        }
        if let Some(expired) = self.backlog_expired.as_mut() {
            expired.clear(serial);
        }
        if let Some(bits) = self.play_bits.as_mut() {
            bits.clear(serial);
        }
        if let Some(bits) = self.block_bits.as_mut() {
            bits.clear(serial);
        }
        self.asked.clear(serial);
        self.asked_by_us.clear(serial);
    }

    /// Its settings as they are now (suppression and backlog as the transport set them).
    pub fn config(&self) -> NakConfig {
        self.config
    }

    /// Turns multicast suppression on (`Some(max delay)`) or off (unicast: ask at once), e.g.
    /// when a client falls back from multicast to unicast.
    pub fn set_suppression(&mut self, delay: Option<Duration>) {
        self.config.suppression_delay = delay;
    }

    /// Another receiver's NAK for these ranges was heard (relayed by the server to the group):
    /// they are treated as asked for now, by us, so we neither ask for them again nor before
    /// the repair timeout re-ask what is still missing then (the NAK data timer).
    ///
    /// A heard range counts for its first `HEARD_RANGE_MAX` serials only: anyone on the group
    /// can send NakHeard, and each serial heard costs a walk here and at every re-ask (64
    /// whole-loop ranges of a 1 GiB file cost a client 0.5-1.1 s of CPU a datagram). Beyond
    /// it, this receiver asks for itself: an extra ask, never a loss.
    pub fn heard(&mut self, now: Instant, ranges: &[(u32, u32)]) {
        let loop_len = self.loop_len();
        for &(first, count) in ranges {
            let Some(end) = first
                .checked_add(count)
                .filter(|&end| count > 0 && end <= loop_len)
            else {
                continue;
            };
            let count = count.min(HEARD_RANGE_MAX);
            let end = end.min(first + count);
            let timeout = self.config.repair_timeout;
            self.heard_recently
                .get_or_insert_with(|| HeardWindow::new(loop_len, timeout / 2, 0))
                .note(first..end, now);
            self.heard_lately
                .get_or_insert_with(|| {
                    HeardWindow::new(
                        loop_len,
                        timeout + REPAIR_QUEUE_WAIT_MAX,
                        HEARD_LATELY_SHIFT,
                    )
                })
                .note(first..end, now);
            self.remember_asked(first, count, now, false);
        }
    }

    /// Sets the channel's rate, datagrams a second (`None`: unknown or unpaced). The server
    /// sends repairs in order, in their share of that rate: on a 5 Mbit/s tier a few thousand
    /// serials asked take seconds, and asking them again every repair timeout (100 ms) queued
    /// each again behind itself, so most of what arrived were duplicates (a 5 Mbit/s receiver
    /// of a 32 MiB file: 38,873 duplicates and 18.7 million serials asked).
    ///
    /// A rate well below the last one starts the overload verdict afresh: what was lost at the
    /// old rate says nothing of the new one.
    pub fn set_loop_rate(&mut self, datagrams_per_s: Option<f64>) {
        let rate = datagrams_per_s.filter(|rate| rate.is_finite() && *rate > 0.0);
        if let (Some(old), Some(new)) = (self.loop_rate, rate) {
            if new < 0.8 * old {
                self.forget_scan();
            }
        }
        self.loop_rate = rate;
    }

    /// Remembers `first .. first + count` as asked now (by us, `ours`, or another receiver):
    /// due to be asked again, if still missing, after the repair timeout plus the time the
    /// server needs to send everything asked before it and it.
    fn remember_asked(&mut self, first: u32, count: u32, now: Instant, ours: bool) {
        for serial in first..first + count {
            if !self.seen.get(serial) {
                self.asked.set(serial);
                if ours {
                    self.asked_by_us.set(serial);
                }
            }
        }
        if self.outstanding.len() >= OUTSTANDING_MAX {
            return;
        }
        self.outstanding_serials += u64::from(count);
        let queued = match self.loop_rate {
            Some(rate) => {
                let repair_rate = rate * f64::from(REPAIR_SHARE_PERCENT_DEFAULT) / 100.0;
                Duration::from_secs_f64(
                    (self.outstanding_serials as f64 / repair_rate)
                        .min(REPAIR_QUEUE_WAIT_MAX.as_secs_f64()),
                )
            }
            None => Duration::ZERO,
        };
        self.outstanding
            .push_back((first, count, now + self.config.repair_timeout + queued));
    }

    /// A far arrival heard as another receiver's repair came at `now`: whether the loop is
    /// arriving where the frontier is, so that it is that repair. The frontier must have moved
    /// within `lead_quiet`, and, once `HEARD_PACE_MIN` such arrivals were counted, been moved
    /// by at least a `HEARD_PACE_SHARE`th as many arrivals meanwhile: repairs are at most the
    /// tier's repair share, and the loop sends at least as much, thinned by the same path. A
    /// host on the group that walked a parked frontier one replayed step every 5 ms, while
    /// forged NakHeard covered the loop arriving elsewhere at 10,000 a second, kept it
    /// "moving" and hid a 20 % loss (hx_attack15 N1); now it would have to replay a quarter
    /// of the loop. Counted in arrivals, not serials travelled: steps of 26 serials every
    /// 10 ms (1 % of the loop) passed a rule by travel (hx_attack17). Judged by what arrives,
    /// never by the tier's nominal rate: a sender short of its rate on a busy host sent under
    /// an eighth of it at times, and a rule by the nominal rate dragged three receivers'
    /// frontiers to each other's repairs.
    fn frontier_keeps_pace(&mut self, now: Instant) -> bool {
        let moves = self.frontier_moves;
        let pace = match self.heard_pace {
            Some(pace)
                if pace.count < HEARD_PACE_WINDOW
                    && now.saturating_since(pace.last) < HEARD_PACE_QUIET =>
            {
                pace
            }
            _ => HeardPace {
                last: now,
                moves_at: moves,
                count: 0,
            },
        };
        let pace = self.heard_pace.insert(HeardPace {
            last: now,
            count: pace.count + 1,
            ..pace
        });
        let outpaced = pace.count >= HEARD_PACE_MIN
            && u64::from(pace.count) > u64::from(HEARD_PACE_SHARE) * (moves - pace.moves_at);
        let moving = self
            .frontier_at
            .is_some_and(|at| now.saturating_since(at) < self.lead_quiet());
        moving && !outpaced
    }

    /// Whether `serial` lies near a range another receiver was heard asking for, lately
    /// enough that its repair may still be on the way (the server sends repairs within
    /// `REPAIR_QUEUE_WAIT_MAX` of their NAK): heard within the repair timeout and that, or
    /// up to twice that (see [`HeardWindow`]), in a stretch of `1 << HEARD_LATELY_SHIFT`.
    fn heard_as_repair(&self, serial: u32, now: Instant) -> bool {
        self.heard_lately
            .as_ref()
            .is_some_and(|heard| heard.contains(serial, now))
    }

    /// Whether another receiver asked for `serial` within half the repair timeout to the
    /// whole of it (see [`HeardWindow`]): due to be asked again by then, it is not asked
    /// meanwhile.
    fn heard_recently(&self, serial: u32, now: Instant) -> bool {
        self.heard_recently
            .as_ref()
            .is_some_and(|heard| heard.contains(serial, now))
    }

    /// When something found missing at `now` is to be asked: at once on unicast, after a
    /// random delay of up to the suppression delay on multicast (Timer A).
    fn ask_at(&mut self, now: Instant) -> Instant {
        match self.config.suppression_delay {
            Some(delay) => {
                let delay_ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX).max(1);
                now + Duration::from_nanos(self.next_random() % delay_ns)
            }
            None => now,
        }
    }

    fn next_random(&mut self) -> u64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }

    /// Appends the parts of `first .. first + count` still missing and not recently asked for by
    /// another receiver to `ranges`, up to `NAK_RANGES_MAX`; returns where it stopped
    /// (== first + count when done).
    fn append_missing(
        &mut self,
        ranges: &mut Vec<(u32, u32)>,
        first: u32,
        count: u32,
        now: Instant,
    ) -> u32 {
        let end = first + count;
        let mut serial = first;
        while serial < end && ranges.len() < NAK_RANGES_MAX {
            if self.seen.get(serial) {
                serial += 1;
                continue;
            }
            if self.heard_recently(serial, now) {
                self.serials_suppressed += 1;
                serial += 1;
                continue;
            }
            let start = serial;
            while serial < end && !self.seen.get(serial) && !self.heard_recently(serial, now) {
                serial += 1;
            }
            ranges.push((start, serial - start));
        }
        serial
    }

    /// When a waiting gap's delay or an asked range's repair timeout runs out (not before the
    /// NAK interval allows another NAK); `None` if nothing is waiting. New gaps appear only as
    /// datagrams arrive, so a driver also polls after receiving.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Wanted blocks are due at once, asked ones at their expiry, with or without a
        // frontier.
        let blocks = [
            (!self.blocks_new.is_empty() || !self.blocks_named_again.is_empty())
                .then_some(Instant::ZERO),
            self.blocks_wanted.front().map(|&(_, at)| at),
            self.blocks_urgent.front().map(|&(_, at)| at),
            self.blocks_asked
                .front()
                .map(|&(_, at)| at + BLOCK_ASK_EXPIRY),
        ]
        .into_iter()
        .flatten()
        .min();
        let earliest = match self.frontier {
            Some(_) => [blocks, self.frontier_timeout()]
                .into_iter()
                .flatten()
                .min()?,
            None => blocks?,
        };
        Some(match self.last_nak {
            None => earliest,
            Some(at) => earliest.max(at + self.config.interval),
        })
    }

    /// The earliest of `poll_timeout`'s deadlines that follow the frontier.
    fn frontier_timeout(&self) -> Option<Instant> {
        let waiting = self.waiting.iter().map(|&(_, _, at)| at).min();
        let outstanding = self.outstanding.front().map(|&(_, _, due)| due);
        let play = self
            .play
            .and(self.play_asked.front())
            .map(|&(_, _, asked)| asked + self.config.play_expiry);
        let lead = self
            .lead
            .zip(self.frontier_at)
            .map(|(lead, frontier_at)| frontier_at.max(lead.since) + self.lead_quiet());
        [waiting, outstanding, play, lead]
            .into_iter()
            .flatten()
            .min()
    }

    /// The ranges to NAK now (`first`, `count`), or `None` if it is too early or nothing that
    /// has gone by is missing.
    pub fn poll_nak(&mut self, now: Instant) -> Option<Vec<(u32, u32)>> {
        self.promote_lead(now);
        if self
            .last_nak
            .is_some_and(|at| now.saturating_since(at) < self.config.interval)
        {
            return None;
        }
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        // First the hash blocks that what is held unverified waits for.
        self.append_blocks(&mut ranges, now);
        let Some(frontier) = self.frontier else {
            return self.nak_of(ranges, now);
        };
        let loop_len = self.loop_len();
        if self.frontier_travel - self.cursor_travel > u64::from(loop_len) {
            // More than a loop behind: the oldest part has come round again; rescan one loop.
            self.cursor = frontier;
            self.cursor_travel = self.frontier_travel - u64::from(loop_len);
        }
        let gone_by = u32::try_from(self.scan_limit(now).saturating_sub(self.cursor_travel))
            .expect("at most one loop")
            .saturating_sub(self.config.reorder_margin);
        // Then what playback waits for (R13), nearest the play position first.
        self.append_play(&mut ranges, now);
        let play_ranges = ranges.len();
        // First what was asked before (by us or others) and is still missing after the repair
        // timeout; nothing, if this receiver loses most of what goes by (the loop brings it).
        let overloaded = self.is_overloaded();
        while let Some(&(first, count, due)) = self.outstanding.front() {
            if now < due || ranges.len() == NAK_RANGES_MAX {
                break;
            }
            self.outstanding.pop_front();
            self.outstanding_serials -= u64::from(count);
            if overloaded {
                self.defer(first, count);
                continue;
            }
            let stopped = self.append_missing(&mut ranges, first, count, now);
            if stopped < first + count {
                // No room left in this NAK: the rest waits at the front for the next one.
                self.outstanding
                    .push_front((stopped, first + count - stopped, due));
                self.outstanding_serials += u64::from(first + count - stopped);
            }
        }
        // Then gaps whose suppression delay has passed, unless someone else asked meanwhile
        // (the delays are random, so any of the waiting gaps may be due).
        for _ in 0..self.waiting.len() {
            let (first, count, ask_at) = self.waiting.pop_front().expect("counted");
            if ask_at > now || ranges.len() == NAK_RANGES_MAX {
                self.waiting.push_back((first, count, ask_at));
                continue;
            }
            if overloaded {
                self.defer(first, count);
                continue;
            }
            let stopped = self.append_missing(&mut ranges, first, count, now);
            if stopped < first + count {
                self.waiting
                    .push_back((stopped, first + count - stopped, ask_at));
            }
        }
        // Then what the loop has gone past since the last scan.
        let mut found: Vec<(u32, u32)> = Vec::new();
        let found_max = match self.config.suppression_delay {
            None => NAK_RANGES_MAX - ranges.len(),
            Some(_) => NAK_RANGES_MAX.min(OUTSTANDING_MAX - self.waiting.len()),
        };
        let mut scanned = 0u32;
        let mut missing = 0u32;
        while scanned < gone_by {
            let serial = self.cursor;
            if !self.seen.get(serial) {
                // Ranges never wrap: one ending at the loop's end cannot be extended by 0.
                let extends = found
                    .last()
                    .is_some_and(|&(first, count)| first + count == serial);
                if extends {
                    found.last_mut().expect("checked").1 += 1;
                } else if found.len() >= found_max {
                    break;
                } else {
                    found.push((serial, 1));
                }
                missing += 1;
            }
            scanned += 1;
            self.cursor_travel += 1;
            self.cursor = if serial + 1 == loop_len {
                0
            } else {
                serial + 1
            };
        }
        self.scanned(scanned, missing, now);
        if self.is_overloaded() {
            for (first, count) in std::mem::take(&mut found) {
                self.defer(first, count);
            }
        } else if !self.deferred.is_empty() {
            // Keeping up again: a few gaps from the overload are asked for (first, before what
            // the scan just found), many are left to the loop.
            if self.deferred_serials > u64::from(loop_len / DEFERRED_ASK_SHARE) {
                self.leave_deferred_to_loop();
            } else {
                let room = found_max.saturating_sub(found.len());
                let take = room.min(self.deferred.len());
                let taken: Vec<(u32, u32, u32)> = self.deferred.drain(..take).collect();
                self.deferred_serials -= taken.iter().map(|&(.., n)| u64::from(n)).sum::<u64>();
                found.splice(
                    0..0,
                    taken.into_iter().map(|(first, count, _)| (first, count)),
                );
            }
        }
        match self.config.suppression_delay {
            None => {
                for (first, count) in found {
                    let stopped = self.append_missing(&mut ranges, first, count, now);
                    if stopped < first + count {
                        // No room left in this NAK (a waiting gap split as parts of it
                        // arrived): the rest waits for the next, not dropped unasked.
                        self.defer(stopped, first + count - stopped);
                    }
                }
            }
            Some(_) => {
                for (first, count) in found {
                    let ask_at = self.ask_at(now);
                    self.waiting.push_back((first, count, ask_at));
                }
            }
        }
        for &(first, count) in &ranges[play_ranges..] {
            self.remember_asked(first, count, now, true);
        }
        // Last, what lies behind the join point (not re-asked: the loop brings what is lost).
        // A follower's play walk covers those gaps itself, forward from the play position:
        // backlog asks queued at the server ahead of its next play asks would only delay them.
        if self.play.is_none() {
            self.append_backlog(&mut ranges, now);
        }
        self.nak_of(ranges, now)
    }

    /// `ranges` as the NAK sent now, or `None` if empty.
    fn nak_of(&mut self, ranges: Vec<(u32, u32)>, now: Instant) -> Option<Vec<(u32, u32)>> {
        if ranges.is_empty() {
            return None;
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

    /// Serials not asked for because another receiver had just asked for them.
    pub fn serials_suppressed(&self) -> u64 {
        self.serials_suppressed
    }

    /// Serials not asked for (or not asked again) because this receiver was losing most of
    /// what went by ([`NakPlanner::is_overloaded`]): left for the loop to bring.
    pub fn serials_left_to_loop(&self) -> u64 {
        self.serials_left_to_loop
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
                ..NakConfig::default()
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
            nak.saw(serial, Instant::ZERO);
        }
        assert_eq!(nak.poll_nak(Instant::ZERO), None);
    }

    #[test]
    fn gaps_behind_the_frontier_are_asked_once_and_rate_limited() {
        let mut nak = planner(1000, 4);
        for serial in (100..200).filter(|s| !(120..125).contains(s) && *s != 150) {
            nak.saw(serial, Instant::ZERO);
        }
        let t0 = Instant::ZERO + Duration::from_secs(1);
        assert_eq!(nak.poll_nak(t0), Some(vec![(120, 5), (150, 1)]));
        // Too soon for another NAK, and nothing new has gone by anyway.
        assert_eq!(nak.poll_nak(t0 + Duration::from_millis(1)), None);
        assert!(nak.poll_timeout().unwrap() >= t0 + Duration::from_millis(10));
        // Repairs arrive out of order: they do not move the frontier backwards.
        nak.saw(150, Instant::ZERO);
        nak.saw(120, Instant::ZERO);
        for serial in 200..300 {
            nak.saw(serial, Instant::ZERO);
        }
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(20)),
            None,
            "asked once per pass"
        );
        assert_eq!(nak.naks_sent(), 1);
        assert_eq!(nak.serials_naked(), 6);
    }

    /// A planner that asks again 100 ms after an ask (no reordering margin), on a 1000-serial
    /// loop.
    fn re_asking() -> NakPlanner {
        NakPlanner::new(
            NakConfig {
                interval: Duration::from_millis(10),
                reorder_margin: 0,
                repair_timeout: Duration::from_millis(100),
                ..NakConfig::default()
            },
            &Bitmap::new(1000),
        )
    }

    #[test]
    fn lost_repairs_are_asked_again_after_the_repair_timeout() {
        let mut nak = re_asking();
        nak.saw(0, Instant::ZERO);
        // 1..100 lost: 100 is a lead, and the loop's progress once nothing follows from 0.
        nak.saw(100, Instant::ZERO);
        let t0 = Instant::ZERO + LEAD_QUIET_UNKNOWN_RATE;
        assert_eq!(nak.poll_nak(t0), Some(vec![(1, 99)]));
        // Part of the repair arrives; the rest is lost again.
        for serial in 1..50 {
            nak.saw(serial, Instant::ZERO);
        }
        nak.saw(70, Instant::ZERO);
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
            nak.saw(serial, Instant::ZERO);
        }
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(300)),
            None,
            "all repaired"
        );
    }

    #[test]
    fn a_receiver_losing_most_of_the_loop_leaves_it_to_the_loop_and_asks_again_once_it_keeps_up() {
        let mut nak = planner(16_000, 0);
        let mut now = Instant::ZERO;
        let mut asked = 0u64;
        let poll = |nak: &mut NakPlanner, now: &mut Instant| {
            *now = *now + Duration::from_millis(10);
            let ranges = nak.poll_nak(*now).unwrap_or_default();
            ranges.iter().map(|&(_, n)| u64::from(n)).sum::<u64>()
        };
        // A tier far too fast: one serial in ten arrives.
        for serial in 0..4000u32 {
            if serial % 10 == 0 {
                nak.saw(serial, Instant::ZERO);
            }
            if serial % 100 == 99 {
                asked += poll(&mut nak, &mut now);
            }
        }
        assert!(nak.is_overloaded());
        assert!(
            asked <= 2 * OVERLOAD_SCAN,
            "only what went by before the verdict is asked: {asked} of 3,600 missing"
        );
        // All but the nine after the last arrival (not yet gone by) wait.
        assert_eq!(nak.deferred_serials, 3591 - asked);
        // The tier slows to what its path takes: everything arrives but serial 9,000.
        let mut asked_again = Vec::new();
        for serial in 4000..10_000u32 {
            if serial != 9000 {
                nak.saw(serial, Instant::ZERO);
            }
            if serial % 100 == 99 {
                now = now + Duration::from_millis(10);
                asked_again.extend(nak.poll_nak(now).unwrap_or_default());
            }
        }
        assert!(!nak.is_overloaded());
        assert_eq!(asked_again, vec![(9000, 1)], "the lone loss is asked for");
        // What waited (with the nine, found later) is more than an eighth of the loop: the
        // loop brings it.
        assert_eq!(nak.serials_left_to_loop(), 3600 - asked);
    }

    #[test]
    fn gaps_of_a_brief_overshoot_are_asked_for_once_the_receiver_keeps_up() {
        let mut nak = planner(100_000, 0);
        let mut now = Instant::ZERO;
        let mut asked = Vec::new();
        // Keeping up; then a probe overshoots its path and half of 2,000 serials are lost
        // (every other one); then it keeps up again.
        for serial in 0..12_000u32 {
            let overshoot = (4000..6000).contains(&serial);
            if !overshoot || serial % 2 == 0 {
                nak.saw(serial, Instant::ZERO);
            }
            if serial % 100 == 99 {
                now = now + Duration::from_millis(10);
                asked.extend(nak.poll_nak(now).unwrap_or_default());
            }
            if serial == 5999 {
                assert!(nak.is_overloaded(), "half lost");
                assert!(nak.deferred_serials > 0, "what it finds now waits");
            }
        }
        assert!(!nak.is_overloaded());
        let lost: Vec<(u32, u32)> = (4000..6000)
            .filter(|s| s % 2 == 1)
            .map(|s| (s, 1))
            .collect();
        let mut asked_sorted = asked.clone();
        asked_sorted.sort_unstable();
        assert_eq!(asked_sorted, lost, "every loss of the overshoot, once");
        assert_eq!(nak.serials_left_to_loop(), 0);
    }

    #[test]
    fn a_repair_lost_in_an_overshoot_is_asked_again_once_the_receiver_keeps_up() {
        let mut nak = NakPlanner::new(
            NakConfig {
                reorder_margin: 0,
                repair_timeout: Duration::from_millis(20),
                ..NakConfig::default()
            },
            &Bitmap::new(100_000),
        );
        let mut now = Instant::ZERO;
        let mut asked: Vec<u32> = Vec::new();
        // Serial 3,000 is lost and asked for; then a probe overshoots (every other serial of
        // 4,000..6,000 lost) and the repair of 3,000 is lost in it; then it keeps up again.
        for serial in 0..12_000u32 {
            let overshoot = (4000..6000).contains(&serial);
            if serial != 3000 && (!overshoot || serial % 2 == 0) {
                nak.saw(serial, Instant::ZERO);
            }
            if serial % 100 == 99 {
                now = now + Duration::from_millis(10);
                for (first, count) in nak.poll_nak(now).unwrap_or_default() {
                    asked.extend(first..first + count);
                }
            }
        }
        let times = asked.iter().filter(|&&s| s == 3000).count();
        assert!(
            times >= 2,
            "asked {times} times: once, then again after the overshoot"
        );
        assert_eq!(nak.serials_left_to_loop(), 0);
    }

    /// Overloaded: one serial in ten of 0..4,000 arrived, polled every 100 serials.
    fn overloaded(nak: &mut NakPlanner, now: &mut Instant) {
        for serial in 0..4000u32 {
            if serial % 10 == 0 {
                nak.saw(serial, Instant::ZERO);
            }
            if serial % 100 == 99 {
                *now = *now + Duration::from_millis(1);
                nak.poll_nak(*now);
            }
        }
        assert!(nak.is_overloaded());
    }

    /// After an overload, serials `from..to` arrive but `lost`, polled every 10 serials `step`
    /// apart; returns what was asked.
    fn keeping_up(
        nak: &mut NakPlanner,
        now: &mut Instant,
        (from, to, lost): (u32, u32, u32),
        step: Duration,
    ) -> Vec<(u32, u32)> {
        let mut asked = Vec::new();
        for serial in from..to {
            if serial != lost {
                nak.saw(serial, Instant::ZERO);
            }
            if serial % 10 == 9 {
                *now = *now + step;
                asked.extend(nak.poll_nak(*now).unwrap_or_default());
            }
        }
        asked
    }

    #[test]
    fn a_tier_that_slows_down_to_the_path_lets_its_receiver_ask_again_at_once() {
        let mut nak = planner(20_000, 0);
        let mut now = Instant::ZERO;
        nak.set_loop_rate(Some(100_000.0));
        overloaded(&mut nak, &mut now);
        // The tier's rate falls to what the path takes: a loss just after is asked for, not
        // left to the next pass of a slow loop.
        nak.set_loop_rate(Some(400.0));
        let step = Duration::from_millis(10);
        let asked = keeping_up(&mut nak, &mut now, (4000, 4100, 4050), step);
        // (3,991..4,000: the overload's last, not yet scanned when the rate fell.)
        assert_eq!(asked, vec![(3991, 9), (4050, 1)]);
    }

    #[test]
    fn an_overload_long_past_no_longer_stops_asks() {
        let mut nak = planner(20_000, 0);
        let mut now = Instant::ZERO;
        overloaded(&mut nak, &mut now);
        // 400 serials in a second, all but one: by then the overload counts for little.
        // (3,991..4,000, the overload's last, were scanned and left to the loop before.)
        let step = Duration::from_millis(25);
        let asked = keeping_up(&mut nak, &mut now, (4000, 4400, 4350), step);
        assert!(!nak.is_overloaded());
        assert_eq!(asked, vec![(4350, 1)]);
        // The same 400 serials within 400 ms are not enough.
        let mut nak = planner(20_000, 0);
        let mut now = Instant::ZERO;
        overloaded(&mut nak, &mut now);
        let step = Duration::from_millis(10);
        let asked = keeping_up(&mut nak, &mut now, (4000, 4400, 4350), step);
        assert!(nak.is_overloaded());
        assert_eq!(asked, vec![]);
    }

    #[test]
    fn a_tier_move_forgets_the_old_loops_asks_and_follows_the_new_one() {
        let mut nak = re_asking();
        // On the old (fast) tier: 0 and 400 arrived, everything between was asked for.
        nak.saw(0, Instant::ZERO);
        nak.saw(400, Instant::ZERO);
        let t0 = Instant::ZERO + LEAD_QUIET_UNKNOWN_RATE;
        assert_eq!(nak.poll_nak(t0), Some(vec![(1, 399)]));
        // Moved: the new tier's loop starts at 600; nothing of the old asks arrives.
        nak.rejoin();
        assert_eq!(nak.poll_nak(t0 + Duration::from_millis(200)), None);
        for serial in 600..700 {
            nak.saw(serial, Instant::ZERO);
        }
        // The old asks are not asked again of the new tier (the loop brings 1..400 after it
        // wraps), and what the new loop went past is complete.
        assert_eq!(nak.poll_nak(t0 + Duration::from_millis(300)), None);
        assert_eq!(nak.poll_timeout(), None, "nothing outstanding");
        // A gap the new loop goes past is asked for as usual.
        for serial in (700..800).filter(|&s| s != 750) {
            nak.saw(serial, Instant::ZERO);
        }
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(400)),
            Some(vec![(750, 1)])
        );
        // What was held before the move stays held.
        assert_eq!(nak.serials_naked(), 400);
    }

    #[test]
    fn asks_are_not_repeated_before_the_repairs_before_them_could_arrive() {
        // A slow tier: its loop sends 200 datagrams a second, repairs get 100 of them.
        let mut slow = re_asking();
        slow.set_loop_rate(Some(200.0));
        slow.saw(0, Instant::ZERO);
        // 400 serials on a second later (the loop can have gone that far; what is between
        // was lost).
        let t0 = Instant::ZERO + Duration::from_secs(1);
        slow.saw(400, t0);
        assert_eq!(slow.poll_nak(t0), None, "a lead until the loop stays quiet");
        let t0 = t0 + LEAD_QUIET_MAX;
        assert_eq!(slow.poll_nak(t0), Some(vec![(1, 399)]));
        // 399 serials take ~4 s to arrive: not asked again at the repair timeout, nor while
        // they are arriving.
        for serial in 1..200 {
            slow.saw(serial, t0 + Duration::from_millis(100));
        }
        for ms in [200, 1000, 3000, 4000] {
            assert_eq!(
                slow.poll_nak(t0 + Duration::from_millis(ms)),
                None,
                "{ms} ms"
            );
        }
        // Then what is still missing (lost) is asked again.
        assert_eq!(
            slow.poll_nak(t0 + Duration::from_millis(4100)),
            Some(vec![(200, 200)])
        );
        // Half a second after the frontier moved, the loop can be at most ~200 on (twice its
        // rate's worth, and the reordering window): 450 on is a repair sent twice or a stale
        // datagram, not the loop's progress; 300 on may be (a lead: more than a step on).
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(slow.classify(850, soon), Arrival::Other);
        assert_eq!(slow.classify(700, soon), Arrival::Lead);
        assert_eq!(slow.classify(464, soon), Arrival::Progress);
        let t0 = Instant::ZERO + LEAD_QUIET_UNKNOWN_RATE;
        // Without a rate (or on a fast tier) the repair timeout alone decides, as before.
        let mut fast = re_asking();
        fast.saw(0, Instant::ZERO);
        fast.saw(400, Instant::ZERO);
        assert_eq!(fast.poll_nak(t0), Some(vec![(1, 399)]));
        assert_eq!(
            fast.poll_nak(t0 + Duration::from_millis(100)),
            Some(vec![(1, 399)])
        );
    }

    #[test]
    fn an_unverified_datagram_moves_the_frontier_only_as_far_as_the_loop_can_have_gone() {
        let mut nak = re_asking();
        // Unknown rate: an unverified datagram never moves it.
        nak.saw(0, Instant::ZERO);
        nak.saw_unverified(5, Instant::ZERO + Duration::from_millis(1));
        nak.saw(3, Instant::ZERO + Duration::from_millis(1));
        // The loop sends 1,000 datagrams a second; 10 ms after the frontier moved to 3 it can
        // be ~20 on: a forged datagram 300 on does not move it (the genuine serials between
        // are not asked for), nor (a verified one came 10 ms ago) does the unverified 20; the
        // verified ones after it do.
        nak.set_loop_rate(Some(1_000.0));
        let t = Instant::ZERO + Duration::from_millis(11);
        nak.saw_unverified(303, t);
        // (The scan goes as far as the frontier has been for `lead_quiet`, 50 ms here.)
        assert_eq!(nak.poll_nak(t + LEAD_QUIET_MAX), Some(vec![(1, 2)]));
        nak.saw_unverified(20, t);
        for serial in 21..40 {
            nak.saw(serial, t + Duration::from_millis(u64::from(serial - 20)));
        }
        // 4 and 6..20 went by (the margin is 0): asked; 303 was never the frontier.
        let done = t + Duration::from_millis(19) + LEAD_QUIET_MAX;
        let asked = nak.poll_nak(done).expect("gaps");
        assert_eq!(asked, vec![(4, 1), (6, 14)]);
        assert!(nak.frontier.is_some_and(|f| f < 303));
    }

    /// A lead taken (the loop quiet behind it for `lead_quiet`) at the start of the very
    /// datagram whose stray run then starts the frontier again elsewhere: the restart voids the
    /// jump, or the loss meter, started again, would then jump to the old lead and count the
    /// distance from there to the loop as lost.
    #[test]
    fn a_restart_voids_a_lead_taken_with_the_same_datagram() {
        let mut nak = planner(100_000, 256);
        let t0 = Instant::ZERO;
        nak.saw(50_000, t0);
        // A lead 300 on; then the loop's own datagrams far behind the frontier (45,000).
        nak.saw(50_300, t0);
        for serial in 5_000..5_015 {
            nak.saw(serial, t0);
        }
        assert!(!nak.take_restarted());
        nak.saw(5_015, t0 + LEAD_QUIET_UNKNOWN_RATE);
        assert_eq!(nak.leads_promoted(), 1, "the lead was taken first");
        assert!(nak.take_restarted(), "then the frontier started again");
        assert_eq!(nak.frontier, Some(5_015));
        assert_eq!(
            nak.take_promoted(),
            None,
            "the jump to the old lead is void"
        );
    }

    #[test]
    fn a_stretch_asked_for_and_then_brought_by_the_loop_in_order_is_its_progress() {
        let mut nak = NakPlanner::new(
            NakConfig {
                reorder_margin: 0,
                ..NakConfig::default()
            },
            &Bitmap::new(10_000),
        );
        nak.set_loop_rate(Some(1_000.0));
        let t0 = Instant::ZERO;
        nak.saw(0, t0);
        nak.saw(100, t0 + Duration::from_millis(100));
        // 1..100 went by (100 a lead, the loop's progress once nothing else came for
        // `LEAD_QUIET_MAX`) and are asked for; so, from a pass before, are 101..300, which the
        // loop now brings in order, one a millisecond, none verified (their hash blocks were
        // lost on a slow link; nothing has verified for 60 ms): each is the loop's progress.
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(150)),
            Some(vec![(1, 99)])
        );
        for serial in 101..300 {
            nak.asked.set(serial);
        }
        let mut t = t0 + Duration::from_millis(160);
        for serial in 101..300 {
            t = t + Duration::from_millis(1);
            assert!(nak.saw_unverified(serial, t), "unverified serial {serial}");
        }
        assert_eq!(nak.frontier, Some(299));
        // Verified ones only, 40 apart (the rest lost): progress too, within the loop's reach.
        for serial in (340..600).step_by(40) {
            nak.asked.set(serial);
            t = t + Duration::from_millis(40);
            assert!(nak.is_progress(serial, t), "serial {serial} 40 on");
            nak.saw(serial, t);
        }
        // A repair of an asked serial far ahead of where the loop can be is not.
        nak.asked.set(4_000);
        assert!(!nak.is_progress(4_000, t + Duration::from_millis(1)));
    }

    #[test]
    fn a_batch_under_heavy_loss_moves_the_frontier_as_far_as_the_loop_went_since_the_last() {
        let mut nak = NakPlanner::new(
            NakConfig {
                reorder_margin: 0,
                ..NakConfig::default()
            },
            &Bitmap::new(100_000),
        );
        nak.set_loop_rate(Some(100_000.0 / 6.0));
        nak.saw(0, Instant::ZERO);
        // 60 ms later (nothing verified since) one batch (one `now`): every 30th serial of the
        // ~1,000 the loop sent, none verified yet (their hash blocks were lost too). Each is the loop's progress,
        // though each is further from the one before than the slack for a single instant.
        let t = Instant::ZERO + Duration::from_millis(60);
        for serial in (30..=990).step_by(30) {
            assert!(nak.saw_unverified(serial, t), "serial {serial} is progress");
        }
        assert_eq!(nak.frontier, Some(990));
        // The batch's budget is shared: twice the loop's 1,000 serials, and no more.
        assert!(
            !nak.saw_unverified(990 + 1_100, t),
            "beyond the loop's reach"
        );
        assert!(nak.saw_unverified(990 + 1_000, t));
        assert_eq!(nak.frontier, Some(1_990));
    }

    fn suppressing(delay_ms: u64) -> NakPlanner {
        NakPlanner::new(
            NakConfig {
                reorder_margin: 0,
                suppression_delay: Some(Duration::from_millis(delay_ms)),
                ..NakConfig::default()
            },
            &Bitmap::new(1000),
        )
    }

    #[test]
    fn a_gap_another_receiver_asked_for_is_not_asked_again_until_the_repair_timeout() {
        let mut nak = suppressing(20);
        let t0 = Instant::ZERO + Duration::from_secs(1);
        nak.saw(0, Instant::ZERO);
        nak.saw(100, Instant::ZERO);
        // Someone else's NAK for the same loss, relayed by the server.
        nak.heard(t0, &[(1, 99)]);
        assert_eq!(nak.poll_nak(t0), None, "gaps wait for their delay");
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(30)),
            None,
            "suppressed"
        );
        assert_eq!(nak.serials_suppressed(), 99);
        // The repair never came: after the repair timeout it is asked for (NAK data timer).
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(100)),
            Some(vec![(1, 99)])
        );
    }

    /// A multicast planner (10 ms suppression) of a 1,000,000-serial loop at 100,000 datagrams
    /// a second that has seen serials 0..300,000 in order, and the time of the last.
    fn multicast_planner_that_saw_300_000() -> (NakPlanner, Instant) {
        let mut nak = NakPlanner::new(
            NakConfig {
                suppression_delay: Some(Duration::from_millis(10)),
                ..NakConfig::default()
            },
            &Bitmap::new(1_000_000),
        );
        nak.set_loop_rate(Some(100_000.0));
        let mut t = Instant::ZERO;
        for serial in 0..300_000u32 {
            t = t + Duration::from_micros(10);
            nak.saw(serial, t);
        }
        (nak, t)
    }

    /// Three receivers of 1 GiB on one multicast tier: the repairs one of them asked for
    /// reached the others in order, a batch at a time between batches of the loop, and were
    /// taken for the loop itself far from their frontier: each frontier was dragged to the
    /// repairs and back every few milliseconds (its loss count starting again, what lay between
    /// left to the next pass: 697,000 duplicates for one). Repairs of ranges heard asked for
    /// are repairs; the same batches with nothing heard still move the frontier (the planner
    /// cannot tell them from the loop then).
    #[test]
    fn repairs_another_receiver_asked_for_never_drag_the_frontier_from_the_loop() {
        let run = |heard: bool| -> u32 {
            let (mut nak, mut t) = multicast_planner_that_saw_300_000();
            let mut restarts = 0;
            for batch in 0..64u32 {
                if heard && batch % 16 == 0 {
                    nak.heard(t, &[(50_000 + batch * 64, HEARD_RANGE_MAX)]);
                }
                for (first, n) in [(300_000, 64), (50_000, 64)] {
                    for k in batch * n..(batch + 1) * n {
                        t = t + Duration::from_micros(10);
                        nak.saw(first + k, t);
                        restarts += u32::from(nak.take_restarted());
                    }
                }
            }
            restarts
        };
        assert_eq!(run(true), 0, "the frontier stays with the loop");
        assert!(
            run(false) > 0,
            "unheard, the batches read as the loop elsewhere"
        );
    }

    /// Heard far arrivals are repairs while the frontier travels at least a quarter of their
    /// number: at the repair share's most (one repair per loop datagram) they never drag it;
    /// eight for each step of the frontier (a host walking a parked frontier while forged
    /// NakHeard covers the loop arriving elsewhere) are the loop, and it restarts there.
    #[test]
    fn heard_arrivals_outpacing_the_frontier_fourfold_are_the_loop() {
        let run = |heard_per_step: u32| -> u32 {
            let (mut nak, mut t) = multicast_planner_that_saw_300_000();
            let mut restarts = 0;
            let mut heard = 50_000u32;
            for step in 0..2_048u32 {
                if step % 64 == 0 {
                    nak.heard(t, &[(heard, HEARD_RANGE_MAX)]);
                }
                t = t + Duration::from_micros(10);
                nak.saw(300_000 + step, t);
                for _ in 0..heard_per_step {
                    t = t + Duration::from_micros(10);
                    nak.saw(heard, t);
                    heard += 1;
                    restarts += u32::from(nak.take_restarted());
                }
            }
            restarts
        };
        assert_eq!(run(1), 0, "repairs at the repair share stay repairs");
        assert_eq!(run(2), 0, "twice the repair share too");
        assert!(run(8) > 0, "eight a step are the loop elsewhere");
    }

    #[test]
    fn without_another_receiver_a_gap_is_asked_after_its_random_delay() {
        let mut nak = suppressing(20);
        let t0 = Instant::ZERO + Duration::from_secs(1);
        nak.saw(0, Instant::ZERO);
        nak.saw(50, Instant::ZERO);
        let first = nak.poll_nak(t0);
        let second = nak.poll_nak(t0 + Duration::from_millis(25));
        let asked: Vec<(u32, u32)> = first.into_iter().chain(second).flatten().collect();
        assert_eq!(asked, vec![(1, 49)], "asked once, within the delay");
        // A repair that covers part of it arrives; the rest is heard from someone else.
        for serial in 1..30 {
            nak.saw(serial, Instant::ZERO);
        }
        nak.heard(t0 + Duration::from_millis(90), &[(30, 20)]);
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(130)),
            None,
            "the rest was asked by another receiver just now"
        );
    }

    #[test]
    fn the_reorder_margin_holds_back_the_newest_gaps() {
        let mut nak = planner(1000, 10);
        nak.saw(0, Instant::ZERO);
        nak.saw(15, Instant::ZERO);
        // 1..15 is missing, but 5..15 is within 10 of the frontier: only 1..5 is lost yet.
        assert_eq!(nak.poll_nak(Instant::ZERO), Some(vec![(1, 4)]));
        nak.saw(40, Instant::ZERO);
        assert_eq!(
            nak.poll_nak(Instant::ZERO + Duration::from_millis(10)),
            Some(vec![(5, 10), (16, 14)])
        );
    }

    #[test]
    fn the_pass_wraps_at_the_end_of_the_loop_without_a_wrapping_range() {
        let mut nak = planner(100, 0);
        nak.saw(90, Instant::ZERO);
        nak.saw(99, Instant::ZERO);
        nak.saw(30, Instant::ZERO);
        // 30 is 31 ahead of 99: the frontier moved on; 91..99 and 0..30 are lost.
        assert_eq!(nak.poll_nak(Instant::ZERO), Some(vec![(91, 8), (0, 30)]));
    }

    #[test]
    fn the_backlog_asks_for_holes_behind_the_join_point_windowed_and_stops_at_the_frontier() {
        let loop_len = 10_000;
        let mut held = Bitmap::new(loop_len);
        for serial in 0..loop_len {
            if serial % 10 != 3 {
                held.set(serial);
            }
        }
        let mut nak = NakPlanner::new(
            NakConfig {
                backlog_window: 100,
                ..NakConfig::default()
            },
            &held,
        );
        let t0 = Instant::ZERO;
        nak.saw(5_000, Instant::ZERO);
        let first = nak.poll_nak(t0).expect("holes behind the join point");
        assert!(
            first
                .iter()
                .all(|&(s, n)| n == 1 && s % 10 == 3 && s < 5_000),
            "{first:?}"
        );
        assert_eq!(
            first[0].0, 4_993,
            "the part of the loop that comes last goes first"
        );
        let asked: u32 = first.iter().map(|&(_, n)| n).sum();
        assert!(asked <= 64, "one NAK's worth");
        // Nothing arrives: the window (100) is more than half full after two NAKs, so asking
        // pauses instead of piling up.
        let mut total = asked;
        let mut asked_serials: std::collections::BTreeSet<u32> =
            first.iter().map(|&(s, _)| s).collect();
        let mut now = t0;
        for _ in 0..10 {
            now = now + Duration::from_millis(10);
            if let Some(ranges) = nak.poll_nak(now) {
                total += ranges.iter().map(|&(_, n)| n).sum::<u32>();
                asked_serials.extend(ranges.iter().map(|&(s, _)| s));
            }
        }
        assert!(total <= 100, "at most the window in flight: {total}");
        // Repairs arrive: asking resumes, and over time every hole is asked (those lost in
        // the first, unanswered asks are left to the loop), until the walk meets the frontier.
        for _ in 0..2_000 {
            now = now + Duration::from_millis(10);
            if let Some(ranges) = nak.poll_nak(now) {
                for (first, count) in ranges {
                    for serial in first..first + count {
                        assert_eq!(
                            serial % 10,
                            3,
                            "only holes are asked for, never held serials"
                        );
                        asked_serials.insert(serial);
                        nak.saw(serial, Instant::ZERO);
                    }
                }
            }
        }
        let holes = (0..loop_len).filter(|s| s % 10 == 3).count();
        assert!(
            asked_serials.len() + 2 * 256 / 10 + 2 >= holes,
            "asked {} of {holes} holes",
            asked_serials.len()
        );
        assert_eq!(nak.backlog_next, None, "the walk ended at the frontier");
    }

    /// A client holding nothing joins a loop half-way round with the backlog on: the loop brings
    /// serials upward from the join point while the backlog's repairs come down from the one
    /// before it, each at the same rate (repairs share the loop's token bucket). Where they meet, asks still queued
    /// when the loop passes them arrive twice. The walk stops short by twice what is in
    /// flight: the 2,048-serial window once cost ~2,000 duplicates here (8.6 % of a 20 MB
    /// file over unicast); now almost none.
    #[test]
    fn the_backlog_stops_before_the_loop_overtakes_its_queued_asks() {
        let loop_len = 20_000u32;
        let mut nak = NakPlanner::new(
            NakConfig {
                backlog_window: 2048,
                ..NakConfig::default()
            },
            &Bitmap::new(loop_len),
        );
        let mut held = vec![false; loop_len as usize];
        let mut duplicates = 0u32;
        let mut queue: VecDeque<u32> = VecDeque::new();
        // Joined half-way round (a shared loop): the first half of the file comes last.
        let mut loop_next = loop_len / 2;
        let per_tick = 20; // serials each of loop and repairs deliver per millisecond
        let mut now = Instant::ZERO;
        let mut deliver =
            |serial: u32, nak: &mut NakPlanner, now: Instant, held: &mut Vec<bool>| {
                if held[serial as usize] {
                    duplicates += 1;
                }
                held[serial as usize] = true;
                nak.saw(serial, now);
            };
        for _ in 0..2_000 {
            now = now + Duration::from_millis(1);
            if let Some(ranges) = nak.poll_nak(now) {
                queue.extend(
                    ranges
                        .iter()
                        .flat_map(|&(first, count)| first..first + count),
                );
            }
            let repairs = queue.len().min(per_tick);
            for _ in 0..repairs {
                let serial = queue.pop_front().expect("counted");
                deliver(serial, &mut nak, now, &mut held);
            }
            // The loop takes what the repairs left of the rate.
            for _ in 0..(2 * per_tick - repairs) {
                deliver(loop_next, &mut nak, now, &mut held);
                loop_next = (loop_next + 1) % loop_len;
            }
            if held.iter().all(|&h| h) {
                break;
            }
        }
        assert!(held.iter().all(|&h| h), "complete");
        assert!(
            duplicates <= loop_len / 100,
            "{duplicates} duplicates of {loop_len}"
        );
        assert!(
            nak.backlog_serials() > u64::from(loop_len) / 4,
            "the backlog did work"
        );
    }

    /// A client holding nothing whose loop starts at the file's start (its own unicast loop)
    /// has nothing behind its join point: the end of the file is what the loop brings next in
    /// this pass. Its backlog asks nothing. (It walked back from the end: a 24 MiB download at
    /// 20 Mbit/s on a loaded host asked 11,551 serials that the loop was bringing and received
    /// 4,632 twice, 13.2 s instead of 10.5.) One that held something when it began still asks
    /// for its holes past the file's start.
    #[test]
    fn a_client_that_held_nothing_and_joined_at_the_start_asks_no_backlog() {
        let loop_len = 10_000;
        let config = NakConfig {
            backlog_window: 2048,
            ..NakConfig::default()
        };
        let mut fresh = NakPlanner::new(config, &Bitmap::new(loop_len));
        let mut held = Bitmap::new(loop_len);
        held.set_range(2_000..9_000);
        let mut resumed = NakPlanner::new(config, &held);
        let mut now = Instant::ZERO;
        for serial in 0..100 {
            fresh.saw(serial, now);
            resumed.saw(serial, now);
        }
        for _ in 0..20 {
            now = now + Duration::from_millis(10);
            assert_eq!(fresh.poll_nak(now), None, "nothing was lost");
            let _ = resumed.poll_nak(now);
        }
        assert_eq!(fresh.backlog_serials(), 0);
        assert!(
            resumed.backlog_serials() >= 1_000,
            "the holes past the file's start: {}",
            resumed.backlog_serials()
        );
    }

    #[test]
    fn backlog_repairs_do_not_move_the_frontier_over_what_the_loop_has_not_brought() {
        let loop_len = 10_000;
        let mut nak = NakPlanner::new(
            NakConfig {
                backlog_window: 2048,
                ..NakConfig::default()
            },
            &Bitmap::new(loop_len),
        );
        let mut now = Instant::ZERO;
        // Joined half-way round: the first half of the file is behind the join point.
        for serial in 5_000..5_100 {
            nak.saw(serial, Instant::ZERO);
        }
        let mut asked = std::collections::BTreeSet::new();
        for _ in 0..50 {
            now = now + Duration::from_millis(10);
            if let Some(ranges) = nak.poll_nak(now) {
                for (first, count) in ranges {
                    for serial in first..first + count {
                        // Only the backlog asks here (nothing was lost), and it asks once: a
                        // repair that moved the frontier would make everything it jumped over
                        // count as lost and be asked again.
                        assert!(asked.insert(serial), "serial {serial} asked twice");
                        // The repairs arrive at once.
                        nak.saw(serial, Instant::ZERO);
                    }
                }
            }
        }
        assert!(nak.backlog_serials() > 2048, "the backlog kept asking");
        assert_eq!(
            nak.serials_naked(),
            nak.backlog_serials(),
            "nothing but the backlog was asked"
        );
    }

    #[test]
    fn wanted_blocks_are_asked_before_the_frontier_is_set_and_their_arrival_does_not_set_it() {
        let mut nak = planner(1000, 4);
        let t0 = Instant::ZERO;
        // Joined mid-loop: what arrives is pending (seen unverified), nothing verified yet.
        for serial in 500..520 {
            nak.saw_unverified(serial, t0);
        }
        assert_eq!(nak.poll_nak(t0), None, "nothing wanted yet");
        nak.want_blocks([300, 0, 301, 0, 100, 1_000, 510]);
        assert_eq!(nak.poll_timeout(), Some(t0), "due at once");
        let t1 = t0 + Duration::from_millis(10);
        // In serial order, neighbours merged; a wanted one twice is asked once; one held
        // (510) and one outside the loop (1,000) not at all.
        assert_eq!(nak.poll_nak(t1), Some(vec![(0, 1), (100, 1), (300, 2)]));
        assert_eq!(nak.block_serials(), 4);
        // Wanted again while in flight: not asked again.
        nak.want_blocks([0, 300]);
        assert_eq!(nak.poll_nak(t1 + Duration::from_millis(20)), None);
        // The blocks arrive (verified): repairs, not the loop's join point.
        nak.saw(0, t1);
        nak.saw(300, t1);
        nak.saw(301, t1);
        // The loop's next datagram is the join point: the backlog and the scan start there.
        assert!(nak.saw(520, t1), "the first of the loop sets the frontier");
        for serial in 521..530 {
            assert!(nak.saw(serial, t1));
        }
        // 100 was never answered: asked again after its expiry, the others not.
        let late = t1 + BLOCK_ASK_EXPIRY;
        assert_eq!(nak.poll_nak(late), Some(vec![(100, 1)]));
        assert_eq!(nak.block_serials(), 5);
        // Its repair arrives (a repair: the frontier stays); the others, held, wanted again
        // are not asked; nor one ahead of the frontier, which the loop brings first.
        assert!(!nak.saw(100, late));
        nak.want_blocks([0, 300, 100, 700]);
        assert_eq!(nak.poll_nak(late + BLOCK_ASK_EXPIRY), None);
    }

    #[test]
    fn a_block_the_scan_covers_is_left_to_it_and_one_the_backlog_would_ask_is_asked_once() {
        let loop_len = 1000;
        let mut nak = NakPlanner::new(
            NakConfig {
                reorder_margin: 4,
                repair_timeout: Duration::from_secs(3600),
                backlog_window: 100,
                ..NakConfig::default()
            },
            &Bitmap::new(loop_len),
        );
        let t0 = Instant::ZERO;
        for serial in (400..600).filter(|&s| s != 450) {
            nak.saw(serial, t0);
        }
        // 450 lies where the loop went since the join (400): the scan asks for it. 380 lies
        // behind the join point: asked as a block first, and the backlog walk skips it.
        nak.want_blocks([450, 380]);
        let asks = nak.poll_nak(t0).expect("a NAK");
        assert_eq!(asks[0], (380, 1), "the block first: {asks:?}");
        let count = |serial: u32| {
            asks.iter()
                .filter(|&&(first, n)| (first..first + n).contains(&serial))
                .count()
        };
        assert_eq!(count(450), 1, "the scan's own ask: {asks:?}");
        assert_eq!(count(380), 1, "asked once: {asks:?}");
        assert_eq!(nak.block_serials(), 1);
    }

    #[test]
    fn block_asks_are_bounded_and_a_rejoin_forgets_them() {
        let mut nak = planner(100_000, 4);
        let t0 = Instant::ZERO;
        nak.want_blocks(0..10_000);
        let mut asked = 0;
        let mut now = t0;
        while let Some(ranges) = nak.poll_nak(now) {
            assert!(ranges.len() <= NAK_RANGES_MAX);
            asked += ranges.iter().map(|&(_, n)| n).sum::<u32>();
            now = now + Duration::from_millis(10);
        }
        assert_eq!(asked as usize, BLOCK_ASKS_MAX);
        nak.rejoin();
        assert_eq!(nak.poll_timeout(), None);
        assert_eq!(nak.poll_nak(now + BLOCK_ASK_EXPIRY), None);
    }

    fn following(loop_len: u32, margin: u32) -> NakPlanner {
        NakPlanner::new(
            NakConfig {
                reorder_margin: margin,
                repair_timeout: Duration::from_secs(3600),
                play_window: 2048,
                play_expiry: Duration::from_millis(500),
                ..NakConfig::default()
            },
            &Bitmap::new(loop_len),
        )
    }

    #[test]
    fn a_follower_asks_first_for_what_follows_its_play_position_windowed() {
        let mut nak = following(10_000, 16);
        let mut now = Instant::ZERO;
        // Joined mid-loop at 5000; playback waits for serial 0 (the start of the file).
        nak.saw(5_000, Instant::ZERO);
        nak.set_play_position(Some(0));
        assert_eq!(
            nak.poll_nak(now),
            Some(vec![(0, 2048)]),
            "the play window, nearest first"
        );
        now = now + Duration::from_millis(10);
        assert_eq!(nak.poll_nak(now), None, "the window is in flight");
        // Repairs for 0..1000 arrive; playback moves on; the loop moves on too.
        for serial in 0..1_000 {
            nak.saw(serial, Instant::ZERO);
        }
        for serial in 5_001..5_100 {
            nak.saw(serial, Instant::ZERO);
        }
        nak.set_play_position(Some(1_000));
        now = now + Duration::from_millis(10);
        assert_eq!(
            nak.poll_nak(now),
            Some(vec![(2_048, 1_000)]),
            "only the room freed, after what is in flight; the repairs did not move the frontier"
        );
        assert_eq!(nak.play_serials(), 3_048);
        assert_eq!(nak.serials_naked(), 3_048, "nothing else was asked");
    }

    #[test]
    fn a_lost_play_repair_is_asked_again_after_the_play_expiry() {
        let mut nak = following(10_000, 16);
        nak.saw(5_000, Instant::ZERO);
        nak.set_play_position(Some(100));
        let t0 = Instant::ZERO;
        assert_eq!(nak.poll_nak(t0), Some(vec![(100, 2048)]));
        // Everything but 150..160 arrives.
        for serial in (100..2_148).filter(|s| !(150..160).contains(s)) {
            nak.saw(serial, Instant::ZERO);
        }
        nak.set_play_position(Some(150));
        // Within the expiry, 150..160 are in flight: only the window's end moves on (the
        // window is 2048 serials from the play position).
        let second = nak.poll_nak(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(second, vec![(2_148, 50)]);
        for serial in 2_148..2_198 {
            nak.saw(serial, Instant::ZERO);
        }
        assert_eq!(
            nak.poll_timeout(),
            Some(t0 + Duration::from_millis(500)),
            "woken for the expiry"
        );
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(499)),
            None,
            "not yet expired"
        );
        assert_eq!(
            nak.poll_nak(t0 + Duration::from_millis(500)),
            Some(vec![(150, 10)]),
            "the lost ones again"
        );
    }

    #[test]
    fn the_play_walk_stops_short_of_the_frontier_and_never_asks_what_is_held() {
        let mut nak = following(10_000, 4);
        nak.saw(5_000, Instant::ZERO);
        for serial in (4_950..5_000).filter(|s| s % 3 == 0) {
            nak.saw(serial, Instant::ZERO);
        }
        nak.set_play_position(Some(4_950));
        let ranges = nak.poll_nak(Instant::ZERO).unwrap();
        let asked: Vec<u32> = ranges.iter().flat_map(|&(f, n)| f..f + n).collect();
        let expected: Vec<u32> = (4_950..4_996).filter(|s| s % 3 != 0).collect();
        assert_eq!(
            asked, expected,
            "up to the reorder margin behind the frontier"
        );
        assert!(ranges.len() <= NAK_RANGES_MAX / 2 + 1);
        // A play position the loop is about to deliver is not asked for at all.
        let mut nak = following(10_000, 4);
        nak.saw(5_000, Instant::ZERO);
        nak.set_play_position(Some(5_003));
        assert_eq!(nak.poll_nak(Instant::ZERO), None);
        // Nor one already delivered.
        nak.set_play_position(Some(5_000));
        assert_eq!(
            nak.poll_nak(Instant::ZERO + Duration::from_millis(10)),
            None
        );
    }

    #[test]
    fn with_a_play_position_the_backlog_asks_nothing() {
        let mut nak = NakPlanner::new(
            NakConfig {
                backlog_window: 2048,
                play_window: 100,
                ..NakConfig::default()
            },
            &Bitmap::new(10_000),
        );
        nak.saw(5_000, Instant::ZERO);
        nak.set_play_position(Some(0));
        assert_eq!(nak.poll_nak(Instant::ZERO), Some(vec![(0, 100)]));
        assert_eq!(nak.backlog_serials(), 0);
        // Playback done (no position): the backlog takes over for what is left.
        nak.set_play_position(None);
        let ranges = nak
            .poll_nak(Instant::ZERO + Duration::from_millis(10))
            .unwrap();
        assert!(nak.backlog_serials() > 0, "{ranges:?}");
        assert!(
            ranges.iter().all(|&(first, _)| first >= 100),
            "not what the play walk has in flight: {ranges:?}"
        );
    }

    #[test]
    fn play_ranges_never_wrap_and_stay_within_the_loop() {
        let mut nak = following(3_000, 0);
        nak.saw(1_500, Instant::ZERO);
        nak.set_play_position(Some(2_500));
        let ranges = nak.poll_nak(Instant::ZERO).unwrap();
        assert_eq!(ranges, vec![(2_500, 500), (0, 1_500)]);
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
            planner.saw(10, Instant::ZERO);
            planner.saw(49, Instant::ZERO);
        }
        assert_eq!(nak_margin0.poll_nak(Instant::ZERO), None);
    }

    proptest! {
        /// With a play position anywhere: no held serial is asked, ranges are non-empty and in
        /// the loop, and the play walk never has more than its window in flight.
        #[test]
        fn play_asks_are_bounded_and_never_for_held_serials(
            loop_len in 1u32..6000,
            join in 0u32..6000,
            play in 0u32..6000,
            held in proptest::collection::vec(any::<bool>(), 6000),
            window in 1u32..3000,
        ) {
            let mut have = Bitmap::new(loop_len);
            for serial in 0..loop_len {
                if held[serial as usize] {
                    have.set(serial);
                }
            }
            let mut nak = NakPlanner::new(
                NakConfig { play_window: window, backlog_window: 512, ..NakConfig::default() },
                &have,
            );
            nak.saw(join % loop_len, Instant::ZERO);
            let mut now = Instant::ZERO;
            let mut play = play % loop_len;
            for round in 0..20u32 {
                nak.set_play_position(Some(play));
                now = now + Duration::from_millis(10 + u64::from(round % 3) * 300);
                if let Some(ranges) = nak.poll_nak(now) {
                    prop_assert!(ranges.len() <= NAK_RANGES_MAX);
                    for &(first, count) in &ranges {
                        prop_assert!(count > 0 && first + count <= loop_len);
                        for serial in first..first + count {
                            prop_assert!(!nak.seen.get(serial), "held serial {} asked", serial);
                        }
                    }
                    // Half of what was asked arrives.
                    for (first, count) in ranges {
                        for serial in (first..first + count).step_by(2) {
                            nak.saw(serial, Instant::ZERO);
                        }
                    }
                }
                let in_flight = nak.play_bits.as_ref().map_or(0, |bits| bits.count_ones());
                prop_assert!(in_flight <= window, "{} in flight, window {}", in_flight, window);
                play = (play + round) % loop_len;
            }
        }

        /// Whatever arrives short of an overload, over passes of the loop every serial that
        /// never arrived is asked for, no held serial is ever asked for, and ranges are
        /// non-empty, in the loop, bounded.
        #[test]
        fn every_lost_serial_is_asked_and_nothing_held(
            loop_len in 1u32..2000,
            start in 0u32..2000,
            lost in proptest::collection::vec(0u8..100, 2000),
            loss_percent in 0u8..12,
        ) {
            let lost: Vec<bool> = lost.iter().map(|&draw| draw < loss_percent).collect();
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
                    nak.saw(serial, Instant::ZERO);
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
            nak.saw(start, Instant::ZERO);
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
