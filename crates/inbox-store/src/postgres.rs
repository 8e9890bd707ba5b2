//! The PostgreSQL log: the same contract as the file log, on a database that several
//! processes share.
//!
//! # Schema
//!
//! Created and migrated by the program itself ([`PostgresLog::connect`] runs every
//! migration not yet applied, under an advisory lock so processes starting together do not
//! race; the applied ones are listed in `inbox_migrations`). See `docs/POSTGRES.md`.
//!
//! * `inbox_events(position PRIMARY KEY, site, site_version, event_id, schema_version,
//!   recorded_at, body)`, `UNIQUE (site, site_version)`: the log. `body` is the event in the
//!   same encoding as the file log's records (`crate::encode_event`), under its schema
//!   version, so old versions are upcast on read the same way.
//! * `inbox_head(position)`: one row, the last position.
//! * `inbox_sites(site PRIMARY KEY, version)`: each site's version.
//! * `inbox_kv(name PRIMARY KEY, value)`: small shared settings (what `inboxd` keeps in its
//!   data directory on the file store: keys, replica sites).
//! * `inbox_cursors(name PRIMARY KEY, position)`: created by the first migration; inboxd's
//!   webhook cursors live there, and inboxd owns their SQL (through
//!   [`PostgresLog::with_connection`] and [`PostgresLog::session`]).
//!
//! # Appends: optimistic, group-committed, dense
//!
//! Every append takes the `inbox_head` row lock (`SELECT ... FOR UPDATE`) first, so appends
//! from every process are serialized: a transaction checks each batch's expected version
//! against `inbox_sites`, numbers its events from the head, inserts them, moves the head and
//! commits. That is four round trips: `BEGIN` with the head lock; the group's site versions
//! (a statement of its own, begun after the lock is held, so that it sees the previous
//! holder's commit); the events, the sites' versions, the head and the `NOTIFY` in one
//! statement (data-modifying CTEs); `COMMIT`. Positions are therefore dense and in commit order: a reader that sees position
//! `p` committed sees everything before it, so a follower reading "after my position" never
//! skips an event that commits late. The unique `(site, site_version)` is a second guard.
//!
//! The price of one lock is that commits are serial; what pays for it is group commit, as in
//! the file log: each process has one appender thread that takes every batch queued while
//! the previous transaction ran and commits them together (one WAL flush for all). A batch
//! whose version check fails is answered with [`AppendError::Conflict`] and the others of
//! its group go ahead.
//!
//! # Followers
//!
//! Each commit sends `NOTIFY inbox_events` (delivered only when the transaction commits).
//! [`PostgresLog::listen`] gives a [`Listener`] that `LISTEN`s on its own connection: a
//! process catches up with `replay` after its position, then waits on the listener, and
//! reads again only when something was committed. No polling of the database.
//!
//! # Failures
//!
//! A failed or interrupted commit is [`AppendError::Failed`]; its outcome is unknown until
//! the log is read again (the commit may have reached the server before the connection
//! broke). Unlike the file log, this log keeps accepting appends afterwards (the next
//! transaction reconnects): the database, not this process, is the source of truth, and a
//! caller that reads before it decides again sees what really happened.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use inbox_core::{EventEnvelope, EventId, SiteId, Timestamp};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls, Row};
use thiserror::Error;
use uuid::Uuid;

use crate::{
    AppendError, Appended, EventLog, ExpectedVersion, ReadError, StoredEvent, check_append,
    codec::{decode_event, encode_event},
};

/// The channel commits are announced on.
pub const CHANNEL: &str = "inbox_events";

/// Batches one transaction takes at most.
const MAX_GROUP: usize = 1024;
/// Rows one replay query fetches at a time.
const REPLAY_CHUNK: usize = 10_000;
/// The advisory lock key the migrations run under (any constant; "inbox" in ASCII).
const MIGRATION_LOCK: i64 = 0x0069_6e62_6f78;

