//! The site's contact list: what the example flows need from Contacts v4.
//!
//! Contacts are found by email ("Query Contacts" in the example flows), created with a
//! duplicate check, and merged. A merged-away contact keeps an alias to its target, so any id
//! a participant ever had still resolves.
//!
//! Convergence: every change carries the contact's resulting `revision`, and the directory
//! keeps the highest revision it has seen, so applying a change twice, or late, is harmless.

use std::collections::{BTreeMap, BTreeSet};

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::catalog::Catalog;
use crate::ids::{ContactId, Timestamp};

/// Most contacts a query page returns.
pub const MAX_QUERY_LIMIT: usize = 1000;
/// Contacts a query page returns when no limit is given.
pub const DEFAULT_QUERY_LIMIT: usize = 50;
/// Most source contacts of one merge.
pub const MAX_MERGE_SOURCES: usize = 5;

/// A contact's name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContactName {
    /// First name.
    pub first: Option<String>,
    /// Last name.
    pub last: Option<String>,
}

impl ContactName {
    fn is_empty(&self) -> bool {
        self.first.as_deref().is_none_or(str::is_empty)
            && self.last.as_deref().is_none_or(str::is_empty)
    }

    /// "First Last", or whichever part there is.
    pub fn display(&self) -> Option<String> {
        let parts: Vec<&str> = [self.first.as_deref(), self.last.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// The tag of an email or phone entry.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum EntryTag {
    /// `UNTAGGED`.
    #[default]
    Untagged,
    /// `MAIN`.
    Main,
    /// `HOME`.
    Home,
    /// `WORK`.
    Work,
    /// `MOBILE` (phones).
    Mobile,
    /// `FAX` (phones).
    Fax,
}

/// One email of a contact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContactEmail {
    /// The address, as given.
    pub email: String,
    /// Its tag.
    pub tag: EntryTag,
    /// Whether it is the primary email (exactly one is, when there are any).
    pub primary: bool,
}

/// One phone number of a contact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContactPhone {
    /// The number, as given.
    pub phone: String,
    /// Its tag.
    pub tag: EntryTag,
    /// Whether it is the primary phone.
    pub primary: bool,
}

/// A contact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Contact {
    /// Its id.
    pub id: ContactId,
    /// 1 at creation, +1 on every change.
    pub revision: u64,
    /// When it was created.
    pub created_date: Timestamp,
    /// When it last changed.
    pub updated_date: Timestamp,
    /// Name.
    pub name: ContactName,
    /// Emails.
    pub emails: Vec<ContactEmail>,
    /// Phones.
    pub phones: Vec<ContactPhone>,
    /// Everything else a caller can set: addresses, company, labels, extended fields.
    pub details: ContactDetails,
    /// Where the contact came from (set at creation, never changed).
    pub source: ContactSource,
    /// The contact's last activity on the site that the engine records.
    pub last_activity: ContactActivity,
}

impl Contact {
    /// An empty contact at revision 1, created (and last active) at `now`, from an unknown
    /// source: the starting point for building one by hand, in tests or for an observed
    /// contact.
    pub fn new(id: ContactId, now: Timestamp) -> Self {
        Contact {
            id,
            revision: 1,
            created_date: now,
            updated_date: now,
            name: ContactName::default(),
            emails: Vec::new(),
            phones: Vec::new(),
            details: ContactDetails::default(),
            source: ContactSource::default(),
            last_activity: ContactActivity {
                at: now,
                kind: ActivityType::ContactCreated,
            },
        }
    }

    /// Whether the contact holds nothing to reach or name someone by (no name, email or
    /// phone): Wix refuses to create, or update a contact into, such a record.
    pub fn is_insufficient(&self) -> bool {
        self.name.is_empty() && self.emails.is_empty() && self.phones.is_empty()
    }

    /// A stable id for one of the contact's entries (`kind` 0 email, 1 phone, 2 address;
    /// `value` its normalised content): the same entry keeps its id across revisions, and
    /// the id is derived, not stored, so old events need no upcast for it.
    fn entry_id(&self, kind: u8, value: &str) -> uuid::Uuid {
        let mut data = Vec::with_capacity(17 + value.len());
        data.extend_from_slice(self.id.as_uuid().as_bytes());
        data.push(kind);
        data.extend_from_slice(value.as_bytes());
        let hi = crate::cursor::siphash24(&[0x45; 16], &data);
        let lo = crate::cursor::siphash24(&[0x4e; 16], &data);
        // A version-4-shaped UUID (the variant and version bits set), as Wix's ids are.
        let bits =
            ((u128::from(hi) << 64) | u128::from(lo)) & !(0xF000_u128 << 64) & !(0xC0_u128 << 56);
        uuid::Uuid::from_u128(bits | (0x4000_u128 << 64) | (0x80_u128 << 56))
    }

    /// The id of an email entry (derived from the contact and the normalised address).
    pub fn email_id(&self, email: &ContactEmail) -> uuid::Uuid {
        self.entry_id(0, &normalize_email(&email.email))
    }

    /// The id of a phone entry (derived from the contact and the number's digits).
    pub fn phone_id(&self, phone: &ContactPhone) -> uuid::Uuid {
        self.entry_id(1, &normalize_phone(&phone.phone))
    }

    /// The id of an address entry (derived from the contact and the address's position and
    /// content).
    pub fn address_id(&self, index: usize, address: &ContactAddress) -> uuid::Uuid {
        self.entry_id(2, &format!("{index}:{address:?}"))
    }
    /// The primary email, if any.
    pub fn primary_email(&self) -> Option<&str> {
        self.emails
            .iter()
            .find(|e| e.primary)
            .or(self.emails.first())
            .map(|e| e.email.as_str())
    }

    /// The primary phone, if any.
    pub fn primary_phone(&self) -> Option<&str> {
        self.phones
            .iter()
            .find(|p| p.primary)
            .or(self.phones.first())
            .map(|p| p.phone.as_str())
    }
}

/// The tag of a street address.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum AddressTag {
    /// `UNTAGGED`.
    #[default]
    Untagged,
    /// `HOME`.
    Home,
    /// `WORK`.
    Work,
    /// `BILLING`.
    Billing,
    /// `SHIPPING`.
    Shipping,
}

/// A postal address, as Wix splits it. Every part is optional; an address with no part
/// set is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PostalAddress {
    /// ISO-3166 alpha-2 country code.
    pub country: Option<String>,
    /// Subdivision code (state, region), e.g. `US-NY`.
    pub subdivision: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Postal or zip code.
    pub postal_code: Option<String>,
    /// The free-form first line (when no street number and name are given).
    pub address_line: Option<String>,
    /// Street number, when the street is given in parts.
    pub street_number: Option<String>,
    /// Street name, when the street is given in parts.
    pub street_name: Option<String>,
    /// Apartment, suite, floor.
    pub address_line2: Option<String>,
}

impl PostalAddress {
    fn parts(&self) -> [&Option<String>; 8] {
        [
            &self.country,
            &self.subdivision,
            &self.city,
            &self.postal_code,
            &self.address_line,
            &self.street_number,
            &self.street_name,
            &self.address_line2,
        ]
    }
}

/// One street address of a contact.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContactAddress {
    /// Its tag.
    pub tag: AddressTag,
    /// The address.
    pub address: PostalAddress,
}

/// The value of an extended field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExtendedValue {
    /// Text (Wix's `TEXT`, `URL` and `DATE` fields all hold strings).
    Text(String),
    /// A finite number, kept as the decimal text it was given in, so that it round-trips
    /// exactly and the value stays `Eq`.
    Number(String),
}

/// What a contact holds beyond its name, emails and phones. All of it is the caller's to
/// set (on creation and by Update Contact); labels also by Label and Unlabel Contact.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContactDetails {
    /// Street addresses (at most 50).
    pub addresses: Vec<ContactAddress>,
    /// Company name.
    pub company: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Birth date, `YYYY-MM-DD`.
    pub birthdate: Option<String>,
    /// BCP 47 language tag, e.g. `en-US`.
    pub locale: Option<String>,
    /// Profile picture URL.
    pub picture: Option<String>,
    /// Label keys (`namespace.key`, e.g. `custom.vip`), at most 100 per change.
    pub labels: BTreeSet<String>,
    /// Extended fields by key (`custom.*`; other namespaces are Wix's and read-only).
    pub extended_fields: BTreeMap<String, ExtendedValue>,
}

