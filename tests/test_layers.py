"""The package's import layers (docs/ARCHITECTURE.md, "Layers of the package"): a module imports only from its own
subpackage and the layers below it, except the few imports named, with their reason, in ALLOWED_UPWARD."""
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "leod_core"
#: Top-level module or subpackage -> layer. Subpackages of one layer do not import each other.
LAYERS = {"config": 0, "gpu_slots": 0, "devices": 0, "data": 1, "models": 2, "pseudo": 3, "evaluation": 3,
          "workflow": 4, "cli": 5}
#: (importing module, imported subpackage): the exceptions ARCHITECTURE.md names.
ALLOWED_UPWARD = {
    ("models/validation.py", "evaluation"),   # validation during training is the evaluation protocol itself
    ("evaluation/tables.py", "workflow"),     # experiment directory names are parsed where they are made
    ("evaluation/ablation.py", "workflow"),   # (workflow/paths.py, the one place of path facts)
}
IMPORT = re.compile(r"^\s*(?:from|import) leod_core\.(\w+)", re.MULTILINE)


def layer_violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        top = relative.with_suffix("").parts[0]
        if top == "__init__":
            continue
        for other in IMPORT.findall(path.read_text(encoding="utf-8")):
            if other == top or (relative.as_posix(), other) in ALLOWED_UPWARD:
                continue
            mine, theirs = LAYERS[top], LAYERS[other]
            if theirs > mine or (theirs == mine and mine > 0):
                found.append(f"{relative.as_posix()} imports leod_core.{other} (layer {theirs} from layer {mine})")
    return found


def test_every_module_has_a_layer():
    tops = {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert tops <= set(LAYERS), f"give these a layer in LAYERS and ARCHITECTURE.md: {sorted(tops - set(LAYERS))}"


def test_imports_follow_the_layers():
    assert not layer_violations(), "\n".join(layer_violations())


def test_the_exceptions_are_still_needed_and_documented():
    text = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for module, other in ALLOWED_UPWARD:
        source = (PACKAGE / module).read_text(encoding="utf-8")
        assert other in IMPORT.findall(source), f"{module} no longer imports {other}: drop the exception"
        assert f"`{module}`" in text, f"ARCHITECTURE.md does not name the exception {module}"
