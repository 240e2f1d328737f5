"""The batched ensemble of FNOs and its optimiser against K separate runs of the study's recipe.

Tolerances. The ensemble runs the same float32 operations as K separate FNOs, but its
matrix products cover K * B samples instead of B, so BLAS may block and sum them in another
order: each product can differ by a few float32 ulps (2^-23 ~ 1.2e-7 relative) and about ten
layers compound it, hence forward outputs are compared at rtol 1e-5 (relative to each
member's largest output). Adam then divides by sqrt(v): where a gradient entry is near zero,
its few-ulp difference is a large relative one, and Adam's update (at most about lr per step
whatever the gradient) can differ by a visible fraction of lr. Weights after S steps are
therefore compared at an absolute 1e-3 * lr * S; the largest difference measured was
2.5e-4 * lr * S, on one entry in 16K, all others within float32 rounding. Where the ensemble is compared with itself (a
member's presence, a frozen member, a resume) the arithmetic is identical and results must be
bit-identical.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch

from pdetransfer.engine.models.fno import FNO
from pdetransfer.engine.models.fno_ensemble import PACKING_LIMITS, EnsembleFNO, packing_pays
from pdetransfer.engine.models.normalization import CHANNELS, Normalization, NormalizedOperator
from pdetransfer.engine.models.packed import FunctionalEnsemble, PackedNetwork
from pdetransfer.engine.models.registry import parse_model
from pdetransfer.engine.training.ensemble_adam import EnsembleAdam, cosine_lr
from pdetransfer.errors import UserError

SPEC = parse_model("xs", len(CHANNELS))
NORM = Normalization(0.7, (1.0, 1.5, 0.5, 2.0, 0.8, 1.2))
GRID = 16
BATCH = 3


def seeded(seed: int) -> FNO:
    """The network a separate run with this seed starts from (the training command's order)."""
    torch.manual_seed(seed)
    return FNO(SPEC)


def ensemble(seeds: list[int]) -> NormalizedOperator:
    return NormalizedOperator(EnsembleFNO([seeded(s) for s in seeds]), NORM)


def batches(members: int, steps: int, grid: int = GRID) -> list[tuple[torch.Tensor, ...]]:
    """Per step: sources (K, B, n, n), coefficients (K, B, 6), targets; every member its own."""
    gen = torch.Generator().manual_seed(123)
    out = []
    for _ in range(steps):
        f = torch.randn(members, BATCH, grid, grid, generator=gen)
        c = torch.rand(members, BATCH, 6, generator=gen) + 0.1
        u = torch.randn(members, BATCH, grid, grid, generator=gen) * 0.1
        out.append((f, c, u))
    return out


def member_losses(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The study's loss per member: per-sample sum of squared errors, mean over the batch."""
    return (prediction - target).square().sum(dim=(-2, -1)).mean(-1)


def train_ensemble(
    operator: NormalizedOperator, optimizer: EnsembleAdam, data: list[tuple[torch.Tensor, ...]]
) -> list[list[bool]]:
    stepped = []
    for f, c, u in data:
        optimizer.zero_grad()
        member_losses(operator(f, c), u).sum().backward()
        stepped.append(optimizer.step())
    return stepped


def weights(operator: NormalizedOperator, member: int) -> dict[str, torch.Tensor]:
    return operator.network.member_state_dict(member)  # type: ignore[operator]


def test_member_weights_are_the_seeded_fnos() -> None:
    seeds = [3, 7, 11]
    network = EnsembleFNO([seeded(s) for s in seeds])
    assert network.members == 3
    for k, seed in enumerate(seeds):
        reference = seeded(seed).state_dict()
        mine = network.member_state_dict(k)
        assert list(mine) == list(reference)
        assert all(torch.equal(mine[name], reference[name]) for name in reference)
        # It loads into a plain FNO, as model.pt must.
        FNO(SPEC).load_state_dict(mine)


@pytest.mark.parametrize("grid", [GRID, 6])  # 6: coarser than the modes, the truncated path
def test_forward_equals_each_member(grid: int) -> None:
    seeds = [0, 1, 2, 3]
    operator = ensemble(seeds)
    f, c, _ = batches(len(seeds), 1, grid)[0]
    with torch.no_grad():
        packed = operator(f, c)
        assert packed.shape == (len(seeds), BATCH, grid, grid)
        raw = operator.network(torch.randn(len(seeds), BATCH, len(CHANNELS), grid, grid))
        assert raw.shape == (len(seeds), BATCH, 1, grid, grid)
        for k, seed in enumerate(seeds):
            alone = NormalizedOperator(seeded(seed), NORM)(f[k], c[k])
            scale = float(alone.abs().max())
            torch.testing.assert_close(packed[k], alone, rtol=1e-5, atol=1e-5 * scale)


def test_steps_match_separate_adam_and_cosine_runs() -> None:
    seeds, lrs, horizons, steps = [5, 6, 7], [1e-3, 3e-3, 1e-2], [8, 5, 3], 5
    data = batches(len(seeds), steps)
    operator = ensemble(seeds)
    optimizer = EnsembleAdam(operator.parameters(), lrs, horizons)
    train_ensemble(operator, optimizer, data)
    assert optimizer.steps == [steps] * len(seeds)

    for k, (seed, lr, total) in enumerate(zip(seeds, lrs, horizons, strict=True)):
        # The training recipe for one run.
        alone = NormalizedOperator(seeded(seed), NORM)
        adam = torch.optim.Adam(alone.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            adam, lambda s, t=total: 0.5 * (1.0 + math.cos(math.pi * min(s, t) / t))
        )
        for f, c, u in data:
            adam.zero_grad(set_to_none=True)
            member_losses(alone(f[k], c[k]), u[k]).backward()
            adam.step()
            schedule.step()
        reference = alone.network.state_dict()
        mine = weights(operator, k)
        for name in reference:
            torch.testing.assert_close(mine[name], reference[name], rtol=0, atol=1e-3 * lr * steps)
        assert optimizer.current_lr()[k] == pytest.approx(adam.param_groups[0]["lr"], rel=1e-15)

        opt_state, sched_state = optimizer.member_state(k)
        expected = adam.state_dict()
        assert opt_state["param_groups"] == expected["param_groups"]
        for i, state in expected["state"].items():
            assert float(opt_state["state"][i]["step"]) == float(state["step"])
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    opt_state["state"][i][key], state[key], rtol=1e-3, atol=1e-9
                )
        real = schedule.state_dict()
        for key in ("base_lrs", "last_epoch", "_last_lr", "lr_lambdas"):
            assert sched_state[key] == real[key]
        # The separate run's objects accept the member's state.
        adam.load_state_dict(opt_state)
        schedule.load_state_dict(sched_state)


def test_optimiser_alone_is_bit_identical_to_adam_and_lambdalr() -> None:
    # Given the same gradients, the update is torch's arithmetic exactly: no tolerance.
    lrs, horizons, steps = [1e-3, 1e-2], [4, 2], 4
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(2, 5, 3, generator=gen), torch.randn(2, 7, generator=gen)]
    grads = [[torch.randn(t.shape, generator=gen) for t in start] for _ in range(steps)]
    stacked = [t.clone().requires_grad_() for t in start]
    optimizer = EnsembleAdam(stacked, lrs, horizons)
    for step_grads in grads:
        for p, g in zip(stacked, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    for k, (lr, total) in enumerate(zip(lrs, horizons, strict=True)):
        alone = [t[k].clone().requires_grad_() for t in start]
        adam = torch.optim.Adam(alone, lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            adam, lambda s, t=total: 0.5 * (1.0 + math.cos(math.pi * min(s, t) / t))
        )
        for step_grads in grads:
            for p, g in zip(alone, step_grads, strict=True):
                p.grad = g[k].clone()
            adam.step()
            schedule.step()
        assert all(
            torch.equal(a.detach(), s[k].detach()) for a, s in zip(alone, stacked, strict=True)
        )


def test_diverging_member_leaves_the_others_bit_identical() -> None:
    seeds, steps = [1, 2, 3], 4
    data = batches(3, steps)
    healthy = ensemble(seeds)
    train_ensemble(healthy, EnsembleAdam(healthy.parameters(), [1e-3] * 3, [steps] * 3), data)

    wild = ensemble(seeds)
    optimizer = EnsembleAdam(wild.parameters(), [1e-3, 1e30, 1e-3], [steps] * 3)
    stepped = train_ensemble(wild, optimizer, data)
    # The first step throws member 1's weights to ~1e30; its next losses overflow, its
    # gradients are not finite and it is no longer updated.
    assert [s[1] for s in stepped] == [True, False, False, False]
    assert optimizer.steps == [steps, 1, steps]
    for k in (0, 2):
        mine, reference = weights(wild, k), weights(healthy, k)
        assert all(torch.equal(mine[name], reference[name]) for name in reference)

    # An ensemble without member 1 at all: the same numbers up to BLAS blocking of K = 2.
    pair = ensemble([1, 3])
    keep = [0, 2]
    pair_data = [tuple(t[keep] for t in batch) for batch in data]
    train_ensemble(pair, EnsembleAdam(pair.parameters(), [1e-3] * 2, [steps] * 2), pair_data)
    for j, k in enumerate(keep):
        mine, reference = weights(wild, k), weights(pair, j)
        for name in reference:
            torch.testing.assert_close(
                mine[name], reference[name], rtol=0, atol=1e-3 * 1e-3 * steps
            )


def test_nan_weights_in_one_member_do_not_reach_the_others() -> None:
    seeds, steps = [1, 2, 3], 3
    data = batches(3, steps)
    healthy = ensemble(seeds)
    train_ensemble(healthy, EnsembleAdam(healthy.parameters(), [1e-3] * 3, [steps] * 3), data)

    poisoned = ensemble(seeds)
    with torch.no_grad():
        poisoned.network.lift.weight[1].fill_(math.nan)  # type: ignore[union-attr,index]
    optimizer = EnsembleAdam(poisoned.parameters(), [1e-3] * 3, [steps] * 3)
    stepped = train_ensemble(poisoned, optimizer, data)
    assert all(s == [True, False, True] for s in stepped)
    for k in (0, 2):
        mine, reference = weights(poisoned, k), weights(healthy, k)
        assert all(torch.equal(mine[name], reference[name]) for name in reference)
    assert all(float(t[1].abs().sum()) == 0.0 for t in optimizer.exp_avg)


def test_inactive_member_is_frozen() -> None:
    seeds = [4, 5, 6]
    data = batches(3, 5)
    operator = ensemble(seeds)
    optimizer = EnsembleAdam(operator.parameters(), [1e-2] * 3, [5] * 3)
    train_ensemble(operator, optimizer, data[:2])
    optimizer.deactivate(0)
    before = optimizer.state_dict()
    frozen = weights(operator, 0)
    moving = weights(operator, 1)
    stepped = train_ensemble(operator, optimizer, data[2:])
    assert all(s == [False, True, True] for s in stepped)
    assert optimizer.steps == [2, 5, 5]
    after = optimizer.state_dict()
    for old, new in zip(
        before["exp_avg"] + before["exp_avg_sq"],
        after["exp_avg"] + after["exp_avg_sq"],
        strict=True,
    ):
        assert torch.equal(old[0], new[0])
        assert not torch.equal(old[1], new[1])
    now = weights(operator, 0)
    assert all(torch.equal(now[name], frozen[name]) for name in frozen)
    assert not torch.equal(weights(operator, 1)["lift.weight"], moving["lift.weight"])


@pytest.mark.parametrize("packed", [EnsembleFNO, FunctionalEnsemble])
def test_kept_members_step_as_in_the_whole_pack(packed: type[PackedNetwork]) -> None:
    """Dropping stopped members (as a pack does) leaves the others' numbers exactly as they
    are in a pack that keeps computing them: the kept rows are the same numbers."""
    seeds, lrs, horizons, steps = [4, 5, 6, 7], [1e-2, 3e-3, 1e-3, 3e-2], [6, 5, 6, 4], 5
    data = batches(4, steps)

    def pack() -> tuple[NormalizedOperator, EnsembleAdam]:
        operator = NormalizedOperator(packed([seeded(s) for s in seeds]), NORM)
        return operator, EnsembleAdam(operator.parameters(), lrs, horizons)

    (whole, whole_opt), (shrunk, shrunk_opt) = pack(), pack()
    train_ensemble(whole, whole_opt, data[:2])
    train_ensemble(shrunk, shrunk_opt, data[:2])
    whole_opt.deactivate(0)  # members 0 and 2 stop: frozen but still computed ...
    whole_opt.deactivate(2)
    keep = [3, 1]  # ... or dropped (and the rest reordered, which must not matter either)
    shrunk.network.keep_members(keep)  # type: ignore[operator]
    shrunk_opt.keep_members(keep, shrunk.parameters())
    assert shrunk.network.members == shrunk_opt.members == 2  # type: ignore[union-attr]
    assert all(p.shape[0] == 2 for p in shrunk.parameters())
    assert (shrunk_opt.lr, shrunk_opt.horizon) == ([lrs[3], lrs[1]], [horizons[3], horizons[1]])
    stepped = train_ensemble(shrunk, shrunk_opt, [tuple(t[keep] for t in b) for b in data[2:]])
    train_ensemble(whole, whole_opt, data[2:])
    assert all(s == [True, True] for s in stepped) and shrunk_opt.steps == [steps, steps]
    for row, k in enumerate(keep):
        mine, reference = weights(shrunk, row), weights(whole, k)
        assert all(torch.equal(mine[name], reference[name]) for name in reference)
        for a, b in zip(
            shrunk_opt.exp_avg + shrunk_opt.exp_avg_sq,
            whole_opt.exp_avg + whole_opt.exp_avg_sq,
            strict=True,
        ):
            assert torch.equal(a[row], b[k])
    FNO(SPEC).load_state_dict(weights(shrunk, 1))  # still a plain FNO's state_dict

    with pytest.raises(IndexError):
        shrunk.network.keep_members([0, 2])  # type: ignore[operator]
    with pytest.raises(RuntimeError, match="rows of the model"):
        whole_opt.keep_members([0], whole.parameters())  # the model was not shrunk


def test_state_round_trip_resumes_bit_identically() -> None:
    seeds, lrs, horizons = [8, 9], [3e-3, 1e-2], [6, 4]
    data = batches(2, 5)
    operator = ensemble(seeds)
    optimizer = EnsembleAdam(operator.parameters(), lrs, horizons)
    train_ensemble(operator, optimizer, data[:2])
    optimizer.deactivate(1)
    buffer = io.BytesIO()
    torch.save({"weights": operator.network.state_dict(), "opt": optimizer.state_dict()}, buffer)
    train_ensemble(operator, optimizer, data[2:])

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = ensemble([0, 0])  # other initial weights: all must come from the state
    resumed.network.load_state_dict(saved["weights"])
    again = EnsembleAdam(resumed.parameters(), [1.0, 1.0], [1, 1])
    again.load_state_dict(saved["opt"])
    assert again.active == [True, False] and again.steps == [2, 2]
    train_ensemble(resumed, again, data[2:])
    for k in range(2):
        mine, reference = weights(resumed, k), weights(operator, k)
        assert all(torch.equal(mine[name], reference[name]) for name in reference)
    assert again.state_dict()["steps"] == optimizer.state_dict()["steps"]

    with pytest.raises(UserError, match="another ensemble"):
        three = ensemble([0, 1, 2])
        EnsembleAdam(three.parameters(), [1.0] * 3, [1] * 3).load_state_dict(saved["opt"])


def test_load_member_and_mismatched_members() -> None:
    network = EnsembleFNO([seeded(0), seeded(1)])
    network.load_member(1, seeded(42).state_dict())
    reference = seeded(42).state_dict()
    assert all(torch.equal(network.member_state_dict(1)[n], reference[n]) for n in reference)
    with pytest.raises(IndexError):
        network.member_state_dict(2)
    with pytest.raises(UserError, match="share one model"):
        EnsembleFNO([seeded(0), FNO(parse_model("2,8", len(CHANNELS)))])
    with pytest.raises(UserError, match="member axis"):
        EnsembleAdam(network.parameters(), [1e-3] * 3, [1] * 3)


def test_cosine_lr_ends_at_zero_and_stays() -> None:
    assert cosine_lr(0.1, 0, 10) == 0.1
    assert cosine_lr(0.1, 5, 10) == pytest.approx(0.05)
    assert cosine_lr(0.1, 10, 10) == cosine_lr(0.1, 12, 10) == pytest.approx(0.0, abs=1e-17)


def test_packing_limits_are_the_benchmark_results() -> None:
    results = Path(__file__).resolve().parents[1] / "benchmarks/results/packing_model.json"
    report = json.loads(results.read_text())
    for mode, limits in PACKING_LIMITS.items():
        derived = report[mode]["derived_limits_by_width"]
        assert {int(w): v for w, v in derived.items()} == limits


def test_packing_rule() -> None:
    assert packing_pays(4, 8, 32, 16)  # xs, N = 8: measured faster packed
    assert packing_pays(10, 32, 64, 16)  # the largest xs point measured
    assert not packing_pays(11, 32, 64, 16)  # beyond what was measured
    assert not packing_pays(4, 32, 32, 16, retained=False)  # page faults without retention
    assert not packing_pays(4, 8, 32, 32)  # s: measured slower packed
    assert not packing_pays(2, 1, 16, 64)  # m: wider than measured, treated like s
    assert packing_pays(4, 8, 32, 8)  # narrower than xs: xs's limit
