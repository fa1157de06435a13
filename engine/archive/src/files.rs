//! Safe output files (issue 9, "safe files"): what `pack`, `extract` and `loopcast get` write.
//!
//! - Outputs, partial files and temporaries are opened with `O_NOFOLLOW`: a symlink planted at
//!   one of those names is refused, never followed (its target is never truncated).
//! - Temporaries are created exclusively (`O_CREAT | O_EXCL`) under a unique name beside the
//!   output, and a [`TempFile`] removes its file when dropped unless it was committed: a failed
//!   extract leaves no plaintext behind.
//! - An existing output is replaced only with [`Overwrite::Replace`]; with
//!   [`Overwrite::Refuse`] the final rename itself refuses (`renameat2(RENAME_NOREPLACE)`), so a
//!   file that appears during the work is not clobbered either.
//! - [`check_output`] says before any work whether an output path is usable.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;

/// Whether an existing output may be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail with [`OutputError::Exists`] (the default of the command-line tools).
    Refuse,
    /// Replace it (`--force`).
    Replace,
}

impl Overwrite {
    pub fn from_force(force: bool) -> Overwrite {
        if force {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        }
    }
}

/// Why an output path cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} already exists; refusing to replace it (pass --force to replace it)")]
    Exists(PathBuf),
    #[error("{0} is a directory; give the path of a file to write")]
    IsDirectory(PathBuf),
    #[error("{0} has no file name; give the path of a file to write")]
    NoFileName(PathBuf),
    #[error("cannot write {path}: directory {dir} does not exist")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("cannot write {path}: {dir} is not a directory")]
    NotADirectory { path: PathBuf, dir: PathBuf },
    #[error("cannot write {path}: directory {dir} is not writable ({source})")]
    DirectoryNotWritable {
        path: PathBuf,
        dir: PathBuf,
        source: io::Error,
    },
    #[error("{path} is {what}; refusing to use it (remove it if it is yours)")]
    Unsafe { path: PathBuf, what: &'static str },
}

/// Flags added to every open of an output, partial file or temporary.
const OPEN_FLAGS: i32 = nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC;

/// Attempts at a unique temporary name before giving up (each name has 64 random bits).
const TEMP_NAME_ATTEMPTS: usize = 8;

/// The directory `path` lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `path` with `suffix` appended to its last component (`a.lca` + `.part` = `a.lca.part`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Checks, before any work, that `path` can be written: it has a file name, its directory exists
/// and is writable, it is not a directory, and it does not exist unless `overwrite` allows it.
/// A symlink at `path` counts as existing; with [`Overwrite::Replace`] the link itself is
/// replaced, never its target.
pub fn check_output(path: &Path, overwrite: Overwrite) -> Result<(), OutputError> {
    if path.file_name().is_none() {
        return Err(OutputError::NoFileName(path.to_owned()));
    }
    let dir = parent_dir(path);
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(OutputError::NotADirectory {
                path: path.to_owned(),
                dir,
            })
        }
        Err(_) => {
            return Err(OutputError::NoDirectory {
                path: path.to_owned(),
                dir,
            })
        }
    }
    nix::unistd::access(
        &dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(|errno| OutputError::DirectoryNotWritable {
        path: path.to_owned(),
        dir: dir.clone(),
        source: errno.into(),
    })?;
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => Err(OutputError::IsDirectory(path.to_owned())),
        Ok(_) if overwrite == Overwrite::Refuse => Err(OutputError::Exists(path.to_owned())),
        Ok(_) => Ok(()),
    }
}

/// Refuses a file that is not a regular file with one link: a device, a FIFO, or a hard link
/// to someone else's file planted at a name we write.
pub fn check_regular(path: &Path, file: &File) -> Result<(), OutputError> {
    let meta = file.metadata().map_err(|_| OutputError::Unsafe {
        path: path.to_owned(),
        what: "not readable as a file",
    })?;
    let kind = meta.file_type();
    let what = if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() || kind.is_socket() {
        Some("a FIFO or socket")
    } else if kind.is_block_device() || kind.is_char_device() {
        Some("a device")
    } else if meta.nlink() > 1 {
        Some("a file with other hard links")
    } else {
        None
    };
    match what {
        Some(what) => Err(OutputError::Unsafe {
            path: path.to_owned(),
            what,
        }),
        None => Ok(()),
    }
}

/// The error a symlink at an `O_NOFOLLOW` open gives (`ELOOP`), said plainly.
pub fn symlink_refused(path: &Path, error: &io::Error) -> Option<OutputError> {
    (error.raw_os_error() == Some(Errno::ELOOP as i32)).then(|| OutputError::Unsafe {
        path: path.to_owned(),
        what: "a symbolic link",
    })
}

