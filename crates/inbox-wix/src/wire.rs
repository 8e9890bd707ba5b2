//! The Wix objects as JSON: `Message`, its content, `Conversation`, `Contact`, and the enums.
//!
//! One struct serves both ways: it deserializes what clients and webhooks send (every field
//! optional, unknown fields ignored, as Wix does) and serializes what we answer (camelCase,
//! absent fields omitted). Conversions to and from the core's types are written out by hand
//! here, so the core never sees a wire name and a wire change never reaches the core.
//!
//! Numbers: `sequence` and other int64s are strings on the wire (protobuf's JSON mapping); on
//! input a number is accepted too. Dates are RFC 3339 (`2021-12-30T07:39:12.353Z`), written
//! with as many fractional digits as the microsecond value needs.

use chrono::{DateTime, SecondsFormat};
use inbox_core::message::{
    self as core_msg, BasicItem, ButtonAction, ButtonDraft, Channel, ContentBody, ContentDraft,
    TemplateDraft,
};
use inbox_core::{
    AppId, ContactId, ConversationId, ConversationView, MemberId, MessageId, ParticipantId,
    Sequence, Timestamp, VisitorId, WixUserId,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::{FieldViolation, Rule, WixError};

mod contact;
pub use contact::*;

// ------------------------------------------------------------------------------------------
// enums

/// `ChannelType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChannelType {
    /// `UNKNOWN_CHANNEL_TYPE`.
    #[serde(rename = "UNKNOWN_CHANNEL_TYPE")]
    Unknown,
    /// `CHAT`.
    Chat,
    /// `EMAIL`.
    Email,
    /// `SMS`.
    Sms,
    /// `FACEBOOK`.
    Facebook,
    /// `INSTAGRAM`.
    Instagram,
    /// `WHATSAPP`.
    Whatsapp,
}

impl From<ChannelType> for Channel {
    fn from(c: ChannelType) -> Self {
        match c {
            ChannelType::Unknown => Channel::Unknown,
            ChannelType::Chat => Channel::Chat,
            ChannelType::Email => Channel::Email,
            ChannelType::Sms => Channel::Sms,
            ChannelType::Facebook => Channel::Facebook,
            ChannelType::Instagram => Channel::Instagram,
            ChannelType::Whatsapp => Channel::Whatsapp,
        }
    }
}

impl From<Channel> for ChannelType {
    fn from(c: Channel) -> Self {
        match c {
            Channel::Unknown => ChannelType::Unknown,
            Channel::Chat => ChannelType::Chat,
            Channel::Email => ChannelType::Email,
            Channel::Sms => ChannelType::Sms,
            Channel::Facebook => ChannelType::Facebook,
            Channel::Instagram => ChannelType::Instagram,
            Channel::Whatsapp => ChannelType::Whatsapp,
        }
    }
}

/// `Visibility`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Visibility {
    /// `UNKNOWN_VISIBILITY`.
    #[serde(rename = "UNKNOWN_VISIBILITY")]
    Unknown,
    /// `BUSINESS_AND_PARTICIPANT`.
    BusinessAndParticipant,
    /// `BUSINESS`.
    Business,
}

impl From<Visibility> for core_msg::Visibility {
    fn from(v: Visibility) -> Self {
        match v {
            Visibility::Unknown => core_msg::Visibility::Unknown,
            Visibility::BusinessAndParticipant => core_msg::Visibility::BusinessAndParticipant,
            Visibility::Business => core_msg::Visibility::Business,
        }
    }
}

impl From<core_msg::Visibility> for Visibility {
    fn from(v: core_msg::Visibility) -> Self {
        match v {
            core_msg::Visibility::Unknown => Visibility::Unknown,
            core_msg::Visibility::BusinessAndParticipant => Visibility::BusinessAndParticipant,
            core_msg::Visibility::Business => Visibility::Business,
        }
    }
}

