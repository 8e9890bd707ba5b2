//! The REST calls: request bodies into core commands and queries, state into response
//! bodies.
//!
//! Each call has a request type (what the client sends, parsed by [`parse_body`] or, for
//! List Messages, [`ListMessagesRequest::from_query`]), a conversion into a core
//! [`Command`] or query, and a response type built from the state after the command. The
//! HTTP layer (the `inboxd` server) only moves bytes: it never looks inside a body.
//!
//! Input is accepted in camelCase (what the SDK sends) and snake_case (what the
//! documentation's curl examples send); output is always camelCase.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::collections::BTreeSet;

use inbox_core::contacts::{
    ContactDraft, ContactName, ContactPage, ContactPatch, ContactQuery, ContactSource, ContactView,
    ExtendedValue, SourceType,
};
use inbox_core::message::Message as CoreMessage;
use inbox_core::{
    Caller, Command, ContactId, ConversationId, ConversationView, Inbox, ListMessages, MessagePage,
    SendAs, SortOrder, Timestamp, VisibilityFilter,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::case::camel_case_keys;
use crate::error::{FieldViolation, Rule, WixError};
use crate::wire::{
    AddressItem, Contact, ContactInfo, ContactInfoPatch, Conversation, Count, Direction, EmailItem,
    ExtendedFields, Int64, Message, ParticipantRef, PhoneItem, Picture, extended_from_json, guid,
    label_set,
};

/// Parses a JSON request body into a request type: the body must be JSON (else a 400), keys
/// may be camelCase or snake_case, and a field of the wrong type is a 400 naming its path.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WixError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| WixError::malformed_json(format!("request body is not valid JSON: {e}")))?;
    parse_value(value)
}

/// [`parse_body`] for a body that is already a JSON value.
pub fn parse_value<T: DeserializeOwned>(value: Value) -> Result<T, WixError> {
    if !value.is_object() {
        return Err(WixError::malformed_json(
            "request body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(camel_case_keys(value)).map_err(WixError::from)
}

fn required<'a, T>(value: &'a Option<T>, field: &str) -> Result<&'a T, WixError> {
    value.as_ref().ok_or_else(|| {
        WixError::invalid(FieldViolation::new(
            field,
            format!("{field} is required"),
            Rule::RequiredField,
        ))
    })
}

fn conversation_id(field: &str, text: &Option<String>) -> Result<ConversationId, WixError> {
    Ok(ConversationId::from_uuid(guid(
        field,
        required(text, field)?,
    )?))
}

// ------------------------------------------------------------------------------------------
// Inbox v2: conversations

/// `GET /inbox/v2/conversations/{conversationId}` answers with this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetConversationResponse {
    /// The live conversation (a merged id answers with the survivor).
    pub conversation: Conversation,
}

impl GetConversationResponse {
    /// The response for a conversation view.
    pub fn new(view: &ConversationView) -> Self {
        GetConversationResponse {
            conversation: Conversation::from_core(view),
        }
    }
}

/// Parses the `{conversationId}` path segment of Get Conversation.
pub fn conversation_id_from_path(segment: &str) -> Result<ConversationId, WixError> {
    Ok(ConversationId::from_uuid(guid("conversationId", segment)?))
}

/// `POST /inbox/v2/conversations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetOrCreateConversationRequest {
    /// Exactly one of `contactId`, `anonymousVisitorId`, `memberId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<ParticipantRef>,
}

impl GetOrCreateConversationRequest {
    /// The core command.
    pub fn to_command(&self) -> Result<Command, WixError> {
        let participant =
            required(&self.participant_id, "participantId")?.to_core("participantId")?;
        Ok(Command::GetOrCreateConversation { participant })
    }
}

/// What Get Or Create Conversation answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetOrCreateConversationResponse {
    /// The participant's live conversation.
    pub conversation: Conversation,
    /// Whether this call created it.
    pub new_conversation: bool,
}

