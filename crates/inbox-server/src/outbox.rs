//! Outgoing webhooks, delivered at least once from a durable outbox.
//!
//! The outbox *is* the event log: each webhook URL has a cursor, the log position up to
//! which everything has been delivered to it, saved in `data/outbox/` (temporary file,
//! fsync, rename) every [`SAVE_EVERY`] deliveries, whenever the worker catches up, and at
//! shutdown. What is still to deliver is computed from the log: the store's engine shows the
//! outbox each event with the state right after it ([`Outbox::observe`], wired as the
//! engine's observer), which queues the event's announcements if they are after the smallest
//! cursor, and on start-up the replay of the log's tail shows them again. A start from a
//! snapshot does not replay what the snapshot holds, so before each snapshot the outbox
//! saves what it has queued beside it ([`Outbox::save_pending`], `data/outbox/pending-<P>.json`)
//! and loads it at the next start ([`Outbox::load_pending`]). A worker per URL delivers, in
//! log order, only up to the engine's watermark (every event up to it is durable and its
//! announcements queued); a failed POST is
//! retried with exponential backoff and full jitter, with the same event id every time. So nothing acknowledged is lost when the receiver is
//! down for minutes or `inboxd` is killed: at worst an event is delivered again, which the
//! receiver deduplicates on its id.
//!
//! On PostgreSQL (`--postgres`, several processes on one database) the cursors live in the
//! database (`inbox_cursors`), and each URL is delivered by one process at a time: the
//! worker that holds the URL's lease (a session advisory lock, released by the server the
//! moment its process dies). Every process queues every event's announcements (its
//! follower applies the others' events), so whichever holds the lease can deliver from the
//! shared cursor; the others only drop what the cursor has passed. The lease is checked
//! before each delivery and the cursor is saved through the lease's own connection, so a
//! process that lost its lease stops within one delivery and cannot move the cursor. Dead
//! letters go to the database too (`inbox_kv`, `dead-letter:<url id>:<event id>`).
//!
//! A URL configured for the first time starts at the log's end: it receives what happens
//! from then on. A delivery refused [`MAX_ATTEMPTS`] times (about half an hour) is set
//! aside in the URL's dead-letter file (`data/outbox/<id>.dead.jsonl`, synced) and logged,
//! so one event a receiver can never take does not block every later one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inbox_core::{EventEnvelope, Inbox};
use inbox_store::{Lease, PostgresLog};
use inbox_wix::webhook::{Announcement, WebhookSigner, announcements};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::clock::now;
use crate::keys::write_private;

/// Pending-announcement files kept beside the snapshots (the store keeps two snapshots).
const PENDING_KEPT: usize = 3;

/// How long a signed delivery stays valid.
pub const TOKEN_TTL_SECS: i64 = 3600;
/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Deliveries between two saves of a URL's cursor (it is also saved when caught up).
pub const SAVE_EVERY: u32 = 64;
/// Attempts before a delivery is set aside (dead-lettered): with full jitter up to
/// [`BACKOFF_CAP`], about half an hour of trying, so a receiver that is down for minutes
/// loses nothing, and one that refuses a single event forever (e.g. an app with no handler
/// for its type) does not block every later event behind it.
pub const MAX_ATTEMPTS: u32 = 40;

struct Target {
    url: String,
    /// The URL's id (UUIDv5 of the URL): names its files and database rows.
    id: Uuid,
    cursor: AtomicU64,
    cursor_path: PathBuf,
    dead_path: PathBuf,
}

/// The outbox: announcements by log position, and one cursor per URL.
pub struct Outbox {
    queue: Mutex<BTreeMap<u64, Vec<Announcement>>>,
    targets: Vec<Arc<Target>>,
    notify: Notify,
    signer: WebhookSigner,
    delivered: AtomicU64,
    retries: AtomicU64,
    dead: AtomicU64,
    /// Events after this position are announced: the smallest cursor at start (nothing
    /// before [`Outbox::start`]).
    undelivered_from: AtomicU64,
    /// Where pending announcements are saved beside snapshots (the file store's outbox).
    pending_dir: Option<PathBuf>,
    /// The shared database, when several processes deliver from one log.
    shared: Option<Arc<PostgresLog>>,
}

