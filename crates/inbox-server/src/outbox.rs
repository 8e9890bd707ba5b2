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
//! engine's watermark (every event up to it is durable and its announcements queued).
//!
//! A delivery that fails does not hold back the next one: it joins the URL's *retries*
//! ([`Retry`]: the announcement, the attempts, when to try next, the last error), which are
//! saved (through the lease) before the cursor passes its event, and it is tried again on its
//! own schedule ([`DeliveryPolicy::retries`]; by default Wix's resend policy,
//! [`WIX_RETRY_SCHEDULE`]: 1 minute, 10 minutes, 1 hour, ... 12 hours, about two days), with
//! the same event id every time. So, as with Wix, one refused event never blocks the others,
//! and deliveries may come out of order. After the last retry it is set aside as a dead
//! letter (`data/outbox/<id>.dead.jsonl`, synced, or a row in the database; with the
//! announcement itself), which `inboxd webhooks dead-letters` lists and `inboxd webhooks
//! redeliver` puts back ([`redeliver`]). Nothing acknowledged is lost when the receiver is
//! down or `inboxd` is killed: at worst an event is delivered again, which the receiver
//! deduplicates on its id.
//!
//! Chaos mode ([`Chaos`]) holds every delivery back a random time and repeats some, from a
//! seeded generator, through the same retries: an app developer sees late, repeated and
//! reordered deliveries at once instead of waiting for production to show them.
//!
//! A worker delivers only while it holds its URL's lease ([`DeliveryStore::try_lease`]): on
//! the file store always, on PostgreSQL (several processes on one database) while no other
//! process holds it. Every process queues every event's announcements (its follower takes
//! the others' events in), so whichever holds the lease can deliver from the shared cursor and
//! retries; the others only drop what the cursor has passed. The lease is checked before each
//! delivery and the cursor and retries are saved through the lease, so a process that lost
//! its lease stops within one delivery and cannot move them.
//!
//! A URL configured for the first time starts at the log's end: it receives what happens
//! from then on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inbox_core::{EventEnvelope, Inbox};
use inbox_wix::webhook::{ANNOUNCED_EVENT_TYPES, Announcement, WebhookSigner, announcements};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::clock::now;
use crate::delivery::{DeliveryLease, DeliveryStore, UrlKey};
use crate::keys::write_private;

/// Pending-announcement files kept beside the snapshots (the store keeps two snapshots).
const PENDING_KEPT: usize = 3;

/// How long a signed delivery stays valid.
pub const TOKEN_TTL_SECS: i64 = 3600;
/// Deliveries between two saves of a URL's cursor (it is also saved when caught up).
pub const SAVE_EVERY: u32 = 64;
/// Wix's documented resend policy: after a failed delivery, up to 12 more attempts, this
/// long after the previous failure each (1 minute, 10 minutes, 1 hour, 2 hours three times,
/// 4 hours three times, 8 hours twice, 12 hours: about two days in all). A delivery that
/// fails them all is set aside as a dead letter.
pub const WIX_RETRY_SCHEDULE: [Duration; 12] = [
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(4 * 3600),
    Duration::from_secs(4 * 3600),
    Duration::from_secs(4 * 3600),
    Duration::from_secs(8 * 3600),
    Duration::from_secs(8 * 3600),
    Duration::from_secs(12 * 3600),
];

/// How deliveries that fail are tried again, and whether deliveries are disturbed on
/// purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// The wait before each retry, after the previous failure; after the last, the delivery
    /// is a dead letter. Default: [`WIX_RETRY_SCHEDULE`].
    pub retries: Vec<Duration>,
    /// Chaos mode: deliver each event late, some twice, and so out of order, as Wix warns
    /// deliveries may come, decided by a seeded generator (the same seed and the same events
    /// make the same decisions).
    pub chaos: Option<Chaos>,
    /// How long a receiver has to answer before the delivery counts as failed (and is
    /// retried). Default [`DEFAULT_DELIVERY_TIMEOUT`], generous for a test receiver on a
    /// busy machine; [`WIX_DELIVERY_TIMEOUT`] is what Wix allows.
    pub timeout: Duration,
}

