//! Contacts v4 Labels (`/contacts/v4/labels`) and Extended Fields
//! (`/contacts/v4/extended-fields`): their JSON shapes, their requests into core commands,
//! and their list and query calls over the core's [`Catalog`].
//!
//! Both APIs have the same calls, so one set of functions serves both, told apart by
//! [`CatalogKind`]:
//!
//! | call | path | core |
//! |---|---|---|
//! | Find Or Create | `POST /contacts/v4/labels` `{displayName}`; fields also `dataType` | `FindOrCreateLabel`, `FindOrCreateExtendedField` |
//! | Get | `GET .../{key}` | [`Catalog::labels`], [`Catalog::fields`] |
//! | Rename | `PATCH .../{key}` `{label: {displayName}}` or `{field: {displayName}}` | `RenameLabel`, `RenameExtendedField` |
//! | Delete | `DELETE .../{key}` | `DeleteLabel`, `DeleteExtendedField` |
//! | List | `GET ...` `?labelType= \| fieldType=, namespace=, startsWith=, sort.fieldName=, sort.order=, paging.limit=, paging.offset=` | |
//! | Query | `POST .../query` `{query: {filter, sort: [{fieldName, order}], paging: {limit, offset}}}` | |
//!
//! # Query
//!
//! Filters are Mongo-like, as in Query Contacts: `{"field": value}` (an implicit `$eq`),
//! `{"field": {"$op": value}}`, `$and` / `$or` over a non-empty array, `$not` over one filter.
//!
//! | field | operators |
//! |---|---|
//! | `key` | `$eq $ne $in` |
//! | `displayName` | `$eq $ne $in $startsWith` (case-sensitive, as Wix's list `startsWith`) |
//! | `createdDate`, `updatedDate` | `$eq $ne $gt $gte $lt $lte` (RFC 3339, or `{"$date": ..}`) |
//! | `namespace` | `$eq $ne` |
//! | `labelType` (labels), `fieldType` (fields) | `$eq` |
//! | `dataType` (fields) | `$eq $ne` |
//!
//! Sorting is on `displayName`, `createdDate` or `updatedDate` (one entry; `ASC` unless
//! `DESC`); without one, definitions come by display name, then key. `paging.limit` is 1 to
//! 2000 (default 1000 for labels, 100 for fields, as Wix documents), `paging.offset` from 0.
//! A refusal is Wix's: `MALFORMED_FILTER`, `UNSUPPORTED_FILTER_FIELD`,
//! `UNSUPPORTED_FILTER_OPERATOR`, `UNSUPPORTED_FILTER_VALUE`, `INVALID_SORT`, or a validation
//! error on `query.paging`.

