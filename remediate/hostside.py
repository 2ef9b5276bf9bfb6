"""The helper remediate runs *on the host*: evidence, validation and the whole guarded apply.

This file is sent as the constant source of ``python3 -c``; everything it acts
on arrives as JSON on stdin and never touches a shell. It uses the standard
library only and may not import remediate. Doing the transaction on the host
keeps the host safe if the SSH connection drops halfway: the helper finishes
(or rolls back) on its own, and records every step in the host's journal, so a
helper that was killed outright is recovered by the next run.

Two ways to run it:

* one-shot (no argument): one JSON request on stdin, one JSON answer on stdout.
* ``session``: one JSON request per line, one answer per line, for a whole run. The session
  holds the host's lock (an flock, which the kernel drops when the process ends however it
  ends) and lives exactly as long as the controller: EOF on stdin (controller killed, SSH
  cut) or ``idle`` seconds without a line (the controller pings every few seconds) ends it.

Ops (``{"op": ...}``):

* ``collect``: (with ``lock``) take the lock and recover crashed runs, then gather evidence
  (command outputs, files, stats, the tail of logs, unix sockets nginx uses).
* ``validate``: run ``nginx -t`` / ``php-fpm -t`` with candidate files bind-mounted over the
  live ones in a private mount namespace; nothing live changes (``--check`` uses it).
* ``apply``: the transaction: lock, compare-and-swap every file against the bytes the plan was
  made from, validate the candidates, back up (bytes, owner, mode), write atomically, reload or
  restart, confirm, probe; on any failure after the first write, restore every file written.
* ``rollback``: undo a finished run from its journal, refusing files that were edited since
  (unless forced) and backups whose bytes do not match the sha256 the journal recorded.
* ``status``: what the journal says of a run, and who holds the lock.
* ``unlock``: ask the process holding the lock to let go (it finishes a transaction first).
"""

# Runs on the host's own python3 (3.7 or later), standard library only. Annotations are never
# evaluated (the __future__ import), and typing is imported only by mypy, never on the host.
from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy reads this; the host never imports typing
    from collections.abc import Callable, Iterator
    from typing import Any

    #: A request, an answer, a journal's meta: JSON objects.
    Req = dict[str, Any]

LOCK_NAME = "lock"
LOCK_HISTORY = "locks.log"
RUNS = "runs"

# The states of a run in its meta.json, in the order the helper that holds the lock writes them,
# and what recovery does with a run a crash left in each (any state not final means its helper
# died mid-transaction; it held the lock, so nobody else wrote the journal meanwhile):
#
#   prepared    backups are being taken; no live file has been written
#               -> closed as "failed": there is nothing to undo
#   writing     live files are being replaced; each holds its old bytes or exactly the run's new ones
#               -> every file that holds the run's bytes is restored from its verified backup; no
#                  action ran, so nothing is reloaded or restarted
#   activating  every file is written; the actions listed in "started" may have taken effect
#               -> restored as above, validated, then only the started actions run again
#   applying    (journals of remediate 0.1) -> as activating, with every action started
#
# Final: committed, rolled-back, failed (nothing was changed), restore-incomplete (waits for a
# human: rollback --force), recovered, rolled-back-by-user. Recovery never touches a final run,
# and never writes a file whose bytes are not exactly what that run wrote.
RECOVERABLE = ("prepared", "writing", "activating", "applying")
FINAL = ("committed", "rolled-back", "failed", "restore-incomplete", "recovered", "rolled-back-by-user")

# The transaction in progress, if any: a signal that would end the session waits for it.
TXN = {"active": False, "stop": False}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now() -> float:
    return time.time()


# -- small tools -------------------------------------------------------------------


def execute(argv: list[str], timeout: float = 60) -> Req:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        return {
            "argv": argv,
            "exit": done.returncode,
            "stdout": done.stdout.decode("utf-8", "surrogateescape"),
            "stderr": done.stderr.decode("utf-8", "replace"),
        }
    except FileNotFoundError:
        return {"argv": argv, "exit": 127, "stdout": "", "stderr": "%s: command not found" % argv[0]}
    except subprocess.TimeoutExpired:
        return {"argv": argv, "exit": 124, "stdout": "", "stderr": "timed out after %ss" % timeout}


def tail(cmd: Req) -> str:
    return " | ".join([ln for ln in (cmd["stderr"] or cmd["stdout"]).strip().splitlines() if ln.strip()][-3:])


def stat_of(path: str) -> Req | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"path": path, "error": str(exc)}
    import grp
    import pwd
    import stat as st_mod

    def name(fn: Callable[[int], Any], ident: int) -> str:
        try:
            return str(fn(ident)[0])
        except KeyError:
            return str(ident)

    kind = "socket" if st_mod.S_ISSOCK(st.st_mode) else "directory" if st_mod.S_ISDIR(st.st_mode) else "file"
    return {
        "path": path,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "owner": name(pwd.getpwuid, st.st_uid),
        "group": name(grp.getgrgid, st.st_gid),
        "mode": st.st_mode & 0o7777,
        "kind": kind,
        "size": st.st_size,
    }


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def write_atomic(path: str, data: bytes, like: Req | None = None, mode: int = 0o644) -> None:
    """Temp file beside the target, owner and mode copied, fsync, rename: all or nothing."""
    target = os.path.realpath(path)
    fd, tmp = tempfile.mkstemp(prefix=".remediate.", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if like is not None:
            os.chown(tmp, like["uid"], like["gid"])
            os.chmod(tmp, like["mode"])
        else:
            os.chmod(tmp, mode)
        os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def missing_dirs(directory: str) -> list[str]:
    """The directories from the first missing ancestor of ``directory`` down to it, in order to make."""
    todo = []
    while directory and directory != "/" and not os.path.isdir(directory):
        todo.append(directory)
        directory = os.path.dirname(directory)
    return list(reversed(todo))


def log_tail(path: str, max_bytes: int) -> Req:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return {"path": path, "missing": True, "text": "", "size": 0}
    if size > max_bytes and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]
    return {"path": path, "size": size, "text": data.decode("utf-8", "replace")}


_STAMP = re.compile(rb"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) ", re.M)


def log_window(path: str, since: float, max_bytes: int, now_ts: float | None = None) -> Req:
    """The lines of an error log from ``since`` seconds ago to now, read from the end.

    Finds where the window starts by reading backwards in blocks (linear in the window, constant
    memory), going on into the rotated files (path.1, path.1.gz, path.2.gz, ...) while the window
    reaches past a file's first line. At most ``max_bytes`` of the newest part are returned, and
    ``truncated`` says whether that cap cut the window. Log times are the host's local time,
    which is also how the cutoff is written.
    """
    cutoff = cutoff_of(since, now_ts)
    spans, read_files = window_spans(path, cutoff)
    total = sum(end - start for _, start, end in spans)
    truncated = total > max_bytes
    if truncated:  # keep the newest max_bytes, from a line start
        keep = max_bytes
        kept: list[tuple[str, int, int, bool]] = []
        for name, start, end in reversed(spans):
            if keep <= 0:
                break
            if end - start > keep:
                start = end - keep
                kept.insert(0, (name, start, end, True))
            else:
                kept.insert(0, (name, start, end, False))
            keep -= end - start
        marked = kept
    else:
        marked = [(name, start, end, False) for name, start, end in spans]
    parts = []
    for name, start, end, cut in marked:
        data = b"".join(read_span(name, start, end))
        if cut:
            data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
        if data and not data.endswith(b"\n"):
            data += b"\n"
        parts.append(data)
    text = b"".join(parts)
    return {
        "path": path,
        "text": text.decode("utf-8", "surrogateescape"),
        "files": read_files,
        "cutoff": cutoff.decode(),
        "truncated": truncated,
        "bytes": len(text),
    }


def journal_window(unit: str, since: float, max_bytes: int) -> Req:
    """What ``unit`` wrote to journald in the last ``since`` seconds (nginx's errors when it logs to
    syslog or stderr), message text only, the newest ``max_bytes``."""
    res = execute(["journalctl", "--unit", unit, "--since", "@%d" % int(now() - since), "--no-pager", "--quiet",
               "--output", "cat"], 60)  # fmt: skip
    if res["exit"] != 0:
        return {"unit": unit, "text": "", "error": tail(res) or "journalctl exited %d" % res["exit"]}
    text = res["stdout"]
    if len(text) > max_bytes:
        text = text[-max_bytes:].split("\n", 1)[-1]
    return {"unit": unit, "text": text}