/// The schema version this build writes: the number of its migrations.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// The migrations, in order. Each runs once, in its own transaction; its index + 1 is its
/// version. Never edit one that has shipped: add another.
const MIGRATIONS: &[&str] = &[
    // 1: the log, the head, the sites' versions, settings and cursors.
    "CREATE TABLE inbox_events (
         position bigint PRIMARY KEY CHECK (position > 0),
         site text NOT NULL,
         site_version bigint NOT NULL CHECK (site_version > 0),
         event_id uuid NOT NULL,
         schema_version smallint NOT NULL,
         recorded_at bigint NOT NULL,
         body bytea NOT NULL,
         UNIQUE (site, site_version)
     );
     CREATE TABLE inbox_head (
         one boolean PRIMARY KEY DEFAULT true CHECK (one),
         position bigint NOT NULL
     );
     INSERT INTO inbox_head (one, position) VALUES (true, 0);
     CREATE TABLE inbox_sites (
         site text PRIMARY KEY,
         version bigint NOT NULL
     );
     CREATE TABLE inbox_kv (
         name text PRIMARY KEY,
         value bytea NOT NULL
     );
     CREATE TABLE inbox_cursors (
         name text PRIMARY KEY,
         position bigint NOT NULL
     );",
];

/// Why the database could not be used.
#[derive(Debug, Error)]
pub enum PostgresError {
    /// The URL does not parse.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    /// Connecting failed.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    /// A migration failed; nothing of it was applied.
    #[error("migration {version} failed: {reason}")]
    Migration {
        /// The migration's version.
        version: usize,
        /// Why.
        reason: String,
    },
    /// The database has migrations this build does not know: a newer build wrote it.
    #[error(
        "the database is at schema version {found}, newer than this build's {known}; \
         refusing to touch it"
    )]
    NewerSchema {
        /// The version found.
        found: usize,
        /// The newest this build knows.
        known: usize,
    },
    /// A query failed.
    #[error("PostgreSQL: {0}")]
    Query(String),
}

impl From<postgres::Error> for PostgresError {
    fn from(e: postgres::Error) -> Self {
        PostgresError::Query(describe(&e))
    }
}

/// The server's message when there is one (postgres::Error's Display says only "db error").
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn read_error(e: &postgres::Error) -> ReadError {
    ReadError::Database(describe(e))
}

/// A batch on its way to the appender thread.
struct Pending {
    site: SiteId,
    expected: ExpectedVersion,
    /// `(event_id, schema_version, recorded_at, body)` per event, encoded by the caller.
    rows: Vec<(Uuid, i16, i64, Vec<u8>)>,
    reply: SyncSender<Result<Appended, AppendError>>,
}

/// A log in a PostgreSQL database, shared by every process connected to it.
pub struct PostgresLog {
    config: Config,
    appender: Mutex<Option<SyncSender<Pending>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Client>>,
    /// The highest position this process has seen committed (what `last_position` answers
    /// when the database cannot be asked).
    seen: AtomicU64,
}