/// `Direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    /// `UNKNOWN_DIRECTION`.
    #[serde(rename = "UNKNOWN_DIRECTION")]
    Unknown,
    /// `BUSINESS_TO_PARTICIPANT`.
    BusinessToParticipant,
    /// `PARTICIPANT_TO_BUSINESS`.
    ParticipantToBusiness,
}

impl From<Direction> for core_msg::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Unknown => core_msg::Direction::Unknown,
            Direction::BusinessToParticipant => core_msg::Direction::BusinessToParticipant,
            Direction::ParticipantToBusiness => core_msg::Direction::ParticipantToBusiness,
        }
    }
}

impl From<core_msg::Direction> for Direction {
    fn from(d: core_msg::Direction) -> Self {
        match d {
            core_msg::Direction::Unknown => Direction::Unknown,
            core_msg::Direction::BusinessToParticipant => Direction::BusinessToParticipant,
            core_msg::Direction::ParticipantToBusiness => Direction::ParticipantToBusiness,
        }
    }
}

/// `Orientation` of a template's image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Orientation {
    /// `UNKNOWN_ORIENTATION`.
    #[serde(rename = "UNKNOWN_ORIENTATION")]
    Unknown,
    /// `PORTRAIT`.
    Portrait,
    /// `LANDSCAPE`.
    Landscape,
}

impl From<Orientation> for core_msg::Orientation {
    fn from(o: Orientation) -> Self {
        match o {
            Orientation::Unknown => core_msg::Orientation::Unknown,
            Orientation::Portrait => core_msg::Orientation::Portrait,
            Orientation::Landscape => core_msg::Orientation::Landscape,
        }
    }
}

impl From<core_msg::Orientation> for Orientation {
    fn from(o: core_msg::Orientation) -> Self {
        match o {
            core_msg::Orientation::Unknown => Orientation::Unknown,
            core_msg::Orientation::Portrait => Orientation::Portrait,
            core_msg::Orientation::Landscape => Orientation::Landscape,
        }
    }
}

// ------------------------------------------------------------------------------------------
// scalars

/// An int64 as Wix writes it: a string on output; a string or a number on input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Int64(pub i64);

impl Serialize for Int64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(Int64(n)),
            Either::Text(t) => t.trim().parse().map(Int64).map_err(|_| {
                serde::de::Error::custom(format_args!("expected an int64, got {t:?}"))
            }),
        }
    }
}

/// A non-negative count that clients send as a number or, in query strings, as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = Int64::deserialize(d)?;
        u64::try_from(n.0).map(Count).map_err(|_| {
            serde::de::Error::custom(format_args!("expected a non-negative integer, got {}", n.0))
        })
    }
}

/// A timestamp as RFC 3339 text, the way Wix writes dates.
pub fn format_date(t: Timestamp) -> String {
    t.to_datetime().to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Reads an RFC 3339 date; `None` if it is not one.
pub fn parse_date(text: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|d| Timestamp::from(d.with_timezone(&chrono::Utc)))
}

/// Reads a GUID, naming the field in the error.
pub(crate) fn guid(field: &str, text: &str) -> Result<Uuid, WixError> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        WixError::invalid(FieldViolation::new(
            field,
            format!("must be a GUID; got {text:?}"),
            Rule::Format,
        ))
    })
}

// ------------------------------------------------------------------------------------------
// message content

/// `message.content`. On input several content types may be present (validation refuses
/// that); on output exactly one is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Content {
    /// `previewText`, at most 256 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_text: Option<String>,
    /// `title`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `basic`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic: Option<Basic>,
    /// `template`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    /// `minimal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimal: Option<Minimal>,
    /// `form`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<Form>,
    /// `system`: only ever consumed, never sent by apps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
}

/// The example flow's spelling of content: `"payload": {"type": "MINIMAL", "minimal": {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Payload {
    /// `BASIC`, `TEMPLATE`, `MINIMAL`, `FORM` or `SYSTEM`; must name the part that is present.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The content parts, as in [`Content`].
    #[serde(flatten)]
    pub content: Content,
}

/// `basic`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Basic {
    /// The items, each shown as if it were a message of its own.
    pub items: Vec<Item>,
}

