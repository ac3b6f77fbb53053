"""Helpers for tests that load the dashboard in headless Chromium (Debian's ``chromium``).

* :func:`run_browser` runs Chromium once on a URL (``--dump-dom`` or ``--screenshot=...``) with a
  throw-away profile and a virtual-time budget, so the page's timers run for that long;
* :class:`Dom` parses the dumped DOM into element attribute dicts, each knowing its enclosing chart
  (``chart-*`` id) and call (``data-call-id``), which is how the page reports what it drew;
* :func:`check_screenshot` checks that a screenshot is a drawn page rather than a blank one;
* :func:`get_json` and :func:`wait_for` poll the dashboard's API until something holds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

WINDOW = (1400, 1000)
"""Width and height of the browser window, hence of every screenshot."""
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
]


def get_json(url: str, timeout: float = 10) -> Any:
    """GET ``url`` and decode its JSON body (HTTP errors raise ``urllib.error.HTTPError``)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(what: str, check: Callable[[], T], timeout_s: float = 90.0, every: float = 1.0) -> T:
    """Call ``check`` until it returns something truthy, and return that; exceptions count as
    "not yet".  Fails the test after ``timeout_s``, naming ``what`` and the last result or error."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last problem
            last = exc
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def chromium() -> str:
    """The Chromium executable, or a test failure saying how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed: apt-get install -y chromium (deploy/local/install-system.sh)")


def run_browser(url: str, *args: str, budget_ms: int = 10000, timeout_s: float = 180) -> subprocess.CompletedProcess:
    """Run headless Chromium once on ``url`` with ``args`` (e.g. ``--dump-dom``); the page runs for
    ``budget_ms`` of virtual time (its fetches really complete) before the DOM or screenshot is taken."""
    with tempfile.TemporaryDirectory(prefix="dashboard-chromium-") as profile:
        cmd = [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
            url,
        ]
        return subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)


class Dom(HTMLParser):
    """Every element's attributes, plus ``_tag``, ``_chart`` (the id of the enclosing ``chart-*``
    element) and ``_call`` (the ``data-call-id`` of the nearest enclosing element that has one)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, html: str | None = None):
        super().__init__()
        self.elements: list[dict] = []
        self.by_id: dict[str, dict] = {}
        self._open: list[tuple[str, dict]] = []
        if html is not None:
            self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {"_tag": tag, **{k: (v or "") for k, v in attrs}}
        charts = [o["id"] for _t, o in self._open if o.get("id", "").startswith("chart-")]
        calls = [o["data-call-id"] for _t, o in self._open if "data-call-id" in o]
        a["_chart"] = charts[-1] if charts else None
        a["_call"] = calls[-1] if calls else None
        self.elements.append(a)
        if "id" in a:
            self.by_id[a["id"]] = a
        if tag not in self.VOID:
            self._open.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def within(self, cls: str, chart: str | None = None) -> list[dict]:
        """Elements of class ``cls`` (inside chart ``chart`` when given)."""
        return [
            e for e in self.elements if cls in e.get("class", "").split() and (chart is None or e["_chart"] == chart)
        ]


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """``"#e5484d"`` -> ``(229, 72, 77)``."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def colour_pixels(path: Path, colours: dict[str, tuple[int, int, int]], tolerance: int = 40) -> dict[str, int]:
    """How many pixels of the image lie within ``tolerance`` (sum of channel differences) of each colour."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    return {name: int((np.abs(pixels - rgb).sum(axis=1) < tolerance).sum()) for name, rgb in colours.items()}


def check_screenshot(path: Path, colours: dict[str, tuple[int, int, int]], min_pixels: int = 200) -> dict[str, int]:
    """Assert that a screenshot is a drawn page: the window's size, many colours, more than 5 % of
    it unlike the two commonest colours (page and card backgrounds), and at least ``min_pixels``
    of each of ``colours`` (e.g. the emotions drawn in the timelines).  Returns the pixel counts."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (WINDOW[1], WINDOW[0], 3)
    pixels = img.reshape(-1, 3)
    distinct, counts = np.unique(pixels, axis=0, return_counts=True)
    assert len(distinct) > 500, f"only {len(distinct)} colours: blank page?"
    page, card = distinct[np.argsort(counts)[-2:]].astype(int)
    far = lambda ref: np.abs(pixels.astype(int) - ref).sum(axis=1) > 30  # noqa: E731
    drawn = (far(page) & far(card)).mean()
    assert drawn > 0.05, f"only {drawn:.1%} of the screenshot is drawn"
    found = colour_pixels(path, colours)
    for name, n in found.items():
        assert n > min_pixels, f"no {name} blocks in the screenshot ({n} pixels)"
    return found


def scraped(url: str, instance_ids: list[str]) -> bool:
    """Prometheus, through the dashboard at ``url``, holds ``emotion_service_up == 1`` from every one
    of ``instance_ids``: those instances were scraped, not only series that earlier instances of the
    same services left in Prometheus's look-back."""
    query = f'emotion_service_up{{instance_id=~"{"|".join(instance_ids)}"}} == 1'
    result = get_json(f"{url}/api/query?" + urllib.parse.urlencode({"query": query}))["data"]["result"]
    return {r["metric"]["instance_id"] for r in result} == set(instance_ids)
