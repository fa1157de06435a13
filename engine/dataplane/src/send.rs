//! Batched UDP sends from a byte region holding back-to-back datagrams of one size.
//!
//! Best path first: `sendmmsg` where each message is one GSO super-datagram (`UDP_SEGMENT`
//! control message, up to `GSO_SEGMENTS_MAX` segments and 64 KiB), so one syscall moves up
//! to `MESSAGES_MAX` × 64 KiB. If the kernel answers EIO/EINVAL to GSO (no support, or a
//! device that cannot segment), the sender steps down to plain `sendmmsg`, once, and says so.
//!
//! Hand-written over libc rather than a crate: this is the hot path, and it must build its
//! message array in place over caller memory (the mmap'd archive) without allocating.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use socket2::SockAddr;

pub use crate::uring::SendItem;

/// Messages per `sendmmsg` call.
pub const MESSAGES_MAX: usize = 64;
/// Linux accepts at most 64 segments per GSO send (UDP_MAX_SEGMENTS on older kernels).
pub const GSO_SEGMENTS_MAX: usize = 64;
/// A GSO super-datagram must fit one IP packet's length field.
pub const GSO_BYTES_MAX: usize = 65_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendPath {
    /// io_uring IORING_OP_SENDMSG_ZC with UDP_SEGMENT (zero-copy GSO).
    UringSendmsgZcGso,
    /// io_uring IORING_OP_SENDMSG with UDP_SEGMENT.
    UringSendmsgGso,
    /// sendmmsg with UDP_SEGMENT (GSO).
    SendmmsgGso,
    /// sendmmsg, one datagram per message.
    Sendmmsg,
}

