//! The engine: the state of one site's inbox, `decide` (command -> events), `apply` (event ->
//! new state) and the queries.
//!
//! # How the state is laid out
//!
//! * Each conversation is a record with an optional `parent` (the conversation it was merged
//!   into). Following parents leads to the *root*, the live survivor.
//! * Only roots hold messages: a [`Timeline`] of `(sequence, Arc<Message>)` sorted by
//!   `(sequence, message id)`. A merge moves the merged root's timeline into the survivor's
//!   with [`Timeline::merge`], a single O(log n) append when one wholly precedes the other.
//! * Every message keeps the conversation it was sent to (`Message::conversation_id`), so
//!   the placement of any message is a function of that and of the merge edges; this is what
//!   makes the fold converge whatever order events arrive in.
//! * Merge edges are kept as a set. A source merged into two targets, or merges forming a
//!   cycle, are resolved by a rule over the edge set alone (the latest stamp wins; a cycle is
//!   broken at its oldest edge) and reported as an [`Anomaly`].
//!
//! Everything is an `imbl` structure or an `Arc`, so cloning an `Inbox` is O(1): that is a
//! snapshot, and it shares structure with the live state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::command::{Caller, Command, Context, IdSource, Rejection, SendAs};
use crate::contacts::{Contact, ContactDirectory, ContactName, MergeContactsError, SortOrder};
use crate::cursor::{CursorError, CursorState};
use crate::event::{Event, EventEnvelope, SCHEMA_VERSION};
use crate::ids::{
    AppId, ContactId, ConversationId, EventId, MemberId, MessageId, Sequence, SiteId, Timestamp,
    VisitorId,
};
use crate::index::MessageIndex;
use crate::message::{ButtonAction, Channel, Message, Sender};
use crate::participant::{Member, Participant, ParticipantId};
use crate::timeline::{Entry, Timeline};

pub mod image;

/// Messages a page returns when no limit is given.
pub const DEFAULT_PAGE_LIMIT: usize = 30;
/// Most messages a page returns.
pub const MAX_PAGE_LIMIT: usize = 100;

/// Name and avatar shown for a side of a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayData {
    /// Display name.
    pub name: Option<String>,
    /// Avatar.
    pub image_url: Option<String>,
}

/// Per-site settings of an [`Inbox`]. Not part of the event history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxConfig {
    /// The site.
    pub site: SiteId,
    /// How the business appears in conversations.
    pub business: DisplayData,
    /// Key of the MAC that makes paging cursors tamper-evident. Keep it secret and stable
    /// across restarts, or outstanding cursors stop working.
    pub cursor_key: [u8; 16],
}

impl InboxConfig {
    /// Settings for a site, with no business display data and the given cursor key.
    pub fn new(site: SiteId, cursor_key: [u8; 16]) -> Self {
        InboxConfig {
            site,
            business: DisplayData::default(),
            cursor_key,
        }
    }
}

