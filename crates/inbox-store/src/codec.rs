//! How events are written on disk, and how old versions are read.
//!
//! Events are encoded with postcard (compact, fast, serde-driven) under the schema version
//! that wrote them. Postcard is not self-describing, so each old version keeps its own frozen
//! types here, and reading upcasts them to the current [`Event`] (esrs style: upcasting
//! happens at the serialized boundary, keyed by version).
//!
//! | version | change |
//! |---|---|
//! | 1 | first version |
//! | 2 | `ParticipantErased` gained `up_to` (v1 erasures covered every message, so they upcast to `up_to = i64::MAX`); `Message` lists `content` and `badges` last |
//! | 3 | `MemberRegistered` gained `stamp` (older registrations upcast to `Sequence::ZERO`: every erasure of their contact covers them, as it did when they were written) |
//! | 4 | `Contact` gained `details` (addresses, company, labels, extended fields...), `source` and `last_activity`; `ContactUpdated` and `ContactDeleted` were added (older contacts upcast with no details, source `Other`, and their creation as last activity) |

use inbox_core::{Event, EventEnvelope, EventId, SiteId, Timestamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::StoredEvent;

/// Why an event could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CodecError {
    /// Written by a newer engine than this one.
    #[error("schema version {0} is newer than this build understands ({current})", current = inbox_core::SCHEMA_VERSION)]
    UnknownVersion(u16),
    /// The bytes are not a valid encoding.
    #[error("malformed encoding: {0}")]
    Malformed(String),
}

impl From<postcard::Error> for CodecError {
    fn from(e: postcard::Error) -> Self {
        CodecError::Malformed(e.to_string())
    }
}

/// Encodes an event in the current schema version.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_allocvec(event)?)
}

/// Decodes an event written in `schema_version`, upcasting it to the current shape.
pub fn decode_event(schema_version: u16, bytes: &[u8]) -> Result<Event, CodecError> {
    match schema_version {
        1 => Ok(postcard::from_bytes::<v1::Event>(bytes)?.upcast()),
        2 => Ok(postcard::from_bytes::<v2::Event>(bytes)?.upcast()),
        3 => Ok(postcard::from_bytes::<v3::Event>(bytes)?.upcast()),
        // Versions 5 and 6 only added variants after the last one: version 4 bytes read as
        // they are.
        4..=6 => Ok(postcard::from_bytes(bytes)?),
        v => Err(CodecError::UnknownVersion(v)),
    }
}

/// The layout of the records of a segment, named by the segment's magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegmentFormat {
    /// `INBXSEG1`: every record is a batch of its own.
    V1,
    /// `INBXSEG2`: each record says whether it closes its append's batch, so a batch a crash
    /// cut short is dropped whole.
    V2,
}

/// The envelope fields of a record in an `INBXSEG1` segment.
#[derive(Serialize, Deserialize)]
struct RecordHeader<'a> {
    position: u64,
    site_version: u64,
    #[serde(borrow)]
    site: &'a str,
    event_id: EventId,
    recorded_at: Timestamp,
    schema_version: u16,
}

/// The envelope fields of a record in an `INBXSEG2` segment.
#[derive(Serialize, Deserialize)]
struct RecordHeaderV2<'a> {
    position: u64,
    site_version: u64,
    #[serde(borrow)]
    site: &'a str,
    event_id: EventId,
    recorded_at: Timestamp,
    schema_version: u16,
    batch_last: bool,
}

/// What the scan on open needs of a record, without decoding its event.
pub(crate) struct HeaderInfo<'a> {
    pub position: u64,
    pub site_version: u64,
    pub site: &'a str,
    pub batch_last: bool,
    event_id: EventId,
    recorded_at: Timestamp,
    schema_version: u16,
}

