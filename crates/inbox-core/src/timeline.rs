//! A conversation's messages: a persistent sequence sorted by `(sequence, message id)`.
//!
//! The layout is two levels: an [`imbl::Vector`] (an RRB tree) of `Arc`-shared *chunks*, each a
//! plain sorted `Vec` of up to about [`CHUNK`] entries. Why not one `imbl::Vector` of entries:
//!
//! * a merge of two finely interleaved conversations has to build a new sequence element by
//!   element, and pushing into an RRB tree costs ~20 ns an element, several times a flat
//!   `Vec` merge; here the merge writes plain `Vec` chunks (moving the entries, not cloning
//!   them, when nobody else shares the chunk) and the tree only sees one push per chunk;
//! * when one conversation wholly precedes the other (a visitor becoming a contact), the merge
//!   is one O(log n) append of the two chunk trees;
//! * a page is a binary search over chunks, one inside a chunk, and a walk along contiguous
//!   memory;
//! * a snapshot (`clone`) is still O(1), and a write after it copies one chunk, not the
//!   conversation.

use std::cmp::Ordering;
use std::sync::Arc;

use imbl::Vector;

use crate::ids::{MessageId, Sequence};
use crate::message::Message;

/// Target number of entries in a chunk. A chunk that grows past twice this is split.
pub(crate) const CHUNK: usize = 64;

/// One message in a timeline: the sequence inline (so ordering touches no pointer) and the
/// shared message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub seq: Sequence,
    pub msg: Arc<Message>,
}

impl Entry {
    pub fn new(msg: Message) -> Self {
        Entry {
            seq: msg.sequence,
            msg: Arc::new(msg),
        }
    }

    pub fn key(&self) -> (Sequence, MessageId) {
        (self.seq, self.msg.id)
    }

    pub fn cmp(a: &Entry, b: &Entry) -> Ordering {
        a.seq.cmp(&b.seq).then_with(|| a.msg.id.cmp(&b.msg.id))
    }
}

type Chunk = Arc<Vec<Entry>>;

/// A position: chunk index and offset inside the chunk. `(chunks.len(), 0)` is the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    chunk: usize,
    offset: usize,
}

/// The sorted messages of one conversation.
///
/// Equality sees the entries only, never the chunk layout, which depends on the order entries
/// arrived in: two timelines with the same messages are equal.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timeline {
    chunks: Vector<Chunk>,
    len: usize,
}

impl PartialEq for Timeline {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Timeline {}

impl Timeline {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn first(&self) -> Option<&Entry> {
        self.chunks.front().and_then(|c| c.first())
    }

    pub fn last(&self) -> Option<&Entry> {
        self.chunks.back().and_then(|c| c.last())
    }

    /// Builds a timeline from entries already sorted by [`Entry::cmp`].
    pub fn from_sorted(entries: Vec<Entry>) -> Self {
        let mut b = Builder::default();
        for e in entries {
            b.push(e);
        }
        b.finish()
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Every entry, by value (moved out of chunks nobody else shares).
    pub fn into_entries(self) -> impl Iterator<Item = Entry> {
        self.chunks.into_iter().flat_map(Arc::unwrap_or_clone)
    }

    /// The first position whose entry does not satisfy `before` (which must hold on a prefix
    /// of the timeline and fail after it).
    pub fn partition_point(&self, before: impl Fn(&Entry) -> bool) -> Pos {
        let chunk = match self.chunks.binary_search_by(|c| match c.last() {
            Some(last) if before(last) => Ordering::Less,
            _ => Ordering::Greater,
        }) {
            Ok(i) | Err(i) => i,
        };
        let offset = self
            .chunks
            .get(chunk)
            .map_or(0, |c| c.partition_point(|e| before(e)));
        Pos { chunk, offset }
    }

    /// Entries from `pos` to the end, in order.
    pub fn iter_from(&self, pos: Pos) -> impl Iterator<Item = &Entry> + '_ {
        self.chunks
            .focus()
            .narrow(pos.chunk.min(self.chunks.len())..)
            .into_iter()
            .enumerate()
            .flat_map(move |(i, c)| {
                let skip = if i == 0 { pos.offset } else { 0 };
                c.get(skip..).unwrap_or_default().iter()
            })
    }

    /// Entries before `pos`, newest first.
    pub fn iter_before_rev(&self, pos: Pos) -> impl Iterator<Item = &Entry> + '_ {
        let end = (pos.chunk + 1).min(self.chunks.len());
        let last = pos.chunk;
        self.chunks
            .focus()
            .narrow(..end)
            .into_iter()
            .enumerate()
            .rev()
            .flat_map(move |(i, c)| {
                let upto = if i == last { pos.offset } else { c.len() };
                c.get(..upto).unwrap_or_default().iter().rev()
            })
    }

