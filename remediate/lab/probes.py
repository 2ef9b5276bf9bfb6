"""What the lab asks nginx, and how it tells healthy from broken: one GET per backend kind."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterable
from typing import Protocol

from remediate.errors import LabError


class Probed(Protocol):
    """What wait_healthy needs of a web host (remediate.lab.webhost.WebHost is one)."""

    @property
    def name(self) -> str: ...

    def probe(self, path: str, timeout: float = ...) -> int | str: ...


__all__ = ["PROBES", "probe", "wait_healthy"]

#: name → path requested through nginx on a web host.
PROBES: dict[str, str] = {
    "app": "/",
    "api": "/api/users",
    "reports": "/reports/daily",
    "php": "/index.php",
    "healthz": "/healthz",
    "secure": "/secure/",
    "dyn": "/dyn/",
    "svc": "/svc/",
}


def probe(addr: str, port: int, path: str, host: str, timeout: float = 8.0) -> int | str:
    """The HTTP status for GET ``path``, or the name of what went wrong ("timeout", "ConnectionRefusedError")."""
    conn = http.client.HTTPConnection(addr, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        return conn.getresponse().status
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__
    finally:
        conn.close()


def wait_healthy(webs: Iterable[Probed], timeout: float = 30.0) -> None:
    """Wait until every probe on every web host answers 200; the ones that do not, named, if they never do."""
    pending = list(webs)
    deadline = time.monotonic() + timeout
    bad: dict[str, int | str] = {}
    while time.monotonic() < deadline:
        bad = {}
        for web in pending:
            bad.update({f"{web.name} {n}": s for n, path in PROBES.items() if (s := web.probe(path, 5.0)) != 200})
        if not bad:
            return
        pending = [w for w in pending if any(k.startswith(w.name + " ") for k in bad)]
        time.sleep(0.2)
    detail = ", ".join(f"{k}={v}" for k, v in bad.items())
    raise LabError(f"the lab is not healthy after {timeout:g}s: {detail}; see the hosts' supervisor/log")
