// A worker for tests/compat/test_node_execute.py: a TypeScript-style service on the published SDK
// that POST /clusters/:id/execute calls with JSON arguments. Prints {"ready":true} once serving.
import { Differential } from "@differentialhq/core";

const d = new Differential(process.env.DIFFERENTIAL_API_SECRET, { endpoint: process.env.DIFFERENTIAL_ENDPOINT });
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

class GreetingError extends Error {
  constructor(message) {
    super(message);
    this.name = "GreetingError";
    this.code = "E_GREET";
    this.retryable = false;
  }
}

const kind = (v) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);

const svc = d.service({
  name: process.env.SERVICE,
  functions: {
    identity: async (value) => value,
    // What the function received, as JavaScript sees it: the same as from an SDK caller.
    kinds: async (...args) => args.map(kind),
    describe: async (value) => ({ kind: kind(value), json: JSON.stringify(value) }),
    jsValues: async () => ({
      date: new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)),
      wholeSecond: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)),
      before1970: new Date(Date.UTC(1900, 0, 1)),
      invalidDate: new Date(NaN),
      buffer: Buffer.from([0, 1, 255]),
      undef: undefined,
      nan: NaN,
      inf: -Infinity,
      float: 0.1,
      past32Bits: 2 ** 40,
      set: new Set([1, 2]),
      // No Map or BigInt: the published SDK refuses to send either (its pack -> unpack -> pack check).
    }),
    nothing: async () => undefined,
    fail: async (reason) => { throw new GreetingError(`cannot greet: ${reason}`); },
    slow: async (ms) => { await new Promise((r) => setTimeout(r, ms)); return { slept: ms }; },
  },
});
await svc.start();
say({ ready: true });
