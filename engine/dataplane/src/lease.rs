//! Whether anyone else holds a file open for writing, asked of the kernel with a write lease
//! (`F_SETLEASE`): it is granted only while no other open file description has the file open
//! for writing (another process's descriptor, a shared writable map that outlived its
//! descriptor), and it is released at once. The client uses it before it trusts checks of its
//! `.part` made while receiving (R14): inotify sees only opens made after its watch.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `F_SETSIG` (`<asm-generic/fcntl.h>`; the libc crate does not name it).
const F_SETSIG: libc::c_int = 10;

/// `Ok(true)` if no open file description but `file`'s own has the file open for writing
/// (nor, where the kernel counts them, for reading); `Ok(false)` if one does. `Err` where
/// leases are unavailable (not the file's owner without CAP_LEASE, leases disabled, a file
/// system without them): the caller then cannot tell, and must assume someone does.
///
/// An open by another process in the microseconds the lease is held is made to wait for its
/// release; the break is signalled with SIGURG (ignored by default), not SIGIO (which would
/// end this process).
pub fn no_other_writer(file: BorrowedFd<'_>) -> io::Result<bool> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with integer arguments on a descriptor the borrow keeps open; no memory
    // is passed or returned.
    if unsafe { libc::fcntl(fd, F_SETSIG, libc::SIGURG) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) } == -1 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EAGAIN) => Ok(false),
            _ => Err(error),
        };
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_second_writer_is_seen_and_a_reader_or_none_is_not() {
        let path = std::env::temp_dir().join(format!("loopcast-lease-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let ours = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        assert!(no_other_writer(ours.as_fd()).unwrap(), "only ours");
        let theirs = std::fs::File::options().write(true).open(&path).unwrap();
        assert!(!no_other_writer(ours.as_fd()).unwrap(), "a second writer");
        drop(theirs);
        assert!(no_other_writer(ours.as_fd()).unwrap(), "the writer closed");
        // Twice in a row: the lease was released.
        assert!(no_other_writer(ours.as_fd()).unwrap());
        std::fs::remove_file(&path).unwrap();
    }
}
