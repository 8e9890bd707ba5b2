//! The timing benchmarks of `inbox-core`, each against a plain `Vec`/`BTreeMap` floor and
//! the obvious SQLite schema (`inbox_benches::sqlite`, in memory unless said otherwise)
//! measured in the same run (numbers and targets: `docs/PERFORMANCE.md`).
//!
//! * `apply_sent`: folding `MessageSent` events, 10^6 messages over 10^4 conversations
//!   (SQLite: the same rows inserted in one transaction);
//! * `page`: one page of 30 at the start, middle and end of a 10^6-message conversation;
//! * `page_by_size`: one page of 30 (descending, cursor in the middle) of conversations of
//!   10^3 to 10^6 messages, to show how the cost grows;
//! * `merge_interleaved` and `merge_precedes`: merging two conversations of n messages each
//!   (and reverting that merge: `inbox_apply_reverted`, `..._unshared`),
//!   end to end through `Inbox::apply_event` (beside a naive `imbl::OrdMap::union`; SQLite:
//!   one `UPDATE` of the conversation column, in memory (`sqlite_update`) and, up to 10^5 per
//!   side, on a file database in WAL mode with `synchronous=FULL` (`sqlite_update_wal_file`,
//!   in a temporary directory under the workspace's `target/`, as in `store.rs`)).
//!
//! `cargo bench -p inbox-benches -- --test` runs each bench once (a smoke test);
//! `INBOX_BENCH_QUICK=1` shrinks the sizes. Big fixtures are built lazily, once per group,
//! outside the timed code, and only for the benches that run.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use imbl::OrdMap;
use inbox_benches::sqlite;
use inbox_benches::{
    Key, Layout, MergeFixture, bench_dir, cursor_after, entry_cmp, floor_page,
    inbox_with_conversations, merge_vecs, page_request, pow10, quick_mode, send_events,
    single_conversation_inbox, single_conversation_vec,
};
use inbox_core::{ConversationId, Event, Inbox, Message, SortOrder};
use rusqlite::Connection;

struct Sizes {
    /// Messages sent in `apply_sent`.
    messages: u64,
    /// Conversations they go to.
    conversations: u64,
    /// Messages of the conversation `page` reads.
    page_messages: u64,
    /// Messages of each side of a merge.
    merge: &'static [u64],
    /// Messages of the conversations `page_by_size` reads.
    page_sizes: &'static [u64],
}