/// The default of [`DeliveryPolicy::timeout`].
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long Wix waits for a receiver's 200 before it counts the delivery as failed.
pub const WIX_DELIVERY_TIMEOUT: Duration = Duration::from_millis(1250);

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            retries: WIX_RETRY_SCHEDULE.to_vec(),
            chaos: None,
            timeout: DEFAULT_DELIVERY_TIMEOUT,
        }
    }
}

/// What chaos mode does to each delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chaos {
    /// Seeds the decisions (with each URL's id, so URLs differ).
    pub seed: u64,
    /// Each delivery is held back a random time up to this (so later events overtake it).
    pub max_delay: Duration,
    /// The chance, in percent, that a delivered event is delivered once more, later.
    pub duplicate_percent: u8,
}

/// One delivery waiting for its time: a retry of one that failed, or (chaos mode) one held
/// back or repeated on purpose. Saved through the URL's lease whenever the set changes, so
/// the cursor can pass an event whose delivery failed without losing it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// What to deliver (its id is the event's: a retry is the same delivery).
    pub announcement: Announcement,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When to try, microseconds since the epoch.
    pub next_at: i64,
    /// Why the last attempt failed (empty: none failed; held back by chaos mode).
    pub last_error: String,
    /// Chaos mode's second delivery of an event already delivered (never repeated again).
    #[serde(default)]
    pub repeat: bool,
}

struct Target {
    key: UrlKey,
    /// The event types the URL subscribed to; `None`: every type.
    events: Option<BTreeSet<String>>,
    cursor: AtomicU64,
    /// Deliveries waiting for their time, as last saved (loaded when the lease is taken).
    retries: Mutex<Vec<Retry>>,
    /// Chaos mode's generator for this URL.
    chaos: Option<Mutex<rand::rngs::StdRng>>,
}

impl Target {
    fn wants(&self, a: &Announcement) -> bool {
        self.events
            .as_ref()
            .is_none_or(|types| types.contains(&a.event_type()))
    }

    fn lock_retries(&self) -> std::sync::MutexGuard<'_, Vec<Retry>> {
        self.retries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes and returns the retries due at `now` (microseconds), soonest first.
    fn take_due(&self, now: i64) -> Vec<Retry> {
        let mut retries = self.lock_retries();
        let (mut due, rest): (Vec<Retry>, Vec<Retry>) =
            retries.drain(..).partition(|r| r.next_at <= now);
        *retries = rest;
        due.sort_by_key(|r| r.next_at);
        due
    }

    fn put_back(&self, r: Retry) {
        self.lock_retries().push(r);
    }

    fn push(&self, r: Retry) {
        self.lock_retries().push(r);
    }

