//! A private network for demos and tests: a new user namespace (so no root is needed) with a
//! new network namespace, loopback up with the MULTICAST flag. Multicast sent there never
//! reaches the host's network. Must be called while the process is single-threaded.

use std::io::Write;

/// Enters a private user + network namespace and brings loopback up for multicast.
/// Returns a sentence saying why not, if the kernel refuses.
pub fn enter_private_network() -> Result<(), String> {
    let uid = nix_like_getuid();
    let gid = nix_like_getgid();
    // SAFETY: unshare has no memory-safety preconditions; it fails with EINVAL if the process
    // is multi-threaded (user namespaces require a single thread), which we report.
    let result = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        return Err(format!(
            "the kernel refused an unprivileged user+network namespace ({error})"
        ));
    }
    let write = |path: &str, text: &str| -> Result<(), String> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {path}: {e}"))
    };
    // setgroups must be denied before an unprivileged process may write gid_map.
    let _ = write("/proc/self/setgroups", "deny");
    write("/proc/self/uid_map", &format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    loopback_up_with_multicast()
}

fn nix_like_getuid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

fn nix_like_getgid() -> u32 {
    // SAFETY: getgid cannot fail and has no preconditions.
    unsafe { libc::getgid() }
}

fn loopback_up_with_multicast() -> Result<(), String> {
    // SAFETY: socket() has no memory preconditions; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is a plain C struct; all-zero is valid. The name "lo" fits IFNAMSIZ.
    let mut request: libc::ifreq = unsafe { core::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `request`, which outlives the calls.
    let outcome = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) < 0 {
            Err("SIOCGIFFLAGS")
        } else {
            request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_MULTICAST) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) < 0 {
                Err("SIOCSIFFLAGS")
            } else {
                Ok(())
            }
        }
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    outcome.map_err(|call| format!("cannot bring loopback up ({call}: {error})"))
}

/// Checks that multicast to `group` is delivered on loopback here (one datagram, 500 ms).
/// Call only inside a private network namespace.
pub fn probe_loopback_multicast(group: std::net::Ipv4Addr) -> Result<(), String> {
    let localhost = std::net::Ipv4Addr::LOCALHOST;
    let receiver = crate::socket::bind_multicast_receiver(group, 0, localhost)
        .map_err(|e| format!("cannot join {group} on loopback: {e}"))?;
    let port = receiver.local_addr().map_err(|e| e.to_string())?.port();
    receiver
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let sender = std::net::UdpSocket::bind((localhost, 0)).map_err(|e| e.to_string())?;
    crate::socket::set_multicast_sender(&sender, localhost, 1).map_err(|e| e.to_string())?;
    sender
        .send_to(b"loopcast-probe", (group, port))
        .map_err(|e| format!("multicast send failed: {e}"))?;
    let mut buffer = [0u8; 64];
    match receiver.recv(&mut buffer) {
        Ok(14) if &buffer[..14] == b"loopcast-probe" => Ok(()),
        Ok(_) => Err("multicast probe received something else".into()),
        Err(e) => Err(format!("multicast probe not delivered ({e})")),
    }
}
