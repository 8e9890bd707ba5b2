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

use crate::command::{Caller, Command, Context, IdSource, Rejection, RevertMergeError, SendAs};
use crate::contacts::{
    Contact, ContactDetails, ContactDirectory, ContactName, DeleteContactError, MergeContactsError,
    SortOrder,
};
use crate::cursor::{CursorError, CursorState};
use crate::event::{Event, EventEnvelope};
use crate::ids::{
    AppId, ContactId, ConversationId, EventId, MemberId, MessageId, Sequence, SiteId, Timestamp,
    VisitorId,
};
use crate::index::MessageIndex;
use crate::message::{ButtonAction, Channel, Message, Sender};
use crate::participant::{Member, Participant, ParticipantId};
use crate::timeline::{Entry, Timeline};

mod decide;
mod fold;
pub mod image;
mod merge;
mod paging;
mod query;

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
    /// Contact merges formed a cycle (each merged into the next); it was broken at its
    /// smallest contact, which stays live.
    ContactMergeCycle {
        /// The contacts on the cycle, sorted.
        members: Vec<ContactId>,
        /// The contact that stays live.
        kept: ContactId,
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
    ContactCycle(ContactId),
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

/// One `MemberRegistered` fact, as the state keeps it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Registration {
    contact: ContactId,
    stamp: Sequence,
    login_email: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ConversationRecord {
    participant: Option<ParticipantId>,
    parent: Option<ConversationId>,
    messages: Timeline,
}

/// The more advanced of two participants: member > contact > visitor, among equals the
/// smaller id.
fn more_advanced(a: ParticipantId, b: ParticipantId) -> ParticipantId {
    std::cmp::max_by_key(a, b, |p| (p.rank(), std::cmp::Reverse(*p)))
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
    /// Every registration of each member (the one on the smallest contact counts).
    registrations: OrdMap<MemberId, OrdSet<Registration>>,
    /// Members by the contact of their registration that counts, as registered (a member's
    /// contact is what that resolves to, so it follows contact merges).
    members_by_contact: OrdMap<ContactId, OrdSet<MemberId>>,
    contacts: ContactDirectory,
    /// Where each message was sent (its provenance): the index behind deduplication by id
    /// and lookup by id. Derived from the messages (an image does not carry it).
    message_index: MessageIndex,
    /// The sequence of the messages whose sequence is not their id. The engine issues both
    /// from one clock, so for its own messages this stays empty and the index holds 24 bytes
    /// an entry instead of 32.
    odd_sequences: OrdMap<MessageId, Sequence>,
    /// Every merge of each source: `(stamp, target)`. A merge delivered again with another
    /// stamp is another fact; which target counts depends on the moment asked about.
    merge_edges: OrdMap<ConversationId, OrdSet<(Sequence, ConversationId)>>,
    merged_from: OrdMap<ConversationId, OrdSet<ConversationId>>,
    /// Reverted merges: `(source, merge stamp, target)` -> the stamp of the earliest revert
    /// of it. A reverted merge counts for no moment at or after its revert.
    merge_reverts: OrdMap<(ConversationId, Sequence, ConversationId), Sequence>,
    /// Conversations erased by a privacy request, with the sequence up to which their
    /// messages are redacted.
    erased: OrdMap<ConversationId, Sequence>,
    /// Contacts a privacy request erased, with its `up_to`: the login emails registered on
    /// them at or before it are forgotten, whenever the registration is folded.
    erased_contacts: OrdMap<ContactId, Sequence>,
    interactions: OrdSet<Interaction>,
    anomalies: OrdMap<AnomalyKey, Anomaly>,
    last_sequence: Sequence,
}

/// One merge in a conversation's history ([`Inbox::merge_history`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// The conversation merged away.
    pub source: ConversationId,
    /// The conversation it was merged into.
    pub target: ConversationId,
    /// When, on the site's sequence clock.
    pub merged_at: Sequence,
    /// When it was reverted, if it was (the earliest revert).
    pub reverted_at: Option<Sequence>,
    /// The messages it moved: those sent, by the merge's moment, to the source or to what
    /// was merged into it then, in their order (a revert moves the same ones back).
    pub messages: Vec<MessageId>,
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
    /// The cursor of the previous page (the messages before this page's first, in the same
    /// order, pinned like every cursor); absent on the first page.
    pub prev_cursor: Option<String>,
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
            registrations: OrdMap::new(),
            members_by_contact: OrdMap::new(),
            contacts: ContactDirectory::default(),
            message_index: MessageIndex::default(),
            odd_sequences: OrdMap::new(),
            merge_edges: OrdMap::new(),
            merged_from: OrdMap::new(),
            merge_reverts: OrdMap::new(),
            erased: OrdMap::new(),
            erased_contacts: OrdMap::new(),
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::command::SequentialIds;
    use crate::message::Direction;
    use crate::message::MessageDraft;

    /// The engine issues a message's id and sequence from one clock, so the index keeps no
    /// sequence of its own for them (24 bytes an entry, not 32); an observed message whose
    /// sequence is not its id is kept apart, and forgotten when a version that is wins.
    #[test]
    fn only_messages_whose_sequence_is_not_their_id_are_kept_apart() {
        let mut inbox = Inbox::new(InboxConfig::new(SiteId::new("s"), [0; 16]));
        let mut ids = SequentialIds::default();
        let ctx = Context::at(Timestamp::from_micros(1_000));
        let visitor = ParticipantId::Visitor(VisitorId::from_uuid(uuid::Uuid::from_u128(1)));
        inbox
            .execute(
                &Command::GetOrCreateConversation {
                    participant: visitor,
                },
                &ctx,
                &mut ids,
            )
            .unwrap();
        let conversation = inbox.live_conversation_of(visitor).unwrap();
        for _ in 0..3 {
            let send = Command::SendMessage {
                conversation_id: conversation,
                message: MessageDraft::text("hi", Direction::BusinessToParticipant),
                send_as: SendAs::Caller,
            };
            inbox.execute(&send, &ctx, &mut ids).unwrap();
        }
        assert_eq!(inbox.message_count(), 3);
        assert!(inbox.odd_sequences.is_empty());
        // An observed message with a sequence of its own, then a version that wins with the
        // sequence of its id.
        let mut observed = inbox.messages_of(conversation).next().unwrap().clone();
        observed.id = MessageId(5);
        observed.sequence = Sequence(7);
        inbox.apply_event(&Event::MessageSent {
            message: observed.clone(),
        });
        assert_eq!(inbox.odd_sequences.len(), 1);
        observed.sequence = Sequence(5);
        inbox.apply_event(&Event::MessageSent {
            message: observed.clone(),
        });
        assert!(inbox.odd_sequences.is_empty());
        assert_eq!(inbox.message(MessageId(5)), Some(&observed));
    }
}
