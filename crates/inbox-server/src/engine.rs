//! The engine as the server runs it: `inbox-store`'s [`inbox_store::Engine`] (every site's
//! state over the durable log: decide, submit, apply, wait; conflicts on a shared log caught
//! up and decided again; snapshots; the feed), with what is the server's around it: the
//! clock and the id source a command is decided with, the caller, the replica registry
//! (a replica of a real Wix site is written only by its webhooks), and counters.
//!
//! Nothing is acknowledged before it is durable; concurrent writes share fsyncs (the log's
//! group commit). If an fsync fails, the engine refuses every later write and the server
//! answers 503 to writes until it is restarted (restart replays what reached the disk).
//!
//! Everything here is blocking (the log's fsync or the database); the HTTP layer calls it
//! from Tokio's blocking pool. What the outbox needs (each event with the state right after
//! it, and a watermark) it takes from the store's engine through
//! [`inbox_store::EngineConfig::observe`] and [`inbox_store::Engine::applied_through`],
//! wired in [`crate::start`]: this module does not know the outbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use inbox_core::{Caller, Command, Context, Inbox, InboxConfig, Rejection, SiteId};
use inbox_store::{
    AppendError, EngineConfig, ExecuteError, IngestError, ReadError, RecoverError, StoredEvent,
};
use inbox_wix::webhook::Delivery;

use crate::backend::{Backend, ReplicaError, ReplicaRegistry};
use crate::clock::{RandomIds, now};

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The command was refused; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The site is a replica of a real Wix site: only its webhooks write to it.
    #[error("site {0} is a replica of a real Wix site, written only by its webhooks")]
    ReadOnlyReplica(SiteId),
    /// The log refused or failed.
    #[error("the event log failed: {0}")]
    Store(#[from] AppendError),
    /// Webhooks from Wix may only feed replica sites, not a site the emulator writes.
    #[error("site {0} is written by this emulator; Wix webhooks may only feed replica sites")]
    NotAReplica(SiteId),
    /// The replica registry could not be asked or written.
    #[error(transparent)]
    Replicas(#[from] ReplicaError),
    /// The site's newer events could not be read from the log.
    #[error("reading the site's newer events failed: {0}")]
    CatchUp(#[from] ReadError),
    /// Other processes kept writing to the site first.
    #[error("gave up after {0} conflicting writes from other processes; try again")]
    Contended(u32),
    /// A delivery's events could not be ingested as they are (a bug: the intake makes them).
    #[error("the delivery's events: {0}")]
    Ingest(IngestError),
}

impl From<ExecuteError> for WriteError {
    fn from(e: ExecuteError) -> Self {
        match e {
            ExecuteError::Rejected(r) => WriteError::Rejected(r),
            ExecuteError::Append(a) => WriteError::Store(a),
            ExecuteError::CatchUp(r) => WriteError::CatchUp(r),
            ExecuteError::Contended(n) => WriteError::Contended(n),
        }
    }
}

impl From<IngestError> for WriteError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Append(a) => WriteError::Store(a),
            IngestError::CatchUp(r) => WriteError::CatchUp(r),
            IngestError::Contended(n) => WriteError::Contended(n),
            other => WriteError::Ingest(other),
        }
    }
}

/// Why the engine did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The snapshot and the log could not be read into a state.
    #[error(transparent)]
    Recover(#[from] RecoverError),
}

/// What [`Engine::open`] found.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    /// Events folded at start: the log after the snapshot (or all of it).
    pub events: u64,
    /// The snapshot start-up began from, if any.
    pub snapshot_position: Option<u64>,
    /// The log position the state includes.
    pub position: u64,
    /// Sites.
    pub sites: usize,
    /// Whether a torn tail was cut.
    pub torn_tail: bool,
}

/// Each site's settings: the cursor key is the server's, the same across restarts (or
/// outstanding cursors stop working).
pub fn config(cursor_key: [u8; 16]) -> EngineConfig {
    EngineConfig::new(move |site: &SiteId| InboxConfig::new(site.clone(), cursor_key))
}

