"""Malformed recipes: each one exits with code 2, names the key at fault, shows no traceback, writes nothing.

Every case runs through the CLI's own code path in-process (``compress --dry-run``, which validates,
then builds the tiny components and checks the plan against them); a handful also run as real
subprocesses. A case is the shipped tiny recipe with one thing broken.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vipkit.cli import app

ROOT = Path(__file__).parents[1]
TINY = (ROOT / "recipes" / "tiny_vip.toml").read_text(encoding="utf-8")
EVAL_LINE = 'eval = ["a red ball rolling left", "a white star spinning"]'


@dataclass
class Case:
    id: str
    make: Callable[[Path], Path]  # writes the recipe (and any files it names) into a folder, returns its path
    expected: tuple[str, ...]  # every one must appear in the message


def edited(*replacements: tuple[str, str], extra: str = "") -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        text = TINY
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new, 1)
        path = folder / "recipe.toml"
        path.write_text(text + extra, encoding="utf-8")
        return path

    return make


def put(path: Path, content: bytes | None) -> Path:
    """Write ``content`` at ``path``; ``None`` makes a folder there instead."""
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


def with_file(name: str, content: bytes | None, *replacements: tuple[str, str]) -> Callable[[Path], Path]:
    """The recipe plus a file (``None``: a folder) it refers to."""
    return lambda folder: put(folder / name, content) and edited(*replacements)(folder)


def raw(content: bytes | None, name: str = "recipe.toml") -> Callable[[Path], Path]:
    """A recipe file with exactly these bytes (``None``: a folder named like a recipe)."""
    return lambda folder: put(folder / name, content)


def eval_file(name: str) -> tuple[str, str]:
    return (EVAL_LINE, f'eval_file = "{name}"')


CASES = [
    # TOML syntax
    Case(
        "syntax-unclosed-string",
        edited(('preset = "tiny"', 'preset = "tiny')),
        ("TOML syntax error", "line 9", "column"),
    ),
    Case("syntax-duplicate-key", edited(("seed = 0", "seed = 0\nseed = 1")), ("TOML syntax error", "line 6")),
    Case("syntax-unclosed-table", edited(("[reward]", "[reward")), ("TOML syntax error", "line 12")),
    # unknown keys and names
    Case("unknown-top-level-key", edited(("seed = 0", "seeds = 0")), ("seeds: unknown key",)),
    Case(
        "unknown-section-key",
        edited(("learning_rate = 1e-4", "learnig_rate = 1e-4")),
        ("train.learnig_rate: unknown option", "did you mean 'learning_rate'"),
    ),
    Case(
        "unknown-component-name",
        edited(('name = "block"', 'name = "blocks"')),
        ("pruner.name", "Did you mean 'block'?"),
    ),
    Case("unknown-loss-name", edited(('name = "redpo"', 'name = "dpo"')), ("losses[0].name", "redpo")),
    Case(
        "unknown-component-option",
        edited(('preset = "tiny"', 'preset = "tiny"\nfoo = 1')),
        ("model.foo: unknown option",),
    ),
    Case(
        "missing-component-table",
        edited(('[scorer]\nname = "reward-drop"', "")),
        ("scorer: missing table", "reward-drop"),
    ),
    Case(
        "component-not-a-table",
        edited(('[reward]\nname = "clip"\npreset = "tiny"', ""), ("seed = 0", 'seed = 0\nreward = "clip"')),
        ("reward: must be a table",),
    ),
    Case(
        "losses-single-brackets",
        edited(("[[losses]]", "[losses]")),
        ("losses: must be an array of tables", "[[losses]]"),
    ),
    # wrong types
    Case(
        "string-for-number",
        edited(("learning_rate = 1e-4", 'learning_rate = "1e-4"')),
        ("train.learning_rate", "valid number"),
    ),
    Case("bool-for-integer", edited(("epochs = 2", "epochs = true")), ("train.epochs", "valid integer")),
    Case("float-for-integer", edited(("batch_size = 2", "batch_size = 2.0")), ("train.batch_size", "valid integer")),
    Case(
        "string-for-list",
        edited(('block_kinds = ["motion_module"]', 'block_kinds = "motion_module"')),
        ("schedule.block_kinds", "valid array"),
    ),
    Case(
        "description-not-string",
        edited(('description = "tiny random', 'description = 5\nx = "')),
        ("description: must be a string",),
    ),
    Case("bad-literal", edited(('preset = "tiny"', 'preset = "tiny"\ndtype = "float64"')), ("model.dtype",)),
    Case("bad-device", edited(('preset = "tiny"', 'preset = "tiny"\ndevice = "gpu"')), ("model.device",)),
    # out-of-range values
    Case(
        "negative-learning-rate",
        edited(("learning_rate = 1e-4", "learning_rate = -1e-4")),
        ("train.learning_rate", "greater than 0"),
    ),
    Case(
        "zero-batch-size",
        edited(("batch_size = 2", "batch_size = 0")),
        ("train.batch_size", "greater than or equal to 1"),
    ),
    Case("zero-stages", edited(("stages = 2", "stages = 0")), ("schedule.stages",)),
    Case(
        "zero-loss-weight",
        edited(('name = "redpo"', 'name = "redpo"\nweight = 0')),
        ("losses[0].weight: must be a number > 0",),
    ),
    Case(
        "nan-learning-rate",
        edited(("learning_rate = 1e-4", "learning_rate = nan")),
        ("train.learning_rate: must be a finite number",),
    ),
    Case("inf-component-option", edited(("tau = -1.0", "tau = inf")), ("curator.tau: must be a finite number",)),
    Case("negative-seed", edited(("seed = 0", "seed = -3")), ("seed: must be an integer from 0",)),
    Case("huge-seed", edited(("seed = 0", "seed = 9223372036854775807")), ("seed: must be an integer from 0",)),
    Case(
        "height-not-multiple-of-8",
        edited(('preset = "tiny"', 'preset = "tiny"\nheight = 30')),
        ("model.height", "multiple of 8"),
    ),
    Case(
        "zero-videos-per-prompt",
        edited(("videos_per_prompt = 2", "videos_per_prompt = 0")),
        ("prompts.videos_per_prompt",),
    ),
    Case(
        "negative-objective-weight",
        edited(extra="\n[objective]\nweights = { clip_score = -1.0 }\n"),
        ("objective.weights.clip_score: must be >= 0",),
    ),
    Case(
        "both-pruner-budgets",
        edited(("blocks_per_stage = 1", "blocks_per_stage = 1\nparam_fraction = 0.1")),
        ("pruner", "exactly one of blocks_per_stage"),
    ),
    # prompts and files
    Case("empty-prompt-list", edited((EVAL_LINE, "eval = []")), ("prompts", "`eval` holds no prompt")),
    Case(
        "both-prompt-sources",
        edited((EVAL_LINE, EVAL_LINE + '\neval_file = "e.txt"')),
        ("prompts", "exactly one of `eval`"),
    ),
    Case("missing-prompt-file", edited(eval_file("nope.txt")), ("prompts.eval_file", "nope.txt", "No such file")),
    Case(
        "prompt-file-is-directory",
        with_file("prompts", None, eval_file("prompts")),
        ("prompts.eval_file", "is a directory"),
    ),
    Case(
        "prompt-file-not-utf8",
        with_file("p.txt", b"a red ball\n\xff\xfe\n", eval_file("p.txt")),
        ("prompts.eval_file", "not UTF-8"),
    ),
    Case(
        "prompt-file-only-comments",
        with_file("p.txt", b"# nothing here\n\n", eval_file("p.txt")),
        ("prompts.eval_file", "holds no prompt"),
    ),
    Case(
        "both-probe-sources",
        edited((EVAL_LINE, EVAL_LINE + '\nprobe = ["a cat"]\nprobe_file = "p.txt"')),
        ("prompts", "at most one of `probe`"),
    ),
    Case(
        "empty-probe-list", edited((EVAL_LINE, EVAL_LINE + "\nprobe = [' ']")), ("prompts", "`probe` holds no prompt")
    ),
    Case(
        "missing-probe-file",
        edited((EVAL_LINE, EVAL_LINE + '\nprobe_file = "gone.txt"')),
        ("prompts.probe_file", "gone.txt", "No such file"),
    ),
    Case(
        "missing-model-path",
        edited(('preset = "tiny"', 'base = "./no/such/model"')),
        ("model.base", "no such local directory"),
    ),
    Case("recipe-missing", lambda folder: folder / "absent.toml", ("absent.toml", "No such file")),
    Case("recipe-is-directory", raw(None, "dir.toml"), ("dir.toml", "is a directory")),
    Case("recipe-not-utf8", raw(b'seed = 0\ndescription = "\xe9t\xe9"\n'), ("recipe.toml", "not UTF-8", "offset 24")),
    Case("recipe-empty", raw(b"\n  \n"), ("recipe.toml", "empty", "[model]")),
    # contradictions
    Case(
        "objective-unknown-dimension",
        edited(extra="\n[objective]\nweights = { sharpness = 1.0 }\n"),
        ("objective.weights.sharpness", "clip_score"),
    ),
    Case(
        "batch-larger-than-pairs", edited(("batch_size = 2", "batch_size = 9")), ("train.batch_size", "at most 8 pairs")
    ),
    Case(
        "duplicate-loss",
        edited(extra='\n[[losses]]\nname = "redpo"\nbeta = 5000\nbeta_convention = "salesforce"\nsft_weight = 1.0\n'),
        ("losses[1]: repeats losses[0]",),
    ),
    Case(
        "empty-block-kinds", edited(('block_kinds = ["motion_module"]', "block_kinds = []")), ("schedule.block_kinds",)
    ),
    # found only once the parts are built (compress --dry-run and compress)
    Case(
        "more-blocks-than-the-model-has",
        edited(("blocks_per_stage = 1", "blocks_per_stage = 4")),
        ("pruner.blocks_per_stage", "= 8 blocks", "7 prunable blocks"),
    ),
    Case(
        "unreachable-param-fraction",
        edited(("blocks_per_stage = 1", "param_fraction = 0.5")),
        ("pruner.param_fraction", "75.0%"),
    ),
    Case(
        "block-kind-the-model-lacks",
        edited(('block_kinds = ["motion_module"]', 'block_kinds = ["attention"]')),
        ("schedule.block_kinds", "'attention'", "motion_module"),
    ),
    Case(
        "unknown-trainable-scope",
        edited(('trainable = "motion"', 'trainable = "motoin"')),
        ("train.trainable", "motoin"),
    ),
    Case(
        "every-missing-model-at-once",  # HF_HUB_OFFLINE=1 (conftest): no hub is tried, each says how to download
        edited(
            ('preset = "tiny"', 'base = "nobody/no-sd"\nmotion_adapter = "nobody/no-adapter"'),
            ('name = "clip"\npreset = "tiny"', 'name = "clip"\nmodel = "nobody/no-clip"'),
        ),
        (
            "2 components could not be built",
            "model ('animatediff'): motion_adapter = 'nobody/no-adapter'",
            "base = 'nobody/no-sd'",
            "reward ('clip'): reward option `model` = 'nobody/no-clip'",
            "HF_HUB_OFFLINE is set",
            "`hf download nobody/no-clip --local-dir models/no-clip` and set reward option `model` to 'models/no-clip'",
        ),
    ),
    Case(
        "every-missing-reward-model-at-once",
        edited(
            (
                '[reward]\nname = "clip"\npreset = "tiny"',
                '[[rewards]]\nname = "clip"\nmodel = "nobody/a"\n[[rewards]]\nname = "clip"\nas = "b"\nmodel = "nobody/b"',
            )
        ),
        (
            "2 components could not be built",
            "rewards[0] ('clip'): reward option `model` = 'nobody/a'",
            "rewards[1] ('clip'): reward option `model` = 'nobody/b'",
        ),
    ),
    Case(
        "curator-dimension-the-reward-lacks",
        edited(("tau = -1.0", 'tau = -1.0\ndimensions = ["sharpness"]')),
        ("curator.dimensions", "'sharpness'", "clip_score"),
    ),
]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    """In-process CLI; library loggers are kept quiet: their handlers would outlive each run's captured stderr."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    return CliRunner()


