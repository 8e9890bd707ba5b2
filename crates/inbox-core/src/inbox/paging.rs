//! List Messages and the pinned set of a cursor (invariant 8).
//!
//! A cursor is pinned to its first page's moment, the watermark. A later page holds the
//! messages stamped at or below the watermark whose provenance had the anchor on its way to
//! its root in the merge forest *as of the watermark*: the forest of the merges stamped at or
//! below it, resolved by the same rules as the live one (the latest such merge of a source
//! counts; a cycle breaks at its oldest merge). The live forest is not consulted, so a merge
//! delivered again with a later stamp, or one that closes a cycle and so breaks it elsewhere,
//! changes nothing a cursor already pages over. Those messages normally all live in the root
//! read; when a later merge has moved some elsewhere, they are gathered from there.

use super::*;

impl Inbox {
    /// List Messages: one page, in sequence order, with a cursor for the next (invariant 8:
    /// the cursor pins the messages that were there when the first page was read).
    pub fn list_messages(&self, req: &ListMessages) -> Result<MessagePage<'_>, ListMessagesError> {
        let limit = match req.limit {
            None => DEFAULT_PAGE_LIMIT,
            Some(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => n,
            Some(n) => return Err(ListMessagesError::IllegalLimit(n)),
        };
        if !self.conversations.contains_key(&req.conversation_id) {
            return Err(ListMessagesError::ConversationNotFound(req.conversation_id));
        }
        let requested = self.root_of(req.conversation_id);
        let descending = req.order == SortOrder::Desc;
        let participant_only = req.visibility == VisibilityFilter::ParticipantVisible;
        let (anchor, watermark, after, backwards, root) = match &req.cursor {
            None => (requested, self.last_sequence, None, false, requested),
            Some(text) => {
                let c = CursorState::decode(text, &self.config.cursor_key)?;
                if c.descending != descending || c.participant_only != participant_only {
                    return Err(CursorError::QueryMismatch.into());
                }
                if !self.conversations.contains_key(&c.anchor) {
                    return Err(CursorError::ForeignConversation.into());
                }
                // The conversation asked for is the cursor's when it lives where the anchor
                // does, or when it was part of what the cursor covers (a merge reverted
                // since has taken it out of the anchor's tree).
                let root = self.root_of(c.anchor);
                if root != requested
                    && !self
                        .pinned(c.anchor, c.watermark)
                        .contains(&req.conversation_id)
                {
                    return Err(CursorError::ForeignConversation.into());
                }
                (c.anchor, c.watermark, Some(c.last), c.backwards, root)
            }
        };
        // The page before a key is the page after it in the other order, turned round.
        let listing_descending = descending;
        let descending = descending != backwards;
        let Some(v) = self.conversations.get(&root).map(|r| &r.messages) else {
            return Err(ListMessagesError::ConversationNotFound(req.conversation_id));
        };
        // Nothing was ever merged into the conversation read: every message in it was sent to
        // it, so no message needs its provenance checked (nor its memory touched, unless the
        // visibility filter needs it).
        let unmerged = anchor == root && self.merged_from.get(&root).is_none_or(|s| s.is_empty());
        let pinned = if unmerged {
            BTreeSet::new()
        } else {
            self.pinned(anchor, watermark)
        };
        let qualifies = |e: &Entry| {
            e.seq <= watermark
                && (!participant_only || e.msg.is_visible_to_participant())
                && (unmerged || pinned.contains(&e.msg.conversation_id))
        };
        let homes: BTreeSet<ConversationId> = pinned.iter().map(|c| self.root_of(*c)).collect();
        let (messages, more) = if homes.iter().all(|h| *h == root) {
            if descending {
                let end = match after {
                    None => v.partition_point(|e| e.seq <= watermark),
                    Some(k) => v.partition_point(|e| e.key() < k),
                };
                take_page(v.iter_before_rev(end), &qualifies, limit)
            } else {
                let start = match after {
                    None => v.partition_point(|_| false),
                    Some(k) => v.partition_point(|e| e.key() <= k),
                };
                let upto_watermark = v.iter_from(start).take_while(|e| e.seq <= watermark);
                take_page(upto_watermark, &qualifies, limit)
            }
        } else {
            // A later merge moved some of what the cursor covers out of this root: gather
            // it from every conversation that now holds any of it.
            let mut gathered: Vec<&Entry> = homes
                .iter()
                .filter_map(|h| self.conversations.get(h))
                .flat_map(|r| r.messages.iter())
                .filter(|e| qualifies(e))
                .collect();
            gathered.sort_by(|a, b| Entry::cmp(a, b));
            let keep = |e: &&Entry| match after {
                None => true,
                Some(k) if descending => e.key() < k,
                Some(k) => e.key() > k,
            };
            if descending {
                take_page(gathered.into_iter().rev().filter(keep), &qualifies, limit)
            } else {
                take_page(gathered.into_iter().filter(keep), &qualifies, limit)
            }
        };
        let mut messages = messages;
        let cursor = |backwards: bool, last: (Sequence, MessageId)| {
            CursorState {
                descending: listing_descending,
                backwards,
                participant_only,
                anchor,
                watermark,
                last,
            }
            .encode(&self.config.cursor_key)
        };
        let (next_cursor, prev_cursor) = if backwards {
            messages.reverse();
            // What was before the key: the key's own page follows it; more before it, if
            // the other order had more.
            let next = messages
                .last()
                .map(|m| m.order_key())
                .or(after)
                .map(|k| cursor(false, k));
            let prev = match (more, messages.first()) {
                (true, Some(first)) => Some(cursor(true, first.order_key())),
                _ => None,
            };
            (next, prev)
        } else {
            let next = match (more, messages.last()) {
                (true, Some(last)) => Some(cursor(false, last.order_key())),
                _ => None,
            };
            // Every page but the first has one before it.
            let prev = match (after, messages.first()) {
                (Some(_), Some(first)) => Some(cursor(true, first.order_key())),
                _ => None,
            };
            (next, prev)
        };
        Ok(MessagePage {
            messages,
            next_cursor,
            prev_cursor,
            conversation_id: root,
        })
    }

