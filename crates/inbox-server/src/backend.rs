//! What differs between the embedded file store and PostgreSQL, chosen once at start: the
//! log, snapshots, the replica registry, and whether a follower must take in other
//! processes' events. The engine and the HTTP layer see only these traits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use inbox_core::SiteId;
use inbox_store::{EventLog, FileLog, PostgresError, PostgresLog, ReadError, Snapshots};

use crate::delivery::{DeliveryStore, FileDelivery, PostgresDelivery};
use crate::keys::{KeyError, write_private};

/// Why the replica registry could not answer or record.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The file store's list (`replica-sites.json`) could not be read or written.
    #[error("the replica list {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The shared database could not be asked or written.
    #[error("the replica registry in the database: {0}")]
    Database(#[from] PostgresError),
    /// Whether the site has events could not be read.
    #[error("reading whether the site has events: {0}")]
    Read(#[from] ReadError),
}

/// What [`ReplicaRegistry::is_replica`] calls when it must know whether the site has events
/// (only a registry that cannot answer from memory does).
pub type HasEvents<'a> = &'a dyn Fn() -> Result<bool, ReadError>;

/// Which sites are replicas of real Wix sites (written only by their webhooks), as opposed
/// to sites this emulator writes. A site is marked before its first replica event is
/// written, so a site that has events and is not marked never will be.
pub trait ReplicaRegistry: Send + Sync {
    /// Whether `site` is a replica. `has_events` says whether the site has events (a "no" is
    /// then final and may be remembered); it is called only when the answer is not already
    /// known.
    fn is_replica(&self, site: &SiteId, has_events: HasEvents<'_>) -> Result<bool, ReplicaError>;
    /// Records, durably, that `site` is a replica.
    fn mark(&self, site: &SiteId) -> Result<(), ReplicaError>;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The file store's registry: `replica-sites.json` in the data directory, all in memory.
pub struct FileReplicas {
    path: PathBuf,
    sites: Mutex<BTreeSet<SiteId>>,
}

impl FileReplicas {
    /// Reads `path` (none yet: no replicas).
    pub fn open(path: PathBuf) -> Result<Self, ReplicaError> {
        let failed = |reason: String| ReplicaError::File {
            path: path.clone(),
            reason,
        };
        let sites = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| failed(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(failed(e.to_string())),
        };
        Ok(FileReplicas {
            path,
            sites: Mutex::new(sites),
        })
    }
}

impl ReplicaRegistry for FileReplicas {
    fn is_replica(&self, site: &SiteId, _: HasEvents<'_>) -> Result<bool, ReplicaError> {
        Ok(lock(&self.sites).contains(site))
    }

    fn mark(&self, site: &SiteId) -> Result<(), ReplicaError> {
        let mut sites = lock(&self.sites);
        if !sites.insert(site.clone()) {
            return Ok(());
        }
        let saved = serde_json::to_vec(&*sites)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                write_private(&self.path, &bytes).map_err(|e: KeyError| e.to_string())
            });
        if let Err(reason) = saved {
            sites.remove(site);
            return Err(ReplicaError::File {
                path: self.path.clone(),
                reason,
            });
        }
        Ok(())
    }
}

/// The shared database's registry: a setting `replica-site:<id>` per replica, which every
/// process reads; answers are remembered (a "yes" always, a "no" once the site has events).
pub struct PostgresReplicas {
    pg: Arc<PostgresLog>,
    replicas: Mutex<BTreeSet<SiteId>>,
    not_replicas: Mutex<BTreeSet<SiteId>>,
}

impl PostgresReplicas {
    /// Reads the replicas the database knows now.
    pub fn open(pg: Arc<PostgresLog>) -> Result<Self, ReplicaError> {
        let replicas = pg
            .setting_names(REPLICA_PREFIX)?
            .into_iter()
            .filter_map(|n| n.strip_prefix(REPLICA_PREFIX).map(SiteId::new))
            .collect();
        Ok(PostgresReplicas {
            pg,
            replicas: Mutex::new(replicas),
            not_replicas: Mutex::new(BTreeSet::new()),
        })
    }
}

const REPLICA_PREFIX: &str = "replica-site:";

impl ReplicaRegistry for PostgresReplicas {
    fn is_replica(&self, site: &SiteId, has_events: HasEvents<'_>) -> Result<bool, ReplicaError> {
        if lock(&self.replicas).contains(site) {
            return Ok(true);
        }
        if lock(&self.not_replicas).contains(site) {
            return Ok(false);
        }
        let marked = self
            .pg
            .setting(&format!("{REPLICA_PREFIX}{}", site.0))?
            .is_some();
        if marked {
            lock(&self.replicas).insert(site.clone());
        } else if has_events()? {
            lock(&self.not_replicas).insert(site.clone());
        }
        Ok(marked)
    }

    fn mark(&self, site: &SiteId) -> Result<(), ReplicaError> {
        self.pg
            .insert_setting(&format!("{REPLICA_PREFIX}{}", site.0), b"")?;
        lock(&self.replicas).insert(site.clone());
        Ok(())
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The file log could not be opened.
    #[error("the event log: {0}")]
    Log(#[from] inbox_store::OpenError),
    /// The snapshot directory could not be used.
    #[error("the snapshot directory: {0}")]
    Snapshots(#[from] inbox_store::SnapshotError),
    /// The replica registry could not be read.
    #[error(transparent)]
    Replicas(#[from] ReplicaError),
}

/// A store the server runs on: its log, its snapshots (if it keeps any), its replica
/// registry, and what keeps a shared log's other writers' events coming in.
pub trait Backend: Send + Sync {
    /// The event log.
    fn log(&self) -> Arc<dyn EventLog>;
    /// Where snapshots go, if this store keeps them.
    fn snapshots(&self) -> Option<Snapshots>;
    /// Which sites are replicas.
    fn replicas(&self) -> Arc<dyn ReplicaRegistry>;
    /// Whether other processes append to the log too.
    fn is_shared(&self) -> bool;
    /// Where the outbox keeps cursors, leases and dead letters.
    fn deliveries(&self) -> std::io::Result<Arc<dyn DeliveryStore>>;
    /// Where the outbox saves what is pending beside each snapshot (a store with snapshots).
    fn pending_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Whether opening the log cut a torn tail (a write a crash interrupted).
    fn torn_tail(&self) -> bool {
        false
    }
    /// Runs until `stop`, calling `take_in` whenever the log may have grown through another
    /// process, and returns; a store only this process writes returns at once.
    fn follow(&self, _take_in: &dyn Fn(), _stop: &AtomicBool) {}
}

/// The embedded file store in a data directory: `log/`, `snapshots/`,
/// `replica-sites.json`.
pub struct FileBackend {
    data: PathBuf,
    log: Arc<FileLog>,
    snapshots: Snapshots,
    replicas: Arc<FileReplicas>,
    torn_tail: bool,
}

impl FileBackend {
    /// Opens (or creates) the store in `data`.
    pub fn open(data: &Path) -> Result<Self, BackendError> {
        let (log, report) = FileLog::open(data.join("log"))?;
        Ok(FileBackend {
            data: data.to_path_buf(),
            log: Arc::new(log),
            snapshots: Snapshots::new(data.join("snapshots"))?,
            replicas: Arc::new(FileReplicas::open(data.join("replica-sites.json"))?),
            torn_tail: report.torn_tail.is_some(),
        })
    }
}

impl Backend for FileBackend {
    fn log(&self) -> Arc<dyn EventLog> {
        self.log.clone()
    }
    fn snapshots(&self) -> Option<Snapshots> {
        Some(self.snapshots.clone())
    }
    fn replicas(&self) -> Arc<dyn ReplicaRegistry> {
        self.replicas.clone()
    }
    fn is_shared(&self) -> bool {
        false
    }
    /// Files in `data/outbox/`.
    fn deliveries(&self) -> std::io::Result<Arc<dyn DeliveryStore>> {
        Ok(Arc::new(FileDelivery::new(self.data.join("outbox"))?))
    }
    fn pending_dir(&self) -> Option<PathBuf> {
        Some(self.data.join("outbox"))
    }
    fn torn_tail(&self) -> bool {
        self.torn_tail
    }
}

/// A PostgreSQL database that several processes share. It keeps no local snapshots: each
/// process replays the database's log at start.
pub struct PostgresBackend {
    pg: Arc<PostgresLog>,
    replicas: Arc<PostgresReplicas>,
}

impl PostgresBackend {
    /// Over a connected database.
    pub fn new(pg: Arc<PostgresLog>) -> Result<Self, BackendError> {
        Ok(PostgresBackend {
            replicas: Arc::new(PostgresReplicas::open(pg.clone())?),
            pg,
        })
    }
}

impl Backend for PostgresBackend {
    fn log(&self) -> Arc<dyn EventLog> {
        self.pg.clone()
    }
    fn snapshots(&self) -> Option<Snapshots> {
        None
    }
    fn replicas(&self) -> Arc<dyn ReplicaRegistry> {
        self.replicas.clone()
    }
    fn is_shared(&self) -> bool {
        true
    }
    fn deliveries(&self) -> std::io::Result<Arc<dyn DeliveryStore>> {
        Ok(Arc::new(PostgresDelivery::new(self.pg.clone())))
    }

    /// Listens for the log's `NOTIFY` (listening before each read, so a commit after the
    /// read wakes the next wait) and takes in what other processes committed; reconnects
    /// when the listening connection breaks; checks `stop` every half second.
    fn follow(&self, take_in: &dyn Fn(), stop: &AtomicBool) {
        let mut listener = None;
        while !stop.load(Ordering::SeqCst) {
            if listener.is_none() {
                match self.pg.listen() {
                    Ok(l) => listener = Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "follower: cannot listen; retrying in 1 s");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            }
            take_in();
            if let Some(l) = listener.as_mut()
                && let Err(e) = l.wait(Duration::from_millis(500))
            {
                tracing::warn!(error = %e, "follower: the listening connection broke");
                listener = None;
            }
        }
    }
}