/// Where a contact came from: Wix's `source.sourceType`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[allow(missing_docs)] // each variant is the Wix enum value of the same name
pub enum SourceType {
    #[default]
    Other,
    Admin,
    WixApp,
    Import,
    ThirdParty,
    WixBookings,
    WixChat,
    WixEmailMarketing,
    WixEvents,
    WixForms,
    WixGroups,
    WixHotels,
    WixMarketPlace,
    WixMusic,
    WixRestaurants,
    WixSiteMembers,
    WixStores,
    WixCode,
    Hopp,
}

/// A contact's source: what created it, and the app when an app did.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ContactSource {
    /// The kind of source.
    pub source_type: SourceType,
    /// The app that created the contact (for `WixApp` and Wix's own apps).
    pub app_id: Option<crate::ids::AppId>,
}

/// A kind of contact activity: Wix's `lastActivity.activityType`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActivityType {
    /// `CONTACT_CREATED`: what the engine records at creation.
    ContactCreated,
    /// `CONTACT_MERGED`: what the engine records on a merge's target.
    ContactMerged,
    /// Any other of Wix's activity types (an observed contact's), by its Wix name.
    Other(String),
}

/// The last activity of a contact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContactActivity {
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: ActivityType,
}

/// What a caller gives to create a contact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactDraft {
    /// Name.
    pub name: ContactName,
    /// Emails; the first is primary unless one says so.
    pub emails: Vec<ContactEmail>,
    /// Phones; the first is primary unless one says so.
    pub phones: Vec<ContactPhone>,
    /// Addresses, company, labels and the rest.
    pub details: ContactDetails,
    /// Where it comes from (the emulator derives it from the caller).
    pub source: ContactSource,
    /// Allow an email or phone that another contact already has.
    pub allow_duplicates: bool,
}

/// Update Contact's change: each field given replaces the contact's (a list is replaced
/// whole; `Some(None)` clears a single value), fields not given stay. Extended fields are
/// changed key by key (`None` removes the key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPatch {
    /// Name.
    pub name: Option<ContactName>,
    /// Emails (the first is primary unless one says so).
    pub emails: Option<Vec<ContactEmail>>,
    /// Phones.
    pub phones: Option<Vec<ContactPhone>>,
    /// Addresses.
    pub addresses: Option<Vec<ContactAddress>>,
    /// Company.
    pub company: Option<Option<String>>,
    /// Job title.
    pub job_title: Option<Option<String>>,
    /// Birth date.
    pub birthdate: Option<Option<String>>,
    /// Locale.
    pub locale: Option<Option<String>>,
    /// Picture URL.
    pub picture: Option<Option<String>>,
    /// Label keys.
    pub labels: Option<BTreeSet<String>>,
    /// Extended fields to set (`Some`) or remove (`None`).
    pub extended_fields: BTreeMap<String, Option<ExtendedValue>>,
}

/// Why a contact could not be created.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CreateContactError {
    /// A contact needs a name, an email or a phone.
    #[error("a contact needs at least a name, an email or a phone")]
    Empty,
    /// The id is taken.
    #[error("contact {0} already exists")]
    AlreadyExists(ContactId),
    /// A field of the contact is refused.
    #[error(transparent)]
    Data(#[from] ContactDataError),
}

/// Why a contact could not be updated. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UpdateContactError {
    /// No live contact has this id.
    #[error("contact {0} not found")]
    NotFound(ContactId),
    /// The caller's revision is stale.
    #[error("contact revision is {actual}, but the request expected {expected}")]
    RevisionConflict {
        /// The revision the caller had.
        expected: u64,
        /// The revision the contact has.
        actual: u64,
    },
    /// The update would leave no name, email or phone.
    #[error("a contact needs at least a name, an email or a phone")]
    Empty,
    /// The contact is a site member: its primary email is the member's login email, which
    /// only the Members API changes.
    #[error("contact {contact} is member {member}: its primary email cannot be changed here")]
    MemberPrimaryEmail {
        /// The contact.
        contact: ContactId,
        /// Its member.
        member: crate::ids::MemberId,
    },
    /// A field the update sets is refused.
    #[error(transparent)]
    Data(#[from] ContactDataError),
}

/// A field of a contact that Create or Update Contact refuses.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ContactDataError {
    /// An email that is not an address.
    #[error("invalid email address {0:?}")]
    InvalidEmail(String),
    /// A phone number with no digits.
    #[error("invalid phone number {0:?}")]
    InvalidPhone(String),
    /// The email belongs to another contact and duplicates are not allowed.
    #[error("email {email:?} already belongs to contact {existing}")]
    DuplicateEmail {
        /// The email.
        email: String,
        /// The contact that has it.
        existing: ContactId,
    },
    /// The phone belongs to another contact and duplicates are not allowed.
    #[error("phone {phone:?} already belongs to contact {existing}")]
    DuplicatePhone {
        /// The phone.
        phone: String,
        /// The contact that has it.
        existing: ContactId,
    },
    /// A field breaks its rule (too long, badly formed, too many entries).
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field, as Wix names it (`info.company`, `info.labelKeys`).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A `custom` label the site's catalog does not define (Find Or Create Label makes one).
    #[error("label {0:?} does not exist on this site")]
    UnknownLabel(String),
    /// An extended field the site's catalog does not define (Find Or Create Extended Field
    /// makes one).
    #[error("extended field {0:?} does not exist on this site")]
    UnknownExtendedField(String),
    /// A value that does not fit its extended field's data type.
    #[error("invalid extended field value: {reason}")]
    InvalidExtendedField {
        /// The field's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why labels could not be added to or removed from a contact. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LabelContactError {
    /// No live contact has this id.
    #[error("contact {0} not found")]
    NotFound(ContactId),
    /// No label key was given, or more than [`MAX_LABELS_PER_CHANGE`].
    #[error("a label change takes 1 to {MAX_LABELS_PER_CHANGE} keys; got {0}")]
    Count(usize),
    /// A key that is not `namespace.key`.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A `custom` label the site's catalog does not define.
    #[error("label {0:?} does not exist on this site")]
    UnknownLabel(String),
}

/// Why a contact could not be deleted. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DeleteContactError {
    /// No live contact has this id (never created, merged away, or deleted already).
    #[error("contact {0} not found")]
    NotFound(ContactId),
    /// The contact is a site member; the member must be deleted first.
    #[error("contact {contact} is site member {member} and cannot be deleted")]
    IsMember {
        /// The contact.
        contact: ContactId,
        /// Its member.
        member: crate::ids::MemberId,
    },
}

/// Most label keys one Label or Unlabel Contact call takes.
pub const MAX_LABELS_PER_CHANGE: usize = 100;
/// Most emails, phones or addresses a contact holds.
pub const MAX_ENTRIES: usize = 50;
/// Longest name part, company or job title, in characters.
pub const MAX_TEXT: usize = 1000;

fn invalid(field: &'static str, reason: impl Into<String>) -> ContactDataError {
    ContactDataError::InvalidField {
        field,
        reason: reason.into(),
    }
}

fn check_text(field: &'static str, value: Option<&str>) -> Result<(), ContactDataError> {
    match value {
        Some(v) if v.chars().count() > MAX_TEXT => {
            Err(invalid(field, format!("longer than {MAX_TEXT} characters")))
        }
        Some(v) if v.contains(char::is_control) => {
            Err(invalid(field, "contains a control character"))
        }
        _ => Ok(()),
    }
}

/// A label key: `namespace.key`, each part non-empty, no whitespace or control character,
/// at most 200 characters.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let Some((namespace, name)) = key.split_once('.') else {
        return Err("a label key is namespace.key, e.g. custom.vip".into());
    };
    if namespace.is_empty() || name.is_empty() {
        return Err("the namespace and the key must not be empty".into());
    }
    if key.chars().count() > 200 {
        return Err("longer than 200 characters".into());
    }
    if key.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or a control character".into());
    }
    Ok(())
}

