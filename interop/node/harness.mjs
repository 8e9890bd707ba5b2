// Shared logic of process-webhooks.mjs and selftest.mjs: feeds JWTs to Wix's own
// `client.webhooks.process(jwt)` and records which handler received what.
import { createClient, AppStrategy } from '@wix/sdk';
import { messages, conversations } from '@wix/inbox';
import { contacts, extendedFields, labels } from '@wix/crm';

export const EVENT_TYPES = {
  onMessageSentToBusiness: 'wix.crm.inbox.v2.message_message_sent_to_business',
  onMessageSentToParticipant: 'wix.crm.inbox.v2.message_message_sent_to_participant',
  onMessageButtonInteracted: 'wix.crm.inbox.v2.message_button_interacted',
  onConversationConversationsMerged: 'wix.crm.inbox.v2.conversation_conversations_merged',
  onContactCreated: 'wix.contacts.v4.contact_created',
  onContactUpdated: 'wix.contacts.v4.contact_updated',
  onContactDeleted: 'wix.contacts.v4.contact_deleted',
  onContactMerged: 'wix.contacts.v4.contact_merged',
  onLabelCreated: 'wix.contacts.v4.label_created',
  onLabelUpdated: 'wix.contacts.v4.label_updated',
  onLabelDeleted: 'wix.contacts.v4.label_deleted',
  onExtendedFieldCreated: 'wix.contacts.v4.extended-field_created',
  onExtendedFieldUpdated: 'wix.contacts.v4.extended-field_updated',
  onExtendedFieldDeleted: 'wix.contacts.v4.extended-field_deleted',
};

// @wix/inbox 1.0.103 (@wix/auto_sdk_inbox_messages 1.0.41) exports NO event definition for
// "message sent to participant". Unless `sdkOnly` is set, we register one built exactly like
// the SDK builds its own (see README.md): same envelope logic in @wix/sdk, and the same
// transformations as onMessageSentToBusiness (the body shape {conversationId, message} is
// identical). Results for it carry `"custom": true`.
const sentToParticipantDefinition = {
  __type: 'event-definition',
  type: EVENT_TYPES.onMessageSentToParticipant,
  isDomainEvent: true,
  transformations: messages.onMessageSentToBusiness.transformations,
};

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

/**
 * Creates the client exactly as an app would:
 *   createClient({ auth: AppStrategy({ appId, publicKey }),
 *                  modules: { messages, conversations, contacts, labels, extendedFields } })
 * and registers handlers for the four Inbox events, the four contact events, and the three
 * events each of labels and extended fields.
 */
export function createHarness({ appId, publicKey, sdkOnly = false }) {
  const client = createClient({
    auth: AppStrategy({ appId, publicKey }),
    modules: { messages, conversations, contacts, labels, extendedFields },
  });

  let calls = [];
  const record = (handler) => (event) => {
    // Snapshot now: JSON keeps the shape, datePaths records what the SDK turned into Date.
    calls.push({ handler, event: JSON.parse(JSON.stringify(event)), dates: datePaths(event) });
  };
  client.messages.onMessageSentToBusiness(record('onMessageSentToBusiness'));
  client.messages.onMessageButtonInteracted(record('onMessageButtonInteracted'));
  client.conversations.onConversationConversationsMerged(record('onConversationConversationsMerged'));
  client.contacts.onContactCreated(record('onContactCreated'));
  client.contacts.onContactUpdated(record('onContactUpdated'));
  client.contacts.onContactDeleted(record('onContactDeleted'));
  client.contacts.onContactMerged(record('onContactMerged'));
  client.labels.onLabelCreated(record('onLabelCreated'));
  client.labels.onLabelUpdated(record('onLabelUpdated'));
  client.labels.onLabelDeleted(record('onLabelDeleted'));
  client.extendedFields.onExtendedFieldCreated(record('onExtendedFieldCreated'));
  client.extendedFields.onExtendedFieldUpdated(record('onExtendedFieldUpdated'));
  client.extendedFields.onExtendedFieldDeleted(record('onExtendedFieldDeleted'));
  if (!sdkOnly) {
    client.use(sentToParticipantDefinition)(record('onMessageSentToParticipant'));
  }

  /** Processes one JWT; never throws. Returns the result object printed by the CLI. */
  async function processOne(jwt, index) {
    calls = [];
    let returned;
    try {
      returned = await client.webhooks.process(jwt);
    } catch (e) {
      const out = { index, ok: false, error: String(e?.message ?? e), errorName: e?.name };
      if (e?.code !== undefined) out.errorCode = e.code;
      return out;
    }
    if (calls.length === 0) {
      return {
        index,
        ok: false,
        error: `no handler was called (eventType ${JSON.stringify(returned?.eventType)})`,
        eventType: returned?.eventType,
      };
    }
    if (calls.length > 1) {
      return {
        index,
        ok: false,
        error: `${calls.length} handlers were called: ${calls.map((c) => c.handler).join(', ')}`,
        eventType: returned?.eventType,
      };
    }
    const [{ handler, event, dates }] = calls;
    const out = { index, ok: true, handler, eventType: returned.eventType, event, dates };
    if (handler === 'onMessageSentToParticipant') out.custom = true;
    return out;
  }

  async function processAll(jwts) {
    const results = [];
    for (let i = 0; i < jwts.length; i++) results.push(await processOne(jwts[i], i));
    return results;
  }

  return { client, processOne, processAll };
}
