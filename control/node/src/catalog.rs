//! The media database directory: every `*.lca` archive in it, by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use loopcast_archive::ArchiveFile;
use loopcast_proto::wire::fleet::CatalogEntry;

pub struct Catalog {
    dir: PathBuf,
    by_name: HashMap<String, PathBuf>,
    /// What a heartbeat announces of each archive (R15).
    entries: Vec<CatalogEntry>,
    /// Archives skipped as unreadable, with their modification time then: warned about once,
    /// not at every rescan (requests for unknown names rescan up to once a second).
    skipped: HashMap<PathBuf, Option<std::time::SystemTime>>,
    /// Whether a scan has run: the first one's archives are counted in the start line, not
    /// each logged as new.
    scanned: bool,
}

/// What one rescan found changed, for the log (an operator sees a newly packed file picked up).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CatalogChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, another root: the archive was replaced.
    pub replaced: Vec<String>,
}

impl Catalog {
    pub fn new(dir: &Path) -> Catalog {
        Catalog {
            dir: dir.to_owned(),
            by_name: HashMap::new(),
            entries: Vec::new(),
            skipped: HashMap::new(),
            scanned: false,
        }
    }

    /// Rescans the directory. Unreadable or damaged archives are skipped and logged once (again
    /// if they change); after the first scan, archives that appeared, went or were replaced are
    /// logged.
    pub fn rescan(&mut self) -> std::io::Result<usize> {
        let changes = self.rescan_changes()?;
        for name in &changes.added {
            tracing::info!(file = %name, path = %self.by_name[name].display(), "archive found in the media directory: now served");
        }
        for name in &changes.replaced {
            tracing::info!(file = %name, path = %self.by_name[name].display(), "archive replaced in the media directory: new requests get the new one");
        }
        for name in &changes.removed {
            tracing::info!(file = %name, "archive gone from the media directory: no longer offered");
        }
        Ok(self.by_name.len())
    }

    /// `rescan`, returning what changed since the last scan (nothing on the first).
    pub fn rescan_changes(&mut self) -> std::io::Result<CatalogChanges> {
        let mut by_name = HashMap::new();
        let mut entries: HashMap<String, CatalogEntry> = HashMap::new();
        let mut skipped = HashMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("lca") {
                continue;
            }
            match ArchiveFile::open(&path) {
                Ok(archive) => {
                    let name = archive.info().name.clone();
                    entries.insert(
                        name.clone(),
                        CatalogEntry {
                            name: name.clone(),
                            root: archive.info().root(),
                            bytes: archive.info().original_size,
                        },
                    );
                    if let Some(previous) = by_name.insert(name.clone(), path.clone()) {
                        tracing::warn!(%name, first = %previous.display(), second = %path.display(), "two archives share a name; serving the second");
                    }
                }
                Err(error) => {
                    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                    if self.skipped.get(&path) != Some(&modified) {
                        tracing::warn!(path = %path.display(), %error, "skipping archive: it cannot be served (this server says so again only if the file changes)");
                    }
                    skipped.insert(path, modified);
                }
            }
        }
        let mut entries: Vec<CatalogEntry> = entries.into_values().collect();
        // Sorted once here: listings and heartbeats need name order.
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut changes = CatalogChanges::default();
        if self.scanned {
            for entry in &entries {
                match self.root_of(&entry.name) {
                    None => changes.added.push(entry.name.clone()),
                    Some(root) if root != entry.root => changes.replaced.push(entry.name.clone()),
                    Some(_) => {}
                }
            }
            changes.removed = (self.entries.iter())
                .filter(|old| !by_name.contains_key(&old.name))
                .map(|old| old.name.clone())
                .collect();
        }
        self.scanned = true;
        self.by_name = by_name;
        self.entries = entries;
        self.skipped = skipped;
        Ok(changes)
    }

    pub fn lookup(&self, name: &str) -> Option<&Path> {
        self.by_name.get(name).map(PathBuf::as_path)
    }

    /// Every archive's name, root and original size, sorted by name, as of the last scan.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The root of the archive named `name`, as of the last scan.
    pub fn root_of(&self, name: &str) -> Option<loopcast_proto::info::RootHash> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|index| self.entries[index].root)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs `content` as the file `name` into `dir/<archive>`, replacing what is there.
    fn pack(dir: &Path, archive: &str, name: &str, content: &[u8]) {
        let input = dir.join(format!("{archive}.input"));
        std::fs::write(&input, content).unwrap();
        let options = loopcast_archive::PackOptions {
            name: name.into(),
            frame_raw_size: 1 << 16,
            datagram_size: loopcast_proto::info::DATAGRAM_SIZE_MTU_1500,
            compression_level: 0,
            master_key: None,
            watermark: None,
        };
        let output = dir.join(archive);
        let overwrite = loopcast_archive::Overwrite::Replace;
        loopcast_archive::pack(&input, &output, &options, overwrite, &|_| {}).unwrap();
        std::fs::remove_file(input).unwrap();
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// An operator who packs, replaces or removes an archive under a running server sees what
    /// was picked up; the first scan (counted in the start line) and scans that find nothing
    /// new report nothing; a damaged archive is skipped, not served.
    #[test]
    fn rescans_report_archives_added_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        pack(dir.path(), "a.lca", "a", b"first a");
        pack(dir.path(), "b.lca", "b", b"first b");
        std::fs::write(dir.path().join("broken.lca"), b"not an archive").unwrap();
        let mut catalog = Catalog::new(dir.path());
        assert_eq!(catalog.rescan_changes().unwrap(), CatalogChanges::default());
        assert_eq!(catalog.len(), 2, "the damaged archive is not served");
        assert_eq!(catalog.rescan_changes().unwrap(), CatalogChanges::default());

        pack(dir.path(), "c.lca", "c", b"new c");
        pack(dir.path(), "b.lca", "b", b"second b");
        std::fs::remove_file(dir.path().join("a.lca")).unwrap();
        let changes = catalog.rescan_changes().unwrap();
        assert_eq!(
            changes,
            CatalogChanges {
                added: names(&["c"]),
                removed: names(&["a"]),
                replaced: names(&["b"]),
            }
        );
        assert_eq!(catalog.lookup("a"), None);
        assert_eq!(
            catalog.lookup("c"),
            Some(dir.path().join("c.lca").as_path())
        );
        assert_eq!(catalog.rescan_changes().unwrap(), CatalogChanges::default());
    }
}