/// `YYYY-MM-DD`, a real date.
fn valid_birthdate(s: &str) -> bool {
    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// A BCP 47 tag in its common shape: a 2-3 letter language, then up to four subtags of 1-8
/// letters or digits (`en`, `en-US`, `zh-Hant-TW`).
fn valid_locale(s: &str) -> bool {
    let mut parts = s.split('-');
    let lang_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()));
    let rest: Vec<&str> = parts.collect();
    lang_ok
        && rest.len() <= 4
        && rest
            .iter()
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn check_details(d: &ContactDetails) -> Result<(), ContactDataError> {
    if d.addresses.len() > MAX_ENTRIES {
        return Err(invalid(
            "info.addresses",
            format!("at most {MAX_ENTRIES} addresses"),
        ));
    }
    for a in &d.addresses {
        let parts = a.address.parts();
        if parts.iter().all(|p| p.as_deref().is_none_or(str::is_empty)) {
            return Err(invalid("info.addresses", "an address with no part set"));
        }
        for p in parts {
            check_text("info.addresses", p.as_deref())?;
        }
        if let Some(c) = &a.address.country
            && !(c.len() == 2 && c.chars().all(|c| c.is_ascii_uppercase()))
        {
            return Err(invalid(
                "info.addresses.address.country",
                format!("{c:?} is not an ISO-3166 alpha-2 code"),
            ));
        }
    }
    check_text("info.company", d.company.as_deref())?;
    check_text("info.jobTitle", d.job_title.as_deref())?;
    if let Some(b) = &d.birthdate
        && !valid_birthdate(b)
    {
        return Err(invalid(
            "info.birthdate",
            format!("{b:?} is not a YYYY-MM-DD date"),
        ));
    }
    if let Some(l) = &d.locale
        && !valid_locale(l)
    {
        return Err(invalid(
            "info.locale",
            format!("{l:?} is not a language tag"),
        ));
    }
    if let Some(p) = &d.picture
        && (p.is_empty()
            || p.len() > 2048
            || p.contains(|c: char| c.is_whitespace() || c.is_control()))
    {
        return Err(invalid("info.picture", "not a URL"));
    }
    for key in &d.labels {
        check_label_key(key).map_err(|reason| invalid("info.labelKeys", reason))?;
    }
    for (key, value) in &d.extended_fields {
        let ok_key = key.strip_prefix("custom.").is_some_and(|k| {
            !k.is_empty() && !k.contains(|c: char| c.is_whitespace() || c.is_control())
        });
        if !ok_key {
            return Err(invalid(
                "info.extendedFields",
                format!("{key:?}: only custom.* fields can be set"),
            ));
        }
        match value {
            ExtendedValue::Text(t) => check_text("info.extendedFields", Some(t))?,
            ExtendedValue::Number(n) => {
                if !n.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(invalid(
                        "info.extendedFields",
                        format!("{key:?}: {n:?} is not a finite number"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Why contacts could not be merged (or a merge previewed).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MergeContactsError {
    /// The target does not exist (or was itself merged away).
    #[error("target contact {0} not found")]
    TargetNotFound(ContactId),
    /// A source does not exist.
    #[error("source contact {0} not found")]
    SourceNotFound(ContactId),
    /// 1 to 5 sources are required.
    #[error("a merge takes 1 to {MAX_MERGE_SOURCES} source contacts; got {0}")]
    SourceCount(usize),
    /// The target is among the sources.
    #[error("contact {0} cannot be merged into itself")]
    SourceIsTarget(ContactId),
    /// A source is listed twice.
    #[error("source contact {0} is listed twice")]
    DuplicateSource(ContactId),
    /// A source is a site member; members cannot be merged away.
    #[error("source contact {0} is a site member and cannot be merged away")]
    SourceIsMember(ContactId),
    /// The caller's revision of the target is stale.
    #[error("target contact revision is {actual}, but the request expected {expected}")]
    RevisionConflict {
        /// The revision the caller had.
        expected: u64,
        /// The revision the target has.
        actual: u64,
    },
}

/// A contact field a query filters on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ContactField {
    /// `id`.
    Id,
    /// `info.emails.email`: matches when any email matches.
    Email,
    /// `primaryInfo.email`.
    PrimaryEmail,
    /// `primaryInfo.phone`.
    PrimaryPhone,
    /// `info.name.first`.
    FirstName,
    /// `info.name.last`.
    LastName,
    /// `createdDate`.
    CreatedDate,
    /// `updatedDate`.
    UpdatedDate,
    /// `info.company`.
    Company,
    /// `info.jobTitle`.
    JobTitle,
    /// `info.locale`.
    Locale,
    /// `info.birthdate` (text `YYYY-MM-DD`, which orders as the dates do).
    Birthdate,
    /// `lastActivity.activityDate`.
    LastActivityDate,
    /// `info.labelKeys`: matches by the contact's set of label keys.
    Labels,
}

/// A value a filter compares with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FilterValue {
    /// Text (ids, emails, names, phones). Emails compare case-insensitively.
    Text(String),
    /// A point in time.
    Time(Timestamp),
}

/// A condition on one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// `$eq`.
    Eq(FilterValue),
    /// `$ne`.
    Ne(FilterValue),
    /// `$in`.
    In(Vec<FilterValue>),
    /// `$hasSome`: any of the values (same as `$in` for single-valued fields).
    HasSome(Vec<FilterValue>),
    /// `$hasAll`: every one of the values (label keys only).
    HasAll(Vec<FilterValue>),
    /// `$exists`.
    Exists(bool),
    /// `$startsWith`, case-insensitive.
    StartsWith(String),
    /// `$gt`.
    Gt(FilterValue),
    /// `$gte`.
    Gte(FilterValue),
    /// `$lt`.
    Lt(FilterValue),
    /// `$lte`.
    Lte(FilterValue),
}

/// A contacts filter (the Wix query language, parsed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContactFilter {
    /// Every contact.
    All,
    /// One field.
    Field(ContactField, Condition),
    /// All must hold.
    And(Vec<ContactFilter>),
    /// One must hold.
    Or(Vec<ContactFilter>),
    /// Must not hold.
    Not(Box<ContactFilter>),
}

/// Sort direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortOrder {
    /// Ascending.
    Asc,
    /// Descending.
    #[default]
    Desc,
}

/// A field contacts can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContactSortField {
    /// `createdDate`.
    CreatedDate,
    /// `updatedDate`.
    UpdatedDate,
    /// `info.name.first`.
    FirstName,
    /// `info.name.last`.
    LastName,
    /// `primaryInfo.email`.
    PrimaryEmail,
    /// `info.company`.
    Company,
    /// `info.jobTitle`.
    JobTitle,
    /// `info.birthdate` (`YYYY-MM-DD` sorts as text in date order).
    Birthdate,
    /// `lastActivity.activityDate`.
    LastActivity,
    /// `id`.
    Id,
}

/// Parts of a contact a query can return; `id` and `revision` always come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContactPart {
    /// `info.name`.
    Name,
    /// `info.emails`.
    Emails,
    /// `info.phones`.
    Phones,
    /// `primaryInfo`.
    PrimaryInfo,
    /// `createdDate`.
    CreatedDate,
    /// `updatedDate`.
    UpdatedDate,
    /// `info.addresses`.
    Addresses,
    /// `info.company`.
    Company,
    /// `info.jobTitle`.
    JobTitle,
    /// `info.birthdate`.
    Birthdate,
    /// `info.locale`.
    Locale,
    /// `info.picture`.
    Picture,
    /// `info.labelKeys`.
    Labels,
    /// `info.extendedFields`.
    ExtendedFields,
    /// `source`.
    Source,
    /// `lastActivity`.
    LastActivity,
}

impl ContactPart {
    /// Every part.
    pub const ALL: [ContactPart; 16] = [
        ContactPart::Name,
        ContactPart::Emails,
        ContactPart::Phones,
        ContactPart::PrimaryInfo,
        ContactPart::CreatedDate,
        ContactPart::UpdatedDate,
        ContactPart::Addresses,
        ContactPart::Company,
        ContactPart::JobTitle,
        ContactPart::Birthdate,
        ContactPart::Locale,
        ContactPart::Picture,
        ContactPart::Labels,
        ContactPart::ExtendedFields,
        ContactPart::Source,
        ContactPart::LastActivity,
    ];

    /// The parts held in [`ContactDetails`].
    pub const DETAILS: [ContactPart; 8] = [
        ContactPart::Addresses,
        ContactPart::Company,
        ContactPart::JobTitle,
        ContactPart::Birthdate,
        ContactPart::Locale,
        ContactPart::Picture,
        ContactPart::Labels,
        ContactPart::ExtendedFields,
    ];
}

/// A query of the contact list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactQuery {
    /// Which contacts.
    pub filter: ContactFilter,
    /// Order; default `createdDate` descending. Ties are broken by id.
    pub sort: Vec<(ContactSortField, SortOrder)>,
    /// Parts to return; `None` returns every part.
    pub parts: Option<Vec<ContactPart>>,
    /// Contacts to skip.
    pub offset: usize,
    /// Page size: default 50, at most 1000.
    pub limit: Option<usize>,
}