impl GetOrCreateConversationResponse {
    /// The response; `created` is whether the command started a conversation.
    pub fn new(view: &ConversationView, created: bool) -> Self {
        GetOrCreateConversationResponse {
            conversation: Conversation::from_core(view),
            new_conversation: created,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Inbox v2: messages

/// `sendAs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SendAsWire {
    /// As the caller (an app as itself).
    Caller,
    /// As the conversation's participant.
    Participant,
    /// As the business.
    BusinessUser,
}

/// `POST /inbox/v2/messages`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SendMessageRequest {
    /// Where to (a merged id lands in the survivor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// Whether the message triggers notifications (Wix's default: `false`). Accepted and
    /// without effect: the emulator sends no notifications. It does not make the message
    /// silent, which is another thing (`silent`: no unread count or summary update).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_notifications: Option<bool>,
    /// Deprecated by Wix in favour of `message.silent` (removal planned for 2026-06-01),
    /// still honoured: `true` makes the message silent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent: Option<bool>,
    /// On whose behalf; default `CALLER`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_as: Option<SendAsWire>,
    /// The example flows put `direction` here, beside `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

impl SendMessageRequest {
    /// The core command. Read-only message fields (`id`, `sequence`, `createdDate`,
    /// `sender`, `appId`) are ignored, as Wix ignores them.
    pub fn to_command(&self) -> Result<Command, WixError> {
        let conversation_id = conversation_id("conversationId", &self.conversation_id)?;
        let message = required(&self.message, "message")?.clone();
        let mut draft = message.into_draft(self.direction)?;
        if self.silent == Some(true) {
            draft.silent = true;
        }
        let send_as = match self.send_as {
            None | Some(SendAsWire::Caller) => SendAs::Caller,
            Some(SendAsWire::Participant) => SendAs::Participant,
            Some(SendAsWire::BusinessUser) => SendAs::BusinessUser,
        };
        Ok(Command::SendMessage {
            conversation_id,
            message: draft,
            send_as,
        })
    }
}

/// What Send Message answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendMessageResponse {
    /// The stored message, with its id, sequence and date.
    pub message: Message,
}

impl SendMessageResponse {
    /// The response for a stored message.
    pub fn new(message: &CoreMessage) -> Self {
        SendMessageResponse {
            message: Message::from_core(message),
        }
    }
}

/// `visibility` of List Messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListVisibility {
    /// Treated as `BUSINESS`.
    #[serde(rename = "UNKNOWN_VISIBILITY")]
    Unknown,
    /// Only what the participant can see.
    BusinessAndParticipant,
    /// Everything.
    Business,
}

/// `ASC` / `DESC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the default).
    Desc,
}

/// `paging` of List Messages.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CursorPaging {
    /// 1 to 100; default 30.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Count>,
    /// From the previous page's `pagingMetadata.cursors.next`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `sorting` of List Messages.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sorting {
    /// Only `sequence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_name: Option<String>,
    /// Default `DESC`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
}

/// `GET /inbox/v2/messages`: from dotted query parameters or the SDK's `.r=` form.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListMessagesRequest {
    /// The conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Which messages; default `BUSINESS` (everything).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<ListVisibility>,
    /// Page size and cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paging: Option<CursorPaging>,
    /// Sort order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sorting: Option<Sorting>,
}

/// base64url as the SDK writes it (no padding), also accepting padding.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest query string read (the SDK's `.r` form of a full request is well under 1 KiB).
const MAX_QUERY_LEN: usize = 16 * 1024;

impl ListMessagesRequest {
    /// Reads the request from a URL query string (without the `?`): dotted parameters
    /// (`paging.limit=30&paging.cursor=…`, camelCase or snake_case), or `.r=<base64url of
    /// the request as JSON>` as the SDK sends, or both (dotted parameters win).
    pub fn from_query(query: &str) -> Result<Self, WixError> {
        if query.len() > MAX_QUERY_LEN {
            return Err(WixError::invalid(FieldViolation::new(
                "",
                format!("query string is longer than {MAX_QUERY_LEN} bytes"),
                Rule::MaxLength,
            )));
        }
        let mut root = Map::new();
        let mut dotted = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key == ".r" {
                let bytes = BASE64URL.decode(value.trim().as_bytes()).map_err(|e| {
                    WixError::invalid(FieldViolation::new(
                        ".r",
                        format!(".r must be base64url of the request as JSON: {e}"),
                        Rule::Format,
                    ))
                })?;
                match serde_json::from_slice(&bytes) {
                    Ok(Value::Object(map)) => root = map,
                    _ => {
                        return Err(WixError::invalid(FieldViolation::new(
                            ".r",
                            ".r must be base64url of a JSON object",
                            Rule::Format,
                        )));
                    }
                }
            } else {
                dotted.push((key.into_owned(), value.into_owned()));
            }
        }
        let mut root = match camel_case_keys(Value::Object(root)) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        for (key, value) in dotted {
            insert_dotted(&mut root, &key, value)?;
        }
        parse_value(Value::Object(root))
    }

    /// The core query.
    pub fn to_core(&self) -> Result<ListMessages, WixError> {
        let conversation_id = conversation_id("conversationId", &self.conversation_id)?;
        let visibility = match self.visibility {
            Some(ListVisibility::BusinessAndParticipant) => VisibilityFilter::ParticipantVisible,
            None | Some(ListVisibility::Business) | Some(ListVisibility::Unknown) => {
                VisibilityFilter::All
            }
        };
        let sorting = self.sorting.clone().unwrap_or_default();
        if let Some(field) = &sorting.field_name
            && field != "sequence"
        {
            return Err(WixError::invalid(FieldViolation::new(
                "sorting.fieldName",
                format!("messages can be sorted by sequence only; got {field:?}"),
                Rule::InvalidEnumValue,
            )));
        }
        let order = match sorting.order {
            Some(Order::Asc) => SortOrder::Asc,
            None | Some(Order::Desc) => SortOrder::Desc,
        };
        let paging = self.paging.clone().unwrap_or_default();
        let limit = paging
            .limit
            .map(|Count(n)| usize::try_from(n).unwrap_or(usize::MAX));
        Ok(ListMessages {
            conversation_id,
            visibility,
            order,
            limit,
            cursor: paging.cursor.filter(|c| !c.is_empty()),
        })
    }
}

