//! Merge edges: the fast path of a live conversation merged once, and the recomputation of a
//! connected component from the edge set when merges conflict or form a cycle.

use super::*;

impl Inbox {
    pub(super) fn add_merge_edge(
        &mut self,
        source: ConversationId,
        target: ConversationId,
        stamp: Sequence,
    ) {
        if source == target {
            self.anomalies.insert(
                AnomalyKey::SelfMerge(source),
                Anomaly::SelfMerge {
                    conversation: source,
                },
            );
            return;
        }
        let edges = self.merge_edges.get(&source);
        if edges.is_some_and(|m| m.contains(&(stamp, target))) {
            return; // already known
        }
        let had_edges = edges.is_some_and(|m| !m.is_empty());
        self.merge_edges
            .entry(source)
            .or_default()
            .insert((stamp, target));
        self.merged_from.entry(target).or_default().insert(source);
        let reverted = self.merge_reverts.contains_key(&(source, stamp, target));
        if !had_edges && !reverted && self.root_of(target) != source {
            // The common case: a live conversation merges into another tree.
            let survivor = self.root_of(target);
            let moved = match self.conversations.get_mut(&source) {
                Some(rec) => {
                    rec.parent = Some(target);
                    std::mem::take(&mut rec.messages)
                }
                None => Timeline::default(),
            };
            let rec = self.ensure_conversation(survivor);
            let kept = std::mem::take(&mut rec.messages);
            rec.messages = Timeline::merge(kept, moved);
        } else {
            self.recompute_component(source);
        }
    }

    /// Folds a revert of the merge `(source, merged_at, target)`: the merge counts for no
    /// moment at or after `stamp` (of several reverts of one merge, the earliest counts).
    /// The merge may arrive before or after its revert.
    pub(super) fn revert_merge_edge(
        &mut self,
        source: ConversationId,
        target: ConversationId,
        merged_at: Sequence,
        stamp: Sequence,
    ) {
        let key = (source, merged_at, target);
        if self.merge_reverts.get(&key).is_some_and(|r| *r <= stamp) {
            return;
        }
        self.merge_reverts.insert(key, stamp);
        self.ensure_conversation(source);
        self.ensure_conversation(target);
        if !self
            .merge_edges
            .get(&source)
            .is_some_and(|m| m.contains(&(merged_at, target)))
        {
            return; // the merge has not arrived: it will find its revert
        }
        // The common case: the merge reverted was the one that held `source`, no other merge
        // of it counts, and no cycle was broken anywhere. Then `source` and what was merged
        // into it leave the survivor's tree, and their messages leave its timeline.
        let held_by_it = self.conversations.get(&source).and_then(|r| r.parent) == Some(target);
        let no_other = self.active_edges(source).next().is_none();
        let no_cycles = !self
            .anomalies
            .keys()
            .any(|k| matches!(k, AnomalyKey::Cycle(_)));
        if held_by_it && no_other && no_cycles {
            self.split_off(source);
        } else {
            self.recompute_component(source);
        }
    }

    /// Makes `source` a root again: the messages of its subtree (those sent to `source` or
    /// to what is merged into it) move from the survivor's timeline to its own.
    fn split_off(&mut self, source: ConversationId) {
        let root = self.root_of(source);
        let subtree: BTreeSet<ConversationId> = self.tree_of(source).into_iter().collect();
        if let Some(rec) = self.conversations.get_mut(&source) {
            rec.parent = None;
        }
        let Some(survivor) = self.conversations.get_mut(&root) else {
            return;
        };
        // Usually `source` alone (nothing was merged into it): one comparison per message.
        let only = (subtree.len() == 1).then_some(source);
        let (stays, gone) = std::mem::take(&mut survivor.messages).split(|e| match only {
            Some(s) => e.msg.conversation_id == s,
            None => subtree.contains(&e.msg.conversation_id),
        });
        survivor.messages = stays;
        self.ensure_conversation(source).messages = gone;
    }