/// One item of a basic message or of a form's media: exactly one of the three.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Item {
    /// `text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<File>,
}

/// `image`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Image {
    /// Media id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// File name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Width in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// `file`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct File {
    /// Media id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// File name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// MIME type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// `template`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Template {
    /// Title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Up to 10 lines.
    pub text_lines: Vec<String>,
    /// Image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Image layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orientation: Option<Orientation>,
    /// Up to 10 buttons.
    pub buttons: Vec<Button>,
}

/// A button: `{label, launchUrl}` or `{label, postbackProperties: {interactionId, appId}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Button {
    /// The label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// An action button's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_url: Option<String>,
    /// A postback button's properties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postback_properties: Option<Postback>,
}

/// `postbackProperties`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Postback {
    /// What the Button Interacted event carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction_id: Option<String>,
    /// The app that receives it (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

/// `minimal`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Minimal {
    /// The line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Icon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
    /// Link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `form`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Form {
    /// Title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// 1 to 15 fields.
    pub fields: Vec<FormField>,
    /// Up to 15 media items.
    pub media: Vec<Item>,
}

/// One form field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FormField {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `system`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct System {
    /// Text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Buttons.
    pub buttons: Vec<Button>,
    /// Image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

/// `badges[i]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Badge {
    /// Label.
    pub text: String,
    /// Icon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
    /// Who sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badge_visibility: Option<String>,
}

/// A message's `sender`, or a click's `interactedBy`: one identity plus the contact id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Identity {
    /// `anonymousVisitorId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_visitor_id: Option<String>,
    /// `memberId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// `wixUserId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wix_user_id: Option<String>,
    /// `appId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// `contactId` (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
}

/// A `Message`, both as sent to Send Message and as returned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Message {
    /// Numeric string (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// The example flow's spelling of `content` (input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// Sender (read-only on Send Message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<Identity>,
    /// At most one.
    pub badges: Vec<Badge>,
    /// At most one.
    pub target_channels: Vec<ChannelType>,
    /// Channel ids to send to: accepted and not kept (the emulator sends nothing anywhere);
    /// always answered, empty, as the SDK types it as always present.
    pub target_channel_ids: Vec<String>,
    /// Where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_channel: Option<ChannelType>,
    /// The sending app (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Who can see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// Its place (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<Int64>,
    /// Which way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// When (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_date: Option<String>,
    /// Sent without notifications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent: Option<bool>,
}

// ------------------------------------------------------------------------------------------
// wire -> core (what a client sends)

impl Message {
    /// The content, from `content` or from the example flow's `payload` form (not both).
    fn take_content(&mut self) -> Result<Content, WixError> {
        match (self.content.take(), self.payload.take()) {
            (Some(_), Some(_)) => Err(WixError::invalid(FieldViolation::new(
                "message.payload",
                "message.content and message.payload are two spellings of one field; send one",
                Rule::Other,
            ))),
            (Some(c), None) => Ok(c),
            (None, Some(p)) => {
                if let Some(kind) = &p.kind {
                    let part = match kind.to_ascii_uppercase().as_str() {
                        "BASIC" => p.content.basic.is_some(),
                        "TEMPLATE" => p.content.template.is_some(),
                        "MINIMAL" => p.content.minimal.is_some(),
                        "FORM" => p.content.form.is_some(),
                        "SYSTEM" => p.content.system.is_some(),
                        _ => {
                            return Err(WixError::invalid(FieldViolation::new(
                                "message.payload.type",
                                format!(
                                    "must be BASIC, TEMPLATE, MINIMAL, FORM or SYSTEM; got {kind:?}"
                                ),
                                Rule::InvalidEnumValue,
                            )));
                        }
                    };
                    if !part {
                        return Err(WixError::invalid(FieldViolation::new(
                            "message.payload",
                            format!(
                                "payload.type is {kind:?} but payload.{} is missing",
                                kind.to_ascii_lowercase()
                            ),
                            Rule::RequiredField,
                        )));
                    }
                }
                Ok(p.content)
            }
            (None, None) => Ok(Content::default()),
        }
    }