/// Puts `a.b.c=value` into `root` as `{"a": {"b": {"c": value}}}`.
fn insert_dotted(root: &mut Map<String, Value>, key: &str, value: String) -> Result<(), WixError> {
    let parts: Vec<String> = key.split('.').map(crate::case::to_camel).collect();
    let Some((last, parents)) = parts.split_last() else {
        return Ok(());
    };
    let mut node = root;
    for p in parents {
        let entry = node
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        node = match entry {
            Value::Object(map) => map,
            _ => {
                return Err(WixError::invalid(FieldViolation::new(
                    key,
                    format!("query parameter {key} conflicts with {p}"),
                    Rule::Format,
                )));
            }
        };
    }
    node.insert(last.clone(), Value::String(value));
    Ok(())
}

/// `pagingMetadata.cursors`: `next` is absent on the last page, `prev` on the first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cursors {
    /// The next page's cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The previous page's cursor: the messages before this page's first, in the same order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

/// `pagingMetadata` of List Messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CursorPagingMetadata {
    /// Messages on this page.
    pub count: u64,
    /// Where to go on.
    pub cursors: Cursors,
}

/// What List Messages answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMessagesResponse {
    /// The page, in the requested order.
    pub messages: Vec<Message>,
    /// Count and cursors.
    pub paging_metadata: CursorPagingMetadata,
}

impl ListMessagesResponse {
    /// The response for a page.
    pub fn new(page: &MessagePage<'_>) -> Self {
        ListMessagesResponse {
            messages: page
                .messages
                .iter()
                .map(|m| Message::from_core(m))
                .collect(),
            paging_metadata: CursorPagingMetadata {
                count: page.messages.len() as u64,
                cursors: Cursors {
                    next: page.next_cursor.clone(),
                    prev: page.prev_cursor.clone(),
                },
            },
        }
    }
}

// ------------------------------------------------------------------------------------------
// Contacts v4

/// `POST /contacts/v4/contacts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateContactRequest {
    /// Name, emails, phones, addresses and the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<ContactInfo>,
    /// Create even when an email or phone is taken (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_duplicates: Option<bool>,
}

impl CreateContactRequest {
    /// The core command; `contact_id` is the new contact's id (the caller draws it), and
    /// `source` where it comes from (the server derives it from the caller's identity).
    pub fn to_command(
        &self,
        contact_id: ContactId,
        source: ContactSource,
    ) -> Result<Command, WixError> {
        let info = required(&self.info, "info")?;
        let extended = extended_fields(info.extended_fields.as_ref())?
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        let parts = info.to_core(extended);
        let draft = ContactDraft {
            name: parts.name,
            emails: parts.emails,
            phones: parts.phones,
            details: parts.details,
            source,
            allow_duplicates: self.allow_duplicates.unwrap_or(false),
        };
        Ok(Command::CreateContact { contact_id, draft })
    }
}

/// Where a contact created by `caller` comes from, as Wix records it: an app's contacts are
/// `WIX_APP` with its id, a Wix user's (an API key acts as one) `ADMIN`, anyone else's
/// `OTHER`.
pub fn source_of(caller: Caller) -> ContactSource {
    match caller {
        Caller::App(app) => ContactSource {
            source_type: SourceType::WixApp,
            app_id: Some(app),
        },
        Caller::WixUser(_) => ContactSource {
            source_type: SourceType::Admin,
            app_id: None,
        },
        Caller::Anonymous => ContactSource::default(),
    }
}

