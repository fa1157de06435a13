//! loopcast's databases. For now: the key database (R2), one SQLite file holding each
//! file's master key by file id. Created with mode 0600; keys never enter an archive.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use loopcast_archive::MasterKey;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open key database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("key database {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key database {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("key database {path} has no key for file {file_id}")]
    NoKey { path: PathBuf, file_id: String },
    #[error("key database {path} holds a damaged key for file {file_id}")]
    BadKey { path: PathBuf, file_id: String },
}

pub struct KeyStore {
    path: PathBuf,
    connection: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS file_keys (
    file_id    TEXT PRIMARY KEY,   -- 16 hex digits, as in the archive's file info
    name       TEXT NOT NULL,
    master_key BLOB NOT NULL CHECK (length(master_key) = 32),
    created_at INTEGER NOT NULL    -- unix seconds
);
";

impl KeyStore {
    /// Opens the key database, creating it (mode 0600) if `create` and it does not exist.
    pub fn open(path: &Path, create: bool) -> Result<KeyStore, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        if !path.exists() {
            if !create {
                return Err(open_error("no such file".into()));
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| open_error(e.to_string()))?;
        }
        let mode = std::fs::metadata(path)
            .map_err(|e| open_error(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::Permissions {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(path, flags).map_err(|e| open_error(e.to_string()))?;
        let sql = |source| StoreError::Sql {
            path: path.to_owned(),
            source,
        };
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        connection.execute_batch(SCHEMA).map_err(|e| match e {
            rusqlite::Error::SqliteFailure(_, _) => {
                open_error(format!("not a loopcast key database ({e})"))
            }
            other => sql(other),
        })?;
        Ok(KeyStore {
            path: path.to_owned(),
            connection,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn put(&self, file_id: &str, name: &str, key: &MasterKey) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.connection
            .execute(
                "INSERT INTO file_keys (file_id, name, master_key, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![file_id, name, &key.as_bytes()[..], now],
            )
            .map_err(|source| StoreError::Sql {
                path: self.path.clone(),
                source,
            })?;
        Ok(())
    }

    pub fn get(&self, file_id: &str) -> Result<MasterKey, StoreError> {
        let blob: Option<Vec<u8>> = self
            .connection
            .query_row(
                "SELECT master_key FROM file_keys WHERE file_id = ?1",
                params![file_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| StoreError::Sql {
                path: self.path.clone(),
                source,
            })?;
        let mut blob = blob.ok_or_else(|| StoreError::NoKey {
            path: self.path.clone(),
            file_id: file_id.to_owned(),
        })?;
        let bytes: [u8; 32] = blob.as_slice().try_into().map_err(|_| StoreError::BadKey {
            path: self.path.clone(),
            file_id: file_id.to_owned(),
        })?;
        blob.fill(0);
        Ok(MasterKey::from_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_file_is_private() {
        let dir = std::env::temp_dir().join(format!("loopcast-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.db");
        let _ = std::fs::remove_file(&path);
        let store = KeyStore::open(&path, true).unwrap();
        store
            .put(
                "00000000000000aa",
                "film.mkv",
                &MasterKey::from_bytes([9; 32]),
            )
            .unwrap();
        drop(store);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let store = KeyStore::open(&path, false).unwrap();
        assert_eq!(store.get("00000000000000aa").unwrap().as_bytes(), &[9; 32]);
        assert!(matches!(
            store.get("00000000000000bb"),
            Err(StoreError::NoKey { .. })
        ));
        drop(store);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            KeyStore::open(&path, false),
            Err(StoreError::Permissions { .. })
        ));
        std::fs::write(
            &path,
            b"not sqlite at all, just text that is long enough to be a header",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = KeyStore::open(&path, false).err().unwrap().to_string();
        assert!(
            error.contains("not a loopcast key database") || error.contains("cannot open"),
            "{error}"
        );
        assert!(KeyStore::open(&dir.join("absent.db"), false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
