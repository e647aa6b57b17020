"""Every Python example in docs/ and README.md runs, and does what it says.

Examples are collected from the source files, not from a built site:

- reStructuredText (``docs/*.rst``): the body of each ``.. code-block::`` (or ``.. code::``,
  ``.. sourcecode::``) directive whose language is ``python``, ``python3`` or ``py``.
- Markdown (``README.md``, ``docs/*.md``): each fenced block whose info string starts with
  ``python``, ``python3`` or ``py``.

Blocks in any other language (``text``, ``console``, ``bash``, ``markdown``...) are shown,
not run, and so is ``literalinclude`` content: those files are run by their own tests.

A file's blocks run in order, in one fresh namespace whose ``__name__`` is ``"__docs__"``
(so code under ``if __name__ == "__main__":`` is shown but not run), each compiled with
the file's path and real line numbers so that a failure points at the page. One test per
file, named after it. A file whose examples need an optional module says so with a
comment naming it — ``.. docs-requires: distributed`` in reStructuredText,
``<!-- docs-requires: distributed -->`` in Markdown — and its test is skipped when that
module cannot be imported.
"""

from __future__ import annotations

import importlib.util
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

PYTHON_LANGUAGES = frozenset({"python", "python3", "py"})

_RST_DIRECTIVE = re.compile(
    r"^(?P<indent>[ \t]*)\.\.[ \t]+(?:code-block|code|sourcecode)::[ \t]*(?P<language>\S*)[ \t]*$"
)
_RST_OPTION = re.compile(r"^[ \t]+:[\w-]+:")
_MD_FENCE_OPEN = re.compile(
    r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$"
)
_REQUIRES = re.compile(
    r"^(?:\.\.|<!--)[ \t]*docs-requires:[ \t]*(?P<modules>[\w., \t]+?)[ \t]*(?:-->)?[ \t]*$"
)


@dataclass(frozen=True)
class Block:
    """One runnable example: its source (dedented) and the file line where it starts."""

    line: int
    source: str