use inbox_core::catalog::{
    Catalog, CatalogKind, FieldDataType, FieldDefinition, FieldType, LabelDefinition, LabelType,
};
use inbox_core::{Command, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{FieldViolation, Rule, WixError};
use crate::wire::{format_date, parse_date};

/// Most definitions a list or query answers at once.
pub const MAX_LIMIT: usize = 2000;
/// How deep a filter nests.
pub const MAX_FILTER_DEPTH: usize = 16;

// ------------------------------------------------------------------------------------------
// shapes

/// `labelType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)] // each variant is the Wix value of the same name
pub enum LabelTypeWire {
    System,
    UserDefined,
    WixAppDefined,
}

impl From<LabelType> for LabelTypeWire {
    fn from(t: LabelType) -> Self {
        match t {
            LabelType::System => LabelTypeWire::System,
            LabelType::UserDefined => LabelTypeWire::UserDefined,
            LabelType::WixAppDefined => LabelTypeWire::WixAppDefined,
        }
    }
}

impl From<LabelTypeWire> for LabelType {
    fn from(t: LabelTypeWire) -> Self {
        match t {
            LabelTypeWire::System => LabelType::System,
            LabelTypeWire::UserDefined => LabelType::UserDefined,
            LabelTypeWire::WixAppDefined => LabelType::WixAppDefined,
        }
    }
}

/// `dataType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)] // each variant is the Wix value of the same name
pub enum DataTypeWire {
    Text,
    Number,
    Date,
    Url,
}

impl From<FieldDataType> for DataTypeWire {
    fn from(t: FieldDataType) -> Self {
        match t {
            FieldDataType::Text => DataTypeWire::Text,
            FieldDataType::Number => DataTypeWire::Number,
            FieldDataType::Date => DataTypeWire::Date,
            FieldDataType::Url => DataTypeWire::Url,
        }
    }
}

impl From<DataTypeWire> for FieldDataType {
    fn from(t: DataTypeWire) -> Self {
        match t {
            DataTypeWire::Text => FieldDataType::Text,
            DataTypeWire::Number => FieldDataType::Number,
            DataTypeWire::Date => FieldDataType::Date,
            DataTypeWire::Url => FieldDataType::Url,
        }
    }
}

/// `fieldType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)] // each variant is the Wix value of the same name
pub enum FieldTypeWire {
    System,
    UserDefined,
}

impl From<FieldType> for FieldTypeWire {
    fn from(t: FieldType) -> Self {
        match t {
            FieldType::System => FieldTypeWire::System,
            FieldType::UserDefined => FieldTypeWire::UserDefined,
        }
    }
}

impl From<FieldTypeWire> for FieldType {
    fn from(t: FieldTypeWire) -> Self {
        match t {
            FieldTypeWire::System => FieldType::System,
            FieldTypeWire::UserDefined => FieldType::UserDefined,
        }
    }
}

fn namespace_of(key: &str) -> Option<String> {
    key.split_once('.').map(|(n, _)| n.to_owned())
}

fn read_date(path: &str, text: Option<&str>, default: Timestamp) -> Result<Timestamp, String> {
    match text {
        None => Ok(default),
        Some(t) => parse_date(t).ok_or_else(|| format!("{path}: {t:?} is not an RFC 3339 date")),
    }
}

/// A contact label: Wix's `ContactLabel`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactLabel {
    /// `custom` for the labels callers make.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The namespace's name in the dashboard (Wix's; the emulator writes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_display_name: Option<String>,
    /// `namespace.name`.
    pub key: String,
    /// The name shown.
    pub display_name: String,
    /// How it was made.
    pub label_type: LabelTypeWire,
    /// When it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date: Option<String>,
    /// When it was last renamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_date: Option<String>,
}

impl ContactLabel {
    /// The wire form of a label.
    pub fn from_core(l: &LabelDefinition) -> Self {
        ContactLabel {
            namespace: namespace_of(&l.key),
            namespace_display_name: None,
            key: l.key.clone(),
            display_name: l.display_name.clone(),
            label_type: l.label_type.into(),
            created_date: Some(format_date(l.created_date)),
            updated_date: Some(format_date(l.updated_date)),
        }
    }

    /// The label a Wix event carries, as the core keeps it (dates it lacks are `at`). An
    /// observed fact is not checked beyond its shape.
    pub fn to_core(&self, at: Timestamp) -> Result<LabelDefinition, String> {
        let created = read_date("createdDate", self.created_date.as_deref(), at)?;
        Ok(LabelDefinition {
            key: self.key.clone(),
            display_name: self.display_name.clone(),
            label_type: self.label_type.into(),
            created_date: created,
            updated_date: read_date("updatedDate", self.updated_date.as_deref(), created)?,
        })
    }
}

/// An extended field: Wix's `ExtendedField`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedField {
    /// `custom` for the fields callers make.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `namespace.name`; a contact's value is at `info.extendedFields.items[key]`.
    pub key: String,
    /// The name shown.
    pub display_name: String,
    /// The type of its values.
    pub data_type: DataTypeWire,
    /// Whose it is.
    pub field_type: FieldTypeWire,
    /// When it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date: Option<String>,
    /// When it was last renamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_date: Option<String>,
    /// What a system field holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ExtendedField {
    /// The wire form of a field.
    pub fn from_core(f: &FieldDefinition) -> Self {
        ExtendedField {
            namespace: namespace_of(&f.key),
            key: f.key.clone(),
            display_name: f.display_name.clone(),
            data_type: f.data_type.into(),
            field_type: f.field_type.into(),
            created_date: Some(format_date(f.created_date)),
            updated_date: Some(format_date(f.updated_date)),
            description: f.description.clone(),
        }
    }

    /// The field a Wix event carries, as the core keeps it (see [`ContactLabel::to_core`]).
    pub fn to_core(&self, at: Timestamp) -> Result<FieldDefinition, String> {
        let created = read_date("createdDate", self.created_date.as_deref(), at)?;
        Ok(FieldDefinition {
            key: self.key.clone(),
            display_name: self.display_name.clone(),
            data_type: self.data_type.into(),
            field_type: self.field_type.into(),
            description: self.description.clone(),
            created_date: created,
            updated_date: read_date("updatedDate", self.updated_date.as_deref(), created)?,
        })
    }
}

