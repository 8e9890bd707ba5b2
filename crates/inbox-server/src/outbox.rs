//! Outgoing webhooks, delivered at least once from a durable outbox.
//!
//! The outbox *is* the event log: each webhook URL has a cursor, the log position up to
//! which everything has been delivered to it, saved every [`SAVE_EVERY`] deliveries,
//! whenever the worker catches up, and at shutdown, where the [`DeliveryStore`] keeps it
//! (files in `data/outbox/`, or the shared database). What is still to deliver is computed
//! from the log: the store's engine shows the outbox each event with the state right after it
//! ([`Outbox::observe`], wired as the engine's observer), which queues the event's
//! announcements if they are after the smallest cursor, and on start-up the replay of the
//! log's tail shows them again. A start from a snapshot does not replay what the snapshot
//! holds, so before each snapshot the outbox saves what it has queued beside it
//! ([`Outbox::save_pending`], `data/outbox/pending-<P>.json`) and loads it at the next start
//! ([`Outbox::load_pending`]). A worker per URL delivers, in log order, only up to the
//! engine's watermark (every event up to it is durable and its announcements queued); a
//! failed POST is retried with exponential backoff and full jitter, with the same event id
//! every time. So nothing acknowledged is lost when the receiver is down for minutes or
//! `inboxd` is killed: at worst an event is delivered again, which the receiver
//! deduplicates on its id.
//!
//! A worker delivers only while it holds its URL's lease ([`DeliveryStore::try_lease`]): on
//! the file store always, on PostgreSQL (several processes on one database) while no other
//! process holds it. Every process queues every event's announcements (its follower takes
//! the others' events in), so whichever holds the lease can deliver from the shared cursor;
//! the others only drop what the cursor has passed. The lease is checked before each
//! delivery and the cursor is saved through the lease, so a process that lost its lease
//! stops within one delivery and cannot move the cursor.
//!
//! A URL configured for the first time starts at the log's end: it receives what happens
//! from then on. A delivery refused [`MAX_ATTEMPTS`] times (about half an hour) is set
//! aside as a dead letter (`data/outbox/<id>.dead.jsonl`, synced, or a row in the database)
//! and logged, so one event a receiver can never take does not block every later one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inbox_core::{EventEnvelope, Inbox};
use inbox_wix::webhook::{ANNOUNCED_EVENT_TYPES, Announcement, WebhookSigner, announcements};
use tokio::sync::{Notify, watch};

use crate::clock::now;
use crate::delivery::{DeliveryLease, DeliveryStore, UrlKey};
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
    key: UrlKey,
    /// The event types the URL subscribed to; `None`: every type.
    events: Option<BTreeSet<String>>,
    cursor: AtomicU64,
}

impl Target {
    fn wants(&self, a: &Announcement) -> bool {
        self.events
            .as_ref()
            .is_none_or(|types| types.contains(&a.event_type()))
    }
}

/// Where webhooks go: a URL and the event types it receives (`None`: every type), as an app
/// registers them with Wix, one URL per event type or one for all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The URL.
    pub url: String,
    /// The event types (`eventType`, e.g.
    /// `wix.crm.inbox.v2.message_message_sent_to_business`); `None`: all of them.
    pub events: Option<BTreeSet<String>>,
}

impl Subscription {
    /// One per URL: `all` receive every event type; each `(event type, url)` pair adds that
    /// type to its URL (a URL also in `all` receives everything). Refuses an event type the
    /// emulator does not announce.
    pub fn combine(
        all: &[String],
        typed: &[(String, String)],
    ) -> Result<Vec<Subscription>, UnknownEventType> {
        // One per URL, in the order the URLs were given.
        let mut subscriptions: Vec<Subscription> = Vec::new();
        let mut of = |url: &str| -> usize {
            match subscriptions.iter().position(|s| s.url == url) {
                Some(i) => i,
                None => {
                    subscriptions.push(Subscription {
                        url: url.to_owned(),
                        events: Some(BTreeSet::new()),
                    });
                    subscriptions.len() - 1
                }
            }
        };
        let mut everything = Vec::new();
        for url in all {
            everything.push(of(url));
        }
        let mut typed_at = Vec::new();
        for (event, url) in typed {
            UnknownEventType::check(event)?;
            typed_at.push((of(url), event));
        }
        for (i, event) in typed_at {
            if let Some(types) = subscriptions.get_mut(i).and_then(|s| s.events.as_mut()) {
                types.insert(event.clone());
            }
        }
        for i in everything {
            if let Some(s) = subscriptions.get_mut(i) {
                s.events = None;
            }
        }
        Ok(subscriptions)
    }
}

