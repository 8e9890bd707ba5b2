//! Query Contacts (`POST /contacts/v4/contacts/query`): the request body, parsed into the
//! core's [`ContactQuery`].
//!
//! ```text
//! {"query": {"filter": {..},
//!            "sort": [{"fieldName": "createdDate", "order": "ASC" | "DESC"}],
//!            "paging": {"limit": 1..=1000, "offset": 0..},
//!            "fields": ["id", "info.name", ..],
//!            "fieldsets": ["BASIC" | "COMMUNICATION_DETAILS" | "EXTENDED" | "FULL"]},
//!  "search"?: ..}
//! ```
//!
//! Keys come in camelCase or snake_case (`fieldName` or `field_name`; in field paths
//! `primaryInfo`/`primary_info`, `createdDate`/`created_date`, `updatedDate`/`updated_date`).
//! When both spellings of a key are given, the camelCase one wins (as in [`crate::case`]). A
//! key whose value is `null` counts as absent. Unknown keys are ignored. A body without
//! `query` asks for everything with the defaults. [`parse_query_request`] never panics,
//! whatever the JSON.
//!
//! # Filters
//!
//! Mongo-like: `{"field": value}` (an implicit `$eq`) or `{"field": {"$op": value, ..}}`.
//! Several keys in one object (fields, or operators on one field) are an implicit AND.
//! `$and` and `$or` take a non-empty array of filters, `$not` takes one filter (an object).
//! `{}` matches every contact. Filters nest at most [`MAX_FILTER_DEPTH`] levels deep.
//!
//! | Field | Operators | Values |
//! |---|---|---|
//! | `id` | `$eq $ne $in $hasSome $exists` | strings |
//! | `info.emails.email`, `primaryInfo.email` | `$eq $ne $in $hasSome $exists $startsWith` | strings |
//! | `primaryInfo.phone`, `info.name.first`, `info.name.last` | `$eq $ne $in $hasSome $exists $startsWith` | strings |
//! | `info.company`, `info.jobTitle` | `$eq $ne $in $hasSome $exists $startsWith` | strings |
//! | `info.locale` | `$eq $ne $in $hasSome $exists` | strings |
//! | `info.birthdate` | `$eq $ne $gt $gte $lt $lte` | strings (`YYYY-MM-DD`, which order as dates) |
//! | `info.labelKeys` | `$hasSome $hasAll` | arrays of label keys |
//! | `createdDate`, `updatedDate`, `lastActivity.activityDate` | `$eq $ne $gt $gte $lt $lte` | RFC 3339 strings or `{"$date": "<RFC 3339>"}` |
//!
//! The table is exactly what the core's evaluator accepts, so a request this module accepts
//! is never refused by [`inbox_core::ContactDirectory::query`] (the tests check every pair).
//! It is a superset of `WIRE-FORMAT.md`'s list for the SDK-builder fields: `$in` and `$exists`
//! there are in Wix's published table of contact filters, and `$hasSome` (the same as `$in`
//! for these single-valued or any-of fields) is accepted wherever the core supports it.
//! `$in` and `$hasSome` take an array (possibly empty: it matches nothing), `$exists` a
//! boolean, `$startsWith` a string.
//!
//! Matching is the core's job, and this module passes values through untouched: emails
//! (`info.emails.email`, `primaryInfo.email`) compare trimmed and case-insensitively under
//! `$eq $ne $in $hasSome`; `$startsWith` is case-insensitive on every field; `id` compares
//! case-insensitively; names and phones compare exactly under `$eq $ne $in $hasSome`.
//!
//! # Sort
//!
//! `fieldName` is one of `createdDate updatedDate lastActivity.activityDate info.name.first
//! info.name.last info.company info.jobTitle info.birthdate primaryInfo.email id`; `order` is
//! `ASC` (the default when an entry has no `order`, as in Wix's `SortOrder` enum, whose first
//! value is `ASC`) or `DESC`. With no sort at all, the parsed `sort` is empty and the core
//! orders by `createdDate` descending, Wix's default for contacts. Ties are broken by id (the
//! core's rule).
//!
//! # Projection
//!
//! `id` and `revision` always come back. `fields` paths map to [`ContactPart`]s: `id`,
//! `revision` → none; `info` → every part of `info`; `info.name` (and `info.name.first`,
//! `info.name.last`) → name; `info.emails`, `info.phones`, `info.addresses`,
//! `info.company`, `info.jobTitle`, `info.birthdate`, `info.locale`, `info.picture`,
//! `info.labelKeys`, `info.extendedFields` → that part; `info.locations` → none (the
//! emulator keeps no locations); `source`, `lastActivity`, `createdDate`, `updatedDate` →
//! that part; `primaryInfo` (and `primaryInfo.email`, `primaryInfo.phone`) → primary info,
//! which also brings `primaryEmail` and `primaryPhone`. Sub-paths bring their whole part.
//! `fieldsets` (Wix's names):
//!
//! * `BASIC`: name and primary info (with `id` and `revision`);
//! * `COMMUNICATION_DETAILS`: name, emails, phones, addresses and primary info;
//! * `EXTENDED`: everything but the extended fields;
//! * `FULL`: everything.
//!
//! `fields` and `fieldsets` add up. Neither given (or both empty, which protobuf cannot tell
//! from absent) returns everything: `parts: None`; so does a union that covers every part.
//! `fields: ["id"]` (the example flows) gives `parts: Some(vec![])`.
//!
//! # Errors
//!
//! Every [`QueryError`] has a [`QueryError::code`] and a [`QueryError::path`] naming the
//! offending place in the body (e.g. `query.filter.$and[1].createdDate.$gt`). All are HTTP 400.

