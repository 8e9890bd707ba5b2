//! Messages: every content type of the Wix Inbox, and the validation of a message an app
//! wants to send ([`MessageDraft`] -> [`Message`]).
//!
//! The draft mirrors what arrives at the boundary (each content type optional, enums that may
//! be `Unknown`), so that every rule of the Wix pages is checked here, once, with a typed
//! [`MessageRejection`]; the validated [`Message`] can only hold a well-formed message.
//!
//! Memory matters: a state holds millions of messages, so rarely-used parts are boxed and
//! strings are `Box<str>` (16 bytes, no spare capacity). `docs/PERFORMANCE.md` has the
//! bytes per message.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{AppId, ContactId, ConversationId, MemberId, MessageId, Sequence, Timestamp};
use crate::ids::{VisitorId, WixUserId};

/// Longest `previewText`, in characters.
pub const MAX_PREVIEW_TEXT: usize = 256;
/// Most `textLines` of a template.
pub const MAX_TEMPLATE_TEXT_LINES: usize = 10;
/// Most buttons of a template.
pub const MAX_TEMPLATE_BUTTONS: usize = 10;
/// Most fields of a form.
pub const MAX_FORM_FIELDS: usize = 15;
/// Most media items of a form.
pub const MAX_FORM_MEDIA: usize = 15;
/// Most badges of a message.
pub const MAX_BADGES: usize = 1;
/// Most target channels of a message.
pub const MAX_TARGET_CHANNELS: usize = 1;

/// A communication channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// `UNKNOWN_CHANNEL_TYPE`: only ever seen on input; never valid as a target.
    Unknown,
    /// Wix Chat on the site.
    Chat,
    /// Email.
    Email,
    /// SMS.
    Sms,
    /// Facebook Messenger.
    Facebook,
    /// Instagram.
    Instagram,
    /// WhatsApp.
    Whatsapp,
}

impl Channel {
    /// Every channel, in wire order.
    pub const ALL: [Channel; 7] = [
        Channel::Unknown,
        Channel::Chat,
        Channel::Email,
        Channel::Sms,
        Channel::Facebook,
        Channel::Instagram,
        Channel::Whatsapp,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of channels in one byte (a message targets at most one; the set keeps the type
/// honest for observed messages that carry more).
///
/// It serializes as a sequence of channels, in wire order.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelSet(u8);

impl Serialize for ChannelSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // The length up front: compact formats (postcard) need it.
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for c in self.iter() {
            seq.serialize_element(&c)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ChannelSet {
    /// Read without a vector in between (a message carries one; there are millions).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SetVisitor;
        impl<'de> serde::de::Visitor<'de> for SetVisitor {
            type Value = ChannelSet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of channels")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ChannelSet, A::Error> {
                let mut set = ChannelSet::EMPTY;
                while let Some(c) = seq.next_element::<Channel>()? {
                    set.insert(c);
                }
                Ok(set)
            }
        }
        deserializer.deserialize_seq(SetVisitor)
    }
}

impl ChannelSet {
    /// No channel.
    pub const EMPTY: ChannelSet = ChannelSet(0);

    /// Adds a channel.
    pub fn insert(&mut self, channel: Channel) {
        self.0 |= channel.bit();
    }
    /// Whether the channel is in the set.
    pub fn contains(&self, channel: Channel) -> bool {
        self.0 & channel.bit() != 0
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    /// The channels in wire order.
    pub fn iter(&self) -> impl Iterator<Item = Channel> + '_ {
        Channel::ALL.into_iter().filter(|c| self.contains(*c))
    }
    /// How many channels.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }
}

impl FromIterator<Channel> for ChannelSet {
    fn from_iter<T: IntoIterator<Item = Channel>>(iter: T) -> Self {
        let mut set = ChannelSet::EMPTY;
        for c in iter {
            set.insert(c);
        }
        set
    }
}

impl From<Vec<Channel>> for ChannelSet {
    fn from(value: Vec<Channel>) -> Self {
        value.into_iter().collect()
    }
}

impl From<ChannelSet> for Vec<Channel> {
    fn from(value: ChannelSet) -> Self {
        value.iter().collect()
    }
}

impl std::fmt::Debug for ChannelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Who can see a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Visibility {
    /// `UNKNOWN_VISIBILITY`: refused on send.
    Unknown,
    /// Visible to the participant and to the business.
    BusinessAndParticipant,
    /// Visible to site contributors only.
    Business,
}

/// Which way a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// `UNKNOWN_DIRECTION`: refused on send.
    Unknown,
    /// From the business to the participant.
    BusinessToParticipant,
    /// From the participant to the business.
    ParticipantToBusiness,
}

/// Layout of a template's image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Orientation {
    /// Not given.
    Unknown,
    /// Image above the text.
    Portrait,
    /// Image beside the text.
    Landscape,
}

/// Who sent a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Sender {
    /// Not known (observed messages that carry no sender).
    Unknown,
    /// An anonymous visitor.
    Visitor(VisitorId),
    /// A contact.
    Contact(ContactId),
    /// A member, with the contact it is linked to.
    Member {
        /// The member.
        member: MemberId,
        /// Its contact.
        contact: Option<ContactId>,
    },
    /// A Wix user (site owner or contributor).
    WixUser(WixUserId),
    /// A Wix app.
    App(AppId),
}

/// A short label with an icon shown beside a message (e.g. "Facebook").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Badge {
    /// The label.
    pub text: Box<str>,
    /// The icon.
    pub icon_url: Option<Box<str>>,
    /// Who sees the badge (Wix passes it through as a string).
    pub badge_visibility: Option<Box<str>>,
}

/// An image of a basic message or form.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Image {
    /// Media id.
    pub id: Option<Box<str>>,
    /// Where the image is.
    pub url: Box<str>,
    /// File name.
    pub filename: Option<Box<str>>,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
}

/// A file of a basic message.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct File {
    /// Media id.
    pub id: Option<Box<str>>,
    /// Where the file is.
    pub url: Box<str>,
    /// File name.
    pub filename: Option<Box<str>>,
    /// MIME type.
    pub mime_type: Option<Box<str>>,
}

/// One item of a basic message; each is displayed as if it were a message of its own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BasicItem {
    /// Text.
    Text(Box<str>),
    /// An image.
    Image(Box<Image>),
    /// A file.
    File(Box<File>),
}

/// The items of a basic message. Most basic messages are one text, so one item is held
/// inline and several in a boxed slice: a message then needs one allocation fewer (24 bytes
/// a message, at millions of messages). It reads as a slice either way.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BasicItems(ItemsRepr);

// Canonical: exactly one item is always `One`, so derived equality, order and hash agree with
// the items' own.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum ItemsRepr {
    One(BasicItem),
    Many(Box<[BasicItem]>),
}

impl BasicItems {
    /// One item.
    pub fn one(item: BasicItem) -> Self {
        BasicItems(ItemsRepr::One(item))
    }
}

impl std::ops::Deref for BasicItems {
    type Target = [BasicItem];
    fn deref(&self) -> &[BasicItem] {
        match &self.0 {
            ItemsRepr::One(item) => std::slice::from_ref(item),
            ItemsRepr::Many(items) => items,
        }
    }
}

impl From<Vec<BasicItem>> for BasicItems {
    fn from(mut items: Vec<BasicItem>) -> Self {
        match (items.pop(), items.is_empty()) {
            (Some(only), true) => BasicItems(ItemsRepr::One(only)),
            (Some(last), false) => {
                items.push(last);
                BasicItems(ItemsRepr::Many(items.into_boxed_slice()))
            }
            (None, _) => BasicItems(ItemsRepr::Many(Box::new([]))),
        }
    }
}

impl std::fmt::Debug for BasicItems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for BasicItems {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for BasicItems {
    /// One item (the common case) is read without allocating a vector for it.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemsVisitor;
        impl<'de> serde::de::Visitor<'de> for ItemsVisitor {
            type Value = BasicItems;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of basic items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BasicItems, A::Error> {
                let Some(first) = seq.next_element::<BasicItem>()? else {
                    return Ok(BasicItems(ItemsRepr::Many(Box::new([]))));
                };
                let Some(second) = seq.next_element::<BasicItem>()? else {
                    return Ok(BasicItems(ItemsRepr::One(first)));
                };
                // Trust the length hint only as far as the items limit goes.
                let hint = seq.size_hint().unwrap_or(0).min(MAX_FORM_MEDIA);
                let mut items = Vec::with_capacity(2 + hint);
                items.push(first);
                items.push(second);
                while let Some(item) = seq.next_element::<BasicItem>()? {
                    items.push(item);
                }
                Ok(BasicItems(ItemsRepr::Many(items.into_boxed_slice())))
            }
        }
        deserializer.deserialize_seq(ItemsVisitor)
    }
}