impl SendPath {
    pub const ALL: [SendPath; 4] = [
        SendPath::UringSendmsgZcGso,
        SendPath::UringSendmsgGso,
        SendPath::SendmmsgGso,
        SendPath::Sendmmsg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SendPath::UringSendmsgZcGso => "io_uring-sendmsg-zc+gso",
            SendPath::UringSendmsgGso => "io_uring-sendmsg+gso",
            SendPath::SendmmsgGso => "sendmmsg+gso",
            SendPath::Sendmmsg => "sendmmsg",
        }
    }

    pub fn from_name(name: &str) -> Option<SendPath> {
        SendPath::ALL.into_iter().find(|p| p.name() == name)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendCounters {
    pub datagrams: u64,
    pub bytes: u64,
    pub syscalls: u64,
    /// Times GSO was refused and the sender stepped down.
    pub gso_fallbacks: u64,
    /// Datagrams given up on because of a send error (counted, not retried).
    pub datagrams_failed: u64,
    /// io_uring zero-copy notifications received, and how many said "copied".
    pub zc_notifications: u64,
    pub zc_copied: u64,
    /// Times zero-copy was dropped because sends kept coming back copied.
    pub zc_fallbacks: u64,
}

/// Space for one `cmsghdr` + u16 payload, 8-byte aligned as the kernel expects.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct ControlBuffer([u8; 32]);

pub struct BatchSender {
    path: SendPath,
    messages: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    controls: Vec<ControlBuffer>,
    counters: SendCounters,
}

// SAFETY: the raw pointers inside `messages`/`iovecs` are only filled and used within one
// `send` call, which borrows everything they point to; between calls they dangle unused.
unsafe impl Send for BatchSender {}

impl BatchSender {
    pub fn new(path: SendPath) -> BatchSender {
        assert!(
            matches!(path, SendPath::SendmmsgGso | SendPath::Sendmmsg),
            "BatchSender runs the sendmmsg paths only"
        );
        // SAFETY: mmsghdr and iovec are plain C structs for which all-zero is a valid value.
        let empty_message: libc::mmsghdr = unsafe { core::mem::zeroed() };
        let empty_iovec = libc::iovec {
            iov_base: core::ptr::null_mut(),
            iov_len: 0,
        };
        BatchSender {
            path,
            messages: vec![empty_message; MESSAGES_MAX],
            iovecs: vec![empty_iovec; MESSAGES_MAX],
            controls: vec![ControlBuffer([0; 32]); MESSAGES_MAX],
            counters: SendCounters::default(),
        }
    }

    pub fn path(&self) -> SendPath {
        self.path
    }

    pub fn counters(&self) -> SendCounters {
        self.counters
    }

    /// Segments per GSO message for this datagram size.
    pub fn segments_per_message(&self, datagram_size: usize) -> usize {
        match self.path {
            SendPath::Sendmmsg => 1,
            _ => (GSO_BYTES_MAX / datagram_size).clamp(1, GSO_SEGMENTS_MAX),
        }
    }

    /// Sends several regions, each to its destination, packing messages of different items
    /// into the same `sendmmsg` calls. Blocks while the socket buffer is full. Returns
    /// datagrams sent.
    pub fn send_batch(
        &mut self,
        socket: &UdpSocket,
        items: &[SendItem<'_>],
    ) -> std::io::Result<usize> {
        // Committed position: everything before (item, datagram cursor) has been handed over.
        let (mut item_index, mut cursor) = (0usize, 0usize);
        // Per filled message: the position just after it.
        let mut after = [(0usize, 0usize); MESSAGES_MAX];
        let mut sent = 0usize;
        while item_index < items.len() {
            let (mut fill_item, mut fill_cursor) = (item_index, cursor);
            let mut message_count = 0usize;
            while message_count < MESSAGES_MAX && fill_item < items.len() {
                let item = &items[fill_item];
                item.check();
                let total = item.region.len() / item.datagram_size;
                if fill_cursor >= total {
                    fill_item += 1;
                    fill_cursor = 0;
                    continue;
                }
                let count = self
                    .segments_per_message(item.datagram_size)
                    .min(total - fill_cursor);
                let size = item.datagram_size;
                let chunk = &item.region[fill_cursor * size..(fill_cursor + count) * size];
                self.fill_message(message_count, item.destination, chunk, size, count > 1);
                fill_cursor += count;
                after[message_count] = (fill_item, fill_cursor);
                message_count += 1;
            }
            if message_count == 0 {
                break;
            }
            // SAFETY: `messages[..message_count]` were filled above with pointers to the items'
            // regions and destinations and to our own iovec/control buffers, alive for this call.
            let result = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.messages.as_mut_ptr(),
                    message_count as libc::c_uint,
                    0,
                )
            };
            self.counters.syscalls += 1;
            if result < 0 {
                let error = std::io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EIO | libc::EINVAL) if self.path == SendPath::SendmmsgGso => {
                        tracing::warn!(%error, "kernel refused UDP GSO; stepping down to plain sendmmsg");
                        self.path = SendPath::Sendmmsg;
                        self.counters.gso_fallbacks += 1;
                        continue;
                    }
                    Some(
                        libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EPERM,
                    ) => {
                        // A receiver went away or a firewall said no: the first message is lost; go on.
                        let lost = self.iovecs[0].iov_len / items[after[0].0].datagram_size;
                        self.counters.datagrams_failed += lost as u64;
                        (item_index, cursor) = after[0];
                        continue;
                    }
                    _ => return Err(error),
                }
            }
            let messages_sent = result as usize;
            if messages_sent == 0 {
                continue;
            }
            for (&(owner, _), iovec) in after.iter().zip(&self.iovecs).take(messages_sent) {
                let count = iovec.iov_len / items[owner].datagram_size;
                sent += count;
                self.counters.datagrams += count as u64;
                self.counters.bytes += iovec.iov_len as u64;
            }
            (item_index, cursor) = after[messages_sent - 1];
        }
        Ok(sent)
    }

    fn fill_message(
        &mut self,
        index: usize,
        destination: &SockAddr,
        chunk: &[u8],
        datagram_size: usize,
        use_gso: bool,
    ) {
        self.iovecs[index] = libc::iovec {
            iov_base: chunk.as_ptr() as *mut libc::c_void,
            iov_len: chunk.len(),
        };
        let header = &mut self.messages[index].msg_hdr;
        header.msg_name = destination.as_ptr() as *mut libc::c_void;
        header.msg_namelen = destination.len();
        header.msg_iov = &mut self.iovecs[index];
        header.msg_iovlen = 1;
        header.msg_flags = 0;
        if use_gso {
            let control = &mut self.controls[index];
            let segment_size = u16::try_from(datagram_size).expect("datagrams fit u16");
            header.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: CMSG_SPACE is a pure size computation.
            header.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
            // SAFETY: msg_control points at our 32-byte, 8-aligned buffer, which holds
            // CMSG_SPACE(2) = 24 bytes; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(header);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
                core::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment_size);
            }
        } else {
            header.msg_control = core::ptr::null_mut();
            header.msg_controllen = 0;
        }
    }
}

