//! The SQLite baseline: the schema a user would otherwise write for the same operations
//! (`rusqlite`, bundled SQLite), measured beside the engine and the floor in the same run.
//!
//! One table, keyed by conversation and sequence (the id breaks ties, as in the engine's order
//! key). `WITHOUT ROWID` makes the primary key the table's B-tree, so a page is one range scan
//! of it and needs no second index: the obvious schema for "messages of a conversation in
//! order". A merge is one `UPDATE` of the conversation column; a page is `ORDER BY ... LIMIT
//! 30` after the previous page's last `(sequence, id)`.
//!
//! The rows hold the same conversations, sequences, ids and 40-character texts as the
//! engine's fixtures (`crate::send_events`, `crate::MergeFixture`).

use std::path::Path;

use inbox_core::ConversationId;
use rusqlite::{Connection, params};

use crate::{BASE_SEQUENCE, Layout, conversation, mix, text40};

/// The table.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS messages (
    conversation BLOB NOT NULL,
    sequence INTEGER NOT NULL,
    id INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (conversation, sequence, id)
) WITHOUT ROWID";

const INSERT: &str =
    "INSERT INTO messages (conversation, sequence, id, body) VALUES (?1, ?2, ?3, ?4)";

/// One message as a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The conversation's UUID, 16 bytes.
    pub conversation: [u8; 16],
    /// The message's sequence.
    pub sequence: i64,
    /// The message's id (equal to its sequence in the fixtures).
    pub id: i64,
    /// The 40-character text.
    pub body: String,
}

/// One message of a page, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRow {
    /// The message's sequence.
    pub sequence: i64,
    /// The message's id.
    pub id: i64,
    /// Its text.
    pub body: String,
}

/// The 16 bytes a conversation is stored as.
pub fn key(c: ConversationId) -> [u8; 16] {
    *c.0.as_bytes()
}

/// The rows of `crate::send_events(messages, conversations)`: the same messages, in the
/// same order.
pub fn send_rows(messages: u64, conversations: u64) -> Vec<Row> {
    let conversations = conversations.max(1);
    (0..messages)
        .map(|i| {
            let seq = BASE_SEQUENCE + i64::try_from(i).unwrap_or(i64::MAX - BASE_SEQUENCE);
            Row {
                conversation: key(conversation(mix(i) % conversations)),
                sequence: seq,
                id: seq,
                body: text40(i),
            }
        })
        .collect()
}

/// An empty in-memory database with the table.
pub fn open_memory() -> rusqlite::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// A file database in WAL mode with `synchronous=FULL` (every commit is fsynced), with the
/// table: the durable setting to compare with the engine's log.
pub fn open_file(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// How long a writer of [`open_writer`] waits for the write lock before failing.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// [`open_file`] with a busy timeout of [`BUSY_TIMEOUT`]: one writer's connection among many
/// (SQLite lets one write at a time; the others wait in its busy handler).
pub fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open_file(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Inserts `rows` in one transaction with one prepared statement.
pub fn insert_all(conn: &mut Connection, rows: &[Row]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for r in rows {
            stmt.execute(params![&r.conversation[..], r.sequence, r.id, &r.body])?;
        }
    }
    tx.commit()
}

/// Inserts one row in its own (autocommit) transaction: one durable append.
pub fn insert_one(conn: &Connection, r: &Row) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(INSERT)?;
    stmt.execute(params![&r.conversation[..], r.sequence, r.id, &r.body])?;
    Ok(())
}

/// The number of messages of a conversation.
pub fn count(conn: &Connection, c: ConversationId) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM messages WHERE conversation = ?1",
        [&key(c)[..]],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| u64::try_from(n).unwrap_or_default())
}

/// The number of messages in the table.
pub fn count_all(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or_default())
}

