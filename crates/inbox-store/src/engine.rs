//! The durable engine: every site's [`Inbox`] and its version over an [`EventLog`], with the
//! write loop a service needs, so that an embedder does not write it again.
//!
//! * [`Engine::open`]: the newest valid snapshot, then the log after it; each site with its
//!   version (so the first write can append optimistically at once).
//! * [`Engine::execute`]: decide against the site's state, wrap the events
//!   ([`EventEnvelope::new`]), submit them at the version decided against, apply them, and
//!   wait until they are durable. A conflict (another writer appended to the site first, as on
//!   a log other processes share) reads the site's new events and decides again, up to
//!   [`EngineConfig::max_conflicts`] times. What is answered is durable.
//! * [`Engine::ingest`]: the replica path. Events observed elsewhere (webhooks), with the
//!   stable ids their source gave them, are deduplicated against the ids of the site's last
//!   [`EngineConfig::dedupe_window`] events and appended; the fold is convergent, so a
//!   redelivery older than that window is appended again and changes nothing.
//! * [`Engine::read`]: a consistent state of one site; it waits only for writers of that site.
//! * [`Engine::events_after`] and [`Engine::subscribe`]: the feed a projection, an outbox or a
//!   read model consumes, by log position.
//! * Snapshots by policy ([`EngineConfig::snapshot_every`], written on a thread of their own,
//!   off the write path) and at [`Engine::close`].
//! * For a consumer that needs each event with its site's state right after it (an outbox's
//!   webhooks): [`EngineConfig::observe`] (every event folded, once, under its site's lock),
//!   [`Engine::applied_through`] (the watermark up to which all of them were),
//!   [`Engine::take_in`] (other writers' events of a shared log, in log order), and
//!   [`EngineConfig::before_snapshot`] (save what the consumer holds beside a snapshot).
//!
//! A write holds its site's lock from `decide` to `apply` (so the site's events are submitted
//! in the order they were decided) and releases it before waiting for the fsync, so writers of
//! one site, or of many, share fsyncs (the log's group commit).
//!
//! With a bounded site cache ([`EngineConfig::max_sites`]) sites load on first use (the
//! newest snapshot's image of the site, then its events after it, read from the log by site)
//! and the least recently used idle ones are evicted, so memory follows the working set.
//! Without it every site is held.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use inbox_core::{
    Command, Context, EventEnvelope, EventId, IdSource, Inbox, InboxConfig, Rejection,
    SCHEMA_VERSION, SiteId,
};
use thiserror::Error;

use crate::recover::recover_reporting;
use crate::snapshot::SnapshotIndex;
use crate::{
    AppendError, AppendTicket, EventLog, ExpectedVersion, ReadError, RecoverError, SiteState,
    SkippedSnapshot, SnapshotError, Snapshots, StoredEvent,
};

/// Conflicting appends [`Engine::execute`] decides again before giving up, by default.
pub const DEFAULT_MAX_CONFLICTS: u32 = 32;

/// Recent event ids per site that [`Engine::ingest`] deduplicates against, by default.
pub const DEFAULT_DEDUPE_WINDOW: usize = 4096;

/// Events read from the log at a time when catching up with a site.
const CATCH_UP_CHUNK: usize = 4096;

/// How an [`Engine`] runs.
#[derive(Clone)]
pub struct EngineConfig {
    site_config: Arc<dyn Fn(&SiteId) -> InboxConfig + Send + Sync>,
    snapshot_every: Option<u64>,
    max_conflicts: u32,
    shared: bool,
    dedupe_window: usize,
    max_sites: Option<usize>,
    observer: Option<Arc<Observer>>,
    before_snapshot: Option<Arc<BeforeSnapshot>>,
}

/// What [`EngineConfig::observe`] calls: the event's log position, the event, and its site's
/// state right after it.
pub type Observer = dyn Fn(u64, &EventEnvelope, &Inbox) + Send + Sync;

/// What [`EngineConfig::before_snapshot`] calls: the position of the snapshot about to be
/// written.
pub type BeforeSnapshot = dyn Fn(u64) -> std::io::Result<()> + Send + Sync;

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("snapshot_every", &self.snapshot_every)
            .field("max_conflicts", &self.max_conflicts)
            .field("shared", &self.shared)
            .field("dedupe_window", &self.dedupe_window)
            .field("max_sites", &self.max_sites)
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl EngineConfig {
    /// Each site's settings come from `site_config` (the cursor key must stay the same across
    /// restarts, or outstanding cursors stop working). No snapshots by policy, the default
    /// conflict bound and dedupe window, a log written by this engine alone.
    pub fn new(site_config: impl Fn(&SiteId) -> InboxConfig + Send + Sync + 'static) -> Self {
        EngineConfig {
            site_config: Arc::new(site_config),
            snapshot_every: None,
            max_conflicts: DEFAULT_MAX_CONFLICTS,
            shared: false,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            max_sites: None,
            observer: None,
            before_snapshot: None,
        }
    }

    /// Hold at most `sites` sites' states in memory (at least one). A site is loaded on
    /// first use (its image from the newest snapshot, then its events after it, read from
    /// the log by site), and the least recently used idle site is evicted when the cache is
    /// full; [`Engine::cache`] reports it. Start-up then reads the newest snapshot's
    /// directory and scans the log after it for site ids, and folds nothing.
    ///
    /// Without it (the default) every site is held, and start-up folds the log after the
    /// snapshot into every site's state. An observed engine ([`EngineConfig::observe`]) holds
    /// every site whatever this says: it must fold each event once, at start-up too, with its
    /// site's state at hand.
    pub fn max_sites(mut self, sites: usize) -> Self {
        self.max_sites = Some(sites.max(1));
        self
    }

    /// How many of each site's most recent event ids [`Engine::ingest`] remembers to drop
    /// redeliveries (16 bytes and a set entry each). An event redelivered after more than
    /// this many newer events of its site is appended again; the fold ignores it (every fact
    /// folds idempotently), so the state is the same, and only the log holds it twice.
    pub fn dedupe_window(mut self, ids: usize) -> Self {
        self.dedupe_window = ids;
        self
    }

    /// Take a snapshot (if the engine has [`Snapshots`]) every `events` events written, on a
    /// thread of its own. A snapshot is still taken at [`Engine::close`].
    pub fn snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = Some(events.max(1));
        self
    }

    /// Calls `observer` with every event the engine folds, under its site's lock, with the
    /// site's state right after it: the events of the log's tail that [`Engine::open`]
    /// replays, every event [`Engine::execute`] and [`Engine::ingest`] record (before they are
    /// durable: what is observed may still be lost with the log, and is then never in
    /// [`Engine::applied_through`]), and other writers' events as the engine takes them in.
    /// Each event is observed once per open engine, in its site's order.
    ///
    /// This is where a consumer computes what needs the state at the event (an outbox's
    /// webhooks name the conversation a message is in *then*); with
    /// [`Engine::applied_through`] it knows up to where it has seen everything. Keep it
    /// short: it runs on the write path. An observed engine holds every site (see
    /// [`EngineConfig::max_sites`]).
    pub fn observe(
        mut self,
        observer: impl Fn(u64, &EventEnvelope, &Inbox) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Calls `hook` with a snapshot's position `P` before the snapshot is put in place. By
    /// then every event the snapshot's states hold has been observed: those up to `P`, and
    /// possibly later ones (the states are cloned while writers run). An engine opened from
    /// that snapshot observes only the events its states do not hold, so a consumer that
    /// keeps derived data in memory (an outbox's undelivered webhooks) saves, here, what it
    /// has observed and not yet acted on, and loads it again beside the snapshot (keyed by
    /// position: an event observed after the hook may be observed again at start-up). What
    /// it saved past the log's end at the next start was never durable. If the hook fails,
    /// the snapshot is not written ([`CloseError::BeforeSnapshot`]).
    pub fn before_snapshot(
        mut self,
        hook: impl Fn(u64) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.before_snapshot = Some(Arc::new(hook));
        self
    }

    /// Conflicting appends to decide again before [`ExecuteError::Contended`].
    pub fn max_conflicts(mut self, n: u32) -> Self {
        self.max_conflicts = n;
        self
    }

    /// The log is written by other processes too (a shared database): a refusal or a no-op is
    /// answered, and a read made, only after the site's new events are taken in.
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }
}

