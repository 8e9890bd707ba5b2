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
//! Everything here is blocking (the log's fsync); the HTTP layer calls it from Tokio's
//! blocking pool.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use inbox_core::{
    Caller, Command, Context, EventEnvelope, EventId, IdSource, Inbox, InboxConfig, Rejection,
    SCHEMA_VERSION, SiteId, Timestamp,
};
use inbox_store::{AppendError, EventLog, ExpectedVersion, FileLog, ReadError};
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
    log: Arc<FileLog>,
    sites: RwLock<HashMap<SiteId, Arc<Mutex<Site>>>>,
    cursor_key: [u8; 16],
    replica_sites: Mutex<BTreeSet<SiteId>>,
    replica_sites_path: PathBuf,
    outbox: Option<Arc<Outbox>>,
    writes: AtomicU64,
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
        let engine = Engine {
            log: Arc::new(log),
            sites: RwLock::new(HashMap::new()),
            cursor_key,
            replica_sites: Mutex::new(replica_sites),
            replica_sites_path,
            outbox,
            writes: AtomicU64::new(0),
        };
        let total = engine.log.last_position();
        let undelivered_from = match &engine.outbox {
            Some(o) => o
                .start(total)
                .map_err(|e| format!("webhook cursors: {e}"))?,
            None => u64::MAX,
        };
        let mut events = 0u64;
        engine
            .log
            .replay(1, &mut |stored| {
                events += 1;
                progress(events, total);
                let site = engine.site(&stored.envelope.site);
                let mut site = lock(&site);
                site.replica.apply(&stored.envelope);
                site.version = stored.site_version;
                if let Some(outbox) = engine.outbox.as_ref().filter(|o| o.is_active())
                    && stored.position > undelivered_from
                    && !engine.is_replica(&stored.envelope.site)
                {
                    let anns = announcements(&stored.envelope, site.replica.inbox());
                    outbox.enqueue(stored.position, anns);
                }
                ControlFlow::Continue(())
            })
            .map_err(|e: ReadError| e.to_string())?;
        let sites = engine.sites.read().map_or(0, |s| s.len());
        Ok((
            engine,
            Opened {
                events,
                sites,
                torn_tail: report.torn_tail.is_some(),
            },
        ))
    }

    /// The log (for the outbox's durable watermark and for tests).
    pub fn log(&self) -> &Arc<FileLog> {
        &self.log
    }

    /// Writes acknowledged since start.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
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

    /// Reads a site's state (an empty state for a site with no events).
    pub fn read<R>(&self, site: &SiteId, f: impl FnOnce(&Inbox) -> R) -> R {
        let site = self.site(site);
        let site = lock(&site);
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
            // not queued yet.
            let _gate = self
                .outbox
                .as_ref()
                .filter(|o| o.is_active())
                .map(|o| o.gate());
            let mut site = lock(&site);
            let recorded_at = now();
            let ctx = Context {
                now: recorded_at,
                caller,
            };
            let events = site.replica.inbox().decide(command, &ctx, &mut RandomIds)?;
            if events.is_empty() {
                let r = answer(site.replica.inbox(), &[]);
                return Ok(r);
            }
            let envelopes: Vec<EventEnvelope> = events
                .into_iter()
                .map(|event| EventEnvelope {
                    event_id: EventId::from_uuid(Uuid::new_v4()),
                    schema_version: SCHEMA_VERSION,
                    site: site_id.clone(),
                    recorded_at,
                    event,
                })
                .collect();
            let ticket =
                self.log
                    .submit(site_id, ExpectedVersion::Exactly(site.version), &envelopes)?;
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

    /// Folds a verified delivery from the real Wix into its site's replica, durably.
    /// Returns whether it was new (a repeat changes nothing).
    pub fn ingest(&self, delivery: &Delivery) -> Result<bool, WriteError> {
        let site_id = &delivery.instance_id;
        {
            let mut replicas = lock(&self.replica_sites);
            if !replicas.contains(site_id) {
                if lock(&self.site(site_id)).version > 0 {
                    return Err(WriteError::NotAReplica(site_id.clone()));
                }
                replicas.insert(site_id.clone());
                let bytes = serde_json::to_vec(&*replicas)
                    .map_err(|e| WriteError::ReplicaList(e.to_string()))?;
                write_private(&self.replica_sites_path, &bytes)
                    .map_err(|e| WriteError::ReplicaList(e.to_string()))?;
            }
        }
        let site = self.site(site_id);
        let ticket = {
            let mut site = lock(&site);
            if site.replica.has_seen(delivery) {
                return Ok(false);
            }
            let envelopes = delivery.envelopes(now());
            if envelopes.is_empty() {
                return Ok(true);
            }
            let ticket =
                self.log
                    .submit(site_id, ExpectedVersion::Exactly(site.version), &envelopes)?;
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
}
