//! Per-core sender threads (issue 5): each pinned to a core, owning its own socket and
//! `DataSender` (io_uring where the kernel offers it), running many paced channels.
//!
//! Control → data plane: bounded crossbeam queues of plain `Command`s. Data → control: per
//! channel and per thread atomics, written by one thread, read by anyone, no locks.
//!
//! A channel here is pure data plane: an archive range looping at a rate to a set of
//! destinations (a multicast group and/or unicast peers). Membership, expiry and R9 stay in the
//! control plane, which adds and removes channels and peers.
//!
//! Each thread's loop: apply queued commands; for every channel ask its carousel for what is due
//! now and send it; then sleep until the earliest channel deadline (waking early for commands).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use loopcast_proto::carousel::{Carousel, CarouselConfig};
use loopcast_proto::time::{Instant, MonotonicClock};
use socket2::SockAddr;

use crate::mapped::MappedArchive;
use crate::send::{DataSender, SendItem, SendPath, MESSAGES_MAX};

/// Commands queued per thread at most.
pub const COMMAND_QUEUE_LEN: usize = 1024;
/// Channels per thread at most.
pub const CHANNELS_PER_THREAD_MAX: usize = 4096;
/// The load an unpaced channel counts as: more than one core can send, so unpaced channels
/// spread one per thread before paced ones join them.
pub const UNPACED_LOAD_BITS_PER_S: u64 = 100_000_000_000;
/// Channels served in one pass at most. A backlog (after the thread was descheduled, say) is
/// worked off in deadline order over several short passes rather than one long one: in one
/// long pass every channel would fall due again before it ended, and the channels' phases,
/// spread on purpose, would collapse into lock-step bursts.
const PASS_CHANNELS_MAX: usize = 64;
/// Below this, a thread spins (yielding) instead of sleeping, so pacing stays accurate. Sender
/// threads sleep with a timer slack of `TIMER_SLACK` (the default is 50 µs), so a sleep ends
/// close to its deadline and the spin is short: with 200 µs (and the default slack) a thread
/// pacing one 6 Gbit/s channel spent 10-15 % of its CPU in sched_yield and clock reads.
const SPIN_BELOW: Duration = Duration::from_micros(50);
const TIMER_SLACK: Duration = Duration::from_micros(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u64);

/// Lock-free counters of one channel, written by its sender thread.
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
    /// Loop position (next serial) as last seen by the sender.
    pub next_serial: AtomicU64,
    /// Datagrams sent as repairs ahead of the loop (included in `datagrams`).
    pub repair_datagrams: AtomicU64,
    /// Repair requests refused: out of the loop's range, or the channel's queue was full.
    pub repairs_refused: AtomicU64,
}

/// Lock-free counters of one sender thread.
#[derive(Debug, Default)]
pub struct ThreadStats {
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
    pub send_errors: AtomicU64,
    pub zc_notifications: AtomicU64,
    pub zc_copied: AtomicU64,
    pub channels: AtomicU64,
    /// Current send path as an index into `SendPath::ALL`.
    pub send_path: AtomicU64,
    /// Passes that began more than 1 ms after their earliest deadline, and the worst lateness
    /// seen, in ns: how often and how badly this thread was late for its channels.
    pub late_passes: AtomicU64,
    pub max_lateness_ns: AtomicU64,
    /// The longest pass (gathering, sending and rescheduling what was due), in ns.
    pub max_pass_ns: AtomicU64,
}

/// One stretch of a channel's loop: `count` datagrams of `archive`, the first at byte `offset`.
#[derive(Clone)]
pub struct LoopPiece {
    pub archive: Arc<MappedArchive>,
    pub offset: usize,
    pub count: u32,
}

/// What a channel loops (a whole archive, or a playlist of archive ranges, in order), where to,
/// and how fast.
pub struct ChannelSpec {
    pub id: ChannelId,
    /// The loop, piece after piece; loop serial 0 is the first datagram of the first piece.
    pub pieces: Vec<LoopPiece>,
    pub datagram_size: u16,
    pub rate_bits_per_s: u64,
    pub destinations: Vec<SocketAddr>,
    /// Largest share of the rate repairs may take (R10 fairness), percent.
    pub repair_share_percent: u8,
    /// The loop starts at this serial (0: the beginning).
    pub start_serial: u32,
    pub stats: Arc<ChannelStats>,
}

pub enum Command {
    AddChannel(Box<ChannelSpec>),
    RemoveChannel(ChannelId),
    SetRate(ChannelId, u64),
    AddDestination(ChannelId, SocketAddr),
    RemoveDestination(ChannelId, SocketAddr),
    /// Send serials `first .. first + count` ahead of the loop, within the channel's rate, to
    /// `to` only (a unicast receiver that asked) or, with `None`, to every destination.
    QueueRepair {
        channel: ChannelId,
        first: u32,
        count: u32,
        to: Option<SocketAddr>,
    },
}

