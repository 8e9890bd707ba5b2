#!/usr/bin/env node
// Usage: node rest-flow.mjs [--trace] <baseUrl> <siteId> <apiKey>
//
// Drives inboxd's REST surface through Wix's own JavaScript SDK, the way an app does:
//   createClient({ modules: { messages, conversations, contacts },
//                  auth: ApiKeyStrategy({ apiKey, siteId }), fetch })
// where `fetch` sends what the SDK addresses to https://www.wixapis.com (or any other
// *.wixapis.com host, e.g. edge.wixapis.com) to <baseUrl> instead. @wix/sdk takes a custom
// fetch through createClient's `fetch` option (build/wixClient.js: `config.fetch ?? fetch`);
// its `host.apiBaseUrl` option only changes the host name and always uses https.
//
// Steps: create a contact; query contacts by email; get-or-create its conversation (twice);
// send one message of each content type an app may send (basic text, image, file; template
// with a launch and a postback button; minimal; form) and one PARTICIPANT_TO_BUSINESS message
// as the participant; list messages two at a time following cursors.next (newest first),
// three at a time oldest first, and participant-visible only; get the conversation.
//
// Prints one JSON line per step to stdout: {"step", "ok": true, "result": <what the SDK
// returned, through JSON.stringify>, "dates": [paths that were Date objects]}, then
// {"step": "done", "ok": true, "contactId", "conversationId", "messages": [{"kind", "id",
// "sequence", "direction"}], "httpCalls": [...]}. On an SDK error or a failed assertion it
// prints {"step", "ok": false, "error", "status"?, "details"?, "body"?, "lastHttp"?} to stdout
// and stderr and exits 1; exit 2 on bad usage. --trace prints every HTTP exchange to stderr.
import { randomUUID } from 'node:crypto';
import { messages, conversations } from '@wix/inbox';
import { contacts } from '@wix/crm';
import { GUID, NUMERIC, startFlow } from './flow.mjs';

const { client, step, check, fail, finish, isValidDate, contains } = startFlow('rest-flow', {
  messages,
  conversations,
  contacts,
});

// ------------------------------------------------------------------------------------------
// The flow

