"""Which package may import which: a lower layer never imports a higher one, so it can be
used (and tested) without it. Reads every module's imports, the ones inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import anima

PACKAGE = Path(anima.__file__).parent
FORBIDDEN = {  # package -> what it must not import
    "memory": ("anima.bench",),  # the LoCoMo parser the importer uses lives in memory/locomo.py
    "safety": ("anima.assistant",),  # the guard learns from the personas' examples: anima/persona.py, a leaf
}


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


def test_lower_layers_do_not_import_higher_ones():
    problems = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            problems += [
                f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name}"
                for line, name in imports(path)
                if any(name == b or name.startswith(b + ".") for b in banned)
            ]
    assert not problems, "\n".join(problems)


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from anima.bench.stores import default_data\n")
    assert imports(module) == [(2, "anima.bench.stores")]
