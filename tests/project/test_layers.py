"""Who may import whom, and who owns the wire layout (issue 17).

- The tests, ``fuzz/`` and ``benchmarks/`` share ``testkit/`` and do not import each other: a test imports
  ``fuzz`` or ``benchmarks`` only to test that tool itself.
- The library imports none of them; ``testkit`` imports none of the three.
- ``envelope._format`` is the one module of the library that builds a ``struct`` of the wire format.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the test modules that test a tool of the repository, and may therefore import it
#: Tests of a tool itself may import it.
TOOL_TESTS = {"tests/format/test_fuzz.py": {"fuzz"}, "tests/project/test_benchmarks_smoke.py": {"benchmarks"},
              "tests/project/test_benchmarks_coldstart.py": {"benchmarks"},
              "tests/project/test_benchmarks_small.py": {"benchmarks"}}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (absolute imports; relative ones stay inside)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("tests", {"fuzz", "benchmarks"}),
    ("benchmarks", {"fuzz", "tests", "helpers"}),
    ("fuzz", {"benchmarks", "tests", "helpers"}),
    ("testkit", {"fuzz", "benchmarks", "tests", "helpers"}),
    ("envelope", {"fuzz", "benchmarks", "tests", "helpers", "testkit", "envelope_cli"}),
])
def test_imports_between_the_parts(folder: str, forbidden: set[str]) -> None:
    files = _files(folder)
    assert files
    for path in files:
        allowed = TOOL_TESTS.get(path.relative_to(ROOT).as_posix(), set())
        wrong = (_imports(path) & forbidden) - allowed
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_the_tools_import_the_shared_test_kit() -> None:
    for folder in ("tests", "fuzz", "benchmarks"):
        assert any("testkit" in _imports(path) for path in _files(folder)), folder


def test_only_the_format_module_builds_structs_of_the_wire_format() -> None:
    for path in _files("envelope"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        uses_struct = "struct" in _imports(path)
        if path.name == "_format.py":
            assert uses_struct
            continue
        assert not uses_struct, f"{path.relative_to(ROOT)} imports struct: take the layout from envelope._format"
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert not names & {"TAG", "_SEQ", "_SEQ_LEN", "_IV"}, path.name