/// How far [`Engine::open`] has got: events replayed of the tail to replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Events replayed so far.
    pub done: u64,
    /// Events after the snapshot (or the whole log).
    pub total: u64,
}

/// What [`Engine::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The log position the state includes.
    pub position: u64,
    /// The snapshot it started from, if any.
    pub snapshot_position: Option<u64>,
    /// Events read after it: folded into every site's state, or, with a bounded cache
    /// ([`EngineConfig::max_sites`]), scanned for site ids (each site folds its own when it
    /// is loaded).
    pub replayed: u64,
    /// Snapshots that could not be used, and why.
    pub skipped_snapshots: Vec<SkippedSnapshot>,
    /// Sites with events.
    pub sites: usize,
}

/// What [`Engine::execute`] recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    /// The events, durable, with their positions and site versions (none: the command asked
    /// for nothing new, e.g. a conversation that already exists).
    pub events: Vec<StoredEvent>,
}

/// Why [`Engine::execute`] did not record anything.
#[derive(Debug, Error)]
pub enum ExecuteError {
    /// The command was refused; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The log refused or failed to store the events. After a failed write or fsync, whether
    /// they are stored is known only when the log is read again (a [`FileLog`](crate::FileLog)
    /// refuses every later append until it is reopened).
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The site's newer events could not be read.
    #[error("reading the site's newer events: {0}")]
    CatchUp(#[from] ReadError),
    /// Other writers kept appending to the site first.
    #[error("gave up after {0} conflicting appends; try again")]
    Contended(u32),
}

/// What [`Engine::ingest`] recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// The events that were new, durable, with their positions and site versions.
    pub events: Vec<StoredEvent>,
    /// Events dropped as redeliveries: their id was among the site's recent events, or
    /// earlier in the same batch.
    pub duplicates: usize,
}

/// Why [`Engine::ingest`] did not record anything.
#[derive(Debug, Error)]
pub enum IngestError {
    /// An event names another site than the one it is ingested into.
    #[error("event {event} belongs to site {found:?}, not to {expected:?}")]
    ForeignSite {
        /// The event.
        event: EventId,
        /// The site it was ingested into.
        expected: SiteId,
        /// The site the envelope names.
        found: SiteId,
    },
    /// An event's shape version is not this build's ([`SCHEMA_VERSION`]); build envelopes
    /// with [`EventEnvelope::new`] (older shapes are read, and upcast, only from a log).
    #[error("event {event} has schema version {found}, this build writes {SCHEMA_VERSION}")]
    SchemaVersion {
        /// The event.
        event: EventId,
        /// Its version.
        found: u16,
    },
    /// The log refused or failed to store the events (see [`ExecuteError::Append`]).
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The site's newer events could not be read.
    #[error("reading the site's newer events: {0}")]
    CatchUp(#[from] ReadError),
    /// Other writers kept appending to the site first.
    #[error("gave up after {0} conflicting appends; try again")]
    Contended(u32),
}

/// Why a submit in [`Engine::execute`] or [`Engine::ingest`] failed (each maps it to its
/// own error).
enum SubmitError {
    Append(AppendError),
    CatchUp(ReadError),
    Contended(u32),
}

impl From<SubmitError> for ExecuteError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Append(e) => ExecuteError::Append(e),
            SubmitError::CatchUp(e) => ExecuteError::CatchUp(e),
            SubmitError::Contended(n) => ExecuteError::Contended(n),
        }
    }
}

impl From<SubmitError> for IngestError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Append(e) => IngestError::Append(e),
            SubmitError::CatchUp(e) => IngestError::CatchUp(e),
            SubmitError::Contended(n) => IngestError::Contended(n),
        }
    }
}

/// Why [`Engine::close`] could not take its last snapshot.
#[derive(Debug, Error)]
pub enum CloseError {
    /// The log could not say where it ends.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The snapshot could not be written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A write failed after its events were applied: the state may hold events the log lost,
    /// and is not snapshotted. Reopen the engine (it recovers what the log really has).
    #[error("a write failed after it was applied; reopen the engine to recover from the log")]
    Poisoned,
    /// The snapshot was written, but the log could not save its index beside it
    /// ([`EventLog::checkpoint`]): the next open scans more of the log, nothing is lost.
    #[error("the snapshot is written; saving the log's index failed: {0}")]
    Checkpoint(std::io::Error),
    /// The [`EngineConfig::before_snapshot`] hook failed; no snapshot was written.
    #[error("before the snapshot at {position}: {source}")]
    BeforeSnapshot {
        /// The snapshot's position.
        position: u64,
        /// What the hook answered.
        source: std::io::Error,
    },
}

