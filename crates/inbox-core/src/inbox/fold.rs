//! `apply`: the fold. Every event is folded as a set operation, so the state depends only on
//! the set of events, never on their order or repeats.

use super::*;

impl Inbox {
    /// Folds one event. Never fails and never panics: an event from outside that contradicts
    /// the state is resolved by a fixed rule and recorded as an [`Anomaly`]. Applying an
    /// event twice is the same as once, and the result does not depend on the order events
    /// arrive in.
    pub fn apply(&mut self, envelope: &EventEnvelope) {
        self.apply_event(&envelope.event);
    }

    /// Folds one domain event taken by value: the same as [`Inbox::apply_event`], without
    /// copying the message of a `MessageSent` (what replaying a log wants).
    pub fn apply_owned(&mut self, event: Event) {
        match event {
            Event::MessageSent { message } => self.apply_message(message),
            other => self.apply_event(&other),
        }
    }

    /// Folds one domain event (see [`Inbox::apply`]).
    pub fn apply_event(&mut self, event: &Event) {
        match event {
            Event::ConversationStarted {
                conversation_id,
                participant,
            } => {
                // Started for several participants (events from outside): it belongs to the
                // most advanced of them.
                let rec = self.ensure_conversation(*conversation_id);
                rec.participant = Some(match rec.participant {
                    Some(p) => more_advanced(p, *participant),
                    None => *participant,
                });
                self.set_unique(
                    0,
                    *participant,
                    conversation_id.as_uuid(),
                    |s| s.owners.get(participant).map(|c| c.as_uuid()),
                    |s, v| {
                        s.owners.insert(*participant, ConversationId(v));
                    },
                );
            }
            Event::MessageSent { message } => self.apply_message(message.clone()),
            Event::ConversationsMerged {
                sources,
                target,
                stamp,
            } => {
                self.bump(*stamp);
                self.ensure_conversation(*target);
                for s in sources {
                    self.ensure_conversation(*s);
                    self.add_merge_edge(*s, *target, *stamp);
                }
            }
            Event::VisitorIdentified { visitor, contact } => {
                self.set_unique(
                    1,
                    ParticipantId::Visitor(*visitor),
                    contact.as_uuid(),
                    |s| s.visitors.get(visitor).map(|c| c.as_uuid()),
                    |s, v| {
                        s.visitors.insert(*visitor, ContactId(v));
                    },
                );
            }
            Event::MemberRegistered {
                member,
                contact,
                login_email,
                stamp,
            } => {
                self.bump(*stamp);
                self.register(
                    *member,
                    Registration {
                        contact: *contact,
                        stamp: *stamp,
                        login_email: login_email.clone(),
                    },
                );
            }
            Event::ContactCreated { contact } | Event::ContactUpdated { contact } => {
                self.contacts.upsert(contact.clone())
            }
            Event::ContactDeleted {
                contact_id,
                revision,
            } => self.contacts.delete(*contact_id, *revision),
            Event::ContactsMerged { target, sources } => {
                self.contacts.upsert(target.clone());
                for s in sources.iter().filter(|s| **s != target.id) {
                    let outcome = self.contacts.add_merge_claim(*s, target.id);
                    self.report_contact_merges(*s, &outcome);
                    // Which members share a live contact changes only where members are.
                    let touched: Vec<ContactId> = outcome
                        .component
                        .iter()
                        .flat_map(|c| self.contacts.tree_of(*c))
                        .collect();
                    if touched
                        .iter()
                        .any(|c| self.members_by_contact.contains_key(c))
                    {
                        self.refresh_member_conflicts(&touched);
                    }
                }
            }
            Event::ButtonInteracted {
                conversation_id,
                message_id,
                interaction_id,
                app_id,
                interacted_by,
            } => {
                self.interactions.insert(Interaction {
                    conversation_id: *conversation_id,
                    message_id: *message_id,
                    interaction_id: interaction_id.clone(),
                    app_id: *app_id,
                    interacted_by: *interacted_by,
                });
            }
            Event::ParticipantErased {
                conversations,
                up_to,
                contact,
                ..
            } => {
                // An erasure records the past: it does not move the clock (a version-1
                // erasure, upcast to `up_to = i64::MAX`, would otherwise exhaust it).
                if let Some(c) = contact {
                    self.contacts.upsert(c.clone());
                    let bound = self
                        .erased_contacts
                        .get(&c.id)
                        .map_or(*up_to, |b| (*b).max(*up_to));
                    self.erased_contacts.insert(c.id, bound);
                }
                let mut roots = BTreeSet::new();
                for c in conversations {
                    self.ensure_conversation(*c);
                    let bound = self.erased.get(c).map_or(*up_to, |b| (*b).max(*up_to));
                    self.erased.insert(*c, bound);
                    roots.insert(self.root_of(*c));
                }
                for root in roots {
                    self.redact_erased_in(root);
                }
            }
            Event::LabelSaved { label, stamp } => {
                self.bump(*stamp);
                self.contacts.catalog_mut().save_label(*stamp, label);
            }
            Event::LabelDeleted { key, stamp } => {
                self.bump(*stamp);
                self.contacts.catalog_mut().delete_label(key, *stamp);
            }
            Event::ExtendedFieldSaved { field, stamp } => {
                self.bump(*stamp);
                self.contacts.catalog_mut().save_field(*stamp, field);
            }
            Event::ExtendedFieldDeleted { key, stamp } => {
                self.bump(*stamp);
                self.contacts.catalog_mut().delete_field(key, *stamp);
            }
            Event::ConversationMergeReverted {
                source,
                target,
                merged_at,
                stamp,
            } => {
                self.bump(*stamp);
                self.revert_merge_edge(*source, *target, *merged_at, *stamp);
            }
        }
    }

