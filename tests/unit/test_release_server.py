"""The release server component: what a machine without nginx is told, and the config it writes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fieldloop.config import load_config
from fieldloop.errors import StackError

# the package re-exports a function named `components`; this is the module
components = importlib.import_module("fieldloop.stack.components")


def test_a_machine_without_nginx_is_told_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(components, "NGINX", str(tmp_path / "no-nginx"))
    comp = components.ReleaseComponent(load_config({"FIELDLOOP_HOME": str(tmp_path)}))
    with pytest.raises(StackError, match=r"apt-get install nginx"):
        comp.preflight()


def test_the_config_serves_the_release_dir_on_loopback_only(tmp_path: Path) -> None:
    cfg = load_config({"FIELDLOOP_HOME": str(tmp_path), "FIELDLOOP_RELEASE_PORT": "18700"})
    text = components.ReleaseComponent(cfg).write_conf().read_text()
    assert "daemon off;" in text and "listen 127.0.0.1:18700;" in text
    assert f"root {cfg.release_dir};" in text and "autoindex off;" in text
    assert "@" not in text.replace("@name@", "")  # every placeholder filled
    assert str(tmp_path / "logs") in text and "/var/log" not in text
