//! The site's catalog: the contact labels and extended fields a contact may carry (Wix's
//! Labels and Extended Fields APIs).
//!
//! A definition is found or created by its display name (the key is derived from the name
//! once and never changes), renamed, and deleted; deleting one takes it off every contact
//! (the inbox decides that as a [`ContactUpdated`](crate::Event::ContactUpdated) per contact
//! that held it). A contact may only carry a `custom.*` label or extended field that the
//! catalog defines, and an extended field's value must fit its data type.
//!
//! Each key is a last-writer-wins register ordered by the stamp of the fact (the site's
//! sequence clock): a definition is live when its newest save is stamped after its newest
//! deletion. So the catalog, like the rest of the state, depends only on the set of facts
//! folded, not on their order or repeats.

use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::contacts::ExtendedValue;
use crate::ids::{Sequence, Timestamp};

/// The namespace of the labels and fields a caller creates.
pub const CUSTOM_NAMESPACE: &str = "custom";
/// Longest key, in characters (Wix's limit).
pub const MAX_KEY: usize = 80;
/// Longest label display name, in characters (Wix's limit).
pub const MAX_LABEL_NAME: usize = 180;
/// Longest extended field display name, in characters (Wix's limit).
pub const MAX_FIELD_NAME: usize = 150;
/// Most `custom` labels a site holds. Wix has a quota and does not publish it; this one is
/// inboxd's.
pub const MAX_CUSTOM_LABELS: usize = 1000;
/// Most `custom` extended fields a site holds. Wix has a quota and does not publish it;
/// this one is inboxd's.
pub const MAX_CUSTOM_FIELDS: usize = 100;

/// How a label came to be: Wix's `labelType`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum LabelType {
    /// One of Wix's own labels; it cannot be renamed or deleted.
    System,
    /// Made by Find Or Create Label, in the `custom` namespace.
    #[default]
    UserDefined,
    /// Made by an app built by Wix; it cannot be renamed or deleted through the API.
    WixAppDefined,
}

/// A contact label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LabelDefinition {
    /// `namespace.name`, derived from the display name when the label was made.
    pub key: String,
    /// The name shown in the dashboard.
    pub display_name: String,
    /// How it was made.
    pub label_type: LabelType,
    /// When it was made.
    pub created_date: Timestamp,
    /// When it was last renamed (or made).
    pub updated_date: Timestamp,
}

/// The type of an extended field's values: Wix's `dataType`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum FieldDataType {
    /// Any text.
    #[default]
    Text,
    /// A finite number.
    Number,
    /// A `YYYY-MM-DD` date.
    Date,
    /// A URL; `https://` is put in front of one given without a scheme.
    Url,
}

/// Whose an extended field is: Wix's `fieldType`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum FieldType {
    /// One of Wix's own fields; it cannot be renamed or deleted.
    System,
    /// Made by Find Or Create Extended Field, in the `custom` namespace.
    #[default]
    UserDefined,
}

/// An extended field: a named, typed value a contact may carry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FieldDefinition {
    /// `namespace.name`, derived from the display name when the field was made; a
    /// contact's value is at `info.extendedFields.items[key]`.
    pub key: String,
    /// The name shown in the contact list.
    pub display_name: String,
    /// The type of its values; fixed when the field is made.
    pub data_type: FieldDataType,
    /// Whose it is.
    pub field_type: FieldType,
    /// What a system field holds (Wix describes its own fields only).
    pub description: Option<String>,
    /// When it was made.
    pub created_date: Timestamp,
    /// When it was last renamed (or made).
    pub updated_date: Timestamp,
}

/// Which part of the catalog an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CatalogKind {
    /// Contact labels.
    Label,
    /// Extended fields.
    ExtendedField,
}

impl std::fmt::Display for CatalogKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CatalogKind::Label => "label",
            CatalogKind::ExtendedField => "extended field",
        })
    }
}

/// Why a label or extended field could not be created, renamed or deleted. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CatalogError {
    /// The display name is empty, blank, too long, or holds a control character.
    #[error("invalid {kind} display name: {reason}")]
    InvalidName {
        /// Labels or fields.
        kind: CatalogKind,
        /// What is wrong.
        reason: String,
    },
    /// No live definition has this key.
    #[error("{kind} {key:?} not found")]
    NotFound {
        /// Labels or fields.
        kind: CatalogKind,
        /// The key asked for.
        key: String,
    },
    /// The definition is Wix's (a system or Wix app one): it cannot be renamed or deleted.
    #[error("{kind} {key:?} is not a custom one and cannot be changed")]
    ReadOnly {
        /// Labels or fields.
        kind: CatalogKind,
        /// Its key.
        key: String,
    },
    /// Another definition already has the display name a rename asks for.
    #[error("{kind} {key:?} already has the display name {name:?}")]
    NameTaken {
        /// Labels or fields.
        kind: CatalogKind,
        /// The name.
        name: String,
        /// The definition that has it.
        key: String,
    },
    /// The site holds as many custom definitions as it may.
    #[error("the site already has {quota} custom {kind}s")]
    QuotaReached {
        /// Labels or fields.
        kind: CatalogKind,
        /// The most it may hold.
        quota: usize,
    },
}

