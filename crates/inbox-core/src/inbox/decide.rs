//! `decide`: a command checked against the state and turned into events, changing nothing.

use super::*;

impl Inbox {
    /// Decides a command: checks it against the state and returns the events it causes,
    /// changing nothing. New ids come from `ids`, the time from `ctx`.
    pub fn decide(
        &self,
        command: &Command,
        ctx: &Context,
        ids: &mut dyn IdSource,
    ) -> Result<Vec<Event>, Rejection> {
        match command {
            Command::GetOrCreateConversation { participant } => {
                self.check_participant(*participant)?;
                let advanced = self.advanced_identity(*participant);
                if self.live_conversation_of(*participant).is_some() {
                    return Ok(Vec::new());
                }
                Ok(vec![Event::ConversationStarted {
                    conversation_id: ConversationId(ids.next_id()),
                    participant: advanced,
                }])
            }
            Command::SendMessage {
                conversation_id,
                message,
                send_as,
            } => self.decide_send(*conversation_id, message, *send_as, ctx),
            Command::IdentifyVisitor { visitor, contact } => {
                let live = self.contacts.resolve(*contact);
                if self.contacts.get(live).is_none() {
                    return Err(Rejection::ContactNotFound(*contact));
                }
                if let Some(known) = self.visitors.get(visitor) {
                    if self.contacts.resolve(*known) == live {
                        return Ok(Vec::new());
                    }
                    return Err(Rejection::VisitorAlreadyIdentified {
                        visitor: *visitor,
                        contact: *known,
                    });
                }
                let mut events = vec![Event::VisitorIdentified {
                    visitor: *visitor,
                    contact: live,
                }];
                let target = self.advanced_identity(ParticipantId::Contact(live));
                let from: Vec<ConversationId> = self
                    .owners
                    .get(&ParticipantId::Visitor(*visitor))
                    .map(|c| self.root_of(*c))
                    .into_iter()
                    .collect();
                self.fold_conversations(&mut events, target, from, ctx, ids)?;
                Ok(events)
            }
            Command::RegisterMember {
                member,
                contact,
                login_email,
            } => {
                let live = self.contacts.resolve(*contact);
                if self.contacts.get(live).is_none() {
                    return Err(Rejection::ContactNotFound(*contact));
                }
                if let Some(existing) = self.member(*member) {
                    if existing.contact_id == live {
                        return Ok(Vec::new());
                    }
                    return Err(Rejection::MemberAlreadyExists {
                        member: *member,
                        contact: existing.contact_id,
                    });
                }
                if let Some(other) = self.member_of(live) {
                    return Err(Rejection::ContactAlreadyMember {
                        contact: live,
                        member: other,
                    });
                }
                let stamp = Sequence::next_after(self.last_sequence, ctx.now)
                    .ok_or(Rejection::ClockExhausted)?;
                let mut events = vec![Event::MemberRegistered {
                    member: *member,
                    contact: live,
                    login_email: login_email.clone(),
                    stamp,
                }];
                let from: Vec<ConversationId> = self
                    .owners
                    .get(&ParticipantId::Contact(live))
                    .map(|c| self.root_of(*c))
                    .into_iter()
                    .collect();
                self.fold_conversations(
                    &mut events,
                    ParticipantId::Member(*member),
                    from,
                    ctx,
                    ids,
                )?;
                Ok(events)
            }
            Command::CreateContact { contact_id, draft } => {
                let contact = self
                    .contacts
                    .plan_create(*contact_id, draft.clone(), ctx.now)?;
                Ok(vec![Event::ContactCreated { contact }])
            }
            Command::UpdateContact {
                contact_id,
                expected_revision,
                patch,
                allow_duplicates,
            } => {
                let contact = self.contacts.plan_update(
                    *contact_id,
                    *expected_revision,
                    patch,
                    *allow_duplicates,
                    self.member_of(*contact_id),
                    ctx.now,
                )?;
                Ok(vec![Event::ContactUpdated { contact }])
            }
            Command::LabelContact {
                contact_id,
                add,
                remove,
            } => Ok(self
                .contacts
                .plan_labels(*contact_id, add, remove, ctx.now)?
                .map(|contact| Event::ContactUpdated { contact })
                .into_iter()
                .collect()),
            Command::DeleteContact { contact_id } => {
                let revision = self.contacts.plan_delete(*contact_id)?;
                if let Some(member) = self.member_of(*contact_id) {
                    return Err(DeleteContactError::IsMember {
                        contact: *contact_id,
                        member,
                    }
                    .into());
                }
                Ok(vec![Event::ContactDeleted {
                    contact_id: *contact_id,
                    revision,
                }])
            }
            Command::MergeContacts {
                target,
                expected_revision,
                sources,
            } => {
                let merged = self.preview_contact_merge(
                    *target,
                    Some(*expected_revision),
                    sources,
                    ctx.now,
                )?;
                let mut events = vec![Event::ContactsMerged {
                    target: merged,
                    sources: sources.clone(),
                }];
                let survivor = match self.member_of(*target) {
                    Some(m) => ParticipantId::Member(m),
                    None => ParticipantId::Contact(*target),
                };
                let from: Vec<ConversationId> = sources
                    .iter()
                    .filter_map(|s| self.owners.get(&ParticipantId::Contact(*s)))
                    .map(|c| self.root_of(*c))
                    .collect();
                self.fold_conversations(&mut events, survivor, from, ctx, ids)?;
                Ok(events)
            }
            Command::InteractWithButton {
                conversation_id,
                message_id,
                interaction_id,
            } => {
                let root = self.live_root(*conversation_id)?;
                let not_found = Rejection::MessageNotFound {
                    conversation_id: *conversation_id,
                    message_id: *message_id,
                };
                let message = self.message(*message_id).ok_or(not_found.clone())?;
                if self.root_of(message.conversation_id) != root {
                    return Err(not_found);
                }
                let button = message.postback_button(interaction_id).ok_or_else(|| {
                    Rejection::InteractionNotFound {
                        message_id: *message_id,
                        interaction_id: interaction_id.clone(),
                    }
                })?;
                let app_id = match &button.action {
                    ButtonAction::Postback { app_id, .. } => *app_id,
                    ButtonAction::Launch { .. } => None,
                };
                let interacted_by = self
                    .conversations
                    .get(&root)
                    .and_then(|r| r.participant)
                    .map_or(Sender::Unknown, |p| self.sender_for(p));
                Ok(vec![Event::ButtonInteracted {
                    conversation_id: root,
                    message_id: *message_id,
                    interaction_id: interaction_id.clone(),
                    app_id,
                    interacted_by,
                }])
            }
            Command::EraseParticipant { participant } => {
                self.check_participant(*participant)?;
                let conversations = match self.live_conversation_of(*participant) {
                    Some(root) => self.tree_of(root),
                    None => Vec::new(),
                };
                let contact = match self.advanced_identity(*participant) {
                    ParticipantId::Contact(c) => Some(c),
                    ParticipantId::Member(m) => self.member(m).map(|m| m.contact_id),
                    ParticipantId::Visitor(_) => None,
                }
                .and_then(|c| self.contacts.get(self.contacts.resolve(c)))
                .map(|c| Contact {
                    revision: c.revision.saturating_add(1),
                    updated_date: ctx.now.max(c.updated_date),
                    name: ContactName::default(),
                    emails: Vec::new(),
                    phones: Vec::new(),
                    // Labels classify the contact for the business; everything else a
                    // caller set is the person's data.
                    details: ContactDetails {
                        labels: c.details.labels.clone(),
                        ..ContactDetails::default()
                    },
                    ..c.clone()
                });
                Ok(vec![Event::ParticipantErased {
                    participant: *participant,
                    conversations,
                    up_to: self.last_sequence,
                    contact,
                }])
            }
            Command::FindOrCreateLabel { display_name } => {
                match self.contacts.catalog().plan_label(display_name, ctx.now)? {
                    Some(label) => Ok(vec![Event::LabelSaved {
                        label,
                        stamp: self.next_stamp(ctx)?,
                    }]),
                    None => Ok(Vec::new()),
                }
            }
            Command::RenameLabel { key, display_name } => {
                match self
                    .contacts
                    .catalog()
                    .plan_label_rename(key, display_name, ctx.now)?
                {
                    Some(label) => Ok(vec![Event::LabelSaved {
                        label,
                        stamp: self.next_stamp(ctx)?,
                    }]),
                    None => Ok(Vec::new()),
                }
            }
            Command::DeleteLabel { key } => {
                self.contacts.catalog().plan_label_delete(key)?;
                let mut events = vec![Event::LabelDeleted {
                    key: key.clone(),
                    stamp: self.next_stamp(ctx)?,
                }];
                events.extend(
                    self.contacts
                        .plan_unlabel_all(key, ctx.now)
                        .into_iter()
                        .map(|contact| Event::ContactUpdated { contact }),
                );
                Ok(events)
            }
            Command::FindOrCreateExtendedField {
                display_name,
                data_type,
            } => match self
                .contacts
                .catalog()
                .plan_field(display_name, *data_type, ctx.now)?
            {
                Some(field) => Ok(vec![Event::ExtendedFieldSaved {
                    field,
                    stamp: self.next_stamp(ctx)?,
                }]),
                None => Ok(Vec::new()),
            },
            Command::RenameExtendedField { key, display_name } => {
                match self
                    .contacts
                    .catalog()
                    .plan_field_rename(key, display_name, ctx.now)?
                {
                    Some(field) => Ok(vec![Event::ExtendedFieldSaved {
                        field,
                        stamp: self.next_stamp(ctx)?,
                    }]),
                    None => Ok(Vec::new()),
                }
            }
            Command::DeleteExtendedField { key } => {
                self.contacts.catalog().plan_field_delete(key)?;
                let mut events = vec![Event::ExtendedFieldDeleted {
                    key: key.clone(),
                    stamp: self.next_stamp(ctx)?,
                }];
                events.extend(
                    self.contacts
                        .plan_clear_field(key, ctx.now)
                        .into_iter()
                        .map(|contact| Event::ContactUpdated { contact }),
                );
                Ok(events)
            }
            Command::RevertConversationMerge { conversation } => {
                self.decide_revert(*conversation, ctx)
            }
        }
    }

