// The official openai Node SDK through `sluice serve` in front of a recording upstream written
// here: a Responses API stream (ends at response.completed, no [DONE]) and `responses.stream()`,
// a multipart `files.create`, headers both ways, and the gateway's own 401.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bin, start, stopAll } from "./helpers.js";
import OpenAI, { toFile } from "openai";

const dir = mkdtempSync(join(tmpdir(), "sluice-node-tr-"));
const seen = [];
const TEXT = "Hello from the upstream";
const rate = { "x-ratelimit-remaining-requests": "499", "x-ratelimit-limit-requests": "500" };

const response = (status, output, usage) => ({
  id: "resp_node_1", object: "response", created_at: 1, status, model: "gpt-4o-mini", output,
  parallel_tool_calls: true, tool_choice: "auto", tools: [], usage, error: null, incomplete_details: null,
});
const message = (status, text) => ({
  id: "msg_1", type: "message", status, role: "assistant",
  content: text ? [{ type: "output_text", text, annotations: [] }] : [],
});

function responsesEvents() {
  const ev = [
    ["response.created", { response: response("in_progress", []) }],
    ["response.output_item.added", { output_index: 0, item: message("in_progress", "") }],
    ["response.content_part.added", { item_id: "msg_1", output_index: 0, content_index: 0, part: { type: "output_text", text: "", annotations: [] } }],
    ...["Hello", " from", " the upstream"].map((d) => ["response.output_text.delta", { item_id: "msg_1", output_index: 0, content_index: 0, delta: d }]),
    ["response.output_text.done", { item_id: "msg_1", output_index: 0, content_index: 0, text: TEXT }],
    ["response.output_item.done", { output_index: 0, item: message("completed", TEXT) }],
    ["response.completed", { response: response("completed", [message("completed", TEXT)], { input_tokens: 4, output_tokens: 3, total_tokens: 7 }) }],
  ];
  return ev.map(([type, data], i) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: i, ...data })}\n\n`);
}

let gateway;
let upstream;

before(async () => {
  assert.ok(existsSync(bin), `sluice binary not found at ${bin}: run cargo build first`);
  upstream = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      if (req.url === "/v1/files") {
        res.writeHead(200, { "content-type": "application/json", ...rate });
        res.end(JSON.stringify({ id: "file-node-1", object: "file", bytes: body.length, created_at: 1, filename: "in.jsonl", purpose: "batch" }));
        return;
      }
      if (req.url === "/v1/responses") {
        res.writeHead(200, { "content-type": "text/event-stream", ...rate });
        for (const e of responsesEvents()) res.write(e);
        res.end();
        return;
      }
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "not here", type: "invalid_request_error", param: null, code: null } }));
    });
  });
  await new Promise((ok) => upstream.listen(0, "127.0.0.1", ok));
  const base = `http://127.0.0.1:${upstream.address().port}/v1`;
  writeFileSync(
    join(dir, "gateway.toml"),
    `listen = "127.0.0.1:0"\n[upstream]\nbase_url = "${base}"\nkeys = [{ value = "sk-upstream-good-0001" }]\n` +
      `[models]\ncheck_upstream_every = "0s"\n[[virtual_keys]]\nname = "node-app"\nkey = "sk-node-app-0001"\n`,
  );
  gateway = await start(["serve", "--config", join(dir, "gateway.toml")]);
});

after(() => {
  stopAll();
  upstream?.close();
});

const client = (apiKey = "sk-node-app-0001") =>
  new OpenAI({ baseURL: gateway, apiKey, maxRetries: 0, timeout: 20000 });

test("responses stream ends at response.completed", async () => {
  const stream = await client().responses.create({ model: "gpt-4o-mini", input: "hi", stream: true });
  const types = [];
  let text = "";
  for await (const e of stream) {
    types.push(e.type);
    if (e.type === "response.output_text.delta") text += e.delta;
  }
  assert.equal(types[0], "response.created");
  assert.equal(types.at(-1), "response.completed");
  assert.equal(text, TEXT);
});

test("responses.stream() gives the final response", async () => {
  const stream = client().responses.stream({ model: "gpt-4o-mini", input: "hi" });
  const final = await stream.finalResponse();
  assert.equal(final.output_text, TEXT);
});

test("files.create arrives as multipart with the upstream's headers back", async () => {
  const content = '{"custom_id": "a"}\n';
  const { data, response } = await client()
    .files.create({ file: await toFile(Buffer.from(content), "in.jsonl"), purpose: "batch" })
    .withResponse();
  assert.equal(data.id, "file-node-1");
  assert.equal(response.headers.get("x-ratelimit-remaining-requests"), "499");
  const got = seen.filter((r) => r.url === "/v1/files").at(-1);
  assert.match(got.headers["content-type"], /^multipart\/form-data; boundary=/);
  assert.ok(got.body.includes(content));
  assert.equal(got.headers.authorization, "Bearer sk-upstream-good-0001");
});

test("the gateway's own 401 carries its request id", async () => {
  await assert.rejects(client("sk-wrong").models.list(), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError);
    assert.match(e.requestID, /^req_sluice_/);
    return true;
  });
});
