//! Records of archives whose whole tree was checked (`loopcastd check`, or a server's own check
//! on channel open), so that a restart or a second server does not hash the same unchanged
//! archive again before it serves it.
//!
//! The records live beside the archives, in `<media>/.loopcast-verified`, one line per archive:
//!
//! ```text
//! loopcast-verified 1
//! <root, 64 hex> <bytes> <device> <inode> <mtime s.ns> <ctime s.ns> <file name>
//! ```
//!
//! A record vouches for an archive only while every one of those still matches what `stat`
//! says and the root its header names. The change time (ctime) cannot be set by a process: any
//! write, truncation or rename of the file moves it, so an archive changed after its check is
//! never taken on an old record. What a record cannot see is the disk itself losing the bytes
//! (bit rot under an unchanged inode): the periodic re-check of served archives
//! (`ARCHIVE_REVERIFY_INTERVAL` in the server) still runs for that.
//!
//! The file is input like any other: at most `RECORDS_BYTES_MAX`, a regular file, and a line
//! that does not parse is counted and ignored (its archive is simply checked again).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use loopcast_proto::info::RootHash;

pub const RECORDS_FILE: &str = ".loopcast-verified";
const HEADER: &str = "loopcast-verified 1";
/// 4 MiB: some 20,000 archives' records; a larger file is not read (every archive is
/// checked again, as without records).
pub const RECORDS_BYTES_MAX: u64 = 4 << 20;

/// A file as it is on disk: any write, truncation or replacement changes one of these (the
/// change time cannot be put back by a process). The server's key of a served archive, and
/// the part of a record that says the bytes are the ones checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OnDisk {
    pub len: u64,
    pub device: u64,
    pub inode: u64,
    pub modified: (i64, i64),
    pub changed: (i64, i64),
}