def _indent_width(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def rst_python_blocks(text: str) -> list[Block]:
    """The Python code blocks of a reStructuredText document, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _RST_DIRECTIVE.match(lines[i])
        i += 1
        if match is None:
            continue
        directive_indent = _indent_width(match["indent"].expandtabs())
        # Directive options (":caption: ...") come first, directly under the directive.
        while i < len(lines) and _RST_OPTION.match(lines[i]):
            i += 1
        body: list[str] = []
        first = i
        while i < len(lines) and (
            not lines[i].strip() or _indent_width(lines[i].expandtabs()) > directive_indent
        ):
            body.append(lines[i].expandtabs())
            i += 1
        if match["language"].lower() not in PYTHON_LANGUAGES:
            continue
        # Skip the blank line(s) between the directive and its content, keeping line numbers.
        while body and not body[0].strip():
            body.pop(0)
            first += 1
        source = textwrap.dedent("\n".join(body)).rstrip()
        if source:
            blocks.append(Block(line=first + 1, source=source))
    return blocks


def markdown_python_blocks(text: str) -> list[Block]:
    """The Python fenced code blocks of a Markdown document, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _MD_FENCE_OPEN.match(lines[i])
        i += 1
        if match is None:
            continue
        fence = match["fence"]
        indent = len(match["indent"])
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        first = i
        body: list[str] = []
        while i < len(lines) and not close.match(lines[i]):
            line = lines[i]
            # Content is de-indented by the fence's own indentation, as CommonMark says.
            strip = min(indent, _indent_width(line))
            body.append(line[strip:])
            i += 1
        i += 1  # the closing fence (or the end of the document)
        words = match["info"].split()
        if not words or words[0].lower() not in PYTHON_LANGUAGES:
            continue
        source = "\n".join(body).rstrip()
        if source.strip():
            blocks.append(Block(line=first + 1, source=source))
    return blocks


def python_blocks(path: Path) -> list[Block]:
    """The runnable examples of a documentation file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return markdown_python_blocks(text)
    return rst_python_blocks(text)


def required_modules(path: Path) -> list[str]:
    """Modules named by ``docs-requires`` comments in a file."""
    modules: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _REQUIRES.match(line.strip())
        if match:
            modules += [name for name in re.split(r"[,\s]+", match["modules"]) if name]
    return modules


def run_examples(path: Path) -> dict[str, object]:
    """Execute a file's Python blocks in order in one fresh namespace; return the namespace."""
    namespace: dict[str, object] = {"__name__": "__docs__", "__file__": str(path)}
    for block in python_blocks(path):
        code = compile(block.source + "\n", str(path), "exec")
        exec(_moved(code, block.line - 1), namespace)
    return namespace


def _moved(code: CodeType, lines: int) -> CodeType:
    """``code`` moved down by ``lines``, so tracebacks show the page's own line numbers.

    Line tables are relative to ``co_firstlineno``; functions and classes defined in the
    block are code objects of their own, and move with it.
    """
    constants = tuple(
        _moved(constant, lines) if isinstance(constant, CodeType) else constant
        for constant in code.co_consts
    )
    return code.replace(co_firstlineno=code.co_firstlineno + lines, co_consts=constants)


def _documentation_files() -> list[Path]:
    pages = sorted(DOCS.glob("*.rst")) + sorted(DOCS.glob("*.md"))
    return [README] + [page for page in pages if python_blocks(page)]


@pytest.mark.parametrize("path", _documentation_files(), ids=lambda path: path.name)
def test_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python example of the file runs, in order, without an error."""
    if not path.exists():
        pytest.skip(f"{path.name} is absent")
    if not python_blocks(path):
        pytest.skip(f"{path.name} has no Python examples")
    for module in required_modules(path):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{path.name} needs {module}, which is not installed")
    # Examples that write files write them somewhere disposable.
    monkeypatch.chdir(tmp_path)
    run_examples(path)


# The collector itself: if it silently found nothing, the test above would prove nothing.

_RST_SAMPLE = """\
Title
=====

.. code-block:: python

   x = 1

   if x:
       y = 2

Some prose.

.. code-block:: console

   $ not python

.. note::

   .. code-block:: python
      :caption: nested, with an option

      z = 3

.. code-block:: python3

   w = 4
"""

_MD_SAMPLE = """\
# Title

```python
a = 1
```

```bash
pip install nothing
```

````py title="x"
b = 2
```
still b
````

- item

  ```python
  c = 3
  ```
"""


def test_rst_collector_finds_python_blocks_only() -> None:
    """Python code blocks are found with their line numbers; other languages are not."""
    blocks = rst_python_blocks(_RST_SAMPLE)
    assert [block.source for block in blocks] == ["x = 1\n\nif x:\n    y = 2", "z = 3", "w = 4"]
    assert [block.line for block in blocks] == [6, 22, 26]


def test_markdown_collector_finds_python_fences_only() -> None:
    """Python fences are found, longer fences may contain shorter ones, indented fences work."""
    blocks = markdown_python_blocks(_MD_SAMPLE)
    assert [block.source for block in blocks] == ["a = 1", "b = 2\n```\nstill b", "c = 3"]
    assert [block.line for block in blocks] == [4, 12, 20]


def test_docs_have_examples() -> None:
    """The main pages do contain examples, so their tests are not empty."""
    for name in ("index.rst", "tutorial.rst", "runner.rst", "errors.rst", "testing.rst"):
        assert python_blocks(DOCS / name), name


def test_failures_point_at_the_page(tmp_path: Path) -> None:
    """A failing example's traceback names the documentation file and its line."""
    page = tmp_path / "page.rst"
    page.write_text(
        "Intro\n\n.. code-block:: python\n\n   ok = True\n\n"
        ".. code-block:: python\n\n   def check():\n       assert not ok\n\n   check()\n"
    )
    with pytest.raises(AssertionError) as info:
        run_examples(page)
    assert [(Path(entry.path), entry.lineno + 1) for entry in info.traceback[-2:]] == [
        (page, 12),
        (page, 10),
    ]