    /// When the soonest retry is due.
    fn next_due(&self) -> Option<i64> {
        self.lock_retries().iter().map(|r| r.next_at).min()
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
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
    policy: DeliveryPolicy,
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
        policy: DeliveryPolicy,
    ) -> std::io::Result<Self> {
        if let Some(dir) = pending_dir.as_ref().filter(|_| !subscriptions.is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let targets = subscriptions
            .iter()
            .map(|s| {
                let key = UrlKey::new(&s.url);
                let chaos = policy.chaos.as_ref().map(|c| {
                    let url_bits = key.id.as_u64_pair().0;
                    Mutex::new(rand::rngs::StdRng::seed_from_u64(c.seed ^ url_bits))
                });
                Arc::new(Target {
                    key,
                    events: s.events.clone(),
                    cursor: AtomicU64::new(u64::MAX),
                    retries: Mutex::new(Vec::new()),
                    chaos,
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
            policy,
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
            .timeout(self.policy.timeout)
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
        // fsync per delivery. The retries are saved whenever they change, before the cursor
        // can pass what they hold.
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
                None => {
                    let taken = self.take_lease(&target).await;
                    if taken.is_some() {
                        self.load_retries(&target).await;
                    }
                    taken
                }
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

            // First what is due of the deliveries waiting for their time.
            let due = target.take_due(now().as_micros());
            if !due.is_empty() {
                for r in due {
                    if *shutdown.borrow() {
                        target.put_back(r);
                        continue;
                    }
                    match self
                        .deliver(&client, &target.key.url, &r.announcement)
                        .await
                    {
                        Ok(()) => {
                            self.delivered.fetch_add(1, Ordering::Relaxed);
                            if !r.repeat {
                                self.maybe_repeat(&target, &r.announcement);
                            }
                        }
                        Err(why) => {
                            self.failed(&target, r.announcement, r.attempts + 1, why, r.repeat)
                                .await;
                        }
                    }
                }
                self.save_retries(&target, &mut lease).await;
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
                // Until woken, or the next retry is due (a safety net of a second: the log
                // may grow without a notify, by another process's write taken in by a read).
                let wait = target.next_due().map_or(Duration::from_secs(1), |at| {
                    let micros = at.saturating_sub(now().as_micros()).clamp(0, 1_000_000);
                    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
                });
                tokio::select! {
                    () = notified => {}
                    _ = shutdown.changed() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            };
            let mut scheduled = false;
            for a in anns.iter().filter(|a| target.wants(a)) {
                if let Some(delay) = self.chaos_delay(&target) {
                    // Chaos mode: held back, so that later events may overtake it.
                    target.push(Retry {
                        announcement: a.clone(),
                        attempts: 0,
                        next_at: now().as_micros().saturating_add(micros(delay)),
                        last_error: String::new(),
                        repeat: false,
                    });
                    scheduled = true;
                    continue;
                }
                match self.deliver(&client, &target.key.url, a).await {
                    Ok(()) => {
                        self.delivered.fetch_add(1, Ordering::Relaxed);
                        scheduled |= self.maybe_repeat(&target, a);
                    }
                    Err(why) => {
                        self.failed(&target, a.clone(), 1, why, false).await;
                        scheduled = true;
                    }
                }
            }
            if scheduled {
                // Durable before the cursor passes the event: a failed delivery is never
                // lost, whatever happens next.
                self.save_retries(&target, &mut lease).await;
                if lease.is_none() {
                    continue;
                }
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

    /// After a failed attempt (`attempts` failed so far): the next retry on the schedule,
    /// or, past its end, a dead letter.
    async fn failed(
        &self,
        target: &Target,
        a: Announcement,
        attempts: u32,
        why: String,
        repeat: bool,
    ) {
        let wait = usize::try_from(attempts - 1)
            .ok()
            .and_then(|i| self.policy.retries.get(i));
        match wait {
            Some(wait) => {
                self.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %target.key.url, event_id = %a.id, %why, attempt = attempts, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed");
                target.push(Retry {
                    announcement: a,
                    attempts,
                    next_at: now().as_micros().saturating_add(micros(*wait)),
                    last_error: why,
                    repeat,
                });
            }
            None => {
                let place = self.store.dead_letter_place(&target.key, &a.id.to_string());
                tracing::error!(url = %target.key.url, event_id = %a.id, %why, attempts, kept_in = %place, "webhook delivery set aside after every retry failed");
                self.dead_letter(target, &a, &why, attempts).await;
            }
        }
    }

    /// Chaos mode: how long to hold a delivery back.
    fn chaos_delay(&self, target: &Target) -> Option<Duration> {
        let chaos = self.policy.chaos.as_ref()?;
        let mut rng = target
            .chaos
            .as_ref()?
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let max = u64::try_from(chaos.max_delay.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(rng.random_range(0..=max)))
    }

    /// Chaos mode: after a delivery, perhaps schedule the same one again, later. Returns
    /// whether it did.
    fn maybe_repeat(&self, target: &Target, a: &Announcement) -> bool {
        let Some(chaos) = self.policy.chaos.as_ref() else {
            return false;
        };
        let Some(rng) = target.chaos.as_ref() else {
            return false;
        };
        let delay = {
            let mut rng = rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if rng.random_range(0..100u8) >= chaos.duplicate_percent {
                return false;
            }
            let max = u64::try_from(chaos.max_delay.as_millis()).unwrap_or(u64::MAX);
            Duration::from_millis(rng.random_range(0..=max))
        };
        target.push(Retry {
            announcement: a.clone(),
            attempts: 0,
            next_at: now().as_micros().saturating_add(micros(delay)),
            last_error: String::new(),
            repeat: true,
        });
        true
    }

    /// Loads the retries the lease's previous holder saved.
    async fn load_retries(&self, target: &Target) {
        let (store, key) = (self.store.clone(), target.key.clone());
        let loaded = tokio::task::spawn_blocking(move || store.saved_retries(&key)).await;
        let retries = match loaded {
            Ok(Ok(bytes)) if bytes.is_empty() => Vec::new(),
            Ok(Ok(bytes)) => match serde_json::from_slice::<Vec<Retry>>(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(url = %target.key.url, error = %e, "the saved webhook retries cannot be read; they stay where they are and are not retried");
                    return;
                }
            },
            Ok(Err(e)) => {
                tracing::error!(url = %target.key.url, error = %e, "could not load the webhook retries");
                return;
            }
            Err(e) => {
                tracing::error!(url = %target.key.url, error = %e, "could not load the webhook retries");
                return;
            }
        };
        *target
            .retries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = retries;
    }

    /// Saves the retries through the lease; if that fails the lease is let go.
    async fn save_retries(&self, target: &Target, lease: &mut Option<Box<dyn DeliveryLease>>) {
        let bytes = {
            let retries = target
                .retries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match serde_json::to_vec(&*retries) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(url = %target.key.url, error = %e, "could not encode the webhook retries");
                    return;
                }
            }
        };
        let Some(mut held) = lease.take() else {
            return;
        };
        let saved = tokio::task::spawn_blocking(move || {
            let r = held.save_retries(&bytes);
            (held, r)
        })
        .await;
        match saved {
            Ok((held, Ok(()))) => *lease = Some(held),
            Ok((_, Err(e))) => {
                tracing::error!(url = %target.key.url, error = %e, "could not save the webhook retries; letting the lease go");
            }
            Err(e) => {
                tracing::error!(url = %target.key.url, error = %e, "could not save the webhook retries; letting the lease go");
            }
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
    /// layer-A payload, the last error, the attempts, when, and the announcement itself, which
    /// `inboxd webhooks redeliver` puts back).
    async fn dead_letter(&self, target: &Target, a: &Announcement, why: &str, attempts: u32) {
        let line = serde_json::json!({
            "eventId": a.id.to_string(),
            "eventType": a.event_type(),
            "data": a.data(),
            "error": why,
            "attempts": attempts,
            "setAsideAt": crate::clock::now().as_micros(),
            "announcement": a,
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

/// Why dead letters could not be put back for delivery.
#[derive(Debug, thiserror::Error)]
pub enum RedeliverError {
    /// The store could not be read or written.
    #[error("the webhook store: {0}")]
    Store(#[from] std::io::Error),
    /// No dead letter of the URL has this event id.
    #[error("no dead letter of {url} has event id {event_id}")]
    NotFound {
        /// The URL.
        url: String,
        /// The id asked for.
        event_id: String,
    },
    /// A dead letter set aside by an older inboxd, which did not keep the announcement.
    #[error(
        "the dead letter of event {0} was written by an older inboxd and holds no announcement to send again"
    )]
    NoAnnouncement(String),
    /// The saved retries are not readable.
    #[error("the saved retries of {url} cannot be read: {reason}")]
    Retries {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// The dead letters of `url`, as recorded (one JSON object each).
pub fn dead_letters(store: &dyn DeliveryStore, url: &str) -> std::io::Result<Vec<String>> {
    store.dead_letters(&UrlKey::new(url))
}

/// Puts dead letters of `url` back to be delivered at once (with a fresh set of retries):
/// those of `event_ids`, or every one. The URL's deliverer picks them up when it takes the
/// URL's lease, that is at its next start (a file store, which must be stopped while this
/// runs) or when no other process holds the lease. Returns the event ids put back.
pub fn redeliver(
    store: &dyn DeliveryStore,
    url: &str,
    event_ids: Option<&[String]>,
    now_micros: i64,
) -> Result<Vec<String>, RedeliverError> {
    let key = UrlKey::new(url);
    let wanted: Vec<String> = match event_ids {
        Some(ids) => ids.to_vec(),
        None => store
            .dead_letters(&key)?
            .iter()
            .filter_map(|l| crate::delivery::dead_letter_event_id(l))
            .collect(),
    };
    let saved = store.saved_retries(&key)?;
    let mut retries: Vec<Retry> = if saved.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&saved).map_err(|e| RedeliverError::Retries {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
    };
    // Checked first, so that nothing is taken out when one id is wrong.
    let lines = store.dead_letters(&key)?;
    let mut announcements = Vec::new();
    for id in &wanted {
        let line = lines
            .iter()
            .find(|l| crate::delivery::dead_letter_event_id(l).as_deref() == Some(id.as_str()))
            .ok_or_else(|| RedeliverError::NotFound {
                url: url.to_owned(),
                event_id: id.clone(),
            })?;
        let announcement: Announcement = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("announcement").cloned())
            .and_then(|a| serde_json::from_value(a).ok())
            .ok_or_else(|| RedeliverError::NoAnnouncement(id.clone()))?;
        announcements.push(announcement);
    }
    for a in announcements {
        retries.push(Retry {
            announcement: a,
            attempts: 0,
            next_at: now_micros,
            last_error: "put back from the dead letters".into(),
            repeat: false,
        });
    }
    let bytes = serde_json::to_vec(&retries).map_err(std::io::Error::other)?;
    // The retries first: a crash in between leaves an event both set aside and waiting,
    // which delivers it (at least once), never neither.
    store.put_retries(&key, &bytes)?;
    for id in &wanted {
        store.take_dead_letter(&key, id)?;
    }
    Ok(wanted)
}

/// Reads a duration as `250ms`, `30s`, `10m`, `2h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m, h or d)"))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let secs = |k: u64| Duration::from_secs(n.saturating_mul(k));
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => return Err(format!("{text:?}: the unit is ms, s, m, h or d")),
    })
}

/// The file of what was pending at the snapshot at `position`.
fn pending_name(position: u64) -> String {
    format!("pending-{position:020}.json")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
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
    fn durations_read_with_their_units_and_refuse_the_rest() {
        use super::parse_duration;
        use std::time::Duration;
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }

    /// Redelivery moves a dead letter into the retries, due now, with a fresh count; an id
    /// that is not there is refused and nothing is taken out.
    #[test]
    fn redeliver_moves_dead_letters_into_the_retries() {
        use super::{RedeliverError, Retry, dead_letters, redeliver};
        use crate::delivery::{DeliveryStore, FileDelivery, UrlKey};
        use inbox_wix::webhook::{Announcement, DomainEventKind, EventIdentity};

        let dir = tempfile::tempdir().unwrap();
        let store = FileDelivery::new(dir.path().to_path_buf()).unwrap();
        let url = "http://127.0.0.1:9/hook";
        let key = UrlKey::new(url);
        let a = Announcement {
            id: inbox_core::EventId::from_uuid(uuid::Uuid::from_u128(7)),
            instance_id: inbox_core::SiteId::new("s"),
            entity_fqdn: "wix.contacts.v4.contact".into(),
            slug: "created".into(),
            entity_id: "c".into(),
            event_time: inbox_core::Timestamp::from_micros(1),
            body: serde_json::json!({}),
            kind: DomainEventKind::Created,
            metadata: Default::default(),
            identity: EventIdentity::default(),
        };
        let line = serde_json::json!({"eventId": a.id.to_string(), "announcement": a}).to_string();
        store.dead_letter(&key, &a.id.to_string(), &line).unwrap();
        let old = serde_json::json!({"eventId": "old", "data": "{}"}).to_string();
        store.dead_letter(&key, "old", &old).unwrap();
        assert_eq!(dead_letters(&store, url).unwrap().len(), 2);

        let refused = redeliver(&store, url, Some(&["nope".to_owned()]), 5);
        assert!(matches!(refused, Err(RedeliverError::NotFound { .. })));
        let refused = redeliver(&store, url, Some(&["old".to_owned()]), 5);
        assert!(matches!(refused, Err(RedeliverError::NoAnnouncement(_))));
        assert_eq!(
            dead_letters(&store, url).unwrap().len(),
            2,
            "nothing taken out"
        );

        let put_back = redeliver(&store, url, Some(&[a.id.to_string()]), 5).unwrap();
        assert_eq!(put_back, [a.id.to_string()]);
        let retries: Vec<Retry> =
            serde_json::from_slice(&store.saved_retries(&key).unwrap()).unwrap();
        assert_eq!(retries.len(), 1);
        assert_eq!((retries[0].attempts, retries[0].next_at), (0, 5));
        assert_eq!(retries[0].announcement, a);
        assert_eq!(dead_letters(&store, url).unwrap(), [old]);
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
