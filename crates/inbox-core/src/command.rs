//! Commands: what a caller asks the engine to do, and what it needs from the outside world
//! (the time and fresh ids) to decide.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use std::collections::BTreeSet;

use crate::catalog::{CatalogError, FieldDataType};
use crate::contacts::{
    ContactDraft, ContactPatch, CreateContactError, DeleteContactError, LabelContactError,
    MergeContactsError, UpdateContactError,
};
use crate::ids::{
    AppId, ContactId, ConversationId, MemberId, MessageId, Sequence, Timestamp, VisitorId,
    WixUserId,
};
use crate::message::{MessageDraft, MessageRejection};
use crate::participant::ParticipantId;

/// Where fresh ids come from. The core never draws randomness: the server passes a source
/// backed by UUIDv4, tests a counter.
pub trait IdSource {
    /// A new, unique id.
    fn next_id(&mut self) -> Uuid;
}

/// Ids counted up from a start: deterministic, for tests, benches and fuzzing.
#[derive(Clone, Debug, Default)]
pub struct SequentialIds {
    next: u128,
}

impl SequentialIds {
    /// Ids from `start` upwards.
    pub fn starting_at(start: u128) -> Self {
        SequentialIds { next: start }
    }
}

impl IdSource for SequentialIds {
    fn next_id(&mut self) -> Uuid {
        self.next = self.next.wrapping_add(1);
        Uuid::from_u128(self.next)
    }
}

/// Who is calling (the identity of the API key or token).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// A Wix app.
    App(AppId),
    /// A Wix user (the site owner or a contributor).
    WixUser(WixUserId),
    /// Nobody in particular (an API key with no identity attached).
    #[default]
    Anonymous,
}

/// The world as a command sees it: the current time and the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// Now, as the caller's clock says.
    pub now: Timestamp,
    /// Who asks.
    pub caller: Caller,
}

impl Context {
    /// A context at `now` for an anonymous caller.
    pub fn at(now: Timestamp) -> Self {
        Context {
            now,
            caller: Caller::Anonymous,
        }
    }
}

/// On whose behalf a message is sent (`sendAs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendAs {
    /// The caller (an app sends as itself).
    #[default]
    Caller,
    /// The conversation's participant.
    Participant,
    /// The business (a Wix user of the site).
    BusinessUser,
}

/// What a caller can ask.
// Commands are transient (one at a time, never stored in bulk), so the size of the largest
// variant costs nothing worth a box and an extra allocation on the hot send path.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Get Or Create Conversation: the live conversation of the participant's most advanced
    /// identity, created if there is none.
    GetOrCreateConversation {
        /// Any id the participant has or had.
        participant: ParticipantId,
    },
    /// Send Message.
    SendMessage {
        /// Where to (a merged id lands in the survivor).
        conversation_id: ConversationId,
        /// What.
        message: MessageDraft,
        /// On whose behalf.
        send_as: SendAs,
    },
    /// An anonymous visitor became a contact (gave contact details).
    IdentifyVisitor {
        /// The visitor.
        visitor: VisitorId,
        /// The contact it becomes.
        contact: ContactId,
    },
    /// A contact registered as a site member.
    RegisterMember {
        /// The new member id.
        member: MemberId,
        /// The contact.
        contact: ContactId,
        /// Login email.
        login_email: Option<String>,
    },
    /// Create Contact.
    CreateContact {
        /// The new contact's id.
        contact_id: ContactId,
        /// Its data.
        draft: ContactDraft,
    },
    /// Update Contact: the fields `patch` gives replace the contact's.
    UpdateContact {
        /// The contact (a live one; a merged-away id is not found).
        contact_id: ContactId,
        /// The contact's revision as the caller last read it.
        expected_revision: u64,
        /// What changes.
        patch: ContactPatch,
        /// Allow an email or phone that another contact already has.
        allow_duplicates: bool,
    },
    /// Label Contact, Unlabel Contact (and both at once): no revision check, as in Wix.
    LabelContact {
        /// The contact.
        contact_id: ContactId,
        /// Label keys to add.
        add: BTreeSet<String>,
        /// Label keys to remove (a key in both is added).
        remove: BTreeSet<String>,
    },
    /// Delete Contact: refused for a site member.
    DeleteContact {
        /// The contact.
        contact_id: ContactId,
    },
    /// Merge Contacts.
    MergeContacts {
        /// The contact that stays.
        target: ContactId,
        /// The target's revision as the caller last read it.
        expected_revision: u64,
        /// 1 to 5 contacts merged away; the first takes precedence.
        sources: Vec<ContactId>,
    },
    /// The participant clicked a postback button.
    InteractWithButton {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message with the button.
        message_id: MessageId,
        /// The button's interaction id.
        interaction_id: String,
    },
    /// A privacy request: erase a participant's message content and personal data.
    EraseParticipant {
        /// Any id the participant has or had.
        participant: ParticipantId,
    },
    /// Find Or Create Label: nothing to decide when a label has exactly this display name.
    FindOrCreateLabel {
        /// The display name.
        display_name: String,
    },
    /// Rename Label (a `custom` one).
    RenameLabel {
        /// The label's key.
        key: String,
        /// Its new display name.
        display_name: String,
    },
    /// Delete Label (a `custom` one): it is taken off every contact that carries it.
    DeleteLabel {
        /// The label's key.
        key: String,
    },
    /// Find Or Create Extended Field: nothing to decide when a field has exactly this display
    /// name (whatever its data type).
    FindOrCreateExtendedField {
        /// The display name.
        display_name: String,
        /// The type of its values, for a new field.
        data_type: FieldDataType,
    },
    /// Rename Extended Field (a `custom` one).
    RenameExtendedField {
        /// The field's key.
        key: String,
        /// Its new display name.
        display_name: String,
    },
    /// Delete Extended Field (a `custom` one): every contact's value of it is removed.
    DeleteExtendedField {
        /// The field's key.
        key: String,
    },
    /// Revert the merge that holds a conversation: it and what was sent to it (directly or
    /// through what was merged into it) become live again; what was sent to the survivor
    /// stays there. Refused for a merge of one person's conversations (those follow from an
    /// identity, which a revert of the identity undoes) and for one a later merge depends on.
    RevertConversationMerge {
        /// The conversation merged away.
        conversation: ConversationId,
    },
}