impl std::fmt::Debug for PostgresLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLog")
            .field("seen", &self.seen.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn connect(config: &Config) -> Result<Client, postgres::Error> {
    config.connect(NoTls)
}

/// Closes a connection on a thread of its own. The synchronous client closes (and drops its
/// private runtime) by blocking, which panics on a thread that drives an async runtime; a
/// log, lease or listener may well be dropped on one (a server shutting down).
fn close_off_thread(clients: Vec<Client>) {
    if clients.is_empty() {
        return;
    }
    if let Err(e) = std::thread::Builder::new()
        .name("inbox-pg-close".into())
        .spawn(move || drop(clients))
    {
        // No thread: leave the connections to the server's timeout rather than panic.
        let _ = e;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl PostgresLog {
    /// Connects to `url` (`postgres://user@host:port/db`), creates or migrates the schema,
    /// and starts the appender thread.
    pub fn connect(url: &str) -> Result<Self, PostgresError> {
        let config: Config = url
            .parse()
            .map_err(|e: postgres::Error| PostgresError::Url(e.to_string()))?;
        let mut client = connect(&config).map_err(|e| PostgresError::Connect(describe(&e)))?;
        migrate(&mut client)?;
        let head: i64 = client
            .query_one("SELECT position FROM inbox_head", &[])?
            .get(0);
        let (tx, rx) = mpsc::sync_channel::<Pending>(MAX_GROUP);
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("inbox-pg-appender".into())
            .spawn(move || appender(thread_config, Some(client), rx))
            .map_err(|e| PostgresError::Connect(e.to_string()))?;
        Ok(PostgresLog {
            config,
            appender: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            readers: Mutex::new(Vec::new()),
            seen: AtomicU64::new(to_u64(head)),
        })
    }

    /// Runs `f` on a pooled connection; a connection that failed is dropped, not reused.
    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let pooled = lock(&self.readers).pop();
        let mut client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.config)?,
        };
        let result = f(&mut client);
        if result.is_ok() && !client.is_closed() {
            lock(&self.readers).push(client);
        }
        result
    }

    /// A connection that `LISTEN`s for commits: see [`Listener::wait`].
    pub fn listen(&self) -> Result<Listener, PostgresError> {
        let mut client = connect(&self.config).map_err(|e| PostgresError::Connect(describe(&e)))?;
        client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        Ok(Listener {
            client: Some(client),
        })
    }

    /// The value stored under `name`, inserting `init()` first if there is none. Every
    /// process gets the same value, whichever inserted it.
    pub fn setting_or_insert(
        &self,
        name: &str,
        init: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, PostgresError> {
        if let Some(v) = self.setting(name)? {
            return Ok(v);
        }
        let value = init();
        Ok(self.with_client(|c| {
            c.execute(
                "INSERT INTO inbox_kv (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )?;
            c.query_one("SELECT value FROM inbox_kv WHERE name = $1", &[&name])
                .map(|r| r.get(0))
        })?)
    }

    /// The value stored under `name`.
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, PostgresError> {
        Ok(self.with_client(|c| {
            c.query_opt("SELECT value FROM inbox_kv WHERE name = $1", &[&name])
                .map(|r| r.map(|r| r.get(0)))
        })?)
    }

    /// The names of every setting that starts with `prefix`, in order.
    pub fn setting_names(&self, prefix: &str) -> Result<Vec<String>, PostgresError> {
        let mut names: Vec<String> = self.with_client(|c| {
            c.query(
                "SELECT name FROM inbox_kv WHERE starts_with(name, $1)",
                &[&prefix],
            )
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        })?;
        names.sort();
        Ok(names)
    }

    /// Stores `value` under `name` unless something is there already; returns whether it
    /// was stored.
    pub fn insert_setting(&self, name: &str, value: &[u8]) -> Result<bool, PostgresError> {
        Ok(self.with_client(|c| {
            c.execute(
                "INSERT INTO inbox_kv (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )
            .map(|n| n == 1)
        })?)
    }

    /// Runs `f` on a pooled connection to the log's database: for a caller's own tables
    /// (inboxd keeps its webhook cursors in `inbox_cursors`). The connection goes back to the
    /// pool if `f` succeeded.
    pub fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, PostgresError> {
        Ok(self.with_client(f)?)
    }

    /// A connection of its own to the log's database, held until the [`Session`] is dropped
    /// (then closed on a thread of its own, so dropping it on an async runtime is safe): for
    /// what lives as long as a connection, such as a session advisory lock (inboxd's
    /// webhook leases).
    pub fn session(&self) -> Result<Session, PostgresError> {
        let client = connect(&self.config).map_err(|e| PostgresError::Connect(describe(&e)))?;
        Ok(Session {
            client: Some(client),
        })
    }

    fn decode_rows(rows: &[Row]) -> Result<Vec<StoredEvent>, ReadError> {
        rows.iter().map(decode_row).collect()
    }
}

fn decode_row(row: &Row) -> Result<StoredEvent, ReadError> {
    let position: i64 = row.get(0);
    let corrupt = |reason: String| ReadError::Corrupt {
        path: "inbox_events".into(),
        offset: to_u64(position),
        reason,
    };
    let site_version: i64 = row.get(1);
    let site: String = row.get(2);
    let event_id: Uuid = row.get(3);
    let schema_version: i16 = row.get(4);
    let recorded_at: i64 = row.get(5);
    let body: &[u8] = row.get(6);
    let schema_version = u16::try_from(schema_version)
        .map_err(|_| corrupt(format!("schema version {schema_version}")))?;
    let event = decode_event(schema_version, body).map_err(|e| corrupt(e.to_string()))?;
    Ok(StoredEvent {
        position: to_u64(position),
        site_version: to_u64(site_version),
        envelope: EventEnvelope::new(
            SiteId::new(site),
            EventId::from_uuid(event_id),
            Timestamp::from_micros(recorded_at),
            event,
        ),
    })
}

const COLUMNS: &str = "position, site_version, site, event_id, schema_version, recorded_at, body";

/// Applies the migrations the database does not have yet, each in its own transaction,
/// all under one advisory lock.
fn migrate(client: &mut Client) -> Result<(), PostgresError> {
    let failed = |version: usize| {
        move |e: postgres::Error| PostgresError::Migration {
            version,
            reason: describe(&e),
        }
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed(0))?;
    let result = (|| {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS inbox_migrations (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .map_err(failed(0))?;
        let applied: i32 = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM inbox_migrations",
                &[],
            )
            .map_err(failed(0))?
            .get(0);
        let applied = usize::try_from(applied).unwrap_or(0);
        if applied > MIGRATIONS.len() {
            return Err(PostgresError::NewerSchema {
                found: applied,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let version = i + 1;
            let v = i32::try_from(version).unwrap_or(i32::MAX);
            let mut tx = client.transaction().map_err(failed(version))?;
            tx.batch_execute(sql).map_err(failed(version))?;
            tx.execute("INSERT INTO inbox_migrations (version) VALUES ($1)", &[&v])
                .map_err(failed(version))?;
            tx.commit().map_err(failed(version))?;
        }
        Ok(())
    })();
    // Released with the session anyway; unlock so the connection can be reused.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result
}

/// The appender thread: commits every batch queued while the previous commit ran, in one
/// transaction.
fn appender(config: Config, mut client: Option<Client>, rx: Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let c = match client.take().filter(|c| !c.is_closed()) {
            Some(c) => Ok(c),
            None => connect(&config),
        };
        let mut c = match c {
            Ok(c) => c,
            Err(e) => {
                let why = format!("cannot connect to PostgreSQL: {}", describe(&e));
                for p in group {
                    let _ = p.reply.send(Err(AppendError::Failed(why.clone())));
                }
                continue;
            }
        };
        match commit_group(&mut c, &group) {
            Ok(results) => {
                for (p, r) in group.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) => {
                // The outcome is unknown if the connection broke during COMMIT.
                let why = format!("the commit failed or was interrupted: {}", describe(&e));
                for p in group {
                    let _ = p.reply.send(Err(AppendError::Failed(why.clone())));
                }
            }
        }
        if !c.is_closed() {
            client = Some(c);
        }
    }
}

/// One transaction for a group of batches: lock the head, read the group's site versions,
/// check each batch's expected version, write the accepted ones (events, sites' versions,
/// head, notify) in one statement, commit.
fn commit_group(
    c: &mut Client,
    group: &[Pending],
) -> Result<Vec<Result<Appended, AppendError>>, postgres::Error> {
    // BEGIN and the head's row lock in one round trip (the simple-query protocol takes both
    // statements at once). The lock serializes every process's appends until this commit.
    let head = c
        .simple_query("BEGIN; SELECT position FROM inbox_head FOR UPDATE")?
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse::<i64>().ok(),
            _ => None,
        });
    let written = (|| {
        let Some(head) = head else {
            return Ok(None);
        };
        group_in_transaction(c, group, head).map(Some)
    })();
    match written {
        Ok(Some((results, true))) => {
            c.batch_execute("COMMIT")?;
            Ok(results)
        }
        Ok(Some((results, false))) => {
            c.batch_execute("ROLLBACK")?;
            Ok(results)
        }
        Ok(None) => {
            c.batch_execute("ROLLBACK")?;
            let why = "inbox_head has no row: the schema is damaged".to_owned();
            Ok(group
                .iter()
                .map(|_| Err(AppendError::Failed(why.clone())))
                .collect())
        }
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

/// The body of a group's transaction, with the head locked at `head`: answers each batch's
/// result and whether anything is to be committed.
fn group_in_transaction(
    c: &mut Client,
    group: &[Pending],
    head: i64,
) -> Result<(Vec<Result<Appended, AppendError>>, bool), postgres::Error> {
    let mut names: Vec<&str> = group.iter().map(|p| p.site.0.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    // A statement of its own, after the lock is held: under READ COMMITTED a statement sees
    // what was committed before it began, so reading the versions in the statement that
    // waited for the lock would miss the previous holder's appends.
    let rows = c.query(
        "SELECT site, version FROM inbox_sites WHERE site = ANY($1)",
        &[&names],
    )?;
    let mut versions: HashMap<String, u64> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), to_u64(r.get(1))))
        .collect();
    let mut next = to_u64(head) + 1;
    let mut results = Vec::with_capacity(group.len());
    let (mut positions, mut sites, mut site_versions) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ids, mut schemas, mut recorded, mut bodies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in group {
        let actual = versions.get(&p.site.0).copied().unwrap_or(0);
        if let ExpectedVersion::Exactly(expected) = p.expected
            && expected != actual
        {
            results.push(Err(AppendError::Conflict {
                site: p.site.clone(),
                expected,
                actual,
            }));
            continue;
        }
        let first_position = next;
        let mut version = actual;
        for (id, schema, at, body) in &p.rows {
            version += 1;
            positions.push(to_i64(next));
            sites.push(p.site.0.as_str());
            site_versions.push(to_i64(version));
            ids.push(*id);
            schemas.push(*schema);
            recorded.push(*at);
            bodies.push(body.as_slice());
            next += 1;
        }
        versions.insert(p.site.0.clone(), version);
        results.push(Ok(Appended {
            first_position,
            last_position: next - 1,
            site_version: version,
        }));
    }
    if positions.is_empty() {
        return Ok((results, false));
    }
    let (touched, touched_versions): (Vec<&str>, Vec<i64>) = versions
        .iter()
        .map(|(s, v)| (s.as_str(), to_i64(*v)))
        .unzip();
    let last = next - 1;
    c.query(
        "WITH events AS (
             INSERT INTO inbox_events (position, site_version, site, event_id, schema_version,
                                       recorded_at, body)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::uuid[],
                                  $5::smallint[], $6::bigint[], $7::bytea[])),
         sites AS (
             INSERT INTO inbox_sites (site, version)
             SELECT * FROM unnest($8::text[], $9::bigint[])
             ON CONFLICT (site) DO UPDATE SET version = EXCLUDED.version),
         head AS (UPDATE inbox_head SET position = $10)
         SELECT pg_notify($11, $12)",
        &[
            &positions,
            &site_versions,
            &sites,
            &ids,
            &schemas,
            &recorded,
            &bodies,
            &touched,
            &touched_versions,
            &to_i64(last),
            &CHANNEL,
            &last.to_string(),
        ],
    )?;
    Ok((results, true))
}

