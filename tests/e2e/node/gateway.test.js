// The official openai Node SDK through `sluice serve` in front of `sluice mock`: only the
// baseURL and the key change.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bin, start, stopAll } from "./helpers.js";
import OpenAI from "openai";

const dir = mkdtempSync(join(tmpdir(), "sluice-node-"));

let gateway;

before(async () => {
  assert.ok(existsSync(bin), `sluice binary not found at ${bin}: run cargo build first`);
  writeFileSync(
    join(dir, "mock.toml"),
    'auth = "listed"\n[[keys]]\nkey = "sk-upstream-good-0001"\n[moderations]\nwords = { violence = ["attack"] }\n',
  );
  const upstream = await start(["mock", "--listen", "127.0.0.1:0", "--config", join(dir, "mock.toml")]);
  writeFileSync(
    join(dir, "gateway.toml"),
    `listen = "127.0.0.1:0"\n[upstream]\nbase_url = "${upstream}"\nkeys = [{ value = "sk-upstream-good-0001" }]\n` +
      `[[virtual_keys]]\nname = "node-app"\nkey = "sk-node-app-0001"\n`,
  );
  gateway = await start(["serve", "--config", join(dir, "gateway.toml")]);
});

after(() => {
  stopAll();
});

const client = (apiKey = "sk-node-app-0001") =>
  new OpenAI({ baseURL: gateway, apiKey, maxRetries: 0, timeout: 20000 });

test("chat", async () => {
  const r = await client().chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "hi" }],
    max_tokens: 8,
  });
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(r.usage.completion_tokens <= 8);
});

test("stream with and without usage", async () => {
  let text = "";
  let usage = null;
  const s = await client().chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "s" }],
    stream: true,
  });
  for await (const ch of s) {
    if (ch.usage) usage = ch.usage;
    text += ch.choices[0]?.delta?.content ?? "";
  }
  assert.ok(text.length > 0);
  assert.equal(usage, null, "no usage chunk unless asked");
  const s2 = await client().chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "s" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const ch of s2) if (ch.usage) usage = ch.usage;
  assert.ok(usage.completion_tokens > 0);
});

test("embeddings and models", async () => {
  const e = await client().embeddings.create({ model: "text-embedding-3-small", input: ["a", "b"] });
  assert.equal(e.data.length, 2);
  assert.equal(e.data[0].embedding.length, 1536);
  const ids = [];
  for await (const m of client().models.list()) ids.push(m.id);
  assert.ok(ids.includes("gpt-4o-mini"));
});

test("errors map to the SDK's classes", async () => {
  await assert.rejects(client("sk-wrong").models.list(), OpenAI.AuthenticationError);
  await assert.rejects(
    client().chat.completions.create({ model: "gpt-4-32k", messages: [{ role: "user", content: "x" }] }),
    OpenAI.NotFoundError,
  );
  await assert.rejects(
    client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "w ".repeat(130000) }] }),
    OpenAI.BadRequestError,
  );
});

test("structured output with a JSON schema", async () => {
  const schema = {
    type: "object",
    properties: { city: { type: "string" }, population: { type: "integer" }, tags: { type: "array", items: { type: "string" } } },
    required: ["city", "population", "tags"],
    additionalProperties: false,
  };
  const r = await client().chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "name a city" }],
    response_format: { type: "json_schema", json_schema: { name: "city", strict: true, schema } },
    max_tokens: 200,
  });
  const v = JSON.parse(r.choices[0].message.content);
  assert.equal(typeof v.city, "string");
  assert.ok(Number.isInteger(v.population));
  assert.ok(Array.isArray(v.tags));
  // The SDK's structured-output helper: the same answer, parsed by the SDK itself (it refuses
  // an answer cut by the length limit, so this also shows the answer finished).
  const p = await client().chat.completions.parse({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "name a city" }],
    response_format: { type: "json_schema", json_schema: { name: "city", strict: true, schema } },
    max_tokens: 200,
  });
  const parsed = p.choices[0].message.parsed;
  assert.equal(typeof parsed.city, "string");
  assert.ok(Number.isInteger(parsed.population));
  assert.deepEqual(Object.keys(parsed).sort(), ["city", "population", "tags"]);
});