def cutoff_of(since: float, now_ts: float | None = None) -> bytes:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime((now_ts or now()) - since)).encode()


def window_spans(path: str, cutoff: bytes) -> tuple[list[tuple[str, int, int]], list[Req]]:
    """[(file, start, end)] oldest first: the byte ranges of ``path`` and its rotated files in the window."""
    spans: list[tuple[str, int, int]] = []
    read_files: list[Req] = []
    candidates = [path] + ["%s.%d%s" % (path, n, ext) for n in range(1, 10) for ext in ("", ".gz")]
    for name in candidates:
        if not os.path.exists(name):
            continue
        try:
            start, end, whole = _window_start(name, cutoff)
        except (OSError, EOFError) as exc:
            read_files.append({"path": name, "error": str(exc)})
            break
        spans.insert(0, (name, start, end))
        read_files.append({"path": name, "bytes": end - start})
        if not whole:  # the window starts inside this file: older files are outside it
            break
    return spans, read_files


def read_span(name: str, start: int, end: int, block: int = 8 << 20) -> Iterator[bytes]:
    """The bytes of ``name`` from ``start`` to ``end``, in blocks (uncompressed offsets for .gz)."""
    import gzip

    opener = gzip.open if name.endswith(".gz") else open
    with opener(name, "rb") as fh:
        fh.seek(start)
        pos = start
        while pos < end:
            data = fh.read(min(block, end - pos))
            if not data:
                break
            pos += len(data)
            yield data


