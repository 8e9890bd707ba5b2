//! Errors in Wix's shape, with the HTTP status that goes with each.
//!
//! Two bodies exist:
//!
//! * application errors: `{"message", "details": {"applicationError": {"code", "description",
//!   "data"}}}`;
//! * validation errors: `{"message", "details": {"validationError": {"fieldViolations":
//!   [{"field", "description", "violatedRule", "ruleName", "data"}]}}}`.
//!
//! [`WixError`] is one of them plus its status. Every refusal of the core and of this crate
//! converts into one here, in one place, so the table in `docs/WIX-MAPPING.md` can list them
//! all ([`ERROR_CODES`] is that table as data, and a test keeps the two equal).

use inbox_core::catalog::{CatalogError, CatalogKind};
use inbox_core::contacts::{
    ContactDataError, CreateContactError, DeleteContactError, LabelContactError,
    MAX_LABELS_PER_CHANGE, MAX_MERGE_SOURCES, MergeContactsError, UpdateContactError,
};
use inbox_core::message::{
    MAX_BADGES, MAX_FORM_FIELDS, MAX_FORM_MEDIA, MAX_PREVIEW_TEXT, MAX_TARGET_CHANNELS,
    MAX_TEMPLATE_BUTTONS, MAX_TEMPLATE_TEXT_LINES, MessageRejection,
};
use inbox_core::{
    CursorError, GetConversationError, ListMessagesError, MAX_PAGE_LIMIT, Rejection,
    RevertMergeError,
};
use serde::Serialize;
use serde_json::{Value, json};

/// The rule a field broke (Wix's `violatedRule` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Rule {
    /// A required field is missing.
    RequiredField,
    /// Not in the expected format (a GUID, a date, JSON of the right type).
    Format,
    /// An enum value that is not allowed.
    InvalidEnumValue,
    /// Text too long.
    MaxLength,
    /// Too many items.
    MaxSize,
    /// Too few items.
    MinSize,
    /// A number above its maximum.
    Max,
    /// A number below its minimum.
    Min,
    /// A field that must not be given here.
    FieldNotAllowed,
    /// Any other rule.
    Other,
}

/// One bad field.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `message.content.previewText`.
    pub field: String,
    /// What is wrong, for people.
    pub description: String,
    /// Which kind of rule.
    pub violated_rule: Rule,
    /// The specific rule, e.g. `MAX_BADGES`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<&'static str>,
    /// The rule's parameters, e.g. `{"max": 1}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl FieldViolation {
    /// A violation of `rule` at `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>, rule: Rule) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
            violated_rule: rule,
            rule_name: None,
            data: None,
        }
    }

    fn named(mut self, name: &'static str, data: Value) -> Self {
        self.rule_name = Some(name);
        self.data = Some(data);
        self
    }
}

/// What went wrong, as Wix's `details`.
#[derive(Clone, Debug, PartialEq)]
pub enum Details {
    /// `applicationError`.
    Application {
        /// Machine-readable, e.g. `CONVERSATION_NOT_FOUND`.
        code: &'static str,
        /// For people.
        description: String,
        /// Extra data (e.g. the duplicate contact's id).
        data: Value,
    },
    /// `validationError`.
    Validation(Vec<FieldViolation>),
}

/// An error as the Wix API answers it: an HTTP status and a body.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{status} {message}")]
pub struct WixError {
    status: u16,
    message: String,
    details: Details,
}

impl WixError {
    /// A 400 with one field violation.
    pub fn invalid(violation: FieldViolation) -> Self {
        WixError {
            status: 400,
            message: violation.description.clone(),
            details: Details::Validation(vec![violation]),
        }
    }

    /// An application error: `status`, `code` and a description.
    pub fn application(status: u16, code: &'static str, description: impl Into<String>) -> Self {
        let description = description.into();
        WixError {
            status,
            message: description.clone(),
            details: Details::Application {
                code,
                description,
                data: json!({}),
            },
        }
    }

    /// The same error with `data` in its application error.
    pub fn with_data(mut self, value: Value) -> Self {
        if let Details::Application { data, .. } = &mut self.details {
            *data = value;
        }
        self
    }

    /// 401: no or an unknown API key.
    pub fn unauthenticated(description: impl Into<String>) -> Self {
        Self::application(401, "UNAUTHENTICATED", description)
    }