    /// The draft a Send Message body asks for. `outer_direction` is the `direction` the
    /// example flows put beside `message`; it must agree with one inside, if both are given.
    pub fn into_draft(
        mut self,
        outer_direction: Option<Direction>,
    ) -> Result<core_msg::MessageDraft, WixError> {
        let direction = match (self.direction, outer_direction) {
            (Some(inner), Some(outer)) if inner != outer => {
                return Err(WixError::invalid(FieldViolation::new(
                    "direction",
                    "direction is given twice (beside and inside message) with different values",
                    Rule::Other,
                )));
            }
            (inner, outer) => inner.or(outer),
        };
        let content = self.take_content()?;
        let items = |items: Vec<Item>, path: &str| -> Result<Vec<BasicItem>, WixError> {
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| item.into_core(&format!("{path}[{i}]")))
                .collect()
        };
        let content = ContentDraft {
            preview_text: content.preview_text,
            title: content.title,
            basic: content
                .basic
                .map(|b| items(b.items, "message.content.basic.items"))
                .transpose()?,
            template: content.template.map(|t| TemplateDraft {
                title: t.title,
                text_lines: t.text_lines,
                image_url: t.image_url,
                orientation: t.orientation.map(Into::into),
                buttons: t
                    .buttons
                    .into_iter()
                    .map(|b| ButtonDraft {
                        label: b.label.unwrap_or_default(),
                        launch_url: b.launch_url,
                        interaction_id: b.postback_properties.and_then(|p| p.interaction_id),
                    })
                    .collect(),
            }),
            minimal: content.minimal.map(|m| core_msg::Minimal {
                text: m.text.unwrap_or_default().into(),
                icon_url: m.icon_url.map(Into::into),
                url: m.url.map(Into::into),
            }),
            form: content
                .form
                .map(|f| -> Result<core_msg::Form, WixError> {
                    Ok(core_msg::Form {
                        title: f.title.map(Into::into),
                        description: f.description.map(Into::into),
                        fields: f
                            .fields
                            .into_iter()
                            .map(|x| core_msg::FormField {
                                name: x.name.into(),
                                value: x.value.into(),
                            })
                            .collect(),
                        media: items(f.media, "message.content.form.media")?,
                    })
                })
                .transpose()?,
            system: content.system.map(|s| system_into_core(s, None)),
        };
        Ok(core_msg::MessageDraft {
            content,
            badges: self
                .badges
                .into_iter()
                .enumerate()
                .map(|(i, b)| b.into_core(i))
                .collect::<Result<_, _>>()?,
            target_channels: self.target_channels.into_iter().map(Into::into).collect(),
            source_channel: self.source_channel.map(Into::into),
            visibility: self.visibility.map(Into::into),
            direction: direction.map(Into::into),
            silent: self.silent.unwrap_or(false),
        })
    }

    /// A message as a webhook reports it: a fact, so nothing is validated beyond what the
    /// core needs (an id). `conversation_id` is the conversation the event names; a missing
    /// `sequence` falls back to `createdDate` in microseconds, a missing `createdDate` to the
    /// event time.
    pub fn into_observed(
        mut self,
        conversation_id: ConversationId,
        event_time: Timestamp,
    ) -> Result<core_msg::Message, String> {
        let id: MessageId = self
            .id
            .as_deref()
            .ok_or("message.id is missing")?
            .trim()
            .parse()
            .map_err(|_| format!("message.id {:?} is not a numeric message id", self.id))?;
        let created_date = match &self.created_date {
            Some(text) => parse_date(text)
                .ok_or_else(|| format!("message.createdDate {text:?} is not an RFC 3339 date"))?,
            None => event_time,
        };
        let sequence = self
            .sequence
            .map_or(Sequence(created_date.as_micros()), |s| Sequence(s.0));
        let app_id = self.app_id.as_deref().and_then(|a| Uuid::parse_str(a).ok());
        let content = self.take_content().map_err(|e| e.message().to_owned())?;
        let extras = (content.preview_text.is_some() || content.title.is_some()).then(|| {
            Box::new(core_msg::ContentExtras {
                preview_text: content.preview_text.clone().map(Into::into),
                title: content.title.clone().map(Into::into),
            })
        });
        let observed_items = |items: Vec<Item>| -> Vec<BasicItem> {
            items
                .into_iter()
                .filter_map(|i| i.into_core("").ok())
                .collect()
        };
        let body = if let Some(b) = content.basic {
            ContentBody::Basic(observed_items(b.items).into())
        } else if let Some(t) = content.template {
            ContentBody::Template(Box::new(core_msg::Template {
                title: t.title.map(Into::into),
                text_lines: t.text_lines.into_iter().map(Into::into).collect(),
                image_url: t.image_url.map(Into::into),
                orientation: t.orientation.map(Into::into),
                buttons: buttons_into_core(t.buttons, app_id.map(AppId::from_uuid)),
            }))
        } else if let Some(m) = content.minimal {
            ContentBody::Minimal(Box::new(core_msg::Minimal {
                text: m.text.unwrap_or_default().into(),
                icon_url: m.icon_url.map(Into::into),
                url: m.url.map(Into::into),
            }))
        } else if let Some(f) = content.form {
            ContentBody::Form(Box::new(core_msg::Form {
                title: f.title.map(Into::into),
                description: f.description.map(Into::into),
                fields: f
                    .fields
                    .into_iter()
                    .map(|x| core_msg::FormField {
                        name: x.name.into(),
                        value: x.value.into(),
                    })
                    .collect(),
                media: observed_items(f.media),
            }))
        } else if let Some(s) = content.system {
            ContentBody::System(Box::new(system_into_core(s, app_id.map(AppId::from_uuid))))
        } else {
            // A content type this version does not know: the message keeps its place, ids
            // and dates, with an empty body.
            ContentBody::Basic(Vec::new().into())
        };
        Ok(core_msg::Message {
            id,
            sequence,
            created_date,
            conversation_id,
            sender: self
                .sender
                .as_ref()
                .map_or(core_msg::Sender::Unknown, Identity::to_sender),
            target_channels: self.target_channels.iter().map(|c| (*c).into()).collect(),
            source_channel: self.source_channel.map(Into::into),
            app_id: app_id.map(AppId::from_uuid),
            visibility: self
                .visibility
                .map_or(core_msg::Visibility::BusinessAndParticipant, Into::into),
            direction: self
                .direction
                .map_or(core_msg::Direction::Unknown, Into::into),
            silent: self.silent.unwrap_or(false),
            content: core_msg::Content { extras, body },
            badges: self
                .badges
                .into_iter()
                .map(Badge::observed_into_core)
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        })
    }
}