/// Something the fold noticed in events from outside and resolved by a fixed rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Anomaly {
    /// A conversation was merged into several targets; `chosen` (the latest merge) won.
    ConflictingMergeTargets {
        /// The conversation merged away.
        source: ConversationId,
        /// Every target it was merged into.
        targets: Vec<ConversationId>,
        /// The one that counts.
        chosen: ConversationId,
    },
    /// Merges formed a cycle; it was broken by ignoring the oldest merge in it.
    MergeCycle {
        /// The conversations on the cycle.
        members: Vec<ConversationId>,
        /// The conversation whose merge was ignored (it stays live).
        broken_at: ConversationId,
    },
    /// A conversation was "merged" into itself; ignored.
    SelfMerge {
        /// The conversation.
        conversation: ConversationId,
    },
    /// Two different messages arrived with one id; the smaller (by total order) is kept.
    ConflictingMessage {
        /// The id.
        message_id: MessageId,
    },
    /// Conflicting facts about one participant; the smallest candidate is kept.
    ConflictingIdentity {
        /// Whose.
        participant: ParticipantId,
        /// What it was said to be (contacts, members or conversations, as uuids).
        candidates: Vec<uuid::Uuid>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum AnomalyKey {
    Merge(ConversationId),
    SelfMerge(ConversationId),
    Cycle(ConversationId),
    Message(MessageId),
    Identity(u8, ParticipantId),
}

/// A recorded postback click.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Interaction {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The message.
    pub message_id: MessageId,
    /// The button.
    pub interaction_id: String,
    /// The app it goes to.
    pub app_id: Option<AppId>,
    /// Who clicked.
    pub interacted_by: Sender,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ConversationRecord {
    participant: Option<ParticipantId>,
    parent: Option<ConversationId>,
    messages: Timeline,
}

/// The sequence a message id stands for when the two are issued from one clock.
fn natural_sequence(id: MessageId) -> Option<Sequence> {
    i64::try_from(id.0).ok().map(Sequence)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Locator {
    conversation: ConversationId,
    sequence: Sequence,
}

/// The state of one site's inbox. Cloning is O(1) (a snapshot).
///
/// To persist one, take its [`Image`](image::Image) ([`Inbox::image`]) and rebuild it with
/// [`Inbox::from_image`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbox {
    config: Arc<InboxConfig>,
    conversations: OrdMap<ConversationId, ConversationRecord>,
    owners: OrdMap<ParticipantId, ConversationId>,
    visitors: OrdMap<VisitorId, ContactId>,
    members: OrdMap<MemberId, Member>,
    member_of_contact: OrdMap<ContactId, MemberId>,
    contacts: ContactDirectory,
    /// Where each message was sent (its provenance): the index behind deduplication by id
    /// and lookup by id. Derived from the messages (an image does not carry it).
    message_index: MessageIndex,
    /// The sequence of the messages whose sequence is not their id. The engine issues both
    /// from one clock, so for its own messages this stays empty and the index holds 24 bytes
    /// an entry instead of 32.
    odd_sequences: OrdMap<MessageId, Sequence>,
    merge_edges: OrdMap<ConversationId, OrdMap<ConversationId, Sequence>>,
    merged_from: OrdMap<ConversationId, OrdSet<ConversationId>>,
    /// Conversations erased by a privacy request, with the sequence up to which their
    /// messages are redacted.
    erased: OrdMap<ConversationId, Sequence>,
    // Contacts a privacy request erased: their member's login email is forgotten, also when
    // the registration is folded after the erasure (convergence).
    erased_contacts: OrdSet<ContactId>,
    interactions: OrdSet<Interaction>,
    anomalies: OrdMap<AnomalyKey, Anomaly>,
    last_sequence: Sequence,
}

/// A conversation as the queries return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationView {
    /// The live conversation's id.
    pub id: ConversationId,
    /// Whose it is (unknown for a conversation only seen in webhooks).
    pub participant: Option<Participant>,
    /// Where the participant can receive messages.
    pub channels: Vec<Channel>,
    /// How the business appears.
    pub business_display: DisplayData,
    /// How the participant appears.
    pub participant_display: DisplayData,
    /// The id asked for, when it had been merged into this one.
    pub redirected_from: Option<ConversationId>,
}

/// Why a conversation could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum GetConversationError {
    /// No conversation has this id.
    #[error("conversation {0} not found")]
    NotFound(ConversationId),
}

/// Which messages a listing shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VisibilityFilter {
    /// Everything (`BUSINESS`: what site contributors see).
    #[default]
    All,
    /// Only what the participant can see (`BUSINESS_AND_PARTICIPANT`).
    ParticipantVisible,
}