/// Why the announcements saved beside a snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    /// No file for that snapshot (written by an older version, or by `inboxd` offline).
    #[error("no pending announcements were saved beside the snapshot at {0}")]
    Missing(u64),
    /// The file could not be read or decoded.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

fn read_cursor(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok()
}

impl Outbox {
    /// An outbox delivering to `urls`, with cursors kept in `dir`.
    pub fn new(urls: &[String], dir: &Path, signer: WebhookSigner) -> std::io::Result<Self> {
        if !urls.is_empty() {
            std::fs::create_dir_all(dir)?;
        }
        let mut outbox = Self::with_targets(urls, dir, signer, None);
        outbox.pending_dir = Some(dir.to_path_buf());
        Ok(outbox)
    }

    /// An outbox delivering to `urls` with its cursors, leases and dead letters in the
    /// shared database.
    pub fn new_shared(urls: &[String], pg: Arc<PostgresLog>, signer: WebhookSigner) -> Self {
        Self::with_targets(urls, Path::new("postgres:inbox_cursors"), signer, Some(pg))
    }

    fn with_targets(
        urls: &[String],
        dir: &Path,
        signer: WebhookSigner,
        shared: Option<Arc<PostgresLog>>,
    ) -> Self {
        let targets = urls
            .iter()
            .map(|url| {
                let id = Uuid::new_v5(&Uuid::NAMESPACE_URL, url.as_bytes());
                Arc::new(Target {
                    url: url.clone(),
                    id,
                    cursor: AtomicU64::new(u64::MAX),
                    cursor_path: dir.join(format!("{id}.cursor")),
                    dead_path: dir.join(format!("{id}.dead.jsonl")),
                })
            })
            .collect();
        Outbox {
            queue: Mutex::new(BTreeMap::new()),
            targets,
            notify: Notify::new(),
            signer,
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            undelivered_from: AtomicU64::new(u64::MAX),
            pending_dir: None,
            shared,
        }
    }

    /// The database row of a URL's cursor.
    fn cursor_name(target: &Target) -> String {
        format!("webhook:{}", target.id)
    }

    /// Loads each URL's cursor (a new URL starts at `log_end`) and returns the smallest:
    /// announcements after it must be queued.
    ///
    /// A new URL's cursor is saved at once: were it saved only after the first deliveries,
    /// a kill before then would make the restart take the URL for new again and skip what
    /// was acknowledged in between.
    pub fn start(&self, log_end: u64) -> std::io::Result<u64> {
        let mut min = u64::MAX;
        for t in &self.targets {
            if let Some(pg) = &self.shared {
                let c = pg
                    .cursor_or_insert(&Self::cursor_name(t), log_end)
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                    .min(log_end);
                t.cursor.store(c, Ordering::SeqCst);
                min = min.min(c);
                continue;
            }
            let c = match read_cursor(&t.cursor_path) {
                Some(c) => c.min(log_end),
                None => {
                    write_private(&t.cursor_path, format!("{log_end}\n{}\n", t.url).as_bytes())
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    log_end
                }
            };
            t.cursor.store(c, Ordering::SeqCst);
            min = min.min(c);
        }
        self.undelivered_from.store(min, Ordering::SeqCst);
        Ok(min)
    }

    /// The engine's observer: queues what the event at `position` announces, computed from
    /// `after`, its site's state right after it, unless every URL is past it.
    pub fn observe(&self, position: u64, envelope: &EventEnvelope, after: &Inbox) {
        if self.targets.is_empty() || position <= self.undelivered_from.load(Ordering::SeqCst) {
            return;
        }
        self.enqueue(position, announcements(envelope, after));
    }

