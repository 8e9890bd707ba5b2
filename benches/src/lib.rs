//! Fixtures shared by the benchmarks of inbox-engine (`benches/benches/*.rs`).
//!
//! Everything here is deterministic: ids are counters, sequences follow the engine's hybrid
//! logical clock (microseconds, strictly increasing per site), and "random" choices come from
//! a fixed-seed mixer, so two runs measure the same work.
//!
//! Sizes shrink in quick mode ([`quick_mode`]): `INBOX_BENCH_QUICK=1`, for a smoke run.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::sync::Arc;

use inbox_core::message::{ChannelSet, Content};
use inbox_core::{
    AppId, ContactId, ConversationId, Direction, Event, Inbox, InboxConfig, ListMessages, Message,
    MessageId, ParticipantId, Sender, Sequence, SiteId, SortOrder, Timestamp, Visibility,
    VisibilityFilter, VisitorId,
};
use uuid::Uuid;

pub mod sqlite;

/// The first sequence the fixtures issue: 2023-11-14 in microseconds since the epoch, as the
/// engine's clock would issue it.
pub const BASE_SEQUENCE: i64 = 1_700_000_000_000_000;

/// The length of every message text the fixtures send.
pub const TEXT_CHARS: usize = 40;

/// The order key of a message (what a conversation is sorted by).
pub type Key = (Sequence, MessageId);