impl OnDisk {
    pub fn of(metadata: &std::fs::Metadata) -> OnDisk {
        OnDisk {
            len: metadata.len(),
            device: metadata.dev(),
            inode: metadata.ino(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// What a check saw of an archive: its root and the identity of the bytes on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub root: RootHash,
    pub on_disk: OnDisk,
}

impl Stamp {
    /// The stamp of `path` as it is now, for an archive whose header names `root`.
    pub fn of(path: &Path, root: RootHash) -> std::io::Result<Stamp> {
        Ok(Stamp::of_metadata(&std::fs::metadata(path)?, root))
    }

    /// The stamp of the open `file`, if `path` still names that very file (same device and
    /// inode): what a check of the bytes read through `file` may be recorded under, and what
    /// a record must match before the bytes served through `file` are taken on it. Checking
    /// by path and reading by descriptor could otherwise describe two different files (one
    /// renamed over the name in between).
    pub fn of_open(path: &Path, file: &std::fs::File, root: RootHash) -> Option<Stamp> {
        let open = Stamp::of_metadata(&file.metadata().ok()?, root);
        let named = std::fs::metadata(path).ok()?;
        (named.dev() == open.on_disk.device && named.ino() == open.on_disk.inode).then_some(open)
    }

    fn of_metadata(metadata: &std::fs::Metadata, root: RootHash) -> Stamp {
        Stamp {
            root,
            on_disk: OnDisk::of(metadata),
        }
    }

    fn to_line(&self, file: &str) -> String {
        format!(
            "{} {} {} {} {}.{:09} {}.{:09} {}",
            self.root.to_hex(),
            self.on_disk.len,
            self.on_disk.device,
            self.on_disk.inode,
            self.on_disk.modified.0,
            self.on_disk.modified.1,
            self.on_disk.changed.0,
            self.on_disk.changed.1,
            file
        )
    }

    fn parse_line(line: &str) -> Option<(String, Stamp)> {
        let mut fields = line.splitn(7, ' ');
        let root = RootHash::from_hex(fields.next()?)?;
        let len = fields.next()?.parse().ok()?;
        let device = fields.next()?.parse().ok()?;
        let inode = fields.next()?.parse().ok()?;
        let time = |text: &str| -> Option<(i64, i64)> {
            let (seconds, nanos) = text.split_once('.')?;
            let nanos: i64 = nanos.parse().ok()?;
            (0..1_000_000_000).contains(&nanos).then_some(())?;
            Some((seconds.parse().ok()?, nanos))
        };
        let modified = time(fields.next()?)?;
        let changed = time(fields.next()?)?;
        let file = fields.next()?;
        if !is_plain_file_name(file) {
            return None;
        }
        Some((
            file.to_owned(),
            Stamp {
                root,
                on_disk: OnDisk {
                    len,
                    device,
                    inode,
                    modified,
                    changed,
                },
            },
        ))
    }
}

/// A name directly in the media directory: no separator, not `.`/`..`, no line break.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\n', '\r', '\0'])
}

/// The records of one media directory, as last read or written.
pub struct VerifiedRecords {
    dir: PathBuf,
    by_file: HashMap<String, Stamp>,
    /// The records file as it was when read: `refresh` reads it again only when that changes
    /// (`loopcastd check` ran while the server serves). The ctime too, because a rewrite of
    /// the same length can reuse the old file's inode number.
    seen: Option<OnDisk>,
    /// Lines that did not parse at the last read.
    pub malformed: usize,
    /// This process's records and removals not yet saved: `save` applies them to the file
    /// as it is then, so a record another writer (a server, `loopcastd check`) added since
    /// this one read the file is kept, and one it removed (a failed check) stays removed.
    changes: Vec<(String, Option<Stamp>)>,
}

impl VerifiedRecords {
    /// The records of `dir` (none if the file is missing, too large or unreadable; that is
    /// logged, and every archive is then checked as if never recorded).
    pub fn load(dir: &Path) -> VerifiedRecords {
        let mut records = VerifiedRecords {
            dir: dir.to_owned(),
            by_file: HashMap::new(),
            seen: None,
            malformed: 0,
            changes: Vec::new(),
        };
        records.refresh();
        records
    }

    fn path(&self) -> PathBuf {
        self.dir.join(RECORDS_FILE)
    }

    /// Reads the file again if it changed since the last read.
    pub fn refresh(&mut self) {
        let path = self.path();
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) => {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %error, "records of checked archives not read");
                }
                self.by_file.clear();
                self.seen = None;
                return;
            }
        };
        let seen = OnDisk::of(&metadata);
        if self.seen.as_ref() == Some(&seen) {
            return;
        }
        self.seen = Some(seen);
        self.by_file.clear();
        self.malformed = 0;
        if !metadata.file_type().is_file() || metadata.len() > RECORDS_BYTES_MAX {
            tracing::warn!(path = %path.display(), bytes = metadata.len(), "records of checked archives ignored: not a regular file of at most 4 MiB");
            return;
        }
        // Read through a descriptor that is what was just looked at: no symlink followed, no
        // wait on a FIFO (the name can be given another file in between), no more than the
        // limit whatever it has grown to.
        let read = (|| {
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)?;
            let opened = file.metadata()?;
            if !opened.file_type().is_file() || opened.ino() != metadata.ino() {
                return Err(std::io::Error::other("replaced while it was read"));
            }
            let mut bytes = Vec::new();
            file.take(RECORDS_BYTES_MAX).read_to_end(&mut bytes)?;
            Ok(bytes)
        })();
        let text = match read {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => {
                // Read again at the next refresh.
                self.seen = None;
                tracing::warn!(path = %path.display(), %error, "records of checked archives not read");
                return;
            }
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            tracing::warn!(path = %path.display(), "records of checked archives ignored: not a `{HEADER}` file");
            return;
        }
        for line in lines {
            match Stamp::parse_line(line) {
                Some((file, stamp)) => {
                    self.by_file.insert(file, stamp);
                }
                None => self.malformed += 1,
            }
        }
        if self.malformed > 0 {
            tracing::warn!(path = %path.display(), lines = self.malformed, "records of checked archives: lines ignored (their archives are checked again)");
        }
    }

    /// True if a record says `path` (an archive of this directory whose header names `root`)
    /// was checked whole and has not changed since.
    pub fn vouches_for(&self, path: &Path, root: RootHash) -> bool {
        let Some(recorded) = file_name(path).and_then(|name| self.by_file.get(name)) else {
            return false;
        };
        Stamp::of(path, root).is_ok_and(|now| &now == recorded)
    }

    /// As `vouches_for`, for the bytes of the open `file` that `path` names (`Stamp::of_open`).
    pub fn vouches_for_open(&self, path: &Path, file: &std::fs::File, root: RootHash) -> bool {
        let Some(recorded) = file_name(path).and_then(|name| self.by_file.get(name)) else {
            return false;
        };
        Stamp::of_open(path, file, root).is_some_and(|now| &now == recorded)
    }

    /// True if there is a record for `path`'s name, whether or not it still vouches for it.
    pub fn is_recorded(&self, path: &Path) -> bool {
        file_name(path).is_some_and(|name| self.by_file.contains_key(name))
    }

    /// Records `path` as checked whole, as it is now.
    pub fn insert(&mut self, path: &Path, stamp: Stamp) {
        if let Some(name) = file_name(path).filter(|n| is_plain_file_name(n)) {
            self.by_file.insert(name.to_owned(), stamp.clone());
            self.changes.push((name.to_owned(), Some(stamp)));
        }
    }

    /// Forgets `path` (it failed its check, or is gone).
    pub fn remove(&mut self, path: &Path) {
        if let Some(name) = file_name(path) {
            self.by_file.remove(name);
            self.changes.push((name.to_owned(), None));
        }
    }

    pub fn len(&self) -> usize {
        self.by_file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_file.is_empty()
    }

    /// Writes the records: a new file beside the old one, synced, then renamed over it, so a
    /// reader sees the old records or the new ones, never a mix. Records of archives no longer
    /// in the directory are dropped. Records another process wrote since the last read
    /// (`loopcastd check` while a server checks, or the reverse) are kept, except those this
    /// one removed since: a save does not undo another's work.
    pub fn save(&mut self) -> std::io::Result<()> {
        // Another writer's records since our last read, with ours applied on top.
        self.refresh();
        for (name, change) in &self.changes {
            match change {
                Some(stamp) => self.by_file.insert(name.clone(), stamp.clone()),
                None => self.by_file.remove(name),
            };
        }
        self.by_file
            .retain(|name, _| self.dir.join(name).symlink_metadata().is_ok());
        let mut names: Vec<&String> = self.by_file.keys().collect();
        names.sort();
        let mut text = format!("{HEADER}\n");
        for name in names {
            text.push_str(&self.by_file[name].to_line(name));
            text.push('\n');
        }
        let path = self.path();
        // Named afresh each time: one left by a killed process (in a container, often with
        // the same process id) must not stop every later save.
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let temporary = self.dir.join(format!(
            "{RECORDS_FILE}.{}.{:016x}.tmp",
            std::process::id(),
            u64::from_ne_bytes(nonce)
        ));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written?;
        self.changes.clear();
        if let Ok(metadata) = std::fs::symlink_metadata(&path) {
            self.seen = Some(OnDisk::of(&metadata));
        }
        Ok(())
    }
}

