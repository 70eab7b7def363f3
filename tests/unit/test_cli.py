"""The CLI as an operator meets it: help, config display, and one clear line per error."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fieldloop.cli import main


def test_help_lists_the_command_groups() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("stack", "config", "demo", "fleet", "ingest", "topics", "tables", "setup"):
        assert command in result.output


def test_config_show_redacts_secrets(tmp_path: Path) -> None:
    env = {
        "FIELDLOOP_HOME": str(tmp_path),
        "FIELDLOOP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FIELDLOOP_KAFKA_SASL_MECHANISM": "PLAIN",
        "FIELDLOOP_KAFKA_SASL_USERNAME": "fleet",
        "FIELDLOOP_KAFKA_SASL_PASSWORD": "s3cr3t-value",
    }
    shown = CliRunner().invoke(main, ["config", "show", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["kafka"]["sasl_password"] == "**********" and data["home"] == str(tmp_path)
    assert "s3cr3t" not in shown.output
    text = CliRunner().invoke(main, ["config", "show"], env=env)
    assert "[kafka]" in text.output and "s3cr3t" not in text.output


def test_invalid_setting_is_one_error_line_and_exit_1() -> None:
    result = CliRunner().invoke(main, ["config", "show"], env={"FIELDLOOP_SITE_REGION": "tokyo"})
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: invalid config") and "site_region" in lines[0]


def test_config_check_validates_contracts_and_residency(tmp_path: Path) -> None:
    ok = CliRunner().invoke(main, ["config", "check"], env={"FIELDLOOP_HOME": str(tmp_path)})
    assert ok.exit_code == 0, ok.output
    assert "11 data contracts" in ok.output and "allowed" in ok.output
    outside = CliRunner().invoke(
        main,
        ["config", "check"],
        env={
            "FIELDLOOP_HOME": str(tmp_path),
            "FIELDLOOP_SITE_REGION": "us-west-2",
            "FIELDLOOP_ALLOWED_REGIONS": "ap-northeast-1,ap-northeast-3",
        },
    )
    assert outside.exit_code == 1 and "us-west-2" in outside.output and "outside the allowed regions" in outside.output


def test_an_error_naming_brackets_prints_them_as_they_are(tmp_path: Path) -> None:
    bad = tmp_path / "contracts[eu]"
    bad.mkdir()
    result = CliRunner().invoke(main, ["config", "check"], env={"FIELDLOOP_CONTRACTS_DIR": str(bad)})
    assert result.exit_code == 1
    assert f"no contracts (*.toml) in {bad}" in result.output  # not eaten as console markup


def test_with_json_stdout_carries_the_json_alone_even_what_a_child_process_prints() -> None:
    import subprocess
    import sys

    script = (
        "import os, sys, json, subprocess\n"
        "from fieldloop.console import stdout_for_json\n"
        "with stdout_for_json():\n"
        "    print('progress from python')\n"
        "    subprocess.run(['echo', 'what a JVM would print'])\n"
        "    os.write(1, b'native write\\n')\n"
        "print(json.dumps({'ok': True}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"ok": True}
    for line in ("progress from python", "what a JVM would print", "native write"):
        assert line in proc.stderr