fn sizes() -> Sizes {
    if quick_mode() {
        Sizes {
            messages: 10_000,
            conversations: 100,
            page_messages: 10_000,
            merge: &[1_000, 10_000],
            page_sizes: &[1_000, 10_000],
        }
    } else {
        Sizes {
            messages: 1_000_000,
            conversations: 10_000,
            page_messages: 1_000_000,
            merge: &[1_000, 10_000, 100_000, 1_000_000],
            page_sizes: &[1_000, 10_000, 100_000, 1_000_000],
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. applying sent messages

/// Times `routine` on a fresh input per iteration, like `iter_batched` with one input per
/// batch, but also settles the allocator outside the timing after dropping each output.
///
/// Dropping a 10^6-message state frees millions of small blocks; glibc parks them in its
/// fast bins and merges them (`malloc_consolidate`, ~0.4 s here) at the next large request,
/// which would otherwise land inside the next iteration's timed loop and charge the cost of
/// freeing the last state to applying the next one. A 4 KiB allocation after the drop makes
/// glibc pay it there.
fn time_each<I, O>(
    iters: u64,
    mut setup: impl FnMut() -> I,
    mut routine: impl FnMut(I) -> O,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = setup();
        let start = Instant::now();
        let output = routine(black_box(input));
        total += start.elapsed();
        drop(black_box(output));
        drop(black_box(Vec::<u8>::with_capacity(4096)));
    }
    total
}

fn apply_sent(c: &mut Criterion) {
    let s = sizes();
    let mut group = c.benchmark_group("apply_sent");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(s.messages));
    let id = format!("{}msgs_{}convs", pow10(s.messages), pow10(s.conversations));
    // The events and the starting state (the conversations exist, empty), built once.
    let fixture: OnceCell<(Inbox, Vec<Event>)> = OnceCell::new();
    let build = || {
        (
            inbox_with_conversations(s.conversations),
            send_events(s.messages, s.conversations).collect(),
        )
    };

    group.bench_function(BenchmarkId::new("inbox_apply_event", &id), |b| {
        let (base, events) = fixture.get_or_init(build);
        b.iter_custom(|iters| {
            time_each(
                iters,
                || base.clone(), // O(1)
                |mut inbox| {
                    for e in events {
                        inbox.apply_event(black_box(e));
                    }
                    inbox
                },
            )
        });
    });

    group.bench_function(BenchmarkId::new("floor_btreemap_vec", &id), |b| {
        let (_, events) = fixture.get_or_init(build);
        let base: BTreeMap<ConversationId, Vec<Message>> = (0..s.conversations)
            .map(|i| (inbox_benches::conversation(i), Vec::new()))
            .collect();
        b.iter_custom(|iters| {
            time_each(
                iters,
                || base.clone(),
                |mut map| {
                    for e in events {
                        if let Event::MessageSent { message } = black_box(e) {
                            map.entry(message.conversation_id)
                                .or_default()
                                .push(message.clone());
                        }
                    }
                    map
                },
            )
        });
    });

    // SQLite: the same messages as rows, inserted with one prepared statement in one
    // transaction (committed inside the timing) into a fresh in-memory database.
    let rows: OnceCell<Vec<sqlite::Row>> = OnceCell::new();
    group.bench_function(BenchmarkId::new("sqlite_insert", &id), |b| {
        let rows = rows.get_or_init(|| {
            let rows = sqlite::send_rows(s.messages, s.conversations);
            // Once, outside the timing: every row lands.
            let mut db = sqlite::open_memory().unwrap();
            sqlite::insert_all(&mut db, &rows).unwrap();
            assert_eq!(sqlite::count_all(&db).unwrap(), s.messages);
            rows
        });
        b.iter_custom(|iters| {
            time_each(
                iters,
                || sqlite::open_memory().unwrap(),
                |mut db| {
                    sqlite::insert_all(&mut db, black_box(rows)).unwrap();
                    db
                },
            )
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// 2. one page of 30 at any depth

struct PageCase {
    name: &'static str,
    order: SortOrder,
    /// Messages before the page, in `order`.
    skip: u64,
}

struct PageFixture {
    inbox: Inbox,
    messages: Vec<Message>,
    /// Per case: the engine's request and the floor's position.
    requests: Vec<(inbox_core::ListMessages, Option<Key>)>,
}

fn page(c: &mut Criterion) {
    let s = sizes();
    let n = s.page_messages;
    let cases = [
        PageCase {
            name: "asc_start",
            order: SortOrder::Asc,
            skip: 0,
        },
        PageCase {
            name: "desc_end",
            order: SortOrder::Desc,
            skip: 0,
        },
        PageCase {
            name: "asc_middle",
            order: SortOrder::Asc,
            skip: n / 2,
        },
        PageCase {
            name: "desc_middle",
            order: SortOrder::Desc,
            skip: n / 2,
        },
        PageCase {
            name: "asc_deepest",
            order: SortOrder::Asc,
            skip: n - 100,
        },
        PageCase {
            name: "desc_deepest",
            order: SortOrder::Desc,
            skip: n - 100,
        },
    ];
    let conv = inbox_benches::conversation(0);
    let fixture: OnceCell<PageFixture> = OnceCell::new();
    let build = || {
        let inbox = single_conversation_inbox(n);
        let messages = single_conversation_vec(n);
        let requests = cases
            .iter()
            .map(|case| {
                let skip = usize::try_from(case.skip).unwrap();
                let cursor = cursor_after(&inbox, conv, case.order, skip);
                assert_eq!(cursor.is_some(), skip > 0);
                let after = (skip > 0).then(|| match case.order {
                    SortOrder::Asc => messages[skip - 1].order_key(),
                    SortOrder::Desc => messages[messages.len() - skip].order_key(),
                });
                let req = page_request(conv, case.order, 30, cursor);
                // The engine and the floor return the same page.
                let got: Vec<_> = inbox
                    .list_messages(&req)
                    .unwrap()
                    .messages
                    .iter()
                    .map(|m| m.id)
                    .collect();
                let (floor, _) = floor_page(&messages, after, case.order == SortOrder::Desc, 30);
                assert_eq!(got, floor.iter().map(|m| m.id).collect::<Vec<_>>());
                assert_eq!(got.len(), 30);
                (req, after)
            })
            .collect();
        PageFixture {
            inbox,
            messages,
            requests,
        }
    };

    let cases_desc: Vec<bool> = cases.iter().map(|c| c.order == SortOrder::Desc).collect();
    let db: OnceCell<Connection> = OnceCell::new();
    let mut group = c.benchmark_group("page");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let size = pow10(n);
    for (i, case) in cases.iter().enumerate() {
        let id = format!("{}_{size}msgs", case.name);
        group.bench_function(BenchmarkId::new("inbox_list_messages", &id), |b| {
            let fx = fixture.get_or_init(build);
            let req = &fx.requests[i].0;
            b.iter(|| fx.inbox.list_messages(black_box(req)).unwrap());
        });
        group.bench_function(BenchmarkId::new("floor_sorted_vec", &id), |b| {
            let fx = fixture.get_or_init(build);
            let after = fx.requests[i].1;
            let desc = case.order == SortOrder::Desc;
            b.iter(|| floor_page(&fx.messages, black_box(after), desc, 30));
        });
        group.bench_function(BenchmarkId::new("sqlite_select", &id), |b| {
            let fx = fixture.get_or_init(build);
            let db = db.get_or_init(|| sqlite_page_db(n, fx, &cases_desc));
            let after = sql_key(fx.requests[i].1);
            let desc = case.order == SortOrder::Desc;
            b.iter(|| sqlite::page(db, conv, black_box(after), desc, 30).unwrap());
        });
    }
    group.finish();
}

/// The floor's position as SQLite's `(sequence, id)` cursor.
fn sql_key(after: Option<Key>) -> Option<(i64, i64)> {
    after.map(|(s, id)| (s.0, i64::try_from(id.0).unwrap()))
}

/// The page fixture's conversation in SQLite, checked (once, outside the timing) to give the
/// same page as the floor for every case (`cases_desc`: whether each case is descending).
fn sqlite_page_db(n: u64, fx: &PageFixture, cases_desc: &[bool]) -> Connection {
    let db = sqlite::single_conversation_db(n).unwrap();
    let conv = inbox_benches::conversation(0);
    assert_eq!(sqlite::count(&db, conv).unwrap(), n);
    for ((_, after), &desc) in fx.requests.iter().zip(cases_desc) {
        let got: Vec<u64> = sqlite::page(&db, conv, sql_key(*after), desc, 30)
            .unwrap()
            .iter()
            .map(|r| u64::try_from(r.id).unwrap())
            .collect();
        let (floor, _) = floor_page(&fx.messages, *after, desc, 30);
        assert_eq!(got, floor.iter().map(|m| m.id.0).collect::<Vec<_>>());
        assert_eq!(got.len(), 30);
    }
    db
}

/// One page of 30, descending, after the newest half of conversations of growing size: the
/// engine, the floor and SQLite, at each size.
fn page_by_size(c: &mut Criterion) {
    let s = sizes();
    let conv = inbox_benches::conversation(0);
    let mut group = c.benchmark_group("page_by_size");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for &n in s.page_sizes {
        let size = pow10(n);
        let skip = usize::try_from(n / 2).unwrap();
        let fixture: OnceCell<PageFixture> = OnceCell::new();
        let build = || {
            let inbox = single_conversation_inbox(n);
            let messages = single_conversation_vec(n);
            let cursor = cursor_after(&inbox, conv, SortOrder::Desc, skip);
            let after = Some(messages[messages.len() - skip].order_key());
            let req = page_request(conv, SortOrder::Desc, 30, cursor);
            let got: Vec<_> = inbox
                .list_messages(&req)
                .unwrap()
                .messages
                .iter()
                .map(|m| m.id)
                .collect();
            let (floor, _) = floor_page(&messages, after, true, 30);
            assert_eq!(got, floor.iter().map(|m| m.id).collect::<Vec<_>>());
            assert_eq!(got.len(), 30);
            PageFixture {
                inbox,
                messages,
                requests: vec![(req, after)],
            }
        };
        let db: OnceCell<Connection> = OnceCell::new();
        group.bench_function(BenchmarkId::new("inbox_list_messages", &size), |b| {
            let fx = fixture.get_or_init(build);
            let req = &fx.requests[0].0;
            b.iter(|| fx.inbox.list_messages(black_box(req)).unwrap());
        });
        group.bench_function(BenchmarkId::new("floor_sorted_vec", &size), |b| {
            let fx = fixture.get_or_init(build);
            let after = fx.requests[0].1;
            b.iter(|| floor_page(&fx.messages, black_box(after), true, 30));
        });
        group.bench_function(BenchmarkId::new("sqlite_select", &size), |b| {
            let fx = fixture.get_or_init(build);
            let db = db.get_or_init(|| sqlite_page_db(n, fx, &[true]));
            let after = sql_key(fx.requests[0].1);
            b.iter(|| sqlite::page(db, conv, black_box(after), true, 30).unwrap());
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// 3. merging two conversations

struct KeyFixture {
    source: Vec<Key>,
    target: Vec<Key>,
    source_map: OrdMap<Key, ()>,
    target_map: OrdMap<Key, ()>,
}

impl KeyFixture {
    fn new(n: u64, layout: Layout) -> Self {
        let (source, target) = layout.keys(n);
        KeyFixture {
            source_map: source.iter().map(|k| (*k, ())).collect(),
            target_map: target.iter().map(|k| (*k, ())).collect(),
            source,
            target,
        }
    }
}

fn key_cmp(a: &Key, b: &Key) -> std::cmp::Ordering {
    a.cmp(b)
}

fn merge_group(c: &mut Criterion, layout: Layout) {
    let s = sizes();
    let name = match layout {
        Layout::Interleaved => "merge_interleaved",
        Layout::Precedes => "merge_precedes",
    };
    let mut group = c.benchmark_group(name);
    // The file databases of `sqlite_update_wal_file`.
    let dir = bench_dir();
    for &n in s.merge {
        // Large inputs are built one per iteration; small ones in batches.
        let batch = if n <= 10_000 {
            BatchSize::SmallInput
        } else {
            BatchSize::PerIteration
        };
        if n >= 100_000 {
            group
                .sample_size(10)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(4));
        } else {
            group
                .sample_size(30)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(2));
        }
        let size = pow10(n);
        let keys: OnceCell<KeyFixture> = OnceCell::new();
        let inbox: OnceCell<MergeFixture> = OnceCell::new();
        let build_keys = || KeyFixture::new(n, layout);
        let build_inbox = || {
            let fx = MergeFixture::new(n, layout);
            // Check once, outside the timing, that the merge does what it should.
            let mut merged = fx.inbox.clone();
            merged.apply_event(&fx.merge);
            assert_eq!(
                merged.messages_of(fx.target).count(),
                usize::try_from(2 * n).unwrap()
            );
            fx
        };

        group.bench_function(BenchmarkId::new("floor_vec_keys", &size), |b| {
            let fx = keys.get_or_init(build_keys);
            b.iter_batched(
                || (fx.target.clone(), fx.source.clone()),
                |(kept, moved)| merge_vecs(kept, moved, key_cmp),
                batch,
            );
        });
        if layout == Layout::Interleaved {
            group.bench_function(BenchmarkId::new("naive_ordmap_union", &size), |b| {
                let fx = keys.get_or_init(build_keys);
                b.iter_batched(
                    || (fx.target_map.clone(), fx.source_map.clone()), // O(1)
                    |(kept, moved)| kept.union(moved),
                    batch,
                );
            });
        }
        group.bench_function(BenchmarkId::new("inbox_apply_merged", &size), |b| {
            let fx = inbox.get_or_init(build_inbox);
            b.iter_batched(
                || fx.inbox.clone(), // O(1)
                |mut state| {
                    state.apply_event(black_box(&fx.merge));
                    state
                },
                batch,
            );
        });
        // The revert of that merge, beside it: the survivor's timeline split back in two.
        let merged: OnceCell<Inbox> = OnceCell::new();
        let build_merged = || {
            let fx = inbox.get_or_init(build_inbox);
            let mut state = fx.inbox.clone();
            state.apply_event(&fx.merge);
            // Once, outside the timing: the revert gives each side its messages back.
            let mut reverted = state.clone();
            reverted.apply_event(&fx.revert);
            assert_eq!(
                reverted.messages_of(fx.target).count(),
                usize::try_from(n).unwrap()
            );
            state
        };
        group.bench_function(BenchmarkId::new("inbox_apply_reverted", &size), |b| {
            let fx = inbox.get_or_init(build_inbox);
            let state = merged.get_or_init(build_merged);
            b.iter_batched(
                || state.clone(), // O(1)
                |mut state| {
                    state.apply_event(black_box(&fx.revert));
                    state
                },
                batch,
            );
        });
        if n <= 100_000 {
            // The same merge when no snapshot shares the conversations (the usual case in a
            // live engine): entries are moved, not cloned. Each iteration needs a freshly
            // built state, so this variant times the merge alone with `iter_custom`, with few
            // iterations (building costs far more than merging).
            group
                .sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .warm_up_time(Duration::from_millis(50))
                .measurement_time(Duration::from_millis(100));
            // Times the merge (or, with `revert`, its revert after the merge, untimed)
            // folded into a freshly built state that nothing shares.
            let unshared = |b: &mut criterion::Bencher<'_>, revert: bool| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let fx = MergeFixture::new(n, layout);
                        let mut state = fx.inbox;
                        let timed = if revert {
                            state.apply_event(&fx.merge);
                            &fx.revert
                        } else {
                            &fx.merge
                        };
                        let start = Instant::now();
                        state.apply_event(black_box(timed));
                        total += start.elapsed();
                        drop(state);
                    }
                    total
                });
            };
            group.bench_function(
                BenchmarkId::new("inbox_apply_merged_unshared", &size),
                |b| unshared(b, false),
            );
            // And its revert, unshared (the merge is applied first, untimed).
            group.bench_function(
                BenchmarkId::new("inbox_apply_reverted_unshared", &size),
                |b| unshared(b, true),
            );
            group
                .sampling_mode(SamplingMode::Auto)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(2));
        }
        group.bench_function(BenchmarkId::new("floor_vec_entries", &size), |b| {
            let fx = inbox.get_or_init(build_inbox);
            b.iter_batched(
                || (fx.target_entries.clone(), fx.source_entries.clone()),
                |(kept, moved)| merge_vecs(kept, moved, entry_cmp),
                batch,
            );
        });

        // SQLite: `UPDATE messages SET conversation = target WHERE conversation = source`
        // (autocommit) on a fresh in-memory copy of the two conversations per iteration (the
        // copy, by SQLite's backup API, is untimed; dropping the database too). Large sizes
        // take one iteration per sample (flat sampling, 10 samples).
        let sql: OnceCell<Connection> = OnceCell::new();
        group
            .sampling_mode(if n >= 100_000 {
                SamplingMode::Flat
            } else {
                SamplingMode::Auto
            })
            .warm_up_time(Duration::from_secs(1));
        group.bench_function(BenchmarkId::new("sqlite_update", &size), |b| {
            let (source, target) = sqlite::merge_conversations();
            let template = sql.get_or_init(|| {
                let db = sqlite::merge_db(n, layout).unwrap();
                // Once, outside the timing: the merge moves every message of the source.
                let copy = sqlite::copy_of(&db).unwrap();
                assert_eq!(sqlite::count(&copy, source).unwrap(), n);
                let moved = sqlite::merge(&copy, source, target).unwrap();
                assert_eq!(moved, usize::try_from(n).unwrap());
                assert_eq!(sqlite::count(&copy, target).unwrap(), 2 * n);
                assert_eq!(sqlite::count(&copy, source).unwrap(), 0);
                db
            });
            b.iter_batched(
                || sqlite::copy_of(template).unwrap(),
                |db| {
                    let moved = sqlite::merge(&db, black_box(source), target).unwrap();
                    (db, moved)
                },
                BatchSize::PerIteration,
            );
        });

        // SQLite on disk: the same `UPDATE` on a file database in WAL mode with
        // `synchronous=FULL` (the commit appends the changed pages to the WAL and fsyncs it),
        // up to 10^5 per side. Per iteration, untimed: a copy of the template file, opening
        // it, and closing it after (which checkpoints the WAL) and removing it.
        if n <= 100_000 {
            let file: OnceCell<PathBuf> = OnceCell::new();
            group.bench_function(BenchmarkId::new("sqlite_update_wal_file", &size), |b| {
                let (source, target) = sqlite::merge_conversations();
                let work = dir.path().join("merge-work.db");
                let template = file.get_or_init(|| {
                    let path = dir.path().join(format!("merge-{n}.db"));
                    sqlite::merge_db_file(n, layout, &path).unwrap();
                    // Once, outside the timing: the merge moves every message of the source.
                    std::fs::copy(&path, &work).unwrap();
                    let db = sqlite::open_file(&work).unwrap();
                    assert_eq!(sqlite::count(&db, source).unwrap(), n);
                    let moved = sqlite::merge(&db, source, target).unwrap();
                    assert_eq!(moved, usize::try_from(n).unwrap());
                    assert_eq!(sqlite::count(&db, target).unwrap(), 2 * n);
                    assert_eq!(sqlite::count(&db, source).unwrap(), 0);
                    drop(db);
                    remove_db(&work);
                    path
                });
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        std::fs::copy(template, &work).unwrap();
                        let db = sqlite::open_file(&work).unwrap();
                        let start = Instant::now();
                        let moved = sqlite::merge(&db, black_box(source), target).unwrap();
                        total += start.elapsed();
                        assert_eq!(moved, usize::try_from(n).unwrap());
                        drop(db);
                        remove_db(&work);
                    }
                    total
                });
            });
        }
        group.sampling_mode(SamplingMode::Auto);
    }
    group.finish();
}

/// Removes a SQLite database file and its WAL and shared-memory files.
fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

fn merge_interleaved(c: &mut Criterion) {
    merge_group(c, Layout::Interleaved);
}

fn merge_precedes(c: &mut Criterion) {
    merge_group(c, Layout::Precedes);
}

criterion_group!(
    benches,
    apply_sent,
    page,
    page_by_size,
    merge_interleaved,
    merge_precedes
);
criterion_main!(benches);