use chrono::{DateTime, Utc};
use inbox_core::contacts::{
    Condition, ContactField, ContactFilter, ContactPart, ContactQuery, ContactSortField,
    FilterValue, MAX_QUERY_LIMIT,
};
use inbox_core::{SortOrder, Timestamp};
use serde_json::{Map, Value};

/// How deep filters may nest (`$and`, `$or` and `$not` each add a level; the `filter` object
/// itself is level 1). Deeper is [`QueryError::MalformedFilter`]: the parser recurses once per
/// level, so the cap also bounds its stack.
pub const MAX_FILTER_DEPTH: usize = 32;

/// The sortable fields, for messages.
const SORTABLE: &str = "createdDate, updatedDate, lastActivity.activityDate, info.name.first, \
     info.name.last, info.company, info.jobTitle, info.birthdate, primaryInfo.email, id";

/// Why a Query Contacts request was refused. Every case is an HTTP 400; [`QueryError::code`]
/// gives the Wix error code and [`QueryError::path`] the offending place in the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A request shape outside the filter is wrong: the body or `query` or `paging` is not an
    /// object, `sort` is not an array of objects with a string `fieldName`, or `fields` or
    /// `fieldsets` is not an array of strings. Code `INVALID_QUERY`.
    #[error("{}: {reason}", shown(.path))]
    InvalidQuery {
        /// Where, e.g. `query.sort[0]` (empty for the body itself).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The filter is not well formed: not an object, an unknown `$op`, a value of the wrong
    /// type, an empty `$and`/`$or`, nesting deeper than [`MAX_FILTER_DEPTH`]...
    /// Code `MALFORMED_FILTER`.
    #[error("malformed filter at {path}: {reason}")]
    MalformedFilter {
        /// Where, e.g. `query.filter.$and[0].id.$in[2]`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A filter on a field contacts cannot be filtered on. Code
    /// `UNSUPPORTED_FILTER_FIELD_UNKNOWN`.
    #[error("unsupported filter at {path}: {field:?} is not a field contacts can be filtered on")]
    UnknownFilterField {
        /// Where.
        path: String,
        /// The field as given.
        field: String,
    },
    /// A known operator on a field that does not support it (e.g. `$startsWith` on a date,
    /// `$gt` on an email, or `$hasAll` anywhere). Code `UNSUPPORTED_FILTER_OPERATOR`.
    #[error("unsupported filter at {path}: {op} is not supported on {}", field_path(*.field))]
    UnsupportedFilter {
        /// Where.
        path: String,
        /// The field.
        field: ContactField,
        /// The operator, e.g. `$startsWith`.
        op: &'static str,
    },
    /// A value of the wrong type for its field or operator (a number where an email is
    /// compared, `$in` without an array, `$exists` without a boolean). Code
    /// `UNSUPPORTED_FILTER_VALUE_TYPE`.
    #[error("unsupported filter value type at {path}: {reason}")]
    FilterValueType {
        /// Where.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A value of the right type that is not a value of its field (a date string that is not
    /// RFC 3339). Code `UNSUPPORTED_FILTER_VALUE`.
    #[error("unsupported filter value at {path}: {reason}")]
    FilterValue {
        /// Where.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A non-empty `search`: this engine has no free-text search. Refused rather than
    /// ignored, since ignoring it would answer with contacts the caller did not ask for.
    /// Code `UNSUPPORTED_FILTER`.
    #[error("search: free-text search is not supported; filter with query.filter instead")]
    UnsupportedSearch,
    /// `paging.limit` is not an integer from 1 to 1000. Code `ILLEGAL_LIMIT`.
    #[error("query.paging.limit must be an integer from 1 to {MAX_QUERY_LIMIT}; got {value}")]
    IllegalLimit {
        /// The value given, as text.
        value: String,
    },
    /// `paging.offset` is negative or not an integer. Code `INVALID_QUERY`, not
    /// `ILLEGAL_LIMIT`: that code names the limit, and a client reading it would fix the
    /// wrong number; Wix's SDK types declare no offset code.
    #[error("query.paging.offset must be a non-negative integer; got {value}")]
    IllegalOffset {
        /// The value given, as text.
        value: String,
    },
    /// A `sort` entry's `fieldName` is not sortable. Code `UNSUPPORTED_SORT_FIELD`.
    #[error("{path}: contacts cannot be sorted by {field:?}; sortable fields: {SORTABLE}")]
    UnsupportedSortField {
        /// Where, e.g. `query.sort[0].fieldName`.
        path: String,
        /// The field as given.
        field: String,
    },
    /// A `sort` entry's `order` is not `ASC` or `DESC`. Code `UNSUPPORTED_SORT_FIELD`: the
    /// sort entry is not supported, and Wix has no separate code for its order.
    #[error("{path}: sort order must be \"ASC\" or \"DESC\"; got {order}")]
    UnsupportedSortOrder {
        /// Where, e.g. `query.sort[0].order`.
        path: String,
        /// The value given, as text.
        order: String,
    },
    /// A `fields` path this engine does not know. Code `INVALID_QUERY`.
    #[error("{path}: unknown contact field {field:?}")]
    UnknownProjectionField {
        /// Where, e.g. `query.fields[1]`.
        path: String,
        /// The path as given.
        field: String,
    },
    /// A `fieldsets` name that is not `BASIC`, `COMMUNICATION_DETAILS`, `EXTENDED` or `FULL`.
    /// Code `INVALID_QUERY`.
    #[error(
        "{path}: unknown fieldset {fieldset:?}; known: BASIC, COMMUNICATION_DETAILS, EXTENDED, FULL"
    )]
    UnknownFieldset {
        /// Where, e.g. `query.fieldsets[0]`.
        path: String,
        /// The name as given.
        fieldset: String,
    },
}

impl QueryError {
    /// The error code: `MALFORMED_FILTER`, `UNSUPPORTED_FILTER` (a search),
    /// `UNSUPPORTED_FILTER_FIELD_UNKNOWN`, `UNSUPPORTED_FILTER_OPERATOR`,
    /// `UNSUPPORTED_FILTER_VALUE_TYPE`, `UNSUPPORTED_FILTER_VALUE`, `ILLEGAL_LIMIT` or
    /// `UNSUPPORTED_SORT_FIELD` (the Query Contacts codes of the Wix SDK), or `INVALID_QUERY` (this
    /// engine's, listed in [`crate::error::ERROR_CODES`]) for a bad offset, an unknown
    /// `fields`/`fieldsets` value, or a wrong request shape outside the filter, which none of
    /// the Wix codes describes.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::InvalidQuery { .. }
            | QueryError::IllegalOffset { .. }
            | QueryError::UnknownProjectionField { .. }
            | QueryError::UnknownFieldset { .. } => "INVALID_QUERY",
            QueryError::MalformedFilter { .. } => "MALFORMED_FILTER",
            QueryError::UnknownFilterField { .. } => "UNSUPPORTED_FILTER_FIELD_UNKNOWN",
            QueryError::UnsupportedFilter { .. } => "UNSUPPORTED_FILTER_OPERATOR",
            QueryError::FilterValueType { .. } => "UNSUPPORTED_FILTER_VALUE_TYPE",
            QueryError::FilterValue { .. } => "UNSUPPORTED_FILTER_VALUE",
            QueryError::UnsupportedSearch => "UNSUPPORTED_FILTER",
            QueryError::IllegalLimit { .. } => "ILLEGAL_LIMIT",
            QueryError::UnsupportedSortField { .. } | QueryError::UnsupportedSortOrder { .. } => {
                "UNSUPPORTED_SORT_FIELD"
            }
        }
    }

    /// Where in the request body the problem is, dot-separated with `[i]` for array items
    /// (e.g. `query.filter.$or[1].info.emails.email.$startsWith`); empty for the body itself.
    pub fn path(&self) -> &str {
        match self {
            QueryError::InvalidQuery { path, .. }
            | QueryError::MalformedFilter { path, .. }
            | QueryError::UnknownFilterField { path, .. }
            | QueryError::UnsupportedFilter { path, .. }
            | QueryError::FilterValueType { path, .. }
            | QueryError::FilterValue { path, .. }
            | QueryError::UnsupportedSortField { path, .. }
            | QueryError::UnsupportedSortOrder { path, .. }
            | QueryError::UnknownProjectionField { path, .. }
            | QueryError::UnknownFieldset { path, .. } => path,
            QueryError::UnsupportedSearch => "search",
            QueryError::IllegalLimit { .. } => "query.paging.limit",
            QueryError::IllegalOffset { .. } => "query.paging.offset",
        }
    }
}

