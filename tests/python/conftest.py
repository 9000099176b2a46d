"""Fixtures for the gateway tests: a small OpenAI-compatible upstream that records what
it receives, the real lucidd (dev mode, temp state dir) in front of it, and the real
`openai` SDK as the client."""

import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
MODEL = "test-model"


class Upstream:
    """A scripted model server. `reply` is the assistant text; streamed replies are cut
    into `chunk` sized pieces."""

    def __init__(self):
        self.received = []
        self.reply = "Hello from the model."
        self.chunk = 7
        self.echo_system = False
        self.tool_calls = None
        # Extra choices' texts (n > 1): choice 0 says `reply`, choice i says choices[i-1].
        self.choices = []
        # Streams: per-token logprobs beside the text; events added to a Responses
        # stream before it completes; or bytes sent as the whole stream, as they are.
        self.logprobs = False
        self.extra_response_events = []
        self.raw_sse = None
        ThreadingHTTPServer.request_queue_size = 1024
        ThreadingHTTPServer.daemon_threads = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                upstream.received.append({"path": self.path, "body": body})
                if self.path.endswith("/embeddings"):
                    return self._json({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                                       "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}})
                if self.path.endswith("/responses"):
                    return self._responses_stream(body) if body.get("stream") else self._json(upstream.response_object(body))
                chat = self.path.endswith("/chat/completions")
                if upstream.echo_system and chat:
                    upstream.reply = next(m["content"] for m in body["messages"] if m["role"] == "system")
                if body.get("stream"):
                    return self._stream(body, chat)
                choices = []
                for i, text in enumerate([upstream.reply] + upstream.choices):
                    message = {"role": "assistant", "content": text}
                    if upstream.tool_calls and i == 0:
                        message["tool_calls"] = upstream.tool_calls
                    choices.append({"index": i, "message": message, "finish_reason": "stop"} if chat
                                   else {"index": i, "text": text, "finish_reason": "stop"})
                self._json({"id": "cmpl-1", "object": "chat.completion" if chat else "text_completion", "created": 1,
                            "model": body["model"], "choices": choices,
                            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})

            def _json(self, obj):
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body, chat):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                if upstream.raw_sse is not None:
                    self.wfile.write(upstream.raw_sse)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                text = upstream.reply
                pieces = [text[i:i + upstream.chunk] for i in range(0, len(text), upstream.chunk)]
                base = {"id": "chunk-1", "object": "chat.completion.chunk" if chat else "text_completion",
                        "created": 1, "model": body["model"]}
                if chat:
                    self._event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
                for p in pieces:
                    choice = {"index": 0, "delta": {"content": p}, "finish_reason": None} if chat else {"index": 0, "text": p, "finish_reason": None}
                    if upstream.logprobs:
                        choice["logprobs"] = {"content": [{"token": p, "logprob": -0.1, "bytes": list(p.encode()), "top_logprobs": []}]}
                    self._event({**base, "choices": [choice]})
                    time.sleep(0.005)
                for t, call in (enumerate(upstream.tool_calls or []) if chat else []):
                    # As servers stream tool calls: the id and name first, the arguments
                    # after in pieces.
                    first = {"index": t, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
                    self._event({**base, "choices": [{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}]})
                    args = call["function"]["arguments"]
                    for i in range(0, len(args), upstream.chunk):
                        piece = {"index": t, "function": {"arguments": args[i:i + upstream.chunk]}}
                        self._event({**base, "choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]})
                        time.sleep(0.002)
                for i, text in enumerate(upstream.choices, start=1):
                    for j in range(0, len(text), upstream.chunk):
                        piece = {"content": text[j:j + upstream.chunk]}
                        choice = {"index": i, "delta": piece, "finish_reason": None} if chat else {"index": i, "text": piece["content"], "finish_reason": None}
                        self._event({**base, "choices": [choice]})
                end = {"index": 0, "delta": {}, "finish_reason": "stop"} if chat else {"index": 0, "text": "", "finish_reason": "stop"}
                self._event({**base, "choices": [end]})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def _event(self, obj):
                self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

            def _responses_stream(self, body):
                """The Responses API's events, as OpenAI sends them."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                done = upstream.response_object(body)
                seq = iter(range(1000))

                def event(kind, **fields):
                    obj = {"type": kind, "sequence_number": next(seq), **fields}
                    self.wfile.write(f"event: {kind}\ndata: {json.dumps(obj)}\n\n".encode())
                    self.wfile.flush()

                event("response.created", response={**done, "status": "in_progress", "output": []})
                for oi, item in enumerate(done["output"]):
                    if item["type"] == "message":
                        event("response.output_item.added", output_index=oi, item={**item, "status": "in_progress", "content": []})
                        text = item["content"][0]["text"]
                        part = {"type": "output_text", "text": "", "annotations": []}
                        event("response.content_part.added", item_id=item["id"], output_index=oi, content_index=0, part=part)
                        for i in range(0, len(text), upstream.chunk):
                            event("response.output_text.delta", item_id=item["id"], output_index=oi, content_index=0, delta=text[i:i + upstream.chunk], logprobs=[])
                            time.sleep(0.002)
                        event("response.output_text.done", item_id=item["id"], output_index=oi, content_index=0, text=text, logprobs=[])
                        event("response.content_part.done", item_id=item["id"], output_index=oi, content_index=0, part={**part, "text": text})
                    else:
                        event("response.output_item.added", output_index=oi, item={**item, "status": "in_progress", "arguments": ""})
                        args = item["arguments"]
                        for i in range(0, len(args), upstream.chunk):
                            event("response.function_call_arguments.delta", item_id=item["id"], output_index=oi, delta=args[i:i + upstream.chunk])
                        event("response.function_call_arguments.done", item_id=item["id"], output_index=oi, arguments=args)
                    event("response.output_item.done", output_index=oi, item=item)
                for extra in upstream.extra_response_events:
                    event(extra["type"], **{k: v for k, v in extra.items() if k != "type"})
                event("response.completed", response=done)
                self.close_connection = True

        return Handler

    def response_object(self, body):
        """A Responses API answer: the reply as a message, and the tool calls, if any."""
        output = [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": self.reply, "annotations": []}]}]
        for i, call in enumerate(self.tool_calls or []):
            output.append({"type": "function_call", "id": f"fc_{i}", "call_id": call["id"], "status": "completed",
                           "name": call["function"]["name"], "arguments": call["function"]["arguments"]})
        return {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": body["model"],
                "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                "usage": {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8,
                          "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# The chain most tests run: the soc2 profile, responses read for credentials and PII.
SOC2_CHAIN = """      profile: soc2
      auditChain:
        postResponse:
          - auditorId: lucid-policy-auditor
          - auditorId: lucid-pii-compliance-auditor
          - auditorId: lucid-observability-auditor
"""


class Lucidd:
    """The real daemon in dev mode on a temp state directory. `chain` is the agent's
    YAML after its upstream (a profile, an auditChain); `extra_yaml` follows it."""

    def __init__(self, upstream_url, extra_yaml="", chain=SOC2_CHAIN, keys=True):
        self.dir = Path(tempfile.mkdtemp(prefix="lucid-py-"))
        self.config = self.dir / "env.yaml"
        self.config.write_text(f"""apiVersion: lucid.io/v1alpha1
kind: LucidEnvironment
metadata:
  name: gateway-test
spec:
  agents:
    - name: test-agent
      model:
        id: {MODEL}
      upstream:
        url: {upstream_url}
        timeoutSeconds: 60
{chain}{extra_yaml}""")
        state = self.dir / "state"
        self.log = open(self.dir / "lucidd.log", "w")
        self.proc = subprocess.Popen(
            [str(TARGET / "lucidd"), "--dev", "--state-dir", str(state), "--config", str(self.config), "--listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=self.log,
            # The default classifier pack is not loaded here: these tests judge the
            # gateway and rule auditors (tests/tests/classifier.rs covers the pack).
            env={**os.environ, "LUCID_MODEL_PACK": "none"})
        self.state = state
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("lucidd exited: " + (self.dir / "lucidd.log").read_text())
            try:
                status = self.ctl_json("status")
                self.gateway = "http://" + status["gateway"]
                if keys:
                    created = self.ctl_json("keys", "create", "--name", "pytest")
                    self.key, self.key_id = created["secret"], created["key"]["id"]
                return
            except (subprocess.CalledProcessError, json.JSONDecodeError, KeyError, TypeError):
                time.sleep(0.05)
        raise RuntimeError("lucidd did not come up: " + (self.dir / "lucidd.log").read_text())

    def ctl(self, *args, check=True):
        return subprocess.run([str(TARGET / "lucidctl"), "--dev-state", str(self.state), *args],
                              capture_output=True, text=True, check=check)

    def ctl_json(self, *args):
        return json.loads(self.ctl(*args, "-o", "json").stdout)

    def decisions(self):
        out = self.ctl("logs", "--kind", "decision", "--since", "2000-01-01", "-o", "json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.close()


@pytest.fixture
def lucidd(upstream):
    d = Lucidd(upstream.url)
    yield d
    d.close()


@pytest.fixture
def make_lucidd(upstream):
    """Starts lucidd with a chain of the test's own; stops every one it started."""
    started = []

    def make(chain, extra_yaml=""):
        d = Lucidd(upstream.url, extra_yaml=extra_yaml, chain=chain)
        started.append(d)
        return d, openai.OpenAI(base_url=d.gateway + "/v1", api_key=d.key, max_retries=0, timeout=30)

    yield make
    for d in started:
        d.close()


@pytest.fixture
def client(lucidd):
    return openai.OpenAI(base_url=lucidd.gateway + "/v1", api_key=lucidd.key, max_retries=0, timeout=20)
