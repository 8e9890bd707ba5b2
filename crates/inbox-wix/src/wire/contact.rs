//! Contacts v4 as JSON: `Contact`, its `info`, and the enums of its entries.
//!
//! What the SDK types as always present on a contact it answers with, the emulator always
//! writes: `source.sourceType`, `lastActivity.activityType`, `info.emails.items`,
//! `info.phones.items`, `info.addresses.items` (with `address.streetAddress.number` and
//! `.name`), `info.labelKeys.items`, and the subscription and deliverability status of
//! `primaryEmail` and `primaryPhone` (`NOT_SET` when there is an entry, `NO_SUBSCRIPTION_STATUS`
//! when there is none: the emulator sends no email or SMS, so nothing is ever subscribed).
//! Entry ids (`info.emails.items[i].id`, ...) are derived from the contact and the entry
//! ([`CoreContact::email_id`]), so they are stable across revisions.

use std::collections::{BTreeMap, BTreeSet};

use inbox_core::contacts::{
    self as core, ActivityType, Contact as CoreContact, ContactPart, ContactView, EntryTag,
    ExtendedValue, SourceType,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::format_date;

/// The tag of a contact's email: Wix's `EmailTag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EmailTag {
    /// `UNTAGGED`.
    Untagged,
    /// `MAIN`.
    Main,
    /// `HOME`.
    Home,
    /// `WORK`.
    Work,
}

/// The tag of a contact's phone: Wix's `PhoneTag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PhoneTag {
    /// `UNTAGGED`.
    Untagged,
    /// `MAIN`.
    Main,
    /// `HOME`.
    Home,
    /// `MOBILE`.
    Mobile,
    /// `WORK`.
    Work,
    /// `FAX`.
    Fax,
}

/// The tag of a contact's street address: Wix's `AddressTag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AddressTag {
    /// `UNTAGGED`.
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

impl From<EmailTag> for EntryTag {
    fn from(t: EmailTag) -> Self {
        match t {
            EmailTag::Untagged => EntryTag::Untagged,
            EmailTag::Main => EntryTag::Main,
            EmailTag::Home => EntryTag::Home,
            EmailTag::Work => EntryTag::Work,
        }
    }
}

impl EmailTag {
    /// The wire tag of an email entry. A phone-only tag can only be on an email that came
    /// in through an event from outside; it is written `UNTAGGED`, the tag Wix would show.
    pub fn from_core(t: EntryTag) -> Self {
        match t {
            EntryTag::Main => EmailTag::Main,
            EntryTag::Home => EmailTag::Home,
            EntryTag::Work => EmailTag::Work,
            EntryTag::Untagged | EntryTag::Mobile | EntryTag::Fax => EmailTag::Untagged,
        }
    }
}

impl From<PhoneTag> for EntryTag {
    fn from(t: PhoneTag) -> Self {
        match t {
            PhoneTag::Untagged => EntryTag::Untagged,
            PhoneTag::Main => EntryTag::Main,
            PhoneTag::Home => EntryTag::Home,
            PhoneTag::Mobile => EntryTag::Mobile,
            PhoneTag::Work => EntryTag::Work,
            PhoneTag::Fax => EntryTag::Fax,
        }
    }
}

impl From<EntryTag> for PhoneTag {
    fn from(t: EntryTag) -> Self {
        match t {
            EntryTag::Untagged => PhoneTag::Untagged,
            EntryTag::Main => PhoneTag::Main,
            EntryTag::Home => PhoneTag::Home,
            EntryTag::Mobile => PhoneTag::Mobile,
            EntryTag::Work => PhoneTag::Work,
            EntryTag::Fax => PhoneTag::Fax,
        }
    }
}

impl From<AddressTag> for core::AddressTag {
    fn from(t: AddressTag) -> Self {
        match t {
            AddressTag::Untagged => core::AddressTag::Untagged,
            AddressTag::Home => core::AddressTag::Home,
            AddressTag::Work => core::AddressTag::Work,
            AddressTag::Billing => core::AddressTag::Billing,
            AddressTag::Shipping => core::AddressTag::Shipping,
        }
    }
}

