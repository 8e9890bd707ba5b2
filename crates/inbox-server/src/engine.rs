//! The engine as the server runs it: one core state per site, the durable log under it, the
//! clock and the id source around it, and the outbox fed from it.
//!
//! A write goes: lock the site; `decide`; `submit` the events to the log (their positions
//! are fixed now, in the order of the site lock); `apply` them and compute what they
//! announce; unlock; `wait` until the log has them durably; answer. Concurrent writes, to
//! one site or to many, therefore share fsyncs (group commit), and nothing is acknowledged
//! before it is durable. A reader may see an event up to one fsync before its writer is
//! answered; if that fsync fails the log refuses every later write and the server answers
//! 503 to writes until it is restarted (restart replays what really reached the disk).
//!
//! On PostgreSQL ([`Engine::open_shared`]) other processes write to the same sites, so the
//! local state is a cache that can be behind: a write decides against it and appends at its
//! version; a conflict means another process got there first, and the write reads the
//! site's new events, applies them and decides again (up to [`MAX_CONFLICT_RETRIES`]
//! times). A refusal or a no-op, which appends nothing and so cannot conflict, is only
//! answered after the site's new events are taken in (and decided again if there were any). A read first applies what the site has in the database that is not here yet. A
//! follower thread ([`Engine::follow`]) applies every other process's events in log order,
//! woken by `NOTIFY`, so the outbox of this process sees every event; the outbox's
//! watermark is the follower's position rather than the log's end.
//!
//! Everything here is blocking (the log's fsync or the database); the HTTP layer calls it
//! from Tokio's blocking pool.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use inbox_core::{
    Caller, Command, Context, EventEnvelope, EventId, IdSource, Inbox, InboxConfig, Rejection,
    SiteId, Timestamp,
};
use inbox_store::{
    AppendError, EventLog, ExpectedVersion, FileLog, PostgresLog, ReadError, StoredEvent,
};
use inbox_wix::webhook::{Announcement, Delivery, Replica, announcements};
use uuid::Uuid;

use crate::keys::write_private;
use crate::outbox::Outbox;

/// Fresh ids from the operating system's random source (UUIDv4).
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&mut self) -> Uuid {
        Uuid::new_v4()
    }
}

/// Now, from the system clock, in microseconds (the core takes time as an argument; the
/// server is where it is read).
pub fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    Timestamp::from_micros(micros)
}

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
    /// The list of replica sites could not be saved.
    #[error("could not record the replica site: {0}")]
    ReplicaList(String),
    /// The site's newer events could not be read from the shared log.
    #[error("reading the site's newer events failed: {0}")]
    CatchUp(#[from] ReadError),
    /// Other processes kept writing to the site first.
    #[error("gave up after {0} conflicting writes from other processes; try again")]
    Contended(u32),
}

/// Conflicts with other processes a write re-reads and retries before giving up.
pub const MAX_CONFLICT_RETRIES: u32 = 32;

/// Events read from the shared log at a time.
const CHUNK: usize = 4096;

/// The setting name that marks a replica site in the shared database.
fn replica_setting(site: &SiteId) -> String {
    format!("replica-site:{}", site.0)
}

struct Site {
    replica: Replica,
    version: u64,
}

/// What [`Engine::open`] found.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    /// Events replayed.
    pub events: u64,
    /// Sites.
    pub sites: usize,
    /// Whether a torn tail was cut.
    pub torn_tail: bool,
}

/// Every site's state over one durable log.
pub struct Engine {
    log: Arc<dyn EventLog>,
    /// The shared database, when other processes write to the log too.
    shared: Option<Arc<PostgresLog>>,
    sites: RwLock<HashMap<SiteId, Arc<Mutex<Site>>>>,
    cursor_key: [u8; 16],
    replica_sites: Mutex<BTreeSet<SiteId>>,
    /// Where the replica list is kept on the file store.
    replica_sites_path: Option<PathBuf>,
    outbox: Option<Arc<Outbox>>,
    writes: AtomicU64,
    /// Shared log: appends refused because another process wrote to the site first.
    conflicts: AtomicU64,
    /// Shared log: every position up to this one is applied here (the follower's place).
    followed: AtomicU64,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    /// Opens the log in `data/log`, replays it into every site's state, and queues the
    /// announcements the outbox has not delivered yet (`progress` is called per event).
    pub fn open(
        data: &Path,
        cursor_key: [u8; 16],
        outbox: Option<Arc<Outbox>>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Engine, Opened), String> {
        let (log, report) = FileLog::open(data.join("log")).map_err(|e| e.to_string())?;
        let replica_sites_path = data.join("replica-sites.json");
        let replica_sites: BTreeSet<SiteId> = match std::fs::read(&replica_sites_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: {e}", replica_sites_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(format!("{}: {e}", replica_sites_path.display())),
        };
        let engine = Engine::new(
            Arc::new(log),
            None,
            cursor_key,
            replica_sites,
            Some(replica_sites_path),
            outbox,
        );
        let mut opened = engine.replay(progress)?;
        opened.torn_tail = report.torn_tail.is_some();
        Ok((engine, opened))
    }

