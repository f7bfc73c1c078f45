"""Reference tests for dCor^2 (naive O(n^2) and the `dcor` package) and redundancy.

``dcor`` is a test-only dependency: the reference our own estimators are checked
against, never imported by the package itself.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import dcor
import pytest
import torch

from analysis.metrics import (
    bias_corrected_dcor2,
    distance_correlation,
    pearson_redundancy,
    u_distance_correlation_sqr,
)

REPO = Path(__file__).resolve().parents[1]


def _naive_dcor2(x: list[list[float]], z: list[list[float]]) -> float:
    """Szekely's V-statistic dCor^2 with Euclidean distances, plain Python loops."""
    n = len(x)

    def centred(v: list[list[float]]) -> list[list[float]]:
        d = [[math.dist(v[i], v[j]) for j in range(n)] for i in range(n)]
        row = [sum(r) / n for r in d]
        grand = sum(row) / n
        return [[d[i][j] - row[i] - row[j] + grand for j in range(n)] for i in range(n)]

    a, b = centred(x), centred(z)

    def mean_prod(p: list[list[float]], q: list[list[float]]) -> float:
        return sum(p[i][j] * q[i][j] for i in range(n) for j in range(n)) / n**2

    return mean_prod(a, b) / math.sqrt(mean_prod(a, a) * mean_prod(b, b))


def _cases(n: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    t = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return {
        "independent": (x, torch.randn(n, 2, generator=g, dtype=torch.float64)),
        "linear": (x, x @ torch.randn(3, 2, generator=g, dtype=torch.float64)
                   + 0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64)),
        "quadratic": (t, t**2),
    }


@pytest.mark.parametrize("case", ["independent", "linear", "quadratic"])
def test_matches_naive_implementation(case: str) -> None:
    x, z = _cases(12, seed=0)[case]
    got = distance_correlation(x, z, eps=0.0).item()
    assert got == pytest.approx(_naive_dcor2(x.tolist(), z.tolist()), abs=1e-10)


@pytest.mark.parametrize("case", ["independent", "linear", "quadratic"])
def test_matches_dcor_package(case: str) -> None:
    x, z = _cases(200, seed=1)[case]
    ref = dcor.distance_correlation_sqr(x.numpy(), z.numpy())
    assert distance_correlation(x, z, eps=0.0).item() == pytest.approx(ref, abs=1e-9)
    # The default eps (1e-9 inside the sqrt) barely moves the value.
    assert distance_correlation(x, z).item() == pytest.approx(ref, abs=1e-4)
    # float32, as in training, stays close too.
    assert distance_correlation(x.float(), z.float()).item() == pytest.approx(
        ref, abs=1e-4
    )


def test_detects_nonlinear_dependence() -> None:
    cases = _cases(400, seed=2)
    x, z = cases["quadratic"]  # symmetric around 0: Pearson correlation ~ 0
    value = distance_correlation(x, z).item()
    # Euclidean dCor^2 ~ 0.29 for Gaussian x (dCor ~ 0.54); the squared-distance
    # variant seen in several repos only sees linear dependence.
    assert value > 0.2
    d2x, d2z = torch.cdist(x, x) ** 2, torch.cdist(z, z) ** 2

    def centre(d: torch.Tensor) -> torch.Tensor:
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centre(d2x), centre(d2z)
    squared_variant = ((a * b).mean() / torch.sqrt((a * a).mean() * (b * b).mean()))
    assert squared_variant.item() < 0.1
    indep = distance_correlation(*cases["independent"]).item()
    linear = distance_correlation(*cases["linear"]).item()
    assert indep < 0.1 < value < linear


def test_flattens_images_per_sample() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(16, 3, 4, 4, generator=g)
    z = torch.rand(16, 2, 2, 2, generator=g)
    assert distance_correlation(x, z).item() == pytest.approx(
        distance_correlation(x.flatten(1), z.flatten(1)).item(), abs=1e-7
    )


def test_gradient_is_finite_at_duplicate_points() -> None:
    g = torch.Generator().manual_seed(4)
    base = torch.rand(4, 5, generator=g)
    x = torch.cat([base, base]).requires_grad_(True)  # every sample duplicated
    z = torch.cat([base[:, :2], base[:, :2]]).requires_grad_(True)
    distance_correlation(x, z).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(z.grad).all()
    assert x.grad.abs().sum() > 0