/// A subscription names an event type the emulator never announces.
#[derive(Debug, thiserror::Error)]
#[error("unknown webhook event type {0:?}; the emulator announces: {types}", types = ANNOUNCED_EVENT_TYPES.join(", "))]
pub struct UnknownEventType(pub String);

impl UnknownEventType {
    /// `event` if the emulator announces it (one of [`ANNOUNCED_EVENT_TYPES`]).
    pub fn check(event: &str) -> Result<(), UnknownEventType> {
        if ANNOUNCED_EVENT_TYPES.contains(&event) {
            Ok(())
        } else {
            Err(UnknownEventType(event.to_owned()))
        }
    }
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
    /// Where pending announcements are saved beside snapshots (a store with snapshots).
    pending_dir: Option<PathBuf>,
    /// Cursors, leases and dead letters.
    store: Arc<dyn DeliveryStore>,
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

impl Outbox {
    /// An outbox delivering to `urls`, its cursors, leases and dead letters in `store`;
    /// with `pending_dir`, it saves what is pending beside each snapshot there.
    pub fn new(
        subscriptions: &[Subscription],
        store: Arc<dyn DeliveryStore>,
        pending_dir: Option<PathBuf>,
        signer: WebhookSigner,
    ) -> std::io::Result<Self> {
        if let Some(dir) = pending_dir.as_ref().filter(|_| !subscriptions.is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let targets = subscriptions
            .iter()
            .map(|s| {
                Arc::new(Target {
                    key: UrlKey::new(&s.url),
                    events: s.events.clone(),
                    cursor: AtomicU64::new(u64::MAX),
                })
            })
            .collect();
        Ok(Outbox {
            queue: Mutex::new(BTreeMap::new()),
            targets,
            notify: Notify::new(),
            signer,
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            undelivered_from: AtomicU64::new(u64::MAX),
            pending_dir,
            store,
        })
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
            let c = self.store.start_cursor(&t.key, log_end)?.min(log_end);
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
        // The URL's lease, while this process holds it.
        let mut lease: Option<Box<dyn DeliveryLease>> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Register for a wake-up before looking, so a notify in between is not missed.
            let notified = self.notify.notified();
            lease = match lease.take() {
                Some(l) => self.check_lease(&target, l).await,
                None => self.take_lease(&target).await,
            };
            if lease.is_none() {
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
                    // A safety net: the log may grow without a notify (another process's
                    // write taken in by a read).
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            let mut stopped = false;
            'announcements: for a in anns.iter().filter(|a| target.wants(a)) {
                let mut attempt = 0u32;
                loop {
                    if *shutdown.borrow() {
                        stopped = true;
                        break 'announcements;
                    }
                    match self.deliver(&client, &target.key.url, a).await {
                        Ok(()) => {
                            self.delivered.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(why) if attempt + 1 >= MAX_ATTEMPTS => {
                            let place =
                                self.store.dead_letter_place(&target.key, &a.id.to_string());
                            tracing::error!(url = %target.key.url, event_id = %a.id, %why, attempts = attempt + 1, kept_in = %place, "webhook delivery set aside after too many attempts");
                            self.dead_letter(&target, a, &why).await;
                            break;
                        }
                        Err(why) => {
                            self.retries.fetch_add(1, Ordering::Relaxed);
                            let delay = backoff(attempt);
                            attempt = attempt.saturating_add(1);
                            tracing::warn!(url = %target.key.url, event_id = %a.id, %why, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed");
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

    /// Tries to take the URL's lease; on success the cursor is reloaded from the store (the
    /// previous holder may have moved it).
    async fn take_lease(&self, target: &Target) -> Option<Box<dyn DeliveryLease>> {
        let (store, key) = (self.store.clone(), target.key.clone());
        let taken = tokio::task::spawn_blocking(move || store.try_lease(&key)).await;
        match taken {
            Ok(Ok(Some((lease, cursor)))) => {
                if let Some(c) = cursor {
                    target.cursor.store(c, Ordering::SeqCst);
                }
                tracing::debug!(url = %target.key.url, cursor = target.cursor.load(Ordering::SeqCst), "holding the webhook lease: this process delivers to the URL");
                Some(lease)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(url = %target.key.url, error = %e, "could not try the webhook lease");
                None
            }
            Err(e) => {
                tracing::warn!(url = %target.key.url, error = %e, "could not try the webhook lease");
                None
            }
        }
    }

    /// Whether the lease still holds.
    async fn check_lease(
        &self,
        target: &Target,
        mut lease: Box<dyn DeliveryLease>,
    ) -> Option<Box<dyn DeliveryLease>> {
        if !lease.can_lapse() {
            return Some(lease);
        }
        let checked = tokio::task::spawn_blocking(move || {
            let held = lease.is_held();
            held.then_some(lease)
        })
        .await
        .ok()
        .flatten();
        if checked.is_none() {
            tracing::warn!(url = %target.key.url, "lost the webhook lease");
        }
        checked
    }

    /// The URL's cursor as its lease holder saved it.
    async fn refresh_cursor(&self, target: &Target) {
        let (store, key) = (self.store.clone(), target.key.clone());
        if let Ok(Ok(Some(c))) = tokio::task::spawn_blocking(move || store.saved_cursor(&key)).await
        {
            target.cursor.store(c, Ordering::SeqCst);
        }
    }

    /// Saves the cursor through the lease; if that fails the lease is let go (another
    /// process may hold it now, or the store is failing: deliveries may repeat).
    async fn save_cursor(&self, target: &Target, lease: &mut Option<Box<dyn DeliveryLease>>) {
        let position = target.cursor.load(Ordering::SeqCst);
        let Some(mut held) = lease.take() else {
            return;
        };
        let saved = tokio::task::spawn_blocking(move || {
            let r = held.save_cursor(position);
            (held, r)
        })
        .await;
        match saved {
            Ok((held, Ok(()))) => *lease = Some(held),
            Ok((_, Err(e))) => {
                tracing::error!(url = %target.key.url, error = %e, "could not save the webhook cursor; letting the lease go (deliveries may repeat)");
            }
            Err(e) => {
                tracing::error!(url = %target.key.url, error = %e, "could not save the webhook cursor; letting the lease go (deliveries may repeat)");
            }
        }
    }

    /// Records a delivery that could not be made (one JSON line: the event id, type, the
    /// layer-A payload and the last error).
    async fn dead_letter(&self, target: &Target, a: &Announcement, why: &str) {
        let line = serde_json::json!({
            "eventId": a.id.to_string(),
            "eventType": a.event_type(),
            "data": a.data(),
            "error": why,
        })
        .to_string();
        let (store, key, event_id) = (self.store.clone(), target.key.clone(), a.id.to_string());
        let written =
            tokio::task::spawn_blocking(move || store.dead_letter(&key, &event_id, &line)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::error!(url = %target.key.url, event_id = %a.id, "could not record the dead letter");
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::Subscription;

    const TO_BUSINESS: &str = "wix.crm.inbox.v2.message_message_sent_to_business";
    const MERGED: &str = "wix.crm.inbox.v2.conversation_conversations_merged";

    fn typed(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(e, u)| ((*e).to_owned(), (*u).to_owned()))
            .collect()
    }

    #[test]
    fn subscriptions_gather_each_urls_types_and_a_url_for_all_takes_everything() {
        let got = Subscription::combine(
            &["http://all".to_owned()],
            &typed(&[
                (TO_BUSINESS, "http://a"),
                (MERGED, "http://a"),
                (MERGED, "http://all"),
            ]),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                Subscription {
                    url: "http://all".into(),
                    events: None
                },
                Subscription {
                    url: "http://a".into(),
                    events: Some(BTreeSet::from([TO_BUSINESS.to_owned(), MERGED.to_owned()]))
                },
            ]
        );
        assert!(Subscription::combine(&[], &[]).unwrap().is_empty());
    }

    #[test]
    fn a_subscription_to_an_event_type_never_announced_is_refused() {
        let got = Subscription::combine(
            &[],
            &typed(&[("wix.crm.inbox.v2.message_typo", "http://a")]),
        );
        assert_eq!(
            got.map_err(|e| e.0),
            Err("wix.crm.inbox.v2.message_typo".to_owned())
        );
    }
}
