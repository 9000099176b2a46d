"""Load: 200 concurrent streaming clients for 30 s against the gateway. No errors,
memory bounded, and the ledger holds exactly the decisions made."""

import asyncio
import os
import time

import openai

from conftest import MODEL

CLIENTS = int(os.environ.get("LUCID_LOAD_CLIENTS", "200"))
SECONDS = float(os.environ.get("LUCID_LOAD_SECONDS", "30"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_200_streaming_clients_for_30_seconds(upstream, lucidd):
    upstream.reply = "A streamed answer that is long enough to need several chunks. " * 4
    upstream.chunk = 40
    done, errors, samples = [], [], []

    async def client_loop(i, deadline):
        c = openai.AsyncOpenAI(base_url=lucidd.gateway + "/v1", api_key=lucidd.key, max_retries=0, timeout=60)
        while time.monotonic() < deadline:
            try:
                stream = await c.chat.completions.create(
                    model=MODEL, stream=True,
                    messages=[{"role": "user", "content": f"client {i} says hello"}])
                text = ""
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                assert text == upstream.reply
                done.append(i)
            except Exception as e:  # every failure counts
                errors.append(repr(e))
        await c.close()

    async def sample_memory(deadline):
        while time.monotonic() < deadline:
            samples.append(rss_kib(lucidd.proc.pid))
            await asyncio.sleep(1)

    async def main():
        deadline = time.monotonic() + SECONDS
        await asyncio.gather(sample_memory(deadline), *(client_loop(i, deadline) for i in range(CLIENTS)))

    asyncio.run(main())
    assert not errors, f"{len(errors)} errors, first: {errors[:3]}"
    assert len(done) >= CLIENTS, f"only {len(done)} requests completed"
    # Memory bounded: the second half of the run does not grow past the first half's peak by much.
    half = len(samples) // 2
    first_peak, last_peak = max(samples[:half]), max(samples[half:])
    assert last_peak < first_peak * 1.25 + 16 * 1024, f"RSS kept growing: {first_peak} KiB then {last_peak} KiB"
    assert last_peak < 512 * 1024, f"RSS {last_peak} KiB"
    # Every request's decisions are in the ledger: three before the model, two after.
    per_request = {}
    for d in lucidd.decisions():
        per_request.setdefault(d["subject"], []).append(d)
    assert len(per_request) == len(done), (len(per_request), len(done))
    assert all(len(v) == 5 for v in per_request.values()), {k: len(v) for k, v in per_request.items() if len(v) != 5}
    assert lucidd.ctl_json("ledger", "verify")["ok"] is True
    print(f"\n{len(done)} streamed requests from {CLIENTS} clients in {SECONDS:.0f} s "
          f"({len(done) / SECONDS:.0f}/s), RSS peak {max(samples) // 1024} MiB, {sum(map(len, per_request.values()))} decisions recorded")