/// `info.extendedFields.items` as the core's values; `null` is `None` (a removal, in an
/// update). Anything but a string, a number or `null` is refused, naming the key.
fn extended_fields(
    fields: Option<&ExtendedFields>,
) -> Result<Vec<(String, Option<ExtendedValue>)>, WixError> {
    fields
        .into_iter()
        .flat_map(|f| &f.items)
        .map(|(key, value)| {
            if value.is_null() {
                return Ok((key.clone(), None));
            }
            extended_from_json(value)
                .map(|v| (key.clone(), Some(v)))
                .map_err(|what| {
                    WixError::invalid(FieldViolation::new(
                        format!("info.extendedFields.items.{key}"),
                        format!("an extended field holds a string or a number; got {what}"),
                        Rule::Format,
                    ))
                })
        })
        .collect()
}

/// `PATCH /contacts/v4/contacts/{contactId}`: Update Contact.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpdateContactRequest {
    /// The contact's revision as the caller last read it (required).
    pub revision: Option<Int64>,
    /// The fields to change; each one given replaces the contact's.
    pub info: Option<ContactInfoPatch>,
    /// Allow an email or phone another contact has (default false).
    pub allow_duplicates: Option<bool>,
}

impl UpdateContactRequest {
    /// The core command for `contact_id`.
    pub fn to_command(&self, contact_id: ContactId) -> Result<Command, WixError> {
        let Int64(revision) = *required(&self.revision, "revision")?;
        let revision = u64::try_from(revision).map_err(|_| {
            WixError::invalid(FieldViolation::new(
                "revision",
                format!("revision must not be negative; got {revision}"),
                Rule::Min,
            ))
        })?;
        let patch = required(&self.info, "info")?.to_core()?;
        Ok(Command::UpdateContact {
            contact_id,
            expected_revision: revision,
            patch,
            allow_duplicates: self.allow_duplicates.unwrap_or(false),
        })
    }
}

impl ContactInfoPatch {
    /// The core's patch: what each field given becomes. An extended field that is neither a
    /// string, a number nor `null` is refused, naming it.
    pub fn to_core(&self) -> Result<ContactPatch, WixError> {
        Ok(ContactPatch {
            name: self.name.clone().map(|n| {
                let n = n.unwrap_or_default();
                ContactName {
                    first: n.first,
                    last: n.last,
                }
            }),
            emails: self.emails.as_ref().map(|e| {
                e.iter()
                    .flat_map(|e| &e.items)
                    .map(EmailItem::to_core)
                    .collect()
            }),
            phones: self.phones.as_ref().map(|p| {
                p.iter()
                    .flat_map(|p| &p.items)
                    .map(PhoneItem::to_core)
                    .collect()
            }),
            addresses: self.addresses.as_ref().map(|a| {
                a.iter()
                    .flat_map(|a| &a.items)
                    .map(AddressItem::to_core)
                    .collect()
            }),
            company: self.company.clone(),
            job_title: self.job_title.clone(),
            birthdate: self.birthdate.clone(),
            locale: self.locale.clone(),
            picture: self
                .picture
                .as_ref()
                .map(|p| p.as_ref().and_then(Picture::to_core)),
            labels: self
                .label_keys
                .as_ref()
                .map(|l| l.as_ref().map(label_set).unwrap_or_default()),
            extended_fields: extended_fields(
                self.extended_fields.as_ref().and_then(Option::as_ref),
            )?
            .into_iter()
            .collect(),
        })
    }
}

/// `POST /contacts/v4/contacts/{contactId}/labels`: Label Contact.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelContactRequest {
    /// Label keys to add (1 to 100).
    pub label_keys: Vec<String>,
}

impl LabelContactRequest {
    /// The core command for `contact_id`.
    pub fn to_command(&self, contact_id: ContactId) -> Command {
        Command::LabelContact {
            contact_id,
            add: self.label_keys.iter().cloned().collect(),
            remove: BTreeSet::new(),
        }
    }
}

/// Unlabel Contact (`DELETE /contacts/v4/contacts/{contactId}/labels?labelKeys=a&labelKeys=b`):
/// the core command for `contact_id`, the keys read from the query string.
pub fn unlabel_contact_command(contact_id: ContactId, query: &str) -> Command {
    Command::LabelContact {
        contact_id,
        add: BTreeSet::new(),
        remove: form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "labelKeys" || k == "label_keys")
            .map(|(_, v)| v.into_owned())
            .collect(),
    }
}

