"""The command line starts fast: a command imports its own module, not every command's dependencies."""

from __future__ import annotations

import subprocess
import sys

from otel_ai.cli import COMMANDS

CHECK = """
import sys
from otel_ai.cli import COMMANDS, build_parser
build_parser({argv!r})
loaded = sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("otel_ai.commands.") and m.count(".") == 2)
print(",".join(n for n in loaded if n in COMMANDS))
print(int("sim.runner" in sys.modules))
"""


def commands_loaded(argv: list[str]) -> tuple[list[str], bool]:
    out = subprocess.run([sys.executable, "-c", CHECK.format(argv=argv)], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0].split(",") if out[0] else [], out[1] == "1"


def test_a_command_imports_only_its_own_module_and_the_help_lists_them_all():
    assert commands_loaded(["ask", "--server", "http://127.0.0.1:9", "why?"]) == (["ask"], False)
    assert commands_loaded(["-v", "otel-demo", "--help"])[0] == ["otel_demo"]
    everything, _ = commands_loaded(["--help"])
    assert sorted(everything) == sorted(COMMANDS)
    assert sorted(commands_loaded(["no-such-command"])[0]) == sorted(COMMANDS)  # the error lists the choices


def test_help_and_an_unknown_command_still_list_every_command():
    help_text = subprocess.run([sys.executable, "-m", "otel_ai", "--help"], capture_output=True, text=True).stdout
    error = subprocess.run([sys.executable, "-m", "otel_ai", "bogus"], capture_output=True, text=True)
    assert error.returncode == 2 and "invalid choice: 'bogus'" in error.stderr
    for name in ("serve", "ask", "sql", "otel-demo", "anomalies"):
        assert name in help_text and name in error.stderr


def test_asking_a_running_serve_loads_neither_the_agent_nor_an_http_client_library():
    """`ask --server` is a thin client: the standard library's HTTP client, not httpx (which pulls in its own
    command line, rich and click: ~70 ms), and none of the agent or the engine."""
    check = ("import sys\nfrom otel_ai.cli import build_parser\n"
             "build_parser(['ask', '--server', 'http://127.0.0.1:9', 'why?'])\n"
             "print(sorted(m for m in ('httpx', 'agent', 'chdb', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