/// Positions the engine holds: a prefix `through` (every event up to it is durable and in
/// the state), and ranges beyond it that are, while a gap before them is not yet.
#[derive(Debug, Default)]
struct Watermark {
    through: u64,
    /// Done ranges past `through + 1`, by first position: first -> last.
    ahead: BTreeMap<u64, u64>,
}

impl Watermark {
    fn mark(&mut self, first: u64, last: u64) {
        if last <= self.through || first > last {
            return;
        }
        if first > self.through + 1 {
            let end = self.ahead.entry(first).or_insert(last);
            *end = (*end).max(last);
            return;
        }
        self.through = last;
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > self.through + 1 {
                break;
            }
            let end = entry.remove();
            self.through = self.through.max(end);
        }
    }
}

struct Site {
    state: SiteState,
    /// The position of the last event applied to `state`.
    position: u64,
    /// The ids of the site's most recent events: what [`Engine::ingest`] drops as
    /// redeliveries. Read from the log at the site's first ingest (so it is the same after a
    /// restart, from a snapshot or not), then kept up by every event the site takes in.
    recent: Option<RecentIds>,
}

/// A bounded window of event ids, oldest first and as a set: the newest `capacity` ids
/// recorded.
#[derive(Default)]
struct RecentIds {
    order: VecDeque<EventId>,
    set: HashSet<EventId>,
}

impl RecentIds {
    fn contains(&self, id: &EventId) -> bool {
        self.set.contains(id)
    }

    fn record(&mut self, id: EventId, capacity: usize) {
        if capacity == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

impl Site {
    fn new(state: SiteState, position: u64) -> Self {
        Site {
            state,
            position,
            recent: None,
        }
    }
}

/// A site in the cache, and when it was last used (for eviction).
struct Slot {
    site: Mutex<Site>,
    last_used: AtomicU64,
}

impl Slot {
    fn new(site: Site) -> Arc<Self> {
        Arc::new(Slot {
            site: Mutex::new(site),
            last_used: AtomicU64::new(0),
        })
    }
}

/// A site in use by a call. When the call is done with it, a cache over its bound (because
/// every site was in use when one was loaded) evicts down to it.
struct InUse<'a> {
    engine: &'a Engine,
    slot: Option<Arc<Slot>>,
}

impl std::ops::Deref for InUse<'_> {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        match &self.slot {
            Some(slot) => slot,
            None => unreachable!("the slot is taken only on drop"),
        }
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        drop(self.slot.take());
        self.engine.trim();
    }
}

/// What the site cache holds and has done since open ([`Engine::cache`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// Sites whose state is in memory now.
    pub loaded: usize,
    /// The bound ([`EngineConfig::max_sites`]; `None`: every site is held).
    pub capacity: Option<usize>,
    /// Sites with events, in memory or not.
    pub sites: usize,
    /// Sites loaded since open: on use, or by a snapshot (a site not in memory whose log
    /// moved since the snapshot before).
    pub loads: u64,
    /// Sites evicted since open.
    pub evictions: u64,
}

struct Inner {
    log: Arc<dyn EventLog>,
    snapshots: Option<Snapshots>,
    config: EngineConfig,
    sites: RwLock<HashMap<SiteId, Arc<Slot>>>,
    /// With a bounded cache: every site that has events, in memory or not, and the newest
    /// snapshot, where a site that is not in memory is loaded from.
    known: RwLock<HashSet<SiteId>>,
    index: RwLock<Option<Arc<SnapshotIndex>>>,
    /// The clock of `Slot::last_used`.
    tick: AtomicU64,
    loads: AtomicU64,
    evictions: AtomicU64,
    /// The durable end the engine has seen, and a way to wait for it to move.
    durable: Mutex<u64>,
    /// Up to where the state holds every event of the log ([`Engine::applied_through`]).
    applied: Mutex<Watermark>,
    moved: Condvar,
    since_snapshot: AtomicU64,
    snapshotting: AtomicBool,
    snapshot_errors: AtomicU64,
    snapshots_taken: AtomicU64,
    /// Appends refused because another writer appended to the site first.
    conflicts: AtomicU64,
    /// The position of the newest snapshot this engine started from or wrote.
    last_snapshot: Mutex<Option<u64>>,
    /// The snapshot thread running now, joined by [`Engine::close`].
    snapshotter: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held while a snapshot is written: one at a time (two at one position would share a
    /// temporary file).
    writing_snapshot: Mutex<()>,
    /// A write's events were applied but never became durable (the log failed): the state
    /// may hold what the log lost, so no snapshot is taken from it any more.
    poisoned: AtomicBool,
}

/// Every site's state over one durable log. Cheap to clone (the clones share one engine), and
/// safe to use from many threads at once.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .field("sites", &self.site_count())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_lock<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    /// Opens the engine over `log`: the newest valid snapshot in `snapshots` (if given), then
    /// the log after it, `progress` called as the tail is replayed.
    pub fn open(
        log: Arc<dyn EventLog>,
        snapshots: Option<Snapshots>,
        mut config: EngineConfig,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Engine, Opened), RecoverError> {
        if config.observer.is_some() {
            config.max_sites = None;
        }
        if config.max_sites.is_some() {
            return Self::open_lazily(log, snapshots, config, progress);
        }
        let site_config = config.site_config.clone();
        let recovered = recover_reporting(
            &*log,
            snapshots.as_ref(),
            &|s: &SiteId| site_config(s),
            config.observer.as_deref(),
            &mut |done, total| progress(Progress { done, total }),
        )?;
        let opened = Opened {
            position: recovered.position,
            snapshot_position: recovered.snapshot_position,
            replayed: recovered.replayed,
            skipped_snapshots: recovered.skipped_snapshots,
            sites: recovered.sites.len(),
        };
        let sites = recovered
            .sites
            .into_iter()
            .map(|(id, state)| (id, Slot::new(Site::new(state, recovered.position))))
            .collect();
        let engine = Self::assemble(
            log,
            snapshots,
            config,
            recovered.position,
            sites,
            HashSet::new(),
            None,
        );
        *lock(&engine.inner.last_snapshot) = opened.snapshot_position;
        Ok((engine, opened))
    }