struct Channel {
    spec: ChannelSpec,
    /// Loop serial of each piece's first datagram.
    piece_starts: Vec<u32>,
    carousel: Carousel,
    destinations: Vec<SockAddr>,
}

impl Channel {
    /// The byte ranges of loop serials `first .. first + count` (which may span pieces), each
    /// handed to `region` in loop order.
    fn regions<'a>(&'a self, first: u32, count: u32, mut region: impl FnMut(&'a [u8])) {
        let size = usize::from(self.spec.datagram_size);
        let mut piece = self.piece_starts.partition_point(|&start| start <= first) - 1;
        let (mut serial, end) = (first, first + count);
        while serial < end {
            let LoopPiece {
                archive,
                offset,
                count: piece_count,
            } = &self.spec.pieces[piece];
            let within = serial - self.piece_starts[piece];
            let take = (piece_count - within).min(end - serial);
            let start = offset + within as usize * size;
            region(&archive.bytes()[start..start + take as usize * size]);
            serial += take;
            piece += 1;
        }
    }
}

pub struct SenderPool {
    commands: Vec<Sender<Command>>,
    stats: Vec<Arc<ThreadStats>>,
    /// Which thread owns each channel and the load it was counted with, and each thread's load
    /// (sum of its channels' rates; by our own bookkeeping).
    owners: std::collections::HashMap<ChannelId, (usize, u64)>,
    load: Vec<u64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub threads: usize,
    pub send_path: SendPath,
    /// Local address to send from (also picks the multicast interface when it is IPv4).
    pub bind: SocketAddr,
    pub multicast_interface: Option<std::net::Ipv4Addr>,
    pub multicast_ttl: u32,
    pub pin_threads: bool,
}

#[derive(Debug)]
pub enum PoolError {
    Full,
    UnknownChannel,
    Gone,
}