// ------------------------------------------------------------------------------------------
// requests

/// Find Or Create Label's and Find Or Create Extended Field's body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FindOrCreateRequest {
    /// The display name to find, or to give the new definition.
    pub display_name: Option<String>,
    /// Fields only: the type of a new field's values (`TEXT` when not given).
    pub data_type: Option<DataTypeWire>,
    /// Ignored: the emulator has one language.
    pub language: Option<String>,
}

impl FindOrCreateRequest {
    /// The display name, required.
    pub fn display_name(&self) -> Result<&str, WixError> {
        self.display_name.as_deref().ok_or_else(|| {
            WixError::invalid(FieldViolation::new(
                "displayName",
                "displayName is required",
                Rule::RequiredField,
            ))
        })
    }

    /// The command it asks for.
    pub fn to_command(&self, kind: CatalogKind) -> Result<Command, WixError> {
        let display_name = self.display_name()?.to_owned();
        Ok(match kind {
            CatalogKind::Label => Command::FindOrCreateLabel { display_name },
            CatalogKind::ExtendedField => Command::FindOrCreateExtendedField {
                display_name,
                data_type: self.data_type.map_or(FieldDataType::Text, Into::into),
            },
        })
    }
}

/// What a rename body holds under `label` or `field`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Renamed {
    /// The key (the path's; a different one here is refused).
    pub key: Option<String>,
    /// The new display name.
    pub display_name: Option<String>,
}

/// Rename Label's (`{label: {displayName}}`) and Rename Extended Field's
/// (`{field: {displayName}}`) body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RenameRequest {
    /// A label's new name.
    pub label: Option<Renamed>,
    /// A field's new name.
    pub field: Option<Renamed>,
    /// Ignored.
    pub language: Option<String>,
}

impl RenameRequest {
    /// The command it asks for, on the definition of `key` (the path's).
    pub fn to_command(&self, kind: CatalogKind, key: &str) -> Result<Command, WixError> {
        let (part, name) = match kind {
            CatalogKind::Label => (&self.label, "label"),
            CatalogKind::ExtendedField => (&self.field, "field"),
        };
        let renamed = part.as_ref().ok_or_else(|| {
            WixError::invalid(FieldViolation::new(
                name,
                format!("{name} is required"),
                Rule::RequiredField,
            ))
        })?;
        if let Some(other) = &renamed.key
            && other != key
        {
            return Err(WixError::invalid(FieldViolation::new(
                format!("{name}.key"),
                format!("{other:?} is not the key of the path ({key:?})"),
                Rule::Other,
            )));
        }
        let display_name = renamed.display_name.clone().ok_or_else(|| {
            WixError::invalid(FieldViolation::new(
                format!("{name}.displayName"),
                format!("{name}.displayName is required"),
                Rule::RequiredField,
            ))
        })?;
        let key = key.to_owned();
        Ok(match kind {
            CatalogKind::Label => Command::RenameLabel { key, display_name },
            CatalogKind::ExtendedField => Command::RenameExtendedField { key, display_name },
        })
    }
}

/// The command of Delete Label or Delete Extended Field.
pub fn delete_command(kind: CatalogKind, key: &str) -> Command {
    let key = key.to_owned();
    match kind {
        CatalogKind::Label => Command::DeleteLabel { key },
        CatalogKind::ExtendedField => Command::DeleteExtendedField { key },
    }
}

// ------------------------------------------------------------------------------------------
// answers

/// One label or field as an answer: `{label}` or `{field}`, with `newLabel` / `newField`
/// for Find Or Create.
pub fn definition_answer(
    catalog: &Catalog,
    kind: CatalogKind,
    key: &str,
    new: Option<bool>,
) -> Option<Value> {
    let (name, value) = match kind {
        CatalogKind::Label => (
            "label",
            serde_json::to_value(ContactLabel::from_core(catalog.labels().get(key)?)).ok()?,
        ),
        CatalogKind::ExtendedField => (
            "field",
            serde_json::to_value(ExtendedField::from_core(catalog.fields().get(key)?)).ok()?,
        ),
    };
    let mut out = Map::new();
    out.insert(name.into(), value);
    if let Some(new) = new {
        let flag = match kind {
            CatalogKind::Label => "newLabel",
            CatalogKind::ExtendedField => "newField",
        };
        out.insert(flag.into(), Value::Bool(new));
    }
    Some(Value::Object(out))
}