/// The data plane's sender: the best path the kernel offers, stepping down by itself
/// (zero-copy that keeps being copied → io_uring sendmsg; io_uring refusing GSO → sendmmsg+GSO;
/// GSO refused → sendmmsg), saying so once each time.
pub enum DataSender {
    Uring(Box<crate::uring::UringSender>),
    Batch(BatchSender),
}

impl DataSender {
    pub fn new(path: SendPath) -> std::io::Result<DataSender> {
        use crate::uring::{UringMode, UringSender};
        Ok(match path {
            SendPath::UringSendmsgZcGso => {
                DataSender::Uring(Box::new(UringSender::new(UringMode::SendMsgZc)?))
            }
            SendPath::UringSendmsgGso => {
                DataSender::Uring(Box::new(UringSender::new(UringMode::SendMsg)?))
            }
            SendPath::SendmmsgGso | SendPath::Sendmmsg => DataSender::Batch(BatchSender::new(path)),
        })
    }

    /// The path in use now (it may have stepped down since start-up).
    pub fn path(&self) -> SendPath {
        match self {
            DataSender::Uring(uring) => match uring.mode() {
                crate::uring::UringMode::SendMsgZc => SendPath::UringSendmsgZcGso,
                crate::uring::UringMode::SendMsg => SendPath::UringSendmsgGso,
            },
            DataSender::Batch(batch) => batch.path(),
        }
    }

    pub fn segments_per_message(&self, datagram_size: usize) -> usize {
        match self {
            DataSender::Uring(_) => crate::uring::UringSender::segments_per_message(datagram_size),
            DataSender::Batch(batch) => batch.segments_per_message(datagram_size),
        }
    }

    /// Counters over the life of this sender, across step-downs.
    pub fn counters(&self) -> SendCounters {
        match self {
            DataSender::Uring(uring) => {
                let c = uring.counters();
                SendCounters {
                    datagrams: c.datagrams,
                    bytes: c.bytes,
                    syscalls: c.submits,
                    gso_fallbacks: 0,
                    datagrams_failed: c.datagrams_failed,
                    zc_notifications: c.zc_notifications,
                    zc_copied: c.zc_copied,
                    zc_fallbacks: c.zc_fallbacks,
                }
            }
            DataSender::Batch(batch) => batch.counters(),
        }
    }

    /// Sends every datagram in `region` (a whole number of `datagram_size` datagrams) to
    /// `destination`. Returns datagrams sent.
    pub fn send(
        &mut self,
        socket: &UdpSocket,
        destination: &SockAddr,
        region: &[u8],
        datagram_size: usize,
    ) -> std::io::Result<usize> {
        self.send_batch(
            socket,
            &[SendItem {
                destination,
                region,
                datagram_size,
            }],
        )
    }
}

