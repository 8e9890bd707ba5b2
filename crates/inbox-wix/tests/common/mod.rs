//! What the adapter's tests share: a small emulator around the core (a virtual clock and
//! counted ids), the test keys, and fixed ids.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use inbox_core::contacts::{ContactDraft, ContactEmail, EntryTag};
use inbox_core::message::{ButtonDraft, ContentDraft, TemplateDraft};
use inbox_core::{
    AppId, Caller, Command, ContactId, Context, Direction, EventEnvelope, Inbox, InboxConfig,
    MessageDraft, ParticipantId, Rejection, SendAs, SequentialIds, SiteId, Timestamp, VisitorId,
};
use inbox_wix::webhook::{Announcement, WebhookSigner, WebhookVerifier, announcements};
use uuid::Uuid;

/// 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000_000;
/// The virtual clock moves one second per command.
pub const TICK: i64 = 1_000_000;

pub const SITE: &str = "6f1c0a3e-2b7d-4c55-9a0e-0d9c1b2a3f40";
pub const APP: AppId = AppId(Uuid::from_u128(0xA99));

pub fn visitor(n: u128) -> VisitorId {
    VisitorId(Uuid::from_u128(0xA000 + n))
}
pub fn contact(n: u128) -> ContactId {
    ContactId(Uuid::from_u128(0xC000 + n))
}

/// The core driven the way `inboxd` drives it, with a virtual clock.
pub struct World {
    pub inbox: Inbox,
    pub ids: SequentialIds,
    pub now: i64,
    pub caller: Caller,
}

impl World {
    pub fn new() -> Self {
        World {
            inbox: Inbox::new(InboxConfig::new(SiteId::new(SITE), [7; 16])),
            ids: SequentialIds::starting_at(0x1_0000),
            now: T0,
            caller: Caller::App(APP),
        }
    }

    pub fn ctx(&self) -> Context {
        Context {
            now: Timestamp::from_micros(self.now),
            caller: self.caller,
        }
    }

    pub fn try_run(&mut self, command: &Command) -> Result<Vec<EventEnvelope>, Rejection> {
        let ctx = self.ctx();
        self.now += TICK;
        self.inbox.execute(command, &ctx, &mut self.ids)
    }

    /// Defines labels (by display name) and extended fields, as Find Or Create does: a
    /// contact may only carry the custom ones its site defines.
    pub fn define(
        &mut self,
        labels: &[&str],
        fields: &[(&str, inbox_core::catalog::FieldDataType)],
    ) {
        for l in labels {
            self.run(&Command::FindOrCreateLabel {
                display_name: (*l).to_owned(),
            });
        }
        for (f, data_type) in fields {
            self.run(&Command::FindOrCreateExtendedField {
                display_name: (*f).to_owned(),
                data_type: *data_type,
            });
        }
    }

