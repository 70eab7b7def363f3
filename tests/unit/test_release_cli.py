"""`fieldloop release`: every command has --help and --json, and the face registers the group."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fieldloop.cli.main import main

COMMANDS = ("init", "publish", "status", "root", "rotate", "refresh")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_release_command_has_help_and_json(command: str) -> None:
    result = CliRunner().invoke(main, ["release", command, "--help"])
    assert result.exit_code == 0 and "--json" in result.output


def test_a_missing_repository_is_one_line_that_says_to_init(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDLOOP_HOME", str(tmp_path))
    for args in (["status"], ["root"], ["refresh"], ["rotate", "--role", "targets"]):
        result = CliRunner().invoke(main, ["release", *args])
        assert result.exit_code == 1, args
        assert "fieldloop release init" in result.output, args