/// One archive's outcome in `check_directory`.
pub struct Checked {
    pub file: String,
    pub bytes: u64,
    pub seconds: f64,
    /// Not hashed: asked to skip recorded archives, and its record still vouches for it.
    pub skipped: bool,
    /// `Err` says why the archive is not good to serve, or could not be checked.
    pub outcome: Result<(), CheckFailure>,
}

/// Why `check_directory` did not record an archive.
#[derive(Debug)]
pub enum CheckFailure {
    /// Its bytes do not hash to its root (or its header is damaged): servers refuse it.
    Corrupt(String),
    /// It could not be read (permissions, I/O errors): nothing is known of its bytes.
    Unreadable(String),
    /// It changed while it was hashed.
    Changed,
}

impl CheckFailure {
    /// The reason without the archive's path: `Checked::file` names it (the line read
    /// "film.lca: CORRUPT: /srv/media/film.lca is corrupt: ...").
    fn of(error: loopcast_archive::ArchiveError) -> CheckFailure {
        match error {
            loopcast_archive::ArchiveError::Io { .. } => CheckFailure::Unreadable(error.reason()),
            other => CheckFailure::Corrupt(other.reason()),
        }
    }
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckFailure::Corrupt(why) => write!(f, "CORRUPT: {why}"),
            CheckFailure::Unreadable(why) => write!(f, "UNREADABLE: {why}"),
            CheckFailure::Changed => write!(f, "CHANGED while it was checked: check it again"),
        }
    }
}

