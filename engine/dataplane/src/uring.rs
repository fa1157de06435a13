//! io_uring sends: IORING_OP_SENDMSG_ZC (zero-copy) or IORING_OP_SENDMSG, each message a UDP
//! GSO super-datagram pointing straight into the caller's region (the mmap'd archive).
//!
//! Zero-copy rules kept here:
//! - every SENDMSG_ZC posts a completion and, later, a notification (`IORING_CQE_F_NOTIF`);
//!   only after the notification may the bytes change or go away. `send` returns only when
//!   every completion *and* notification of its messages has arrived, so the borrow of the
//!   region outlives the kernel's use of it: a notification-pending range is never overwritten
//!   or unmapped (tested below);
//! - with `IORING_SEND_ZC_REPORT_USAGE`, a notification whose result has
//!   `IORING_NOTIF_USAGE_ZC_COPIED` says the kernel copied after all (loopback and veth always
//!   do). When nearly all come back copied, zero-copy only costs (notifications, page pinning),
//!   so the sender switches itself to plain IORING_OP_SENDMSG (still GSO) and says so.
//!
//! Message slots (msghdr, iovec, control buffer) live in one boxed slice allocated at start-up;
//! `user_data` is the slot index. Nothing is allocated per send.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, types, IoUring};
use socket2::SockAddr;

use crate::send::{GSO_BYTES_MAX, GSO_SEGMENTS_MAX};

/// Kernel ABI (include/uapi/linux/io_uring.h): ask notifications to report copying.
const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// Kernel ABI: set in a notification's result when the kernel copied the data.
const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;
/// Messages in flight at most (and ring depth / 2: each may post two CQEs).
pub const URING_SLOTS: usize = 64;
/// Notifications looked at per verdict on whether zero-copy pays on this path (judged again
/// for every this many while it is on). Few: each `send` waits for its notifications, and
/// where our pages sit in a slow queue on this host (a shaper on the egress, a shaped port
/// of a software bridge) each wait is that queue's delay, so every channel of the thread
/// crawls until the verdict: 64 took ~1 s.
const ZC_VERDICT_AFTER: u64 = 16;
/// Late notifications (within one verdict's count) that end zero-copy at once.
const ZC_LATE_VERDICT: u64 = 2;
/// A notification later than this after its completion is slow. On a NIC that really sends
/// from our pages it comes when the NIC is done (tens of microseconds). Measured on a
/// multicast group with one member behind a 5 Mbit/s tbf port (50 ms queue) of a bridge: every
/// send waited for that queue, and the thread, all its channels with it, sent at 5 Mbit/s
/// whatever their rates, so the rate control saw no loss to act on.
const ZC_NOTIFICATION_SLOW: std::time::Duration = std::time::Duration::from_millis(2);

/// One region of back-to-back datagrams for one destination.
#[derive(Clone, Copy)]
pub struct SendItem<'a> {
    pub destination: &'a SockAddr,
    pub region: &'a [u8],
    pub datagram_size: usize,
}

