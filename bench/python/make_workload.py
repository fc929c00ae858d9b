"""A mixed, reproducible workload for the goodput benchmark: chat completions with varied prompt
sizes and output limits, and some embeddings. One JSON object per line: {"path", "body"}.
Usage: make_workload.py N OUT.jsonl"""

import json
import random
import sys

WORDS = ("river stream flow gate water stone light field quick simple clear open system model "
         "request value limit token answer question number state group result change process").split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def main(n: int, out: str) -> None:
    rng = random.Random(20261128)
    with open(out, "w") as f:
        for i in range(n):
            if rng.random() < 0.15:
                inputs = [text(rng, rng.randint(5, 60)) for _ in range(rng.randint(1, 8))]
                item = {"path": "/embeddings", "body": {"model": "text-embedding-3-small", "input": inputs}}
            else:
                msgs = [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": f"[{i}] " + text(rng, rng.randint(20, 600))}]
                item = {"path": "/chat/completions",
                        "body": {"model": "gpt-4o-mini", "messages": msgs,
                                 "max_tokens": rng.choice([64, 128, 256])}}
            f.write(json.dumps(item) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