/// Options for opening a partial file or output for reading and writing without following a
/// symlink at `path` (creating it if `create`; `create_new` for exclusive creation).
pub fn nofollow_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(OPEN_FLAGS).mode(0o666);
    options
}

/// Reads a small file (a state file) without following a symlink and without blocking on a FIFO;
/// `Ok(None)` if it does not exist. Refuses anything but a regular file of at most `len_max`
/// bytes.
pub fn read_small_file(path: &Path, len_max: u64) -> io::Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if meta.len() > len_max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {} bytes, more than this file can be ({len_max})",
                path.display(),
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    io::Read::read_to_end(&mut io::Read::take(&file, len_max), &mut bytes)?;
    Ok(Some(bytes))
}

/// True for "no space left" and "quota exceeded".
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == Errno::ENOSPC as i32 || code == Errno::EDQUOT as i32
    )
}

/// Bytes an unprivileged writer may still allocate on the file system holding `file`.
pub fn available_bytes(file: &File) -> io::Result<u64> {
    let stats = nix::sys::statvfs::fstatvfs(file)?;
    Ok(stats
        .blocks_available()
        .saturating_mul(stats.fragment_size()))
}

/// Bytes already allocated to `file` on disk (a sparse file has fewer than its length).
pub fn allocated_bytes(file: &File) -> io::Result<u64> {
    Ok(file.metadata()?.blocks().saturating_mul(512))
}

/// Makes `file` `len` bytes long with every block allocated now, so a full disk shows up here
/// (ENOSPC) rather than half-way through a download. File systems without `fallocate` get a
/// sparse file of the right length instead.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    if len > 0 {
        let len_signed = i64::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
        match nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, len_signed) {
            Ok(()) => {}
            Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    if file.metadata()?.len() != len {
        file.set_len(len)?;
    }
    Ok(())
}

/// Temporaries not yet committed or dropped, so an interrupt handler can remove them before the
/// process exits ([`remove_live_temporaries`]).
static LIVE_TEMPORARIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live_temporaries() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE_TEMPORARIES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes every temporary still in use: for an interrupt (Ctrl-C) handler that is about to end
/// the process, so no partial output (e.g. decrypted plaintext) is left behind.
pub fn remove_live_temporaries() {
    for path in live_temporaries().drain(..) {
        let _ = std::fs::remove_file(path);
    }
}

/// A temporary file beside an output, created exclusively under a unique name; removed on drop
/// unless [`TempFile::commit`]ted into place.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: File,
    committed: bool,
}