impl SenderPool {
    pub fn start(config: &PoolConfig) -> std::io::Result<SenderPool> {
        assert!(config.threads > 0, "a pool has at least one thread");
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut pool = SenderPool {
            commands: Vec::new(),
            stats: Vec::new(),
            owners: std::collections::HashMap::new(),
            load: vec![0; config.threads],
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for index in 0..config.threads {
            let (sender, receiver) = bounded(COMMAND_QUEUE_LEN);
            let stats = Arc::new(ThreadStats::default());
            let socket = crate::socket::bind_udp(config.bind)?;
            if let Some(interface) = config.multicast_interface {
                crate::socket::set_multicast_sender(&socket, interface, config.multicast_ttl)?;
            }
            let data_sender = DataSender::new(config.send_path)?;
            let core = if config.pin_threads && !cores.is_empty() {
                Some(cores[index % cores.len()])
            } else {
                None
            };
            let thread_stats = stats.clone();
            let thread_stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("loopcast-send-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    run_thread(socket, data_sender, receiver, thread_stats, thread_stop);
                })?;
            pool.commands.push(sender);
            pool.stats.push(stats);
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    pub fn thread_stats(&self) -> &[Arc<ThreadStats>] {
        &self.stats
    }

    /// Adds a channel on the least-loaded thread (load: the sum of its channels' rates).
    pub fn add_channel(&mut self, spec: ChannelSpec) -> Result<(), PoolError> {
        let (thread, _) = self
            .load
            .iter()
            .enumerate()
            .min_by_key(|(_, load)| **load)
            .expect("at least one thread");
        let id = spec.id;
        let weight = load_of(spec.rate_bits_per_s);
        self.commands[thread]
            .try_send(Command::AddChannel(Box::new(spec)))
            .map_err(|_| PoolError::Full)?;
        self.owners.insert(id, (thread, weight));
        self.load[thread] += weight;
        Ok(())
    }

    /// The thread a channel runs on (by the pool's bookkeeping).
    pub fn thread_of(&self, id: ChannelId) -> Option<usize> {
        self.owners.get(&id).map(|&(thread, _)| thread)
    }

    pub fn command(&mut self, command: Command) -> Result<(), PoolError> {
        let id = match &command {
            Command::AddChannel(spec) => spec.id,
            Command::RemoveChannel(id)
            | Command::SetRate(id, _)
            | Command::AddDestination(id, _)
            | Command::RemoveDestination(id, _)
            | Command::QueueRepair { channel: id, .. } => *id,
        };
        let (thread, weight) = *self.owners.get(&id).ok_or(PoolError::UnknownChannel)?;
        match command {
            Command::RemoveChannel(_) => {
                self.owners.remove(&id);
                self.load[thread] -= weight;
            }
            Command::SetRate(_, rate) => {
                let new_weight = load_of(rate);
                self.owners.insert(id, (thread, new_weight));
                self.load[thread] = self.load[thread] - weight + new_weight;
            }
            _ => {}
        }
        self.commands[thread]
            .try_send(command)
            .map_err(|e| match e {
                crossbeam_channel::TrySendError::Full(_) => PoolError::Full,
                crossbeam_channel::TrySendError::Disconnected(_) => PoolError::Gone,
            })
    }
}

fn load_of(rate_bits_per_s: u64) -> u64 {
    if rate_bits_per_s == 0 {
        UNPACED_LOAD_BITS_PER_S
    } else {
        rate_bits_per_s.min(UNPACED_LOAD_BITS_PER_S)
    }
}

impl Drop for SenderPool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.commands.clear();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A thread's channels: a slab (slots are reused, so heap entries name a slot plus the
/// generation it was scheduled under) and a min-heap of deadlines. Only channels whose deadline
/// has come are touched in a pass, so a thread with thousands of slow channels does work in
/// proportion to what is due, not to how many channels it has.
struct Schedule {
    slots: Vec<Option<Channel>>,
    generations: Vec<u32>,
    free: Vec<usize>,
    /// (deadline, slot, generation); an entry whose generation is stale is skipped.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Where the next channel's first quantum falls, as a fraction of its quantum interval
    /// (golden-ratio steps: any number of channels ends up evenly spread).
    next_phase: f64,
}

impl Schedule {
    fn new() -> Schedule {
        Schedule {
            slots: Vec::with_capacity(CHANNELS_PER_THREAD_MAX),
            generations: Vec::with_capacity(CHANNELS_PER_THREAD_MAX),
            free: Vec::new(),
            deadlines: BinaryHeap::with_capacity(2 * CHANNELS_PER_THREAD_MAX),
            next_phase: 0.0,
        }
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn find(&self, id: ChannelId) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.as_ref().is_some_and(|c| c.spec.id == id))
    }

    fn channel_mut(&mut self, id: ChannelId) -> Option<&mut Channel> {
        self.slots.iter_mut().flatten().find(|c| c.spec.id == id)
    }

    /// (Re)schedules a slot at its carousel's next deadline under a new generation, so any
    /// older heap entry for the slot is ignored.
    fn reschedule(&mut self, slot: usize, now: Instant) {
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        self.push_deadline(slot, now);
    }

    fn push_deadline(&mut self, slot: usize, now: Instant) {
        let channel = self.slots[slot].as_ref().expect("scheduling a live slot");
        {
            let deadline = channel.carousel.poll_timeout();
            // A paced channel keeps its real deadline, even a past one, so the most overdue goes
            // first. An unpaced channel is always due: it queues at `now`, behind overdue paced
            // channels, and one pass pops it once.
            let deadline = if channel.carousel.quantum_interval().is_some() {
                deadline
            } else {
                deadline.max(now)
            };
            self.deadlines
                .push(Reverse((deadline, slot, self.generations[slot])));
        }
    }

    fn insert(&mut self, channel: Channel, now: Instant) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(channel);
                slot
            }
            None => {
                self.slots.push(Some(channel));
                self.generations.push(0);
                self.slots.len() - 1
            }
        };
        self.reschedule(slot, now);
    }

    fn remove(&mut self, slot: usize) {
        self.slots[slot] = None;
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        self.free.push(slot);
    }

    /// Pops the next entry due at `now` that is still current.
    fn pop_due(&mut self, now: Instant) -> Option<usize> {
        while let Some(&Reverse((deadline, slot, generation))) = self.deadlines.peek() {
            if deadline > now {
                return None;
            }
            self.deadlines.pop();
            if self.generations[slot] == generation && self.slots[slot].is_some() {
                return Some(slot);
            }
        }
        None
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines
            .peek()
            .map(|Reverse((deadline, _, _))| *deadline)
    }
}