/// What Get Contact answers: the contact, and whether the id asked for was merged into it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetContactResponse {
    /// The contact (the target, for an id merged away).
    pub contact: Contact,
    /// `REGULAR`, or `MERGED` when the id asked for was merged into this contact.
    pub response_type: String,
}

/// What Create, Update, Label, Unlabel, Merge and Preview Merge Contact answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContactResponse {
    /// The contact.
    pub contact: Contact,
}

impl ContactResponse {
    /// The response for a contact.
    pub fn new(contact: &inbox_core::contacts::Contact) -> Self {
        ContactResponse {
            contact: Contact::from_core(contact),
        }
    }
}

/// Parses a `{contactId}` path segment.
pub fn contact_id_from_path(segment: &str) -> Result<ContactId, WixError> {
    Ok(ContactId::from_uuid(guid("contactId", segment)?))
}

/// `POST /contacts/v4/contacts/{targetContactId}/merge` and `.../preview-merge`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MergeContactsRequest {
    /// The target's current revision; required for Merge, optional for Preview.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_contact_revision: Option<Int64>,
    /// 1 to 5 contacts to merge away; the first takes precedence.
    pub source_contact_ids: Vec<String>,
}

impl MergeContactsRequest {
    fn sources(&self) -> Result<Vec<ContactId>, WixError> {
        self.source_contact_ids
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(ContactId::from_uuid(guid(
                    &format!("sourceContactIds[{i}]"),
                    s,
                )?))
            })
            .collect()
    }

    fn revision(&self) -> Result<Option<u64>, WixError> {
        self.target_contact_revision
            .map(|Int64(r)| {
                u64::try_from(r).map_err(|_| {
                    WixError::invalid(FieldViolation::new(
                        "targetContactRevision",
                        format!("targetContactRevision must not be negative; got {r}"),
                        Rule::Min,
                    ))
                })
            })
            .transpose()
    }

    /// The core command for Merge Contacts into `target`.
    pub fn to_command(&self, target: ContactId) -> Result<Command, WixError> {
        let expected_revision = self.revision()?.ok_or_else(|| {
            WixError::invalid(FieldViolation::new(
                "targetContactRevision",
                "targetContactRevision is required: the target's current revision",
                Rule::RequiredField,
            ))
        })?;
        Ok(Command::MergeContacts {
            target,
            expected_revision,
            sources: self.sources()?,
        })
    }

    /// The arguments of a preview: the expected revision (if given) and the sources.
    pub fn to_preview(&self) -> Result<(Option<u64>, Vec<ContactId>), WixError> {
        Ok((self.revision()?, self.sources()?))
    }
}

/// `pagingMetadata` of Query Contacts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetPagingMetadata {
    /// Contacts on this page.
    pub count: u64,
    /// Where the page starts.
    pub offset: u64,
    /// Contacts matching the filter.
    pub total: u64,
    /// Always false: the total is always counted.
    pub too_many_to_count: bool,
}

/// What Query Contacts answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryContactsResponse {
    /// The page, projected.
    pub contacts: Vec<Contact>,
    /// Offset paging.
    pub paging_metadata: OffsetPagingMetadata,
}

impl QueryContactsResponse {
    /// The response for a page of contacts.
    pub fn new(page: &ContactPage) -> Self {
        QueryContactsResponse {
            contacts: page.contacts.iter().map(Contact::from_view).collect(),
            paging_metadata: OffsetPagingMetadata {
                count: page.contacts.len() as u64,
                offset: page.offset as u64,
                total: page.total as u64,
                too_many_to_count: false,
            },
        }
    }
}

// ------------------------------------------------------------------------------------------
// The read-only calls, whole: bytes in, response or error out.

/// Get Conversation: `segment` is the `{conversationId}` path segment. A merged id answers
/// with the survivor.
pub fn get_conversation(inbox: &Inbox, segment: &str) -> Result<GetConversationResponse, WixError> {
    let id = conversation_id_from_path(segment)?;
    Ok(GetConversationResponse::new(&inbox.conversation(id)?))
}

/// One merge of a conversation's history (an emulator extension).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeEntry {
    /// The conversation merged away.
    pub source_conversation_id: String,
    /// The one it was merged into.
    pub target_conversation_id: String,
    /// The merge's stamp on the site's sequence clock (an int64, as text).
    pub merged_at: String,
    /// The stamp of its revert, if it was reverted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverted_at: Option<String>,
    /// The messages it moved, in order.
    pub message_ids: Vec<String>,
}