/// `loopcastd check`: every `*.lca` archive of `dir` hashed whole against the root its header
/// names, in name order, across all cores; each good one recorded (the records are written
/// at most every `SAVE_EVERY` and after the last archive, so an interrupted check keeps all but
/// its last second's work), each bad one forgotten.
/// `each` hears of every archive as it is done. With `skip_recorded`, an archive whose record
/// still vouches for it (same size, device, inode, mtime and ctime as when it was checked) is
/// not hashed again (`Checked::skipped`). The error is the directory's, or the records file's
/// if it could not be written (the outcomes are then still in the error's message).
pub fn check_directory(
    dir: &Path,
    skip_recorded: bool,
    mut each: impl FnMut(&Checked),
) -> Result<Vec<Checked>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read media directory {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("lca"))
        .collect();
    files.sort();
    let mut records = VerifiedRecords::load(dir);
    let mut outcomes = Vec::new();
    let mut save_error = None;
    let save_failed = |error: std::io::Error| {
        format!(
            "cannot record the checks in {}: {error} (servers will hash the archives this run checked again when they open them)",
            dir.join(RECORDS_FILE).display()
        )
    };
    let count = files.len();
    let mut unsaved = false;
    let mut saved_at = std::time::Instant::now();
    for (index, path) in files.into_iter().enumerate() {
        let started = std::time::Instant::now();
        let mut bytes = 0;
        let mut skipped = false;
        let outcome = (|| {
            let archive = loopcast_archive::ArchiveFile::open(&path).map_err(CheckFailure::of)?;
            let root = archive.info().root();
            let before =
                Stamp::of_open(&path, archive.file(), root).ok_or(CheckFailure::Changed)?;
            bytes = before.on_disk.len;
            if skip_recorded && records.vouches_for_open(&path, archive.file(), root) {
                skipped = true;
                return Ok(before);
            }
            archive
                .verify_with(&loopcast_dataplane::hash_lanes::hash_many)
                .map_err(CheckFailure::of)?;
            if Stamp::of_open(&path, archive.file(), root).as_ref() != Some(&before) {
                return Err(CheckFailure::Changed);
            }
            Ok(before)
        })();
        match &outcome {
            Ok(_) if skipped => {}
            Ok(stamp) => records.insert(&path, stamp.clone()),
            Err(_) => records.remove(&path),
        }
        // A skipped archive changed no record: no write (a save stats every record and syncs,
        // so saving after each skip made --skip-recorded quadratic in the archives, and it
        // failed in a media directory it had no need to write). The others are saved at most
        // every `SAVE_EVERY` and after the last (after each, a full check of many small
        // archives was quadratic too); an interrupted check loses at most that much.
        unsaved |= !skipped;
        let last = index + 1 == count;
        if unsaved && (last || saved_at.elapsed() >= SAVE_EVERY) {
            if let Err(error) = records.save() {
                save_error.get_or_insert(save_failed(error));
            }
            unsaved = false;
            saved_at = std::time::Instant::now();
        }
        let checked = Checked {
            file: file_name(&path).unwrap_or("?").to_owned(),
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            skipped,
            outcome: outcome.map(|_| ()),
        };
        each(&checked);
        outcomes.push(checked);
    }
    match save_error {
        Some(error) => Err(error),
        None => Ok(outcomes),
    }
}