fn buttons_into_core(buttons: Vec<Button>, app_id: Option<AppId>) -> Vec<core_msg::Button> {
    buttons
        .into_iter()
        .filter_map(|b| {
            let action = match (b.launch_url, b.postback_properties) {
                (Some(url), _) => ButtonAction::Launch { url: url.into() },
                (None, Some(p)) => ButtonAction::Postback {
                    interaction_id: p.interaction_id?.into(),
                    app_id: p
                        .app_id
                        .as_deref()
                        .and_then(|a| Uuid::parse_str(a).ok())
                        .map(AppId::from_uuid)
                        .or(app_id),
                },
                (None, None) => return None,
            };
            Some(core_msg::Button {
                label: b.label.unwrap_or_default().into(),
                action,
            })
        })
        .collect()
}

fn system_into_core(s: System, app_id: Option<AppId>) -> core_msg::System {
    core_msg::System {
        text: s.text.unwrap_or_default().into(),
        buttons: buttons_into_core(s.buttons, app_id),
        image_url: s.image_url.map(Into::into),
    }
}

impl Item {
    fn into_core(self, path: &str) -> Result<BasicItem, WixError> {
        match (self.text, self.image, self.file) {
            (Some(text), None, None) => Ok(BasicItem::Text(text.into())),
            (None, Some(image), None) => Ok(BasicItem::Image(Box::new(core_msg::Image {
                id: image.id.map(Into::into),
                url: image.url.unwrap_or_default().into(),
                filename: image.filename.map(Into::into),
                width: image.width,
                height: image.height,
            }))),
            (None, None, Some(file)) => Ok(BasicItem::File(Box::new(core_msg::File {
                id: file.id.map(Into::into),
                url: file.url.unwrap_or_default().into(),
                filename: file.filename.map(Into::into),
                mime_type: file.mime_type.map(Into::into),
            }))),
            _ => Err(WixError::invalid(FieldViolation::new(
                path,
                "an item has exactly one of text, image or file",
                Rule::Other,
            ))),
        }
    }

