"""A lean HTTP client for the edge benchmark, run in its own process.

    python -m benchmarks.edge_runtime.http_client PORT REQUESTS CLIENTS TEXT

``CLIENTS`` threads, each with one keep-alive connection (``http.client``, the standard
library's, so the client adds little of its own), send ``REQUESTS`` ``POST /v1/infer`` in all
and the process prints one JSON line: every latency in microseconds and the wall time. The
first request of each connection is not counted.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections.abc import Callable


def run_together(target: Callable[[int], None], n: int) -> float:
    """Run ``target(0)`` .. ``target(n - 1)`` on n threads released at once; wall seconds."""
    barrier = threading.Barrier(n + 1)

    def go(i: int) -> None:
        barrier.wait()
        target(i)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def main() -> None:
    port, total, clients, text = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    body = json.dumps({"texts": [text]}).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    failures: list[int] = []
    each = total // clients
    connections = []
    for _ in range(clients):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/infer", body, headers)
        conn.getresponse().read()
        connections.append(conn)

    def client(i: int) -> None:
        conn = connections[i]
        mine: list[float] = []
        for _ in range(each):
            t = time.perf_counter()
            conn.request("POST", "/v1/infer", body, headers)
            response = conn.getresponse()
            response.read()
            mine.append((time.perf_counter() - t) * 1e6)
            if response.status != 200:
                failures.append(response.status)
        latencies.extend(mine)
        conn.close()

    wall = run_together(client, clients)
    print(json.dumps({"latencies_us": latencies, "wall_s": wall, "failures": failures}))


if __name__ == "__main__":
    main()