impl TempFile {
    /// Creates `<target>.<16 hex digits>.tmp` with `O_CREAT | O_EXCL | O_NOFOLLOW`: never an
    /// existing file, never through a symlink.
    pub fn create_beside(target: &Path) -> io::Result<TempFile> {
        let mut last_error = None;
        for _ in 0..TEMP_NAME_ATTEMPTS {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
            let path = with_suffix(target, &format!(".{:016x}.tmp", u64::from_ne_bytes(random)));
            match nofollow_options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    live_temporaries().push(path.clone());
                    return Ok(TempFile {
                        path,
                        file,
                        committed: false,
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    last_error = Some(error)
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("no unique temporary name")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// fsync, rename onto `target` (refusing an existing one unless `overwrite` allows it),
    /// fsync the directory. On error the temporary is removed. An existing target gives an
    /// error of kind `AlreadyExists`.
    pub fn commit(mut self, target: &Path, overwrite: Overwrite) -> io::Result<()> {
        self.file.sync_all()?;
        rename(&self.path, target, overwrite)?;
        self.committed = true;
        sync_dir(target);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let mut live = live_temporaries();
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
        live.retain(|path| path != &self.path);
    }
}

/// Renames `from` onto `to`; with [`Overwrite::Refuse`] an existing `to` (even one created a
/// moment ago) makes it fail with `AlreadyExists` and leaves both untouched.
pub fn rename(from: &Path, to: &Path, overwrite: Overwrite) -> io::Result<()> {
    if overwrite == Overwrite::Replace {
        return std::fs::rename(from, to);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // File systems without RENAME_NOREPLACE: fall through to link + unlink.
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    // link(2) never replaces; without hard links, check just before the rename (a small race).
    match std::fs::hard_link(from, to) {
        Ok(()) => std::fs::remove_file(from),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Err(error),
        Err(_) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            std::fs::rename(from, to)
        }
    }
}

/// Makes a rename in `path`'s directory durable (best effort: some file systems refuse).
pub fn sync_dir(path: &Path) {
    if let Ok(dir) = File::open(parent_dir(path)) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestDir;

    #[test]
    fn temp_files_are_unique_exclusive_and_removed_unless_committed() {
        let dir = TestDir::new("tempfile");
        let target = dir.path("out");
        let first = TempFile::create_beside(&target).unwrap();
        let second = TempFile::create_beside(&target).unwrap();
        assert_ne!(first.path(), second.path());
        let (first_path, second_path) = (first.path().to_owned(), second.path().to_owned());
        assert!(first_path.exists());
        drop(first);
        assert!(!first_path.exists(), "dropped temporary removed");
        std::io::Write::write_all(&mut second.file(), b"hello").unwrap();
        second.commit(&target, Overwrite::Refuse).unwrap();
        assert!(!second_path.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
    }

    #[test]
    fn commit_refuses_an_existing_target_unless_replacing() {
        let dir = TestDir::new("commit");
        let target = dir.path("out");
        std::fs::write(&target, b"old").unwrap();
        let temp = TempFile::create_beside(&target).unwrap();
        std::io::Write::write_all(&mut temp.file(), b"new").unwrap();
        let temp_path = temp.path().to_owned();
        let error = temp.commit(&target, Overwrite::Refuse).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert!(!temp_path.exists(), "failed commit removes the temporary");
        let temp = TempFile::create_beside(&target).unwrap();
        std::io::Write::write_all(&mut temp.file(), b"new").unwrap();
        temp.commit(&target, Overwrite::Replace).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn symlinks_are_refused_not_followed() {
        let dir = TestDir::new("symlink");
        let victim = dir.path("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.path("out.part");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let error = nofollow_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&link)
            .unwrap_err();
        assert!(symlink_refused(&link, &error).is_some(), "{error}");
        let error = read_small_file(&link, 1 << 20).unwrap_err();
        assert!(symlink_refused(&link, &error).is_some(), "{error}");
        // Replacing a symlinked output replaces the link, not its target.
        let temp = TempFile::create_beside(&link).unwrap();
        temp.commit(&link, Overwrite::Replace).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    }

    #[test]
    fn check_output_says_what_is_wrong() {
        let dir = TestDir::new("check");
        let out = dir.path("out");
        check_output(&out, Overwrite::Refuse).unwrap();
        std::fs::write(&out, b"x").unwrap();
        assert!(matches!(
            check_output(&out, Overwrite::Refuse),
            Err(OutputError::Exists(_))
        ));
        check_output(&out, Overwrite::Replace).unwrap();
        assert!(matches!(
            check_output(&dir.path(""), Overwrite::Replace),
            Err(OutputError::IsDirectory(_) | OutputError::NoFileName(_))
        ));
        std::fs::create_dir(dir.path("sub")).unwrap();
        assert!(matches!(
            check_output(&dir.path("sub"), Overwrite::Replace),
            Err(OutputError::IsDirectory(_))
        ));
        assert!(matches!(
            check_output(&dir.path("missing/out"), Overwrite::Refuse),
            Err(OutputError::NoDirectory { .. })
        ));
        assert!(matches!(
            check_output(&out.join("x"), Overwrite::Refuse),
            Err(OutputError::NotADirectory { .. })
        ));
        let message = check_output(&out, Overwrite::Refuse)
            .unwrap_err()
            .to_string();
        assert!(message.contains("already exists") && message.contains("--force"));
    }

    #[test]
    fn small_files_are_bounded_and_regular() {
        let dir = TestDir::new("small");
        assert!(read_small_file(&dir.path("missing"), 10).unwrap().is_none());
        std::fs::write(dir.path("state"), b"0123456789").unwrap();
        assert_eq!(
            read_small_file(&dir.path("state"), 10).unwrap().unwrap(),
            b"0123456789"
        );
        assert!(read_small_file(&dir.path("state"), 9).is_err());
        nix::unistd::mkfifo(&dir.path("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(read_small_file(&dir.path("fifo"), 10).is_err(), "no block");
    }

    #[test]
    fn allocate_sizes_the_file_and_checks_regular_files() {
        let dir = TestDir::new("allocate");
        let path = dir.path("part");
        let file = nofollow_options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        allocate(&file, 1 << 20).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 1 << 20);
        assert!(available_bytes(&file).unwrap() > 0);
        check_regular(&path, &file).unwrap();
        std::fs::hard_link(&path, dir.path("other")).unwrap();
        assert!(matches!(
            check_regular(&path, &file),
            Err(OutputError::Unsafe { .. })
        ));
        let disk_full = io::Error::from_raw_os_error(Errno::ENOSPC as i32);
        assert!(is_disk_full(&disk_full));
        assert!(!is_disk_full(&io::Error::from(io::ErrorKind::NotFound)));
    }
}
