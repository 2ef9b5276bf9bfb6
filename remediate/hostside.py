"""The helper remediate runs *on the host*: one round trip for evidence, one for the whole guarded apply.

This file is sent as the constant source of ``python3 -c``; everything it acts
on arrives as JSON on stdin and never touches a shell. It uses the standard
library only and may not import remediate. Doing the transaction on the host
keeps the host safe if the SSH connection drops halfway: the helper finishes
(or rolls back) on its own, and records every step in the host's journal, so a
helper that was killed outright is recovered by the next run.

Ops (``{"op": ...}`` on stdin, one JSON object on stdout):

* ``collect``: take the lock, recover crashed runs, then gather evidence
  (command outputs, files, stats, the tail of logs, unix sockets nginx uses).
* ``apply``: the transaction: check the lock, compare-and-swap every file
  against the bytes the plan was made from, back up (bytes, owner, mode),
  write atomically, validate, reload or restart, confirm, probe; on any
  failure restore every file, validate, reload, and say what failed.
* ``rollback``: undo a finished run from its journal, refusing files that were
  edited since, unless forced.
"""

# mypy: ignore-errors
# (Runs on the host's own python3, standard library only; kept free of typing imports on purpose.)
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

LOCK_NAME = "lock"
RUNS = "runs"
FINAL = ("committed", "rolled-back", "recovered", "rolled-back-by-user", "failed")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def now():
    return time.time()


# -- small tools -------------------------------------------------------------------


def run(argv, timeout=60):
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


def tail(cmd):
    return " | ".join([ln for ln in (cmd["stderr"] or cmd["stdout"]).strip().splitlines() if ln.strip()][-3:])


def stat_of(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"path": path, "error": str(exc)}
    import grp
    import pwd
    import stat as st_mod

    def name(fn, ident):
        try:
            return fn(ident)[0]
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


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def write_atomic(path, data, like=None, mode=0o644):
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


def log_tail(path, max_bytes):
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


def log_window(path, since, max_bytes, now_ts=None):
    """The lines of an error log from ``since`` seconds ago to now, read from the end.

    Seeks from the end and reads backwards in chunks until it passes the window's start, so the
    cost follows the window, not the file. When the window reaches the file's first line it goes
    on into the rotated files (path.1, path.1.gz, path.2.gz, ...). Log times are the host's local
    time, which is also how the cutoff is written.
    """
    import gzip

    cutoff = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime((now_ts or now()) - since)).encode()
    parts, read_files, total, truncated = [], [], 0, False
    candidates = [path] + ["%s.%d%s" % (path, n, ext) for n in range(1, 10) for ext in ("", ".gz")]
    for name in candidates:
        if not os.path.exists(name):
            continue
        try:
            if name.endswith(".gz"):
                with gzip.open(name, "rb") as fh:
                    data = fh.read(max_bytes + 1)
                chunk, reached_start = data, True
            else:
                chunk, reached_start = _tail_until(name, cutoff, max_bytes - total)
        except OSError as exc:
            read_files.append({"path": name, "error": str(exc)})
            break
        first = _STAMP.search(chunk)
        start = _first_at_or_after(chunk, cutoff)
        parts.insert(0, chunk[start:])
        total += len(chunk) - start
        read_files.append({"path": name, "bytes": len(chunk) - start})
        if total >= max_bytes:
            truncated = True
            break
        # Older files only while this one starts inside the window.
        if not reached_start or (first and first.group(1) < cutoff):
            break
    text = b"".join(p if p.endswith(b"\n") or not p else p + b"\n" for p in parts)
    return {
        "path": path,
        "text": text.decode("utf-8", "surrogateescape"),
        "files": read_files,
        "cutoff": cutoff.decode(),
        "truncated": truncated,
        "bytes": len(text),
    }