/// Every site's state over one durable log, with the server's clock, ids and replicas.
pub struct Engine {
    core: inbox_store::Engine,
    replicas: Arc<dyn ReplicaRegistry>,
    writes: AtomicU64,
    after_writes: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Engine {
    /// Opens the store: the newest usable snapshot (unless `from_snapshot` is false: then
    /// the whole log is folded, though snapshots are still written), then the log after it
    /// (`progress` is called per event folded). `config` comes from [`config`], with
    /// whatever the caller adds (an observer, a snapshot policy); a shared store's engine is
    /// made shared here.
    pub fn open(
        backend: &dyn Backend,
        config: EngineConfig,
        from_snapshot: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Engine, Opened), OpenError> {
        let (core, opened) = inbox_store::Engine::open(
            backend.log(),
            backend.snapshots().filter(|_| from_snapshot),
            config.shared(backend.is_shared()),
            &mut |p| progress(p.done, p.total),
        )?;
        for skipped in &opened.skipped_snapshots {
            tracing::warn!(?skipped, "a snapshot could not be used; replayed past it");
        }
        let engine = Engine {
            core,
            replicas: backend.replicas(),
            writes: AtomicU64::new(0),
            after_writes: None,
        };
        let opened = Opened {
            events: opened.replayed,
            snapshot_position: opened.snapshot_position,
            position: opened.position,
            sites: opened.sites,
            torn_tail: backend.torn_tail(),
        };
        Ok((engine, opened))
    }

    /// Calls `f` after every write this engine made durable (the outbox's wake-up).
    pub fn after_writes(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.after_writes = Some(Box::new(f));
        self
    }

    fn written(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = &self.after_writes {
            f();
        }
    }

    /// The store's engine: its feed, watermark, snapshots and log.
    pub fn core(&self) -> &inbox_store::Engine {
        &self.core
    }

    /// Writes acknowledged since start.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Appends refused since start because another process wrote to the site first (each
    /// was decided again and retried).
    pub fn conflicts(&self) -> u64 {
        self.core.conflicts()
    }

    /// Whether the site is a replica fed by Wix webhooks.
    pub fn is_replica(&self, site: &SiteId) -> Result<bool, WriteError> {
        let has_events = || Ok(self.core.site_version(site)? > 0);
        Ok(self.replicas.is_replica(site, &has_events)?)
    }

    /// Reads a consistent state of one site (an empty state for a site with no events). On
    /// a shared log the site first takes in what other processes wrote to it.
    pub fn read<R>(&self, site: &SiteId, f: impl FnOnce(&Inbox) -> R) -> Result<R, ReadError> {
        self.core.read(site, f)
    }

    /// Every site's id, sorted.
    pub fn site_ids(&self) -> Vec<SiteId> {
        let mut ids = self.core.site_ids();
        ids.sort();
        ids
    }

    /// Decides `command` for `site` now, as `caller`, makes its events durable and applies
    /// them; `answer` reads the state right after them (under the site's lock) to build the
    /// response. A replica site refuses.
    pub fn execute<R>(
        &self,
        site: &SiteId,
        caller: Caller,
        command: &Command,
        answer: impl FnOnce(&Inbox, &[StoredEvent]) -> R,
    ) -> Result<R, WriteError> {
        if self.is_replica(site)? {
            return Err(WriteError::ReadOnlyReplica(site.clone()));
        }
        let ctx = Context { now: now(), caller };
        let (_, answered) = self
            .core
            .execute_with(site, command, &ctx, &mut RandomIds, answer)?;
        self.written();
        Ok(answered)
    }

    /// Folds a verified delivery from the real Wix into its site's replica, durably. The
    /// first delivery of a site with no events makes it a replica; a site this emulator
    /// writes refuses. Returns whether it was new (a redelivery changes nothing).
    pub fn ingest(&self, delivery: &Delivery) -> Result<bool, WriteError> {
        let site = &delivery.instance_id;
        if !self.is_replica(site)? {
            if self.core.site_version(site)? > 0 {
                return Err(WriteError::NotAReplica(site.clone()));
            }
            // Marked before its first event: a site with events that is not marked is
            // never a replica (what the registry relies on).
            self.replicas.mark(site)?;
        }
        let envelopes = delivery.envelopes(now());
        let given = envelopes.len();
        let ingested = self.core.ingest(site, envelopes)?;
        self.written();
        Ok(given == 0 || !ingested.events.is_empty())
    }
}