def _window_start(name: str, cutoff: bytes, block: int = 1 << 20) -> tuple[int, int, bool]:
    """(start, end, whole): the offset of the first line of ``name`` stamped at or after ``cutoff``,
    its size, and whether the file's first line is already inside the window.

    Reads backwards one block at a time and keeps only the partial line that straddles two
    blocks, so time is linear in the window and memory is one block. A .gz file cannot be read
    backwards; it is read forwards once, which costs its uncompressed size.
    """
    if name.endswith(".gz"):
        import gzip

        with gzip.open(name, "rb") as fh:
            pos, carry, found = 0, b"", None
            while True:
                data = fh.read(block)
                if not data:
                    break
                data = carry + data
                cut = data.rfind(b"\n") + 1
                body, carry = data[:cut], data[cut:]
                if found is None:
                    at = _first_at_or_after(body, cutoff)
                    if at < len(body):
                        found = pos + at
                pos += len(body)
            end = pos + len(carry)
            if found is None:
                found = end
            return found, end, found == 0
    with open(name, "rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        pos, carry = end, b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + carry
            if pos > 0:
                nl = data.find(b"\n")
                if nl < 0:  # one line longer than a block: keep going back (bounded by nginx's line cap)
                    carry = data
                    continue
                carry, body, base = data[: nl + 1], data[nl + 1 :], pos + nl + 1
            else:
                carry, body, base = b"", data, 0
            first = _STAMP.search(body)
            if first and first.group(1) < cutoff:
                return base + _first_at_or_after(body, cutoff), end, False
        return 0, end, True


def _first_at_or_after(data: bytes, cutoff: bytes) -> int:
    """Offset of the first line stamped at or after ``cutoff`` (lines are in time order)."""
    for m in _STAMP.finditer(data):
        if m.group(1) >= cutoff:
            return m.start()
    return len(data)


def pid_alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def children(pid: int) -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as fh:
                    stat = fh.read()
                with open("/proc/%s/cmdline" % entry, "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry)] = cmd
    return found


# -- journal and lock ----------------------------------------------------------------


class Journal:
    def __init__(self, root: str, create: bool = True) -> None:
        self.root = root
        if create:
            os.makedirs(os.path.join(root, RUNS), mode=0o700, exist_ok=True)
            os.chmod(root, 0o700)

    def run_dir(self, run_id: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]+$", run_id) or run_id in (".", ".."):
            raise ValueError("bad run id %r" % run_id)
        return os.path.join(self.root, RUNS, run_id)

    def meta(self, run_id: str) -> Req | None:
        """A run's meta.json; None when there is no such run; ``{"state": "unreadable"}`` when it is corrupt."""
        path = os.path.join(self.run_dir(run_id), "meta.json")
        try:
            with open(path, "rb") as fh:
                meta = json.loads(fh.read().decode("utf-8"))
            if not isinstance(meta, dict) or not isinstance(meta.get("changes"), list) or "state" not in meta:
                raise ValueError("not a run record")
            return meta
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return {"run_id": run_id, "state": "unreadable", "changes": [], "error": "%s: %s" % (path, exc)}

    def save(self, meta: Req) -> None:
        path = self.run_dir(meta["run_id"])
        os.makedirs(os.path.join(path, "files"), mode=0o700, exist_ok=True)
        write_atomic(os.path.join(path, "meta.json"), json.dumps(meta, indent=1).encode(), mode=0o600)

    def backup_path(self, run_id: str, index: int) -> str:
        return os.path.join(self.run_dir(run_id), "files", "%d.orig" % index)

    def runs(self) -> list[Req]:
        try:
            names = sorted(os.listdir(os.path.join(self.root, RUNS)))
        except FileNotFoundError:
            return []
        return [m for m in (self.meta(n) for n in names if re.match(r"^[A-Za-z0-9_.-]+$", n)) if m]


# -- the lock ----------------------------------------------------------------------------
#
# An flock(2) on JOURNAL/lock, held by the helper process of the run that owns the host. The
# kernel drops it when that process ends, however it ends (SIGKILL included), so the lock cannot
# outlive its holder. The file's text (run id, pid, since) is there for messages only.

HELD: dict[str, tuple[int, Req]] = {}  # journal root -> (fd, info), the locks this process holds


def _lock_text(fd: int) -> Req:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode("utf-8") or "null") or {}
    except (OSError, ValueError):
        return {}


def lock_acquire(root: str, run_id: str) -> Req:
    """Take the host's lock for ``run_id``: {"acquired": True} or {"acquired": False, "held": who}."""
    if root in HELD:
        info = HELD[root][1]
        if info["run_id"] == run_id:
            return {"acquired": True}
        return {"acquired": False, "held": info}
    path = os.path.join(root, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            held = _lock_text(fd)
            os.close(fd)
            return {"acquired": False, "held": held}
        # A holder that let go unlinks the file: make sure the path still names what we locked.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        previous = _lock_text(fd)
        info = {"run_id": run_id, "pid": os.getpid(), "since": now(), "host": socket.gethostname()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        HELD[root] = (fd, info)
        _lock_history(root, {"run_id": run_id, "acquired": info["since"], "pid": info["pid"]})
        return {"acquired": True, "stale": previous or None}


def lock_release(root: str) -> None:
    held = HELD.pop(root, None)
    if held is not None:
        fd, info = held
        _lock_history(root, {"run_id": info["run_id"], "released": now(), "pid": info["pid"]})
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(root, LOCK_NAME))
        os.close(fd)


def _lock_history(root: str, entry: Req) -> None:
    """One line in JOURNAL/locks.log per acquire and release: who held the host when. A holder
    killed while holding has no release line; the kernel dropped its flock when it died. History
    only: a full disk must not stop a fix, so a line that cannot be written is left out."""
    with contextlib.suppress(OSError):
        fd = os.open(os.path.join(root, LOCK_HISTORY), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)


def lock_holder(root: str) -> Req | None:
    """Who holds the lock now (the kernel's answer, not the file's), or None."""
    path = os.path.join(root, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _lock_text(fd) or {"run_id": "?", "pid": None}
        return None
    finally:
        os.close(fd)


# -- nginx facts -----------------------------------------------------------------------

# Every ``unix:PATH`` the dump names, wherever it stands (a *_pass, an upstream's server, a split
# line): the controller keeps those its parsed config model says nginx passes to, so how a site is
# laid out never hides a socket.
_UNIX = re.compile(r"unix:([^\s;:\"'{}]+)")
_USER = re.compile(r"^\s*user\s+([^\s;]+)(?:\s+([^\s;]+))?\s*;", re.M)


def socket_accepts(path: str) -> tuple[bool, str]:
    """Does anything accept on the unix socket ``path``? (True, "") or (False, "errno: why").

    A socket file whose listener died (a SIGKILLed php-fpm master, the OOM killer) stays on disk:
    only a connect tells it from a live one. Connecting as root says nothing of nginx's
    permission (that is the stat's job); a full listen queue answers EAGAIN."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(path)
        return True, ""
    except OSError as exc:
        if exc.errno == errno.EINPROGRESS:
            return True, ""
        return False, "%d: %s" % (exc.errno or 0, exc.strerror or exc)
    finally:
        s.close()


def nginx_facts(dump_text: str) -> Req:
    """The unix sockets the dump names, and the worker user with its groups (what initgroups gives it)."""
    found = _USER.search(dump_text)
    user, group = (found.group(1), found.group(2) or found.group(1)) if found else ("nobody", "nogroup")
    ids = execute(["id", "-Gn", "--", user], 10)  # the name comes from the config: never an option
    groups = ids["stdout"].split() if ids["exit"] == 0 else []
    if group not in groups:
        groups.append(group)
    sockets = []
    for path in sorted(set(_UNIX.findall(dump_text))):
        if not path.startswith("/"):
            continue
        st = stat_of(path)
        entry = {
            "path": path,
            "realpath": os.path.realpath(path),
            "stat": st,
            "exists": bool(st and st.get("kind") == "socket"),
        }
        if st is not None and entry["exists"]:
            mode = st["mode"]
            entry["nginx_may_connect"] = bool(
                user == "root"
                or (st["owner"] == user and mode & 0o200)
                or (st["group"] in groups and mode & 0o020)
                or mode & 0o002
            )
            entry["accepting"], entry["connect_error"] = socket_accepts(path)
        else:
            entry["nginx_may_connect"] = False
            entry["accepting"], entry["connect_error"] = False, "2: No such file or directory"
        sockets.append(entry)
    return {"user": user, "group": group, "groups": groups, "unix_sockets": sockets}


# -- ops ---------------------------------------------------------------------------------


def op_collect(req: Req) -> Req:
    out: Req = {"lock": None, "recovered": []}
    if req.get("lock"):
        journal = Journal(req["journal_dir"])
        out["lock"] = lock_acquire(journal.root, req["run_id"])
        if not out["lock"]["acquired"]:
            return out
        out["recovered"] = recover(journal, req)
    out["commands"] = {name: execute(argv, req.get("timeout", 60)) for name, argv in req.get("commands", {}).items()}
    files: dict[str, Req | None] = {}
    wanted = list(req.get("files", []))
    if req.get("php_fpm"):
        out["php_fpm"] = php_fpm_files(req["php_fpm"]["conf"], req["php_fpm"].get("pools") or [])
        wanted += [p for p in out["php_fpm"]["pools"] if p not in wanted]
    for path in wanted:
        try:
            data = read(path)
            files[path] = {"b64": base64.b64encode(data).decode(), "stat": stat_of(path)}
        except FileNotFoundError:
            files[path] = None
        except OSError as exc:
            files[path] = {"error": str(exc)}
    out["files"] = files
    out["stats"] = {p: stat_of(p) for p in req.get("stats", [])}
    out["http"] = {name: http_status(url, req.get("http_timeout", 3)) for name, url in req.get("http", {}).items()}
    out["logs"] = {p: log_tail(p, req.get("log_bytes", 262144)) for p in req.get("logs", [])}
    out["raw"] = {name: raw_http(spec) for name, spec in req.get("raw", {}).items()}
    if req.get("window"):
        w = req["window"]
        out["window"] = log_window(w["path"], w["since"], w.get("max_bytes", 64 << 20))
        if w.get("journal"):
            out["window"]["journal"] = journal_window(w["journal"], w["since"], w.get("max_bytes", 64 << 20))
    if req.get("ask_listeners"):
        out["listeners"] = ask_listeners(req["ask_listeners"])
    if req.get("systemd_units"):
        out["systemd_units"] = systemd_units_on_port(req["systemd_units"]["port"])
    if req.get("replay"):  # failed requests asked once more through nginx: GET/HEAD only (see replay.py)
        specs = [p for p in req["replay"]["probes"] if p.get("method", "GET") in ("GET", "HEAD")]
        statuses = probe(specs, 0, set(req["replay"].get("bad", [502, 504])))
        failing, answered = judge(statuses, set(req["replay"].get("bad", [502, 504])))
        out["replay"] = {"statuses": statuses, "failing": failing, "answered": answered}
    if req.get("fpm_master"):
        out["fpm_master"] = fpm_masters_started()
    if req.get("nofile_pid_file"):
        out["nofile"] = nofile_limits(req["nofile_pid_file"])
    dump = out["commands"].get("nginx_T")
    if dump is not None and dump["exit"] == 0:
        out["nginx"] = nginx_facts(dump["stdout"])
    return out


def op_batch(req: Req) -> Req:
    """Several read-only collect requests in one round trip, run side by side: {"answers": {name: answer}}.

    The second phase of a diagnosis asks one host several things (a backend's answer, dig, a
    stub_status page) for several playbooks at once; each part is a plain collect, never a lock."""
    answers = {}

    def one(name: str, sub: Req) -> None:
        sub = dict(sub, op="collect")
        sub.pop("lock", None)
        answers[name] = handle(sub)

    threads = [threading.Thread(target=one, args=item) for item in sorted(req.get("requests", {}).items())]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"answers": answers}


def recover(journal: Journal, req: Req) -> list[Req]:
    """Finish the runs a crash left mid-transaction, as the state each reached says (see RECOVERABLE)."""
    done = []
    for meta in journal.runs():
        if meta["state"] == "unreadable":
            problem = "journal entry unreadable (%s); left alone, look at it by hand" % meta["error"]
            done.append({"run_id": meta["run_id"], "restored": [], "problems": [problem]})
            continue
        if meta["state"] not in RECOVERABLE or meta["run_id"] == req["run_id"]:
            continue
        entry = {"run_id": meta["run_id"], "state": meta["state"], "restored": [], "problems": []}
        if meta["state"] == "prepared":
            entry["note"] = "it died before writing any live file: nothing to undo"
        else:
            if meta["state"] == "writing":
                meta["started"] = []  # no action ran
            elif meta["state"] == "applying":
                meta["started"] = list(range(len(meta.get("actions", []))))
            restored, problems = restore_files(journal, meta, force=False)
            entry["restored"], entry["problems"] = restored, problems + finish_restore(meta, restored)
        if entry["problems"]:
            meta["state"] = "restore-incomplete"
        else:
            meta["state"] = "recovered" if entry["restored"] else "failed"
        meta["recovered_by"] = req["run_id"]
        journal.save(meta)
        done.append(entry)
    return done


def restore_files(journal: Journal, meta: Req, force: bool) -> tuple[list[str], list[str]]:
    """Put back every file this run wrote; return (restored paths, problems).

    Compare-and-swap, like the apply: a file is restored only while it holds exactly the bytes
    the run wrote (or with ``force``); one that holds anything else was changed by someone since,
    and is left alone. Every backup is checked against the sha256 the journal recorded before
    any file is touched: if one does not match, nothing at all is restored.
    """
    todo: list[tuple[Req, bytes | None]] = []
    problems: list[str] = []
    bad_backup = False
    for index, change in enumerate(meta["changes"]):
        if not change.get("backed_up"):
            continue
        path = change["path"]
        try:
            current: bytes | None = read(path)
        except FileNotFoundError:
            current = None
        current_sha = sha(current) if current is not None else None
        if current_sha == change["before_sha"]:
            for directory in reversed(change.get("made_dirs", []) if current is None else []):
                with contextlib.suppress(OSError):  # made before a crash, the file never written
                    os.rmdir(directory)
            continue
        if current_sha != change["after_sha"] and not force:
            problems.append("%s was changed since run %s; left as it is" % (path, meta["run_id"]))
            continue
        if change.get("created"):
            todo.append((change, None))
            continue
        backup = journal.backup_path(meta["run_id"], index)
        try:
            original = read(backup)
        except OSError as exc:
            problems.append("the backup of %s (%s) cannot be read: %s" % (path, backup, exc.strerror or exc))
            bad_backup = True
            continue
        if sha(original) != change["before_sha"]:
            problems.append(
                "the backup of %s (%s) does not match the sha256 the journal recorded; it was not restored"
                % (path, backup)
            )
            bad_backup = True
            continue
        todo.append((change, original))
    if bad_backup:
        return [], [*problems, "nothing was restored: every file is as it was"]
    restored = []
    for change, saved in todo:
        try:
            if saved is None:
                os.unlink(change["path"])
                for directory in reversed(change.get("made_dirs", [])):
                    with contextlib.suppress(OSError):  # not empty: someone else's files are in it now
                        os.rmdir(directory)
            else:
                write_atomic(change["path"], saved, like=change["stat"])
            restored.append(change["path"])
        except OSError as exc:
            problems.append("cannot restore %s: %s" % (change["path"], exc.strerror or exc))
    return restored, problems


def finish_restore(meta: Req, restored: list[str]) -> list[str]:
    """After files are back: validate, then run again only the actions that had started.

    An action that never ran never made the candidate live, so there is nothing to undo: a
    reload after a rejected ``nginx -t`` would only make someone else's staged edit live. With no
    file restored nothing runs either: re-running a restart that just failed would be a retry.
    """
    issues: list[str] = []
    if not restored:
        return issues
    started = set(meta.get("started", []))
    actions = [a for i, a in enumerate(meta.get("actions", [])) if i in started]
    if not actions:
        return issues
    for check in meta.get("validate", []):
        res = execute(check["argv"])
        if res["exit"] != 0:
            issues.append("after restore, `%s` fails: %s" % (" ".join(check["argv"]), tail(res)))
            return issues
    for action in actions:
        if action["kind"] == "reload":
            ok, detail = reload_nginx(action)
            if not ok:
                issues.append(detail)
        elif action["kind"] in ("restart", "command"):
            res = execute(action["argv"], action.get("timeout", 60))
            if res["exit"] != 0:
                issues.append("`%s` failed: %s" % (" ".join(action["argv"]), tail(res)))
    return issues


def reload_nginx(action: Req) -> tuple[bool, str]:
    """Reload and confirm: a new worker appears and every old one stops accepting.

    nginx keeps its old config when a reload fails and `-s reload` still exits 0, so the exit
    code proves nothing; the new worker generation does. A reload nginx rejects shows in its
    error log as an [emerg] line within a moment: that ends the wait at once, with nginx's words.
    """
    try:
        with open(action["pid_file"]) as fh:
            master = int(fh.read().strip())
    except (OSError, ValueError):
        return False, "nginx pid file %s is unreadable: is nginx running?" % action["pid_file"]
    log = action.get("error_log")
    offset = _size(log)
    before = set(children(master))
    res = execute(action["argv"], 30)
    if res["exit"] != 0:
        return False, "`%s` failed: %s" % (" ".join(action["argv"]), tail(res))
    deadline = now() + action.get("timeout", 10)
    while now() < deadline:
        kids = children(master)
        new = set(kids) - before
        old_done = all(pid not in kids or "shutting down" in kids[pid] for pid in before)
        if new and old_done:
            return True, "new workers %s" % sorted(new)
        emerg = _new_emerg(log, offset)
        if emerg:
            _quiet(log, deadline)  # nginx may retry (bind: 5 tries, 500 ms apart); let it finish first
            return False, "nginx rejected the reload and keeps its old config: %s" % emerg
        time.sleep(0.02)
    return False, "nginx did not start new workers after reload (it keeps the old config when a reload fails)"


def _size(path: str | None) -> int | None:
    try:
        return os.path.getsize(path) if path else None
    except OSError:
        return None


def _quiet(path: str | None, deadline: float, still: float = 0.7) -> None:
    """Wait until ``path`` has not grown for ``still`` seconds (or the deadline)."""
    size, since = _size(path), now()
    while now() < deadline and now() - since < still:
        time.sleep(0.05)
        grown = _size(path)
        if grown != size:
            size, since = grown, now()


def _new_emerg(path: str | None, offset: int | None) -> str | None:
    """The first [emerg] line nginx wrote to ``path`` after ``offset``, or None."""
    if offset is None or path is None:
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(1 << 20)
    except OSError:
        return None
    for line in data.decode("utf-8", "replace").splitlines():
        if "[emerg]" in line:
            return line.strip()
    return None


def gave_up(failed_argv: list[str] | None, checked: list[float]) -> bool:
    """Has the service manager already said the service failed? (checked at most twice a second)"""
    if not failed_argv or now() - checked[0] < 0.5:
        return False
    checked[0] = now()
    return bool(execute(failed_argv, 5)["exit"] == 0)


def wait_socket(path: str, timeout: float, failed_argv: list[str] | None = None) -> bool:
    deadline, checked = now() + timeout, [now()]
    while now() < deadline and not gave_up(failed_argv, checked):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect(path)
            s.close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def http_status(url: str, timeout: float) -> Req:
    """The status a URL answers, or why it gave none (the backend asked directly, bypassing nginx)."""
    started = now()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            # urlopen returns once the status line and headers are in: time to first byte
            return {"status": resp.status, "error": None, "seconds": round(now() - started, 3)}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "error": None, "seconds": round(now() - started, 3)}
    except (OSError, ValueError, http.client.HTTPException) as exc:  # not HTTP at all: a garbage answer
        why = str(getattr(exc, "reason", exc)) or type(exc).__name__
        return {"status": None, "error": why[:200], "seconds": round(now() - started, 3)}


def raw_http(spec: Req) -> Req:
    """GET a URL by hand, bypassing nginx, bounded in time and bytes: what exactly comes back.

    kind is one of: ok (a status line), empty (closed without a byte), closed (closed
    before the headers ended), garbage (no HTTP status line), tls (handshake or verify
    failure), refused, timeout, error. For https, the certificate's subject and issuer
    are read even when it does not verify, as `openssl s_client` would show them.
    """
    import ssl
    from urllib.parse import urlsplit

    url = urlsplit(spec["url"])
    timeout = float(spec.get("timeout", 3))
    limit = int(spec.get("max_bytes", 4096))
    port = url.port or (443 if url.scheme == "https" else 80)
    host = (url.hostname or "").strip("[]")
    out = {"url": spec["url"], "kind": "error", "status": None, "excerpt": "", "bytes": 0, "tls": None, "error": None}
    started = now()
    if url.scheme == "https":  # first, on connections of its own: a backend may handshake one at a time
        out["tls"] = tls_facts(host, port, spec, timeout)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        out["kind"], out["error"] = "refused", "connection refused"
        return out
    except TimeoutError:
        out["kind"], out["error"] = "timeout", "no connection within %ss" % timeout
        return out
    except OSError as exc:
        out["error"] = str(exc)
        return out
    try:
        if url.scheme == "https":
            context = ssl.create_default_context(cafile=spec.get("cafile") or None)
            context.check_hostname = False  # nginx checks the name only with proxy_ssl_verify; verify_peer is the point
            try:
                sock = context.wrap_socket(sock, server_hostname=spec.get("server_name") or host)
            except (ssl.SSLError, OSError) as exc:
                out["kind"], out["error"] = "tls", str(getattr(exc, "verify_message", "") or exc)
                return out
        path = (url.path or "/") + ("?" + url.query if url.query else "")
        sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, url.netloc)).encode())
        data = b""
        try:
            while len(data) < limit:
                chunk = sock.recv(min(4096, limit - len(data)))
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            out["timed_out_reading"] = True
        except OSError as exc:
            out["read_error"] = str(exc)
        out["bytes"] = len(data)
        out["excerpt"] = repr(data[:200])[2:-1]
        _, sep, body = data.partition(b"\r\n\r\n")
        out["body"] = body.decode("utf-8", "replace") if sep else ""
        if not data:
            out["kind"] = "empty"
        elif re.match(rb"^HTTP/\d(\.\d)? [1-5]\d\d", data):
            out["status"] = int(data.split(None, 2)[1])
            out["kind"] = "ok" if b"\r\n\r\n" in data or b"\n\n" in data else "closed"
        else:
            out["kind"] = "garbage"
    finally:
        out["seconds"] = round(now() - started, 3)
        with contextlib.suppress(OSError):
            sock.close()
    return out


def tls_facts(host: str, port: int, spec: Req, timeout: float) -> Req:
    """The backend certificate's subject and issuer, and whether each CA file given verifies it."""
    import ssl

    facts: Req = {"subject": None, "issuer": None, "verify": {}}
    try:
        raw = ssl.create_default_context()
        raw.check_hostname = False
        raw.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, port), timeout=timeout) as plain:
            with raw.wrap_socket(plain, server_hostname=spec.get("server_name") or host) as tls:
                der = tls.getpeercert(binary_form=True)
        if der is None:
            raise ValueError("the backend sent no certificate")
        pem = ssl.DER_cert_to_PEM_cert(der)
        shown = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-issuer"], input=pem.encode(), capture_output=True, timeout=10
        )
        for line in shown.stdout.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("subject", "issuer"):
                facts[key.strip()] = value.strip()
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        facts["error"] = str(exc)
    for cafile in spec.get("check_cafiles", []):
        try:
            context = ssl.create_default_context(cafile=cafile)
            context.check_hostname = False
            with socket.create_connection((host, port), timeout=timeout) as plain:
                with context.wrap_socket(plain, server_hostname=spec.get("server_name") or host):
                    facts["verify"][cafile] = "ok"
        except (ssl.SSLError, OSError) as exc:
            facts["verify"][cafile] = str(getattr(exc, "verify_message", "") or exc)
    return facts