test("moderations", async () => {
  const r = await client().moderations.create({ input: ["we attack at dawn", "a quiet day"] });
  assert.equal(r.results.length, 2);
  assert.equal(r.results[0].flagged, true);
  assert.equal(r.results[0].categories.violence, true);
  assert.equal(r.results[1].flagged, false);
});

test("responses: unary and streamed", async () => {
  const r = await client().responses.create({ model: "gpt-4o-mini", input: "hello from node" });
  assert.equal(r.status, "completed");
  assert.ok(r.output_text.length > 0);
  const types = [];
  let text = "";
  const s = await client().responses.create({ model: "gpt-4o-mini", input: "hello from node", stream: true });
  for await (const ev of s) {
    types.push(ev.type);
    if (ev.type === "response.output_text.delta") text += ev.delta;
  }
  assert.equal(types[0], "response.created");
  assert.equal(types.at(-1), "response.completed");
  assert.equal(text, r.output_text);
});

test("responses: the stream() helper, tools and a stored conversation", async () => {
  const c = client();
  const stream = c.responses.stream({ model: "gpt-4o-mini", input: "hello from node" });
  let deltas = "";
  stream.on("response.output_text.delta", (ev) => {
    deltas += ev.delta;
  });
  const final = await stream.finalResponse();
  assert.equal(final.status, "completed");
  assert.equal(deltas, final.output_text);

  const tools = [
    {
      type: "function",
      name: "get_weather",
      strict: true,
      parameters: { type: "object", additionalProperties: false, required: ["city"], properties: { city: { type: "string" } } },
    },
  ];
  const r = await c.responses.create({ model: "gpt-4o-mini", input: "weather in Oslo?", tools, tool_choice: "required" });
  const call = r.output[0];
  assert.equal(call.type, "function_call");
  assert.equal(typeof JSON.parse(call.arguments).city, "string");
  const next = await c.responses.create({
    model: "gpt-4o-mini",
    previous_response_id: r.id,
    tools,
    input: [{ type: "function_call_output", call_id: call.call_id, output: '{"temp": 3}' }],
  });
  assert.equal(next.previous_response_id, r.id);
  assert.ok(next.usage.input_tokens > r.usage.input_tokens, "the earlier turn is billed again");
  const again = await c.responses.retrieve(r.id);
  assert.equal(again.output[0].call_id, call.call_id);
});

test("files and batches: upload, create, poll, read the output", async () => {
  const c = client();
  const lines = [1, 2, 3]
    .map((i) =>
      JSON.stringify({
        custom_id: `n-${i}`,
        method: "POST",
        url: "/v1/chat/completions",
        body: { model: "gpt-4o-mini", max_tokens: 8, messages: [{ role: "user", content: `line ${i}` }] },
      }),
    )
    .join("\n");
  const file = await c.files.create({ file: await OpenAI.toFile(Buffer.from(lines), "lines.jsonl"), purpose: "batch" });
  assert.equal(file.purpose, "batch");
  let batch = await c.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" });
  const until = Date.now() + 15000;
  while (!["completed", "failed", "expired", "cancelled"].includes(batch.status) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 200));
    batch = await c.batches.retrieve(batch.id);
  }
  assert.equal(batch.status, "completed");
  assert.equal(batch.request_counts.completed, 3);
  const out = await (await c.files.content(batch.output_file_id)).text();
  const ids = out
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .map((r) => {
      assert.equal(r.response.status_code, 200);
      return r.custom_id;
    })
    .sort();
  assert.deepEqual(ids, ["n-1", "n-2", "n-3"]);
});
