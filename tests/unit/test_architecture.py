"""The folders tell the architecture: the serving side never depends on the batch layer, and
the product never depends on the embedded stack's internals."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "recommender"

# (module prefix that must stay private, the files and folders allowed to import it)
BOUNDARIES = [
    ("recommender.train", ("train/", "cli/train.py")),
    ("recommender.stack.base", ("stack/", "cli/stack.py")),
]


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against the package."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(prefix: str, allowed: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if any(rel == a or rel.startswith(a) for a in allowed):
            continue
        bad = sorted(m for m in imports(path) if m == prefix or m.startswith(prefix + "."))
        if bad:
            out.append(f"{rel} imports {', '.join(bad)}")
    return out


def test_the_check_sees_imports_it_should():
    # the predictor does use the model room, and the trainer its own pipeline: a check that
    # found nothing there would pass whatever the code imports
    assert any(v.startswith("predict/scoring.py") for v in violations("recommender.model", ()))
    assert any(v.startswith("cli/train.py") for v in violations("recommender.train", ()))


def test_serving_stages_never_import_the_batch_layer():
    prefix, allowed = BOUNDARIES[0]
    assert violations(prefix, allowed) == []


def test_the_product_never_imports_the_embedded_stack_internals():
    prefix, allowed = BOUNDARIES[1]
    assert violations(prefix, allowed) == []