    /// 403: a known key that may not do this.
    pub fn forbidden(description: impl Into<String>) -> Self {
        Self::application(403, "PERMISSION_DENIED", description)
    }

    /// 400: a body that is not JSON, or not the JSON the call takes.
    pub fn malformed_json(description: impl Into<String>) -> Self {
        WixError::invalid(FieldViolation::new("", description, Rule::Format))
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The top-level `message`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The application error code, if this is one.
    pub fn code(&self) -> Option<&'static str> {
        match &self.details {
            Details::Application { code, .. } => Some(code),
            Details::Validation(_) => None,
        }
    }

    /// The details.
    pub fn details(&self) -> &Details {
        &self.details
    }

    /// The response body, in Wix's shape.
    pub fn body(&self) -> Value {
        let details = match &self.details {
            Details::Application {
                code,
                description,
                data,
            } => {
                json!({"applicationError": {"code": code, "description": description, "data": data}})
            }
            Details::Validation(violations) => {
                json!({"validationError": {"fieldViolations": violations}})
            }
        };
        json!({"message": self.message, "details": details})
    }
}

/// Every application error code this crate answers with, its HTTP status, and when.
/// `docs/WIX-MAPPING.md` prints the same table; a test keeps them equal.
pub const ERROR_CODES: &[(&str, u16, &str)] = &[
    (
        "(validationError)",
        400,
        "a field is missing, malformed, out of range or breaks a message rule (an email with whitespace or a control character is malformed); a path segment that is not UTF-8 is a violation of field `path`",
    ),
    (
        "INVALID_CURSOR",
        400,
        "a paging cursor is malformed, tampered with, from another site or conversation, or reused with another sort order or visibility",
    ),
    (
        "MALFORMED_FILTER",
        400,
        "a contacts, labels or extended fields filter is not valid filter JSON (an unknown operator, an empty $and, nesting too deep)",
    ),
    (
        "UNSUPPORTED_FILTER",
        400,
        "a contacts query asks for a free-text search, which is not supported",
    ),
    (
        "UNSUPPORTED_FILTER_FIELD_UNKNOWN",
        400,
        "a contacts filter names a field contacts cannot be filtered on",
    ),
    (
        "UNSUPPORTED_FILTER_OPERATOR",
        400,
        "a contacts, labels or extended fields filter applies an operator its field does not support",
    ),
    (
        "UNSUPPORTED_FILTER_VALUE_TYPE",
        400,
        "a contacts filter compares with a value of the wrong type (a number for an email, $in without an array)",
    ),
    (
        "UNSUPPORTED_FILTER_VALUE",
        400,
        "a contacts, labels or extended fields filter compares with a value its field cannot hold (a date that is not RFC 3339; for labels and fields also a value of the wrong type)",
    ),
    (
        "ILLEGAL_LIMIT",
        400,
        "a contacts query limit outside 1..=1000",
    ),
    (
        "UNSUPPORTED_SORT_FIELD",
        400,
        "a contacts query sorts on an unsupported field",
    ),
    (
        "UNSUPPORTED_FILTER_FIELD",
        400,
        "a labels or extended fields query filters on a field it cannot be filtered on",
    ),
    (
        "INVALID_SORT",
        400,
        "a labels or extended fields query sorts on anything but displayName, createdDate or updatedDate, or with an order other than ASC or DESC",
    ),
    (
        "INVALID_QUERY",
        400,
        "a contacts query with bad paging offset or projection",
    ),
    (
        "INSUFFICIENT_CONTACT_DATA",
        400,
        "create or update contact: no name, email or phone (left)",
    ),
    (
        "NEITHER_FILTER_NOR_SEARCH",
        400,
        "a bulk contacts call names no contacts (no filter and no search)",
    ),
    (
        "CANNOT_DELETE_MEMBER",
        400,
        "delete contact: the contact is a site member (data names memberId)",
    ),
    (
        "ILLEGAL_MERGE",
        400,
        "merge contacts: the target among the sources, a source listed twice, or a source that is a site member (data.reason says which: SOURCE_IS_TARGET, DUPLICATE_SOURCE, SOURCE_IS_MEMBER)",
    ),
    (
        "INVALID_EXTENDED_FIELD_VALUE",
        400,
        "create or update contact: an extended field the site does not define, or a value that does not fit its field's data type (data names extendedFieldKey)",
    ),
    (
        "LABELS_QUOTA_REACHED",
        400,
        "find or create label: the site already has 1000 custom labels (inboxd's quota; Wix does not publish its own)",
    ),
    (
        "FIELDS_QUOTA_EXCEEDED",
        400,
        "find or create extended field: the site already has 100 custom fields (inboxd's quota; Wix does not publish its own)",
    ),
    (
        "LABEL_NOT_CUSTOM",
        400,
        "(invented: Wix declares no code) rename or delete label: the label is Wix's or a Wix app's, not a custom one",
    ),
    (
        "EXTENDED_FIELD_NOT_CUSTOM",
        400,
        "(invented: Wix declares no code) rename or delete extended field: a system field",
    ),
    (
        "INVALID_WEBHOOK_PAYLOAD",
        400,
        "a webhook whose token is trusted but whose payload is not the documented nesting",
    ),
    (
        "UNAUTHENTICATED",
        401,
        "no API key, or one the server does not know",
    ),
    (
        "INVALID_WEBHOOK_SIGNATURE",
        401,
        "a webhook token with another algorithm than RS256, critical header extensions (`crit`), a bad signature, no exp, an expired exp, or an `nbf` still ahead",
    ),
    ("PERMISSION_DENIED", 403, "the key belongs to another site"),
    (
        "CANNOT_UPDATE_MEMBER_EMAIL",
        403,
        "update contact would change the primary email of a site member, which only the Members API changes",
    ),
    ("NOT_FOUND", 404, "(inboxd) no such path"),
    (
        "CONVERSATION_NOT_FOUND",
        404,
        "no conversation has the id (or it belongs to another site)",
    ),
    ("CONTACT_NOT_FOUND", 404, "no live contact has the id"),
    (
        "LABEL_NOT_FOUND",
        404,
        "(invented: Wix declares no code) get, rename or delete label: no label has the key; or a contact is given, or label contact names, a custom label the site does not define (data names the key)",
    ),
    (
        "EXTENDED_FIELD_NOT_FOUND",
        404,
        "(invented: Wix declares no code) get, rename or delete extended field: no field has the key",
    ),
    ("MEMBER_NOT_FOUND", 404, "no member has the id"),
    (
        "MESSAGE_NOT_FOUND",
        404,
        "the message is not in the conversation",
    ),
    (
        "INTERACTION_NOT_FOUND",
        404,
        "the message has no postback button with the interaction id",
    ),
    (
        "METHOD_NOT_ALLOWED",
        405,
        "(inboxd) the path does not take that method",
    ),
    (
        "DUPLICATE_CONTACT_EXISTS",
        409,
        "create or update contact: an email or phone already belongs to another contact (data names duplicateContactId and duplicateEmail or duplicatePhone)",
    ),
    (
        "CONTACT_ID_ALREADY_EXISTS",
        409,
        "create contact: the id is taken (by a live, merged or deleted contact)",
    ),
    (
        "CONTACT_ALREADY_CHANGED",
        409,
        "update contact: revision is not the contact's current revision (data names both)",
    ),
    (
        "VISITOR_ALREADY_IDENTIFIED",
        409,
        "the visitor is already another contact",
    ),
    (
        "MEMBER_ALREADY_EXISTS",
        409,
        "the member id belongs to another contact",
    ),
    (
        "CONTACT_ALREADY_MEMBER",
        409,
        "the contact is already another member",
    ),
    (
        "LABEL_NAME_TAKEN",
        409,
        "(invented: Wix declares no code) rename label: another label has the display name (data names its key)",
    ),
    (
        "EXTENDED_FIELD_NAME_TAKEN",
        409,
        "(invented: Wix declares no code) rename extended field: another field has the display name (data names its key)",
    ),
    (
        "CONVERSATION_NOT_MERGED",
        409,
        "(inboxd) revert a conversation merge: the conversation is live, no merge holds it",
    ),
    (
        "MERGE_ALREADY_REVERTED",
        409,
        "(inboxd) revert a conversation merge: the merge that held it was reverted already (data names the merge and the revert)",
    ),
    (
        "LATER_MERGE_DEPENDS",
        409,
        "(inboxd) revert a conversation merge: the conversation it was merged into was merged away since; revert that merge first (data names it)",
    ),
    (
        "MERGE_FOLLOWS_FROM_IDENTITY",
        409,
        "(inboxd) revert a conversation merge: both conversations are one person's (a visitor identified, a contact registered, contacts merged), so the merge follows from that identity",
    ),
    (
        "SITE_IS_NOT_A_REPLICA",
        409,
        "(inboxd) a Wix webhook names a site that the emulator writes",
    ),
    (
        "SEQUENCE_CLOCK_EXHAUSTED",
        409,
        "(inboxd) the site's sequence clock is at its maximum, so no message, merge or registration can be recorded (only an observed event with the maximal sequence puts it there)",
    ),
    (
        "PAYLOAD_TOO_LARGE",
        413,
        "(inboxd) a request body over 1 MiB",
    ),
    (
        "FAILED_PRECONDITION",
        428,
        "merge or preview merge contacts: targetContactRevision is not the target's current revision (data names both)",
    ),
    (
        "INTERNAL",
        500,
        "(inboxd) a bug: an answer the engine should always have was missing",
    ),
    (
        "WEBHOOK_INTAKE_DISABLED",
        501,
        "(inboxd) POST /webhooks/wix without --wix-public-key",
    ),
    (
        "UNAVAILABLE",
        503,
        "(inboxd) the event log failed a write; writes are refused until a restart",
    ),
];