/// The key of the live definition with this display name.
pub fn key_named(catalog: &Catalog, kind: CatalogKind, display_name: &str) -> Option<String> {
    match kind {
        CatalogKind::Label => catalog.labels().named(display_name).map(|l| l.key.clone()),
        CatalogKind::ExtendedField => catalog.fields().named(display_name).map(|f| f.key.clone()),
    }
}

/// Get Label, Get Extended Field: the definition, or `LABEL_NOT_FOUND` /
/// `EXTENDED_FIELD_NOT_FOUND`.
pub fn get(catalog: &Catalog, kind: CatalogKind, key: &str) -> Result<Value, WixError> {
    definition_answer(catalog, kind, key, None).ok_or_else(|| {
        inbox_core::catalog::CatalogError::NotFound {
            kind,
            key: key.to_owned(),
        }
        .into()
    })
}

// ------------------------------------------------------------------------------------------
// list and query

/// A definition as the query evaluator reads it.
struct Row<'a> {
    key: &'a str,
    display_name: &'a str,
    created: Timestamp,
    updated: Timestamp,
    /// `labelType` or `fieldType`, as Wix writes it.
    kind: &'static str,
    /// `dataType` as Wix writes it (fields only).
    data_type: Option<&'static str>,
}

impl Row<'_> {
    fn namespace(&self) -> &str {
        self.key.split_once('.').map_or("", |(n, _)| n)
    }
}

fn rows(catalog: &Catalog, kind: CatalogKind) -> Vec<Row<'_>> {
    match kind {
        CatalogKind::Label => catalog
            .labels()
            .iter()
            .map(|l| Row {
                key: &l.key,
                display_name: &l.display_name,
                created: l.created_date,
                updated: l.updated_date,
                kind: match l.label_type {
                    LabelType::System => "SYSTEM",
                    LabelType::UserDefined => "USER_DEFINED",
                    LabelType::WixAppDefined => "WIX_APP_DEFINED",
                },
                data_type: None,
            })
            .collect(),
        CatalogKind::ExtendedField => catalog
            .fields()
            .iter()
            .map(|f| Row {
                key: &f.key,
                display_name: &f.display_name,
                created: f.created_date,
                updated: f.updated_date,
                kind: match f.field_type {
                    FieldType::System => "SYSTEM",
                    FieldType::UserDefined => "USER_DEFINED",
                },
                data_type: Some(match f.data_type {
                    FieldDataType::Text => "TEXT",
                    FieldDataType::Number => "NUMBER",
                    FieldDataType::Date => "DATE",
                    FieldDataType::Url => "URL",
                }),
            })
            .collect(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Key,
    DisplayName,
    CreatedDate,
    UpdatedDate,
    Namespace,
    /// `labelType` or `fieldType`.
    Type,
    DataType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    In,
    StartsWith,
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    Text(String),
    Texts(Vec<String>),
    Date(Timestamp),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Cond(Field, Op, Val),
}

fn field_named(kind: CatalogKind, name: &str) -> Option<Field> {
    Some(match (kind, name) {
        (_, "key") => Field::Key,
        (_, "displayName" | "display_name") => Field::DisplayName,
        (_, "createdDate" | "created_date" | "_createdDate") => Field::CreatedDate,
        (_, "updatedDate" | "updated_date" | "_updatedDate") => Field::UpdatedDate,
        (_, "namespace") => Field::Namespace,
        (CatalogKind::Label, "labelType" | "label_type") => Field::Type,
        (CatalogKind::ExtendedField, "fieldType" | "field_type") => Field::Type,
        (CatalogKind::ExtendedField, "dataType" | "data_type") => Field::DataType,
        _ => return None,
    })
}

fn supports(field: Field, op: Op) -> bool {
    use Op::*;
    match field {
        Field::Key => matches!(op, Eq | Ne | In),
        Field::DisplayName => matches!(op, Eq | Ne | In | StartsWith),
        Field::CreatedDate | Field::UpdatedDate => matches!(op, Eq | Ne | Gt | Gte | Lt | Lte),
        Field::Namespace | Field::DataType => matches!(op, Eq | Ne),
        Field::Type => op == Eq,
    }
}

fn filter_error(code: &'static str, path: &str, reason: String) -> WixError {
    WixError::application(400, code, format!("{path}: {reason}"))
        .with_data(serde_json::json!({"path": path}))
}

fn malformed(path: &str, reason: impl Into<String>) -> WixError {
    filter_error("MALFORMED_FILTER", path, reason.into())
}

fn parse_filter(
    kind: CatalogKind,
    v: &Value,
    path: &str,
    depth: usize,
) -> Result<Filter, WixError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(malformed(
            path,
            format!("nests deeper than {MAX_FILTER_DEPTH} levels"),
        ));
    }
    let object = v
        .as_object()
        .ok_or_else(|| malformed(path, "a filter is an object"))?;
    let mut all = Vec::new();
    for (name, value) in object {
        let here = format!("{path}.{name}");
        match name.as_str() {
            "$and" | "$or" => {
                let items = value
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| malformed(&here, "takes a non-empty array of filters"))?;
                let parts = items
                    .iter()
                    .enumerate()
                    .map(|(i, f)| parse_filter(kind, f, &format!("{here}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if name == "$and" {
                    Filter::All(parts)
                } else {
                    Filter::Any(parts)
                });
            }
            "$not" => all.push(Filter::Not(Box::new(parse_filter(
                kind,
                value,
                &here,
                depth + 1,
            )?))),
            other if other.starts_with('$') => {
                return Err(malformed(&here, format!("{other} is not an operator here")));
            }
            other => {
                let field = field_named(kind, other).ok_or_else(|| {
                    filter_error(
                        "UNSUPPORTED_FILTER_FIELD",
                        &here,
                        format!("{other:?} cannot be filtered on"),
                    )
                })?;
                let ops: Vec<(&str, &Value)> = match value.as_object() {
                    Some(o) if !o.contains_key("$date") => {
                        if o.is_empty() {
                            return Err(malformed(&here, "an empty condition"));
                        }
                        o.iter().map(|(k, v)| (k.as_str(), v)).collect()
                    }
                    _ => vec![("$eq", value)],
                };
                for (op, operand) in ops {
                    all.push(condition(field, op, operand, &format!("{here}.{op}"))?);
                }
            }
        }
    }
    Ok(Filter::All(all))
}

