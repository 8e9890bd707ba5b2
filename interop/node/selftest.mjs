#!/usr/bin/env node
// Self-test of the harness: signs webhooks the way inbox-engine is meant to (node:crypto,
// RS256, nesting from WIRE-FORMAT.md "Webhooks"), feeds them to Wix's SDK through
// harness.mjs and through the process-webhooks.mjs CLI, and asserts the outcome.
// Usage: node selftest.mjs [-v]     (exit 0 = all assertions passed)
import assert from 'node:assert/strict';
import { generateKeyPairSync, createSign, sign as cryptoSign, createHmac, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHarness, EVENT_TYPES } from './harness.mjs';

const verbose = process.argv.includes('-v');
const here = dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------- signing (no JWT library)
const b64url = (buf) => Buffer.from(buf).toString('base64url');
const keyPair = () =>
  generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });

function signJwt(payload, privateKey, alg = 'RS256') {
  const header = b64url(JSON.stringify({ alg, typ: 'JWT' }));
  const body = b64url(JSON.stringify(payload));
  const input = `${header}.${body}`;
  let sig;
  if (alg === 'none') sig = '';
  else if (alg === 'RS256' || alg === 'RS512') sig = createSign(`SHA${alg.slice(2)}`).update(input).sign(privateKey);
  else if (alg === 'PS256') sig = cryptoSign('sha256', Buffer.from(input), { key: privateKey, padding: 6, saltLength: 32 });
  else if (alg === 'HS256') sig = createHmac('sha256', privateKey).update(input).digest();
  else throw new Error(`alg ${alg}`);
  return `${input}.${b64url(sig)}`;
}

// ---------------------------------------------------------------- documented nesting
const APP_ID = '0b6b7b6e-0000-4000-8000-00000000a99d';
const INSTANCE_ID = '5d6a2c30-1111-4111-8111-1234567890ab';
const CONV_ID = '8c3f4a5e-2222-4222-8222-0123456789ab';
const MSG_ID = '1f2e3d4c-3333-4333-8333-0123456789ab';
const CONTACT_ID = 'c0ffee00-4444-4444-8444-0123456789ab';
const VISITOR_ID = 'a1b2c3d4-5555-4555-8555-0123456789ab';
const now = () => Math.floor(Date.now() / 1000);

/** B -> A -> JWT payload, each inner level a JSON *string*. */
function webhookPayload({ entityFqdn, slug, entityId, body, identity, eventType, extraB = {}, extraA = {}, claims }) {
  const B = {
    id: randomUUID(),
    entityFqdn,
    slug,
    entityId,
    eventTime: '2026-01-02T03:04:05.678Z',
    actionEvent: { body },
    ...extraB,
  };
  const A = {
    eventType: eventType ?? `${entityFqdn}_${slug}`,
    instanceId: INSTANCE_ID,
    data: JSON.stringify(B),
    ...(identity === undefined ? {} : { identity: JSON.stringify(identity) }),
    ...extraA,
  };
  const t = now();
  return { payload: { data: JSON.stringify(A), ...(claims ?? { iat: t, exp: t + 3600 }) }, B, A };
}

const visitor = { identityType: 'ANONYMOUS_VISITOR', anonymousVisitorId: VISITOR_ID };
const message = (direction) => ({
  id: MSG_ID,
  content: { basic: { items: [{ text: 'Hello there' }] } },
  sender: direction === 'PARTICIPANT_TO_BUSINESS' ? { anonymousVisitorId: VISITOR_ID, contactId: CONTACT_ID } : { appId: APP_ID },
  sourceChannel: 'CHAT',
  visibility: 'BUSINESS_AND_PARTICIPANT',
  sequence: '7',
  direction,
  createdDate: '2026-01-02T03:04:05.000Z',
});
const MSG = 'wix.crm.inbox.v2.message';
const CONV = 'wix.crm.inbox.v2.conversation';
const events = {
  sentToBusiness: () =>
    webhookPayload({ entityFqdn: MSG, slug: 'message_sent_to_business', entityId: MSG_ID, identity: visitor,
      body: { conversationId: CONV_ID, message: message('PARTICIPANT_TO_BUSINESS') } }),
  sentToParticipant: () =>
    webhookPayload({ entityFqdn: MSG, slug: 'message_sent_to_participant', entityId: MSG_ID,
      identity: { identityType: 'APP', appId: APP_ID },
      body: { conversationId: CONV_ID, message: message('BUSINESS_TO_PARTICIPANT') } }),
  buttonInteracted: () =>
    webhookPayload({ entityFqdn: MSG, slug: 'button_interacted', entityId: MSG_ID, identity: visitor,
      body: { conversationId: CONV_ID, appId: APP_ID, interactionId: 'yes-please',
        interactedBy: { anonymousVisitorId: VISITOR_ID, contactId: CONTACT_ID } } }),
  conversationsMerged: () =>
    webhookPayload({ entityFqdn: CONV, slug: 'conversations_merged', entityId: CONV_ID,
      identity: { identityType: 'WIX_USER', wixUserId: 'e5f6a7b8-6666-4666-8666-0123456789ab' },
      body: { oldConversationIds: ['11111111-7777-4777-8777-000000000001', '11111111-7777-4777-8777-000000000002'],
        targetConversationId: CONV_ID } }),
};

