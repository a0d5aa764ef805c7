// A long-running worker for the compat tests: registers SERVICE with the functions below and
// serves until killed. WORKER_NAME tells two workers of one service apart (stall test).
// Prints one JSON line per notable event: {"ready":true}, {"started":"block", ...}.
import { Differential } from "@differentialhq/core";

const d = new Differential(process.env.DIFFERENTIAL_API_SECRET, { endpoint: process.env.DIFFERENTIAL_ENDPOINT });
const worker = process.env.WORKER_NAME || "worker";
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

class GreetingError extends Error {
  constructor(message) {
    super(message);
    this.name = "GreetingError";
    this.code = "E_GREET";
  }
}

const executions = {}; // function name -> times its body ran in this process
const count = (name) => (executions[name] = (executions[name] || 0) + 1);

const svc = d.service({
  name: process.env.SERVICE,
  functions: {
    greet: async (name) => `Hello, ${name}!`,
    add: async (a, b) => a + b,
    echo: async (...args) => args,
    nested: async () => ({ a: { b: [1, "two", { c: true, d: null }] }, n: -1.5 }),
    when: async (ms) => new Date(ms),
    nothing: async () => undefined,
    fail: async (reason) => { throw new GreetingError(`cannot greet: ${reason}`); },
    // Cached-call test: the caller checks the body ran once however often it is called.
    counted: async (key) => ({ key, run: count(`counted:${key}`) }),
    executions: async (name) => executions[name] || 0,
    // Big payloads: build the result here so "result ~1 MB" does not depend on the argument.
    bigString: async (n) => "é".repeat(n / 2), // "é" is 2 bytes in UTF-8
    bigBuffer: async (n) => Buffer.alloc(n, 7),
    sizeOf: async (v) => (typeof v === "string" ? Buffer.byteLength(v) : v.length),
    square: async (i) => i * i,
    // Takes a while, so a wrongly stalled attempt would be retried while it still runs.
    slow: async (ms) => { await new Promise((r) => setTimeout(r, ms)); return count("slow"); },
    // Stall test: worker A never finishes (it is SIGKILLed); any other worker answers at once.
    block: async (tag) => {
      say({ started: "block", worker, tag });
      if (worker === "A") await new Promise(() => {});
      return `done by ${worker}: ${tag}`;
    },
  },
});
await svc.start();
say({ ready: true, worker });
