//! Two `inboxd` servers on one PostgreSQL database, started in-process and spoken to over
//! loopback HTTP: what one writes the other reads at once, a cursor from one pages on the
//! other, a lifecycle merge made through one is seen by the other, writes from both into one
//! conversation keep its sequences strictly increasing, and webhooks are delivered by one
//! of them at a time, each event once.
//!
//! Needs a PostgreSQL server: `INBOX_TEST_POSTGRES` (see `scripts/throwaway-postgres.sh`);
//! without it the tests say loudly that they are skipped, and under `CI=true` they fail.
//! The real-process test (a SIGKILL under load) is `postgres_procs.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{Value, json};

fn texts(messages: &[Value]) -> Vec<String> {
    messages.iter().map(text_of).collect()
}

async fn two_servers(test: &str, webhook: Option<&str>) -> Option<(TestServer, TestServer)> {
    let url = inbox_store::postgres::testing::fresh_database(test)?;
    let configure = |o: &mut inbox_server::ServeOptions| {
        o.postgres = Some(url.clone());
        o.webhook_urls = webhook.map(str::to_owned).into_iter().collect();
    };
    let a = TestServer::start_with(configure).await;
    let b = TestServer::start_with(configure).await;
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_two_servers_on_one_database_when_each_writes_then_the_other_reads_it_at_once_pages_with_its_cursors_and_sees_its_merges()
 {
    let Some((a, b)) = two_servers("two_servers_read_each_other", None).await else {
        return;
    };
    let (on_a, on_b) = (a.api("pg-site"), b.api("pg-site"));

    // Given a contact and its conversation made through A,
    let contact = on_a.create_contact("Ada", "ada@example.com").await;
    let contact_id = str_of(&contact["id"]);
    let conversation = on_a.conversation_of("contactId", &contact_id).await;
    on_a.participant_says(&conversation, "one from A").await;
    // when B is asked, then it answers from the shared log at once (no wait for the
    // follower): the same conversation, the same contact, the message.
    assert_eq!(
        on_b.conversation_of("contactId", &contact_id).await,
        conversation
    );
    assert_eq!(
        str_of(&on_b.contact(&contact_id).await.ok()["contact"]["id"]),
        contact_id
    );
    assert_eq!(
        texts(&on_b.all_messages(&conversation, "ASC", 10).await),
        ["one from A"]
    );

    // Writes through both, alternating, into one conversation: all kept, sequences strictly
    // increasing, in the order they were acknowledged.
    let mut sent = vec!["one from A".to_owned()];
    for i in 0..20 {
        let (api, who) = if i % 2 == 0 {
            (&on_b, "B")
        } else {
            (&on_a, "A")
        };
        let text = format!("{i} from {who}");
        api.participant_says(&conversation, &text).await;
        sent.push(text);
    }
    for api in [&on_a, &on_b] {
        let listed = api.all_messages(&conversation, "ASC", 7).await;
        assert_eq!(texts(&listed), sent);
        let seqs: Vec<i64> = listed.iter().map(sequence_of).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    // Eight writers at once, four through each server, into that one conversation: the
    // servers' appends conflict, each conflict is decided again, and nothing is lost,
    // doubled or out of order.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let api = if w % 2 == 0 {
                on_a.clone()
            } else {
                on_b.clone()
            };
            let conversation = conversation.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..10 {
                    let m = api
                        .participant_says(&conversation, &format!("w{w} {i}"))
                        .await;
                    ids.push((str_of(&m["id"]), sequence_of(&m)));
                }
                ids
            })
        })
        .collect();
    let mut concurrent = Vec::new();
    for w in writers {
        let ids = w.await.unwrap();
        // Each writer's own messages in the order it was answered.
        assert!(ids.windows(2).all(|p| p[0].1 < p[1].1), "{ids:?}");
        concurrent.extend(ids);
    }
    let conflicts: u64 = [&a, &b]
        .iter()
        .map(|s| s.running.as_ref().unwrap().engine.conflicts())
        .sum();
    let listed = on_b.all_messages(&conversation, "ASC", 30).await;
    assert_eq!(listed.len(), sent.len() + 80);
    let seqs: Vec<i64> = listed.iter().map(sequence_of).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let listed_ids: BTreeSet<String> = listed.iter().map(|m| str_of(&m["id"])).collect();
    assert!(concurrent.iter().all(|(id, _)| listed_ids.contains(id)));
    println!("concurrent writes through both servers: {conflicts} conflicts retried");
    sent.extend(listed[sent.len()..].iter().map(text_of).collect::<Vec<_>>());

    // A cursor A issued pages on B (the cursor key is shared through the database).
    let first = on_a
        .page(&conversation, "&paging.limit=5&sorting.order=ASC")
        .await
        .ok();
    let cursor = str_of(&first["pagingMetadata"]["cursors"]["next"]);
    let second = on_b
        .page(
            &conversation,
            &format!(
                "&paging.limit=5&sorting.order=ASC&paging.cursor={}",
                urlencode(&cursor)
            ),
        )
        .await
        .ok();
    assert_eq!(
        texts(second["messages"].as_array().unwrap()),
        sent[5..10].to_vec()
    );

    // A visitor writes through B and is identified as the contact through A: the two
    // conversations merge, and B resolves the visitor's old id to the survivor with every
    // message in order.
    let visitor = guid();
    let visitors = on_b.conversation_of("anonymousVisitorId", &visitor).await;
    on_b.participant_says(&visitors, "visitor on B").await;
    let identified = on_a
        .post(
            &format!("/emulator/v1/visitors/{visitor}/identify"),
            &json!({ "contactId": contact_id }),
        )
        .await
        .ok();
    let survivor = str_of(&identified["conversation"]["id"]);
    let seen_by_b = on_b.conversation(&visitors).await.ok();
    assert_eq!(str_of(&seen_by_b["conversation"]["id"]), survivor);
    let merged = on_b.all_messages(&survivor, "ASC", 50).await;
    assert_eq!(merged.len(), sent.len() + 1);
    let seqs: Vec<i64> = merged.iter().map(sequence_of).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(texts(&merged).contains(&"visitor on B".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_two_servers_with_one_webhook_url_when_both_write_then_one_holds_the_lease_and_each_event_arrives_once()
 {
    let receiver = Receiver::start(0).await;
    let Some((mut a, mut b)) = two_servers("two_servers_one_lease", Some(&receiver.url)).await
    else {
        return;
    };
    let (on_a, on_b) = (a.api("pg-hooks"), b.api("pg-hooks"));
    let conversation = on_a.conversation_of("anonymousVisitorId", &guid()).await;
    let mut ids = BTreeSet::new();
    for i in 0..30 {
        let api = if i % 2 == 0 { &on_a } else { &on_b };
        let m = api.participant_says(&conversation, &format!("m{i}")).await;
        ids.insert(str_of(&m["id"]));
    }
    eventually("every message's webhook arrives", || {
        let got: BTreeSet<String> = receiver
            .acknowledged()
            .iter()
            .filter(|e| e.event_type.ends_with("message_sent_to_business"))
            .map(|e| e.entity_id.clone())
            .collect();
        ids.is_subset(&got)
    })
    .await;
    // One process delivered everything (it holds the URL's lease); no event came twice.
    let delivered = |s: &TestServer| s.running.as_ref().unwrap().outbox.counts().0;
    let (by_a, by_b) = (delivered(&a), delivered(&b));
    assert!(
        (by_a == 0) != (by_b == 0),
        "both or neither delivered: A {by_a}, B {by_b}"
    );
    let mut copies: BTreeMap<String, u32> = BTreeMap::new();
    for e in receiver.acknowledged() {
        *copies.entry(e.id).or_default() += 1;
    }
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");

    // The holder stops: the other takes the lease and goes on from the shared cursor.
    let (holder, other_api) = if by_a > 0 {
        (&mut a, &on_b)
    } else {
        (&mut b, &on_a)
    };
    holder.stop().await;
    let after = other_api.participant_says(&conversation, "after").await;
    let after_id = str_of(&after["id"]);
    eventually("the message sent after the handover arrives", || {
        receiver
            .acknowledged()
            .iter()
            .any(|e| e.entity_id == after_id)
    })
    .await;
    let mut copies: BTreeMap<String, u32> = BTreeMap::new();
    for e in receiver.acknowledged() {
        *copies.entry(e.id).or_default() += 1;
    }
    // A clean stop saves the cursor: nothing is delivered again after the handover.
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_replica_fed_through_one_server_when_the_other_is_asked_to_write_to_it_then_it_refuses()
 {
    let url = match inbox_store::postgres::testing::fresh_database("pg_replica_is_shared") {
        Some(u) => u,
        None => return,
    };
    let configure = |o: &mut inbox_server::ServeOptions| {
        o.postgres = Some(url.clone());
        o.wix_public_key = Some(wix_test_key("app-public.pem"));
    };
    let a = TestServer::start_with(configure).await;
    let b = TestServer::start_with(configure).await;
    let jwt = replica_delivery("pg-replica-site");
    let intake = a
        .api("anything")
        .post_raw("/webhooks/wix", jwt.into_bytes(), "text/plain")
        .await;
    assert_eq!(intake.status, 200, "{intake:?}");
    // B never saw the delivery, but the replica mark is in the database.
    let refused = b
        .api("pg-replica-site")
        .post(
            "/inbox/v2/conversations",
            &json!({"participantId": {"anonymousVisitorId": guid()}}),
        )
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");
}

/// A signed `message_sent_to_business` delivery from "Wix" for `site`.
fn replica_delivery(site: &str) -> String {
    use inbox_core::{EventId, SiteId};
    use inbox_wix::webhook::{Announcement, EventIdentity, WebhookSigner};
    let visitor = guid();
    let announcement = Announcement {
        id: EventId::from_uuid(uuid::Uuid::new_v4()),
        instance_id: SiteId::new(site),
        entity_fqdn: "wix.crm.inbox.v2.message".into(),
        slug: "message_sent_to_business".into(),
        entity_id: "1700000000000000".to_owned(),
        event_time: now(),
        body: json!({
            "conversationId": guid(),
            "message": {
                "id": "1700000000000000",
                "sequence": "1700000000000000",
                "createdDate": "2025-01-01T00:00:00Z",
                "direction": "PARTICIPANT_TO_BUSINESS",
                "content": {"basic": {"items": [{"text": "from the real Wix"}]}},
                "sender": {"anonymousVisitorId": visitor},
            },
        }),
        kind: inbox_wix::webhook::DomainEventKind::Action,
        metadata: Default::default(),
        identity: EventIdentity {
            identity_type: "ANONYMOUS_VISITOR".into(),
            anonymous_visitor_id: Some(visitor),
            ..EventIdentity::default()
        },
    };
    let pem = std::fs::read(wix_test_key("app-private.pem")).unwrap();
    let signer = WebhookSigner::from_private_pem(&pem).unwrap();
    announcement.sign(&signer, now(), 3600).unwrap()
}

/// On the shared database, dead letters are rows: listed, and put back into the URL's saved
/// retries by `outbox::redeliver` (what `inboxd webhooks redeliver --postgres` runs), which
/// takes them out.
#[test]
fn dead_letters_on_the_database_are_listed_and_put_back_into_the_retries() {
    use inbox_server::delivery::{DeliveryStore, PostgresDelivery, UrlKey};
    use inbox_server::outbox::{Retry, dead_letters, redeliver};
    let Some(url) = inbox_store::postgres::testing::fresh_database("pg_dead_letters") else {
        return;
    };
    let pg = std::sync::Arc::new(inbox_store::PostgresLog::connect(&url).unwrap());
    let store = PostgresDelivery::new(pg);
    let hook = "http://127.0.0.1:9/hook";
    let key = UrlKey::new(hook);
    let announcement = json!({"id": "00000000-0000-0000-0000-000000000007",
        "instanceId": "s", "entityFqdn": "wix.contacts.v4.contact", "slug": "created",
        "entityId": "c", "eventTime": 1, "body": {}, "kind": "Created",
        "identity": {"identityType": "UNKNOWN"}});
    let line = json!({"eventId": "00000000-0000-0000-0000-000000000007",
        "announcement": announcement})
    .to_string();
    store
        .dead_letter(&key, "00000000-0000-0000-0000-000000000007", &line)
        .unwrap();
    assert_eq!(dead_letters(&store, hook).unwrap(), [line]);
    let put_back = redeliver(&store, hook, None, 42).unwrap();
    assert_eq!(put_back, ["00000000-0000-0000-0000-000000000007"]);
    assert!(dead_letters(&store, hook).unwrap().is_empty());
    let retries: Vec<Retry> = serde_json::from_slice(&store.saved_retries(&key).unwrap()).unwrap();
    assert_eq!(
        (retries.len(), retries[0].next_at, retries[0].attempts),
        (1, 42, 0)
    );
    // Putting back again replaces nothing and finds nothing.
    assert!(redeliver(&store, hook, None, 43).unwrap().is_empty());
}
