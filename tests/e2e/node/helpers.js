// What the Node tests share: the `sluice` binary as a child process, started with a listener on a
// free port whose base URL is read from its first line of stdout, and stopped after the tests.
import { spawn } from "node:child_process";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "../../..");
export const bin = process.env.SLUICE_BIN || join(root, "target", "debug", "sluice");
const procs = [];

export function start(args) {
  return new Promise((ok, fail) => {
    const p = spawn(bin, args, { stdio: ["ignore", "pipe", "ignore"], env: { ...process.env, SLUICE_LEDGER: "off" } });
    procs.push(p);
    let buf = "";
    p.stdout.on("data", (d) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl >= 0) ok(buf.slice(0, nl).trim().split(" ").pop());
    });
    p.on("exit", (code) => fail(new Error(`${args[0]} exited with ${code}`)));
  });
}

export function stopAll() {
  for (const p of procs) p.kill();
}