/// `GET /emulator/v1/conversations/{id}/merge-history` answers with this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeHistoryResponse {
    /// By stamp.
    pub merges: Vec<MergeEntry>,
}

/// A conversation's merge history (`segment` is the id in the path).
pub fn merge_history(inbox: &Inbox, segment: &str) -> Result<MergeHistoryResponse, WixError> {
    let id = conversation_id_from_path(segment)?;
    Ok(MergeHistoryResponse {
        merges: inbox
            .merge_history(id)?
            .into_iter()
            .map(|m| MergeEntry {
                source_conversation_id: m.source.to_string(),
                target_conversation_id: m.target.to_string(),
                merged_at: m.merged_at.0.to_string(),
                reverted_at: m.reverted_at.map(|r| r.0.to_string()),
                message_ids: m.messages.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    })
}

/// `POST /emulator/v1/conversations/{id}/revert-merge/preview` answers with this: both
/// conversations as the revert would leave them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevertPreviewResponse {
    /// The conversation, live again.
    pub conversation: Conversation,
    /// The conversation it had been merged into.
    pub target_conversation: Conversation,
}

/// Previews the revert of the merge that holds the conversation of `segment`, at `now`.
pub fn preview_revert(
    inbox: &Inbox,
    segment: &str,
    now: Timestamp,
) -> Result<RevertPreviewResponse, WixError> {
    let id = conversation_id_from_path(segment)?;
    let (restored, target) = inbox.preview_revert(id, now)?;
    Ok(RevertPreviewResponse {
        conversation: Conversation::from_core(&restored),
        target_conversation: Conversation::from_core(&target),
    })
}

/// List Messages: `query` is the URL query string, without the `?`.
pub fn list_messages(inbox: &Inbox, query: &str) -> Result<ListMessagesResponse, WixError> {
    let req = ListMessagesRequest::from_query(query)?.to_core()?;
    Ok(ListMessagesResponse::new(&inbox.list_messages(&req)?))
}

/// Get Contact: `segment` is the `{contactId}` path segment, `query` the URL query string
/// (`fields` and `fieldsets` project, as in List Contacts). An id merged away answers with
/// the contact it was merged into, `responseType: MERGED` (as Wix documents); a deleted or
/// unknown id is not found.
pub fn get_contact(
    inbox: &Inbox,
    segment: &str,
    query: &str,
) -> Result<GetContactResponse, WixError> {
    let id = contact_id_from_path(segment)?;
    let parts = crate::contacts_query::parse_list_query(query)?.parts;
    let live = inbox.contacts().resolve(id);
    inbox
        .contacts()
        .get(live)
        .map(|c| GetContactResponse {
            contact: Contact::from_view(&ContactView::projected(c, parts.as_deref())),
            response_type: if live == id { "REGULAR" } else { "MERGED" }.to_owned(),
        })
        .ok_or_else(|| {
            WixError::application(404, "CONTACT_NOT_FOUND", format!("contact {id} not found"))
                .with_data(serde_json::json!({"contactId": id.to_string()}))
        })
}

fn run_query(inbox: &Inbox, query: &ContactQuery) -> Result<QueryContactsResponse, WixError> {
    let page = inbox.contacts().query(query).map_err(|e| {
        use inbox_core::contacts::QueryContactsError as E;
        match e {
            E::IllegalLimit(_) => WixError::application(400, "ILLEGAL_LIMIT", e.to_string()),
            E::UnsupportedFilter { .. } => {
                WixError::application(400, "UNSUPPORTED_FILTER", e.to_string())
            }
        }
    })?;
    Ok(QueryContactsResponse::new(&page))
}

/// Query Contacts: `body` is the request body.
pub fn query_contacts(inbox: &Inbox, body: &[u8]) -> Result<QueryContactsResponse, WixError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WixError::malformed_json(format!("request body is not valid JSON: {e}")))?;
    run_query(inbox, &crate::contacts_query::parse_query_request(&value)?)
}

/// One of Wix's `ContactsFacet`s: a group of contacts and how many there are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactsFacet {
    /// `ALL_CONTACTS`, `NOT_LABELED` or `LABEL`.
    pub facet_type: String,
    /// A label's namespace (`custom`, `contacts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A label's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facet_key: Option<String>,
    /// A label's name: its key without the namespace (the emulator keeps no display names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facet_display_name: Option<String>,
    /// How many contacts.
    pub count: u64,
    /// The filter that lists those contacts with Query Contacts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_filter: Option<Value>,
}

