// Caller side of the compat tests: runs one scenario (argv[2]) against SERVICE and prints one
// JSON line {"scenario":..., ...facts} for Python to assert on. The published SDK's results
// poller never stops, hence process.exit at the end.
import { createHash } from "node:crypto";
import { Differential } from "@differentialhq/core";

const d = new Differential(process.env.DIFFERENTIAL_API_SECRET, { endpoint: process.env.DIFFERENTIAL_ENDPOINT });
const service = process.env.SERVICE;
const client = d.client(service);
const scenario = process.argv[2];
const sha = (v) => createHash("sha256").update(v).digest("hex");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function values() {
  const nested = await client.nested();
  const when = await client.when(1704164645678);
  const nothing = await client.nothing();
  const unicode = "héllo 🎉👩‍👩‍👧 日本語 中文 한국어";
  return {
    greet: await client.greet("Ada"),
    add: await client.add(2, 40),
    float: await client.add(0.1, 0.2),
    nested,
    whenIsDate: when instanceof Date,
    whenMs: when instanceof Date ? when.getTime() : null,
    nothingIsUndefined: nothing === undefined,
    unicodeIn: unicode,
    unicodeOut: (await client.echo(unicode))[0],
    unicodeGreet: await client.greet("世界🌍"),
  };
}

async function big() {
  const n = Number(process.env.BIG_BYTES || 1024 * 1024);
  const s = "x".repeat(n - 3) + "🎉".slice(0, 2) + "z"; // odd tail so truncation shows
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = (i * 31) & 0xff;
  const [echoedS] = await client.echo(s);
  const [echoedB] = await client.echo(buf);
  const bigS = await client.bigString(n);
  const bigB = await client.bigBuffer(n);
  return {
    argStringSize: await client.sizeOf(s), stringSize: Buffer.byteLength(s),
    argBufferSize: await client.sizeOf(buf),
    echoStringSame: echoedS === s, echoStringSha: sha(echoedS), stringSha: sha(s),
    echoBufferIsBytes: echoedB instanceof Uint8Array, echoBufferSame: Buffer.from(echoedB).equals(buf),
    resultStringBytes: Buffer.byteLength(bigS), resultStringOk: bigS === "é".repeat(n / 2),
    resultBufferIsBytes: bigB instanceof Uint8Array, resultBufferLength: bigB.length,
    resultBufferOk: Buffer.from(bigB).every((x) => x === 7),
  };
}

async function error() {
  try {
    await client.fail("no reason");
    return { threw: false };
  } catch (e) {
    return { threw: true, isError: e instanceof Error, name: e.name, code: e.code, message: e.message,
             stackFirstLine: String(e.stack).split("\n")[0] };
  }
}

async function cache() {
  const key = `k-${Date.now()}`;
  const $d = { cache: { key, ttlSeconds: 60 } };
  const first = await client.counted(key, { $d });
  const second = await client.counted(key, { $d });
  const third = await client.counted(key, { $d });
  const uncached = await client.counted(key); // no $d: must run the body again
  return { first, second, third, uncached, executions: await client.executions(`counted:${key}`) };
}

async function background() {
  const viaBackground = await d.background(service, "greet", "Bob");
  const viaClient = await d.client(service, { background: true }).add(20, 22);
  return { viaBackground, viaClient };
}

async function concurrent() {
  const n = Number(process.env.CALLS || 500);
  const started = Date.now();
  const results = await Promise.all(Array.from({ length: n }, (_, i) => client.square(i)));
  const wrong = results.map((r, i) => (r === i * i ? null : { i, r })).filter(Boolean);
  return { n, received: results.length, wrong: wrong.slice(0, 5), wrongCount: wrong.length, ms: Date.now() - started };
}

async function stalled() {
  // Resolves only when some worker finishes the job: B, after A is killed and the job stalls.
  const started = Date.now();
  const result = await client.block(process.env.TAG || "t");
  return { result, ms: Date.now() - started };
}

async function latency() {
  // Each sample waits out the worker's 2 s throttle first, so the call lands while it long-polls.
  const samples = [];
  for (let i = 0; i < Number(process.env.SAMPLES || 5); i++) {
    await sleep(2600);
    const t = performance.now();
    const r = await client.add(i, 1);
    samples.push({ ms: performance.now() - t, ok: r === i + 1 });
  }
  return { samples };
}

async function slow() {
  return { result: await client.slow(Number(process.env.SLOW_MS || 1500)), executions: await client.executions("slow") };
}

async function cancelled() {
  // Cancelled mid-call from outside (tests/compat/test_node_cancel.py): the call must throw.
  const started = Date.now();
  try {
    const result = await client.slow(Number(process.env.SLOW_MS || 8000));
    return { threw: false, result };
  } catch (e) {
    return { threw: true, isError: e instanceof Error, name: e.name, code: e.code, message: e.message,
             ms: Date.now() - started };
  }
}

const scenarios = { slow,  values, big, error, cache, background, concurrent, stalled, latency, cancelled };
const out = await scenarios[scenario]();
process.stdout.write(JSON.stringify({ scenario, ...out }) + "\n");
process.exit(0);
