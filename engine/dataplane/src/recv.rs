//! Batched receives: one `recvmmsg` fills up to `slots` buffers sized at start.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

pub struct BatchReceiver {
    slot_size: usize,
    buffers: Vec<u8>,
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
}

impl BatchReceiver {
    pub fn new(slots: usize, slot_size: usize) -> BatchReceiver {
        assert!(slots > 0 && slot_size > 0, "receiver needs room");
        // SAFETY: mmsghdr and sockaddr_storage are plain C structs; all-zero is valid.
        let (message, address) = unsafe { (core::mem::zeroed(), core::mem::zeroed()) };
        BatchReceiver {
            slot_size,
            buffers: vec![0u8; slots * slot_size],
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
            header.msg_control = core::ptr::null_mut();
            header.msg_controllen = 0;
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