fn violation_of(r: &MessageRejection) -> FieldViolation {
    let v = |field: &str, rule| FieldViolation::new(field, r.to_string(), rule);
    match r {
        MessageRejection::NoContent => v("message.content", Rule::RequiredField),
        MessageRejection::SeveralContentTypes(_) => v("message.content", Rule::Other)
            .named("ONE_CONTENT_TYPE", json!({"present": r.to_string()})),
        MessageRejection::SystemNotSendable => v("message.content.system", Rule::FieldNotAllowed),
        MessageRejection::TooManyBadges(_) => {
            v("message.badges", Rule::MaxSize).named("MAX_BADGES", json!({"max": MAX_BADGES}))
        }
        MessageRejection::TooManyTargetChannels(_) => v("message.targetChannels", Rule::MaxSize)
            .named("MAX_TARGET_CHANNELS", json!({"max": MAX_TARGET_CHANNELS})),
        MessageRejection::UnknownTargetChannel => {
            v("message.targetChannels", Rule::InvalidEnumValue)
        }
        MessageRejection::PreviewTextTooLong(_) => {
            v("message.content.previewText", Rule::MaxLength)
                .named("MAX_PREVIEW_TEXT", json!({"max": MAX_PREVIEW_TEXT}))
        }
        MessageRejection::EmptyBasic => v("message.content.basic.items", Rule::MinSize)
            .named("MIN_BASIC_ITEMS", json!({"min": 1})),
        MessageRejection::TooManyTextLines(_) => {
            v("message.content.template.textLines", Rule::MaxSize)
                .named("MAX_TEXT_LINES", json!({"max": MAX_TEMPLATE_TEXT_LINES}))
        }
        MessageRejection::TooManyButtons(_) => v("message.content.template.buttons", Rule::MaxSize)
            .named("MAX_BUTTONS", json!({"max": MAX_TEMPLATE_BUTTONS})),
        MessageRejection::InvalidButton { index } => v(
            &format!("message.content.template.buttons[{index}]"),
            Rule::Other,
        )
        .named("ONE_BUTTON_ACTION", json!({})),
        MessageRejection::FormFieldCount(n) => v(
            "message.content.form.fields",
            if *n == 0 {
                Rule::MinSize
            } else {
                Rule::MaxSize
            },
        )
        .named(
            "FORM_FIELD_COUNT",
            json!({"min": 1, "max": MAX_FORM_FIELDS}),
        ),
        MessageRejection::TooManyFormMedia(_) => v("message.content.form.media", Rule::MaxSize)
            .named("MAX_FORM_MEDIA", json!({"max": MAX_FORM_MEDIA})),
        MessageRejection::UnknownVisibility => v("message.visibility", Rule::InvalidEnumValue),
        MessageRejection::UnknownDirection => v("message.direction", Rule::RequiredField),
    }
}