    /// Revert Conversation Merge's decision (see [`Command::RevertConversationMerge`]).
    pub(super) fn decide_revert(
        &self,
        c: ConversationId,
        ctx: &Context,
    ) -> Result<Vec<Event>, Rejection> {
        let rec = self
            .conversations
            .get(&c)
            .ok_or(Rejection::ConversationNotFound(c))?;
        // The merge that holds `c` is its latest one not reverted; its target is c's parent.
        let (Some(target), Some((merged_at, _))) = (rec.parent, self.active_edges(c).next_back())
        else {
            let latest_reverted = self
                .merge_edges
                .get(&c)
                .into_iter()
                .flatten()
                .filter_map(|(s, t)| self.merge_reverts.get(&(c, *s, *t)).map(|r| (*s, *t, *r)))
                .max();
            return Err(match latest_reverted {
                Some((merged_at, target, reverted_at)) if self.active_edges(c).next().is_none() => {
                    RevertMergeError::AlreadyReverted {
                        conversation: c,
                        target,
                        merged_at,
                        reverted_at,
                    }
                }
                _ => RevertMergeError::NotMerged(c),
            }
            .into());
        };
        if let Some(later_target) = self.conversations.get(&target).and_then(|r| r.parent) {
            return Err(RevertMergeError::LaterMergeDepends {
                conversation: c,
                target,
                later_target,
                later_at: self
                    .active_edges(target)
                    .next_back()
                    .map_or(Sequence::ZERO, |(s, _)| s),
            }
            .into());
        }
        let person = |x: ConversationId| {
            self.conversations
                .get(&x)
                .and_then(|r| r.participant)
                .map(|p| self.advanced_identity(p))
        };
        if let (Some(a), Some(b)) = (person(c), person(target))
            && a == b
        {
            return Err(RevertMergeError::SamePerson {
                conversation: c,
                target,
                person: a,
            }
            .into());
        }
        Ok(vec![Event::ConversationMergeReverted {
            source: c,
            target,
            merged_at,
            stamp: self.next_stamp(ctx)?,
        }])
    }

