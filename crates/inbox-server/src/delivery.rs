//! Where the outbox keeps each webhook URL's cursor and dead letters, and who may deliver to
//! a URL: behind [`DeliveryStore`], chosen once at start, so the outbox's worker has one
//! path for both stores.
//!
//! * [`FileDelivery`]: files in `data/outbox/` (`<url id>.cursor` and `<url id>.retries.json`,
//!   written atomically; `<url id>.dead.jsonl`, appended and synced); this process is the
//!   only deliverer, so its lease always holds.
//! * [`PostgresDelivery`]: the shared database (`inbox_cursors`; the deliveries waiting for a
//!   retry as the setting `retries:<url id>`; dead letters as `dead-letter:<url id>:<event
//!   id>` settings); a URL is delivered by the process holding its lease (a session advisory
//!   lock released the moment its connection dies), and the cursor and the retries are saved
//!   through the lease's own connection, so a process that lost the lease cannot move them.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use inbox_store::{PostgresLog, Session};
use uuid::Uuid;

use crate::keys::write_private;

/// A webhook URL as the stores name it: its id (UUIDv5 of the URL) and the URL.
#[derive(Clone, Debug)]
pub struct UrlKey {
    /// Names its files and database rows.
    pub id: Uuid,
    /// The URL.
    pub url: String,
}

impl UrlKey {
    /// The key of `url`.
    pub fn new(url: &str) -> Self {
        UrlKey {
            id: Uuid::new_v5(&Uuid::NAMESPACE_URL, url.as_bytes()),
            url: url.to_owned(),
        }
    }
}

/// A lease just taken, and the URL's cursor as the previous holder saved it.
pub type Taken = (Box<dyn DeliveryLease>, Option<u64>);

/// Where cursors and dead letters are kept, and the leases on URLs. Every call may block
/// (files, the database): the outbox calls them off the async workers.
pub trait DeliveryStore: Send + Sync {
    /// The URL's saved cursor (the last position delivered), or `initial` saved for a URL
    /// configured for the first time (saved at once: were it saved only after the first
    /// deliveries, a kill before then would make the restart take the URL for new again and
    /// skip what was acknowledged in between).
    fn start_cursor(&self, url: &UrlKey, initial: u64) -> std::io::Result<u64>;
    /// Tries to become the URL's deliverer: the lease, and the cursor as the previous holder
    /// saved it. `None`: another process delivers to it.
    fn try_lease(&self, url: &UrlKey) -> std::io::Result<Option<Taken>>;
    /// The URL's cursor as its deliverer last saved it.
    fn saved_cursor(&self, url: &UrlKey) -> std::io::Result<Option<u64>>;
    /// Records a delivery set aside after too many attempts (`line`: one JSON object).
    fn dead_letter(&self, url: &UrlKey, event_id: &str, line: &str) -> std::io::Result<()>;
    /// Where [`DeliveryStore::dead_letter`] puts it, for the log line.
    fn dead_letter_place(&self, url: &UrlKey, event_id: &str) -> String;
    /// Every dead letter of the URL (the lines [`DeliveryStore::dead_letter`] recorded), in
    /// the order they were set aside.
    fn dead_letters(&self, url: &UrlKey) -> std::io::Result<Vec<String>>;
    /// Removes the dead letter of `event_id` and returns it (`None`: there is none).
    fn take_dead_letter(&self, url: &UrlKey, event_id: &str) -> std::io::Result<Option<String>>;
    /// The deliveries waiting for a retry, as the last holder of the lease saved them (empty:
    /// none).
    fn saved_retries(&self, url: &UrlKey) -> std::io::Result<Vec<u8>>;
    /// Replaces the saved retries from outside the lease: for `inboxd webhooks redeliver`,
    /// with the server stopped (a file store) or holding no lease on the URL.
    fn put_retries(&self, url: &UrlKey, bytes: &[u8]) -> std::io::Result<()>;
}

