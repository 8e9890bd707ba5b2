#!/usr/bin/env node
// Usage: node catalog-flow.mjs [--trace] <baseUrl> <siteId> <apiKey>
//
// Drives inboxd's Labels and Extended Fields (Contacts v4) through Wix's own JavaScript SDK
// (`labels` and `extendedFields` of @wix/crm), the way an app does (see flow.mjs for the
// client and the output protocol):
//
//   labels: findOrCreateLabel (new, then found again) -> getLabel -> renameLabel ->
//   listLabels -> queryLabels (the SDK's builder) -> a contact labelled with it ->
//   deleteLabel (the contact loses it) -> getLabel of it (LABEL_NOT_FOUND);
//   extendedFields: findOrCreateExtendedField -> getExtendedField -> renameExtendedField ->
//   listExtendedFields -> queryExtendedFields -> a contact with a value (and one of the wrong
//   type: INVALID_EXTENDED_FIELD_VALUE) -> deleteExtendedField (the contact loses the value).
//
// The closing line is {"step": "done", "ok": true, "contactId", "httpCalls"}.
import { contacts, extendedFields, labels } from '@wix/crm';
import { startFlow } from './flow.mjs';

const { client, step, check, expectError, fail, finish, isValidDate } = startFlow('catalog-flow', {
  contacts,
  labels,
  extendedFields,
});

async function main() {
  // 1. Labels.
  const made = await step('findOrCreateLabel', () => client.labels.findOrCreateLabel('Returning Customer'));
  check(made?.newLabel === true, 'findOrCreateLabel: new', made);
  const label = made.label;
  check(label.key === 'custom.returning-customer', 'findOrCreateLabel: the key', label);
  check(label.namespace === 'custom' && label.labelType === 'USER_DEFINED', 'findOrCreateLabel: custom', label);
  check(isValidDate(label._createdDate), 'findOrCreateLabel: _createdDate is a Date', label);
  const found = await step('findOrCreateLabelAgain', () => client.labels.findOrCreateLabel('Returning Customer'));
  check(found?.newLabel === false && found.label.key === label.key, 'findOrCreateLabel: found again', found);
  const got = await step('getLabel', () => client.labels.getLabel(label.key));
  check(got?.displayName === 'Returning Customer', 'getLabel: the label', got);
  const renamed = await step('renameLabel', () => client.labels.renameLabel(label.key, { displayName: 'Regular' }));
  check(renamed?.displayName === 'Regular' && renamed.key === label.key, 'renameLabel: new name, same key', renamed);
  check(renamed._updatedDate > renamed._createdDate, 'renameLabel: updated after created', renamed);
  await step('findOrCreateLabel Other', () => client.labels.findOrCreateLabel('Other'));
  const listed = await step('listLabels', () => client.labels.listLabels({ startsWith: 'Reg' }));
  check(listed?.labels?.map((l) => l.key).join() === label.key, 'listLabels startsWith: the one', listed);
  const queried = await step('queryLabels', async () => {
    const r = await client.labels.queryLabels().eq('displayName', 'Other').find();
    return { keys: r.items.map((l) => l.key) };
  });
  check(queried.keys.join() === 'custom.other', 'queryLabels eq displayName: Other', queried);
  const ascending = await step('queryLabelsSorted', async () => {
    const r = await client.labels.queryLabels().descending('displayName').find();
    return { names: r.items.map((l) => l.displayName) };
  });
  check(ascending.names.join() === 'Regular,Other', 'queryLabels descending displayName', ascending);

  // 2. Extended fields.
  const field = await step('findOrCreateExtendedField', () =>
    client.extendedFields.findOrCreateExtendedField('Loyalty Points', 'NUMBER'),
  );
  check(field?.newField === true && field.field.key === 'custom.loyalty-points', 'findOrCreateExtendedField: new', field);
  check(field.field.dataType === 'NUMBER' && field.field.fieldType === 'USER_DEFINED', 'findOrCreateExtendedField: typed', field);
  const key = field.field.key;
  const gotField = await step('getExtendedField', () => client.extendedFields.getExtendedField(key));
  check(gotField?.displayName === 'Loyalty Points', 'getExtendedField: the field', gotField);
  const renamedField = await step('renameExtendedField', () =>
    client.extendedFields.renameExtendedField(key, { displayName: 'Points' }),
  );
  check(renamedField?.displayName === 'Points' && renamedField.key === key, 'renameExtendedField', renamedField);
  const fields = await step('listExtendedFields', () => client.extendedFields.listExtendedFields());
  check(fields?.fields?.map((f) => f.key).join() === key, 'listExtendedFields: the one', fields);
  const queriedFields = await step('queryExtendedFields', async () => {
    const r = await client.extendedFields.queryExtendedFields().eq('dataType', 'NUMBER').find();
    return { keys: r.items.map((f) => f.key) };
  });
  check(queriedFields.keys.join() === key, 'queryExtendedFields eq dataType', queriedFields);

  // 3. A contact carries both; deleting them takes them off it.
  await expectError('createContactWrongType', 400, 'INVALID_EXTENDED_FIELD_VALUE', () =>
    client.contacts.createContact({ name: { first: 'Lee' }, extendedFields: { items: { [key]: 'many' } } }),
  );
  const lee = (await step('createContact', () =>
    client.contacts.createContact({
      name: { first: 'Lee' },
      labelKeys: { items: [label.key] },
      extendedFields: { items: { [key]: 120 } },
    }),
  )).contact;
  check(lee.info.labelKeys.items.join() === label.key, 'createContact: the label', lee.info.labelKeys);
  check(lee.info.extendedFields.items[key] === 120, 'createContact: the value', lee.info.extendedFields);
  await step('deleteLabel', () => client.labels.deleteLabel(label.key));
  await expectError('getDeletedLabel', 404, 'LABEL_NOT_FOUND', () => client.labels.getLabel(label.key));
  await step('deleteExtendedField', () => client.extendedFields.deleteExtendedField(key));
  await expectError('getDeletedExtendedField', 404, 'EXTENDED_FIELD_NOT_FOUND', () =>
    client.extendedFields.getExtendedField(key),
  );
  const after = await step('getContact', () => client.contacts.getContact(lee._id));
  check(after.info.labelKeys.items.length === 0, 'the deleted label is off the contact', after.info.labelKeys);
  check(after.info.extendedFields?.items?.[key] === undefined, 'the deleted field is off the contact', after.info);
  check(after.revision === lee.revision + 2, 'two deletions, two revisions', after.revision);

  finish({ contactId: lee._id });
}

main().catch(fail);
