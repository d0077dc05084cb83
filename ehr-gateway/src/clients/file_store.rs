//! The JSON-file [`ClientStore`]: one file, an OS lock per change, safe for several processes
//! on one machine.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{
    apply_insert, apply_insert_token, apply_update, apply_update_token, parse_json,
    write_private_atomic, ClientChange, ClientRecord, ClientStore, RegistrationTokenChange,
    RegistrationTokenRecord, Registry, RegistryState,
};
use crate::{Error, Result};

/// A [`ClientStore`] in a JSON file (`{"clients": [..]}`, digests only, never secrets).
///
/// Safe for several processes on one machine (the `ehr-gateway` CLI and a running server):
/// every change takes an exclusive OS file lock on `<file>.lock` (beside the file), re-reads
/// the file under it, applies the change and replaces the file atomically (temporary file in
/// the same folder, `fsync`, rename, `fsync` of the folder) with mode `0600` on Unix, so no
/// writer loses another's update. Reads check the file's identity (inode, length,
/// modification and change times) on every call and parse it again when it changed, so a
/// revocation made by another process is refused on the next request. For several machines
/// or replicas use a database-backed store.
pub struct JsonFileClientStore {
    path: PathBuf,
    lock_path: PathBuf,
    write_lock: Mutex<()>,
    /// The registry as last parsed, with the file's identity then: the token endpoint and the
    /// proxy read it on every request.
    cache: std::sync::Mutex<Option<CachedRegistry>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
    #[cfg(unix)]
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
            #[cfg(unix)]
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

struct CachedRegistry {
    stamp: FileStamp,
    state: Arc<RegistryState>,
}

/// Client store files larger than this are refused.
const MAX_STORE_BYTES: u64 = 16 * 1024 * 1024;

/// How long a change waits for another process's lock on the store before failing.
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl fmt::Debug for JsonFileClientStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonFileClientStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// An exclusive lock on the store's lock file, released when dropped (closing the file).
struct FileLock(std::fs::File);

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = fs4::FileExt::unlock(&self.0);
    }
}

impl JsonFileClientStore {
    /// A store in `path`. A missing file is an empty registry (created on the first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut lock_name = path
            .file_name()
            .map(std::ffi::OsStr::to_os_string)
            .unwrap_or_else(|| "clients.json".into());
        lock_name.push(".lock");
        Self {
            lock_path: path.with_file_name(lock_name),
            path,
            write_lock: Mutex::new(()),
            cache: std::sync::Mutex::new(None),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every registered client.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Json`] when the file cannot be read or parsed.
    pub async fn clients(&self) -> Result<Vec<ClientRecord>> {
        Ok(self.snapshot().await?.clients.values().cloned().collect())
    }

    /// The registry, parsed again only when the file's identity changed.
    async fn snapshot(&self) -> Result<Arc<RegistryState>> {
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(RegistryState::default()))
            }
            Err(e) => return Err(Error::io("read", &self.path, e)),
        };
        let stamp = FileStamp::of(&meta);
        if let Ok(cache) = self.cache.lock() {
            if let Some(c) = cache.as_ref().filter(|c| c.stamp == stamp) {
                return Ok(c.state.clone());
            }
        }
        let state = Arc::new(self.read_file().await?);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some(CachedRegistry {
                stamp,
                state: state.clone(),
            });
        }
        Ok(state)
    }

    /// Reads and parses the file (a missing file is an empty registry).
    async fn read_file(&self) -> Result<RegistryState> {
        use tokio::io::AsyncReadExt;
        let file = match tokio::fs::File::open(&self.path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistryState::default())
            }
            Err(e) => return Err(Error::io("read", &self.path, e)),
        };
        // Read at most one byte past the limit, so an oversized file is refused unread.
        let mut bytes = Vec::new();
        file.take(MAX_STORE_BYTES.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::io("read", &self.path, e))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_STORE_BYTES {
            return Err(Error::config(format!(
                "client store `{}` is larger than {MAX_STORE_BYTES} bytes",
                self.path.display()
            )));
        }
        let registry: Registry = parse_json(&self.path, &bytes)?;
        let mut state = RegistryState::default();
        for client in registry.clients {
            apply_insert(&mut state.clients, client, false)?;
        }
        for token in registry.registration_tokens {
            apply_insert_token(&mut state.tokens, token)?;
        }
        Ok(state)
    }

    async fn save(&self, state: RegistryState) -> Result<()> {
        let registry = Registry {
            clients: state.clients.into_values().collect(),
            registration_tokens: state.tokens.into_values().collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&registry)
            .map_err(|_| Error::config("could not serialize the client store"))?;
        bytes.push(b'\n');
        if let Ok(mut cache) = self.cache.lock() {
            *cache = None;
        }
        write_private_atomic(&self.path, &bytes).await
    }

    /// Takes the exclusive OS lock on the lock file, polling (the wait never blocks a runtime
    /// thread) for at most [`LOCK_TIMEOUT`].
    async fn lock_file(&self) -> Result<FileLock> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&self.lock_path)
            .map_err(|e| Error::io("open", &self.lock_path, e))?;
        let deadline = tokio::time::Instant::now() + LOCK_TIMEOUT;
        loop {
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => return Ok(FileLock(file)),
                Err(fs4::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(fs4::TryLockError::WouldBlock) => {
                    return Err(Error::io(
                        "lock",
                        &self.lock_path,
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "another process holds the client store lock",
                        ),
                    ))
                }
                Err(fs4::TryLockError::Error(e)) => {
                    return Err(Error::io("lock", &self.lock_path, e))
                }
            }
        }
    }

    /// Read-modify-write under the in-process lock and the OS file lock, re-reading the file
    /// under the lock. Nothing is written when `change` fails.
    async fn modify<F, T>(&self, change: F) -> Result<T>
    where
        F: FnOnce(&mut RegistryState) -> Result<T> + Send,
        T: Send,
    {
        let _guard = self.write_lock.lock().await;
        let _file_lock = self.lock_file().await?;
        let mut state = self.read_file().await?;
        let out = change(&mut state)?;
        self.save(state).await?;
        Ok(out)
    }
}

#[async_trait::async_trait]
impl ClientStore for JsonFileClientStore {
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        Ok(self.snapshot().await?.clients.get(client_id).cloned())
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>> {
        JsonFileClientStore::clients(self).await
    }

    async fn insert_client(&self, client: ClientRecord) -> Result<()> {
        self.modify(|state| apply_insert(&mut state.clients, client, true))
            .await
    }

    async fn update_client<'a>(
        &'a self,
        client_id: &'a str,
        change: ClientChange<'a>,
    ) -> Result<()> {
        self.modify(|state| apply_update(&mut state.clients, client_id, change))
            .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool> {
        self.modify(|state| Ok(state.clients.remove(client_id).is_some()))
            .await
    }

    async fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRecord>> {
        Ok(self.snapshot().await?.tokens.values().cloned().collect())
    }

    async fn registration_token(&self, token_id: &str) -> Result<Option<RegistrationTokenRecord>> {
        Ok(self.snapshot().await?.tokens.get(token_id).cloned())
    }

    async fn insert_registration_token(&self, token: RegistrationTokenRecord) -> Result<()> {
        self.modify(|state| apply_insert_token(&mut state.tokens, token))
            .await
    }

    async fn update_registration_token<'a>(
        &'a self,
        token_id: &'a str,
        change: RegistrationTokenChange<'a>,
    ) -> Result<()> {
        self.modify(|state| apply_update_token(&mut state.tokens, token_id, change))
            .await
    }
}