impl From<core::AddressTag> for AddressTag {
    fn from(t: core::AddressTag) -> Self {
        match t {
            core::AddressTag::Untagged => AddressTag::Untagged,
            core::AddressTag::Home => AddressTag::Home,
            core::AddressTag::Work => AddressTag::Work,
            core::AddressTag::Billing => AddressTag::Billing,
            core::AddressTag::Shipping => AddressTag::Shipping,
        }
    }
}

/// Wix's `ContactSourceType` names, with the core's values: one table both ways.
pub const SOURCE_TYPES: [(&str, SourceType); 19] = [
    ("OTHER", SourceType::Other),
    ("ADMIN", SourceType::Admin),
    ("WIX_APP", SourceType::WixApp),
    ("IMPORT", SourceType::Import),
    ("THIRD_PARTY", SourceType::ThirdParty),
    ("WIX_BOOKINGS", SourceType::WixBookings),
    ("WIX_CHAT", SourceType::WixChat),
    ("WIX_EMAIL_MARKETING", SourceType::WixEmailMarketing),
    ("WIX_EVENTS", SourceType::WixEvents),
    ("WIX_FORMS", SourceType::WixForms),
    ("WIX_GROUPS", SourceType::WixGroups),
    ("WIX_HOTELS", SourceType::WixHotels),
    ("WIX_MARKET_PLACE", SourceType::WixMarketPlace),
    ("WIX_MUSIC", SourceType::WixMusic),
    ("WIX_RESTAURANTS", SourceType::WixRestaurants),
    ("WIX_SITE_MEMBERS", SourceType::WixSiteMembers),
    ("WIX_STORES", SourceType::WixStores),
    ("WIX_CODE", SourceType::WixCode),
    ("HOPP", SourceType::Hopp),
];

/// The Wix name of a source type.
pub fn source_type_name(t: SourceType) -> &'static str {
    SOURCE_TYPES
        .iter()
        .find(|(_, v)| *v == t)
        .map_or("OTHER", |(name, _)| name)
}

/// The source type of a Wix name (`None` if Wix has no such value).
pub fn source_type_of(name: &str) -> Option<SourceType> {
    SOURCE_TYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

/// The Wix name of an activity type.
pub fn activity_type_name(t: &ActivityType) -> &str {
    match t {
        ActivityType::ContactCreated => "CONTACT_CREATED",
        ActivityType::ContactMerged => "CONTACT_MERGED",
        ActivityType::Other(name) => name,
    }
}

/// `info.name`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Name {
    /// First name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    /// Last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// `info.emails.items[i]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmailItem {
    /// The entry's id (read-only: ignored on input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The address.
    pub email: String,
    /// Its tag (default `UNTAGGED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<EmailTag>,
    /// Whether it is the primary email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// `info.phones.items[i]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PhoneItem {
    /// The entry's id (read-only: ignored on input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The number.
    pub phone: String,
    /// Its tag (default `UNTAGGED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<PhoneTag>,
    /// Whether it is the primary phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// `address.streetAddress`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StreetAddress {
    /// Street number.
    pub number: String,
    /// Street name.
    pub name: String,
}

/// `info.addresses.items[i].address`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Address {
    /// ISO-3166 alpha-2 country code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Subdivision code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdivision: Option<String>,
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Postal code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Free-form first line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line: Option<String>,
    /// Street number and name.
    pub street_address: StreetAddress,
    /// Second line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line2: Option<String>,
}

/// `info.addresses.items[i]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AddressItem {
    /// The entry's id (read-only: ignored on input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its tag (default `UNTAGGED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<AddressTag>,
    /// The address.
    pub address: Address,
}

/// `{items: [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}

/// `info.extendedFields`: `{items: {"custom.key": value}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtendedFields {
    /// Values by key: strings and numbers (`null` removes a key in an update).
    pub items: BTreeMap<String, Value>,
}