/// Parses a Query Contacts request body (see the [module docs](self) for the language, the
/// defaults and the projection).
///
/// ```
/// # use inbox_wix::contacts_query::parse_query_request;
/// # use inbox_core::contacts::ContactQuery;
/// let body = serde_json::json!({"query": {
///     "filter": {"info.emails.email": {"$eq": "jo@example.com"}},
///     "fields": ["id"],
/// }});
/// assert_eq!(parse_query_request(&body), Ok(ContactQuery::by_email("jo@example.com")));
/// ```
pub fn parse_query_request(body: &Value) -> Result<ContactQuery, QueryError> {
    let body = body
        .as_object()
        .ok_or_else(|| invalid("", format!("must be a JSON object; got {}", describe(body))))?;
    let query = match present(body.get("query")) {
        None => ContactQuery::default(),
        Some(query) => parse_query(query)?,
    };
    check_search(present(body.get("search")))?;
    Ok(query)
}

/// List Contacts (`GET /contacts/v4/contacts`): the query string, as the SDK writes it
/// (`paging.limit=10&paging.offset=0&sort.fieldName=createdDate&sort.order=DESC&fieldsets=FULL`,
/// arrays as repeated keys), parsed into the same query as Query Contacts with no filter.
/// Errors name the request's paths under `query.` as Query Contacts' do.
pub fn parse_list_query(query: &str) -> Result<ContactQuery, QueryError> {
    let mut paging = Map::new();
    let mut sort = Map::new();
    let mut fields = Vec::new();
    let mut fieldsets = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        // A number where the SDK wrote one; anything else stays text, and is refused as
        // paging by the same rule as in a body.
        let number = || {
            value
                .parse::<u64>()
                .map_or_else(|_| Value::String(value.to_string()), Value::from)
        };
        match key.as_ref() {
            "paging.limit" => {
                paging.insert("limit".into(), number());
            }
            "paging.offset" => {
                paging.insert("offset".into(), number());
            }
            "sort.fieldName" | "sort.field_name" => {
                sort.insert("fieldName".into(), Value::String(value.into_owned()));
            }
            "sort.order" => {
                sort.insert("order".into(), Value::String(value.into_owned()));
            }
            "fields" => fields.push(Value::String(value.into_owned())),
            "fieldsets" => fieldsets.push(Value::String(value.into_owned())),
            _ => {}
        }
    }
    let mut q = Map::new();
    if !paging.is_empty() {
        q.insert("paging".into(), Value::Object(paging));
    }
    if !sort.is_empty() {
        q.insert("sort".into(), Value::Array(vec![Value::Object(sort)]));
    }
    if !fields.is_empty() {
        q.insert("fields".into(), Value::Array(fields));
    }
    if !fieldsets.is_empty() {
        q.insert("fieldsets".into(), Value::Array(fieldsets));
    }
    parse_query(&Value::Object(q))
}

