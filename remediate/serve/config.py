"""``serve.yml``: the service's one config file. Every key is documented in ``examples/serve.yml``.

Secrets (the API bearer token, Alertmanager's token, Slack's signing secret and bot token) are
never in this file, in argv or in a log: the file names files that hold them. A secret file that
other users can read is refused, as ssh refuses such a private key. Every mistake is an
InputError (exit 5) naming the key.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import InputError
from remediate.hosts.values import parse_since
from remediate.stores.policy import Policy

__all__ = ["ROUTE_MODES", "AlertRoute", "ServeConfig", "SlackConfig", "load_config"]

ROUTE_MODES = ("diagnose", "approve", "fix")
_TOP = {
    "listen", "inventory", "state_dir", "api_token_file", "alertmanager", "slack", "policy", "cooldown",
    "max_runs_per_hour", "approval_ttl", "workers", "keep_connections", "since", "accept_new_host_key",
    "max_body", "queue", "tls", "behind_tls_proxy", "max_connections", "max_connections_per_client",
}  # fmt: skip


@dataclass(frozen=True)
class AlertRoute:
    match: dict[str, str]
    host_label: str
    cause_label: str | None
    mode: str

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match.items())


@dataclass(frozen=True)
class SlackConfig:
    signing_secret: str = field(repr=False)
    token: str = field(repr=False)
    api_url: str = "https://slack.com/api/"
    channel: str | None = None
    command: str = "/remediate"


@dataclass(frozen=True)
class ServeConfig:
    path: Path
    host: str
    port: int
    inventory: Path
    state_dir: Path
    api_token: str | None = field(repr=False)
    alert_token: str | None = field(repr=False)
    routes: tuple[AlertRoute, ...]
    slack: SlackConfig | None
    policy: Policy
    cooldown: float = 1800.0
    max_runs_per_hour: int = 6
    approval_ttl: float = 900.0
    workers: int = 4
    keep_connections: float = 600.0
    since: float = 900.0
    accept_new_host_key: bool = False
    max_body: int = 256 * 1024
    #: A ``postgresql://`` URL: jobs go to Procrastinate there and run in `remediate worker --config`
    #: processes; the ledger, approvals and audit chain live in that database. None: all in this process.
    queue: str | None = None
    #: (certificate chain file, private key file): the service speaks HTTPS itself.
    tls: tuple[Path, Path] | None = None
    #: A TLS proxy in front terminates HTTPS (the only way to listen beyond loopback without ``tls``).
    behind_tls_proxy: bool = False
    #: Connections held open at once; one more is answered 503 and closed before it is read.
    max_connections: int = 512
    #: Connections one client address may hold (None: no such cap; always so behind a TLS proxy).
    max_connections_per_client: int | None = 64

    @property
    def stores(self) -> str | Path:
        """Where the ledger, approvals and audit chain are (remediate.stores.db)."""
        return self.queue or self.state_dir


def load_config(path: str | Path) -> ServeConfig:
    """Read and check ``path``; relative paths in it are relative to the file's directory."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no such config file", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", file=str(path)) from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", file=str(path), line=line) from None
    if not isinstance(data, dict):
        raise InputError("must be a YAML mapping (listen, inventory, state_dir, ...)", file=str(path))
    return _Reader(path, data).config()


