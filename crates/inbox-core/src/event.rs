//! Events: past-tense facts, the only thing the state is built from.
//!
//! A domain [`Event`] carries no storage detail; the [`EventEnvelope`] around it carries the
//! event id, the schema version, the site and the time it was recorded. Serialized events
//! are a compatibility promise: a change of shape bumps [`SCHEMA_VERSION`], and older
//! versions are upcast where they are read (the store's job).

use serde::{Deserialize, Serialize};

use crate::catalog::{FieldDefinition, LabelDefinition};
use crate::contacts::Contact;
use crate::ids::{
    AppId, ContactId, ConversationId, EventId, MemberId, MessageId, Sequence, SiteId, Timestamp,
    VisitorId,
};
use crate::message::{Message, Sender};
use crate::participant::ParticipantId;

/// The version of the serialized shape of [`Event`] that this build writes.
///
/// 1: the first; 2: `ParticipantErased` gained `up_to`, and `Message` lists `content` and
/// `badges` last; 3: `MemberRegistered` gained `stamp`; 4: `Contact` gained `details`,
/// `source` and `last_activity`, and `ContactUpdated` and `ContactDeleted` were added; 5:
/// `LabelSaved`, `LabelDeleted`, `ExtendedFieldSaved` and `ExtendedFieldDeleted` were added
/// after the others (so version 4 bytes read as version 5); 6: `ConversationMergeReverted`
/// was added after them (version 4 and 5 bytes read as version 6). `inbox-store` reads every
/// version and upcasts it.
pub const SCHEMA_VERSION: u16 = 6;

/// An event with its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique id; deliveries and retries of one event share it.
    pub event_id: EventId,
    /// Shape version of `event` (see [`SCHEMA_VERSION`]).
    pub schema_version: u16,
    /// The site the event belongs to.
    pub site: SiteId,
    /// When it was recorded (by the engine or the receiver of a webhook). The fold never
    /// reads it, so the state does not depend on when events arrive.
    pub recorded_at: Timestamp,
    /// The fact.
    pub event: Event,
}