fn condition(field: Field, op: &str, v: &Value, path: &str) -> Result<Filter, WixError> {
    let op = match op {
        "$eq" => Op::Eq,
        "$ne" => Op::Ne,
        "$in" => Op::In,
        "$startsWith" => Op::StartsWith,
        "$gt" => Op::Gt,
        "$gte" => Op::Gte,
        "$lt" => Op::Lt,
        "$lte" => Op::Lte,
        other => return Err(malformed(path, format!("{other} is not an operator"))),
    };
    if !supports(field, op) {
        return Err(filter_error(
            "UNSUPPORTED_FILTER_OPERATOR",
            path,
            format!("{op:?} is not supported on this field"),
        ));
    }
    let bad_value = |reason: String| filter_error("UNSUPPORTED_FILTER_VALUE", path, reason);
    let value = if matches!(field, Field::CreatedDate | Field::UpdatedDate) {
        let text = match v {
            Value::String(s) => Some(s.as_str()),
            Value::Object(o) => o.get("$date").and_then(Value::as_str),
            _ => None,
        };
        Val::Date(
            text.and_then(parse_date)
                .ok_or_else(|| bad_value(format!("{v} is not an RFC 3339 date")))?,
        )
    } else if op == Op::In {
        let items = v
            .as_array()
            .ok_or_else(|| bad_value("$in takes an array of strings".into()))?;
        Val::Texts(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| bad_value("$in takes an array of strings".into()))?,
        )
    } else {
        Val::Text(
            v.as_str()
                .ok_or_else(|| bad_value(format!("{v} is not a string")))?
                .to_owned(),
        )
    };
    Ok(Filter::Cond(field, op, value))
}