/// What a template button does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ButtonAction {
    /// An action button: opens the URL in the visitor's browser.
    Launch {
        /// The URL.
        url: Box<str>,
    },
    /// A postback button: raises the Button Interacted event with this id.
    Postback {
        /// The id the app receives when the button is clicked.
        interaction_id: Box<str>,
        /// The app that receives the interaction (read-only; set by the engine).
        app_id: Option<AppId>,
    },
}

/// A button of a template (or system) message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Button {
    /// The label.
    pub label: Box<str>,
    /// What it does.
    pub action: ButtonAction,
}

/// A template message: title, text lines, image, buttons.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Template {
    /// Title.
    pub title: Option<Box<str>>,
    /// Up to 10 lines of text.
    pub text_lines: Vec<Box<str>>,
    /// Image.
    pub image_url: Option<Box<str>>,
    /// Layout of the image.
    pub orientation: Option<Orientation>,
    /// Up to 10 buttons.
    pub buttons: Vec<Button>,
}

/// A minimal message: one line of text and an optional icon (activities).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Minimal {
    /// The line.
    pub text: Box<str>,
    /// Icon.
    pub icon_url: Option<Box<str>>,
    /// Link.
    pub url: Option<Box<str>>,
}

/// One submitted field of a form message.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FormField {
    /// Field name.
    pub name: Box<str>,
    /// Submitted value.
    pub value: Box<str>,
}

/// A form message: data the participant submitted.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Form {
    /// Title.
    pub title: Option<Box<str>>,
    /// Description.
    pub description: Option<Box<str>>,
    /// 1 to 15 fields.
    pub fields: Vec<FormField>,
    /// Up to 15 media items.
    pub media: Vec<BasicItem>,
}

/// A system message: information from an integrated service. Never sent by apps.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct System {
    /// Text.
    pub text: Box<str>,
    /// Buttons.
    pub buttons: Vec<Button>,
    /// Image.
    pub image_url: Option<Box<str>>,
}

/// The one content type of a message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ContentBody {
    /// Items of text, image or file.
    Basic(BasicItems),
    /// Buttons and text lines.
    Template(Box<Template>),
    /// One line of activity.
    Minimal(Box<Minimal>),
    /// Submitted form data.
    Form(Box<Form>),
    /// From an integrated service.
    System(Box<System>),
    /// Removed by a privacy request; the message's place, ids and dates are kept.
    Redacted,
}

/// Structured message content: an optional preview and title, and exactly one body.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Content {
    /// Preview and title, boxed because most messages have neither.
    pub extras: Option<Box<ContentExtras>>,
    /// The body.
    pub body: ContentBody,
}

/// The rarely-set text fields of [`Content`].
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentExtras {
    /// Preview text (at most 256 characters).
    pub preview_text: Option<Box<str>>,
    /// Title.
    pub title: Option<Box<str>>,
}

impl Content {
    /// Content with a body only.
    pub fn new(body: ContentBody) -> Self {
        Content { extras: None, body }
    }

    /// A basic message of one text item.
    pub fn text(text: impl Into<Box<str>>) -> Self {
        Content::new(ContentBody::Basic(BasicItems::one(BasicItem::Text(
            text.into(),
        ))))
    }

    /// The preview text, if any.
    pub fn preview_text(&self) -> Option<&str> {
        self.extras.as_ref().and_then(|e| e.preview_text.as_deref())
    }