/// Everything that can happen in an inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A conversation was opened for a participant.
    ConversationStarted {
        /// The new conversation.
        conversation_id: ConversationId,
        /// Whose it is.
        participant: ParticipantId,
    },
    /// A message was sent. `message.conversation_id` is the conversation it was sent to,
    /// which may since have been merged; the message lives in the survivor.
    MessageSent {
        /// The message, with its id and sequence.
        message: Message,
    },
    /// Conversations were merged into a target (a lifecycle change or a contact merge).
    ConversationsMerged {
        /// The conversations merged away.
        sources: Vec<ConversationId>,
        /// The survivor.
        target: ConversationId,
        /// When, on the site's sequence clock. Orders conflicting merges and pins cursors.
        stamp: Sequence,
    },
    /// An anonymous visitor gave contact details and became a contact.
    VisitorIdentified {
        /// The visitor.
        visitor: VisitorId,
        /// The contact it became.
        contact: ContactId,
    },
    /// A contact registered as a site member.
    MemberRegistered {
        /// The new member.
        member: MemberId,
        /// Its contact.
        contact: ContactId,
        /// The email it logs in with.
        login_email: Option<String>,
        /// When, on the site's sequence clock. An erasure of the contact covers the
        /// registrations stamped at or before its `up_to`, and only those (a member
        /// registered after a privacy request keeps its login email).
        stamp: Sequence,
    },
    /// A contact was created.
    ContactCreated {
        /// The contact, at revision 1.
        contact: Contact,
    },
    /// A contact changed (Update Contact, Label or Unlabel Contact): the whole record at its
    /// new revision. Folded like every contact record: the highest revision wins.
    ContactUpdated {
        /// The contact after the change.
        contact: Contact,
    },
    /// A contact was deleted. The id never stands for a live contact again.
    ContactDeleted {
        /// The contact.
        contact_id: ContactId,
        /// The revision it had when deleted.
        revision: u64,
    },
    /// Contacts were merged into a target.
    ContactsMerged {
        /// The target as it is after the merge (its new revision included).
        target: Contact,
        /// The contacts merged away.
        sources: Vec<ContactId>,
    },
    /// A participant clicked a postback button.
    ButtonInteracted {
        /// The conversation of the message.
        conversation_id: ConversationId,
        /// The message with the button.
        message_id: MessageId,
        /// The button's interaction id.
        interaction_id: String,
        /// The app that receives the interaction.
        app_id: Option<AppId>,
        /// Who clicked.
        interacted_by: Sender,
    },
    /// A privacy request erased a participant: message content is redacted, the structure
    /// (ids, sequences, dates, merges) is kept.
    ParticipantErased {
        /// Who asked.
        participant: ParticipantId,
        /// Every conversation whose messages are redacted.
        conversations: Vec<ConversationId>,
        /// Messages up to this sequence (those that existed when the request was decided)
        /// are redacted; later ones, if the person writes again, are not.
        up_to: Sequence,
        /// The contact with its personal data removed, if the participant had one.
        contact: Option<Contact>,
    },
    /// A label was made or renamed: the whole definition. Per key, the save or deletion with
    /// the highest stamp counts (a deletion wins a tie).
    LabelSaved {
        /// The label.
        label: LabelDefinition,
        /// When, on the site's sequence clock.
        stamp: Sequence,
    },
    /// A label was deleted. The contacts that carried it lose it by their own
    /// `ContactUpdated` events, decided with this one.
    LabelDeleted {
        /// Its key.
        key: String,
        /// When, on the site's sequence clock.
        stamp: Sequence,
    },
    /// An extended field was made or renamed: the whole definition (the rule of
    /// `LabelSaved`).
    ExtendedFieldSaved {
        /// The field.
        field: FieldDefinition,
        /// When, on the site's sequence clock.
        stamp: Sequence,
    },
    /// An extended field was deleted; the contacts that held a value of it lose it by their
    /// own `ContactUpdated` events.
    ExtendedFieldDeleted {
        /// Its key.
        key: String,
        /// When, on the site's sequence clock.
        stamp: Sequence,
    },
    /// A conversation merge was reverted: the merge of `source` into `target` stamped
    /// `merged_at` counts for no moment at or after `stamp`. The merge and its revert fold in
    /// either order; a later merge of the same pair is another fact, with its own stamp.
    ConversationMergeReverted {
        /// The conversation that was merged away.
        source: ConversationId,
        /// The conversation it was merged into.
        target: ConversationId,
        /// The stamp of the merge reverted.
        merged_at: Sequence,
        /// When, on the site's sequence clock.
        stamp: Sequence,
    },
}

impl EventEnvelope {
    /// An envelope in the current schema version: `event` of `site`, under `event_id` (the
    /// same id for every delivery and retry of this one fact), recorded at `recorded_at`.
    pub fn new(site: SiteId, event_id: EventId, recorded_at: Timestamp, event: Event) -> Self {
        EventEnvelope {
            event_id,
            schema_version: SCHEMA_VERSION,
            site,
            recorded_at,
            event,
        }
    }
}

impl Event {
    /// A short stable name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ConversationStarted { .. } => "conversation_started",
            Event::MessageSent { .. } => "message_sent",
            Event::ConversationsMerged { .. } => "conversations_merged",
            Event::VisitorIdentified { .. } => "visitor_identified",
            Event::MemberRegistered { .. } => "member_registered",
            Event::ContactCreated { .. } => "contact_created",
            Event::ContactUpdated { .. } => "contact_updated",
            Event::ContactDeleted { .. } => "contact_deleted",
            Event::ContactsMerged { .. } => "contacts_merged",
            Event::ButtonInteracted { .. } => "button_interacted",
            Event::ParticipantErased { .. } => "participant_erased",
            Event::LabelSaved { .. } => "label_saved",
            Event::LabelDeleted { .. } => "label_deleted",
            Event::ExtendedFieldSaved { .. } => "extended_field_saved",
            Event::ExtendedFieldDeleted { .. } => "extended_field_deleted",
            Event::ConversationMergeReverted { .. } => "conversation_merge_reverted",
        }
    }
}
