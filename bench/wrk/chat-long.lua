-- A chat completion whose system prompt is about 2,000 tokens (shared instructions and
-- examples, as real applications send with every request), and a short question.
local words = { "policy", "customer", "refund", "within", "thirty", "days", "of", "purchase",
  "unless", "the", "item", "was", "damaged", "by", "misuse", "escalate", "to", "a", "supervisor",
  "when", "asked", "twice", "always", "confirm", "order", "number", "and", "shipping", "address" }
local parts = {}
for i = 1, 1900 do
  parts[#parts + 1] = words[(i * 7) % #words + 1]
  if i % 17 == 0 then parts[#parts + 1] = "." end
end
local system = table.concat(parts, " ")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-key-0000000"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"' .. system ..
  '"},{"role":"user","content":"Can I return a damaged kettle after six weeks?"}],"max_tokens":64}'