    /// The title, if any.
    pub fn title(&self) -> Option<&str> {
        self.extras.as_ref().and_then(|e| e.title.as_deref())
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// Its place in the conversation (see [`Sequence`]).
    pub sequence: Sequence,
    /// When it was sent.
    pub created_date: Timestamp,
    /// The conversation it was originally sent to (provenance). It stays when conversations
    /// merge, so a merge can be audited and undone by replaying events.
    pub conversation_id: ConversationId,
    /// Who sent it.
    pub sender: Sender,
    /// Channel it is sent to (at most one).
    pub target_channels: ChannelSet,
    /// Channel it came from.
    pub source_channel: Option<Channel>,
    /// The app that sent it.
    pub app_id: Option<AppId>,
    /// Who can see it.
    pub visibility: Visibility,
    /// Which way it goes.
    pub direction: Direction,
    /// Sent without notifying.
    pub silent: bool,
    // Content and badges come last: the derived `Ord` (which picks between two versions of
    // one message id) then decides on everything else first, and a privacy redaction, which
    // only removes these two, never changes which version wins.
    /// What it says.
    pub content: Content,
    /// At most one badge.
    pub badges: Box<[Badge]>,
}

impl Message {
    /// The key that orders a conversation: sequence first, then id for ties (which only
    /// observed messages can have). It depends only on the message, never on arrival order.
    pub fn order_key(&self) -> (Sequence, MessageId) {
        (self.sequence, self.id)
    }

    /// The postback button with this interaction id, if the message has one.
    pub fn postback_button(&self, interaction_id: &str) -> Option<&Button> {
        let buttons: &[Button] = match &self.content.body {
            ContentBody::Template(t) => &t.buttons,
            ContentBody::System(s) => &s.buttons,
            _ => &[],
        };
        buttons.iter().find(|b| {
            matches!(&b.action, ButtonAction::Postback { interaction_id: id, .. } if &**id == interaction_id)
        })
    }

    /// Whether a participant-visible listing may show it.
    pub fn is_visible_to_participant(&self) -> bool {
        self.visibility == Visibility::BusinessAndParticipant
    }

    /// The message with its content removed (privacy request): place, ids, dates, sender,
    /// direction and visibility stay.
    pub fn redacted(&self) -> Message {
        Message {
            content: Content::new(ContentBody::Redacted),
            badges: Box::new([]),
            ..self.clone()
        }
    }
}

/// A button as an app sends it: a label and either a launch URL or a postback id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonDraft {
    /// The label.
    pub label: String,
    /// For an action button.
    pub launch_url: Option<String>,
    /// For a postback button.
    pub interaction_id: Option<String>,
}

/// Message content as an app sends it: any number of content types may be present, and
/// validation insists on exactly one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentDraft {
    /// Preview text.
    pub preview_text: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Basic items.
    pub basic: Option<Vec<BasicItem>>,
    /// Template.
    pub template: Option<TemplateDraft>,
    /// Minimal.
    pub minimal: Option<Minimal>,
    /// Form.
    pub form: Option<Form>,
    /// System (always refused from apps).
    pub system: Option<System>,
}

/// A template as an app sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDraft {
    /// Title.
    pub title: Option<String>,
    /// Lines of text.
    pub text_lines: Vec<String>,
    /// Image.
    pub image_url: Option<String>,
    /// Layout.
    pub orientation: Option<Orientation>,
    /// Buttons.
    pub buttons: Vec<ButtonDraft>,
}

/// A message as an app sends it, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDraft {
    /// The content.
    pub content: ContentDraft,
    /// Badges (at most one).
    pub badges: Vec<Badge>,
    /// Target channels (at most one).
    pub target_channels: Vec<Channel>,
    /// Source channel.
    pub source_channel: Option<Channel>,
    /// Visibility; absent means `BusinessAndParticipant`, `Unknown` is refused.
    pub visibility: Option<Visibility>,
    /// Direction; required, and `Unknown` is refused.
    pub direction: Option<Direction>,
    /// Send without notifications.
    pub silent: bool,
}

impl MessageDraft {
    /// A one-text basic message going `direction`, visible to both sides.
    pub fn text(text: impl Into<Box<str>>, direction: Direction) -> Self {
        MessageDraft {
            content: ContentDraft {
                basic: Some(vec![BasicItem::Text(text.into())]),
                ..ContentDraft::default()
            },
            direction: Some(direction),
            ..MessageDraft::default()
        }
    }
}

