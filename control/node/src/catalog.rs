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
}

impl Catalog {
    pub fn new(dir: &Path) -> Catalog {
        Catalog {
            dir: dir.to_owned(),
            by_name: HashMap::new(),
            entries: Vec::new(),
        }
    }

    /// Rescans the directory. Unreadable or damaged archives are logged and skipped.
    pub fn rescan(&mut self) -> std::io::Result<usize> {
        let mut by_name = HashMap::new();
        let mut entries: HashMap<String, CatalogEntry> = HashMap::new();
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
                Err(error) => tracing::warn!(%error, "skipping archive"),
            }
        }
        self.by_name = by_name;
        self.entries = entries.into_values().collect();
        // Sorted once here: listings and heartbeats need name order.
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(self.by_name.len())
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