// ---------------------------------------------------------------- tiny test runner
let failures = 0;
let passes = 0;
async function check(name, fn) {
  try {
    await fn();
    passes++;
    console.log(`PASS ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n     ${String(e?.stack ?? e).split('\n').slice(0, 6).join('\n     ')}`);
  }
}
const show = (r) => verbose && console.log(`     ${JSON.stringify(r)}`);

// ---------------------------------------------------------------- the seven required JWTs
const key = keyPair();
const other = keyPair();
const built = {
  sentToBusiness: events.sentToBusiness(),
  sentToParticipant: events.sentToParticipant(),
  buttonInteracted: events.buttonInteracted(),
  conversationsMerged: events.conversationsMerged(),
};
const good = Object.values(built).map(({ payload }) => signJwt(payload, key.privateKey));
const tampered = (() => {
  const [h, , s] = good[0].split('.');
  const p = structuredClone(built.sentToBusiness.payload);
  p.data = p.data.replace(INSTANCE_ID, '99999999-9999-4999-8999-999999999999');
  return `${h}.${b64url(JSON.stringify(p))}.${s}`;
})();
const otherKey = signJwt(events.sentToBusiness().payload, other.privateKey);
const algNone = signJwt(events.sentToBusiness().payload, null, 'none');
const required = [...good, tampered, otherKey, algNone];

const harness = createHarness({ appId: APP_ID, publicKey: key.publicKey });
const results = await harness.processAll(required);
results.forEach(show);

const expectHandler = (r, handler) => {
  assert.equal(r.ok, true, `expected ok, got ${JSON.stringify(r)}`);
  assert.equal(r.handler, handler);
};
const expectRefused = (r, re) => {
  assert.equal(r.ok, false, `expected refusal, got ${JSON.stringify(r)}`);
  assert.match(r.error, re);
};

await check('message sent to business -> onMessageSentToBusiness', () => {
  const r = results[0];
  expectHandler(r, 'onMessageSentToBusiness');
  const { B } = built.sentToBusiness;
  assert.equal(r.eventType, EVENT_TYPES.onMessageSentToBusiness);
  assert.deepEqual(r.event.data, {
    conversationId: CONV_ID,
    message: { ...(({ id, createdDate, ...m }) => m)(message('PARTICIPANT_TO_BUSINESS')),
      _id: MSG_ID, _createdDate: '2026-01-02T03:04:05.000Z' },
  });
  assert.deepEqual(r.event.metadata, {
    instanceId: INSTANCE_ID,
    identity: visitor,
    _id: B.id,
    entityFqdn: MSG,
    slug: 'message_sent_to_business',
    entityId: MSG_ID,
    eventTime: '2026-01-02T03:04:05.678Z',
  });
  assert.deepEqual(r.dates.sort(), ['data.message._createdDate', 'metadata.eventTime']);
});
await check('message sent to participant -> onMessageSentToParticipant (custom definition)', () => {
  expectHandler(results[1], 'onMessageSentToParticipant');
  assert.equal(results[1].custom, true);
  assert.equal(results[1].event.data.message._id, MSG_ID);
  assert.deepEqual(results[1].event.metadata.identity, { identityType: 'APP', appId: APP_ID });
});
await check('button interacted -> onMessageButtonInteracted', () => {
  const r = results[2];
  expectHandler(r, 'onMessageButtonInteracted');
  assert.equal(r.eventType, 'wix.crm.inbox.v2.message_button_interacted');
  assert.deepEqual(r.event.data, built.buttonInteracted.B.actionEvent.body);
  assert.deepEqual(r.dates, ['metadata.eventTime']);
});
await check('conversations merged -> onConversationConversationsMerged', () => {
  const r = results[3];
  expectHandler(r, 'onConversationConversationsMerged');
  assert.deepEqual(r.event.data, built.conversationsMerged.B.actionEvent.body);
  assert.equal(r.event.metadata._id, built.conversationsMerged.B.id);
});
await check('tampered payload is refused', () => expectRefused(results[4], /^signature verification failed$/));
await check('JWT signed with another key is refused', () => expectRefused(results[5], /^signature verification failed$/));
await check('alg "none" is refused', () => expectRefused(results[6], /^alg none is not supported either by JOSE or your javascript runtime$/));