impl SendItem<'_> {
    pub(crate) fn check(&self) {
        assert!(self.datagram_size > 0, "datagram size must be positive");
        assert_eq!(
            self.region.len() % self.datagram_size,
            0,
            "region holds whole datagrams"
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UringMode {
    /// IORING_OP_SENDMSG_ZC + GSO.
    SendMsgZc,
    /// IORING_OP_SENDMSG + GSO (no zero-copy).
    SendMsg,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringCounters {
    pub datagrams: u64,
    pub bytes: u64,
    pub submits: u64,
    pub zc_notifications: u64,
    /// Notifications that said the kernel copied anyway.
    pub zc_copied: u64,
    /// Notifications that came more than `ZC_NOTIFICATION_SLOW` after their completion.
    pub zc_slow: u64,
    /// Times the sender gave up zero-copy because sends kept coming back copied, or their
    /// notifications late.
    pub zc_fallbacks: u64,
    pub datagrams_failed: u64,
}

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct ControlBuffer([u8; 32]);

struct Slot {
    header: libc::msghdr,
    iovec: libc::iovec,
    control: ControlBuffer,
    datagrams: usize,
    /// A completion is still due for this slot.
    awaiting_completion: bool,
    /// A zero-copy notification is still due for this slot.
    awaiting_notification: bool,
    /// When its completion came (a notification's delay is measured from it).
    completed_at: Option<std::time::Instant>,
}

pub struct UringSender {
    ring: IoUring,
    mode: UringMode,
    slots: Box<[Slot]>,
    free: Vec<usize>,
    counters: UringCounters,
    /// Set when the kernel refused GSO or the opcode: the caller should step down.
    fatal: Option<std::io::Error>,
    /// (copied, slow) notifications counted before the current verdict window.
    verdict_base: (u64, u64),
}

// SAFETY: the raw pointers in `slots` point at the slots themselves or at a region borrowed
// only for the duration of `send`, which drains every completion before returning.
unsafe impl Send for UringSender {}

impl UringSender {
    pub fn new(mode: UringMode) -> std::io::Result<UringSender> {
        let ring = IoUring::new((URING_SLOTS * 2) as u32)?;
        let slots = (0..URING_SLOTS)
            .map(|_| Slot {
                // SAFETY: msghdr is a plain C struct; all-zero is valid.
                header: unsafe { core::mem::zeroed() },
                iovec: libc::iovec {
                    iov_base: core::ptr::null_mut(),
                    iov_len: 0,
                },
                control: ControlBuffer([0; 32]),
                datagrams: 0,
                awaiting_completion: false,
                awaiting_notification: false,
                completed_at: None,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(UringSender {
            ring,
            mode,
            slots,
            free: (0..URING_SLOTS).rev().collect(),
            counters: UringCounters::default(),
            fatal: None,
            verdict_base: (0, 0),
        })
    }

    pub fn mode(&self) -> UringMode {
        self.mode
    }

    pub fn counters(&self) -> UringCounters {
        self.counters
    }

    pub fn segments_per_message(datagram_size: usize) -> usize {
        (GSO_BYTES_MAX / datagram_size).clamp(1, GSO_SEGMENTS_MAX)
    }

    /// Sends several regions (e.g. the due transmits of many channels) in as few submissions
    /// as the slots allow; returns when the kernel is done with all of them.
    pub fn send_batch(
        &mut self,
        socket: &UdpSocket,
        items: &[SendItem<'_>],
    ) -> std::io::Result<usize> {
        let sent_before = self.counters.datagrams;
        let mut item_index = 0usize;
        let mut cursor = 0usize;
        loop {
            while item_index < items.len() && !self.free.is_empty() && self.fatal.is_none() {
                let item = &items[item_index];
                item.check();
                let total = item.region.len() / item.datagram_size;
                if cursor >= total {
                    item_index += 1;
                    cursor = 0;
                    continue;
                }
                let count = Self::segments_per_message(item.datagram_size).min(total - cursor);
                let chunk = &item.region
                    [cursor * item.datagram_size..(cursor + count) * item.datagram_size];
                let slot = self.free.pop().expect("checked non-empty");
                self.prepare(
                    slot,
                    socket,
                    item.destination,
                    chunk,
                    item.datagram_size,
                    count,
                );
                cursor += count;
            }
            if self.fatal.is_some() || (item_index >= items.len() && self.in_flight() == 0) {
                break;
            }
            // Submit what is queued and reap; once every item is queued, this drains: the
            // regions must not be released while the kernel may still read them.
            self.submit_and_reap(1)?;
        }
        while self.in_flight() > 0 {
            self.submit_and_reap(1)?;
        }
        if let Some(error) = self.fatal.take() {
            return Err(error);
        }
        Ok((self.counters.datagrams - sent_before) as usize)
    }

    /// Messages whose completion or zero-copy notification is still due.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.awaiting_completion || s.awaiting_notification)
            .count()
    }

    fn prepare(
        &mut self,
        index: usize,
        socket: &UdpSocket,
        destination: &SockAddr,
        chunk: &[u8],
        datagram_size: usize,
        count: usize,
    ) {
        let slot = &mut self.slots[index];
        slot.iovec = libc::iovec {
            iov_base: chunk.as_ptr() as *mut libc::c_void,
            iov_len: chunk.len(),
        };
        slot.header.msg_name = destination.as_ptr() as *mut libc::c_void;
        slot.header.msg_namelen = destination.len();
        slot.header.msg_iov = &mut slot.iovec;
        slot.header.msg_iovlen = 1;
        slot.header.msg_flags = 0;
        if count > 1 {
            slot.header.msg_control = slot.control.0.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: pure size computation.
            slot.header.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
            // SAFETY: msg_control points at this slot's 32-byte, 8-aligned buffer, which holds
            // CMSG_SPACE(2) = 24 bytes; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&slot.header);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
                core::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, datagram_size as u16);
            }
        } else {
            slot.header.msg_control = core::ptr::null_mut();
            slot.header.msg_controllen = 0;
        }
        slot.datagrams = count;
        slot.awaiting_completion = true;
        slot.awaiting_notification = false;
        let fd = types::Fd(socket.as_raw_fd());
        let entry = match self.mode {
            UringMode::SendMsgZc => opcode::SendMsgZc::new(fd, &slot.header)
                .ioprio(IORING_SEND_ZC_REPORT_USAGE)
                .build(),
            UringMode::SendMsg => opcode::SendMsg::new(fd, &slot.header).build(),
        }
        .user_data(index as u64);
        // SAFETY: the entry points at this slot's msghdr (stable: boxed slice) and at `chunk`,
        // which stays borrowed until `send` has drained every completion and notification.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // The ring holds 2 x URING_SLOTS entries and at most URING_SLOTS are queued.
            unreachable!("submission queue cannot be full with a free slot");
        }
    }

    fn submit_and_reap(&mut self, want: usize) -> std::io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break, // CQ full: reap first
                Err(e) => return Err(e),
            }
        }
        self.counters.submits += 1;
        let mut reaped = [(0u64, 0i32, 0u32); URING_SLOTS * 2];
        let mut count = 0;
        for cqe in self.ring.completion() {
            reaped[count] = (cqe.user_data(), cqe.result(), cqe.flags());
            count += 1;
            if count == reaped.len() {
                break;
            }
        }
        for &(user_data, result, flags) in &reaped[..count] {
            self.complete(user_data as usize, result, flags);
        }
        Ok(())
    }

    fn complete(&mut self, index: usize, result: i32, flags: u32) {
        assert!(index < URING_SLOTS, "completion for unknown slot {index}");
        if cqueue::notif(flags) {
            self.counters.zc_notifications += 1;
            if result as u32 & IORING_NOTIF_USAGE_ZC_COPIED != 0 {
                self.counters.zc_copied += 1;
            }
            if self.slots[index]
                .completed_at
                .take()
                .is_some_and(|at| at.elapsed() > ZC_NOTIFICATION_SLOW)
            {
                self.counters.zc_slow += 1;
            }
            let slot = &mut self.slots[index];
            debug_assert!(slot.awaiting_notification, "unexpected notification");
            slot.awaiting_notification = false;
            self.release_if_done(index);
            self.judge_zero_copy();
            return;
        }
        let slot = &mut self.slots[index];
        slot.awaiting_completion = false;
        slot.awaiting_notification = cqueue::more(flags);
        // One clock read per message (not per datagram), and only in zero-copy mode.
        slot.completed_at = slot.awaiting_notification.then(std::time::Instant::now);
        let datagrams = slot.datagrams;
        if result >= 0 {
            self.counters.datagrams += datagrams as u64;
            self.counters.bytes += result as u64;
        } else {
            match -result {
                libc::EIO | libc::EINVAL | libc::EOPNOTSUPP => {
                    if self.fatal.is_none() {
                        self.fatal = Some(std::io::Error::from_raw_os_error(-result));
                    }
                    self.counters.datagrams_failed += datagrams as u64;
                }
                _ => self.counters.datagrams_failed += datagrams as u64,
            }
        }
        self.release_if_done(index);
    }

    fn release_if_done(&mut self, index: usize) {
        let slot = &self.slots[index];
        if !slot.awaiting_completion && !slot.awaiting_notification {
            self.free.push(index);
        }
    }

    fn judge_zero_copy(&mut self) {
        let seen = self.counters.zc_notifications;
        if self.mode != UringMode::SendMsgZc || seen == 0 {
            return;
        }
        let (copied, slow) = (
            self.counters.zc_copied - self.verdict_base.0,
            self.counters.zc_slow - self.verdict_base.1,
        );
        // Late notifications are judged at once: each one held the whole thread for a queue's
        // delay (half of 16 took the first 0.2 s of a tier whose slow members sat behind
        // 5 and 50 Mbit/s shapers, at 50 Mbit/s instead of 1 Gbit/s).
        let late = slow >= ZC_LATE_VERDICT;
        if !late && !seen.is_multiple_of(ZC_VERDICT_AFTER) {
            return;
        }
        self.verdict_base = (self.counters.zc_copied, self.counters.zc_slow);
        if late {
            tracing::info!(
                slow,
                after_ms = ZC_NOTIFICATION_SLOW.as_millis() as u64,
                "zero-copy notifications come late (a queue on this host holds the pages, e.g. a shaper), which would pace every channel of this thread to that queue; switching to io_uring sendmsg (GSO, no zero-copy)"
            );
        } else if copied * 10 >= ZC_VERDICT_AFTER * 9 {
            // Expected on loopback and veth: information for the operator, not a fault.
            tracing::info!(
                copied,
                of = ZC_VERDICT_AFTER,
                "zero-copy sends come back copied on this path; switching to io_uring sendmsg (GSO, no zero-copy)"
            );
        } else {
            return;
        }
        self.mode = UringMode::SendMsg;
        self.counters.zc_fallbacks += 1;
    }
}

/// Which io_uring send opcodes this kernel offers (None if io_uring itself is unavailable).
pub fn probe_uring() -> Result<(bool, bool), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring unavailable ({e})"))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe failed ({e})"))?;
    Ok((
        probe.is_supported(opcode::SendMsgZc::CODE),
        probe.is_supported(opcode::SendMsg::CODE),
    ))
}