/// What a register needs of a definition.
pub trait Definition: Clone + Ord {
    /// Its key.
    fn key(&self) -> &str;
    /// Its display name.
    fn display_name(&self) -> &str;
    /// Whether callers may rename and delete it.
    fn is_custom(&self) -> bool;
}

impl Definition for LabelDefinition {
    fn key(&self) -> &str {
        &self.key
    }
    fn display_name(&self) -> &str {
        &self.display_name
    }
    fn is_custom(&self) -> bool {
        self.label_type == LabelType::UserDefined
    }
}

impl Definition for FieldDefinition {
    fn key(&self) -> &str {
        &self.key
    }
    fn display_name(&self) -> &str {
        &self.display_name
    }
    fn is_custom(&self) -> bool {
        self.field_type == FieldType::UserDefined
    }
}

/// The definitions of one kind: per key, a last-writer-wins register of saves and
/// deletions ordered by stamp (a deletion wins a tie).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register<D: Definition> {
    /// Live definitions with the stamp of the save that counts.
    live: OrdMap<String, (Sequence, D)>,
    /// The newest deletion of each key ever deleted.
    deleted: OrdMap<String, Sequence>,
}

impl<D: Definition> Default for Register<D> {
    fn default() -> Self {
        Register {
            live: OrdMap::new(),
            deleted: OrdMap::new(),
        }
    }
}

impl<D: Definition> Register<D> {
    /// The live definition of `key`.
    pub fn get(&self, key: &str) -> Option<&D> {
        self.live.get(key).map(|(_, d)| d)
    }

    /// The live definitions, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &D> + '_ {
        self.live.values().map(|(_, d)| d)
    }

    /// How many definitions are live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The live definition with exactly this display name (names are unique among live
    /// definitions made here; of observed ones, the smallest key).
    pub fn named(&self, display_name: &str) -> Option<&D> {
        self.iter().find(|d| d.display_name() == display_name)
    }

    /// The stamp of the save that counts for `key`, if it is live.
    pub fn stamp_of(&self, key: &str) -> Option<Sequence> {
        self.live.get(key).map(|(s, _)| *s)
    }

    /// Folds a save: it counts if it is stamped after the key's last deletion and is the
    /// greatest save so far (by stamp, then by content, so that two saves with one stamp
    /// settle the same way in any order).
    pub(crate) fn save(&mut self, stamp: Sequence, definition: &D) {
        let key = definition.key();
        if self.deleted.get(key).is_some_and(|d| *d >= stamp) {
            return;
        }
        if let Some((s, d)) = self.live.get(key)
            && (*s, d) >= (stamp, definition)
        {
            return;
        }
        self.live
            .insert(key.to_owned(), (stamp, definition.clone()));
    }

    /// Folds a deletion: it removes a save stamped at or before it, and every later-folded
    /// save stamped at or before it.
    pub(crate) fn delete(&mut self, key: &str, stamp: Sequence) {
        if self.deleted.get(key).is_none_or(|d| *d < stamp) {
            self.deleted.insert(key.to_owned(), stamp);
        }
        if self.live.get(key).is_some_and(|(s, _)| *s <= stamp) {
            self.live.remove(key);
        }
    }

    fn custom_count(&self) -> usize {
        self.iter().filter(|d| d.is_custom()).count()
    }

    /// A key for a new definition named `display_name`: `custom.` and the name in lowercase
    /// ASCII letters and digits joined by `-` (`fallback` if it has none), with `-2`, `-3`,
    /// ... appended while the key is taken by a live definition.
    fn fresh_key(&self, display_name: &str, fallback: &str) -> String {
        let slug = slug(display_name);
        let stem = if slug.is_empty() { fallback } else { &slug };
        // Room for the namespace, the dot and a suffix of up to 8 characters.
        let room = MAX_KEY - CUSTOM_NAMESPACE.len() - 1 - 8;
        let stem: String = stem.chars().take(room).collect();
        let stem = stem.trim_end_matches('-');
        let base = format!("{CUSTOM_NAMESPACE}.{stem}");
        if !self.live.contains_key(&base) {
            return base;
        }
        (2u32..)
            .map(|n| format!("{base}-{n}"))
            .find(|k| !self.live.contains_key(k))
            .unwrap_or(base)
    }
}

