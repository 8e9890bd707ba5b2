//! Property tests of the ten invariants of `DESIGN.md` (section "Invariants"), over generated
//! histories, each checked against a small naive reference model (sorted `Vec`s, plain maps).
//! Every property is named after the invariant it checks (`inv01_` .. `inv10_`).
//!
//! Environment:
//! * `PROPTEST_CASES=n`: the number of cases of every property (parsed here, explicitly;
//!   default [`DEFAULT_CASES`], about 10 s for the whole file in debug on two cores).
//!   A deep run: `PROPTEST_CASES=10000 cargo test --release -p inbox-core --test invariants`.
//! * `PROPTEST_RNG_SEED=n`: the seed. Unset, a fixed seed is used, so every run checks the
//!   same histories (reproducible in CI); set it to explore others.
//!
//! The generator here makes **command histories** run through [`Inbox::execute`] with
//! [`SequentialIds`] and a virtual clock whose steps are random, sometimes zero, sometimes
//! backwards: contacts created, conversations got-or-created for visitors, contacts and
//! members, visitors identified, members registered, contacts merged (chains of merges),
//! messages of every content type, both visibilities and both directions sent to live and to
//! merged conversation ids, button interactions and erasures. Refused commands are part of
//! the history too. For paging, the paged participant is made to advance (its conversation
//! merges away) or to absorb another conversation between pages. Its model is a union-find
//! over the ids of each person and the merges recorded, written for these histories alone.
//!
//! Histories with events observed from outside (a replica's, and both mixed on one site) are
//! checked against the reference model of `inbox-testkit` in `tests/model.rs`.
//!
//! Nothing here reads a clock or sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use inbox_core::contacts::{ContactDraft, ContactEmail, ContactName, EntryTag};
use inbox_core::{
    AppId, Caller, Command, ContactId, Context, ConversationId, CursorError, Event, EventEnvelope,
    EventId, Inbox, InboxConfig, ListMessages, ListMessagesError, MemberId, Message, MessageDraft,
    MessageId, ParticipantId, SendAs, Sequence, SequentialIds, SiteId, SortOrder, Timestamp,
    Visibility, VisibilityFilter, VisitorId, WixUserId,
};
use inbox_testkit::history::{ContentKind as Kind, TextKind};
use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

/// Cases per property when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

fn config() -> ProptestConfig {
    inbox_testkit::proptest_config(DEFAULT_CASES)
}

// ---------------------------------------------------------------------------------------------
// ids and small helpers

/// The virtual clock starts here (2023-11-14).
const START: i64 = 1_700_000_000_000_000;
const VISITORS: u8 = 4;
const CONTACTS: u8 = 8;
const MEMBERS: u8 = 3;

fn uuid(kind: u128, i: u8) -> Uuid {
    // Far above what `SequentialIds` issues.
    Uuid::from_u128((kind << 96) | u128::from(i))
}
fn visitor(i: u8) -> VisitorId {
    VisitorId::from_uuid(uuid(0x71, i % VISITORS))
}
fn contact(i: u8) -> ContactId {
    ContactId::from_uuid(uuid(0x72, i % CONTACTS))
}
fn member(i: u8) -> MemberId {
    MemberId::from_uuid(uuid(0x73, i % MEMBERS))
}
fn app() -> AppId {
    AppId::from_uuid(uuid(0x74, 0))
}
fn wix_user() -> WixUserId {
    WixUserId::from_uuid(uuid(0x75, 0))
}

fn site_config() -> InboxConfig {
    InboxConfig::new(SiteId::new("site-a"), [7; 16])
}

fn pick<T>(items: &[T], i: impl Into<usize>) -> Option<&T> {
    if items.is_empty() {
        None
    } else {
        items.get(i.into() % items.len())
    }
}

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

/// `a == b` for whole states, reporting the first line where their debug forms differ
/// (a full dump of two states is unreadable).
fn same_state(what: &str, got: &Inbox, want: &Inbox) -> Result<(), TestCaseError> {
    if got == want {
        return Ok(());
    }
    let (g, w) = (format!("{got:#?}"), format!("{want:#?}"));
    let (gl, wl): (Vec<&str>, Vec<&str>) = (g.lines().collect(), w.lines().collect());
    let at = gl
        .iter()
        .zip(&wl)
        .position(|(a, b)| a != b)
        .unwrap_or(gl.len().min(wl.len()));
    let from = at.saturating_sub(12);
    Err(fail(format!(
        "{what}: states differ at line {at}\n--- got\n{}\n--- want\n{}",
        gl[from..(at + 4).min(gl.len())].join("\n"),
        wl[from..(at + 4).min(wl.len())].join("\n"),
    )))
}

/// A deterministic shuffle with duplicates (splitmix64 seeded by the case).
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