/// Why a command was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Rejection {
    /// No conversation has this id.
    #[error("conversation {0} not found")]
    ConversationNotFound(ConversationId),
    /// The message breaks a rule.
    #[error(transparent)]
    InvalidMessage(#[from] MessageRejection),
    /// No live contact has this id.
    #[error("contact {0} not found")]
    ContactNotFound(ContactId),
    /// No member has this id.
    #[error("member {0} not found")]
    MemberNotFound(MemberId),
    /// The contact could not be created.
    #[error(transparent)]
    CreateContact(#[from] CreateContactError),
    /// The contacts could not be merged.
    #[error(transparent)]
    MergeContacts(#[from] MergeContactsError),
    /// The contact could not be updated.
    #[error(transparent)]
    UpdateContact(#[from] UpdateContactError),
    /// The contact's labels could not be changed.
    #[error(transparent)]
    LabelContact(#[from] LabelContactError),
    /// The contact could not be deleted.
    #[error(transparent)]
    DeleteContact(#[from] DeleteContactError),
    /// A label or extended field could not be made, renamed or deleted.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The merge could not be reverted.
    #[error(transparent)]
    RevertMerge(#[from] RevertMergeError),
    /// The visitor was already identified as another contact.
    #[error("visitor {visitor} is already contact {contact}")]
    VisitorAlreadyIdentified {
        /// The visitor.
        visitor: VisitorId,
        /// The contact it is.
        contact: ContactId,
    },
    /// The member id is taken by another contact.
    #[error("member {member} already belongs to contact {contact}")]
    MemberAlreadyExists {
        /// The member.
        member: MemberId,
        /// Its contact.
        contact: ContactId,
    },
    /// The contact is already another member.
    #[error("contact {contact} is already member {member}")]
    ContactAlreadyMember {
        /// The contact.
        contact: ContactId,
        /// Its member.
        member: MemberId,
    },
    /// No message with this id is in the conversation.
    #[error("message {message_id} not found in conversation {conversation_id}")]
    MessageNotFound {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message.
        message_id: MessageId,
    },
    /// The site's sequence clock is at its maximum (`i64::MAX`), so nothing that needs a new
    /// moment (a message, a merge, a registration) can be recorded. Only reachable through an
    /// observed event carrying the maximal sequence.
    #[error("the site's sequence clock is exhausted: nothing more can be recorded")]
    ClockExhausted,
    /// The message has no postback button with this interaction id.
    #[error("message {message_id} has no postback button {interaction_id:?}")]
    InteractionNotFound {
        /// The message.
        message_id: MessageId,
        /// The interaction id asked for.
        interaction_id: String,
    },
}

/// Why a conversation merge could not be reverted. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RevertMergeError {
    /// The conversation is live: no merge holds it.
    #[error("conversation {0} is not merged into another")]
    NotMerged(ConversationId),
    /// The merge that held it was reverted already.
    #[error(
        "the merge of {conversation} into {target} (stamp {merged_at}) was reverted at {reverted_at}"
    )]
    AlreadyReverted {
        /// The conversation.
        conversation: ConversationId,
        /// What it had been merged into.
        target: ConversationId,
        /// The stamp of the merge.
        merged_at: Sequence,
        /// The stamp of its revert.
        reverted_at: Sequence,
    },
    /// The target was merged away since: that later merge must be reverted first.
    #[error(
        "{target}, which {conversation} was merged into, was merged into {later_target} later (stamp {later_at}): revert that first"
    )]
    LaterMergeDepends {
        /// The conversation.
        conversation: ConversationId,
        /// What it is merged into.
        target: ConversationId,
        /// Where the target was merged.
        later_target: ConversationId,
        /// The stamp of that later merge.
        later_at: Sequence,
    },
    /// Both conversations are one person's: the merge follows from an identity (a visitor
    /// identified as a contact, a contact registered as a member, contacts merged), and
    /// reverting it alone would leave that person with two live conversations.
    #[error(
        "{conversation} and {target} are both conversations of {person:?}: the merge follows from that identity"
    )]
    SamePerson {
        /// The conversation.
        conversation: ConversationId,
        /// What it is merged into.
        target: ConversationId,
        /// The person's most advanced identity.
        person: ParticipantId,
    },
}
