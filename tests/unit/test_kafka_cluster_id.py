"""The KRaft cluster id we format a broker's storage with must parse as a value, not an option."""

from __future__ import annotations

import importlib
import uuid

import pytest

# The package exports a components() function under the module's name.
components = importlib.import_module("fieldloop.stack.components")


def test_an_id_that_would_begin_with_a_dash_is_redrawn(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 encodes to "-" as the first URL-safe base64 character: kafka-storage read such an
    # id as a flag and refused to format (CI, stop 14).
    draws = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(components.uuid, "uuid4", lambda: next(draws))
    cluster_id = components._kafka_cluster_id()
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"


def test_ids_are_22_url_safe_characters_and_never_begin_with_a_dash() -> None:
    ids = {components._kafka_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert all(set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for i in ids)