/// Every page of a listing, following cursors to the end, on an unchanging state.
fn all_pages(
    inbox: &Inbox,
    conversation_id: ConversationId,
    visibility: VisibilityFilter,
    order: SortOrder,
    limit: usize,
) -> Result<Vec<Message>, TestCaseError> {
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
            .map_err(|e| fail(format!("list_messages: {e}")))?;
        prop_assert!(page.messages.len() <= limit);
        out.extend(page.messages.iter().map(|m| (*m).clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
    Err(fail("paging never ends"))
}

fn ids_of<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Vec<MessageId> {
    messages.into_iter().map(|m| m.id).collect()
}

/// The reference order of invariant 2: chronological by createdDate, then by sequence (which is
/// stronger than createdDate), then by id (a tie rule that depends on the message alone).
fn reference_sort(messages: &mut [&Message]) {
    messages.sort_by_key(|m| (m.created_date, m.sequence, m.id));
}

/// Invariants 2 and 3 along one conversation, as far as they do not need a model: createdDate
/// never goes back, the sort key strictly increases, and within each provenance conversation
/// the sequence strictly increases. With `strict`, sequence strictly increases overall.
fn check_conversation_order(messages: &[&Message], strict: bool) -> Result<(), TestCaseError> {
    for w in messages.windows(2) {
        let (a, b) = (w[0], w[1]);
        prop_assert!(
            a.created_date <= b.created_date,
            "createdDate goes back: {a:?} then {b:?}"
        );
        prop_assert!(
            a.order_key() < b.order_key(),
            "order key not increasing: {a:?} then {b:?}"
        );
        if strict {
            prop_assert!(
                a.sequence < b.sequence,
                "sequence not increasing: {a:?} then {b:?}"
            );
        }
    }
    let mut last: BTreeMap<ConversationId, Sequence> = BTreeMap::new();
    for m in messages {
        if let Some(prev) = last.insert(m.conversation_id, m.sequence) {
            prop_assert!(
                prev < m.sequence,
                "source order lost in {:?}",
                m.conversation_id
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// generator (a): command histories

#[derive(Clone, Copy, Debug)]
enum Who {
    Visitor(u8),
    Contact(u8),
    Member(u8),
}

#[derive(Clone, Debug)]
enum Op {
    CreateContact {
        c: u8,
        email: bool,
    },
    GetOrCreate {
        who: Who,
    },
    Identify {
        v: u8,
        c: u8,
    },
    Register {
        m: u8,
        c: u8,
    },
    MergeContacts {
        target: u8,
        sources: Vec<u8>,
        stale: bool,
    },
    Send {
        conversation: u8,
        kind: Kind,
        visibility: Option<Visibility>,
        to_participant: bool,
        send_as: u8,
        caller: u8,
    },
    Interact {
        message: u8,
        via_root: bool,
        good: bool,
    },
    Erase {
        who: Who,
    },
}

#[derive(Clone, Debug)]
struct Step {
    /// How far the caller's clock moves before the command (may be zero or negative).
    dt: i64,
    op: Op,
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        2 => (0..VISITORS).prop_map(Who::Visitor),
        2 => any::<u8>().prop_map(Who::Contact),
        1 => any::<u8>().prop_map(Who::Member),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        12 => Just(Kind::Text),
        3 => Just(Kind::Template),
        1 => Just(Kind::Minimal),
        1 => Just(Kind::Form),
        1 => Just(Kind::Empty),
        1 => Just(Kind::System),
    ]
}

fn visibility() -> impl Strategy<Value = Option<Visibility>> {
    prop_oneof![
        6 => Just(None),
        4 => Just(Some(Visibility::BusinessAndParticipant)),
        6 => Just(Some(Visibility::Business)),
        1 => Just(Some(Visibility::Unknown)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..CONTACTS, any::<bool>()).prop_map(|(c, email)| Op::CreateContact { c, email }),
        4 => who().prop_map(|who| Op::GetOrCreate { who }),
        3 => (0..VISITORS, any::<u8>()).prop_map(|(v, c)| Op::Identify { v, c }),
        2 => (0..MEMBERS, any::<u8>()).prop_map(|(m, c)| Op::Register { m, c }),
        3 => (any::<u8>(), vec(any::<u8>(), 1..3), prop::bool::weighted(0.15))
            .prop_map(|(target, sources, stale)| Op::MergeContacts { target, sources, stale }),
        12 => (any::<u8>(), kind(), visibility(), any::<bool>(), 0..3u8, 0..3u8).prop_map(
            |(conversation, kind, visibility, to_participant, send_as, caller)| Op::Send {
                conversation,
                kind,
                visibility,
                to_participant,
                send_as,
                caller,
            }
        ),
        1 => (any::<u8>(), any::<bool>(), prop::bool::weighted(0.8))
            .prop_map(|(message, via_root, good)| Op::Interact { message, via_root, good }),
        1 => who().prop_map(|who| Op::Erase { who }),
    ]
}

fn dt() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => Just(0i64),
        4 => 1i64..2_000,
        2 => -3_000i64..0, // the caller's clock steps back
        1 => 1_000_000i64..50_000_000,
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (dt(), op()).prop_map(|(dt, op)| Step { dt, op })
}

/// A few contacts and conversations first (so that fewer commands are refused for want of
/// them), then anything.
fn history(max: usize) -> impl Strategy<Value = Vec<Step>> {
    let prelude = prop_oneof![
        (0..CONTACTS, any::<bool>()).prop_map(|(c, email)| Op::CreateContact { c, email }),
        who().prop_map(|who| Op::GetOrCreate { who }),
    ];
    (vec((dt(), prelude), 0..8), vec(step(), 0..max)).prop_map(|(prelude, rest)| {
        let mut steps: Vec<Step> = prelude
            .into_iter()
            .map(|(dt, op)| Step { dt, op })
            .collect();
        steps.extend(rest);
        steps
    })
}

fn draft(
    kind: Kind,
    visibility: Option<Visibility>,
    to_participant: bool,
    n: usize,
) -> MessageDraft {
    inbox_testkit::runner::draft(
        kind,
        TextKind::Short(u8::try_from(n % 256).unwrap_or(0)),
        visibility,
        to_participant,
    )
}

/// The naive reference model of a command history: who is whom (a union-find over every id a
/// participant had), contact merges, and the conversation merge edges that were recorded.
#[derive(Default)]
struct Model {
    union: BTreeMap<ParticipantId, ParticipantId>,
    nodes: BTreeSet<ParticipantId>,
    merged_into: BTreeMap<ContactId, ContactId>,
    member_of: BTreeMap<ContactId, MemberId>,
    conv_parent: BTreeMap<ConversationId, ConversationId>,
    /// A conversation merged away twice (a decided history never does that).
    remerged: Vec<ConversationId>,
}

impl Model {
    fn find(&self, mut p: ParticipantId) -> ParticipantId {
        while let Some(q) = self.union.get(&p) {
            p = *q;
        }
        p
    }
    fn add(&mut self, p: ParticipantId) {
        self.nodes.insert(p);
    }
    fn unite(&mut self, a: ParticipantId, b: ParticipantId) {
        self.add(a);
        self.add(b);
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.union.insert(ra.max(rb), ra.min(rb));
        }
    }
    fn live_contact(&self, mut c: ContactId) -> ContactId {
        for _ in 0..=self.merged_into.len() {
            match self.merged_into.get(&c) {
                Some(n) => c = *n,
                None => break,
            }
        }
        c
    }
    fn conv_root(&self, mut c: ConversationId) -> ConversationId {
        for _ in 0..=self.conv_parent.len() {
            match self.conv_parent.get(&c) {
                Some(n) => c = *n,
                None => break,
            }
        }
        c
    }
    /// Every participant, as the set of ids they ever had.
    fn people(&self) -> Vec<Vec<ParticipantId>> {
        let mut groups: BTreeMap<ParticipantId, Vec<ParticipantId>> = BTreeMap::new();
        for n in &self.nodes {
            groups.entry(self.find(*n)).or_default().push(*n);
        }
        groups.into_values().collect()
    }
    /// The most advanced identity of a participant: member > live contact > visitor.
    fn advanced(&self, ids: &[ParticipantId]) -> ParticipantId {
        let some_contact = ids.iter().find_map(|p| match p {
            ParticipantId::Contact(c) => Some(*c),
            _ => None,
        });
        match some_contact {
            Some(c) => {
                let live = self.live_contact(c);
                self.member_of
                    .get(&live)
                    .map_or(ParticipantId::Contact(live), |m| ParticipantId::Member(*m))
            }
            None => ids[0],
        }
    }
}

struct SendFact {
    /// The conversation id the command named (possibly merged away).
    to: ConversationId,
    /// The message as recorded.
    message: Message,
    /// The highest sequence of any message before the send.
    before_max: Option<Sequence>,
    /// `conversation(to).id` just before the send: the survivor.
    home: ConversationId,
    /// The live conversation holding the message just after the send.
    landed: Option<ConversationId>,
    /// Whose conversation it was sent to (their most advanced identity then).
    owner: Option<ParticipantId>,
}

struct Run {
    inbox: Inbox,
    ids: SequentialIds,
    now: i64,
    log: Vec<EventEnvelope>,
    /// `(log length, state)` after each accepted command: snapshots (O(1) clones).
    snapshots: Vec<(usize, Inbox)>,
    sends: Vec<SendFact>,
    conversations: Vec<ConversationId>,
    /// Contacts created, and members registered, in order.
    created: Vec<ContactId>,
    registered: Vec<MemberId>,
    /// Counter of `fresh_contact` and `fresh_member`.
    fresh: u8,
    model: Model,
    /// Refused commands that changed the state anyway.
    refused_but_changed: Vec<String>,
    /// Button interactions accepted or refused against expectation.
    interaction_mismatches: Vec<String>,
    /// The message order of every live conversation after each accepted command.
    orders: Vec<Vec<MessageId>>,
}

impl Run {
    fn new() -> Self {
        Run {
            inbox: Inbox::new(site_config()),
            ids: SequentialIds::default(),
            now: START,
            log: Vec::new(),
            snapshots: Vec::new(),
            sends: Vec::new(),
            conversations: Vec::new(),
            created: Vec::new(),
            registered: Vec::new(),
            fresh: 0,
            model: Model::default(),
            refused_but_changed: Vec::new(),
            interaction_mismatches: Vec::new(),
            orders: Vec::new(),
        }
    }

    fn of(steps: &[Step]) -> Self {
        let mut run = Run::new();
        for s in steps {
            run.play(s);
        }
        run
    }

    fn exec(&mut self, command: Command, caller: Caller) -> Option<Vec<EventEnvelope>> {
        let ctx = Context {
            now: Timestamp::from_micros(self.now),
            caller,
        };
        let before = self.inbox.clone();
        match self.inbox.execute(&command, &ctx, &mut self.ids) {
            Ok(envelopes) => {
                for e in &envelopes {
                    match &e.event {
                        Event::ConversationStarted {
                            conversation_id, ..
                        } => self.conversations.push(*conversation_id),
                        Event::ConversationsMerged {
                            sources, target, ..
                        } => {
                            for s in sources {
                                if self.model.conv_parent.insert(*s, *target).is_some() {
                                    self.model.remerged.push(*s);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                self.log.extend(envelopes.iter().cloned());
                self.snapshots.push((self.log.len(), self.inbox.clone()));
                for c in self.inbox.live_conversations() {
                    let order = ids_of(self.inbox.messages_of(c));
                    if order.len() > 1 {
                        self.orders.push(order);
                    }
                }
                Some(envelopes)
            }
            Err(rejection) => {
                if self.inbox != before {
                    self.refused_but_changed
                        .push(format!("{command:?}: {rejection}"));
                }
                None
            }
        }
    }

    fn play(&mut self, step: &Step) {
        self.now = self.now.saturating_add(step.dt).max(0);
        match &step.op {
            Op::CreateContact { c, email } => self.create_contact(contact(*c), *email),
            Op::GetOrCreate { who } => self.get_or_create(self.who(*who)),
            Op::Identify { v, c } => self.identify(visitor(*v), self.contact_ref(*c)),
            Op::Register { m, c } => self.register(member(*m), self.contact_ref(*c)),
            Op::MergeContacts {
                target,
                sources,
                stale,
            } => {
                // Mostly live contacts, distinct, so that most merges happen; now and then
                // anything (merged away, unknown, the target itself, twice).
                let live = self.live_contacts();
                let anything = *target % 8 == 7;
                let target = match pick(&live, *target) {
                    Some(t) if !anything => *t,
                    _ => self.contact_ref(*target),
                };
                let others: Vec<ContactId> =
                    live.iter().copied().filter(|c| *c != target).collect();
                let mut chosen: Vec<ContactId> = Vec::new();
                for s in sources {
                    let s = match pick(&others, *s) {
                        Some(c) if !anything => *c,
                        _ => self.contact_ref(*s),
                    };
                    if anything || !chosen.contains(&s) {
                        chosen.push(s);
                    }
                }
                self.merge_contacts(target, chosen, *stale);
            }
            Op::Send {
                conversation,
                kind,
                visibility,
                to_participant,
                send_as,
                caller,
            } => {
                let Some(&to) = pick(&self.conversations, *conversation) else {
                    return;
                };
                let send_as = [SendAs::Caller, SendAs::Participant, SendAs::BusinessUser]
                    [usize::from(*send_as) % 3];
                let caller = [
                    Caller::Anonymous,
                    Caller::App(app()),
                    Caller::WixUser(wix_user()),
                ][usize::from(*caller) % 3];
                self.send(to, *kind, *visibility, *to_participant, send_as, caller);
            }
            Op::Interact {
                message,
                via_root,
                good,
            } => {
                let Some(sent) = pick(&self.sends, *message) else {
                    return;
                };
                let id = sent.message.id;
                let conversation_id = if *via_root {
                    self.inbox.root_of(sent.to)
                } else {
                    sent.to // maybe merged away since: must reach the survivor
                };
                let interaction_id = if *good { "ok" } else { "nope" };
                let has_button = self
                    .inbox
                    .message(id)
                    .is_some_and(|m| m.postback_button(interaction_id).is_some());
                let cmd = Command::InteractWithButton {
                    conversation_id,
                    message_id: id,
                    interaction_id: interaction_id.into(),
                };
                let accepted = self.exec(cmd, Caller::Anonymous).is_some();
                if accepted != has_button {
                    self.interaction_mismatches.push(format!(
                        "message {id:?} via {conversation_id:?} button {interaction_id}: \
                         accepted {accepted}, has button {has_button}"
                    ));
                }
            }
            Op::Erase { who } => {
                let cmd = Command::EraseParticipant {
                    participant: self.who(*who),
                };
                self.exec(cmd, Caller::Anonymous);
            }
        }
    }

    fn create_contact(&mut self, id: ContactId, email: bool) {
        let n = id.as_uuid().as_u128() & 0xff;
        let draft = ContactDraft {
            name: ContactName {
                first: Some(format!("c{n}")),
                last: None,
            },
            emails: if email {
                vec![ContactEmail {
                    email: format!("c{n}@example.com"),
                    tag: EntryTag::Main,
                    primary: true,
                }]
            } else {
                Vec::new()
            },
            ..ContactDraft::default()
        };
        let cmd = Command::CreateContact {
            contact_id: id,
            draft,
        };
        if self.exec(cmd, Caller::Anonymous).is_some() {
            self.model.add(ParticipantId::Contact(id));
            self.created.push(id);
        }
    }

    fn get_or_create(&mut self, participant: ParticipantId) {
        let cmd = Command::GetOrCreateConversation { participant };
        if self.exec(cmd, Caller::Anonymous).is_some() {
            self.model.add(participant);
        }
    }

    fn identify(&mut self, v: VisitorId, c: ContactId) {
        let cmd = Command::IdentifyVisitor {
            visitor: v,
            contact: c,
        };
        if self.exec(cmd, Caller::Anonymous).is_some() {
            self.model
                .unite(ParticipantId::Visitor(v), ParticipantId::Contact(c));
        }
    }

    fn register(&mut self, m: MemberId, c: ContactId) {
        let cmd = Command::RegisterMember {
            member: m,
            contact: c,
            login_email: Some(format!("m{}@example.com", m.as_uuid().as_u128() & 0xff)),
        };
        if self.exec(cmd, Caller::Anonymous).is_some() {
            let live = self.model.live_contact(c);
            self.model.member_of.insert(live, m);
            self.model
                .unite(ParticipantId::Member(m), ParticipantId::Contact(c));
            if !self.registered.contains(&m) {
                self.registered.push(m);
            }
        }
    }

    fn merge_contacts(&mut self, target: ContactId, sources: Vec<ContactId>, stale: bool) {
        let revision = self.inbox.contacts().get(target).map_or(1, |c| c.revision);
        let cmd = Command::MergeContacts {
            target,
            expected_revision: if stale {
                revision.saturating_sub(1)
            } else {
                revision
            },
            sources: sources.clone(),
        };
        if self.exec(cmd, Caller::Anonymous).is_some() {
            for s in sources {
                self.model.merged_into.insert(s, target);
                self.model
                    .unite(ParticipantId::Contact(s), ParticipantId::Contact(target));
            }
        }
    }

    fn send(
        &mut self,
        to: ConversationId,
        kind: Kind,
        visibility: Option<Visibility>,
        to_participant: bool,
        send_as: SendAs,
        caller: Caller,
    ) {
        let view = self.inbox.conversation(to).ok();
        let home = view.as_ref().map_or(to, |v| v.id);
        let owner = view.and_then(|v| v.participant).map(|p| p.id);
        let before_max = self.sends.iter().map(|s| s.message.sequence).max();
        let cmd = Command::SendMessage {
            conversation_id: to,
            message: draft(kind, visibility, to_participant, self.sends.len()),
            send_as,
        };
        let Some(envelopes) = self.exec(cmd, caller) else {
            return;
        };
        for e in envelopes {
            if let Event::MessageSent { message } = e.event {
                let landed = self
                    .inbox
                    .live_conversations()
                    .find(|c| self.inbox.messages_of(*c).any(|m| m.id == message.id));
                self.sends.push(SendFact {
                    to,
                    message,
                    before_max,
                    home,
                    landed,
                    owner,
                });
            }
        }
    }

    fn live_contacts(&self) -> Vec<ContactId> {
        self.created
            .iter()
            .copied()
            .filter(|c| self.inbox.contacts().get(*c).is_some())
            .collect()
    }

    /// A contact id never used before (beyond the generated pool).
    fn fresh_contact(&mut self) -> ContactId {
        self.fresh = self.fresh.wrapping_add(1);
        ContactId::from_uuid(uuid(0x72, 0x80 | self.fresh))
    }

    fn fresh_member(&mut self) -> MemberId {
        self.fresh = self.fresh.wrapping_add(1);
        MemberId::from_uuid(uuid(0x73, 0x80 | self.fresh))
    }

    /// Between two pages: the participant of `asked` becomes more (its conversation is merged
    /// into a new one), or another participant's conversation is merged into theirs.
    fn reshape(&mut self, asked: ConversationId, absorb: bool, choice: u8) {
        let Some(p) = self
            .inbox
            .conversation(asked)
            .ok()
            .and_then(|v| v.participant)
        else {
            return;
        };
        let own_contact = match p.id {
            ParticipantId::Contact(c) => Some(c),
            ParticipantId::Member(_) => p.contact_id,
            ParticipantId::Visitor(_) => None,
        };
        match (p.id, own_contact, absorb) {
            (ParticipantId::Visitor(v), _, _) => {
                let c = match pick(&self.live_contacts(), choice) {
                    Some(c) if choice.is_multiple_of(2) => *c,
                    _ => {
                        let c = self.fresh_contact();
                        self.create_contact(c, false);
                        c
                    }
                };
                self.identify(v, c);
            }
            // A member is as advanced as it gets: only absorbing is left.
            (ParticipantId::Member(_), Some(c), _) | (_, Some(c), true) => {
                // Another contact, with a conversation and a message, merged into this one.
                let candidates: Vec<ContactId> = self
                    .live_contacts()
                    .into_iter()
                    .filter(|s| *s != c && !self.model.member_of.contains_key(s))
                    .collect();
                let s = match pick(&candidates, choice) {
                    Some(s) if !choice.is_multiple_of(3) => *s,
                    _ => {
                        let s = self.fresh_contact();
                        self.create_contact(s, false);
                        s
                    }
                };
                self.get_or_create(ParticipantId::Contact(s));
                if let Some(conv) = self.inbox.live_conversation_of(ParticipantId::Contact(s)) {
                    let kind = Kind::Text;
                    self.send(
                        conv,
                        kind,
                        None,
                        choice.is_multiple_of(2),
                        SendAs::Participant,
                        Caller::Anonymous,
                    );
                }
                self.merge_contacts(c, vec![s], false);
            }
            (ParticipantId::Contact(c), _, false) => {
                if choice.is_multiple_of(2) {
                    let m = self.fresh_member();
                    self.register(m, c);
                } else {
                    let others: Vec<ContactId> = self
                        .live_contacts()
                        .into_iter()
                        .filter(|t| *t != c)
                        .collect();
                    let t = match pick(&others, choice) {
                        Some(t) => *t,
                        None => {
                            let t = self.fresh_contact();
                            self.create_contact(t, false);
                            t
                        }
                    };
                    self.merge_contacts(t, vec![c], false);
                }
            }
            _ => {}
        }
    }

    /// A contact that exists (maybe merged away since), or now and then one that never did.
    fn contact_ref(&self, i: u8) -> ContactId {
        match pick(&self.created, i / 8) {
            Some(c) if i % 8 != 7 => *c,
            _ => contact(i),
        }
    }

    /// A member that exists, or now and then one that does not.
    fn member_ref(&self, i: u8) -> MemberId {
        match pick(&self.registered, i / 8) {
            Some(m) if i % 8 != 7 => *m,
            _ => member(i),
        }
    }

    fn who(&self, who: Who) -> ParticipantId {
        match who {
            Who::Visitor(i) => ParticipantId::Visitor(visitor(i)),
            Who::Contact(i) => ParticipantId::Contact(self.contact_ref(i)),
            Who::Member(i) => ParticipantId::Member(self.member_ref(i)),
        }
    }

    fn sent_messages(&self) -> impl Iterator<Item = &Message> + '_ {
        self.sends.iter().map(|s| &s.message)
    }

    /// The model's messages of a live conversation, in the reference order.
    fn model_messages(&self, root: ConversationId, participant_only: bool) -> Vec<&Message> {
        let mut out: Vec<&Message> = self
            .sent_messages()
            .filter(|m| self.model.conv_root(m.conversation_id) == root)
            .filter(|m| !participant_only || m.visibility == Visibility::BusinessAndParticipant)
            .collect();
        reference_sort(&mut out);
        out
    }
}

/// What happens between two pages of a listing.
#[derive(Clone, Debug)]
enum Between {
    /// Anything.
    Step(Step),
    /// A message to the conversation being paged.
    SendHere(Kind, Option<Visibility>, bool),
    /// Its participant becomes more (its conversation merges away into a new one), or another
    /// participant's conversation merges into it.
    Reshape { absorb: bool, choice: u8 },
}

fn between() -> impl Strategy<Value = Between> {
    prop_oneof![
        2 => step().prop_map(Between::Step),
        3 => (kind(), visibility(), any::<bool>()).prop_map(|(k, v, d)| Between::SendHere(k, v, d)),
        3 => (any::<bool>(), any::<u8>()).prop_map(|(absorb, choice)| Between::Reshape { absorb, choice }),
    ]
}

impl Run {
    fn between(&mut self, asked: ConversationId, op: &Between) {
        match op {
            Between::Step(s) => self.play(s),
            Between::SendHere(kind, visibility, to_participant) => self.send(
                asked,
                *kind,
                *visibility,
                *to_participant,
                SendAs::Caller,
                Caller::App(app()),
            ),
            Between::Reshape { absorb, choice } => self.reshape(asked, *absorb, *choice),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// checks on command histories

/// 1. Every accepted message is in exactly one live conversation: the survivor of the merge
///    chain of the conversation it was sent to.
fn check_nothing_lost(run: &Run) -> Result<(), TestCaseError> {
    let inbox = &run.inbox;
    prop_assert!(
        run.model.remerged.is_empty(),
        "merged away twice: {:?}",
        run.model.remerged
    );
    prop_assert_eq!(inbox.message_count(), run.sends.len());
    let mut homes: BTreeMap<MessageId, Vec<ConversationId>> = BTreeMap::new();
    let mut total = 0usize;
    for c in inbox.live_conversations() {
        for m in inbox.messages_of(c) {
            homes.entry(m.id).or_default().push(c);
            total += 1;
        }
    }
    prop_assert_eq!(
        total,
        run.sends.len(),
        "messages stored != messages accepted"
    );
    for s in &run.sends {
        let want = run.model.conv_root(s.to);
        prop_assert_eq!(
            homes.get(&s.message.id),
            Some(&vec![want]),
            "{:?}",
            s.message.id
        );
        prop_assert_eq!(
            inbox.message(s.message.id).map(|m| m.id),
            Some(s.message.id)
        );
    }
    let live: BTreeSet<ConversationId> = inbox.live_conversations().collect();
    let model_live: BTreeSet<ConversationId> = run
        .conversations
        .iter()
        .map(|c| run.model.conv_root(*c))
        .collect();
    prop_assert_eq!(live, model_live);
    for c in &run.conversations {
        prop_assert_eq!(inbox.root_of(*c), run.model.conv_root(*c));
    }
    Ok(())
}

/// 2. Chronological by createdDate, source order kept, ties by the messages alone: every live
///    conversation equals the reference model (a sorted `Vec`), and every order ever observed
///    is kept as a subsequence by all later merges.
fn check_chronological(run: &Run) -> Result<(), TestCaseError> {
    let inbox = &run.inbox;
    let mut position: BTreeMap<MessageId, (ConversationId, usize)> = BTreeMap::new();
    for c in inbox.live_conversations() {
        let got: Vec<&Message> = inbox.messages_of(c).collect();
        prop_assert_eq!(
            ids_of(got.iter().copied()),
            ids_of(run.model_messages(c, false))
        );
        check_conversation_order(&got, true)?;
        for (i, m) in got.iter().enumerate() {
            position.insert(m.id, (c, i));
        }
    }
    for order in &run.orders {
        let places: Vec<(ConversationId, usize)> = order.iter().map(|id| position[id]).collect();
        for w in places.windows(2) {
            prop_assert_eq!(w[0].0, w[1].0, "messages once together were split");
            prop_assert!(w[0].1 < w[1].1, "a merge reordered {:?}", order);
        }
    }
    Ok(())
}

/// 3. Sequence strictly increases along each conversation (checked in `check_conversation_order`)
///    and a new message's sequence is above every existing one, whatever the caller's clock did.
fn check_sequence(run: &Run) -> Result<(), TestCaseError> {
    for c in run.inbox.live_conversations() {
        let got: Vec<&Message> = run.inbox.messages_of(c).collect();
        check_conversation_order(&got, true)?;
    }
    let mut seen = BTreeSet::new();
    for s in &run.sends {
        if let Some(max) = s.before_max {
            prop_assert!(
                s.message.sequence > max,
                "{:?} not above {:?}",
                s.message.sequence,
                max
            );
        }
        prop_assert!(seen.insert(s.message.sequence), "sequence issued twice");
        prop_assert!(s.message.sequence <= run.inbox.last_sequence());
        // createdDate is the send time as the clock issued it: consistent with sequence.
        prop_assert_eq!(s.message.created_date.as_micros(), s.message.sequence.0);
    }
    Ok(())
}

/// 4. Applying an event twice equals once; a message delivered again (another event id) is
///    stored once.
fn check_idempotence(run: &Run, which: u8) -> Result<(), TestCaseError> {
    let mut twice = Inbox::new(site_config());
    for e in &run.log {
        twice.apply(e);
        twice.apply(e);
    }
    same_state("each event twice", &twice, &run.inbox)?;
    let mut again = run.inbox.clone();
    for e in &run.log {
        again.apply(e);
    }
    same_state("whole log again", &again, &run.inbox)?;
    if let Some(s) = pick(&run.sends, which) {
        let mut redelivered = run.inbox.clone();
        redelivered.apply(&EventEnvelope::new(
            SiteId::new("site-a"),
            EventId::from_uuid(uuid(0x99, 1)),
            Timestamp::from_micros(START - 1),
            Event::MessageSent {
                message: s.message.clone(),
            },
        ));
        same_state("message sent again", &redelivered, &run.inbox)?;
        prop_assert_eq!(redelivered.message_count(), run.sends.len());
    }
    Ok(())
}

/// 5. (decided events) The state is a function of the set of events: the log folded in any
///    order, with duplicates, gives the live state; a decided history has no anomaly.
fn check_convergence_of_log(run: &Run, seeds: &[u64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        run.inbox.anomalies().count(),
        0,
        "{:?}",
        run.inbox.anomalies().collect::<Vec<_>>()
    );
    for seed in seeds {
        let arranged = shuffled_with_duplicates(&run.log, *seed);
        same_state("permuted log", &fold(&arranged), &run.inbox)?;
    }
    Ok(())
}

/// 6. Rebuilding from the log, from a snapshot plus the tail, or from the log after a trip
///    through JSON gives the live state; a refused command changes nothing.
fn check_replay(run: &Run, at: u8) -> Result<(), TestCaseError> {
    prop_assert!(
        run.refused_but_changed.is_empty(),
        "{:?}",
        run.refused_but_changed
    );
    same_state("replayed log", &fold(&run.log), &run.inbox)?;
    if let Some((len, snapshot)) = pick(&run.snapshots, at) {
        let mut resumed = snapshot.clone();
        for e in &run.log[*len..] {
            resumed.apply(e);
        }
        same_state("snapshot + tail", &resumed, &run.inbox)?;
        // The snapshot did not see anything that happened after it was taken.
        same_state("snapshot vs prefix", snapshot, &fold(&run.log[..*len]))?;
    }
    let json = serde_json::to_string(&run.log).map_err(|e| fail(e.to_string()))?;
    let back: Vec<EventEnvelope> = serde_json::from_str(&json).map_err(|e| fail(e.to_string()))?;
    prop_assert!(back == run.log, "the log does not survive JSON");
    same_state("replayed from JSON", &fold(&back), &run.inbox)?;
    Ok(())
}

/// 7. Any id a participant ever had resolves to the same live conversation, that of the most
///    advanced identity; a merged conversation id redirects and says so; a message (or a
///    button click) addressed to a merged id reaches the survivor.
fn check_resolution(run: &Run) -> Result<(), TestCaseError> {
    let inbox = &run.inbox;
    let ctx = Context::at(Timestamp::from_micros(run.now));
    for person in run.model.people() {
        let advanced = run.model.advanced(&person);
        let lives: BTreeSet<Option<ConversationId>> = person
            .iter()
            .map(|p| inbox.live_conversation_of(*p))
            .collect();
        prop_assert_eq!(lives.len(), 1, "{:?} resolve to {:?}", person, lives);
        for p in &person {
            prop_assert_eq!(
                inbox.advanced_identity(*p),
                advanced,
                "advanced identity of {:?}",
                p
            );
        }
        let (state, live) = match lives.into_iter().next().flatten() {
            Some(c) => (inbox.clone(), c),
            None => {
                // Nobody has a conversation yet: get-or-create with any of the ids.
                let mut state = inbox.clone();
                let mut ids = SequentialIds::starting_at(1 << 60);
                state
                    .execute(
                        &Command::GetOrCreateConversation {
                            participant: person[0],
                        },
                        &ctx,
                        &mut ids,
                    )
                    .map_err(|e| fail(format!("get-or-create {:?}: {e}", person[0])))?;
                let live = state
                    .live_conversation_of(person[0])
                    .ok_or_else(|| fail("get-or-create made no conversation"))?;
                (state, live)
            }
        };
        prop_assert!(state.live_conversations().any(|c| c == live));
        let view = state.conversation(live).map_err(|e| fail(e.to_string()))?;
        prop_assert_eq!(view.id, live);
        prop_assert_eq!(view.redirected_from, None);
        prop_assert_eq!(view.participant.map(|p| p.id), Some(advanced));
        for p in &person {
            prop_assert_eq!(state.live_conversation_of(*p), Some(live), "{:?}", p);
            prop_assert_eq!(state.conversation_of(*p).map(|v| v.id), Some(live));
            let mut ids = SequentialIds::starting_at(1 << 61);
            let events = state
                .decide(
                    &Command::GetOrCreateConversation { participant: *p },
                    &ctx,
                    &mut ids,
                )
                .map_err(|e| fail(format!("get-or-create {p:?}: {e}")))?;
            prop_assert!(events.is_empty(), "get-or-create {:?} made {:?}", p, events);
        }
    }
    for c in &run.conversations {
        let root = run.model.conv_root(*c);
        let view = inbox.conversation(*c).map_err(|e| fail(e.to_string()))?;
        prop_assert_eq!(view.id, root);
        prop_assert_eq!(view.redirected_from, (root != *c).then_some(*c));
    }
    for s in &run.sends {
        prop_assert_eq!(s.landed, Some(s.home), "sent to {:?}", s.to);
        if let Some(owner) = s.owner {
            let live = inbox.live_conversation_of(owner);
            prop_assert!(
                live.is_some_and(|c| inbox.messages_of(c).any(|m| m.id == s.message.id)),
                "message of {:?} is not in their live conversation {:?}",
                owner,
                live
            );
        }
    }
    prop_assert!(
        run.interaction_mismatches.is_empty(),
        "{:?}",
        run.interaction_mismatches
    );
    Ok(())
}

/// 9. A participant-visible listing never shows a `BUSINESS` message (and shows every
///    participant-visible one); the full listing shows everything.
fn check_visibility(run: &Run, limit: usize) -> Result<(), TestCaseError> {
    let inbox = &run.inbox;
    for c in &run.conversations {
        let root = run.model.conv_root(*c);
        for order in [SortOrder::Asc, SortOrder::Desc] {
            for (filter, participant_only) in [
                (VisibilityFilter::ParticipantVisible, true),
                (VisibilityFilter::All, false),
            ] {
                let got = all_pages(inbox, *c, filter, order, limit)?;
                if participant_only {
                    prop_assert!(
                        got.iter()
                            .all(|m| m.visibility == Visibility::BusinessAndParticipant)
                    );
                }
                let mut want = ids_of(run.model_messages(root, participant_only));
                if order == SortOrder::Desc {
                    want.reverse();
                }
                prop_assert_eq!(ids_of(&got), want);
            }
        }
    }
    Ok(())
}

/// 10. Every message keeps the conversation it was sent to, through any merge; and that is
///     enough to undo a merge by replaying the log without it.
fn check_provenance(run: &Run, which: u8) -> Result<(), TestCaseError> {
    let inbox = &run.inbox;
    for s in &run.sends {
        prop_assert_eq!(s.message.conversation_id, s.to, "recorded provenance");
        let stored = inbox
            .message(s.message.id)
            .ok_or_else(|| fail("message gone"))?;
        prop_assert_eq!(stored.conversation_id, s.to, "stored provenance");
    }
    for c in inbox.live_conversations() {
        for m in inbox.messages_of(c) {
            prop_assert_eq!(run.model.conv_root(m.conversation_id), c);
        }
    }
    let merges: Vec<usize> = run
        .log
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.event, Event::ConversationsMerged { .. }))
        .map(|(i, _)| i)
        .collect();
    if let Some(&undone) = pick(&merges, which) {
        let without: Vec<EventEnvelope> = run
            .log
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != undone)
            .map(|(_, e)| e.clone())
            .collect();
        let state = fold(&without);
        let mut model = Model::default();
        for e in &without {
            if let Event::ConversationsMerged {
                sources, target, ..
            } = &e.event
            {
                for s in sources {
                    model.conv_parent.insert(*s, *target);
                }
            }
        }
        for s in &run.sends {
            let want = model.conv_root(s.to);
            prop_assert!(
                state.messages_of(want).any(|m| m.id == s.message.id),
                "after undoing a merge, {:?} is not in {:?}",
                s.message.id,
                want
            );
        }
        prop_assert_eq!(state.message_count(), run.sends.len());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the properties

proptest! {
    #![proptest_config(config())]

    // 1. Nothing lost, nothing doubled.
    #[test]
    fn inv01_nothing_lost_nothing_doubled(steps in history(60)) {
        check_nothing_lost(&Run::of(&steps))?;
    }

    // 2. Chronological merge.
    #[test]
    fn inv02_chronological_merge(steps in history(60)) {
        check_chronological(&Run::of(&steps))?;
    }

    // 3. Sequence.
    #[test]
    fn inv03_sequence(steps in history(60)) {
        check_sequence(&Run::of(&steps))?;
    }

    // 4. Idempotence.
    #[test]
    fn inv04_idempotence(steps in history(60), which in any::<u8>()) {
        check_idempotence(&Run::of(&steps), which)?;
    }

    // 5. Convergence, of a decided log.
    #[test]
    fn inv05_convergence_of_a_decided_log(steps in history(60), seeds in vec(any::<u64>(), 2)) {
        check_convergence_of_log(&Run::of(&steps), &seeds)?;
    }

    // 6. Replay.
    #[test]
    fn inv06_replay(steps in history(60), at in any::<u8>()) {
        check_replay(&Run::of(&steps), at)?;
    }

    // 7. Resolution.
    #[test]
    fn inv07_resolution(steps in history(60)) {
        check_resolution(&Run::of(&steps))?;
    }

    // 8. Stable paging: page to the end while sends and merges happen between pages.
    #[test]
    fn inv08_stable_paging(
        steps in history(50),
        asked in any::<u8>(),
        descending in any::<bool>(),
        participant_only in any::<bool>(),
        limit in 1usize..6,
        between in vec(vec(between(), 0..4), 0..16),
        tamper in any::<u16>(),
    ) {
        let mut run = Run::of(&steps);
        let Some(&asked) = pick(&run.conversations, asked) else { return Ok(()) };
        let order = if descending { SortOrder::Desc } else { SortOrder::Asc };
        let visibility = if participant_only {
            VisibilityFilter::ParticipantVisible
        } else {
            VisibilityFilter::All
        };
        let mut want = ids_of(run.model_messages(run.model.conv_root(asked), participant_only));
        if descending {
            want.reverse();
        }
        let mut got: Vec<MessageId> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0usize;
        // Each page's messages and its `prev` cursor, to walk back afterwards.
        let mut seen: Vec<(Vec<MessageId>, Option<String>)> = Vec::new();
        loop {
            let page = run
                .inbox
                .list_messages(&ListMessages { conversation_id: asked, visibility, order, limit: Some(limit), cursor: cursor.take() })
                .map_err(|e| fail(format!("page {pages}: {e}")))?;
            prop_assert!(page.messages.len() <= limit);
            prop_assert_eq!(page.conversation_id, run.inbox.root_of(asked));
            got.extend(page.messages.iter().map(|m| m.id));
            seen.push((page.messages.iter().map(|m| m.id).collect(), page.prev_cursor.clone()));
            let Some(next) = page.next_cursor else { break };
            cursor = Some(next);
            pages += 1;
            prop_assert!(pages <= want.len(), "paging does not end");
            if let Some(ops) = between.get(pages - 1) {
                for op in ops {
                    run.between(asked, op);
                }
            }
        }
        prop_assert_eq!(got, want, "pages of {:?}", asked);

        // Walking back: the first page has no previous one; every other page's `prev` gives
        // exactly the page before it, whatever was sent or merged since (it is pinned like
        // `next`), and that page's `next` leads forward to it again.
        prop_assert!(seen.first().is_none_or(|(_, prev)| prev.is_none()), "a first page has no prev");
        for i in 1..seen.len() {
            let Some(prev) = seen[i].1.clone() else {
                prop_assert!(seen[i].0.is_empty(), "page {} has messages and no prev", i);
                continue;
            };
            let back = run
                .inbox
                .list_messages(&ListMessages { conversation_id: asked, visibility, order, limit: Some(limit), cursor: Some(prev) })
                .map_err(|e| fail(format!("prev of page {i}: {e}")))?;
            let back_ids: Vec<MessageId> = back.messages.iter().map(|m| m.id).collect();
            prop_assert_eq!(&back_ids, &seen[i - 1].0, "prev of page {}", i);
            prop_assert_eq!(back.prev_cursor.is_some(), i > 1, "prev of page {} has a prev of its own", i);
            let forward = run
                .inbox
                .list_messages(&ListMessages { conversation_id: asked, visibility, order, limit: Some(limit), cursor: back.next_cursor })
                .map_err(|e| fail(format!("next of the prev of page {i}: {e}")))?;
            let forward_ids: Vec<MessageId> = forward.messages.iter().map(|m| m.id).collect();
            prop_assert_eq!(&forward_ids, &seen[i].0, "next of the prev of page {}", i);
        }

        // A bad cursor is a clear error.
        let list = |inbox: &Inbox, conversation_id, visibility, order, limit, cursor: Option<String>| {
            inbox
                .list_messages(&ListMessages { conversation_id, visibility, order, limit, cursor })
                .map(|p| p.next_cursor)
        };
        prop_assert_eq!(list(&run.inbox, asked, visibility, order, Some(0), None), Err(ListMessagesError::IllegalLimit(0)));
        prop_assert_eq!(list(&run.inbox, asked, visibility, order, Some(101), None), Err(ListMessagesError::IllegalLimit(101)));
        let nowhere = ConversationId::from_uuid(uuid(0x98, 0));
        prop_assert_eq!(list(&run.inbox, nowhere, visibility, order, None, None), Err(ListMessagesError::ConversationNotFound(nowhere)));
        let Some(cursor) = list(&run.inbox, asked, visibility, order, Some(1), None).map_err(|e| fail(e.to_string()))? else {
            return Ok(());
        };
        let bad = |e: CursorError| Err(ListMessagesError::Cursor(e));
        let mut bytes = cursor.clone().into_bytes();
        let at = 2 + usize::from(tamper) % (bytes.len() - 2); // past the version byte
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        prop_assert_eq!(list(&run.inbox, asked, visibility, order, Some(1), Some(tampered)), bad(CursorError::Tampered));
        for garbage in ["", "%%%%", &cursor[..cursor.len() - 4], &format!("{cursor}AAAA")] {
            prop_assert_eq!(list(&run.inbox, asked, visibility, order, Some(1), Some(garbage.to_owned())), bad(CursorError::Malformed));
        }
        let flipped = if descending { SortOrder::Asc } else { SortOrder::Desc };
        prop_assert_eq!(list(&run.inbox, asked, visibility, flipped, Some(1), Some(cursor.clone())), bad(CursorError::QueryMismatch));
        let other_visibility = if participant_only { VisibilityFilter::All } else { VisibilityFilter::ParticipantVisible };
        prop_assert_eq!(list(&run.inbox, asked, other_visibility, order, Some(1), Some(cursor.clone())), bad(CursorError::QueryMismatch));
        let root = run.inbox.root_of(asked);
        if let Some(other) = run.inbox.live_conversations().find(|c| *c != root) {
            prop_assert_eq!(list(&run.inbox, other, visibility, order, Some(1), Some(cursor.clone())), bad(CursorError::ForeignConversation));
        }
        // The same history on another site (another cursor key): the cursor is foreign there.
        let mut elsewhere = Inbox::new(InboxConfig::new(SiteId::new("site-b"), [8; 16]));
        for e in &run.log {
            elsewhere.apply(e);
        }
        prop_assert_eq!(list(&elsewhere, asked, visibility, order, Some(1), Some(cursor.clone())), bad(CursorError::Tampered));
        // And the untouched cursor still works.
        prop_assert!(list(&run.inbox, asked, visibility, order, Some(1), Some(cursor)).is_ok());
    }

    // 9. Visibility.
    #[test]
    fn inv09_visibility(steps in history(60), limit in 1usize..8) {
        check_visibility(&Run::of(&steps), limit)?;
    }

    // 10. Provenance.
    #[test]
    fn inv10_provenance(steps in history(60), which in any::<u8>()) {
        check_provenance(&Run::of(&steps), which)?;
    }
}
