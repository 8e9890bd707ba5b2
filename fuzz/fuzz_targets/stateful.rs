//! The engine as a state machine: an arbitrary sequence of small operations (get-or-create
//! for visitor, contact and member ids of a tiny id space; messages both ways and both
//! visibilities; visitors identified; members registered; contacts created and merged; raw
//! `ConversationsMerged` events as a webhook would bring them, chains, conflicts and cycles
//! included; raw `MessageSent` events with their own ids and sequences, ties included; old
//! events delivered again) run through `Inbox::execute` and `Inbox::apply` on
//! a virtual clock, then checked against a naive model (the messages as they were sent) and
//! against a second inbox folded from a shuffled copy of the same events, with duplicates.
//!
//! Invariants of DESIGN.md checked (numbers as in ARCHITECTURE.md):
//! 1. every accepted message is in exactly one live conversation, once, unchanged (10);
//! 3. along each live conversation `sequence` strictly increases when every message was
//!    decided here (2: in `(sequence, id)` order, also with observed messages, whose
//!    sequences may tie);
//! 4. delivering an event again changes nothing;
//! 5. the shuffled, duplicated fold equals the state; 6. so does an in-order replay;
//! 7. every id of a participant resolves to the live conversation of its most advanced id,
//!    and `live_conversation_of` only ever answers a live conversation;
//! 9. a participant-visible listing, paged to the end either way, is exactly the
//!    non-BUSINESS messages of the conversation.

#![no_main]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use inbox_core::contacts::{ContactDraft, ContactEmail, ContactName, EntryTag};
use inbox_core::message::{ChannelSet, Content};
use inbox_core::{
    Command, ContactId, Context, ConversationId, Direction, Event, EventEnvelope, EventId, Inbox,
    ListMessages, MemberId, Message, MessageDraft, MessageId, ParticipantId, SCHEMA_VERSION,
    SendAs, Sender, Sequence, SequentialIds, SortOrder, Timestamp, Visibility, VisibilityFilter,
    VisitorId,
};
use inbox_fuzz::{START, fixed_uuid, site_config};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

const VISITORS: u8 = 4;
const CONTACTS: u8 = 5;
const MEMBERS: u8 = 3;
const OBSERVED: u8 = 3;
const MAX_OPS: usize = 48;

fn visitor(i: u8) -> VisitorId {
    VisitorId::from_uuid(fixed_uuid(0x71, i % VISITORS))
}
fn contact(i: u8) -> ContactId {
    ContactId::from_uuid(fixed_uuid(0x72, i % CONTACTS))
}
fn member(i: u8) -> MemberId {
    MemberId::from_uuid(fixed_uuid(0x73, i % MEMBERS))
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Who {
    Visitor(u8),
    Contact(u8),
    Member(u8),
}

impl Who {
    fn id(self) -> ParticipantId {
        match self {
            Who::Visitor(i) => ParticipantId::Visitor(visitor(i)),
            Who::Contact(i) => ParticipantId::Contact(contact(i)),
            Who::Member(i) => ParticipantId::Member(member(i)),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    GetOrCreate(Who),
    Send {
        /// Index into the conversations seen so far (live or merged away).
        conversation: u8,
        to_business: bool,
        business_only: bool,
        as_participant: bool,
    },
    Identify {
        visitor: u8,
        contact: u8,
    },
    Register {
        member: u8,
        contact: u8,
        email: bool,
    },
    CreateContact {
        contact: u8,
        email: Option<u8>,
    },
    MergeContacts {
        target: u8,
        sources: Vec<u8>,
        /// Use the target's revision plus this (0: the right one).
        revision_skew: u8,
    },
    /// A merge as a webhook brings it: any sources into any target, with a stamp near the
    /// site's clock (or far from it).
    RawMerge {
        sources: Vec<u8>,
        target: u8,
        stamp: i16,
    },
    /// A message as a webhook brings it: its own id (from a small space, so it comes again)
    /// and a sequence near the site's clock (ties and the past included).
    Observe {
        conversation: u8,
        key: u8,
        sequence: i16,
        business_only: bool,
        to_participant: bool,
    },
    /// An event produced before, delivered again.
    Redeliver(u16),
    /// The clock moves (possibly backwards, possibly not at all).
    Tick(i32),
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
    shuffle_seed: u64,
    page_limit: u8,
}

/// A deterministic shuffle with duplicates (splitmix64).
fn shuffled_with_duplicates<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut state = seed;
    let mut next = move |bound: usize| -> usize {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % bound.max(1) as u64) as usize
    };
    let mut out = items.to_vec();
    if !items.is_empty() {
        let dups = next(items.len() + 1);
        for _ in 0..dups {
            out.push(items[next(items.len())].clone());
        }
    }
    for i in (1..out.len()).rev() {
        let j = next(i + 1);
        out.swap(i, j);
    }
    out
}

fn fold<'a>(events: impl IntoIterator<Item = &'a EventEnvelope>) -> Inbox {
    let mut inbox = Inbox::new(site_config());
    for e in events {
        inbox.apply(e);
    }
    inbox
}