/// Why a message was refused. Each variant names the rule of the Wix pages it breaks.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MessageRejection {
    /// No content type was given.
    #[error(
        "message content must have exactly one of basic, template, minimal or form; none was given"
    )]
    NoContent,
    /// More than one content type was given.
    #[error("message content must have exactly one content type; got {0:?}")]
    SeveralContentTypes(Vec<&'static str>),
    /// `system` content is reserved for Wix.
    #[error("system messages cannot be sent by apps")]
    SystemNotSendable,
    /// More than one badge.
    #[error("at most {MAX_BADGES} badge is supported; got {0}")]
    TooManyBadges(usize),
    /// More than one target channel.
    #[error("messages can be sent to at most {MAX_TARGET_CHANNELS} channel; got {0}")]
    TooManyTargetChannels(usize),
    /// `UNKNOWN_CHANNEL_TYPE` as a target channel.
    #[error("target channel must not be UNKNOWN_CHANNEL_TYPE")]
    UnknownTargetChannel,
    /// Preview text too long.
    #[error("previewText must be at most {MAX_PREVIEW_TEXT} characters; got {0}")]
    PreviewTextTooLong(usize),
    /// A basic message with no items.
    #[error("basic content must have at least one item")]
    EmptyBasic,
    /// Too many template text lines.
    #[error("template textLines must be at most {MAX_TEMPLATE_TEXT_LINES}; got {0}")]
    TooManyTextLines(usize),
    /// Too many template buttons.
    #[error("template buttons must be at most {MAX_TEMPLATE_BUTTONS}; got {0}")]
    TooManyButtons(usize),
    /// A button that is neither an action nor a postback button, or both.
    #[error(
        "template button {index} must have exactly one of launchUrl or postbackProperties.interactionId"
    )]
    InvalidButton {
        /// Position of the button.
        index: usize,
    },
    /// A form with no fields, or too many.
    #[error("form fields must number 1 to {MAX_FORM_FIELDS}; got {0}")]
    FormFieldCount(usize),
    /// A form with too many media items.
    #[error("form media must be at most {MAX_FORM_MEDIA}; got {0}")]
    TooManyFormMedia(usize),
    /// `UNKNOWN_VISIBILITY`.
    #[error("visibility must not be UNKNOWN_VISIBILITY")]
    UnknownVisibility,
    /// Direction missing or `UNKNOWN_DIRECTION`.
    #[error("direction is required and must not be UNKNOWN_DIRECTION")]
    UnknownDirection,
}

/// What validation yields: every field of a [`Message`] that the sender decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidMessage {
    /// Content.
    pub content: Content,
    /// Badges.
    pub badges: Box<[Badge]>,
    /// Target channels.
    pub target_channels: ChannelSet,
    /// Source channel.
    pub source_channel: Option<Channel>,
    /// Visibility.
    pub visibility: Visibility,
    /// Direction.
    pub direction: Direction,
    /// Silent.
    pub silent: bool,
}

impl MessageDraft {
    /// Checks every rule and returns the validated parts, or the first rule broken.
    /// `app_id` is stamped on postback buttons (read-only on the wire).
    pub fn validate(self, app_id: Option<AppId>) -> Result<ValidMessage, MessageRejection> {
        let visibility = match self.visibility {
            None => Visibility::BusinessAndParticipant,
            Some(Visibility::Unknown) => return Err(MessageRejection::UnknownVisibility),
            Some(v) => v,
        };
        let direction = match self.direction {
            None | Some(Direction::Unknown) => return Err(MessageRejection::UnknownDirection),
            Some(d) => d,
        };
        if self.badges.len() > MAX_BADGES {
            return Err(MessageRejection::TooManyBadges(self.badges.len()));
        }
        if self.target_channels.len() > MAX_TARGET_CHANNELS {
            return Err(MessageRejection::TooManyTargetChannels(
                self.target_channels.len(),
            ));
        }
        if self.target_channels.contains(&Channel::Unknown) {
            return Err(MessageRejection::UnknownTargetChannel);
        }
        let content = self.content.validate(app_id)?;
        Ok(ValidMessage {
            content,
            badges: self.badges.into_boxed_slice(),
            target_channels: self.target_channels.into_iter().collect(),
            source_channel: self.source_channel,
            visibility,
            direction,
            silent: self.silent,
        })
    }
}