fn parse_query(query: &Value) -> Result<ContactQuery, QueryError> {
    let query = query.as_object().ok_or_else(|| {
        invalid(
            "query",
            format!("must be an object; got {}", describe(query)),
        )
    })?;
    let filter = match present(query.get("filter")) {
        None => ContactFilter::All,
        Some(filter) => parse_filter(filter, "query.filter", 1)?,
    };
    let sort = parse_sort(present(query.get("sort")))?;
    let (limit, offset) = parse_paging(present(query.get("paging")))?;
    let parts = parse_projection(
        present(query.get("fields")),
        present(query.get("fieldsets")),
    )?;
    Ok(ContactQuery {
        filter,
        sort,
        parts,
        offset,
        limit,
    })
}

fn check_search(search: Option<&Value>) -> Result<(), QueryError> {
    match search {
        None => Ok(()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(()),
        Some(Value::Object(o)) if o.is_empty() => Ok(()),
        Some(_) => Err(QueryError::UnsupportedSearch),
    }
}

// -------------------------------------------------------------------------------------------
// Filters

/// A field operator.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    In,
    HasSome,
    Exists,
    StartsWith,
    Gt,
    Gte,
    Lt,
    Lte,
    /// Every one of the values (label keys).
    HasAll,
}

impl Op {
    fn parse(key: &str) -> Option<Op> {
        Some(match key {
            "$eq" => Op::Eq,
            "$ne" => Op::Ne,
            "$in" => Op::In,
            "$hasSome" => Op::HasSome,
            "$exists" => Op::Exists,
            "$startsWith" => Op::StartsWith,
            "$gt" => Op::Gt,
            "$gte" => Op::Gte,
            "$lt" => Op::Lt,
            "$lte" => Op::Lte,
            "$hasAll" => Op::HasAll,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::Eq => "$eq",
            Op::Ne => "$ne",
            Op::In => "$in",
            Op::HasSome => "$hasSome",
            Op::Exists => "$exists",
            Op::StartsWith => "$startsWith",
            Op::Gt => "$gt",
            Op::Gte => "$gte",
            Op::Lt => "$lt",
            Op::Lte => "$lte",
            Op::HasAll => "$hasAll",
        }
    }
}

fn is_date(field: ContactField) -> bool {
    matches!(
        field,
        ContactField::CreatedDate | ContactField::UpdatedDate | ContactField::LastActivityDate
    )
}

/// Whether the core evaluates `op` on `field`: asked of the core itself
/// ([`inbox_core::contacts::condition_supported`]), so the two cannot disagree.
fn supports(field: ContactField, op: Op) -> bool {
    let v = || FilterValue::Text(String::new());
    let probe = match op {
        Op::Eq => Condition::Eq(v()),
        Op::Ne => Condition::Ne(v()),
        Op::In => Condition::In(Vec::new()),
        Op::HasSome => Condition::HasSome(Vec::new()),
        Op::HasAll => Condition::HasAll(Vec::new()),
        Op::Exists => Condition::Exists(true),
        Op::StartsWith => Condition::StartsWith(String::new()),
        Op::Gt => Condition::Gt(v()),
        Op::Gte => Condition::Gte(v()),
        Op::Lt => Condition::Lt(v()),
        Op::Lte => Condition::Lte(v()),
    };
    inbox_core::contacts::condition_supported(field, &probe)
}

fn filter_field(name: &str) -> Option<ContactField> {
    Some(match name {
        "id" => ContactField::Id,
        "info.emails.email" => ContactField::Email,
        "primaryInfo.email" | "primary_info.email" => ContactField::PrimaryEmail,
        "primaryInfo.phone" | "primary_info.phone" => ContactField::PrimaryPhone,
        "info.name.first" => ContactField::FirstName,
        "info.name.last" => ContactField::LastName,
        "createdDate" | "created_date" => ContactField::CreatedDate,
        "updatedDate" | "updated_date" => ContactField::UpdatedDate,
        "info.company" => ContactField::Company,
        "info.jobTitle" | "info.job_title" => ContactField::JobTitle,
        "info.locale" => ContactField::Locale,
        "info.birthdate" => ContactField::Birthdate,
        "lastActivity.activityDate" | "last_activity.activity_date" => {
            ContactField::LastActivityDate
        }
        "info.labelKeys" | "info.label_keys" => ContactField::Labels,
        _ => return None,
    })
}

/// The wire name of a field.
fn field_path(field: ContactField) -> &'static str {
    match field {
        ContactField::Id => "id",
        ContactField::Email => "info.emails.email",
        ContactField::PrimaryEmail => "primaryInfo.email",
        ContactField::PrimaryPhone => "primaryInfo.phone",
        ContactField::FirstName => "info.name.first",
        ContactField::LastName => "info.name.last",
        ContactField::CreatedDate => "createdDate",
        ContactField::UpdatedDate => "updatedDate",
        ContactField::Company => "info.company",
        ContactField::JobTitle => "info.jobTitle",
        ContactField::Locale => "info.locale",
        ContactField::Birthdate => "info.birthdate",
        ContactField::LastActivityDate => "lastActivity.activityDate",
        ContactField::Labels => "info.labelKeys",
    }
}