    /// The conversations a cursor covers: the anchor and everything whose path to its root,
    /// in the merge forest as of `watermark`, passes through the anchor.
    fn pinned(&self, anchor: ConversationId, watermark: Sequence) -> BTreeSet<ConversationId> {
        let mut set = BTreeSet::from([anchor]);
        let mut queue = vec![anchor];
        while let Some(n) = queue.pop() {
            for s in self.merged_from.get(&n).into_iter().flatten() {
                if !set.contains(s) && self.parent_as_of(*s, watermark) == Some(n) {
                    set.insert(*s);
                    queue.push(*s);
                }
            }
        }
        set
    }

    /// The parent of `c` in the merge forest as of `moment`: the target of its latest merge
    /// stamped at or before it and not reverted at or before it (ties: the larger target),
    /// unless `c` is where a cycle of such merges is broken (the member whose merge is the
    /// oldest, ties by the smaller id).
    pub(super) fn parent_as_of(
        &self,
        c: ConversationId,
        moment: Sequence,
    ) -> Option<ConversationId> {
        let winner = |n: ConversationId| {
            self.merge_edges
                .get(&n)?
                .iter()
                .rev()
                .find(|(stamp, t)| *stamp <= moment && !self.reverted_by(n, *stamp, *t, moment))
                .copied()
        };
        let (_, first) = winner(c)?;
        let mut seen = BTreeSet::from([c]);
        let mut cycle = vec![c];
        let mut cur = first;
        loop {
            if cur == c {
                let breaker = cycle
                    .iter()
                    .min_by_key(|n| (winner(**n).map(|w| w.0), **n))
                    .copied();
                return (breaker != Some(c)).then_some(first);
            }
            if !seen.insert(cur) {
                return Some(first); // `c` leads into a cycle it is not on
            }
            cycle.push(cur);
            match winner(cur) {
                Some((_, next)) => cur = next,
                None => return Some(first),
            }
        }
    }
}

/// The first `limit` entries that qualify, and whether another one follows.
fn take_page<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    qualifies: &impl Fn(&Entry) -> bool,
    limit: usize,
) -> (Vec<&'a Message>, bool) {
    let mut messages: Vec<&Message> = Vec::with_capacity(limit.min(64));
    for e in entries {
        if qualifies(e) {
            if messages.len() == limit {
                return (messages, true);
            }
            messages.push(&e.msg);
        }
    }
    (messages, false)
}