    /// Whether the merge `(source, merged_at, target)` was reverted at or before `moment`.
    pub(super) fn reverted_by(
        &self,
        source: ConversationId,
        merged_at: Sequence,
        target: ConversationId,
        moment: Sequence,
    ) -> bool {
        self.merge_reverts
            .get(&(source, merged_at, target))
            .is_some_and(|r| *r <= moment)
    }

    /// The merges of `source` that count now (not reverted), by stamp.
    pub(super) fn active_edges(
        &self,
        source: ConversationId,
    ) -> impl DoubleEndedIterator<Item = (Sequence, ConversationId)> + '_ {
        self.merge_edges
            .get(&source)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |(stamp, target)| {
                !self.merge_reverts.contains_key(&(source, *stamp, *target))
            })
    }

    /// Every conversation connected to `seed` by merges (either way, reverted or not).
    fn component_of(&self, seed: ConversationId) -> BTreeSet<ConversationId> {
        let mut component = BTreeSet::new();
        let mut stack = vec![seed];
        while let Some(n) = stack.pop() {
            if !component.insert(n) {
                continue;
            }
            if let Some(out) = self.merge_edges.get(&n) {
                stack.extend(out.iter().map(|(_, t)| *t));
            }
            if let Some(inc) = self.merged_from.get(&n) {
                stack.extend(inc.iter().copied());
            }
        }
        component
    }

    /// The slow path, for conflicting or cyclic merges (only seen with events from outside):
    /// recompute parents for every conversation connected to `seed` from the edge set alone,
    /// then put every message of those conversations back under its new root.
    fn recompute_component(&mut self, seed: ConversationId) {
        let component = self.component_of(seed);
        // Each source's winning edge: the latest stamp, then the larger target id.
        let mut winner: BTreeMap<ConversationId, (Sequence, ConversationId)> = BTreeMap::new();
        for n in &component {
            self.anomalies.remove(&AnomalyKey::Merge(*n));
            self.anomalies.remove(&AnomalyKey::Cycle(*n));
            let Some(latest) = self.active_edges(*n).next_back() else {
                continue;
            };
            winner.insert(*n, latest);
            let targets: BTreeSet<ConversationId> = self.active_edges(*n).map(|(_, t)| t).collect();
            if targets.len() > 1 {
                self.anomalies.insert(
                    AnomalyKey::Merge(*n),
                    Anomaly::ConflictingMergeTargets {
                        source: *n,
                        targets: targets.into_iter().collect(),
                        chosen: latest.1,
                    },
                );
            }
        }
        let mut parent: BTreeMap<ConversationId, ConversationId> =
            winner.iter().map(|(n, (_, t))| (*n, *t)).collect();
        // Break cycles of the functional graph at their oldest edge.
        let mut done: BTreeSet<ConversationId> = BTreeSet::new();
        for start in &component {
            let mut path: Vec<ConversationId> = Vec::new();
            let mut on_path: BTreeSet<ConversationId> = BTreeSet::new();
            let mut cur = *start;
            loop {
                if done.contains(&cur) {
                    break;
                }
                if on_path.contains(&cur) {
                    let from = path.iter().position(|n| *n == cur).unwrap_or(0);
                    let cycle: Vec<ConversationId> = path.get(from..).unwrap_or_default().to_vec();
                    if let Some(breaker) = cycle
                        .iter()
                        .min_by_key(|n| (winner.get(n).map(|w| w.0), **n))
                        .copied()
                    {
                        parent.remove(&breaker);
                        let mut members = cycle.clone();
                        members.sort();
                        self.anomalies.insert(
                            AnomalyKey::Cycle(breaker),
                            Anomaly::MergeCycle {
                                members,
                                broken_at: breaker,
                            },
                        );
                    }
                    break;
                }
                on_path.insert(cur);
                path.push(cur);
                match parent.get(&cur) {
                    Some(p) => cur = *p,
                    None => break,
                }
            }
            done.extend(path);
        }
        // Re-home every message of the component.
        let mut all: Vec<Entry> = Vec::new();
        for n in &component {
            let rec = self.ensure_conversation(*n);
            rec.parent = parent.get(n).copied();
            all.extend(std::mem::take(&mut rec.messages).into_entries());
        }
        let mut roots: BTreeMap<ConversationId, ConversationId> = BTreeMap::new();
        let mut groups: BTreeMap<ConversationId, Vec<Entry>> = BTreeMap::new();
        for e in all {
            let p = e.msg.conversation_id;
            let root = match roots.get(&p) {
                Some(r) => *r,
                None => {
                    let r = self.root_of(p);
                    roots.insert(p, r);
                    r
                }
            };
            groups.entry(root).or_default().push(e);
        }
        for (root, mut entries) in groups {
            entries.sort_by(Entry::cmp);
            self.ensure_conversation(root).messages = Timeline::from_sorted(entries);
        }
    }
}

