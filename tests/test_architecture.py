"""Package boundaries and public APIs."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["analysis", "analysis.figures", "simulator", "simulator.data",
            "strategies.models", "strategies.defenses",
            "strategies.attacks", "strategies.federation", "analysis.metrics"]


def test_layers_and_plugin_purity_hold():
    """simulator -> strategies -> analysis; plug-ins never import flwr or ray."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    res = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "2 kept, 0 broken" in res.stdout


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_exists(name):
    module = importlib.import_module(name)
    for public in getattr(module, "__all__", []):
        assert hasattr(module, public), f"{name}.__all__ names missing {public!r}"


@pytest.mark.parametrize("registry", ["DATASETS", "DEFENSES", "ATTACKS", "BACKBONES",
                                      "ENCODERS"])
def test_registries_list_their_names_in_errors(registry):
    from simulator.data import DATASETS
    from strategies.attacks import ATTACKS
    from strategies.defenses import DEFENSES
    from strategies.models import BACKBONES, ENCODERS
    from strategies.registry import UnknownPluginError
    reg = {"DATASETS": DATASETS, "DEFENSES": DEFENSES, "ATTACKS": ATTACKS,
           "BACKBONES": BACKBONES, "ENCODERS": ENCODERS}[registry]
    with pytest.raises(UnknownPluginError) as info:
        reg.get("no-such-plugin")
    for known in reg.names():
        assert known in str(info.value)