// ---------------------------------------------------------------- the same through the CLI
await check('process-webhooks.mjs CLI prints the same lines', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wix-webhooks-'));
  try {
    const file = join(dir, 'input.json');
    writeFileSync(file, JSON.stringify({ appId: APP_ID, publicKey: key.publicKey, jwts: required }));
    const out = execFileSync(process.execPath, [join(here, 'process-webhooks.mjs'), file], { encoding: 'utf8' });
    const lines = out.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines, results);
    // --sdk-only: the SDK alone has no handler for message_sent_to_participant
    const sdkOnly = execFileSync(process.execPath, [join(here, 'process-webhooks.mjs'), '--sdk-only', file], { encoding: 'utf8' })
      .trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(sdkOnly[1].ok, false);
    assert.match(sdkOnly[1].error, /^Unexpected event type: wix\.crm\.inbox\.v2\.message_message_sent_to_participant\. Expected one of: /);
    assert.deepEqual(sdkOnly.filter((_, i) => i !== 1), results.filter((_, i) => i !== 1));
    // bad input file -> exit code 2
    writeFileSync(file, '{"appId": 1}');
    assert.throws(() => execFileSync(process.execPath, [join(here, 'process-webhooks.mjs'), file], { stdio: 'pipe' }),
      (e) => e.status === 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- probes of SDK behaviour (documented in README.md)
const probe = async (payloadOrJwt, opts = {}) => {
  const h = opts.harness ?? harness;
  const jwt = typeof payloadOrJwt === 'string' ? payloadOrJwt : signJwt(payloadOrJwt, opts.privateKey ?? key.privateKey, opts.alg);
  const r = await h.processOne(jwt, 0);
  show(r);
  return r;
};
const sent = (args = {}) =>
  webhookPayload({ entityFqdn: MSG, slug: 'message_sent_to_business', entityId: MSG_ID, identity: visitor,
    body: { conversationId: CONV_ID, message: message('PARTICIPANT_TO_BUSINESS') }, ...args }).payload;

await check('probe: expired exp is refused (no clock tolerance)', async () =>
  expectRefused(await probe(sent({ claims: { iat: now() - 7200, exp: now() - 1 } })), /^"exp" claim timestamp check failed$/));
await check('probe: no iat and no exp is accepted (neither is required)', async () =>
  expectHandler(await probe(sent({ claims: {} })), 'onMessageSentToBusiness'));
await check('probe: iat in the future is accepted (iat only has to be a number)', async () =>
  expectHandler(await probe(sent({ claims: { iat: now() + 86400 } })), 'onMessageSentToBusiness'));
await check('probe: non-numeric iat is refused', async () =>
  expectRefused(await probe(sent({ claims: { iat: 'yesterday' } })), /^"iat" claim must be a number$/));
await check('probe: nbf in the future is refused', async () =>
  expectRefused(await probe(sent({ claims: { nbf: now() + 3600 } })), /^"nbf" claim timestamp check failed$/));
await check('probe: iss/aud are not checked for webhooks', async () =>
  expectHandler(await probe(sent({ claims: { iss: 'not-wix', aud: 'someone-else' } })), 'onMessageSentToBusiness'));
await check('probe: RS512 and PS256 with the right key are accepted too (no alg allow-list)', async () => {
  expectHandler(await probe(sent(), { alg: 'RS512' }), 'onMessageSentToBusiness');
  expectHandler(await probe(sent(), { alg: 'PS256' }), 'onMessageSentToBusiness');
});
await check('probe: HS256 keyed with the public-key PEM is refused', async () =>
  expectRefused(await probe(sent(), { alg: 'HS256', privateKey: key.publicKey }), /Key for the HS256 algorithm must be of type|secret/));
await check('probe: dispatch uses A.eventType only (B.entityFqdn/slug are ignored)', async () => {
  const r = await probe(sent({ eventType: EVENT_TYPES.onMessageButtonInteracted }));
  expectHandler(r, 'onMessageButtonInteracted');
  assert.equal(r.event.metadata.slug, 'message_sent_to_business');
});
await check('probe: unknown eventType is refused with "Unexpected event type", naming every registered one', async () => {
  const r = await probe(sent({ eventType: 'wix.crm.inbox.v2.message_nope' }));
  expectRefused(r, /^Unexpected event type: wix\.crm\.inbox\.v2\.message_nope\. Expected one of: /);
  const named = r.error.replace(/^.*Expected one of: /, '').split(', ').sort();
  assert.deepEqual(named, Object.values(EVENT_TYPES).sort());
});
await check('probe: actionEvent.bodyAsJson alone reaches the handler with NO data', async () => {
  const B = { id: randomUUID(), entityFqdn: MSG, slug: 'message_sent_to_business', entityId: MSG_ID,
    eventTime: '2026-01-02T03:04:05.678Z', actionEvent: { bodyAsJson: JSON.stringify({ conversationId: CONV_ID }) } };
  const r = await probe({ data: JSON.stringify({ eventType: EVENT_TYPES.onMessageSentToBusiness, instanceId: INSTANCE_ID, data: JSON.stringify(B) }) });
  expectHandler(r, 'onMessageSentToBusiness');
  assert.equal(r.event.data, undefined);
});
await check('probe: actionEvent.body plus bodyAsJson -> body wins, bodyAsJson dropped', async () => {
  const r = await probe(sent({ extraB: { actionEvent: { body: { conversationId: CONV_ID }, bodyAsJson: '{"x":1}' } } }));
  assert.deepEqual(r.event.data, { conversationId: CONV_ID });
  assert.equal(JSON.stringify(r.event).includes('bodyAsJson'), false);
});
await check('probe: no actionEvent at all -> handler gets {entity: undefined, metadata}', async () => {
  const r = await probe(sent({ extraB: { actionEvent: undefined } }));
  expectHandler(r, 'onMessageSentToBusiness');
  assert.deepEqual(Object.keys(r.event), ['metadata']);
});
await check('probe: identity omitted -> metadata has no identity; extra B fields pass through', async () => {
  const r = await probe(sent({ identity: undefined, extraB: { triggeredByAnonymizeRequest: false, originatedFrom: 'x', entityEventSequence: '3' } }));
  expectHandler(r, 'onMessageSentToBusiness');
  assert.equal('identity' in r.event.metadata, false);
  assert.equal(r.event.metadata.originatedFrom, 'x');
  assert.equal(r.event.metadata.entityEventSequence, '3');
  assert.equal(r.event.metadata.triggeredByAnonymizeRequest, false);
});
await check('probe: accountInfo in A reaches metadata.accountInfo', async () => {
  const r = await probe(sent({ extraA: { accountInfo: { accountId: 'acc', siteId: 'site' } } }));
  assert.deepEqual(r.event.metadata.accountInfo, { accountId: 'acc', siteId: 'site' });
});
await check('probe: JWT data as an object (not a string) is refused', async () =>
  expectRefused(await probe({ data: { eventType: EVENT_TYPES.onMessageSentToBusiness } }), /^Unexpected type of JWT data: expected string, got object$/));
await check('probe: A.identity as an object (not a string) is refused', async () =>
  expectRefused(await probe(sent({ extraA: { identity: visitor } })), /is not valid JSON|Unexpected token/));
await check('probe: A.data (B) as an object (not a string) is refused', async () =>
  expectRefused(await probe(sent({ extraA: { data: { id: 'x' } } })), /is not valid JSON|Unexpected token/));
await check('probe: unparseable eventTime becomes null (Invalid Date)', async () => {
  const r = await probe(sent({ extraB: { eventTime: 'not a date' } }));
  expectHandler(r, 'onMessageSentToBusiness');
  assert.equal(r.event.metadata.eventTime, null);
});
await check('probe: publicKey given as base64 of the PEM (one line) is accepted', async () => {
  const h = createHarness({ appId: APP_ID, publicKey: Buffer.from(key.publicKey).toString('base64') });
  expectHandler(await probe(sent(), { harness: h }), 'onMessageSentToBusiness');
});
await check('probe: PKCS#1 "RSA PUBLIC KEY" PEM is refused', async () => {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'pkcs1', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  const h = createHarness({ appId: APP_ID, publicKey });
  expectRefused(await probe(sent(), { harness: h }), /"spki" must be SPKI formatted string/);
});

console.log(`\n${passes} passed, ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
