//! UDP socket set-up. Plain sockets: blocking sends give natural back-pressure; receives
//! use a timeout so drivers can run their timers.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Socket buffer size asked for (the kernel caps it at net.core.[rw]mem_max).
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Receive buffer asked for on a client's data sockets: a receiver descheduled for a few
/// milliseconds at Gbit/s rates needs megabytes queued, or the loop's datagrams are lost and
/// asked for again. 64 MiB (UFTP's bench setting) measured no faster than this on the 2-core
/// bench, and an unpaced loopback get then read round trips of 50-160 ms: the queue the
/// buffer lets build up. The kernel caps it at net.core.rmem_max (see
/// [`grow_receive_buffer`]).
pub const RECEIVER_BUFFER_BYTES: usize = SOCKET_BUFFER_BYTES;

/// Asks for [`RECEIVER_BUFFER_BYTES`] of receive buffer on `socket`; returns the bytes granted
/// (the kernel caps the request at net.core.rmem_max, 208 KiB by default).
pub fn grow_receive_buffer(socket: &UdpSocket) -> std::io::Result<usize> {
    let socket = socket2::SockRef::from(socket);
    socket.set_recv_buffer_size(RECEIVER_BUFFER_BYTES)?;
    // Linux reports twice what it grants (the other half is its bookkeeping).
    Ok(socket.recv_buffer_size()? / 2)
}

fn new_udp(addr: &SocketAddr) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    Ok(socket)
}

/// A UDP socket bound to `addr`.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = new_udp(&addr)?;
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket.into())
}

/// A socket that receives multicast `group:port` on the interface with address `interface`.
/// Binds the group address itself so unrelated traffic to the port is not delivered.
pub fn bind_multicast_receiver(
    group: Ipv4Addr,
    port: u16,
    interface: Ipv4Addr,
) -> std::io::Result<UdpSocket> {
    let addr = SocketAddr::from((group, port));
    let socket = new_udp(&addr)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.join_multicast_v4(&group, &interface)?;
    Ok(socket.into())
}

/// Makes `socket` send multicast out of the interface with address `interface`, TTL `ttl`,
/// looped back to local members (so clients on the same host receive it).
pub fn set_multicast_sender(
    socket: &UdpSocket,
    interface: Ipv4Addr,
    ttl: u32,
) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    socket.set_multicast_if_v4(&interface)?;
    socket.set_multicast_ttl_v4(ttl)?;
    socket.set_multicast_loop_v4(true)?;
    Ok(())
}

pub fn set_receive_timeout(socket: &UdpSocket, timeout: Duration) -> std::io::Result<()> {
    socket.set_read_timeout(Some(timeout.max(Duration::from_micros(100))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receivers_buffer_grows_to_what_the_kernel_allows() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let granted = grow_receive_buffer(&socket).unwrap();
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(usize::MAX);
        assert_eq!(
            granted,
            RECEIVER_BUFFER_BYTES.min(cap),
            "asked {RECEIVER_BUFFER_BYTES}, net.core.rmem_max {cap}"
        );
    }
}