/// `info.picture`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Picture {
    /// The image (Wix's `Image`: an external one by `url`, one of Wix Media by `id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<PictureImage>,
}

/// Wix's `Image` as a contact picture holds it. The core keeps one string: the URL, or
/// `wix:image://v1/<id>` for an image of Wix Media (the SDK's own spelling of it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PictureImage {
    /// The Wix Media id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

const WIX_IMAGE: &str = "wix:image://v1/";

impl Picture {
    /// The core's picture string.
    pub fn to_core(&self) -> Option<String> {
        let image = self.image.as_ref()?;
        match (&image.url, &image.id) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(id)) => Some(format!("{WIX_IMAGE}{id}")),
            (None, None) => None,
        }
    }

    /// The wire picture of the core's string.
    pub fn from_core(picture: &str) -> Picture {
        let image = match picture.strip_prefix(WIX_IMAGE) {
            Some(id) => PictureImage {
                id: Some(id.to_owned()),
                url: None,
            },
            None => PictureImage {
                id: None,
                url: Some(picture.to_owned()),
            },
        };
        Picture { image: Some(image) }
    }
}

/// `info`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContactInfo {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// Emails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emails: Option<Items<EmailItem>>,
    /// Phones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phones: Option<Items<PhoneItem>>,
    /// Street addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Items<AddressItem>>,
    /// Company.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// Job title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birthdate: Option<String>,
    /// BCP 47 tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Label keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_keys: Option<Items<String>>,
    /// Extended fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_fields: Option<ExtendedFields>,
    /// Profile picture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<Picture>,
}

/// The core's parts of a contact's `info`: name, emails, phones, and the details, with the
/// extended fields the caller made of `info.extendedFields` (checked, or filtered, by who
/// asks).
pub struct InfoParts {
    /// The name.
    pub name: core::ContactName,
    /// The emails.
    pub emails: Vec<core::ContactEmail>,
    /// The phones.
    pub phones: Vec<core::ContactPhone>,
    /// The rest.
    pub details: core::ContactDetails,
}

impl ContactInfo {
    /// The core's parts, with `extended_fields` as the details' extended fields.
    pub fn to_core(&self, extended_fields: BTreeMap<String, ExtendedValue>) -> InfoParts {
        let name = self.name.clone().unwrap_or_default();
        InfoParts {
            name: core::ContactName {
                first: name.first,
                last: name.last,
            },
            emails: self
                .emails
                .iter()
                .flat_map(|e| &e.items)
                .map(EmailItem::to_core)
                .collect(),
            phones: self
                .phones
                .iter()
                .flat_map(|p| &p.items)
                .map(PhoneItem::to_core)
                .collect(),
            details: core::ContactDetails {
                addresses: self
                    .addresses
                    .iter()
                    .flat_map(|a| &a.items)
                    .map(AddressItem::to_core)
                    .collect(),
                company: self.company.clone(),
                job_title: self.job_title.clone(),
                birthdate: self.birthdate.clone(),
                locale: self.locale.clone(),
                picture: self.picture.as_ref().and_then(Picture::to_core),
                labels: self.label_keys.as_ref().map(label_set).unwrap_or_default(),
                extended_fields,
            },
        }
    }
}

/// Update Contact's `info`: a field given replaces the contact's; `null` clears a single
/// value; a field not given stays.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContactInfoPatch {
    /// Name.
    #[serde(deserialize_with = "given")]
    pub name: Option<Option<Name>>,
    /// Emails (replaced whole).
    #[serde(deserialize_with = "given")]
    pub emails: Option<Option<Items<EmailItem>>>,
    /// Phones (replaced whole).
    #[serde(deserialize_with = "given")]
    pub phones: Option<Option<Items<PhoneItem>>>,
    /// Addresses (replaced whole).
    #[serde(deserialize_with = "given")]
    pub addresses: Option<Option<Items<AddressItem>>>,
    /// Company.
    #[serde(deserialize_with = "given")]
    pub company: Option<Option<String>>,
    /// Job title.
    #[serde(deserialize_with = "given")]
    pub job_title: Option<Option<String>>,
    /// Birth date.
    #[serde(deserialize_with = "given")]
    pub birthdate: Option<Option<String>>,
    /// Locale.
    #[serde(deserialize_with = "given")]
    pub locale: Option<Option<String>>,
    /// Label keys (replaced whole).
    #[serde(deserialize_with = "given")]
    pub label_keys: Option<Option<Items<String>>>,
    /// Extended fields (key by key).
    #[serde(deserialize_with = "given")]
    pub extended_fields: Option<Option<ExtendedFields>>,
    /// Picture.
    #[serde(deserialize_with = "given")]
    pub picture: Option<Option<Picture>>,
}