fn matches(f: &Filter, r: &Row<'_>) -> bool {
    match f {
        Filter::All(fs) => fs.iter().all(|f| matches(f, r)),
        Filter::Any(fs) => fs.iter().any(|f| matches(f, r)),
        Filter::Not(f) => !matches(f, r),
        Filter::Cond(field, op, value) => {
            if let Val::Date(d) = value {
                let at = if *field == Field::CreatedDate {
                    r.created
                } else {
                    r.updated
                };
                return match op {
                    Op::Eq => at == *d,
                    Op::Ne => at != *d,
                    Op::Gt => at > *d,
                    Op::Gte => at >= *d,
                    Op::Lt => at < *d,
                    Op::Lte => at <= *d,
                    Op::In | Op::StartsWith => false,
                };
            }
            let own = match field {
                Field::Key => r.key,
                Field::DisplayName => r.display_name,
                Field::Namespace => r.namespace(),
                Field::Type => r.kind,
                Field::DataType => r.data_type.unwrap_or(""),
                Field::CreatedDate | Field::UpdatedDate => return false,
            };
            match (op, value) {
                (Op::Eq, Val::Text(t)) => own == t,
                (Op::Ne, Val::Text(t)) => own != t,
                (Op::StartsWith, Val::Text(t)) => own.starts_with(t.as_str()),
                (Op::In, Val::Texts(ts)) => ts.iter().any(|t| t == own),
                _ => false,
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortField {
    DisplayName,
    CreatedDate,
    UpdatedDate,
}

/// A parsed list or query: what to keep, in which order, which page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogQuery {
    kind: CatalogKind,
    filter: Filter,
    sort: Option<(SortField, bool)>,
    limit: usize,
    offset: usize,
}

fn default_limit(kind: CatalogKind) -> usize {
    match kind {
        CatalogKind::Label => 1000,
        CatalogKind::ExtendedField => 100,
    }
}

fn parse_sort(sort: Option<&Value>) -> Result<Option<(SortField, bool)>, WixError> {
    let invalid = |reason: String| WixError::application(400, "INVALID_SORT", reason);
    let entry = match sort {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => match a.as_slice() {
            [] => return Ok(None),
            [one] => one,
            _ => return Err(invalid("sort takes one entry".into())),
        },
        Some(one) => one,
    };
    let Value::Object(o) = entry else {
        return Err(invalid(format!(
            "a sort entry is an object {{fieldName, order}}; got {entry}"
        )));
    };
    let name = o
        .get("fieldName")
        .or_else(|| o.get("field_name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let field = match name {
        "displayName" | "display_name" => SortField::DisplayName,
        "createdDate" | "created_date" | "_createdDate" => SortField::CreatedDate,
        "updatedDate" | "updated_date" | "_updatedDate" => SortField::UpdatedDate,
        other => {
            return Err(WixError::application(
                400,
                "INVALID_SORT",
                format!(
                    "{other:?} cannot be sorted on; sort on displayName, createdDate or updatedDate"
                ),
            ));
        }
    };
    let descending = match o.get("order").and_then(Value::as_str) {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => {
            return Err(WixError::application(
                400,
                "INVALID_SORT",
                format!("order {other:?} is not ASC or DESC"),
            ));
        }
    };
    Ok(Some((field, descending)))
}

fn count(path: &str, v: &Value, range: std::ops::RangeInclusive<usize>) -> Result<usize, WixError> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            WixError::invalid(FieldViolation::new(
                path,
                format!(
                    "must be a whole number from {} to {}; got {v}",
                    range.start(),
                    range.end()
                ),
                Rule::Other,
            ))
        })
}

impl CatalogQuery {
    /// Query Labels' or Query Extended Fields' body.
    pub fn from_body(kind: CatalogKind, body: &[u8]) -> Result<Self, WixError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            WixError::malformed_json(format!("request body is not valid JSON: {e}"))
        })?;
        let query = match value.get("query") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(q @ Value::Object(_)) => q.clone(),
            Some(other) => {
                return Err(WixError::invalid(FieldViolation::new(
                    "query",
                    format!("must be an object; got {other}"),
                    Rule::Format,
                )));
            }
        };
        let filter = match query.get("filter") {
            None | Some(Value::Null) => Filter::All(Vec::new()),
            // The SDK's builder may send the filter as JSON text.
            Some(Value::String(text)) => {
                let parsed: Value = serde_json::from_str(text)
                    .map_err(|e| malformed("query.filter", format!("not JSON: {e}")))?;
                parse_filter(kind, &parsed, "query.filter", 0)?
            }
            Some(f) => parse_filter(kind, f, "query.filter", 0)?,
        };
        let sort = parse_sort(query.get("sort"))?;
        let paging = query.get("paging").cloned().unwrap_or(Value::Null);
        let limit = match paging.get("limit") {
            None | Some(Value::Null) => default_limit(kind),
            Some(v) => count("query.paging.limit", v, 1..=MAX_LIMIT)?,
        };
        let offset = match paging.get("offset") {
            None | Some(Value::Null) => 0,
            Some(v) => count("query.paging.offset", v, 0..=usize::MAX)?,
        };
        Ok(CatalogQuery {
            kind,
            filter,
            sort,
            limit,
            offset,
        })
    }

    /// List Labels' or List Extended Fields' query string: `labelType` / `fieldType`,
    /// `namespace`, `startsWith` (of the display name, case-sensitive), `sort.fieldName`,
    /// `sort.order`, `paging.limit`, `paging.offset`; `language` is ignored.
    pub fn from_list(kind: CatalogKind, query: &str) -> Result<Self, WixError> {
        let mut conditions = Vec::new();
        let mut sort = Map::new();
        let mut limit = default_limit(kind);
        let mut offset = 0;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let text = Value::String(value.to_string());
            match (kind, key.as_ref()) {
                (CatalogKind::Label, "labelType") | (CatalogKind::ExtendedField, "fieldType") => {
                    let known: &[&str] = match kind {
                        CatalogKind::Label => &["SYSTEM", "USER_DEFINED", "WIX_APP_DEFINED"],
                        CatalogKind::ExtendedField => &["SYSTEM", "USER_DEFINED"],
                    };
                    if !known.contains(&value.as_ref()) {
                        return Err(WixError::invalid(FieldViolation::new(
                            key.to_string(),
                            format!("{value:?} is not one of {known:?}"),
                            Rule::InvalidEnumValue,
                        )));
                    }
                    conditions.push(Filter::Cond(Field::Type, Op::Eq, Val::Text(value.into())));
                }
                (_, "namespace") => conditions.push(Filter::Cond(
                    Field::Namespace,
                    Op::Eq,
                    Val::Text(value.into()),
                )),
                (_, "startsWith") => conditions.push(Filter::Cond(
                    Field::DisplayName,
                    Op::StartsWith,
                    Val::Text(value.into()),
                )),
                (_, "sort.fieldName" | "sort.field_name") => {
                    sort.insert("fieldName".into(), text);
                }
                (_, "sort.order") => {
                    sort.insert("order".into(), text);
                }
                (_, "paging.limit") => limit = count("paging.limit", &text, 1..=MAX_LIMIT)?,
                (_, "paging.offset") => offset = count("paging.offset", &text, 0..=usize::MAX)?,
                _ => {}
            }
        }
        let sort = if sort.is_empty() {
            None
        } else {
            parse_sort(Some(&Value::Object(sort)))?
        };
        Ok(CatalogQuery {
            kind,
            filter: Filter::All(conditions),
            sort,
            limit,
            offset,
        })
    }

    /// The page the query asks for: the keys in order, the count of all that matched.
    fn run(&self, catalog: &Catalog) -> (Vec<String>, usize) {
        let mut hits: Vec<Row<'_>> = rows(catalog, self.kind)
            .into_iter()
            .filter(|r| matches(&self.filter, r))
            .collect();
        hits.sort_by(|a, b| {
            let by = match self.sort {
                None | Some((SortField::DisplayName, _)) => a.display_name.cmp(b.display_name),
                Some((SortField::CreatedDate, _)) => a.created.cmp(&b.created),
                Some((SortField::UpdatedDate, _)) => a.updated.cmp(&b.updated),
            };
            let by = if matches!(self.sort, Some((_, true))) {
                by.reverse()
            } else {
                by
            };
            by.then_with(|| a.key.cmp(b.key))
        });
        let total = hits.len();
        let keys = hits
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .map(|r| r.key.to_owned())
            .collect();
        (keys, total)
    }

    /// The answer: `{labels | fields, <paging>: {count, offset, total, tooManyToCount}}`,
    /// where `<paging>` is `metadata` for a list and `pagingMetadata` for a query (as Wix's
    /// two responses name it).
    pub fn answer(&self, catalog: &Catalog, paging_name: &str) -> Value {
        let (keys, total) = self.run(catalog);
        let items: Vec<Value> = keys
            .iter()
            .filter_map(|k| match self.kind {
                CatalogKind::Label => catalog
                    .labels()
                    .get(k)
                    .and_then(|l| serde_json::to_value(ContactLabel::from_core(l)).ok()),
                CatalogKind::ExtendedField => catalog
                    .fields()
                    .get(k)
                    .and_then(|f| serde_json::to_value(ExtendedField::from_core(f)).ok()),
            })
            .collect();
        let name = match self.kind {
            CatalogKind::Label => "labels",
            CatalogKind::ExtendedField => "fields",
        };
        serde_json::json!({
            name: items,
            paging_name: {
                "count": keys.len(),
                "offset": self.offset,
                "total": total,
                "tooManyToCount": false,
            },
        })
    }
}