/// The display name in lowercase ASCII letters and digits, other runs turned into one `-`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// A display name's rule: not blank, at most [`MAX_LABEL_NAME`] (labels) or
/// [`MAX_FIELD_NAME`] (fields) characters, no control character.
pub fn check_display_name(kind: CatalogKind, name: &str) -> Result<(), CatalogError> {
    let max = match kind {
        CatalogKind::Label => MAX_LABEL_NAME,
        CatalogKind::ExtendedField => MAX_FIELD_NAME,
    };
    let invalid = |reason: String| CatalogError::InvalidName { kind, reason };
    if name.trim().is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if name.chars().count() > max {
        return Err(invalid(format!("longer than {max} characters")));
    }
    if name.contains(char::is_control) {
        return Err(invalid("contains a control character".into()));
    }
    Ok(())
}

/// The labels and extended fields of a site.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    labels: Register<LabelDefinition>,
    fields: Register<FieldDefinition>,
}

impl Catalog {
    /// The labels.
    pub fn labels(&self) -> &Register<LabelDefinition> {
        &self.labels
    }

    /// The extended fields.
    pub fn fields(&self) -> &Register<FieldDefinition> {
        &self.fields
    }

    pub(crate) fn save_label(&mut self, stamp: Sequence, label: &LabelDefinition) {
        self.labels.save(stamp, label);
    }

    pub(crate) fn delete_label(&mut self, key: &str, stamp: Sequence) {
        self.labels.delete(key, stamp);
    }

    pub(crate) fn save_field(&mut self, stamp: Sequence, field: &FieldDefinition) {
        self.fields.save(stamp, field);
    }

    pub(crate) fn delete_field(&mut self, key: &str, stamp: Sequence) {
        self.fields.delete(key, stamp);
    }

    /// Find Or Create Label's decision: `None` when a live label has exactly this display
    /// name (it is the answer), else the label to make, of type `UserDefined`.
    pub fn plan_label(
        &self,
        display_name: &str,
        now: Timestamp,
    ) -> Result<Option<LabelDefinition>, CatalogError> {
        let kind = CatalogKind::Label;
        check_display_name(kind, display_name)?;
        if self.labels.named(display_name).is_some() {
            return Ok(None);
        }
        if self.labels.custom_count() >= MAX_CUSTOM_LABELS {
            return Err(CatalogError::QuotaReached {
                kind,
                quota: MAX_CUSTOM_LABELS,
            });
        }
        Ok(Some(LabelDefinition {
            key: self.labels.fresh_key(display_name, "label"),
            display_name: display_name.to_owned(),
            label_type: LabelType::UserDefined,
            created_date: now,
            updated_date: now,
        }))
    }

    /// Rename Label's decision: the label as renamed, or `None` when it already has the name.
    pub fn plan_label_rename(
        &self,
        key: &str,
        display_name: &str,
        now: Timestamp,
    ) -> Result<Option<LabelDefinition>, CatalogError> {
        let current = plan_change(&self.labels, CatalogKind::Label, key)?;
        check_display_name(CatalogKind::Label, display_name)?;
        renamed(&self.labels, CatalogKind::Label, current, display_name).map(|changed| {
            changed.then(|| LabelDefinition {
                display_name: display_name.to_owned(),
                updated_date: renamed_at(now, current.updated_date),
                ..current.clone()
            })
        })
    }

    /// Delete Label's check: the label exists and is a custom one.
    pub fn plan_label_delete(&self, key: &str) -> Result<(), CatalogError> {
        plan_change(&self.labels, CatalogKind::Label, key).map(|_| ())
    }

    /// Find Or Create Extended Field's decision: `None` when a live field has exactly this
    /// display name (it is the answer, whatever its data type), else the field to make.
    pub fn plan_field(
        &self,
        display_name: &str,
        data_type: FieldDataType,
        now: Timestamp,
    ) -> Result<Option<FieldDefinition>, CatalogError> {
        let kind = CatalogKind::ExtendedField;
        check_display_name(kind, display_name)?;
        if self.fields.named(display_name).is_some() {
            return Ok(None);
        }
        if self.fields.custom_count() >= MAX_CUSTOM_FIELDS {
            return Err(CatalogError::QuotaReached {
                kind,
                quota: MAX_CUSTOM_FIELDS,
            });
        }
        Ok(Some(FieldDefinition {
            key: self.fields.fresh_key(display_name, "field"),
            display_name: display_name.to_owned(),
            data_type,
            field_type: FieldType::UserDefined,
            description: None,
            created_date: now,
            updated_date: now,
        }))
    }

