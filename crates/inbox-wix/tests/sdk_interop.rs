//! Interop with Wix's own JavaScript SDK: deliveries we sign are verified by
//! `createClient({auth: AppStrategy({appId, publicKey})}).webhooks.process(jwt)` from
//! `@wix/sdk` with `@wix/inbox` (exact versions pinned in `interop/node/package.json`), and
//! reach the right handler with the right data.
//!
//! Needs Node and `npm ci` in `interop/node`; `.ci/run` does both. Without them the test
//! says so loudly and passes, except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;
use std::process::Command as Process;

use common::*;
use inbox_core::{ParticipantId, Timestamp};
use inbox_wix::webhook::Announcement;
use serde_json::{Value, json};

/// Seconds in a hundred years.
const CENTURY: i64 = 100 * 365 * 24 * 3600;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/node")
}

/// Whether the SDK is installed; under CI its absence is a failure.
fn sdk_available() -> bool {
    let installed = interop_dir()
        .join("node_modules/@wix/sdk/package.json")
        .exists()
        && Process::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !installed {
        let msg = "Wix SDK interop test NOT RUN: needs node and `npm ci` in interop/node";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg} (CI=true)"
        );
        eprintln!("\n!!!!! {msg} !!!!!\n");
    }
    installed
}

/// Runs the node harness on these tokens and returns its result lines.
/// The announcements signed with the app's key. The SDK checks `exp` against the real clock;
/// rather than read it, the tokens are issued at the test's fixed time and valid for a
/// century.
fn signed<'a>(announced: impl Iterator<Item = &'a Announcement>) -> Vec<String> {
    let signer = app_signer();
    announced
        .map(|a| {
            a.sign(&signer, Timestamp::from_micros(T0), CENTURY)
                .unwrap()
        })
        .collect()
}

