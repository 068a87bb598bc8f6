"""The rooms table of the design notes, checked on the code: which package may import which.

Every import statement of every module (top level and lazy, inside functions) is read with
``ast``; an import of another room must be in that room's row of ``MAY_IMPORT``. The rows
come from DESIGN.md's "Rooms" table, widened only where today's code takes a step the table
does not forbid (each marked "from the code"). Where today's code breaks a rule, the import
is listed in ``KNOWN_BREAKS`` with the rule it breaks: the list must match the code exactly,
so a new break fails here and a fixed one must be struck off.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mobiledepth"

# Shared leaves: any room may import them; they import only each other.
LEAVES = {"errors", "io", "sizes", "child", "progress", "converter_env", ""}  # "" is the package root (``__version__``)
EVERY_ROOM = {"arch", "data", "train", "evaluate", "export", "prune", "records", "store", "report", "gate", "bench",
              "android_bench", "compute"}
# Stages record what they made into the store (an arrow down the flow of DESIGN.md); the store,
# the report and the gate are three rooms: the report and the gate read the store, never each other.
RECORDS = {"records"}                               # one definition per record kind (imports android_bench.result)
MAY_IMPORT = {
    "arch": set(),                                  # arch imports no stage
    "data": set(),                                  # data imports no train / export / prune
    "records": {"android_bench"},                   # the bench-result fields are android_bench's (a leaf)
    "compute": set(),                               # device, precision, the torchrun world: torch only
    "train": {"arch", "data", *RECORDS, "compute",
              "evaluate.whdr"},                     # WHDR, the paper's metric, for validation
    "evaluate": {"data", "export.runtimes", "store", *RECORDS,
                 "arch",                            # from the code: torch checkpoints (runtimes loads them too)
                 "compute"},                        # --device and the torchrun world, shared with train
    "export": {"arch", "store", "android_bench", *RECORDS,   # android_bench: the timing harness picks the fastest route
               "data"},                             # from the code: BatchNorm calibration on generated scenes
    "prune": {"arch", "train", "export", "evaluate", "bench", "android_bench", "store", *RECORDS,
              "data",                               # from the code: the held-out split for WHDR
              "compute"},                           # --train-device and the GPUs its proposal workers get
    "store": {"android_bench", *RECORDS},           # statistics of raw samples: android_bench's helper
    "report": {"store", "android_bench", *RECORDS,
               "arch"},                             # from the code: registry spec hashes and params of model cards
    "gate": {"bench", "android_bench", "store", *RECORDS,
             "export.runtimes"},                    # from the code: a .tflite file's precision, read with export's helper
    "bench": {"android_bench", "store", *RECORDS},
    "cli": EVERY_ROOM,                              # the CLI may import every stage
    "__main__": {"cli"},
    **{leaf: set() for leaf in LEAVES},
}

# Imports that break a rule today: (importer, imported) -> the rule.
KNOWN_BREAKS: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    base = REPO.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _targets(node: ast.AST, importer: str, is_package: bool) -> list[str]:
    """The modules one import statement names (``from a import b`` is a.b when b is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = importer.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]


@lru_cache(maxsize=None)
def imports_of(root: str) -> dict[str, frozenset[str]]:
    """Every module under ``root`` (a top-level package) -> the first-party modules it imports anywhere."""
    found = {}
    for path in sorted((REPO / root).rglob("*.py")):
        importer = _module_name(path)
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names.update(_targets(node, importer, path.name == "__init__.py"))
        found[importer] = frozenset(n for n in names if n.split(".")[0] in ("mobiledepth", "android_bench"))
    return found


def room(module: str) -> str:
    """mobiledepth.prune.lut -> prune; mobiledepth.io -> io; mobiledepth -> ""; android_bench.x -> android_bench."""
    parts = module.split(".")
    if parts[0] == "android_bench":
        return "android_bench"
    return parts[1] if len(parts) > 1 else ""


def allowed(importer: str, imported: str) -> bool:
    """Whether the rooms table lets ``importer`` import ``imported``."""
    source, target = room(importer), room(imported)
    if target == source or target in LEAVES and (source not in LEAVES or target != ""):
        return True
    inside = ".".join(imported.split(".")[1:])
    return any(target == entry or inside == entry or inside.startswith(entry + ".") for entry in MAY_IMPORT[source])


def breaks() -> set[tuple[str, str]]:
    return {(m, t) for m, targets in imports_of("mobiledepth").items() for t in targets if not allowed(m, t)}


