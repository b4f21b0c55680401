"""The package's layers (docs/architecture.md): no module imports from a layer above its own."""

import ast
from pathlib import Path

import modality_forcing

ROOT = Path(modality_forcing.__file__).parent
LAYERS = {
    "config": 0, "modalities": 0, "precision": 0,
    "flow": 1, "sampling": 1, "data": 1, "metrics": 1,
    "model": 2,
    "backbones": 3,
    "training": 4, "inference": 4,
    "bench": 5,
    "demo": 6, "app": 6, "cli": 6,
}  # fmt: skip
FACADE = {"__init__", "__main__"}  # the package's entry points may reach anything


def _top(module: Path) -> str:
    return module.relative_to(ROOT).with_suffix("").parts[0]


def _imports(module: Path, source: str | None = None) -> set[str]:
    """The top-level names of this package that `module` imports (lazy imports included)."""
    package = list(module.relative_to(ROOT).parts[:-1])  # what `from .` means in it
    found = set()
    for node in ast.walk(ast.parse(source if source is not None else module.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("modality_forcing"):
                target = node.module.split(".")[1:]
            else:
                continue
            names = target or [a.name for a in node.names]
            found.add(names[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("modality_forcing."):
                    found.add(alias.name.split(".")[1])
    return found


def test_every_top_level_module_has_a_layer():
    tops = {_top(m) for m in ROOT.rglob("*.py")} - FACADE
    assert tops == set(LAYERS), f"give these a layer: {tops ^ set(LAYERS)}"


def test_no_import_runs_back_up():
    upward = []
    for module in sorted(ROOT.rglob("*.py")):
        mine = _top(module)
        if mine in FACADE:
            continue
        for name in _imports(module):
            if name in LAYERS and LAYERS[name] > LAYERS[mine]:
                upward.append(f"{module.relative_to(ROOT)} ({mine}, layer {LAYERS[mine]}) "
                              f"imports {name} (layer {LAYERS[name]})")  # fmt: skip
    assert not upward, "\n".join(upward)


def test_the_checker_sees_imports_of_every_form():
    layers = ROOT / "model" / "layers.py"  # read as if these lines were in it
    assert _imports(layers, "from ..bench import plots") == {"bench"}
    assert _imports(layers, "def f():\n    from ..training.loop import train") == {"training"}
    assert _imports(layers, "from . import mmdit") == {"model"}
    assert _imports(layers, "import modality_forcing.inference.pipeline") == {"inference"}
    assert _imports(ROOT / "cli" / "__init__.py", "from .bench import add_bench") == {"cli"}


def test_the_package_root_is_light_and_exports_the_pipeline():
    import subprocess
    import sys

    code = (
        "import sys, modality_forcing\n"
        "assert 'torch' not in sys.modules, 'importing the package pulled in torch'\n"
        "from modality_forcing import ModalityForcingPipeline\n"
        "from modality_forcing.inference.pipeline import ModalityForcingPipeline as P\n"
        "assert ModalityForcingPipeline is P\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
