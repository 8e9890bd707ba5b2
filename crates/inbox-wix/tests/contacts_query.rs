//! Query Contacts request bodies, parsed into the core's `ContactQuery`
//! (`inbox_wix::contacts_query`).
//!
//! Most cases are data: a JSON body and a snapshot of what it parses to (the `Debug` of the
//! query, or the error's code and message); run with `UPDATE_EXPECT=1` to rewrite them. Then
//! the parser is checked against the core's evaluator: every field and operator the parser
//! accepts, the core runs; a property test feeds arbitrary JSON; and queries run end to end
//! on contacts created through `Inbox::execute`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::LazyLock;

use expect_test::{Expect, expect};
use inbox_core::contacts::{
    Condition, ContactDirectory, ContactDraft, ContactEmail, ContactFilter, ContactName,
    ContactPhone, ContactQuery, ContactView, EntryTag, FilterValue, QueryContactsError,
};
use inbox_core::{
    Command, ContactId, Context, Inbox, InboxConfig, SequentialIds, SiteId, Timestamp,
};
use inbox_wix::contacts_query::{MAX_FILTER_DEPTH, QueryError, parse_query_request};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Harness

fn render(
    result: Result<ContactQuery, QueryError>,
    show: impl Fn(&ContactQuery) -> String,
) -> String {
    match result {
        Ok(q) => show(&q),
        Err(e) => format!("{}: {e}", e.code()),
    }
}

/// Parses a whole request body (JSON text): the query's `Debug`, or the error.
fn check(body: &str, expected: Expect) {
    let value: Value = serde_json::from_str(body).unwrap();
    expected.assert_eq(&render(parse_query_request(&value), |q| format!("{q:?}")));
}