impl Default for ContactQuery {
    fn default() -> Self {
        ContactQuery {
            filter: ContactFilter::All,
            sort: Vec::new(),
            parts: None,
            offset: 0,
            limit: None,
        }
    }
}

impl ContactQuery {
    /// Contacts having this email (case-insensitive), returning only ids — the query of the
    /// example flows.
    pub fn by_email(email: &str) -> Self {
        ContactQuery {
            filter: ContactFilter::Field(
                ContactField::Email,
                Condition::Eq(FilterValue::Text(email.to_owned())),
            ),
            parts: Some(Vec::new()),
            ..ContactQuery::default()
        }
    }
}

/// Why a query was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum QueryContactsError {
    /// Limit 0 or above 1000.
    #[error("limit must be 1 to {MAX_QUERY_LIMIT}; got {0}")]
    IllegalLimit(usize),
    /// A condition that makes no sense for the field (e.g. `$startsWith` on a date).
    #[error("condition {condition} is not supported on field {field:?}")]
    UnsupportedFilter {
        /// The field.
        field: ContactField,
        /// The condition's operator.
        condition: &'static str,
    },
}

/// A contact as a query returns it: the parts that were not asked for are `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactView {
    /// Always there.
    pub id: ContactId,
    /// Always there.
    pub revision: u64,
    /// `createdDate`.
    pub created_date: Option<Timestamp>,
    /// `updatedDate`.
    pub updated_date: Option<Timestamp>,
    /// `info.name`.
    pub name: Option<ContactName>,
    /// `info.emails`.
    pub emails: Option<Vec<ContactEmail>>,
    /// `info.phones`.
    pub phones: Option<Vec<ContactPhone>>,
    /// `primaryInfo`: (email, phone).
    pub primary_info: Option<(Option<String>, Option<String>)>,
    /// The details, when any detail part was asked for; the parts not asked for are left
    /// empty (see [`ContactView::wants`]).
    pub details: Option<ContactDetails>,
    /// `source`.
    pub source: Option<ContactSource>,
    /// `lastActivity`.
    pub last_activity: Option<ContactActivity>,
    /// The parts asked for; `None` is every part.
    pub parts: Option<Vec<ContactPart>>,
    /// The ids of the entries the view holds (ids are not a part: they come with their
    /// entries).
    pub entry_ids: EntryIds,
}

/// The ids of a contact's emails, phones and addresses, in their order (derived, see
/// [`Contact::email_id`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryIds {
    /// One per email.
    pub emails: Vec<uuid::Uuid>,
    /// One per phone.
    pub phones: Vec<uuid::Uuid>,
    /// One per address.
    pub addresses: Vec<uuid::Uuid>,
}

impl EntryIds {
    /// The ids of `c`'s entries of the parts `want` holds (no id is derived for a part a
    /// projection leaves out).
    pub fn of(c: &Contact, want: impl Fn(ContactPart) -> bool) -> Self {
        EntryIds {
            emails: if want(ContactPart::Emails) {
                c.emails.iter().map(|e| c.email_id(e)).collect()
            } else {
                Vec::new()
            },
            phones: if want(ContactPart::Phones) {
                c.phones.iter().map(|p| c.phone_id(p)).collect()
            } else {
                Vec::new()
            },
            addresses: if want(ContactPart::Addresses) {
                c.details
                    .addresses
                    .iter()
                    .enumerate()
                    .map(|(i, a)| c.address_id(i, a))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

impl ContactView {
    /// The whole contact.
    pub fn full(c: &Contact) -> Self {
        Self::projected(c, None)
    }

    /// Whether the view holds `part` (it was asked for, or every part was).
    pub fn wants(&self, part: ContactPart) -> bool {
        self.parts.as_ref().is_none_or(|ps| ps.contains(&part))
    }

    /// The contact with only `parts` (all of them for `None`), as a query projects it.
    pub fn projected(c: &Contact, parts: Option<&[ContactPart]>) -> Self {
        let want = |p: ContactPart| parts.is_none_or(|ps| ps.contains(&p));
        let details = ContactPart::DETAILS.iter().any(|p| want(*p)).then(|| {
            let d = &c.details;
            let keep = |p: ContactPart, v: &Option<String>| if want(p) { v.clone() } else { None };
            ContactDetails {
                addresses: if want(ContactPart::Addresses) {
                    d.addresses.clone()
                } else {
                    Vec::new()
                },
                company: keep(ContactPart::Company, &d.company),
                job_title: keep(ContactPart::JobTitle, &d.job_title),
                birthdate: keep(ContactPart::Birthdate, &d.birthdate),
                locale: keep(ContactPart::Locale, &d.locale),
                picture: keep(ContactPart::Picture, &d.picture),
                labels: if want(ContactPart::Labels) {
                    d.labels.clone()
                } else {
                    BTreeSet::new()
                },
                extended_fields: if want(ContactPart::ExtendedFields) {
                    d.extended_fields.clone()
                } else {
                    BTreeMap::new()
                },
            }
        });
        ContactView {
            details,
            source: want(ContactPart::Source).then_some(c.source),
            last_activity: want(ContactPart::LastActivity).then(|| c.last_activity.clone()),
            parts: parts.map(<[ContactPart]>::to_vec),
            entry_ids: EntryIds::of(c, want),
            id: c.id,
            revision: c.revision,
            created_date: want(ContactPart::CreatedDate).then_some(c.created_date),
            updated_date: want(ContactPart::UpdatedDate).then_some(c.updated_date),
            name: want(ContactPart::Name).then(|| c.name.clone()),
            emails: want(ContactPart::Emails).then(|| c.emails.clone()),
            phones: want(ContactPart::Phones).then(|| c.phones.clone()),
            primary_info: want(ContactPart::PrimaryInfo).then(|| {
                (
                    c.primary_email().map(str::to_owned),
                    c.primary_phone().map(str::to_owned),
                )
            }),
        }
    }
}

/// One page of a query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPage {
    /// The contacts.
    pub contacts: Vec<ContactView>,
    /// How many matched in all.
    pub total: usize,
    /// The offset of this page.
    pub offset: usize,
    /// The limit used.
    pub limit: usize,
}

/// The contact list, with indexes by email and phone and the aliases of merged contacts.
///
/// Merges are kept as claims (a source may be said to be merged into several targets by
/// events from outside): a source counts as merged into the smallest target claimed, and a
/// cycle of such merges is broken at its smallest contact, which stays live. The record of a
/// contact merged away is kept aside (not listed, not indexed), so that the rule can bring it
/// back when a later claim breaks a cycle there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactDirectory {
    /// Live contacts.
    contacts: OrdMap<ContactId, Contact>,
    /// Records of contacts merged away.
    hidden: OrdMap<ContactId, Contact>,
    by_email: OrdMap<String, OrdSet<ContactId>>,
    by_phone: OrdMap<String, OrdSet<ContactId>>,
    /// Source -> every target it was merged into.
    claims: OrdMap<ContactId, OrdSet<ContactId>>,
    /// Target -> every source merged into it.
    claimed_by: OrdMap<ContactId, OrdSet<ContactId>>,
    /// Source -> the target that counts (cycles broken).
    merged_into: OrdMap<ContactId, ContactId>,
    /// Contacts deleted, with the revision they had then: a deleted id is never live again,
    /// whatever record of it arrives later or arrived before.
    deleted: OrdMap<ContactId, u64>,
    /// The labels and extended fields contacts may carry.
    catalog: Catalog,
}

/// What folding one contact merge claim changed, for the anomalies the inbox reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClaimOutcome {
    /// Every contact connected to the claim by merges (its component), sorted.
    pub component: Vec<ContactId>,
    /// The cycles of the component (members sorted) and the contact each keeps live.
    pub cycles: Vec<(Vec<ContactId>, ContactId)>,
}

/// Normalises an email for comparison: trimmed and lowercased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn normalize_phone(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

/// One `@` between a non-empty local part and domain, and no whitespace or control
/// character (a NUL, an escape) anywhere: what no mail system delivers to.
fn valid_email(email: &str) -> bool {
    let e = email.trim();
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !e.contains(char::is_whitespace)
                && !e.contains(char::is_control)
        }
        None => false,
    }
}

fn ensure_one_primary<T>(items: &mut [T], primary: impl Fn(&mut T) -> &mut bool) {
    let mut seen = false;
    for item in items.iter_mut() {
        let p = primary(item);
        if *p && !seen {
            seen = true;
        } else {
            *p = false;
        }
    }
    if !seen && let Some(first) = items.first_mut() {
        *primary(first) = true;
    }
}