    /// Rename Extended Field's decision: the field as renamed, or `None` when it already has
    /// the name.
    pub fn plan_field_rename(
        &self,
        key: &str,
        display_name: &str,
        now: Timestamp,
    ) -> Result<Option<FieldDefinition>, CatalogError> {
        let kind = CatalogKind::ExtendedField;
        let current = plan_change(&self.fields, kind, key)?;
        check_display_name(kind, display_name)?;
        renamed(&self.fields, kind, current, display_name).map(|changed| {
            changed.then(|| FieldDefinition {
                display_name: display_name.to_owned(),
                updated_date: renamed_at(now, current.updated_date),
                ..current.clone()
            })
        })
    }

    /// Delete Extended Field's check: the field exists and is a custom one.
    pub fn plan_field_delete(&self, key: &str) -> Result<(), CatalogError> {
        plan_change(&self.fields, CatalogKind::ExtendedField, key).map(|_| ())
    }

    /// Whether a contact may carry the label: a `custom` one must be defined; keys of other
    /// namespaces are Wix's and its apps', which the catalog may not know.
    pub fn label_allowed(&self, key: &str) -> bool {
        !is_custom_key(key) || self.labels.get(key).is_some()
    }

    /// The extended field of `key`, if the catalog defines it.
    pub fn field(&self, key: &str) -> Option<&FieldDefinition> {
        self.fields.get(key)
    }
}

/// When a rename made at `now` is dated: `now`, and always after the definition's last
/// change, so that a definition made here was renamed exactly when its dates differ.
fn renamed_at(now: Timestamp, last: Timestamp) -> Timestamp {
    now.max(Timestamp::from_micros(last.as_micros().saturating_add(1)))
}

/// A value as a contact holds it in `field`: it must fit the field's data type (a URL
/// without a scheme gets `https://`). `Err` says what is wrong.
pub fn fit_value(field: &FieldDefinition, value: &ExtendedValue) -> Result<ExtendedValue, String> {
    let key = &field.key;
    match (field.data_type, value) {
        (FieldDataType::Number, ExtendedValue::Number(_))
        | (FieldDataType::Text, ExtendedValue::Text(_)) => Ok(value.clone()),
        (FieldDataType::Date, ExtendedValue::Text(t)) => {
            if t.len() == 10 && chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok() {
                Ok(value.clone())
            } else {
                Err(format!("{key:?} holds dates; {t:?} is not YYYY-MM-DD"))
            }
        }
        (FieldDataType::Url, ExtendedValue::Text(t)) => {
            if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c.is_control()) {
                Err(format!("{key:?} holds URLs; {t:?} is not one"))
            } else if t.contains("://") {
                Ok(value.clone())
            } else {
                Ok(ExtendedValue::Text(format!("https://{t}")))
            }
        }
        (data_type, _) => Err(format!(
            "{key:?} holds {}",
            match data_type {
                FieldDataType::Number => "numbers",
                FieldDataType::Text => "text",
                FieldDataType::Date => "dates",
                FieldDataType::Url => "URLs",
            }
        )),
    }
}

/// Whether a key is in the `custom` namespace.
pub fn is_custom_key(key: &str) -> bool {
    key.split_once('.')
        .is_some_and(|(namespace, _)| namespace == CUSTOM_NAMESPACE)
}

fn plan_change<'a, D: Definition>(
    register: &'a Register<D>,
    kind: CatalogKind,
    key: &str,
) -> Result<&'a D, CatalogError> {
    let current = register.get(key).ok_or_else(|| CatalogError::NotFound {
        kind,
        key: key.to_owned(),
    })?;
    if !current.is_custom() {
        return Err(CatalogError::ReadOnly {
            kind,
            key: key.to_owned(),
        });
    }
    Ok(current)
}