    /// Start-up with a bounded cache: the newest snapshot's directory, and the log after it
    /// scanned for the sites it names. No state is built; sites load on first use.
    fn open_lazily(
        log: Arc<dyn EventLog>,
        snapshots: Option<Snapshots>,
        config: EngineConfig,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Engine, Opened), RecoverError> {
        let last = log.last_position()?;
        let (index, skipped_snapshots) = match &snapshots {
            Some(s) => s.newest_index(last),
            None => (None, Vec::new()),
        };
        let snapshot_position = index.as_ref().map(|(p, _)| *p);
        let mut known: HashSet<SiteId> = index
            .as_ref()
            .map(|(_, i)| i.sites().map(|(s, _)| s.clone()).collect())
            .unwrap_or_default();
        let from = snapshot_position.unwrap_or(0) + 1;
        let total = last.saturating_sub(from - 1);
        let mut position = from - 1;
        let mut replayed = 0u64;
        log.replay(from, &mut |stored| {
            position = stored.position;
            replayed += 1;
            progress(Progress {
                done: replayed,
                total,
            });
            if !known.contains(&stored.envelope.site) {
                known.insert(stored.envelope.site);
            }
            ControlFlow::Continue(())
        })?;
        let opened = Opened {
            position,
            snapshot_position,
            replayed,
            skipped_snapshots,
            sites: known.len(),
        };
        let index = index.map(|(_, i)| Arc::new(i));
        let engine = Self::assemble(
            log,
            snapshots,
            config,
            position,
            HashMap::new(),
            known,
            index,
        );
        *lock(&engine.inner.last_snapshot) = opened.snapshot_position;
        Ok((engine, opened))
    }

