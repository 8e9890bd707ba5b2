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
                let rec = self.ensure_conversation(*conversation_id);
                match rec.participant {
                    None => rec.participant = Some(*participant),
                    Some(p) if p != *participant => {
                        rec.participant = Some(p.min(*participant));
                    }
                    Some(_) => {}
                }
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
            } => {
                self.set_unique(
                    2,
                    ParticipantId::Member(*member),
                    contact.as_uuid(),
                    |s| s.members.get(member).map(|m| m.contact_id.as_uuid()),
                    |s, v| {
                        // The login email must not depend on arrival order either: it is the
                        // greatest one registered with the winning contact (an email over
                        // none), and none once that contact is erased.
                        let winner = ContactId(v);
                        let kept = s
                            .members
                            .get(member)
                            .filter(|m| m.contact_id == winner)
                            .and_then(|m| m.login_email.clone());
                        let given = login_email.clone().filter(|_| *contact == winner);
                        s.members.insert(
                            *member,
                            Member {
                                id: *member,
                                contact_id: winner,
                                login_email: kept
                                    .max(given)
                                    .filter(|_| !s.erased_contacts.contains(&winner)),
                            },
                        );
                    },
                );
                self.set_unique(
                    3,
                    ParticipantId::Contact(*contact),
                    member.as_uuid(),
                    |s| s.member_of_contact.get(contact).map(|m| m.as_uuid()),
                    |s, v| {
                        s.member_of_contact.insert(*contact, MemberId(v));
                    },
                );
            }
            Event::ContactCreated { contact } => self.contacts.upsert(contact.clone()),
            Event::ContactsMerged { target, sources } => {
                self.contacts.upsert(target.clone());
                // A contact merged into two targets (events from outside): the smallest target
                // wins whatever the arrival order, and the conflict is reported.
                for s in sources.iter().filter(|s| **s != target.id) {
                    self.set_unique(
                        4,
                        ParticipantId::Contact(*s),
                        target.id.as_uuid(),
                        |st| st.contacts.merged_into(*s).map(|c| c.as_uuid()),
                        |st, v| st.contacts.remove_merged(*s, ContactId(v)),
                    );
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
                if let Some(c) = contact {
                    self.contacts.upsert(c.clone());
                    // The login email is personal data too (a conversation shows it as the
                    // member's name when the contact has none).
                    self.erased_contacts.insert(c.id);
                    let of_contact: Vec<MemberId> = self
                        .members
                        .values()
                        .filter(|m| m.contact_id == c.id)
                        .map(|m| m.id)
                        .collect();
                    for id in of_contact {
                        if let Some(m) = self.members.get_mut(&id) {
                            m.login_email = None;
                        }
                    }
                }
                self.bump(*up_to);
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