    /// Folds one registration of a member. The one on the smallest contact counts; several
    /// contacts are a conflict, reported.
    fn register(&mut self, member: MemberId, registration: Registration) {
        let before = self
            .registrations
            .get(&member)
            .and_then(|r| r.get_min())
            .map(|r| r.contact);
        let regs = self.registrations.entry(member).or_default();
        regs.insert(registration);
        let contacts: BTreeSet<ContactId> = regs.iter().map(|r| r.contact).collect();
        let after = contacts.first().copied();
        let key = AnomalyKey::Identity(2, ParticipantId::Member(member));
        if contacts.len() > 1 {
            self.anomalies.insert(
                key,
                Anomaly::ConflictingIdentity {
                    participant: ParticipantId::Member(member),
                    candidates: contacts.iter().map(|c| c.as_uuid()).collect(),
                },
            );
        }
        if before == after {
            return;
        }
        let mut touched = Vec::new();
        if let Some(old) = before {
            if let Some(set) = self.members_by_contact.get_mut(&old) {
                set.remove(&member);
                if set.is_empty() {
                    self.members_by_contact.remove(&old);
                }
            }
            touched.push(old);
        }
        if let Some(new) = after {
            self.members_by_contact
                .entry(new)
                .or_default()
                .insert(member);
            touched.push(new);
        }
        let touched: Vec<ContactId> = touched
            .into_iter()
            .flat_map(|c| self.contacts.tree_of(self.contacts.resolve(c)))
            .collect();
        self.refresh_member_conflicts(&touched);
    }

    /// Reports what one contact merge claim made of its component: a source claimed by
    /// several targets, and the cycles broken.
    fn report_contact_merges(
        &mut self,
        source: ContactId,
        outcome: &crate::contacts::ClaimOutcome,
    ) {
        let targets: Vec<uuid::Uuid> = self
            .contacts
            .merge_claims(source)
            .map(|t| t.as_uuid())
            .collect();
        if targets.len() > 1 {
            self.anomalies.insert(
                AnomalyKey::Identity(4, ParticipantId::Contact(source)),
                Anomaly::ConflictingIdentity {
                    participant: ParticipantId::Contact(source),
                    candidates: targets,
                },
            );
        }
        for c in &outcome.component {
            self.anomalies.remove(&AnomalyKey::ContactCycle(*c));
        }
        for (members, kept) in &outcome.cycles {
            self.anomalies.insert(
                AnomalyKey::ContactCycle(*kept),
                Anomaly::ContactMergeCycle {
                    members: members.clone(),
                    kept: *kept,
                },
            );
        }
    }

    /// Recomputes, for these contacts, the report of several members on one live contact
    /// (members follow their contact's merges, so a merge can make two meet).
    fn refresh_member_conflicts(&mut self, contacts: &[ContactId]) {
        for c in contacts {
            self.anomalies
                .remove(&AnomalyKey::Identity(3, ParticipantId::Contact(*c)));
        }
        let live: BTreeSet<ContactId> =
            contacts.iter().map(|c| self.contacts.resolve(*c)).collect();
        for l in live {
            let members = self.members_of(l);
            if members.len() > 1 {
                self.anomalies.insert(
                    AnomalyKey::Identity(3, ParticipantId::Contact(l)),
                    Anomaly::ConflictingIdentity {
                        participant: ParticipantId::Contact(l),
                        candidates: members.iter().map(|m| m.as_uuid()).collect(),
                    },
                );
            }
        }
    }

    /// Keeps the smallest of conflicting values for a one-valued fact (so the outcome does
    /// not depend on arrival order) and records the conflict.
    fn set_unique(
        &mut self,
        kind: u8,
        subject: ParticipantId,
        value: uuid::Uuid,
        get: impl Fn(&Self) -> Option<uuid::Uuid>,
        set: impl Fn(&mut Self, uuid::Uuid),
    ) {
        match get(self) {
            None => set(self, value),
            // Set again: the fact may carry more than its value (a member's login email).
            Some(old) if old == value => set(self, value),
            Some(old) => {
                set(self, old.min(value));
                let key = AnomalyKey::Identity(kind, subject);
                let mut candidates = match self.anomalies.get(&key) {
                    Some(Anomaly::ConflictingIdentity { candidates, .. }) => candidates.clone(),
                    _ => Vec::new(),
                };
                for c in [old, value] {
                    if !candidates.contains(&c) {
                        candidates.push(c);
                    }
                }
                candidates.sort();
                self.anomalies.insert(
                    key,
                    Anomaly::ConflictingIdentity {
                        participant: subject,
                        candidates,
                    },
                );
            }
        }
    }