    /// The entry with this key.
    pub fn find(&self, key: (Sequence, MessageId)) -> Option<&Entry> {
        let pos = self.partition_point(|e| e.key() < key);
        self.chunks
            .get(pos.chunk)
            .and_then(|c| c.get(pos.offset))
            .filter(|e| e.key() == key)
    }

    /// Inserts in order. Returns false (and changes nothing) when the key is already there.
    pub fn insert(&mut self, entry: Entry) -> bool {
        match self.last() {
            None => {
                self.chunks.push_back(Arc::new(Self::fresh_chunk(entry)));
            }
            Some(last) if Entry::cmp(last, &entry) == Ordering::Less => {
                // The common case: a new message goes at the end.
                match self.chunks.back_mut() {
                    Some(chunk) if chunk.len() < CHUNK => Arc::make_mut(chunk).push(entry),
                    _ => self.chunks.push_back(Arc::new(Self::fresh_chunk(entry))),
                }
            }
            Some(_) => {
                let key = entry.key();
                let pos = self.partition_point(|e| e.key() < key);
                let Some(chunk) = self.chunks.get_mut(pos.chunk) else {
                    return false;
                };
                if chunk.get(pos.offset).is_some_and(|e| e.key() == key) {
                    return false;
                }
                let vec = Arc::make_mut(chunk);
                vec.insert(pos.offset, entry);
                if vec.len() > 2 * CHUNK {
                    let tail = vec.split_off(vec.len() / 2);
                    self.chunks.insert(pos.chunk + 1, Arc::new(tail));
                }
            }
        }
        self.len += 1;
        true
    }

    fn fresh_chunk(entry: Entry) -> Vec<Entry> {
        let mut v = Vec::with_capacity(CHUNK);
        v.push(entry);
        v
    }

    /// Removes the entry with this key.
    pub fn remove(&mut self, key: (Sequence, MessageId)) -> Option<Entry> {
        let pos = self.partition_point(|e| e.key() < key);
        let chunk = self.chunks.get_mut(pos.chunk)?;
        if chunk.get(pos.offset).is_none_or(|e| e.key() != key) {
            return None;
        }
        let vec = Arc::make_mut(chunk);
        let removed = vec.remove(pos.offset);
        if vec.is_empty() {
            self.chunks.remove(pos.chunk);
        }
        self.len -= 1;
        Some(removed)
    }

    /// Replaces the message of every entry `f` maps to a new one (keys must not change).
    /// Only the chunks that change are copied.
    pub fn update_where(&mut self, f: impl Fn(&Message) -> Option<Message>) -> Vec<MessageId> {
        let mut changed = Vec::new();
        for chunk in self.chunks.iter_mut() {
            if !chunk.iter().any(|e| f(&e.msg).is_some()) {
                continue;
            }
            for e in Arc::make_mut(chunk).iter_mut() {
                if let Some(new) = f(&e.msg) {
                    changed.push(new.id);
                    e.msg = Arc::new(new);
                }
            }
        }
        changed
    }

    /// Merges two timelines into one (see the module doc). Ties keep `a`'s entry first; keys
    /// are unique in practice, so ties do not arise.
    pub fn merge(a: Timeline, b: Timeline) -> Timeline {
        let (Some(a_first), Some(a_last), Some(b_first), Some(b_last)) =
            (a.first(), a.last(), b.first(), b.last())
        else {
            return if a.is_empty() { b } else { a };
        };
        if Entry::cmp(a_last, b_first) == Ordering::Less {
            return Self::concat(a, b);
        }
        if Entry::cmp(b_last, a_first) == Ordering::Less {
            return Self::concat(b, a);
        }
        let mut out = Builder::default();
        let mut ra = Reader::new(a);
        let mut rb = Reader::new(b);
        loop {
            ra.refill();
            rb.refill();
            let (Some(x), Some(y)) = (ra.head(), rb.head()) else {
                ra.drain_into(&mut out);
                rb.drain_into(&mut out);
                break;
            };
            let a_first = Entry::cmp(x, y) != Ordering::Greater;
            // Move a whole untouched chunk when all of it goes before the other head.
            let (from, other_head) = if a_first { (&ra, y) } else { (&rb, x) };
            if let Some(last) = from.whole_chunk_last()
                && Entry::cmp(last, other_head) == Ordering::Less
            {
                let chunk = if a_first {
                    ra.take_chunk()
                } else {
                    rb.take_chunk()
                };
                if let Some(c) = chunk {
                    out.push_chunk(c);
                }
                continue;
            }
            // Otherwise merge the two current chunks entry by entry until one runs out.
            ra.open();
            rb.open();
            merge_run(&mut ra.partial, &mut rb.partial, &mut out);
        }
        out.finish()
    }