/// A List Messages request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMessages {
    /// The conversation (a merged id reads the survivor).
    pub conversation_id: ConversationId,
    /// Which messages.
    pub visibility: VisibilityFilter,
    /// By sequence; default descending (newest first).
    pub order: SortOrder,
    /// 1 to 100; default 30.
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`; the visibility and order must be the same.
    pub cursor: Option<String>,
}

impl ListMessages {
    /// The first page of a conversation, newest first, everything visible.
    pub fn first_page(conversation_id: ConversationId) -> Self {
        ListMessages {
            conversation_id,
            visibility: VisibilityFilter::All,
            order: SortOrder::Desc,
            limit: None,
            cursor: None,
        }
    }
}

/// One page of messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessagePage<'a> {
    /// The messages, in the requested order.
    pub messages: Vec<&'a Message>,
    /// The cursor of the next page; absent at the end.
    pub next_cursor: Option<String>,
    /// The live conversation that was read.
    pub conversation_id: ConversationId,
}

/// Why messages could not be listed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ListMessagesError {
    /// No conversation has this id.
    #[error("conversation {0} not found")]
    ConversationNotFound(ConversationId),
    /// Limit 0 or above 100.
    #[error("limit must be 1 to {MAX_PAGE_LIMIT}; got {0}")]
    IllegalLimit(usize),
    /// The cursor was refused.
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

impl Inbox {
    /// An empty inbox.
    pub fn new(config: InboxConfig) -> Self {
        Inbox {
            config: Arc::new(config),
            conversations: OrdMap::new(),
            owners: OrdMap::new(),
            visitors: OrdMap::new(),
            members: OrdMap::new(),
            member_of_contact: OrdMap::new(),
            contacts: ContactDirectory::default(),
            message_index: MessageIndex::default(),
            odd_sequences: OrdMap::new(),
            merge_edges: OrdMap::new(),
            merged_from: OrdMap::new(),
            erased: OrdMap::new(),
            erased_contacts: OrdSet::new(),
            interactions: OrdSet::new(),
            anomalies: OrdMap::new(),
            last_sequence: Sequence::ZERO,
        }
    }

    /// The settings.
    pub fn config(&self) -> &InboxConfig {
        &self.config
    }

    /// The same state under other settings (e.g. a state loaded from a snapshot, given the
    /// settings of the running process: settings are not part of the history).
    pub fn with_config(mut self, config: InboxConfig) -> Self {
        self.config = Arc::new(config);
        self
    }

    // ----------------------------------------------------------------------------------
    // decide

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
                self.fold_conversations(&mut events, target, from, ctx, ids);
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
                if let Some(existing) = self.members.get(member) {
                    if self.contacts.resolve(existing.contact_id) == live {
                        return Ok(Vec::new());
                    }
                    return Err(Rejection::MemberAlreadyExists {
                        member: *member,
                        contact: existing.contact_id,
                    });
                }
                if let Some(other) = self.member_of_contact.get(&live) {
                    return Err(Rejection::ContactAlreadyMember {
                        contact: live,
                        member: *other,
                    });
                }
                let mut events = vec![Event::MemberRegistered {
                    member: *member,
                    contact: live,
                    login_email: login_email.clone(),
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
                );
                Ok(events)
            }
            Command::CreateContact { contact_id, draft } => {
                let contact = self
                    .contacts
                    .plan_create(*contact_id, draft.clone(), ctx.now)?;
                Ok(vec![Event::ContactCreated { contact }])
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
                let survivor = match self.member_of_contact.get(target) {
                    Some(m) => ParticipantId::Member(*m),
                    None => ParticipantId::Contact(*target),
                };
                let from: Vec<ConversationId> = sources
                    .iter()
                    .filter_map(|s| self.owners.get(&ParticipantId::Contact(*s)))
                    .map(|c| self.root_of(*c))
                    .collect();
                self.fold_conversations(&mut events, survivor, from, ctx, ids);
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
                    ParticipantId::Member(m) => self.members.get(&m).map(|m| m.contact_id),
                    ParticipantId::Visitor(_) => None,
                }
                .and_then(|c| self.contacts.get(self.contacts.resolve(c)))
                .map(|c| Contact {
                    revision: c.revision.saturating_add(1),
                    updated_date: ctx.now.max(c.updated_date),
                    name: ContactName::default(),
                    emails: Vec::new(),
                    phones: Vec::new(),
                    ..c.clone()
                });
                Ok(vec![Event::ParticipantErased {
                    participant: *participant,
                    conversations,
                    up_to: self.last_sequence,
                    contact,
                }])
            }
        }
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
        let mut sequence = Sequence::next_after(self.last_sequence, ctx.now);
        let mut id = MessageId(u64::try_from(sequence.0).unwrap_or_default());
        while self.message_index.contains_key(id) {
            sequence = Sequence(sequence.0.saturating_add(1));
            id = MessageId(u64::try_from(sequence.0).unwrap_or_default());
        }
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
    ) {
        let existing = self.owners.get(&target).map(|c| self.root_of(*c));
        let mut sources: Vec<ConversationId> = Vec::new();
        for c in from {
            if Some(c) != existing && !sources.contains(&c) {
                sources.push(c);
            }
        }
        if sources.is_empty() {
            return;
        }
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
            stamp: Sequence::next_after(self.last_sequence, ctx.now),
        });
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
                if self.members.contains_key(&m) {
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
        if let Some(member_source) = sources
            .iter()
            .find(|s| self.member_of_contact.contains_key(*s))
        {
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
            .map(|event| EventEnvelope {
                event_id: EventId(ids.next_id()),
                schema_version: SCHEMA_VERSION,
                site: self.config.site.clone(),
                recorded_at: ctx.now,
                event,
            })
            .collect();
        for e in &envelopes {
            self.apply(e);
        }
        Ok(envelopes)
    }

    // ----------------------------------------------------------------------------------
    // apply

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

    fn ensure_conversation(&mut self, id: ConversationId) -> &mut ConversationRecord {
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
    fn sequence_of(&self, id: MessageId) -> Sequence {
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

    fn add_merge_edge(&mut self, source: ConversationId, target: ConversationId, stamp: Sequence) {
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
        if edges
            .and_then(|m| m.get(&target))
            .is_some_and(|s| *s >= stamp)
        {
            return; // already known
        }
        let had_edges = edges.is_some_and(|m| !m.is_empty());
        self.merge_edges
            .entry(source)
            .or_default()
            .insert(target, stamp);
        self.merged_from.entry(target).or_default().insert(source);
        if !had_edges && self.root_of(target) != source {
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

    /// The slow path, for conflicting or cyclic merges (only seen with events from outside):
    /// recompute parents for every conversation connected to `seed` from the edge set alone,
    /// then put every message of those conversations back under its new root.
    fn recompute_component(&mut self, seed: ConversationId) {
        let mut component = BTreeSet::new();
        let mut stack = vec![seed];
        while let Some(n) = stack.pop() {
            if !component.insert(n) {
                continue;
            }
            if let Some(out) = self.merge_edges.get(&n) {
                stack.extend(out.keys().copied());
            }
            if let Some(inc) = self.merged_from.get(&n) {
                stack.extend(inc.iter().copied());
            }
        }
        // Each source's winning edge: the latest stamp, then the larger target id.
        let mut winner: BTreeMap<ConversationId, (Sequence, ConversationId)> = BTreeMap::new();
        for n in &component {
            self.anomalies.remove(&AnomalyKey::Merge(*n));
            self.anomalies.remove(&AnomalyKey::Cycle(*n));
            if let Some(out) = self.merge_edges.get(n) {
                if let Some((t, s)) = out.iter().max_by_key(|(t, s)| (**s, **t)) {
                    winner.insert(*n, (*s, *t));
                }
                if out.len() > 1
                    && let Some((_, chosen)) = winner.get(n)
                {
                    self.anomalies.insert(
                        AnomalyKey::Merge(*n),
                        Anomaly::ConflictingMergeTargets {
                            source: *n,
                            targets: out.keys().copied().collect(),
                            chosen: *chosen,
                        },
                    );
                }
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

    // ----------------------------------------------------------------------------------
    // queries

    /// The live conversation an id stands for: itself, or the survivor of its merges.
    pub fn root_of(&self, id: ConversationId) -> ConversationId {
        let mut cur = id;
        // Parents never form a cycle (cycles are broken on apply); the bound is a backstop.
        for _ in 0..=self.conversations.len() {
            match self.conversations.get(&cur).and_then(|r| r.parent) {
                Some(p) => cur = p,
                None => break,
            }
        }
        cur
    }

    fn live_root(&self, id: ConversationId) -> Result<ConversationId, Rejection> {
        if self.conversations.contains_key(&id) {
            Ok(self.root_of(id))
        } else {
            Err(Rejection::ConversationNotFound(id))
        }
    }

    /// Every conversation merged (directly or not) into `root`, and `root` itself.
    fn tree_of(&self, root: ConversationId) -> Vec<ConversationId> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            out.push(n);
            if let Some(children) = self.merged_from.get(&n) {
                stack.extend(
                    children
                        .iter()
                        .filter(|c| self.conversations.get(*c).and_then(|r| r.parent) == Some(n)),
                );
            }
        }
        out.sort();
        out
    }

    /// The most advanced identity of a participant: member > contact > visitor, following
    /// identifications and contact merges.
    pub fn advanced_identity(&self, p: ParticipantId) -> ParticipantId {
        let contact = match p {
            ParticipantId::Visitor(v) => match self.visitors.get(&v) {
                Some(c) => *c,
                None => return p,
            },
            ParticipantId::Contact(c) => c,
            ParticipantId::Member(_) => return p,
        };
        let contact = self.contacts.resolve(contact);
        match self.member_of_contact.get(&contact) {
            Some(m) => ParticipantId::Member(*m),
            None => ParticipantId::Contact(contact),
        }
    }

    /// The live conversation of a participant, by any id they have or had.
    pub fn live_conversation_of(&self, p: ParticipantId) -> Option<ConversationId> {
        let advanced = self.advanced_identity(p);
        self.owners
            .get(&advanced)
            .or_else(|| self.owners.get(&p))
            .map(|c| self.root_of(*c))
    }

    /// Get Conversation: follows merges and says when it did.
    pub fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<ConversationView, GetConversationError> {
        if !self.conversations.contains_key(&id) {
            return Err(GetConversationError::NotFound(id));
        }
        let root = self.root_of(id);
        Ok(self.view(root, (root != id).then_some(id)))
    }

    /// The live conversation of a participant, as a view.
    pub fn conversation_of(&self, p: ParticipantId) -> Option<ConversationView> {
        self.live_conversation_of(p).map(|c| self.view(c, None))
    }

    fn view(
        &self,
        root: ConversationId,
        redirected_from: Option<ConversationId>,
    ) -> ConversationView {
        let participant = self
            .conversations
            .get(&root)
            .and_then(|r| r.participant)
            .map(|p| self.advanced_identity(p));
        let contact_id = participant.and_then(|p| match p {
            ParticipantId::Contact(c) => Some(c),
            ParticipantId::Member(m) => self
                .members
                .get(&m)
                .map(|m| self.contacts.resolve(m.contact_id)),
            ParticipantId::Visitor(_) => None,
        });
        let contact = contact_id.and_then(|c| self.contacts.get(c));
        let mut channels = vec![Channel::Chat];
        if contact.is_some_and(|c| !c.emails.is_empty()) {
            channels.push(Channel::Email);
        }
        if contact.is_some_and(|c| !c.phones.is_empty()) {
            channels.push(Channel::Sms);
        }
        let name = contact.and_then(|c| c.name.display()).or_else(|| {
            match participant {
                Some(ParticipantId::Member(m)) => {
                    self.members.get(&m).and_then(|m| m.login_email.clone())
                }
                _ => None,
            }
            .or_else(|| contact.and_then(|c| c.primary_email().map(str::to_owned)))
        });
        ConversationView {
            id: root,
            participant: participant.map(|id| Participant { id, contact_id }),
            channels,
            business_display: self.config.business.clone(),
            participant_display: DisplayData {
                name,
                image_url: None,
            },
            redirected_from,
        }
    }

    /// A message by id, wherever it now lives.
    pub fn message(&self, id: MessageId) -> Option<&Message> {
        let conversation = self.message_index.get(id)?;
        let loc = Locator {
            conversation,
            sequence: self.sequence_of(id),
        };
        let root = self.root_of(loc.conversation);
        self.conversations
            .get(&root)?
            .messages
            .find((loc.sequence, id))
            .map(|e| &*e.msg)
    }

    /// How many messages the inbox holds.
    pub fn message_count(&self) -> usize {
        self.message_index.len()
    }

    /// The ids of every live (never merged away) conversation.
    pub fn live_conversations(&self) -> impl Iterator<Item = ConversationId> + '_ {
        self.conversations
            .iter()
            .filter(|(_, r)| r.parent.is_none())
            .map(|(id, _)| *id)
    }

    /// Every message of a live conversation, in order (oldest first).
    pub fn messages_of(&self, id: ConversationId) -> impl Iterator<Item = &Message> + '_ {
        let root = self.root_of(id);
        self.conversations
            .get(&root)
            .into_iter()
            .flat_map(|r| r.messages.iter().map(|e| &*e.msg))
    }

    /// The contact list.
    pub fn contacts(&self) -> &ContactDirectory {
        &self.contacts
    }

    /// A member.
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// The contact a visitor became, if it did.
    pub fn contact_of_visitor(&self, id: VisitorId) -> Option<ContactId> {
        self.visitors.get(&id).copied()
    }

    /// Recorded postback clicks.
    pub fn interactions(&self) -> impl Iterator<Item = &Interaction> + '_ {
        self.interactions.iter()
    }

    /// What the fold noticed and resolved by rule.
    pub fn anomalies(&self) -> impl Iterator<Item = &Anomaly> + '_ {
        self.anomalies.values()
    }

    /// The highest sequence issued or seen: the site's clock.
    pub fn last_sequence(&self) -> Sequence {
        self.last_sequence
    }

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

impl Inbox {
    fn sender_for(&self, p: ParticipantId) -> Sender {
        match self.advanced_identity(p) {
            ParticipantId::Visitor(v) => Sender::Visitor(v),
            ParticipantId::Contact(c) => Sender::Contact(c),
            ParticipantId::Member(m) => Sender::Member {
                member: m,
                contact: self.members.get(&m).map(|m| m.contact_id),
            },
        }
    }
}