    pub fn run(&mut self, command: &Command) -> Vec<EventEnvelope> {
        self.try_run(command)
            .unwrap_or_else(|e| panic!("{command:?} was refused: {e}"))
    }
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub fn app_public_pem() -> String {
    String::from_utf8(key("app-public.pem")).unwrap()
}
pub fn app_private_pem() -> Vec<u8> {
    key("app-private.pem")
}
pub fn other_private_pem() -> Vec<u8> {
    key("other-private.pem")
}
pub fn app_signer() -> WebhookSigner {
    WebhookSigner::from_private_pem(&app_private_pem()).unwrap()
}
pub fn other_signer() -> WebhookSigner {
    WebhookSigner::from_private_pem(&other_private_pem()).unwrap()
}
pub fn app_verifier() -> WebhookVerifier {
    WebhookVerifier::from_public_pem(app_public_pem().as_bytes()).unwrap()
}

/// A flow that raises all four announced events: a visitor writes, the app answers with a
/// postback button, the visitor clicks it, then leaves an email and is merged into a contact.
pub fn flow() -> (World, Vec<Announcement>) {
    let mut w = World::new();
    let mut log = Vec::new();
    let v = ParticipantId::Visitor(visitor(1));
    record(
        &mut log,
        &mut w,
        &Command::GetOrCreateConversation { participant: v },
    );
    let conv = w.inbox.live_conversation_of(v).unwrap();
    record(
        &mut log,
        &mut w,
        &Command::SendMessage {
            conversation_id: conv,
            message: MessageDraft::text(
                "Do you open on Sundays?",
                Direction::ParticipantToBusiness,
            ),
            send_as: SendAs::Participant,
        },
    );
    record(
        &mut log,
        &mut w,
        &Command::SendMessage {
            conversation_id: conv,
            message: MessageDraft {
                content: ContentDraft {
                    preview_text: Some("We do!".into()),
                    template: Some(TemplateDraft {
                        title: Some("We open 10-16".into()),
                        text_lines: vec!["Book a table?".into()],
                        buttons: vec![ButtonDraft {
                            label: "Book".into(),
                            interaction_id: Some("book-sunday".into()),
                            ..ButtonDraft::default()
                        }],
                        ..TemplateDraft::default()
                    }),
                    ..ContentDraft::default()
                },
                direction: Some(Direction::BusinessToParticipant),
                ..MessageDraft::default()
            },
            send_as: SendAs::Caller,
        },
    );
    let template_id = w.inbox.messages_of(conv).last().unwrap().id;
    w.caller = Caller::Anonymous;
    record(
        &mut log,
        &mut w,
        &Command::InteractWithButton {
            conversation_id: conv,
            message_id: template_id,
            interaction_id: "book-sunday".into(),
        },
    );
    w.caller = Caller::App(APP);
    record(
        &mut log,
        &mut w,
        &Command::CreateContact {
            contact_id: contact(1),
            draft: ContactDraft {
                emails: vec![ContactEmail {
                    email: "jo@example.com".into(),
                    tag: EntryTag::Main,
                    primary: true,
                }],
                ..ContactDraft::default()
            },
        },
    );
    record(
        &mut log,
        &mut w,
        &Command::IdentifyVisitor {
            visitor: visitor(1),
            contact: contact(1),
        },
    );
    (w, log)
}

/// Runs a command and keeps what it announces, computed from the state right after it, as
/// a server does when it records the event.
pub fn record(log: &mut Vec<Announcement>, w: &mut World, command: &Command) {
    for e in w.run(command) {
        log.extend(announcements(&e, &w.inbox));
    }
}

/// Every contact change the emulator records, each with what it announces: three contacts
/// created with every detail, an update, a label change, a merge of the second into the
/// first, and the third deleted.
pub fn contacts_flow() -> (World, Vec<(EventEnvelope, Vec<Announcement>)>) {
    use inbox_core::contacts::{
        ContactAddress, ContactDetails, ContactPatch, ExtendedValue, PostalAddress,
    };
    let mut w = World::new();
    // What the contacts carry is defined first (and not recorded: catalog_flow covers it).
    w.define(
        &["VIP", "Lead"],
        &[("Score", inbox_core::catalog::FieldDataType::Number)],
    );
    let mut recorded = Vec::new();
    let mut run = |w: &mut World, command: Command| {
        for e in w.run(&command) {
            let announced = announcements(&e, &w.inbox);
            recorded.push((e, announced));
        }
    };
    let with = |email: &str| ContactDraft {
        emails: vec![ContactEmail {
            email: email.into(),
            tag: EntryTag::Work,
            primary: true,
        }],
        details: ContactDetails {
            company: Some("Acme".into()),
            addresses: vec![ContactAddress {
                tag: inbox_core::contacts::AddressTag::Billing,
                address: PostalAddress {
                    city: Some("Porto".into()),
                    street_number: Some("7".into()),
                    ..PostalAddress::default()
                },
            }],
            labels: ["custom.vip".to_owned()].into(),
            extended_fields: [(
                "custom.score".to_owned(),
                ExtendedValue::Number("4.5".into()),
            )]
            .into(),
            picture: Some("https://example.com/a.png".into()),
            ..ContactDetails::default()
        },
        ..ContactDraft::default()
    };
    run(
        &mut w,
        Command::CreateContact {
            contact_id: contact(1),
            draft: with("jo@example.com"),
        },
    );
    run(
        &mut w,
        Command::CreateContact {
            contact_id: contact(2),
            draft: with("ann@example.com"),
        },
    );
    run(
        &mut w,
        Command::CreateContact {
            contact_id: contact(3),
            draft: with("kim@example.com"),
        },
    );
    run(
        &mut w,
        Command::UpdateContact {
            contact_id: contact(1),
            expected_revision: 1,
            patch: ContactPatch {
                job_title: Some(Some("CTO".into())),
                ..ContactPatch::default()
            },
            allow_duplicates: false,
        },
    );
    run(
        &mut w,
        Command::LabelContact {
            contact_id: contact(1),
            add: ["custom.lead".to_owned()].into(),
            remove: Default::default(),
        },
    );
    run(
        &mut w,
        Command::MergeContacts {
            target: contact(1),
            expected_revision: 3,
            sources: vec![contact(2)],
        },
    );
    run(
        &mut w,
        Command::DeleteContact {
            contact_id: contact(3),
        },
    );

    (w, recorded)
}

/// Every catalog change the emulator records, each with what it announces: a label made,
/// renamed and deleted (off the contact that carried it), an extended field made, renamed and
/// deleted (off the contact that held a value).
pub fn catalog_flow() -> (World, Vec<(EventEnvelope, Vec<Announcement>)>) {
    use inbox_core::catalog::FieldDataType;
    use inbox_core::contacts::{ContactDetails, ExtendedValue};
    let mut w = World::new();
    let mut recorded = Vec::new();
    let mut run = |w: &mut World, command: Command| {
        for e in w.run(&command) {
            let announced = announcements(&e, &w.inbox);
            recorded.push((e, announced));
        }
    };
    run(
        &mut w,
        Command::FindOrCreateLabel {
            display_name: "VIP".into(),
        },
    );
    run(
        &mut w,
        Command::FindOrCreateExtendedField {
            display_name: "Score".into(),
            data_type: FieldDataType::Number,
        },
    );
    run(
        &mut w,
        Command::CreateContact {
            contact_id: contact(1),
            draft: ContactDraft {
                emails: vec![ContactEmail {
                    email: "jo@example.com".into(),
                    tag: EntryTag::Work,
                    primary: true,
                }],
                details: ContactDetails {
                    labels: ["custom.vip".to_owned()].into(),
                    extended_fields: [(
                        "custom.score".to_owned(),
                        ExtendedValue::Number("4.5".into()),
                    )]
                    .into(),
                    ..ContactDetails::default()
                },
                ..ContactDraft::default()
            },
        },
    );
    run(
        &mut w,
        Command::RenameLabel {
            key: "custom.vip".into(),
            display_name: "VIPs".into(),
        },
    );
    run(
        &mut w,
        Command::RenameExtendedField {
            key: "custom.score".into(),
            display_name: "Points".into(),
        },
    );
    run(
        &mut w,
        Command::DeleteLabel {
            key: "custom.vip".into(),
        },
    );
    run(
        &mut w,
        Command::DeleteExtendedField {
            key: "custom.score".into(),
        },
    );
    (w, recorded)
}