def _tail_until(name, cutoff, max_bytes, block=262144):
    """Bytes from the end of ``name`` back to a line older than ``cutoff`` (or the start); and whether
    the start was reached."""
    with open(name, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pos = fh.tell()
        data = b""
        while pos > 0 and len(data) < max_bytes:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
            # the first complete line in what we hold: older than the cutoff means we are done
            nl = data.find(b"\n") if pos > 0 else -1
            m = _STAMP.search(data, nl + 1)
            if m and m.group(1) < cutoff:
                break
        if pos > 0:
            data = data[data.find(b"\n") + 1 :]  # drop the partial first line
        return data, pos == 0


def _first_at_or_after(data, cutoff):
    """Offset of the first line stamped at or after ``cutoff`` (lines are in time order)."""
    for m in _STAMP.finditer(data):
        if m.group(1) >= cutoff:
            return m.start()
    return len(data)


def pid_alive(pid):
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


def children(pid):
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
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, RUNS), mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)

    def run_dir(self, run_id):
        if not re.match(r"^[A-Za-z0-9_.-]+$", run_id):
            raise ValueError("bad run id %r" % run_id)
        return os.path.join(self.root, RUNS, run_id)

    def meta(self, run_id):
        try:
            with open(os.path.join(self.run_dir(run_id), "meta.json")) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None

    def save(self, meta):
        path = self.run_dir(meta["run_id"])
        os.makedirs(os.path.join(path, "files"), mode=0o700, exist_ok=True)
        write_atomic(os.path.join(path, "meta.json"), json.dumps(meta, indent=1).encode(), mode=0o600)

    def runs(self):
        try:
            names = sorted(os.listdir(os.path.join(self.root, RUNS)))
        except FileNotFoundError:
            return []
        return [m for m in (self.meta(n) for n in names) if m]

    # The lock is a file created with O_EXCL: the host itself decides who holds it,
    # so two controllers exclude each other. A lease (expires) plus the helper's pid
    # tell a live holder from a dead one.
    def lock_path(self):
        return os.path.join(self.root, LOCK_NAME)

    def read_lock(self):
        try:
            with open(self.lock_path()) as fh:
                return json.load(fh)
        except (FileNotFoundError, ValueError):
            return None

    def acquire(self, run_id, lease, pid=None):
        """Take the lock, or say who holds it. A lock whose lease ran out and whose helper is dead is stale."""
        held = self.read_lock()
        if held and held.get("run_id") == run_id:
            self.refresh(run_id, lease, pid)
            return {"acquired": True, "stale": None}
        if held and self.live(held):
            return {"acquired": False, "held": held}
        if held:
            os.unlink(self.lock_path())
        info = {"run_id": run_id, "pid": pid, "since": now(), "expires": now() + lease, "host": socket.gethostname()}
        try:
            fd = os.open(self.lock_path(), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:  # another run won the race
            return {"acquired": False, "held": self.read_lock() or {}}
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        return {"acquired": True, "stale": held}

    @staticmethod
    def live(held):
        """While a helper applies, the lock lives as long as that helper; between rounds, for its lease."""
        if held.get("pid"):
            return pid_alive(held["pid"])
        return held.get("expires", 0) > now()

    def refresh(self, run_id, lease, pid=None):
        held = self.read_lock()
        if not held or held.get("run_id") != run_id:
            return False
        held.update({"pid": pid, "expires": now() + lease})
        write_atomic(self.lock_path(), json.dumps(held).encode(), mode=0o600)
        return True

    def release(self, run_id):
        held = self.read_lock()
        if held and held.get("run_id") == run_id:
            os.unlink(self.lock_path())


# -- nginx facts -----------------------------------------------------------------------

_UNIX = re.compile(r"^\s*(fastcgi|uwsgi|scgi|grpc|proxy)_pass\s+(?:[a-z]+://)?unix:([^\s;:]+)", re.M)
_USER = re.compile(r"^\s*user\s+([^\s;]+)(?:\s+([^\s;]+))?\s*;", re.M)


def nginx_facts(dump_text):
    """The unix sockets nginx passes to, and the worker user with its groups (what initgroups gives it)."""
    found = _USER.search(dump_text)
    user, group = (found.group(1), found.group(2) or found.group(1)) if found else ("nobody", "nogroup")
    ids = run(["id", "-Gn", user], 10)
    groups = ids["stdout"].split() if ids["exit"] == 0 else []
    if group not in groups:
        groups.append(group)
    sockets = []
    for kind, path in sorted(set(_UNIX.findall(dump_text)), key=lambda m: m[1]):
        st = stat_of(path)
        entry = {"path": path, "pass": kind + "_pass", "stat": st, "exists": bool(st and st.get("kind") == "socket")}
        if entry["exists"]:
            mode = st["mode"]
            entry["nginx_may_connect"] = bool(
                user == "root"
                or (st["owner"] == user and mode & 0o200)
                or (st["group"] in groups and mode & 0o020)
                or mode & 0o002
            )
        else:
            entry["nginx_may_connect"] = False
        sockets.append(entry)
    return {"user": user, "group": group, "groups": groups, "unix_sockets": sockets}


# -- ops ---------------------------------------------------------------------------------


def op_collect(req):
    out = {"lock": None, "recovered": []}
    journal = Journal(req["journal_dir"]) if req.get("lock") else None
    if journal is not None:
        out["lock"] = journal.acquire(req["run_id"], req["lock"]["lease"])
        if not out["lock"]["acquired"]:
            return out
        out["recovered"] = recover(journal, req)
    out["commands"] = {name: run(argv, req.get("timeout", 60)) for name, argv in req.get("commands", {}).items()}
    files = {}
    for path in req.get("files", []):
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
    if req.get("nofile_pid_file"):
        out["nofile"] = nofile_limits(req["nofile_pid_file"])
    dump = out["commands"].get("nginx_T")
    if dump is not None and dump["exit"] == 0:
        out["nginx"] = nginx_facts(dump["stdout"])
    return out


def recover(journal, req):
    """Roll back runs that died mid-apply (their journal never reached a final state)."""
    done = []
    for meta in journal.runs():
        if meta["state"] in FINAL or meta["run_id"] == req["run_id"]:
            continue
        restored, problems = restore_files(journal, meta, force=False)
        after = finish_restore(meta, restored)
        meta["state"] = "recovered"
        meta["recovered_by"] = req["run_id"]
        journal.save(meta)
        done.append({"run_id": meta["run_id"], "restored": restored, "problems": problems + after})
    return done


def restore_files(journal, meta, force):
    restored, problems = [], []
    for index, change in enumerate(meta["changes"]):
        if not change.get("backed_up"):
            continue
        path = change["path"]
        try:
            current = read(path)
        except FileNotFoundError:
            current = None
        current_sha = sha(current) if current is not None else None
        if current_sha == change["before_sha"]:
            continue
        if current_sha != change["after_sha"] and not force:
            problems.append("%s was changed since run %s; left as it is" % (path, meta["run_id"]))
            continue
        if change.get("created"):
            os.unlink(path)
            restored.append(path)
            continue
        original = read(os.path.join(journal.run_dir(meta["run_id"]), "files", "%d.orig" % index))
        write_atomic(path, original, like=change["stat"])
        restored.append(path)
    return restored, problems


def finish_restore(meta, restored):
    """After files are back: validate, then reload/restart what the run had touched.

    Only when a file was restored: with nothing put back there is nothing to reload, and
    re-running a restart that just failed would be a retry loop in disguise.
    """
    issues = []
    if not restored:
        return issues
    for check in meta.get("validate", []):
        res = run(check["argv"])
        if res["exit"] != 0:
            issues.append("after restore, `%s` fails: %s" % (" ".join(check["argv"]), tail(res)))
            return issues
    for action in meta.get("actions", []):
        if action["kind"] == "reload":
            ok, detail = reload_nginx(action)
            if not ok:
                issues.append(detail)
        elif action["kind"] in ("restart", "command"):
            res = run(action["argv"], action.get("timeout", 60))
            if res["exit"] != 0:
                issues.append("`%s` failed: %s" % (" ".join(action["argv"]), tail(res)))
    return issues


def reload_nginx(action):
    """Reload and confirm: a new worker appears and every old one stops accepting.

    nginx keeps its old config when a reload fails and `-s reload` still exits 0,
    so the exit code proves nothing; the new worker generation does.
    """
    try:
        with open(action["pid_file"]) as fh:
            master = int(fh.read().strip())
    except (OSError, ValueError):
        return False, "nginx pid file %s is unreadable: is nginx running?" % action["pid_file"]
    before = set(children(master))
    res = run(action["argv"], 30)
    if res["exit"] != 0:
        return False, "`%s` failed: %s" % (" ".join(action["argv"]), tail(res))
    deadline = now() + action.get("timeout", 10)
    while now() < deadline:
        kids = children(master)
        new = set(kids) - before
        old_done = all(pid not in kids or "shutting down" in kids[pid] for pid in before)
        if new and old_done:
            return True, "new workers %s" % sorted(new)
        time.sleep(0.02)
    return False, "nginx did not start new workers after reload (it keeps the old config when a reload fails)"


def wait_socket(path, timeout):
    deadline = now() + timeout
    while now() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect(path)
            s.close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def http_status(url, timeout):
    """The status a URL answers, or why it gave none (the backend asked directly, bypassing nginx)."""
    started = now()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            # urlopen returns once the status line and headers are in: time to first byte
            return {"status": resp.status, "error": None, "seconds": round(now() - started, 3)}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "error": None, "seconds": round(now() - started, 3)}
    except (OSError, ValueError) as exc:
        return {"status": None, "error": str(getattr(exc, "reason", exc)), "seconds": round(now() - started, 3)}