pub(crate) fn decode_header(
    format: SegmentFormat,
    payload: &[u8],
) -> Result<(HeaderInfo<'_>, &[u8]), CodecError> {
    Ok(match format {
        SegmentFormat::V1 => {
            let (h, rest): (RecordHeader<'_>, &[u8]) = postcard::take_from_bytes(payload)?;
            (
                HeaderInfo {
                    position: h.position,
                    site_version: h.site_version,
                    site: h.site,
                    batch_last: true,
                    event_id: h.event_id,
                    recorded_at: h.recorded_at,
                    schema_version: h.schema_version,
                },
                rest,
            )
        }
        SegmentFormat::V2 => {
            let (h, rest): (RecordHeaderV2<'_>, &[u8]) = postcard::take_from_bytes(payload)?;
            (
                HeaderInfo {
                    position: h.position,
                    site_version: h.site_version,
                    site: h.site,
                    batch_last: h.batch_last,
                    event_id: h.event_id,
                    recorded_at: h.recorded_at,
                    schema_version: h.schema_version,
                },
                rest,
            )
        }
    })
}

/// A record's payload in the current segment format: the header, then the event, both
/// postcard. `batch_last` marks the last record of an append.
pub(crate) fn encode_record(
    position: u64,
    site_version: u64,
    envelope: &EventEnvelope,
    batch_last: bool,
) -> Result<Vec<u8>, CodecError> {
    let header = RecordHeaderV2 {
        position,
        site_version,
        site: &envelope.site.0,
        event_id: envelope.event_id,
        recorded_at: envelope.recorded_at,
        schema_version: inbox_core::SCHEMA_VERSION,
        batch_last,
    };
    let mut out = postcard::to_allocvec(&header)?;
    out.extend(encode_event(&envelope.event)?);
    Ok(out)
}

/// Writes a record in an old schema version: only for building compatibility fixtures.
#[doc(hidden)]
pub fn encode_record_v1(
    position: u64,
    site_version: u64,
    site: &SiteId,
    event_id: EventId,
    recorded_at: Timestamp,
    event: &v1::Event,
) -> Result<Vec<u8>, CodecError> {
    let header = RecordHeader {
        position,
        site_version,
        site: &site.0,
        event_id,
        recorded_at,
        schema_version: 1,
    };
    let mut out = postcard::to_allocvec(&header)?;
    out.extend(postcard::to_allocvec(event)?);
    Ok(out)
}

pub(crate) fn decode_record(
    format: SegmentFormat,
    payload: &[u8],
) -> Result<StoredEvent, CodecError> {
    let (header, rest) = decode_header(format, payload)?;
    let event = decode_event(header.schema_version, rest)?;
    Ok(StoredEvent {
        position: header.position,
        site_version: header.site_version,
        envelope: EventEnvelope::new(
            SiteId::new(header.site),
            header.event_id,
            header.recorded_at,
            event,
        ),
    })
}

/// The frozen shapes of schema version 1.
#[doc(hidden)]
pub mod v1 {
    use super::v3::Contact;
    use inbox_core::message::{Badge, Channel, ChannelSet, Content, Direction, Sender, Visibility};
    use inbox_core::{
        AppId, ContactId, ConversationId, MemberId, MessageId, ParticipantId, Sequence, Timestamp,
        VisitorId,
    };
    use serde::{Deserialize, Serialize};

    /// `Message` as version 1 laid it out.
    #[allow(missing_docs)]
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Message {
        pub id: MessageId,
        pub sequence: Sequence,
        pub created_date: Timestamp,
        pub conversation_id: ConversationId,
        pub content: Content,
        pub sender: Sender,
        pub badges: Box<[Badge]>,
        pub target_channels: ChannelSet,
        pub source_channel: Option<Channel>,
        pub app_id: Option<AppId>,
        pub visibility: Visibility,
        pub direction: Direction,
        pub silent: bool,
    }

    /// `Event` as version 1 had it.
    #[allow(missing_docs)]
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub enum Event {
        ConversationStarted {
            conversation_id: ConversationId,
            participant: ParticipantId,
        },
        MessageSent {
            message: Message,
        },
        ConversationsMerged {
            sources: Vec<ConversationId>,
            target: ConversationId,
            stamp: Sequence,
        },
        VisitorIdentified {
            visitor: VisitorId,
            contact: ContactId,
        },
        MemberRegistered {
            member: MemberId,
            contact: ContactId,
            login_email: Option<String>,
        },
        ContactCreated {
            contact: Contact,
        },
        ContactsMerged {
            target: Contact,
            sources: Vec<ContactId>,
        },
        ButtonInteracted {
            conversation_id: ConversationId,
            message_id: MessageId,
            interaction_id: String,
            app_id: Option<AppId>,
            interacted_by: Sender,
        },
        ParticipantErased {
            participant: ParticipantId,
            conversations: Vec<ConversationId>,
            contact: Option<Contact>,
        },
    }

    impl Event {
        /// The same fact in the current shape.
        pub fn upcast(self) -> inbox_core::Event {
            use inbox_core::Event as E;
            match self {
                Event::ConversationStarted {
                    conversation_id,
                    participant,
                } => E::ConversationStarted {
                    conversation_id,
                    participant,
                },
                Event::MessageSent { message: m } => E::MessageSent {
                    message: inbox_core::Message {
                        id: m.id,
                        sequence: m.sequence,
                        created_date: m.created_date,
                        conversation_id: m.conversation_id,
                        sender: m.sender,
                        target_channels: m.target_channels,
                        source_channel: m.source_channel,
                        app_id: m.app_id,
                        visibility: m.visibility,
                        direction: m.direction,
                        silent: m.silent,
                        content: m.content,
                        badges: m.badges,
                    },
                },
                Event::ConversationsMerged {
                    sources,
                    target,
                    stamp,
                } => E::ConversationsMerged {
                    sources,
                    target,
                    stamp,
                },
                Event::VisitorIdentified { visitor, contact } => {
                    E::VisitorIdentified { visitor, contact }
                }
                Event::MemberRegistered {
                    member,
                    contact,
                    login_email,
                } => E::MemberRegistered {
                    member,
                    contact,
                    login_email,
                    stamp: Sequence::ZERO,
                },
                Event::ContactCreated { contact } => E::ContactCreated {
                    contact: contact.upcast(),
                },
                Event::ContactsMerged { target, sources } => E::ContactsMerged {
                    target: target.upcast(),
                    sources,
                },
                Event::ButtonInteracted {
                    conversation_id,
                    message_id,
                    interaction_id,
                    app_id,
                    interacted_by,
                } => E::ButtonInteracted {
                    conversation_id,
                    message_id,
                    interaction_id,
                    app_id,
                    interacted_by,
                },
                // Version 1 erased every message of the conversations, for ever after.
                Event::ParticipantErased {
                    participant,
                    conversations,
                    contact,
                } => E::ParticipantErased {
                    participant,
                    conversations,
                    up_to: Sequence(i64::MAX),
                    contact: contact.map(Contact::upcast),
                },
            }
        }
    }
}

/// The frozen shapes of schema version 2: the current ones, but for `MemberRegistered`.
#[doc(hidden)]
pub mod v2 {
    use super::v3::Contact;
    use inbox_core::message::Sender;
    use inbox_core::{
        AppId, ContactId, ConversationId, MemberId, Message, MessageId, ParticipantId, Sequence,
        VisitorId,
    };
    use serde::{Deserialize, Serialize};

    /// `Event` as version 2 had it.
    #[allow(missing_docs)]
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub enum Event {
        ConversationStarted {
            conversation_id: ConversationId,
            participant: ParticipantId,
        },
        MessageSent {
            message: Message,
        },
        ConversationsMerged {
            sources: Vec<ConversationId>,
            target: ConversationId,
            stamp: Sequence,
        },
        VisitorIdentified {
            visitor: VisitorId,
            contact: ContactId,
        },
        MemberRegistered {
            member: MemberId,
            contact: ContactId,
            login_email: Option<String>,
        },
        ContactCreated {
            contact: Contact,
        },
        ContactsMerged {
            target: Contact,
            sources: Vec<ContactId>,
        },
        ButtonInteracted {
            conversation_id: ConversationId,
            message_id: MessageId,
            interaction_id: String,
            app_id: Option<AppId>,
            interacted_by: Sender,
        },
        ParticipantErased {
            participant: ParticipantId,
            conversations: Vec<ConversationId>,
            up_to: Sequence,
            contact: Option<Contact>,
        },
    }

    impl Event {
        /// The same fact in the current shape.
        pub fn upcast(self) -> inbox_core::Event {
            use inbox_core::Event as E;
            match self {
                Event::ConversationStarted {
                    conversation_id,
                    participant,
                } => E::ConversationStarted {
                    conversation_id,
                    participant,
                },
                Event::MessageSent { message } => E::MessageSent { message },
                Event::ConversationsMerged {
                    sources,
                    target,
                    stamp,
                } => E::ConversationsMerged {
                    sources,
                    target,
                    stamp,
                },
                Event::VisitorIdentified { visitor, contact } => {
                    E::VisitorIdentified { visitor, contact }
                }
                // A registration written before stamps: every erasure of its contact covers
                // it, as version 2's rule said.
                Event::MemberRegistered {
                    member,
                    contact,
                    login_email,
                } => E::MemberRegistered {
                    member,
                    contact,
                    login_email,
                    stamp: Sequence::ZERO,
                },
                Event::ContactCreated { contact } => E::ContactCreated {
                    contact: contact.upcast(),
                },
                Event::ContactsMerged { target, sources } => E::ContactsMerged {
                    target: target.upcast(),
                    sources,
                },
                Event::ButtonInteracted {
                    conversation_id,
                    message_id,
                    interaction_id,
                    app_id,
                    interacted_by,
                } => E::ButtonInteracted {
                    conversation_id,
                    message_id,
                    interaction_id,
                    app_id,
                    interacted_by,
                },
                Event::ParticipantErased {
                    participant,
                    conversations,
                    up_to,
                    contact,
                } => E::ParticipantErased {
                    participant,
                    conversations,
                    up_to,
                    contact: contact.map(Contact::upcast),
                },
            }
        }
    }
}

/// The frozen shapes of schema version 3.
#[doc(hidden)]
pub mod v3 {
    use inbox_core::contacts::{
        ActivityType, ContactActivity, ContactEmail, ContactName, ContactPhone,
    };
    use inbox_core::message::Sender;
    use inbox_core::{
        AppId, ContactId, ConversationId, MemberId, Message, MessageId, ParticipantId, Sequence,
        Timestamp, VisitorId,
    };
    use serde::{Deserialize, Serialize};

    /// `Contact` as versions 1 to 3 laid it out.
    #[allow(missing_docs)]
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Contact {
        pub id: ContactId,
        pub revision: u64,
        pub created_date: Timestamp,
        pub updated_date: Timestamp,
        pub name: ContactName,
        pub emails: Vec<ContactEmail>,
        pub phones: Vec<ContactPhone>,
    }

    impl Contact {
        /// The same contact in the current shape: no details, an unknown source, and its
        /// creation as its last activity (all that these versions knew).
        pub fn upcast(self) -> inbox_core::contacts::Contact {
            inbox_core::contacts::Contact {
                name: self.name,
                emails: self.emails,
                phones: self.phones,
                revision: self.revision,
                updated_date: self.updated_date,
                last_activity: ContactActivity {
                    at: self.created_date,
                    kind: ActivityType::ContactCreated,
                },
                ..inbox_core::contacts::Contact::new(self.id, self.created_date)
            }
        }
    }

    /// `Event` as version 3 had it.
    #[allow(missing_docs)]
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub enum Event {
        ConversationStarted {
            conversation_id: ConversationId,
            participant: ParticipantId,
        },
        MessageSent {
            message: Message,
        },
        ConversationsMerged {
            sources: Vec<ConversationId>,
            target: ConversationId,
            stamp: Sequence,
        },
        VisitorIdentified {
            visitor: VisitorId,
            contact: ContactId,
        },
        MemberRegistered {
            member: MemberId,
            contact: ContactId,
            login_email: Option<String>,
            stamp: Sequence,
        },
        ContactCreated {
            contact: Contact,
        },
        ContactsMerged {
            target: Contact,
            sources: Vec<ContactId>,
        },
        ButtonInteracted {
            conversation_id: ConversationId,
            message_id: MessageId,
            interaction_id: String,
            app_id: Option<AppId>,
            interacted_by: Sender,
        },
        ParticipantErased {
            participant: ParticipantId,
            conversations: Vec<ConversationId>,
            up_to: Sequence,
            contact: Option<Contact>,
        },
    }

    impl Event {
        /// The same fact in the current shape.
        pub fn upcast(self) -> inbox_core::Event {
            use inbox_core::Event as E;
            match self {
                Event::ConversationStarted {
                    conversation_id,
                    participant,
                } => E::ConversationStarted {
                    conversation_id,
                    participant,
                },
                Event::MessageSent { message } => E::MessageSent { message },
                Event::ConversationsMerged {
                    sources,
                    target,
                    stamp,
                } => E::ConversationsMerged {
                    sources,
                    target,
                    stamp,
                },
                Event::VisitorIdentified { visitor, contact } => {
                    E::VisitorIdentified { visitor, contact }
                }
                Event::MemberRegistered {
                    member,
                    contact,
                    login_email,
                    stamp,
                } => E::MemberRegistered {
                    member,
                    contact,
                    login_email,
                    stamp,
                },
                Event::ContactCreated { contact } => E::ContactCreated {
                    contact: contact.upcast(),
                },
                Event::ContactsMerged { target, sources } => E::ContactsMerged {
                    target: target.upcast(),
                    sources,
                },
                Event::ButtonInteracted {
                    conversation_id,
                    message_id,
                    interaction_id,
                    app_id,
                    interacted_by,
                } => E::ButtonInteracted {
                    conversation_id,
                    message_id,
                    interaction_id,
                    app_id,
                    interacted_by,
                },
                Event::ParticipantErased {
                    participant,
                    conversations,
                    up_to,
                    contact,
                } => E::ParticipantErased {
                    participant,
                    conversations,
                    up_to,
                    contact: contact.map(Contact::upcast),
                },
            }
        }
    }
}
