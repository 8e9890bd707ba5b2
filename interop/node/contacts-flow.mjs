#!/usr/bin/env node
// Usage: node contacts-flow.mjs [--trace] <baseUrl> <siteId> <apiKey>
//
// Drives inboxd's Contacts v4 surface through Wix's own JavaScript SDK (`contacts` of
// @wix/crm), the way an app does (see flow.mjs for the client and the output protocol):
//
//   findOrCreateLabel and findOrCreateExtendedField for what the contacts carry (a contact may
//   only carry the custom labels and fields its site defines) -> createContact (with
//   company, job title, birth date, locale, address, labels and an extended field) -> getContact -> getContact with fieldsets -> updateContact (the job title
//   only; the rest stays) -> updateContact with the stale revision (CONTACT_ALREADY_CHANGED)
//   -> labelContact -> unlabelContact -> a second contact -> queryContacts by label and by
//   company -> listFacets -> queryFacets -> listContacts (sorted, paged, FULL) -> previewMergeContacts -> mergeContacts -> getContact of the merged-away id (the
//   target) -> a third contact -> deleteContact -> getContact of it (CONTACT_NOT_FOUND) ->
//   bulkLabelAndUnlabelContacts, bulkUpdateContacts, bulkDeleteContacts by filter (and one
//   without a filter: NEITHER_FILTER_NOR_SEARCH).
//
// The closing line is {"step": "done", "ok": true, "contactId", "mergedId", "deletedId",
// "revision", "httpCalls"}.
import { randomUUID } from 'node:crypto';
import { contacts, extendedFields, labels } from '@wix/crm';
import { GUID, startFlow } from './flow.mjs';

const { client, step, check, expectError, fail, finish, isValidDate } = startFlow(
  'contacts-flow',
  { contacts, labels, extendedFields },
);

/** What the SDK types as always present on a contact. */
function checkAlwaysThere(what, c) {
  check(GUID.test(c?._id ?? ''), `${what}: _id is a GUID`, c?._id);
  check(typeof c.revision === 'number', `${what}: revision is a number`, c.revision);
  check(typeof c.source?.sourceType === 'string', `${what}: source.sourceType`, c.source);
  check(typeof c.lastActivity?.activityType === 'string', `${what}: lastActivity.activityType`, c.lastActivity);
  for (const list of ['emails', 'phones', 'addresses', 'labelKeys']) {
    check(Array.isArray(c.info?.[list]?.items), `${what}: info.${list}.items is an array`, c.info?.[list]);
  }
  check(typeof c.primaryEmail?.subscriptionStatus === 'string', `${what}: primaryEmail.subscriptionStatus`, c.primaryEmail);
  check(typeof c.primaryEmail?.deliverabilityStatus === 'string', `${what}: primaryEmail.deliverabilityStatus`, c.primaryEmail);
  check(typeof c.primaryPhone?.subscriptionStatus === 'string', `${what}: primaryPhone.subscriptionStatus`, c.primaryPhone);
  check(isValidDate(c._createdDate), `${what}: _createdDate is a valid Date`, c._createdDate);
}