impl ContactDirectory {
    /// A live contact (not merged away).
    pub fn get(&self, id: ContactId) -> Option<&Contact> {
        self.contacts.get(&id)
    }

    /// Follows merges: the live contact an id now stands for (the id itself when it was never
    /// merged away).
    pub fn resolve(&self, mut id: ContactId) -> ContactId {
        // Cycles of merges are broken when they are folded, but bound the walk anyway.
        for _ in 0..=self.merged_into.len() {
            match self.merged_into.get(&id) {
                Some(next) if *next != id => id = *next,
                _ => break,
            }
        }
        id
    }

    /// The record a contact merged away had when it was merged (kept aside, not listed).
    pub fn merged_record(&self, id: ContactId) -> Option<&Contact> {
        self.hidden.get(&id)
    }

    /// The contact an id counts as merged into, if it does.
    pub fn merged_into(&self, id: ContactId) -> Option<ContactId> {
        self.merged_into.get(&id).copied()
    }

    /// Every target `id` was said to be merged into (more than one only through events from
    /// outside).
    pub fn merge_claims(&self, id: ContactId) -> impl Iterator<Item = ContactId> + '_ {
        self.claims
            .get(&id)
            .into_iter()
            .flat_map(|t| t.iter().copied())
    }

    /// `live` and every contact that resolves to it, in id order.
    pub fn tree_of(&self, live: ContactId) -> Vec<ContactId> {
        let mut seen = std::collections::BTreeSet::from([live]);
        let mut queue = vec![live];
        while let Some(n) = queue.pop() {
            for s in self.claimed_by.get(&n).into_iter().flatten() {
                if self.merged_into.get(s) == Some(&n) && seen.insert(*s) {
                    queue.push(*s);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// Whether any fact names this id as a contact of its own (a record, live or merged
    /// away, or a merge of it).
    fn is_known(&self, id: ContactId) -> bool {
        self.contacts.contains_key(&id)
            || self.hidden.contains_key(&id)
            || self.claims.contains_key(&id)
            || self.deleted.contains_key(&id)
    }

    /// Whether the contact was deleted.
    pub fn is_deleted(&self, id: ContactId) -> bool {
        self.deleted.contains_key(&id)
    }

    /// Checks and normalises emails and phones (trimmed emails, one primary of each) and
    /// looks for duplicates among other live contacts than `own`.
    fn check_entries(
        &self,
        own: ContactId,
        emails: &mut [ContactEmail],
        phones: &mut [ContactPhone],
        allow_duplicates: bool,
    ) -> Result<(), ContactDataError> {
        if emails.len() > MAX_ENTRIES {
            return Err(invalid(
                "info.emails",
                format!("at most {MAX_ENTRIES} emails"),
            ));
        }
        if phones.len() > MAX_ENTRIES {
            return Err(invalid(
                "info.phones",
                format!("at most {MAX_ENTRIES} phones"),
            ));
        }
        for e in emails.iter_mut() {
            if !valid_email(&e.email) {
                return Err(ContactDataError::InvalidEmail(e.email.clone()));
            }
            if matches!(e.tag, EntryTag::Mobile | EntryTag::Fax) {
                return Err(invalid(
                    "info.emails.tag",
                    "MOBILE and FAX are phone tags; an email is UNTAGGED, MAIN, HOME or WORK",
                ));
            }
            e.email = e.email.trim().to_owned();
            if !allow_duplicates
                && let Some(existing) = self.contacts_with_email(&e.email).find(|c| *c != own)
            {
                return Err(ContactDataError::DuplicateEmail {
                    email: e.email.clone(),
                    existing,
                });
            }
        }
        for p in phones.iter_mut() {
            let digits = normalize_phone(&p.phone);
            if digits.is_empty() || p.phone.contains(char::is_control) || p.phone.len() > 50 {
                return Err(ContactDataError::InvalidPhone(p.phone.clone()));
            }
            if !allow_duplicates
                && let Some(existing) = self
                    .by_phone
                    .get(&digits)
                    .and_then(|s| s.iter().find(|c| **c != own))
            {
                return Err(ContactDataError::DuplicatePhone {
                    phone: p.phone.clone(),
                    existing: *existing,
                });
            }
        }
        ensure_one_primary(emails, |e| &mut e.primary);
        ensure_one_primary(phones, |p| &mut p.primary);
        Ok(())
    }

    /// How many live contacts.
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }

    /// All live contacts, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Contact> {
        self.contacts.values()
    }

    /// Checks labels and extended field values given to a contact against the catalog: a
    /// `custom` label must be defined, a value must fit its field (and is normalised to it).
    fn check_catalog<'a>(
        &self,
        labels: impl Iterator<Item = &'a String>,
        fields: &mut BTreeMap<String, ExtendedValue>,
    ) -> Result<(), ContactDataError> {
        for key in labels {
            if !self.catalog.label_allowed(key) {
                return Err(ContactDataError::UnknownLabel(key.clone()));
            }
        }
        for (key, value) in fields.iter_mut() {
            let field = self
                .catalog
                .field(key)
                .ok_or_else(|| ContactDataError::UnknownExtendedField(key.clone()))?;
            *value = crate::catalog::fit_value(field, value).map_err(|reason| {
                ContactDataError::InvalidExtendedField {
                    key: key.clone(),
                    reason,
                }
            })?;
        }
        Ok(())
    }

    /// The labels and extended fields contacts may carry.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub(crate) fn catalog_mut(&mut self) -> &mut Catalog {
        &mut self.catalog
    }

    /// The live contacts that carry the label, at their next revision without it: what
    /// deleting the label does to them.
    pub fn plan_unlabel_all(&self, key: &str, now: Timestamp) -> Vec<Contact> {
        self.plan_strip(
            now,
            |d| d.labels.contains(key),
            |d| {
                d.labels.remove(key);
            },
        )
    }

    /// The live contacts that hold a value of the extended field, at their next revision
    /// without it: what deleting the field does to them.
    pub fn plan_clear_field(&self, key: &str, now: Timestamp) -> Vec<Contact> {
        self.plan_strip(
            now,
            |d| d.extended_fields.contains_key(key),
            |d| {
                d.extended_fields.remove(key);
            },
        )
    }

    /// Every live contact whose details `holds`, with `strip` applied, at its next revision.
    /// Only those contacts are copied.
    fn plan_strip(
        &self,
        now: Timestamp,
        holds: impl Fn(&ContactDetails) -> bool,
        strip: impl Fn(&mut ContactDetails),
    ) -> Vec<Contact> {
        self.contacts
            .values()
            .filter(|c| holds(&c.details))
            .map(|c| {
                let mut next = c.clone();
                strip(&mut next.details);
                next.revision = c.revision.saturating_add(1);
                next.updated_date = now.max(c.updated_date);
                next
            })
            .collect()
    }

    /// Validates a new contact and builds it (revision 1). Changes nothing.
    pub fn plan_create(
        &self,
        id: ContactId,
        draft: ContactDraft,
        now: Timestamp,
    ) -> Result<Contact, CreateContactError> {
        if self.is_known(id) {
            return Err(CreateContactError::AlreadyExists(id));
        }
        let ContactDraft {
            name,
            mut emails,
            mut phones,
            details,
            source,
            allow_duplicates,
        } = draft;
        if name.is_empty() && emails.is_empty() && phones.is_empty() {
            return Err(CreateContactError::Empty);
        }
        check_text("info.name.first", name.first.as_deref())?;
        check_text("info.name.last", name.last.as_deref())?;
        self.check_entries(id, &mut emails, &mut phones, allow_duplicates)?;
        check_details(&details)?;
        let mut details = details;
        self.check_catalog(details.labels.iter(), &mut details.extended_fields)?;
        Ok(Contact {
            name,
            emails,
            phones,
            details,
            source,
            ..Contact::new(id, now)
        })
    }

    /// Update Contact: the contact with `patch` applied, at the next revision, checked
    /// against `expected_revision`. `member` is the contact's site member, if it is one (its
    /// primary email is then the login email, which this call may not change). Changes
    /// nothing.
    pub fn plan_update(
        &self,
        id: ContactId,
        expected_revision: u64,
        patch: &ContactPatch,
        allow_duplicates: bool,
        member: Option<crate::ids::MemberId>,
        now: Timestamp,
    ) -> Result<Contact, UpdateContactError> {
        let current = self
            .contacts
            .get(&id)
            .ok_or(UpdateContactError::NotFound(id))?;
        if expected_revision != current.revision {
            return Err(UpdateContactError::RevisionConflict {
                expected: expected_revision,
                actual: current.revision,
            });
        }
        let mut next = current.clone();
        if let Some(name) = &patch.name {
            check_text("info.name.first", name.first.as_deref())?;
            check_text("info.name.last", name.last.as_deref())?;
            next.name = name.clone();
        }
        let mut emails = patch.emails.clone().unwrap_or_default();
        let mut phones = patch.phones.clone().unwrap_or_default();
        self.check_entries(id, &mut emails, &mut phones, allow_duplicates)?;
        if patch.emails.is_some() {
            next.emails = emails;
        }
        if patch.phones.is_some() {
            next.phones = phones;
        }
        let d = &mut next.details;
        if let Some(a) = &patch.addresses {
            d.addresses = a.clone();
        }
        for (field, value) in [
            (&mut d.company, &patch.company),
            (&mut d.job_title, &patch.job_title),
            (&mut d.birthdate, &patch.birthdate),
            (&mut d.locale, &patch.locale),
            (&mut d.picture, &patch.picture),
        ] {
            if let Some(v) = value {
                field.clone_from(v);
            }
        }
        if let Some(labels) = &patch.labels {
            d.labels = labels.clone();
        }
        let mut set = BTreeMap::new();
        for (key, value) in &patch.extended_fields {
            match value {
                Some(v) => {
                    set.insert(key.clone(), v.clone());
                }
                None => {
                    d.extended_fields.remove(key);
                }
            };
        }
        check_details(&ContactDetails {
            extended_fields: set.clone(),
            ..next.details.clone()
        })?;
        // Only what the update brings is checked against the catalog: a label or value the
        // contact already had stays as it is.
        let added = next.details.labels.difference(&current.details.labels);
        self.check_catalog(added, &mut set)?;
        next.details.extended_fields.extend(set);
        if next.is_insufficient() {
            return Err(UpdateContactError::Empty);
        }
        if let Some(member) = member
            && next.primary_email().map(normalize_email)
                != current.primary_email().map(normalize_email)
        {
            return Err(UpdateContactError::MemberPrimaryEmail {
                contact: id,
                member,
            });
        }
        next.revision = current.revision.saturating_add(1);
        next.updated_date = now.max(current.updated_date);
        Ok(next)
    }

    /// Label and Unlabel Contact: the contact with `add` labels added and `remove` removed,
    /// at the next revision, or `None` when that changes nothing (no new revision). Changes
    /// nothing itself.
    pub fn plan_labels(
        &self,
        id: ContactId,
        add: &BTreeSet<String>,
        remove: &BTreeSet<String>,
        now: Timestamp,
    ) -> Result<Option<Contact>, LabelContactError> {
        let current = self
            .contacts
            .get(&id)
            .ok_or(LabelContactError::NotFound(id))?;
        for set in [add, remove] {
            if set.len() > MAX_LABELS_PER_CHANGE {
                return Err(LabelContactError::Count(set.len()));
            }
        }
        if add.is_empty() && remove.is_empty() {
            return Err(LabelContactError::Count(0));
        }
        for key in add.iter().chain(remove) {
            check_label_key(key).map_err(|reason| LabelContactError::InvalidKey {
                key: key.clone(),
                reason,
            })?;
        }
        if let Some(unknown) = add
            .iter()
            .chain(remove)
            .find(|k| !self.catalog.label_allowed(k))
        {
            return Err(LabelContactError::UnknownLabel(unknown.clone()));
        }
        let mut labels = current.details.labels.clone();
        labels.extend(add.iter().cloned());
        labels.retain(|l| !remove.contains(l) || add.contains(l));
        if labels == current.details.labels {
            return Ok(None);
        }
        let mut next = current.clone();
        next.details.labels = labels;
        next.revision = current.revision.saturating_add(1);
        next.updated_date = now.max(current.updated_date);
        Ok(Some(next))
    }

    /// Delete Contact's check, for a contact that is not a member (the caller checks that):
    /// the revision the deleted record has.
    pub fn plan_delete(&self, id: ContactId) -> Result<u64, DeleteContactError> {
        self.contacts
            .get(&id)
            .map(|c| c.revision)
            .ok_or(DeleteContactError::NotFound(id))
    }

    /// Folds a deletion: the contact leaves the list and its indexes for good. Merges of
    /// other contacts into it still resolve to it (to an id with no contact). Idempotent.
    pub(crate) fn delete(&mut self, id: ContactId, revision: u64) {
        let kept = self.deleted.get(&id).copied().unwrap_or(0).max(revision);
        self.deleted.insert(id, kept);
        if let Some(record) = self.contacts.remove(&id) {
            self.unindex(&record);
        }
        self.hidden.remove(&id);
    }

    /// The ids of live contacts having this email (case-insensitive), in id order.
    pub fn contacts_with_email(&self, email: &str) -> impl Iterator<Item = ContactId> + '_ {
        self.by_email
            .get(&normalize_email(email))
            .into_iter()
            .flat_map(|s| s.iter().copied())
    }

    /// What the target becomes when `sources` are merged into it, checked against the
    /// caller's `expected_revision` when one is given. Changes nothing: this is both the
    /// merge's decision and Preview Merge.
    ///
    /// Rule for conflicting single-valued fields (name parts, company, job title, birth
    /// date, locale, picture, and each extended field): the first source that has one wins,
    /// then the next, and the target's own value only when no source has one. Emails, phones
    /// and addresses are the union (target's first, then each source's, without
    /// case-insensitive repeats); labels are the union; the primary entry is the target's if
    /// it has one, else the first source's. The target's last activity becomes the merge.
    pub fn plan_merge(
        &self,
        target: ContactId,
        expected_revision: Option<u64>,
        sources: &[ContactId],
        now: Timestamp,
    ) -> Result<Contact, MergeContactsError> {
        if sources.is_empty() || sources.len() > MAX_MERGE_SOURCES {
            return Err(MergeContactsError::SourceCount(sources.len()));
        }
        let current = self
            .contacts
            .get(&target)
            .ok_or(MergeContactsError::TargetNotFound(target))?;
        let mut seen = OrdSet::new();
        let mut source_contacts = Vec::with_capacity(sources.len());
        for s in sources {
            if *s == target {
                return Err(MergeContactsError::SourceIsTarget(*s));
            }
            if seen.insert(*s).is_some() {
                return Err(MergeContactsError::DuplicateSource(*s));
            }
            source_contacts.push(
                self.contacts
                    .get(s)
                    .ok_or(MergeContactsError::SourceNotFound(*s))?,
            );
        }
        if let Some(expected) = expected_revision
            && expected != current.revision
        {
            return Err(MergeContactsError::RevisionConflict {
                expected,
                actual: current.revision,
            });
        }
        let mut merged = current.clone();
        let pick = |get: &dyn Fn(&Contact) -> Option<String>| {
            source_contacts
                .iter()
                .copied()
                .chain(std::iter::once(current))
                .find_map(|c| get(c).filter(|s| !s.is_empty()))
        };
        merged.name = ContactName {
            first: pick(&|c| c.name.first.clone()),
            last: pick(&|c| c.name.last.clone()),
        };
        for src in &source_contacts {
            for e in &src.emails {
                let norm = normalize_email(&e.email);
                if !merged
                    .emails
                    .iter()
                    .any(|m| normalize_email(&m.email) == norm)
                {
                    merged.emails.push(ContactEmail {
                        primary: false,
                        ..e.clone()
                    });
                }
            }
            for p in &src.phones {
                let norm = normalize_phone(&p.phone);
                if !merged
                    .phones
                    .iter()
                    .any(|m| normalize_phone(&m.phone) == norm)
                {
                    merged.phones.push(ContactPhone {
                        primary: false,
                        ..p.clone()
                    });
                }
            }
        }
        if !current.emails.iter().any(|e| e.primary) {
            let first_source_primary = source_contacts
                .iter()
                .find_map(|c| c.primary_email())
                .map(normalize_email);
            for e in &mut merged.emails {
                e.primary = Some(normalize_email(&e.email)) == first_source_primary;
            }
        }
        ensure_one_primary(&mut merged.emails, |e| &mut e.primary);
        ensure_one_primary(&mut merged.phones, |p| &mut p.primary);
        let d = &mut merged.details;
        d.company = pick(&|c| c.details.company.clone());
        d.job_title = pick(&|c| c.details.job_title.clone());
        d.birthdate = pick(&|c| c.details.birthdate.clone());
        d.locale = pick(&|c| c.details.locale.clone());
        d.picture = pick(&|c| c.details.picture.clone());
        for src in &source_contacts {
            for a in &src.details.addresses {
                if !d.addresses.contains(a) && d.addresses.len() < MAX_ENTRIES {
                    d.addresses.push(a.clone());
                }
            }
            d.labels.extend(src.details.labels.iter().cloned());
        }
        // Extended fields key by key, with the same precedence as single values: the first
        // source that has the key, then the next, the target's own last.
        for src in source_contacts.iter().rev() {
            for (k, v) in &src.details.extended_fields {
                d.extended_fields.insert(k.clone(), v.clone());
            }
        }
        merged.revision = current.revision.saturating_add(1);
        merged.updated_date = now.max(current.updated_date);
        merged.last_activity = ContactActivity {
            at: merged.updated_date,
            kind: ActivityType::ContactMerged,
        };
        Ok(merged)
    }

    /// Stores a contact unless a higher revision of it is already here (idempotent, and
    /// convergent when changes arrive out of order: the highest revision wins, ties by the
    /// total order). The record of a contact merged away is kept aside, not listed.
    pub fn upsert(&mut self, contact: Contact) {
        if self.deleted.contains_key(&contact.id) {
            return;
        }
        let merged = self.merged_into.contains_key(&contact.id);
        let kept = if merged {
            self.hidden.get(&contact.id)
        } else {
            self.contacts.get(&contact.id)
        };
        if kept.is_some_and(|k| *k >= contact) {
            return;
        }
        if merged {
            self.hidden.insert(contact.id, contact);
            return;
        }
        if let Some(old) = self.contacts.get(&contact.id).cloned() {
            self.unindex(&old);
        }
        self.index(&contact);
        self.contacts.insert(contact.id, contact);
    }

    /// Folds the fact that `source` was merged into `target`: the claim is kept, and which
    /// target counts is recomputed for every contact connected to it by merges (the smallest
    /// target claimed; a cycle broken at its smallest contact). Records move between the
    /// list and the side as contacts stop or start counting as merged away. Idempotent.
    pub(crate) fn add_merge_claim(&mut self, source: ContactId, target: ContactId) -> ClaimOutcome {
        if source == target {
            return ClaimOutcome::default();
        }
        let first_claim = self.claims.get(&source).is_none_or(|t| t.is_empty());
        self.claims.entry(source).or_default().insert(target);
        self.claimed_by.entry(target).or_default().insert(source);
        if first_claim && self.resolve(target) != source {
            // The common case: a contact merged once, into one that does not lead back to
            // it. Only its own target changes, and no cycle can form.
            self.merged_into.insert(source, target);
            if let Some(record) = self.contacts.remove(&source) {
                self.unindex(&record);
                self.hidden.insert(source, record);
            }
            return ClaimOutcome {
                component: vec![source],
                cycles: Vec::new(),
            };
        }
        let mut component: Vec<ContactId> = vec![source];
        let mut i = 0;
        while let Some(n) = component.get(i).copied() {
            i += 1;
            let next = self
                .claims
                .get(&n)
                .into_iter()
                .chain(self.claimed_by.get(&n))
                .flat_map(|s| s.iter().copied());
            for m in next.collect::<Vec<_>>() {
                if !component.contains(&m) {
                    component.push(m);
                }
            }
        }
        component.sort();
        let claimed: BTreeMap<ContactId, ContactId> = component
            .iter()
            .filter_map(|n| {
                let t = self.claims.get(n)?.get_min()?;
                Some((*n, *t))
            })
            .collect();
        let mut cycles: Vec<(Vec<ContactId>, ContactId)> = Vec::new();
        for start in &component {
            let mut walked = vec![*start];
            let mut cur = *start;
            while let Some(next) = claimed.get(&cur).copied() {
                if next == *start {
                    walked.sort();
                    if let Some(kept) = walked.first().copied()
                        && !cycles.iter().any(|(m, _)| *m == walked)
                    {
                        cycles.push((walked, kept));
                    }
                    break;
                }
                if walked.contains(&next) {
                    break; // a cycle further on, found from one of its own members
                }
                walked.push(next);
                cur = next;
            }
        }
        for n in &component {
            let kept_live = cycles.iter().any(|(_, kept)| kept == n);
            match claimed.get(n).copied().filter(|_| !kept_live) {
                Some(t) => {
                    self.merged_into.insert(*n, t);
                    if let Some(record) = self.contacts.remove(n) {
                        self.unindex(&record);
                        self.hidden.insert(*n, record);
                    }
                }
                None => {
                    self.merged_into.remove(n);
                    if let Some(record) = self.hidden.remove(n) {
                        self.index(&record);
                        self.contacts.insert(*n, record);
                    }
                }
            }
        }
        ClaimOutcome { component, cycles }
    }

    fn index(&mut self, c: &Contact) {
        for e in &c.emails {
            self.by_email
                .entry(normalize_email(&e.email))
                .or_default()
                .insert(c.id);
        }
        for p in &c.phones {
            self.by_phone
                .entry(normalize_phone(&p.phone))
                .or_default()
                .insert(c.id);
        }
    }

    fn unindex(&mut self, c: &Contact) {
        for e in &c.emails {
            let key = normalize_email(&e.email);
            if let Some(set) = self.by_email.get_mut(&key) {
                set.remove(&c.id);
                if set.is_empty() {
                    self.by_email.remove(&key);
                }
            }
        }
        for p in &c.phones {
            let key = normalize_phone(&p.phone);
            if let Some(set) = self.by_phone.get_mut(&key) {
                set.remove(&c.id);
                if set.is_empty() {
                    self.by_phone.remove(&key);
                }
            }
        }
    }

    /// Runs a query: filter, sort (default `createdDate` descending, ties by id), offset
    /// paging and projection.
    ///
    /// ```
    /// # use inbox_core::contacts::*;
    /// # use inbox_core::{ContactId, Timestamp};
    /// let mut dir = ContactDirectory::default();
    /// let id = ContactId::from_uuid(uuid::Uuid::from_u128(1));
    /// let draft = ContactDraft {
    ///     emails: vec![ContactEmail { email: "Jo@Example.com".into(), tag: EntryTag::Main, primary: true }],
    ///     ..ContactDraft::default()
    /// };
    /// dir.upsert(dir.plan_create(id, draft, Timestamp::EPOCH).unwrap());
    /// let page = dir.query(&ContactQuery::by_email("jo@example.COM")).unwrap();
    /// assert_eq!(page.contacts[0].id, id);
    /// assert!(page.contacts[0].emails.is_none()); // only id and revision were asked for
    /// ```
    pub fn query(&self, query: &ContactQuery) -> Result<ContactPage, QueryContactsError> {
        let limit = query.limit.unwrap_or(DEFAULT_QUERY_LIMIT);
        if limit == 0 || limit > MAX_QUERY_LIMIT {
            return Err(QueryContactsError::IllegalLimit(limit));
        }
        check_filter(&query.filter)?;
        let mut matched: Vec<&Contact> = match indexed_candidates(&query.filter, self) {
            Some(ids) => ids
                .into_iter()
                .filter_map(|id| self.contacts.get(&id))
                .filter(|c| matches(&query.filter, c))
                .collect(),
            None => self
                .contacts
                .values()
                .filter(|c| matches(&query.filter, c))
                .collect(),
        };
        let sort: &[(ContactSortField, SortOrder)] = if query.sort.is_empty() {
            &[(ContactSortField::CreatedDate, SortOrder::Desc)]
        } else {
            &query.sort
        };
        matched.sort_by(|a, b| {
            sort.iter()
                .map(|(field, order)| {
                    let o = sort_key(a, *field).cmp(&sort_key(b, *field));
                    if *order == SortOrder::Desc {
                        o.reverse()
                    } else {
                        o
                    }
                })
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.id.cmp(&b.id))
        });
        let total = matched.len();
        let contacts = matched
            .into_iter()
            .skip(query.offset)
            .take(limit)
            .map(|c| ContactView::projected(c, query.parts.as_deref()))
            .collect();
        Ok(ContactPage {
            contacts,
            total,
            offset: query.offset,
            limit,
        })
    }
}