    /// Saves what is queued (every announcement not yet delivered to every URL) beside the
    /// snapshot at `position`, synced, and removes the files of older snapshots but the
    /// newest few. A shared database's outbox keeps no local snapshots and saves nothing.
    pub fn save_pending(&self, position: u64) -> std::io::Result<()> {
        let Some(dir) = &self.pending_dir else {
            return Ok(());
        };
        if self.targets.is_empty() {
            return Ok(());
        }
        let queued: Vec<(u64, Vec<Announcement>)> = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        let bytes = serde_json::to_vec(&queued).map_err(std::io::Error::other)?;
        write_private(&dir.join(pending_name(position)), &bytes)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut older: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let p = name
                    .to_str()?
                    .strip_prefix("pending-")?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()?;
                Some((p, entry.path()))
            })
            .collect();
        older.sort();
        let excess = older.len().saturating_sub(PENDING_KEPT);
        for (_, path) in older.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// Queues what was saved beside the snapshot at `snapshot` that is still to deliver:
    /// after the smallest cursor and up to `log_end` (an announcement past the log's end was
    /// of an event the log lost). Call it after [`Outbox::start`].
    pub fn load_pending(&self, snapshot: u64, log_end: u64) -> Result<usize, PendingError> {
        let Some(dir) = &self.pending_dir else {
            return Err(PendingError::Missing(snapshot));
        };
        let path = dir.join(pending_name(snapshot));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PendingError::Missing(snapshot));
            }
            Err(e) => {
                return Err(PendingError::Unreadable {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let saved: Vec<(u64, Vec<Announcement>)> =
            serde_json::from_slice(&bytes).map_err(|e| PendingError::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let from = self.undelivered_from.load(Ordering::SeqCst);
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut loaded = 0;
        for (position, anns) in saved {
            if position > from && position <= log_end && !anns.is_empty() {
                queue.entry(position).or_insert(anns);
                loaded += 1;
            }
        }
        Ok(loaded)
    }

    /// Whether any URL is configured: without one, nothing needs announcing.
    pub fn is_active(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Queues what the event at `position` announces.
    fn enqueue(&self, position: u64, announcements: Vec<Announcement>) {
        if self.targets.is_empty() || announcements.is_empty() {
            return;
        }
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(position, announcements);
    }

    /// Wakes the workers: the log grew.
    pub fn notify(&self) {
        if !self.targets.is_empty() {
            self.notify.notify_waiters();
        }
    }

    /// Deliveries that succeeded, failed attempts, and deliveries set aside, since start.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.dead.load(Ordering::Relaxed),
        )
    }

    /// The next position after `cursor`, up to `durable`, that has announcements.
    fn next(&self, cursor: u64, durable: u64) -> Option<(u64, Vec<Announcement>)> {
        if cursor >= durable {
            return None;
        }
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        queue
            .range(cursor + 1..=durable)
            .next()
            .map(|(p, a)| (*p, a.clone()))
    }

    /// Drops what every URL has passed.
    fn collect_garbage(&self) {
        let min = self
            .targets
            .iter()
            .map(|t| t.cursor.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX);
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keep = queue.split_off(&min.saturating_add(1));
        *queue = keep;
    }

    /// Runs one worker per URL until `shutdown` turns true. `watermark` gives the position
    /// up to which every event is durable and observed (the engine's `applied_through`).
    pub fn spawn_workers(
        self: &Arc<Self>,
        watermark: Arc<dyn Fn() -> u64 + Send + Sync>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        self.targets
            .iter()
            .map(|t| {
                let outbox = self.clone();
                let target = t.clone();
                let watermark = watermark.clone();
                let client = client.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { outbox.work(target, client, watermark, shutdown).await })
            })
            .collect()
    }

    async fn work(
        self: Arc<Self>,
        target: Arc<Target>,
        client: reqwest::Client,
        watermark: Arc<dyn Fn() -> u64 + Send + Sync>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // The cursor is saved every SAVE_EVERY deliveries, when caught up, and on the way
        // out: at least once either way, at most SAVE_EVERY repeats after a crash, and no
        // fsync per delivery.
        let mut unsaved = 0u32;
        // On a shared database: the URL's lease, while this process holds it.
        let mut lease: Option<Lease> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Register for a wake-up before looking, so a notify in between is not missed.
            let notified = self.notify.notified();
            if self.shared.is_some() {
                let held = match lease.take() {
                    Some(l) => self.check_lease(&target, l).await,
                    None => self.take_lease(&target).await,
                };
                if held.is_none() {
                    // Another process delivers to this URL: drop what its cursor passed.
                    unsaved = 0;
                    self.refresh_cursor(&target).await;
                    self.collect_garbage();
                    tokio::select! {
                        () = notified => {}
                        _ = shutdown.changed() => {}
                        // Try for the lease again: its holder may have died.
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
                lease = held;
            }
            let cursor = target.cursor.load(Ordering::SeqCst);
            let end = watermark();
            let Some((position, anns)) = self.next(cursor, end) else {
                if end > cursor {
                    // Nothing to announce up to the watermark.
                    target.cursor.store(end, Ordering::SeqCst);
                    self.collect_garbage();
                }
                if unsaved > 0 {
                    self.save_cursor(&target, &mut lease).await;
                    unsaved = 0;
                }
                tokio::select! {
                    () = notified => {}
                    _ = shutdown.changed() => {}
                    // A safety net: the log may grow without a notify (a replica write).
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            let mut stopped = false;
            'announcements: for a in &anns {
                let mut attempt = 0u32;
                loop {
                    if *shutdown.borrow() {
                        stopped = true;
                        break 'announcements;
                    }
                    match self.deliver(&client, &target.url, a).await {
                        Ok(()) => {
                            self.delivered.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(why) if attempt + 1 >= MAX_ATTEMPTS => {
                            tracing::error!(url = %target.url, event_id = %a.id, %why, attempts = attempt + 1, kept_in = %self.dead_letter_place(&target, a), "webhook delivery set aside after too many attempts");
                            self.dead_letter(&target, a, &why).await;
                            break;
                        }
                        Err(why) => {
                            self.retries.fetch_add(1, Ordering::Relaxed);
                            let delay = backoff(attempt);
                            attempt = attempt.saturating_add(1);
                            tracing::warn!(url = %target.url, event_id = %a.id, %why, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed");
                            tokio::select! {
                                () = tokio::time::sleep(delay) => {}
                                _ = shutdown.changed() => {}
                            }
                        }
                    }
                }
            }
            if stopped {
                break;
            }
            target.cursor.store(position, Ordering::SeqCst);
            unsaved += 1;
            if unsaved >= SAVE_EVERY {
                self.save_cursor(&target, &mut lease).await;
                unsaved = 0;
            }
            self.collect_garbage();
        }
        if unsaved > 0 {
            self.save_cursor(&target, &mut lease).await;
        }
    }

    /// Shared database: tries to take the URL's lease; on success the cursor is reloaded
    /// from the database (the previous holder may have moved it).
    async fn take_lease(&self, target: &Target) -> Option<Lease> {
        let pg = self.shared.clone()?;
        let name = Self::cursor_name(target);
        let taken = tokio::task::spawn_blocking(move || {
            let Some(lease) = pg.try_lease(&name)? else {
                return Ok(None);
            };
            let cursor = pg.cursor(&name)?;
            Ok::<_, inbox_store::PostgresError>(Some((lease, cursor)))
        })
        .await;
        match taken {
            Ok(Ok(Some((lease, cursor)))) => {
                if let Some(c) = cursor {
                    target.cursor.store(c, Ordering::SeqCst);
                }
                tracing::info!(url = %target.url, cursor = target.cursor.load(Ordering::SeqCst), "took the webhook lease: this process delivers to the URL");
                Some(lease)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(url = %target.url, error = %e, "could not try the webhook lease");
                None
            }
            Err(e) => {
                tracing::warn!(url = %target.url, error = %e, "could not try the webhook lease");
                None
            }
        }
    }

    /// Shared database: whether the lease still holds (its connection answers).
    async fn check_lease(&self, target: &Target, mut lease: Lease) -> Option<Lease> {
        let checked = tokio::task::spawn_blocking(move || {
            let held = lease.is_held();
            held.then_some(lease)
        })
        .await
        .ok()
        .flatten();
        if checked.is_none() {
            tracing::warn!(url = %target.url, "lost the webhook lease");
        }
        checked
    }

    /// Shared database: the URL's cursor as its lease holder saved it.
    async fn refresh_cursor(&self, target: &Target) {
        let Some(pg) = self.shared.clone() else {
            return;
        };
        let name = Self::cursor_name(target);
        if let Ok(Ok(Some(c))) = tokio::task::spawn_blocking(move || pg.cursor(&name)).await {
            target.cursor.store(c, Ordering::SeqCst);
        }
    }

    async fn save_cursor(&self, target: &Target, lease: &mut Option<Lease>) {
        let position = target.cursor.load(Ordering::SeqCst);
        if self.shared.is_some() {
            let Some(mut held) = lease.take() else {
                return;
            };
            let name = Self::cursor_name(target);
            let saved = tokio::task::spawn_blocking(move || {
                let r = held.save_cursor(&name, position);
                (held, r)
            })
            .await;
            match saved {
                Ok((held, Ok(()))) => *lease = Some(held),
                Ok((_, Err(e))) => {
                    tracing::error!(url = %target.url, error = %e, "could not save the webhook cursor; letting the lease go (deliveries may repeat)");
                }
                Err(e) => {
                    tracing::error!(url = %target.url, error = %e, "could not save the webhook cursor; letting the lease go (deliveries may repeat)");
                }
            }
            return;
        }
        let path = target.cursor_path.clone();
        let text = format!("{position}\n{}\n", target.url);
        let saved =
            tokio::task::spawn_blocking(move || write_private(&path, text.as_bytes())).await;
        let failed = match saved {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            tracing::error!(url = %target.url, error = %e, "could not save the webhook cursor; deliveries after a restart may repeat");
        }
    }

    /// Where a dead letter is kept: the URL's file, or its row in the shared database.
    fn dead_letter_place(&self, target: &Target, a: &Announcement) -> String {
        if self.shared.is_some() {
            format!("inbox_kv row dead-letter:{}:{}", target.id, a.id)
        } else {
            target.dead_path.display().to_string()
        }
    }

    /// Appends a delivery that could not be made to the URL's dead-letter file (one JSON
    /// line: the event id, type, the layer-A payload and the last error), synced.
    async fn dead_letter(&self, target: &Target, a: &Announcement, why: &str) {
        let line = serde_json::json!({
            "eventId": a.id.to_string(),
            "eventType": a.event_type(),
            "data": a.data(),
            "error": why,
        })
        .to_string();
        if let Some(pg) = self.shared.clone() {
            let name = format!("dead-letter:{}:{}", target.id, a.id);
            let written =
                tokio::task::spawn_blocking(move || pg.insert_setting(&name, line.as_bytes()))
                    .await;
            if !matches!(written, Ok(Ok(_))) {
                tracing::error!(url = %target.url, event_id = %a.id, "could not record the dead letter in the database");
            }
            self.dead.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let path = target.dead_path.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            writeln!(f, "{line}")?;
            f.sync_all()
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::error!(url = %target.url, event_id = %a.id, "could not write the dead-letter file");
        }
        self.dead.fetch_add(1, Ordering::Relaxed);
    }

    async fn deliver(
        &self,
        client: &reqwest::Client,
        url: &str,
        a: &Announcement,
    ) -> Result<(), String> {
        let jwt = a
            .sign(&self.signer, now(), TOKEN_TTL_SECS)
            .map_err(|e| e.to_string())?;
        let response = client
            .post(url)
            .header("content-type", "text/plain")
            .body(jwt)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("receiver answered {}", response.status()))
        }
    }
}

/// The file of what was pending at the snapshot at `position`.
fn pending_name(position: u64) -> String {
    format!("pending-{position:020}.json")
}

/// Full-jitter exponential backoff: a random delay up to `base * 2^attempt`, capped.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    ceiling
        .mul_f64(rand::random::<f64>())
        .max(Duration::from_millis(10))
}