/// Whether to run with small sizes: `INBOX_BENCH_QUICK=1` in the environment.
pub fn quick_mode() -> bool {
    std::env::var("INBOX_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// A fresh temporary directory for files (logs, databases) on the same disk as the
/// workspace: under its `target/store-bench` (a real disk, not a tmpfs), or under
/// `INBOX_BENCH_DIR` when set. Removed when dropped.
pub fn bench_dir() -> tempfile::TempDir {
    let parent = std::env::var_os("INBOX_BENCH_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/store-bench"),
        std::path::PathBuf::from,
    );
    let made = std::fs::create_dir_all(&parent).and_then(|()| tempfile::tempdir_in(&parent));
    match made {
        Ok(dir) => dir,
        Err(e) => panic!(
            "cannot make a temporary directory under {}: {e}",
            parent.display()
        ),
    }
}

/// `10^6` rather than `1000000` in bench ids.
pub fn pow10(n: u64) -> String {
    let digits = n.checked_ilog10().unwrap_or(0);
    if 10u64.pow(digits) == n {
        format!("10^{digits}")
    } else {
        n.to_string()
    }
}

/// Whether criterion was asked for a test run (`cargo bench -- --test`): each bench once.
pub fn criterion_test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// A 40-character text, different for each `i` below 10^10, allocated at its exact length.
pub fn text40(i: u64) -> String {
    const SUFFIX: &str = " hello, is this still for sale";
    let mut s = String::with_capacity(TEXT_CHARS);
    let _ = write!(s, "{:010}{SUFFIX}", i % 10_000_000_000);
    debug_assert_eq!(s.len(), TEXT_CHARS);
    s
}

/// Conversation number `i`.
pub fn conversation(i: u64) -> ConversationId {
    ConversationId(Uuid::from_u128((0xC0_u128 << 64) | u128::from(i)))
}

/// Visitor number `i`.
pub fn visitor(i: u64) -> VisitorId {
    VisitorId(Uuid::from_u128((0x71_u128 << 64) | u128::from(i)))
}

/// Contact number `i`.
pub fn contact(i: u64) -> ContactId {
    ContactId(Uuid::from_u128((0xCC_u128 << 64) | u128::from(i)))
}

/// The app that sends the fixtures' business messages.
pub fn app() -> AppId {
    AppId(Uuid::from_u128(0xA0_u128 << 64))
}

/// An empty inbox with a fixed site and cursor key.
pub fn new_inbox() -> Inbox {
    Inbox::new(InboxConfig::new(SiteId::new("bench-site"), [42; 16]))
}

/// A basic text message with a 40-character text, the id and date the engine would give it
/// for this sequence.
pub fn text_message(seq: i64, conversation_id: ConversationId, i: u64) -> Message {
    Message {
        id: MessageId(u64::try_from(seq).unwrap_or_default()),
        sequence: Sequence(seq),
        created_date: Timestamp::from_micros(seq),
        conversation_id,
        content: Content::text(text40(i)),
        sender: Sender::App(app()),
        badges: Box::new([]),
        target_channels: ChannelSet::EMPTY,
        source_channel: None,
        app_id: Some(app()),
        visibility: Visibility::BusinessAndParticipant,
        direction: Direction::BusinessToParticipant,
        silent: false,
    }
}

/// The event that starts conversation `i` for visitor `i`.
pub fn start_event(i: u64) -> Event {
    Event::ConversationStarted {
        conversation_id: conversation(i),
        participant: ParticipantId::Visitor(visitor(i)),
    }
}

/// An inbox with `conversations` empty conversations.
pub fn inbox_with_conversations(conversations: u64) -> Inbox {
    let mut inbox = new_inbox();
    for i in 0..conversations {
        inbox.apply_event(&start_event(i));
    }
    inbox
}

/// SplitMix64: a fixed, well-mixed sequence of pseudo-random numbers.
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `messages` `MessageSent` events, each to a pseudo-random one of `conversations`
/// conversations, in the order the site's clock issued them.
pub fn send_events(messages: u64, conversations: u64) -> impl Iterator<Item = Event> {
    let conversations = conversations.max(1);
    (0..messages).map(move |i| Event::MessageSent {
        message: text_message(
            BASE_SEQUENCE + i64::try_from(i).unwrap_or(i64::MAX - BASE_SEQUENCE),
            conversation(mix(i) % conversations),
            i,
        ),
    })
}

/// An inbox with one conversation (number 0) of `messages` messages.
pub fn single_conversation_inbox(messages: u64) -> Inbox {
    let mut inbox = inbox_with_conversations(1);
    for e in send_events(messages, 1) {
        inbox.apply_event(&e);
    }
    inbox
}

/// The messages of [`single_conversation_inbox`], as a plain sorted `Vec`.
pub fn single_conversation_vec(messages: u64) -> Vec<Message> {
    send_events(messages, 1)
        .filter_map(|e| match e {
            Event::MessageSent { message } => Some(message),
            _ => None,
        })
        .collect()
}

/// A request for one page of `limit` messages.
pub fn page_request(
    conversation_id: ConversationId,
    order: SortOrder,
    limit: usize,
    cursor: Option<String>,
) -> ListMessages {
    ListMessages {
        conversation_id,
        visibility: VisibilityFilter::All,
        order,
        limit: Some(limit),
        cursor,
    }
}

/// The cursor that follows the first `skip` messages of a conversation in `order`, got by
/// paging through it 100 at a time (a cursor is opaque and signed; it cannot be crafted).
/// `None` when `skip` is 0 or the conversation ends first.
pub fn cursor_after(
    inbox: &Inbox,
    conversation_id: ConversationId,
    order: SortOrder,
    skip: usize,
) -> Option<String> {
    let mut cursor = None;
    let mut skipped = 0;
    while skipped < skip {
        let limit = (skip - skipped).min(100);
        let page = inbox
            .list_messages(&page_request(conversation_id, order, limit, cursor))
            .ok()?;
        skipped += page.messages.len();
        cursor = Some(page.next_cursor?);
    }
    cursor
}

/// The plain model of List Messages: one page of a sorted `Vec` after a binary search for
/// the last key of the previous page. Returns the page and the key to continue after.
pub fn floor_page(
    messages: &[Message],
    after: Option<Key>,
    descending: bool,
    limit: usize,
) -> (Vec<&Message>, Option<Key>) {
    let mut page = Vec::with_capacity(limit);
    let mut more = false;
    if descending {
        let end = after.map_or(messages.len(), |k| {
            messages.partition_point(|m| m.order_key() < k)
        });
        for m in messages.get(..end).unwrap_or_default().iter().rev() {
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(m);
        }
    } else {
        let start = after.map_or(0, |k| messages.partition_point(|m| m.order_key() <= k));
        for m in messages.get(start..).unwrap_or_default() {
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(m);
        }
    }
    let next = if more {
        page.last().map(|m| m.order_key())
    } else {
        None
    };
    (page, next)
}

/// How the messages of the two conversations of a merge lie in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Finely interleaved: the source has every even sequence, the target every odd one.
    Interleaved,
    /// The source's messages all come before the target's (a visitor who became a contact).
    Precedes,
}

