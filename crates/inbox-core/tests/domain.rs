//! Given/when/then tests of the engine's domain, after the Wix Inbox pages in
//! `reference/wix-inbox/` (the example flows, the participant lifecycle, the message types).
//!
//! The harness is the cqrs-es/esrs shape without the framework: `given(events)` folds events
//! into a fresh [`Inbox`] (or `given_commands` runs commands), `when(command)` asks
//! [`Inbox::decide`] under a fixed [`Context`] and [`SequentialIds`], and `then_events` /
//! `then_rejected` compare. Time is a virtual clock that moves one second per decided
//! command, so every id, sequence and date below is a known constant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use inbox_core::catalog::FieldDataType;
use inbox_core::contacts::{
    ActivityType, AddressTag, Contact, ContactActivity, ContactAddress, ContactDataError,
    ContactDetails, ContactDraft, ContactEmail, ContactName, ContactPatch, ContactPhone,
    ContactQuery, ContactView, CreateContactError, DeleteContactError, EntryTag, ExtendedValue,
    LabelContactError, MergeContactsError, PostalAddress, UpdateContactError,
};
use inbox_core::message::{
    Badge, BasicItem, Button, ButtonAction, ButtonDraft, Channel, ChannelSet, Content, ContentBody,
    ContentDraft, ContentExtras, Form, FormField, Image, Minimal, System, Template, TemplateDraft,
};
use inbox_core::{
    AppId, Caller, Command, ContactId, Context, ConversationId, CursorError, DEFAULT_PAGE_LIMIT,
    Direction, Event, IdSource, Inbox, InboxConfig, ListMessages, ListMessagesError,
    MAX_PAGE_LIMIT, MemberId, Message, MessageDraft, MessageId, MessageRejection, Participant,
    ParticipantId, Rejection, RevertMergeError, SendAs, Sender, Sequence, SequentialIds, SiteId,
    SortOrder, Timestamp, Visibility, VisibilityFilter, VisitorId, WixUserId,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// The harness

/// 2023-11-14T22:13:20Z: where the virtual clock starts.
const T0: i64 = 1_700_000_000_000_000;
/// How far the clock moves after each decided command (one second).
const TICK: i64 = 1_000_000;
/// Ids the engine draws start above every fixed id used in these tests.
const GENERATED_IDS_FROM: u128 = 0x1_0000;

const APP: AppId = AppId(Uuid::from_u128(0xE001));
const OWNER: WixUserId = WixUserId(Uuid::from_u128(0xF001));

fn contact_id(n: u128) -> ContactId {
    ContactId(Uuid::from_u128(0xC000 + n))
}
fn visitor_id(n: u128) -> VisitorId {
    VisitorId(Uuid::from_u128(0xA000 + n))
}
fn member_id(n: u128) -> MemberId {
    MemberId(Uuid::from_u128(0xB000 + n))
}
fn conversation_id(n: u128) -> ConversationId {
    ConversationId(Uuid::from_u128(0xD000 + n))
}

/// An inbox and the world around it: the virtual clock, the caller and the id source.
struct Spec {
    inbox: Inbox,
    ids: SequentialIds,
    ctx: Context,
}

/// Given these events, folded into an empty inbox.
fn given(events: impl IntoIterator<Item = Event>) -> Spec {
    let mut inbox = Inbox::new(InboxConfig::new(SiteId::new("site-1"), [7; 16]));
    for event in events {
        inbox.apply_event(&event);
    }
    Spec {
        inbox,
        ids: SequentialIds::starting_at(GENERATED_IDS_FROM),
        ctx: Context::at(Timestamp::from_micros(T0)),
    }
}

/// The commands that define labels and extended fields, for a `given_commands`.
fn catalog(labels: &[&str], fields: &[(&str, FieldDataType)]) -> Vec<Command> {
    labels
        .iter()
        .map(|l| Command::FindOrCreateLabel {
            display_name: (*l).to_owned(),
        })
        .chain(
            fields
                .iter()
                .map(|(f, t)| Command::FindOrCreateExtendedField {
                    display_name: (*f).to_owned(),
                    data_type: *t,
                }),
        )
        .collect()
}

/// Given the events these commands cause (each must be accepted).
fn given_commands(commands: impl IntoIterator<Item = Command>) -> Spec {
    let mut spec = given([]);
    for command in commands {
        spec.run(command);
    }
    spec
}

/// The outcome of `when`, waiting to be compared.
#[must_use = "a `when` must be followed by `then_...`"]
struct Then<'a> {
    spec: &'a mut Spec,
    command: Command,
    result: Result<Vec<Event>, Rejection>,
}

impl Spec {
    /// The virtual clock.
    fn now(&self) -> Timestamp {
        self.ctx.now
    }

    fn tick(&mut self) {
        self.ctx.now = Timestamp::from_micros(self.ctx.now.as_micros() + TICK);
    }

    /// Who the following commands come from.
    fn as_caller(&mut self, caller: Caller) -> &mut Self {
        self.ctx.caller = caller;
        self
    }

    /// The id the engine will draw next (a new conversation's id, typically).
    fn next_id(&self) -> Uuid {
        self.ids.clone().next_id()
    }

    /// The sequence (and, here, the message id and merge stamp) the engine issues now.
    fn now_sequence(&self) -> Sequence {
        Sequence::next_after(self.inbox.last_sequence(), self.now()).unwrap()
    }

    /// Decides and applies a command that must be accepted; the clock then moves on.
    fn run(&mut self, command: Command) -> Vec<Event> {
        let events = self
            .inbox
            .decide(&command, &self.ctx, &mut self.ids)
            .unwrap_or_else(|r| panic!("given {command:?}: refused: {r}"));
        for event in &events {
            self.inbox.apply_event(event);
        }
        self.tick();
        events
    }

    /// When this command is decided.
    fn when(&mut self, command: Command) -> Then<'_> {
        let before = self.inbox.clone();
        let result = self.inbox.decide(&command, &self.ctx, &mut self.ids);
        assert_eq!(before, self.inbox, "decide changed the state");
        Then {
            spec: self,
            command,
            result,
        }
    }

    /// A message as the engine sends it now: the hybrid logical clock gives sequence, id and
    /// createdDate; everything optional is absent.
    fn message_now(
        &self,
        conversation_id: ConversationId,
        content: Content,
        sender: Sender,
        direction: Direction,
    ) -> Message {
        let sequence = self.now_sequence();
        Message {
            id: MessageId(u64::try_from(sequence.0).unwrap()),
            sequence,
            created_date: Timestamp::from_micros(sequence.0),
            conversation_id,
            content,
            sender,
            badges: Box::new([]),
            target_channels: ChannelSet::EMPTY,
            source_channel: None,
            app_id: None,
            visibility: Visibility::BusinessAndParticipant,
            direction,
            silent: false,
        }
    }

    /// Every message of the live conversation `id` stands for, oldest first.
    fn messages(&self, id: ConversationId) -> Vec<Message> {
        self.inbox.messages_of(id).cloned().collect()
    }

    /// Get Or Create Conversation for an id that already has one: no event, and the answer.
    fn existing_conversation_of(&mut self, participant: ParticipantId) -> ConversationId {
        self.when(Command::GetOrCreateConversation { participant })
            .then_nothing();
        self.inbox
            .live_conversation_of(participant)
            .unwrap_or_else(|| panic!("{participant:?} has no conversation"))
    }
}

impl Then<'_> {
    /// Then exactly these events; they are applied and the clock moves on.
    fn then_events(self, expected: impl IntoIterator<Item = Event>) {
        let expected: Vec<Event> = expected.into_iter().collect();
        assert_eq!(self.result, Ok(expected), "when {:?}", self.command);
        for event in self.result.iter().flatten() {
            self.spec.inbox.apply_event(event);
        }
        self.spec.tick();
    }

    /// Then the command is accepted and changes nothing.
    fn then_nothing(self) {
        self.then_events([])
    }

    /// Then the command is accepted; the events are applied and returned.
    fn then_accepted(self) -> Vec<Event> {
        let events = self
            .result
            .unwrap_or_else(|r| panic!("when {:?}: refused: {r}", self.command));
        for event in &events {
            self.spec.inbox.apply_event(event);
        }
        self.spec.tick();
        events
    }

    /// Then the command is refused with this reason (and nothing changed: `when` checked).
    fn then_rejected(self, expected: impl Into<Rejection>) {
        assert_eq!(self.result, Err(expected.into()), "when {:?}", self.command);
    }
}

// ---------------------------------------------------------------------------------------
// Commands, drafts and expected values

fn get_or_create(participant: ParticipantId) -> Command {
    Command::GetOrCreateConversation { participant }
}

fn send(conversation_id: ConversationId, message: MessageDraft) -> Command {
    send_as(conversation_id, message, SendAs::Caller)
}

fn send_as(conversation_id: ConversationId, message: MessageDraft, send_as: SendAs) -> Command {
    Command::SendMessage {
        conversation_id,
        message,
        send_as,
    }
}

fn text(text: &str, direction: Direction) -> MessageDraft {
    MessageDraft::text(text, direction)
}

fn name(first: &str, last: Option<&str>) -> ContactName {
    ContactName {
        first: Some(first.to_owned()),
        last: last.map(str::to_owned),
    }
}

fn email(address: &str) -> ContactEmail {
    ContactEmail {
        email: address.to_owned(),
        tag: EntryTag::Untagged,
        primary: false,
    }
}

fn primary(entry: ContactEmail) -> ContactEmail {
    ContactEmail {
        primary: true,
        ..entry
    }
}

fn draft(first: &str, address: &str) -> ContactDraft {
    ContactDraft {
        name: name(first, None),
        emails: vec![email(address)],
        ..ContactDraft::default()
    }
}

fn create_contact(id: ContactId, first: &str, address: &str) -> Command {
    Command::CreateContact {
        contact_id: id,
        draft: draft(first, address),
    }
}

/// A contact as Create Contact makes it at `now`: revision 1, the first email primary.
fn created(id: ContactId, name: ContactName, emails: &[&str], now: Timestamp) -> Contact {
    let mut emails: Vec<ContactEmail> = emails.iter().map(|e| email(e)).collect();
    if let Some(first) = emails.first_mut() {
        first.primary = true;
    }
    Contact {
        name,
        emails,
        ..Contact::new(id, now)
    }
}

/// The contacts of a query with `fields: ["id"]`: each one's id and revision, checking that
/// nothing else was returned.
fn ids_only(views: &[ContactView]) -> Vec<(ContactId, u64)> {
    for v in views {
        assert_eq!(
            (
                &v.created_date,
                &v.updated_date,
                &v.name,
                &v.emails,
                &v.phones,
                &v.primary_info,
                &v.details,
                &v.source,
                &v.last_activity,
                v.parts.as_deref()
            ),
            (
                &None,
                &None,
                &None,
                &None,
                &None,
                &None,
                &None,
                &None,
                &None,
                Some(&[][..])
            ),
            "more than the id and revision of {:?}",
            v.id
        );
    }
    views.iter().map(|v| (v.id, v.revision)).collect()
}

fn facebook_badge() -> Badge {
    Badge {
        text: "Facebook".into(),
        icon_url: Some(
            "https://static.wixstatic.com/media/aebe5b6fd55f471a936c72ff2c8289d7.png/v1/fill/w_43,h_43,al_c,q_85,usm_0.66_1.00_0.01/aebe5b6fd55f471a936c72ff2c8289d7.webp"
                .into(),
        ),
        badge_visibility: None,
    }
}

fn started(conversation_id: ConversationId, participant: ParticipantId) -> Event {
    Event::ConversationStarted {
        conversation_id,
        participant,
    }
}

fn sent(message: &Message) -> Event {
    Event::MessageSent {
        message: message.clone(),
    }
}

fn list(conversation_id: ConversationId) -> ListMessages {
    ListMessages::first_page(conversation_id)
}

