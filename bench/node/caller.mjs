// One Node caller process on the published @differentialhq/core (run with cwd tests/node).
// env: DIFFERENTIAL_API_SECRET, DIFFERENTIAL_ENDPOINT, SERVICE.
// argv: mode ("burst" | "single"), count, deadline seconds.
//   burst:  fire `count` concurrent calls of echo(tag, i) and wait for all (or the deadline).
//   single: `count` calls one at a time, each made 2.5 s (+ 0-100 ms at random) after the previous
//           one finished, so the listener (which sleeps 2 s after every poll that returned) is back
//           in its long poll. The random part spreads the calls over the phase of the SDK's results
//           poller, which sends its status request only every 100 ms: without it the calls alias
//           onto that cycle and come out all fast or all slow.
// Prints one JSON line with completions, errors, lost, mismatches and latencies (ms).
// ESM resolves bare imports from the script's folder, not the cwd: require it from the cwd
// (tests/node, where the pinned package is installed).
import { createRequire } from "node:module";
const { Differential } = createRequire(`${process.cwd()}/`)("@differentialhq/core");

const [mode = "burst", countArg = "1000", deadlineArg = "600"] = process.argv.slice(2);
const count = Number(countArg);
const deadlineMs = Number(deadlineArg) * 1000;
const d = new Differential(process.env.DIFFERENTIAL_API_SECRET, { endpoint: process.env.DIFFERENTIAL_ENDPOINT });
const client = d.client(process.env.SERVICE);
const tag = `n${Date.now().toString(36)}`;
const lat = [];
const errors = {};
let completed = 0, mismatched = 0;
const t0 = performance.now();

async function one(i) {
  const s = performance.now();
  try {
    const r = await client.echo(tag, i);
    lat.push(performance.now() - s);
    completed++;
    if (!Array.isArray(r) || r[0] !== tag || r[1] !== i) mismatched++;
  } catch (e) {
    const k = String(e && e.message || e).slice(0, 80);
    errors[k] = (errors[k] ?? 0) + 1;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let stopped = false; // SIGTERM (run.py sends it when the listener died): report what we have
let wake;
const stoppedP = new Promise((r) => { wake = r; });
process.on("SIGTERM", () => { stopped = true; wake(); });
let timedOut = false;
const deadline = sleep(deadlineMs).then(() => { timedOut = true; });
if (mode === "burst") {
  await Promise.race([Promise.all(Array.from({ length: count }, (_, i) => one(i))), deadline, stoppedP]);
} else {
  await one(-1); // warm-up (connection, first poll); not counted
  lat.length = 0; completed = 0;
  for (let i = 0; i < count && !timedOut && !stopped; i++) {
    await sleep(2500 + Math.random() * 100);
    await Promise.race([one(i), deadline, stoppedP]);
  }
}
const elapsed = (performance.now() - t0) / 1000;
const sorted = [...lat].sort((a, b) => a - b);
const p = (q) => sorted.length ? +sorted[Math.max(0, Math.ceil(q / 100 * sorted.length) - 1)].toFixed(2) : null;
const errCount = Object.values(errors).reduce((a, b) => a + b, 0);
console.log(JSON.stringify({
  mode, calls: count, completed, mismatched, errors, lost: count - completed - errCount, timedOut, stopped,
  elapsed_s: +elapsed.toFixed(3), calls_per_s: +(completed / elapsed).toFixed(1),
  latency_ms: { p50: p(50), p95: p(95), p99: p(99), max: sorted.length ? +sorted.at(-1).toFixed(2) : null,
                min: sorted.length ? +sorted[0].toFixed(2) : null, all: mode === "single" ? lat.map((x) => +x.toFixed(2)) : undefined },
}));
process.exit(0); // the SDK's results poller never ends by itself