def test_constant_input_gives_zero_with_finite_gradient() -> None:
    x = torch.rand(8, 3, requires_grad=True)
    z = torch.ones(8, 2, requires_grad=True)
    value = distance_correlation(x, z)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(x.grad).all() and torch.isfinite(z.grad).all()


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="same number of samples"):
        distance_correlation(torch.rand(4, 2), torch.rand(5, 2))
    with pytest.raises(ValueError, match="eps"):
        distance_correlation(torch.rand(4, 2), torch.rand(4, 2), eps=-1.0)
    with pytest.raises(ValueError, match="max_samples"):
        bias_corrected_dcor2(torch.rand(8, 2), torch.rand(8, 2), max_samples=2)


def test_bias_corrected_near_zero_for_independent_high_dimensional_batches() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(64, 3, 16, 16, generator=g)  # 768-D, independent of z
    z = torch.rand(64, 8, 6, 6, generator=g)
    v_stat = distance_correlation(x, z).item()
    u_stat = bias_corrected_dcor2(x, z)
    assert v_stat > 0.8  # the V-statistic's high-dimensional bias
    assert abs(u_stat) < 0.05
    dependent = bias_corrected_dcor2(x, x[:, :1] * 2 + 0.1)
    assert dependent > 0.5


def test_bias_corrected_matches_dcor_and_subsamples_reproducibly() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(40, 3, generator=g)
    z = x[:, :2] + torch.randn(40, 2, generator=g)
    ref = dcor.u_distance_correlation_sqr(x.double().numpy(), z.double().numpy())
    assert bias_corrected_dcor2(x, z) == pytest.approx(ref, abs=1e-10)
    sub_a = bias_corrected_dcor2(x, z, 16, torch.Generator().manual_seed(9))
    sub_b = bias_corrected_dcor2(x, z, 16, torch.Generator().manual_seed(9))
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(9))[:16]
    ref_sub = dcor.u_distance_correlation_sqr(
        x[idx].double().numpy(), z[idx].double().numpy()
    )
    assert sub_a == sub_b == pytest.approx(ref_sub, abs=1e-10)