/// `check_directory` saves its records at most this often (and after the last archive).
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn archive(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A media directory with archives a.lca, b.lca and c.lca, and a root for their records.
    fn three_archives() -> (tempfile::TempDir, RootHash, [PathBuf; 3]) {
        let dir = tempfile::tempdir().unwrap();
        let paths = ["a", "b", "c"]
            .map(|name| archive(dir.path(), &format!("{name}.lca"), name.as_bytes()));
        (dir, RootHash([3; 32]), paths)
    }

    #[test]
    fn a_record_vouches_for_the_unchanged_archive_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootHash([7; 32]);
        let path = archive(dir.path(), "film.bin.lca", b"archive bytes");
        let mut records = VerifiedRecords::load(dir.path());
        assert!(records.is_empty());
        records.insert(&path, Stamp::of(&path, root).unwrap());
        records.save().unwrap();

        // A server started later reads the record.
        let records = VerifiedRecords::load(dir.path());
        assert!(records.vouches_for(&path, root));
        assert!(
            !records.vouches_for(&path, RootHash([8; 32])),
            "a header that names another root"
        );

        // Rewritten with the same bytes and its mtime put back: the ctime still moved.
        let before = std::fs::metadata(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"archive bytes").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(before.modified().unwrap())
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mtime(), before.mtime());
        assert!(!records.vouches_for(&path, root), "changed after the check");

        // Replaced by another file of the same name.
        std::fs::remove_file(&path).unwrap();
        assert!(!records.vouches_for(&path, root));
    }

    /// Checked or served through a descriptor, named by a path: a record is taken (or made)
    /// only for the file the path still names.
    #[test]
    fn a_record_vouches_for_an_open_file_only_while_its_name_still_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootHash([9; 32]);
        let path = archive(dir.path(), "film.lca", b"good bytes");
        let open = std::fs::File::open(&path).unwrap();
        let stamp = Stamp::of_open(&path, &open, root).unwrap();
        let mut records = VerifiedRecords::load(dir.path());
        records.insert(&path, stamp);
        assert!(records.vouches_for_open(&path, &open, root));
        // Another file renamed over the name: neither the open one nor the new one is vouched
        // for, and no stamp is given for the open one under that name.
        let other = archive(dir.path(), "other", b"bad bytes!");
        std::fs::rename(&other, &path).unwrap();
        assert!(!records.vouches_for_open(&path, &open, root));
        assert!(Stamp::of_open(&path, &open, root).is_none());
        let new = std::fs::File::open(&path).unwrap();
        assert!(!records.vouches_for_open(&path, &new, root));
    }

    #[test]
    fn a_hostile_or_damaged_records_file_vouches_for_nothing_and_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootHash([1; 32]);
        let path = archive(dir.path(), "a.lca", b"x");
        let good = Stamp::of(&path, root).unwrap().to_line("a.lca");
        let cases: Vec<Vec<u8>> = vec![
            good.clone().into_bytes(),                       // no header
            format!("loopcast-verified 2\n{good}\n").into(), // another version
            format!("{HEADER}\n{}\n", good.replace(' ', "  ")).into(),
            format!("{HEADER}\n{}\n", &good[..good.len() - 3]).into(), // truncated name
            format!("{HEADER}\n{}/../a.lca\n", &good[..good.len() - 5]).into(),
            vec![0xff; 300],
        ];
        for case in cases {
            std::fs::write(dir.path().join(RECORDS_FILE), &case).unwrap();
            let records = VerifiedRecords::load(dir.path());
            assert!(
                !records.vouches_for(&path, root),
                "{:?}",
                String::from_utf8_lossy(&case)
            );
        }
        // Too large: not read at all.
        let mut large = format!("{HEADER}\n{good}\n").into_bytes();
        large.resize(RECORDS_BYTES_MAX as usize + 1, b'\n');
        std::fs::write(dir.path().join(RECORDS_FILE), &large).unwrap();
        assert!(!VerifiedRecords::load(dir.path()).vouches_for(&path, root));
        // A symlink to a good file: not followed.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("r"), format!("{HEADER}\n{good}\n")).unwrap();
        std::fs::remove_file(dir.path().join(RECORDS_FILE)).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("r"), dir.path().join(RECORDS_FILE))
            .unwrap();
        assert!(!VerifiedRecords::load(dir.path()).vouches_for(&path, root));
        // The good file itself does.
        std::fs::remove_file(dir.path().join(RECORDS_FILE)).unwrap();
        std::fs::write(dir.path().join(RECORDS_FILE), format!("{HEADER}\n{good}\n")).unwrap();
        assert!(VerifiedRecords::load(dir.path()).vouches_for(&path, root));
    }

    #[test]
    fn refresh_reads_records_written_by_another_process_and_save_drops_missing_archives() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootHash([2; 32]);
        let a = archive(dir.path(), "a.lca", b"a");
        let b = archive(dir.path(), "b b.lca", b"b");
        let mut server = VerifiedRecords::load(dir.path());
        let mut checker = VerifiedRecords::load(dir.path());
        checker.insert(&a, Stamp::of(&a, root).unwrap());
        checker.insert(&b, Stamp::of(&b, root).unwrap());
        checker.save().unwrap();
        assert!(!server.vouches_for(&b, root));
        server.refresh();
        assert!(server.vouches_for(&a, root) && server.vouches_for(&b, root));
        std::fs::remove_file(&a).unwrap();
        server.save().unwrap();
        assert_eq!(VerifiedRecords::load(dir.path()).len(), 1);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// A server that read the records before `loopcastd check` wrote them, then records its
    /// own check: the checker's records stay (the save used to write only what the server
    /// had read, dropping them), and what the server removed stays removed.
    #[test]
    fn a_save_keeps_records_another_process_wrote_since_and_not_those_it_removed() {
        let (dir, root, [a, b, c]) = three_archives();
        let mut server = VerifiedRecords::load(dir.path());
        server.insert(&c, Stamp::of(&c, root).unwrap());
        server.save().unwrap();
        let mut checker = VerifiedRecords::load(dir.path());
        checker.insert(&a, Stamp::of(&a, root).unwrap());
        checker.save().unwrap();
        // The server finds c corrupt and b good, without reading the file again in between.
        server.remove(&c);
        server.insert(&b, Stamp::of(&b, root).unwrap());
        server.save().unwrap();
        let records = VerifiedRecords::load(dir.path());
        assert!(
            records.vouches_for(&a, root),
            "the checker's record was dropped"
        );
        assert!(records.vouches_for(&b, root));
        assert!(!records.vouches_for(&c, root), "a removed record came back");
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn check_tells_an_unreadable_archive_from_a_corrupt_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a directory.lca")).unwrap();
        std::fs::write(dir.path().join("garbage.lca"), vec![0x42u8; 8192]).unwrap();
        let mut seen = Vec::new();
        check_directory(dir.path(), false, |checked| {
            seen.push((checked.file.clone(), format!("{:?}", checked.outcome)))
        })
        .unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[0].0 == "a directory.lca" && seen[0].1.contains("Unreadable"),
            "{seen:?}"
        );
        assert!(
            seen[1].0 == "garbage.lca" && seen[1].1.contains("Corrupt"),
            "{seen:?}"
        );
        assert!(VerifiedRecords::load(dir.path()).is_empty());
    }

    /// Each outcome names the archive once (`Checked::file`), with the reason: the path was in
    /// the reason too ("garbage.lca: CORRUPT: /tmp/.../garbage.lca is not a loopcast archive").
    #[test]
    fn a_check_outcome_gives_the_reason_without_the_path_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a directory.lca")).unwrap();
        std::fs::write(dir.path().join("garbage.lca"), vec![0x42u8; 8192]).unwrap();
        let mut lines = Vec::new();
        check_directory(dir.path(), false, |checked| {
            if let Err(failure) = &checked.outcome {
                lines.push(format!("{}: {failure}", checked.file));
            }
        })
        .unwrap();
        assert_eq!(
            lines,
            [
                "a directory.lca: UNREADABLE: cannot read it: Is a directory (os error 21)",
                "garbage.lca: CORRUPT: not a loopcast archive (bad magic)",
            ]
        );
        let directory = dir.path().display().to_string();
        assert!(
            lines.iter().all(|line| !line.contains(&directory)),
            "{lines:?}"
        );
    }

    #[test]
    fn a_leftover_temporary_with_our_process_id_does_not_stop_records_being_written() {
        // A process killed between creating its temporary and renaming it leaves it behind;
        // in a container the next run often has the same process id.
        let dir = tempfile::tempdir().unwrap();
        let root = RootHash([3; 32]);
        let a = archive(dir.path(), "a.lca", b"a");
        let leftover = dir
            .path()
            .join(format!("{RECORDS_FILE}.{}.tmp", std::process::id()));
        std::fs::write(&leftover, b"half written").unwrap();
        let mut records = VerifiedRecords::load(dir.path());
        records.insert(&a, Stamp::of(&a, root).unwrap());
        records.save().unwrap();
        assert!(VerifiedRecords::load(dir.path()).vouches_for(&a, root));
    }

    #[test]
    fn two_writers_keep_each_other_s_records_and_a_removed_one_stays_removed() {
        // A server and `loopcastd check` on one media directory, each with the records it read.
        let (dir, root, [a, b, c]) = three_archives();
        let mut first = VerifiedRecords::load(dir.path());
        first.insert(&a, Stamp::of(&a, root).unwrap());
        first.save().unwrap();
        let mut server = VerifiedRecords::load(dir.path());
        let mut check = VerifiedRecords::load(dir.path());
        // The check finds `a` damaged (bit rot: its stamp unchanged) and records `b`.
        check.remove(&a);
        check.insert(&b, Stamp::of(&b, root).unwrap());
        check.save().unwrap();
        // The server then records its own check of `c`, from the records it read before.
        server.insert(&c, Stamp::of(&c, root).unwrap());
        server.save().unwrap();
        let now = VerifiedRecords::load(dir.path());
        assert!(
            !now.vouches_for(&a, root),
            "the damaged archive is vouched for again"
        );
        assert!(now.vouches_for(&b, root), "the check's record was lost");
        assert!(now.vouches_for(&c, root), "the server's record was lost");
    }

    #[test]
    fn a_records_file_swapped_for_a_fifo_while_it_is_read_does_not_hang_the_reader() {
        // The type is looked at, then the file read by name: a FIFO renamed into place in
        // between blocked the server's loop in open() until someone wrote to it.
        let dir = tempfile::tempdir().unwrap();
        let records_path = dir.path().join(RECORDS_FILE);
        let regular = dir.path().join("regular");
        // FIFOs made up front (one mkfifo), each renamed into place in turn.
        let fifos: Vec<PathBuf> = (0..3000)
            .map(|i| dir.path().join(format!("fifo-{i}")))
            .collect();
        let made = std::process::Command::new("mkfifo")
            .args(&fifos)
            .status()
            .unwrap();
        assert!(made.success());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (records_path, regular, stop) =
                (records_path.clone(), regular.clone(), stop.clone());
            std::thread::spawn(move || {
                for (turn, fifo) in fifos.iter().enumerate() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    std::fs::write(&regular, format!("{HEADER}\n{turn}\n")).unwrap();
                    std::fs::rename(&regular, &records_path).unwrap();
                    std::fs::rename(fifo, &records_path).unwrap();
                }
            })
        };
        let (done, finished) = std::sync::mpsc::channel();
        let reader_dir = dir.path().to_owned();
        std::thread::spawn(move || {
            let mut records = VerifiedRecords::load(&reader_dir);
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_millis(1500) {
                records.refresh();
            }
            let _ = done.send(());
        });
        let outcome = finished.recv_timeout(std::time::Duration::from_secs(5));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        if outcome.is_err() {
            // Free the reader: a writer on the FIFO it waits on.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&records_path);
            panic!("refresh blocked on a FIFO put in place of the records file");
        }
    }

    proptest! {
        #[test]
        fn any_line_parses_or_is_refused_without_panic(line in ".{0,200}") {
            let _ = Stamp::parse_line(&line);
        }

        #[test]
        fn a_written_line_reads_back(
            root in any::<[u8; 32]>(), len in any::<u64>(), device in any::<u64>(),
            inode in any::<u64>(), ms in any::<i64>(), mn in 0i64..1_000_000_000,
            cs in any::<i64>(), cn in 0i64..1_000_000_000, name in "[^/\n\r\0]{1,40}",
        ) {
            prop_assume!(is_plain_file_name(&name));
            let on_disk = OnDisk { len, device, inode, modified: (ms, mn), changed: (cs, cn) };
            let stamp = Stamp { root: RootHash(root), on_disk };
            prop_assert_eq!(Stamp::parse_line(&stamp.to_line(&name)), Some((name.clone(), stamp)));
        }
    }
}