impl EventLog for PostgresLog {
    fn append(
        &self,
        site: &SiteId,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<Appended, AppendError> {
        // Checked here so a bad batch never reaches the database; the version is checked
        // in the transaction.
        check_append(site, ExpectedVersion::Any, 0, events)?;
        let rows = events
            .iter()
            .enumerate()
            .map(|(index, e)| {
                encode_event(&e.event)
                    .map(|body| {
                        (
                            e.event_id.as_uuid(),
                            i16::try_from(inbox_core::SCHEMA_VERSION).unwrap_or(i16::MAX),
                            e.recorded_at.as_micros(),
                            body,
                        )
                    })
                    .map_err(|source| AppendError::Encode { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = mpsc::sync_channel(1);
        let sender = lock(&self.appender).clone();
        let sent = sender.is_some_and(|s| {
            s.send(Pending {
                site: site.clone(),
                expected,
                rows,
                reply,
            })
            .is_ok()
        });
        if !sent {
            return Err(AppendError::Failed("the log is closed".into()));
        }
        let appended = answer
            .recv()
            .map_err(|_| AppendError::Failed("the appender thread stopped".into()))??;
        self.seen
            .fetch_max(appended.last_position, Ordering::Relaxed);
        Ok(appended)
    }

    fn read_site(
        &self,
        site: &SiteId,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .with_client(|c| {
                c.query(
                    &format!(
                        "SELECT {COLUMNS} FROM inbox_events WHERE site = $1 AND \
                         site_version >= $2 ORDER BY site_version LIMIT $3"
                    ),
                    &[
                        &site.0,
                        &to_i64(from_version.max(1)),
                        &i64::try_from(max).unwrap_or(i64::MAX),
                    ],
                )
            })
            .map_err(|e| read_error(&e))?;
        Self::decode_rows(&rows)
    }

    fn replay(
        &self,
        from_position: u64,
        f: &mut dyn FnMut(StoredEvent) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        let mut from = from_position.max(1);
        loop {
            let events = self.read_all(from, REPLAY_CHUNK)?;
            let n = events.len();
            for event in events {
                from = event.position + 1;
                if f(event).is_break() {
                    return Ok(());
                }
            }
            if n < REPLAY_CHUNK {
                return Ok(());
            }
        }
    }

    /// One query with `LIMIT max` (the trait's default would replay in chunks of
    /// `REPLAY_CHUNK` and drop what is past `max`; the follower calls this on every wake).
    fn read_all(&self, from_position: u64, max: usize) -> Result<Vec<StoredEvent>, ReadError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .with_client(|c| {
                c.query(
                    &format!(
                        "SELECT {COLUMNS} FROM inbox_events WHERE position >= $1 \
                         ORDER BY position LIMIT $2"
                    ),
                    &[
                        &to_i64(from_position.max(1)),
                        &i64::try_from(max).unwrap_or(i64::MAX),
                    ],
                )
            })
            .map_err(|e| read_error(&e))?;
        let events = Self::decode_rows(&rows)?;
        if let Some(last) = events.last() {
            self.seen.fetch_max(last.position, Ordering::Relaxed);
        }
        Ok(events)
    }

    /// Asks the database.
    fn site_version(&self, site: &SiteId) -> Result<u64, ReadError> {
        self.with_client(|c| {
            c.query_opt(
                "SELECT version FROM inbox_sites WHERE site = $1",
                &[&site.0],
            )
            .map(|r| r.map_or(0, |r| to_u64(r.get(0))))
        })
        .map_err(|e| ReadError::Database(e.to_string()))
    }

    /// Asks the database.
    fn last_position(&self) -> Result<u64, ReadError> {
        let row = self
            .with_client(|c| c.query_one("SELECT position FROM inbox_head", &[]))
            .map_err(|e| ReadError::Database(e.to_string()))?;
        let p = to_u64(row.get(0));
        self.seen.fetch_max(p, Ordering::Relaxed);
        Ok(p)
    }
}

impl Drop for PostgresLog {
    fn drop(&mut self) {
        // Closing the channel ends the appender thread once the batches queued are done.
        lock(&self.appender).take();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        close_off_thread(std::mem::take(&mut *lock(&self.readers)));
    }
}

/// A connection that listens for commits to the log (`LISTEN inbox_events`).
pub struct Listener {
    client: Option<Client>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        close_off_thread(self.client.take().into_iter().collect());
    }
}

impl Listener {
    /// Waits until something is committed after the `LISTEN` began (or after the previous
    /// wait returned), or until `timeout`. Returns whether a commit was announced. Read
    /// the log after listening, not before, and no commit is missed: one that lands
    /// between the read and the wait is announced to the wait.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, PostgresError> {
        let Some(client) = self.client.as_mut() else {
            return Ok(false);
        };
        let mut notifications = client.notifications();
        if notifications.timeout_iter(timeout).next()?.is_none() {
            return Ok(false);
        }
        // Several commits may have been announced; one read covers them all.
        while notifications.iter().next()?.is_some() {}
        Ok(true)
    }

    /// Whether the connection is gone (listen again on a new one).
    pub fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }
}

/// A connection of its own to the log's database ([`PostgresLog::session`]).
pub struct Session {
    client: Option<Client>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing the connection releases whatever it held (advisory locks included).
        close_off_thread(self.client.take().into_iter().collect());
    }
}