/// Counts of the contacts a filter matches, as Wix's facets split them (List and Query
/// Facets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactFacets {
    /// Every matching contact.
    pub all: usize,
    /// Those with no label.
    pub not_labeled: usize,
    /// Those with each label key, by key.
    pub labels: BTreeMap<String, usize>,
}

impl ContactDirectory {
    /// The facets of the live contacts `filter` matches.
    pub fn facets(&self, filter: &ContactFilter) -> Result<ContactFacets, QueryContactsError> {
        check_filter(filter)?;
        let mut out = ContactFacets::default();
        for c in self.contacts.values().filter(|c| matches(filter, c)) {
            out.all += 1;
            if c.details.labels.is_empty() {
                out.not_labeled += 1;
            }
            for l in &c.details.labels {
                *out.labels.entry(l.clone()).or_default() += 1;
            }
        }
        Ok(out)
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortKey<'a> {
    Missing,
    Text(String),
    Time(Timestamp),
    Id(&'a ContactId),
}

fn sort_key(c: &Contact, field: ContactSortField) -> SortKey<'_> {
    let text = |s: Option<&str>| s.map_or(SortKey::Missing, |s| SortKey::Text(s.to_lowercase()));
    match field {
        ContactSortField::CreatedDate => SortKey::Time(c.created_date),
        ContactSortField::UpdatedDate => SortKey::Time(c.updated_date),
        ContactSortField::FirstName => text(c.name.first.as_deref()),
        ContactSortField::LastName => text(c.name.last.as_deref()),
        ContactSortField::PrimaryEmail => text(c.primary_email()),
        ContactSortField::Company => text(c.details.company.as_deref()),
        ContactSortField::JobTitle => text(c.details.job_title.as_deref()),
        ContactSortField::Birthdate => text(c.details.birthdate.as_deref()),
        ContactSortField::LastActivity => SortKey::Time(c.last_activity.at),
        ContactSortField::Id => SortKey::Id(&c.id),
    }
}

fn condition_name(c: &Condition) -> &'static str {
    match c {
        Condition::Eq(_) => "$eq",
        Condition::Ne(_) => "$ne",
        Condition::In(_) => "$in",
        Condition::HasSome(_) => "$hasSome",
        Condition::HasAll(_) => "$hasAll",
        Condition::Exists(_) => "$exists",
        Condition::StartsWith(_) => "$startsWith",
        Condition::Gt(_) => "$gt",
        Condition::Gte(_) => "$gte",
        Condition::Lt(_) => "$lt",
        Condition::Lte(_) => "$lte",
    }
}