/// Every page of a listing, following cursors to the end.
fn all_pages(
    inbox: &Inbox,
    conversation_id: ConversationId,
    visibility: VisibilityFilter,
    order: SortOrder,
    limit: usize,
) -> Vec<MessageId> {
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..=inbox.message_count() + 1 {
        let page = inbox
            .list_messages(&ListMessages {
                conversation_id,
                visibility,
                order,
                limit: Some(limit),
                cursor: cursor.take(),
            })
            .expect("listing a live conversation");
        assert!(page.messages.len() <= limit);
        out.extend(page.messages.iter().map(|m| m.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("paging never ends");
}

struct Run {
    inbox: Inbox,
    ids: SequentialIds,
    now: i64,
    events: Vec<EventEnvelope>,
    conversations: Vec<ConversationId>,
    sent: BTreeMap<MessageId, Message>,
    /// Observed messages by key: a key always stands for the same message.
    observed: BTreeMap<u8, EventEnvelope>,
}

impl Run {
    fn record(&mut self, events: Vec<EventEnvelope>) {
        for e in events {
            match &e.event {
                Event::ConversationStarted {
                    conversation_id, ..
                } if !self.conversations.contains(conversation_id) => {
                    self.conversations.push(*conversation_id);
                }
                Event::MessageSent { message } => {
                    self.sent.insert(message.id, message.clone());
                }
                _ => {}
            }
            self.events.push(e);
        }
    }

    fn execute(&mut self, command: &Command) {
        let ctx = Context::at(Timestamp::from_micros(self.now));
        if let Ok(events) = self.inbox.execute(command, &ctx, &mut self.ids) {
            self.record(events);
        }
    }

    fn conversation(&self, i: u8) -> ConversationId {
        let n = self.conversations.len() + usize::from(OBSERVED);
        let i = usize::from(i) % n;
        match self.conversations.get(i) {
            Some(c) => *c,
            None => {
                ConversationId::from_uuid(fixed_uuid(0x76, (i - self.conversations.len()) as u8))
            }
        }
    }

    fn step(&mut self, op: &Op) {
        self.now += 1_000;
        match op {
            Op::GetOrCreate(who) => self.execute(&Command::GetOrCreateConversation {
                participant: who.id(),
            }),
            Op::Send {
                conversation,
                to_business,
                business_only,
                as_participant,
            } => {
                if self.conversations.is_empty() {
                    return;
                }
                let c = self.conversations[usize::from(*conversation) % self.conversations.len()];
                let direction = if *to_business {
                    Direction::ParticipantToBusiness
                } else {
                    Direction::BusinessToParticipant
                };
                let mut draft = MessageDraft::text(format!("t{}", self.now), direction);
                if *business_only {
                    draft.visibility = Some(Visibility::Business);
                }
                self.execute(&Command::SendMessage {
                    conversation_id: c,
                    message: draft,
                    send_as: if *as_participant {
                        SendAs::Participant
                    } else {
                        SendAs::Caller
                    },
                });
            }
            Op::Identify {
                visitor: v,
                contact: c,
            } => self.execute(&Command::IdentifyVisitor {
                visitor: visitor(*v),
                contact: contact(*c),
            }),
            Op::Register {
                member: m,
                contact: c,
                email,
            } => self.execute(&Command::RegisterMember {
                member: member(*m),
                contact: contact(*c),
                login_email: email.then(|| format!("m{}@example.com", m % MEMBERS)),
            }),
            Op::CreateContact { contact: c, email } => self.execute(&Command::CreateContact {
                contact_id: contact(*c),
                draft: ContactDraft {
                    name: ContactName {
                        first: Some(format!("c{}", c % CONTACTS)),
                        last: None,
                    },
                    emails: email
                        .map(|e| ContactEmail {
                            email: format!("e{}@example.com", e % 3),
                            tag: EntryTag::Main,
                            primary: true,
                        })
                        .into_iter()
                        .collect(),
                    ..ContactDraft::default()
                },
            }),
            Op::MergeContacts {
                target,
                sources,
                revision_skew,
            } => {
                let t = contact(*target);
                let revision = self.inbox.contacts().get(t).map_or(1, |c| c.revision);
                let skew = if *revision_skew < 200 {
                    0
                } else {
                    u64::from(*revision_skew) - 200
                };
                self.execute(&Command::MergeContacts {
                    target: t,
                    expected_revision: revision + skew,
                    sources: sources.iter().take(6).map(|s| contact(*s)).collect(),
                });
            }
            Op::RawMerge {
                sources,
                target,
                stamp,
            } => {
                let sources: Vec<ConversationId> = sources
                    .iter()
                    .take(3)
                    .map(|s| self.conversation(*s))
                    .collect();
                let target = self.conversation(*target);
                let stamp = Sequence(
                    self.inbox
                        .last_sequence()
                        .0
                        .saturating_add(i64::from(*stamp)),
                );
                let envelope = EventEnvelope {
                    event_id: EventId::from_uuid(Uuid::from_u128(
                        (0xee_u128 << 96) | self.events.len() as u128,
                    )),
                    schema_version: SCHEMA_VERSION,
                    site: self.inbox.config().site.clone(),
                    recorded_at: Timestamp::from_micros(self.now),
                    event: Event::ConversationsMerged {
                        sources,
                        target,
                        stamp,
                    },
                };
                self.inbox.apply(&envelope);
                self.record(vec![envelope]);
            }
            Op::Observe {
                conversation,
                key,
                sequence,
                business_only,
                to_participant,
            } => {
                let k = key % 32;
                let envelope = match self.observed.get(&k) {
                    Some(e) => e.clone(),
                    None => {
                        let sequence = Sequence(
                            self.inbox
                                .last_sequence()
                                .0
                                .saturating_add(i64::from(*sequence)),
                        );
                        let message = Message {
                            id: MessageId(1_000 + u64::from(k)),
                            sequence,
                            created_date: Timestamp::from_micros(sequence.0),
                            conversation_id: self.conversation(*conversation),
                            sender: if *to_participant {
                                Sender::Unknown
                            } else {
                                Sender::Visitor(visitor(k))
                            },
                            target_channels: ChannelSet::EMPTY,
                            source_channel: None,
                            app_id: None,
                            visibility: if *business_only {
                                Visibility::Business
                            } else {
                                Visibility::BusinessAndParticipant
                            },
                            direction: if *to_participant {
                                Direction::BusinessToParticipant
                            } else {
                                Direction::ParticipantToBusiness
                            },
                            silent: false,
                            content: Content::text(format!("o{k}")),
                            badges: Box::new([]),
                        };
                        let e = EventEnvelope {
                            event_id: EventId::from_uuid(Uuid::from_u128(
                                (0xef_u128 << 96) | u128::from(k),
                            )),
                            schema_version: SCHEMA_VERSION,
                            site: self.inbox.config().site.clone(),
                            recorded_at: Timestamp::from_micros(self.now),
                            event: Event::MessageSent { message },
                        };
                        self.observed.insert(k, e.clone());
                        e
                    }
                };
                self.inbox.apply(&envelope);
                self.record(vec![envelope]);
            }
            Op::Redeliver(i) => {
                if self.events.is_empty() {
                    return;
                }
                let e = self.events[usize::from(*i) % self.events.len()].clone();
                let before = self.inbox.clone();
                self.inbox.apply(&e);
                assert!(
                    self.inbox == before,
                    "invariant 4: delivering {:?} again changed the state",
                    e.event
                );
            }
            Op::Tick(d) => {
                self.now = self.now.saturating_add(i64::from(*d));
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let mut run = Run {
        inbox: Inbox::new(site_config()),
        ids: SequentialIds::default(),
        now: START,
        events: Vec::new(),
        conversations: Vec::new(),
        sent: BTreeMap::new(),
        observed: BTreeMap::new(),
    };
    for op in input.ops.iter().take(MAX_OPS) {
        run.step(op);
    }
    let inbox = &run.inbox;
    let live: BTreeSet<ConversationId> = inbox.live_conversations().collect();

    // 1, 10: every message sent is in exactly one live conversation, once, as it was sent,
    // and where its provenance and the merges say.
    let mut seen: BTreeMap<MessageId, usize> = BTreeMap::new();
    for c in &live {
        let mut last: Option<(Sequence, MessageId)> = None;
        for m in inbox.messages_of(*c) {
            *seen.entry(m.id).or_default() += 1;
            // 3, 2: strictly increasing along the conversation.
            let key = (m.sequence, m.id);
            if let Some(prev) = last {
                assert!(prev < key, "invariant 2/3: {prev:?} then {key:?} in {c}");
                assert!(
                    !run.observed.is_empty() || prev.0 < key.0,
                    "invariant 3: sequence {:?} repeated in {c}",
                    key.0
                );
            }
            last = Some(key);
            assert_eq!(
                inbox.root_of(m.conversation_id),
                *c,
                "invariant 1: message {} in the wrong tree",
                m.id
            );
        }
    }
    for (id, m) in &run.sent {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "invariant 1: message {id} seen {:?} times",
            seen.get(id)
        );
        assert_eq!(
            inbox.message(*id),
            Some(m),
            "invariant 10: message {id} changed or lost"
        );
    }
    assert_eq!(
        seen.len(),
        run.sent.len(),
        "invariant 1: messages nobody sent"
    );
    assert_eq!(inbox.message_count(), run.sent.len());

    // 7: resolution.
    let mut everyone = Vec::new();
    for i in 0..VISITORS {
        everyone.push(ParticipantId::Visitor(visitor(i)));
    }
    for i in 0..CONTACTS {
        everyone.push(ParticipantId::Contact(contact(i)));
    }
    for i in 0..MEMBERS {
        everyone.push(ParticipantId::Member(member(i)));
    }
    for p in &everyone {
        let got = inbox.live_conversation_of(*p);
        if let Some(c) = got {
            assert!(
                live.contains(&c),
                "invariant 7: {p:?} resolves to {c}, which is not live"
            );
        }
        let advanced = inbox.advanced_identity(*p);
        assert_eq!(
            inbox.advanced_identity(advanced),
            advanced,
            "advanced identity is not a fixpoint"
        );
        if let Some(c) = inbox.live_conversation_of(advanced) {
            assert_eq!(
                got,
                Some(c),
                "invariant 7: {p:?} and its advanced id {advanced:?} disagree"
            );
        }
    }

    // 9: participant-visible listings, and complete listings, against the naive model.
    let limit = usize::from(input.page_limit % 12) + 1;
    for c in &live {
        let all: Vec<MessageId> = inbox.messages_of(*c).map(|m| m.id).collect();
        let visible: Vec<MessageId> = inbox
            .messages_of(*c)
            .filter(|m| m.visibility != Visibility::Business)
            .map(|m| m.id)
            .collect();
        let asc = all_pages(
            inbox,
            *c,
            VisibilityFilter::ParticipantVisible,
            SortOrder::Asc,
            limit,
        );
        assert_eq!(asc, visible, "invariant 9: participant listing of {c}");
        let mut desc = all_pages(
            inbox,
            *c,
            VisibilityFilter::ParticipantVisible,
            SortOrder::Desc,
            limit,
        );
        desc.reverse();
        assert_eq!(
            desc, visible,
            "invariant 9: participant listing of {c}, newest first"
        );
        let everything = all_pages(inbox, *c, VisibilityFilter::All, SortOrder::Asc, limit);
        assert_eq!(everything, all, "invariant 8: complete listing of {c}");
    }

    // 6: replay in order; 4, 5: shuffled with duplicates.
    let replay = fold(&run.events);
    assert!(
        replay == run.inbox,
        "invariant 6: replay differs from the state"
    );
    let shuffled = shuffled_with_duplicates(&run.events, input.shuffle_seed);
    let other = fold(&shuffled);
    if other != run.inbox {
        let (g, w) = (format!("{other:#?}"), format!("{:#?}", run.inbox));
        let at = g
            .lines()
            .zip(w.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let gl: Vec<&str> = g.lines().collect();
        let wl: Vec<&str> = w.lines().collect();
        let from = at.saturating_sub(15);
        panic!(
            "invariant 5: shuffled fold differs at line {at}\n--- shuffled\n{}\n--- in order\n{}",
            gl[from..(at + 4).min(gl.len())].join("\n"),
            wl[from..(at + 4).min(wl.len())].join("\n")
        );
    }
});