/// The right to deliver to one URL, while it holds.
pub trait DeliveryLease: Send {
    /// Whether it still holds.
    fn is_held(&mut self) -> bool;
    /// Whether it can stop holding at all; one that cannot is not checked before each
    /// delivery (the default: it can).
    fn can_lapse(&self) -> bool {
        true
    }
    /// Saves the URL's cursor; fails if the lease no longer holds.
    fn save_cursor(&mut self, position: u64) -> std::io::Result<()>;
    /// Saves the deliveries waiting for a retry (replacing what was saved); fails if the
    /// lease no longer holds.
    fn save_retries(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Cursors and dead letters in a directory; one process delivers.
pub struct FileDelivery {
    dir: PathBuf,
}

impl FileDelivery {
    /// Keeps them in `dir` (created if missing).
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(FileDelivery { dir })
    }

    fn cursor_path(&self, url: &UrlKey) -> PathBuf {
        self.dir.join(format!("{}.cursor", url.id))
    }

    fn dead_path(&self, url: &UrlKey) -> PathBuf {
        self.dir.join(format!("{}.dead.jsonl", url.id))
    }
}

fn retries_path(dir: &std::path::Path, url: &UrlKey) -> PathBuf {
    dir.join(format!("{}.retries.json", url.id))
}

fn read_or_empty(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The event id a dead-letter line records.
pub fn dead_letter_event_id(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("eventId")?.as_str().map(str::to_owned)
}

fn read_cursor(path: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn write_cursor(path: &std::path::Path, url: &UrlKey, position: u64) -> std::io::Result<()> {
    write_private(path, format!("{position}\n{}\n", url.url).as_bytes()).map_err(io)
}

impl DeliveryStore for FileDelivery {
    fn start_cursor(&self, url: &UrlKey, initial: u64) -> std::io::Result<u64> {
        let path = self.cursor_path(url);
        match read_cursor(&path) {
            Some(c) => Ok(c),
            None => {
                write_cursor(&path, url, initial)?;
                Ok(initial)
            }
        }
    }

    fn try_lease(&self, url: &UrlKey) -> std::io::Result<Option<Taken>> {
        let path = self.cursor_path(url);
        let saved = read_cursor(&path);
        let lease = FileLease {
            path,
            url: url.clone(),
        };
        Ok(Some((Box::new(lease), saved)))
    }

    fn saved_cursor(&self, url: &UrlKey) -> std::io::Result<Option<u64>> {
        Ok(read_cursor(&self.cursor_path(url)))
    }

    fn dead_letter(&self, url: &UrlKey, _event_id: &str, line: &str) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dead_path(url))?;
        writeln!(f, "{line}")?;
        f.sync_all()
    }

    fn dead_letter_place(&self, url: &UrlKey, _event_id: &str) -> String {
        self.dead_path(url).display().to_string()
    }

    fn dead_letters(&self, url: &UrlKey) -> std::io::Result<Vec<String>> {
        let bytes = read_or_empty(&self.dead_path(url))?;
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn take_dead_letter(&self, url: &UrlKey, event_id: &str) -> std::io::Result<Option<String>> {
        let lines = self.dead_letters(url)?;
        let Some(i) = lines
            .iter()
            .position(|l| dead_letter_event_id(l).as_deref() == Some(event_id))
        else {
            return Ok(None);
        };
        let mut rest = lines;
        let taken = rest.remove(i);
        let mut text = rest.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_private(&self.dead_path(url), text.as_bytes()).map_err(io)?;
        Ok(Some(taken))
    }

    fn saved_retries(&self, url: &UrlKey) -> std::io::Result<Vec<u8>> {
        read_or_empty(&retries_path(&self.dir, url))
    }

    fn put_retries(&self, url: &UrlKey, bytes: &[u8]) -> std::io::Result<()> {
        write_private(&retries_path(&self.dir, url), bytes).map_err(io)
    }
}

/// The file store's lease: always held (one process per data directory, which the log's
/// lock guarantees).
struct FileLease {
    path: PathBuf,
    url: UrlKey,
}

impl DeliveryLease for FileLease {
    fn is_held(&mut self) -> bool {
        true
    }

    fn can_lapse(&self) -> bool {
        false
    }

    fn save_cursor(&mut self, position: u64) -> std::io::Result<()> {
        write_cursor(&self.path, &self.url, position)
    }

    fn save_retries(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        write_private(&retries_path(dir, &self.url), bytes).map_err(io)
    }
}

/// Cursors, leases and dead letters in the shared database: the cursors in
/// `inbox_cursors` (name, position), one row per URL; a URL's lease is a session advisory
/// lock on a connection of its own; dead letters are settings.
pub struct PostgresDelivery {
    pg: Arc<PostgresLog>,
}

impl PostgresDelivery {
    /// Over a connected database.
    pub fn new(pg: Arc<PostgresLog>) -> Self {
        PostgresDelivery { pg }
    }
}

/// The database row of a URL's cursor, and the name of its lease.
fn cursor_name(url: &UrlKey) -> String {
    format!("webhook:{}", url.id)
}

/// A stable 64-bit advisory lock key for a lease name (FNV-1a; advisory keys are a flat
/// bigint space, and the store's migration lock is a different constant). Every version of
/// inboxd on one database must compute the same key, or two would deliver to one URL.
fn lease_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "inbox-lease:".bytes().chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_le_bytes(h.to_le_bytes())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

const SELECT_CURSOR: &str = "SELECT position FROM inbox_cursors WHERE name = $1";

impl PostgresDelivery {
    fn saved(&self, name: &str) -> std::io::Result<Option<u64>> {
        self.pg
            .with_connection(|c| {
                c.query_opt(SELECT_CURSOR, &[&name])
                    .map(|r| r.map(|r| to_u64(r.get(0))))
            })
            .map_err(io)
    }
}

impl DeliveryStore for PostgresDelivery {
    fn start_cursor(&self, url: &UrlKey, initial: u64) -> std::io::Result<u64> {
        let name = cursor_name(url);
        let initial = to_i64(initial);
        self.pg
            .with_connection(|c| {
                c.execute(
                    "INSERT INTO inbox_cursors (name, position) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &initial],
                )?;
                c.query_one(SELECT_CURSOR, &[&name])
                    .map(|r| to_u64(r.get(0)))
            })
            .map_err(io)
    }

    fn try_lease(&self, url: &UrlKey) -> std::io::Result<Option<Taken>> {
        let name = cursor_name(url);
        let mut session = self.pg.session().map_err(io)?;
        let got: bool = session
            .client()
            .map_err(io)?
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lease_key(&name)])
            .map_err(io)?
            .get(0);
        if !got {
            return Ok(None);
        }
        let saved = self.saved(&name)?;
        Ok(Some((Box::new(PostgresLease { session, name }), saved)))
    }