/// One page of `limit` messages of a conversation, after the `(sequence, id)` of the previous
/// page's last message (keyset pagination), newest first when `descending`.
pub fn page(
    conn: &Connection,
    c: ConversationId,
    after: Option<(i64, i64)>,
    descending: bool,
    limit: usize,
) -> rusqlite::Result<Vec<PageRow>> {
    let sql = match (descending, after.is_some()) {
        (true, true) => {
            "SELECT sequence, id, body FROM messages WHERE conversation = ?1 \
             AND (sequence, id) < (?2, ?3) ORDER BY sequence DESC, id DESC LIMIT ?4"
        }
        (true, false) => {
            "SELECT sequence, id, body FROM messages WHERE conversation = ?1 \
             AND ?2 IS NULL AND ?3 IS NULL ORDER BY sequence DESC, id DESC LIMIT ?4"
        }
        (false, true) => {
            "SELECT sequence, id, body FROM messages WHERE conversation = ?1 \
             AND (sequence, id) > (?2, ?3) ORDER BY sequence ASC, id ASC LIMIT ?4"
        }
        (false, false) => {
            "SELECT sequence, id, body FROM messages WHERE conversation = ?1 \
             AND ?2 IS NULL AND ?3 IS NULL ORDER BY sequence ASC, id ASC LIMIT ?4"
        }
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let (seq, id) = match after {
        Some((s, i)) => (Some(s), Some(i)),
        None => (None, None),
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![&key(c)[..], seq, id, limit], |r| {
        Ok(PageRow {
            sequence: r.get(0)?,
            id: r.get(1)?,
            body: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// A database with one conversation (number 0) of `messages` messages: the rows of
/// `crate::single_conversation_inbox`.
pub fn single_conversation_db(messages: u64) -> rusqlite::Result<Connection> {
    let mut conn = open_memory()?;
    insert_all(&mut conn, &send_rows(messages, 1))?;
    Ok(conn)
}

/// The source and the target conversation of the merge fixtures.
pub fn merge_conversations() -> (ConversationId, ConversationId) {
    (conversation(1), conversation(2))
}

/// Two conversations of `n` messages each, as in `crate::MergeFixture::new(n, layout)`.
pub fn merge_db(n: u64, layout: Layout) -> rusqlite::Result<Connection> {
    let mut conn = open_memory()?;
    insert_all(&mut conn, &merge_rows(n, layout))?;
    Ok(conn)
}

/// [`merge_db`] as a file database in WAL mode at `path` (written with `synchronous=OFF`
/// to save time, checkpointed, and closed: [`open_file`] reopens it with
/// `synchronous=FULL`).
pub fn merge_db_file(n: u64, layout: Layout, path: &Path) -> rusqlite::Result<()> {
    let mut conn = open_file(path)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    insert_all(&mut conn, &merge_rows(n, layout))?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    conn.close().map_err(|(_, e)| e)
}

/// The rows of the merge fixtures, in clock order.
fn merge_rows(n: u64, layout: Layout) -> Vec<Row> {
    let (source, target) = merge_conversations();
    let (s, t) = layout.sequences(n);
    let mut all: Vec<(i64, ConversationId)> = s
        .iter()
        .map(|q| (*q, source))
        .chain(t.iter().map(|q| (*q, target)))
        .collect();
    all.sort_unstable();
    all.into_iter()
        .enumerate()
        .map(|(i, (seq, c))| Row {
            conversation: key(c),
            sequence: seq,
            id: seq,
            body: text40(u64::try_from(i).unwrap_or_default()),
        })
        .collect()
}

/// The merge: every message of `source` moves to `target`. Returns the rows moved.
pub fn merge(
    conn: &Connection,
    source: ConversationId,
    target: ConversationId,
) -> rusqlite::Result<usize> {
    let mut stmt =
        conn.prepare_cached("UPDATE messages SET conversation = ?1 WHERE conversation = ?2")?;
    stmt.execute([&key(target)[..], &key(source)[..]])
}

/// A fresh in-memory copy of a database (SQLite's online backup, page by page).
pub fn copy_of(conn: &Connection) -> rusqlite::Result<Connection> {
    let mut copy = Connection::open_in_memory()?;
    {
        let backup = rusqlite::backup::Backup::new(conn, &mut copy)?;
        while backup.step(-1)? != rusqlite::backup::StepResult::Done {}
    }
    Ok(copy)
}

/// Every message of the table, read back into memory (what loading a SQLite-backed inbox
/// wholly into memory would cost).
pub fn read_all(conn: &Connection) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached("SELECT conversation, sequence, id, body FROM messages")?;
    let rows = stmt.query_map([], |r| {
        Ok(Row {
            conversation: r.get(0)?,
            sequence: r.get(1)?,
            id: r.get(2)?,
            body: r.get(3)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::floor_page;

    #[test]
    fn sqlite_page_agrees_with_the_floor() {
        let n = 1_000;
        let db = single_conversation_db(n).unwrap();
        let v = crate::single_conversation_vec(n);
        let conv = conversation(0);
        for desc in [false, true] {
            for skip in [0usize, 100, 500, 900] {
                let after = (skip > 0).then(|| {
                    let i = if desc { v.len() - skip } else { skip - 1 };
                    v[i].order_key()
                });
                let sql_after = after.map(|(s, i)| (s.0, i64::try_from(i.0).unwrap()));
                let got = page(&db, conv, sql_after, desc, 30).unwrap();
                let (floor, _) = floor_page(&v, after, desc, 30);
                let got_ids: Vec<u64> = got.iter().map(|r| u64::try_from(r.id).unwrap()).collect();
                let floor_ids: Vec<u64> = floor.iter().map(|m| m.id.0).collect();
                assert_eq!(got_ids, floor_ids, "desc {desc} skip {skip}");
                assert_eq!(got.len(), 30);
            }
        }
    }

    #[test]
    fn sqlite_page_is_one_range_scan_of_the_key() {
        let db = single_conversation_db(100).unwrap();
        let plan: Vec<String> = db
            .prepare(
                "EXPLAIN QUERY PLAN SELECT sequence, id, body FROM messages WHERE conversation = ?1 \
                 AND (sequence, id) < (?2, ?3) ORDER BY sequence DESC, id DESC LIMIT ?4",
            )
            .unwrap()
            .query_map(params![&key(conversation(0))[..], 1, 1, 30], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("SEARCH messages USING PRIMARY KEY"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn sqlite_merge_moves_every_message() {
        for layout in [Layout::Interleaved, Layout::Precedes] {
            let db = merge_db(300, layout).unwrap();
            let (source, target) = merge_conversations();
            let copy = copy_of(&db).unwrap();
            assert_eq!(merge(&copy, source, target).unwrap(), 300);
            assert_eq!(count(&copy, target).unwrap(), 600);
            assert_eq!(count(&copy, source).unwrap(), 0);
            // The template is untouched.
            assert_eq!(count(&db, source).unwrap(), 300);
            let first = page(&copy, target, None, false, 30).unwrap();
            assert!(first.windows(2).all(|w| w[0].sequence < w[1].sequence));
        }
    }

    #[test]
    fn sqlite_merge_on_a_wal_file_moves_every_message() {
        let dir = crate::bench_dir();
        let path = dir.path().join("merge.db");
        merge_db_file(300, Layout::Interleaved, &path).unwrap();
        let db = open_file(&path).unwrap();
        let sync: i64 = db
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let (source, target) = merge_conversations();
        assert_eq!(merge(&db, source, target).unwrap(), 300);
        assert_eq!(count(&db, target).unwrap(), 600);
    }

    #[test]
    fn send_rows_match_send_events() {
        let rows = send_rows(50, 7);
        for (r, e) in rows.iter().zip(crate::send_events(50, 7)) {
            let inbox_core::Event::MessageSent { message } = e else {
                panic!("not a message")
            };
            assert_eq!(r.conversation, key(message.conversation_id));
            assert_eq!(r.sequence, message.sequence.0);
        }
    }
}
