"""The benchmarks stand on the installed packages alone: nothing from tests/, no sys.path edits."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fieldloop.layout import PROJECT_ROOT

BENCHES = sorted((PROJECT_ROOT / "bench").glob("*.py"))


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_a_bench_imports_nothing_from_tests_and_edits_no_import_path(bench: Path) -> None:
    tree = ast.parse(bench.read_text(encoding="utf-8"))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m == "tests" or m.startswith("tests.")]
    edits = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and n.attr in ("insert", "append")
        and isinstance(n.value, ast.Attribute)
        and n.value.attr == "path"
        and isinstance(n.value.value, ast.Name)
        and n.value.value.id == "sys"
    ]
    assert not edits, f"{bench.name} edits sys.path"