fn revision<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    super::Count::deserialize(d).map(|super::Count(n)| n)
}

/// A field that is present deserializes to `Some` (holding `None` for `null`); an absent
/// one stays at the `default` of `None`.
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `primaryInfo`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PrimaryInfo {
    /// Primary email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Primary phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// `primaryEmail` and `primaryPhone`: the entry and its statuses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PrimaryEntry {
    /// The address (for `primaryEmail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The number (for `primaryPhone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// `SubscriptionStatus`.
    pub subscription_status: String,
    /// `EmailDeliverabilityStatus` or `PhoneDeliverabilityStatus`.
    pub deliverability_status: String,
}

/// `source`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Source {
    /// `ContactSourceType`.
    pub source_type: String,
    /// The app that created the contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

/// `lastActivity`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LastActivity {
    /// When.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_date: Option<String>,
    /// `ContactActivityType`.
    pub activity_type: String,
}

/// A `Contact`. `id` and `revision` are always present; the rest may be projected away by a
/// query's `fields` or `fieldsets`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Contact {
    /// GUID.
    pub id: String,
    /// Starts at 1, grows by 1 on every change. Written as a number; read as a number or a
    /// string (protobuf's JSON mapping of an int64, as webhooks may carry it).
    #[serde(deserialize_with = "revision")]
    pub revision: u64,
    /// Where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_date: Option<String>,
    /// Last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_date: Option<String>,
    /// Last activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<LastActivity>,
    /// Primary email and phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_info: Option<PrimaryInfo>,
    /// Name, emails, phones, addresses and the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<ContactInfo>,
    /// The primary email with its statuses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_email: Option<PrimaryEntry>,
    /// The primary phone with its statuses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_phone: Option<PrimaryEntry>,
}

impl Contact {
    /// The wire form of a whole contact.
    pub fn from_core(c: &CoreContact) -> Contact {
        Contact::from_view(&ContactView::full(c))
    }