async function main() {
  // 0. The labels and the extended field the contacts below carry.
  for (const [name, key] of [['VIP', 'custom.vip'], ['Lead', 'custom.lead'], ['Bulk', 'custom.bulk']]) {
    const made = await step(`findOrCreateLabel ${name}`, () => client.labels.findOrCreateLabel(name));
    check(made?.label?.key === key, `findOrCreateLabel ${name}: key ${key}`, made);
  }
  await expectError('createContactUnknownLabel', 404, 'LABEL_NOT_FOUND', () =>
    client.contacts.createContact({ name: { first: 'Nolabel' }, labelKeys: { items: ['custom.nothing'] } }),
  );
  const tier = await step('findOrCreateExtendedField Tier', () =>
    client.extendedFields.findOrCreateExtendedField('Tier', 'TEXT'),
  );
  check(tier?.field?.key === 'custom.tier', 'findOrCreateExtendedField: key custom.tier', tier);

  const email = `jo-${randomUUID()}@example.com`;
  const info = {
    name: { first: 'Jo', last: 'Contacts' },
    emails: { items: [{ email, tag: 'WORK', primary: true }] },
    phones: { items: [{ phone: '+1 555 0100', tag: 'MOBILE' }] },
    addresses: {
      items: [
        {
          tag: 'HOME',
          address: { city: 'Lisbon', country: 'PT', streetAddress: { number: '12', name: 'Rua Augusta' } },
        },
      ],
    },
    company: 'Acme',
    jobTitle: 'Engineer',
    birthdate: '1990-04-01',
    locale: 'en-US',
    labelKeys: { items: ['custom.vip'] },
    extendedFields: { items: { 'custom.tier': 'gold' } },
  };

  // 1. Create, get, get projected.
  const created = await step('createContact', () => client.contacts.createContact(info));
  const jo = created?.contact;
  checkAlwaysThere('createContact', jo);
  check(jo.source.sourceType === 'ADMIN', 'createContact: an API key creates as ADMIN', jo.source);
  check(jo.lastActivity.activityType === 'CONTACT_CREATED', 'createContact: last activity', jo.lastActivity);
  check(jo.info.company === 'Acme' && jo.info.jobTitle === 'Engineer', 'createContact: company and job title', jo.info);
  check(jo.info.birthdate === '1990-04-01' && jo.info.locale === 'en-US', 'createContact: birth date and locale', jo.info);
  check(jo.info.addresses.items[0]?.address?.streetAddress?.name === 'Rua Augusta', 'createContact: the address', jo.info.addresses);
  check(jo.info.addresses.items[0]?.address?.city === 'Lisbon', 'createContact: the address city', jo.info.addresses);
  check(GUID.test(jo.info.emails.items[0]?._id ?? ''), 'createContact: the email has an id', jo.info.emails.items[0]);
  check(jo.info.phones.items[0]?.tag === 'MOBILE', 'createContact: the phone tag', jo.info.phones.items[0]);
  check(jo.info.labelKeys.items.join() === 'custom.vip', 'createContact: the label', jo.info.labelKeys);
  check(jo.info.extendedFields?.items?.['custom.tier'] === 'gold', 'createContact: the extended field', jo.info.extendedFields);
  check(jo.primaryEmail.email === email, 'createContact: primaryEmail.email', jo.primaryEmail);
  const contactId = jo._id;

  const got = await step('getContact', () => client.contacts.getContact(contactId));
  checkAlwaysThere('getContact', got);
  check(got.revision === 1 && got.info.company === 'Acme', 'getContact: as created', got);
  const basic = await step('getContactBasic', () => client.contacts.getContact(contactId, { fieldsets: ['BASIC'] }));
  check(basic.info?.name?.first === 'Jo', 'getContact BASIC: the name', basic.info);
  check(basic.info?.company === undefined && basic.source === undefined, 'getContact BASIC: no company, no source', basic);

  // 2. Update the job title only: the rest stays; the stale revision is refused.
  const updated = await step('updateContact', () =>
    client.contacts.updateContact(contactId, { jobTitle: 'CTO' }, got.revision),
  );
  const u = updated?.contact;
  checkAlwaysThere('updateContact', u);
  check(u.revision === got.revision + 1, 'updateContact: revision + 1', u.revision);
  check(u.info.jobTitle === 'CTO' && u.info.company === 'Acme', 'updateContact: job title changed, company kept', u.info);
  check(u.info.emails.items[0]?._id === jo.info.emails.items[0]._id, 'updateContact: the email keeps its id', u.info.emails);
  await expectError('updateContactStale', 409, 'CONTACT_ALREADY_CHANGED', () =>
    client.contacts.updateContact(contactId, { company: 'Globex' }, got.revision),
  );

  // 3. Labels.
  const labelled = await step('labelContact', () =>
    client.contacts.labelContact(contactId, ['custom.lead', 'contacts.customers']),
  );
  check(
    labelled?.contact?.info?.labelKeys?.items?.join() === 'contacts.customers,custom.lead,custom.vip',
    'labelContact: three labels',
    labelled?.contact?.info?.labelKeys,
  );
  const unlabelled = await step('unlabelContact', () =>
    client.contacts.unlabelContact(contactId, ['custom.vip', 'custom.lead']),
  );
  check(
    unlabelled?.contact?.info?.labelKeys?.items?.join() === 'contacts.customers',
    'unlabelContact: one label left',
    unlabelled?.contact?.info?.labelKeys,
  );
  const revision = unlabelled.contact.revision;

  // 4. List, sorted by first name, one at a time.
  const ann = (await step('createAnn', () =>
    client.contacts.createContact({ name: { first: 'Ann' }, emails: { items: [{ email: `ann-${randomUUID()}@example.com` }] } }),
  )).contact;
  // 4a. Query by label and by company, with the SDK's query builder; the facets.
  const byLabel = await step('queryContactsByLabel', async () => {
    const r = await client.contacts.queryContacts().hasSome('info.labelKeys', ['contacts.customers']).find();
    return { ids: r.items.map((c) => c._id), totalCount: r.totalCount };
  });
  check(byLabel.ids.join() === contactId, 'queryContacts hasSome labelKeys: Jo alone', byLabel);
  const byCompany = await step('queryContactsByCompany', async () => {
    const r = await client.contacts.queryContacts().startsWith('info.company', 'Ac').find();
    return { ids: r.items.map((c) => c._id) };
  });
  check(byCompany.ids.join() === contactId, 'queryContacts startsWith company: Jo alone', byCompany);
  const facets = await step('listFacets', () => client.contacts.listFacets());
  const facet = (f, type, key) => f?.facets?.find((x) => x.facetType === type && (key === undefined || x.facetKey === key));
  check(facet(facets, 'ALL_CONTACTS')?.count === 2, 'listFacets: two contacts', facets);
  check(facet(facets, 'NOT_LABELED')?.count === 1, 'listFacets: one without labels', facets);
  check(facet(facets, 'LABEL', 'contacts.customers')?.count === 1, 'listFacets: one customer', facets);
  const queried = await step('queryFacets', () =>
    client.contacts.queryFacets({ filter: { 'info.name.first': 'Ann' } }),
  );
  check(facet(queried, 'ALL_CONTACTS')?.count === 1, 'queryFacets: Ann alone matches', queried);
  check(facet(queried, 'LABEL', 'contacts.customers') === undefined, 'queryFacets: no customer among them', queried);

  const listed = await step('listContacts', () =>
    client.contacts.listContacts({
      sort: { fieldName: 'info.name.first', order: 'ASC' },
      paging: { limit: 1, offset: 0 },
      fieldsets: ['FULL'],
    }),
  );
  check(listed?.contacts?.length === 1 && listed.contacts[0]._id === ann._id, 'listContacts: Ann first', listed?.contacts);
  check(listed.pagingMetadata?.total >= 2, 'listContacts: total counts both', listed?.pagingMetadata);
  const second = await step('listContactsPage2', () =>
    client.contacts.listContacts({ sort: { fieldName: 'info.name.first', order: 'ASC' }, paging: { limit: 1, offset: 1 } }),
  );
  check(second?.contacts?.[0]?._id === contactId, 'listContacts page 2: Jo', second?.contacts);

  // 5. Preview, merge Ann into Jo, and Ann's id answers with Jo.
  const preview = await step('previewMergeContacts', () =>
    client.contacts.previewMergeContacts(contactId, { sourceContactIds: [ann._id] }),
  );
  check(preview?.contact?.revision === revision + 1, 'previewMergeContacts: the next revision', preview?.contact);
  check(preview.contact.info.name.first === 'Ann', 'previewMergeContacts: the source name wins', preview.contact.info.name);
  const merged = await step('mergeContacts', () =>
    client.contacts.mergeContacts(contactId, revision, { sourceContactIds: [ann._id] }),
  );
  checkAlwaysThere('mergeContacts', merged?.contact);
  check(merged.contact.lastActivity.activityType === 'CONTACT_MERGED', 'mergeContacts: last activity', merged.contact.lastActivity);
  check(merged.contact.info.emails.items.length === 2, 'mergeContacts: both emails', merged.contact.info.emails);
  const viaAnn = await step('getMergedContact', () => client.contacts.getContact(ann._id));
  check(viaAnn?._id === contactId, "getContact of the merged id: the target", viaAnn?._id);

  // 6. Delete a third contact; it is gone.
  const kim = (await step('createKim', () =>
    client.contacts.createContact({ name: { first: 'Kim' } }),
  )).contact;
  await step('deleteContact', () => client.contacts.deleteContact(kim._id));
  await expectError('getDeletedContact', 404, 'CONTACT_NOT_FOUND', () => client.contacts.getContact(kim._id));
  await expectError('deleteContactAgain', 404, 'CONTACT_NOT_FOUND', () => client.contacts.deleteContact(kim._id));

  // 7. Bulk calls, by filter: label, update, delete (Wix answers a job id).
  for (const first of ['Bulk1', 'Bulk2']) {
    await step(`create${first}`, () => client.contacts.createContact({ name: { first }, company: 'BulkCo' }));
  }
  const bulkCo = { 'info.company': 'BulkCo' };
  const job = await step('bulkLabelAndUnlabelContacts', () =>
    client.contacts.bulkLabelAndUnlabelContacts({ filter: bulkCo, labelKeysToAdd: ['custom.bulk'] }),
  );
  check(typeof job?.jobId === 'string' && job.jobId.length > 0, 'bulkLabelAndUnlabelContacts: a job id', job);
  const labelled2 = await step('queryBulkLabelled', async () => {
    const r = await client.contacts.queryContacts().hasSome('info.labelKeys', ['custom.bulk']).find();
    return { count: r.items.length };
  });
  check(labelled2.count === 2, 'bulk labels: both contacts', labelled2);
  await step('bulkUpdateContacts', () => client.contacts.bulkUpdateContacts({ filter: bulkCo, info: { jobTitle: 'Bulk' } }));
  const titled = await step('queryBulkUpdated', async () => {
    const r = await client.contacts.queryContacts().eq('info.jobTitle', 'Bulk').find();
    return { count: r.items.length, revisions: r.items.map((c) => c.revision) };
  });
  check(titled.count === 2 && titled.revisions.every((r) => r === 3), 'bulk update: both, at revision 3', titled);
  await expectError('bulkDeleteWithoutFilter', 400, 'NEITHER_FILTER_NOR_SEARCH', () => client.contacts.bulkDeleteContacts({}));
  await step('bulkDeleteContacts', () => client.contacts.bulkDeleteContacts({ filter: bulkCo }));
  const gone = await step('queryBulkDeleted', async () => {
    const r = await client.contacts.queryContacts().eq('info.company', 'BulkCo').find();
    return { count: r.items.length };
  });
  check(gone.count === 0, 'bulk delete: none left', gone);

  finish({ contactId, mergedId: ann._id, deletedId: kim._id, revision: merged.contact.revision });
}

main().catch(fail);