    /// Splits a timeline in two, keeping the order: the entries `goes` picks, and the rest
    /// (what a revert of a merge does). A chunk that goes whole, or stays whole, is moved as
    /// it is; only chunks with entries on both sides are copied. O(entries) comparisons.
    pub fn split(self, goes: impl Fn(&Entry) -> bool) -> (Timeline, Timeline) {
        let mut stays = Builder::default();
        let mut gone = Builder::default();
        let mut flags: Vec<bool> = Vec::with_capacity(CHUNK);
        for chunk in self.chunks {
            flags.clear();
            flags.extend(chunk.iter().map(&goes));
            let going = flags.iter().filter(|g| **g).count();
            if going == 0 {
                stays.push_chunk(chunk);
            } else if going == chunk.len() {
                gone.push_chunk(chunk);
            } else {
                for (e, g) in Arc::unwrap_or_clone(chunk).into_iter().zip(&flags) {
                    if *g {
                        gone.push(e);
                    } else {
                        stays.push(e);
                    }
                }
            }
        }
        (stays.finish(), gone.finish())
    }

    fn concat(mut a: Timeline, b: Timeline) -> Timeline {
        a.len += b.len;
        a.chunks.append(b.chunks);
        a
    }
}

/// Writes entries into fresh chunks of [`CHUNK`] and whole chunks as they are. Entries
/// must come in order ([`Entry::cmp`]).
#[derive(Default)]
pub(crate) struct Builder {
    chunks: Vector<Chunk>,
    pending: Vec<Entry>,
    len: usize,
}

impl Builder {
    #[inline]
    pub fn push(&mut self, e: Entry) {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(CHUNK);
        }
        self.pending.push(e);
        self.len += 1;
        if self.pending.len() == CHUNK {
            self.flush();
        }
    }

    fn push_chunk(&mut self, c: Chunk) {
        self.flush();
        self.len += c.len();
        self.chunks.push_back(c);
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let full = std::mem::take(&mut self.pending);
            self.chunks.push_back(Arc::new(full));
        }
    }

    pub fn finish(mut self) -> Timeline {
        self.flush();
        Timeline {
            chunks: self.chunks,
            len: self.len,
        }
    }
}

/// The tight inner loop of a merge: entries of two open chunks, smaller first (ties to `a`),
/// until one of them is exhausted.
fn merge_run(
    a: &mut std::vec::IntoIter<Entry>,
    b: &mut std::vec::IntoIter<Entry>,
    out: &mut Builder,
) {
    loop {
        let take_a = match (a.as_slice().first(), b.as_slice().first()) {
            (Some(x), Some(y)) => Entry::cmp(x, y) != Ordering::Greater,
            _ => return,
        };
        if let Some(e) = if take_a { a.next() } else { b.next() } {
            out.push(e);
        }
    }
}

/// Consumes a timeline chunk by chunk: a chunk not yet touched can be handed on whole; once
/// it is opened, its entries are moved out (if nobody else shares it) or cloned.
struct Reader {
    rest: imbl::vector::ConsumingIter<Chunk, imbl::shared_ptr::DefaultSharedPtr>,
    whole: Option<Chunk>,
    partial: std::vec::IntoIter<Entry>,
}

impl Reader {
    fn new(t: Timeline) -> Self {
        let mut rest = t.chunks.into_iter();
        let whole = rest.next();
        Reader {
            rest,
            whole,
            partial: Vec::new().into_iter(),
        }
    }

    /// Makes sure the current chunk has entries, if any are left.
    fn refill(&mut self) {
        if self.whole.is_none() && self.partial.as_slice().is_empty() {
            self.whole = self.rest.next();
        }
    }

    fn head(&self) -> Option<&Entry> {
        match &self.whole {
            Some(c) => c.first(),
            None => self.partial.as_slice().first(),
        }
    }

    fn whole_chunk_last(&self) -> Option<&Entry> {
        self.whole.as_ref().and_then(|c| c.last())
    }

    fn take_chunk(&mut self) -> Option<Chunk> {
        self.whole.take()
    }

    /// Opens the current chunk for taking entries one by one.
    fn open(&mut self) {
        if let Some(c) = self.whole.take() {
            self.partial = Arc::unwrap_or_clone(c).into_iter();
        }
    }

