//! Webhooks: Wix's deliveries into core events, and core events into deliveries.
//!
//! A delivery is an HTTP POST whose whole body is a JWT signed RS256. Its payload nests JSON
//! inside strings, three layers deep:
//!
//! ```text
//! JWT payload: {"data": "<A>", "iat", "exp"}
//!   A = {"eventType", "instanceId", "data": "<B>", "identity": "<C>"}
//!     B = {"id", "entityFqdn", "slug", "entityId", "eventTime", "actionEvent": {"body": {...}}}
//!     C = {"identityType", "anonymousVisitorId" | "memberId" | "wixUserId" | "appId"}
//! ```
//!
//! Incoming: [`WebhookVerifier::verify`] checks the token (RS256 only: `alg: none`, every
//! HMAC and every other algorithm is refused before any key is touched; the expiry is
//! checked against the `now` the caller passes, so tests need no clock) and decodes the
//! layers into a [`Delivery`]; [`Delivery::core_events`] maps it onto the core; a
//! [`Replica`] folds deliveries, deduplicated on the event id. Deliveries come late, twice
//! and out of order; the replica ends in the same state whatever the order (the core's
//! convergence, plus ids derived deterministically from the delivery).
//!
//! Outgoing: [`announcements`] turns a recorded core event into what Wix would announce,
//! and [`Announcement::sign`] signs it in the same nesting, with the event id stable across
//! retries. `interop/node` proves that Wix's own JavaScript SDK accepts them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use inbox_core::message::{Direction, Sender};
use inbox_core::{
    AppId, ConversationId, Event, EventEnvelope, EventId, Inbox, InboxConfig, MessageId,
    ParticipantId, Sequence, SiteId, Timestamp,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::WixError;
use crate::wire::{self, Identity, format_date, parse_date};

/// `entityFqdn` of message events.
pub const MESSAGE_FQDN: &str = "wix.crm.inbox.v2.message";
/// `entityFqdn` of conversation events.
pub const CONVERSATION_FQDN: &str = "wix.crm.inbox.v2.conversation";
/// Slug of Message Sent To Business.
pub const SENT_TO_BUSINESS: &str = "message_sent_to_business";
/// Slug of Message Sent To Participant.
pub const SENT_TO_PARTICIPANT: &str = "message_sent_to_participant";
/// Slug of Button Interacted.
pub const BUTTON_INTERACTED: &str = "button_interacted";
/// Slug of Conversations Merged.
pub const CONVERSATIONS_MERGED: &str = "conversations_merged";
/// `entityFqdn` of contact events.
pub const CONTACT_FQDN: &str = "wix.contacts.v4.contact";
/// Slug of Contact Created (a `createdEvent` with the contact as `entity`).
pub const CONTACT_CREATED: &str = "created";
/// Slug of Contact Updated (an `updatedEvent` with the contact as `currentEntity`).
pub const CONTACT_UPDATED: &str = "updated";
/// Slug of Contact Deleted (a `deletedEvent`).
pub const CONTACT_DELETED: &str = "deleted";
/// Slug of Contact Merged (an action event: `targetContactId`, `sourceContactIds`,
/// `targetContact`).
pub const CONTACT_MERGED: &str = "merged";
/// Layer B's `originatedFrom` on the updated and deleted events a contact merge causes.
pub const ORIGINATED_FROM_MERGE: &str = "merge";

/// `entityFqdn` of label events (slugs `created`, `updated`, `deleted`, as for contacts).
pub const LABEL_FQDN: &str = "wix.contacts.v4.label";
/// `entityFqdn` of extended field events (slugs `created`, `updated`, `deleted`). Their
/// `eventType` spells the entity `extended-field` (see [`event_type`]).
pub const EXTENDED_FIELD_FQDN: &str = "wix.contacts.v4.extended_field";

/// The `eventType` of an entity's event: its fqdn, `_`, the slug; except that Wix's SDK
/// names extended field events `wix.contacts.v4.extended-field_<slug>` (its
/// `onExtendedFieldCreated` and the rest), while the entity's fqdn has an underscore.
pub fn event_type(entity_fqdn: &str, slug: &str) -> String {
    if entity_fqdn == EXTENDED_FIELD_FQDN {
        format!("wix.contacts.v4.extended-field_{slug}")
    } else {
        format!("{entity_fqdn}_{slug}")
    }
}

/// Every event type the emulator announces ([`event_type`] of the entity and the slug),
/// what a webhook subscription names.
pub const ANNOUNCED_EVENT_TYPES: [&str; 14] = [
    "wix.crm.inbox.v2.message_message_sent_to_business",
    "wix.crm.inbox.v2.message_message_sent_to_participant",
    "wix.crm.inbox.v2.message_button_interacted",
    "wix.crm.inbox.v2.conversation_conversations_merged",
    "wix.contacts.v4.contact_created",
    "wix.contacts.v4.contact_updated",
    "wix.contacts.v4.contact_deleted",
    "wix.contacts.v4.contact_merged",
    "wix.contacts.v4.label_created",
    "wix.contacts.v4.label_updated",
    "wix.contacts.v4.label_deleted",
    "wix.contacts.v4.extended-field_created",
    "wix.contacts.v4.extended-field_updated",
    "wix.contacts.v4.extended-field_deleted",
];

/// Clock skew allowed when checking `exp`, in seconds.
pub const EXPIRY_LEEWAY_SECS: i64 = 60;

/// Longest token read; a Wix delivery is a few KiB.
pub const MAX_TOKEN_LEN: usize = 1 << 20;

/// The namespace of event ids derived from deliveries (a fixed, random UUID).
const DERIVED_IDS: Uuid = Uuid::from_u128(0x5b0e_1f6a_93c4_4d3e_8a57_2c61_f0d9_b7a4);

/// A key could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a usable RSA {kind} key in PEM form: {reason}")]
pub struct KeyError {
    kind: &'static str,
    reason: String,
}

/// Why a delivery was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Not three base64url parts, or a header that is not JSON.
    #[error("webhook body is not a JWT: {0}")]
    NotAJwt(String),
    /// The header names an algorithm other than RS256 (`none`, `HS256`, `RS512`, ...).
    #[error("webhook JWT algorithm {0:?} is refused; only RS256 is accepted")]
    AlgorithmRefused(String),
    /// The signature does not verify with the configured public key.
    #[error("webhook JWT signature does not verify with the configured public key")]
    BadSignature,
    /// The token has no numeric `exp` claim.
    #[error("webhook JWT has no numeric exp claim")]
    MissingExpiry,
    /// The header marks extensions critical (`crit`, RFC 7515 section 4.1.11): none is
    /// understood here, so the token must be refused.
    #[error("webhook JWT marks extensions critical that are not understood: {0:?}")]
    CriticalExtension(Vec<String>),
    /// The token is not valid yet (`nbf` after now, beyond the leeway).
    #[error("webhook JWT is not valid before {nbf} (unix seconds); now is {now}")]
    NotYetValid {
        /// `nbf`, in Unix seconds.
        nbf: i64,
        /// The time checked against, in Unix seconds.
        now: i64,
    },
    /// The token expired.
    #[error("webhook JWT expired at {exp} (unix seconds); now is {now}")]
    Expired {
        /// `exp`, in Unix seconds.
        exp: i64,
        /// The time checked against, in Unix seconds.
        now: i64,
    },
    /// The payload is not the documented nesting.
    #[error("webhook payload, {layer}: {reason}")]
    Payload {
        /// Which layer: `jwt`, `data`, `data.data`, `data.identity` or `actionEvent.body`.
        layer: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl WebhookError {
    fn payload(layer: &'static str, reason: impl Into<String>) -> Self {
        WebhookError::Payload {
            layer,
            reason: reason.into(),
        }
    }

    /// The error as the intake endpoint answers it: 401 for a token that cannot be trusted
    /// (bad algorithm, signature or expiry), 400 for a trusted one with a bad payload.
    pub fn to_wix(&self) -> WixError {
        match self {
            WebhookError::NotAJwt(_) | WebhookError::Payload { .. } => {
                WixError::application(400, "INVALID_WEBHOOK_PAYLOAD", self.to_string())
            }
            WebhookError::AlgorithmRefused(_)
            | WebhookError::CriticalExtension(_)
            | WebhookError::BadSignature
            | WebhookError::MissingExpiry
            | WebhookError::NotYetValid { .. }
            | WebhookError::Expired { .. } => {
                WixError::application(401, "INVALID_WEBHOOK_SIGNATURE", self.to_string())
            }
        }
    }
}

/// Checks deliveries against the app's public key.
#[derive(Clone)]
pub struct WebhookVerifier {
    key: DecodingKey,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookVerifier(RS256)")
    }
}

#[derive(Deserialize)]
struct Claims {
    data: Value,
    exp: Option<Value>,
    nbf: Option<Value>,
}

impl WebhookVerifier {
    /// A verifier for an RSA public key in PEM form (SPKI `PUBLIC KEY` or PKCS#1
    /// `RSA PUBLIC KEY`).
    pub fn from_public_pem(pem: &[u8]) -> Result<Self, KeyError> {
        DecodingKey::from_rsa_pem(pem)
            .map(|key| WebhookVerifier { key })
            .map_err(|e| KeyError {
                kind: "public",
                reason: e.to_string(),
            })
    }

    /// Verifies a delivery's token at time `now` and decodes it.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Delivery, WebhookError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(WebhookError::NotAJwt(format!(
                "longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(WebhookError::NotAJwt(
                "expected three dot-separated parts".into(),
            ));
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| WebhookError::NotAJwt("header is not base64url JSON".into()))?;
        match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => {}
            Some(other) => return Err(WebhookError::AlgorithmRefused(other.to_owned())),
            None => return Err(WebhookError::AlgorithmRefused(String::new())),
        }
        if let Some(crit) = header.get("crit") {
            let names = crit
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|n| n.as_str().map_or_else(|| n.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_else(|| vec![crit.to_string()]);
            return Err(WebhookError::CriticalExtension(names));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        // Expiry is checked below against the caller's `now`, not the library's clock.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => WebhookError::BadSignature,
                jsonwebtoken::errors::ErrorKind::Json(_) => WebhookError::payload(
                    "jwt",
                    format!("claims are not the documented object: {e}"),
                ),
                _ => WebhookError::NotAJwt(e.to_string()),
            })?
            .claims;
        let exp = claims
            .exp
            .as_ref()
            .and_then(Value::as_f64)
            .ok_or(WebhookError::MissingExpiry)?;
        let now_secs = now.as_micros().div_euclid(1_000_000);
        // `as` saturates for floats out of range, which is what an absurd exp deserves.
        let exp = exp.floor() as i64;
        if exp.saturating_add(EXPIRY_LEEWAY_SECS) < now_secs {
            return Err(WebhookError::Expired { exp, now: now_secs });
        }
        if let Some(nbf) = &claims.nbf {
            let nbf = nbf
                .as_f64()
                .ok_or_else(|| WebhookError::payload("jwt", "nbf must be a number"))?
                .floor() as i64;
            if nbf > now_secs.saturating_add(EXPIRY_LEEWAY_SECS) {
                return Err(WebhookError::NotYetValid { nbf, now: now_secs });
            }
        }
        match claims.data {
            Value::String(a) => Delivery::from_data(&a),
            _ => Err(WebhookError::payload("jwt", "data must be a JSON string")),
        }
    }
}