impl From<MessageRejection> for WixError {
    fn from(r: MessageRejection) -> Self {
        WixError::invalid(violation_of(&r))
    }
}

impl From<ContactDataError> for WixError {
    fn from(e: ContactDataError) -> Self {
        let text = e.to_string();
        match e {
            ContactDataError::InvalidEmail(_) => {
                WixError::invalid(FieldViolation::new("info.emails.items", text, Rule::Format))
            }
            ContactDataError::InvalidPhone(_) => {
                WixError::invalid(FieldViolation::new("info.phones.items", text, Rule::Format))
            }
            ContactDataError::DuplicateEmail { email, existing } => {
                WixError::application(409, "DUPLICATE_CONTACT_EXISTS", text).with_data(
                    json!({"duplicateContactId": existing.to_string(), "duplicateEmail": email}),
                )
            }
            ContactDataError::DuplicatePhone { phone, existing } => {
                WixError::application(409, "DUPLICATE_CONTACT_EXISTS", text).with_data(
                    json!({"duplicateContactId": existing.to_string(), "duplicatePhone": phone}),
                )
            }
            ContactDataError::InvalidField { field, .. } => {
                WixError::invalid(FieldViolation::new(field, text, Rule::Format))
            }
            ContactDataError::UnknownLabel(key) => {
                WixError::application(404, "LABEL_NOT_FOUND", text)
                    .with_data(json!({"labelKey": key}))
            }
            ContactDataError::UnknownExtendedField(key)
            | ContactDataError::InvalidExtendedField { key, .. } => {
                WixError::application(400, "INVALID_EXTENDED_FIELD_VALUE", text)
                    .with_data(json!({"extendedFieldKey": key}))
            }
        }
    }
}

