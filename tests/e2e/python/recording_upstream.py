"""An OpenAI-shaped upstream for the gateway's transparency tests: it records every request
(method, path, headers, body) and answers the routes the tests use the way OpenAI documents
them — the Responses API (unary and its event stream, which ends at `response.completed`
with no `[DONE]`), files (multipart), batches, and chat streams written with spaced JSON, as
some OpenAI-compatible servers write them. Every answer carries rate-limit headers."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RATE_HEADERS = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-limit-tokens": "200000",
    "x-ratelimit-remaining-tokens": "199000",
    "x-ratelimit-reset-requests": "120ms",
    "x-ratelimit-reset-tokens": "300ms",
    "openai-organization": "org-recording",
    "openai-processing-ms": "7",
    "openai-version": "2020-10-01",
}

TEXT = "Hello from the upstream"
USAGE = {
    "input_tokens": 11,
    "input_tokens_details": {"cached_tokens": 3},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": 16,
}


def response_object(status: str, output: list, usage=None) -> dict:
    return {
        "id": "resp_rec_1",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": "gpt-4o-mini-2024-07-18",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "text": {"format": {"type": "text"}},
    }


def message(status: str, text: str) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {"id": "msg_rec_1", "type": "message", "status": status, "role": "assistant", "content": content}


def responses_events() -> list:
    part = {"type": "output_text", "text": "", "annotations": []}
    ev = [
        ("response.created", {"response": response_object("in_progress", [])}),
        ("response.in_progress", {"response": response_object("in_progress", [])}),
        ("response.output_item.added", {"output_index": 0, "item": message("in_progress", "")}),
        ("response.content_part.added", {"item_id": "msg_rec_1", "output_index": 0, "content_index": 0, "part": part}),
    ]
    for d in ["Hello", " from", " the upstream"]:
        ev.append(("response.output_text.delta", {"item_id": "msg_rec_1", "output_index": 0, "content_index": 0, "delta": d, "logprobs": []}))
    done_part = {"type": "output_text", "text": TEXT, "annotations": []}
    ev += [
        ("response.output_text.done", {"item_id": "msg_rec_1", "output_index": 0, "content_index": 0, "text": TEXT, "logprobs": []}),
        ("response.content_part.done", {"item_id": "msg_rec_1", "output_index": 0, "content_index": 0, "part": done_part}),
        ("response.output_item.done", {"output_index": 0, "item": message("completed", TEXT)}),
        ("response.completed", {"response": response_object("completed", [message("completed", TEXT)], USAGE)}),
    ]
    out = []
    for i, (name, data) in enumerate(ev):
        payload = {"type": name, "sequence_number": i, **data}
        out.append(f"event: {name}\ndata: {json.dumps(payload)}\n\n")
    return out


def chat_chunks(include_usage: bool) -> list:
    """Chat chunks written with spaces after every separator (json.dumps' default)."""
    base = {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    chunks = []
    for i, word in enumerate(["Hello", " there"]):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
        c = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        if include_usage:
            c["usage"] = None
        chunks.append(c)
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if include_usage:
        last["usage"] = None
    chunks.append(last)
    if include_usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})
    return [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]


class Recorder:
    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def last(self, path: str) -> dict:
        with self.lock:
            for r in reversed(self.requests):
                if r["path"].split("?")[0] == path:
                    return r
        raise AssertionError(f"the upstream saw no request for {path}: {[r['path'] for r in self.requests]}")

    def paths(self) -> list:
        with self.lock:
            return [f"{r['method']} {r['path']}" for r in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _read(self) -> bytes:
                n = int(self.headers.get("content-length") or 0)
                return self.rfile.read(n) if n else b""

            def _record(self, body: bytes):
                with rec.lock:
                    rec.requests.append({
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    })

            def _json(self, status: int, obj: dict):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("x-request-id", "req_recording_1")
                for k, v in RATE_HEADERS.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, events: list):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("x-request-id", "req_recording_stream")
                for k, v in RATE_HEADERS.items():
                    self.send_header(k, v)
                self.send_header("connection", "close")
                self.end_headers()
                for e in events:
                    self.wfile.write(e.encode())
                    self.wfile.flush()
                self.close_connection = True

            def do_GET(self):
                self._record(b"")
                if self.path.startswith("/v1/models"):
                    return self._json(200, {"object": "list", "data": [
                        {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "openai"},
                    ]})
                return self._json(404, {"error": {"message": "not here", "type": "invalid_request_error", "param": None, "code": None}})

            def do_POST(self):
                body = self._read()
                self._record(body)
                path = self.path.split("?")[0]
                if path == "/v1/files":
                    return self._json(200, {"id": "file-rec-1", "object": "file", "bytes": len(body), "created_at": 1,
                                            "filename": "in.jsonl", "purpose": "batch", "status": "processed"})
                if path == "/v1/batches":
                    req = json.loads(body or b"{}")
                    return self._json(200, {"id": "batch_rec_1", "object": "batch", "endpoint": req.get("endpoint"),
                                            "input_file_id": req.get("input_file_id"), "completion_window": "24h",
                                            "status": "validating", "created_at": 1,
                                            "request_counts": {"total": 0, "completed": 0, "failed": 0}})
                req = json.loads(body or b"{}")
                if path == "/v1/responses":
                    if req.get("stream"):
                        return self._sse(responses_events())
                    return self._json(200, response_object("completed", [message("completed", TEXT)], USAGE))
                if path == "/v1/chat/completions":
                    if req.get("stream"):
                        include = bool((req.get("stream_options") or {}).get("include_usage"))
                        return self._sse(chat_chunks(include))
                    return self._json(200, {"id": "chatcmpl-rec", "object": "chat.completion", "created": 1,
                                            "model": "gpt-4o-mini",
                                            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                                         "finish_reason": "stop"}],
                                            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
                return self._json(404, {"error": {"message": "not here", "type": "invalid_request_error", "param": None, "code": None}})

        return Handler