fn ids_of(messages: &[&Message]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

/// An email with a control character in it (a NUL, an escape, a line feed inside) is no
/// address: refused, and nothing is created.
#[test]
fn given_no_contacts_when_one_is_created_with_a_control_character_in_its_email_then_it_is_refused()
{
    for bad in [
        "ann\u{0}@example.com",
        "ann@exa\u{1b}mple.com",
        "ann@example.com\u{7f}",
    ] {
        given([])
            .when(create_contact(contact_id(1), "Ann", bad))
            .then_rejected(CreateContactError::Data(ContactDataError::InvalidEmail(
                bad.to_owned(),
            )));
    }
}

// ---------------------------------------------------------------------------------------
// 1. Example flow: "Sync messages from an external service"

#[test]
fn sync_messages_from_an_external_service() {
    let jo = contact_id(1);
    let mut spec = given([]);
    spec.as_caller(Caller::App(APP));

    // A contact exists with the email the external service will report.
    let jo_contact = created(
        jo,
        name("Jo", Some("Doe")),
        &["Jo.Doe@Example.com"],
        spec.now(),
    );
    spec.when(Command::CreateContact {
        contact_id: jo,
        draft: ContactDraft {
            name: name("Jo", Some("Doe")),
            emails: vec![email("Jo.Doe@Example.com")],
            ..ContactDraft::default()
        },
    })
    .then_events([Event::ContactCreated {
        contact: jo_contact,
    }]);

    // Step 2: Query Contacts by the email, `fields: ["id"]`: only id and revision come
    // back, and the email matches whatever its case.
    let found = spec
        .inbox
        .contacts()
        .query(&ContactQuery::by_email("jo.doe@EXAMPLE.com"))
        .unwrap();
    assert_eq!(ids_only(&found.contacts), vec![(jo, 1)]);
    assert_eq!(found.total, 1);

    // "An email address can belong to more than one contact": refused by default, naming
    // the contact that has it...
    let twin = contact_id(2);
    spec.when(create_contact(twin, "Joe", "JO.DOE@example.com"))
        .then_rejected(CreateContactError::Data(ContactDataError::DuplicateEmail {
            email: "JO.DOE@example.com".to_owned(),
            existing: jo,
        }));
    // ...and accepted with allowDuplicates.
    let twin_contact = created(twin, name("Joe", None), &["JO.DOE@example.com"], spec.now());
    spec.when(Command::CreateContact {
        contact_id: twin,
        draft: ContactDraft {
            allow_duplicates: true,
            ..draft("Joe", "JO.DOE@example.com")
        },
    })
    .then_events([Event::ContactCreated {
        contact: twin_contact,
    }]);
    let found = spec
        .inbox
        .contacts()
        .query(&ContactQuery::by_email("Jo.Doe@example.COM"))
        .unwrap();
    // Default order: createdDate descending.
    assert_eq!(ids_only(&found.contacts), vec![(twin, 1), (jo, 1)]);

    // Step 3: Get Or Create Conversation with participantId.contactId.
    let conversation = ConversationId(spec.next_id());
    spec.when(get_or_create(ParticipantId::Contact(jo)))
        .then_events([started(conversation, ParticipantId::Contact(jo))]);
    assert_eq!(
        spec.existing_conversation_of(ParticipantId::Contact(jo)),
        conversation
    );

    // Step 4: Send Message, BASIC, visibility BUSINESS, a Facebook badge, as if the contact
    // sent it.
    let incoming = "Do you have a table for two tonight?";
    let synced = Message {
        badges: Box::new([facebook_badge()]),
        app_id: Some(APP),
        visibility: Visibility::Business,
        ..spec.message_now(
            conversation,
            Content::text(incoming),
            Sender::App(APP),
            Direction::ParticipantToBusiness,
        )
    };
    spec.when(send(
        conversation,
        MessageDraft {
            content: ContentDraft {
                basic: Some(vec![BasicItem::Text(incoming.into())]),
                ..ContentDraft::default()
            },
            badges: vec![facebook_badge()],
            visibility: Some(Visibility::Business),
            direction: Some(Direction::ParticipantToBusiness),
            ..MessageDraft::default()
        },
    ))
    .then_events([sent(&synced)]);

    // "You can also send messages sent on behalf of the business": BUSINESS_TO_PARTICIPANT,
    // here visible to both sides.
    let answer = Message {
        badges: Box::new([facebook_badge()]),
        app_id: Some(APP),
        ..spec.message_now(
            conversation,
            Content::text("Yes, 8pm works."),
            Sender::App(APP),
            Direction::BusinessToParticipant,
        )
    };
    spec.when(send(
        conversation,
        MessageDraft {
            badges: vec![facebook_badge()],
            visibility: Some(Visibility::BusinessAndParticipant),
            ..text("Yes, 8pm works.", Direction::BusinessToParticipant)
        },
    ))
    .then_events([sent(&answer)]);

    // The business sees both, newest first; the participant's chat widget only the answer.
    let page = spec.inbox.list_messages(&list(conversation)).unwrap();
    assert_eq!(page.messages, vec![&answer, &synced]);
    assert_eq!(page.next_cursor, None);
    assert_eq!(page.conversation_id, conversation);
    let widget = spec
        .inbox
        .list_messages(&ListMessages {
            visibility: VisibilityFilter::ParticipantVisible,
            ..list(conversation)
        })
        .unwrap();
    assert_eq!(widget.messages, vec![&answer]);
    assert_eq!(widget.next_cursor, None);
}

// ---------------------------------------------------------------------------------------
// 2. Example flow: "Add contact activities from another service"

#[test]
fn add_contact_activities_from_another_service() {
    let jo = contact_id(1);
    let mut spec = given_commands([create_contact(jo, "Jo", "jo@example.com")]);
    spec.as_caller(Caller::App(APP));

    let found = spec
        .inbox
        .contacts()
        .query(&ContactQuery::by_email("JO@example.com"))
        .unwrap();
    assert_eq!(ids_only(&found.contacts), vec![(jo, 1)]);

    let conversation = ConversationId(spec.next_id());
    spec.when(get_or_create(ParticipantId::Contact(found.contacts[0].id)))
        .then_events([started(conversation, ParticipantId::Contact(jo))]);

    let icon = "https://static.wixstatic.com/media/bd4a2aff643141cb8cbacde1a4007a2f.png/v1/fill/w_43,h_50,al_c,lg_1,q_85/bd4a2aff643141cb8cbacde1a4007a2f.webp";
    let activity = Minimal {
        text: "Booked Spa Treatment".into(),
        icon_url: Some(icon.into()),
        url: None,
    };
    let expected = Message {
        app_id: Some(APP),
        visibility: Visibility::Business,
        ..spec.message_now(
            conversation,
            Content::new(ContentBody::Minimal(Box::new(activity.clone()))),
            Sender::App(APP),
            Direction::ParticipantToBusiness,
        )
    };
    spec.when(send(
        conversation,
        MessageDraft {
            content: ContentDraft {
                minimal: Some(activity),
                ..ContentDraft::default()
            },
            visibility: Some(Visibility::Business),
            direction: Some(Direction::ParticipantToBusiness),
            ..MessageDraft::default()
        },
    ))
    .then_events([sent(&expected)]);

    let page = spec.inbox.list_messages(&list(conversation)).unwrap();
    assert_eq!(page.messages, vec![&expected]);
    let widget = spec
        .inbox
        .list_messages(&ListMessages {
            visibility: VisibilityFilter::ParticipantVisible,
            ..list(conversation)
        })
        .unwrap();
    assert!(
        widget.messages.is_empty(),
        "a BUSINESS activity leaked to the participant"
    );
}

// ---------------------------------------------------------------------------------------
// 3. The participant lifecycle (conversations-and-participant-ids)

#[test]
fn visitor_becomes_contact_then_member_and_every_id_finds_one_conversation() {
    let visitor = visitor_id(1);
    let jo = contact_id(1);
    let member = member_id(1);
    let mut spec = given([]);

    // An anonymous visitor opens the chat widget and writes; the business answers.
    let visitor_conversation = ConversationId(spec.next_id());
    spec.when(get_or_create(ParticipantId::Visitor(visitor)))
        .then_events([started(
            visitor_conversation,
            ParticipantId::Visitor(visitor),
        )]);
    let hello = spec.message_now(
        visitor_conversation,
        Content::text("Hello? Are you open on Sunday?"),
        Sender::Visitor(visitor),
        Direction::ParticipantToBusiness,
    );
    spec.when(send_as(
        visitor_conversation,
        text(
            "Hello? Are you open on Sunday?",
            Direction::ParticipantToBusiness,
        ),
        SendAs::Participant,
    ))
    .then_events([sent(&hello)]);
    spec.as_caller(Caller::WixUser(OWNER));
    let reply = spec.message_now(
        visitor_conversation,
        Content::text("We are, 10 to 4."),
        Sender::WixUser(OWNER),
        Direction::BusinessToParticipant,
    );
    spec.when(send_as(
        visitor_conversation,
        text("We are, 10 to 4.", Direction::BusinessToParticipant),
        SendAs::BusinessUser,
    ))
    .then_events([sent(&reply)]);

    // The visitor submits a contact form: a NEW conversation is created for the contact and
    // the visitor's is merged into it.
    spec.run(create_contact(jo, "Jo", "jo@example.com"));
    let contact_conversation = ConversationId(spec.next_id());
    let stamp = spec.now_sequence();
    spec.when(Command::IdentifyVisitor {
        visitor,
        contact: jo,
    })
    .then_events([
        Event::VisitorIdentified {
            visitor,
            contact: jo,
        },
        started(contact_conversation, ParticipantId::Contact(jo)),
        Event::ConversationsMerged {
            sources: vec![visitor_conversation],
            target: contact_conversation,
            stamp,
        },
    ]);
    assert_eq!(
        spec.messages(contact_conversation),
        vec![hello.clone(), reply.clone()]
    );
    assert_eq!(spec.inbox.contact_of_visitor(visitor), Some(jo));

    // The contact writes again, now as the contact.
    let booked = spec.message_now(
        contact_conversation,
        Content::text("Booked for Sunday 11am."),
        Sender::Contact(jo),
        Direction::ParticipantToBusiness,
    );
    spec.when(send_as(
        contact_conversation,
        text("Booked for Sunday 11am.", Direction::ParticipantToBusiness),
        SendAs::Participant,
    ))
    .then_events([sent(&booked)]);

    // The contact registers as a site member: again a new conversation, and a merge.
    let member_conversation = ConversationId(spec.next_id());
    let stamp = spec.now_sequence();
    spec.when(Command::RegisterMember {
        member,
        contact: jo,
        login_email: Some("jo@example.com".to_owned()),
    })
    .then_events([
        Event::MemberRegistered {
            member,
            contact: jo,
            login_email: Some("jo@example.com".to_owned()),
            stamp,
        },
        started(member_conversation, ParticipantId::Member(member)),
        Event::ConversationsMerged {
            sources: vec![contact_conversation],
            target: member_conversation,
            stamp,
        },
    ]);

    // Get Or Create with the visitor, contact or member id: the member's conversation.
    for id in [
        ParticipantId::Visitor(visitor),
        ParticipantId::Contact(jo),
        ParticipantId::Member(member),
    ] {
        assert_eq!(
            spec.existing_conversation_of(id),
            member_conversation,
            "get or create with {id:?}"
        );
    }

    // Every message kept, in chronological order, each with the conversation it was sent to.
    let all = spec.messages(member_conversation);
    assert_eq!(all, vec![hello.clone(), reply.clone(), booked.clone()]);
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert!(
        all.windows(2)
            .all(|w| w[0].created_date <= w[1].created_date)
    );

    // Get Conversation with an old id answers with the survivor and says it redirected.
    let member_participant = Some(Participant {
        id: ParticipantId::Member(member),
        contact_id: Some(jo),
    });
    for old in [visitor_conversation, contact_conversation] {
        let view = spec.inbox.conversation(old).unwrap();
        assert_eq!(view.id, member_conversation);
        assert_eq!(view.redirected_from, Some(old));
        assert_eq!(view.participant, member_participant);
    }
    let view = spec.inbox.conversation(member_conversation).unwrap();
    assert_eq!(view.redirected_from, None);
    assert_eq!(view.participant, member_participant);

    // A message sent to the visitor's old conversation id lands in the member's, from the
    // member, and keeps its provenance.
    let late = spec.message_now(
        visitor_conversation,
        Content::text("See you Sunday!"),
        Sender::Member {
            member,
            contact: Some(jo),
        },
        Direction::ParticipantToBusiness,
    );
    spec.when(send_as(
        visitor_conversation,
        text("See you Sunday!", Direction::ParticipantToBusiness),
        SendAs::Participant,
    ))
    .then_events([sent(&late)]);
    let page = spec
        .inbox
        .list_messages(&list(visitor_conversation))
        .unwrap();
    assert_eq!(page.conversation_id, member_conversation);
    assert_eq!(page.messages, vec![&late, &booked, &reply, &hello]);
    assert_eq!(
        spec.inbox.live_conversations().collect::<Vec<_>>(),
        vec![member_conversation]
    );
}

#[test]
fn merged_conversations_interleave_chronologically() {
    let visitor = visitor_id(1);
    let jo = contact_id(1);
    let contact_conversation = conversation_id(1);
    let visitor_conversation = conversation_id(2);
    // The app already keeps an activity log in the contact's conversation while the same
    // person, not yet recognised, chats as an anonymous visitor.
    let mut spec = given([started(contact_conversation, ParticipantId::Contact(jo))]);
    spec.run(create_contact(jo, "Jo", "jo@example.com"));
    spec.inbox.apply_event(&started(
        visitor_conversation,
        ParticipantId::Visitor(visitor),
    ));

    let mut expected = Vec::new();
    for (i, (conversation, send_as)) in [
        (visitor_conversation, SendAs::Participant),
        (contact_conversation, SendAs::Caller),
        (visitor_conversation, SendAs::Participant),
        (contact_conversation, SendAs::Caller),
    ]
    .into_iter()
    .enumerate()
    {
        let events = spec.run(Command::SendMessage {
            conversation_id: conversation,
            message: text(&format!("message {i}"), Direction::ParticipantToBusiness),
            send_as,
        });
        let [Event::MessageSent { message }] = events.as_slice() else {
            panic!("expected one MessageSent, got {events:?}");
        };
        expected.push(message.clone());
    }

    // The contact already has a conversation: the visitor's merges into it, no new one.
    let stamp = spec.now_sequence();
    spec.when(Command::IdentifyVisitor {
        visitor,
        contact: jo,
    })
    .then_events([
        Event::VisitorIdentified {
            visitor,
            contact: jo,
        },
        Event::ConversationsMerged {
            sources: vec![visitor_conversation],
            target: contact_conversation,
            stamp,
        },
    ]);
    assert_eq!(spec.messages(contact_conversation), expected);
    let provenance: Vec<ConversationId> = spec
        .messages(contact_conversation)
        .iter()
        .map(|m| m.conversation_id)
        .collect();
    assert_eq!(
        provenance,
        [
            visitor_conversation,
            contact_conversation,
            visitor_conversation,
            contact_conversation
        ]
    );
}

#[test]
fn visitor_identified_as_a_contact_that_is_already_a_member_joins_the_member_conversation() {
    let visitor = visitor_id(1);
    let jo = contact_id(1);
    let member = member_id(1);
    let mut spec = given_commands([create_contact(jo, "Jo", "jo@example.com")]);
    // A contact with no conversation registers: nothing to merge, no conversation yet.
    let stamp = spec.now_sequence();
    spec.when(Command::RegisterMember {
        member,
        contact: jo,
        login_email: None,
    })
    .then_events([Event::MemberRegistered {
        member,
        contact: jo,
        login_email: None,
        stamp,
    }]);

    let visitor_conversation = ConversationId(spec.next_id());
    spec.run(get_or_create(ParticipantId::Visitor(visitor)));
    spec.run(send_as(
        visitor_conversation,
        text("Hi", Direction::ParticipantToBusiness),
        SendAs::Participant,
    ));

    // The visitor skips the contact step's conversation: straight to the member's.
    let member_conversation = ConversationId(spec.next_id());
    let stamp = spec.now_sequence();
    spec.when(Command::IdentifyVisitor {
        visitor,
        contact: jo,
    })
    .then_events([
        Event::VisitorIdentified {
            visitor,
            contact: jo,
        },
        started(member_conversation, ParticipantId::Member(member)),
        Event::ConversationsMerged {
            sources: vec![visitor_conversation],
            target: member_conversation,
            stamp,
        },
    ]);
    for id in [
        ParticipantId::Visitor(visitor),
        ParticipantId::Contact(jo),
        ParticipantId::Member(member),
    ] {
        assert_eq!(spec.existing_conversation_of(id), member_conversation);
    }
    assert_eq!(spec.messages(member_conversation).len(), 1);
}

/// Three contacts of one person: Jo (the target, with a conversation), Joanna (with a
/// conversation) and Josephine (without).
fn three_contacts_of_one_person() -> (Spec, [ContactId; 3], [ConversationId; 2]) {
    let [jo, joanna, josephine] = [contact_id(1), contact_id(2), contact_id(3)];
    let mut spec = given_commands([
        create_contact(jo, "Jo", "jo@example.com"),
        Command::CreateContact {
            contact_id: joanna,
            draft: ContactDraft {
                name: name("Joanna", Some("Doe")),
                emails: vec![email("joanna@example.com")],
                phones: vec![ContactPhone {
                    phone: "+1 555 0100".to_owned(),
                    tag: EntryTag::Mobile,
                    primary: false,
                }],
                ..ContactDraft::default()
            },
        },
        Command::CreateContact {
            contact_id: josephine,
            draft: ContactDraft {
                name: name("Josephine", Some("Smith")),
                emails: vec![email("jojo@example.com")],
                ..ContactDraft::default()
            },
        },
    ]);
    spec.as_caller(Caller::App(APP));
    let jo_conversation = ConversationId(spec.next_id());
    spec.run(get_or_create(ParticipantId::Contact(jo)));
    let joanna_conversation = ConversationId(spec.next_id());
    spec.run(get_or_create(ParticipantId::Contact(joanna)));
    spec.run(send(
        joanna_conversation,
        text("Joanna booked a massage", Direction::ParticipantToBusiness),
    ));
    spec.run(send(
        jo_conversation,
        text("Jo asked about prices", Direction::ParticipantToBusiness),
    ));
    spec.run(send(
        joanna_conversation,
        text("Joanna paid", Direction::ParticipantToBusiness),
    ));
    (
        spec,
        [jo, joanna, josephine],
        [jo_conversation, joanna_conversation],
    )
}

#[test]
fn merging_contacts_merges_their_conversations_and_the_first_source_wins() {
    let (mut spec, [jo, joanna, josephine], [jo_conversation, joanna_conversation]) =
        three_contacts_of_one_person();
    let jo_before = spec.inbox.contacts().get(jo).unwrap().clone();

    // Preview Merge changes nothing, and the first source takes precedence for the name.
    let before = spec.inbox.clone();
    let preview = spec
        .inbox
        .preview_contact_merge(jo, None, &[joanna, josephine], spec.now())
        .unwrap();
    assert_eq!(preview.name, name("Joanna", Some("Doe")));
    let preview_reversed = spec
        .inbox
        .preview_contact_merge(jo, None, &[josephine, joanna], spec.now())
        .unwrap();
    assert_eq!(preview_reversed.name, name("Josephine", Some("Smith")));
    assert_eq!(spec.inbox, before);

    // A stale revision is a conflict.
    spec.when(Command::MergeContacts {
        target: jo,
        expected_revision: 0,
        sources: vec![joanna, josephine],
    })
    .then_rejected(MergeContactsError::RevisionConflict {
        expected: 0,
        actual: 1,
    });

    // With the current revision: the target takes the merged data, revision + 1, and the
    // sources' conversations merge into the target's.
    let merged = Contact {
        revision: 2,
        updated_date: spec.now(),
        name: name("Joanna", Some("Doe")),
        emails: vec![
            primary(email("jo@example.com")),
            email("joanna@example.com"),
            email("jojo@example.com"),
        ],
        phones: vec![ContactPhone {
            phone: "+1 555 0100".to_owned(),
            tag: EntryTag::Mobile,
            primary: true,
        }],
        last_activity: ContactActivity {
            at: spec.now(),
            kind: ActivityType::ContactMerged,
        },
        ..jo_before
    };
    assert_eq!(preview, merged);
    let stamp = spec.now_sequence();
    spec.when(Command::MergeContacts {
        target: jo,
        expected_revision: 1,
        sources: vec![joanna, josephine],
    })
    .then_events([
        Event::ContactsMerged {
            target: merged.clone(),
            sources: vec![joanna, josephine],
        },
        Event::ConversationsMerged {
            sources: vec![joanna_conversation],
            target: jo_conversation,
            stamp,
        },
    ]);

    assert_eq!(spec.inbox.contacts().get(jo), Some(&merged));
    assert_eq!(spec.inbox.contacts().get(joanna), None);
    assert_eq!(spec.inbox.contacts().merged_into(joanna), Some(jo));
    let found = spec
        .inbox
        .contacts()
        .query(&ContactQuery::by_email("JOANNA@example.com"))
        .unwrap();
    assert_eq!(ids_only(&found.contacts), vec![(jo, 2)]);

    // Any id the person had finds the target's conversation; the old one redirects.
    for id in [jo, joanna, josephine] {
        assert_eq!(
            spec.existing_conversation_of(ParticipantId::Contact(id)),
            jo_conversation
        );
    }
    let view = spec.inbox.conversation(joanna_conversation).unwrap();
    assert_eq!(view.id, jo_conversation);
    assert_eq!(view.redirected_from, Some(joanna_conversation));
    let texts: Vec<Content> = spec
        .messages(jo_conversation)
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(
        texts,
        [
            Content::text("Joanna booked a massage"),
            Content::text("Jo asked about prices"),
            Content::text("Joanna paid"),
        ]
    );

    // The caller's revision is now stale.
    let bob = contact_id(9);
    spec.run(create_contact(bob, "Bob", "bob@example.com"));
    spec.when(Command::MergeContacts {
        target: jo,
        expected_revision: 1,
        sources: vec![bob],
    })
    .then_rejected(MergeContactsError::RevisionConflict {
        expected: 1,
        actual: 2,
    });
}

#[test]
fn merging_into_a_contact_without_a_conversation_creates_one() {
    let (mut spec, [_, joanna, josephine], [_, joanna_conversation]) =
        three_contacts_of_one_person();
    let josephine_conversation = ConversationId(spec.next_id());
    let stamp = spec.now_sequence();
    let events = spec
        .when(Command::MergeContacts {
            target: josephine,
            expected_revision: 1,
            sources: vec![joanna],
        })
        .then_accepted();
    assert_eq!(
        events.get(1..),
        Some(
            &[
                started(josephine_conversation, ParticipantId::Contact(josephine)),
                Event::ConversationsMerged {
                    sources: vec![joanna_conversation],
                    target: josephine_conversation,
                    stamp,
                },
            ][..]
        )
    );
    assert_eq!(
        spec.existing_conversation_of(ParticipantId::Contact(joanna)),
        josephine_conversation
    );
}

#[test]
fn a_contact_merge_takes_one_to_five_sources() {
    let target = contact_id(0);
    let sources: Vec<ContactId> = (1..=6).map(contact_id).collect();
    let mut spec = given_commands(
        std::iter::once(target)
            .chain(sources.iter().copied())
            .enumerate()
            .map(|(i, id)| create_contact(id, &format!("C{i}"), &format!("c{i}@example.com"))),
    );
    let merge = |sources: &[ContactId]| Command::MergeContacts {
        target,
        expected_revision: 1,
        sources: sources.to_vec(),
    };
    spec.when(merge(&[]))
        .then_rejected(MergeContactsError::SourceCount(0));
    spec.when(merge(&sources))
        .then_rejected(MergeContactsError::SourceCount(6));
    spec.when(merge(&[target]))
        .then_rejected(MergeContactsError::SourceIsTarget(target));
    spec.when(merge(&sources[..5])).then_accepted();
    assert_eq!(spec.inbox.contacts().get(target).unwrap().revision, 2);
    assert_eq!(spec.inbox.contacts().len(), 2);
}

#[test]
fn a_member_cannot_be_merged_away() {
    let [jo, joanna] = [contact_id(1), contact_id(2)];
    let mut spec = given_commands([
        create_contact(jo, "Jo", "jo@example.com"),
        create_contact(joanna, "Joanna", "joanna@example.com"),
        Command::RegisterMember {
            member: member_id(1),
            contact: joanna,
            login_email: None,
        },
    ]);
    spec.when(Command::MergeContacts {
        target: jo,
        expected_revision: 1,
        sources: vec![joanna],
    })
    .then_rejected(MergeContactsError::SourceIsMember(joanna));
}

// ---------------------------------------------------------------------------------------
// 4. Every rule a sent message must keep (messages-and-message-types, WIRE-FORMAT)

const CONVERSATION: u128 = 1;

fn a_conversation() -> Spec {
    let mut spec = given([started(
        conversation_id(CONVERSATION),
        ParticipantId::Visitor(visitor_id(1)),
    )]);
    spec.as_caller(Caller::App(APP));
    spec
}

/// A valid message to vary one field of.
fn valid() -> MessageDraft {
    text(
        "Thanks for booking your spa day with us!",
        Direction::BusinessToParticipant,
    )
}

fn with_content(content: ContentDraft) -> MessageDraft {
    MessageDraft { content, ..valid() }
}

fn template(lines: usize, buttons: Vec<ButtonDraft>) -> MessageDraft {
    with_content(ContentDraft {
        template: Some(TemplateDraft {
            title: Some("JoJo, you're getting a spa day!".to_owned()),
            text_lines: (0..lines).map(|i| format!("line {i}")).collect(),
            buttons,
            ..TemplateDraft::default()
        }),
        ..ContentDraft::default()
    })
}

fn launch(label: &str) -> ButtonDraft {
    ButtonDraft {
        label: label.to_owned(),
        launch_url: Some("https://example.com/booking".to_owned()),
        interaction_id: None,
    }
}

fn postback(label: &str, interaction_id: &str) -> ButtonDraft {
    ButtonDraft {
        label: label.to_owned(),
        launch_url: None,
        interaction_id: Some(interaction_id.to_owned()),
    }
}

fn form(fields: usize, media: usize) -> MessageDraft {
    MessageDraft {
        visibility: Some(Visibility::Business),
        direction: Some(Direction::ParticipantToBusiness),
        ..with_content(ContentDraft {
            form: Some(Form {
                title: Some("New Spa Appointment".into()),
                description: None,
                fields: (0..fields)
                    .map(|i| FormField {
                        name: format!("Field {i}").into(),
                        value: "value".into(),
                    })
                    .collect(),
                media: (0..media)
                    .map(|i| {
                        BasicItem::Image(Box::new(Image {
                            url: format!("https://example.com/{i}.jpg").into(),
                            ..Image::default()
                        }))
                    })
                    .collect(),
            }),
            ..ContentDraft::default()
        })
    }
}

fn basic_items(items: Vec<BasicItem>) -> ContentDraft {
    ContentDraft {
        basic: Some(items),
        ..ContentDraft::default()
    }
}

fn minimal_content() -> Minimal {
    Minimal {
        text: "Booked a spa appointment".into(),
        ..Minimal::default()
    }
}

/// `check` in the rust-analyzer style: this draft, sent into a conversation, is refused so.
#[track_caller]
fn check_rejected(draft: MessageDraft, expected: MessageRejection) {
    a_conversation()
        .when(send(conversation_id(CONVERSATION), draft))
        .then_rejected(expected);
}

/// ...and this one is accepted.
#[track_caller]
fn check_accepted(draft: MessageDraft) -> Message {
    let mut spec = a_conversation();
    let events = spec
        .when(send(conversation_id(CONVERSATION), draft))
        .then_accepted();
    match events.as_slice() {
        [Event::MessageSent { message }] => message.clone(),
        other => panic!("expected one MessageSent, got {other:?}"),
    }
}

#[test]
fn a_message_needs_content() {
    check_rejected(
        with_content(ContentDraft::default()),
        MessageRejection::NoContent,
    );
    // A preview or title alone is not content.
    check_rejected(
        with_content(ContentDraft {
            preview_text: Some("Hi".to_owned()),
            title: Some("Hi".to_owned()),
            ..ContentDraft::default()
        }),
        MessageRejection::NoContent,
    );
}

#[test]
fn a_message_has_one_content_type() {
    check_rejected(
        with_content(ContentDraft {
            minimal: Some(minimal_content()),
            ..basic_items(vec![BasicItem::Text("Hi".into())])
        }),
        MessageRejection::SeveralContentTypes(vec!["basic", "minimal"]),
    );
    check_rejected(
        with_content(ContentDraft {
            template: Some(TemplateDraft::default()),
            system: Some(System::default()),
            ..ContentDraft::default()
        }),
        MessageRejection::SeveralContentTypes(vec!["template", "system"]),
    );
}

#[test]
fn apps_cannot_send_system_messages() {
    check_rejected(
        with_content(ContentDraft {
            system: Some(System {
                text: "Payment received".into(),
                ..System::default()
            }),
            ..ContentDraft::default()
        }),
        MessageRejection::SystemNotSendable,
    );
}

#[test]
fn a_message_has_at_most_one_badge() {
    check_rejected(
        MessageDraft {
            badges: vec![facebook_badge(), facebook_badge()],
            ..valid()
        },
        MessageRejection::TooManyBadges(2),
    );
    let one = check_accepted(MessageDraft {
        badges: vec![facebook_badge()],
        ..valid()
    });
    assert_eq!(&*one.badges, &[facebook_badge()]);
}

#[test]
fn a_message_targets_at_most_one_channel() {
    check_rejected(
        MessageDraft {
            target_channels: vec![Channel::Email, Channel::Sms],
            ..valid()
        },
        MessageRejection::TooManyTargetChannels(2),
    );
    let one = check_accepted(MessageDraft {
        target_channels: vec![Channel::Sms],
        ..valid()
    });
    assert_eq!(
        one.target_channels.iter().collect::<Vec<_>>(),
        [Channel::Sms]
    );
}

#[test]
fn unknown_channel_is_no_target() {
    check_rejected(
        MessageDraft {
            target_channels: vec![Channel::Unknown],
            ..valid()
        },
        MessageRejection::UnknownTargetChannel,
    );
}

#[test]
fn preview_text_is_at_most_256_characters() {
    let preview = |text: String| MessageDraft {
        content: ContentDraft {
            preview_text: Some(text),
            ..valid().content
        },
        ..valid()
    };
    check_rejected(
        preview("x".repeat(257)),
        MessageRejection::PreviewTextTooLong(257),
    );
    let at_limit = check_accepted(preview("x".repeat(256)));
    assert_eq!(at_limit.content.preview_text(), Some(&*"x".repeat(256)));
    // Characters, not bytes: 256 two-byte characters are fine.
    check_accepted(preview("é".repeat(256)));
    check_rejected(
        preview("é".repeat(257)),
        MessageRejection::PreviewTextTooLong(257),
    );
}

#[test]
fn a_basic_message_has_items() {
    check_rejected(
        with_content(basic_items(Vec::new())),
        MessageRejection::EmptyBasic,
    );
    // The types page's example: an image followed by two texts.
    let items = vec![
        BasicItem::Image(Box::new(Image {
            url: "https://static.wixstatic.com/media/f93e3d633e79921f14330f1911fc1139.jpg".into(),
            width: Some(1200),
            height: Some(798),
            ..Image::default()
        })),
        BasicItem::Text("Thanks for booking your spa day with us!".into()),
        BasicItem::Text("We've emailed your invoice.".into()),
    ];
    let message = check_accepted(with_content(ContentDraft {
        preview_text: Some("Thanks for booking your spa day with us!".to_owned()),
        ..basic_items(items.clone())
    }));
    assert_eq!(message.content.body, ContentBody::Basic(items.into()));
}

#[test]
fn a_template_has_at_most_ten_text_lines() {
    check_rejected(
        template(11, Vec::new()),
        MessageRejection::TooManyTextLines(11),
    );
    check_accepted(template(10, Vec::new()));
}

#[test]
fn a_template_has_at_most_ten_buttons() {
    let buttons = |n: usize| (0..n).map(|i| launch(&format!("Button {i}"))).collect();
    check_rejected(
        template(1, buttons(11)),
        MessageRejection::TooManyButtons(11),
    );
    check_accepted(template(1, buttons(10)));
}

#[test]
fn a_button_is_either_an_action_or_a_postback() {
    let neither = ButtonDraft {
        label: "Neither".to_owned(),
        ..ButtonDraft::default()
    };
    let both = ButtonDraft {
        interaction_id: Some("both".to_owned()),
        ..launch("Both")
    };
    let empty_url = ButtonDraft {
        launch_url: Some(String::new()),
        ..launch("Empty")
    };
    check_rejected(
        template(1, vec![neither]),
        MessageRejection::InvalidButton { index: 0 },
    );
    check_rejected(
        template(1, vec![launch("Ok"), both]),
        MessageRejection::InvalidButton { index: 1 },
    );
    check_rejected(
        template(1, vec![launch("Ok"), postback("Ok", "ok"), empty_url]),
        MessageRejection::InvalidButton { index: 2 },
    );
}

#[test]
fn a_form_has_one_to_fifteen_fields() {
    check_rejected(form(0, 0), MessageRejection::FormFieldCount(0));
    check_rejected(form(16, 0), MessageRejection::FormFieldCount(16));
    check_accepted(form(1, 0));
    check_accepted(form(15, 0));
}

#[test]
fn a_form_has_at_most_fifteen_media() {
    check_rejected(form(4, 16), MessageRejection::TooManyFormMedia(16));
    let message = check_accepted(form(4, 15));
    assert_eq!(message.visibility, Visibility::Business);
}

#[test]
fn visibility_unknown_is_refused_and_absent_means_both_sides() {
    check_rejected(
        MessageDraft {
            visibility: Some(Visibility::Unknown),
            ..valid()
        },
        MessageRejection::UnknownVisibility,
    );
    let default = check_accepted(MessageDraft {
        visibility: None,
        ..valid()
    });
    assert_eq!(default.visibility, Visibility::BusinessAndParticipant);
}

#[test]
fn direction_is_required_and_not_unknown() {
    check_rejected(
        MessageDraft {
            direction: None,
            ..valid()
        },
        MessageRejection::UnknownDirection,
    );
    check_rejected(
        MessageDraft {
            direction: Some(Direction::Unknown),
            ..valid()
        },
        MessageRejection::UnknownDirection,
    );
}

#[test]
fn a_minimal_message_is_accepted_with_text_and_icon() {
    let activity = Minimal {
        icon_url: Some("https://static.wixstatic.com/media/icon.png".into()),
        ..minimal_content()
    };
    let message = check_accepted(MessageDraft {
        visibility: Some(Visibility::Business),
        ..with_content(ContentDraft {
            preview_text: Some("Booked a spa appointment".to_owned()),
            minimal: Some(activity.clone()),
            ..ContentDraft::default()
        })
    });
    assert_eq!(
        message.content,
        Content {
            extras: Some(Box::new(ContentExtras {
                preview_text: Some("Booked a spa appointment".into()),
                title: None,
            })),
            body: ContentBody::Minimal(Box::new(activity)),
        }
    );
}

#[test]
fn an_unknown_conversation_is_not_found() {
    let unknown = conversation_id(99);
    let mut spec = a_conversation();
    spec.when(send(unknown, valid()))
        .then_rejected(Rejection::ConversationNotFound(unknown));
    spec.when(Command::InteractWithButton {
        conversation_id: unknown,
        message_id: MessageId(1),
        interaction_id: "x".to_owned(),
    })
    .then_rejected(Rejection::ConversationNotFound(unknown));
    assert!(spec.inbox.conversation(unknown).is_err());
    assert_eq!(
        spec.inbox.list_messages(&list(unknown)).unwrap_err(),
        ListMessagesError::ConversationNotFound(unknown)
    );
}

#[test]
fn get_or_create_needs_a_known_contact_or_member() {
    let mut spec = given([]);
    spec.when(get_or_create(ParticipantId::Contact(contact_id(9))))
        .then_rejected(Rejection::ContactNotFound(contact_id(9)));
    spec.when(get_or_create(ParticipantId::Member(member_id(9))))
        .then_rejected(Rejection::MemberNotFound(member_id(9)));
    // Anonymous visitor ids are not registered anywhere: any is accepted.
    let conversation = ConversationId(spec.next_id());
    spec.when(get_or_create(ParticipantId::Visitor(visitor_id(9))))
        .then_events([started(conversation, ParticipantId::Visitor(visitor_id(9)))]);
}

#[test]
fn a_button_interaction_needs_a_known_message_and_interaction() {
    let conversation = conversation_id(CONVERSATION);
    let other = conversation_id(2);
    let mut spec = a_conversation();
    spec.inbox
        .apply_event(&started(other, ParticipantId::Visitor(visitor_id(2))));
    let events = spec
        .when(send(
            conversation,
            template(1, vec![launch("Menu"), postback("Confirm", "confirm")]),
        ))
        .then_accepted();
    let [Event::MessageSent { message }] = events.as_slice() else {
        panic!("expected one MessageSent, got {events:?}");
    };
    let click = |conversation_id, message_id, interaction_id: &str| Command::InteractWithButton {
        conversation_id,
        message_id,
        interaction_id: interaction_id.to_owned(),
    };

    spec.when(click(conversation, MessageId(12345), "confirm"))
        .then_rejected(Rejection::MessageNotFound {
            conversation_id: conversation,
            message_id: MessageId(12345),
        });
    // The message exists, but in another conversation.
    spec.when(click(other, message.id, "confirm"))
        .then_rejected(Rejection::MessageNotFound {
            conversation_id: other,
            message_id: message.id,
        });
    for unknown in ["cancel", "Menu", "https://example.com/booking", ""] {
        spec.when(click(conversation, message.id, unknown))
            .then_rejected(Rejection::InteractionNotFound {
                message_id: message.id,
                interaction_id: unknown.to_owned(),
            });
    }
}

#[test]
fn a_visitor_is_identified_as_one_contact() {
    let visitor = visitor_id(1);
    let [jo, bob] = [contact_id(1), contact_id(2)];
    let mut spec = given_commands([
        create_contact(jo, "Jo", "jo@example.com"),
        create_contact(bob, "Bob", "bob@example.com"),
        Command::IdentifyVisitor {
            visitor,
            contact: jo,
        },
    ]);
    spec.when(Command::IdentifyVisitor {
        visitor,
        contact: bob,
    })
    .then_rejected(Rejection::VisitorAlreadyIdentified {
        visitor,
        contact: jo,
    });
    // The same identification again is a no-op, not an error (webhooks repeat).
    spec.when(Command::IdentifyVisitor {
        visitor,
        contact: jo,
    })
    .then_nothing();
    spec.when(Command::IdentifyVisitor {
        visitor: visitor_id(2),
        contact: contact_id(99),
    })
    .then_rejected(Rejection::ContactNotFound(contact_id(99)));
}

#[test]
fn a_contact_is_at_most_one_member() {
    let [jo, bob] = [contact_id(1), contact_id(2)];
    let [first, second] = [member_id(1), member_id(2)];
    let mut spec = given_commands([
        create_contact(jo, "Jo", "jo@example.com"),
        create_contact(bob, "Bob", "bob@example.com"),
        Command::RegisterMember {
            member: first,
            contact: jo,
            login_email: None,
        },
    ]);
    spec.when(Command::RegisterMember {
        member: second,
        contact: jo,
        login_email: None,
    })
    .then_rejected(Rejection::ContactAlreadyMember {
        contact: jo,
        member: first,
    });
    spec.when(Command::RegisterMember {
        member: first,
        contact: bob,
        login_email: None,
    })
    .then_rejected(Rejection::MemberAlreadyExists {
        member: first,
        contact: jo,
    });
    spec.when(Command::RegisterMember {
        member: first,
        contact: jo,
        login_email: None,
    })
    .then_nothing();
}

// ---------------------------------------------------------------------------------------
// 5. Button interacted, participant erased

#[test]
fn a_postback_click_reaches_the_app_that_sent_the_template() {
    let jo = contact_id(1);
    let member = member_id(1);
    let mut spec = given_commands([create_contact(jo, "Jo", "jo@example.com")]);
    spec.as_caller(Caller::App(APP));
    let conversation = ConversationId(spec.next_id());
    spec.run(get_or_create(ParticipantId::Contact(jo)));

    let expected = Message {
        app_id: Some(APP),
        ..spec.message_now(
            conversation,
            Content {
                extras: Some(Box::new(ContentExtras {
                    preview_text: Some("JoJo, you're getting a spa day!".into()),
                    title: None,
                })),
                body: ContentBody::Template(Box::new(Template {
                    title: Some("Your spa day".into()),
                    text_lines: vec!["Sunday, 11am".into()],
                    image_url: None,
                    orientation: None,
                    buttons: vec![
                        Button {
                            label: "See the menu".into(),
                            action: ButtonAction::Launch {
                                url: "https://example.com/booking".into(),
                            },
                        },
                        Button {
                            label: "Confirm".into(),
                            action: ButtonAction::Postback {
                                interaction_id: "confirm-42".into(),
                                app_id: Some(APP),
                            },
                        },
                    ],
                })),
            },
            Sender::App(APP),
            Direction::BusinessToParticipant,
        )
    };
    spec.when(send(
        conversation,
        with_content(ContentDraft {
            preview_text: Some("JoJo, you're getting a spa day!".to_owned()),
            template: Some(TemplateDraft {
                title: Some("Your spa day".to_owned()),
                text_lines: vec!["Sunday, 11am".to_owned()],
                buttons: vec![launch("See the menu"), postback("Confirm", "confirm-42")],
                ..TemplateDraft::default()
            }),
            ..ContentDraft::default()
        }),
    ))
    .then_events([sent(&expected)]);

    // Whoever relays the click (here a Wix user), the event names the app that sent the
    // template and the participant who clicked.
    spec.as_caller(Caller::WixUser(OWNER));
    let click = Event::ButtonInteracted {
        conversation_id: conversation,
        message_id: expected.id,
        interaction_id: "confirm-42".to_owned(),
        app_id: Some(APP),
        interacted_by: Sender::Contact(jo),
    };
    spec.when(Command::InteractWithButton {
        conversation_id: conversation,
        message_id: expected.id,
        interaction_id: "confirm-42".to_owned(),
    })
    .then_events([click]);
    assert_eq!(spec.inbox.interactions().count(), 1);

    // After the contact becomes a member, a click through the old conversation id is the
    // member's, in the member's conversation.
    let member_conversation = ConversationId(spec.next_id());
    spec.run(Command::RegisterMember {
        member,
        contact: jo,
        login_email: None,
    });
    spec.when(Command::InteractWithButton {
        conversation_id: conversation,
        message_id: expected.id,
        interaction_id: "confirm-42".to_owned(),
    })
    .then_events([Event::ButtonInteracted {
        conversation_id: member_conversation,
        message_id: expected.id,
        interaction_id: "confirm-42".to_owned(),
        app_id: Some(APP),
        interacted_by: Sender::Member {
            member,
            contact: Some(jo),
        },
    }]);
}

#[test]
fn erasing_a_participant_redacts_content_but_keeps_the_structure() {
    let visitor = visitor_id(1);
    let jo = contact_id(1);
    let bob = contact_id(2);
    let mut spec = given([]);
    let visitor_conversation = ConversationId(spec.next_id());
    spec.run(get_or_create(ParticipantId::Visitor(visitor)));
    spec.run(send_as(
        visitor_conversation,
        text("My phone is 555 0100", Direction::ParticipantToBusiness),
        SendAs::Participant,
    ));
    spec.run(Command::CreateContact {
        contact_id: jo,
        draft: ContactDraft {
            phones: vec![ContactPhone {
                phone: "555 0100".to_owned(),
                tag: EntryTag::Mobile,
                primary: true,
            }],
            ..draft("Jo", "jo@example.com")
        },
    });
    let contact_conversation = ConversationId(spec.next_id());
    spec.run(Command::IdentifyVisitor {
        visitor,
        contact: jo,
    });
    spec.as_caller(Caller::App(APP));
    spec.run(send(
        contact_conversation,
        MessageDraft {
            badges: vec![facebook_badge()],
            visibility: Some(Visibility::Business),
            ..text("Jo Doe, 12 Main St", Direction::ParticipantToBusiness)
        },
    ));
    spec.run(send(
        contact_conversation,
        template(2, vec![postback("Confirm", "confirm")]),
    ));
    // Someone else, untouched by the request.
    let bob_conversation = ConversationId(spec.next_id());
    spec.run(create_contact(bob, "Bob", "bob@example.com"));
    spec.run(get_or_create(ParticipantId::Contact(bob)));
    spec.run(send(
        bob_conversation,
        text("Bob's message", Direction::ParticipantToBusiness),
    ));

    let before = spec.messages(contact_conversation);
    let bob_before = spec.messages(bob_conversation);
    let jo_before = spec.inbox.contacts().get(jo).unwrap().clone();
    assert_eq!(before.len(), 3);

    // Erasing by the visitor id reaches the same person.
    let mut probe = spec.ids.clone();
    let by_visitor = spec
        .inbox
        .decide(
            &Command::EraseParticipant {
                participant: ParticipantId::Visitor(visitor),
            },
            &spec.ctx,
            &mut probe,
        )
        .unwrap();
    let [Event::ParticipantErased { conversations, .. }] = by_visitor.as_slice() else {
        panic!("expected one ParticipantErased, got {by_visitor:?}");
    };
    assert_eq!(
        conversations,
        &vec![visitor_conversation, contact_conversation]
    );

    let now = spec.now();
    let up_to = spec.inbox.last_sequence();
    spec.when(Command::EraseParticipant {
        participant: ParticipantId::Contact(jo),
    })
    .then_events([Event::ParticipantErased {
        participant: ParticipantId::Contact(jo),
        conversations: vec![visitor_conversation, contact_conversation],
        up_to,
        contact: Some(Contact {
            revision: 2,
            updated_date: now,
            name: ContactName::default(),
            emails: Vec::new(),
            phones: Vec::new(),
            ..jo_before
        }),
    }]);

    let after = spec.messages(contact_conversation);
    assert_eq!(after.len(), before.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.content.body, ContentBody::Redacted);
        assert_eq!(a.content.preview_text(), None);
        assert!(a.badges.is_empty());
        assert_eq!(
            (
                a.id,
                a.sequence,
                a.created_date,
                a.conversation_id,
                a.direction,
                a.visibility
            ),
            (
                b.id,
                b.sequence,
                b.created_date,
                b.conversation_id,
                b.direction,
                b.visibility
            )
        );
        assert_eq!(spec.inbox.message(a.id), Some(a));
    }
    assert_eq!(spec.messages(bob_conversation), bob_before);

    // A redacted template has no buttons left to click.
    spec.when(Command::InteractWithButton {
        conversation_id: contact_conversation,
        message_id: after[2].id,
        interaction_id: "confirm".to_owned(),
    })
    .then_rejected(Rejection::InteractionNotFound {
        message_id: after[2].id,
        interaction_id: "confirm".to_owned(),
    });

    // The contact's personal data is gone: not findable by email, not displayed.
    let contact = spec.inbox.contacts().get(jo).unwrap();
    assert_eq!(contact.name, ContactName::default());
    assert!(contact.emails.is_empty() && contact.phones.is_empty());
    let found = spec
        .inbox
        .contacts()
        .query(&ContactQuery::by_email("jo@example.com"))
        .unwrap();
    assert!(found.contacts.is_empty());
    let view = spec.inbox.conversation(contact_conversation).unwrap();
    assert_eq!(view.participant_display.name, None);
    assert_eq!(view.channels, vec![Channel::Chat]);

    // The request covers what existed when it was made: if the person writes again, the new
    // message is kept as sent.
    spec.run(send(
        contact_conversation,
        text("I'm back", Direction::ParticipantToBusiness),
    ));
    let latest = spec.messages(contact_conversation);
    assert_eq!(latest.len(), 4);
    assert_eq!(
        latest[3].content,
        inbox_core::message::Content::text("I'm back")
    );
}