async function main() {
  const email = `sdk-${randomUUID()}@example.com`;

  // 1. Create a contact.
  const created = await step('createContact', () =>
    client.contacts.createContact({
      name: { first: 'Jo', last: 'Sdk' },
      emails: { items: [{ email, tag: 'MAIN', primary: true }] },
    }),
  );
  const contact = created?.contact;
  check(contact && GUID.test(contact._id ?? ''), 'createContact: contact._id must be a GUID', contact?._id);
  check(contact.info?.emails?.items?.[0]?.email === email, 'createContact: the email comes back', contact.info);
  check(contact.info?.name?.first === 'Jo', 'createContact: the first name comes back', contact.info?.name);
  check(typeof contact.revision === 'number' && contact.revision >= 1, 'createContact: revision is a number >= 1', contact.revision);
  check(isValidDate(contact._createdDate), 'createContact: _createdDate is a valid Date', contact._createdDate);
  const contactId = contact._id;

  // 2. Query contacts by email, with the SDK's query builder.
  const found = await step('queryContacts', async () => {
    const r = await client.contacts.queryContacts().eq('info.emails.email', email).find();
    return { items: r.items, totalCount: r.totalCount, length: r.length, hasNext: r.hasNext() };
  });
  check(found.items.length === 1, 'queryContacts: exactly one contact has the email', found.items.length);
  check(found.items[0]._id === contactId, 'queryContacts: it is the created contact', found.items[0]._id);
  check(found.totalCount === 1, 'queryContacts: totalCount is 1', found.totalCount);
  check(found.hasNext === false, 'queryContacts: no next page', found.hasNext);

  // 3. Get or create its conversation; a second call gets the same one.
  const goc = await step('getOrCreateConversation', () =>
    client.conversations.getOrCreateConversation({ contactId }),
  );
  const conversation = goc?.conversation;
  check(conversation && GUID.test(conversation._id ?? ''), 'getOrCreateConversation: conversation._id is a GUID', conversation?._id);
  check(goc.newConversation === true, 'getOrCreateConversation: the first call creates it', goc.newConversation);
  check(conversation.participant?.contactId === contactId, 'getOrCreateConversation: participant.contactId', conversation.participant);
  const conversationId = conversation._id;
  const again = await step('getOrCreateConversationAgain', () =>
    client.conversations.getOrCreateConversation({ contactId }),
  );
  check(again.newConversation === false, 'getOrCreateConversation again: not new', again.newConversation);
  check(again.conversation?._id === conversationId, 'getOrCreateConversation again: same id', again.conversation?._id);

  // 4. One message of every content type an app may send, and one from the participant.
  const B2P = 'BUSINESS_TO_PARTICIPANT';
  const cases = [
    {
      kind: 'basic-text',
      message: {
        direction: B2P,
        content: { basic: { items: [{ text: 'Hello from the Wix SDK' }] }, previewText: 'Hello', title: 'Greeting' },
        badges: [{ text: 'SDK', badgeVisibility: 'BUSINESS' }],
        targetChannels: ['CHAT'],
      },
    },
    {
      kind: 'basic-image',
      message: {
        direction: B2P,
        content: {
          basic: {
            items: [
              { image: { url: 'https://static.wixstatic.com/media/sdk-test.png', filename: 'sdk-test.png', width: 640, height: 480 } },
            ],
          },
        },
      },
    },
    {
      kind: 'basic-file',
      message: {
        direction: B2P,
        content: {
          basic: {
            items: [{ file: { url: 'https://example.com/files/menu.pdf', filename: 'menu.pdf', mimeType: 'application/pdf' } }],
          },
        },
      },
    },
    {
      kind: 'template',
      message: {
        direction: B2P,
        content: {
          template: {
            title: 'Book a table',
            textLines: ['Tonight from 18:00', 'Tomorrow all day'],
            imageUrl: 'https://static.wixstatic.com/media/table.jpg',
            orientation: 'LANDSCAPE',
            buttons: [
              { label: 'See the menu', launchUrl: 'https://example.com/menu' },
              { label: 'Book', postbackProperties: { interactionId: 'book-table' } },
            ],
          },
        },
      },
    },
    {
      kind: 'minimal',
      message: {
        direction: B2P,
        visibility: 'BUSINESS',
        content: { minimal: { text: 'Jo looked at the menu', iconUrl: 'https://example.com/eye.svg', url: 'https://example.com/menu' } },
      },
    },
    {
      kind: 'form',
      message: {
        direction: B2P,
        content: {
          form: {
            title: 'Booking request',
            description: 'What Jo asked for',
            fields: [
              { name: 'Party size', value: '4' },
              { name: 'Time', value: '19:30' },
            ],
          },
        },
      },
      // The deprecated top-level `silent` still silences (`sendNotifications` is about
      // notifications and does not: tests/rest.rs of inbox-wix).
      options: { sendNotifications: false, silent: true },
      expect: { silent: true },
    },
    {
      kind: 'participant-text',
      message: {
        direction: 'PARTICIPANT_TO_BUSINESS',
        sourceChannel: 'CHAT',
        content: { basic: { items: [{ text: 'Can I bring a dog?' }] } },
      },
      options: { sendAs: 'PARTICIPANT' },
    },
  ];

  const sent = [];
  for (const c of cases) {
    const r = await step(`sendMessage:${c.kind}`, () =>
      client.messages.sendMessage(conversationId, c.message, c.options),
    );
    const m = r?.message;
    const what = `sendMessage ${c.kind}`;
    check(m && NUMERIC.test(m._id ?? ''), `${what}: message._id is a numeric string`, m?._id);
    check(NUMERIC.test(m.sequence ?? ''), `${what}: sequence is an int64 string`, m.sequence);
    check(isValidDate(m._createdDate), `${what}: _createdDate is a valid Date`, m._createdDate);
    check(contains(m, c.message), `${what}: the stored message holds everything sent`, m);
    check(m.visibility === (c.message.visibility ?? 'BUSINESS_AND_PARTICIPANT'), `${what}: visibility`, m.visibility);
    check(m.silent === (c.expect?.silent ?? false), `${what}: silent`, m.silent);
    if (c.options?.sendAs === 'PARTICIPANT') {
      check(m.sender?.contactId === contactId, `${what}: sent as the participant (sender.contactId)`, m.sender);
    } else {
      // An API key acts as a Wix user of its site (inboxd's choice; see src/http.rs `tenant`).
      check(typeof m.sender?.wixUserId === 'string', `${what}: sent as the caller (sender.wixUserId)`, m.sender);
    }
    for (const s of sent) check(s.id !== m._id, `${what}: a fresh id`, m._id);
    sent.push({ kind: c.kind, id: m._id, sequence: m.sequence, direction: m.direction, message: m });
  }
  const sentById = new Map(sent.map((s) => [s.id, s]));
  const sequenceOf = (m) => BigInt(m.sequence);

  // 5. List messages two at a time, newest first (the default), following cursors.next.
  async function listAll(label, visibility, limit, sorting) {
    const pages = [];
    const prevs = [];
    let cursor;
    for (let page = 0; ; page++) {
      check(page < 50, `${label}: paging ends`, page);
      const paging = cursor === undefined ? { limit } : { limit, cursor };
      const r = await step(`${label}:page${page}`, () =>
        client.messages.listMessages(conversationId, visibility, sorting ? { paging, sorting } : { paging }),
      );
      check(Array.isArray(r?.messages), `${label}: messages is an array`, r);
      check(r.messages.length <= limit, `${label}: at most ${limit} per page`, r.messages.length);
      check(r.pagingMetadata?.count === r.messages.length, `${label}: pagingMetadata.count is the page size`, r.pagingMetadata);
      pages.push(r.messages);
      prevs.push(r.pagingMetadata?.cursors?.prev);
      const next = r.pagingMetadata?.cursors?.next;
      if (next === undefined || next === null || next === '') break;
      check(typeof next === 'string', `${label}: cursors.next is a string`, next);
      check(r.messages.length > 0, `${label}: a page with a next cursor is not empty`, r.messages.length);
      cursor = next;
    }
    // cursors.prev: none on the first page; from the last, the page before it again.
    check(prevs[0] === undefined || prevs[0] === null, `${label}: the first page has no prev`, prevs[0]);
    if (pages.length > 1) {
      const prev = prevs[pages.length - 1];
      check(typeof prev === 'string', `${label}: a later page has cursors.prev`, prev);
      const paging = { limit, cursor: prev };
      const back = await step(`${label}:prev`, () =>
        client.messages.listMessages(conversationId, visibility, sorting ? { paging, sorting } : { paging }),
      );
      const ids = (ms) => JSON.stringify(ms.map((m) => m._id));
      check(ids(back.messages) === ids(pages[pages.length - 2]), `${label}: prev gives the page before the last`, back.messages.map((m) => m._id));
    }
    return pages;
  }

  function checkListing(label, pages, expectedIds, order) {
    const all = pages.flat();
    const ids = all.map((m) => m._id);
    check(new Set(ids).size === ids.length, `${label}: no message twice`, ids);
    check(
      ids.length === expectedIds.length && expectedIds.every((id) => ids.includes(id)),
      `${label}: exactly the expected messages, each once (expected ${JSON.stringify(expectedIds)})`,
      ids,
    );
    for (let i = 1; i < all.length; i++) {
      const [a, b] = [sequenceOf(all[i - 1]), sequenceOf(all[i])];
      check(order === 'DESC' ? a > b : a < b, `${label}: ordered by sequence ${order}`, ids);
    }
    for (const m of all) {
      const s = sentById.get(m._id);
      check(isValidDate(m._createdDate), `${label}: _createdDate of ${m._id} is a valid Date`, m._createdDate);
      check(
        JSON.stringify(m) === JSON.stringify(s.message),
        `${label}: message ${m._id} (${s.kind}) is listed as Send Message answered it (${JSON.stringify(s.message)})`,
        m,
      );
    }
  }

  const allIds = sent.map((s) => s.id);
  const desc = await listAll('listMessages', 'BUSINESS', 2);
  check(desc.length === Math.ceil(allIds.length / 2), `listMessages: ${Math.ceil(allIds.length / 2)} pages of 2`, desc.length);
  checkListing('listMessages', desc, allIds, 'DESC');

  const asc = await listAll('listMessagesAsc', 'BUSINESS', 3, { fieldName: 'sequence', order: 'ASC' });
  checkListing('listMessagesAsc', asc, allIds, 'ASC');

  const visibleIds = sent.filter((s) => s.message.visibility !== 'BUSINESS').map((s) => s.id);
  const visible = await listAll('listMessagesParticipantVisible', 'BUSINESS_AND_PARTICIPANT', 100);
  checkListing('listMessagesParticipantVisible', visible, visibleIds, 'DESC');

  // 6. Get the conversation.
  const got = await step('getConversation', () => client.conversations.getConversation(conversationId));
  check(got?._id === conversationId, 'getConversation: same id', got?._id);
  check(got.participant?.contactId === contactId, 'getConversation: participant.contactId', got.participant);

  finish({
    contactId,
    email,
    conversationId,
    messages: sent.map(({ kind, id, sequence, direction }) => ({ kind, id, sequence, direction })),
  });
}

main().catch(fail);
