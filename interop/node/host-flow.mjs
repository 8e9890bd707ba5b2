#!/usr/bin/env node
// Usage: NODE_EXTRA_CA_CERTS=<inboxd's cert> node host-flow.mjs <host:port> <siteId> <apiKey> <appId> <appSecret>
//
// Wix's SDK pointed at inboxd through its own host setting, with no custom fetch:
//   createClient({ modules, auth, host: { apiBaseUrl: '<host:port>' } })
// The SDK then speaks https to that host with the paths it uses for a host of its own
// (`/crm/inbox/v2/...`, `/_api/contacts/v4/...`); inboxd must serve TLS (the certificate is
// trusted through NODE_EXTRA_CA_CERTS) and those paths.
//
// 1. ApiKeyStrategy: create a contact, get its conversation, send a message, list it.
// 2. AppStrategy({ appId, appSecret, instanceId }): the SDK takes a token from
//    https://www.wixapis.com/oauth2/token. That URL is fixed in @wix/sdk
//    (build/auth/AppStrategy.js), not moved by apiBaseUrl, so an app must route it to inboxd
//    itself; here a global fetch wrapper sends that one URL to <host:port>/oauth2/token. The
//    message then sent is the app's. A wrong secret gets no token.
//
// Every request is logged by a pass-through wrapper of the global fetch (which the SDK uses:
// build/wixClient.js, `config.fetch ?? fetch`), so the paths can be checked. Prints one JSON
// line per step; the last is {"step": "done", "ok": true, "paths": [...], ...}. Exit 1 on
// a failure.
import { createClient, ApiKeyStrategy, AppStrategy } from '@wix/sdk';
import { messages, conversations } from '@wix/inbox';
import { contacts } from '@wix/crm';

const [host, siteId, apiKey, appId, appSecret] = process.argv.slice(2);
if (!appSecret) {
  process.stderr.write('usage: node host-flow.mjs <host:port> <siteId> <apiKey> <appId> <appSecret>\n');
  process.exit(2);
}

const realFetch = globalThis.fetch;
const paths = [];
globalThis.fetch = async (input, init = {}) => {
  const url = new URL(typeof input === 'object' && !(input instanceof URL) ? input.url : String(input));
  let target = url;
  if (url.href === 'https://www.wixapis.com/oauth2/token') {
    target = new URL(`https://${host}/oauth2/token`);
  } else if (url.host !== host) {
    throw new Error(`the SDK tried to reach ${url.origin}, not ${host}`);
  }
  const response = await realFetch(target, init);
  paths.push(`${(init.method ?? 'GET').toUpperCase()} ${target.protocol.replace(':', '')} ${target.pathname} ${response.status}`);
  return response;
};

let current = 'start';
async function step(name, fn) {
  current = name;
  const result = await fn();
  process.stdout.write(`${JSON.stringify({ step: name, ok: true, result })}\n`);
  return result;
}
function check(condition, what, actual) {
  if (!condition) throw new Error(`${what}; got ${JSON.stringify(actual)}`);
}

const modules = { messages, conversations, contacts };
async function main() {
  const byKey = createClient({ modules, auth: ApiKeyStrategy({ apiKey, siteId }), host: { apiBaseUrl: host } });
  const created = await step('createContact', () =>
    byKey.contacts.createContact({ name: { first: 'Host' }, emails: { items: [{ email: 'host@example.com' }] } }),
  );
  const contactId = created?.contact?._id;
  check(typeof contactId === 'string', 'createContact: an id', created);
  const goc = await step('getOrCreateConversation', () => byKey.conversations.getOrCreateConversation({ contactId }));
  const conversationId = goc?.conversation?._id;
  check(typeof conversationId === 'string', 'getOrCreateConversation: an id', goc);
  const sent = await step('sendMessage', () =>
    byKey.messages.sendMessage(conversationId, {
      content: { basic: { items: [{ text: 'over https, by api key' }] } },
      direction: 'BUSINESS_TO_PARTICIPANT',
    }),
  );
  check(sent?.message?.content?.basic?.items?.[0]?.text === 'over https, by api key', 'sendMessage: the text', sent);

  const asApp = createClient({
    modules,
    auth: AppStrategy({ appId, appSecret, instanceId: siteId }),
    host: { apiBaseUrl: host },
  });
  const appSent = await step('sendMessageAsApp', () =>
    asApp.messages.sendMessage(conversationId, {
      content: { basic: { items: [{ text: 'over https, as the app' }] } },
      direction: 'BUSINESS_TO_PARTICIPANT',
    }),
  );
  check(appSent?.message?.sender?.appId === appId, 'sendMessage as the app: sender.appId', appSent?.message?.sender);
  const listed = await step('listMessagesAsApp', () => asApp.messages.listMessages(conversationId, 'BUSINESS'));
  check(listed?.messages?.length === 2, 'listMessages as the app: both messages', listed);

  const wrong = createClient({
    modules,
    auth: AppStrategy({ appId, appSecret: 'wrong', instanceId: siteId }),
    host: { apiBaseUrl: host },
  });
  current = 'wrongSecret';
  let refused = null;
  const before = paths.length;
  try {
    await wrong.messages.listMessages(conversationId, 'BUSINESS');
  } catch (e) {
    // The SDK wraps what AppStrategy threw ("System error occurred"); the exchange shows
    // what happened.
    refused = String(e?.message ?? e);
  }
  const after = paths.slice(before);
  check(refused !== null, 'a wrong secret: the call fails', refused);
  check(after.length === 1 && after[0] === 'POST https /oauth2/token 401', 'a wrong secret: the token is refused with 401 and nothing else is sent', after);
  process.stdout.write(`${JSON.stringify({ step: 'wrongSecret', ok: true, refused })}\n`);

  process.stdout.write(`${JSON.stringify({ step: 'done', ok: true, contactId, conversationId, paths })}\n`);
}

main().catch((e) => {
  const line = JSON.stringify({ step: current, ok: false, error: String(e?.message ?? e), cause: String(e?.cause ?? ''), paths });
  process.stdout.write(`${line}\n`);
  process.stderr.write(`host-flow: ${line}\n`);
  process.exit(1);
});
