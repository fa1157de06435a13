//! The files `loopcast get` writes, handled safely (issue 9, "safe files"):
//!
//! ```text
//!  start of get:  check <out> (dir exists + writable, not a directory, absent unless --force)
//!                 open <out>.part O_NOFOLLOW (create O_EXCL, else open existing), regular, 1 link
//!                 flock(LOCK_EX | LOCK_NB): a second get to <out> fails here, before any traffic
//!  after Offer:   free space (fstatvfs) >= what the archive still needs; fallocate it all now
//!  saves:         <out>.part.state via an exclusive temporary, fsync, rename (state.rs)
//!  publish:       fsync, rename onto <out> (no-replace unless --force), fsync the directory
//! ```
//! The lock is held by the open `.part` for the whole download, and released by the kernel if
//! the process dies (a killed download resumes).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use loopcast_archive::files::{self, OutputError, Overwrite};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::{ClientError, GetConfig};

/// Attempts at opening and locking `<out>.part` when another process removes or replaces it
/// between our open and our lock.
const OPEN_ATTEMPTS: usize = 4;

/// `<out>.part`, open and exclusively locked for as long as this lives.
#[derive(Debug)]
pub(crate) struct PartFile {
    file: Flock<File>,
    path: PathBuf,
    output: PathBuf,
    overwrite: Overwrite,
    /// Created by this process and not yet holding a download: removed on drop (a get that
    /// fails before it starts leaves nothing behind).
    remove_on_drop: bool,
}

impl std::ops::Deref for PartFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

impl AsFd for PartFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.remove_on_drop && self.still_at_path() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl PartFile {
    /// Whether an earlier run left this `.part` (it is kept, whatever this run does); one this
    /// run created is removed on drop unless the download kept something in it.
    pub(crate) fn left_by_an_earlier_run(&self) -> bool {
        !self.remove_on_drop
    }

    /// At the start of `get`, before any network traffic: checks the output path and opens and
    /// locks `<out>.part` (R14: an existing one is kept for resume).
    pub(crate) fn prepare(config: &GetConfig) -> Result<PartFile, ClientError> {
        let overwrite = Overwrite::from_force(config.force);
        files::check_output(&config.output, overwrite)?;
        let path = files::with_suffix(&config.output, ".part");
        for _ in 0..OPEN_ATTEMPTS {
            let (file, created) = match open_part(&path)? {
                Some(opened) => opened,
                // Removed between our two opens: try again.
                None => continue,
            };
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(file) => file,
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(ClientError::Locked {
                        output: config.output.clone(),
                        part: path,
                    })
                }
                Err((_, errno)) => {
                    return Err(ClientError::Io {
                        context: format!("lock {}", path.display()),
                        source: errno.into(),
                    })
                }
            };
            let part = PartFile {
                file,
                path: path.clone(),
                output: config.output.clone(),
                overwrite,
                remove_on_drop: created,
            };
            // The lock is on the file we opened: make sure the name still leads to it (a
            // download that finished or failed meanwhile may have renamed or removed it).
            if part.still_at_path() {
                return Ok(part);
            }
            let mut stale = part;
            stale.remove_on_drop = false;
        }
        Err(ClientError::Io {
            context: format!("open {}", path.display()),
            source: io::Error::other("it keeps being replaced by another process"),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn still_at_path(&self) -> bool {
        match (std::fs::symlink_metadata(&self.path), self.file.metadata()) {
            (Ok(named), Ok(open)) => named.dev() == open.dev() && named.ino() == open.ino(),
            _ => false,
        }
    }

    /// After the Offer, before receiving: makes the partial file `archive_bytes` long with every
    /// block allocated now, so a full disk is reported here and not half-way through. `fresh`:
    /// nothing in it is kept (no usable state), so it is emptied first. Fails with
    /// [`ClientError::DiskFull`] if the file system lacks the space.
    pub(crate) fn reserve(&mut self, archive_bytes: u64, fresh: bool) -> Result<(), ClientError> {
        let context = |what: &str| format!("{what} {}", self.path.display());
        if fresh {
            self.file.set_len(0).map_err(|source| ClientError::Io {
                context: context("truncate"),
                source,
            })?;
        }
        let allocated = files::allocated_bytes(&self.file).unwrap_or(0);
        let needed = archive_bytes.saturating_sub(allocated);
        let available = files::available_bytes(&self.file).unwrap_or(u64::MAX);
        let result = if needed > available {
            Err(io::Error::from_raw_os_error(Errno::ENOSPC as i32))
        } else {
            files::allocate(&self.file, archive_bytes)
        };
        match result {
            Ok(()) => {
                // A download now lives in this file: it stays for resume whatever happens.
                self.remove_on_drop = false;
                Ok(())
            }
            Err(source) if files::is_disk_full(&source) => {
                if fresh {
                    // Give back what a partial allocation took.
                    let _ = self.file.set_len(0);
                }
                Err(ClientError::DiskFull {
                    path: self.path.clone(),
                    needed,
                    available,
                })
            }
            Err(source) => Err(ClientError::Io {
                context: context("allocate"),
                source,
            }),
        }
    }

    /// R14: fsync, then rename into place (refusing an output that appeared meanwhile unless
    /// --force), then fsync the directory. Returns whether a file was there and is replaced
    /// (--force).
    pub(crate) fn publish(&self) -> Result<bool, ClientError> {
        self.file.sync_all().map_err(|source| ClientError::Io {
            context: format!("fsync {}", self.path.display()),
            source,
        })?;
        let replacing =
            self.overwrite == Overwrite::Replace && self.output.symlink_metadata().is_ok();
        files::rename(&self.path, &self.output, self.overwrite).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                ClientError::Output(OutputError::Exists(self.output.clone()))
            } else {
                ClientError::Io {
                    context: format!("rename into {}", self.output.display()),
                    source,
                }
            }
        })?;
        files::sync_dir(&self.output);
        Ok(replacing)
    }
}