#[test]
fn erasing_a_member_forgets_their_login_email() {
    let jo = contact_id(1);
    let member = member_id(1);
    let mut spec = given([]);
    let mut log = Vec::new();
    for command in [
        Command::CreateContact {
            contact_id: jo,
            draft: ContactDraft {
                emails: vec![email("jo@example.com")],
                ..ContactDraft::default()
            },
        },
        Command::RegisterMember {
            member,
            contact: jo,
            login_email: Some("jo.login@example.com".to_owned()),
        },
        get_or_create(ParticipantId::Member(member)),
    ] {
        log.extend(spec.run(command));
    }
    let conversation = spec
        .inbox
        .live_conversation_of(ParticipantId::Member(member))
        .unwrap();
    // With no name on the contact, the conversation shows the member's login email.
    assert_eq!(
        spec.inbox
            .conversation(conversation)
            .unwrap()
            .participant_display
            .name
            .as_deref(),
        Some("jo.login@example.com")
    );

    let erasure = spec
        .when(Command::EraseParticipant {
            participant: ParticipantId::Member(member),
        })
        .then_accepted();
    let view = spec.inbox.conversation(conversation).unwrap();
    assert_eq!(view.participant_display.name, None);
    assert_eq!(
        spec.inbox
            .member(member)
            .and_then(|m| m.login_email.clone()),
        None
    );

    // The same events folded with the erasure first (a late webhook) give the same state.
    let replayed = given(erasure.iter().chain(&log).cloned());
    assert_eq!(replayed.inbox, spec.inbox);
}