fn process(tokens: &[String], sdk_only: bool) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let body = json!({"appId": APP.to_string(), "publicKey": app_public_pem(), "jwts": tokens});
    std::fs::write(&input, body.to_string()).unwrap();
    let mut cmd = Process::new("node");
    cmd.current_dir(interop_dir()).arg("process-webhooks.mjs");
    if sdk_only {
        cmd.arg("--sdk-only");
    }
    let out = cmd.arg(&input).output().unwrap();
    assert!(
        out.status.success(),
        "harness failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn wix_sdk_verifies_our_deliveries_and_calls_the_right_handler() {
    if !sdk_available() {
        return;
    }
    let (w, announced) = flow();
    let tokens = signed(announced.iter());
    let results = process(&tokens, false);
    assert_eq!(results.len(), 5, "{results:#?}");
    let handlers: Vec<&str> = results
        .iter()
        .map(|r| r["handler"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        handlers,
        [
            "onMessageSentToBusiness",
            "onMessageSentToParticipant",
            "onMessageButtonInteracted",
            "onContactCreated",
            "onConversationConversationsMerged"
        ],
        "{results:#?}"
    );
    for (r, a) in results.iter().zip(&announced) {
        assert_eq!(r["ok"], true, "{r:#}");
        let meta = &r["event"]["metadata"];
        // The SDK shows `id` as `_id`; ours is the recorded event's id, stable across retries.
        assert_eq!(meta["_id"], a.id.to_string(), "{r:#}");
        assert_eq!(meta["instanceId"], SITE);
        assert_eq!(meta["entityId"], a.entity_id);
    }
    // What the handlers received is what the emulator holds.
    let sent = &results[0]["event"]["data"];
    let first = w
        .inbox
        .messages_of(
            w.inbox.root_of(
                announced[1].body["conversationId"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
            ),
        )
        .next()
        .unwrap();
    assert_eq!(sent["message"]["_id"], first.id.to_string());
    assert_eq!(sent["message"]["sequence"], first.sequence.0.to_string());
    assert_eq!(
        sent["message"]["content"]["basic"]["items"][0]["text"],
        "Do you open on Sundays?"
    );
    assert_eq!(
        sent["message"]["sender"]["anonymousVisitorId"],
        visitor(1).to_string()
    );
    assert!(
        results[0]["dates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "data.message._createdDate")
    );
    let click = &results[2]["event"]["data"];
    assert_eq!(click["interactionId"], "book-sunday");
    assert_eq!(click["appId"], APP.to_string());
    let created = &results[3]["event"]["entity"];
    assert_eq!(created["_id"], contact(1).to_string());
    assert_eq!(
        created["info"]["emails"]["items"][0]["email"],
        "jo@example.com"
    );
    let merged = &results[4]["event"]["data"];
    assert_eq!(merged["oldConversationIds"].as_array().unwrap().len(), 1);
    assert_eq!(
        merged["targetConversationId"],
        w.inbox
            .live_conversation_of(ParticipantId::Contact(contact(1)))
            .unwrap()
            .to_string()
    );

    // Without our definition for "sent to participant" (which @wix/inbox does not export),
    // the SDK's own three handlers still take theirs, and refuses that one by name.
    let sdk_only = process(&tokens, true);
    assert_eq!(sdk_only[0]["ok"], true);
    assert_eq!(sdk_only[2]["ok"], true);
    assert_eq!(sdk_only[3]["ok"], true);
    assert_eq!(sdk_only[4]["ok"], true);
    assert_eq!(sdk_only[1]["ok"], false);
    assert!(
        sdk_only[1]["error"]
            .as_str()
            .unwrap()
            .contains("message_message_sent_to_participant"),
        "{:#}",
        sdk_only[1]
    );
}

/// Every announcement of a recorded flow, signed and fed to the SDK's `webhooks.process`
/// (its own definitions only): the announcements in order, and what the SDK did with each.
fn through_sdk(
    recorded: &[(inbox_core::EventEnvelope, Vec<Announcement>)],
) -> (Vec<&Announcement>, Vec<Value>) {
    let announced: Vec<&Announcement> = recorded.iter().flat_map(|(_, a)| a).collect();
    let results = process(&signed(announced.iter().copied()), true);
    (announced, results)
}

/// Every contact event the emulator announces reaches the SDK's own handler for it
/// (`contacts.onContactCreated` / `Updated` / `Deleted` / `Merged` of `@wix/crm`), with the
/// contact as the SDK types it (dates as `Date`s), `originatedFrom: merge` where a merge
/// caused the event, and the revision as `entityEventSequence`.
#[test]
fn wix_sdk_takes_every_contact_event() {
    if !sdk_available() {
        return;
    }
    let (w, recorded) = contacts_flow();
    let (announced, results) = through_sdk(&recorded);
    let handlers: Vec<&str> = results
        .iter()
        .map(|r| r["handler"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        handlers,
        [
            "onContactCreated",
            "onContactCreated",
            "onContactCreated",
            "onContactUpdated",
            "onContactUpdated",
            "onContactMerged",
            "onContactUpdated",
            "onContactDeleted",
            "onContactDeleted",
        ],
        "{results:#?}"
    );
    for (r, a) in results.iter().zip(&announced) {
        assert_eq!(r["ok"], true, "{r:#}");
        let meta = &r["event"]["metadata"];
        assert_eq!(meta["_id"], a.id.to_string(), "{r:#}");
        assert_eq!(meta["entityId"], a.entity_id, "{r:#}");
        assert!(meta["entityEventSequence"].is_string(), "{r:#}");
        let dates = r["dates"].as_array().unwrap();
        if r["handler"] == "onContactCreated" || r["handler"] == "onContactUpdated" {
            assert!(dates.iter().any(|d| d == "entity._createdDate"), "{r:#}");
        }
    }
    // The update after the merge and the source's deletion say the merge caused them.
    assert_eq!(results[6]["event"]["metadata"]["originatedFrom"], "merge");
    assert_eq!(results[7]["event"]["metadata"]["originatedFrom"], "merge");
    assert_eq!(results[8]["event"]["metadata"].get("originatedFrom"), None);
    // The merge: the target as the emulator holds it.
    let merged = &results[5]["event"]["data"];
    assert_eq!(merged["targetContactId"], contact(1).to_string());
    assert_eq!(merged["sourceContactIds"], json!([contact(2).to_string()]));
    let target = w.inbox.contacts().get(contact(1)).unwrap();
    assert_eq!(
        merged["targetContact"]["revision"],
        json!(target.revision),
        "{merged:#}"
    );
    assert_eq!(
        merged["targetContact"]["info"]["addresses"]["items"][0]["address"]["city"],
        "Porto"
    );
    // The first creation's entity carries every detail.
    let first = &results[0]["event"]["entity"];
    assert_eq!(first["info"]["company"], "Acme");
    assert_eq!(first["info"]["labelKeys"]["items"], json!(["custom.vip"]));
    assert_eq!(
        first["info"]["picture"]["image"],
        "https://example.com/a.png"
    );
}

#[test]
fn wix_sdk_refuses_what_it_should() {
    if !sdk_available() {
        return;
    }
    let (_, announced) = flow();
    let wrong_key = announced[0]
        .sign(&other_signer(), Timestamp::from_micros(T0), CENTURY)
        .unwrap();
    let long_ago = Timestamp::from_micros(T0);
    let expired = announced[0].sign(&app_signer(), long_ago, 300).unwrap();
    let results = process(&[wrong_key, expired], false);
    assert_eq!(results[0]["ok"], false, "{:#}", results[0]);
    assert_eq!(
        results[0]["errorCode"],
        "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"
    );
    assert_eq!(results[1]["ok"], false, "{:#}", results[1]);
    assert!(
        results[1]["error"].as_str().unwrap().contains("exp"),
        "{:#}",
        results[1]
    );
}

/// Every label and extended field event the emulator announces reaches the SDK's own handler
/// for it (`labels.onLabelCreated` / `Updated` / `Deleted`, `extendedFields.onExtendedField...`
/// of `@wix/crm`), with the definition as the SDK types it (dates as `Date`s); deleting a
/// label or field also updates the contact that carried it.
#[test]
fn wix_sdk_takes_every_label_and_extended_field_event() {
    if !sdk_available() {
        return;
    }
    let (_, recorded) = catalog_flow();
    let (announced, results) = through_sdk(&recorded);
    let handlers: Vec<&str> = results
        .iter()
        .map(|r| r["handler"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        handlers,
        [
            "onLabelCreated",
            "onExtendedFieldCreated",
            "onContactCreated",
            "onLabelUpdated",
            "onExtendedFieldUpdated",
            "onLabelDeleted",
            "onContactUpdated",
            "onExtendedFieldDeleted",
            "onContactUpdated",
        ],
        "{results:#?}"
    );
    for (r, a) in results.iter().zip(&announced) {
        assert_eq!(r["ok"], true, "{r:#}");
        assert_eq!(r["event"]["metadata"]["entityId"], a.entity_id, "{r:#}");
    }
    let created = &results[0]["event"]["entity"];
    assert_eq!(created["key"], "custom.vip");
    assert_eq!(created["displayName"], "VIP");
    assert_eq!(created["labelType"], "USER_DEFINED");
    let dates = results[0]["dates"].as_array().unwrap();
    assert!(
        dates.iter().any(|d| d == "entity._createdDate"),
        "{:#}",
        results[0]
    );
    assert_eq!(results[3]["event"]["entity"]["displayName"], "VIPs");
    assert_eq!(results[4]["event"]["entity"]["dataType"], "NUMBER");
    assert_eq!(results[5]["event"]["metadata"]["entityId"], "custom.vip");
    let unlabelled = &results[6]["event"]["entity"]["info"]["labelKeys"]["items"];
    assert_eq!(unlabelled, &json!([]), "{:#}", results[6]);
}