/// Signs outgoing deliveries with our private key.
#[derive(Clone)]
pub struct WebhookSigner {
    key: EncodingKey,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSigner(RS256)")
    }
}

impl WebhookSigner {
    /// A signer for an RSA private key in PEM form (PKCS#8 or PKCS#1).
    pub fn from_private_pem(pem: &[u8]) -> Result<Self, KeyError> {
        EncodingKey::from_rsa_pem(pem)
            .map(|key| WebhookSigner { key })
            .map_err(|e| KeyError {
                kind: "private",
                reason: e.to_string(),
            })
    }
}

/// Who caused an event, as layer C reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventIdentity {
    /// `UNKNOWN`, `ANONYMOUS_VISITOR`, `MEMBER`, `WIX_USER` or `APP`.
    pub identity_type: String,
    /// For `ANONYMOUS_VISITOR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_visitor_id: Option<String>,
    /// For `MEMBER`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// For `WIX_USER`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wix_user_id: Option<String>,
    /// For `APP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

impl EventIdentity {
    fn of(sender: &Sender) -> Self {
        let s = |u: Uuid| Some(u.to_string());
        match sender {
            Sender::Visitor(v) => EventIdentity {
                identity_type: "ANONYMOUS_VISITOR".into(),
                anonymous_visitor_id: s(v.as_uuid()),
                ..EventIdentity::default()
            },
            Sender::Member { member, .. } => EventIdentity {
                identity_type: "MEMBER".into(),
                member_id: s(member.as_uuid()),
                ..EventIdentity::default()
            },
            Sender::WixUser(u) => EventIdentity {
                identity_type: "WIX_USER".into(),
                wix_user_id: s(u.as_uuid()),
                ..EventIdentity::default()
            },
            Sender::App(a) => EventIdentity {
                identity_type: "APP".into(),
                app_id: s(a.as_uuid()),
                ..EventIdentity::default()
            },
            Sender::Contact(_) | Sender::Unknown => EventIdentity {
                identity_type: "UNKNOWN".into(),
                ..EventIdentity::default()
            },
        }
    }
}