impl DataSender {
    /// Sends several regions (e.g. many channels' due transmits) with as few syscalls as the
    /// path allows. Returns datagrams sent.
    pub fn send_batch(
        &mut self,
        socket: &UdpSocket,
        items: &[SendItem<'_>],
    ) -> std::io::Result<usize> {
        match self {
            DataSender::Batch(batch) => batch.send_batch(socket, items),
            DataSender::Uring(uring) => match uring.send_batch(socket, items) {
                Ok(sent) => Ok(sent),
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
                    ) =>
                {
                    tracing::warn!(%error, "io_uring send refused; stepping down to sendmmsg+gso");
                    let carried = self.counters();
                    let mut batch = BatchSender::new(SendPath::SendmmsgGso);
                    batch.counters = carried;
                    batch.counters.gso_fallbacks += 1;
                    *self = DataSender::Batch(batch);
                    self.send_batch(socket, items)
                }
                Err(error) => Err(error),
            },
        }
    }
}

/// Finds the best send path this kernel offers by really sending two tiny GSO segments from one
/// loopback socket to another on each candidate, best first. Returns the path and why.
pub fn probe_send_path() -> (SendPath, String) {
    let mut reasons = Vec::new();
    if let Err(why) = crate::uring::probe_uring() {
        reasons.push(why);
    }
    for path in SendPath::ALL {
        match try_path(path) {
            Ok(()) => {
                let mut reason = format!("{} works on this kernel", path.name());
                if !reasons.is_empty() {
                    reason = format!("{reason}; better paths unavailable: {}", reasons.join("; "));
                }
                return (path, reason);
            }
            Err(error) => reasons.push(format!("{}: {error}", path.name())),
        }
    }
    (
        SendPath::Sendmmsg,
        format!("every probe failed ({})", reasons.join("; ")),
    )
}

