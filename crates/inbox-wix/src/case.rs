//! snake_case request keys, read as camelCase.
//!
//! Wix's SDK sends camelCase and its documentation's curl examples send snake_case
//! (`conversation_id`, `send_as`, `target_channels`); Wix accepts both. Rather than an alias
//! on every field, incoming JSON has its object keys rewritten once, before deserializing.
//! Only keys change, never values, so a filter value or a form field name with an underscore
//! stays as it was. Keys that start with `$` (filter operators) or `_`, and keys without an
//! underscore, are left alone.

use serde_json::{Map, Value};

/// `conversation_id` -> `conversationId`; keys that need no change come back as they were.
pub fn to_camel(key: &str) -> String {
    if !key.contains('_') || key.starts_with(['$', '_']) {
        return key.to_owned();
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for ch in key.chars() {
        if ch == '_' {
            upper = true;
        } else if upper {
            out.extend(ch.to_uppercase());
            upper = false;
        } else {
            out.push(ch);
        }
    }
    if upper {
        out.push('_');
    }
    out
}

/// Rewrites every object key of `value`, at every depth, with [`to_camel`]. A key given in
/// both spellings keeps the camelCase one's value.
///
/// Recursion is bounded by `serde_json`'s own nesting limit (128) on parsed input.
pub fn camel_case_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            let mut snake = Vec::new();
            for (k, v) in map {
                let camel = to_camel(&k);
                if camel == k {
                    out.insert(k, camel_case_keys(v));
                } else {
                    snake.push((camel, v));
                }
            }
            for (k, v) in snake {
                out.entry(k).or_insert_with(|| camel_case_keys(v));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(camel_case_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_change_values_do_not() {
        let v = json!({"conversation_id": "a_b", "message": {"target_channels": ["CHAT"],
            "content": {"form": {"fields": [{"name": "first_name", "value": "x"}]}}},
            "$and": [{"info.emails.email": {"$starts_with": 1}}], "_id": 1, "done_": 2});
        assert_eq!(
            camel_case_keys(v),
            json!({"conversationId": "a_b", "message": {"targetChannels": ["CHAT"],
                "content": {"form": {"fields": [{"name": "first_name", "value": "x"}]}}},
                "$and": [{"info.emails.email": {"$starts_with": 1}}], "_id": 1, "done_": 2})
        );
    }

    #[test]
    fn camel_spelling_wins_when_both_are_given() {
        let v = json!({"send_as": "PARTICIPANT", "sendAs": "CALLER"});
        assert_eq!(camel_case_keys(v), json!({"sendAs": "CALLER"}));
    }
}