impl From<CreateContactError> for WixError {
    fn from(e: CreateContactError) -> Self {
        let text = e.to_string();
        match e {
            CreateContactError::Empty => {
                WixError::application(400, "INSUFFICIENT_CONTACT_DATA", text)
            }
            CreateContactError::AlreadyExists(_) => {
                WixError::application(409, "CONTACT_ID_ALREADY_EXISTS", text)
            }
            CreateContactError::Data(e) => e.into(),
        }
    }
}

impl From<UpdateContactError> for WixError {
    fn from(e: UpdateContactError) -> Self {
        let text = e.to_string();
        match e {
            UpdateContactError::NotFound(id) => {
                WixError::application(404, "CONTACT_NOT_FOUND", text)
                    .with_data(json!({"contactId": id.to_string()}))
            }
            UpdateContactError::RevisionConflict { expected, actual } => {
                WixError::application(409, "CONTACT_ALREADY_CHANGED", text)
                    .with_data(json!({"expectedRevision": expected, "currentRevision": actual}))
            }
            UpdateContactError::Empty => {
                WixError::application(400, "INSUFFICIENT_CONTACT_DATA", text)
            }
            UpdateContactError::MemberPrimaryEmail { member, .. } => {
                WixError::application(403, "CANNOT_UPDATE_MEMBER_EMAIL", text)
                    .with_data(json!({"memberId": member.to_string()}))
            }
            UpdateContactError::Data(e) => e.into(),
        }
    }
}

impl From<RevertMergeError> for WixError {
    fn from(e: RevertMergeError) -> Self {
        let text = e.to_string();
        match e {
            RevertMergeError::NotMerged(c) => {
                WixError::application(409, "CONVERSATION_NOT_MERGED", text)
                    .with_data(json!({"conversationId": c.to_string()}))
            }
            RevertMergeError::AlreadyReverted {
                target,
                merged_at,
                reverted_at,
                ..
            } => WixError::application(409, "MERGE_ALREADY_REVERTED", text).with_data(json!({
                "targetConversationId": target.to_string(),
                "mergedAt": merged_at.0.to_string(),
                "revertedAt": reverted_at.0.to_string(),
            })),
            RevertMergeError::LaterMergeDepends {
                target,
                later_target,
                later_at,
                ..
            } => WixError::application(409, "LATER_MERGE_DEPENDS", text).with_data(json!({
                "targetConversationId": target.to_string(),
                "laterTargetConversationId": later_target.to_string(),
                "laterMergedAt": later_at.0.to_string(),
            })),
            RevertMergeError::SamePerson { target, .. } => {
                WixError::application(409, "MERGE_FOLLOWS_FROM_IDENTITY", text)
                    .with_data(json!({"targetConversationId": target.to_string()}))
            }
        }
    }
}

