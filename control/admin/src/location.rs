//! Where the admin socket lives, and when a directory or a socket file can be trusted (R23).
//!
//! The socket never sits at a predictable name in a world-writable directory: another user could
//! create that name first and listen there (keeping the daemon from starting, and showing
//! `loopcastctl` a fake status). It sits in a directory of its own that only the daemon's user
//! can write to:
//!
//! | who                         | default socket                                |
//! |-----------------------------|-----------------------------------------------|
//! | `XDG_RUNTIME_DIR` is set    | `$XDG_RUNTIME_DIR/loopcast/loopcastd.sock`    |
//! | root                        | `/run/loopcast/loopcastd.sock`                |
//! | anyone else                 | `/tmp/loopcast-<uid>/loopcastd.sock`          |
//!
//! The daemon creates the directory (mode 0700) when it is missing and refuses to start when it
//! exists but is a symbolic link, is owned by another user, or is writable by group or others
//! ([`prepare_directory`]). A client checks the socket file and its directory before it
//! connects ([`check_trusted_socket`]) and the peer's credentials after.
//!
//! Only the socket's own directory is checked, not its ancestors: `/tmp` and `/run` are
//! root-owned (and `/tmp` sticky), `$XDG_RUNTIME_DIR` is the user's own. Checking ancestors would
//! also refuse every path inside an unprivileged user namespace, where root-owned directories
//! show up as owned by the overflow uid.
//!
//! One exception, for a daemon that systemd runs as a user of its own (`DynamicUser=`,
//! `RuntimeDirectory=`): its directory is another user's, but it sits directly in `/run`, which
//! only root can write to (root-owned, not writable by group or others, not sticky), so only
//! root (systemd) can have made it and given it to that user. A client trusts such a directory,
//! a socket in it owned by that user, and a peer with that uid ([`check_trusted_socket`]
//! returns it). A directory of another user's in `/tmp` is still refused: anyone can make one.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// File name of the socket inside its directory.
pub const SOCKET_NAME: &str = "loopcastd.sock";
/// Name of the socket's directory inside `$XDG_RUNTIME_DIR` and `/run`.
pub const DIRECTORY_NAME: &str = "loopcast";
/// Mode of a directory the daemon creates.
pub const DIRECTORY_MODE: u32 = 0o700;
/// Mode of the socket file.
pub const SOCKET_MODE: u32 = 0o600;

const MODE_GROUP_OTHER_WRITE: u32 = 0o022;
const MODE_STICKY: u32 = 0o1000;

/// Why a socket place is refused. Each message names the path and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("cannot create the admin socket directory {path}: {source}")]
    CreateDirectory { path: PathBuf, source: io::Error },
    #[error("cannot inspect {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("no admin socket at {path} (is loopcastd running? is this its socket?)")]
    Missing { path: PathBuf },
    #[error("{path} is a symbolic link; refusing to use it for the admin socket")]
    Symlink { path: PathBuf },
    #[error("{path} is not a directory; refusing to use it for the admin socket")]
    NotDirectory { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to use or replace it")]
    NotSocket { path: PathBuf },
    #[error(
        "{path} is owned by uid {owner}, {wanted}; refusing to use it (another user may have \
         created it to intercept the admin socket)"
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        wanted: String,
    },
    #[error(
        "{path} has mode {mode:04o}: writable by group or others; refusing to use it for the \
         admin socket (chmod go-w, or pick another directory)"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error("another loopcastd is running at {path}")]
    Live { path: PathBuf },
    #[error("cannot remove the stale admin socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot bind the admin socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// The default socket path for a user with effective uid `uid`, given `$XDG_RUNTIME_DIR`.
/// Pure, so the daemon and `loopcastctl` agree and tests can check every branch.
pub fn default_socket_path(xdg_runtime_dir: Option<&OsStr>, uid: u32) -> PathBuf {
    match xdg_runtime_dir.map(Path::new) {
        // The XDG spec requires an absolute path; anything else is ignored, as it says.
        Some(dir) if dir.is_absolute() => dir.join(DIRECTORY_NAME).join(SOCKET_NAME),
        _ if uid == 0 => Path::new("/run").join(DIRECTORY_NAME).join(SOCKET_NAME),
        _ => PathBuf::from(format!("/tmp/loopcast-{uid}")).join(SOCKET_NAME),
    }
}

/// [`default_socket_path`] for this process (its environment and effective uid).
pub fn default_socket_path_here() -> PathBuf {
    default_socket_path(
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        effective_uid(),
    )
}

pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The directory a socket path is in (`.` for a bare file name).
pub fn socket_directory(socket: &Path) -> PathBuf {
    match socket.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn lstat(path: &Path) -> Result<Option<Metadata>, PlaceError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PlaceError::Inspect {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Daemon side: `dir` is a real directory (not a symlink), owned by `uid`, and not writable by
/// group or others.
pub fn check_private_directory(dir: &Path, uid: u32) -> Result<(), PlaceError> {
    let meta = lstat(dir)?.ok_or_else(|| PlaceError::Inspect {
        path: dir.to_owned(),
        source: io::ErrorKind::NotFound.into(),
    })?;
    if meta.file_type().is_symlink() {
        return Err(PlaceError::Symlink {
            path: dir.to_owned(),
        });
    }
    if !meta.is_dir() {
        return Err(PlaceError::NotDirectory {
            path: dir.to_owned(),
        });
    }
    if meta.uid() != uid {
        return Err(PlaceError::Owner {
            path: dir.to_owned(),
            owner: meta.uid(),
            wanted: format!("not by uid {uid} (the daemon's user)"),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & MODE_GROUP_OTHER_WRITE != 0 {
        return Err(PlaceError::Writable {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Daemon side: creates `dir` (one level, mode 0700) if it is missing, then
/// [`check_private_directory`]. An existing directory is never changed, only checked.
pub fn prepare_directory(dir: &Path, uid: u32) -> Result<(), PlaceError> {
    if lstat(dir)?.is_none() {
        match std::fs::DirBuilder::new().mode(DIRECTORY_MODE).create(dir) {
            Ok(()) => {}
            // Created by someone else in between: the check below decides.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(PlaceError::CreateDirectory {
                    path: dir.to_owned(),
                    source,
                })
            }
        }
    }
    check_private_directory(dir, uid)
}

/// Daemon side: binds the admin socket at `path` after [`preflight`] (private directory, stale
/// socket file replaced, live one [`PlaceError::Live`], anything else at `path` refused). The
/// socket file is made mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, PlaceError> {
    preflight(path)?;
    let listener = UnixListener::bind(path).map_err(|source| PlaceError::Bind {
        path: path.to_owned(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
        |source| PlaceError::Bind {
            path: path.to_owned(),
            source,
        },
    )?;
    Ok(listener)
}

/// Daemon side, before anything else is set up: [`prepare_directory`] on the socket's
/// directory, then a stale socket file (nobody answers a connect) is removed and a live one is
/// [`PlaceError::Live`]. `loopcastd` calls it first, so a second daemon says "another loopcastd
/// is running" rather than failing on a port both want.
pub fn preflight(path: &Path) -> Result<(), PlaceError> {
    prepare_directory(&socket_directory(path), effective_uid())?;
    if let Some(meta) = lstat(path)? {
        if !meta.file_type().is_socket() {
            return Err(PlaceError::NotSocket {
                path: path.to_owned(),
            });
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(PlaceError::Live {
                    path: path.to_owned(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|source| PlaceError::RemoveStale {
                    path: path.to_owned(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(PlaceError::Inspect {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
    Ok(())
}

fn check_owner_is_self_or_root(path: &Path, meta: &Metadata, uid: u32) -> Result<(), PlaceError> {
    if meta.uid() == uid || meta.uid() == 0 {
        return Ok(());
    }
    Err(PlaceError::Owner {
        path: path.to_owned(),
        owner: meta.uid(),
        wanted: format!("neither by uid {uid} (you) nor by root"),
    })
}

/// Client side: before connecting to `socket`, checks (without following symlinks) that it is a
/// socket owned by `uid` or root, in a directory owned by `uid` or root that others cannot
/// write to (a world-writable directory is accepted only with the sticky bit, like `/tmp`,
/// where others cannot replace our entries). The peer's credentials are checked after connect.
///
/// A directory of another user's is trusted only when root gave it to that user (see the
/// module's notes): then the socket may be that user's too, and the answer is `Some(its uid)`,
/// a peer the caller may also trust.
pub fn check_trusted_socket(socket: &Path, uid: u32) -> Result<Option<u32>, PlaceError> {
    let dir = socket_directory(socket);
    let dir_meta = lstat(&dir)?.ok_or_else(|| PlaceError::Missing {
        path: socket.to_owned(),
    })?;
    if dir_meta.file_type().is_symlink() {
        return Err(PlaceError::Symlink { path: dir });
    }
    if !dir_meta.is_dir() {
        return Err(PlaceError::NotDirectory { path: dir });
    }
    let delegated = if dir_meta.uid() == uid || dir_meta.uid() == 0 {
        None
    } else if made_by_root(&dir)? {
        Some(dir_meta.uid())
    } else {
        // Another user's, in a directory others could write to: refused.
        check_owner_is_self_or_root(&dir, &dir_meta, uid)?;
        None
    };
    let mode = dir_meta.mode() & 0o7777;
    if mode & MODE_GROUP_OTHER_WRITE != 0 && mode & MODE_STICKY == 0 {
        return Err(PlaceError::Writable { path: dir, mode });
    }
    let meta = lstat(socket)?.ok_or_else(|| PlaceError::Missing {
        path: socket.to_owned(),
    })?;
    if meta.file_type().is_symlink() {
        return Err(PlaceError::Symlink {
            path: socket.to_owned(),
        });
    }
    if !meta.file_type().is_socket() {
        return Err(PlaceError::NotSocket {
            path: socket.to_owned(),
        });
    }
    if delegated.is_some_and(|owner| meta.uid() == owner) {
        return Ok(delegated);
    }
    check_owner_is_self_or_root(socket, &meta, uid)?;
    Ok(delegated)
}

/// Whether `dir` is a system service's runtime directory that root (systemd) made and gave to
/// the service's user: directly in /run, which is root-owned (not a symlink) and not writable
/// by group or others. Narrowly so: /run/user/UID is also made by root, but is a login user's,
/// and a socket in it is theirs, not a service's.
fn made_by_root(dir: &Path) -> Result<bool, PlaceError> {
    if dir.parent() != Some(Path::new(RUN_DIRECTORY)) {
        return Ok(false);
    }
    let Some(meta) = lstat(Path::new(RUN_DIRECTORY))? else {
        return Ok(false);
    };
    Ok(meta.is_dir() && meta.uid() == 0 && meta.mode() & MODE_GROUP_OTHER_WRITE == 0)
}

/// Where systemd makes services' runtime directories (`RuntimeDirectory=`).
const RUN_DIRECTORY: &str = "/run";

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_dir::TempDir;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn default_paths_per_environment() {
        assert_eq!(
            default_socket_path(Some(OsStr::new("/run/user/1000")), 1000),
            Path::new("/run/user/1000/loopcast/loopcastd.sock")
        );
        assert_eq!(
            default_socket_path(None, 0),
            Path::new("/run/loopcast/loopcastd.sock")
        );
        assert_eq!(
            default_socket_path(None, 1000),
            Path::new("/tmp/loopcast-1000/loopcastd.sock")
        );
        // A relative XDG_RUNTIME_DIR is ignored (the spec says so), never used relative to cwd.
        assert_eq!(
            default_socket_path(Some(OsStr::new("run")), 1000),
            Path::new("/tmp/loopcast-1000/loopcastd.sock")
        );
        // Never directly in a world-writable directory.
        for path in [
            default_socket_path(None, 1000),
            default_socket_path(None, 0),
        ] {
            assert_ne!(path.parent().unwrap(), Path::new("/tmp"));
        }
    }

    #[test]
    fn missing_directory_is_created_private() {
        let temp = TempDir::new("create");
        let dir = temp.0.join("loopcast");
        prepare_directory(&dir, effective_uid()).unwrap();
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), effective_uid());
        // Preparing again accepts what it made.
        prepare_directory(&dir, effective_uid()).unwrap();
    }

    #[test]
    fn writable_by_group_or_others_is_refused_and_left_unchanged() {
        let temp = TempDir::new("mode");
        let dir = temp.0.join("loopcast");
        std::fs::create_dir(&dir).unwrap();
        for mode in [0o777, 0o770, 0o707, 0o1777, 0o720] {
            chmod(&dir, mode);
            let error = prepare_directory(&dir, effective_uid()).unwrap_err();
            assert!(
                matches!(error, PlaceError::Writable { .. }),
                "{mode:o}: {error}"
            );
            let text = error.to_string();
            assert!(text.contains(&dir.display().to_string()), "{text}");
            assert!(text.contains("writable by group or others"), "{text}");
            let after = std::fs::symlink_metadata(&dir).unwrap().mode() & 0o7777;
            assert_eq!(after, mode, "an existing directory is never changed");
        }
        for mode in [0o700, 0o755, 0o750, 0o711] {
            chmod(&dir, mode);
            prepare_directory(&dir, effective_uid()).unwrap();
        }
    }

    #[test]
    fn symlinked_directory_is_refused_even_to_a_good_target() {
        let temp = TempDir::new("symlink");
        let target = temp.0.join("real");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&target)
            .unwrap();
        let link = temp.0.join("loopcast");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = prepare_directory(&link, effective_uid()).unwrap_err();
        assert!(matches!(error, PlaceError::Symlink { .. }), "{error}");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        // Binding through it is refused too, and nothing is created at the target.
        let error = bind(&link.join(SOCKET_NAME)).unwrap_err();
        assert!(matches!(error, PlaceError::Symlink { .. }), "{error}");
        assert!(!target.join(SOCKET_NAME).exists());
        // The client refuses a socket whose directory is a symlink.
        let error = check_trusted_socket(&link.join(SOCKET_NAME), effective_uid()).unwrap_err();
        assert!(matches!(error, PlaceError::Symlink { .. }), "{error}");
    }

    #[test]
    fn a_file_where_the_directory_should_be_is_refused() {
        let temp = TempDir::new("file");
        let dir = temp.0.join("loopcast");
        std::fs::write(&dir, b"x").unwrap();
        let error = prepare_directory(&dir, effective_uid()).unwrap_err();
        assert!(matches!(error, PlaceError::NotDirectory { .. }), "{error}");
    }

    #[test]
    fn another_owner_is_refused() {
        // A directory owned by another uid cannot be made without root; claim to be another
        // uid instead (the root e2e test `admin_socket_squatting_is_refused` does the real thing).
        let temp = TempDir::new("owner");
        let other = effective_uid().wrapping_add(12345);
        let error = check_private_directory(&temp.0, other).unwrap_err();
        assert!(matches!(error, PlaceError::Owner { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("uid {}", effective_uid())),
            "{error}"
        );
    }

    #[test]
    fn stale_socket_is_replaced_live_one_is_refused_other_files_kept() {
        let temp = TempDir::new("stale");
        let path = temp.0.join(SOCKET_NAME);
        let first = bind(&path).unwrap();
        let mode = std::fs::symlink_metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        let error = bind(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("another loopcastd is running at {}", path.display())
        );
        // Nobody listening any more: the file is stale and gets replaced.
        drop(first);
        assert!(path.exists());
        let _second = bind(&path).unwrap();
        // A regular file (or a symlink) at the socket's name is never removed.
        let file = temp.0.join("not-a-socket");
        std::fs::write(&file, b"keep me").unwrap();
        let error = bind(&file).unwrap_err();
        assert!(matches!(error, PlaceError::NotSocket { .. }), "{error}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        let link = temp.0.join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            bind(&link).unwrap_err(),
            PlaceError::NotSocket { .. }
        ));
    }

    #[test]
    fn client_checks_socket_and_directory() {
        let temp = TempDir::new("client");
        let uid = effective_uid();
        let path = temp.0.join(SOCKET_NAME);
        let error = check_trusted_socket(&path, uid).unwrap_err();
        assert!(matches!(error, PlaceError::Missing { .. }), "{error}");
        let _listener = bind(&path).unwrap();
        check_trusted_socket(&path, uid).unwrap();
        // Relative paths are checked against the current directory's entry.
        assert_eq!(socket_directory(Path::new("x.sock")), Path::new("."));
        // A world-writable directory without the sticky bit: anyone could swap the socket.
        chmod(&temp.0, 0o777);
        let error = check_trusted_socket(&path, uid).unwrap_err();
        assert!(matches!(error, PlaceError::Writable { .. }), "{error}");
        // With the sticky bit (like /tmp) others cannot replace our entry.
        chmod(&temp.0, 0o1777);
        check_trusted_socket(&path, uid).unwrap();
        chmod(&temp.0, 0o700);
        // A symlink to a good socket is refused: the check is on the name used.
        let link = temp.0.join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let error = check_trusted_socket(&link, uid).unwrap_err();
        assert!(matches!(error, PlaceError::Symlink { .. }), "{error}");
        // A regular file is not a socket.
        let file = temp.0.join("file.sock");
        std::fs::write(&file, b"").unwrap();
        let error = check_trusted_socket(&file, uid).unwrap_err();
        assert!(matches!(error, PlaceError::NotSocket { .. }), "{error}");
        // Another owner (claimed, see another_owner_is_refused): refused unless it is root's.
        if uid != 0 {
            let error = check_trusted_socket(&path, uid.wrapping_add(12345)).unwrap_err();
            assert!(matches!(error, PlaceError::Owner { .. }), "{error}");
        }
    }
}