/// What a delivery reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A participant wrote to the business.
    MessageSentToBusiness {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message, as stored.
        message: inbox_core::Message,
    },
    /// The business wrote to the participant.
    MessageSentToParticipant {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message, as stored.
        message: inbox_core::Message,
    },
    /// A participant clicked a postback button.
    ButtonInteracted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message with the button (from `entityId`).
        message_id: MessageId,
        /// The app the click goes to.
        app_id: Option<AppId>,
        /// The button's id.
        interaction_id: String,
        /// Who clicked.
        interacted_by: Sender,
    },
    /// Conversations were merged into a target.
    ConversationsMerged {
        /// Merged away.
        sources: Vec<ConversationId>,
        /// The survivor.
        target: ConversationId,
    },
    /// A contact was created (its whole record).
    ContactCreated {
        /// The contact.
        contact: inbox_core::contacts::Contact,
    },
    /// A contact changed (its whole record at the new revision).
    ContactUpdated {
        /// The contact.
        contact: inbox_core::contacts::Contact,
        /// Layer B's `originatedFrom` (`merge` on the target of a merge).
        originated_from: Option<String>,
    },
    /// A contact was deleted (`entityId`), not by a merge.
    ContactDeleted {
        /// The contact.
        contact_id: inbox_core::ContactId,
        /// Its revision, when the delivery carries the deleted entity.
        revision: u64,
    },
    /// Contacts were merged into a target.
    ContactMerged {
        /// The target after the merge.
        target: inbox_core::contacts::Contact,
        /// The contacts merged away.
        sources: Vec<inbox_core::ContactId>,
    },
    /// A label was made or renamed (`createdEvent.entity`, `updatedEvent.currentEntity`).
    LabelSaved {
        /// The label.
        label: inbox_core::catalog::LabelDefinition,
    },
    /// A label was deleted (`entityId` is its key).
    LabelDeleted {
        /// Its key.
        key: String,
    },
    /// An extended field was made or renamed.
    ExtendedFieldSaved {
        /// The field.
        field: inbox_core::catalog::FieldDefinition,
    },
    /// An extended field was deleted (`entityId` is its key).
    ExtendedFieldDeleted {
        /// Its key.
        key: String,
    },
    /// A delivery that changes nothing here: an event type this crate does not map (Wix
    /// sends every event of the app to one URL), or a contact's deletion that a merge caused
    /// (the merge's own event is the fact). It is acknowledged, so Wix does not retry it.
    Unsupported {
        /// Its `eventType`.
        event_type: String,
    },
}