_INCLUDE = re.compile(r"^\s*include\s*=\s*(.+?)\s*$")


def php_fpm_files(conf: str, patterns: list[str]) -> Req:
    """php-fpm's pool files: those ``patterns`` name (globs expanded), or else those the main config's
    ``include=`` lines name, as php-fpm itself reads them (Debian: pool.d/*.conf)."""
    import glob

    includes, error = [], None
    try:
        for line in read(conf).decode("utf-8", "replace").splitlines():
            m = _INCLUDE.match(line)
            if m:
                pattern = m.group(1).strip("\"'")
                includes.append(pattern if pattern.startswith("/") else os.path.join(os.path.dirname(conf), pattern))
    except OSError as exc:
        error = cannot("read", conf, exc)
    chosen = list(patterns) or includes
    pools = []
    for pattern in chosen:
        matches = sorted(glob.glob(pattern)) if re.search(r"[*?\[]", pattern) else [pattern]
        pools += [p for p in matches if p not in pools]
    return {"conf": conf, "includes": includes, "patterns": chosen, "pools": pools, "error": error}


def ask_listeners(spec: Req) -> Req:
    """Every TCP port listening on ``ip`` (or on all addresses), asked for ``uri`` directly: which serves it?

    How the port nginx should use is found when the inventory maps no service: GET only, bounded in
    number (``max``) and time (2 s each), never nginx's own ports (``skip_ports``)."""
    listed = execute(["ss", "-Htlnp"], 10)
    found = {}
    for line in listed["stdout"].splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        addr, _, port = fields[3].rpartition(":")
        addr = addr.strip("[]").split("%")[0]
        if not port.isdigit() or int(port) in spec.get("skip_ports", []) or int(port) in found:
            continue
        if addr not in (spec["ip"], "0.0.0.0", "*", "::"):
            continue
        process = re.search(r'users:\(\("([^"]+)"', line)
        found[int(port)] = {"process": process.group(1) if process else "?"}
        if len(found) >= spec.get("max", 16):
            break
    host = "[%s]" % spec["ip"] if ":" in spec["ip"] else spec["ip"]
    for port, entry in found.items():
        entry["answer"] = http_status("http://%s:%d%s" % (host, port, spec["uri"]), 2)
    return {str(port): entry for port, entry in found.items()}