class _Reader:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data, self.base = path, data, path.parent

    def fail(self, key: str, message: str) -> InputError:
        return InputError(f"{key}: {message}", file=str(self.path))

    def config(self) -> ServeConfig:
        d = self.data
        unknown = set(d) - _TOP
        if unknown:
            raise self.fail(", ".join(sorted(map(str, unknown))), f"unknown key (keys: {', '.join(sorted(_TOP))})")
        host, port = self.listen(d.get("listen", "127.0.0.1:8088"))
        if not ipaddress.ip_address(host).is_loopback and not d.get("tls") and d.get("behind_tls_proxy") is not True:
            raise self.fail(
                "listen",
                f"{host} is reachable from other machines, and the service would speak plain HTTP: both bearer "
                "tokens would cross the network in clear; add tls: {cert_file, key_file}, or say "
                "behind_tls_proxy: true when a TLS proxy in front terminates HTTPS",
            )
        for key in ("inventory", "state_dir"):
            if not d.get(key):
                raise self.fail(key, "required")
        am = d.get("alertmanager")
        if am is not None and not isinstance(am, dict):
            raise self.fail("alertmanager", "must be a mapping with token_file and routes")
        return ServeConfig(
            path=self.path,
            host=host,
            port=port,
            inventory=self.file_path(d["inventory"]),
            state_dir=self.file_path(d["state_dir"]),
            api_token=self.secret("api_token_file", d.get("api_token_file")),
            alert_token=self.secret("alertmanager.token_file", (am or {}).get("token_file")) if am else None,
            routes=self.routes(am) if am else (),
            slack=self.slack(d.get("slack")),
            policy=Policy.from_config(d.get("policy"), source=f"{self.path}: policy"),
            cooldown=self.duration("cooldown", d.get("cooldown", "30m")),
            max_runs_per_hour=self.count("max_runs_per_hour", d.get("max_runs_per_hour", 6)),
            approval_ttl=self.duration("approval_ttl", d.get("approval_ttl", "15m")),
            workers=self.count("workers", d.get("workers", 4), minimum=1),
            keep_connections=self.duration("keep_connections", d.get("keep_connections", "10m")),
            since=self.duration("since", d.get("since", "15m")),
            accept_new_host_key=self.flag("accept_new_host_key", d.get("accept_new_host_key", False)),
            max_body=self.count("max_body", d.get("max_body", 256 * 1024), minimum=1024),
            queue=self.queue_url(d.get("queue")),
            tls=self.tls(d.get("tls")),
            behind_tls_proxy=self.flag("behind_tls_proxy", d.get("behind_tls_proxy", False)),
            max_connections=self.count("max_connections", d.get("max_connections", 512), minimum=8),
            max_connections_per_client=self.per_client(d),
        )

    def per_client(self, d: dict[str, Any]) -> int | None:
        """0 turns the per-client cap off; behind a TLS proxy it is off (every connection is the proxy's)."""
        value = self.count("max_connections_per_client", d.get("max_connections_per_client", 64))
        return None if value == 0 or d.get("behind_tls_proxy") is True else value

    def queue_url(self, value: Any) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        text = str(value)
        if not text.startswith(("postgresql://", "postgres://")):
            raise self.fail("queue", "must be a postgresql:// URL (e.g. postgresql://remediate@db.example/remediate)")
        from urllib.parse import parse_qsl

        try:
            parts = urlsplit(text)
            password = parts.password
            # libpq percent-decodes every key and value (?pass%77ord=… is a password): compare decoded keys.
            keys = {k.strip().lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        except ValueError:
            raise self.fail("queue", "is not a valid URL") from None
        if password or "password" in keys:
            raise self.fail(
                "queue", "must not hold a password (this file is not a secret): use ?passfile=FILE or ~/.pgpass"
            )
        return text

    def listen(self, value: Any) -> tuple[str, int]:
        text = str(value)
        host, _, port = text.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            raise self.fail("listen", f"{text!r} is not ADDRESS:PORT (e.g. 127.0.0.1:8088)") from None
        if not 0 <= number <= 65535:
            raise self.fail("listen", f"port {number} is out of range")
        return host, number

    def file_path(self, value: Any) -> Path:
        path = Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else self.base / path

    def secret(self, key: str, value: Any) -> str | None:
        if value is None:
            return None
        path = self.file_path(value)
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise self.fail(key, f"cannot read the secret file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise self.fail(key, f"the secret file {path} is not UTF-8 text") from None
        self.private(key, path, st)
        if len(text) < 16:
            raise self.fail(key, f"the secret in {path} is shorter than 16 characters")
        return text

    def private(self, key: str, path: Path, st: os.stat_result) -> None:
        """A secret file is its owner's alone: no bit for group or others, and the owner is the service's user."""
        if st.st_mode & 0o077:  # group or others: any bit (0640 and 0660 leak to a whole group)
            raise self.fail(
                key, f"the secret file {path} is open to others than its owner (mode {st.st_mode & 0o777:04o}); "
                f"chmod 600 {path}",
            )  # fmt: skip
        if st.st_uid != os.geteuid():
            raise self.fail(
                key, f"the secret file {path} belongs to uid {st.st_uid}, not to the service's user (uid "
                f"{os.geteuid()}); chown it (with systemd, LoadCredential= hands it over: see the example units)",
            )  # fmt: skip

    def duration(self, key: str, value: Any) -> float:
        try:
            seconds = float(value) if isinstance(value, int | float) else parse_since(str(value))
        except ValueError:
            raise self.fail(key, f"{value!r} is not a duration (90s, 30m, 2h, 1d)") from None
        if seconds < 0:
            raise self.fail(key, "must not be negative")
        return seconds

    def count(self, key: str, value: Any, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"must be a whole number ≥ {minimum}, not {value!r}")
        return value

    def tls(self, value: Any) -> tuple[Path, Path] | None:
        """``tls: {cert_file, key_file}``: both readable, the key a secret (0600, the service user's own)."""
        if value is None:
            return None
        if not isinstance(value, dict) or set(value) != {"cert_file", "key_file"}:
            raise self.fail("tls", "must be a mapping with cert_file and key_file")
        cert, key = self.file_path(value["cert_file"]), self.file_path(value["key_file"])
        try:
            st = key.stat()
            cert.read_bytes()
        except OSError as exc:
            raise self.fail("tls", f"cannot read {exc.filename}: {exc.strerror}") from None
        self.private("tls.key_file", key, st)
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError) as exc:
            raise self.fail("tls", f"{cert} and {key} are not a certificate chain and its key: {exc}") from None
        return cert, key

    def flag(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {value!r}")
        return value

    def routes(self, am: dict[str, Any]) -> tuple[AlertRoute, ...]:
        unknown = set(am) - {"token_file", "routes"}
        if unknown:
            raise self.fail(f"alertmanager.{sorted(unknown)[0]}", "unknown key (token_file, routes)")
        if not am.get("token_file"):
            raise self.fail("alertmanager.token_file", "required: Alertmanager's webhook is never anonymous")
        routes = []
        for i, spec in enumerate(am.get("routes") or []):
            where = f"alertmanager.routes[{i}]"
            if not isinstance(spec, dict):
                raise self.fail(where, "must be a mapping with match, host_label and mode")
            unknown = set(spec) - {"match", "host_label", "cause_label", "mode"}
            if unknown:
                raise self.fail(f"{where}.{sorted(unknown)[0]}", "unknown key (match, host_label, cause_label, mode)")
            match = spec.get("match") or {}
            if not isinstance(match, dict):
                raise self.fail(f"{where}.match", "must be a mapping of label: value")
            mode = spec.get("mode", "diagnose")
            if mode not in ROUTE_MODES:
                raise self.fail(f"{where}.mode", f"{mode!r} is not one of {', '.join(ROUTE_MODES)}")
            cause_label = spec.get("cause_label")
            routes.append(
                AlertRoute(
                    {str(k): str(v) for k, v in match.items()},
                    str(spec.get("host_label", "instance")),
                    None if cause_label is None else str(cause_label),
                    mode,
                )
            )
        return tuple(routes)

    def slack(self, spec: Any) -> SlackConfig | None:
        if spec is None:
            return None
        if not isinstance(spec, dict):
            raise self.fail("slack", "must be a mapping with signing_secret_file and token_file")
        known = {"signing_secret_file", "token_file", "api_url", "channel", "command"}
        unknown = set(spec) - known
        if unknown:
            raise self.fail(f"slack.{sorted(unknown)[0]}", f"unknown key ({', '.join(sorted(known))})")
        for key in ("signing_secret_file", "token_file"):
            if not spec.get(key):
                raise self.fail(f"slack.{key}", "required")
        api_url = str(spec.get("api_url", "https://slack.com/api/"))
        if not _https_or_loopback(api_url):
            raise self.fail("slack.api_url", "must be https:// (plain http only to loopback, for a local fake)")
        return SlackConfig(
            signing_secret=self.secret("slack.signing_secret_file", spec["signing_secret_file"]) or "",
            token=self.secret("slack.token_file", spec["token_file"]) or "",
            api_url=api_url if api_url.endswith("/") else api_url + "/",
            channel=None if spec.get("channel") is None else str(spec["channel"]),
            command=str(spec.get("command", "/remediate")),
        )


def _https_or_loopback(url: str) -> bool:
    """https://, or http:// to a loopback address (a local fake), judged on the parsed host, not a prefix:
    ``http://127.evil.example/`` is not loopback."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if parts.scheme == "https" and host:
        return True
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
