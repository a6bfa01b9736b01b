"""Memory of a device under the oversized-request attack: printed figures, no asserts.

    .venv/bin/python -m benchmarks.edge_runtime.bench_http_limits

Starts one device (tiny real model, HTTP API on 127.0.0.1) in a child process, so only the
device's memory is measured, then sends eight concurrent requests of one 3.9 MiB text each and
prints the child's resident memory before and its peak after, with the status of every answer.
The device runs with its default HTTP limits.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from tests.support.ports import free_port

CONCURRENT = 8
TEXT_BYTES = int(3.9 * (1 << 20))

_CHILD = """
import asyncio, sys
from pathlib import Path
from edge_runtime.runtime import EdgeRuntime
from edge_runtime.server import serve
from streams.events.artifact import new_signing_key
from tests.support.device import registered, settings
from tests.support.tiny_models import build

async def main(root: Path, port: int) -> None:
    key = new_signing_key()
    v1 = build(root, key, version="v1")
    rt = EdgeRuntime(settings(root, key))
    await rt.start_offline()
    await rt.apply(registered(v1, 1))
    runner = await serve(rt, "127.0.0.1", port, limits=rt.settings.http_limits())
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
"""


def _memory_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


async def _attack(port: int) -> Counter[int]:
    text = ("book a flight " * (TEXT_BYTES // 14 + 1))[:TEXT_BYTES]
    body = json.dumps({"texts": [text]}).encode()
    url = f"http://127.0.0.1:{port}/v1/infer"
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def one() -> int:
            headers = {"Content-Type": "application/json"}
            async with http.post(url, data=body, headers=headers) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(one() for _ in range(CONCURRENT)))
    return Counter(statuses)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, tmp, str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("device did not start")
            before = _memory_kb(child.pid)
            started = time.perf_counter()
            statuses = asyncio.run(_attack(port))
            elapsed = time.perf_counter() - started
            after = _memory_kb(child.pid)
        finally:
            child.terminate()
            child.wait(timeout=30)
    print(f"{CONCURRENT} concurrent requests of one {TEXT_BYTES / (1 << 20):.1f} MiB text")
    print(f"  answers: {dict(sorted(statuses.items()))} in {elapsed:.1f}s")
    print(f"  device RSS before: {before['VmRSS'] / 1024:.0f} MB")
    print(
        f"  device RSS after:  {after['VmRSS'] / 1024:.0f} MB (peak {after['VmHWM'] / 1024:.0f} MB)"
    )


if __name__ == "__main__":
    main()