    /// The wire form of a (possibly projected) contact.
    pub fn from_view(v: &ContactView) -> Contact {
        let id_of = |ids: &[uuid::Uuid], i: usize| ids.get(i).map(ToString::to_string);
        let want = |p: ContactPart| v.wants(p);
        let d = v.details.as_ref();
        let info_parts = [ContactPart::Name, ContactPart::Emails, ContactPart::Phones];
        let any_info = info_parts
            .iter()
            .chain(&ContactPart::DETAILS)
            .any(|p| want(*p));
        let info = any_info.then(|| ContactInfo {
            name: v.name.as_ref().map(|n| Name {
                first: n.first.clone(),
                last: n.last.clone(),
            }),
            emails: v.emails.as_ref().map(|es| Items {
                items: es
                    .iter()
                    .enumerate()
                    .map(|(i, e)| EmailItem {
                        id: id_of(&v.entry_ids.emails, i),
                        email: e.email.clone(),
                        tag: Some(EmailTag::from_core(e.tag)),
                        primary: Some(e.primary),
                    })
                    .collect(),
            }),
            phones: v.phones.as_ref().map(|ps| Items {
                items: ps
                    .iter()
                    .enumerate()
                    .map(|(i, p)| PhoneItem {
                        id: id_of(&v.entry_ids.phones, i),
                        phone: p.phone.clone(),
                        tag: Some(p.tag.into()),
                        primary: Some(p.primary),
                    })
                    .collect(),
            }),
            addresses: d.filter(|_| want(ContactPart::Addresses)).map(|d| Items {
                items: d
                    .addresses
                    .iter()
                    .enumerate()
                    .map(|(i, a)| AddressItem {
                        id: id_of(&v.entry_ids.addresses, i),
                        tag: Some(a.tag.into()),
                        address: Address::from_core(&a.address),
                    })
                    .collect(),
            }),
            company: d.and_then(|d| d.company.clone()),
            job_title: d.and_then(|d| d.job_title.clone()),
            birthdate: d.and_then(|d| d.birthdate.clone()),
            locale: d.and_then(|d| d.locale.clone()),
            label_keys: d.filter(|_| want(ContactPart::Labels)).map(|d| Items {
                items: d.labels.iter().cloned().collect(),
            }),
            extended_fields: d.filter(|_| want(ContactPart::ExtendedFields)).map(|d| {
                ExtendedFields {
                    items: d
                        .extended_fields
                        .iter()
                        .map(|(k, v)| (k.clone(), extended_to_json(v)))
                        .collect(),
                }
            }),
            picture: d.and_then(|d| d.picture.as_deref()).map(Picture::from_core),
        });
        let (primary_email, primary_phone) = match &v.primary_info {
            Some((email, phone)) => (
                Some(PrimaryEntry {
                    email: email.clone(),
                    phone: None,
                    subscription_status: status(email.is_some()).into(),
                    deliverability_status: "NOT_SET".into(),
                }),
                Some(PrimaryEntry {
                    email: None,
                    phone: phone.clone(),
                    subscription_status: status(phone.is_some()).into(),
                    deliverability_status: if phone.is_some() {
                        "NOT_SET"
                    } else {
                        "NO_PHONE_DELIVERABILITY_STATUS"
                    }
                    .into(),
                }),
            ),
            None => (None, None),
        };
        Contact {
            id: v.id.as_uuid().to_string(),
            revision: v.revision,
            source: v.source.map(|s| Source {
                source_type: source_type_name(s.source_type).to_owned(),
                app_id: s.app_id.map(|a| a.as_uuid().to_string()),
            }),
            created_date: v.created_date.map(format_date),
            updated_date: v.updated_date.map(format_date),
            last_activity: v.last_activity.as_ref().map(|a| LastActivity {
                activity_date: Some(format_date(a.at)),
                activity_type: activity_type_name(&a.kind).to_owned(),
            }),
            info,
            primary_info: v.primary_info.as_ref().map(|(email, phone)| PrimaryInfo {
                email: email.clone(),
                phone: phone.clone(),
            }),
            primary_email,
            primary_phone,
        }
    }
}

fn status(has_entry: bool) -> &'static str {
    if has_entry {
        "NOT_SET"
    } else {
        "NO_SUBSCRIPTION_STATUS"
    }
}

impl Address {
    /// The wire form of a postal address.
    pub fn from_core(a: &core::PostalAddress) -> Address {
        Address {
            country: a.country.clone(),
            subdivision: a.subdivision.clone(),
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            address_line: a.address_line.clone(),
            street_address: StreetAddress {
                number: a.street_number.clone().unwrap_or_default(),
                name: a.street_name.clone().unwrap_or_default(),
            },
            address_line2: a.address_line2.clone(),
        }
    }

    /// The core's postal address; empty strings are parts not set.
    pub fn to_core(&self) -> core::PostalAddress {
        let set = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let part = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        core::PostalAddress {
            country: set(&self.country),
            subdivision: set(&self.subdivision),
            city: set(&self.city),
            postal_code: set(&self.postal_code),
            address_line: set(&self.address_line),
            street_number: part(&self.street_address.number),
            street_name: part(&self.street_address.name),
            address_line2: set(&self.address_line2),
        }
    }
}

/// An extended field's value as JSON: text as a string, a number as the number it was.
pub fn extended_to_json(v: &ExtendedValue) -> Value {
    match v {
        ExtendedValue::Text(t) => Value::String(t.clone()),
        ExtendedValue::Number(n) => n
            .parse::<serde_json::Number>()
            .map_or_else(|_| Value::String(n.clone()), Value::Number),
    }
}