    fn from_core(item: &BasicItem) -> Item {
        match item {
            BasicItem::Text(t) => Item {
                text: Some(t.to_string()),
                ..Item::default()
            },
            BasicItem::Image(i) => Item {
                image: Some(Image {
                    id: i.id.as_deref().map(str::to_owned),
                    url: Some(i.url.to_string()),
                    filename: i.filename.as_deref().map(str::to_owned),
                    width: i.width,
                    height: i.height,
                }),
                ..Item::default()
            },
            BasicItem::File(f) => Item {
                file: Some(File {
                    id: f.id.as_deref().map(str::to_owned),
                    url: Some(f.url.to_string()),
                    filename: f.filename.as_deref().map(str::to_owned),
                    mime_type: f.mime_type.as_deref().map(str::to_owned),
                }),
                ..Item::default()
            },
        }
    }
}

/// The values `badges[i].badgeVisibility` may take (Wix's `BadgeVisibility` enum).
pub const BADGE_VISIBILITIES: [&str; 3] = [
    "UNKNOWN_BADGE_VISIBILITY",
    "BUSINESS_AND_PARTICIPANT",
    "BUSINESS",
];

impl Badge {
    /// The core badge; a `badgeVisibility` outside Wix's enum is refused (`badges[i]`).
    fn into_core(self, i: usize) -> Result<core_msg::Badge, WixError> {
        if let Some(v) = self.badge_visibility.as_deref()
            && !BADGE_VISIBILITIES.contains(&v)
        {
            return Err(WixError::invalid(FieldViolation::new(
                format!("message.badges[{i}].badgeVisibility"),
                format!(
                    "badgeVisibility must be one of {}; got {v:?}",
                    BADGE_VISIBILITIES.join(", ")
                ),
                Rule::InvalidEnumValue,
            )));
        }
        Ok(self.observed_into_core())
    }

    /// The core badge of a message observed on Wix (a webhook): kept as Wix sent it, a
    /// visibility this build does not know included.
    fn observed_into_core(self) -> core_msg::Badge {
        core_msg::Badge {
            text: self.text.into(),
            icon_url: self.icon_url.map(Into::into),
            badge_visibility: self.badge_visibility.map(Into::into),
        }
    }
}

impl Identity {
    /// The core sender this identity names (member over contact over visitor; a Wix user or
    /// an app otherwise). Ids that are not GUIDs are dropped.
    pub fn to_sender(&self) -> core_msg::Sender {
        let id = |s: &Option<String>| s.as_deref().and_then(|s| Uuid::parse_str(s.trim()).ok());
        let contact = id(&self.contact_id).map(ContactId::from_uuid);
        if let Some(m) = id(&self.member_id) {
            core_msg::Sender::Member {
                member: MemberId::from_uuid(m),
                contact,
            }
        } else if let Some(c) = contact {
            core_msg::Sender::Contact(c)
        } else if let Some(v) = id(&self.anonymous_visitor_id) {
            core_msg::Sender::Visitor(VisitorId::from_uuid(v))
        } else if let Some(u) = id(&self.wix_user_id) {
            core_msg::Sender::WixUser(WixUserId::from_uuid(u))
        } else if let Some(a) = id(&self.app_id) {
            core_msg::Sender::App(AppId::from_uuid(a))
        } else {
            core_msg::Sender::Unknown
        }
    }

