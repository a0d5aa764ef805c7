// The published SDK's caller against a function whose worker declares a back-off for rejections
// (issue 14): it knows nothing of retryOnRejection, yet gets the third attempt's value, and the
// last rejection when the attempts run out. Prints one JSON line; the SDK's poller never stops.
import { Differential } from "@differentialhq/core";

const d = new Differential(process.env.DIFFERENTIAL_API_SECRET, { endpoint: process.env.DIFFERENTIAL_ENDPOINT });
const client = d.client(process.env.SERVICE);
const out = { scenario: "backoff" };
try {
  out.value = await client.flaky("node");
} catch (e) {
  out.flakyError = String(e && e.message);
}
try {
  await client.alwaysFails("node");
  out.threw = false;
} catch (e) {
  out.threw = true;
  out.isError = e instanceof Error;
  out.message = e.message;
}
console.log(JSON.stringify(out));
process.exit(0);