    /// The engine over a state opened at `position` (the durable end it has seen).
    fn assemble(
        log: Arc<dyn EventLog>,
        snapshots: Option<Snapshots>,
        config: EngineConfig,
        position: u64,
        sites: HashMap<SiteId, Arc<Slot>>,
        known: HashSet<SiteId>,
        index: Option<Arc<SnapshotIndex>>,
    ) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                log,
                snapshots,
                config,
                sites: RwLock::new(sites),
                known: RwLock::new(known),
                index: RwLock::new(index),
                tick: AtomicU64::new(0),
                loads: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                durable: Mutex::new(position),
                applied: Mutex::new(Watermark {
                    through: position,
                    ahead: BTreeMap::new(),
                }),
                moved: Condvar::new(),
                since_snapshot: AtomicU64::new(0),
                snapshotting: AtomicBool::new(false),
                snapshot_errors: AtomicU64::new(0),
                snapshots_taken: AtomicU64::new(0),
                conflicts: AtomicU64::new(0),
                snapshotter: Mutex::new(None),
                writing_snapshot: Mutex::new(()),
                last_snapshot: Mutex::new(None),
                poisoned: AtomicBool::new(false),
            }),
        }
    }

    /// The log under the engine.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.inner.log
    }

    /// How many sites have events (with a bounded cache: in memory or not, and the sites in
    /// memory that have none yet).
    pub fn site_count(&self) -> usize {
        if self.inner.config.max_sites.is_some() {
            return read_lock(&self.inner.known).len();
        }
        read_lock(&self.inner.sites).len()
    }

    /// Every site's id, sorted.
    pub fn site_ids(&self) -> Vec<SiteId> {
        let mut ids: Vec<SiteId> = if self.inner.config.max_sites.is_some() {
            read_lock(&self.inner.known).iter().cloned().collect()
        } else {
            read_lock(&self.inner.sites).keys().cloned().collect()
        };
        ids.sort();
        ids
    }

    /// What the site cache holds, and has loaded and evicted since open.
    pub fn cache(&self) -> CacheStats {
        CacheStats {
            loaded: read_lock(&self.inner.sites).len(),
            capacity: self.inner.config.max_sites,
            sites: self.site_count(),
            loads: self.inner.loads.load(Ordering::Relaxed),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
        }
    }

    fn empty_site(&self, id: &SiteId) -> Site {
        let state = SiteState {
            inbox: Inbox::new((self.inner.config.site_config)(id)),
            version: 0,
        };
        Site::new(state, 0)
    }

    /// The site's slot: in the cache, or loaded into it.
    fn site(&self, id: &SiteId) -> Result<InUse<'_>, ReadError> {
        let in_use = |slot: Arc<Slot>| InUse {
            engine: self,
            slot: Some(slot),
        };
        let tick = self.inner.tick.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = read_lock(&self.inner.sites).get(id) {
            s.last_used.store(tick, Ordering::Relaxed);
            return Ok(in_use(s.clone()));
        }
        let Some(capacity) = self.inner.config.max_sites else {
            // Every site with events is held: one that is not has none yet.
            let mut sites = write_lock(&self.inner.sites);
            return Ok(in_use(
                sites
                    .entry(id.clone())
                    .or_insert_with(|| Slot::new(self.empty_site(id)))
                    .clone(),
            ));
        };
        // The snapshot's image is read outside the map's lock (other sites stay readable
        // meanwhile), and the copy goes in locked: whoever asks for the site next waits until
        // it has taken in the log's events after the image. If another caller put the site
        // in first, its copy is the one written to, and wins.
        let slot = Slot::new(self.snapshot_image(id));
        let mut site = lock(&slot.site);
        let existing = {
            let mut sites = write_lock(&self.inner.sites);
            write_lock(&self.inner.known).insert(id.clone());
            match sites.entry(id.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => Some(e.get().clone()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(slot.clone());
                    None
                }
            }
        };
        if let Some(existing) = existing {
            drop(site);
            existing.last_used.store(tick, Ordering::Relaxed);
            return Ok(in_use(existing));
        }
        if let Err(e) = self.catch_up(id, &mut site) {
            // Not left in the cache behind the log: the next caller loads it again.
            drop(site);
            let mut sites = write_lock(&self.inner.sites);
            if sites.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                sites.remove(id);
            }
            return Err(e);
        }
        drop(site);
        self.inner.loads.fetch_add(1, Ordering::Relaxed);
        slot.last_used.store(tick, Ordering::Relaxed);
        let slot = in_use(slot);
        self.evict_over(capacity);
        Ok(slot)
    }

    /// A site's state as the newest snapshot has it, or empty if the snapshot does not (a
    /// site whose blocks are damaged is empty here and read from the log alone, which has
    /// every event). The log's events after it are for the caller to take in.
    fn snapshot_image(&self, id: &SiteId) -> Site {
        let index = read_lock(&self.inner.index).clone();
        match index.and_then(|i| i.load_site(id).ok().flatten()) {
            Some(state) => Site::new(
                SiteState {
                    inbox: state.inbox.with_config((self.inner.config.site_config)(id)),
                    version: state.version,
                },
                0,
            ),
            None => self.empty_site(id),
        }
    }

    /// A site's state from the newest snapshot and the log after it, outside the cache.
    fn load(&self, id: &SiteId) -> Result<Site, ReadError> {
        let mut site = self.snapshot_image(id);
        self.catch_up(id, &mut site)?;
        self.inner.loads.fetch_add(1, Ordering::Relaxed);
        Ok(site)
    }

    /// With a bounded cache over its bound, evicts down to it.
    fn trim(&self) {
        if let Some(capacity) = self.inner.config.max_sites
            && read_lock(&self.inner.sites).len() > capacity
        {
            self.evict_over(capacity);
        }
    }

    /// Evicts the least recently used idle sites until at most `capacity` are held. A site
    /// in use (a call holds its slot, as every write does until it is durable) stays; a
    /// site evicted loads again from the snapshot and the log, which hold all of it.
    fn evict_over(&self, capacity: usize) {
        let mut sites = write_lock(&self.inner.sites);
        if sites.len() <= capacity {
            return;
        }
        let mut idle: Vec<(u64, SiteId)> = sites
            .iter()
            .filter(|(_, slot)| Arc::strong_count(slot) == 1)
            .map(|(id, slot)| (slot.last_used.load(Ordering::Relaxed), id.clone()))
            .collect();
        idle.sort_unstable();
        let excess = sites.len() - capacity;
        for (_, id) in idle.into_iter().take(excess) {
            if let Some(slot) = sites.remove(&id) {
                if lock(&slot.site).state.version == 0 {
                    write_lock(&self.inner.known).remove(&id);
                }
                self.inner.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Applies the site's events that the state does not hold yet.
    fn catch_up(&self, id: &SiteId, site: &mut Site) -> Result<bool, ReadError> {
        let before = site.state.version;
        let window = self.inner.config.dedupe_window;
        let mut taken = Vec::new();
        self.each_site_event(id, before + 1, None, &mut |stored| {
            if stored.site_version == site.state.version + 1 {
                taken.push(stored.position);
                self.take(site, stored, window);
            }
        })?;
        let mut applied = lock(&self.inner.applied);
        for p in taken {
            applied.mark(p, p);
        }
        Ok(site.state.version != before)
    }

    /// Applies a durable event that is the site's next one (and observes it).
    fn take(&self, site: &mut Site, stored: StoredEvent, window: usize) {
        if let Some(recent) = &mut site.recent {
            recent.record(stored.envelope.event_id, window);
        }
        match &self.inner.config.observer {
            Some(observe) => {
                site.state.inbox.apply(&stored.envelope);
                observe(stored.position, &stored.envelope, &site.state.inbox);
            }
            None => site.state.inbox.apply_owned(stored.envelope.event),
        }
        site.state.version = stored.site_version;
        site.position = site.position.max(stored.position);
    }

    /// Takes in, in log order, every event after [`Engine::applied_through`] that the engine
    /// does not hold yet: on a log other processes share, their events (observed, so an
    /// outbox sees them). Returns how many events it applied. A site not in memory (a bounded
    /// cache) is left to load from the log when it is used. Run it when the log says it grew
    /// (PostgreSQL's `NOTIFY`), or periodically; on a log only this engine writes it finds
    /// nothing.
    pub fn take_in(&self) -> Result<u64, ReadError> {
        let window = self.inner.config.dedupe_window;
        let mut applied = 0u64;
        loop {
            let from = self.applied_through();
            let events = self.inner.log.read_all(from + 1, CATCH_UP_CHUNK)?;
            let n = events.len();
            for stored in events {
                let position = stored.position;
                let site_id = stored.envelope.site.clone();
                let held = self.inner.config.max_sites.is_none()
                    || read_lock(&self.inner.sites).contains_key(&site_id);
                if held {
                    let slot = self.site(&site_id)?;
                    let mut site = lock(&slot.site);
                    if stored.site_version == site.state.version + 1 {
                        self.take(&mut site, stored, window);
                        applied += 1;
                    } else if stored.site_version > site.state.version + 1 {
                        // Cannot happen (positions are in commit order); be safe anyway.
                        let before = site.state.version;
                        self.catch_up(&site_id, &mut site)?;
                        applied += site.state.version - before;
                    }
                } else {
                    write_lock(&self.inner.known).insert(site_id);
                }
                lock(&self.inner.applied).mark(position, position);
            }
            if applied > 0 {
                self.inner.moved.notify_all();
            }
            if n < CATCH_UP_CHUNK {
                return Ok(applied);
            }
        }
    }

    /// Every event of the log up to this position is durable and in the engine's state (and
    /// was observed, see [`EngineConfig::observe`]): where a consumer of the observations may
    /// act up to. On a log only this engine writes it follows its own writes as they become
    /// durable; on a shared log other writers' events move it as they are taken in (by a
    /// read, a write's catch-up, or [`Engine::take_in`]).
    pub fn applied_through(&self) -> u64 {
        lock(&self.inner.applied).through
    }

    /// Calls `f` with the site's durable events from version `from` on (up to version `to`,
    /// if given), read from the log [`CATCH_UP_CHUNK`] at a time.
    fn each_site_event(
        &self,
        id: &SiteId,
        mut from: u64,
        to: Option<u64>,
        f: &mut dyn FnMut(StoredEvent),
    ) -> Result<(), ReadError> {
        loop {
            let max = match to {
                Some(to) if from > to => return Ok(()),
                Some(to) => usize::try_from(to - from + 1)
                    .unwrap_or(usize::MAX)
                    .min(CATCH_UP_CHUNK),
                None => CATCH_UP_CHUNK,
            };
            let events = self.inner.log.read_site(id, from, max)?;
            let n = events.len();
            let Some(last) = events.last().map(|e| e.site_version) else {
                return Ok(());
            };
            for e in events {
                if to.is_none_or(|to| e.site_version <= to) {
                    f(e);
                }
            }
            if n < max {
                return Ok(());
            }
            from = last + 1;
        }
    }

    /// Decides `command` for `site` at `ctx`, makes its events durable and applies them. New
    /// ids (of conversations, and of the events) come from `ids`.
    ///
    /// Returns only once the events are durable; a refused command changes nothing.
    pub fn execute(
        &self,
        site_id: &SiteId,
        command: &Command,
        ctx: &Context,
        ids: &mut dyn IdSource,
    ) -> Result<Executed, ExecuteError> {
        self.execute_with(site_id, command, ctx, ids, |_, _| ())
            .map(|(executed, ())| executed)
    }

    /// [`Engine::execute`], with `answer` called under the site's lock on the state right
    /// after the events (with the events, positions included; none for a no-op), so that an
    /// answer built from the state (the conversation a message landed in, the page after
    /// it) is the state the write made, whatever other writes of the site follow. What
    /// `answer` returns is handed back once the events are durable, and dropped if they are
    /// not.
    pub fn execute_with<R>(
        &self,
        site_id: &SiteId,
        command: &Command,
        ctx: &Context,
        ids: &mut dyn IdSource,
        answer: impl FnOnce(&Inbox, &[StoredEvent]) -> R,
    ) -> Result<(Executed, R), ExecuteError> {
        let slot = self.site(site_id)?;
        let (ticket, events, answered) = {
            let mut site = lock(&slot.site);
            let mut conflicts = 0u32;
            let mut caught_up = false;
            loop {
                let events = match site.state.inbox.decide(command, ctx, ids) {
                    Ok(events) if !events.is_empty() => events,
                    outcome => {
                        // A refusal or a no-op is answered from the state alone; on a shared
                        // log it may be behind: take the site's new events in once first.
                        if self.inner.config.shared && !caught_up {
                            caught_up = true;
                            if self.catch_up(site_id, &mut site)? {
                                continue;
                            }
                        }
                        outcome?;
                        let answered = answer(&site.state.inbox, &[]);
                        return Ok((Executed { events: Vec::new() }, answered));
                    }
                };
                let envelopes: Vec<EventEnvelope> = events
                    .into_iter()
                    .map(|event| {
                        EventEnvelope::new(
                            site_id.clone(),
                            EventId::from_uuid(ids.next_id()),
                            ctx.now,
                            event,
                        )
                    })
                    .collect();
                if let Some(ticket) = self.submit(site_id, &mut site, &envelopes, &mut conflicts)? {
                    let events = stored(&ticket, envelopes);
                    let answered = answer(&site.state.inbox, &events);
                    break (ticket, events, answered);
                }
            }
        };
        self.durable(ticket, events.len() as u64)?;
        Ok((Executed { events }, answered))
    }

    /// Folds `observed` (events that happened elsewhere, e.g. a webhook's facts, each with
    /// the stable id its source gave it) into `site_id`, durably. Events whose id is among the
    /// site's recent ones ([`EngineConfig::dedupe_window`]), or earlier in the batch, are
    /// dropped as redeliveries; the rest are appended in the order given and applied. Order
    /// does not matter to the state: the fold is convergent, so a replica that ingests the
    /// same facts in any order, with repeats, holds the same state.
    ///
    /// Returns only once the new events are durable. Nothing is appended if any envelope is
    /// refused.
    pub fn ingest(
        &self,
        site_id: &SiteId,
        observed: Vec<EventEnvelope>,
    ) -> Result<Ingested, IngestError> {
        for e in &observed {
            if e.site != *site_id {
                return Err(IngestError::ForeignSite {
                    event: e.event_id,
                    expected: site_id.clone(),
                    found: e.site.clone(),
                });
            }
            if e.schema_version != SCHEMA_VERSION {
                return Err(IngestError::SchemaVersion {
                    event: e.event_id,
                    found: e.schema_version,
                });
            }
        }
        let given = observed.len();
        let slot = self.site(site_id)?;
        let (ticket, envelopes) = {
            let mut site = lock(&slot.site);
            let mut conflicts = 0u32;
            loop {
                let recent = match &site.recent {
                    Some(recent) => recent,
                    None => {
                        let primed = self.recent_ids(site_id, site.state.version)?;
                        site.recent.insert(primed)
                    }
                };
                let mut batch: HashSet<EventId> = HashSet::new();
                let fresh: Vec<EventEnvelope> = observed
                    .iter()
                    .filter(|e| !recent.contains(&e.event_id) && batch.insert(e.event_id))
                    .cloned()
                    .collect();
                if fresh.is_empty() {
                    // Every event is here already. (On a shared log, one another process
                    // appended first is found by the conflict below and the catch-up.)
                    return Ok(Ingested {
                        events: Vec::new(),
                        duplicates: given,
                    });
                }
                if let Some(ticket) = self.submit(site_id, &mut site, &fresh, &mut conflicts)? {
                    break (ticket, fresh);
                }
            }
        };
        let duplicates = given - envelopes.len();
        let events = stored(&ticket, envelopes);
        self.durable(ticket, events.len() as u64)?;
        Ok(Ingested { events, duplicates })
    }

    /// The ids of the site's last [`EngineConfig::dedupe_window`] events up to `version`,
    /// read from the log. (Events an `execute` applied but the log has not yet made durable
    /// are not read; they have fresh ids, and every later event of the site is recorded.)
    fn recent_ids(&self, site_id: &SiteId, version: u64) -> Result<RecentIds, ReadError> {
        let window = self.inner.config.dedupe_window;
        let mut recent = RecentIds::default();
        let from = version.saturating_sub(window as u64) + 1;
        self.each_site_event(site_id, from, Some(version), &mut |e| {
            recent.record(e.envelope.event_id, window);
        })?;
        Ok(recent)
    }

    /// Submits a batch at the site's version and applies it. A conflict (another writer
    /// appended to the site first) takes the site's new events in and answers `None`:
    /// decide again; past [`EngineConfig::max_conflicts`] it gives up.
    fn submit(
        &self,
        site_id: &SiteId,
        site: &mut Site,
        envelopes: &[EventEnvelope],
        conflicts: &mut u32,
    ) -> Result<Option<AppendTicket>, SubmitError> {
        let expected = ExpectedVersion::Exactly(site.state.version);
        match self.inner.log.submit(site_id, expected, envelopes) {
            Ok(ticket) => {
                self.applied(site, &ticket, envelopes);
                Ok(Some(ticket))
            }
            Err(AppendError::Conflict { .. }) => {
                *conflicts += 1;
                self.inner.conflicts.fetch_add(1, Ordering::Relaxed);
                if *conflicts > self.inner.config.max_conflicts {
                    return Err(SubmitError::Contended(*conflicts));
                }
                self.catch_up(site_id, site).map_err(SubmitError::CatchUp)?;
                Ok(None)
            }
            Err(e) => Err(SubmitError::Append(e)),
        }
    }

    /// Applies a batch the log accepted to the site's state, under the site's lock.
    fn applied(&self, site: &mut Site, ticket: &AppendTicket, envelopes: &[EventEnvelope]) {
        let window = self.inner.config.dedupe_window;
        let appended = ticket.appended();
        for (i, e) in envelopes.iter().enumerate() {
            if let Some(recent) = &mut site.recent {
                recent.record(e.event_id, window);
            }
            site.state.inbox.apply(e);
            if let Some(observe) = &self.inner.config.observer {
                observe(appended.first_position + i as u64, e, &site.state.inbox);
            }
        }
        site.state.version = appended.site_version;
        site.position = appended.last_position;
    }

    /// Waits until a submitted batch of `written` events is durable. A failed wait poisons
    /// the engine (the state holds what the log may have lost).
    fn durable(&self, ticket: AppendTicket, written: u64) -> Result<(), AppendError> {
        let appended = match self.inner.log.wait(ticket) {
            Ok(a) => a,
            Err(e) => {
                self.inner.poisoned.store(true, Ordering::SeqCst);
                self.inner.moved.notify_all();
                return Err(e);
            }
        };
        lock(&self.inner.applied).mark(appended.first_position, appended.last_position);
        self.advance(appended.last_position, written);
        Ok(())
    }

    /// Reads a consistent state of one site (an empty state for a site with no events). It
    /// waits only for a write of this site in progress. On a shared log the site first takes
    /// in what other writers appended; if that read fails, the error is returned.
    pub fn read<R>(&self, site_id: &SiteId, f: impl FnOnce(&Inbox) -> R) -> Result<R, ReadError> {
        let slot = self.site(site_id)?;
        let mut site = lock(&slot.site);
        if self.inner.config.shared {
            self.catch_up(site_id, &mut site)?;
        }
        Ok(f(&site.state.inbox))
    }

    /// A site's version: how many of its events its state holds (loading it, with a bounded
    /// cache, if it is not in memory).
    pub fn site_version(&self, site_id: &SiteId) -> Result<u64, ReadError> {
        Ok(lock(&self.site(site_id)?.site).state.version)
    }

    /// Up to `max` durable events after `position`, in log order: where a projection or an
    /// outbox resumes from the last position it handled.
    pub fn events_after(&self, position: u64, max: usize) -> Result<Vec<StoredEvent>, ReadError> {
        self.inner.log.read_all(position + 1, max)
    }

    /// A handle that waits for the log to move past a position.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            engine: self.clone(),
        }
    }

    /// Appends refused since open because another writer (another process on a shared log)
    /// appended to the site first; each was caught up and decided again.
    pub fn conflicts(&self) -> u64 {
        self.inner.conflicts.load(Ordering::Relaxed)
    }

    /// The durable end of the log as the engine last saw it.
    pub fn durable_position(&self) -> u64 {
        *lock(&self.inner.durable)
    }

    /// Records that the log is durable up to `position` (and `written` more events are),
    /// wakes the subscribers, and starts a snapshot if the policy says it is time.
    fn advance(&self, position: u64, written: u64) {
        {
            let mut durable = lock(&self.inner.durable);
            if position > *durable {
                *durable = position;
            }
        }
        self.inner.moved.notify_all();
        let Some(every) = self.inner.config.snapshot_every else {
            return;
        };
        let since = self
            .inner
            .since_snapshot
            .fetch_add(written, Ordering::SeqCst)
            + written;
        if since >= every
            && self.inner.snapshots.is_some()
            && !self.inner.snapshotting.swap(true, Ordering::SeqCst)
        {
            self.inner.since_snapshot.store(0, Ordering::SeqCst);
            let engine = self.clone();
            let spawned = std::thread::Builder::new()
                .name("inbox-snapshot".into())
                .spawn(move || {
                    if engine.snapshot().is_err() {
                        engine.inner.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    engine.inner.snapshotting.store(false, Ordering::SeqCst);
                });
            match spawned {
                Ok(handle) => {
                    let previous = lock(&self.inner.snapshotter).replace(handle);
                    // The previous thread has finished (only one runs at a time).
                    if let Some(p) = previous {
                        let _ = p.join();
                    }
                }
                Err(_) => self.inner.snapshotting.store(false, Ordering::SeqCst),
            }
        }
    }

    /// Snapshots by policy that failed since open (the log is unaffected; start-up then
    /// replays more).
    pub fn snapshot_errors(&self) -> u64 {
        self.inner.snapshot_errors.load(Ordering::Relaxed)
    }

    /// Snapshots written since open (by policy, by [`Engine::snapshot`] and at close).
    pub fn snapshots_taken(&self) -> u64 {
        self.inner.snapshots_taken.load(Ordering::Relaxed)
    }

    /// Writes a snapshot of every site now, if the engine has [`Snapshots`]; returns its file.
    ///
    /// The cut is consistent without stopping writers: `P` = [`Engine::applied_through`] is
    /// read first, then each site's state is cloned (an O(1) clone) under its lock. Every
    /// event at or before `P` is in the states by then, so it is in the clones;
    /// a clone may hold later events too, and the snapshot waits until those are durable
    /// before it is written (a snapshot must never hold what the log may lose). Its per-site
    /// versions let recovery skip, in the log after `P`, what the states already hold.
    ///
    /// After it, the log saves its index ([`EventLog::checkpoint`]), so that the next open
    /// reads neither the state nor the index of what the snapshot covers.
    ///
    /// If `P` is the position of the newest snapshot the engine started from or wrote
    /// (nothing was applied since), that snapshot is answered and nothing is written (nor is
    /// [`EngineConfig::before_snapshot`] called): a restart with no writes costs no snapshot.
    pub fn snapshot(&self) -> Result<Option<PathBuf>, CloseError> {
        let Some(snapshots) = &self.inner.snapshots else {
            return Ok(None);
        };
        let _one_at_a_time = lock(&self.inner.writing_snapshot);
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(CloseError::Poisoned);
        }
        // Every event up to here is in the states (a write holds its site's lock from submit
        // to apply, and another writer's event counts only once applied).
        let position = self.applied_through();
        if *lock(&self.inner.last_snapshot) == Some(position) {
            // Nothing new since the newest snapshot: it is this one.
            let existing = snapshots.path_of(position);
            if existing.exists() {
                return Ok(Some(existing));
            }
        }
        // The sites in memory, and (with a bounded cache) the others: listed under the map's
        // lock, so a site is in one list or the other.
        let (slots, others): (Vec<(SiteId, Arc<Slot>)>, Vec<SiteId>) = {
            let sites = read_lock(&self.inner.sites);
            let slots = sites
                .iter()
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect();
            let others = read_lock(&self.inner.known)
                .iter()
                .filter(|id| !sites.contains_key(*id))
                .cloned()
                .collect();
            (slots, others)
        };
        let mut sites: BTreeMap<SiteId, SiteState> = BTreeMap::new();
        let mut newest = position;
        for (id, slot) in slots {
            let site = lock(&slot.site);
            if site.state.version == 0 {
                continue;
            }
            newest = newest.max(site.position);
            sites.insert(id, site.state.clone());
        }
        // The clones are taken: a cache that went over its bound while they were held
        // evicts down to it.
        self.trim();
        // A site not in memory is carried over from the newest snapshot as its blocks are,
        // if the log has nothing of it after them; else it is loaded (not into the cache)
        // and written from its state.
        let index = read_lock(&self.inner.index).clone();
        let mut carried = Vec::new();
        for id in others {
            let in_snapshot = index.as_ref().and_then(|i| i.version_of(&id));
            if let (Some(i), Some(version)) = (&index, in_snapshot)
                && self.inner.log.site_version(&id)? == version
                && let Ok(Some(raw)) = i.raw_site(&id)
            {
                carried.push(raw);
                continue;
            }
            let site = self.load(&id)?;
            if site.state.version > 0 {
                newest = newest.max(site.position);
                sites.insert(id, site.state);
            }
        }
        // Wait until everything the clones hold is durable.
        while self.inner.log.last_position()? < newest {
            if self.inner.poisoned.load(Ordering::SeqCst) {
                return Err(CloseError::Poisoned);
            }
            let durable = lock(&self.inner.durable);
            if *durable < newest {
                let _ = self
                    .inner
                    .moved
                    .wait_timeout(durable, Duration::from_millis(50));
            }
        }
        if let Some(hook) = &self.inner.config.before_snapshot {
            hook(position).map_err(|source| CloseError::BeforeSnapshot { position, source })?;
        }
        let path = snapshots.write_with(position, &sites, carried)?;
        self.inner.snapshots_taken.fetch_add(1, Ordering::Relaxed);
        *lock(&self.inner.last_snapshot) = Some(position);
        let checkpointed = self.inner.log.checkpoint().map_err(CloseError::Checkpoint);
        if self.inner.config.max_sites.is_some() {
            // Sites not in memory load from this snapshot from now on. (If it cannot be read
            // back, they go on loading from the one before, which is kept, and the log.)
            if let Ok(index) = SnapshotIndex::open(&path, position) {
                *write_lock(&self.inner.index) = Some(Arc::new(index));
            }
        }
        checkpointed?;
        Ok(Some(path))
    }

    /// Waits for a snapshot by policy that is being written, then takes a last one (if the
    /// engine has [`Snapshots`]) and closes the engine.
    pub fn close(self) -> Result<Option<PathBuf>, CloseError> {
        let running = lock(&self.inner.snapshotter).take();
        if let Some(handle) = running {
            let _ = handle.join();
        }
        self.snapshot()
    }
}