def test_there_are_enough_cases():
    assert len(CASES) >= 30 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_recipe_is_refused_with_its_key(case, runner, tmp_path):
    recipe = case.make(tmp_path)
    out = tmp_path / "run"
    result = runner.invoke(app, ["compress", "--recipe", str(recipe), "--out", str(out), "--dry-run"])
    message = " ".join(result.output.split())  # one paragraph, whatever the wrapping
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "error:" in message
    for expected in case.expected:
        assert expected in message, (expected, result.output)
    assert "Traceback" not in result.output
    assert not out.exists()


def vipkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vipkit", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


SUBPROCESS_CASES = ["syntax-unclosed-string", "recipe-not-utf8"]  # fail before any plugin loads: fast


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_real_cli_validate_exits_2(case_id, tmp_path):
    case = next(case for case in CASES if case.id == case_id)
    result = vipkit("validate", str(case.make(tmp_path)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert all(expected in " ".join(result.stderr.split()) for expected in case.expected), result.stderr
    assert "Traceback" not in result.stderr


def test_real_cli_compress_refuses_a_built_contradiction_before_writing(tmp_path):
    case = next(case for case in CASES if case.id == "more-blocks-than-the-model-has")
    out = tmp_path / "run"
    result = vipkit("compress", "--recipe", str(case.make(tmp_path)), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "pruner.blocks_per_stage" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_out_that_is_a_file_is_refused(runner, tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a run")
    result = runner.invoke(app, ["compress", "--recipe", str(ROOT / "recipes" / "tiny_vip.toml"), "--out", str(out)])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    assert out.read_text() == "not a run"
