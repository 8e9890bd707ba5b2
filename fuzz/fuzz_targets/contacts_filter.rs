//! Query Contacts: any JSON (raw bytes through serde_json, or an arbitrary bounded-depth
//! value, or an arbitrary filter inside the documented request shape) into
//! `parse_query_request`; when it parses, the query runs on a small fixed directory. Never a
//! panic; a page never holds more than its limit, or more than the directory has.

#![no_main]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use inbox_core::Inbox;
use inbox_core::contacts::ContactFilter;
use inbox_fuzz::{Json, check_error, contacts_inbox};
use inbox_wix::WixError;
use inbox_wix::contacts_query::parse_query_request;
use inbox_wix::rest;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

static INBOX: LazyLock<Inbox> = LazyLock::new(contacts_inbox);

/// Live contacts in the fixture (five created, one merged away).
const LIVE: usize = 4;

#[derive(Arbitrary, Debug)]
enum Input {
    Bytes(Vec<u8>),
    Any(Json),
    Shaped {
        filter: Option<Json>,
        sort: Option<Json>,
        paging: Option<(Option<Json>, Option<Json>)>,
        fields: Option<Json>,
        fieldsets: Option<Json>,
        search: Option<Json>,
    },
}

fn run(body: &Value) {
    match parse_query_request(body) {
        Ok(q) => match INBOX.contacts().query(&q) {
            Ok(page) => {
                assert!(page.contacts.len() <= page.limit, "page over its limit");
                assert!(page.total <= LIVE, "total {} > {LIVE}", page.total);
                assert!(page.contacts.len() <= page.total);
                if matches!(q.filter, ContactFilter::All) {
                    assert_eq!(page.total, LIVE, "an unfiltered query counts every contact");
                }
                let resp = rest::QueryContactsResponse::new(&page);
                let _ = serde_json::to_vec(&resp).unwrap();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        },
        Err(e) => check_error(&WixError::from(e)),
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Bytes(b) => {
            if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                run(&v);
            }
            if let Err(e) = rest::query_contacts(&INBOX, &b) {
                check_error(&e);
            }
        }
        Input::Any(v) => run(&v.0),
        Input::Shaped {
            filter,
            sort,
            paging,
            fields,
            fieldsets,
            search,
        } => {
            let mut query = Map::new();
            if let Some(f) = filter {
                query.insert("filter".into(), f.0);
            }
            if let Some(s) = sort {
                query.insert("sort".into(), s.0);
            }
            if let Some((limit, offset)) = paging {
                let mut p = Map::new();
                if let Some(l) = limit {
                    p.insert("limit".into(), l.0);
                }
                if let Some(o) = offset {
                    p.insert("offset".into(), o.0);
                }
                query.insert("paging".into(), Value::Object(p));
            }
            if let Some(f) = fields {
                query.insert("fields".into(), f.0);
            }
            if let Some(f) = fieldsets {
                query.insert("fieldsets".into(), f.0);
            }
            let mut body = json!({"query": query});
            if let Some(s) = search {
                body["search"] = s.0;
            }
            run(&body);
        }
    }
});
