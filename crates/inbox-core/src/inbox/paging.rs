//! List Messages and the pinned set of a cursor (invariant 8).

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
        let root = self.root_of(req.conversation_id);
        let descending = req.order == SortOrder::Desc;
        let participant_only = req.visibility == VisibilityFilter::ParticipantVisible;
        let (anchor, watermark, after) = match &req.cursor {
            None => (root, self.last_sequence, None),
            Some(text) => {
                let c = CursorState::decode(text, &self.config.cursor_key)?;
                if c.descending != descending || c.participant_only != participant_only {
                    return Err(CursorError::QueryMismatch.into());
                }
                if !self.conversations.contains_key(&c.anchor) || self.root_of(c.anchor) != root {
                    return Err(CursorError::ForeignConversation.into());
                }
                (c.anchor, c.watermark, Some(c.last))
            }
        };
        let Some(v) = self.conversations.get(&root).map(|r| &r.messages) else {
            return Err(ListMessagesError::ConversationNotFound(req.conversation_id));
        };
        let mut pinned = PinnedSet::new(self, anchor, watermark);
        // Nothing was ever merged into the conversation read: every message in it was sent to
        // it, so no message needs its provenance checked (nor its memory touched, unless the
        // visibility filter needs it).
        let unmerged = anchor == root && self.merged_from.get(&root).is_none_or(|s| s.is_empty());
        let mut qualifies = |e: &Entry| {
            e.seq <= watermark
                && (!participant_only || e.msg.is_visible_to_participant())
                && (unmerged || pinned.contains(e.msg.conversation_id))
        };
        let mut messages: Vec<&Message> = Vec::with_capacity(limit.min(v.len()));
        let mut more = false;
        if descending {
            let end = match after {
                None => v.partition_point(|e| e.seq <= watermark),
                Some(k) => v.partition_point(|e| e.key() < k),
            };
            for e in v.iter_before_rev(end) {
                if qualifies(e) {
                    if messages.len() == limit {
                        more = true;
                        break;
                    }
                    messages.push(&e.msg);
                }
            }
        } else {
            let start = match after {
                None => v.partition_point(|_| false),
                Some(k) => v.partition_point(|e| e.key() <= k),
            };
            for e in v.iter_from(start) {
                if e.seq > watermark {
                    break;
                }
                if qualifies(e) {
                    if messages.len() == limit {
                        more = true;
                        break;
                    }
                    messages.push(&e.msg);
                }
            }
        }
        let next_cursor = match (more, messages.last()) {
            (true, Some(last)) => Some(
                CursorState {
                    descending,
                    participant_only,
                    anchor,
                    watermark,
                    last: last.order_key(),
                }
                .encode(&self.config.cursor_key),
            ),
            _ => None,
        };
        Ok(MessagePage {
            messages,
            next_cursor,
            conversation_id: root,
        })
    }
}

/// Which provenance conversations a cursor covers: those whose merge path into the anchor
/// consists of merges stamped at or before the watermark. Memoised per page.
struct PinnedSet<'a> {
    inbox: &'a Inbox,
    anchor: ConversationId,
    watermark: Sequence,
    last: Option<(ConversationId, bool)>,
    memo: BTreeMap<ConversationId, bool>,
}

impl<'a> PinnedSet<'a> {
    fn new(inbox: &'a Inbox, anchor: ConversationId, watermark: Sequence) -> Self {
        PinnedSet {
            inbox,
            anchor,
            watermark,
            last: None,
            memo: BTreeMap::new(),
        }
    }

    fn contains(&mut self, provenance: ConversationId) -> bool {
        if provenance == self.anchor {
            return true;
        }
        if let Some((p, answer)) = self.last
            && p == provenance
        {
            return answer;
        }
        let answer = match self.memo.get(&provenance) {
            Some(a) => *a,
            None => {
                let a = self.walk(provenance);
                self.memo.insert(provenance, a);
                a
            }
        };
        self.last = Some((provenance, answer));
        answer
    }

    fn walk(&self, provenance: ConversationId) -> bool {
        let mut cur = provenance;
        for _ in 0..=self.inbox.conversations.len() {
            if cur == self.anchor {
                return true;
            }
            let Some(parent) = self.inbox.conversations.get(&cur).and_then(|r| r.parent) else {
                return false;
            };
            let stamp = self
                .inbox
                .merge_edges
                .get(&cur)
                .and_then(|m| m.get(&parent))
                .copied()
                .unwrap_or(Sequence(i64::MAX));
            if stamp > self.watermark {
                return false;
            }
            cur = parent;
        }
        false
    }
}
