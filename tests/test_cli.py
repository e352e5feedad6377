"""The `flashsale` command: the product's subcommands need only the runtime dependencies, and the
load-test ones plug in through entry points and say how to install Locust when it is missing."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pytest

from flashsale import cli

# Runs the CLI in a fresh interpreter in which `import locust` fails, as in a runtime-only
# install (pip install flashsale, without the [load] extra).
WITHOUT_LOCUST = """
import sys

class HideLocust:
    def find_spec(self, name, path=None, target=None):
        if name == "locust" or name.startswith("locust."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, HideLocust())
from flashsale.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_LOCUST, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["loadtest", "demo"])
def test_locust_commands_without_locust_exit_2_with_the_install_hint(command: str) -> None:
    args = ["--url", "http://127.0.0.1:9", "--sale", "S"] if command == "loadtest" else []
    done = run_cli(command, *args)
    assert done.returncode == 2, done
    assert "pip install 'flashsale[load]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_product_commands_need_no_locust() -> None:
    """Every product command parses without Locust (parsing imports nothing heavy), and the
    plugged-in commands are still listed."""
    for command in ("serve", "reconcile", "audit", "recover", "migrate", "saga", "services"):
        done = run_cli(command, "--help")
        assert done.returncode == 0, done
        assert "Locust" not in done.stderr
    listing = run_cli("--help").stdout
    for command in ("serve", "reconcile", "loadtest", "demo", "bench", "sim"):
        assert command in listing


def test_a_broken_plugin_is_skipped_not_fatal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = EntryPoint("broken", "flashsale.no_such_module:add", cli.PLUGIN_GROUP)

    def only_broken(**_: Any) -> list[EntryPoint]:
        return [broken]

    monkeypatch.setattr(cli, "entry_points", only_broken)
    args = cli.parser().parse_args(["serve", "--port", "8123"])
    assert args.port == 8123
    assert "command 'broken' unavailable" in capsys.readouterr().err


def test_the_load_test_commands_come_from_the_entry_point_group() -> None:
    names = {e.name for e in entry_points(group=cli.PLUGIN_GROUP)}
    assert names == {"loadtest", "demo", "bench", "sim"}