def systemd_units_on_port(port: int) -> Req:
    """The loaded service units whose command line names ``port``, with their last journal lines.

    How a backend that nobody mapped to its port is found on a systemd host: when it is down no
    socket names it, but its unit's ExecStart usually says where it listens."""
    listed = execute(
        [
            "systemctl",
            "list-units",
            "--type=service",
            "--all",
            "--plain",
            "--no-legend",
            "--no-pager",
        ],
        20,
    )
    if listed["exit"] != 0:
        return {"error": tail(listed), "units": []}
    names = [f[0] for f in (ln.split() for ln in listed["stdout"].splitlines()) if f and f[0].endswith(".service")]
    found = []
    if names:
        shown = execute(
            ["systemctl", "show", "--no-pager", "-p", "Id,ActiveState,SubState,Result,ExecStart", "--", *names[:300]],
            20,
        )
        pattern = re.compile(r"(?<![0-9])%d(?![0-9])" % int(port))
        for block in shown["stdout"].split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            argv = re.search(r"argv\[\]=(.*?) ;", props.get("ExecStart", ""))
            command = argv.group(1) if argv else ""
            if props.get("Id") and pattern.search(command):
                props["command"] = command
                found.append(props)
    for unit in found[:3]:
        logs = execute(["journalctl", "-u", unit["Id"], "-n", "5", "--no-pager", "-o", "short-iso"], 10)
        unit["journal"] = [ln for ln in logs["stdout"].splitlines() if ln.strip()][-5:]
    return {"units": found}


def nofile_limits(pid_file: str) -> Req:
    """The open-files limit nginx's master and workers really run with, and the kernel ceiling."""
    out: Req = {"master": None, "pid": None, "workers": {}, "nr_open": None}
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/fs/nr_open") as fh:
        out["nr_open"] = int(fh.read().strip())
    try:
        with open(pid_file) as fh:
            master = int(fh.read().strip())
    except (OSError, ValueError):
        return out
    out["pid"] = master

    def limit(pid: int) -> Req | None:
        with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/%d/limits" % pid) as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return {"soft": int(soft), "hard": int(hard)}
        return None

    out["master"] = limit(master)
    starts = []
    for pid, cmd in children(master).items():
        if "worker process" in cmd and "shutting down" not in cmd:
            out["workers"][str(pid)] = limit(pid)
            starts.append(started_at(pid))
    # In the error log's own format and time zone, so the controller can compare it with log lines.
    known = [t for t in starts if t]
    out["workers_started"] = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(min(known))) if known else None
    return out


