"""How many trials one fused task trains (recipe.fuse), per trial."""

from __future__ import annotations

from sweeper.plan import CPU_AUTO_FUSE_MAX_BATCH_TOKENS, MAX_AUTO_MEMBERS, fused_group_size, plan_trials
from sweeper.recipe import parse_recipe
from tests.conftest import MINIMAL_RECIPE

LRS = {"values": [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 0.128, 0.256, 0.512]}
FAMILY = min(MAX_AUTO_MEMBERS, len(LRS["values"]))  # one shape, batch and seed: the lrs


def _sizes(**changes) -> dict[int, int]:
    recipe = parse_recipe({**MINIMAL_RECIPE, "learning_rates": LRS, "batch_sizes": [4, 64], **changes})
    members = fused_group_size(recipe, plan_trials(recipe, "d"))
    return {spec.batch_size_tokens: members(spec) for spec in plan_trials(recipe, "d")}


def test_auto_on_cpu_fuses_small_batches_only() -> None:
    sizes = _sizes()
    small, large = sorted(sizes)
    assert small <= CPU_AUTO_FUSE_MAX_BATCH_TOKENS < large
    assert sizes[small] == FAMILY and sizes[large] == 1


def test_auto_on_gpu_fuses_every_batch() -> None:
    assert set(_sizes(resources={"cpus": 1, "gpus": 0.5}).values()) == {FAMILY}


def test_auto_respects_the_memory_budget() -> None:
    # 0.4 GiB leaves ~10 MiB beyond the process: room for many small-batch members (~0.6 MiB
    # each, estimated) but for one large-batch member (~6.7 MiB) only.
    sizes = _sizes(resources={"cpus": 1, "gpus": 1, "memory_gb": 0.4})
    small, large = sorted(sizes)
    assert sizes[small] == FAMILY and sizes[large] == 1


def test_auto_counts_the_token_budgets_of_a_model_size_as_siblings() -> None:
    # 3 learning rates x 2 budgets of one shape and batch: one fusable family of 6.
    recipe = parse_recipe(
        {
            **MINIMAL_RECIPE,
            "learning_rates": {"values": [1e-3, 2e-3, 4e-3]},
            "tokens": {"absolute": [4096, 8192]},
        }
    )
    specs = plan_trials(recipe, "d")
    assert len({spec.cell_id for spec in specs}) == 2
    members = fused_group_size(recipe, specs)
    assert {members(spec) for spec in specs} == {6}


def test_off_and_explicit_k() -> None:
    assert set(_sizes(fuse="off").values()) == {1}
    assert set(_sizes(fuse=3).values()) == {3}


def test_yaml_off_is_read_as_off(tmp_path) -> None:
    import yaml

    from sweeper.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL_RECIPE) + "fuse: off\n")  # YAML 1.1: a bare off is False
    assert load_recipe(path).fuse == "off"