def test_every_room_is_in_the_table():
    assert {room(m) for m in imports_of("mobiledepth")} <= set(MAY_IMPORT)


@pytest.mark.parametrize("source", sorted(MAY_IMPORT))
def test_room_imports_only_what_the_table_allows(source):
    new = sorted(f"{m} imports {t}" for m, t in breaks() - set(KNOWN_BREAKS) if room(m) == source)
    assert new == [], "imports that point back up the rooms table"


def test_known_breaks_are_exactly_todays():
    """A fixed break must leave KNOWN_BREAKS; a new one must not hide there."""
    assert breaks() == set(KNOWN_BREAKS)


def test_leaves_stay_leaves():
    for module, targets in imports_of("mobiledepth").items():
        if room(module) in LEAVES:
            assert {room(t) for t in targets} <= LEAVES - {""}, module


def test_the_explicit_rules():
    """The rules the design notes spell out, each stated once more in its own words."""
    rooms_of = {}
    for module, targets in imports_of("mobiledepth").items():
        rooms_of.setdefault(room(module), set()).update(room(t) for t in targets if (module, t) not in KNOWN_BREAKS)
    stages = {"data", "train", "evaluate", "export", "prune", "report", "bench", "cli"}
    assert not rooms_of["arch"] & stages, "arch imports no stage"
    assert not rooms_of["data"] & {"train", "export", "prune"}, "data imports no train / export / prune"
    assert not rooms_of["report"] & {"export", "prune", "train"}, "report never imports export / prune / train"
    assert "gate" not in rooms_of["report"], "report never imports the gate"
    assert not any("cli" in targets for name, targets in rooms_of.items() if name not in ("cli", "__main__")), \
        "nothing but the entry point imports the CLI"


def test_rooms_form_no_circle():
    graph: dict[str, set[str]] = {}
    for module, targets in imports_of("mobiledepth").items():
        graph.setdefault(room(module), set()).update(room(t) for t in targets if room(t) != room(module))
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, " -> ".join(path + (node,))
        if node not in done:
            for nxt in graph.get(node, ()):
                visit(nxt, path + (node,))
            done.add(node)

    for node in sorted(graph):
        visit(node, ())


def test_android_bench_never_imports_mobiledepth():
    offenders = {m: sorted(t) for m, t in imports_of("android_bench").items() if any(x.startswith("mobiledepth") for x in t)}
    assert offenders == {}


def test_the_parser_sees_lazy_and_from_imports():
    """The reader itself: lazy imports inside functions count, ``from pkg import module`` names the module."""
    netadapt = imports_of("mobiledepth")["mobiledepth.prune.netadapt"]
    assert {"mobiledepth.train.trainer", "mobiledepth.prune.workers", "mobiledepth.errors"} <= netadapt
    assert "mobiledepth.prune.netadapt" in imports_of("mobiledepth")["mobiledepth.cli.prune_cmd"]
    assert allowed("mobiledepth.evaluate.evaluate", "mobiledepth.export.runtimes")
    assert not allowed("mobiledepth.evaluate.evaluate", "mobiledepth.export.pipeline")
    assert not allowed("mobiledepth.arch.spec", "mobiledepth.train.trainer")
    assert allowed("mobiledepth.io", "mobiledepth.errors") and not allowed("mobiledepth.io", "mobiledepth.arch")


def test_one_model_resolver():
    """Issue 12: every command resolves --model through ``mobiledepth.arch.resolve``; only it imports user code
    (``importlib.import_module``) and defines the resolver's functions, so no command grows a second one."""
    resolver = "mobiledepth.arch.resolve"
    own_names = {"load_factory", "is_factory_ref", "resolve_model", "split_output", "check_depth_output"}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module == resolver:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert not defined & own_names, f"{module} defines {sorted(defined & own_names)}: use {resolver}"
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr == "import_module" and not (n.args and isinstance(n.args[0], (ast.Constant, ast.JoinedStr)))]
        assert not calls or module in LAZY_LOADERS, f"{module} imports a module named at run time: use {resolver}"
    users = {m for m, targets in imports_of("mobiledepth").items() if resolver in targets}
    assert {"mobiledepth.export.source", "mobiledepth.evaluate.evaluate", "mobiledepth.train.distill"} <= users


# Modules that import by a computed name, but only their own submodules (PEP 562 lazy attributes).
LAZY_LOADERS = {"mobiledepth.arch", "mobiledepth.cli"}