/// List Labels, List Extended Fields.
pub fn list(catalog: &Catalog, kind: CatalogKind, query: &str) -> Result<Value, WixError> {
    Ok(CatalogQuery::from_list(kind, query)?.answer(catalog, "metadata"))
}

/// Query Labels, Query Extended Fields.
pub fn query(catalog: &Catalog, kind: CatalogKind, body: &[u8]) -> Result<Value, WixError> {
    Ok(CatalogQuery::from_body(kind, body)?.answer(catalog, "pagingMetadata"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use inbox_core::{Context, Inbox, InboxConfig, SequentialIds, SiteId};

    fn inbox_with(labels: &[&str]) -> Inbox {
        let mut inbox = Inbox::new(InboxConfig::new(SiteId::new("s"), [1; 16]));
        let mut ids = SequentialIds::default();
        for (i, name) in labels.iter().enumerate() {
            let ctx = Context::at(Timestamp::from_micros(1_000_000 * (i as i64 + 1)));
            let command = Command::FindOrCreateLabel {
                display_name: (*name).to_owned(),
            };
            inbox.execute(&command, &ctx, &mut ids).unwrap();
        }
        inbox
    }

    fn keys(v: &Value) -> Vec<&str> {
        v["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["key"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn queries_filter_sort_and_page() {
        let inbox = inbox_with(&["Zeta", "Alpha", "Alphabet", "Beta"]);
        let c = inbox.contacts().catalog();
        let all = query(c, CatalogKind::Label, b"{}").unwrap();
        assert_eq!(
            keys(&all),
            [
                "custom.alpha",
                "custom.alphabet",
                "custom.beta",
                "custom.zeta"
            ]
        );
        assert_eq!(all["pagingMetadata"]["total"], 4);
        let body = br#"{"query": {"filter": {"displayName": {"$startsWith": "Alpha"}},
                        "sort": [{"fieldName": "createdDate", "order": "DESC"}]}}"#;
        assert_eq!(
            keys(&query(c, CatalogKind::Label, body).unwrap()),
            ["custom.alphabet", "custom.alpha"]
        );
        let body = br#"{"query": {"filter": {"$or": [{"key": "custom.beta"},
                        {"createdDate": {"$lt": "1970-01-01T00:00:02Z"}}]}}}"#;
        assert_eq!(
            keys(&query(c, CatalogKind::Label, body).unwrap()),
            ["custom.beta", "custom.zeta"]
        );
        let paged = list(c, CatalogKind::Label, "paging.limit=2&paging.offset=1").unwrap();
        assert_eq!(keys(&paged), ["custom.alphabet", "custom.beta"]);
        assert_eq!(paged["metadata"]["count"], 2);
        let typed = list(c, CatalogKind::Label, "labelType=SYSTEM").unwrap();
        assert!(keys(&typed).is_empty());
    }

    #[test]
    fn bad_queries_get_wix_codes() {
        let inbox = inbox_with(&[]);
        let c = inbox.contacts().catalog();
        let code = |body: &[u8]| query(c, CatalogKind::Label, body).unwrap_err().code();
        for (body, expected) in [
            (
                &br#"{"query": {"filter": {"color": "red"}}}"#[..],
                "UNSUPPORTED_FILTER_FIELD",
            ),
            (
                br#"{"query": {"filter": {"key": {"$startsWith": "c"}}}}"#,
                "UNSUPPORTED_FILTER_OPERATOR",
            ),
            (
                br#"{"query": {"filter": {"createdDate": {"$gt": "yesterday"}}}}"#,
                "UNSUPPORTED_FILTER_VALUE",
            ),
            (
                br#"{"query": {"filter": {"$and": []}}}"#,
                "MALFORMED_FILTER",
            ),
            (
                br#"{"query": {"filter": {"key": {"$regex": "x"}}}}"#,
                "MALFORMED_FILTER",
            ),
            (
                br#"{"query": {"sort": [{"fieldName": "key"}]}}"#,
                "INVALID_SORT",
            ),
            (
                br#"{"query": {"filter": {"dataType": "TEXT"}}}"#,
                "UNSUPPORTED_FILTER_FIELD",
            ),
        ] {
            assert_eq!(
                code(body),
                Some(expected),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!(
            "{{\"query\": {{\"filter\": {}{{}}{}}}}}",
            "{\"$not\":".repeat(40),
            "}".repeat(40)
        );
        assert_eq!(code(deep.as_bytes()), Some("MALFORMED_FILTER"));
        let err = query(
            c,
            CatalogKind::Label,
            br#"{"query": {"paging": {"limit": 0}}}"#,
        )
        .unwrap_err();
        assert_eq!(err.status(), 400);
    }
}
