"""Every extra_context key the template tests use exists in cookiecutter.json.

Cookiecutter silently ignores unknown extra_context keys, so a misspelt key bakes the default
and the test passes for the wrong reason. Two nets: the option sets registered in options.py
(checked by value, so computed entries count), and a scan of every test module for
``extra_context=`` literals and module-level ``*_OPTION_SETS``/``*_INPUTS``/``*_CONTEXTS``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import options

TESTS = Path(__file__).resolve().parent
KNOWN = set(json.loads((TESTS.parent / "cookiecutter.json").read_text(encoding="utf-8")))
REGISTRY_SUFFIXES = ("_OPTION_SETS", "_INPUTS", "_CONTEXTS")


def registered_contexts() -> Iterator[tuple[str, dict[str, object]]]:
    """(where, extra_context) for each option set in options.py."""
    for name in dir(options):
        value = getattr(options, name)
        if not name.endswith(REGISTRY_SUFFIXES):
            continue
        items = value.items() if isinstance(value, dict) else ((case[0], case[1]) for case in value)
        for case_id, context in items:
            yield f"options.{name}[{case_id!r}]", context


def outer_dicts(node: ast.AST) -> Iterator[ast.Dict]:
    """Dict literals in node, not descending into them (their values are answers), except a
    name -> context mapping (every value a dict literal), whose values are the contexts."""
    if isinstance(node, ast.Dict):
        if node.values and all(isinstance(value, ast.Dict) for value in node.values):
            for value in node.values:
                yield from outer_dicts(value)
        else:
            yield node
        return
    for child in ast.iter_child_nodes(node):
        yield from outer_dicts(child)


def literal_contexts(path: Path) -> Iterator[tuple[str, list[object]]]:
    """(where, keys) of every literal extra_context in one test module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extra_context":
            found.append(node.value)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id.endswith(REGISTRY_SUFFIXES) for t in targets):
            found.append(node)
    for value in found:
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "dict":
            yield f"{path.name}:{value.lineno}", [kw.arg for kw in value.keywords]
        for literal in outer_dicts(value):
            keys = [
                key.value if isinstance(key, ast.Constant) else ast.unparse(key)
                for key in literal.keys
                if key is not None  # **spread: its keys are checked where it is defined
            ]
            yield f"{path.name}:{literal.lineno}", keys


def test_options_registry_is_not_empty():
    assert len(list(registered_contexts())) > 10


def test_registered_option_sets_use_known_keys():
    unknown = [
        f"{where}: {key!r}"
        for where, context in registered_contexts()
        for key in context
        if key not in KNOWN
    ]
    assert unknown == [], f"not in cookiecutter.json: {unknown}"


def test_literal_extra_context_in_test_modules_use_known_keys():
    unknown = [
        f"{where}: {key!r}"
        for path in sorted(TESTS.rglob("*.py"))
        for where, keys in literal_contexts(path)
        for key in keys
        if key not in KNOWN
    ]
    assert unknown == [], f"not in cookiecutter.json: {unknown}"