def raw_http(spec):
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


def tls_facts(host, port, spec, timeout):
    """The backend certificate's subject and issuer, and whether each CA file given verifies it."""
    import ssl

    facts = {"subject": None, "issuer": None, "verify": {}}
    try:
        raw = ssl.create_default_context()
        raw.check_hostname = False
        raw.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, port), timeout=timeout) as plain:
            with raw.wrap_socket(plain, server_hostname=spec.get("server_name") or host) as tls:
                der = tls.getpeercert(binary_form=True)
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


def nofile_limits(pid_file):
    """The open-files limit nginx's master and workers really run with, and the kernel ceiling."""
    out = {"master": None, "pid": None, "workers": {}, "nr_open": None}
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/fs/nr_open") as fh:
        out["nr_open"] = int(fh.read().strip())
    try:
        with open(pid_file) as fh:
            master = int(fh.read().strip())
    except (OSError, ValueError):
        return out
    out["pid"] = master

    def limit(pid):
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


def started_at(pid):
    """A process's start, in seconds since the epoch (from /proc: boot time plus its start in ticks)."""
    try:
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        with open("/proc/%d/stat" % pid) as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def wait_port(address, timeout):
    host, _, port = address.rpartition(":")
    deadline = now() + timeout
    while now() < deadline:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def probe(urls, budget, bad):
    """GET each URL until none answers a bad status, within the budget."""
    deadline = now() + budget
    last = {}
    while True:
        last = {}
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    last[url] = resp.status
            except urllib.error.HTTPError as exc:
                last[url] = exc.code
            except (OSError, ValueError) as exc:
                last[url] = str(getattr(exc, "reason", exc))
        if all(isinstance(s, int) and s not in bad for s in last.values()) or now() > deadline:
            return last
        time.sleep(0.1)


def op_apply(req):
    journal = Journal(req["journal_dir"])
    run_id = req["run_id"]
    steps = []
    started = now()

    def step(name, ok, detail="", t0=None):
        steps.append({"step": name, "ok": ok, "detail": detail, "seconds": round(now() - (t0 or started), 3)})

    t0 = now()
    # While applying, the lock names this helper's pid: it stays held as long as the helper lives.
    if not journal.refresh(run_id, req["lock_lease"], os.getpid()):
        lock = journal.acquire(run_id, req["lock_lease"], os.getpid())
        if not lock["acquired"]:
            return {"outcome": "refused", "reason": "lock held by run %s" % lock["held"].get("run_id"), "steps": steps}
    step("lock", True, "held by %s" % run_id, t0)
    # A dropped connection must not stop the transaction halfway: finish, record, then exit.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    changes = req["changes"]
    meta = {
        "run_id": run_id,
        "cause": req.get("cause"),
        "state": "planned",
        "started": started,
        "changes": [],
        "validate": req.get("validate", []),
        "actions": req.get("actions", []),
    }
    # compare-and-swap: every file must still hold the bytes the plan was made from
    t0 = now()
    for change in changes:
        try:
            current = read(change["path"])
        except FileNotFoundError:
            current = None
        if (sha(current) if current is not None else None) != change["before_sha"]:
            journal.release(run_id)
            step("compare", False, "%s changed since the plan was made" % change["path"], t0)
            return {
                "outcome": "refused",
                "reason": "%s changed since the plan was made; run again" % change["path"],
                "steps": steps,
            }
    step("compare", True, "%d file(s) unchanged since the plan" % len(changes), t0)
    # back up originals (bytes, owner, mode) before any write
    t0 = now()
    for change in changes:
        meta["changes"].append(
            {
                "path": change["path"],
                "before_sha": change["before_sha"],
                "after_sha": sha(base64.b64decode(change["after_b64"])),
                "stat": stat_of(change["path"]),
                "backed_up": False,
            }
        )
    meta["state"] = "applying"
    journal.save(meta)
    for index, change in enumerate(changes):
        if change["before_sha"] is None:  # a new file (a drop-in): undone by removing it
            meta["changes"][index].update(backed_up=True, created=True)
            continue
        write_atomic(
            os.path.join(journal.run_dir(run_id), "files", "%d.orig" % index), read(change["path"]), mode=0o600
        )
        meta["changes"][index]["backed_up"] = True
    journal.save(meta)
    step("backup", True, "%d original(s) in %s" % (len(changes), journal.run_dir(run_id)), t0)
    pause = req.get("test_pause_after_write")

    def fail(what, detail):
        step(what, False, detail)
        t1 = now()
        restored, problems = restore_files(journal, meta, force=False)
        problems += finish_restore(meta, restored)
        step(
            "restore",
            not problems,
            "restored %s%s" % (", ".join(restored) or "nothing", "; " + "; ".join(problems) if problems else ""),
            t1,
        )
        meta["state"] = "rolled-back" if not problems else "failed"
        meta["failure"] = {"step": what, "detail": detail}
        journal.save(meta)
        journal.release(run_id)
        return {
            "outcome": meta["state"],
            "failed_step": what,
            "reason": detail,
            "steps": steps,
            "journal": journal.run_dir(run_id),
        }

    t0 = now()
    for index, change in enumerate(changes):
        write_atomic(change["path"], base64.b64decode(change["after_b64"]), like=meta["changes"][index]["stat"])
    step("write", True, ", ".join(c["path"] for c in changes) or "no files", t0)
    if pause:
        time.sleep(pause)
    for check in req.get("validate", []):
        t0 = now()
        res = run(check["argv"])
        if res["exit"] != 0:
            return fail(check["name"], "`%s` failed: %s" % (" ".join(check["argv"]), tail(res)))
        step(check["name"], True, tail(res), t0)
    for action in req.get("actions", []):
        t0 = now()
        if action["kind"] == "reload":
            ok, detail = reload_nginx(action)
            if not ok:
                return fail("reload", detail)
            step("reload", True, detail, t0)
        elif action["kind"] == "restart":
            res = run(action["argv"], action.get("timeout", 60))
            problem = None
            if res["exit"] != 0:
                problem = "`%s` failed: %s" % (" ".join(action["argv"]), tail(res))
            elif action.get("wait_socket") and not wait_socket(action["wait_socket"], action.get("timeout", 30)):
                problem = "%s did not come back within %ss" % (action["wait_socket"], action.get("timeout", 30))
            elif action.get("wait_port") and not wait_port(action["wait_port"], action.get("timeout", 30)):
                problem = "nothing listens on %s within %ss of the restart" % (
                    action["wait_port"],
                    action.get("timeout", 30),
                )
            elif action.get("expect_http"):
                answer = raw_http(action["expect_http"])
                if answer["kind"] != "ok" or answer["status"] >= 500:
                    # The restart did not cure the backend: it is broken in itself, not in a state a
                    # restart clears. Whatever remediate wrote is put back, and the run is a refusal.
                    result = fail(
                        "restart",
                        "%s still answers %s after a restart (%s: %s); the backend itself needs fixing"
                        % (action["service"], answer["kind"], answer["url"], answer["excerpt"] or answer.get("error")),
                    )
                    if result["outcome"] == "rolled-back":
                        result["outcome"] = "refused"
                    return result
            if problem:
                # Say why, from the service's own log; never retry in a loop.
                if action.get("log_argv"):
                    problem += "; %s says: %s" % (action["service"], tail(run(action["log_argv"], 20)))
                return fail("restart", problem)
            step("restart " + action["service"], True, tail(res), t0)
        elif action["kind"] == "command":
            res = run(action["argv"], action.get("timeout", 60))
            if res["exit"] != 0:
                return fail(action["service"], "`%s` failed: %s" % (" ".join(action["argv"]), tail(res)))
            step(" ".join(action["argv"]), True, tail(res), t0)
    if req.get("probes"):
        t0 = now()
        statuses = probe(req["probes"], req.get("probe_budget", 10), set(req.get("bad_statuses", [502, 504])))
        bad = {u: s for u, s in statuses.items() if not isinstance(s, int) or s in set(req.get("bad_statuses", []))}
        if bad:
            return fail(
                "probe",
                "still failing after %ss: %s"
                % (req.get("probe_budget", 10), ", ".join("%s -> %s" % kv for kv in bad.items())),
            )
        step("probe", True, ", ".join("%s -> %s" % kv for kv in statuses.items()), t0)
    meta["state"] = "committed"
    meta["finished"] = now()
    journal.save(meta)
    journal.release(run_id)
    return {"outcome": "fixed", "steps": steps, "journal": journal.run_dir(run_id)}


def op_rollback(req):
    journal = Journal(req["journal_dir"])
    meta = journal.meta(req["target"])
    if meta is None:
        return {"outcome": "refused", "reason": "no run %s in the journal %s" % (req["target"], journal.root)}
    lock = journal.acquire(req["run_id"], req["lock_lease"])
    if not lock["acquired"]:
        return {"outcome": "refused", "reason": "lock held by run %s" % lock["held"].get("run_id")}
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
        restored, problems = restore_files(journal, meta, force=bool(req.get("force")))
        problems += finish_restore(meta, restored)
        meta["state"] = "rolled-back-by-user" if not problems else "failed"
        journal.save(meta)
        return {"outcome": "rolled-back" if not problems else "failed", "restored": restored, "problems": problems}
    finally:
        journal.release(req["run_id"])


def op_release(req):
    Journal(req["journal_dir"]).release(req["run_id"])
    return {"released": True}


def main():
    req = json.loads(sys.stdin.buffer.read().decode())
    ops = {"collect": op_collect, "apply": op_apply, "rollback": op_rollback, "release": op_release}
    try:
        result = ops[req["op"]](req)
    except Exception as exc:  # reported as data: the controller turns it into one line
        result = {"outcome": "failed", "error": "%s: %s" % (type(exc).__name__, exc)}
    data = json.dumps(result).encode()
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except OSError:
        pass  # the controller is gone; the journal holds the truth


if __name__ == "__main__":
    main()