fn try_path(path: SendPath) -> std::io::Result<()> {
    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    receiver.set_read_timeout(Some(std::time::Duration::from_millis(200)))?;
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let destination = SockAddr::from(receiver.local_addr()?);
    let mut data_sender = DataSender::new(path)?;
    let payload = [0x42u8; 128];
    data_sender.send(&sender, &destination, &payload, 64)?;
    if data_sender.path() != path {
        return Err(std::io::Error::other("stepped down during the probe"));
    }
    let mut buffer = [0u8; 256];
    for _ in 0..2 {
        let len = receiver.recv(&mut buffer)?;
        if len != 64 || buffer[..64] != payload[..64] {
            return Err(std::io::Error::other("probe datagram arrived wrong"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recv::BatchReceiver;
    use std::time::Duration;

    /// Sends `count` distinct datagrams on `path`, then overwrites the region (as a reused
    /// buffer would be) and checks the receiver got the original bytes, in order.
    fn exchange(path: SendPath, datagram_size: usize, count: usize) -> DataSender {
        let receiver = crate::socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut region: Vec<u8> = (0..datagram_size * count)
            .map(|i| (i / datagram_size) as u8 ^ i as u8)
            .collect();
        let original = region.clone();
        let mut data_sender = DataSender::new(path).unwrap();
        let sent = data_sender
            .send(
                &sender,
                &SockAddr::from(receiver.local_addr().unwrap()),
                &region,
                datagram_size,
            )
            .unwrap();
        assert_eq!(sent, count, "{}", path.name());
        // `send` has returned: the kernel must be done with the bytes.
        region.fill(0xEE);
        let mut inbox = BatchReceiver::new(64, 9216);
        let mut received = Vec::new();
        while received.len() < count {
            let n = inbox.receive(&receiver).unwrap();
            assert!(
                n > 0,
                "{}: timed out after {} of {count}",
                path.name(),
                received.len()
            );
            for i in 0..n {
                received.push(inbox.datagram(i).bytes.to_vec());
            }
        }
        for (i, datagram) in received.iter().enumerate() {
            assert_eq!(
                &datagram[..],
                &original[i * datagram_size..(i + 1) * datagram_size],
                "{}: datagram {i}",
                path.name()
            );
        }
        data_sender
    }

    fn available(path: SendPath) -> bool {
        match try_path(path) {
            Ok(()) => true,
            Err(error) => {
                eprintln!("SKIPPED {}: {error}", path.name());
                false
            }
        }
    }

    #[test]
    fn every_available_path_delivers_identical_datagrams_in_order() {
        let (best, reason) = probe_send_path();
        eprintln!("probe: {} ({reason})", best.name());
        for path in SendPath::ALL {
            if available(path) {
                exchange(path, 1440, 300);
                exchange(path, 8944, 20);
                exchange(path, 1440, 1);
            }
        }
    }

    fn receive_all(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut inbox = BatchReceiver::new(64, 9216);
        let mut received = Vec::new();
        while received.len() < count {
            let n = inbox.receive(socket).unwrap();
            assert!(n > 0, "timed out after {} of {count}", received.len());
            for i in 0..n {
                received.push(inbox.datagram(i).bytes.to_vec());
            }
        }
        received
    }

    #[test]
    fn batches_of_many_regions_reach_each_destination_intact_on_every_path() {
        for path in SendPath::ALL {
            if !available(path) {
                continue;
            }
            let receivers: Vec<UdpSocket> = (0..2)
                .map(|_| {
                    let socket = crate::socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    socket
                })
                .collect();
            let addresses: Vec<SockAddr> = receivers
                .iter()
                .map(|r| SockAddr::from(r.local_addr().unwrap()))
                .collect();
            let size = 1440;
            let region = |seed: u8, count: usize| -> Vec<u8> {
                (0..size * count)
                    .map(|i| seed ^ (i / size) as u8 ^ i as u8)
                    .collect()
            };
            let (a, b, c) = (region(1, 100), region(2, 3), region(3, 50));
            let items = [
                SendItem {
                    destination: &addresses[0],
                    region: &a,
                    datagram_size: size,
                },
                SendItem {
                    destination: &addresses[1],
                    region: &b,
                    datagram_size: size,
                },
                SendItem {
                    destination: &addresses[0],
                    region: &c,
                    datagram_size: size,
                },
            ];
            let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut data_sender = DataSender::new(path).unwrap();
            assert_eq!(
                data_sender.send_batch(&sender, &items).unwrap(),
                153,
                "{}",
                path.name()
            );
            let first: Vec<u8> = receive_all(&receivers[0], 150).concat();
            assert!(
                first == [a.clone(), c.clone()].concat(),
                "{}: destination 0 got A then C",
                path.name()
            );
            assert!(
                receive_all(&receivers[1], 3).concat() == b,
                "{}: destination 1 got B",
                path.name()
            );
        }
    }

    #[test]
    fn zero_copy_notifications_all_arrive_before_send_returns() {
        if !available(SendPath::UringSendmsgZcGso) {
            return;
        }
        let sender = exchange(SendPath::UringSendmsgZcGso, 1440, 440);
        let counters = sender.counters();
        // 440 datagrams = 10 GSO messages of 44: one notification each, all received.
        assert_eq!(counters.zc_notifications, 10, "{counters:?}");
        match &sender {
            DataSender::Uring(uring) => assert_eq!(uring.in_flight(), 0),
            DataSender::Batch(_) => panic!("a zero-copy sender stepped down on a healthy kernel"),
        }
    }

    #[test]
    fn copied_zero_copy_steps_down_to_plain_io_uring_sendmsg() {
        if !available(SendPath::UringSendmsgZcGso) {
            return;
        }
        // Loopback always copies: after enough notifications the sender stops asking for ZC.
        let sender = exchange(SendPath::UringSendmsgZcGso, 1440, 44 * 80);
        let counters = sender.counters();
        assert!(
            counters.zc_copied >= 58,
            "loopback notifications report copying: {counters:?}"
        );
        assert_eq!(sender.path(), SendPath::UringSendmsgGso, "{counters:?}");
        assert_eq!(counters.zc_fallbacks, 1);
    }
}
