"""The status page end to end: a worker runs a rollout, headless Chromium loads the page."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streams.events import OptimizationResult
from tests.support.control_inputs import registered
from tests.support.live import close_one_window, control_worker, produce, tool
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"
ROLLOUT = "intent-v2-pilot"
FLAGS = [
    "--rollout-cohorts", "pilot",
    "--rollout-stages", "50,100",
    "--rollout-window-s", "2",
    "--rollout-min-requests", "100",
    "--rollout-min-devices", "1",
    "--rollout-tick-s", "0.5",
]  # fmt: skip
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-port=0",
]  # fmt: skip


class Page:
    """A minimal Chrome DevTools Protocol client for one page; records console problems."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.problems: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                self.pending.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.exceptionThrown":
                self.problems.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
                self.problems.append(f"console.{params['type']}: {params['args']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                self.problems.append(f"log: {params['entry']}")

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        i = next(self.ids)
        self.pending[i] = asyncio.get_running_loop().create_future()
        await self.ws.send_json({"id": i, "method": method, "params": params})
        reply = await asyncio.wait_for(self.pending[i], 30)
        assert "error" not in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        out = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in out, out
        return out["result"].get("value")


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[str]:
    """Headless Chromium; yields its DevTools port."""
    proc = subprocess.Popen(
        [tool("chromium", "chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"

        def opened() -> bool:
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            return port_file.exists() and bool(port_file.read_text().strip())

        wait_for("chromium to open its DevTools port", opened, timeout=30, interval=0.1)
        yield port_file.read_text().split()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


SHOWN = f"""(() => {{
  const r = document.querySelector('[data-rollout="{ROLLOUT}"]');
  return document.body && document.body.dataset.loaded === "1" && r !== null
    && document.querySelectorAll('#series svg').length > 0 ? r.innerText : null;
}})()"""


@contextlib.asynccontextmanager
async def devtools_page(port: str) -> AsyncIterator[Page]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with http.ws_connect(url, max_msg_size=0) as ws:
            page = Page(ws)
            try:
                yield page
            finally:
                page.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await page.reader


async def _look(url: str, port: str) -> tuple[str, str, list[str], bytes]:
    async with devtools_page(port) as page:
        await page.call("Runtime.enable")
        await page.call("Log.enable")
        await page.call("Page.enable")
        await page.call(
            "Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1,
            mobile=False,
        )  # fmt: skip
        await page.call("Page.navigate", url=url)
        text = await wait_for_async(
            "the page to show the rollout",
            lambda: page.evaluate(SHOWN),
            timeout=30,
            interval=0.25,
            explain=lambda: page.evaluate("document.body.innerText"),
        )
        body = await page.evaluate("document.body.innerText")
        await asyncio.sleep(2.5)  # one more poll: the page keeps itself up to date quietly
        height = await page.evaluate("document.documentElement.scrollHeight")
        await page.call(
            "Emulation.setDeviceMetricsOverride", width=1400, height=int(height),
            deviceScaleFactor=1, mobile=False,
        )  # fmt: skip
        png = await page.call("Page.captureScreenshot", format="png")
        return text, body, list(page.problems), base64.b64decode(png["data"])


def test_status_page_shows_a_running_rollout_without_console_errors(kafka_conn, tmp_path):
    with control_worker(kafka_conn, tmp_path, FLAGS) as worker:
        close_one_window(kafka_conn, worker, devices=3, requests=60, cohort="pilot")
        produce(
            kafka_conn,
            [
                *registered("intent", "v1", "v2"),
                OptimizationResult(
                    request_id="00000000-0000-4000-8000-0000000000aa",
                    model_id="intent",
                    base_version="v1",
                    candidate_version="v2",
                    accepted=True,
                    reason="all gates passed",
                ),
            ],
        )
        wait_for(
            "rollout in /status",
            lambda: any(r["rollout_id"] == ROLLOUT for r in worker.status()["rollouts"]),
            workers=[worker],
        )
        close_one_window(kafka_conn, worker, devices=3, requests=80, cohort="pilot")
        html = worker.get("/")
        assert b"<script>" in html
        assert b"src=" not in html

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        with chromium(tmp_path / "chromium") as port:
            text, body, problems, png = asyncio.run(_look(f"http://127.0.0.1:{worker.port}/", port))
        shot.write_bytes(png)
    assert problems == []
    assert "PROGRESSING" in text
    assert "intent: v1 → v2" in text
    assert "pilot · stage 1/2 · 50% of devices" in text
    assert "Last closed window per group" in body
    assert "intent@v1 pilot" in body
    assert shot.stat().st_size > 10_000