/// Which operators each field takes (Wix's query spec for contacts, plus `$hasSome` and
/// `$exists` where the older fields always had them): times and the birth date compare and
/// order; label keys take `$hasSome` and `$hasAll` only; the locale and the id no prefix.
pub fn condition_supported(field: ContactField, cond: &Condition) -> bool {
    use ContactField as F;
    let ordered = matches!(
        field,
        F::CreatedDate | F::UpdatedDate | F::LastActivityDate | F::Birthdate
    );
    match (field, cond) {
        (F::Labels, Condition::HasSome(_) | Condition::HasAll(_)) => true,
        (F::Labels, _) | (_, Condition::HasAll(_)) => false,
        (_, Condition::Eq(_) | Condition::Ne(_)) => true,
        (_, Condition::Gt(_) | Condition::Gte(_) | Condition::Lt(_) | Condition::Lte(_)) => ordered,
        (_, Condition::In(_) | Condition::HasSome(_) | Condition::Exists(_)) => !ordered,
        (_, Condition::StartsWith(_)) => !ordered && !matches!(field, F::Id | F::Locale),
    }
}

fn check_filter(f: &ContactFilter) -> Result<(), QueryContactsError> {
    match f {
        ContactFilter::All => Ok(()),
        ContactFilter::And(fs) | ContactFilter::Or(fs) => fs.iter().try_for_each(check_filter),
        ContactFilter::Not(f) => check_filter(f),
        ContactFilter::Field(field, cond) => {
            let ok = condition_supported(*field, cond);
            if ok {
                Ok(())
            } else {
                Err(QueryContactsError::UnsupportedFilter {
                    field: *field,
                    condition: condition_name(cond),
                })
            }
        }
    }
}