impl Layout {
    /// The sequences of the source and of the target conversation, `n` each.
    pub fn sequences(self, n: u64) -> (Vec<i64>, Vec<i64>) {
        let n = i64::try_from(n).unwrap_or(i64::MAX / 4);
        match self {
            Layout::Interleaved => (
                (0..n).map(|i| BASE_SEQUENCE + 2 * i).collect(),
                (0..n).map(|i| BASE_SEQUENCE + 2 * i + 1).collect(),
            ),
            Layout::Precedes => (
                (0..n).map(|i| BASE_SEQUENCE + i).collect(),
                (0..n).map(|i| BASE_SEQUENCE + n + i).collect(),
            ),
        }
    }

    /// The order keys of the source and target conversations.
    pub fn keys(self, n: u64) -> (Vec<Key>, Vec<Key>) {
        let (s, t) = self.sequences(n);
        let key = |q: &i64| {
            (
                Sequence(*q),
                MessageId(u64::try_from(*q).unwrap_or_default()),
            )
        };
        (s.iter().map(key).collect(), t.iter().map(key).collect())
    }
}

/// Two conversations of `n` messages each, ready to merge: a visitor's (the source) and a
/// contact's (the target), in an [`Inbox`] and as plain `Vec`s of the same entries.
pub struct MergeFixture {
    /// The inbox holding both conversations.
    pub inbox: Inbox,
    /// The event that merges the source into the target.
    pub merge: Event,
    /// The event that reverts that merge (stamped after it).
    pub revert: Event,
    /// The target conversation.
    pub target: ConversationId,
    /// The source's messages, sorted, as the plain model holds them.
    pub source_entries: Vec<(Sequence, Arc<Message>)>,
    /// The target's messages, sorted.
    pub target_entries: Vec<(Sequence, Arc<Message>)>,
}

impl MergeFixture {
    /// Builds the two conversations (by applying events, in clock order).
    pub fn new(n: u64, layout: Layout) -> Self {
        let source = conversation(1);
        let target = conversation(2);
        let mut inbox = new_inbox();
        inbox.apply_event(&Event::ConversationStarted {
            conversation_id: source,
            participant: ParticipantId::Visitor(visitor(1)),
        });
        inbox.apply_event(&Event::ConversationStarted {
            conversation_id: target,
            participant: ParticipantId::Contact(contact(1)),
        });
        let (s, t) = layout.sequences(n);
        let mut all: Vec<(i64, ConversationId)> = s
            .iter()
            .map(|q| (*q, source))
            .chain(t.iter().map(|q| (*q, target)))
            .collect();
        all.sort_unstable();
        let mut source_entries = Vec::with_capacity(s.len());
        let mut target_entries = Vec::with_capacity(t.len());
        let mut last = Sequence::ZERO;
        for (i, (seq, conv)) in all.into_iter().enumerate() {
            let message = text_message(seq, conv, u64::try_from(i).unwrap_or_default());
            let entry = (message.sequence, Arc::new(message.clone()));
            if conv == source {
                source_entries.push(entry);
            } else {
                target_entries.push(entry);
            }
            last = last.max(message.sequence);
            inbox.apply_event(&Event::MessageSent { message });
        }
        let merge = Event::ConversationsMerged {
            sources: vec![source],
            target,
            stamp: Sequence(last.0 + 1),
        };
        let revert = Event::ConversationMergeReverted {
            source,
            target,
            merged_at: Sequence(last.0 + 1),
            stamp: Sequence(last.0 + 2),
        };
        MergeFixture {
            inbox,
            merge,
            revert,
            target,
            source_entries,
            target_entries,
        }
    }
}

/// Compares two entries of a conversation by order key.
pub fn entry_cmp(a: &(Sequence, Arc<Message>), b: &(Sequence, Arc<Message>)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id))
}