impl Inbox {
    /// The merges and reverts that shaped `conversation`: every merge among the
    /// conversations connected to it by merges (reverted or not), by stamp, each with its
    /// revert and the messages it moved. O(messages of those conversations).
    pub fn merge_history(
        &self,
        conversation: ConversationId,
    ) -> Result<Vec<MergeRecord>, GetConversationError> {
        if !self.conversations.contains_key(&conversation) {
            return Err(GetConversationError::NotFound(conversation));
        }
        let component = self.component_of(conversation);
        let mut merges: Vec<(Sequence, ConversationId, ConversationId)> = component
            .iter()
            .flat_map(|s| {
                self.merge_edges
                    .get(s)
                    .into_iter()
                    .flatten()
                    .map(move |(stamp, t)| (*stamp, *s, *t))
            })
            .collect();
        merges.sort();
        // Every message of the component, once, in order.
        let roots: BTreeSet<ConversationId> = component.iter().map(|c| self.root_of(*c)).collect();
        let mut messages: Vec<&Message> = roots
            .iter()
            .filter_map(|r| self.conversations.get(r))
            .flat_map(|r| r.messages.iter().map(|e| e.msg.as_ref()))
            .collect();
        messages.sort_by_key(|m| m.order_key());
        Ok(merges
            .into_iter()
            .map(|(merged_at, source, target)| {
                // Whether `c` lay under the source at the merge's moment (cached: a few
                // conversations hold many messages).
                let mut cache: BTreeMap<ConversationId, bool> = BTreeMap::new();
                let mut under = |c: ConversationId| {
                    *cache.entry(c).or_insert_with(|| {
                        let mut cur = c;
                        for _ in 0..=component.len() {
                            if cur == source {
                                return true;
                            }
                            match self.parent_as_of(cur, merged_at) {
                                Some(p) => cur = p,
                                None => return false,
                            }
                        }
                        false
                    })
                };
                MergeRecord {
                    source,
                    target,
                    merged_at,
                    reverted_at: self
                        .merge_reverts
                        .get(&(source, merged_at, target))
                        .copied(),
                    messages: messages
                        .iter()
                        .filter(|m| m.sequence <= merged_at && under(m.conversation_id))
                        .map(|m| m.id)
                        .collect(),
                }
            })
            .collect())
    }

    /// What reverting the merge that holds `conversation` would give, changing nothing: the
    /// conversation and the one it was merged into, as they would be after the revert (its
    /// refusal, if it would be refused).
    pub fn preview_revert(
        &self,
        conversation: ConversationId,
        now: Timestamp,
    ) -> Result<(ConversationView, ConversationView), Rejection> {
        let ctx = Context::at(now);
        let events = self.decide_revert(conversation, &ctx)?;
        let mut after = self.clone();
        for e in &events {
            after.apply_event(e);
        }
        let target = match events.first() {
            Some(Event::ConversationMergeReverted { target, .. }) => after.root_of(*target),
            _ => after.root_of(conversation),
        };
        let view = |c| {
            after
                .conversation(c)
                .map_err(|_| Rejection::ConversationNotFound(c))
        };
        Ok((view(conversation)?, view(target)?))
    }
}