    /// Opens the state of every site over a PostgreSQL log that other processes share:
    /// replays it, and queues the announcements not delivered yet. Start [`Engine::follow`]
    /// next, so the other processes' events keep arriving.
    pub fn open_shared(
        pg: Arc<PostgresLog>,
        cursor_key: [u8; 16],
        outbox: Option<Arc<Outbox>>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Engine, Opened), String> {
        let replica_sites = pg
            .setting_names("replica-site:")
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|n| n.strip_prefix("replica-site:").map(SiteId::new))
            .collect();
        let log: Arc<dyn EventLog> = pg.clone();
        let engine = Engine::new(log, Some(pg), cursor_key, replica_sites, None, outbox);
        let opened = engine.replay(progress)?;
        Ok((engine, opened))
    }

    fn new(
        log: Arc<dyn EventLog>,
        shared: Option<Arc<PostgresLog>>,
        cursor_key: [u8; 16],
        replica_sites: BTreeSet<SiteId>,
        replica_sites_path: Option<PathBuf>,
        outbox: Option<Arc<Outbox>>,
    ) -> Engine {
        Engine {
            log,
            shared,
            sites: RwLock::new(HashMap::new()),
            cursor_key,
            replica_sites: Mutex::new(replica_sites),
            replica_sites_path,
            outbox,
            writes: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            followed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// Replays the whole log into the sites' states, queueing what the outbox has not
    /// delivered yet.
    fn replay(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<Opened, String> {
        let total = self.log.last_position().map_err(|e| e.to_string())?;
        let undelivered_from = match &self.outbox {
            Some(o) => o
                .start(total)
                .map_err(|e| format!("webhook cursors: {e}"))?,
            None => u64::MAX,
        };
        let mut events = 0u64;
        let mut last = 0u64;
        self.log
            .replay(1, &mut |stored| {
                events += 1;
                last = stored.position;
                progress(events, total);
                let site = self.site(&stored.envelope.site);
                let mut site = lock(&site);
                self.apply_stored(&mut site, &stored, undelivered_from);
                ControlFlow::Continue(())
            })
            .map_err(|e: ReadError| e.to_string())?;
        self.followed.store(last, Ordering::SeqCst);
        let sites = self.sites.read().map_or(0, |s| s.len());
        Ok(Opened {
            events,
            sites,
            torn_tail: false,
        })
    }

    /// Applies a stored event if it is its site's next one (a shared log's event may have
    /// been applied already, by the write that made it or by a catch-up), and queues its
    /// announcements if it is after `undelivered_from`. Returns whether it was applied.
    fn apply_stored(&self, site: &mut Site, stored: &StoredEvent, undelivered_from: u64) -> bool {
        if stored.site_version <= site.version {
            return false;
        }
        if site.version == 0 && self.shared.is_some() {
            // A site new to this process: another process may have made it a replica.
            self.learn_replica(&stored.envelope.site);
        }
        site.replica.apply(&stored.envelope);
        site.version = stored.site_version;
        if let Some(outbox) = self.outbox.as_ref().filter(|o| o.is_active())
            && stored.position > undelivered_from
            && !self.is_replica(&stored.envelope.site)
        {
            let anns = announcements(&stored.envelope, site.replica.inbox());
            outbox.enqueue(stored.position, anns);
        }
        true
    }

    /// Shared log: whether the database marks `site` as a replica (remembered if so).
    fn learn_replica(&self, site: &SiteId) -> bool {
        if self.is_replica(site) {
            return true;
        }
        let Some(pg) = &self.shared else {
            return false;
        };
        match pg.setting(&replica_setting(site)) {
            Ok(Some(_)) => {
                lock(&self.replica_sites).insert(site.clone());
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(%site, error = %e, "could not ask whether the site is a replica");
                false
            }
        }
    }

    /// Shared log: applies the site's events this process does not have yet.
    fn catch_up(&self, site_id: &SiteId, site: &mut Site) -> Result<(), ReadError> {
        loop {
            let events = self.log.read_site(site_id, site.version + 1, CHUNK)?;
            let n = events.len();
            for stored in &events {
                self.apply_stored(site, stored, 0);
            }
            if n < CHUNK {
                return Ok(());
            }
        }
    }

    /// Shared log: applies every other process's events as they are committed, in log
    /// order, until [`Engine::stop`]. Woken by `NOTIFY`; reconnects if the connection
    /// breaks. Run it on a thread of its own.
    pub fn follow(&self) {
        let Some(pg) = &self.shared else {
            return;
        };
        let mut listener = None;
        while !self.stop.load(Ordering::SeqCst) {
            if listener.is_none() {
                match pg.listen() {
                    Ok(l) => listener = Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "follower: cannot listen; retrying in 1 s");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            }
            // Listening before reading: a commit after the read is announced to the wait.
            if let Err(e) = self.follow_once() {
                tracing::warn!(error = %e, "follower: reading the log failed; retrying");
            }
            if let Some(l) = listener.as_mut() {
                match l.wait(Duration::from_millis(500)) {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "follower: the listening connection broke");
                        listener = None;
                    }
                }
            }
        }
    }

    /// Applies what the log has after the follower's position.
    fn follow_once(&self) -> Result<(), ReadError> {
        loop {
            let from = self.followed.load(Ordering::SeqCst) + 1;
            let events = self.log.read_all(from, CHUNK)?;
            let n = events.len();
            let mut applied_any = false;
            for stored in events {
                let site = self.site(&stored.envelope.site);
                let mut site = lock(&site);
                if stored.site_version > site.version + 1 {
                    // Cannot happen (positions are in commit order); be safe anyway.
                    self.catch_up(&stored.envelope.site, &mut site)?;
                } else {
                    applied_any |= self.apply_stored(&mut site, &stored, 0);
                }
                drop(site);
                self.followed.store(stored.position, Ordering::SeqCst);
            }
            if applied_any && let Some(outbox) = &self.outbox {
                outbox.notify();
            }
            if n < CHUNK {
                return Ok(());
            }
        }
    }

    /// Shared log: the position up to which every event is applied here, and so has its
    /// announcements queued (the outbox's watermark).
    pub fn followed(&self) -> u64 {
        self.followed.load(Ordering::SeqCst)
    }

    /// Whether the log is shared with other processes (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Stops [`Engine::follow`] (within its wait of half a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The log (for the outbox's durable watermark and for tests).
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Writes acknowledged since start.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Appends refused since start because another process wrote to the site first (each
    /// was decided again and retried).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    fn config(&self, site: &SiteId) -> InboxConfig {
        InboxConfig::new(site.clone(), self.cursor_key)
    }

    fn site(&self, id: &SiteId) -> Arc<Mutex<Site>> {
        if let Some(s) = self
            .sites
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
        {
            return s.clone();
        }
        let mut sites = self
            .sites
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sites
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Site {
                    replica: Replica::new(self.config(id)),
                    version: 0,
                }))
            })
            .clone()
    }

    /// Whether the site is a replica fed by Wix webhooks.
    pub fn is_replica(&self, site: &SiteId) -> bool {
        lock(&self.replica_sites).contains(site)
    }

    /// Reads a site's state (an empty state for a site with no events). On a shared log
    /// the site first takes in what other processes wrote to it (if the database cannot be
    /// reached, the state as this process has it is read).
    pub fn read<R>(&self, site_id: &SiteId, f: impl FnOnce(&Inbox) -> R) -> R {
        let site = self.site(site_id);
        let mut site = lock(&site);
        if self.shared.is_some()
            && let Err(e) = self.catch_up(site_id, &mut site)
        {
            tracing::warn!(site = %site_id, error = %e, "reading without the newest events");
        }
        f(site.replica.inbox())
    }

    /// Every site's id.
    pub fn site_ids(&self) -> Vec<SiteId> {
        let mut ids: Vec<SiteId> = self
            .sites
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Decides `command` for `site`, makes its events durable and applies them; `answer`
    /// reads the state right after (under the site's lock) to build the response.
    pub fn execute<R>(
        &self,
        site_id: &SiteId,
        caller: Caller,
        command: &Command,
        answer: impl FnOnce(&Inbox, &[EventEnvelope]) -> R,
    ) -> Result<R, WriteError> {
        if self.is_replica(site_id) {
            return Err(WriteError::ReadOnlyReplica(site_id.clone()));
        }
        let site = self.site(site_id);
        let (ticket, result) = {
            // Held from submit to enqueue: the outbox reads the durable end only when no
            // write is between the two, so it never passes a position whose webhooks are
            // not queued yet. (A shared log's outbox follows the follower instead.)
            let _gate = self
                .outbox
                .as_ref()
                .filter(|o| o.is_active() && self.shared.is_none())
                .map(|o| o.gate());
            let mut site = lock(&site);
            if self.shared.is_some() && site.version == 0 && self.learn_replica(site_id) {
                return Err(WriteError::ReadOnlyReplica(site_id.clone()));
            }
            let mut conflicts = 0u32;
            let mut caught_up = false;
            let (ticket, envelopes) = loop {
                let recorded_at = now();
                let ctx = Context {
                    now: recorded_at,
                    caller,
                };
                let events = match site.replica.inbox().decide(command, &ctx, &mut RandomIds) {
                    Ok(events) if !events.is_empty() => events,
                    outcome => {
                        // A refusal or a no-op is answered from the state alone; on a shared
                        // log that state may be behind (a conversation another process just
                        // made): take in the site's new events once and decide again.
                        if self.shared.is_some() && !caught_up {
                            caught_up = true;
                            let before = site.version;
                            self.catch_up(site_id, &mut site)?;
                            if site.version != before {
                                continue;
                            }
                        }
                        outcome?;
                        return Ok(answer(site.replica.inbox(), &[]));
                    }
                };
                let envelopes: Vec<EventEnvelope> = events
                    .into_iter()
                    .map(|event| {
                        EventEnvelope::new(
                            site_id.clone(),
                            EventId::from_uuid(Uuid::new_v4()),
                            recorded_at,
                            event,
                        )
                    })
                    .collect();
                match self.submit(site_id, &mut site, &envelopes, &mut conflicts)? {
                    Some(ticket) => break (ticket, envelopes),
                    None => continue,
                }
            };
            let first = ticket.appended().first_position;
            for (i, e) in envelopes.iter().enumerate() {
                site.replica.apply(e);
                if let Some(outbox) = self.outbox.as_ref().filter(|o| o.is_active()) {
                    let anns: Vec<Announcement> = announcements(e, site.replica.inbox());
                    outbox.enqueue(first + i as u64, anns);
                }
            }
            site.version = ticket.appended().site_version;
            (ticket, answer(site.replica.inbox(), &envelopes))
        };
        self.log.wait(ticket)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(outbox) = &self.outbox {
            outbox.notify();
        }
        Ok(result)
    }

    /// Submits a batch at the site's version. On a shared log, a conflict (another process
    /// wrote first) applies the site's new events and answers `None`: decide again.
    fn submit(
        &self,
        site_id: &SiteId,
        site: &mut Site,
        envelopes: &[EventEnvelope],
        conflicts: &mut u32,
    ) -> Result<Option<inbox_store::AppendTicket>, WriteError> {
        match self
            .log
            .submit(site_id, ExpectedVersion::Exactly(site.version), envelopes)
        {
            Ok(ticket) => Ok(Some(ticket)),
            Err(AppendError::Conflict { .. }) if self.shared.is_some() => {
                *conflicts += 1;
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                if *conflicts > MAX_CONFLICT_RETRIES {
                    return Err(WriteError::Contended(*conflicts));
                }
                self.catch_up(site_id, site)?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Folds a verified delivery from the real Wix into its site's replica, durably.
    /// Returns whether it was new (a repeat changes nothing).
    pub fn ingest(&self, delivery: &Delivery) -> Result<bool, WriteError> {
        let site_id = &delivery.instance_id;
        if !self.learn_replica(site_id) {
            let site = self.site(site_id);
            let mut site = lock(&site);
            if self.shared.is_some() {
                self.catch_up(site_id, &mut site)?;
            }
            if site.version > 0 {
                return Err(WriteError::NotAReplica(site_id.clone()));
            }
            self.mark_replica(site_id)?;
        }
        let site = self.site(site_id);
        let ticket = {
            let mut site = lock(&site);
            let mut conflicts = 0u32;
            let (ticket, envelopes) = loop {
                if site.replica.has_seen(delivery) {
                    return Ok(false);
                }
                let envelopes = delivery.envelopes(now());
                if envelopes.is_empty() {
                    return Ok(true);
                }
                match self.submit(site_id, &mut site, &envelopes, &mut conflicts)? {
                    Some(ticket) => break (ticket, envelopes),
                    None => continue,
                }
            };
            for e in &envelopes {
                site.replica.apply(e);
            }
            site.version = ticket.appended().site_version;
            ticket
        };
        self.log.wait(ticket)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Records that `site` is a replica: in `replica-sites.json`, or in the shared
    /// database, before any of its events is written.
    fn mark_replica(&self, site_id: &SiteId) -> Result<(), WriteError> {
        let mut replicas = lock(&self.replica_sites);
        if !replicas.insert(site_id.clone()) {
            return Ok(());
        }
        let saved = match (&self.shared, &self.replica_sites_path) {
            (Some(pg), _) => pg
                .insert_setting(&replica_setting(site_id), b"")
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (None, Some(path)) => serde_json::to_vec(&*replicas)
                .map_err(|e| e.to_string())
                .and_then(|bytes| write_private(path, &bytes).map_err(|e| e.to_string())),
            (None, None) => Ok(()),
        };
        if let Err(e) = saved {
            replicas.remove(site_id);
            return Err(WriteError::ReplicaList(e));
        }
        Ok(())
    }
}