fn parse_filter(value: &Value, path: &str, depth: usize) -> Result<ContactFilter, QueryError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(malformed(
            path,
            format!("filters may nest at most {MAX_FILTER_DEPTH} levels deep"),
        ));
    }
    let object = value.as_object().ok_or_else(|| {
        malformed(
            path,
            format!("a filter must be an object; got {}", describe(value)),
        )
    })?;
    let mut all = Vec::new();
    for (key, value) in sorted(object) {
        let here = format!("{path}.{key}");
        if key.starts_with('$') {
            all.push(parse_logical(key, value, &here, depth)?);
        } else {
            parse_field(key, value, &here, &mut all)?;
        }
    }
    Ok(if all.len() <= 1 {
        all.pop().unwrap_or(ContactFilter::All)
    } else {
        ContactFilter::And(all)
    })
}

fn parse_logical(
    key: &str,
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<ContactFilter, QueryError> {
    match key {
        "$and" | "$or" => {
            let items = value.as_array().ok_or_else(|| {
                malformed(
                    path,
                    format!("{key} takes an array of filters; got {}", describe(value)),
                )
            })?;
            if items.is_empty() {
                return Err(malformed(path, format!("{key} needs at least one filter")));
            }
            let filters = items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_filter(item, &format!("{path}[{i}]"), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if key == "$and" {
                ContactFilter::And(filters)
            } else {
                ContactFilter::Or(filters)
            })
        }
        "$not" => Ok(ContactFilter::Not(Box::new(parse_filter(
            value,
            path,
            depth + 1,
        )?))),
        _ if Op::parse(key).is_some() => Err(malformed(
            path,
            format!("{key} must be applied to a field, as in {{\"id\": {{\"{key}\": ..}}}}"),
        )),
        _ => Err(malformed(path, format!("unknown operator {key:?}"))),
    }
}

/// Parses `{"field": value}` or `{"field": {"$op": value, ..}}` into one condition per
/// operator, appended to `out`.
fn parse_field(
    key: &str,
    value: &Value,
    path: &str,
    out: &mut Vec<ContactFilter>,
) -> Result<(), QueryError> {
    let conditions: Vec<(Op, &Value, String)> = match value {
        Value::Object(ops) if !is_date_literal(ops) => {
            if ops.is_empty() {
                return Err(malformed(
                    path,
                    "a condition needs an operator such as $eq".to_owned(),
                ));
            }
            sorted(ops)
                .into_iter()
                .map(|(op, v)| {
                    let here = format!("{path}.{op}");
                    parse_op(op, &here).map(|op| (op, v, here))
                })
                .collect::<Result<_, _>>()?
        }
        _ => vec![(Op::Eq, value, path.to_owned())],
    };
    let field = filter_field(key).ok_or_else(|| QueryError::UnknownFilterField {
        path: path.to_owned(),
        field: key.to_owned(),
    })?;
    for (op, value, path) in conditions {
        out.push(ContactFilter::Field(
            field,
            condition(field, op, value, &path)?,
        ));
    }
    Ok(())
}

fn parse_op(key: &str, path: &str) -> Result<Op, QueryError> {
    if let Some(op) = Op::parse(key) {
        return Ok(op);
    }
    Err(malformed(
        path,
        match key {
            "$date" => "$date wraps a date and must be the only key of its object".to_owned(),
            "$and" | "$or" | "$not" => {
                format!("{key} combines filters and cannot be used inside a condition on a field")
            }
            _ if !key.starts_with('$') => format!(
                "unexpected key {:?}: a condition holds operators such as $eq",
                short(key)
            ),
            _ => format!("unknown operator {:?}", short(key)),
        },
    ))
}

fn condition(
    field: ContactField,
    op: Op,
    value: &Value,
    path: &str,
) -> Result<Condition, QueryError> {
    if !supports(field, op) {
        return Err(QueryError::UnsupportedFilter {
            path: path.to_owned(),
            field,
            op: op.name(),
        });
    }
    Ok(match op {
        Op::Eq => Condition::Eq(filter_value(field, value, path)?),
        Op::Ne => Condition::Ne(filter_value(field, value, path)?),
        Op::Gt => Condition::Gt(filter_value(field, value, path)?),
        Op::Gte => Condition::Gte(filter_value(field, value, path)?),
        Op::Lt => Condition::Lt(filter_value(field, value, path)?),
        Op::Lte => Condition::Lte(filter_value(field, value, path)?),
        Op::In | Op::HasSome | Op::HasAll => {
            let items = value.as_array().ok_or_else(|| {
                value_type(
                    path,
                    format!("{} takes an array; got {}", op.name(), describe(value)),
                )
            })?;
            let values = items
                .iter()
                .enumerate()
                .map(|(i, item)| filter_value(field, item, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            match op {
                Op::In => Condition::In(values),
                Op::HasAll => Condition::HasAll(values),
                _ => Condition::HasSome(values),
            }
        }
        Op::Exists => Condition::Exists(value.as_bool().ok_or_else(|| {
            value_type(
                path,
                format!("$exists takes true or false; got {}", describe(value)),
            )
        })?),
        Op::StartsWith => Condition::StartsWith(
            value
                .as_str()
                .ok_or_else(|| {
                    value_type(
                        path,
                        format!("$startsWith takes a string; got {}", describe(value)),
                    )
                })?
                .to_owned(),
        ),
    })
}

/// A value compared with `field`: a string, or for dates an RFC 3339 string or
/// `{"$date": "<RFC 3339>"}`.
fn filter_value(field: ContactField, value: &Value, path: &str) -> Result<FilterValue, QueryError> {
    if is_date(field) {
        return timestamp(value, path).map(FilterValue::Time);
    }
    match value {
        Value::String(s) => Ok(FilterValue::Text(s.clone())),
        _ => Err(value_type(
            path,
            format!(
                "{} is compared with strings; got {}",
                field_path(field),
                describe(value)
            ),
        )),
    }
}

fn is_date_literal(object: &Map<String, Value>) -> bool {
    object.len() == 1 && object.contains_key("$date")
}

fn timestamp(value: &Value, path: &str) -> Result<Timestamp, QueryError> {
    let text = match value {
        Value::String(s) => Some(s),
        Value::Object(o) if is_date_literal(o) => match o.get("$date") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    };
    let text = text.ok_or_else(|| {
        value_type(
            path,
            format!(
                "expected an RFC 3339 date-time string or {{\"$date\": \"..\"}}; got {}",
                describe(value)
            ),
        )
    })?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| Timestamp::from(t.with_timezone(&Utc)))
        .map_err(|e| QueryError::FilterValue {
            path: path.to_owned(),
            reason: format!("{:?} is not an RFC 3339 date-time ({e})", short(text)),
        })
}

// -------------------------------------------------------------------------------------------
// Sort, paging, projection

fn sort_field(name: &str) -> Option<ContactSortField> {
    Some(match name {
        "createdDate" | "created_date" => ContactSortField::CreatedDate,
        "updatedDate" | "updated_date" => ContactSortField::UpdatedDate,
        "info.name.first" => ContactSortField::FirstName,
        "info.name.last" => ContactSortField::LastName,
        "primaryInfo.email" | "primary_info.email" => ContactSortField::PrimaryEmail,
        "info.company" => ContactSortField::Company,
        "info.jobTitle" | "info.job_title" => ContactSortField::JobTitle,
        "info.birthdate" => ContactSortField::Birthdate,
        "lastActivity.activityDate" | "last_activity.activity_date" => {
            ContactSortField::LastActivity
        }
        "id" => ContactSortField::Id,
        _ => return None,
    })
}

fn parse_sort(sort: Option<&Value>) -> Result<Vec<(ContactSortField, SortOrder)>, QueryError> {
    let Some(sort) = sort else {
        return Ok(Vec::new());
    };
    let items = sort.as_array().ok_or_else(|| {
        invalid(
            "query.sort",
            format!(
                "must be an array of {{\"fieldName\", \"order\"}}; got {}",
                describe(sort)
            ),
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("query.sort[{i}]");
            let entry = item.as_object().ok_or_else(|| {
                invalid(
                    &path,
                    format!(
                        "must be an object {{\"fieldName\", \"order\"}}; got {}",
                        describe(item)
                    ),
                )
            })?;
            let name_path = format!("{path}.fieldName");
            let name = member(entry, "fieldName", "field_name")
                .ok_or_else(|| invalid(&name_path, "is required".to_owned()))?;
            let name = name.as_str().ok_or_else(|| {
                invalid(
                    &name_path,
                    format!("must be a string; got {}", describe(name)),
                )
            })?;
            let field = sort_field(name).ok_or_else(|| QueryError::UnsupportedSortField {
                path: name_path.clone(),
                field: name.to_owned(),
            })?;
            let order = match present(entry.get("order")) {
                None => SortOrder::Asc,
                Some(Value::String(s)) if s == "ASC" => SortOrder::Asc,
                Some(Value::String(s)) if s == "DESC" => SortOrder::Desc,
                Some(other) => {
                    return Err(QueryError::UnsupportedSortOrder {
                        path: format!("{path}.order"),
                        order: describe(other),
                    });
                }
            };
            Ok((field, order))
        })
        .collect()
}

/// `(limit, offset)`; the limit is `None` when not given (the core then uses 50).
fn parse_paging(paging: Option<&Value>) -> Result<(Option<usize>, usize), QueryError> {
    let Some(paging) = paging else {
        return Ok((None, 0));
    };
    let paging = paging.as_object().ok_or_else(|| {
        invalid(
            "query.paging",
            format!(
                "must be an object {{\"limit\", \"offset\"}}; got {}",
                describe(paging)
            ),
        )
    })?;
    let limit = match present(paging.get("limit")) {
        None => None,
        Some(limit) => Some(
            whole_number(limit)
                .filter(|n| (1..=MAX_QUERY_LIMIT).contains(n))
                .ok_or_else(|| QueryError::IllegalLimit {
                    value: describe(limit),
                })?,
        ),
    };
    let offset = match present(paging.get("offset")) {
        None => 0,
        Some(offset) => whole_number(offset).ok_or_else(|| QueryError::IllegalOffset {
            value: describe(offset),
        })?,
    };
    Ok((limit, offset))
}

/// A non-negative integer: a JSON integer, or a float with no fraction (`1e2`, `50.0`, which
/// protobuf's JSON mapping also accepts for integer fields). Strings are not numbers here.
fn whole_number(value: &Value) -> Option<usize> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(u) = n.as_u64() {
        return usize::try_from(u).ok();
    }
    if n.is_i64() {
        return None; // negative
    }
    let f = n.as_f64()?;
    // Below 2^53 every integer is exact, so the conversion is too.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if (0.0..=EXACT).contains(&f) && f.fract() == 0.0 {
        usize::try_from(f as u64).ok()
    } else {
        None
    }
}

/// Every part, in the core's order.
const ALL_PARTS: [ContactPart; 16] = ContactPart::ALL;

/// The `EXTENDED` fieldset: every part but the extended fields.
const EXTENDED_PARTS: [ContactPart; 15] = [
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
    ContactPart::Source,
    ContactPart::LastActivity,
];

fn field_parts(path: &str) -> Option<&'static [ContactPart]> {
    Some(match path {
        "id" | "revision" => &[],
        "info" => &[
            ContactPart::Name,
            ContactPart::Emails,
            ContactPart::Phones,
            ContactPart::Addresses,
            ContactPart::Company,
            ContactPart::JobTitle,
            ContactPart::Birthdate,
            ContactPart::Locale,
            ContactPart::Picture,
            ContactPart::Labels,
            ContactPart::ExtendedFields,
        ],
        "info.name" | "info.name.first" | "info.name.last" => &[ContactPart::Name],
        "info.emails" => &[ContactPart::Emails],
        "info.phones" => &[ContactPart::Phones],
        "info.addresses" => &[ContactPart::Addresses],
        "info.company" => &[ContactPart::Company],
        "info.jobTitle" | "info.job_title" => &[ContactPart::JobTitle],
        "info.birthdate" => &[ContactPart::Birthdate],
        "info.locale" => &[ContactPart::Locale],
        "info.picture" => &[ContactPart::Picture],
        "info.labelKeys" | "info.label_keys" => &[ContactPart::Labels],
        "info.extendedFields" | "info.extended_fields" => &[ContactPart::ExtendedFields],
        // The emulator keeps no locations: asking for them projects nothing.
        "info.locations" => &[],
        "source" => &[ContactPart::Source],
        "lastActivity" | "last_activity" => &[ContactPart::LastActivity],
        "primaryInfo" | "primaryInfo.email" | "primaryInfo.phone" | "primary_info"
        | "primary_info.email" | "primary_info.phone" => &[ContactPart::PrimaryInfo],
        "createdDate" | "created_date" => &[ContactPart::CreatedDate],
        "updatedDate" | "updated_date" => &[ContactPart::UpdatedDate],
        _ => return None,
    })
}

