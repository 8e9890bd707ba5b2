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
import { createClient, ApiKeyStrategy } from '@wix/sdk';
import { messages, conversations } from '@wix/inbox';
import { contacts } from '@wix/crm';

const args = process.argv.slice(2);
const trace = args.includes('--trace');
const positional = args.filter((a) => a !== '--trace');
if (positional.length !== 3) {
  process.stderr.write('usage: node rest-flow.mjs [--trace] <baseUrl> <siteId> <apiKey>\n');
  process.exit(2);
}
const [baseUrlText, siteId, apiKey] = positional;
let baseUrl;
try {
  baseUrl = new URL(baseUrlText);
} catch {
  process.stderr.write(`rest-flow: not a URL: ${baseUrlText}\n`);
  process.exit(2);
}

// ------------------------------------------------------------------------------------------
// The custom fetch: every *.wixapis.com URL goes to baseUrl; anything else is refused, so a
// call the SDK would make elsewhere shows up as an error instead of leaving the machine.

const httpCalls = []; // {method, path, query, headers, status} of every exchange
let lastHttp = null;

function rewrite(url) {
  const u = new URL(url);
  if (u.hostname !== 'wixapis.com' && !u.hostname.endsWith('.wixapis.com')) {
    throw new Error(`the SDK tried to reach ${u.origin}, which is not a wixapis.com host`);
  }
  const out = new URL(baseUrl);
  out.pathname = baseUrl.pathname.replace(/\/$/, '') + u.pathname;
  out.search = u.search;
  return { original: u, target: out };
}

function headerObject(h) {
  const out = {};
  for (const [k, v] of new Headers(h ?? {}).entries()) {
    out[k] = k === 'authorization' ? (v === apiKey ? '<apiKey>' : `<${v.length} chars>`) : v;
  }
  return out;
}

async function wixFetch(input, init = {}) {
  const isRequest = typeof input === 'object' && input !== null && !(input instanceof URL);
  const { original, target } = rewrite(isRequest ? input.url : String(input));
  const method = (init.method ?? (isRequest ? input.method : 'GET')).toUpperCase();
  const headers = headerObject(init.headers ?? (isRequest ? input.headers : undefined));
  const requestBody = typeof init.body === 'string' ? init.body : undefined;
  // Recorded before the call, so a transport failure still shows what was attempted.
  lastHttp = { method, sdkUrl: original.href, to: target.href, headers, requestBody };
  const response = isRequest
    ? await fetch(new Request(target, input), init)
    : await fetch(target, init);
  const responseBody = await response.clone().text();
  const call = {
    method,
    sdkUrl: `${original.origin}${original.pathname}`,
    path: target.pathname,
    query: Object.fromEntries(target.searchParams.entries()),
    headers,
    status: response.status,
  };
  // The SDK's `.r` query parameter is base64url of the whole request as JSON: show it.
  if (call.query['.r'] !== undefined) {
    call.decodedR = JSON.parse(Buffer.from(call.query['.r'], 'base64url').toString('utf8'));
  }
  httpCalls.push(call);
  lastHttp = { ...call, requestBody, responseBody };
  if (trace) process.stderr.write(`${JSON.stringify({ http: lastHttp })}\n`);
  return response;
}

const client = createClient({
  modules: { messages, conversations, contacts },
  auth: ApiKeyStrategy({ apiKey, siteId }),
  fetch: wixFetch,
});

// ------------------------------------------------------------------------------------------
// Output and checks

class AssertionFailed extends Error {}

function check(condition, what, actual) {
  if (!condition) {
    const shown = actual === undefined ? '' : `; got ${JSON.stringify(actual)}`;
    throw new AssertionFailed(`${what}${shown}`);
  }
}

/** Paths (dot-separated) of every Date instance inside `value`. */
function datePaths(value, path = '', out = []) {
  if (value instanceof Date) {
    out.push(path);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => datePaths(v, path === '' ? String(i) : `${path}.${i}`, out));
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) datePaths(v, path === '' ? k : `${path}.${k}`, out);
  }
  return out;
}

function isValidDate(d) {
  return d instanceof Date && !Number.isNaN(d.getTime());
}

/** Whether everything in `sent` is in `got` with the same value (got may hold more). */
function contains(got, sent) {
  if (Array.isArray(sent)) {
    return Array.isArray(got) && got.length === sent.length && sent.every((s, i) => contains(got[i], s));
  }
  if (sent !== null && typeof sent === 'object') {
    return got !== null && typeof got === 'object' && Object.entries(sent).every(([k, v]) => contains(got[k], v));
  }
  return got === sent;
}

let currentStep = 'start';

async function step(name, fn) {
  currentStep = name;
  const result = await fn();
  process.stdout.write(`${JSON.stringify({ step: name, ok: true, result, dates: datePaths(result) })}\n`);
  return result;
}

function fail(e) {
  const out = { step: currentStep, ok: false, error: String(e?.message ?? e) };
  if (e instanceof AssertionFailed) {
    out.kind = 'assertion';
  } else {
    out.kind = 'sdk-error';
    out.errorName = e?.name;
    // SDK errors (@wix/sdk-runtime transform-error.js) carry the HTTP status, Wix's details
    // and the raw response body.
    if (e?.status !== undefined) out.status = e.status;
    if (e?.details !== undefined) out.details = e.details;
    if (e?.response?.data !== undefined) out.body = e.response.data;
    if (e?.response?.status !== undefined) out.httpStatus = e.response.status;
    if (e?.requestId) out.requestId = e.requestId;
    // A transport failure (no HTTP answer): the SDK replaces the message, the cause stays.
    const cause = e?.cause ?? e?.runtimeError?.cause;
    if (cause !== undefined) out.cause = `${cause?.code ?? ''} ${cause?.message ?? cause}`.trim();
    if (!(e?.status ?? e?.response) && e?.stack) out.stack = e.stack;
  }
  if (lastHttp) out.lastHttp = lastHttp;
  const line = JSON.stringify(out);
  process.stdout.write(`${line}\n`);
  process.stderr.write(`rest-flow: step ${currentStep} failed: ${out.error}\n${line}\n`);
  process.exit(1);
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NUMERIC = /^[0-9]+$/;

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
      const next = r.pagingMetadata?.cursors?.next;
      if (next === undefined || next === null || next === '') break;
      check(typeof next === 'string', `${label}: cursors.next is a string`, next);
      check(r.messages.length > 0, `${label}: a page with a next cursor is not empty`, r.messages.length);
      cursor = next;
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

  currentStep = 'done';
  process.stdout.write(
    `${JSON.stringify({
      step: 'done',
      ok: true,
      siteId,
      contactId,
      email,
      conversationId,
      messages: sent.map(({ kind, id, sequence, direction }) => ({ kind, id, sequence, direction })),
      httpCalls,
    })}\n`,
  );
}

main().catch(fail);