// ---------------------------------------------------------------------------------------
// 6. List Messages

/// A conversation of `n` messages, "message 0" the oldest.
fn a_conversation_of(n: usize) -> (Spec, Vec<MessageId>) {
    let mut spec = a_conversation();
    let ids = (0..n)
        .map(|i| {
            let events = spec.run(send(
                conversation_id(CONVERSATION),
                text(&format!("message {i}"), Direction::BusinessToParticipant),
            ));
            match events.as_slice() {
                [Event::MessageSent { message }] => message.id,
                other => panic!("expected one MessageSent, got {other:?}"),
            }
        })
        .collect();
    (spec, ids)
}

#[test]
fn list_messages_defaults_to_thirty_newest_first() {
    let (spec, ids) = a_conversation_of(35);
    let newest_first: Vec<MessageId> = ids.iter().rev().copied().collect();

    let first = spec
        .inbox
        .list_messages(&list(conversation_id(CONVERSATION)))
        .unwrap();
    assert_eq!(first.messages.len(), DEFAULT_PAGE_LIMIT);
    assert_eq!(ids_of(&first.messages), newest_first[..30]);
    let cursor = first.next_cursor.clone().expect("a next page");

    let second = spec
        .inbox
        .list_messages(&ListMessages {
            cursor: Some(cursor),
            ..list(conversation_id(CONVERSATION))
        })
        .unwrap();
    assert_eq!(ids_of(&second.messages), newest_first[30..]);
    assert_eq!(second.next_cursor, None, "no cursor at the end");
}

