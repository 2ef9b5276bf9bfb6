"""The local transport: same Result and file operations as SSH, for running on the host itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from remediate.errors import CommandFailed, CommandTimeout
from remediate.transport.local import LocalTransport


@pytest.fixture
def local() -> LocalTransport:
    return LocalTransport("localhost")


def test_run_returns_result_and_refuses_strings(local: LocalTransport) -> None:
    """Commands are argv lists; a string is refused, and a missing binary exits 127 like a shell."""
    assert local.run(["printf", "%s", "a b;$(id)"]).out == "a b;$(id)"
    with pytest.raises(TypeError, match="argv"):
        local.run("echo hi")  # type: ignore[arg-type]
    assert local.run(["/no/such/binary"], warn=True).exited == 127
    with pytest.raises(CommandFailed, match="exited 1"):
        local.run(["false"])


def test_timeout(local: LocalTransport) -> None:
    """A command past its timeout raises CommandTimeout naming the host."""
    with pytest.raises(CommandTimeout, match=r"^localhost: `sleep` ran longer"):
        local.run(["sleep", "3"], timeout=0.3)


def test_atomic_write_keeps_owner_mode_and_bytes(local: LocalTransport, tmp_path: Path) -> None:
    """Writes replace bytes exactly and keep owner and mode; a new file gets the given mode."""
    path = tmp_path / "pool.conf"
    path.write_bytes(b"old")
    os.chown(path, 65534, 65534)
    path.chmod(0o640)
    local.write_file(str(path), b"listen.owner = www-data\r\n\xff")
    st = path.stat()
    assert path.read_bytes() == b"listen.owner = www-data\r\n\xff"
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o640)
    fresh = tmp_path / "new.conf"
    local.write_file(str(fresh), b"x", mode=0o600)
    assert fresh.stat().st_mode & 0o7777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.conf", "pool.conf"]


def test_failed_write_leaves_the_file_untouched(local: LocalTransport, tmp_path: Path) -> None:
    """When the write cannot finish (target is a directory), the original stays and no temp file is left."""
    target = tmp_path / "dir"
    target.mkdir()
    with pytest.raises(CommandFailed):
        local.write_file(str(target), b"x")
    assert target.is_dir() and list(target.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]