    fn saved_cursor(&self, url: &UrlKey) -> std::io::Result<Option<u64>> {
        self.saved(&cursor_name(url))
    }

    fn dead_letter(&self, url: &UrlKey, event_id: &str, line: &str) -> std::io::Result<()> {
        let name = format!("dead-letter:{}:{event_id}", url.id);
        self.pg
            .insert_setting(&name, line.as_bytes())
            .map(|_| ())
            .map_err(io)
    }

    fn dead_letter_place(&self, url: &UrlKey, event_id: &str) -> String {
        format!("inbox_kv row dead-letter:{}:{event_id}", url.id)
    }

    fn dead_letters(&self, url: &UrlKey) -> std::io::Result<Vec<String>> {
        let prefix = format!("dead-letter:{}:", url.id);
        let mut names = self.pg.setting_names(&prefix).map_err(io)?;
        names.sort();
        let mut lines = Vec::new();
        for name in names {
            if let Some(v) = self.pg.setting(&name).map_err(io)? {
                lines.push(String::from_utf8_lossy(&v).into_owned());
            }
        }
        Ok(lines)
    }

    fn take_dead_letter(&self, url: &UrlKey, event_id: &str) -> std::io::Result<Option<String>> {
        let name = format!("dead-letter:{}:{event_id}", url.id);
        self.pg
            .with_connection(|c| {
                c.query_opt(
                    "DELETE FROM inbox_kv WHERE name = $1 RETURNING value",
                    &[&name],
                )
                .map(|r| r.map(|r| String::from_utf8_lossy(r.get::<_, &[u8]>(0)).into_owned()))
            })
            .map_err(io)
    }

    fn saved_retries(&self, url: &UrlKey) -> std::io::Result<Vec<u8>> {
        Ok(self
            .pg
            .setting(&retries_name(url))
            .map_err(io)?
            .unwrap_or_default())
    }

    fn put_retries(&self, url: &UrlKey, bytes: &[u8]) -> std::io::Result<()> {
        let name = retries_name(url);
        self.pg
            .with_connection(|c| c.execute(UPSERT_SETTING, &[&name, &bytes]).map(|_| ()))
            .map_err(io)
    }
}

/// The setting that holds a URL's deliveries waiting for a retry.
fn retries_name(url: &UrlKey) -> String {
    format!("retries:{}", url.id)
}

const UPSERT_SETTING: &str = "INSERT INTO inbox_kv (name, value) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value";

/// A lease: the advisory lock held by a session of its own, released when the session's
/// connection closes (the lease dropped, or the process dead).
struct PostgresLease {
    session: Session,
    name: String,
}

impl DeliveryLease for PostgresLease {
    fn is_held(&mut self) -> bool {
        self.session.is_alive()
    }

    /// Through the lease's own connection, never backwards (`greatest(old, new)`): a holder
    /// whose connection broke, so that another process may hold the lease now, cannot
    /// write it.
    fn save_cursor(&mut self, position: u64) -> std::io::Result<()> {
        let name = &self.name;
        self.session
            .client()
            .map_err(io)?
            .execute(
                "INSERT INTO inbox_cursors (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = greatest(inbox_cursors.position, \
                 EXCLUDED.position)",
                &[name, &to_i64(position)],
            )
            .map(|_| ())
            .map_err(io)
    }

    fn save_retries(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let name = retries_name_of_cursor(&self.name);
        self.session
            .client()
            .map_err(io)?
            .execute(UPSERT_SETTING, &[&name, &bytes])
            .map(|_| ())
            .map_err(io)
    }
}

/// The retries setting of the URL whose cursor row is `cursor_name` (`webhook:<url id>`).
fn retries_name_of_cursor(cursor_name: &str) -> String {
    format!(
        "retries:{}",
        cursor_name.strip_prefix("webhook:").unwrap_or(cursor_name)
    )
}