/// What List Facets and Query Facets answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FacetsResponse {
    /// The page of facets: all contacts, those not labelled, then one per label key.
    pub facets: Vec<ContactsFacet>,
    /// Offset paging over the facets.
    pub paging_metadata: OffsetPagingMetadata,
}

fn facets_page(inbox: &Inbox, query: &ContactQuery) -> Result<FacetsResponse, WixError> {
    let facets = inbox
        .contacts()
        .facets(&query.filter)
        .map_err(|e| WixError::application(400, "UNSUPPORTED_FILTER", e.to_string()))?;
    let count = |n: usize| n as u64;
    let mut all = vec![
        ContactsFacet {
            facet_type: "ALL_CONTACTS".into(),
            namespace: None,
            facet_key: None,
            facet_display_name: None,
            count: count(facets.all),
            query_filter: Some(serde_json::json!({})),
        },
        ContactsFacet {
            facet_type: "NOT_LABELED".into(),
            namespace: None,
            facet_key: None,
            facet_display_name: None,
            count: count(facets.not_labeled),
            query_filter: None,
        },
    ];
    let labels = inbox.contacts().catalog().labels();
    all.extend(facets.labels.iter().map(|(key, n)| {
        let (namespace, name) = key.split_once('.').unwrap_or(("", key));
        // The label's display name; a label the catalog does not know (one of Wix's, seen
        // only on contacts) is named by its key without the namespace.
        let display = labels.get(key).map_or(name, |l| l.display_name.as_str());
        ContactsFacet {
            facet_type: "LABEL".into(),
            namespace: Some(namespace.to_owned()),
            facet_key: Some(key.clone()),
            facet_display_name: Some(display.to_owned()),
            count: count(*n),
            query_filter: Some(serde_json::json!({"info.labelKeys": {"$hasSome": [key]}})),
        }
    }));
    let total = all.len();
    let limit = query
        .limit
        .unwrap_or(inbox_core::contacts::DEFAULT_QUERY_LIMIT);
    let page: Vec<ContactsFacet> = all.into_iter().skip(query.offset).take(limit).collect();
    Ok(FacetsResponse {
        paging_metadata: OffsetPagingMetadata {
            count: page.len() as u64,
            offset: query.offset as u64,
            total: total as u64,
            too_many_to_count: false,
        },
        facets: page,
    })
}

/// List Facets (`GET /contacts/v4/contacts/facets`): `query` is the URL query string
/// (`paging.limit`, `paging.offset`; `language` is accepted and ignored).
pub fn list_facets(inbox: &Inbox, query: &str) -> Result<FacetsResponse, WixError> {
    let parsed = crate::contacts_query::parse_list_query(query)?;
    facets_page(inbox, &parsed)
}

/// Query Facets (`POST /contacts/v4/contacts/facets/query`): `body` is `{filter?, paging?,
/// language?}`; the facets count the contacts the filter matches.
pub fn query_facets(inbox: &Inbox, body: &[u8]) -> Result<FacetsResponse, WixError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WixError::malformed_json(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(WixError::malformed_json(
            "request body must be a JSON object",
        ));
    };
    let mut query = Map::new();
    for key in ["filter", "paging"] {
        if let Some(v) = body.remove(key) {
            query.insert(key.to_owned(), v);
        }
    }
    let parsed = crate::contacts_query::parse_query_request(
        &serde_json::json!({ "query": Value::Object(query) }),
    )?;
    facets_page(inbox, &parsed)
}

/// Which bulk call (`POST /contacts/v4/bulk/contacts/...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkKind {
    /// `.../delete`: Bulk Delete Contacts.
    Delete,
    /// `.../update`: Bulk Update Contacts (`info`).
    Update,
    /// `.../add-remove-labels`: Bulk Label and Unlabel Contacts.
    Labels,
}

