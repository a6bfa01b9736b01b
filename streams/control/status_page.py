"""The live status page: one self-contained HTML document (no CDN) that polls ``/status``.

Served at ``/`` on the control worker's web port. The page is static; everything it shows comes
from the status JSON, so what the page draws and what ``/status`` returns cannot drift apart.
"""

from __future__ import annotations

from importlib.resources import files

STATUS_PAGE: str = files("streams.control").joinpath("static/status.html").read_text("utf-8")
