"""The documentation's examples run: every ```python block of docs/ and of README.md.

Blocks of one page run in order in one namespace, as a reader would type them. A block
whose first line is ``# needs: torch`` (any modules, separated by spaces or commas) runs
only where they import; where one is missing it is left out (later blocks must not depend
on it) and the page is reported as skipped after its other blocks ran. Examples that need
something no test machine has (a Dask cluster) are written as ```{code-block} python
directives, which this test does not collect.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# docs/architecture.md describes the code's layout; its blocks are shell and tree listings.
PAGES = sorted(
    p
    for p in (ROOT / "docs").rglob("*.md")
    if "_build" not in p.parts and p.name != "architecture.md"
) + [ROOT / "README.md"]

_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


_NEEDS = re.compile(r"^#\s*needs:\s*(.+)$")


def _blocks(path: Path) -> list[str]:
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


def _missing(code: str) -> list[str]:
    """The modules a block's ``# needs: ...`` first line names that cannot be imported."""
    first = code.lstrip().split("\n", 1)[0]
    match = _NEEDS.match(first)
    if match is None:
        return []
    names = [n for n in re.split(r"[\s,]+", match.group(1).strip()) if n]
    return [n for n in names if importlib.util.find_spec(n) is None]


def test_needs_line_names_missing_modules() -> None:
    assert _missing("import numpy\n") == []
    assert _missing("# needs: numpy\nimport numpy\n") == []
    assert _missing("# needs: numpy, no_such_module_jg\n") == ["no_such_module_jg"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(
    page: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not page.exists():
        pytest.skip(f"{page.name} not present")
    # An extension that an example builds (docs/cython.md) compiles at -O0, about 4 s on
    # two cores against 11 at Python's -O3: its own code only loops and forwards pointers.
    # setuptools puts CFLAGS after Python's flags or, in recent versions, in their place;
    # either way the build is at -O0.
    monkeypatch.setenv("CFLAGS", f"{os.environ.get('CFLAGS', '')} -O0".strip())
    import jacgeom

    threads = jacgeom.get_num_threads()
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    left_out: list[str] = []
    try:
        for i, code in enumerate(_blocks(page)):
            missing = _missing(code)
            if missing:
                left_out.append(f"block {i} ({', '.join(missing)})")
                continue
            try:
                exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
            except Exception as exc:  # pragma: no cover - the message is the point
                raise AssertionError(f"{page.name}, python block {i} failed:\n{code}") from exc
    finally:
        jacgeom.set_num_threads(threads)
    capsys.readouterr()
    if left_out:
        pytest.skip(f"the other blocks ran; missing modules: {'; '.join(left_out)}")


def test_api_reference_lists_every_public_name() -> None:
    import jacgeom
    import jacgeom.analyze
    import jacgeom.interop
    import jacgeom.montecarlo
    import jacgeom.report
    import jacgeom.theory
    import jacgeom.torch

    page = (ROOT / "docs" / "reference" / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   ([A-Za-z_][A-Za-z0-9_]*)$", page, flags=re.MULTILINE))
    public = set(jacgeom.__all__) | set(jacgeom.montecarlo.__all__)
    for module in (jacgeom.interop, jacgeom.report, jacgeom.analyze, jacgeom.torch, jacgeom.theory):
        public |= set(module.__all__)
    assert public <= listed, f"public names missing from the API reference: {public - listed}"
    assert listed <= public, f"the API reference lists names that are not public: {listed - public}"


def test_citation_names_the_package_version() -> None:
    import jacgeom

    version = jacgeom.__version__
    citation = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert f'version: "{version}"' in citation
    assert f"version = {{{version}}}" in (ROOT / "README.md").read_text(encoding="utf-8")