/// A bulk call's commands: one per contact the `filter` matches, decided against the state
/// it is given. Wix runs these as an asynchronous job and answers its id; the emulator runs
/// them at once, each contact on its own (a contact its command refuses, such as a member's
/// deletion, is skipped, as Wix's job counts it a failed item), and answers a job id that
/// nothing else knows (the Async Jobs API is not served).
pub fn bulk_commands(inbox: &Inbox, kind: BulkKind, body: &[u8]) -> Result<Vec<Command>, WixError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WixError::malformed_json(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(WixError::malformed_json(
            "request body must be a JSON object",
        ));
    };
    let present = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    let (filter, search) = (body.remove("filter"), body.remove("search"));
    if !present(&filter) && !present(&search) {
        return Err(WixError::application(
            400,
            "NEITHER_FILTER_NOR_SEARCH",
            "a bulk call needs a filter (or a search) of the contacts it changes",
        ));
    }
    let mut query = Map::new();
    if let Some(f) = filter {
        query.insert("filter".into(), f);
    }
    let mut request = Map::new();
    request.insert("query".into(), Value::Object(query));
    if let Some(s) = search {
        request.insert("search".into(), s);
    }
    let mut parsed = crate::contacts_query::parse_query_request(&Value::Object(request))?;
    parsed.parts = Some(Vec::new());
    parsed.limit = Some(inbox_core::contacts::MAX_QUERY_LIMIT);
    let mut targets = Vec::new();
    loop {
        let page = inbox
            .contacts()
            .query(&parsed)
            .map_err(|e| WixError::application(400, "UNSUPPORTED_FILTER", e.to_string()))?;
        targets.extend(page.contacts.iter().map(|c| (c.id, c.revision)));
        parsed.offset += page.contacts.len();
        if page.contacts.is_empty() || parsed.offset >= page.total {
            break;
        }
    }
    let rest = Value::Object(body);
    let commands = match kind {
        BulkKind::Delete => targets
            .into_iter()
            .map(|(contact_id, _)| Command::DeleteContact { contact_id })
            .collect(),
        BulkKind::Update => {
            #[derive(Deserialize)]
            struct Update {
                info: Option<ContactInfoPatch>,
            }
            let update: Update = parse_value(rest)?;
            let patch = required(&update.info, "info")?.to_core()?;
            targets
                .into_iter()
                .map(|(contact_id, revision)| Command::UpdateContact {
                    contact_id,
                    expected_revision: revision,
                    patch: patch.clone(),
                    allow_duplicates: false,
                })
                .collect()
        }
        BulkKind::Labels => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", default)]
            #[derive(Default)]
            struct Labels {
                label_keys_to_add: Vec<String>,
                label_keys_to_remove: Vec<String>,
            }
            let labels: Labels = parse_value(rest)?;
            // Checked once here, rather than refused contact by contact and skipped.
            let count = labels.label_keys_to_add.len() + labels.label_keys_to_remove.len();
            if count == 0 {
                return Err(WixError::invalid(FieldViolation::new(
                    "labelKeysToAdd",
                    "labelKeysToAdd or labelKeysToRemove must name a label key",
                    Rule::MinSize,
                )));
            }
            for (i, key) in labels
                .label_keys_to_add
                .iter()
                .chain(&labels.label_keys_to_remove)
                .enumerate()
            {
                inbox_core::contacts::check_label_key(key).map_err(|reason| {
                    WixError::invalid(FieldViolation::new(
                        format!("labelKeys[{i}]"),
                        format!("invalid label key {key:?}: {reason}"),
                        Rule::Format,
                    ))
                })?;
            }
            targets
                .into_iter()
                .map(|(contact_id, _)| Command::LabelContact {
                    contact_id,
                    add: labels.label_keys_to_add.iter().cloned().collect(),
                    remove: labels.label_keys_to_remove.iter().cloned().collect(),
                })
                .collect()
        }
    };
    Ok(commands)
}

/// List Contacts: `query` is the URL query string, without the `?`. Answers like Query
/// Contacts.
pub fn list_contacts(inbox: &Inbox, query: &str) -> Result<QueryContactsResponse, WixError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(WixError::invalid(FieldViolation::new(
            "",
            format!("query string is longer than {MAX_QUERY_LEN} bytes"),
            Rule::MaxLength,
        )));
    }
    run_query(inbox, &crate::contacts_query::parse_list_query(query)?)
}

/// Preview Merge Contacts: what the target would become; nothing changes. `now` is the
/// time the preview's `updatedDate` shows.
pub fn preview_merge(
    inbox: &Inbox,
    target_segment: &str,
    body: &[u8],
    now: Timestamp,
) -> Result<ContactResponse, WixError> {
    let target = contact_id_from_path(target_segment)?;
    let req: MergeContactsRequest = parse_body(body)?;
    let (revision, sources) = req.to_preview()?;
    let contact = inbox.preview_contact_merge(target, revision, &sources, now)?;
    Ok(ContactResponse::new(&contact))
}