    fn bump(&mut self, seq: Sequence) {
        if seq > self.last_sequence {
            self.last_sequence = seq;
        }
    }

    pub(super) fn ensure_conversation(&mut self, id: ConversationId) -> &mut ConversationRecord {
        self.conversations.entry(id).or_default()
    }

    fn apply_message(&mut self, mut message: Message) {
        self.bump(message.sequence);
        // One traversal of the index in the common case: a new id.
        if let Some(previous) = self
            .message_index
            .insert_new(message.id, message.conversation_id)
        {
            // Every conversation a message names exists, whichever version of it wins.
            self.ensure_conversation(message.conversation_id);
            let loc = Locator {
                conversation: previous,
                sequence: self.sequence_of(message.id),
            };
            // Versions of an erased message are compared redacted, as they are stored.
            // `Message` orders content last, so this keeps the same version as comparing
            // first and redacting after: the result does not depend on arrival order.
            // Conflicts are not reported for erased messages (their content is gone, and
            // erasure removes any report made before it), whatever the arrival order.
            let erased = self.is_erased(&message);
            if erased {
                message = message.redacted();
            }
            let root = self.root_of(loc.conversation);
            let key = (loc.sequence, message.id);
            let Some(rec) = self.conversations.get_mut(&root) else {
                return;
            };
            let Some(stored) = rec.messages.find(key) else {
                return;
            };
            if *stored.msg <= message {
                // The stored version stays: whether to report depends on it being erased,
                // not on the incoming one (else the report would depend on arrival order).
                let stored_erased = self
                    .erased
                    .get(&stored.msg.conversation_id)
                    .is_some_and(|up_to| stored.msg.sequence <= *up_to);
                if *stored.msg != message && !stored_erased {
                    self.anomalies.insert(
                        AnomalyKey::Message(message.id),
                        Anomaly::ConflictingMessage {
                            message_id: message.id,
                        },
                    );
                }
                return;
            }
            rec.messages.remove(key);
            if !erased {
                self.anomalies.insert(
                    AnomalyKey::Message(message.id),
                    Anomaly::ConflictingMessage {
                        message_id: message.id,
                    },
                );
            } else {
                // An erased version now stands: a conflict reported before is withdrawn, as
                // an erasure arriving after it would withdraw it.
                self.anomalies.remove(&AnomalyKey::Message(message.id));
            }
            self.insert_message(message);
            return;
        }
        self.place_message(message);
    }

    /// Re-indexes an indexed message (its new version may name another conversation) and puts
    /// it in the timeline of its conversation's root.
    fn insert_message(&mut self, message: Message) {
        self.message_index.set(message.id, message.conversation_id);
        self.place_message(message);
    }

    /// The sequence of an indexed message.
    pub(super) fn sequence_of(&self, id: MessageId) -> Sequence {
        match self.odd_sequences.get(&id) {
            Some(seq) => *seq,
            None => natural_sequence(id).unwrap_or_default(),
        }
    }

    /// Puts an (indexed) message in the timeline of its conversation's root.
    fn place_message(&mut self, message: Message) {
        if natural_sequence(message.id) == Some(message.sequence) {
            if !self.odd_sequences.is_empty() {
                self.odd_sequences.remove(&message.id);
            }
        } else {
            self.odd_sequences.insert(message.id, message.sequence);
        }
        let provenance = message.conversation_id;
        let message = if !self.erased.is_empty() && self.is_erased(&message) {
            message.redacted()
        } else {
            message
        };
        match self.conversations.get_mut(&provenance) {
            // The hot path: one lookup when the conversation is live.
            Some(rec) if rec.parent.is_none() => {
                rec.messages.insert(Entry::new(message));
            }
            Some(_) => {
                let root = self.root_of(provenance);
                self.ensure_conversation(root)
                    .messages
                    .insert(Entry::new(message));
            }
            // A message seen before its conversation (webhooks arrive in any order).
            None => {
                self.ensure_conversation(provenance)
                    .messages
                    .insert(Entry::new(message));
            }
        }
    }

    /// Whether a privacy request covers this message: its conversation was erased, at or
    /// after the message's sequence. A function of the message and the erasures only.
    fn is_erased(&self, message: &Message) -> bool {
        self.erased
            .get(&message.conversation_id)
            .is_some_and(|up_to| message.sequence <= *up_to)
    }

    fn redact_erased_in(&mut self, root: ConversationId) {
        let erased = self.erased.clone();
        let covered = |m: &Message| {
            erased
                .get(&m.conversation_id)
                .is_some_and(|up_to| m.sequence <= *up_to)
        };
        let Some(rec) = self.conversations.get_mut(&root) else {
            return;
        };
        let ids = rec.messages.update_where(|m| {
            (covered(m) && m.content.body != crate::message::ContentBody::Redacted)
                .then(|| m.redacted())
        });
        for id in ids {
            self.anomalies.remove(&AnomalyKey::Message(id));
        }
    }
}