/// Waits for the log to move: the feed's wake-up ([`Engine::subscribe`]).
#[derive(Clone, Debug)]
pub struct Subscription {
    engine: Engine,
}

impl Subscription {
    /// Waits until the durable end passes `position`, or `timeout` passes; returns the durable
    /// end as the engine knows it. Writes by this engine wake it at once; on a log other
    /// processes share, their writes are seen at the timeout (then read
    /// [`Engine::events_after`]).
    pub fn wait_past(&self, position: u64, timeout: Duration) -> u64 {
        let inner = &self.engine.inner;
        let durable = lock(&inner.durable);
        let (durable, _) = inner
            .moved
            .wait_timeout_while(durable, timeout, |d| *d <= position)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *durable
    }
}

/// A submitted batch's events with the positions and site versions the log gave them.
fn stored(ticket: &AppendTicket, envelopes: Vec<EventEnvelope>) -> Vec<StoredEvent> {
    let appended = ticket.appended();
    let first_version = appended.site_version + 1 - envelopes.len() as u64;
    envelopes
        .into_iter()
        .enumerate()
        .map(|(i, envelope)| StoredEvent {
            position: appended.first_position + i as u64,
            site_version: first_version + i as u64,
            envelope,
        })
        .collect()
}

/// What [`recover_reporting`] calls per event of the tail.
pub(crate) type ReportProgress<'a> = &'a mut dyn FnMut(u64, u64);