/// Opens `<out>.part` without following a symlink: creates it exclusively, or opens the existing
/// one. `Ok(None)` if it vanished between the two. The bool says whether it was created.
fn open_part(path: &Path) -> Result<Option<(File, bool)>, ClientError> {
    let refused = |source: io::Error| match files::symlink_refused(path, &source) {
        Some(unsafe_path) => ClientError::Output(unsafe_path),
        None => ClientError::Io {
            context: format!("open {}", path.display()),
            source,
        },
    };
    let created = files::nofollow_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path);
    let (file, created) = match created {
        Ok(file) => (file, true),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            match files::nofollow_options().read(true).write(true).open(path) {
                Ok(file) => (file, false),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(refused(error)),
            }
        }
        Err(error) => return Err(refused(error)),
    };
    files::check_regular(path, &file)?;
    Ok(Some((file, created)))
}

/// Reads `<out>.part.state` without following a symlink or blocking on a FIFO, at most
/// `len_max` bytes; `None` (start afresh) if it is missing or unusable.
pub(crate) fn read_state(path: &Path, len_max: u64) -> Option<Vec<u8>> {
    match files::read_small_file(path, len_max) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring unusable state file");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).unwrap();
            let dir = std::env::temp_dir().join(format!(
                "loopcast-client-{tag}-{:016x}",
                u64::from_ne_bytes(nonce)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(output: PathBuf) -> GetConfig {
        GetConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 9)), "x", output)
    }

    #[test]
    fn second_prepare_on_one_output_is_locked_out() {
        let dir = Dir::new("lock");
        let config = config(dir.0.join("out"));
        let mut first = PartFile::prepare(&config).unwrap();
        let error = PartFile::prepare(&config).unwrap_err();
        assert!(matches!(error, ClientError::Locked { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("out") && message.contains("another"),
            "{message}"
        );
        first.reserve(4096, true).unwrap();
        drop(first);
        assert!(
            dir.0.join("out.part").exists(),
            "a started download is kept"
        );
        drop(PartFile::prepare(&config).unwrap());
    }

    #[test]
    fn a_get_that_never_starts_leaves_nothing() {
        let dir = Dir::new("unstarted");
        let config = config(dir.0.join("out"));
        drop(PartFile::prepare(&config).unwrap());
        assert!(!dir.0.join("out.part").exists());
    }

    #[test]
    fn symlinked_part_is_refused_and_its_target_untouched() {
        let dir = Dir::new("symlink");
        let victim = dir.0.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.0.join("out.part")).unwrap();
        let error = PartFile::prepare(&config(dir.0.join("out"))).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn existing_output_needs_force_and_publish_respects_it() {
        let dir = Dir::new("force");
        let output = dir.0.join("out");
        std::fs::write(&output, b"old").unwrap();
        let mut config = config(output.clone());
        let error = PartFile::prepare(&config).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        config.force = true;
        let mut part = PartFile::prepare(&config).unwrap();
        part.reserve(10, true).unwrap();
        assert!(part.publish().unwrap(), "says it replaced a file");
        assert_eq!(std::fs::metadata(&output).unwrap().len(), 10);
        // With --force and nothing there, nothing is replaced.
        std::fs::remove_file(&output).unwrap();
        let mut part = PartFile::prepare(&config).unwrap();
        part.reserve(10, true).unwrap();
        assert!(!part.publish().unwrap(), "nothing was there");
        // Without --force, an output that appears during the download is not replaced.
        config.force = false;
        std::fs::remove_file(&output).unwrap();
        let mut part = PartFile::prepare(&config).unwrap();
        part.reserve(10, true).unwrap();
        std::fs::write(&output, b"appeared").unwrap();
        let error = part.publish().unwrap_err();
        assert!(matches!(error, ClientError::Output(OutputError::Exists(_))));
        assert_eq!(std::fs::read(&output).unwrap(), b"appeared");
        assert!(part.path().exists(), "the complete download is kept");
    }

    #[test]
    fn too_large_an_archive_is_disk_full_before_receiving() {
        let dir = Dir::new("full");
        let config = config(dir.0.join("out"));
        let mut part = PartFile::prepare(&config).unwrap();
        let error = part.reserve(u64::MAX / 4, true).unwrap_err();
        assert!(matches!(error, ClientError::DiskFull { .. }), "{error}");
        assert!(error.to_string().starts_with("disk full"), "{error}");
        drop(part);
        assert!(!dir.0.join("out.part").exists(), "nothing left behind");
    }
}