/// An extended field's value from JSON: a string or a number; `Err` names what it is
/// instead.
pub fn extended_from_json(v: &Value) -> Result<ExtendedValue, &'static str> {
    match v {
        Value::String(s) => Ok(ExtendedValue::Text(s.clone())),
        Value::Number(n) => Ok(ExtendedValue::Number(n.to_string())),
        Value::Null => Err("null"),
        Value::Bool(_) => Err("a boolean"),
        Value::Array(_) => Err("an array"),
        Value::Object(_) => Err("an object"),
    }
}

impl EmailItem {
    /// The core's entry.
    pub fn to_core(&self) -> core::ContactEmail {
        core::ContactEmail {
            email: self.email.clone(),
            tag: self.tag.map_or(EntryTag::Untagged, Into::into),
            primary: self.primary.unwrap_or(false),
        }
    }
}

impl PhoneItem {
    /// The core's entry.
    pub fn to_core(&self) -> core::ContactPhone {
        core::ContactPhone {
            phone: self.phone.clone(),
            tag: self.tag.map_or(EntryTag::Untagged, Into::into),
            primary: self.primary.unwrap_or(false),
        }
    }
}

impl AddressItem {
    /// The core's entry.
    pub fn to_core(&self) -> core::ContactAddress {
        core::ContactAddress {
            tag: self.tag.map_or(core::AddressTag::Untagged, Into::into),
            address: self.address.to_core(),
        }
    }
}

/// Label keys as a set.
pub fn label_set(items: &Items<String>) -> BTreeSet<String> {
    items.items.iter().cloned().collect()
}

impl Contact {
    /// The core's contact from a contact Wix sent (a webhook's entity): an observed fact, so
    /// kept as Wix reports it, without the checks Create Contact makes. Only the id must be
    /// a GUID; a missing date is `fallback` (the event's time); an unknown source type is
    /// `OTHER`; extended fields that are neither strings nor numbers are left out.
    pub fn to_core(&self, fallback: inbox_core::Timestamp) -> Result<CoreContact, String> {
        let id = uuid::Uuid::parse_str(self.id.trim())
            .map(inbox_core::ContactId::from_uuid)
            .map_err(|_| format!("contact id {:?} is not a GUID", self.id))?;
        let date =
            |d: &Option<String>| d.as_deref().and_then(super::parse_date).unwrap_or(fallback);
        let created = date(&self.created_date);
        let info = self.info.clone().unwrap_or_default();
        let extended = info
            .extended_fields
            .iter()
            .flat_map(|f| &f.items)
            .filter_map(|(k, v)| extended_from_json(v).ok().map(|v| (k.clone(), v)))
            .collect();
        let parts = info.to_core(extended);
        let source = self
            .source
            .as_ref()
            .map_or_else(core::ContactSource::default, |s| core::ContactSource {
                source_type: source_type_of(&s.source_type).unwrap_or_default(),
                app_id: s
                    .app_id
                    .as_deref()
                    .and_then(|a| uuid::Uuid::parse_str(a.trim()).ok())
                    .map(inbox_core::AppId::from_uuid),
            });
        let last_activity = match &self.last_activity {
            Some(a) => core::ContactActivity {
                at: date(&a.activity_date),
                kind: match a.activity_type.as_str() {
                    "CONTACT_CREATED" => ActivityType::ContactCreated,
                    "CONTACT_MERGED" => ActivityType::ContactMerged,
                    other => ActivityType::Other(other.to_owned()),
                },
            },
            None => core::ContactActivity {
                at: created,
                kind: ActivityType::ContactCreated,
            },
        };
        Ok(CoreContact {
            id,
            revision: self.revision,
            created_date: created,
            updated_date: date(&self.updated_date),
            name: parts.name,
            emails: parts.emails,
            phones: parts.phones,
            details: parts.details,
            source,
            last_activity,
        })
    }
}
