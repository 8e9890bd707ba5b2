//! Outgoing webhooks, delivered at least once from a durable outbox.
//!
//! The outbox *is* the event log: each webhook URL has a cursor, the log position up to
//! which everything has been delivered to it, saved in `data/outbox/` (temporary file,
//! fsync, rename) every [`SAVE_EVERY`] deliveries, whenever the worker catches up, and at
//! shutdown. What is still to deliver is computed from the log: the engine queues each
//! event's announcements (computed from the state right after the event) when it records
//! it, and on start-up the replay queues those after the smallest cursor again. A worker
//! per URL delivers, in log order, only what the log holds durably; a failed POST is
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
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use inbox_store::{Lease, PostgresLog};
use inbox_wix::webhook::{Announcement, WebhookSigner};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::engine::now;
use crate::keys::write_private;

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
    gate: RwLock<()>,
    /// The shared database, when several processes deliver from one log.
    shared: Option<Arc<PostgresLog>>,
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
        Ok(Self::with_targets(urls, dir, signer, None))
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
            gate: RwLock::new(()),
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
        Ok(min)
    }

    /// Held by a writer from submitting its events to the log until their announcements are
    /// queued. The workers read the log's durable end only while no writer holds it, so
    /// every position at or below that end has its announcements queued.
    pub fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The log's durable end, read while no write is between submit and enqueue.
    fn durable_end(&self, durable: &(dyn Fn() -> u64 + Send + Sync)) -> u64 {
        let _quiet = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        durable()
    }

    /// Whether any URL is configured: without one, nothing needs announcing.
    pub fn is_active(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Queues what the event at `position` announces.
    pub fn enqueue(&self, position: u64, announcements: Vec<Announcement>) {
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

    /// Runs one worker per URL until `shutdown` turns true. `durable` gives the log's
    /// durable end.
    pub fn spawn_workers(
        self: &Arc<Self>,
        durable: Arc<dyn Fn() -> u64 + Send + Sync>,
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
                let durable = durable.clone();
                let client = client.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { outbox.work(target, client, durable, shutdown).await })
            })
            .collect()
    }

    async fn work(
        self: Arc<Self>,
        target: Arc<Target>,
        client: reqwest::Client,
        durable: Arc<dyn Fn() -> u64 + Send + Sync>,
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
            let end = self.durable_end(&*durable);
            let Some((position, anns)) = self.next(cursor, end) else {
                if end > cursor {
                    // Nothing to announce up to the durable end.
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

/// Full-jitter exponential backoff: a random delay up to `base * 2^attempt`, capped.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    ceiling
        .mul_f64(rand::random::<f64>())
        .max(Duration::from_millis(10))
}
