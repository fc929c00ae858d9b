"""Client CPU cost per request with the official SDK's AsyncOpenAI: the same N requests at the
same concurrency as bench/src/bin/client_cpu.rs, against the same running mock. Prints one JSON
line. Usage: client_cpu.py BASE_URL [N] [CONCURRENCY]"""

import asyncio
import json
import resource
import sys
import time

import openai


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main(base_url: str, n: int, c: int) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench-key-0000000")
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Summarise the benefits of client-side rate limiting in two sentences."},
    ]

    async def one() -> bool:
        try:
            await client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=64)
            return True
        except openai.OpenAIError:
            return False

    for _ in range(200):
        await one()
    cpu0, t0 = cpu_seconds(), time.perf_counter()

    async def worker(share: int) -> int:
        errors = 0
        for _ in range(share):
            if not await one():
                errors += 1
        return errors

    shares = [n // c + (1 if w < n % c else 0) for w in range(c)]
    errors = sum(await asyncio.gather(*(worker(s) for s in shares)))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    print(json.dumps({
        "client": f"openai-python {openai.__version__} AsyncOpenAI",
        "requests": n, "concurrency": c, "errors": errors,
        "wall_s": wall, "cpu_s": cpu,
        "requests_per_cpu_s": n / cpu, "requests_per_s": n / wall,
    }))
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10000,
                     int(sys.argv[3]) if len(sys.argv) > 3 else 64))