    /// The next moment of the site's sequence clock at `ctx.now`.
    fn next_stamp(&self, ctx: &Context) -> Result<Sequence, Rejection> {
        Sequence::next_after(self.last_sequence, ctx.now).ok_or(Rejection::ClockExhausted)
    }

    fn decide_send(
        &self,
        conversation_id: ConversationId,
        draft: &crate::message::MessageDraft,
        send_as: SendAs,
        ctx: &Context,
    ) -> Result<Vec<Event>, Rejection> {
        let root = self.live_root(conversation_id)?;
        let app_id = match ctx.caller {
            Caller::App(a) => Some(a),
            _ => None,
        };
        let valid = draft.clone().validate(app_id)?;
        let sender = match send_as {
            SendAs::Participant => self
                .conversations
                .get(&root)
                .and_then(|r| r.participant)
                .map_or(Sender::Unknown, |p| self.sender_for(p)),
            SendAs::Caller | SendAs::BusinessUser => match ctx.caller {
                Caller::App(a) if send_as == SendAs::Caller => Sender::App(a),
                Caller::WixUser(u) => Sender::WixUser(u),
                _ => Sender::Unknown,
            },
        };
        // The hybrid logical clock: strictly above everything seen, and never behind `now`.
        // The id is the sequence's number; where an observed message already took that id,
        // the next free one (each step passes a message, so this ends).
        let mut sequence =
            Sequence::next_after(self.last_sequence, ctx.now).ok_or(Rejection::ClockExhausted)?;
        let id = loop {
            let id = MessageId(u64::try_from(sequence.0).map_err(|_| Rejection::ClockExhausted)?);
            if !self.message_index.contains_key(id) {
                break id;
            }
            sequence = Sequence(sequence.0.checked_add(1).ok_or(Rejection::ClockExhausted)?);
        };
        let message = Message {
            id,
            sequence,
            // The send time as the clock issued it, so that createdDate never disagrees with
            // sequence order (a clock that stepped back is absorbed by the clock).
            created_date: Timestamp::from_micros(sequence.0),
            conversation_id,
            content: valid.content,
            sender,
            badges: valid.badges,
            target_channels: valid.target_channels,
            source_channel: valid.source_channel,
            app_id,
            visibility: valid.visibility,
            direction: valid.direction,
            silent: valid.silent,
        };
        Ok(vec![Event::MessageSent { message }])
    }

