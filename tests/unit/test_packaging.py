"""A regular install ships the playbooks/ and templates/ folders with the package."""

from __future__ import annotations

from remediate.resources import playbooks_dir, templates_dir


def test_playbooks_and_templates_ship() -> None:
    """The installed package finds its playbooks/ and templates/ folders and their files."""
    assert (playbooks_dir() / "README.md").is_file()
    assert (templates_dir() / "README.md").is_file()


def test_the_cli_starts_without_the_service_libraries() -> None:
    """`remediate run|diagnose|--help` never import aiohttp, slack-bolt, prometheus_client (the `serve` extra),
    procrastinate or psycopg (the `queue` extra), or rich (fleet runs only)."""
    import subprocess
    import sys

    probe = (
        "import sys; from remediate import cli, api\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('aiohttp', 'slack_bolt', 'slack_sdk', 'prometheus_client', 'procrastinate', 'psycopg', 'rich')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_serve_without_its_extra_says_how_to_install_it() -> None:
    """Without aiohttp & co. `remediate serve` is a one-line usage error naming the extra, not a traceback."""
    import subprocess
    import sys

    probe = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'aiohttp' else real(name, *a)\n"
        "from remediate import cli\n"
        "sys.exit(cli.main(['serve', '--config', 'x.yml']))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "remediate: error: remediate serve needs its extra: pip install 'remediate[serve]' (aiohttp)"
    )


def test_queue_without_its_extra_says_how_to_install_it() -> None:
    """Without procrastinate, `remediate queue init` is a one-line usage error naming the `queue` extra."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "sys.modules['procrastinate'] = None\n"  # an import of it now fails, as when it is not installed
        "from remediate import cli\n"
        "sys.exit(cli.main(['queue', 'init', '--queue', 'postgresql://x@127.0.0.1/none']))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "remediate: error: the queue needs the `queue` extra: pip install 'remediate[queue]'"
