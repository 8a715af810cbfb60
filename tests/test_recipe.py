from pathlib import Path

import pytest

from vipkit.recipe import RecipeError, load_recipe, parse_recipe

RECIPES = sorted(Path(__file__).parents[1].joinpath("recipes").glob("*.toml"))

GOOD = """
seed = 3
[model]
name = "animatediff"
preset = "tiny"
[reward]
name = "clip"
preset = "tiny"
[prompts]
train = ["a", "b"]
eval = ["c"]
[scorer]
name = "reward-drop"
[pruner]
name = "block"
blocks_per_stage = 2
[curator]
name = "degraded-dimensions"
[[losses]]
name = "redpo"
beta = 100
[[losses]]
name = "kd"
weight = 0.5
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    return info.value.errors


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.prompts_train and recipe.prompts_eval
    assert recipe.schedule.stages >= 1


def test_good_recipe_resolves_defaults_and_weights():
    recipe = parse_recipe(GOOD)
    assert recipe.seed == 3
    assert [(loss.name, loss.weight) for loss in recipe.losses] == [("redpo", 1.0), ("kd", 0.5)]
    assert recipe.losses[0].config.beta == 100
    assert recipe.losses[0].config.beta_convention == "salesforce"  # default filled in
    assert recipe.train.epochs == 2 and recipe.schedule.block_kinds == ["motion_module"]
    assert recipe.dump()["pruner"] == {
        "name": "block",
        "blocks_per_stage": 2,
        "param_fraction": None,
        "target_fraction": None,
        "target_kind": None,
    }
    assert parse_recipe(GOOD).fingerprint() == recipe.fingerprint()
    assert parse_recipe(GOOD.replace("beta = 100", "beta = 101")).fingerprint() != recipe.fingerprint()


def test_all_errors_reported_at_once_with_key_paths():
    text = (
        GOOD.replace("beta = 100", "beta = -1")
        .replace('name = "block"', 'name = "blok"')
        .replace("seed = 3", "seed = 3\nfoo = 1")
    )
    text += '\n[train]\nepochs = -2\nlearning_rate = "fast"\n'
    errors = errors_of(text)
    joined = "\n".join(errors)
    assert any(e.startswith("losses[0].beta:") and "greater than 0" in e for e in errors), joined
    assert any(e.startswith("pruner.name:") and "Did you mean 'block'?" in e for e in errors), joined
    assert any(e.startswith("foo: unknown key") for e in errors), joined
    assert any(e.startswith("train.epochs:") for e in errors), joined
    assert any(e.startswith("train.learning_rate:") for e in errors), joined
    assert len(errors) == 5, joined


def test_unknown_component_option_is_named():
    errors = errors_of(GOOD.replace("beta = 100", "betta = 100"))
    assert len(errors) == 1 and errors[0].startswith("losses[0].betta: unknown option; did you mean 'beta'?"), errors
    assert "(known: beta, beta_convention, dpo_weight, reference, sft_target, sft_weight, uncond_weight)" in errors[0]


def test_syntax_error_has_line_and_column():
    errors = errors_of(GOOD.replace('preset = "tiny"\n[reward]', 'preset = "tiny\n[reward]'))
    assert len(errors) == 1 and "TOML syntax error" in errors[0] and "line 5" in errors[0] and "column" in errors[0]


def test_missing_tables_and_prompt_file(tmp_path):
    (tmp_path / "r.toml").write_text('[prompts]\ntrain_file = "nope.txt"\neval = ["x"]\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "r.toml")
    errors = info.value.errors
    for key in ("model", "reward", "scorer", "pruner", "curator", "losses"):
        assert any(e.startswith(f"{key}: missing") for e in errors), errors
    assert any(e.startswith("prompts.train_file: cannot read") and "nope.txt" in e for e in errors), errors


def test_prompt_file_is_relative_to_recipe(tmp_path):
    (tmp_path / "p.txt").write_text("# comment\nfirst prompt\n\nsecond prompt\n")
    text = GOOD.replace('train = ["a", "b"]', 'train_file = "p.txt"')
    (tmp_path / "r.toml").write_text(text)
    assert load_recipe(tmp_path / "r.toml").prompts_train == ["first prompt", "second prompt"]


def test_prompt_files_are_bounded_regular_files(tmp_path):
    """/dev/zero once ran `validate` for minutes into 9 GB; a pipe would block for ever; a huge file is refused."""
    import os
    import time

    from vipkit.validation import MAX_TEXT_BYTES

    os.mkfifo(tmp_path / "pipe")
    with open(tmp_path / "huge.txt", "wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)  # sparse: no disk used
    cases = {
        "/dev/zero": "is not a regular file (a device, pipe or socket)",
        str(tmp_path / "pipe"): "is not a regular file (a device, pipe or socket)",
        str(tmp_path / "huge.txt"): "is larger than 16 MiB",
    }
    for path, message in cases.items():
        started = time.perf_counter()
        errors = errors_of(GOOD.replace('train = ["a", "b"]', f"train_file = {path!r}"))
        assert time.perf_counter() - started < 5
        assert len(errors) == 1 and errors[0].startswith("prompts.train_file:") and message in errors[0], errors


def test_prompts_need_exactly_one_source():
    errors = errors_of(GOOD.replace('train = ["a", "b"]', 'train = ["a"]\ntrain_file = "x.txt"'))
    assert errors == ["prompts: set exactly one of `train` (a list) and `train_file` (a path)"]


def test_objective_weights_must_name_reward_dimensions():
    errors = errors_of(GOOD + "\n[objective]\nweights = { clip_score = 1.0, sharpness = 2.0 }\n")
    assert len(errors) == 1 and errors[0].startswith("objective.weights.sharpness:") and "clip_score" in errors[0]


def test_loss_weight_must_be_positive():
    errors = errors_of(GOOD.replace("weight = 0.5", "weight = 0"))
    assert errors == ["losses[1].weight: must be a number > 0"]


def test_set_overrides_change_values_create_tables_and_index_losses():
    recipe = parse_recipe(
        GOOD,
        overrides=[
            "model.dtype=bfloat16",
            "train.learning_rate=3e-4",
            "losses[1].weight=2",
            "losses.0.beta=7",
            'prompts.eval=["x", "y"]',
            "model.preset_seed = 4",
        ],
    )
    assert recipe.model.config.dtype == "bfloat16" and recipe.model.config.preset_seed == 4  # text and TOML values
    assert recipe.train.learning_rate == 3e-4 and recipe.prompts_eval == ["x", "y"]  # [train] was absent: created
    assert [(loss.name, loss.weight) for loss in recipe.losses] == [("redpo", 1.0), ("kd", 2.0)] and recipe.losses[
        0
    ].config.beta == 7
    assert recipe.fingerprint() != parse_recipe(GOOD).fingerprint()


def test_bad_set_overrides_are_listed_together():
    with pytest.raises(RecipeError) as info:
        parse_recipe(GOOD, overrides=["train.epochs", "losses[5].beta=1", "seed.x=1"])
    assert info.value.errors == [
        "--set 'train.epochs': write KEY=VALUE, e.g. train.learning_rate=1e-5 or model.preset=random",
        "--set 'losses[5].beta=1': losses.5: the recipe has 2 such tables; name one by its index, 0 to 1",
        "--set 'seed.x=1': seed is a value, not a table",
    ]
    errors = errors_of_overrides(
        ["train.epochs=-1", "model.nosuch=1"]
    )  # the values themselves are validated like the file's
    assert "train.epochs: Input should be greater than or equal to 0, got -1" in errors and any(
        e.startswith("model.nosuch: unknown option") for e in errors
    )


def errors_of_overrides(overrides: list[str]) -> list[str]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(GOOD, overrides=overrides)
    return info.value.errors


def test_reward_timeout_is_validated_and_changes_no_fingerprint():
    assert parse_recipe(GOOD).reward_timeout_s == 1800.0
    longer = parse_recipe("reward_timeout_s = 7200\n" + GOOD)
    assert longer.reward_timeout_s == 7200.0 and longer.fingerprint() == parse_recipe(GOOD).fingerprint()
    assert errors_of("reward_timeout_s = 0\n" + GOOD) == ["reward_timeout_s: must be a number of seconds > 0, got 0"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "prompts.videos_per_prompt=1000000000",
            "prompts.videos_per_prompt: Input should be less than or equal to 1000",
        ),
        (
            "model.num_inference_steps=1000000000",
            "model.num_inference_steps: Input should be less than or equal to 1000",
        ),
        ("model.height=800000", "model.height: Input should be less than or equal to 4096"),
        ("model.num_frames=100000", "model.num_frames: Input should be less than or equal to 1024"),
    ],
)
def test_sizes_that_would_exhaust_memory_or_time_are_refused_at_validation(override, expected):
    """Each once passed `validate` and then crashed with a traceback or ran out of memory in the run."""
    errors = errors_of_overrides([override])
    assert len(errors) == 1 and errors[0].startswith(expected), errors