/// Whether renaming `current` to `name` changes it; refused when another has the name.
fn renamed<D: Definition>(
    register: &Register<D>,
    kind: CatalogKind,
    current: &D,
    name: &str,
) -> Result<bool, CatalogError> {
    if current.display_name() == name {
        return Ok(false);
    }
    if let Some(other) = register.named(name) {
        return Err(CatalogError::NameTaken {
            kind,
            name: name.to_owned(),
            key: other.key().to_owned(),
        });
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn label(key: &str, name: &str) -> LabelDefinition {
        LabelDefinition {
            key: key.into(),
            display_name: name.into(),
            label_type: LabelType::UserDefined,
            created_date: Timestamp::EPOCH,
            updated_date: Timestamp::EPOCH,
        }
    }

    #[test]
    fn keys_are_slugs_made_unique() {
        let mut c = Catalog::default();
        let now = Timestamp::EPOCH;
        let vip = c.plan_label("VIP Customers!", now).unwrap().unwrap();
        assert_eq!(vip.key, "custom.vip-customers");
        c.save_label(Sequence(1), &vip);
        let again = c.plan_label("vip customers", now).unwrap().unwrap();
        assert_eq!(again.key, "custom.vip-customers-2");
        assert_eq!(c.plan_label("VIP Customers!", now).unwrap(), None);
        let odd = c.plan_label("顧客", now).unwrap().unwrap();
        assert_eq!(odd.key, "custom.label");
        let long = c.plan_label(&"x".repeat(180), now).unwrap().unwrap();
        assert!(long.key.chars().count() <= MAX_KEY);
    }

    #[test]
    fn a_register_settles_the_same_in_any_order() {
        let a = label("custom.a", "A");
        let b = label("custom.a", "B");
        let facts: [(bool, Sequence, &LabelDefinition); 4] = [
            (true, Sequence(3), &a),
            (false, Sequence(5), &a),
            (true, Sequence(7), &b),
            (true, Sequence(7), &a),
        ];
        let fold = |order: &[usize]| {
            let mut r = Register::default();
            for &i in order {
                let (save, stamp, d) = facts[i];
                if save {
                    r.save(stamp, d);
                } else {
                    r.delete(&d.key, stamp);
                }
            }
            r
        };
        let first = fold(&[0, 1, 2, 3]);
        assert_eq!(
            first.get("custom.a").map(|d| &d.display_name[..]),
            Some("B")
        );
        for order in [
            &[3, 2, 1, 0][..],
            &[1, 0, 3, 2],
            &[2, 1, 3, 0],
            &[0, 2, 2, 1, 3, 0],
        ] {
            assert_eq!(fold(order), first, "{order:?}");
        }
    }

    #[test]
    fn a_deletion_wins_a_tie_and_loses_to_a_later_save() {
        let a = label("custom.a", "A");
        let mut r = Register::default();
        r.save(Sequence(4), &a);
        r.delete("custom.a", Sequence(4));
        assert!(r.get("custom.a").is_none());
        r.save(Sequence(4), &a);
        assert!(r.get("custom.a").is_none());
        r.save(Sequence(9), &a);
        assert!(r.get("custom.a").is_some());
    }

    #[test]
    fn values_must_fit_their_field() {
        let mut c = Catalog::default();
        let now = Timestamp::EPOCH;
        for (name, t) in [
            ("Age", FieldDataType::Number),
            ("Met", FieldDataType::Date),
            ("Site", FieldDataType::Url),
            ("Note", FieldDataType::Text),
        ] {
            let f = c.plan_field(name, t, now).unwrap().unwrap();
            c.save_field(Sequence(1), &f);
        }
        let text = |s: &str| ExtendedValue::Text(s.into());
        let num = ExtendedValue::Number("41".into());
        let fit = |key: &str, v: &ExtendedValue| fit_value(c.field(key).unwrap(), v);
        assert_eq!(fit("custom.age", &num), Ok(num.clone()));
        assert!(fit("custom.age", &text("41")).is_err());
        assert!(fit("custom.met", &text("2024-02-30")).is_err());
        assert!(fit("custom.met", &text("2024-02-29")).is_ok());
        assert_eq!(
            fit("custom.site", &text("example.com")),
            Ok(text("https://example.com"))
        );
        assert_eq!(
            fit("custom.site", &text("ftp://example.com")),
            Ok(text("ftp://example.com"))
        );
        assert!(fit("custom.site", &text("a b")).is_err());
        assert!(fit("custom.note", &num).is_err());
        assert!(c.field("custom.nope").is_none());
    }

    #[test]
    fn wix_definitions_are_read_only() {
        let mut c = Catalog::default();
        let system = LabelDefinition {
            label_type: LabelType::System,
            ..label("contacts.customers", "Customers")
        };
        c.save_label(Sequence(1), &system);
        assert!(matches!(
            c.plan_label_delete("contacts.customers"),
            Err(CatalogError::ReadOnly { .. })
        ));
        assert!(matches!(
            c.plan_label_rename("contacts.customers", "X", Timestamp::EPOCH),
            Err(CatalogError::ReadOnly { .. })
        ));
        assert!(c.label_allowed("contacts.anything"));
        assert!(!c.label_allowed("custom.unknown"));
    }
}
