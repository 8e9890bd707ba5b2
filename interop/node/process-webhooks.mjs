#!/usr/bin/env node
// Usage: node process-webhooks.mjs [--sdk-only] <input.json>
//   input.json = {"appId": "...", "publicKey": "<PEM SPKI>", "jwts": ["...", ...]}
// Prints one JSON line per JWT (in order):
//   {"index": i, "ok": true, "handler": "onMessageSentToBusiness", "eventType": "...",
//    "event": <envelope the handler got, JSON>, "dates": ["metadata.eventTime", ...]}
//   {"index": i, "ok": false, "error": "<message>", "errorName": "...", "errorCode"?: "..."}
// --sdk-only: do not register the custom "message sent to participant" definition
//   (the SDK has none), so such webhooks are refused as the real SDK refuses them.
// Exit 0 once every JWT was processed (even if refused); 2 on bad usage / input file.
import { readFileSync } from 'node:fs';
import { createHarness } from './harness.mjs';

function fail(msg) {
  process.stderr.write(`process-webhooks: ${msg}\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
const sdkOnly = args.includes('--sdk-only');
const files = args.filter((a) => a !== '--sdk-only');
if (files.length !== 1) fail('usage: node process-webhooks.mjs [--sdk-only] <input.json>');

let input;
try {
  input = JSON.parse(readFileSync(files[0], 'utf8'));
} catch (e) {
  fail(`cannot read ${files[0]}: ${e.message}`);
}
if (input === null || typeof input !== 'object' || Array.isArray(input)) fail('input must be a JSON object');
if (typeof input.appId !== 'string') fail('"appId" must be a string');
if (typeof input.publicKey !== 'string' || input.publicKey === '') fail('"publicKey" must be a non-empty string');
if (!Array.isArray(input.jwts) || !input.jwts.every((j) => typeof j === 'string')) {
  fail('"jwts" must be an array of strings');
}

const harness = createHarness({ appId: input.appId, publicKey: input.publicKey, sdkOnly });
for (let i = 0; i < input.jwts.length; i++) {
  const result = await harness.processOne(input.jwts[i], i);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
