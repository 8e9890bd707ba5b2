#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/seeds/<target>/seed-*) from the reference examples.

The targets take `arbitrary`-derived inputs, so a seed is the bytes that select an enum
variant (a little-endian u32 d with variant = d * n >> 32) followed by the payload, which the
last field takes whole. Run from anywhere: `python3 fuzz/seeds/make_seeds.py`.
"""
import json, os, re, struct, base64

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = HERE
FLOWS = os.path.join(HERE, "..", "..", "crates", "inbox-wix", "tests", "reference", "example-flows.md")


def variant(k, n):
    return struct.pack("<I", (k * 2**32 + n - 1) // n)


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def flow_blocks():
    """The JSON blocks of the example flows, comments stripped."""
    text = open(FLOWS).read() if os.path.exists(FLOWS) else ""
    out = []
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        lines = [l for l in block.splitlines() if not l.strip().startswith("//")]
        try:
            out.append(json.loads("\n".join(lines)))
        except ValueError:
            pass
    return out


GUID = "4e600edc-db48-5260-9d04-7ea5c3e5fffd"
CONV = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"

blocks = flow_blocks()
# The documented bodies, in case the reference folder is not there.
blocks += [
    {"query": {"filter": {"info.emails.email": {"$eq": "jo@example.com"}}, "fields": ["id"]}},
    {"participantId": {"contactId": GUID}},
    {"message": {"visibility": "BUSINESS", "content": {"basic": {"items": [{"text": "hi"}]}},
                 "badges": [{"text": "Facebook", "iconUrl": "https://example.com/f.png"}]},
     "direction": "PARTICIPANT_TO_BUSINESS"},
    {"message": {"visibility": "BUSINESS", "payload": {"type": "MINIMAL",
                 "minimal": {"text": "Booked Spa Treatment"}}},
     "direction": "PARTICIPANT_TO_BUSINESS"},
]

# rest_request: Input { GetOrCreate, Send, CreateContact, Merge, ListBody, Query, QueryR, Path }
# (8 variants), each Body { Bytes, Json } (2 variants).
N_REST = 8
for i, b in enumerate(blocks):
    raw = json.dumps(b).encode()
    if "participantId" in b:
        write("rest_request", f"flow-{i}", variant(0, N_REST) + variant(0, 2) + raw)
    elif "message" in b:
        b = dict(b, conversationId=CONV)
        write("rest_request", f"flow-{i}", variant(1, N_REST) + variant(0, 2) + json.dumps(b).encode())
    elif "query" in b:
        # contacts_filter: Input { Bytes, Any, Shaped } (3 variants).
        write("contacts_filter", f"flow-{i}", variant(0, 3) + raw)
write("rest_request", "create-contact", variant(2, N_REST) + variant(0, 2) + json.dumps(
    {"info": {"name": {"first": "Jo", "last": "March"},
              "emails": {"items": [{"email": "jo@example.com", "tag": "MAIN", "primary": True}]},
              "phones": {"items": [{"phone": "+1 555 0100", "tag": "MOBILE"}]}},
     "allow_duplicates": False}).encode())
write("rest_request", "merge", variant(3, N_REST) + variant(0, 2) + json.dumps(
    {"targetContactRevision": 2, "sourceContactIds": [GUID]}).encode())
write("rest_request", "send-template", variant(1, N_REST) + variant(0, 2) + json.dumps(
    {"conversation_id": CONV, "send_as": "BUSINESS_USER", "message": {"direction": "BUSINESS_TO_PARTICIPANT",
     "content": {"previewText": "We do!", "template": {"title": "We open 10-16", "textLines": ["Book?"],
     "buttons": [{"label": "Book", "postbackProperties": {"interactionId": "book"}},
                 {"label": "Site", "launchUrl": "https://example.com"}]}}}}).encode())
write("rest_request", "send-form", variant(1, N_REST) + variant(0, 2) + json.dumps(
    {"conversationId": CONV, "message": {"direction": "PARTICIPANT_TO_BUSINESS",
     "content": {"form": {"title": "Booking", "fields": [{"name": "When", "value": "Sunday"}]}}}}).encode())
write("rest_request", "query-dotted", variant(5, N_REST) + (
    f"conversationId={CONV}&visibility=BUSINESS_AND_PARTICIPANT&paging.limit=10&paging.cursor=abc"
    "&sorting.fieldName=sequence&sorting.order=ASC").encode())
r = base64.urlsafe_b64encode(json.dumps({"conversationId": CONV, "visibility": "BUSINESS",
    "paging": {"limit": 10, "cursor": "abc"}, "sorting": {"fieldName": "sequence", "order": "ASC"}}).encode()).rstrip(b"=")
write("rest_request", "query-r", variant(5, N_REST) + b".r=" + r)
write("rest_request", "path", variant(7, N_REST) + CONV.encode())

# contacts_filter: more of the documented filter language.
for i, q in enumerate([
    {"query": {"filter": {"$and": [{"primaryInfo.email": {"$startsWith": "jo"}},
                                   {"$not": {"id": {"$in": [GUID]}}}]},
               "sort": [{"fieldName": "createdDate", "order": "ASC"}],
               "paging": {"limit": 2, "offset": 1}, "fieldsets": ["BASIC"]}},
    {"query": {"filter": {"$or": [{"info.name.first": "Jo"}, {"primaryInfo.phone": {"$exists": True}}]}}},
    {"query": {"filter": {"createdDate": {"$gte": "2023-11-14T22:13:20Z"}}}, "search": None},
    {"query": {"filter": {"info.emails.email": {"$hasSome": ["jo@example.com"]}}, "fields": ["info.name"]}},
]):
    write("contacts_filter", f"doc-{i}", variant(0, 3) + json.dumps(q).encode())

# webhook_payload: Input { Raw, Structured } (2 variants): layer A strings as Wix sends them.
def layer_a(fqdn, slug, entity_id, body, identity):
    b = {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "entityFqdn": fqdn, "slug": slug,
         "entityId": entity_id, "eventTime": "2023-11-14T22:13:20Z", "actionEvent": {"body": body}}
    return json.dumps({"eventType": f"{fqdn}_{slug}", "instanceId": "6f1c0a3e-2b7d-4c55-9a0e-0d9c1b2a3f40",
                       "data": json.dumps(b), "identity": json.dumps(identity)})

VISITOR = {"identityType": "ANONYMOUS_VISITOR", "anonymousVisitorId": "00000000-0000-0000-0000-00000000a001"}
APP = {"identityType": "APP", "appId": "00000000-0000-0000-0000-000000000a99"}
msg = {"appId": "00000000-0000-0000-0000-000000000a99", "badges": [],
       "content": {"basic": {"items": [{"text": "Do you open on Sundays?"}]}},
       "createdDate": "2023-11-14T22:13:21Z", "direction": "PARTICIPANT_TO_BUSINESS", "id": "1700000001000000",
       "sender": {"anonymousVisitorId": "00000000-0000-0000-0000-00000000a001"}, "sequence": "1700000001000000",
       "silent": False, "targetChannels": [], "visibility": "BUSINESS_AND_PARTICIPANT"}
samples = {
    "to-business": layer_a("wix.crm.inbox.v2.message", "message_sent_to_business", "1700000001000000",
                           {"conversationId": CONV, "message": msg}, VISITOR),
    "to-participant": layer_a("wix.crm.inbox.v2.message", "message_sent_to_participant", "1700000002000000",
                              {"conversationId": CONV, "message": dict(msg, id="1700000002000000",
                               sequence="1700000002000000", direction="BUSINESS_TO_PARTICIPANT",
                               sender={"appId": "00000000-0000-0000-0000-000000000a99"},
                               content={"template": {"title": "We open 10-16", "buttons": [
                                   {"label": "Book", "postbackProperties": {"interactionId": "book-sunday"}}]}})},
                              APP),
    "button": layer_a("wix.crm.inbox.v2.message", "button_interacted", "1700000002000000",
                      {"conversationId": CONV, "appId": "00000000-0000-0000-0000-000000000a99",
                       "interactionId": "book-sunday", "interactedBy": VISITOR}, VISITOR),
    "merged": layer_a("wix.crm.inbox.v2.conversation", "conversations_merged", CONV,
                      {"oldConversationIds": ["6fa459ea-ee8a-3ca4-894e-db77e160355e"],
                       "targetConversationId": CONV}, {"identityType": "UNKNOWN"}),
    "unsupported": layer_a("wix.contacts.v4.contact", "created", GUID, {"id": GUID}, APP),
}
for name, a in samples.items():
    write("webhook_payload", name, variant(0, 2) + a.encode())
    # webhook_jwt: Input { Raw, Parts, Signed } (3 variants); Raw takes a token.
    claims = base64.urlsafe_b64encode(json.dumps({"data": a, "iat": 1700000000, "exp": 1700000300}).encode()).rstrip(b"=")
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=")
    write("webhook_jwt", name, variant(0, 3) + header + b"." + claims + b"." + b"c2lnbmF0dXJl")
write("webhook_jwt", "alg-none", variant(0, 3) + base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=") + b".e30.")
for i in range(4):
    write("webhook_jwt", f"signed-{i}", variant(2, 3) + struct.pack("<H", i * 37) + b"\x00" + struct.pack("<i", i * 100))

# cursor: Input { Text, Mutated } (2 variants).
write("cursor", "mutated", variant(1, 2) + bytes([0, 0, 0, 1, 10, 0, 0, 0, 1, 10]) + bytes([1, 3, 5, 7, 9]))
write("cursor", "text", variant(0, 2) + bytes([0, 0, 0, 0, 1, 10]) + b"AAAAAAAAAAAAAAAAAAAAAA")

# stateful: Input { ops: Vec<Op>, shuffle_seed, page_limit }; a few op bytes to start from.
write("stateful", "flow", bytes(range(0, 256, 7)) * 4)
