"""A hostile llama-server for the red team's cases (issue 35): the fake llama-server of test_remote_errors.py, with
one fault to order. Faults that lie about probabilities can start after ``honest`` scoring requests (connect's probe
asks two), so both "refused at connect" and "refused per request" are testable.

Faults (``fault=``):
- ``flat``: ignores logit_bias and n_probs: 20 other ids at 0.045 whatever is asked (no decision token at all);
- ``tiny``: one id at probability 1e-30;
- ``ignores_bias``: a true top n_probs, but logit_bias is not applied;
- ``endless_events``: streams ``{"tokens": [], "stop": false}`` every 0.2 s, forever;
- ``pings``: streams ``: ping`` comments every 0.2 s, forever;
- ``drip``: answers JSON with a Content-Length, then drips the body one byte every 0.5 s;
- ``bytes_pieces``: a stream event withholding tokens whose ``bytes`` hold ``bytes_value``;
- ``props``: /props and /v1/models answer with ``props`` / ``meta`` merged in (total_slots 10**9, n_vocab "abc").
"""

from __future__ import annotations

import json
import time

from test_remote_errors import FakeLlamaServer

FOREVER_S = 30.0  # an endless answer stops here at the latest, so a failing test cannot hang the suite


class HostileLlamaServer(FakeLlamaServer):
    def __init__(self, gguf, fault: str, honest: int = 0, bytes_value=None, props=None, meta=None, **faults):
        super().__init__(gguf, **faults)
        self.fault, self.honest = fault, honest
        self.bytes_value, self.props, self.meta = bytes_value, props or {}, meta or {}
        self.streams = 0
        self.disconnected_after_s: list[float] = []  # how long each endless answer ran before its client left

    def handle(self, request, body):
        path, fault = request.path, self.fault
        if path == "/props" and self.props:
            self.requests.append(path)
            return self.send(request, 200, {"total_slots": 2, "default_generation_settings": {"n_ctx": 256},
                                            **self.props})
        if path == "/v1/models" and self.meta:
            self.requests.append(path)
            return self.send(request, 200, {"data": [{"id": "tiny.gguf", "owned_by": "llamacpp",
                                                      "meta": {"n_vocab": self.n_vocab, "n_ctx": 256, **self.meta}}]})
        if path != "/completion":
            return super().handle(request, body)
        if body.get("stream"):
            self.requests.append(path)
            self.streams += 1
            if fault in ("endless_events", "pings"):
                return self.endless(request, b": ping\n\n" if fault == "pings"
                                    else b'data: {"tokens": [], "stop": false}\n\n')
            if fault == "bytes_pieces":
                event = {"tokens": [65], "tokens_predicted": 3, "stop": True, "stop_type": "limit",
                         "completion_probabilities": [{"bytes": self.bytes_value}]}
                return self.event_stream(request, [event])
            return self.event_stream(request, [{"tokens": [65], "stop": True, "stop_type": "limit"}])
        if self.honest:
            self.honest -= 1
            return super().handle(request, body)
        self.requests.append(path)
        if fault == "flat":
            return self.send(request, 200, self.answer([{"id": i, "prob": 0.045} for i in range(20)]))
        if fault == "tiny":
            return self.send(request, 200, self.answer([{"id": 7, "prob": 1e-30}]))
        if fault == "ignores_bias":
            return self.send(request, 200, self.answer(self.top_probs({**body, "logit_bias": []})))
        if fault == "drip":
            return self.drip(request, self.answer(self.top_probs(body)))
        return super().handle(request, body)

    @staticmethod
    def answer(top: list[dict]) -> dict:
        return {"completion_probabilities": [{"top_probs": top}], "tokens": [65],
                "timings": {"cache_n": 0, "prompt_ms": 1.0}}

    def event_stream(self, request, events: list[dict]) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "text/event-stream")
        request.end_headers()
        for event in events:
            request.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        request.wfile.flush()
        request.close_connection = True

    def endless(self, request, chunk: bytes) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "text/event-stream")
        request.end_headers()
        started = time.monotonic()
        request.close_connection = True
        try:
            while time.monotonic() - started < FOREVER_S:
                request.wfile.write(chunk)
                request.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the client left
            self.disconnected_after_s.append(time.monotonic() - started)

    @staticmethod
    def drip(request, payload: dict) -> None:
        data = json.dumps(payload).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.close_connection = True
        started = time.monotonic()
        try:
            for byte in data:
                if time.monotonic() - started > FOREVER_S:
                    return
                request.wfile.write(bytes([byte]))
                request.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass
