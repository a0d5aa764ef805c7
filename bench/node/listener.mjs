// One Node listener on the published @differentialhq/core (run with cwd tests/node).
// env: DIFFERENTIAL_API_SECRET, DIFFERENTIAL_ENDPOINT, SERVICE. Prints "ready"; counts executions
// per call id and, on SIGTERM/SIGINT, prints {"executions":N,"duplicates":M} and exits.
// ESM resolves bare imports from the script's folder, not the cwd: require it from the cwd
// (tests/node, where the pinned package is installed).
import { createRequire } from "node:module";
const { Differential } = createRequire(`${process.cwd()}/`)("@differentialhq/core");

const d = new Differential(process.env.DIFFERENTIAL_API_SECRET, { endpoint: process.env.DIFFERENTIAL_ENDPOINT });
const seen = new Map();
let executions = 0;
const svc = d.service({
  name: process.env.SERVICE,
  functions: {
    echo: async (tag, i) => {
      executions++;
      const k = `${tag}/${i}`;
      seen.set(k, (seen.get(k) ?? 0) + 1);
      return [tag, i];
    },
  },
});
await svc.start();
console.log("ready");
const report = () => {
  let duplicates = 0;
  for (const n of seen.values()) if (n > 1) duplicates++;
  console.log(JSON.stringify({ executions, distinct: seen.size, duplicates }));
  process.exit(0);
};
process.on("SIGTERM", report);
process.on("SIGINT", report);
