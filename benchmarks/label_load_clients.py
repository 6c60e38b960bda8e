"""The clients of `benchmarks/label_load.py`: annotators over each of the app's routes, the
login flood, and the server's CPU time. That file's docstring says how they are used.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import httpx
from mmalign_label.fast_routes import VOTE_FIELDS


def _address(user: str) -> dict[str, str]:
    """Each annotator logs in from an address of its own (`X-Forwarded-For`, which the server
    trusts from 127.0.0.1), as a team on their own machines would: 32 logins at once from
    one address meet the per-address login limit (429)."""
    k = int(user[1:]) if user[1:].isdigit() else sum(user.encode())  # u00 .. u31
    return {"X-Forwarded-For": f"203.0.113.{k % 250 + 1}"}


class HttpAnnotator:
    """One annotator over Gradio's HTTP API, logged in with a session cookie."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=60, headers=_address(user))
        r = self.http.post(f"{url}/login", data={"username": user, "password": password})
        r.raise_for_status()

    def call(self, api: str, *data: object) -> object:
        if api == "vote":
            # Gradio's HTTP API wants every input, the optional ones too (gradio_client fills
            # them in): `answers`, None for a run with one question.
            data = (*data, None)
        r = self.http.post(f"{self.url}/gradio_api/call/{api}", json={"data": list(data)})
        r.raise_for_status()
        event = r.json()["event_id"]
        with self.http.stream("GET", f"{self.url}/gradio_api/call/{api}/{event}") as s:
            kind = None
            for line in s.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    payload = line.split(":", 1)[1].strip()
                    if kind == "error":
                        raise RuntimeError(f"{api}: {payload}")
                    return json.loads(payload)[0]
        raise RuntimeError(f"{api}: no result")


class FastAnnotator(HttpAnnotator):
    """One annotator over `/label_api/*`: one plain request per vote, no queue."""

    def call(self, api: str, *data: object) -> object:
        if api == "next_pair":
            r = self.http.get(f"{self.url}/label_api/next_pair")
        else:
            body = dict(zip(VOTE_FIELDS, data, strict=True))
            r = self.http.post(f"{self.url}/label_api/vote", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"{api}: {r.status_code} {r.text}")
        return r.json()


class ClientAnnotator:
    def __init__(self, url: str, user: str, password: str) -> None:
        from gradio_client import Client

        self.client = Client(url, auth=(user, password), verbose=False, headers=_address(user))

    def call(self, api: str, *data: object) -> object:
        return self.client.predict(*data, api_name=f"/{api}")


ANNOTATORS = {
    "http": HttpAnnotator,
    "http1": HttpAnnotator,
    "fast": FastAnnotator,
    "gradio_client": ClientAnnotator,
}


class LoginFlood:
    """`n` anonymous clients sending wrong passwords to `/login` back to back; from `n`
    addresses, or from a new address every attempt (`spread`)."""

    def __init__(self, url: str, n: int, *, spread: bool) -> None:
        self.url, self.n, self.spread = url, n, spread
        self.stop = threading.Event()
        self.answers: list[int] = []
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                        for k in range(n)]  # fmt: skip

    def _run(self, k: int) -> None:
        http = httpx.Client(timeout=60)
        i = 0
        while not self.stop.is_set():
            i += 1
            address = f"10.{k}.{i // 250 % 250}.{i % 250 + 1}" if self.spread else f"10.{k}.0.1"
            name = f"u{k:02d}" if i % 2 else f"ghost{k}"  # a known name, then an unknown one
            try:
                r = http.post(f"{self.url}/login", headers={"X-Forwarded-For": address},
                              data={"username": name, "password": "wrong"})  # fmt: skip
                self.answers.append(r.status_code)
            except httpx.HTTPError:
                self.answers.append(0)

    def __enter__(self) -> LoginFlood:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for status in self.answers:
            counts[str(status)] = counts.get(str(status), 0) + 1
        return {"clients": self.n, "spread": self.spread, "answers": counts}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
