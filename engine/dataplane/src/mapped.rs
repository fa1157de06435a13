//! Archives mapped into memory for sending: all channels of a file share one page-cache copy.

use std::fs::File;
use std::path::Path;

pub struct MappedArchive {
    map: memmap2::Mmap,
}

impl MappedArchive {
    /// Maps a published archive read-only.
    ///
    /// Archives are published by rename after fsync and never modified in place by loopcast;
    /// an operator truncating a served archive would make reads of the cut range fault (SIGBUS),
    /// which is why the media database must be written only through `loopcast pack`.
    pub fn map(file: &File, path: &Path) -> std::io::Result<MappedArchive> {
        // SAFETY: the map is read-only and private to this process; the file is an immutable,
        // published archive (see above), so the bytes do not change under us.
        let map = unsafe { memmap2::MmapOptions::new().map(file) }.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot map {}: {e}", path.display()))
        })?;
        #[cfg(target_os = "linux")]
        {
            // Sending walks the file sequentially and loops: ask for read-ahead.
            let _ = map.advise(memmap2::Advice::Sequential);
        }
        Ok(MappedArchive { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}
