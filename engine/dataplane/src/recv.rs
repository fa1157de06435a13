//! Batched receives: one `recvmmsg` fills up to `slots` buffers sized at start.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Kernel ABI (include/uapi/linux/udp.h): the UDP_GRO socket option and control message.
const UDP_GRO: libc::c_int = 104;

/// Room for one control message carrying an int, 8-byte aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct ControlBuffer([u8; 64]);

pub struct BatchReceiver {
    slot_size: usize,
    buffers: Vec<u8>,
    controls: Vec<ControlBuffer>,
    messages: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    addresses: Vec<libc::sockaddr_storage>,
    filled: usize,
}

// SAFETY: the raw pointers in `messages`/`iovecs` point into our own heap buffers, which
// move with the struct (heap allocations do not move); they are rebuilt on every receive.
unsafe impl Send for BatchReceiver {}

pub struct Received<'a> {
    pub bytes: &'a [u8],
    pub source: Option<SocketAddr>,
    /// The datagram was larger than the slot and was cut: drop it.
    pub truncated: bool,
    /// With UDP GRO: the size of each coalesced datagram in `bytes` (the last may be shorter).
    pub segment_size: Option<usize>,
}

impl Received<'_> {
    /// The datagrams in this buffer: one, or several coalesced by GRO.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        let size = self.segment_size.unwrap_or(self.bytes.len()).max(1);
        self.bytes.chunks(size)
    }
}

/// Asks the kernel to coalesce consecutive datagrams of a flow into one receive (UDP GRO).
/// Returns false where the kernel does not offer it.
pub fn enable_gro(socket: &UdpSocket) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: we pass a pointer to a live c_int and its exact size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            &on as *const libc::c_int as *const libc::c_void,
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    result == 0
}

impl BatchReceiver {
    pub fn new(slots: usize, slot_size: usize) -> BatchReceiver {
        assert!(slots > 0 && slot_size > 0, "receiver needs room");
        // SAFETY: mmsghdr and sockaddr_storage are plain C structs; all-zero is valid.
        let (message, address) = unsafe { (core::mem::zeroed(), core::mem::zeroed()) };
        BatchReceiver {
            slot_size,
            buffers: vec![0u8; slots * slot_size],
            controls: vec![ControlBuffer([0; 64]); slots],
            messages: vec![message; slots],
            iovecs: vec![
                libc::iovec {
                    iov_base: core::ptr::null_mut(),
                    iov_len: 0
                };
                slots
            ],
            addresses: vec![address; slots],
            filled: 0,
        }
    }

    /// Waits (up to the socket's read timeout) for at least one datagram, then takes all that
    /// are queued, up to the slot count. Returns how many; 0 on timeout.
    pub fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        let slots = self.messages.len();
        for index in 0..slots {
            self.iovecs[index] = libc::iovec {
                // SAFETY: index * slot_size is within `buffers` (slots * slot_size long).
                iov_base: unsafe { self.buffers.as_mut_ptr().add(index * self.slot_size) }
                    as *mut libc::c_void,
                iov_len: self.slot_size,
            };
            let header = &mut self.messages[index].msg_hdr;
            header.msg_name = &mut self.addresses[index] as *mut _ as *mut libc::c_void;
            header.msg_namelen = core::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[index];
            header.msg_iovlen = 1;
            header.msg_control = self.controls[index].0.as_mut_ptr() as *mut libc::c_void;
            header.msg_controllen = self.controls[index].0.len() as _;
            header.msg_flags = 0;
            self.messages[index].msg_len = 0;
        }
        loop {
            // SAFETY: every message points at our own buffers and address slots, sized above.
            let result = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.messages.as_mut_ptr(),
                    slots as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    core::ptr::null_mut(),
                )
            };
            if result >= 0 {
                self.filled = result as usize;
                return Ok(self.filled);
            }
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    self.filled = 0;
                    return Ok(0);
                }
                _ => return Err(error),
            }
        }
    }

    pub fn datagram(&self, index: usize) -> Received<'_> {
        assert!(index < self.filled, "datagram {index} not received");
        let message = &self.messages[index];
        let len = (message.msg_len as usize).min(self.slot_size);
        let start = index * self.slot_size;
        Received {
            bytes: &self.buffers[start..start + len],
            source: socket_addr(&self.addresses[index], message.msg_hdr.msg_namelen),
            truncated: message.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            segment_size: gro_segment_size(&message.msg_hdr),
        }
    }
}

fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= core::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
            let v4 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 if len >= core::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and it is long enough.
            let v6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(v6.sin6_port))))
        }
        _ => None,
    }
}

/// The UDP_GRO segment size from a received message's control data, if any.
fn gro_segment_size(header: &libc::msghdr) -> Option<usize> {
    if header.msg_control.is_null() || header.msg_controllen < core::mem::size_of::<libc::cmsghdr>()
    {
        return None;
    }
    // SAFETY: the kernel filled msg_control (our 64-byte aligned buffer) with msg_controllen
    // bytes of control messages; CMSG_FIRSTHDR/CMSG_NXTHDR walk only within that length.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let value = core::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
                return usize::try_from(value).ok().filter(|&v| v > 0);
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}