/// Wix's fieldsets: `BASIC` names and primary info; `COMMUNICATION_DETAILS` adds emails,
/// phones and addresses; `EXTENDED` everything but extended fields; `FULL` everything.
fn fieldset_parts(name: &str) -> Option<&'static [ContactPart]> {
    Some(match name {
        "BASIC" => &[ContactPart::Name, ContactPart::PrimaryInfo],
        "COMMUNICATION_DETAILS" => &[
            ContactPart::Name,
            ContactPart::Emails,
            ContactPart::Phones,
            ContactPart::Addresses,
            ContactPart::PrimaryInfo,
        ],
        "EXTENDED" => &EXTENDED_PARTS,
        "FULL" => &ALL_PARTS,
        _ => return None,
    })
}

fn parse_projection(
    fields: Option<&Value>,
    fieldsets: Option<&Value>,
) -> Result<Option<Vec<ContactPart>>, QueryError> {
    let fields = strings(fields, "query.fields")?;
    let fieldsets = strings(fieldsets, "query.fieldsets")?;
    if fields.is_empty() && fieldsets.is_empty() {
        return Ok(None);
    }
    let mut wanted: Vec<ContactPart> = Vec::new();
    for (i, field) in fields {
        let parts = field_parts(field).ok_or_else(|| QueryError::UnknownProjectionField {
            path: format!("query.fields[{i}]"),
            field: field.to_owned(),
        })?;
        wanted.extend_from_slice(parts);
    }
    for (i, name) in fieldsets {
        let parts = fieldset_parts(name).ok_or_else(|| QueryError::UnknownFieldset {
            path: format!("query.fieldsets[{i}]"),
            fieldset: name.to_owned(),
        })?;
        wanted.extend_from_slice(parts);
    }
    let parts: Vec<ContactPart> = ALL_PARTS
        .into_iter()
        .filter(|p| wanted.contains(p))
        .collect();
    Ok((parts.len() < ALL_PARTS.len()).then_some(parts))
}