    /// The wire form of a core sender.
    pub fn from_sender(sender: &core_msg::Sender) -> Identity {
        let s = |u: Uuid| Some(u.to_string());
        match sender {
            core_msg::Sender::Unknown => Identity::default(),
            core_msg::Sender::Visitor(v) => Identity {
                anonymous_visitor_id: s(v.as_uuid()),
                ..Identity::default()
            },
            core_msg::Sender::Contact(c) => Identity {
                contact_id: s(c.as_uuid()),
                ..Identity::default()
            },
            core_msg::Sender::Member { member, contact } => Identity {
                member_id: s(member.as_uuid()),
                contact_id: contact.and_then(|c| s(c.as_uuid())),
                ..Identity::default()
            },
            core_msg::Sender::WixUser(u) => Identity {
                wix_user_id: s(u.as_uuid()),
                ..Identity::default()
            },
            core_msg::Sender::App(a) => Identity {
                app_id: s(a.as_uuid()),
                ..Identity::default()
            },
        }
    }
}

// ------------------------------------------------------------------------------------------
// core -> wire (what we answer)

fn buttons_from_core(buttons: &[core_msg::Button]) -> Vec<Button> {
    buttons
        .iter()
        .map(|b| match &b.action {
            ButtonAction::Launch { url } => Button {
                label: Some(b.label.to_string()),
                launch_url: Some(url.to_string()),
                postback_properties: None,
            },
            ButtonAction::Postback {
                interaction_id,
                app_id,
            } => Button {
                label: Some(b.label.to_string()),
                launch_url: None,
                postback_properties: Some(Postback {
                    interaction_id: Some(interaction_id.to_string()),
                    app_id: app_id.map(|a| a.as_uuid().to_string()),
                }),
            },
        })
        .collect()
}

impl Content {
    /// The wire form of core content. Redacted content (a privacy request) is an empty
    /// basic message.
    pub fn from_core(c: &core_msg::Content) -> Content {
        let mut out = Content {
            preview_text: c.preview_text().map(str::to_owned),
            title: c.title().map(str::to_owned),
            ..Content::default()
        };
        match &c.body {
            ContentBody::Basic(items) => {
                out.basic = Some(Basic {
                    items: items.iter().map(Item::from_core).collect(),
                });
            }
            ContentBody::Template(t) => {
                out.template = Some(Template {
                    title: t.title.as_deref().map(str::to_owned),
                    text_lines: t.text_lines.iter().map(|l| l.to_string()).collect(),
                    image_url: t.image_url.as_deref().map(str::to_owned),
                    orientation: t.orientation.map(Into::into),
                    buttons: buttons_from_core(&t.buttons),
                });
            }
            ContentBody::Minimal(m) => {
                out.minimal = Some(Minimal {
                    text: Some(m.text.to_string()),
                    icon_url: m.icon_url.as_deref().map(str::to_owned),
                    url: m.url.as_deref().map(str::to_owned),
                });
            }
            ContentBody::Form(f) => {
                out.form = Some(Form {
                    title: f.title.as_deref().map(str::to_owned),
                    description: f.description.as_deref().map(str::to_owned),
                    fields: f
                        .fields
                        .iter()
                        .map(|x| FormField {
                            name: x.name.to_string(),
                            value: x.value.to_string(),
                        })
                        .collect(),
                    media: f.media.iter().map(Item::from_core).collect(),
                });
            }
            ContentBody::System(s) => {
                out.system = Some(System {
                    text: Some(s.text.to_string()),
                    buttons: buttons_from_core(&s.buttons),
                    image_url: s.image_url.as_deref().map(str::to_owned),
                });
            }
            ContentBody::Redacted => out.basic = Some(Basic { items: Vec::new() }),
        }
        out
    }
}

