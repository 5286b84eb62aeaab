"""Checking ``*.bad.yaml`` fixtures against the problems they declare.

A fixture lists each problem it must produce in a comment line
``# expect: <line> | <key> | <fragment> | ...``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cityvitals.yamlconf import ConfigError


def check_command(*args: str) -> subprocess.CompletedProcess:
    """``cityvitals check ARGS`` run as users run it, output captured as text."""
    command = Path(sys.executable).with_name("cityvitals")
    return subprocess.run(
        [str(command), "check", *args], capture_output=True, text=True, check=False
    )


def expectations(path: Path) -> list[tuple[int, str, list[str]]]:
    out = []
    for text in path.read_text(encoding="utf-8").splitlines():
        if text.startswith("# expect:"):
            line, key, *fragments = (p.strip() for p in text.removeprefix("# expect:").split("|"))
            out.append((int(line), key, fragments))
    return out


def assert_problems_match(err: ConfigError, path: Path) -> None:
    """Exactly the declared problems, each at its file:line and key, with its fragments."""
    message = str(err)
    expected = expectations(path)
    assert message.startswith(f"{path}: {len(expected)} error")
    assert len(err.problems) == len(expected), message
    for line, key, fragments in expected:
        where = f"{path.name}:{line}: {key}"
        matching = [p for p in err.problems if where in p]
        assert matching, f"no problem at {where!r} in:\n{message}"
        for fragment in fragments:
            assert any(fragment in p for p in matching), f"{fragment!r} not in {matching}"
        assert all(p in message for p in matching)