#[test]
fn list_messages_ascending_pages_oldest_first() {
    let (spec, ids) = a_conversation_of(12);
    let ascending = |limit, cursor| ListMessages {
        order: SortOrder::Asc,
        limit: Some(limit),
        cursor,
        ..list(conversation_id(CONVERSATION))
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = spec.inbox.list_messages(&ascending(5, cursor)).unwrap();
        seen.extend(ids_of(&page.messages));
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    // A cursor is only good for the order it was issued for.
    let desc = spec
        .inbox
        .list_messages(&ListMessages {
            limit: Some(5),
            ..list(conversation_id(CONVERSATION))
        })
        .unwrap();
    assert_eq!(
        spec.inbox
            .list_messages(&ascending(5, desc.next_cursor))
            .unwrap_err(),
        ListMessagesError::Cursor(CursorError::QueryMismatch)
    );
}

#[test]
fn list_messages_limit_is_one_to_a_hundred() {
    let (spec, ids) = a_conversation_of(105);
    let with_limit = |limit| ListMessages {
        limit: Some(limit),
        ..list(conversation_id(CONVERSATION))
    };
    for bad in [0, MAX_PAGE_LIMIT + 1] {
        assert_eq!(
            spec.inbox.list_messages(&with_limit(bad)).unwrap_err(),
            ListMessagesError::IllegalLimit(bad)
        );
    }
    let most = spec
        .inbox
        .list_messages(&with_limit(MAX_PAGE_LIMIT))
        .unwrap();
    assert_eq!(most.messages.len(), 100);
    let rest = spec
        .inbox
        .list_messages(&ListMessages {
            cursor: most.next_cursor,
            ..with_limit(MAX_PAGE_LIMIT)
        })
        .unwrap();
    assert_eq!(
        ids_of(&rest.messages),
        ids[..5].iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(rest.next_cursor, None);

    let one = spec.inbox.list_messages(&with_limit(1)).unwrap();
    assert_eq!(ids_of(&one.messages), [ids[104]]);
    assert!(one.next_cursor.is_some());
}

#[test]
fn a_page_that_ends_exactly_at_the_last_message_has_no_cursor() {
    let (spec, _) = a_conversation_of(30);
    let page = spec
        .inbox
        .list_messages(&list(conversation_id(CONVERSATION)))
        .unwrap();
    assert_eq!(page.messages.len(), 30);
    assert_eq!(page.next_cursor, None);
    let (empty, _) = a_conversation_of(0);
    let page = empty
        .inbox
        .list_messages(&list(conversation_id(CONVERSATION)))
        .unwrap();
    assert!(page.messages.is_empty());
    assert_eq!(page.next_cursor, None);
}

#[test]
fn a_participant_visible_listing_pages_over_visible_messages_only() {
    let mut spec = a_conversation();
    let conversation = conversation_id(CONVERSATION);
    let mut visible = Vec::new();
    for i in 0..9 {
        let business_only = i % 3 == 0;
        let events = spec.run(send(
            conversation,
            MessageDraft {
                visibility: Some(if business_only {
                    Visibility::Business
                } else {
                    Visibility::BusinessAndParticipant
                }),
                ..text(&format!("message {i}"), Direction::BusinessToParticipant)
            },
        ));
        if let [Event::MessageSent { message }] = events.as_slice()
            && !business_only
        {
            visible.push(message.id);
        }
    }
    let widget = |cursor| ListMessages {
        visibility: VisibilityFilter::ParticipantVisible,
        order: SortOrder::Asc,
        limit: Some(4),
        cursor,
        ..list(conversation)
    };
    let first = spec.inbox.list_messages(&widget(None)).unwrap();
    assert_eq!(ids_of(&first.messages), visible[..4]);
    let second = spec
        .inbox
        .list_messages(&widget(first.next_cursor))
        .unwrap();
    assert_eq!(ids_of(&second.messages), visible[4..]);
    assert_eq!(second.next_cursor, None);
    // Everything, for the business.
    let all = spec.inbox.list_messages(&list(conversation)).unwrap();
    assert_eq!(all.messages.len(), 9);
}

// ---------------------------------------------------------------------------------------
// Contacts: update, labels, deletion

fn update(id: ContactId, expected_revision: u64, patch: ContactPatch) -> Command {
    Command::UpdateContact {
        contact_id: id,
        expected_revision,
        patch,
        allow_duplicates: false,
    }
}

fn labels(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

/// Given a contact with a company, when Update Contact gives only a new name and job title
/// at the current revision, then the name and job title change, the emails and the company
/// stay, and the revision goes up by one.
#[test]
fn given_a_contact_when_updated_then_only_the_given_fields_change() {
    let jo = contact_id(1);
    let mut spec = given_commands([Command::CreateContact {
        contact_id: jo,
        draft: ContactDraft {
            details: ContactDetails {
                company: Some("Acme".into()),
                ..ContactDetails::default()
            },
            ..draft("Jo", "jo@example.com")
        },
    }]);
    let before = spec.inbox.contacts().get(jo).unwrap().clone();
    let now = spec.now();
    spec.when(update(
        jo,
        1,
        ContactPatch {
            name: Some(name("Joanna", Some("Doe"))),
            job_title: Some(Some("CTO".into())),
            ..ContactPatch::default()
        },
    ))
    .then_events([Event::ContactUpdated {
        contact: Contact {
            revision: 2,
            updated_date: now,
            name: name("Joanna", Some("Doe")),
            details: ContactDetails {
                company: Some("Acme".into()),
                job_title: Some("CTO".into()),
                ..ContactDetails::default()
            },
            ..before
        },
    }]);
}

/// Given a contact at revision 2, when an update names revision 1, then it is refused as a
/// conflict and nothing changes.
#[test]
fn given_a_changed_contact_when_updated_with_a_stale_revision_then_it_conflicts() {
    let jo = contact_id(1);
    let mut spec = given_commands([
        create_contact(jo, "Jo", "jo@example.com"),
        update(jo, 1, ContactPatch::default()),
    ]);
    spec.when(update(jo, 1, ContactPatch::default()))
        .then_rejected(UpdateContactError::RevisionConflict {
            expected: 1,
            actual: 2,
        });
}

/// An update that would leave no name, email or phone is refused; so is an email that
/// another contact has (unless duplicates are allowed), and a badly formed field.
#[test]
fn given_contacts_when_an_update_breaks_a_rule_then_it_is_refused() {
    let (jo, ann) = (contact_id(1), contact_id(2));
    let mut spec = given_commands([
        create_contact(jo, "Jo", "jo@example.com"),
        create_contact(ann, "Ann", "ann@example.com"),
    ]);
    spec.when(update(
        jo,
        1,
        ContactPatch {
            name: Some(ContactName::default()),
            emails: Some(Vec::new()),
            ..ContactPatch::default()
        },
    ))
    .then_rejected(UpdateContactError::Empty);
    spec.when(update(
        jo,
        1,
        ContactPatch {
            emails: Some(vec![email("ANN@example.com")]),
            ..ContactPatch::default()
        },
    ))
    .then_rejected(UpdateContactError::Data(ContactDataError::DuplicateEmail {
        email: "ANN@example.com".into(),
        existing: ann,
    }));
    spec.when(update(
        jo,
        1,
        ContactPatch {
            birthdate: Some(Some("2020-02-30".into())),
            ..ContactPatch::default()
        },
    ))
    .then_rejected(UpdateContactError::Data(ContactDataError::InvalidField {
        field: "info.birthdate",
        reason: "\"2020-02-30\" is not a YYYY-MM-DD date".into(),
    }));
    spec.when(update(
        jo,
        1,
        ContactPatch {
            emails: Some(vec![ContactEmail {
                tag: EntryTag::Mobile,
                ..email("jo@example.com")
            }]),
            ..ContactPatch::default()
        },
    ))
    .then_rejected(UpdateContactError::Data(ContactDataError::InvalidField {
        field: "info.emails.tag",
        reason: "MOBILE and FAX are phone tags; an email is UNTAGGED, MAIN, HOME or WORK".into(),
    }));
    // The contact's own email is no duplicate of itself.
    let (now, jo_before) = (spec.now(), spec.inbox.contacts().get(jo).unwrap().clone());
    spec.when(update(
        jo,
        1,
        ContactPatch {
            emails: Some(vec![email("JO@example.com")]),
            ..ContactPatch::default()
        },
    ))
    .then_events([Event::ContactUpdated {
        contact: Contact {
            revision: 2,
            updated_date: now,
            emails: vec![primary(email("JO@example.com"))],
            ..jo_before
        },
    }]);
}

/// A member's primary email is its login email: an update may change its name, not that.
#[test]
fn given_a_member_when_its_primary_email_is_updated_then_it_is_refused() {
    let jo = contact_id(1);
    let member = member_id(1);
    let mut spec = given_commands([
        create_contact(jo, "Jo", "jo@example.com"),
        Command::RegisterMember {
            member,
            contact: jo,
            login_email: Some("jo@example.com".into()),
        },
    ]);
    spec.when(update(
        jo,
        1,
        ContactPatch {
            emails: Some(vec![email("other@example.com")]),
            ..ContactPatch::default()
        },
    ))
    .then_rejected(UpdateContactError::MemberPrimaryEmail {
        contact: jo,
        member,
    });
    spec.run(update(
        jo,
        1,
        ContactPatch {
            name: Some(name("Joanna", None)),
            ..ContactPatch::default()
        },
    ));
    assert_eq!(spec.inbox.contacts().get(jo).unwrap().revision, 2);
}

/// Labels are added and removed without a revision check; a change that changes nothing is
/// no event; a key that is not `namespace.key` is refused.
#[test]
fn given_a_contact_when_labelled_and_unlabelled_then_its_labels_and_revision_follow() {
    let jo = contact_id(1);
    let mut spec = given_commands(catalog(&["VIP"], &[]).into_iter().chain([create_contact(
        jo,
        "Jo",
        "jo@example.com",
    )]));
    let label = |add: &[&str], remove: &[&str]| Command::LabelContact {
        contact_id: jo,
        add: labels(add),
        remove: labels(remove),
    };
    spec.run(label(&["custom.vip", "contacts.customers"], &[]));
    let c = spec.inbox.contacts().get(jo).unwrap();
    assert_eq!(
        (c.revision, &c.details.labels),
        (2, &labels(&["contacts.customers", "custom.vip"]))
    );
    spec.when(label(&["custom.vip"], &[])).then_nothing();
    spec.when(label(&[], &["custom.vip", "custom.never-there"]))
        .then_rejected(LabelContactError::UnknownLabel("custom.never-there".into()));
    spec.run(label(&[], &["custom.vip"]));
    let c = spec.inbox.contacts().get(jo).unwrap();
    assert_eq!(
        (c.revision, &c.details.labels),
        (3, &labels(&["contacts.customers"]))
    );
    spec.when(label(&["vip"], &[]))
        .then_rejected(LabelContactError::InvalidKey {
            key: "vip".into(),
            reason: "a label key is namespace.key, e.g. custom.vip".into(),
        });
    spec.when(label(&[], &[]))
        .then_rejected(LabelContactError::Count(0));
    spec.when(Command::LabelContact {
        contact_id: contact_id(9),
        add: labels(&["custom.vip"]),
        remove: BTreeSet::new(),
    })
    .then_rejected(LabelContactError::NotFound(contact_id(9)));
}

/// A contact that is a member cannot be deleted; another can, once: it leaves the list and
/// its email index, its id cannot be created again, and a record of it arriving later (a
/// late webhook) does not bring it back.
#[test]
fn given_contacts_when_deleted_then_they_are_gone_for_good_and_members_stay() {
    let (jo, ann) = (contact_id(1), contact_id(2));
    let member = member_id(1);
    let mut spec = given_commands([
        create_contact(jo, "Jo", "jo@example.com"),
        create_contact(ann, "Ann", "ann@example.com"),
        Command::RegisterMember {
            member,
            contact: jo,
            login_email: None,
        },
    ]);
    spec.when(Command::DeleteContact { contact_id: jo })
        .then_rejected(DeleteContactError::IsMember {
            contact: jo,
            member,
        });
    let ann_before = spec.inbox.contacts().get(ann).unwrap().clone();
    spec.when(Command::DeleteContact { contact_id: ann })
        .then_events([Event::ContactDeleted {
            contact_id: ann,
            revision: 1,
        }]);
    assert!(spec.inbox.contacts().get(ann).is_none());
    assert_eq!(
        spec.inbox
            .contacts()
            .contacts_with_email("ann@example.com")
            .count(),
        0
    );
    spec.when(Command::DeleteContact { contact_id: ann })
        .then_rejected(DeleteContactError::NotFound(ann));
    spec.when(create_contact(ann, "Ann", "ann@example.com"))
        .then_rejected(CreateContactError::AlreadyExists(ann));
    spec.inbox.apply_event(&Event::ContactUpdated {
        contact: Contact {
            revision: 7,
            ..ann_before
        },
    });
    assert!(spec.inbox.contacts().get(ann).is_none());
    // The email is free again.
    spec.run(create_contact(contact_id(3), "Ann", "ann@example.com"));
}

/// A merge joins the details as it joins names: single values from the first source that
/// has one, else the target; addresses and labels in union; extended fields key by key.
#[test]
fn given_contacts_with_details_when_merged_then_the_details_follow_the_merge_rule() {
    let (jo, joanna) = (contact_id(1), contact_id(2));
    let with = |first: &str, address: &str, details: ContactDetails| ContactDraft {
        details,
        allow_duplicates: true,
        ..draft(first, address)
    };
    let home = ContactAddress {
        tag: AddressTag::Home,
        address: PostalAddress {
            city: Some("Lisbon".into()),
            country: Some("PT".into()),
            ..PostalAddress::default()
        },
    };
    let defined = catalog(
        &["VIP", "Lead"],
        &[
            ("Tier", FieldDataType::Text),
            ("Score", FieldDataType::Number),
        ],
    );
    let mut spec = given_commands(
        defined.into_iter().chain([
            Command::CreateContact {
                contact_id: jo,
                draft: with(
                    "Jo",
                    "jo@example.com",
                    ContactDetails {
                        company: Some("Acme".into()),
                        locale: Some("en-US".into()),
                        labels: labels(&["custom.vip"]),
                        extended_fields: [
                            ("custom.tier".to_owned(), ExtendedValue::Text("gold".into())),
                            ("custom.score".to_owned(), ExtendedValue::Number("3".into())),
                        ]
                        .into(),
                        ..ContactDetails::default()
                    },
                ),
            },
            Command::CreateContact {
                contact_id: joanna,
                draft: with(
                    "Joanna",
                    "joanna@example.com",
                    ContactDetails {
                        company: Some("Globex".into()),
                        addresses: vec![home.clone()],
                        labels: labels(&["custom.lead"]),
                        extended_fields: [(
                            "custom.score".to_owned(),
                            ExtendedValue::Number("4.5".into()),
                        )]
                        .into(),
                        ..ContactDetails::default()
                    },
                ),
            },
        ]),
    );
    spec.run(Command::MergeContacts {
        target: jo,
        expected_revision: 1,
        sources: vec![joanna],
    });
    let merged = spec.inbox.contacts().get(jo).unwrap();
    assert_eq!(
        merged.details,
        ContactDetails {
            company: Some("Globex".into()),
            locale: Some("en-US".into()),
            addresses: vec![home],
            labels: labels(&["custom.lead", "custom.vip"]),
            extended_fields: [
                (
                    "custom.score".to_owned(),
                    ExtendedValue::Number("4.5".into())
                ),
                ("custom.tier".to_owned(), ExtendedValue::Text("gold".into())),
            ]
            .into(),
            ..ContactDetails::default()
        }
    );
    assert_eq!(merged.last_activity.kind, ActivityType::ContactMerged);
}

/// Extended fields outside `custom.` are Wix's own and cannot be set; a number must be
/// finite; a country is an ISO code.
#[test]
fn given_no_contacts_when_created_with_bad_details_then_each_is_refused() {
    let mut spec = given([]);
    let bad = [
        (
            ContactDetails {
                extended_fields: [(
                    "emailSubscriptions.status".to_owned(),
                    ExtendedValue::Text("x".into()),
                )]
                .into(),
                ..ContactDetails::default()
            },
            "info.extendedFields",
        ),
        (
            ContactDetails {
                extended_fields: [("custom.n".to_owned(), ExtendedValue::Number("inf".into()))]
                    .into(),
                ..ContactDetails::default()
            },
            "info.extendedFields",
        ),
        (
            ContactDetails {
                addresses: vec![ContactAddress {
                    tag: AddressTag::Work,
                    address: PostalAddress {
                        country: Some("Portugal".into()),
                        ..PostalAddress::default()
                    },
                }],
                ..ContactDetails::default()
            },
            "info.addresses.address.country",
        ),
        (
            ContactDetails {
                locale: Some("english please".into()),
                ..ContactDetails::default()
            },
            "info.locale",
        ),
        (
            ContactDetails {
                company: Some("x".repeat(1001)),
                ..ContactDetails::default()
            },
            "info.company",
        ),
    ];
    for (details, field) in bad {
        let result = spec.inbox.decide(
            &Command::CreateContact {
                contact_id: contact_id(1),
                draft: ContactDraft {
                    details,
                    ..draft("Jo", "jo@example.com")
                },
            },
            &spec.ctx,
            &mut spec.ids,
        );
        assert!(
            matches!(&result, Err(Rejection::CreateContact(CreateContactError::Data(ContactDataError::InvalidField { field: f, .. }))) if *f == field),
            "{field}: {result:?}"
        );
    }
}

/// Label keys filter with `$hasSome` (any) and `$hasAll` (every one); company by prefix,
/// case-insensitively; the birth date orders as text.
#[test]
fn given_labelled_contacts_when_queried_by_labels_and_details_then_each_condition_holds() {
    use inbox_core::contacts::{Condition, ContactField, ContactFilter, FilterValue};
    let (jo, ann) = (contact_id(1), contact_id(2));
    let create =
        |id, first: &str, labels: &[&str], company: &str, birthdate: &str| Command::CreateContact {
            contact_id: id,
            draft: ContactDraft {
                details: ContactDetails {
                    labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                    company: Some(company.into()),
                    birthdate: Some(birthdate.into()),
                    ..ContactDetails::default()
                },
                ..draft(first, &format!("{first}@example.com"))
            },
        };
    let spec = given_commands(catalog(&["VIP", "Lead"], &[]).into_iter().chain([
        create(
            jo,
            "jo",
            &["custom.vip", "custom.lead"],
            "Acme",
            "1990-04-01",
        ),
        create(ann, "ann", &["custom.vip"], "Globex", "2001-09-30"),
    ]));
    let found = |field, cond| {
        let mut ids: Vec<ContactId> = spec
            .inbox
            .contacts()
            .query(&ContactQuery {
                filter: ContactFilter::Field(field, cond),
                ..ContactQuery::default()
            })
            .unwrap()
            .contacts
            .iter()
            .map(|v| v.id)
            .collect();
        ids.sort();
        ids
    };
    let texts = |ts: &[&str]| ts.iter().map(|t| FilterValue::Text((*t).into())).collect();
    assert_eq!(
        found(
            ContactField::Labels,
            Condition::HasSome(texts(&["custom.lead", "custom.x"]))
        ),
        [jo]
    );
    assert_eq!(
        found(
            ContactField::Labels,
            Condition::HasAll(texts(&["custom.vip"]))
        ),
        [jo, ann]
    );
    assert_eq!(
        found(
            ContactField::Labels,
            Condition::HasAll(texts(&["custom.vip", "custom.lead"]))
        ),
        [jo]
    );
    assert_eq!(
        found(ContactField::Company, Condition::StartsWith("acm".into())),
        [jo]
    );
    assert_eq!(
        found(
            ContactField::Birthdate,
            Condition::Gt(FilterValue::Text("2000-01-01".into()))
        ),
        [ann]
    );
    assert!(
        spec.inbox
            .contacts()
            .query(&ContactQuery {
                filter: ContactFilter::Field(
                    ContactField::Labels,
                    Condition::Eq(FilterValue::Text("custom.vip".into()))
                ),
                ..ContactQuery::default()
            })
            .is_err(),
        "labels take $hasSome and $hasAll only"
    );
}

// ---------------------------------------------------------------------------------------
// Reverting a conversation merge

/// Two people's conversations, merged by an event from outside, with messages on both
/// sides: the inbox, the survivor, the one merged into it, the messages in order, and the
/// merge's stamp.
fn two_people_merged() -> (Spec, ConversationId, ConversationId, Vec<Message>, Sequence) {
    let (ann, bob) = (conversation_id(1), conversation_id(2));
    let mut spec = given([
        started(ann, ParticipantId::Visitor(visitor_id(1))),
        started(bob, ParticipantId::Visitor(visitor_id(2))),
    ]);
    let mut sent_messages = Vec::new();
    for (i, c) in [ann, bob, ann, bob].into_iter().enumerate() {
        let events = spec.run(Command::SendMessage {
            conversation_id: c,
            message: text(&format!("m{i}"), Direction::ParticipantToBusiness),
            send_as: SendAs::Participant,
        });
        let [Event::MessageSent { message }] = events.as_slice() else {
            panic!("one message");
        };
        sent_messages.push(message.clone());
    }
    let stamp = spec.now_sequence();
    spec.inbox.apply_event(&Event::ConversationsMerged {
        sources: vec![bob],
        target: ann,
        stamp,
    });
    spec.tick();
    (spec, ann, bob, sent_messages, stamp)
}

/// Given two people's conversations merged, when the merge is reverted, then each message
/// goes back to the conversation it was sent to, in its order and with its sequence; what
/// was sent to the survivor after the merge stays there; both are live, and each id
/// resolves as before the merge.
#[test]
fn given_a_merge_of_two_peoples_conversations_when_reverted_then_each_gets_its_messages_back() {
    let (mut spec, ann, bob, before, merged_at) = two_people_merged();
    assert_eq!(spec.inbox.root_of(bob), ann);
    // Sent to the survivor after the merge (to either id: Bob's lands in Ann's).
    let after = spec.run(Command::SendMessage {
        conversation_id: ann,
        message: text("after the merge", Direction::BusinessToParticipant),
        send_as: SendAs::Caller,
    });
    let stamp = spec.now_sequence();
    spec.when(Command::RevertConversationMerge { conversation: bob })
        .then_events([Event::ConversationMergeReverted {
            source: bob,
            target: ann,
            merged_at,
            stamp,
        }]);
    let texts = |spec: &Spec, c| -> Vec<Content> {
        spec.messages(c).iter().map(|m| m.content.clone()).collect()
    };
    assert_eq!(
        texts(&spec, ann),
        [
            Content::text("m0"),
            Content::text("m2"),
            Content::text("after the merge")
        ]
    );
    assert_eq!(
        texts(&spec, bob),
        [Content::text("m1"), Content::text("m3")]
    );
    assert_eq!(
        spec.messages(bob),
        vec![before[1].clone(), before[3].clone()]
    );
    let live: Vec<_> = spec.inbox.live_conversations().collect();
    assert_eq!(live, [ann, bob]);
    assert_eq!(spec.inbox.root_of(bob), bob);
    assert_eq!(
        spec.inbox
            .live_conversation_of(ParticipantId::Visitor(visitor_id(2))),
        Some(bob)
    );
    let [Event::MessageSent { message }] = after.as_slice() else {
        panic!("one message");
    };
    assert_eq!(message.conversation_id, ann);
    assert_eq!(
        spec.inbox.message_count(),
        5,
        "nothing lost, nothing doubled"
    );
}

/// A cursor opened before a revert pages over exactly what was there at its first page, even
/// asked through the id that the revert took out of the survivor; one opened after sees the
/// survivor alone.
#[test]
fn given_a_cursor_opened_before_a_revert_when_paged_after_it_then_it_sees_what_was_there() {
    let (mut spec, ann, bob, before, _) = two_people_merged();
    let first = spec
        .inbox
        .list_messages(&ListMessages {
            limit: Some(1),
            order: SortOrder::Asc,
            ..ListMessages::first_page(bob)
        })
        .unwrap();
    assert_eq!(first.conversation_id, ann);
    let cursor = first.next_cursor.clone().unwrap();
    let mut paged: Vec<MessageId> = first.messages.iter().map(|m| m.id).collect();
    spec.run(Command::RevertConversationMerge { conversation: bob });
    let mut next = Some(cursor);
    while let Some(c) = next {
        let page = spec
            .inbox
            .list_messages(&ListMessages {
                limit: Some(1),
                order: SortOrder::Asc,
                cursor: Some(c),
                ..ListMessages::first_page(bob)
            })
            .unwrap();
        paged.extend(page.messages.iter().map(|m| m.id));
        next = page.next_cursor;
    }
    assert_eq!(paged, before.iter().map(|m| m.id).collect::<Vec<_>>());
    let now: Vec<MessageId> = spec
        .inbox
        .list_messages(&ListMessages {
            order: SortOrder::Asc,
            ..ListMessages::first_page(ann)
        })
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(now, [before[0].id, before[2].id]);
}

/// A merge and its revert are facts: folded in either order they give the same state; a
/// later merge of the same pair is a new fact, with its own stamp, and merges them again.
#[test]
fn given_a_merge_and_its_revert_when_folded_in_either_order_then_the_state_is_the_same() {
    let (ann, bob) = (conversation_id(1), conversation_id(2));
    let merge = |stamp| Event::ConversationsMerged {
        sources: vec![bob],
        target: ann,
        stamp: Sequence(stamp),
    };
    let revert = Event::ConversationMergeReverted {
        source: bob,
        target: ann,
        merged_at: Sequence(10),
        stamp: Sequence(20),
    };
    let starts = [
        started(ann, ParticipantId::Visitor(visitor_id(1))),
        started(bob, ParticipantId::Visitor(visitor_id(2))),
    ];
    let forward = given(starts.iter().cloned().chain([merge(10), revert.clone()]));
    let backward = given(starts.iter().cloned().chain([revert.clone(), merge(10)]));
    assert_eq!(forward.inbox, backward.inbox);
    assert_eq!(forward.inbox.root_of(bob), bob);
    let again = given(starts.iter().cloned().chain([merge(10), revert, merge(30)]));
    assert_eq!(
        again.inbox.root_of(bob),
        ann,
        "a later merge of the pair counts"
    );
}

/// Each refusal names what stands in the way: a live conversation, a merge reverted already,
/// a target merged away since, and a merge of one person's conversations (a visitor
/// identified as a contact), which follows from that identity.
#[test]
fn given_merges_when_a_revert_is_refused_then_the_refusal_says_why() {
    let (mut spec, ann, bob, _, _) = two_people_merged();
    spec.when(Command::RevertConversationMerge { conversation: ann })
        .then_rejected(RevertMergeError::NotMerged(ann));
    spec.when(Command::RevertConversationMerge {
        conversation: conversation_id(99),
    })
    .then_rejected(Rejection::ConversationNotFound(conversation_id(99)));
    let events = spec.run(Command::RevertConversationMerge { conversation: bob });
    let [
        Event::ConversationMergeReverted {
            merged_at, stamp, ..
        },
    ] = events.as_slice()
    else {
        panic!("one revert");
    };
    spec.when(Command::RevertConversationMerge { conversation: bob })
        .then_rejected(RevertMergeError::AlreadyReverted {
            conversation: bob,
            target: ann,
            merged_at: *merged_at,
            reverted_at: *stamp,
        });

    // Bob merged into Ann again, and Ann into Cy later: Bob's merge must wait for Ann's.
    let cy = conversation_id(3);
    let later = Sequence(stamp.0 + 10);
    for e in [
        started(cy, ParticipantId::Visitor(visitor_id(3))),
        Event::ConversationsMerged {
            sources: vec![bob],
            target: ann,
            stamp: later,
        },
        Event::ConversationsMerged {
            sources: vec![ann],
            target: cy,
            stamp: Sequence(later.0 + 1),
        },
    ] {
        spec.inbox.apply_event(&e);
    }
    spec.when(Command::RevertConversationMerge { conversation: bob })
        .then_rejected(RevertMergeError::LaterMergeDepends {
            conversation: bob,
            target: ann,
            later_target: cy,
            later_at: Sequence(later.0 + 1),
        });

    // A visitor identified as a contact: one person, so the merge follows from the identity.
    let jo = contact_id(1);
    let mut spec = given_commands([create_contact(jo, "Jo", "jo@example.com")]);
    let visitor_conversation = ConversationId::from_uuid(spec.next_id());
    spec.run(Command::GetOrCreateConversation {
        participant: ParticipantId::Visitor(visitor_id(7)),
    });
    spec.run(Command::IdentifyVisitor {
        visitor: visitor_id(7),
        contact: jo,
    });
    let contact_conversation = spec.inbox.root_of(visitor_conversation);
    assert_ne!(visitor_conversation, contact_conversation);
    spec.when(Command::RevertConversationMerge {
        conversation: visitor_conversation,
    })
    .then_rejected(RevertMergeError::SamePerson {
        conversation: visitor_conversation,
        target: contact_conversation,
        person: ParticipantId::Contact(jo),
    });
}

/// A conversation's merge history lists each merge that shaped it, with its revert and the
/// messages it moved; previewing a revert gives both conversations as the revert would leave
/// them, and changes nothing.
#[test]
fn given_a_merge_when_its_history_is_read_and_its_revert_previewed_then_both_say_what_moved() {
    let (mut spec, ann, bob, before, merged_at) = two_people_merged();
    let history = spec.inbox.merge_history(bob).unwrap();
    assert_eq!(
        history,
        [inbox_core::MergeRecord {
            source: bob,
            target: ann,
            merged_at,
            reverted_at: None,
            messages: vec![before[1].id, before[3].id],
        }]
    );
    assert_eq!(
        spec.inbox.merge_history(ann).unwrap(),
        history,
        "the same from either side"
    );

    let state = spec.inbox.clone();
    let (restored, survivor) = spec.inbox.preview_revert(bob, spec.now()).unwrap();
    assert_eq!(spec.inbox, state, "a preview changes nothing");
    assert_eq!((restored.id, survivor.id), (bob, ann));
    assert_eq!(restored.redirected_from, None);
    assert!(matches!(
        spec.inbox.preview_revert(ann, spec.now()),
        Err(Rejection::RevertMerge(RevertMergeError::NotMerged(_)))
    ));

    let events = spec.run(Command::RevertConversationMerge { conversation: bob });
    let [Event::ConversationMergeReverted { stamp, .. }] = events.as_slice() else {
        panic!("one revert");
    };
    let history = spec.inbox.merge_history(bob).unwrap();
    assert_eq!(history[0].reverted_at, Some(*stamp));
    assert_eq!(history[0].messages, [before[1].id, before[3].id]);
    assert!(spec.inbox.merge_history(conversation_id(99)).is_err());
}