    fn drain_into(&mut self, out: &mut Builder) {
        for e in self.partial.by_ref() {
            out.push(e);
        }
        if let Some(c) = self.whole.take() {
            out.push_chunk(c);
        }
        for c in self.rest.by_ref() {
            out.push_chunk(c);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ids::{ConversationId, Timestamp};
    use crate::message::{ChannelSet, Content, Direction, Sender, Visibility};
    use proptest::prelude::*;

    fn entry(seq: i64) -> Entry {
        Entry::new(Message {
            id: MessageId(seq as u64),
            sequence: Sequence(seq),
            created_date: Timestamp::from_micros(seq),
            conversation_id: ConversationId::from_uuid(uuid::Uuid::nil()),
            sender: Sender::Unknown,
            target_channels: ChannelSet::EMPTY,
            source_channel: None,
            app_id: None,
            visibility: Visibility::Business,
            direction: Direction::BusinessToParticipant,
            silent: false,
            content: Content::text("x"),
            badges: Box::new([]),
        })
    }

    fn keys(t: &Timeline) -> Vec<i64> {
        t.iter().map(|e| e.seq.0).collect()
    }

    /// The layout's invariant: no chunk is empty or holds more than `2 * CHUNK` entries, each
    /// chunk is sorted and below the next, and `len` counts the entries.
    fn check_layout(t: &Timeline) -> Result<(), String> {
        let mut total = 0;
        for (i, c) in t.chunks.iter().enumerate() {
            if c.is_empty() || c.len() > 2 * CHUNK {
                return Err(format!("chunk {i} holds {}", c.len()));
            }
            total += c.len();
        }
        let keys: Vec<_> = t.iter().map(Entry::key).collect();
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err("entries out of order".into());
        }
        if total != t.len {
            return Err(format!("len {} but {total} entries", t.len));
        }
        Ok(())
    }

    fn sizes(t: &Timeline) -> Vec<usize> {
        t.chunks.iter().map(|c| c.len()).collect()
    }

    fn build(seqs: &[i64]) -> Timeline {
        let mut s: Vec<i64> = seqs.to_vec();
        s.sort_unstable();
        s.dedup();
        Timeline::from_sorted(s.into_iter().map(entry).collect())
    }

    proptest! {
        // Reproducible: a fixed seed unless PROPTEST_RNG_SEED moves it (CI does, per commit).
        #![proptest_config(crate::test_config())]
        #[test]
        fn insert_keeps_order_and_refuses_duplicates(seqs in proptest::collection::vec(0i64..2000, 0..600)) {
            let mut t = Timeline::default();
            let mut model: Vec<i64> = Vec::new();
            for s in seqs {
                let fresh = !model.contains(&s);
                prop_assert_eq!(t.insert(entry(s)), fresh);
                if fresh { model.push(s); model.sort_unstable(); }
            }
            prop_assert_eq!(keys(&t), model.clone());
            prop_assert_eq!(t.len(), model.len());
            check_layout(&t).map_err(TestCaseError::fail)?;
            for s in &model {
                prop_assert!(t.find((Sequence(*s), MessageId(*s as u64))).is_some());
            }
        }

        #[test]
        fn merge_is_the_sorted_union(a in proptest::collection::vec(0i64..3000, 0..700),
                                     b in proptest::collection::vec(0i64..3000, 0..700),
                                     share in any::<bool>()) {
            let ta = build(&a);
            let tb: Timeline = build(&b.iter().copied().filter(|x| !a.contains(x)).collect::<Vec<_>>());
            let keep = share.then(|| (ta.clone(), tb.clone()));
            let mut model: Vec<i64> = keys(&ta).into_iter().chain(keys(&tb)).collect();
            model.sort_unstable();
            let merged = Timeline::merge(ta, tb);
            prop_assert_eq!(keys(&merged), model.clone());
            prop_assert_eq!(merged.len(), model.len());
            check_layout(&merged).map_err(TestCaseError::fail)?;
            if let Some((ka, kb)) = keep {
                // A snapshot taken before is untouched.
                prop_assert_eq!(keys(&ka).len() + keys(&kb).len(), model.len());
            }
        }

        #[test]
        fn split_is_a_stable_partition_that_merge_undoes(
            seqs in proptest::collection::vec(0i64..4000, 0..900),
            modulus in 1i64..5,
            block in any::<bool>(),
        ) {
            let t = build(&seqs);
            let all = keys(&t);
            // Every other entry, or whole runs (so that whole chunks go or stay).
            let goes = |x: i64| if block { (x / 700) % 2 == 0 } else { x % modulus == 0 };
            let (stays, gone) = t.clone().split(|e| goes(e.seq.0));
            check_layout(&stays).map_err(TestCaseError::fail)?;
            check_layout(&gone).map_err(TestCaseError::fail)?;
            prop_assert_eq!(keys(&gone), all.iter().copied().filter(|x| goes(*x)).collect::<Vec<_>>());
            prop_assert_eq!(keys(&stays), all.iter().copied().filter(|x| !goes(*x)).collect::<Vec<_>>());
            prop_assert_eq!(keys(&Timeline::merge(stays, gone)), all);
        }

        #[test]
        fn remove_and_paging_positions(seqs in proptest::collection::vec(0i64..1000, 1..400), probe in 0i64..1000) {
            let mut t = build(&seqs);
            let mut model = keys(&t);
            let pos = t.partition_point(|e| e.seq.0 < probe);
            let fwd: Vec<i64> = t.iter_from(pos).map(|e| e.seq.0).collect();
            let back: Vec<i64> = t.iter_before_rev(pos).map(|e| e.seq.0).collect();
            let split = model.partition_point(|x| *x < probe);
            prop_assert_eq!(fwd, model[split..].to_vec());
            prop_assert_eq!(back, model[..split].iter().rev().copied().collect::<Vec<_>>());
            let victim = model[model.len() / 2];
            prop_assert!(t.remove((Sequence(victim), MessageId(victim as u64))).is_some());
            model.retain(|x| *x != victim);
            prop_assert_eq!(keys(&t), model);
            check_layout(&t).map_err(TestCaseError::fail)?;
            // Removing everything leaves no empty chunk behind.
            for k in keys(&t) {
                prop_assert!(t.remove((Sequence(k), MessageId(k as u64))).is_some());
            }
            prop_assert!(t.is_empty() && t.chunks.is_empty());
        }
    }

    #[test]
    fn entries_in_order_fill_each_chunk_to_its_target_and_a_full_one_splits_in_halves() {
        let mut t = Timeline::default();
        for s in 0..200 {
            t.insert(entry(s * 4));
        }
        assert_eq!(sizes(&t), [64, 64, 64, 8]);
        assert_eq!(
            sizes(&build(&(0..200).collect::<Vec<_>>())),
            [64, 64, 64, 8]
        );
        // The first chunk holds 0, 4, .., 252: fill it to twice the target, then one more,
        // and it splits in halves.
        for s in 0..63 {
            assert!(t.insert(entry(s * 4 + 1)));
        }
        assert!(t.insert(entry(2)));
        assert_eq!(sizes(&t), [128, 64, 64, 8]);
        assert!(t.insert(entry(6)));
        assert_eq!(sizes(&t), [64, 65, 64, 64, 8]);
        check_layout(&t).unwrap();
    }

    #[test]
    fn full_chunks_built_in_order_hold_no_spare_capacity() {
        let t = build(&(0..1000).collect::<Vec<_>>());
        let full = t.chunks.len() - 1;
        for c in t.chunks.iter().take(full) {
            assert_eq!(c.capacity(), CHUNK);
        }
    }

    #[test]
    fn an_interleaved_merge_moves_whole_chunks_that_go_before_the_other_side() {
        // Ten chunks of even keys; the odd 301 falls into the third, 1301 after the last.
        let a = build(&(0..640).map(|k| k * 2).collect::<Vec<_>>());
        let b = build(&[301, 1301]);
        let before: Vec<Chunk> = a.chunks.iter().cloned().collect();
        let m = Timeline::merge(a, b);
        for (i, c) in before.iter().enumerate().filter(|(i, _)| *i != 2) {
            assert!(
                m.chunks.iter().any(|d| Arc::ptr_eq(c, d)),
                "chunk {i} was rewritten"
            );
        }
        assert!(!m.chunks.iter().any(|d| Arc::ptr_eq(&before[2], d)));
        assert_eq!(m.len(), 642);
        check_layout(&m).unwrap();
    }

    #[test]
    fn timelines_with_other_entries_are_unequal() {
        assert!(build(&[1, 2]) != build(&[1, 3]));
        assert!(build(&[1, 2]) != build(&[1]));
        assert!(build(&[1, 2]) == build(&[2, 1]));
    }

    #[test]
    fn disjoint_merge_is_an_append() {
        let a = build(&(0..10_000).collect::<Vec<_>>());
        let b = build(&(10_000..20_000).collect::<Vec<_>>());
        let chunks = a.chunks.len() + b.chunks.len();
        let m = Timeline::merge(b, a);
        assert_eq!(m.chunks.len(), chunks, "no chunk was rewritten");
        assert_eq!(keys(&m), (0..20_000).collect::<Vec<_>>());
    }
}