/// An optional array of strings, with each one's index.
fn strings<'a>(value: Option<&'a Value>, path: &str) -> Result<Vec<(usize, &'a str)>, QueryError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let items = value.as_array().ok_or_else(|| {
        invalid(
            path,
            format!("must be an array of strings; got {}", describe(value)),
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str().map(|s| (i, s)).ok_or_else(|| {
                invalid(
                    &format!("{path}[{i}]"),
                    format!("must be a string; got {}", describe(item)),
                )
            })
        })
        .collect()
}

// -------------------------------------------------------------------------------------------
// Helpers

/// A value that is there and not `null`.
fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

/// A key that may be spelled in camelCase or snake_case; camelCase wins.
fn member<'a>(object: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    present(object.get(camel)).or_else(|| present(object.get(snake)))
}

/// An object's entries by key, so the parse does not depend on serde_json's map order
/// (which the `preserve_order` feature, if any crate turns it on, would change).
fn sorted(object: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = object.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// A short, non-recursive description of a value for messages (never the whole of a deep
/// value).
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {:?}", short(s)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// At most 64 characters of a caller's string, for messages.
fn short(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", s.get(..end).unwrap_or_default()),
        None => s.to_owned(),
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() {
        "request body"
    } else {
        path
    }
}

fn invalid(path: &str, reason: String) -> QueryError {
    QueryError::InvalidQuery {
        path: path.to_owned(),
        reason,
    }
}

fn value_type(path: &str, reason: String) -> QueryError {
    QueryError::FilterValueType {
        path: path.to_owned(),
        reason,
    }
}

fn malformed(path: &str, reason: String) -> QueryError {
    QueryError::MalformedFilter {
        path: path.to_owned(),
        reason,
    }
}
