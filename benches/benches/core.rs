//! The timing benchmarks of `inbox-core`, each against a plain `Vec`/`BTreeMap` floor
//! measured in the same run (numbers and targets: `docs/PERFORMANCE.md`).
//!
//! * `apply_sent`: folding `MessageSent` events, 10^6 messages over 10^4 conversations;
//! * `page`: one page of 30 at the start, middle and end of a 10^6-message conversation;
//! * `merge_interleaved` and `merge_precedes`: merging two conversations of n messages each,
//!   end to end through `Inbox::apply_event` (beside a naive `imbl::OrdMap::union`).
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
use std::time::{Duration, Instant};

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use imbl::OrdMap;
use inbox_benches::{
    Key, Layout, MergeFixture, cursor_after, entry_cmp, floor_page, inbox_with_conversations,
    merge_vecs, page_request, pow10, quick_mode, send_events, single_conversation_inbox,
    single_conversation_vec,
};
use inbox_core::{ConversationId, Event, Inbox, Message, SortOrder};

struct Sizes {
    /// Messages sent in `apply_sent`.
    messages: u64,
    /// Conversations they go to.
    conversations: u64,
    /// Messages of the conversation `page` reads.
    page_messages: u64,
    /// Messages of each side of a merge.
    merge: &'static [u64],
}

fn sizes() -> Sizes {
    if quick_mode() {
        Sizes {
            messages: 10_000,
            conversations: 100,
            page_messages: 10_000,
            merge: &[1_000, 10_000],
        }
    } else {
        Sizes {
            messages: 1_000_000,
            conversations: 10_000,
            page_messages: 1_000_000,
            merge: &[1_000, 10_000, 100_000, 1_000_000],
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
            group.bench_function(
                BenchmarkId::new("inbox_apply_merged_unshared", &size),
                |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let fx = MergeFixture::new(n, layout);
                            let mut state = fx.inbox;
                            let start = Instant::now();
                            state.apply_event(black_box(&fx.merge));
                            total += start.elapsed();
                            drop(state);
                        }
                        total
                    });
                },
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
    }
    group.finish();
}

fn merge_interleaved(c: &mut Criterion) {
    merge_group(c, Layout::Interleaved);
}

fn merge_precedes(c: &mut Criterion) {
    merge_group(c, Layout::Precedes);
}

criterion_group!(benches, apply_sent, page, merge_interleaved, merge_precedes);
criterion_main!(benches);
