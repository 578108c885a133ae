"""The documentation's examples run: every ```python block of docs/ and of README.md.

Blocks of one page run in order in one namespace, as a reader would type them. Examples
that need something a test machine lacks (a Dask cluster) are written as
```{code-block} python directives, which this test does not collect.
"""

from __future__ import annotations

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


def _blocks(path: Path) -> list[str]:
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not page.exists():
        pytest.skip(f"{page.name} not present")
    import jacgeom

    threads = jacgeom.get_num_threads()
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    try:
        for i, code in enumerate(_blocks(page)):
            try:
                exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
            except Exception as exc:  # pragma: no cover - the message is the point
                raise AssertionError(f"{page.name}, python block {i} failed:\n{code}") from exc
    finally:
        jacgeom.set_num_threads(threads)
    capsys.readouterr()


def test_api_reference_lists_every_public_name() -> None:
    import jacgeom
    import jacgeom.montecarlo

    page = (ROOT / "docs" / "reference" / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   ([A-Za-z_][A-Za-z0-9_]*)$", page, flags=re.MULTILINE))
    public = set(jacgeom.__all__) | set(jacgeom.montecarlo.__all__)
    assert public <= listed, f"public names missing from the API reference: {public - listed}"
    assert listed <= public, f"the API reference lists names that are not public: {listed - public}"