fn apply(command: Command, schedule: &mut Schedule, now: Instant, sender: &DataSender) {
    match command {
        Command::AddChannel(spec) => {
            let segments = sender.segments_per_message(usize::from(spec.datagram_size));
            if schedule.len() >= CHANNELS_PER_THREAD_MAX {
                tracing::warn!(
                    channel = spec.id.0,
                    "sender thread at its channel limit; channel not added"
                );
                return;
            }
            let size = usize::from(spec.datagram_size);
            let mut piece_starts = Vec::with_capacity(spec.pieces.len());
            let mut loop_len = 0u32;
            for piece in &spec.pieces {
                let fits = piece.count > 0
                    && piece
                        .offset
                        .checked_add(piece.count as usize * size)
                        .is_some_and(|end| end <= piece.archive.bytes().len());
                let Some(next) = loop_len.checked_add(piece.count).filter(|_| fits) else {
                    tracing::warn!(
                        channel = spec.id.0,
                        "a loop piece is empty, outside its archive or too long; channel not added"
                    );
                    return;
                };
                piece_starts.push(loop_len);
                loop_len = next;
            }
            if loop_len == 0 {
                tracing::warn!(channel = spec.id.0, "empty loop; channel not added");
                return;
            }
            let config = CarouselConfig {
                loop_len,
                datagram_size: spec.datagram_size,
                rate_bits_per_s: spec.rate_bits_per_s,
                batch_datagrams_max: u32::try_from(segments * MESSAGES_MAX).expect("small"),
                repair_share_percent: spec.repair_share_percent,
            };
            // Start a paced channel at its own phase of the quantum interval: a thread whose
            // channels all fell due together would send them in one late burst.
            let phase = schedule.next_phase;
            schedule.next_phase = (phase + 0.618_033_988_749_895) % 1.0;
            let offset = Carousel::new(config, now)
                .quantum_interval()
                .map_or(Duration::ZERO, |interval| interval.mul_f64(phase));
            let start = now + offset;
            let mut carousel = Carousel::new(config, start);
            carousel.skip_to(spec.start_serial);
            let destinations = spec
                .destinations
                .iter()
                .map(|d| SockAddr::from(*d))
                .collect();
            schedule.insert(
                Channel {
                    spec: *spec,
                    piece_starts,
                    carousel,
                    destinations,
                },
                now,
            );
        }
        Command::RemoveChannel(id) => {
            if let Some(slot) = schedule.find(id) {
                schedule.remove(slot);
            }
        }
        Command::SetRate(id, rate) => {
            if let Some(slot) = schedule.find(id) {
                let channel = schedule.slots[slot].as_mut().expect("found");
                channel.carousel.set_rate(rate, now);
                schedule.reschedule(slot, now);
            }
        }
        Command::QueueRepair {
            channel: id,
            first,
            count,
            to,
        } => {
            if let Some(channel) = schedule.channel_mut(id) {
                if channel.carousel.queue_repair(first, count, to).is_err() {
                    channel
                        .spec
                        .stats
                        .repairs_refused
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Command::AddDestination(id, address) => {
            if let Some(channel) = schedule.channel_mut(id) {
                let address = SockAddr::from(address);
                if !channel.destinations.contains(&address) {
                    channel.destinations.push(address);
                }
            }
        }
        Command::RemoveDestination(id, address) => {
            if let Some(channel) = schedule.channel_mut(id) {
                let address = SockAddr::from(address);
                channel.destinations.retain(|d| *d != address);
            }
        }
    }
}

/// Empties a vector and hands back its allocation with a new lifetime for its borrowed items
/// (in-place collection reuses the buffer; no `unsafe`, no allocation).
fn recycle<'a, 'b>(mut items: Vec<SendItem<'a>>) -> Vec<SendItem<'b>> {
    items.clear();
    items
        .into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

fn run_thread(
    socket: UdpSocket,
    mut sender: DataSender,
    commands: Receiver<Command>,
    stats: Arc<ThreadStats>,
    stop: Arc<AtomicBool>,
) {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and applies to the calling thread only.
    let slack_set = unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            TIMER_SLACK.as_nanos() as libc::c_ulong,
        )
    };
    if slack_set != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "sender thread timer slack not set");
    }
    let clock = MonotonicClock::new();
    let mut schedule = Schedule::new();
    // Reused every pass: no allocation on the send path once warm.
    let mut due: Vec<(usize, Option<loopcast_proto::carousel::Transmit>)> =
        Vec::with_capacity(CHANNELS_PER_THREAD_MAX);
    let mut item_storage: Vec<SendItem<'static>> = Vec::with_capacity(CHANNELS_PER_THREAD_MAX);
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        while let Ok(command) = commands.try_recv() {
            apply(command, &mut schedule, now, &sender);
        }
        stats
            .channels
            .store(schedule.len() as u64, Ordering::Relaxed);
        // Phase 1: ask every channel whose deadline has come what it sends (one transmit per
        // channel per pass keeps unpaced channels from starving paced ones).
        due.clear();
        let pass_now = clock.now();
        if let Some(deadline) = schedule.next_deadline().filter(|d| *d <= pass_now) {
            let lateness = pass_now.saturating_since(deadline);
            if lateness > Duration::from_millis(1) {
                stats.late_passes.fetch_add(1, Ordering::Relaxed);
            }
            stats
                .max_lateness_ns
                .fetch_max(lateness.as_nanos() as u64, Ordering::Relaxed);
        }
        while due.len() < PASS_CHANNELS_MAX {
            let Some(slot) = schedule.pop_due(pass_now) else {
                break;
            };
            let channel = schedule.slots[slot].as_mut().expect("popped a live slot");
            due.push((slot, channel.carousel.poll_transmit(pass_now)));
        }
        // Phase 2: send all of it in as few syscalls as the path allows.
        if due.iter().any(|(_, transmit)| transmit.is_some()) {
            let mut items = recycle(std::mem::take(&mut item_storage));
            for &(slot, transmit) in &due {
                let Some(transmit) = transmit else { continue };
                let channel = schedule.slots[slot].as_ref().expect("due slot is live");
                let size = usize::from(channel.spec.datagram_size);
                // A repair for one receiver goes to it alone (if it is still a destination).
                let target = transmit.to.map(SockAddr::from);
                channel.regions(transmit.first, transmit.count, |region| {
                    for destination in channel
                        .destinations
                        .iter()
                        .filter(|d| target.as_ref().is_none_or(|t| *d == t))
                    {
                        items.push(SendItem {
                            destination,
                            region,
                            datagram_size: size,
                        });
                    }
                });
            }
            if sender.send_batch(&socket, &items).is_err() {
                stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
            item_storage = recycle(items);
        }
        // Phase 3: count, and put every popped channel back at its next deadline.
        let after = clock.now();
        stats.max_pass_ns.fetch_max(
            after.saturating_since(pass_now).as_nanos() as u64,
            Ordering::Relaxed,
        );
        for &(slot, transmit) in &due {
            if let Some(transmit) = transmit {
                let channel = schedule.slots[slot].as_ref().expect("due slot is live");
                let receivers = match transmit.to {
                    Some(to) => usize::from(channel.destinations.contains(&SockAddr::from(to))),
                    None => channel.destinations.len(),
                };
                let datagrams = u64::from(transmit.count) * receivers as u64;
                let size = u64::from(channel.spec.datagram_size);
                let channel_stats = &channel.spec.stats;
                channel_stats
                    .datagrams
                    .fetch_add(datagrams, Ordering::Relaxed);
                channel_stats
                    .bytes
                    .fetch_add(datagrams * size, Ordering::Relaxed);
                if transmit.repair {
                    channel_stats
                        .repair_datagrams
                        .fetch_add(datagrams, Ordering::Relaxed);
                }
                channel_stats
                    .next_serial
                    .store(u64::from(channel.carousel.next_serial()), Ordering::Relaxed);
            }
            schedule.push_deadline(slot, after);
        }
        let counters = sender.counters();
        stats.datagrams.store(counters.datagrams, Ordering::Relaxed);
        stats.bytes.store(counters.bytes, Ordering::Relaxed);
        stats
            .zc_notifications
            .store(counters.zc_notifications, Ordering::Relaxed);
        stats.zc_copied.store(counters.zc_copied, Ordering::Relaxed);
        let path_index = SendPath::ALL
            .iter()
            .position(|p| *p == sender.path())
            .unwrap_or(0);
        stats.send_path.store(path_index as u64, Ordering::Relaxed);

        let wait = match schedule.next_deadline() {
            None => Duration::from_millis(10),
            Some(deadline) => clock.until(deadline),
        };
        if wait.is_zero() {
            continue;
        }
        if wait < SPIN_BELOW {
            std::thread::yield_now();
            continue;
        }
        // Sleep until the earliest deadline, waking at once for a command.
        match commands.recv_timeout(wait - SPIN_BELOW / 2) {
            Ok(command) => apply(command, &mut schedule, clock.now(), &sender),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if schedule.len() == 0 {
                    return;
                }
                std::thread::sleep(wait.min(Duration::from_millis(10)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive_file(datagrams: usize, size: usize) -> (std::path::PathBuf, Vec<u8>) {
        let path =
            std::env::temp_dir().join(format!("loopcast-pool-{}-{datagrams}", std::process::id()));
        let bytes: Vec<u8> = (0..datagrams * size)
            .map(|i| ((i / size) as u8).wrapping_mul(31) ^ (i as u8))
            .collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        (path, bytes)
    }

    fn map(path: &std::path::Path) -> Arc<MappedArchive> {
        let file = std::fs::File::open(path).unwrap();
        Arc::new(MappedArchive::map(&file, path).unwrap())
    }

    /// A loopback socket for a test to receive a channel's datagrams on.
    fn loopback_receiver() -> UdpSocket {
        let receiver = crate::socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        receiver
    }

    fn loopback_pool(threads: usize, send_path: SendPath, pin_threads: bool) -> SenderPool {
        SenderPool::start(&PoolConfig {
            threads,
            send_path,
            bind: "127.0.0.1:0".parse().unwrap(),
            multicast_interface: None,
            multicast_ttl: 1,
            pin_threads,
        })
        .unwrap()
    }

    fn rate_over(stats: &ChannelStats, window: Duration) -> f64 {
        let before = stats.bytes.load(Ordering::Relaxed);
        std::thread::sleep(window);
        (stats.bytes.load(Ordering::Relaxed) - before) as f64 * 8.0 / window.as_secs_f64()
    }

    fn spec(id: u64, archive: &Arc<MappedArchive>, rate: u64) -> Box<ChannelSpec> {
        Box::new(ChannelSpec {
            id: ChannelId(id),
            pieces: vec![LoopPiece {
                archive: archive.clone(),
                offset: 0,
                count: 100,
            }],
            datagram_size: 1440,
            rate_bits_per_s: rate,
            destinations: vec!["127.0.0.1:9".parse().unwrap()],
            repair_share_percent: loopcast_proto::carousel::REPAIR_SHARE_PERCENT_DEFAULT,
            start_serial: 0,
            stats: Arc::new(ChannelStats::default()),
        })
    }

    #[test]
    fn schedule_spreads_phases_pops_only_due_channels_and_skips_stale_entries() {
        let (path, _) = archive_file(100, 1440);
        let archive = map(&path);
        let sender = DataSender::new(SendPath::Sendmmsg).unwrap();
        let mut schedule = Schedule::new();
        let start = Instant::from_nanos(1_000_000_000);
        let channels = 16u64;
        for id in 0..channels {
            apply(
                Command::AddChannel(spec(id, &archive, 10_000_000)),
                &mut schedule,
                start,
                &sender,
            );
        }
        assert_eq!(schedule.len(), channels as usize);
        // Nothing is due at the start: every channel first waits for its quantum of tokens.
        assert_eq!(schedule.pop_due(start), None);
        // Their first deadlines are spread over one quantum interval, not stacked.
        let mut first_deadlines: Vec<Instant> = schedule
            .deadlines
            .iter()
            .map(|Reverse((deadline, _, _))| *deadline)
            .collect();
        first_deadlines.sort();
        first_deadlines.dedup();
        assert_eq!(
            first_deadlines.len(),
            channels as usize,
            "each channel starts at its own phase"
        );
        let interval = schedule.slots[0]
            .as_ref()
            .unwrap()
            .carousel
            .quantum_interval()
            .unwrap();
        let spread =
            first_deadlines[first_deadlines.len() - 1].saturating_since(first_deadlines[0]);
        assert!(
            spread > interval / 2 && spread < interval,
            "phases spread over the quantum interval ({spread:?} of {interval:?})"
        );
        // Half-way through the spread, only the channels whose phase has come are due.
        let middle = first_deadlines[0] + spread / 2;
        let mut due = 0;
        while let Some(slot) = schedule.pop_due(middle) {
            assert!(schedule.slots[slot].is_some());
            due += 1;
        }
        assert!(
            due > 0 && due < channels as usize,
            "{due} of {channels} due mid-way"
        );
        // Re-rating leaves a stale entry behind; removing a channel leaves one too. Neither
        // is ever popped: each live channel comes out exactly once.
        apply(
            Command::SetRate(ChannelId(15), 20_000_000),
            &mut schedule,
            middle,
            &sender,
        );
        apply(
            Command::RemoveChannel(ChannelId(14)),
            &mut schedule,
            middle,
            &sender,
        );
        let late = start + Duration::from_secs(10);
        let mut popped = Vec::new();
        while let Some(slot) = schedule.pop_due(late) {
            popped.push(schedule.slots[slot].as_ref().unwrap().spec.id.0);
        }
        popped.sort();
        let before_dedup = popped.len();
        popped.dedup();
        assert_eq!(before_dedup, popped.len(), "no channel popped twice");
        assert!(!popped.contains(&14), "a removed channel is never due");
        assert!(
            popped.contains(&15),
            "a re-rated channel is still scheduled"
        );
        assert_eq!(schedule.len(), channels as usize - 1);
        // A freed slot is reused by the next channel.
        apply(
            Command::AddChannel(spec(99, &archive, 0)),
            &mut schedule,
            late,
            &sender,
        );
        assert_eq!(schedule.slots.len(), channels as usize);
        assert_eq!(
            schedule
                .pop_due(late)
                .map(|s| schedule.slots[s].as_ref().unwrap().spec.id.0),
            Some(99),
            "an unpaced channel is due at once"
        );
        let _ = std::fs::remove_file(&path);
    }

    /// An archive of `datagrams` datagrams, each starting with (tag, serial) as two u32s.
    fn tagged_archive(
        tag: u32,
        datagrams: u32,
        size: usize,
    ) -> (std::path::PathBuf, Arc<MappedArchive>) {
        let path =
            std::env::temp_dir().join(format!("loopcast-pool-tag{tag}-{}", std::process::id()));
        let mut bytes = vec![0u8; datagrams as usize * size];
        for (serial, datagram) in bytes.chunks_exact_mut(size).enumerate() {
            datagram[..4].copy_from_slice(&tag.to_le_bytes());
            datagram[4..8].copy_from_slice(&(serial as u32).to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let archive = map(&path);
        (path, archive)
    }

    #[test]
    fn a_playlist_channel_loops_its_pieces_in_order_across_archives() {
        let size = 1440;
        let (path_a, a) = tagged_archive(0xA, 30, size);
        let (path_b, b) = tagged_archive(0xB, 10, size);
        let receiver = loopback_receiver();
        let mut pool = loopback_pool(1, crate::send::probe_send_path().0, false);
        let piece = |archive: &Arc<MappedArchive>, first: u32, count: u32| LoopPiece {
            archive: archive.clone(),
            offset: first as usize * size,
            count,
        };
        // A 10..20, then all of B, then A 0..3: 23 datagrams a loop.
        let pieces = vec![piece(&a, 10, 10), piece(&b, 0, 10), piece(&a, 0, 3)];
        let expected: Vec<(u32, u32)> = (10..20)
            .map(|s| (0xA, s))
            .chain((0..10).map(|s| (0xB, s)))
            .chain((0..3).map(|s| (0xA, s)))
            .collect();
        pool.add_channel(ChannelSpec {
            id: ChannelId(9),
            pieces,
            datagram_size: size as u16,
            // 50 Mbit/s: transmits of 8 datagrams, so some span two pieces, and still slow
            // enough that the loopback socket drops nothing.
            rate_bits_per_s: 50_000_000,
            destinations: vec![receiver.local_addr().unwrap()],
            repair_share_percent: loopcast_proto::carousel::REPAIR_SHARE_PERCENT_DEFAULT,
            start_serial: 0,
            stats: Arc::new(ChannelStats::default()),
        })
        .unwrap();
        let mut buffer = vec![0u8; 2048];
        let mut received = Vec::new();
        while received.len() < 2 * expected.len() {
            let len = match receiver.recv(&mut buffer) {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("receive failed: {e}"),
            };
            assert_eq!(len, size);
            let tag = u32::from_le_bytes(buffer[..4].try_into().unwrap());
            let serial = u32::from_le_bytes(buffer[4..8].try_into().unwrap());
            let source = if tag == 0xA { &a } else { &b };
            assert_eq!(
                &buffer[..size],
                &source.bytes()[serial as usize * size..][..size],
                "byte-identical to its archive"
            );
            received.push((tag, serial));
        }
        let looped: Vec<(u32, u32)> = expected.iter().chain(expected.iter()).copied().collect();
        assert_eq!(received, looped, "the pieces, in order, looped twice");
        drop(pool);
        let _ = std::fs::remove_file(&path_a);
        let _ = std::fs::remove_file(&path_b);
    }

    #[test]
    fn channels_are_placed_by_load_not_by_count() {
        let (path, _) = archive_file(100, 1440);
        let archive = map(&path);
        let mut pool = loopback_pool(2, SendPath::Sendmmsg, false);
        // Destinations on the discard port of loopback: nothing listens, nothing is kept.
        pool.add_channel(*spec(1, &archive, 0)).unwrap();
        let unpaced_thread = pool.thread_of(ChannelId(1)).unwrap();
        for id in 2..5 {
            pool.add_channel(*spec(id, &archive, 1_000_000)).unwrap();
            assert_ne!(
                pool.thread_of(ChannelId(id)),
                Some(unpaced_thread),
                "slow channels go beside, not onto, the unpaced one"
            );
        }
        pool.add_channel(*spec(5, &archive, 0)).unwrap();
        assert_ne!(
            pool.thread_of(ChannelId(5)),
            Some(unpaced_thread),
            "a second unpaced channel takes the other thread"
        );
        // Re-rating moves the bookkeeping: the first unpaced channel slowed to 1 Mbit/s leaves
        // its thread the lighter one.
        pool.command(Command::SetRate(ChannelId(1), 1_000_000))
            .unwrap();
        pool.add_channel(*spec(6, &archive, 1_000_000)).unwrap();
        assert_eq!(pool.thread_of(ChannelId(6)), Some(unpaced_thread));
        drop(pool);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn queued_repairs_go_out_ahead_of_the_loop_and_are_counted() {
        let size = 1440;
        let datagrams = 1000u32;
        let (path, archive) = tagged_archive(0x7, datagrams, size);
        let bytes = archive.bytes().to_vec();
        let receiver = loopback_receiver();
        let mut pool = loopback_pool(1, crate::send::probe_send_path().0, false);
        let stats = Arc::new(ChannelStats::default());
        // 2 Mbit/s: the loop needs about 5 s to reach serial 900 by itself.
        pool.add_channel(ChannelSpec {
            id: ChannelId(7),
            pieces: vec![LoopPiece {
                archive,
                offset: 0,
                count: datagrams,
            }],
            datagram_size: size as u16,
            rate_bits_per_s: 2_000_000,
            destinations: vec![receiver.local_addr().unwrap()],
            repair_share_percent: loopcast_proto::carousel::REPAIR_SHARE_PERCENT_DEFAULT,
            start_serial: 0,
            stats: stats.clone(),
        })
        .unwrap();
        let mut buffer = vec![0u8; 2048];
        let mut next_serial = || -> u32 {
            loop {
                match receiver.recv(&mut buffer) {
                    Ok(len) => {
                        assert_eq!(len, size);
                        let serial = u32::from_le_bytes(buffer[4..8].try_into().unwrap());
                        assert_eq!(&buffer[..size], &bytes[serial as usize * size..][..size]);
                        return serial;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => panic!("receive failed: {e}"),
                }
            }
        };
        assert!(next_serial() < 100, "the loop starts at the beginning");
        pool.command(Command::QueueRepair {
            channel: ChannelId(7),
            first: 900,
            count: 10,
            to: None,
        })
        .unwrap();
        pool.command(Command::QueueRepair {
            channel: ChannelId(7),
            first: 995,
            count: 10,
            to: None,
        })
        .unwrap();
        let received: Vec<u32> = (0..40).map(|_| next_serial()).collect();
        for serial in 900..910 {
            assert!(
                received.contains(&serial),
                "repaired serial {serial} arrived ahead of the loop: {received:?}"
            );
        }
        assert_eq!(stats.repair_datagrams.load(Ordering::Relaxed), 10);
        assert_eq!(
            stats.repairs_refused.load(Ordering::Relaxed),
            1,
            "a range past the loop's end is refused and counted"
        );
        drop(pool);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn paced_channel_sends_identical_datagrams_and_holds_rate_under_re_rating() {
        let size = 1440;
        let (path, bytes) = archive_file(500, size);
        let archive = map(&path);
        let receiver = loopback_receiver();
        let mut pool = loopback_pool(2, crate::send::probe_send_path().0, true);
        let stats = Arc::new(ChannelStats::default());
        pool.add_channel(ChannelSpec {
            id: ChannelId(1),
            pieces: vec![LoopPiece {
                archive,
                offset: 0,
                count: 500,
            }],
            datagram_size: size as u16,
            rate_bits_per_s: 8_000_000,
            destinations: vec![receiver.local_addr().unwrap()],
            repair_share_percent: loopcast_proto::carousel::REPAIR_SHARE_PERCENT_DEFAULT,
            start_serial: 0,
            stats: stats.clone(),
        })
        .unwrap();
        // Every datagram that arrives is byte-identical to its slot in the file.
        let mut buffer = vec![0u8; 2048];
        let mut received = 0;
        while received < 200 {
            let len = match receiver.recv(&mut buffer) {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("receive failed: {e}"),
            };
            received += 1;
            assert_eq!(len, size);
            let slot = bytes.chunks_exact(size).position(|d| d == &buffer[..size]);
            assert!(slot.is_some(), "datagram matches a slot of the archive");
        }
        std::thread::sleep(Duration::from_millis(200));
        let first = rate_over(&stats, Duration::from_millis(1000));
        assert!(
            (first / 8e6 - 1.0).abs() < 0.25,
            "8 Mbit/s channel ran at {first}"
        );
        pool.command(Command::SetRate(ChannelId(1), 24_000_000))
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let second = rate_over(&stats, Duration::from_millis(1000));
        assert!(
            (second / 24e6 - 1.0).abs() < 0.25,
            "re-rated to 24 Mbit/s, ran at {second}"
        );
        pool.command(Command::RemoveChannel(ChannelId(1))).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let after = stats.bytes.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            stats.bytes.load(Ordering::Relaxed),
            after,
            "a removed channel sends nothing"
        );
        assert!(
            pool.thread_stats()
                .iter()
                .map(|t| t.datagrams.load(Ordering::Relaxed))
                .sum::<u64>()
                > 0
        );
        drop(pool);
        let _ = std::fs::remove_file(&path);
    }
}