impl Session {
    /// The connection.
    pub fn client(&mut self) -> Result<&mut Client, PostgresError> {
        self.client
            .as_mut()
            .ok_or_else(|| PostgresError::Query("the session is closed".into()))
    }

    /// Whether the connection is alive and answers.
    pub fn is_alive(&mut self) -> bool {
        self.client
            .as_mut()
            .is_some_and(|c| !c.is_closed() && c.simple_query("SELECT 1").is_ok())
    }
}

/// For the test suites of this workspace: a fresh database on the server that
/// `INBOX_TEST_POSTGRES` names.
#[doc(hidden)]
pub mod testing {
    use std::io::Write;

    use super::{Config, NoTls, describe};

    /// The environment variable naming the test server (a `postgres://` URL whose
    /// database may be created in; `scripts/throwaway-postgres.sh` prints one).
    pub const ENV: &str = "INBOX_TEST_POSTGRES";

    /// The URL of a new, empty database for one test, or `None` when no server is
    /// configured (said loudly on stderr). Under `CI=true` a missing server is a failure,
    /// not a skip.
    ///
    /// Safe to call from an async test: the blocking client runs on a thread of its own.
    pub fn fresh_database(test: &str) -> Option<String> {
        std::thread::scope(|scope| match scope.spawn(|| create(test)).join() {
            Ok(url) => url,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }

    fn create(test: &str) -> Option<String> {
        let Ok(url) = std::env::var(ENV) else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: {ENV} is not set, and CI=true: the PostgreSQL tests must run");
            }
            // Straight to stderr, not eprintln!: the test harness captures the macros'
            // output of passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: no PostgreSQL server. Run \
                 `export {ENV}=$(scripts/throwaway-postgres.sh)` to run it. ***"
            );
            return None;
        };
        let config: Config = match url.parse() {
            Ok(c) => c,
            Err(e) => panic!("{ENV}={url}: {e}"),
        };
        let mut client = match config.connect(NoTls) {
            Ok(c) => c,
            Err(e) => panic!("{ENV}={url}: cannot connect: {}", describe(&e)),
        };
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "inbox_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        if let Err(e) = client.batch_execute(&format!("CREATE DATABASE {name}")) {
            panic!("creating the test database: {}", describe(&e));
        }
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (url.as_str(), String::new()),
        };
        // postgres://authority[/database]: keep the authority, name the new database.
        let authority = base.find("://").map_or(0, |i| i + 3);
        let end = base
            .get(authority..)
            .and_then(|rest| rest.find('/'))
            .map_or(base.len(), |i| authority + i);
        let prefix = base.get(..end).unwrap_or(base);
        Some(format!("{prefix}/{name}{query}"))
    }
}