/// The plain merge of two sorted `Vec`s into a new one (stable: `a` first on ties).
pub fn merge_vecs<T>(a: Vec<T>, b: Vec<T>, cmp: impl Fn(&T, &T) -> Ordering) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter();
    let mut b = b.into_iter();
    let mut x = a.next();
    let mut y = b.next();
    loop {
        match (x.take(), y.take()) {
            (Some(p), Some(q)) => {
                if cmp(&p, &q) == Ordering::Greater {
                    out.push(q);
                    x = Some(p);
                    y = b.next();
                } else {
                    out.push(p);
                    x = a.next();
                    y = Some(q);
                }
            }
            (Some(p), None) => {
                out.push(p);
                out.extend(a);
                return out;
            }
            (None, Some(q)) => {
                out.push(q);
                out.extend(b);
                return out;
            }
            (None, None) => return out,
        }
    }
}

/// Runs one thread per item of `inputs`. Each first calls `prepare(index, input)` (untimed:
/// building its events, opening its connection) and then, once every thread is prepared,
/// the work that returned; answers the time from that common start until the last thread
/// finished. The way the append benches measure concurrent appenders.
pub fn time_threads<T, W>(
    inputs: impl IntoIterator<Item = T>,
    prepare: impl Fn(usize, T) -> W + Sync,
) -> std::time::Duration
where
    T: Send,
    W: FnOnce() + Send,
{
    let inputs: Vec<T> = inputs.into_iter().collect();
    let barrier = std::sync::Barrier::new(inputs.len() + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .into_iter()
            .enumerate()
            .map(|(t, input)| {
                let (barrier, prepare) = (&barrier, &prepare);
                scope.spawn(move || {
                    let work = prepare(t, input);
                    barrier.wait();
                    work();
                })
            })
            .collect();
        barrier.wait();
        let start = std::time::Instant::now();
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        start.elapsed()
    })
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_forty_characters() {
        for i in [0, 7, 123_456, 9_999_999_999, u64::MAX] {
            let t = text40(i);
            assert_eq!(t.len(), TEXT_CHARS);
            assert_eq!(t.capacity(), TEXT_CHARS);
        }
    }

    #[test]
    fn floor_merge_is_stable_and_sorted() {
        let merged = merge_vecs(
            vec![(1, 'a'), (3, 'a')],
            vec![(1, 'b'), (2, 'b')],
            |x, y| x.0.cmp(&y.0),
        );
        assert_eq!(merged, vec![(1, 'a'), (1, 'b'), (2, 'b'), (3, 'a')]);
    }

    #[test]
    fn floor_page_agrees_with_the_engine() {
        let n = 1_000;
        let inbox = single_conversation_inbox(n);
        let v = single_conversation_vec(n);
        let conv = conversation(0);
        for (order, desc) in [(SortOrder::Asc, false), (SortOrder::Desc, true)] {
            for skip in [0usize, 100, 500, 900] {
                let cursor = cursor_after(&inbox, conv, order, skip);
                let page = inbox
                    .list_messages(&page_request(conv, order, 30, cursor))
                    .expect("page");
                let after = (skip > 0).then(|| {
                    let i = if desc { v.len() - skip } else { skip - 1 };
                    v.get(i).expect("in range").order_key()
                });
                let (floor, _) = floor_page(&v, after, desc, 30);
                let ids: Vec<_> = page.messages.iter().map(|m| m.id).collect();
                let floor_ids: Vec<_> = floor.iter().map(|m| m.id).collect();
                assert_eq!(ids, floor_ids, "order {order:?} skip {skip}");
            }
        }
    }

    #[test]
    fn merge_fixture_merges_to_the_sorted_union() {
        for layout in [Layout::Interleaved, Layout::Precedes] {
            let fx = MergeFixture::new(300, layout);
            let mut inbox = fx.inbox.clone();
            inbox.apply_event(&fx.merge);
            let got: Vec<_> = inbox
                .messages_of(fx.target)
                .map(|m| m.order_key())
                .collect();
            let floor = merge_vecs(fx.source_entries, fx.target_entries, entry_cmp);
            let want: Vec<_> = floor.iter().map(|(_, m)| m.order_key()).collect();
            assert_eq!(got, want);
            assert_eq!(got.len(), 600);
        }
    }
}