/// Replays `log` from `from` into `sites`, skipping what a site's state already holds.
pub(crate) fn replay_into(
    log: &dyn EventLog,
    from: u64,
    total: u64,
    sites: &mut BTreeMap<SiteId, SiteState>,
    config: &dyn Fn(&SiteId) -> InboxConfig,
    observer: Option<&Observer>,
    progress: ReportProgress<'_>,
) -> Result<(u64, u64), ReadError> {
    let mut position = from.saturating_sub(1);
    let mut replayed = 0u64;
    log.replay(from, &mut |stored| {
        position = stored.position;
        replayed += 1;
        progress(replayed, total);
        if !sites.contains_key(&stored.envelope.site) {
            let id = stored.envelope.site.clone();
            let inbox = Inbox::new(config(&id));
            sites.insert(id, SiteState { inbox, version: 0 });
        }
        let Some(site) = sites.get_mut(&stored.envelope.site) else {
            return ControlFlow::Continue(());
        };
        if stored.site_version > site.version {
            match observer {
                Some(observe) => {
                    site.inbox.apply(&stored.envelope);
                    observe(stored.position, &stored.envelope, &site.inbox);
                }
                None => site.inbox.apply_owned(stored.envelope.event),
            }
            site.version = stored.site_version;
        }
        ControlFlow::Continue(())
    })?;
    Ok((position, replayed))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::Watermark;

    proptest! {
        /// Ranges marked in any order, overlapping or repeated: `through` is the longest
        /// prefix of positions every one of which was marked (the model: a set of positions).
        #[test]
        fn the_watermark_is_the_marked_prefix(
            start in 0u64..4,
            ranges in proptest::collection::vec((1u64..60, 0u64..6), 0..40),
        ) {
            let mut mark = Watermark { through: start, ahead: Default::default() };
            let mut done: BTreeSet<u64> = (1..=start).collect();
            for (first, len) in ranges {
                let last = first + len;
                mark.mark(first, last);
                done.extend(first..=last);
                let mut prefix = 0;
                while done.contains(&(prefix + 1)) {
                    prefix += 1;
                }
                prop_assert_eq!(mark.through, prefix);
                prop_assert!(mark.ahead.keys().all(|&k| k > mark.through + 1));
            }
        }
    }
}