# -- U-centred (bias-corrected) dCor^2 -------------------------------------------------
def _u_cases(n: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    cases = _cases(n, seed)
    g = torch.Generator().manual_seed(seed + 100)
    images = torch.rand(n, 3, 8, 8, generator=g, dtype=torch.float64) + 5.0
    cases["high_dimensional"] = (
        images,  # 192-D, far from the origin; z a nonlinear feature of it
        torch.tanh(images.flatten(1) @ torch.randn(192, 16, generator=g,
                                                   dtype=torch.float64) / 8),
    )
    cases["high_dimensional_independent"] = (
        images, torch.rand(n, 4, 3, 3, generator=g, dtype=torch.float64)
    )
    return cases


@pytest.mark.parametrize("n", [4, 5, 9, 40, 300])
@pytest.mark.parametrize("case", ["independent", "linear", "quadratic",
                                  "high_dimensional", "high_dimensional_independent"])
def test_u_statistic_matches_dcor_package(case: str, n: int) -> None:
    x, z = _u_cases(n, seed=n)[case]
    ref = dcor.u_distance_correlation_sqr(
        x.flatten(1).numpy(), z.flatten(1).numpy()
    )
    assert u_distance_correlation_sqr(x, z, eps=0.0).item() == pytest.approx(
        ref, abs=1e-10
    )
    assert bias_corrected_dcor2(x, z) == pytest.approx(ref, abs=1e-10)
    # The training defaults (eps inside the sqrt, float32) stay close.
    assert u_distance_correlation_sqr(x, z).item() == pytest.approx(ref, abs=1e-6)
    assert u_distance_correlation_sqr(x.float(), z.float()).item() == pytest.approx(
        ref, abs=1e-4
    )


def test_u_statistic_orders_dependence_and_removes_the_bias() -> None:
    cases = _u_cases(200, seed=11)
    u = {k: u_distance_correlation_sqr(*v).item() for k, v in cases.items()}
    v_indep = distance_correlation(*cases["high_dimensional_independent"]).item()
    assert abs(u["independent"]) < 0.02
    assert abs(u["high_dimensional_independent"]) < 0.02 < 0.5 < v_indep
    assert 0.1 < u["quadratic"] < u["linear"]
    # z sees 16 of 192 directions of x: clearly dependent, far from 1.
    assert u["high_dimensional"] > 0.05


def test_u_statistic_gradcheck() -> None:
    g = torch.Generator().manual_seed(12)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(u_distance_correlation_sqr, (x, z))
    assert torch.autograd.gradcheck(
        lambda a, b: u_distance_correlation_sqr(a, b, eps=0.0), (x, z)
    )


def test_u_statistic_gradient_is_finite_at_duplicates_and_constants() -> None:
    g = torch.Generator().manual_seed(13)
    base = torch.rand(4, 5, generator=g)
    x = torch.cat([base, base]).requires_grad_(True)  # every sample duplicated
    z = torch.cat([base[:, :2], base[:, :2]]).requires_grad_(True)
    u_distance_correlation_sqr(x, z).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(z.grad).all()
    assert x.grad.abs().sum() > 0
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(8, 3, generator=g, dtype=dtype, requires_grad=True)
        z = torch.full((8, 2), 0.7, dtype=dtype, requires_grad=True)
        value = u_distance_correlation_sqr(x, z)
        value.backward()
        assert value.item() == 0.0
        assert torch.isfinite(x.grad).all() and torch.isfinite(z.grad).all()


def test_u_statistic_input_validation() -> None:
    with pytest.raises(ValueError, match="at least 4 samples"):
        u_distance_correlation_sqr(torch.rand(3, 2), torch.rand(3, 2))
    with pytest.raises(ValueError, match="eps"):
        u_distance_correlation_sqr(torch.rand(4, 2), torch.rand(4, 2), eps=-1.0)
    with pytest.raises(ValueError, match="same number of samples"):
        u_distance_correlation_sqr(torch.rand(4, 2), torch.rand(5, 2))


_CHILD = """
import json, pathlib, sys, time
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
import torch
import simulator.adversary  # the module a Ray worker imports for the dCor column
from analysis.metrics import bias_corrected_dcor2
g = torch.Generator().manual_seed(0)
x = torch.rand(64, 1, 16, 16, generator=g)
z = torch.tanh(x.flatten(1) @ torch.randn(256, 32, generator=g))
print(json.dumps({"value": bias_corrected_dcor2(x, z),
                  "dcor": "dcor" in sys.modules, "numba": "numba" in sys.modules}))
"""


@pytest.mark.slow
def test_cold_concurrent_processes_need_no_jit(tmp_path: Path) -> None:
    # The dcor package's numba kernels once raced while compiling into a shared cold
    # cache (a Ray worker died with "LLVM ERROR: Symbol not found"). Six processes, each
    # with its own empty numba cache, start together and must neither crash nor JIT.
    go = tmp_path / "go"
    procs = []
    for i in range(6):
        cache = tmp_path / f"numba{i}"
        cache.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_CACHE_DIR": str(cache)}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(go)], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    time.sleep(0.5)  # every interpreter is up and polling; release them at once
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len({r["value"] for r in results}) == 1, results
    assert 0.0 < results[0]["value"] < 1.0
    assert not any(r["dcor"] or r["numba"] for r in results), results


def test_pearson_redundancy_orthogonal_and_copied_channels() -> None:
    t = torch.arange(16, dtype=torch.float64) * (2 * math.pi / 16)
    # Centred sinusoids of different frequencies are exactly orthogonal.
    waves = torch.stack(
        [torch.cos(t), torch.sin(t), torch.cos(2 * t), torch.sin(3 * t)]
    )
    z = (waves.reshape(1, 4, 4, 4) + 5.0).repeat(3, 1, 1, 1)
    assert pearson_redundancy(z).item() == pytest.approx(0.0, abs=1e-12)
    copies = waves[:1].repeat(4, 1) * torch.tensor([[1.0], [2.0], [-3.0], [0.5]])
    zc = copies.reshape(1, 4, 4, 4).repeat(2, 1, 1, 1)
    assert pearson_redundancy(zc).item() == pytest.approx(1.0, abs=1e-6)
    half = torch.cat([waves[:2], waves[:2]]).reshape(1, 4, 4, 4)
    # 4 of 12 ordered off-diagonal pairs are copies: 1/3.
    assert pearson_redundancy(half).item() == pytest.approx(1 / 3, abs=1e-6)


def test_pearson_redundancy_edge_cases_and_gradient() -> None:
    assert pearson_redundancy(torch.rand(3, 1, 4, 4)).item() == 0.0
    z = torch.rand(2, 3, 4, 4)
    z[:, 2] = 1.0  # a constant channel counts as uncorrelated, not NaN
    z.requires_grad_(True)
    value = pearson_redundancy(z)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pearson_redundancy(torch.rand(3, 4))