/// Parses `{"query": {"filter": <filter>}}`: the filter's `Debug`, or the error.
fn check_filter(filter: &str, expected: Expect) {
    let body = format!(r#"{{"query": {{"filter": {filter}}}}}"#);
    let value: Value = serde_json::from_str(&body).unwrap();
    expected.assert_eq(&render(parse_query_request(&value), |q| {
        format!("{:?}", q.filter)
    }));
}

/// Parses `{"query": <query>}` and shows one part of the result.
fn check_part(query: &str, part: fn(&ContactQuery) -> String, expected: Expect) {
    let body = format!(r#"{{"query": {query}}}"#);
    let value: Value = serde_json::from_str(&body).unwrap();
    expected.assert_eq(&render(parse_query_request(&value), part));
}

fn parts(q: &ContactQuery) -> String {
    format!("{:?}", q.parts)
}

fn sort(q: &ContactQuery) -> String {
    format!("{:?}", q.sort)
}

fn paging(q: &ContactQuery) -> String {
    format!("limit {:?}, offset {}", q.limit, q.offset)
}

const CODES: [&str; 9] = [
    "MALFORMED_FILTER",
    "UNSUPPORTED_FILTER",
    "UNSUPPORTED_FILTER_FIELD_UNKNOWN",
    "UNSUPPORTED_FILTER_OPERATOR",
    "UNSUPPORTED_FILTER_VALUE_TYPE",
    "UNSUPPORTED_FILTER_VALUE",
    "ILLEGAL_LIMIT",
    "UNSUPPORTED_SORT_FIELD",
    "INVALID_QUERY",
];

// ---------------------------------------------------------------------------------------
// The example flows

#[test]
fn the_example_flows_query_finds_ids_by_email() {
    let body = r#"{
      "query": {
        "filter": {
          "info.emails.email": { "$eq": "<EMAIL_ADDRESS_FROM_INCOMING_MESSAGE>" }
        },
        "fields": [ "id" ]
      }
    }"#;
    check(
        body,
        expect![[
            r#"ContactQuery { filter: Field(Email, Eq(Text("<EMAIL_ADDRESS_FROM_INCOMING_MESSAGE>"))), sort: [], parts: Some([]), offset: 0, limit: None }"#
        ]],
    );
    assert_eq!(
        parse_query_request(&serde_json::from_str(body).unwrap()),
        Ok(ContactQuery::by_email(
            "<EMAIL_ADDRESS_FROM_INCOMING_MESSAGE>"
        ))
    );
}

#[test]
fn a_body_without_a_query_asks_for_everything_with_the_defaults() {
    check(
        "{}",
        expect![[r#"ContactQuery { filter: All, sort: [], parts: None, offset: 0, limit: None }"#]],
    );
    for body in [
        r#"{"query": null}"#,
        r#"{"query": {}}"#,
        r#"{"query": {"filter": null, "sort": null, "paging": null, "fields": null, "fieldsets": null}}"#,
        r#"{"query": {"filter": {}, "sort": [], "paging": {}, "fields": [], "fieldsets": []}}"#,
        // Unknown keys are ignored; an empty search is no search.
        r#"{"query": {"cursorPaging": 5}, "other": 1, "search": ""}"#,
        r#"{"search": null}"#,
        r#"{"search": {}}"#,
    ] {
        let value: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            parse_query_request(&value),
            Ok(ContactQuery::default()),
            "{body}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Filters: each operator on each field

#[test]
fn text_fields_take_strings() {
    for field in [
        "info.emails.email",
        "primaryInfo.email",
        "primaryInfo.phone",
        "info.name.first",
        "info.name.last",
    ] {
        let parsed = |op: &str| {
            let body = json!({"query": {"filter": {field: op_value(op, false)}}});
            render(parse_query_request(&body), |q| format!("{:?}", q.filter))
        };
        // The same conditions on every text field; only the field differs.
        let shown: Vec<String> = ["$eq", "$ne", "$in", "$hasSome", "$exists", "$startsWith"]
            .into_iter()
            .map(parsed)
            .collect();
        let field_debug = match field {
            "info.emails.email" => "Email",
            "primaryInfo.email" => "PrimaryEmail",
            "primaryInfo.phone" => "PrimaryPhone",
            "info.name.first" => "FirstName",
            _ => "LastName",
        };
        assert_eq!(
            shown,
            [
                format!(r#"Field({field_debug}, Eq(Text("Jo@Example.com")))"#),
                format!(r#"Field({field_debug}, Ne(Text("Jo@Example.com")))"#),
                format!(r#"Field({field_debug}, In([Text("a"), Text("B")]))"#),
                format!(r#"Field({field_debug}, HasSome([Text("a"), Text("B")]))"#),
                format!("Field({field_debug}, Exists(true))"),
                format!(r#"Field({field_debug}, StartsWith("Jo"))"#),
            ],
            "{field}"
        );
    }
    // Implicit $eq, and values kept exactly as given (the core folds case where it should).
    check_filter(
        r#"{"info.emails.email": "  Jo@Example.COM "}"#,
        expect![[r#"Field(Email, Eq(Text("  Jo@Example.COM ")))"#]],
    );
    check_filter(
        r#"{"primaryInfo.email": {"$exists": false}}"#,
        expect!["Field(PrimaryEmail, Exists(false))"],
    );
    check_filter(
        r#"{"info.emails.email": {"$in": []}}"#,
        expect!["Field(Email, In([]))"],
    );
}

#[test]
fn id_takes_eq_ne_in_has_some_and_exists() {
    check_filter(
        r#"{"id": "4e600edc-db48-5260-9d04-7ea5c3e5fffd"}"#,
        expect![[r#"Field(Id, Eq(Text("4e600edc-db48-5260-9d04-7ea5c3e5fffd")))"#]],
    );
    check_filter(
        r#"{"id": {"$eq": "a"}}"#,
        expect![[r#"Field(Id, Eq(Text("a")))"#]],
    );
    check_filter(
        r#"{"id": {"$ne": "a"}}"#,
        expect![[r#"Field(Id, Ne(Text("a")))"#]],
    );
    check_filter(
        r#"{"id": {"$in": ["a", "b"]}}"#,
        expect![[r#"Field(Id, In([Text("a"), Text("b")]))"#]],
    );
    check_filter(
        r#"{"id": {"$hasSome": ["a"]}}"#,
        expect![[r#"Field(Id, HasSome([Text("a")]))"#]],
    );
    check_filter(
        r#"{"id": {"$exists": true}}"#,
        expect!["Field(Id, Exists(true))"],
    );
    check_filter(
        r#"{"id": {"$startsWith": "4e"}}"#,
        expect![
            "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.id.$startsWith: $startsWith is not supported on id"
        ],
    );
}

#[test]
fn dates_take_rfc_3339_strings_or_date_objects() {
    check_filter(
        r#"{"createdDate": {"$eq": "2024-01-02T03:04:05Z"}}"#,
        expect!["Field(CreatedDate, Eq(Time(Timestamp(2024-01-02T03:04:05.000Z))))"],
    );
    check_filter(
        r#"{"createdDate": {"$ne": {"$date": "2024-01-02T03:04:05.678Z"}}}"#,
        expect!["Field(CreatedDate, Ne(Time(Timestamp(2024-01-02T03:04:05.678Z))))"],
    );
    // Offsets are converted to UTC.
    check_filter(
        r#"{"updatedDate": {"$gt": "2024-01-02T05:04:05+02:00"}}"#,
        expect!["Field(UpdatedDate, Gt(Time(Timestamp(2024-01-02T03:04:05.000Z))))"],
    );
    check_filter(
        r#"{"updatedDate": {"$gte": "2024-01-02T03:04:05Z"}}"#,
        expect!["Field(UpdatedDate, Gte(Time(Timestamp(2024-01-02T03:04:05.000Z))))"],
    );
    check_filter(
        r#"{"createdDate": {"$lt": {"$date": "2024-01-02T03:04:05Z"}}}"#,
        expect!["Field(CreatedDate, Lt(Time(Timestamp(2024-01-02T03:04:05.000Z))))"],
    );
    check_filter(
        r#"{"createdDate": {"$lte": "2024-01-02T03:04:05Z"}}"#,
        expect!["Field(CreatedDate, Lte(Time(Timestamp(2024-01-02T03:04:05.000Z))))"],
    );
    // Implicit $eq, with a string or a $date object.
    check_filter(
        r#"{"createdDate": "2024-01-02T03:04:05Z"}"#,
        expect!["Field(CreatedDate, Eq(Time(Timestamp(2024-01-02T03:04:05.000Z))))"],
    );
    check_filter(
        r#"{"createdDate": {"$date": "2024-01-02T03:04:05Z"}}"#,
        expect!["Field(CreatedDate, Eq(Time(Timestamp(2024-01-02T03:04:05.000Z))))"],
    );
    // A range: two operators on one field are an AND.
    check_filter(
        r#"{"createdDate": {"$gte": "2024-01-01T00:00:00Z", "$lt": "2024-02-01T00:00:00Z"}}"#,
        expect![
            "And([Field(CreatedDate, Gte(Time(Timestamp(2024-01-01T00:00:00.000Z)))), Field(CreatedDate, Lt(Time(Timestamp(2024-02-01T00:00:00.000Z))))])"
        ],
    );
}

/// A value for `op` that the parser accepts on a text field (`date: false`) or a date field.
fn op_value(op: &str, date: bool) -> Value {
    let one = if date {
        json!("2024-01-02T03:04:05Z")
    } else {
        json!("Jo@Example.com")
    };
    let value = match op {
        "$in" | "$hasSome" | "$hasAll" => {
            if date {
                json!(["2024-01-02T03:04:05Z"])
            } else {
                json!(["a", "B"])
            }
        }
        "$exists" => json!(true),
        "$startsWith" => json!("Jo"),
        _ => one,
    };
    json!({ op: value })
}

const FIELDS: [&str; 8] = [
    "id",
    "info.emails.email",
    "primaryInfo.email",
    "primaryInfo.phone",
    "info.name.first",
    "info.name.last",
    "createdDate",
    "updatedDate",
];

const OPS: [&str; 11] = [
    "$eq",
    "$ne",
    "$in",
    "$hasSome",
    "$exists",
    "$startsWith",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$hasAll",
];

/// The operators each field accepts: the table of the module docs.
#[test]
fn which_operators_each_field_accepts() {
    let mut table = String::new();
    for field in FIELDS {
        let date = field.ends_with("Date");
        let (mut accepted, mut refused) = (Vec::new(), Vec::new());
        for op in OPS {
            let body = json!({"query": {"filter": {field: op_value(op, date)}}});
            match parse_query_request(&body) {
                Ok(_) => accepted.push(op),
                Err(e) => {
                    assert_eq!(e.code(), "UNSUPPORTED_FILTER_OPERATOR", "{field} {op}: {e}");
                    refused.push(op);
                }
            }
        }
        table.push_str(&format!(
            "{field}: {} | refused: {}\n",
            accepted.join(" "),
            refused.join(" ")
        ));
    }
    expect![[r#"
        id: $eq $ne $in $hasSome $exists | refused: $startsWith $gt $gte $lt $lte $hasAll
        info.emails.email: $eq $ne $in $hasSome $exists $startsWith | refused: $gt $gte $lt $lte $hasAll
        primaryInfo.email: $eq $ne $in $hasSome $exists $startsWith | refused: $gt $gte $lt $lte $hasAll
        primaryInfo.phone: $eq $ne $in $hasSome $exists $startsWith | refused: $gt $gte $lt $lte $hasAll
        info.name.first: $eq $ne $in $hasSome $exists $startsWith | refused: $gt $gte $lt $lte $hasAll
        info.name.last: $eq $ne $in $hasSome $exists $startsWith | refused: $gt $gte $lt $lte $hasAll
        createdDate: $eq $ne $gt $gte $lt $lte | refused: $in $hasSome $exists $startsWith $hasAll
        updatedDate: $eq $ne $gt $gte $lt $lte | refused: $in $hasSome $exists $startsWith $hasAll
    "#]]
    .assert_eq(&table);
}

/// The parser and the core's evaluator agree: what the parser accepts the core runs, and
/// what the parser refuses as unsupported the core refuses too.
#[test]
fn the_parser_accepts_exactly_what_the_core_evaluates() {
    let dir = ContactDirectory::default();
    for field in FIELDS {
        let date = field.ends_with("Date");
        for op in OPS {
            let body = json!({"query": {"filter": {field: op_value(op, date)}}});
            match parse_query_request(&body) {
                Ok(q) => assert!(dir.query(&q).is_ok(), "{field} {op}: the core refuses"),
                Err(QueryError::UnsupportedFilter {
                    field: f, op: o, ..
                }) => {
                    assert_eq!(o, op);
                    let value = if date {
                        FilterValue::Time(Timestamp::EPOCH)
                    } else {
                        FilterValue::Text("x".to_owned())
                    };
                    let condition = match op {
                        "$in" => Condition::In(vec![value]),
                        "$hasSome" => Condition::HasSome(vec![value]),
                        "$exists" => Condition::Exists(true),
                        "$startsWith" => Condition::StartsWith("x".to_owned()),
                        "$gt" => Condition::Gt(value),
                        "$gte" => Condition::Gte(value),
                        "$lt" => Condition::Lt(value),
                        "$lte" => Condition::Lte(value),
                        "$hasAll" => continue, // not in the core at all
                        _ => panic!("{field} {op}: $eq and $ne are supported everywhere"),
                    };
                    let q = ContactQuery {
                        filter: ContactFilter::Field(f, condition),
                        ..ContactQuery::default()
                    };
                    assert!(
                        matches!(
                            dir.query(&q),
                            Err(QueryContactsError::UnsupportedFilter { .. })
                        ),
                        "{field} {op}: the parser refuses what the core runs"
                    );
                }
                Err(e) => panic!("{field} {op}: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Filters: AND, OR, NOT

#[test]
fn several_keys_in_one_object_are_an_and() {
    check_filter(
        r#"{"info.name.first": "Jo", "info.emails.email": {"$startsWith": "jo@"}}"#,
        expect![[r#"And([Field(Email, StartsWith("jo@")), Field(FirstName, Eq(Text("Jo")))])"#]],
    );
    // Operators on one field flatten into the same AND, in key order.
    check_filter(
        r#"{"id": {"$ne": "a"}, "createdDate": {"$gt": "2024-01-01T00:00:00Z", "$lte": "2024-02-01T00:00:00Z"}, "info.emails.email": {"$exists": true, "$ne": "x@y.z"}}"#,
        expect![[
            r#"And([Field(CreatedDate, Gt(Time(Timestamp(2024-01-01T00:00:00.000Z)))), Field(CreatedDate, Lte(Time(Timestamp(2024-02-01T00:00:00.000Z)))), Field(Id, Ne(Text("a"))), Field(Email, Exists(true)), Field(Email, Ne(Text("x@y.z")))])"#
        ]],
    );
}

#[test]
fn and_or_not_nest() {
    check_filter(
        r#"{"$and": [{"id": "a"}, {"info.name.last": "Doe"}]}"#,
        expect![[r#"And([Field(Id, Eq(Text("a"))), Field(LastName, Eq(Text("Doe")))])"#]],
    );
    check_filter(
        r#"{"$or": [{"primaryInfo.email": "a@b.c"}, {"primaryInfo.phone": {"$startsWith": "+1"}}]}"#,
        expect![[
            r#"Or([Field(PrimaryEmail, Eq(Text("a@b.c"))), Field(PrimaryPhone, StartsWith("+1"))])"#
        ]],
    );
    check_filter(
        r#"{"$not": {"info.emails.email": {"$exists": true}}}"#,
        expect!["Not(Field(Email, Exists(true)))"],
    );
    // One-item $and/$or are kept as written.
    check_filter(
        r#"{"$or": [{"id": "a"}]}"#,
        expect![[r#"Or([Field(Id, Eq(Text("a")))])"#]],
    );
    // Mixed with fields, and nested.
    check_filter(
        r#"{"info.name.first": {"$startsWith": "j"}, "$or": [{"$not": {"id": {"$in": ["a", "b"]}}}, {"$and": [{"updatedDate": {"$lt": "2024-01-01T00:00:00Z"}}, {}]}]}"#,
        expect![[
            r#"And([Or([Not(Field(Id, In([Text("a"), Text("b")]))), And([Field(UpdatedDate, Lt(Time(Timestamp(2024-01-01T00:00:00.000Z)))), All])]), Field(FirstName, StartsWith("j"))])"#
        ]],
    );
    // {} matches everything, so $not of it matches nothing.
    check_filter("{}", expect!["All"]);
    check_filter(r#"{"$not": {}}"#, expect!["Not(All)"]);
}

// ---------------------------------------------------------------------------------------
// Filters: errors

#[test]
fn malformed_filters_name_their_path() {
    let cases = [
        (
            r#"[]"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter: a filter must be an object; got an array"
            ],
        ),
        (
            r#""id""#,
            expect![[
                r#"MALFORMED_FILTER: malformed filter at query.filter: a filter must be an object; got the string "id""#
            ]],
        ),
        (
            r#"{"$and": {"id": "a"}}"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter.$and: $and takes an array of filters; got an object"
            ],
        ),
        (
            r#"{"$and": []}"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter.$and: $and needs at least one filter"
            ],
        ),
        (
            r#"{"$or": []}"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter.$or: $or needs at least one filter"
            ],
        ),
        (
            r#"{"$or": [{"id": "a"}, "b"]}"#,
            expect![[
                r#"MALFORMED_FILTER: malformed filter at query.filter.$or[1]: a filter must be an object; got the string "b""#
            ]],
        ),
        (
            r#"{"$not": [{"id": "a"}]}"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter.$not: a filter must be an object; got an array"
            ],
        ),
        (
            r#"{"$not": null}"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter.$not: a filter must be an object; got null"
            ],
        ),
        (
            r#"{"$nor": [{"id": "a"}]}"#,
            expect![[
                r#"MALFORMED_FILTER: malformed filter at query.filter.$nor: unknown operator "$nor""#
            ]],
        ),
        (
            r#"{"$eq": "a"}"#,
            expect![[
                r#"MALFORMED_FILTER: malformed filter at query.filter.$eq: $eq must be applied to a field, as in {"id": {"$eq": ..}}"#
            ]],
        ),
        (
            r#"{"id": {"$regex": "a.*"}}"#,
            expect![[
                r#"MALFORMED_FILTER: malformed filter at query.filter.id.$regex: unknown operator "$regex""#
            ]],
        ),
        (
            r#"{"id": {}}"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter.id: a condition needs an operator such as $eq"
            ],
        ),
        (
            r#"{"info": {"name": {"first": "Jo"}}}"#,
            expect![[
                r#"MALFORMED_FILTER: malformed filter at query.filter.info.name: unexpected key "name": a condition holds operators such as $eq"#
            ]],
        ),
        (
            r#"{"id": {"$and": [{"$eq": "a"}]}}"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter.id.$and: $and combines filters and cannot be used inside a condition on a field"
            ],
        ),
        (
            r#"{"createdDate": {"$date": "2024-01-01T00:00:00Z", "$gt": "2024-01-01T00:00:00Z"}}"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter.createdDate.$date: $date wraps a date and must be the only key of its object"
            ],
        ),
        // Values of the wrong type.
        (
            r#"{"info.emails.email": 5}"#,
            expect![
                "UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.info.emails.email: info.emails.email is compared with strings; got 5"
            ],
        ),
        (
            r#"{"info.emails.email": {"$eq": null}}"#,
            expect![
                "UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.info.emails.email.$eq: info.emails.email is compared with strings; got null"
            ],
        ),
        (
            r#"{"id": ["a"]}"#,
            expect![
                "UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.id: id is compared with strings; got an array"
            ],
        ),
        (
            r#"{"id": {"$in": "a"}}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.id.$in: $in takes an array; got the string "a""#
            ]],
        ),
        (
            r#"{"id": {"$in": ["a", 2]}}"#,
            expect![
                "UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.id.$in[1]: id is compared with strings; got 2"
            ],
        ),
        (
            r#"{"primaryInfo.email": {"$exists": "yes"}}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.primaryInfo.email.$exists: $exists takes true or false; got the string "yes""#
            ]],
        ),
        (
            r#"{"info.name.first": {"$startsWith": ["J"]}}"#,
            expect![
                "UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.info.name.first.$startsWith: $startsWith takes a string; got an array"
            ],
        ),
        (
            r#"{"id": {"$date": "2024-01-01T00:00:00Z"}}"#,
            expect![
                "UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.id: id is compared with strings; got an object"
            ],
        ),
        (
            r#"{"createdDate": "yesterday"}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_VALUE: unsupported filter value at query.filter.createdDate: "yesterday" is not an RFC 3339 date-time (premature end of input)"#
            ]],
        ),
        (
            r#"{"createdDate": {"$gt": "2024-01-01"}}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_VALUE: unsupported filter value at query.filter.createdDate.$gt: "2024-01-01" is not an RFC 3339 date-time (premature end of input)"#
            ]],
        ),
        (
            r#"{"createdDate": {"$gt": 1704067200000}}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.createdDate.$gt: expected an RFC 3339 date-time string or {"$date": ".."}; got 1704067200000"#
            ]],
        ),
        (
            r#"{"updatedDate": {"$lt": {"$date": 5}}}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.updatedDate.$lt: expected an RFC 3339 date-time string or {"$date": ".."}; got an object"#
            ]],
        ),
    ];
    for (filter, expected) in cases {
        check_filter(filter, expected);
    }
}

#[test]
fn unsupported_filters_name_the_field_and_operator() {
    let cases = [
        (
            r#"{"info.shoeSize": "42"}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_FIELD_UNKNOWN: unsupported filter at query.filter.info.shoeSize: "info.shoeSize" is not a field contacts can be filtered on"#
            ]],
        ),
        (
            r#"{"info.labelKeys": {"$eq": "custom.vip"}}"#,
            expect![
                "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.info.labelKeys.$eq: $eq is not supported on info.labelKeys"
            ],
        ),
        (
            r#"{"info.locale": {"$startsWith": "en"}}"#,
            expect![
                "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.info.locale.$startsWith: $startsWith is not supported on info.locale"
            ],
        ),
        (
            r#"{"info.company": {"$hasAll": ["Wix"]}}"#,
            expect![
                "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.info.company.$hasAll: $hasAll is not supported on info.company"
            ],
        ),
        (
            r#"{"_id": {"$eq": "a"}}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_FIELD_UNKNOWN: unsupported filter at query.filter._id: "_id" is not a field contacts can be filtered on"#
            ]],
        ),
        (
            r#"{"$and": [{"id": "a"}, {"info.phones.phone": {"$startsWith": "+1"}}]}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_FIELD_UNKNOWN: unsupported filter at query.filter.$and[1].info.phones.phone: "info.phones.phone" is not a field contacts can be filtered on"#
            ]],
        ),
        (
            r#"{"createdDate": {"$startsWith": "2024"}}"#,
            expect![
                "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.createdDate.$startsWith: $startsWith is not supported on createdDate"
            ],
        ),
        (
            r#"{"updatedDate": {"$exists": true}}"#,
            expect![
                "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.updatedDate.$exists: $exists is not supported on updatedDate"
            ],
        ),
        (
            r#"{"createdDate": {"$in": ["2024-01-01T00:00:00Z"]}}"#,
            expect![
                "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.createdDate.$in: $in is not supported on createdDate"
            ],
        ),
        (
            r#"{"info.emails.email": {"$gt": "a"}}"#,
            expect![
                "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.info.emails.email.$gt: $gt is not supported on info.emails.email"
            ],
        ),
        (
            r#"{"info.emails.email": {"$hasAll": ["a", "b"]}}"#,
            expect![
                "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.info.emails.email.$hasAll: $hasAll is not supported on info.emails.email"
            ],
        ),
        // Support is checked before the value: a bad value on an unsupported pair is reported as unsupported.
        (
            r#"{"id": {"$startsWith": 5}}"#,
            expect![
                "UNSUPPORTED_FILTER_OPERATOR: unsupported filter at query.filter.id.$startsWith: $startsWith is not supported on id"
            ],
        ),
        // ...but an unknown operator is malformed, whatever the field.
        (
            r#"{"info.company": {"$like": "W%"}}"#,
            expect![[
                r#"MALFORMED_FILTER: malformed filter at query.filter.info.company.$like: unknown operator "$like""#
            ]],
        ),
    ];
    for (filter, expected) in cases {
        check_filter(filter, expected);
    }
}

/// `n` nested `$not`s around `{}`: `n + 1` filter objects, the `filter` itself being level 1.
fn nested_nots(n: usize) -> Value {
    // Built by hand: `json!` would serialize the inner value recursively.
    let wrap = |key: &str, inner: Value| Value::Object(Map::from_iter([(key.to_owned(), inner)]));
    let mut filter = json!({});
    for _ in 0..n {
        filter = wrap("$not", filter);
    }
    wrap("query", wrap("filter", filter))
}

#[test]
fn filters_nest_at_most_32_levels() {
    assert_eq!(MAX_FILTER_DEPTH, 32);
    let deepest = parse_query_request(&nested_nots(MAX_FILTER_DEPTH - 1)).unwrap();
    assert!(matches!(deepest.filter, ContactFilter::Not(_)));
    let too_deep = parse_query_request(&nested_nots(MAX_FILTER_DEPTH)).unwrap_err();
    assert_eq!(too_deep.code(), "MALFORMED_FILTER");
    assert_eq!(
        too_deep.path(),
        format!("query.filter{}", ".$not".repeat(MAX_FILTER_DEPTH))
    );
    assert!(
        too_deep
            .to_string()
            .ends_with(": filters may nest at most 32 levels deep"),
        "{too_deep}"
    );
    // Arrays count as the objects in them: $and inside $or inside ...
    let mut filter = json!({"id": "a"});
    for i in 0..40 {
        filter = if i % 2 == 0 {
            json!({"$and": [filter]})
        } else {
            json!({"$or": [{"id": "b"}, filter]})
        };
    }
    let e = parse_query_request(&json!({"query": {"filter": filter}})).unwrap_err();
    assert_eq!(e.code(), "MALFORMED_FILTER");
    assert!(
        e.path().starts_with("query.filter.$or[1].$and[0].$or[1]"),
        "{}",
        e.path()
    );
}

#[test]
fn very_deep_filters_do_not_overflow_the_stack() {
    // As deep as serde_json parses text (its limit is 128)...
    let text = format!(
        r#"{{"query": {{"filter": {}{{}}{}}}}}"#,
        r#"{"$not": "#.repeat(120),
        "}".repeat(120)
    );
    let e = parse_query_request(&serde_json::from_str(&text).unwrap()).unwrap_err();
    assert_eq!(e.code(), "MALFORMED_FILTER");
    // ...and far deeper, built in memory. The parser stops at level 33 whatever the depth.
    let deep = nested_nots(100_000);
    let e = parse_query_request(&deep).unwrap_err();
    assert_eq!(e.code(), "MALFORMED_FILTER");
    // serde_json drops values recursively: leak this one rather than overflow in the test.
    std::mem::forget(deep);
}

// ---------------------------------------------------------------------------------------
// Projection

#[test]
fn fields_and_fieldsets_project_the_contacts() {
    let cases = [
        // id and revision always come back.
        (r#"{"fields": ["id"]}"#, expect!["Some([])"]),
        (r#"{"fields": ["id", "revision"]}"#, expect!["Some([])"]),
        (r#"{"fields": ["info.name"]}"#, expect!["Some([Name])"]),
        (
            r#"{"fields": ["info.name.first", "info.name.last"]}"#,
            expect!["Some([Name])"],
        ),
        (r#"{"fields": ["info.emails"]}"#, expect!["Some([Emails])"]),
        (r#"{"fields": ["info.phones"]}"#, expect!["Some([Phones])"]),
        (
            r#"{"fields": ["info"]}"#,
            expect![
                "Some([Name, Emails, Phones, Addresses, Company, JobTitle, Birthdate, Locale, Picture, Labels, ExtendedFields])"
            ],
        ),
        (
            r#"{"fields": ["primaryInfo"]}"#,
            expect!["Some([PrimaryInfo])"],
        ),
        (
            r#"{"fields": ["primaryInfo.email"]}"#,
            expect!["Some([PrimaryInfo])"],
        ),
        (
            r#"{"fields": ["primaryInfo.phone"]}"#,
            expect!["Some([PrimaryInfo])"],
        ),
        (
            r#"{"fields": ["updatedDate", "createdDate"]}"#,
            expect!["Some([CreatedDate, UpdatedDate])"],
        ),
        (
            r#"{"fields": ["primary_info.email", "created_date", "updated_date"]}"#,
            expect!["Some([PrimaryInfo, CreatedDate, UpdatedDate])"],
        ),
        // Every part is the same as no projection.
        (
            r#"{"fields": ["info", "primaryInfo", "createdDate", "updatedDate"]}"#,
            expect![
                "Some([Name, Emails, Phones, PrimaryInfo, CreatedDate, UpdatedDate, Addresses, Company, JobTitle, Birthdate, Locale, Picture, Labels, ExtendedFields])"
            ],
        ),
        (
            r#"{"fieldsets": ["BASIC"]}"#,
            expect!["Some([Name, PrimaryInfo])"],
        ),
        (
            r#"{"fieldsets": ["COMMUNICATION_DETAILS"]}"#,
            expect!["Some([Name, Emails, Phones, PrimaryInfo, Addresses])"],
        ),
        (
            r#"{"fieldsets": ["EXTENDED"]}"#,
            expect![
                "Some([Name, Emails, Phones, PrimaryInfo, CreatedDate, UpdatedDate, Addresses, Company, JobTitle, Birthdate, Locale, Picture, Labels, Source, LastActivity])"
            ],
        ),
        (r#"{"fieldsets": ["FULL"]}"#, expect!["None"]),
        // fields and fieldsets add up.
        (
            r#"{"fields": ["createdDate"], "fieldsets": ["BASIC"]}"#,
            expect!["Some([Name, PrimaryInfo, CreatedDate])"],
        ),
        (r#"{"fields": [], "fieldsets": []}"#, expect!["None"]),
        (
            r#"{"fields": ["id", "info.company"]}"#,
            expect!["Some([Company])"],
        ),
        // Errors.
        (
            r#"{"fields": ["id", "info.shoeSize"]}"#,
            expect![[r#"INVALID_QUERY: query.fields[1]: unknown contact field "info.shoeSize""#]],
        ),
        (
            r#"{"fields": ["_id"]}"#,
            expect![[r#"INVALID_QUERY: query.fields[0]: unknown contact field "_id""#]],
        ),
        (
            r#"{"fieldsets": ["basic"]}"#,
            expect![[
                r#"INVALID_QUERY: query.fieldsets[0]: unknown fieldset "basic"; known: BASIC, COMMUNICATION_DETAILS, EXTENDED, FULL"#
            ]],
        ),
        (
            r#"{"fields": "id"}"#,
            expect![[
                r#"INVALID_QUERY: query.fields: must be an array of strings; got the string "id""#
            ]],
        ),
        (
            r#"{"fields": ["id", 1]}"#,
            expect!["INVALID_QUERY: query.fields[1]: must be a string; got 1"],
        ),
        (
            r#"{"fieldsets": {"BASIC": true}}"#,
            expect!["INVALID_QUERY: query.fieldsets: must be an array of strings; got an object"],
        ),
    ];
    for (query, expected) in cases {
        check_part(query, parts, expected);
    }
}

// ---------------------------------------------------------------------------------------
// Sort

#[test]
fn sort_takes_ten_fields_in_either_order() {
    let cases = [
        (
            r#"{"sort": [{"fieldName": "createdDate", "order": "DESC"}]}"#,
            expect!["[(CreatedDate, Desc)]"],
        ),
        // An entry without an order is ascending.
        (
            r#"{"sort": [{"fieldName": "updatedDate"}]}"#,
            expect!["[(UpdatedDate, Asc)]"],
        ),
        (
            r#"{"sort": [{"fieldName": "info.name.last", "order": "ASC"}, {"fieldName": "info.name.first", "order": "DESC"}, {"fieldName": "primaryInfo.email", "order": null}, {"fieldName": "id", "order": "DESC"}]}"#,
            expect!["[(LastName, Asc), (FirstName, Desc), (PrimaryEmail, Asc), (Id, Desc)]"],
        ),
        // No sort at all: empty, and the core orders by createdDate descending.
        (r#"{"sort": []}"#, expect!["[]"]),
        (r#"{}"#, expect!["[]"]),
        // snake_case; with both spellings camelCase wins.
        (
            r#"{"sort": [{"field_name": "created_date", "order": "DESC"}, {"field_name": "primary_info.email"}, {"fieldName": "id", "field_name": "bogus"}]}"#,
            expect!["[(CreatedDate, Desc), (PrimaryEmail, Asc), (Id, Asc)]"],
        ),
        (
            r#"{"sort": [{"fieldName": "info.company"}, {"fieldName": "info.jobTitle", "order": "DESC"}, {"fieldName": "info.birthdate"}, {"fieldName": "lastActivity.activityDate"}]}"#,
            expect!["[(Company, Asc), (JobTitle, Desc), (Birthdate, Asc), (LastActivity, Asc)]"],
        ),
        // Errors.
        (
            r#"{"sort": [{"fieldName": "info.locale"}]}"#,
            expect![[
                r#"UNSUPPORTED_SORT_FIELD: query.sort[0].fieldName: contacts cannot be sorted by "info.locale"; sortable fields: createdDate, updatedDate, lastActivity.activityDate, info.name.first, info.name.last, info.company, info.jobTitle, info.birthdate, primaryInfo.email, id"#
            ]],
        ),
        (
            r#"{"sort": [{"fieldName": "id"}, {"fieldName": "_createdDate"}]}"#,
            expect![[
                r#"UNSUPPORTED_SORT_FIELD: query.sort[1].fieldName: contacts cannot be sorted by "_createdDate"; sortable fields: createdDate, updatedDate, lastActivity.activityDate, info.name.first, info.name.last, info.company, info.jobTitle, info.birthdate, primaryInfo.email, id"#
            ]],
        ),
        (
            r#"{"sort": [{"fieldName": "id", "order": "asc"}]}"#,
            expect![[
                r#"UNSUPPORTED_SORT_FIELD: query.sort[0].order: sort order must be "ASC" or "DESC"; got the string "asc""#
            ]],
        ),
        (
            r#"{"sort": [{"fieldName": "id", "order": 1}]}"#,
            expect![[
                r#"UNSUPPORTED_SORT_FIELD: query.sort[0].order: sort order must be "ASC" or "DESC"; got 1"#
            ]],
        ),
        (
            r#"{"sort": {"fieldName": "id"}}"#,
            expect![[
                r#"INVALID_QUERY: query.sort: must be an array of {"fieldName", "order"}; got an object"#
            ]],
        ),
        (
            r#"{"sort": ["id"]}"#,
            expect![[
                r#"INVALID_QUERY: query.sort[0]: must be an object {"fieldName", "order"}; got the string "id""#
            ]],
        ),
        (
            r#"{"sort": [{"order": "ASC"}]}"#,
            expect!["INVALID_QUERY: query.sort[0].fieldName: is required"],
        ),
        (
            r#"{"sort": [{"fieldName": ["id"]}]}"#,
            expect!["INVALID_QUERY: query.sort[0].fieldName: must be a string; got an array"],
        ),
    ];
    for (query, expected) in cases {
        check_part(query, sort, expected);
    }
}

// ---------------------------------------------------------------------------------------
// Paging

#[test]
fn paging_defaults_and_bounds() {
    let cases = [
        // No limit: None, which the core reads as 50.
        (r#"{}"#, expect!["limit None, offset 0"]),
        (r#"{"paging": {}}"#, expect!["limit None, offset 0"]),
        (
            r#"{"paging": {"limit": null, "offset": null}}"#,
            expect!["limit None, offset 0"],
        ),
        (
            r#"{"paging": {"limit": 1}}"#,
            expect!["limit Some(1), offset 0"],
        ),
        (
            r#"{"paging": {"limit": 1000, "offset": 5000}}"#,
            expect!["limit Some(1000), offset 5000"],
        ),
        // Whole numbers written as floats are whole numbers.
        (
            r#"{"paging": {"limit": 50.0, "offset": 1e2}}"#,
            expect!["limit Some(50), offset 100"],
        ),
        // The limit.
        (
            r#"{"paging": {"limit": 0}}"#,
            expect!["ILLEGAL_LIMIT: query.paging.limit must be an integer from 1 to 1000; got 0"],
        ),
        (
            r#"{"paging": {"limit": 1001}}"#,
            expect![
                "ILLEGAL_LIMIT: query.paging.limit must be an integer from 1 to 1000; got 1001"
            ],
        ),
        (
            r#"{"paging": {"limit": -1}}"#,
            expect!["ILLEGAL_LIMIT: query.paging.limit must be an integer from 1 to 1000; got -1"],
        ),
        (
            r#"{"paging": {"limit": 2.5}}"#,
            expect!["ILLEGAL_LIMIT: query.paging.limit must be an integer from 1 to 1000; got 2.5"],
        ),
        (
            r#"{"paging": {"limit": "50"}}"#,
            expect![[
                r#"ILLEGAL_LIMIT: query.paging.limit must be an integer from 1 to 1000; got the string "50""#
            ]],
        ),
        (
            r#"{"paging": {"limit": true}}"#,
            expect![
                "ILLEGAL_LIMIT: query.paging.limit must be an integer from 1 to 1000; got true"
            ],
        ),
        (
            r#"{"paging": {"limit": 18446744073709551615}}"#,
            expect![
                "ILLEGAL_LIMIT: query.paging.limit must be an integer from 1 to 1000; got 18446744073709551615"
            ],
        ),
        (
            r#"{"paging": {"limit": 1e300}}"#,
            expect![
                "ILLEGAL_LIMIT: query.paging.limit must be an integer from 1 to 1000; got 1e+300"
            ],
        ),
        // The offset.
        (
            r#"{"paging": {"offset": -1}}"#,
            expect!["INVALID_QUERY: query.paging.offset must be a non-negative integer; got -1"],
        ),
        (
            r#"{"paging": {"offset": 0.5}}"#,
            expect!["INVALID_QUERY: query.paging.offset must be a non-negative integer; got 0.5"],
        ),
        (
            r#"{"paging": {"offset": "10"}}"#,
            expect![[
                r#"INVALID_QUERY: query.paging.offset must be a non-negative integer; got the string "10""#
            ]],
        ),
        (
            r#"{"paging": {"offset": 1e300}}"#,
            expect![
                "INVALID_QUERY: query.paging.offset must be a non-negative integer; got 1e+300"
            ],
        ),
        // The limit is checked first.
        (
            r#"{"paging": {"limit": 0, "offset": -1}}"#,
            expect!["ILLEGAL_LIMIT: query.paging.limit must be an integer from 1 to 1000; got 0"],
        ),
        (
            r#"{"paging": [50, 0]}"#,
            expect![[
                r#"INVALID_QUERY: query.paging: must be an object {"limit", "offset"}; got an array"#
            ]],
        ),
    ];
    for (query, expected) in cases {
        check_part(query, paging, expected);
    }
}

// ---------------------------------------------------------------------------------------
// The body as a whole

#[test]
fn request_shape_errors() {
    let cases = [
        (
            r#"[]"#,
            expect!["INVALID_QUERY: request body: must be a JSON object; got an array"],
        ),
        (
            r#"null"#,
            expect!["INVALID_QUERY: request body: must be a JSON object; got null"],
        ),
        (
            r#"{"query": "all"}"#,
            expect![[r#"INVALID_QUERY: query: must be an object; got the string "all""#]],
        ),
        (
            r#"{"query": [{"filter": {}}]}"#,
            expect!["INVALID_QUERY: query: must be an object; got an array"],
        ),
        // Free-text search is refused, not ignored.
        (
            r#"{"search": "jo"}"#,
            expect![
                "UNSUPPORTED_FILTER: search: free-text search is not supported; filter with query.filter instead"
            ],
        ),
        (
            r#"{"query": {}, "search": {"expression": "jo"}}"#,
            expect![
                "UNSUPPORTED_FILTER: search: free-text search is not supported; filter with query.filter instead"
            ],
        ),
        // The first problem wins: the query before the search, the filter before the rest.
        (
            r#"{"query": {"filter": [], "paging": {"limit": 0}}, "search": "jo"}"#,
            expect![
                "MALFORMED_FILTER: malformed filter at query.filter: a filter must be an object; got an array"
            ],
        ),
        // Long strings are cut in messages.
        (
            r#"{"query": {"filter": {"id": {"$in": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}}}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.id.$in: $in takes an array; got the string "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…""#
            ]],
        ),
    ];
    for (body, expected) in cases {
        check(body, expected);
    }
}

#[test]
fn every_error_has_a_code_and_a_path() {
    let cases: [(Value, &str, &str); 8] = [
        (json!([]), "INVALID_QUERY", ""),
        (
            json!({"query": {"filter": {"id": {"$in": [1]}}}}),
            "UNSUPPORTED_FILTER_VALUE_TYPE",
            "query.filter.id.$in[0]",
        ),
        (
            json!({"query": {"filter": {"bogus": 1}}}),
            "UNSUPPORTED_FILTER_FIELD_UNKNOWN",
            "query.filter.bogus",
        ),
        (json!({"search": "x"}), "UNSUPPORTED_FILTER", "search"),
        (
            json!({"query": {"paging": {"limit": 0}}}),
            "ILLEGAL_LIMIT",
            "query.paging.limit",
        ),
        (
            json!({"query": {"paging": {"offset": -5}}}),
            "INVALID_QUERY",
            "query.paging.offset",
        ),
        (
            json!({"query": {"sort": [{"fieldName": "x"}]}}),
            "UNSUPPORTED_SORT_FIELD",
            "query.sort[0].fieldName",
        ),
        (
            json!({"query": {"fieldsets": ["X"]}}),
            "INVALID_QUERY",
            "query.fieldsets[0]",
        ),
    ];
    for (body, code, path) in cases {
        let e = parse_query_request(&body).unwrap_err();
        assert_eq!((e.code(), e.path()), (code, path), "{e}");
        assert!(CODES.contains(&e.code()));
    }
}

#[test]
fn snake_case_requests() {
    check(
        r#"{"query": {
            "filter": {"primary_info.email": {"$eq": "a@b.c"}, "created_date": {"$gt": "2024-01-01T00:00:00Z"}, "primary_info.phone": {"$startsWith": "+44"}, "updated_date": {"$lt": "2025-01-01T00:00:00Z"}},
            "sort": [{"field_name": "updated_date", "order": "DESC"}],
            "paging": {"limit": 10, "offset": 20},
            "fields": ["primary_info", "info.name"]
        }}"#,
        expect![[
            r#"ContactQuery { filter: And([Field(CreatedDate, Gt(Time(Timestamp(2024-01-01T00:00:00.000Z)))), Field(PrimaryEmail, Eq(Text("a@b.c"))), Field(PrimaryPhone, StartsWith("+44")), Field(UpdatedDate, Lt(Time(Timestamp(2025-01-01T00:00:00.000Z))))]), sort: [(UpdatedDate, Desc)], parts: Some([Name, PrimaryInfo]), offset: 20, limit: Some(10) }"#
        ]],
    );
    // The same request in camelCase parses to the same query.
    let snake: Value = serde_json::from_str(
        r#"{"query": {"filter": {"primary_info.email": "a@b.c"}, "sort": [{"field_name": "created_date"}], "fields": ["created_date"]}}"#,
    )
    .unwrap();
    let camel: Value = serde_json::from_str(
        r#"{"query": {"filter": {"primaryInfo.email": "a@b.c"}, "sort": [{"fieldName": "createdDate"}], "fields": ["createdDate"]}}"#,
    )
    .unwrap();
    assert_eq!(parse_query_request(&snake), parse_query_request(&camel));
}

// ---------------------------------------------------------------------------------------
// Arbitrary JSON

/// Keys that steer random JSON into every branch of the parser.
const KEYS: &[&str] = &[
    "query",
    "filter",
    "sort",
    "paging",
    "limit",
    "offset",
    "fields",
    "fieldsets",
    "search",
    "fieldName",
    "field_name",
    "order",
    "$and",
    "$or",
    "$not",
    "$eq",
    "$ne",
    "$in",
    "$hasSome",
    "$hasAll",
    "$exists",
    "$startsWith",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$date",
    "$regex",
    "id",
    "info.emails.email",
    "primaryInfo.email",
    "primary_info.email",
    "primaryInfo.phone",
    "info.name.first",
    "info.name.last",
    "createdDate",
    "updatedDate",
    "created_date",
    "info",
];

const STRINGS: &[&str] = &[
    "",
    "ASC",
    "DESC",
    "BASIC",
    "FULL",
    "COMMUNICATION_DETAILS",
    "id",
    "info",
    "info.name",
    "createdDate",
    "primaryInfo.email",
    "2024-01-02T03:04:05Z",
    "2024-13-45T99:00:00Z",
    "jo@example.com",
    "JO@",
    "é",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..1003).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // non-finite becomes null
        prop::sample::select(STRINGS).prop_map(|s| Value::from(s.to_owned())),
        ".{0,12}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z_$.]{0,10}",
    ];
    leaf.prop_recursive(8, 256, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

static PEOPLE: LazyLock<(Inbox, Vec<ContactId>)> = LazyLock::new(people);

proptest! {
    #![proptest_config(inbox_testkit::proptest_config(2000))]

    /// Whatever the JSON, the parser answers without panicking; an error has one of the
    /// codes; a query it accepts, the core runs.
    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        let directory = PEOPLE.0.contacts();
        for body in [
            v.clone(),
            json!({"query": v.clone()}),
            json!({"query": {"filter": v.clone()}}),
            json!({"query": {"sort": v.clone(), "paging": v.clone(), "fields": v.clone()}}),
        ] {
            match parse_query_request(&body) {
                Ok(q) => prop_assert!(directory.query(&q).is_ok(), "{body}: {:?}", directory.query(&q)),
                Err(e) => {
                    prop_assert!(CODES.contains(&e.code()), "{e}");
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// End to end: parsed queries run by the core on contacts made with Inbox::execute

/// 2023-11-14T22:13:20Z; the people are created one second apart from here.
const T0: i64 = 1_700_000_000_000_000;
const NAMES: [&str; 4] = ["Jo", "Ann", "Bob", "joe"];

fn email(address: &str) -> ContactEmail {
    ContactEmail {
        email: address.to_owned(),
        tag: EntryTag::Untagged,
        primary: false,
    }
}

fn phone(number: &str) -> ContactPhone {
    ContactPhone {
        phone: number.to_owned(),
        tag: EntryTag::Mobile,
        primary: false,
    }
}

/// Jo Doe (two emails), Ann Lee (email and phone), Bob (a phone only) and joe (Jo's email
/// again, in other case), created in that order one second apart.
fn people() -> (Inbox, Vec<ContactId>) {
    let mut inbox = Inbox::new(InboxConfig::new(SiteId::new("site-1"), [7; 16]));
    let mut ids = SequentialIds::starting_at(0x1_0000);
    let drafts = [
        ContactDraft {
            name: ContactName {
                first: Some("Jo".to_owned()),
                last: Some("Doe".to_owned()),
            },
            emails: vec![email("Jo.Doe@Example.com"), email("jo@work.io")],
            ..ContactDraft::default()
        },
        ContactDraft {
            name: ContactName {
                first: Some("Ann".to_owned()),
                last: Some("Lee".to_owned()),
            },
            emails: vec![email("ann@example.com")],
            phones: vec![phone("+1 555 0100")],
            ..ContactDraft::default()
        },
        ContactDraft {
            name: ContactName {
                first: Some("Bob".to_owned()),
                last: None,
            },
            phones: vec![phone("+1 555 0199")],
            ..ContactDraft::default()
        },
        ContactDraft {
            name: ContactName {
                first: Some("joe".to_owned()),
                last: None,
            },
            emails: vec![email("JO.DOE@example.com")],
            allow_duplicates: true,
            ..ContactDraft::default()
        },
    ];
    let mut contact_ids = Vec::new();
    for (i, draft) in (0i64..).zip(drafts) {
        let contact_id = ContactId::from_uuid(Uuid::from_u128(0xC001 + i as u128));
        let ctx = Context::at(Timestamp::from_micros(T0 + i * 1_000_000));
        inbox
            .execute(
                &Command::CreateContact { contact_id, draft },
                &ctx,
                &mut ids,
            )
            .unwrap();
        contact_ids.push(contact_id);
    }
    (inbox, contact_ids)
}

/// Runs a request body; the names of the contacts on the page, in order.
fn found(body: Value) -> Vec<&'static str> {
    let (inbox, ids) = &*PEOPLE;
    let q = parse_query_request(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
    let page = inbox.contacts().query(&q).unwrap();
    page.contacts
        .iter()
        .map(|c| NAMES[ids.iter().position(|id| *id == c.id).unwrap()])
        .collect()
}

fn filtered(filter: Value) -> Vec<&'static str> {
    found(json!({"query": {"filter": filter}}))
}

#[test]
fn the_example_flows_query_runs_end_to_end() {
    let (inbox, ids) = &*PEOPLE;
    let body = json!({"query": {
        "filter": {"info.emails.email": {"$eq": "jo.doe@EXAMPLE.COM"}},
        "fields": ["id"],
    }});
    let page = inbox
        .contacts()
        .query(&parse_query_request(&body).unwrap())
        .unwrap();
    // Both contacts with the email, whatever its case; newest first; only id and revision.
    let shown: Vec<(ContactId, u64, bool)> = page
        .contacts
        .iter()
        .map(|v| (v.id, v.revision, only_id_and_revision(v)))
        .collect();
    assert_eq!(shown, vec![(ids[3], 1, true), (ids[0], 1, true)]);
    assert_eq!((page.total, page.offset, page.limit), (2, 0, 50));
}

#[test]
fn emails_match_whatever_their_case() {
    // $eq on any email, primary or not.
    assert_eq!(
        filtered(json!({"info.emails.email": " JO@Work.IO "})),
        ["Jo"]
    );
    // primaryInfo.email is only the primary one.
    assert_eq!(
        filtered(json!({"primaryInfo.email": "jo@work.io"})),
        Vec::<&str>::new()
    );
    assert_eq!(
        filtered(json!({"primaryInfo.email": {"$in": ["ANN@EXAMPLE.COM", "nobody@x.y"]}})),
        ["Ann"]
    );
    assert_eq!(
        filtered(json!({"info.emails.email": {"$hasSome": ["jo@work.io", "Ann@example.com"]}})),
        ["Ann", "Jo"]
    );
    // $ne: no email equal to it (so contacts without email match too).
    assert_eq!(
        filtered(json!({"info.emails.email": {"$ne": "JO.DOE@example.com"}})),
        ["Bob", "Ann"]
    );
    assert_eq!(
        filtered(json!({"info.emails.email": {"$exists": false}})),
        ["Bob"]
    );
    assert_eq!(
        filtered(json!({"primaryInfo.email": {"$exists": true}})),
        ["joe", "Ann", "Jo"]
    );
}

#[test]
fn starts_with_is_case_insensitive() {
    assert_eq!(
        filtered(json!({"info.emails.email": {"$startsWith": "ANN@"}})),
        ["Ann"]
    );
    assert_eq!(
        filtered(json!({"info.emails.email": {"$startsWith": "Jo"}})),
        ["joe", "Jo"]
    );
    assert_eq!(
        filtered(json!({"info.name.first": {"$startsWith": "J"}})),
        ["joe", "Jo"]
    );
    assert_eq!(
        filtered(json!({"primaryInfo.phone": {"$startsWith": "+1 555 01"}})),
        ["Bob", "Ann"]
    );
    // Names compare exactly under $eq.
    assert_eq!(filtered(json!({"info.name.first": "Jo"})), ["Jo"]);
    assert_eq!(
        filtered(json!({"info.name.first": "JO"})),
        Vec::<&str>::new()
    );
}

#[test]
fn ids_dates_and_logic_run_end_to_end() {
    let (_, ids) = &*PEOPLE;
    // Ids compare case-insensitively.
    let ann = ids[1].to_string().to_uppercase();
    assert_eq!(filtered(json!({"id": ann})), ["Ann"]);
    assert_eq!(
        filtered(json!({"id": {"$in": [ids[0].to_string(), ids[2].to_string()]}})),
        ["Bob", "Jo"]
    );
    // Created at T0 + 1s and T0 + 2s.
    assert_eq!(
        filtered(
            json!({"createdDate": {"$gte": "2023-11-14T22:13:21Z", "$lt": {"$date": "2023-11-14T22:13:23Z"}}})
        ),
        ["Bob", "Ann"]
    );
    assert_eq!(
        filtered(json!({"updatedDate": {"$lte": "2023-11-15T00:13:20+02:00"}})),
        ["Jo"]
    );
    assert_eq!(
        filtered(
            json!({"$or": [{"info.name.last": "Lee"}, {"$not": {"info.emails.email": {"$exists": true}}}]})
        ),
        ["Bob", "Ann"]
    );
    assert_eq!(
        filtered(
            json!({"$and": [{"info.emails.email": {"$startsWith": "jo"}}, {"info.name.last": {"$exists": true}}]})
        ),
        ["Jo"]
    );
}

#[test]
fn sort_and_paging_run_end_to_end() {
    // First names sort case-insensitively: "jo" < "joe".
    assert_eq!(
        found(json!({"query": {"sort": [{"fieldName": "info.name.first"}]}})),
        ["Ann", "Bob", "Jo", "joe"]
    );
    assert_eq!(
        found(
            json!({"query": {"sort": [{"fieldName": "createdDate", "order": "ASC"}], "paging": {"limit": 2, "offset": 1}}})
        ),
        ["Ann", "Bob"]
    );
    // No sort: createdDate descending.
    assert_eq!(found(json!({})), ["joe", "Bob", "Ann", "Jo"]);
    assert_eq!(found(json!({"query": {"paging": {"offset": 3}}})), ["Jo"]);
}

/// Whether a projected contact holds nothing but its id and revision.
fn only_id_and_revision(v: &ContactView) -> bool {
    v.created_date.is_none()
        && v.updated_date.is_none()
        && v.name.is_none()
        && v.emails.is_none()
        && v.phones.is_none()
        && v.primary_info.is_none()
        && v.details.is_none()
        && v.source.is_none()
        && v.last_activity.is_none()
        && v.parts.as_deref() == Some(&[])
}

/// The fields of Wix's query spec beyond names and emails: company, job title, locale, birth
/// date (compared as text, which orders as dates), the last activity's date, and label keys
/// with `$hasSome` and `$hasAll`.
#[test]
fn details_labels_and_activity_filter() {
    let cases = [
        (
            r#"{"info.company": {"$startsWith": "ac"}, "info.jobTitle": {"$in": ["CTO"]}}"#,
            expect![[
                r#"And([Field(Company, StartsWith("ac")), Field(JobTitle, In([Text("CTO")]))])"#
            ]],
        ),
        (
            r#"{"info.labelKeys": {"$hasAll": ["custom.vip", "custom.lead"]}}"#,
            expect![[r#"Field(Labels, HasAll([Text("custom.vip"), Text("custom.lead")]))"#]],
        ),
        (
            r#"{"info.labelKeys": {"$hasSome": ["custom.vip"]}, "info.locale": "en-US"}"#,
            expect![[
                r#"And([Field(Labels, HasSome([Text("custom.vip")])), Field(Locale, Eq(Text("en-US")))])"#
            ]],
        ),
        (
            r#"{"info.birthdate": {"$lt": "2000-01-01"}, "lastActivity.activityDate": {"$gte": "2024-01-01T00:00:00Z"}}"#,
            expect![[
                r#"And([Field(Birthdate, Lt(Text("2000-01-01"))), Field(LastActivityDate, Gte(Time(Timestamp(2024-01-01T00:00:00.000Z))))])"#
            ]],
        ),
        (
            r#"{"info.labelKeys": {"$hasSome": "custom.vip"}}"#,
            expect![[
                r#"UNSUPPORTED_FILTER_VALUE_TYPE: unsupported filter value type at query.filter.info.labelKeys.$hasSome: $hasSome takes an array; got the string "custom.vip""#
            ]],
        ),
    ];
    for (filter, expected) in cases {
        check_filter(filter, expected);
    }
}