impl Message {
    /// The wire form of a stored message.
    pub fn from_core(m: &core_msg::Message) -> Message {
        Message {
            id: Some(m.id.to_string()),
            content: Some(Content::from_core(&m.content)),
            payload: None,
            sender: Some(Identity::from_sender(&m.sender)),
            badges: m
                .badges
                .iter()
                .map(|b| Badge {
                    text: b.text.to_string(),
                    icon_url: b.icon_url.as_deref().map(str::to_owned),
                    badge_visibility: b.badge_visibility.as_deref().map(str::to_owned),
                })
                .collect(),
            target_channels: m.target_channels.iter().map(Into::into).collect(),
            target_channel_ids: Vec::new(),
            source_channel: m.source_channel.map(Into::into),
            app_id: m.app_id.map(|a| a.as_uuid().to_string()),
            visibility: Some(m.visibility.into()),
            sequence: Some(Int64(m.sequence.0)),
            direction: Some(m.direction.into()),
            created_date: Some(format_date(m.created_date)),
            silent: Some(m.silent),
        }
    }
}

/// `participantId` of Get Or Create, and a conversation's `participant`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParticipantRef {
    /// `contactId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// `anonymousVisitorId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_visitor_id: Option<String>,
    /// `memberId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
}

impl ParticipantRef {
    /// The one participant id this names; exactly one of the three must be given.
    pub fn to_core(&self, field: &str) -> Result<ParticipantId, WixError> {
        match (
            &self.contact_id,
            &self.anonymous_visitor_id,
            &self.member_id,
        ) {
            (Some(c), None, None) => Ok(ParticipantId::Contact(ContactId::from_uuid(guid(
                &format!("{field}.contactId"),
                c,
            )?))),
            (None, Some(v), None) => Ok(ParticipantId::Visitor(VisitorId::from_uuid(guid(
                &format!("{field}.anonymousVisitorId"),
                v,
            )?))),
            (None, None, Some(m)) => Ok(ParticipantId::Member(MemberId::from_uuid(guid(
                &format!("{field}.memberId"),
                m,
            )?))),
            _ => Err(WixError::invalid(FieldViolation::new(
                field,
                "exactly one of contactId, anonymousVisitorId or memberId is required",
                Rule::RequiredField,
            ))),
        }
    }
}

/// `businessDisplayData` / `participantDisplayData`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DisplayData {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Avatar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

/// A `Conversation`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Conversation {
    /// GUID.
    pub id: String,
    /// Whose it is: `anonymousVisitorId` or `memberId` or `contactId`, plus `contactId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantRef>,
    /// Where the participant can receive messages.
    pub channels: Vec<ChannelType>,
    /// How the business appears.
    pub business_display_data: DisplayData,
    /// How the participant appears.
    pub participant_display_data: DisplayData,
}

impl Conversation {
    /// The wire form of a conversation.
    pub fn from_core(v: &ConversationView) -> Conversation {
        let participant = v.participant.map(|p| {
            let contact_id = p.contact_id.map(|c| c.as_uuid().to_string());
            match p.id {
                ParticipantId::Visitor(id) => ParticipantRef {
                    anonymous_visitor_id: Some(id.as_uuid().to_string()),
                    contact_id,
                    member_id: None,
                },
                ParticipantId::Contact(id) => ParticipantRef {
                    contact_id: Some(id.as_uuid().to_string()),
                    ..ParticipantRef::default()
                },
                ParticipantId::Member(id) => ParticipantRef {
                    member_id: Some(id.as_uuid().to_string()),
                    contact_id,
                    anonymous_visitor_id: None,
                },
            }
        });
        let display = |d: &inbox_core::DisplayData| DisplayData {
            name: d.name.clone(),
            image_url: d.image_url.clone(),
        };
        Conversation {
            id: v.id.as_uuid().to_string(),
            participant,
            channels: v.channels.iter().map(|c| (*c).into()).collect(),
            business_display_data: display(&v.business_display),
            participant_display_data: display(&v.participant_display),
        }
    }
}

// ------------------------------------------------------------------------------------------
// contacts: in `wire/contact.rs`