impl From<CatalogError> for WixError {
    fn from(e: CatalogError) -> Self {
        let text = e.to_string();
        let code = |kind: CatalogKind, label: &'static str, field: &'static str| match kind {
            CatalogKind::Label => label,
            CatalogKind::ExtendedField => field,
        };
        match e {
            CatalogError::InvalidName { .. } => {
                WixError::invalid(FieldViolation::new("displayName", text, Rule::Format))
            }
            CatalogError::NotFound { kind, key } => WixError::application(
                404,
                code(kind, "LABEL_NOT_FOUND", "EXTENDED_FIELD_NOT_FOUND"),
                text,
            )
            .with_data(json!({"key": key})),
            CatalogError::ReadOnly { kind, key } => WixError::application(
                400,
                code(kind, "LABEL_NOT_CUSTOM", "EXTENDED_FIELD_NOT_CUSTOM"),
                text,
            )
            .with_data(json!({"key": key})),
            CatalogError::NameTaken { kind, name, key } => WixError::application(
                409,
                code(kind, "LABEL_NAME_TAKEN", "EXTENDED_FIELD_NAME_TAKEN"),
                text,
            )
            .with_data(json!({"displayName": name, "key": key})),
            CatalogError::QuotaReached {
                kind: CatalogKind::Label,
                quota,
            } => WixError::application(400, "LABELS_QUOTA_REACHED", text).with_data(
                json!({"labelsQuota": quota.to_string(), "labelsCurrentTotal": quota.to_string()}),
            ),
            CatalogError::QuotaReached {
                kind: CatalogKind::ExtendedField,
                quota,
            } => WixError::application(400, "FIELDS_QUOTA_EXCEEDED", text)
                .with_data(json!({"fieldsQuota": quota.to_string()})),
        }
    }
}

impl From<LabelContactError> for WixError {
    fn from(e: LabelContactError) -> Self {
        let text = e.to_string();
        match e {
            LabelContactError::NotFound(id) => {
                WixError::application(404, "CONTACT_NOT_FOUND", text)
                    .with_data(json!({"contactId": id.to_string()}))
            }
            LabelContactError::Count(n) => WixError::invalid(
                FieldViolation::new(
                    "labelKeys",
                    text,
                    if n == 0 { Rule::MinSize } else { Rule::MaxSize },
                )
                .named(
                    "LABEL_KEY_COUNT",
                    json!({"min": 1, "max": MAX_LABELS_PER_CHANGE}),
                ),
            ),
            LabelContactError::InvalidKey { .. } => {
                WixError::invalid(FieldViolation::new("labelKeys", text, Rule::Format))
            }
            LabelContactError::UnknownLabel(key) => {
                WixError::application(404, "LABEL_NOT_FOUND", text)
                    .with_data(json!({"labelKey": key}))
            }
        }
    }
}

impl From<DeleteContactError> for WixError {
    fn from(e: DeleteContactError) -> Self {
        let text = e.to_string();
        match e {
            DeleteContactError::NotFound(id) => {
                WixError::application(404, "CONTACT_NOT_FOUND", text)
                    .with_data(json!({"contactId": id.to_string()}))
            }
            DeleteContactError::IsMember { member, .. } => {
                WixError::application(400, "CANNOT_DELETE_MEMBER", text)
                    .with_data(json!({"memberId": member.to_string()}))
            }
        }
    }
}

impl From<MergeContactsError> for WixError {
    fn from(e: MergeContactsError) -> Self {
        let text = e.to_string();
        match e {
            MergeContactsError::TargetNotFound(id) | MergeContactsError::SourceNotFound(id) => {
                WixError::application(404, "CONTACT_NOT_FOUND", text)
                    .with_data(json!({"contactId": id.to_string()}))
            }
            MergeContactsError::SourceCount(_) => WixError::invalid(
                FieldViolation::new("sourceContactIds", text, Rule::MaxSize).named(
                    "SOURCE_CONTACT_COUNT",
                    json!({"min": 1, "max": MAX_MERGE_SOURCES}),
                ),
            ),
            MergeContactsError::SourceIsTarget(id) => {
                WixError::application(400, "ILLEGAL_MERGE", text)
                    .with_data(json!({"reason": "SOURCE_IS_TARGET", "contactId": id.to_string()}))
            }
            MergeContactsError::DuplicateSource(id) => {
                WixError::application(400, "ILLEGAL_MERGE", text)
                    .with_data(json!({"reason": "DUPLICATE_SOURCE", "contactId": id.to_string()}))
            }
            MergeContactsError::SourceIsMember(id) => {
                WixError::application(400, "ILLEGAL_MERGE", text)
                    .with_data(json!({"reason": "SOURCE_IS_MEMBER", "contactId": id.to_string()}))
            }
            MergeContactsError::RevisionConflict { expected, actual } => {
                WixError::application(428, "FAILED_PRECONDITION", text)
                    .with_data(json!({"expectedRevision": expected, "currentRevision": actual}))
            }
        }
    }
}