    /// After an identity change: the conversations in `from` merge into the conversation of
    /// `target`, which is started first if it has none (Wix: "a new conversation is created
    /// and the previous conversation is merged into the new one").
    fn fold_conversations(
        &self,
        events: &mut Vec<Event>,
        target: ParticipantId,
        from: Vec<ConversationId>,
        ctx: &Context,
        ids: &mut dyn IdSource,
    ) -> Result<(), Rejection> {
        let existing = self.owners.get(&target).map(|c| self.root_of(*c));
        let mut sources: Vec<ConversationId> = Vec::new();
        for c in from {
            if Some(c) != existing && !sources.contains(&c) {
                sources.push(c);
            }
        }
        if sources.is_empty() {
            return Ok(());
        }
        let stamp =
            Sequence::next_after(self.last_sequence, ctx.now).ok_or(Rejection::ClockExhausted)?;
        let survivor = match existing {
            Some(c) => c,
            None => {
                let id = ConversationId(ids.next_id());
                events.push(Event::ConversationStarted {
                    conversation_id: id,
                    participant: target,
                });
                id
            }
        };
        events.push(Event::ConversationsMerged {
            sources,
            target: survivor,
            stamp,
        });
        Ok(())
    }

    fn check_participant(&self, p: ParticipantId) -> Result<(), Rejection> {
        match p {
            ParticipantId::Visitor(_) => Ok(()),
            ParticipantId::Contact(c) => {
                if self.contacts.get(self.contacts.resolve(c)).is_some() {
                    Ok(())
                } else {
                    Err(Rejection::ContactNotFound(c))
                }
            }
            ParticipantId::Member(m) => {
                if self.registrations.contains_key(&m) {
                    Ok(())
                } else {
                    Err(Rejection::MemberNotFound(m))
                }
            }
        }
    }

    /// What merging `sources` into `target` would make of the target, without changing
    /// anything (Preview Merge Contacts). With `expected_revision`, a stale revision is a
    /// conflict.
    pub fn preview_contact_merge(
        &self,
        target: ContactId,
        expected_revision: Option<u64>,
        sources: &[ContactId],
        now: Timestamp,
    ) -> Result<Contact, MergeContactsError> {
        let merged = self
            .contacts
            .plan_merge(target, expected_revision, sources, now)?;
        if let Some(member_source) = sources.iter().find(|s| self.member_of(**s).is_some()) {
            return Err(MergeContactsError::SourceIsMember(*member_source));
        }
        Ok(merged)
    }

    /// Decides a command and applies its events: the way an embedding service or the
    /// emulator runs the engine. Returns the recorded events (to store and announce).
    pub fn execute(
        &mut self,
        command: &Command,
        ctx: &Context,
        ids: &mut dyn IdSource,
    ) -> Result<Vec<EventEnvelope>, Rejection> {
        let events = self.decide(command, ctx, ids)?;
        let envelopes: Vec<EventEnvelope> = events
            .into_iter()
            .map(|event| {
                EventEnvelope::new(
                    self.config.site.clone(),
                    EventId(ids.next_id()),
                    ctx.now,
                    event,
                )
            })
            .collect();
        for e in &envelopes {
            self.apply(e);
        }
        Ok(envelopes)
    }
}
