//! The ceiling: a raw `sendmmsg` + UDP GSO blaster that sends one static buffer over and over
//! (`blast`), or walks a given region such as a mapped archive (`blast_over`).
//! It does the least work a sender can do per byte on this kernel; loopcast's send figures
//! are reported as a ratio to it, measured in the same run. Deliberately independent of
//! `send::BatchSender`, so a regression there cannot hide by slowing the reference too.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::SockAddr;

#[derive(Clone, Copy, Debug)]
pub struct BlastReport {
    pub datagrams: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub syscalls: u64,
}

/// Sends `datagram_size`-byte datagrams to `destination` for `duration` (or until
/// `datagrams_max`), 64 GSO messages per syscall, all from one small cache-hot buffer.
/// Bounded in count and time.
pub fn blast(
    socket: &UdpSocket,
    destination: &SockAddr,
    datagram_size: usize,
    duration: Duration,
    datagrams_max: u64,
) -> std::io::Result<BlastReport> {
    let segments = (65_000 / datagram_size).clamp(1, 64);
    let buffer = vec![0x5au8; segments * datagram_size];
    blast_over(
        socket,
        destination,
        &buffer,
        datagram_size,
        duration,
        datagrams_max,
    )
}

/// As [`blast`], but the datagrams are the consecutive `datagram_size` slices of `region`
/// (e.g. a mapped archive), walked in order and wrapping: the same bytes, from the same memory,
/// that a real sender reads. The gap between the two ceilings is what reading the data costs.
pub fn blast_over(
    socket: &UdpSocket,
    destination: &SockAddr,
    region: &[u8],
    datagram_size: usize,
    duration: Duration,
    datagrams_max: u64,
) -> std::io::Result<BlastReport> {
    const MESSAGES: usize = 64;
    assert!(
        region.len() >= datagram_size,
        "the region holds at least one datagram"
    );
    let segments = (65_000 / datagram_size)
        .clamp(1, 64)
        .min(region.len() / datagram_size);
    let chunk = segments * datagram_size;
    let chunks = region.len() / chunk;
    #[repr(C, align(8))]
    struct Control([u8; 32]);
    let mut control = Control([0; 32]);
    let mut iovecs = vec![
        libc::iovec {
            iov_base: region.as_ptr() as *mut libc::c_void,
            iov_len: chunk,
        };
        MESSAGES
    ];
    // SAFETY: plain C struct, zero is valid.
    let mut messages: Vec<libc::mmsghdr> = vec![unsafe { core::mem::zeroed() }; MESSAGES];
    for (message, iovec) in messages.iter_mut().zip(iovecs.iter_mut()) {
        let header = &mut message.msg_hdr;
        header.msg_name = destination.as_ptr() as *mut libc::c_void;
        header.msg_namelen = destination.len();
        header.msg_iov = iovec;
        header.msg_iovlen = 1;
        if segments > 1 {
            header.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: pure size computation.
            header.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
        }
    }
    if segments > 1 {
        // SAFETY: msg_control of message 0 points at `control` (32 bytes >= CMSG_SPACE(2));
        // all messages share that one control buffer, which we fill once here.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&messages[0].msg_hdr);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
            core::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, datagram_size as u16);
        }
    }
    let started = Instant::now();
    let mut report = BlastReport {
        datagrams: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        syscalls: 0,
    };
    let mut next_chunk = 0usize;
    while started.elapsed() < duration && report.datagrams < datagrams_max {
        for (index, iovec) in iovecs.iter_mut().enumerate() {
            let at = ((next_chunk + index) % chunks) * chunk;
            iovec.iov_base = region[at..].as_ptr() as *mut libc::c_void;
        }
        // SAFETY: all messages point at `iovecs` (into `region`), `control` and `destination`,
        // alive here; the kernel only reads them.
        let result = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                MESSAGES as libc::c_uint,
                0,
            )
        };
        report.syscalls += 1;
        if result < 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(error);
        }
        next_chunk = (next_chunk + result as usize) % chunks;
        let sent = result as u64 * segments as u64;
        report.datagrams += sent;
        report.bytes += sent * datagram_size as u64;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