impl From<Rejection> for WixError {
    fn from(r: Rejection) -> Self {
        let text = r.to_string();
        match r {
            Rejection::ConversationNotFound(_) => {
                WixError::application(404, "CONVERSATION_NOT_FOUND", text)
            }
            Rejection::InvalidMessage(m) => m.into(),
            Rejection::ContactNotFound(_) => WixError::application(404, "CONTACT_NOT_FOUND", text),
            Rejection::MemberNotFound(_) => WixError::application(404, "MEMBER_NOT_FOUND", text),
            Rejection::CreateContact(e) => e.into(),
            Rejection::MergeContacts(e) => e.into(),
            Rejection::UpdateContact(e) => e.into(),
            Rejection::LabelContact(e) => e.into(),
            Rejection::DeleteContact(e) => e.into(),
            Rejection::Catalog(e) => e.into(),
            Rejection::RevertMerge(e) => e.into(),
            Rejection::VisitorAlreadyIdentified { .. } => {
                WixError::application(409, "VISITOR_ALREADY_IDENTIFIED", text)
            }
            Rejection::MemberAlreadyExists { .. } => {
                WixError::application(409, "MEMBER_ALREADY_EXISTS", text)
            }
            Rejection::ContactAlreadyMember { .. } => {
                WixError::application(409, "CONTACT_ALREADY_MEMBER", text)
            }
            Rejection::MessageNotFound { .. } => {
                WixError::application(404, "MESSAGE_NOT_FOUND", text)
            }
            Rejection::InteractionNotFound { .. } => {
                WixError::application(404, "INTERACTION_NOT_FOUND", text)
            }
            Rejection::ClockExhausted => {
                WixError::application(409, "SEQUENCE_CLOCK_EXHAUSTED", text)
            }
        }
    }
}

impl From<GetConversationError> for WixError {
    fn from(e: GetConversationError) -> Self {
        match e {
            GetConversationError::NotFound(_) => {
                WixError::application(404, "CONVERSATION_NOT_FOUND", e.to_string())
            }
        }
    }
}

impl From<ListMessagesError> for WixError {
    fn from(e: ListMessagesError) -> Self {
        let text = e.to_string();
        match e {
            ListMessagesError::ConversationNotFound(_) => {
                WixError::application(404, "CONVERSATION_NOT_FOUND", text)
            }
            ListMessagesError::IllegalLimit(n) => WixError::invalid(
                FieldViolation::new(
                    "paging.limit",
                    text,
                    if n == 0 { Rule::Min } else { Rule::Max },
                )
                .named("PAGING_LIMIT", json!({"min": 1, "max": MAX_PAGE_LIMIT})),
            ),
            ListMessagesError::Cursor(c) => c.into(),
        }
    }
}

impl From<CursorError> for WixError {
    fn from(e: CursorError) -> Self {
        WixError::application(400, "INVALID_CURSOR", e.to_string())
    }
}

impl From<crate::contacts_query::QueryError> for WixError {
    fn from(e: crate::contacts_query::QueryError) -> Self {
        WixError::application(400, e.code(), e.to_string())
    }
}

/// A serde error with the path of the field that failed, as a validation error.
impl From<serde_path_to_error::Error<serde_json::Error>> for WixError {
    fn from(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        let text = inner.to_string();
        let rule = if text.contains("unknown variant") {
            Rule::InvalidEnumValue
        } else if text.contains("missing field") {
            Rule::RequiredField
        } else {
            Rule::Format
        };
        let description = if path.is_empty() {
            text
        } else {
            format!("{path}: {text}")
        };
        WixError::invalid(FieldViolation::new(path, description, rule))
    }
}
