"""The framework's own ceiling: a Faust agent that only counts telemetry records.

Run by ``bench_control.py`` as a subprocess; prints one JSON line with its rate and exits.
Values stay raw bytes: no decoding, no state, nothing but Faust's consumer and stream.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import faust


def main() -> None:
    bootstrap, topic, total, app_id, port, datadir = sys.argv[1:7]
    expected = int(total)
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=datadir,
        web_port=int(port),
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "t0": 0.0}

    @app.agent(source)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream:
            seen["n"] += 1
            if seen["n"] == 1:
                seen["t0"] = time.perf_counter()
            if seen["n"] == expected:
                elapsed = time.perf_counter() - seen["t0"]
                # fd 1 directly: the Faust worker redirects sys.stdout into its logger.
                os.write(1, (json.dumps({"events": expected, "seconds": elapsed}) + "\n").encode())
                os.kill(os.getpid(), signal.SIGTERM)

    faust.Worker(app, loglevel="error").execute_from_commandline()


if __name__ == "__main__":
    main()