/// A decoded delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The event's id as Wix wrote it; repeats of one event share it.
    pub id: String,
    /// The same as a GUID (itself if it is one, else derived from it).
    pub event_id: EventId,
    /// `instanceId`: the site.
    pub instance_id: SiteId,
    /// `eventType`: `entityFqdn` + `_` + `slug`.
    pub event_type: String,
    /// `entityId`.
    pub entity_id: Option<String>,
    /// `eventTime`.
    pub event_time: Timestamp,
    /// Layer C, when present.
    pub identity: Option<EventIdentity>,
    /// What happened.
    pub event: WebhookEvent,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayerA {
    event_type: String,
    instance_id: String,
    data: String,
    #[serde(default)]
    identity: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayerB {
    id: String,
    entity_fqdn: String,
    slug: String,
    #[serde(default)]
    entity_id: Option<String>,
    event_time: String,
    /// An action event's (what this engine folds); entity events carry one of the others.
    #[serde(default)]
    action_event: Option<ActionEvent>,
    #[serde(default)]
    created_event: Option<Value>,
    #[serde(default)]
    updated_event: Option<Value>,
    #[serde(default)]
    deleted_event: Option<Value>,
    #[serde(default)]
    originated_from: Option<String>,
}

/// An entity event's entity: `field` as an object, or as JSON text (in `field` or
/// `<field>AsJson`, as Wix's older deliveries write it).
fn entity<T: serde::de::DeserializeOwned>(
    event: &Value,
    field: &str,
    path: &'static str,
) -> Result<Option<T>, WebhookError> {
    let value = event
        .get(field)
        .filter(|v| !v.is_null())
        .or_else(|| event.get(format!("{field}AsJson")).filter(|v| !v.is_null()));
    let parsed = match value {
        None => return Ok(None),
        Some(Value::String(text)) => serde_json::from_str(text),
        Some(v) => serde_json::from_value(v.clone()),
    };
    parsed
        .map(Some)
        .map_err(|e| WebhookError::payload(path, e.to_string()))
}

/// The entity of a created or updated event (`createdEvent.entity` or
/// `updatedEvent.currentEntity`, by the slug), which such an event must carry, with its path.
fn saved_entity<T: serde::de::DeserializeOwned>(
    slug: &str,
    created_event: &Option<Value>,
    updated_event: &Option<Value>,
    event_type: &str,
) -> Result<(T, &'static str), WebhookError> {
    let (event, field, path) = if slug == CONTACT_CREATED {
        (created_event, "entity", "createdEvent.entity")
    } else {
        (updated_event, "currentEntity", "updatedEvent.currentEntity")
    };
    event
        .as_ref()
        .map(|e| entity::<T>(e, field, path))
        .transpose()?
        .flatten()
        .map(|t| (t, path))
        .ok_or_else(|| WebhookError::payload("data.data", format!("{event_type} needs {path}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContactMergedBody {
    source_contact_ids: Vec<String>,
    target_contact: wire::Contact,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionEvent {
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_as_json: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageBody {
    conversation_id: String,
    message: wire::Message,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ButtonBody {
    conversation_id: String,
    #[serde(default)]
    app_id: Option<String>,
    interaction_id: String,
    #[serde(default)]
    interacted_by: Option<Identity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MergedBody {
    old_conversation_ids: Vec<String>,
    target_conversation_id: String,
}

fn layer<T: serde::de::DeserializeOwned>(
    name: &'static str,
    text: &str,
) -> Result<T, WebhookError> {
    serde_json::from_str(text).map_err(|e| WebhookError::payload(name, e.to_string()))
}

fn from_body<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, WebhookError> {
    serde_json::from_value(v).map_err(|e| WebhookError::payload("actionEvent.body", e.to_string()))
}

fn conversation(field: &str, text: &str) -> Result<ConversationId, WebhookError> {
    Uuid::parse_str(text.trim())
        .map(ConversationId::from_uuid)
        .map_err(|_| {
            WebhookError::payload(
                "actionEvent.body",
                format!("{field} {text:?} is not a GUID"),
            )
        })
}

impl Delivery {
    /// Decodes the JWT payload's `data` string (layer A and what it nests). This is the
    /// part of [`WebhookVerifier::verify`] after the signature; it is public so that the
    /// decoding can be tested and fuzzed without keys.
    pub fn from_data(a: &str) -> Result<Delivery, WebhookError> {
        let a: LayerA = layer("data", a)?;
        let b: LayerB = layer("data.data", &a.data)?;
        let identity: Option<EventIdentity> = match &a.identity {
            Some(c) => Some(layer("data.identity", c)?),
            None => None,
        };
        let expected_type = event_type(&b.entity_fqdn, &b.slug);
        if a.event_type != expected_type && a.event_type != format!("{}_{}", b.entity_fqdn, b.slug)
        {
            return Err(WebhookError::payload(
                "data",
                format!(
                    "eventType {:?} is not entityFqdn_slug ({expected_type:?})",
                    a.event_type
                ),
            ));
        }
        let event_time = parse_date(&b.event_time).ok_or_else(|| {
            WebhookError::payload(
                "data.data",
                format!("eventTime {:?} is not an RFC 3339 date", b.event_time),
            )
        })?;
        // Entity events (a contact's created, updated or deleted envelope) carry no
        // actionEvent; only the action events folded below need one.
        let any_event = b.action_event.is_some()
            || b.created_event.is_some()
            || b.updated_event.is_some()
            || b.deleted_event.is_some();
        let action = b.action_event;
        let body = move || -> Result<Value, WebhookError> {
            let action = action.ok_or_else(|| {
                WebhookError::payload("data.data", format!("{expected_type} needs an actionEvent"))
            })?;
            match (action.body, action.body_as_json) {
                (Some(body), _) => Ok(body),
                (None, Some(text)) => layer("actionEvent.body", &text),
                (None, None) => Err(WebhookError::payload(
                    "actionEvent.body",
                    "actionEvent has no body",
                )),
            }
        };
        let event = match (b.entity_fqdn.as_str(), b.slug.as_str()) {
            (MESSAGE_FQDN, SENT_TO_BUSINESS | SENT_TO_PARTICIPANT) => {
                let body: MessageBody = from_body(body()?)?;
                let conversation_id = conversation("conversationId", &body.conversation_id)?;
                let message = body
                    .message
                    .into_observed(conversation_id, event_time)
                    .map_err(|reason| WebhookError::payload("actionEvent.body", reason))?;
                if b.slug == SENT_TO_BUSINESS {
                    WebhookEvent::MessageSentToBusiness {
                        conversation_id,
                        message,
                    }
                } else {
                    WebhookEvent::MessageSentToParticipant {
                        conversation_id,
                        message,
                    }
                }
            }
            (MESSAGE_FQDN, BUTTON_INTERACTED) => {
                let body: ButtonBody = from_body(body()?)?;
                let message_id = b
                    .entity_id
                    .as_deref()
                    .and_then(|e| e.trim().parse::<MessageId>().ok())
                    .ok_or_else(|| {
                        WebhookError::payload(
                            "data.data",
                            "button_interacted needs entityId to be the message's id",
                        )
                    })?;
                WebhookEvent::ButtonInteracted {
                    conversation_id: conversation("conversationId", &body.conversation_id)?,
                    message_id,
                    app_id: body
                        .app_id
                        .as_deref()
                        .and_then(|a| Uuid::parse_str(a.trim()).ok())
                        .map(AppId::from_uuid),
                    interaction_id: body.interaction_id,
                    interacted_by: body
                        .interacted_by
                        .as_ref()
                        .map_or(Sender::Unknown, Identity::to_sender),
                }
            }
            (CONVERSATION_FQDN, CONVERSATIONS_MERGED) => {
                let body: MergedBody = from_body(body()?)?;
                WebhookEvent::ConversationsMerged {
                    sources: body
                        .old_conversation_ids
                        .iter()
                        .map(|s| conversation("oldConversationIds", s))
                        .collect::<Result<_, _>>()?,
                    target: conversation("targetConversationId", &body.target_conversation_id)?,
                }
            }
            (CONTACT_FQDN, CONTACT_CREATED | CONTACT_UPDATED) => {
                let (contact, path) = saved_entity::<wire::Contact>(
                    &b.slug,
                    &b.created_event,
                    &b.updated_event,
                    &a.event_type,
                )?;
                let contact = contact
                    .to_core(event_time)
                    .map_err(|reason| WebhookError::payload(path, reason))?;
                if b.slug == CONTACT_CREATED {
                    WebhookEvent::ContactCreated { contact }
                } else {
                    WebhookEvent::ContactUpdated {
                        contact,
                        originated_from: b.originated_from.clone(),
                    }
                }
            }
            (CONTACT_FQDN, CONTACT_DELETED)
                if b.originated_from.as_deref() == Some(ORIGINATED_FROM_MERGE) =>
            {
                WebhookEvent::Unsupported {
                    event_type: a.event_type.clone(),
                }
            }
            (CONTACT_FQDN, CONTACT_DELETED) => {
                let contact_id = b
                    .entity_id
                    .as_deref()
                    .and_then(|e| Uuid::parse_str(e.trim()).ok())
                    .map(inbox_core::ContactId::from_uuid)
                    .ok_or_else(|| {
                        WebhookError::payload(
                            "data.data",
                            "a contact's deleted event needs entityId to be the contact's id",
                        )
                    })?;
                let deleted = b
                    .deleted_event
                    .as_ref()
                    .map(|e| {
                        entity::<wire::Contact>(e, "deletedEntity", "deletedEvent.deletedEntity")
                    })
                    .transpose()?
                    .flatten();
                WebhookEvent::ContactDeleted {
                    contact_id,
                    revision: deleted.map_or(0, |c| c.revision),
                }
            }
            (CONTACT_FQDN, CONTACT_MERGED) => {
                let body: ContactMergedBody = from_body(body()?)?;
                let target = body
                    .target_contact
                    .to_core(event_time)
                    .map_err(|reason| WebhookError::payload("actionEvent.body", reason))?;
                let sources = body
                    .source_contact_ids
                    .iter()
                    .map(|s| {
                        Uuid::parse_str(s.trim())
                            .map(inbox_core::ContactId::from_uuid)
                            .map_err(|_| {
                                WebhookError::payload(
                                    "actionEvent.body",
                                    format!("sourceContactIds: {s:?} is not a GUID"),
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?;
                WebhookEvent::ContactMerged { target, sources }
            }
            (LABEL_FQDN | EXTENDED_FIELD_FQDN, CONTACT_CREATED | CONTACT_UPDATED) => {
                if b.entity_fqdn == LABEL_FQDN {
                    let (label, path) = saved_entity::<crate::catalog::ContactLabel>(
                        &b.slug,
                        &b.created_event,
                        &b.updated_event,
                        &a.event_type,
                    )?;
                    WebhookEvent::LabelSaved {
                        label: label
                            .to_core(event_time)
                            .map_err(|reason| WebhookError::payload(path, reason))?,
                    }
                } else {
                    let (field, path) = saved_entity::<crate::catalog::ExtendedField>(
                        &b.slug,
                        &b.created_event,
                        &b.updated_event,
                        &a.event_type,
                    )?;
                    WebhookEvent::ExtendedFieldSaved {
                        field: field
                            .to_core(event_time)
                            .map_err(|reason| WebhookError::payload(path, reason))?,
                    }
                }
            }
            (LABEL_FQDN | EXTENDED_FIELD_FQDN, CONTACT_DELETED) => {
                let key = b
                    .entity_id
                    .as_deref()
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        WebhookError::payload(
                            "data.data",
                            "a deleted label or extended field needs entityId to be its key",
                        )
                    })?
                    .to_owned();
                if b.entity_fqdn == LABEL_FQDN {
                    WebhookEvent::LabelDeleted { key }
                } else {
                    WebhookEvent::ExtendedFieldDeleted { key }
                }
            }
            _ => {
                // Verified and acknowledged, changing nothing here, so Wix does not retry it.
                if !any_event {
                    return Err(WebhookError::payload(
                        "data.data",
                        "no actionEvent, createdEvent, updatedEvent or deletedEvent",
                    ));
                }
                WebhookEvent::Unsupported {
                    event_type: a.event_type.clone(),
                }
            }
        };
        Ok(Delivery {
            event_id: delivery_event_id(&b.id),
            id: b.id,
            instance_id: SiteId::new(a.instance_id),
            event_type: a.event_type,
            entity_id: b.entity_id,
            event_time,
            identity,
            event,
        })
    }

    /// The core events this delivery stands for. A message to the business also tells who
    /// its participant is: the conversation is started for the sender's most advanced id,
    /// and a sender with a contact id links its visitor or member id to that contact.
    pub fn core_events(&self) -> Vec<Event> {
        match &self.event {
            WebhookEvent::MessageSentToBusiness {
                conversation_id,
                message,
            } => {
                let mut events = Vec::new();
                let participant = match message.sender {
                    Sender::Member { member, contact } => {
                        if let Some(contact) = contact {
                            // The message proves the registration existed by its sequence.
                            events.push(Event::MemberRegistered {
                                member,
                                contact,
                                login_email: None,
                                stamp: message.sequence,
                            });
                        }
                        Some(ParticipantId::Member(member))
                    }
                    Sender::Contact(c) => Some(ParticipantId::Contact(c)),
                    Sender::Visitor(v) => Some(ParticipantId::Visitor(v)),
                    _ => None,
                };
                if let Some(participant) = participant {
                    events.push(Event::ConversationStarted {
                        conversation_id: *conversation_id,
                        participant,
                    });
                }
                events.push(Event::MessageSent {
                    message: message.clone(),
                });
                events
            }
            WebhookEvent::MessageSentToParticipant { message, .. } => vec![Event::MessageSent {
                message: message.clone(),
            }],
            WebhookEvent::ButtonInteracted {
                conversation_id,
                message_id,
                app_id,
                interaction_id,
                interacted_by,
            } => vec![Event::ButtonInteracted {
                conversation_id: *conversation_id,
                message_id: *message_id,
                interaction_id: interaction_id.clone(),
                app_id: *app_id,
                interacted_by: *interacted_by,
            }],
            WebhookEvent::ConversationsMerged { sources, target } => {
                vec![Event::ConversationsMerged {
                    sources: sources.clone(),
                    target: *target,
                    // Wix does not number merges; its event time orders them.
                    stamp: Sequence(self.event_time.as_micros()),
                }]
            }
            WebhookEvent::ContactCreated { contact } => vec![Event::ContactCreated {
                contact: contact.clone(),
            }],
            WebhookEvent::ContactUpdated { contact, .. } => vec![Event::ContactUpdated {
                contact: contact.clone(),
            }],
            WebhookEvent::ContactDeleted {
                contact_id,
                revision,
            } => vec![Event::ContactDeleted {
                contact_id: *contact_id,
                revision: *revision,
            }],
            WebhookEvent::ContactMerged { target, sources } => vec![Event::ContactsMerged {
                target: target.clone(),
                sources: sources.clone(),
            }],
            // Wix does not number these either: the event time orders a key's saves and
            // deletions.
            WebhookEvent::LabelSaved { label } => vec![Event::LabelSaved {
                label: label.clone(),
                stamp: Sequence(self.event_time.as_micros()),
            }],
            WebhookEvent::LabelDeleted { key } => vec![Event::LabelDeleted {
                key: key.clone(),
                stamp: Sequence(self.event_time.as_micros()),
            }],
            WebhookEvent::ExtendedFieldSaved { field } => vec![Event::ExtendedFieldSaved {
                field: field.clone(),
                stamp: Sequence(self.event_time.as_micros()),
            }],
            WebhookEvent::ExtendedFieldDeleted { key } => vec![Event::ExtendedFieldDeleted {
                key: key.clone(),
                stamp: Sequence(self.event_time.as_micros()),
            }],
            WebhookEvent::Unsupported { .. } => Vec::new(),
        }
    }

    /// [`Delivery::core_events`] in envelopes, with event ids derived from the delivery's
    /// id (so a repeat gives the same ids) and `recorded_at` as the time of receipt.
    pub fn envelopes(&self, recorded_at: Timestamp) -> Vec<EventEnvelope> {
        self.core_events()
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                EventEnvelope::new(
                    self.instance_id.clone(),
                    derived_id(self.event_id, i),
                    recorded_at,
                    event,
                )
            })
            .collect()
    }
}

/// A delivery's event id: its layer-B `id` as a GUID, or (Wix's ids are GUIDs, but a
/// receiver takes what comes) a UUIDv5 of it.
fn delivery_event_id(id: &str) -> EventId {
    EventId::from_uuid(
        Uuid::parse_str(id.trim()).unwrap_or_else(|_| Uuid::new_v5(&DERIVED_IDS, id.as_bytes())),
    )
}

fn derived_id(delivery: EventId, index: usize) -> EventId {
    EventId::from_uuid(Uuid::new_v5(
        &delivery.as_uuid(),
        index.to_string().as_bytes(),
    ))
}

/// What [`Replica::ingest`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingested {
    /// New: these envelopes were applied (none for an unsupported event type).
    Applied(Vec<EventEnvelope>),
    /// A repeat of a delivery already folded; nothing changed.
    Duplicate,
}

/// A local replica of one site's Inbox, fed by its webhooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    inbox: Inbox,
    seen: imbl::OrdSet<EventId>,
}

impl Replica {
    /// An empty replica.
    pub fn new(config: InboxConfig) -> Self {
        Replica {
            inbox: Inbox::new(config),
            seen: imbl::OrdSet::new(),
        }
    }

    /// Whether this delivery (or a repeat of it) was folded already.
    pub fn has_seen(&self, delivery: &Delivery) -> bool {
        self.seen.contains(&derived_id(delivery.event_id, 0))
    }

    /// Folds a delivery unless it was folded before (deduplicated on its event id).
    pub fn ingest(&mut self, delivery: &Delivery, recorded_at: Timestamp) -> Ingested {
        if self.has_seen(delivery) {
            return Ingested::Duplicate;
        }
        let envelopes = delivery.envelopes(recorded_at);
        for e in &envelopes {
            self.apply(e);
        }
        Ingested::Applied(envelopes)
    }

    /// Folds an envelope that [`Delivery::envelopes`] made, e.g. read back from a log
    /// after a restart.
    pub fn apply(&mut self, envelope: &EventEnvelope) {
        self.seen.insert(envelope.event_id);
        self.inbox.apply(envelope);
    }

    /// The replicated state: read it with the core's queries or the REST responses.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }
}

// ------------------------------------------------------------------------------------------
// outgoing

/// One delivery we announce, before signing. It serializes (camelCase) so that an outbox can
/// keep what it has not delivered yet beside a snapshot of the state it was computed from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    /// Layer B's `id`: the recorded event's id, so retries share it.
    pub id: EventId,
    /// `instanceId`.
    pub instance_id: SiteId,
    /// `entityFqdn`.
    pub entity_fqdn: String,
    /// `slug`.
    pub slug: String,
    /// `entityId`: the message id for message events, the target for merges.
    pub entity_id: String,
    /// `eventTime`: when the event was recorded.
    pub event_time: Timestamp,
    /// The domain event's body: `actionEvent.body`, or the entity of a created, updated or
    /// deleted event (`Value::Null` for a deletion without it).
    pub body: Value,
    /// Which of Wix's domain-event bodies layer B carries (absent in pending announcements
    /// saved by older builds, which were all action events).
    #[serde(default)]
    pub kind: DomainEventKind,
    /// More layer-B metadata: `originatedFrom`, `entityEventSequence`,
    /// `triggeredByAnonymizeRequest`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, Value>,
    /// Layer C.
    pub identity: EventIdentity,
}

/// Which body a domain event (layer B) carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainEventKind {
    /// `actionEvent: {body}`.
    #[default]
    Action,
    /// `createdEvent: {entity}`.
    Created,
    /// `updatedEvent: {currentEntity}`.
    Updated,
    /// `deletedEvent: {deletedEntity?}`.
    Deleted,
}

/// Why signing failed (a key that cannot sign RS256).
#[derive(Debug, thiserror::Error)]
#[error("could not sign webhook: {0}")]
pub struct SignError(#[from] jsonwebtoken::errors::Error);

impl Announcement {
    /// `eventType`.
    pub fn event_type(&self) -> String {
        event_type(&self.entity_fqdn, &self.slug)
    }

    /// The JWT payload's `data` string (layer A, nesting B and C as strings).
    pub fn data(&self) -> String {
        let mut b = json!({
            "id": self.id.to_string(),
            "entityFqdn": self.entity_fqdn,
            "slug": self.slug,
            "entityId": self.entity_id,
            "eventTime": format_date(self.event_time),
        });
        if let Some(map) = b.as_object_mut() {
            let (key, body) = match self.kind {
                DomainEventKind::Action => ("actionEvent", json!({"body": self.body})),
                DomainEventKind::Created => ("createdEvent", json!({"entity": self.body})),
                DomainEventKind::Updated => ("updatedEvent", json!({"currentEntity": self.body})),
                DomainEventKind::Deleted if self.body.is_null() => ("deletedEvent", json!({})),
                DomainEventKind::Deleted => ("deletedEvent", json!({"deletedEntity": self.body})),
            };
            map.insert(key.to_owned(), body);
            map.extend(self.metadata.clone());
        }
        let a = json!({
            "eventType": self.event_type(),
            "instanceId": self.instance_id.0,
            "data": b.to_string(),
            "identity": json!(self.identity).to_string(),
            // The site the event is tied to, as Wix's envelope says it (the emulator has no
            // accounts to name).
            "accountInfo": {"siteId": self.instance_id.0},
        });
        a.to_string()
    }

    /// The signed delivery body: a JWT issued at `now`, valid for `ttl_secs`.
    pub fn sign(
        &self,
        signer: &WebhookSigner,
        now: Timestamp,
        ttl_secs: i64,
    ) -> Result<String, SignError> {
        let iat = now.as_micros().div_euclid(1_000_000);
        let claims = json!({"data": self.data(), "iat": iat, "exp": iat.saturating_add(ttl_secs)});
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &signer.key,
        )?)
    }
}

/// What Wix would announce for a recorded event, given the state right after it was
/// applied (to name the live conversation). Events Wix has no webhook for (a visitor's
/// identification, a registration, a conversation being started) give none.
///
/// Contacts (`wix.contacts.v4.contact_<slug>`): a creation is `created`; an update, a
/// label change and an erasure are `updated` (an erasure with `triggeredByAnonymizeRequest`);
/// a deletion is `deleted`; a merge is `merged`, then `updated` of the target and `deleted`
/// of each source, both with `originatedFrom: merge`. Each carries the contact's revision as
/// `entityEventSequence`, so a receiver can drop stale updates.
/// Announcements after the first of one event get ids derived from the event's.
pub fn announcements(envelope: &EventEnvelope, after: &Inbox) -> Vec<Announcement> {
    let base = |entity_fqdn: &str, slug: &str, entity_id: String, body, identity| Announcement {
        id: envelope.event_id,
        instance_id: envelope.site.clone(),
        entity_fqdn: entity_fqdn.to_owned(),
        slug: slug.to_owned(),
        entity_id,
        event_time: envelope.recorded_at,
        body,
        kind: DomainEventKind::Action,
        metadata: serde_json::Map::new(),
        identity,
    };
    // An entity's created, updated or deleted event (no one in particular caused it).
    let entity_event = |fqdn: &str, slug: &str, kind, id: String, body| {
        let mut a = base(fqdn, slug, id, body, EventIdentity::of(&Sender::Unknown));
        a.kind = kind;
        a
    };
    let contact_event = |slug: &str, kind, id: inbox_core::ContactId, body, sequence: u64| {
        let mut a = entity_event(CONTACT_FQDN, slug, kind, id.to_string(), body);
        a.metadata.insert(
            "entityEventSequence".into(),
            Value::String(sequence.to_string()),
        );
        a
    };
    let contact_json = |c: &inbox_core::contacts::Contact| json!(wire::Contact::from_core(c));
    // A label or field made (its dates are equal: a rename always moves the second) or
    // renamed.
    let saved = |fqdn: &str, key: &str, made: bool, entity: Value| {
        let (slug, kind) = if made {
            (CONTACT_CREATED, DomainEventKind::Created)
        } else {
            (CONTACT_UPDATED, DomainEventKind::Updated)
        };
        entity_event(fqdn, slug, kind, key.to_owned(), entity)
    };
    match &envelope.event {
        Event::MessageSent { message } => {
            let slug = match message.direction {
                Direction::ParticipantToBusiness => SENT_TO_BUSINESS,
                Direction::BusinessToParticipant => SENT_TO_PARTICIPANT,
                Direction::Unknown => return Vec::new(),
            };
            let conversation_id = after.root_of(message.conversation_id);
            let body = json!({
                "conversationId": conversation_id.to_string(),
                "message": wire::Message::from_core(message),
            });
            vec![base(
                MESSAGE_FQDN,
                slug,
                message.id.to_string(),
                body,
                EventIdentity::of(&message.sender),
            )]
        }
        Event::ButtonInteracted {
            conversation_id,
            message_id,
            interaction_id,
            app_id,
            interacted_by,
        } => {
            let mut body = json!({
                "conversationId": after.root_of(*conversation_id).to_string(),
                "interactionId": interaction_id,
                "interactedBy": Identity::from_sender(interacted_by),
            });
            if let (Some(app), Some(map)) = (app_id, body.as_object_mut()) {
                map.insert("appId".into(), Value::String(app.to_string()));
            }
            vec![base(
                MESSAGE_FQDN,
                BUTTON_INTERACTED,
                message_id.to_string(),
                body,
                EventIdentity::of(interacted_by),
            )]
        }
        Event::ConversationsMerged {
            sources, target, ..
        } => {
            let body = json!({
                "oldConversationIds": sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "targetConversationId": target.to_string(),
            });
            vec![base(
                CONVERSATION_FQDN,
                CONVERSATIONS_MERGED,
                target.to_string(),
                body,
                EventIdentity::of(&Sender::Unknown),
            )]
        }
        Event::ContactCreated { contact } => vec![contact_event(
            CONTACT_CREATED,
            DomainEventKind::Created,
            contact.id,
            contact_json(contact),
            contact.revision,
        )],
        Event::ContactUpdated { contact } => vec![contact_event(
            CONTACT_UPDATED,
            DomainEventKind::Updated,
            contact.id,
            contact_json(contact),
            contact.revision,
        )],
        Event::ContactDeleted {
            contact_id,
            revision,
        } => vec![contact_event(
            CONTACT_DELETED,
            DomainEventKind::Deleted,
            *contact_id,
            Value::Null,
            revision.saturating_add(1),
        )],
        Event::ContactsMerged { target, sources } => {
            let mut merged = base(
                CONTACT_FQDN,
                CONTACT_MERGED,
                target.id.to_string(),
                json!({
                    "targetContactId": target.id.to_string(),
                    "sourceContactIds": sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "targetContact": contact_json(target),
                }),
                EventIdentity::of(&Sender::Unknown),
            );
            merged.metadata.insert(
                "entityEventSequence".into(),
                Value::String(target.revision.to_string()),
            );
            let mut out = vec![merged];
            let by_merge = |mut a: Announcement| {
                a.metadata.insert(
                    "originatedFrom".into(),
                    Value::String(ORIGINATED_FROM_MERGE.into()),
                );
                a
            };
            out.push(by_merge(contact_event(
                CONTACT_UPDATED,
                DomainEventKind::Updated,
                target.id,
                contact_json(target),
                target.revision,
            )));
            for s in sources.iter().filter(|s| **s != target.id) {
                let revision = after
                    .contacts()
                    .merged_record(*s)
                    .map_or(1, |c| c.revision.saturating_add(1));
                out.push(by_merge(contact_event(
                    CONTACT_DELETED,
                    DomainEventKind::Deleted,
                    *s,
                    Value::Null,
                    revision,
                )));
            }
            number(out, envelope.event_id)
        }
        Event::ParticipantErased {
            contact: Some(contact),
            ..
        } => {
            let mut a = contact_event(
                CONTACT_UPDATED,
                DomainEventKind::Updated,
                contact.id,
                contact_json(contact),
                contact.revision,
            );
            a.metadata
                .insert("triggeredByAnonymizeRequest".into(), Value::Bool(true));
            vec![a]
        }
        Event::LabelSaved { label, .. } => vec![saved(
            LABEL_FQDN,
            &label.key,
            label.created_date == label.updated_date,
            json!(crate::catalog::ContactLabel::from_core(label)),
        )],
        Event::ExtendedFieldSaved { field, .. } => vec![saved(
            EXTENDED_FIELD_FQDN,
            &field.key,
            field.created_date == field.updated_date,
            json!(crate::catalog::ExtendedField::from_core(field)),
        )],
        Event::LabelDeleted { key, .. } | Event::ExtendedFieldDeleted { key, .. } => {
            let fqdn = if matches!(envelope.event, Event::LabelDeleted { .. }) {
                LABEL_FQDN
            } else {
                EXTENDED_FIELD_FQDN
            };
            vec![entity_event(
                fqdn,
                CONTACT_DELETED,
                DomainEventKind::Deleted,
                key.clone(),
                Value::Null,
            )]
        }
        // Wix has no event for a revert (Wix's merges are final).
        Event::ConversationStarted { .. }
        | Event::VisitorIdentified { .. }
        | Event::MemberRegistered { .. }
        | Event::ConversationMergeReverted { .. }
        | Event::ParticipantErased { contact: None, .. } => Vec::new(),
    }
}

/// Gives the announcements of one event distinct ids: the first keeps the event's, the
/// others get ids derived from it (stable across retries and restarts).
fn number(mut out: Vec<Announcement>, event_id: EventId) -> Vec<Announcement> {
    for (i, a) in out.iter_mut().enumerate().skip(1) {
        a.id = derived_id(event_id, i);
    }
    out
}