impl ContentDraft {
    fn validate(self, app_id: Option<AppId>) -> Result<Content, MessageRejection> {
        let present: Vec<&'static str> = [
            ("basic", self.basic.is_some()),
            ("template", self.template.is_some()),
            ("minimal", self.minimal.is_some()),
            ("form", self.form.is_some()),
            ("system", self.system.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, here)| here.then_some(name))
        .collect();
        match present.len() {
            0 => return Err(MessageRejection::NoContent),
            1 => {}
            _ => return Err(MessageRejection::SeveralContentTypes(present)),
        }
        if self.system.is_some() {
            return Err(MessageRejection::SystemNotSendable);
        }
        if let Some(preview) = &self.preview_text {
            let chars = preview.chars().count();
            if chars > MAX_PREVIEW_TEXT {
                return Err(MessageRejection::PreviewTextTooLong(chars));
            }
        }
        let body = if let Some(items) = self.basic {
            if items.is_empty() {
                return Err(MessageRejection::EmptyBasic);
            }
            ContentBody::Basic(items.into())
        } else if let Some(template) = self.template {
            ContentBody::Template(Box::new(template.validate(app_id)?))
        } else if let Some(minimal) = self.minimal {
            ContentBody::Minimal(Box::new(minimal))
        } else if let Some(form) = self.form {
            if form.fields.is_empty() || form.fields.len() > MAX_FORM_FIELDS {
                return Err(MessageRejection::FormFieldCount(form.fields.len()));
            }
            if form.media.len() > MAX_FORM_MEDIA {
                return Err(MessageRejection::TooManyFormMedia(form.media.len()));
            }
            ContentBody::Form(Box::new(form))
        } else {
            return Err(MessageRejection::NoContent);
        };
        let extras = (self.preview_text.is_some() || self.title.is_some()).then(|| {
            Box::new(ContentExtras {
                preview_text: self.preview_text.map(String::into_boxed_str),
                title: self.title.map(String::into_boxed_str),
            })
        });
        Ok(Content { extras, body })
    }
}

impl TemplateDraft {
    fn validate(self, app_id: Option<AppId>) -> Result<Template, MessageRejection> {
        if self.text_lines.len() > MAX_TEMPLATE_TEXT_LINES {
            return Err(MessageRejection::TooManyTextLines(self.text_lines.len()));
        }
        if self.buttons.len() > MAX_TEMPLATE_BUTTONS {
            return Err(MessageRejection::TooManyButtons(self.buttons.len()));
        }
        let buttons = self
            .buttons
            .into_iter()
            .enumerate()
            .map(|(index, b)| {
                let action = match (b.launch_url, b.interaction_id) {
                    (Some(url), None) if !url.is_empty() => {
                        ButtonAction::Launch { url: url.into() }
                    }
                    (None, Some(id)) if !id.is_empty() => ButtonAction::Postback {
                        interaction_id: id.into(),
                        app_id,
                    },
                    _ => return Err(MessageRejection::InvalidButton { index }),
                };
                Ok(Button {
                    label: b.label.into(),
                    action,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Template {
            title: self.title.map(String::into_boxed_str),
            text_lines: self
                .text_lines
                .into_iter()
                .map(String::into_boxed_str)
                .collect(),
            image_url: self.image_url.map(String::into_boxed_str),
            orientation: self.orientation,
            buttons,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod serde_tests {
    use super::*;

    #[test]
    fn channel_sets_serialize_as_sequences_of_channels() {
        let set: ChannelSet = [Channel::Sms, Channel::Email].into_iter().collect();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["Email","Sms"]"#);
        assert_eq!(serde_json::from_str::<ChannelSet>(&json).unwrap(), set);
        assert_eq!(
            serde_json::from_str::<ChannelSet>("[]").unwrap(),
            ChannelSet::EMPTY
        );
    }

    #[test]
    fn basic_items_of_any_length_read_back() {
        for n in 0..4 {
            let items: Vec<BasicItem> = (0..n)
                .map(|i| BasicItem::Text(format!("t{i}").into()))
                .collect();
            let basic = BasicItems::from(items.clone());
            let json = serde_json::to_string(&basic).unwrap();
            assert_eq!(json, serde_json::to_string(&items).unwrap());
            let back: BasicItems = serde_json::from_str(&json).unwrap();
            assert_eq!(back, basic, "{n} items");
            assert_eq!(&*back, items.as_slice());
        }
    }
}
