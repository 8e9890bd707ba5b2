//! Paging cursors: arbitrary text as `ListMessages.cursor` (with arbitrary limit, order and
//! visibility) never panics; a genuine cursor with arbitrary bytes flipped is refused or, if
//! accepted, lists only messages of the conversation asked for, within the limit, in order,
//! and only participant-visible ones under that filter. An untouched cursor continues
//! exactly where its page ended.

#![no_main]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use inbox_core::{
    Command, Context, ConversationId, Direction, Inbox, ListMessages, MessageDraft, MessageId,
    ParticipantId, SendAs, SequentialIds, SortOrder, Timestamp, Visibility, VisibilityFilter,
    VisitorId,
};
use inbox_fuzz::{START, fixed_uuid, site_config};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    inbox: Inbox,
    /// Two live conversations: 50 messages and 7 messages.
    conversations: [ConversationId; 2],
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let mut inbox = Inbox::new(site_config());
    let mut ids = SequentialIds::default();
    let mut now = START;
    let mut conversations = Vec::new();
    for (v, count) in [(0u8, 50usize), (1, 7)] {
        let p = ParticipantId::Visitor(VisitorId::from_uuid(fixed_uuid(0x71, v)));
        inbox
            .execute(
                &Command::GetOrCreateConversation { participant: p },
                &Context::at(Timestamp::from_micros(now)),
                &mut ids,
            )
            .unwrap();
        let c = inbox.live_conversation_of(p).unwrap();
        for i in 0..count {
            now += if i % 5 == 0 { 0 } else { 1_000 };
            let direction = if i % 2 == 0 {
                Direction::ParticipantToBusiness
            } else {
                Direction::BusinessToParticipant
            };
            let mut draft = MessageDraft::text(format!("m{i}"), direction);
            if i % 3 == 0 {
                draft.visibility = Some(Visibility::Business);
            }
            inbox
                .execute(
                    &Command::SendMessage {
                        conversation_id: c,
                        message: draft,
                        send_as: SendAs::Caller,
                    },
                    &Context::at(Timestamp::from_micros(now)),
                    &mut ids,
                )
                .unwrap();
        }
        conversations.push(c);
    }
    Fixture {
        inbox,
        conversations: [conversations[0], conversations[1]],
    }
});

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Query {
    second_conversation: bool,
    unknown_conversation: bool,
    participant_visible: bool,
    ascending: bool,
    limit: Option<u8>,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Text {
        query: Query,
        cursor: String,
    },
    Mutated {
        /// The page the genuine cursor comes from.
        first: Query,
        /// How the cursor is used.
        then: Query,
        /// Byte flips: (position, xor).
        flips: Vec<(u8, u8)>,
        /// Or a cut: keep this many bytes.
        truncate: Option<u8>,
        /// Or characters inserted.
        insert: Option<(u8, char)>,
    },
}

fn request(q: &Query, cursor: Option<String>) -> ListMessages {
    let f = &*FIXTURE;
    ListMessages {
        conversation_id: if q.unknown_conversation {
            ConversationId::from_uuid(fixed_uuid(0x76, 9))
        } else {
            f.conversations[usize::from(q.second_conversation)]
        },
        visibility: if q.participant_visible {
            VisibilityFilter::ParticipantVisible
        } else {
            VisibilityFilter::All
        },
        order: if q.ascending {
            SortOrder::Asc
        } else {
            SortOrder::Desc
        },
        limit: q.limit.map(usize::from),
        cursor,
    }
}

/// The invariants of any page that was answered.
fn check_page(req: &ListMessages) -> Option<Vec<MessageId>> {
    let f = &*FIXTURE;
    let page = match f.inbox.list_messages(req) {
        Ok(page) => page,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    let limit = req.limit.unwrap_or(inbox_core::DEFAULT_PAGE_LIMIT);
    assert!(page.messages.len() <= limit, "page longer than its limit");
    assert_eq!(page.conversation_id, f.inbox.root_of(req.conversation_id));
    let own: BTreeSet<MessageId> = f
        .inbox
        .messages_of(req.conversation_id)
        .map(|m| m.id)
        .collect();
    let mut last = None;
    for m in &page.messages {
        assert!(
            own.contains(&m.id),
            "message {} is not in conversation {}",
            m.id,
            req.conversation_id
        );
        if req.visibility == VisibilityFilter::ParticipantVisible {
            assert_ne!(
                m.visibility,
                Visibility::Business,
                "a BUSINESS message in a participant listing"
            );
        }
        let key = (m.sequence, m.id);
        if let Some(prev) = last {
            match req.order {
                SortOrder::Asc => assert!(prev < key, "ascending page out of order"),
                SortOrder::Desc => assert!(prev > key, "descending page out of order"),
            }
        }
        last = Some(key);
    }
    Some(page.messages.iter().map(|m| m.id).collect())
}

fuzz_target!(|input: Input| {
    let f = &*FIXTURE;
    match input {
        Input::Text { query, cursor } => {
            check_page(&request(&query, Some(cursor)));
        }
        Input::Mutated {
            first,
            then,
            flips,
            truncate,
            insert,
        } => {
            let Ok(page) = f.inbox.list_messages(&request(&first, None)) else {
                return;
            };
            let Some(genuine) = page.next_cursor.clone() else {
                return;
            };
            // The untouched cursor, used as issued, goes on from where the page ended:
            // the next page's messages all come after the last one shown.
            let next = check_page(&request(&first, Some(genuine.clone())))
                .expect("a genuine cursor is accepted");
            let shown: BTreeSet<MessageId> = page.messages.iter().map(|m| m.id).collect();
            assert!(
                next.iter().all(|id| !shown.contains(id)),
                "a message shown twice"
            );
            let mut bytes = genuine.into_bytes();
            for (at, x) in flips {
                if !bytes.is_empty() {
                    let at = usize::from(at) % bytes.len();
                    bytes[at] ^= x;
                }
            }
            if let Some(n) = truncate {
                bytes.truncate(usize::from(n));
            }
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some((at, c)) = insert {
                let mut at = usize::from(at).min(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.insert(at, c);
            }
            check_page(&request(&then, Some(text)));
        }
    }
});
