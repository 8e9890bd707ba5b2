// The shared part of the SDK flows (rest-flow.mjs, contacts-flow.mjs): the command line
// `node <flow>.mjs [--trace] <baseUrl> <siteId> <apiKey>`, a Wix client whose custom fetch
// sends what the SDK addresses to *.wixapis.com to <baseUrl>, and the output protocol: one
// JSON line per step, {"step", "ok": false, ...} and exit 1 on the first failure.
//
// @wix/sdk takes a custom fetch through createClient's `fetch` option (build/wixClient.js:
// `config.fetch ?? fetch`); its `host.apiBaseUrl` option only changes the host name and
// always uses https.
import { createClient, ApiKeyStrategy } from '@wix/sdk';

export const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const NUMERIC = /^[0-9]+$/;

/**
 * Reads the command line of flow `name` and returns the client over `modules`, with
 * `step`, `check`, `expectError`, `finish` and the record of every HTTP exchange.
 */
export function startFlow(name, modules) {
  const args = process.argv.slice(2);
  const trace = args.includes('--trace');
  const positional = args.filter((a) => a !== '--trace');
  if (positional.length !== 3) {
    process.stderr.write(`usage: node ${name}.mjs [--trace] <baseUrl> <siteId> <apiKey>\n`);
    process.exit(2);
  }
  const [baseUrlText, siteId, apiKey] = positional;
  let baseUrl;
  try {
    baseUrl = new URL(baseUrlText);
  } catch {
    process.stderr.write(`${name}: not a URL: ${baseUrlText}\n`);
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
    modules,
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
    process.stderr.write(`${name}: step ${currentStep} failed: ${out.error}\n${line}\n`);
    process.exit(1);
  }

  /** Runs `fn`, which must fail with an SDK error of HTTP `status` and Wix code `code`. */
  async function expectError(name, status, code, fn) {
    currentStep = name;
    let result;
    try {
      result = await fn();
    } catch (e) {
      const got = { status: e?.response?.status ?? e?.status, code: e?.details?.applicationError?.code };
      check(got.status === status && got.code === code, `${name}: refused with ${status} ${code}`, {
        ...got,
        details: e?.details,
      });
      process.stdout.write(`${JSON.stringify({ step: name, ok: true, refused: got })}\n`);
      return got;
    }
    throw new AssertionFailed(`${name}: expected ${status} ${code}; the call succeeded with ${JSON.stringify(result)}`);
  }

  /** Prints the closing line, `{"step": "done", "ok": true, ...extra, "httpCalls"}`. */
  function finish(extra) {
    currentStep = 'done';
    process.stdout.write(`${JSON.stringify({ step: 'done', ok: true, siteId, ...extra, httpCalls })}\n`);
  }

  return { client, siteId, step, check, expectError, fail, finish, isValidDate, contains, datePaths };
}