def fpm_masters_started() -> dict[str, str]:
    """When each running php-fpm master started, in the error log's format and time zone ({pid: time}):
    lines older than that are about a master that is gone."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if cmd.startswith("php-fpm: master process"):
            at = started_at(int(entry))
            if at:
                found[entry] = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(at))
    return found


def started_at(pid: int) -> float | None:
    """A process's start, in seconds since the epoch (from /proc: boot time plus its start in ticks)."""
    try:
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        with open("/proc/%d/stat" % pid) as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def wait_port(address: str, timeout: float, failed_argv: list[str] | None = None) -> bool:
    host, _, port = address.rpartition(":")
    deadline, checked = now() + timeout, [now()]
    while now() < deadline and not gave_up(failed_argv, checked):
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def probe(urls: list[Any], budget: float, bad: set[int]) -> Req:
    """Ask each URL until none answers a bad status, within the budget.

    An entry is a URL, or {"url", "host", "method"}: a failing request replayed through nginx with
    the Host header it came with. Returns {name: status or why there was none}. A replayed request
    that gives no answer in time (a long poll, a download) proves nothing either way: it is left
    out of the verdict (see ``judge``), while a probe URL must answer."""
    deadline = now() + budget
    last: Req = {}
    while True:
        last = {}
        for spec in urls:
            if isinstance(spec, dict):
                host = " (Host: %s)" % spec["host"] if spec.get("host") else ""
                name = "%s %s%s" % (spec.get("method", "GET"), spec["url"], host)
                request = urllib.request.Request(spec["url"], method=spec.get("method", "GET"))
                if spec.get("host"):
                    request.add_header("Host", spec["host"])
            else:
                name, request = spec, spec
            try:
                with _NO_REDIRECTS.open(request, timeout=max(5, min(30, budget))) as resp:
                    last[name] = resp.status
            except urllib.error.HTTPError as exc:
                last[name] = exc.code
            except (OSError, ValueError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(spec, dict) and isinstance(reason, (socket.timeout, TimeoutError)):
                    last[name] = "no answer in %ss (not counted)" % max(5, min(30, budget))
                else:
                    last[name] = str(reason)
        failing, _answered = judge(last, bad)
        if not failing or now() > deadline:
            return last
        time.sleep(0.1)


def judge(statuses: Req, bad: set[int]) -> tuple[Req, int]:
    """(the entries that fail, how many answered well) of a probe's statuses."""
    failing = {}
    good = 0
    for name, status in statuses.items():
        if isinstance(status, int):
            if status in bad:
                failing[name] = status
            else:
                good += 1
        elif not status.endswith("(not counted)"):
            failing[name] = status
    return failing, good


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is nginx answering: its status is the answer, never a request elsewhere."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_KeepRedirects, urllib.request.ProxyHandler({}))


# The child that validates candidates: it runs in a private mount namespace (unshare), where it
# bind-mounts each candidate over its live path and runs the checks. The mounts vanish with it:
# the live files, and the running nginx, never see a candidate.
NS_CHILD = """
import json, subprocess, sys
spec = json.loads(sys.stdin.read())
for src, dst in spec["binds"]:
    done = subprocess.run(["mount", "--bind", src, dst], capture_output=True)
    if done.returncode:
        print(json.dumps({"unavailable": "mount --bind: " + done.stderr.decode("utf-8", "replace").strip()}))
        sys.exit(0)
out = []
for check in spec["checks"]:
    try:
        done = subprocess.run(check["argv"], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        res = [done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")]
    except (OSError, subprocess.SubprocessError) as exc:
        res = [127, "", str(exc)]
    out.append({"name": check["name"], "argv": check["argv"], "exit": res[0], "stdout": res[1], "stderr": res[2]})
print(json.dumps({"results": out}))
"""


def validate_candidates(changes: list[Req], checks: list[Req]) -> Req:
    """Run ``checks`` against the candidates without touching a live file.

    Returns {"results": [...]} (one per check, with exit and output), or {"unavailable": why}
    when no private mount namespace can be had here (not root, no unshare, a new file that has
    no live path to mount over); the apply then validates in place, after the write.
    """
    if not checks:
        return {"results": []}
    stage = tempfile.mkdtemp(prefix="remediate-candidate.")
    try:
        binds = []
        for index, change in enumerate(changes):
            if change["before_sha"] is None:
                if change.get("validate", "none") != "none":
                    why = "%s does not exist yet, so no candidate can stand in for it" % change["path"]
                    return {"unavailable": why}
                continue
            staged = os.path.join(stage, "%d" % index)
            with open(staged, "wb") as fh:
                fh.write(base64.b64decode(change["after_b64"]))
            like = stat_of(change["path"])
            if like and "mode" in like:
                os.chmod(staged, like["mode"])
                with contextlib.suppress(OSError):
                    os.chown(staged, like["uid"], like["gid"])
            binds.append([staged, os.path.realpath(change["path"])])
        argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-I", "-S", "-c", NS_CHILD]
        try:
            done = subprocess.run(
                argv,
                input=json.dumps({"binds": binds, "checks": checks}).encode(),
                capture_output=True,
                timeout=60 * (1 + len(checks)),
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return {"unavailable": "unshare: %s" % exc}
        try:
            answer = json.loads(done.stdout.decode() or "null")
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["exit %d" % done.returncode]
            return {"unavailable": "no private mount namespace: %s" % said[0]}
        for res in answer.get("results", []):
            res["words"] = check_failure(res) if res["exit"] else tail(res)
        return answer
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_failure(res: Req) -> str:
    """nginx's (php-fpm's) own words for a failed check: the [emerg] (ERROR:) line names the file."""
    lines = [ln.strip() for ln in (res["stderr"] + "\n" + res["stdout"]).splitlines() if ln.strip()]
    named = [ln for ln in lines if "[emerg]" in ln or "ERROR:" in ln]
    return named[0] if named else "`%s` exited %d: %s" % (" ".join(res["argv"]), res["exit"], tail(res))


def op_validate(req: Req) -> Req:
    """--check: would the candidates pass the checks? Writes nothing that outlives the call."""
    return validate_candidates(req.get("changes", []), req.get("validate", []))


def cannot(what: str, path: str, exc: BaseException) -> str:
    return "cannot %s %s: %s" % (what, path, getattr(exc, "strerror", None) or exc)


class Steps:
    """The steps of one op, in order, each with how long it took (the controller shows them)."""

    def __init__(self) -> None:
        self.list: list[Req] = []
        self.started = now()

    def add(self, name: str, ok: bool, detail: str = "", t0: float | None = None) -> None:
        self.list.append({"step": name, "ok": ok, "detail": detail, "seconds": round(now() - (t0 or self.started), 3)})


def op_apply(req: Req) -> Req:
    journal = Journal(req["journal_dir"])
    run_id = req["run_id"]
    steps = Steps()

    def refuse(reason: str, **extra: Any) -> Req:
        return dict({"outcome": "refused", "reason": reason, "steps": steps.list, "written": False}, **extra)

    t0 = now()
    lock = lock_acquire(journal.root, run_id)
    if not lock["acquired"]:
        return refuse("lock held by run %s" % lock["held"].get("run_id"))
    steps.add("lock", True, "held by %s (pid %d)" % (run_id, os.getpid()), t0)
    changes = req["changes"]
    # compare-and-swap: every file must still hold the bytes the plan was made from
    t0 = now()
    for change in changes:
        try:
            current: bytes | None = read(change["path"])
        except FileNotFoundError:
            current = None
        if (sha(current) if current is not None else None) != change["before_sha"]:
            steps.add("compare", False, "%s changed since the plan was made" % change["path"], t0)
            return refuse("%s changed since the plan was made; run again" % change["path"])
    steps.add("compare", True, "%d file(s) unchanged since the plan" % len(changes), t0)
    # validate the candidates before any of them replaces a live file
    checks = req.get("validate", [])
    in_place = list(checks)
    if checks and changes:
        t0 = now()
        checked = validate_candidates(changes, checks)
        if "unavailable" in checked:
            steps.add("validate", True, "in place after the write (%s)" % checked["unavailable"], t0)
        else:
            for res in checked["results"]:
                if res["exit"] != 0:
                    steps.add(res["name"], False, res["words"], t0)
                    return refuse(res["words"], failed_step=res["name"])
                steps.add(res["name"], True, "candidate passes, before the write: %s" % tail(res), t0)
            in_place = []
    old_handlers = {}
    TXN["active"] = True
    for sig in (signal.SIGHUP, signal.SIGTERM):
        old_handlers[sig] = signal.signal(sig, _defer)
    try:
        return Transaction(journal, req, run_id, changes, steps).run(in_place)
    finally:
        TXN["active"] = False
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if not req.get("keep_lock"):
            lock_release(journal.root)


def _defer(signum: int, frame: Any) -> None:
    TXN["stop"] = True  # a dropped connection or a TERM must not stop a transaction halfway


class _Failed(Exception):
    """A step of a transaction failed after the first write: (step, detail[, outcome])."""

    def __init__(self, what: str, detail: str, outcome: str | None = None) -> None:
        super().__init__(detail)
        self.what, self.detail, self.outcome = what, detail, outcome


class Transaction:
    """One apply on this host as an explicit state machine, each state recorded in the run's journal
    before the work it stands for (certbot's Reverter is the model: checkpoint, finalize, recover).

    ``checkpoint`` (prepared): back up every file, each read back and checked; a failure here is
    ``closed``: nothing live was written. ``activate`` (writing, then activating): write every file,
    validate in place when that could not be done before, run the actions, probe. ``commit``
    (committed). Any failure after the first write is ``recover``ed: every file written is restored
    and the actions that had started run again. ``answer`` is the one place the reply is built.
    """

    def __init__(self, journal: Journal, req: Req, run_id: str, changes: list[Req], steps: Steps) -> None:
        self.journal, self.req, self.run_id, self.changes, self.steps = journal, req, run_id, changes, steps
        self.actions: list[Req] = req.get("actions", [])
        self.meta: Req = {
            "run_id": run_id,
            "cause": req.get("cause"),
            "requested_by": req.get("requested_by"),
            "trigger": req.get("trigger"),
            "state": "prepared",
            "started_at": steps.started,
            "changes": [],
            "validate": req.get("validate", []),
            "actions": self.actions,
            "started": [],
        }
        for change in changes:
            # A new file takes the owner and mode of the file it stands beside ("like": a log among nginx's logs).
            like = stat_of(change["like"]) if change["before_sha"] is None and change.get("like") else None
            self.meta["changes"].append(
                {
                    "path": change["path"],
                    "before_sha": change["before_sha"],
                    "after_sha": sha(base64.b64decode(change["after_b64"])),
                    # (a planned-new file that exists now was made by the validation's own `nginx -t`, which
                    # creates the logs it names, root:root 0644: it takes the owner and mode it was planned with)
                    "stat": like if like and "mode" in like else stat_of(change["path"]),
                    "backed_up": False,
                }
            )

    def run(self, in_place: list[Req]) -> Req:
        """checkpoint → activate → commit, or the failure's answer; never raises."""
        closed = self.checkpoint()
        if closed is not None:
            return closed
        what = "write"
        try:
            verified = self.activate(in_place)
            what = "journal"
            self.commit()
        except _Failed as failed:
            return self.recover(failed.what, failed.detail, failed.outcome)
        except OSError as exc:
            if isinstance(exc, _WriteError):
                return self.recover("write", cannot("write", exc.path, exc.cause))
            return self.recover("journal", cannot("record the run in", self.journal.run_dir(self.run_id), exc))
        except Exception as exc:  # a bug here must still leave the host as it was
            return self.recover(self._doing or what, "%s: %s" % (type(exc).__name__, exc))
        return self.answer("fixed", written=True, verified=verified)

    def answer(self, outcome: str, **extra: Any) -> Req:
        """The reply to the controller: the outcome, every step so far, where the journal is."""
        return dict({"outcome": outcome, "steps": self.steps.list, "journal": self.journal.run_dir(self.run_id)},
                    **extra)  # fmt: skip

    def closed(self, what: str, detail: str) -> Req:
        """A failure before any live file was written: record it, and say nothing changed."""
        self.steps.add(what, False, detail)
        self.meta["state"] = "failed"
        self.meta["failure"] = {"step": what, "detail": detail}
        with contextlib.suppress(OSError):
            self.journal.save(self.meta)
        return self.answer("failed", failed_step=what, reason=detail, written=False, restored=[], problems=[])

    def checkpoint(self) -> Req | None:
        """State prepared: back up (bytes, owner, mode) every file, each read back and checked, before any
        live file is written; then state writing. None when done, else the closed failure's answer."""
        t0 = now()
        try:
            self.journal.save(self.meta)
        except OSError as exc:
            reason = cannot("write the journal in", self.journal.root, exc)
            self.steps.add("journal", False, reason)
            answer = self.answer("failed", failed_step="journal", written=False, reason=reason, restored=[],
                                 problems=[])  # fmt: skip
            del answer["journal"]  # there is none to point at
            return answer
        for index, change in enumerate(self.changes):
            if change["before_sha"] is None:  # a new file (a drop-in): undone by removing it
                self.meta["changes"][index].update(backed_up=True, created=True)
                continue
            backup = self.journal.backup_path(self.run_id, index)
            try:
                data = read(change["path"])
                if sha(data) != change["before_sha"]:
                    return self.closed(
                        "backup", "%s changed while it was backed up; nothing was written" % change["path"]
                    )
                write_atomic(backup, data, mode=0o600)
                if sha(read(backup)) != change["before_sha"]:
                    return self.closed("backup", "the backup %s does not read back as written" % backup)
            except OSError as exc:
                return self.closed("backup", cannot("back up", change["path"], exc) + " (into %s)" % backup)
            self.meta["changes"][index]["backed_up"] = True
        self.meta["state"] = "writing"
        try:
            self.journal.save(self.meta)
        except OSError as exc:
            return self.closed("backup", cannot("write the journal in", self.journal.root, exc))
        self.steps.add(
            "backup", True, "%d original(s) in %s" % (len(self.changes), self.journal.run_dir(self.run_id)), t0
        )
        return None

    _doing = ""  # the file being written, for a failure's message

    def activate(self, in_place: list[Req]) -> bool:
        """States writing, then activating: write every file, validate in place (only when it could not be
        done before), run the actions, probe. Raises _Failed; True when a probe answered."""
        t0 = now()
        for index, change in enumerate(self.changes):
            self._doing = change["path"]
            if self.meta["changes"][index].get("created"):
                # A new file (a systemd drop-in) may need its directory: made here, recorded first,
                # removed again by a restore when it is still empty.
                made = missing_dirs(os.path.dirname(change["path"]))
                if made:
                    self.meta["changes"][index]["made_dirs"] = made
                    self.journal.save(self.meta)
                    for directory in made:
                        _written(os.mkdir, change["path"], directory, 0o755)
            data = base64.b64decode(change["after_b64"])
            _written(write_atomic, change["path"], change["path"], data, like=self.meta["changes"][index]["stat"])
            self.meta["changes"][index]["written"] = True
        self._doing = ""
        self.steps.add("write", True, ", ".join(c["path"] for c in self.changes) or "no files", t0)
        self.meta["state"] = "activating"
        self.journal.save(self.meta)
        if self.req.get("test_pause_after_write"):
            time.sleep(self.req["test_pause_after_write"])
        for check in in_place:
            t0 = now()
            res = execute(check["argv"])
            if res["exit"] != 0:
                raise _Failed(check["name"], check_failure(res))
            self.steps.add(check["name"], True, "in place: " + tail(res), t0)
        for index, action in enumerate(self.actions):
            self.meta["started"].append(index)
            self.journal.save(self.meta)
            t0 = now()
            failure = run_action(action, self.steps.add, t0)
            if failure:
                raise _Failed(*failure)
        if not self.req.get("probes"):
            return False
        t0 = now()
        budget = self.req.get("probe_budget", 10)
        bad_statuses = set(self.req.get("bad_statuses", [502, 504]))
        statuses = probe(self.req["probes"], budget, bad_statuses)
        bad, answered = judge(statuses, bad_statuses)
        if bad:
            said = ", ".join("%s -> %s" % kv for kv in bad.items())
            raise _Failed("probe", "still failing after %ss: %s" % (budget, said))
        self.steps.add("probe", bool(answered), ", ".join("%s -> %s" % kv for kv in statuses.items()), t0)
        return answered > 0

    def commit(self) -> None:
        """State committed: the run is done and stays so (a rollback by hand can still undo it)."""
        self.meta["state"] = "committed"
        self.meta["finished"] = now()
        self.journal.save(self.meta)

    def recover(self, what: str, detail: str, outcome: str | None = None) -> Req:
        """A failure after the first write: restore every file written, rerun what had started."""
        self.steps.add(what, False, detail)
        t1 = now()
        meta = self.meta
        restored, problems = restore_files(self.journal, meta, force=False)
        problems += finish_restore(meta, restored)
        meta["state"] = "restore-incomplete" if problems else ("rolled-back" if restored else "failed")
        meta["failure"] = {"step": what, "detail": detail}
        try:
            self.journal.save(meta)
        except OSError as exc:
            problems.append(cannot("record the outcome in", self.journal.run_dir(self.run_id), exc))
        rerun = [a["service"] for i, a in enumerate(meta["actions"]) if i in set(meta["started"])]
        began = bool(restored or meta["started"])
        did = "restored %s" % (", ".join(restored) or "nothing (no file had changed)")
        if restored and rerun:
            did += "; then %s again" % ", ".join(rerun)
        self.steps.add("restore", not problems, did + ("; " + "; ".join(problems) if problems else ""), t1)
        # rolled back: the host was being changed (a file written, an action begun) and is as it was
        return self.answer(
            "failed" if problems else outcome or ("rolled-back" if began else "failed"),
            failed_step=what,
            reason=detail,
            written=any(c.get("written") for c in meta["changes"]),
            began=rerun,
            restored=restored,
            problems=problems,
        )


class _WriteError(OSError):
    """Writing a live file (or its directory) failed: said as "cannot write PATH", not as the journal."""

    def __init__(self, path: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.path, self.cause = path, cause


def _written(call: Any, path: str, *args: Any, **kwargs: Any) -> None:
    """``call(*args)`` for the live file ``path``: an OSError is that file's failure."""
    try:
        call(*args, **kwargs)
    except OSError as exc:
        raise _WriteError(path, exc) from exc


def run_action(action: Req, step: Callable[..., None], t0: float) -> tuple[str, ...] | None:
    """Run one action; None when it succeeded, else (step name, detail[, outcome])."""
    if action["kind"] == "reload":
        ok, detail = reload_nginx(action)
        if not ok:
            return "reload", detail
        step("reload", True, detail, t0)
        return None
    if action["kind"] == "restart":
        res = execute(action["argv"], action.get("timeout", 60))
        problem = None
        if res["exit"] != 0:
            problem = "`%s` failed: %s" % (" ".join(action["argv"]), tail(res))
        elif action.get("wait_socket") and not wait_socket(
            action["wait_socket"], action.get("timeout", 30), action.get("failed_argv")
        ):
            problem = "%s did not come back within %ss" % (action["wait_socket"], action.get("timeout", 30))
            if action.get("failed_argv") and execute(action["failed_argv"], 5)["exit"] == 0:
                problem = "%s failed to start (%s)" % (action["service"], action["wait_socket"])
        elif action.get("wait_port") and not wait_port(
            action["wait_port"], action.get("timeout", 30), action.get("failed_argv")
        ):
            problem = "nothing listens on %s within %ss of the restart" % (
                action["wait_port"],
                action.get("timeout", 30),
            )
            if action.get("failed_argv") and execute(action["failed_argv"], 5)["exit"] == 0:
                problem = "%s failed to start (nothing listens on %s)" % (action["service"], action["wait_port"])
        elif action.get("expect_http"):
            answer = raw_http(action["expect_http"])
            if answer["kind"] != "ok" or answer["status"] >= 500:
                # The restart did not cure the backend: it is broken in itself, not in a state a
                # restart clears. Whatever remediate wrote is put back, and the run is a refusal.
                return (
                    "restart",
                    "%s still answers %s after a restart (%s: %s); the backend itself needs fixing"
                    % (action["service"], answer["kind"], answer["url"], answer["excerpt"] or answer.get("error")),
                    "refused",
                )
        if problem:
            # Say why, from the service's own log; never retry in a loop.
            if action.get("log_argv"):
                problem += "; %s says: %s" % (action["service"], tail(execute(action["log_argv"], 20)))
            return "restart", problem
        step("restart " + action["service"], True, tail(res), t0)
        return None
    if action["kind"] == "command":
        res = execute(action["argv"], action.get("timeout", 60))
        if res["exit"] != 0:
            return action["service"], "`%s` failed: %s" % (" ".join(action["argv"]), tail(res))
        step(" ".join(action["argv"]), True, tail(res), t0)
        return None
    return action["kind"], "unknown action kind %r" % action["kind"]


def op_rollback(req: Req) -> Req:
    journal = Journal(req["journal_dir"])
    meta = journal.meta(req["target"])
    if meta is None:
        return {"outcome": "refused", "reason": "no run %s in the journal %s" % (req["target"], journal.root)}
    if meta["state"] == "unreadable":
        return {
            "outcome": "refused",
            "reason": "the journal entry of run %s is unreadable: %s" % (req["target"], meta["error"]),
        }
    lock = lock_acquire(journal.root, req["run_id"])
    if not lock["acquired"]:
        return {"outcome": "refused", "reason": "lock held by run %s" % lock["held"].get("run_id")}
    TXN["active"] = True
    try:
        if not req.get("force"):
            edited = []
            for change in meta["changes"]:
                try:
                    current = sha(read(change["path"]))
                except FileNotFoundError:
                    current = None
                if current not in (change["after_sha"], change["before_sha"]):
                    edited.append(change["path"])
            if edited:
                return {
                    "outcome": "refused",
                    "reason": "changed since run %s: %s (use --force to restore anyway)"
                    % (req["target"], ", ".join(edited)),
                }
        if meta["state"] in ("committed", "applying", "restore-incomplete") or "started" not in meta:
            meta["started"] = list(range(len(meta.get("actions", []))))
        restored, problems = restore_files(journal, meta, force=bool(req.get("force")))
        if not restored and problems:
            return {"outcome": "refused", "reason": "; ".join(problems), "restored": [], "problems": problems}
        problems += finish_restore(meta, restored)
        meta["state"] = "rolled-back-by-user" if not problems else "restore-incomplete"
        journal.save(meta)
        return {"outcome": "rolled-back" if not problems else "failed", "restored": restored, "problems": problems}
    finally:
        TXN["active"] = False
        lock_release(journal.root)


def op_status(req: Req) -> Req:
    """What the journal says of ``target`` (a run id), and who holds the lock."""
    journal = Journal(req["journal_dir"], create=False)
    out = {"lock": lock_holder(journal.root)}
    if req.get("target"):
        meta = journal.meta(req["target"]) if os.path.isdir(os.path.join(journal.root, RUNS)) else None
        out["run"] = (
            None
            if meta is None
            else {k: meta.get(k) for k in ("run_id", "state", "failure", "error", "recovered_by", "cause")}
        )
    return out


def op_unlock(req: Req) -> Req:
    """Ask the lock's holder to let go: SIGTERM, which it defers until a transaction in progress ends."""
    journal = Journal(req["journal_dir"], create=False)
    held = lock_holder(journal.root)
    if held is None:
        return {"outcome": "free", "reason": "no run holds the lock on this host"}
    if req.get("target") and held.get("run_id") != req["target"]:
        return {
            "outcome": "refused",
            "held": held,
            "reason": "the lock is held by run %s, not %s" % (held.get("run_id"), req["target"]),
        }
    pid = held.get("pid")
    if not pid or not _is_helper(pid):
        return {
            "outcome": "refused",
            "held": held,
            "reason": "pid %s that holds the lock is not remediate's helper; look at it by hand" % pid,
        }
    os.kill(pid, signal.SIGTERM)
    deadline = now() + float(req.get("wait", 10))
    while now() < deadline:
        if lock_holder(journal.root) is None:
            return {"outcome": "released", "held": held, "reason": "run %s let go of the lock" % held.get("run_id")}
        time.sleep(0.05)
    return {
        "outcome": "waiting",
        "held": held,
        "reason": "run %s is inside its transaction; it lets go when that ends" % held.get("run_id"),
    }


def _is_helper(pid: int) -> bool:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            return b"The helper remediate runs *on the host*" in fh.read()
    except OSError:
        return False


OPS = {
    "collect": op_collect,
    "batch": op_batch,
    "validate": op_validate,
    "apply": op_apply,
    "rollback": op_rollback,
    "status": op_status,
    "unlock": op_unlock,
}


def handle(req: Req) -> Req:
    try:
        return OPS[req["op"]](req)
    except Exception as exc:  # reported as data: the controller turns it into one line
        return {"outcome": "failed", "error": "%s: %s" % (type(exc).__name__, exc)}


def session(idle: float) -> None:
    """Serve one request per line until the controller goes away: EOF, or ``idle`` seconds of silence."""
    stdin, buf = sys.stdin.fileno(), b""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        while not TXN["stop"]:
            ready, _, _ = select.select([stdin], [], [], idle)
            if not ready:
                break  # no ping: the controller is gone or cut off
            chunk = os.read(stdin, 1 << 20)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf and not TXN["stop"]:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line.decode())
                if req.get("op") == "ping":
                    continue
                req["keep_lock"] = True  # the session holds the lock until it ends
                answer = json.dumps(handle(req)).encode() + b"\n"
                try:
                    sys.stdout.buffer.write(answer)
                    sys.stdout.buffer.flush()
                except OSError:
                    return  # the controller is gone; the journal holds the truth
    finally:
        for root in list(HELD):
            lock_release(root)


def main() -> None:
    if sys.argv[1:2] == ["session"]:
        session(float(sys.argv[2]) if len(sys.argv) > 2 else 10.0)
        return
    req = json.loads(sys.stdin.buffer.read().decode())
    result = handle(req)
    data = json.dumps(result).encode()
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except OSError:
        pass  # the controller is gone; the journal holds the truth


if __name__ == "__main__":
    main()
