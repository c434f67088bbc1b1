"""A small OpenAI-compatible chat server on loopback that fails on purpose.

It streams completions the way vLLM does (server-sent events, choices by index, a final
usage chunk) and, per request, follows a script or a failure rate: HTTP 429 (with a
Retry-After), 500, 503, a dropped connection, a stall (headers and a first chunk, then
silence), or a slow start. Every request body and its arrival time is recorded.

With `slots=N` it is also a first-come-first-served server of N slots (what `vllm serve`
does by default, and SGLang, and hosted APIs): N requests are answered at once, the rest
wait their turn in arrival order, silent, and `pace` seconds pass between streamed pieces.
"""

from __future__ import annotations

import collections
import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERDICT = "<think>ok</think>\\boxed{Assistant 1}"
PARTIAL = "PARTIAL-OUTPUT-OF-A-STALLED-ATTEMPT"


class FaultyServer:
    """`script`: what to do with each request in turn (200 = answer, 429/500/503, "drop",
    "stall", "slow", "trickle"); after it, `failure_rate` of requests get a random 429/500/503."""

    def __init__(
        self,
        script=(),
        failure_rate=0.0,
        seed=0,
        retry_after="0",
        refuse_n=False,
        refuse_priority=False,
        poison=None,
        poison_status=422,
        reasoning=None,
        answer=VERDICT,
        fail_after=None,
        port=0,
        slots=None,
        pace=0.0,
    ):
        self.script = list(script)
        self.failure_rate = failure_rate
        self.random = random.Random(seed)
        self.retry_after = retry_after
        self.refuse_n, self.refuse_priority = refuse_n, refuse_priority
        self.poison, self.poison_status = poison, poison_status
        self.reasoning, self.answer = reasoning, answer
        self.fail_after = fail_after  # answer this many requests, then 503 for good (an outage)
        self.bodies: list[dict] = []
        self.arrivals: list[float] = []
        self.slots = slots  # None: every request at once; N: N at a time, the rest in arrival order
        self.pace = pace  # seconds between streamed pieces (a model generating)
        self.busy = 0  # requests holding a slot
        self.most_busy = 0  # the most requests answered at once (waiting ones not counted)
        self.open_counts: list[int] = []  # requests open (answered or waiting) as each one arrived
        self.served: list[dict] = []  # bodies in the order they got a slot
        self._turns: collections.deque[threading.Event] = collections.deque()
        self.released = threading.Event()  # ends every stall
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.bodies.append(
                        {"body": body, "auth": self.headers.get("Authorization"), "host": self.headers.get("Host")}
                    )
                    owner.arrivals.append(time.monotonic())
                    action = owner._next_action()
                    turn = owner._queue(body)  # in arrival order: the same lock as the arrival's record
                owner._take_slot(body, turn)
                try:
                    owner._serve(self, body, action)
                finally:
                    owner._give_slot()

        self.httpd = _Server(("127.0.0.1", port), Handler)  # port: the same again, to restart a "killed" server
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _next_action(self):
        if self.fail_after is not None and len(self.bodies) > self.fail_after:
            return 503
        if self.script:
            return self.script.pop(0)
        if self.failure_rate and self.random.random() < self.failure_rate:
            return self.random.choice([429, 500, 503])
        return 200

    def _queue(self, body) -> threading.Event | None:
        """A slot now (None), or a place in line (with `slots`, all taken): call with the lock held."""
        self.open_counts.append(self.busy + len(self._turns) + 1)
        if self.slots is not None and self.busy >= self.slots:
            turn = threading.Event()
            self._turns.append(turn)
            return turn
        self.busy += 1
        return None

    def _take_slot(self, body, turn: threading.Event | None):
        """Wait for the slot (handed over in arrival order); record who got one."""
        if turn is not None:
            turn.wait()  # the slot is handed over by _give_slot, busy unchanged
        with self.lock:
            self.most_busy = max(self.most_busy, self.busy)
            self.served.append(body)

    def _give_slot(self):
        with self.lock:
            if self._turns:
                self._turns.popleft().set()  # the next in line takes this slot over
            else:
                self.busy -= 1

    def _serve(self, handler, body, action):
        if action == "drop":  # the connection dies without an answer
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if action == "slow":  # nothing at all for a while, then the answer
            time.sleep(2.5)
            action = 200
        if self.poison and self.poison in json.dumps(body["messages"]):
            return self._error(handler, self.poison_status, "This model's maximum context length is 2048 tokens")
        if action == 200 and self.refuse_n and body.get("n", 1) > 1:
            return self._error(handler, 400, "n>1 is not supported")
        if action == 200 and self.refuse_priority and "priority" in body:
            return self._error(handler, 400, "Unrecognized request argument supplied: priority")
        if action not in (200, "stall", "trickle"):
            return self._error(handler, action, "busy")
        self._stream(handler, body, stall=action == "stall", pace=0.4 if action == "trickle" else self.pace)

    def _error(self, handler, status, message):
        data = json.dumps({"error": {"message": message, "code": status}}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        if status == 429:
            handler.send_header("Retry-After", self.retry_after)
        handler.end_headers()
        handler.wfile.write(data)

    def _stream(self, handler, body, stall, pace):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()

        def send(payload):
            handler.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            handler.wfile.flush()

        def chunk(index, delta, finish=None):
            return {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
            }

        n = body.get("n", 1)
        if stall:
            send(chunk(0, {"role": "assistant", "content": PARTIAL}))
            self.released.wait(60)  # silent, connection open, as a SIGTERMed vllm serve
            return
        max_tokens = body.get("max_tokens") or 10**6
        for i in range(n):  # interleaved by index, as vLLM sends n>1 choices
            send(chunk(i, {"role": "assistant", "content": ""}))
        pieces = []
        if self.reasoning:
            pieces += [("reasoning_content", p) for p in _split(self.reasoning)]
        pieces += [("content", p) for p in _split(self.answer)]
        finish = "length" if len(pieces) > max_tokens else "stop"
        pieces = pieces[:max_tokens]
        for key, piece in pieces:
            time.sleep(pace)  # "trickle": answering all along, slowly
            for i in range(n):
                send(chunk(i, {key: piece}))
        for i in range(n):
            send(chunk(i, {}, finish))
        send(
            {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": len(pieces) * n,
                    "total_tokens": 10 + len(pieces) * n,
                },
            }
        )
        handler.wfile.write(b"data: [DONE]\n\n")

    def close(self):
        self.released.set()
        with self.lock:
            for turn in self._turns:  # nobody waits for a slot of a closed server
                turn.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # every concurrent request is heard: no failures but the scripted ones
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hung up on a stalled or slow answer is what these tests are about


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _split(text: str) -> list[str]:
    """Pieces the way a tokenizer might cut them: a few characters each, spaces kept."""
    return [text[i : i + 4] for i in range(0, len(text), 4)]