/// For a filter that is (or starts with, in an `$and`) an email condition the index can
/// answer, the candidate ids; `None` means scan everything.
fn indexed_candidates(f: &ContactFilter, dir: &ContactDirectory) -> Option<OrdSet<ContactId>> {
    match f {
        ContactFilter::Field(ContactField::Email, cond) => {
            let mut out = OrdSet::new();
            let mut add = |email: &str| {
                if let Some(s) = dir.by_email.get(&normalize_email(email)) {
                    out.extend(s.iter().copied());
                }
            };
            match cond {
                Condition::Eq(FilterValue::Text(e)) => add(e),
                Condition::In(vs) | Condition::HasSome(vs) => {
                    for v in vs {
                        if let FilterValue::Text(e) = v {
                            add(e);
                        }
                    }
                }
                Condition::StartsWith(prefix) => {
                    let prefix = prefix.to_lowercase();
                    for (email, ids) in dir.by_email.range(prefix.clone()..) {
                        if !email.starts_with(&prefix) {
                            break;
                        }
                        out.extend(ids.iter().copied());
                    }
                }
                _ => return None,
            }
            Some(out)
        }
        ContactFilter::And(fs) => fs.iter().find_map(|f| indexed_candidates(f, dir)),
        _ => None,
    }
}

fn text_of(v: &Option<String>) -> Vec<FilterValue> {
    v.iter().map(|s| FilterValue::Text(s.clone())).collect()
}

fn matches(f: &ContactFilter, c: &Contact) -> bool {
    match f {
        ContactFilter::All => true,
        ContactFilter::And(fs) => fs.iter().all(|f| matches(f, c)),
        ContactFilter::Or(fs) => fs.iter().any(|f| matches(f, c)),
        ContactFilter::Not(f) => !matches(f, c),
        ContactFilter::Field(field, cond) => {
            let id = c.id.to_string();
            let values: Vec<FilterValue> = match field {
                ContactField::Id => vec![FilterValue::Text(id)],
                ContactField::Email => c
                    .emails
                    .iter()
                    .map(|e| FilterValue::Text(normalize_email(&e.email)))
                    .collect(),
                ContactField::PrimaryEmail => c
                    .primary_email()
                    .map(|e| FilterValue::Text(normalize_email(e)))
                    .into_iter()
                    .collect(),
                ContactField::PrimaryPhone => c
                    .primary_phone()
                    .map(|p| FilterValue::Text(p.to_owned()))
                    .into_iter()
                    .collect(),
                ContactField::FirstName => c
                    .name
                    .first
                    .iter()
                    .map(|s| FilterValue::Text(s.clone()))
                    .collect(),
                ContactField::LastName => c
                    .name
                    .last
                    .iter()
                    .map(|s| FilterValue::Text(s.clone()))
                    .collect(),
                ContactField::CreatedDate => vec![FilterValue::Time(c.created_date)],
                ContactField::UpdatedDate => vec![FilterValue::Time(c.updated_date)],
                ContactField::Company => text_of(&c.details.company),
                ContactField::JobTitle => text_of(&c.details.job_title),
                ContactField::Locale => text_of(&c.details.locale),
                ContactField::Birthdate => text_of(&c.details.birthdate),
                ContactField::LastActivityDate => vec![FilterValue::Time(c.last_activity.at)],
                ContactField::Labels => c
                    .details
                    .labels
                    .iter()
                    .map(|l| FilterValue::Text(l.clone()))
                    .collect(),
            };
            let fold = |v: &FilterValue| match (field, v) {
                (ContactField::Email | ContactField::PrimaryEmail, FilterValue::Text(s)) => {
                    FilterValue::Text(normalize_email(s))
                }
                (ContactField::Id, FilterValue::Text(s)) => FilterValue::Text(s.to_lowercase()),
                _ => v.clone(),
            };
            match cond {
                Condition::Eq(v) => values.contains(&fold(v)),
                Condition::Ne(v) => !values.contains(&fold(v)),
                Condition::In(vs) | Condition::HasSome(vs) => {
                    vs.iter().any(|v| values.contains(&fold(v)))
                }
                Condition::HasAll(vs) => vs.iter().all(|v| values.contains(&fold(v))),
                Condition::Exists(want) => values.is_empty() != *want,
                Condition::StartsWith(prefix) => {
                    let prefix = prefix.to_lowercase();
                    values.iter().any(|v| matches!(v, FilterValue::Text(s) if s.to_lowercase().starts_with(&prefix)))
                }
                Condition::Gt(v) => values.iter().any(|x| x > v),
                Condition::Gte(v) => values.iter().any(|x| x >= v),
                Condition::Lt(v) => values.iter().any(|x| x < v),
                Condition::Lte(v) => values.iter().any(|x| x <= v),
            }
        }
    }
}
