"""The naive sender of the goodput benchmark: the official SDK's AsyncOpenAI with its default
retry policy (2 retries, 0.5-8 s backoff with jitter, honouring retry-after), every request of
the workload fired at once. Prints one JSON line. Usage: goodput_naive.py BASE_URL WORKLOAD"""

import asyncio
import json
import sys
import time

import openai


async def main(base_url: str, workload: str) -> None:
    items = [json.loads(line) for line in open(workload)]
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-goodput-naive-0001", max_retries=2,
                                timeout=600)

    async def one(item) -> tuple[bool, int]:
        body = item["body"]
        try:
            if item["path"] == "/embeddings":
                r = await client.embeddings.create(**body)
            else:
                r = await client.chat.completions.create(**body)
            return True, r.usage.total_tokens
        except openai.OpenAIError:
            return False, 0

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in items))
    wall = time.perf_counter() - t0
    ok = sum(1 for r in results if r[0])
    print(json.dumps({"sender": f"openai-python {openai.__version__} (max_retries=2)",
                      "requests": len(items), "completed": ok, "lost": len(items) - ok,
                      "tokens": sum(r[1] for r in results), "wall_s": wall}))
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
