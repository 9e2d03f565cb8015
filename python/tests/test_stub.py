"""The type stub (`bsa.pyi`) says what the extension module is: the same names exported, the
same parameters (names, kinds, defaults) for every function and method, and `@final` on the
classes that cannot be subclassed. A parameter added to the Rust side and not to the stub
would be invisible to type checkers and editors."""

import ast
import inspect
from pathlib import Path

import pytest

import bsa

STUB = ast.parse((Path(__file__).parents[1] / "bsa.pyi").read_text())


def _stub_params(fn: ast.FunctionDef):
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = [(p.arg, "positional", d) for p, d in zip(positional, defaults)]
    out += [(p.arg, "keyword", d) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return [(name, kind, None if d is None else ast.literal_eval(d)) for name, kind, d in out
            if name not in ("self", "cls")]


def _runtime_params(obj):
    kinds = {inspect.Parameter.POSITIONAL_ONLY: "positional",
             inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
             inspect.Parameter.KEYWORD_ONLY: "keyword"}
    return [(p.name, kinds.get(p.kind, str(p.kind)), None if p.default is p.empty else p.default)
            for p in inspect.signature(obj).parameters.values() if p.name not in ("self", "cls")]


def _callables():
    for node in STUB.body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, node, getattr(bsa, node.name)
        elif isinstance(node, ast.ClassDef):
            cls = getattr(bsa, node.name)
            for f in node.body:
                # Properties have no signature to compare; their presence is checked below.
                if isinstance(f, ast.FunctionDef) and not any(
                        getattr(d, "id", None) == "property" for d in f.decorator_list):
                    yield f"{node.name}.{f.name}", f, getattr(cls, f.name)


@pytest.mark.parametrize("name,node,obj", list(_callables()), ids=lambda v: v if isinstance(v, str) else "")
def test_the_stub_gives_each_call_its_runtime_parameters(name, node, obj):
    assert _stub_params(node) == _runtime_params(obj), name


def test_the_stub_exports_and_finals_are_the_modules():
    listed = next(n.value for n in STUB.body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "__all__")
    assert ast.literal_eval(listed) == bsa.__all__
    classes = {n.name: n for n in STUB.body if isinstance(n, ast.ClassDef)}
    for name, node in classes.items():
        for f in node.body:
            if isinstance(f, ast.FunctionDef):
                assert hasattr(getattr(bsa, name), f.name), f"{name}.{f.name}"
    final = {name for name, node in classes.items()
             if any(getattr(d, "id", None) == "final" for d in node.decorator_list)}
    assert final == {"Model", "Index"}
    for name in final:
        with pytest.raises(TypeError):
            type("Mine", (getattr(bsa, name),), {})
