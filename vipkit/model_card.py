"""A model card (README.md in the model hub's conventions) for a compressed model or an export of one.

YAML front matter (base_model, library_name, pipeline_tag, tags; the license is left to the user, since it
is the base model's), the method in two sentences, how to load it, the run's per-stage table, held-out
bench results when given, a sample, the recipe and the removed blocks. Nothing is uploaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vipkit.report import markdown_table, results_table

METHOD = (
    "It was compressed with vipkit by V.I.P. ([arXiv 2508.03254](https://arxiv.org/abs/2508.03254)): "
    "stage by stage, the denoiser's blocks whose removal cost the reward least were removed, and the pruned model was "
    "then distilled from its teacher with ReDPO (Diffusion-DPO on teacher-wins / student-loses video pairs of the "
    "reward dimensions that degraded, plus a supervised anchor to the teacher's videos)."
)


@dataclass
class CardFacts:
    """What a card says; everything but ``family`` and ``usage`` is optional (a model folder without its run)."""

    family: str
    usage: str  # Markdown: how to load it
    library_name: str
    base_models: Sequence[str] = ()
    parameters: int | None = None
    removed_blocks: Sequence[str] = ()
    results: dict[str, Any] | None = None  # the run's results.json
    recipe_text: str | None = None
    bench: dict[str, Any] | None = None  # a bench.json that scored this model
    samples: Sequence[str] = field(default_factory=list)  # paths relative to the card, GIF first


def model_card(facts: CardFacts) -> str:
    """The README.md text."""
    front = ["---"]
    if facts.base_models:
        front += ["base_model:", *(f"- {model}" for model in facts.base_models)]
    front += [
        f"library_name: {facts.library_name}",
        "pipeline_tag: text-to-video",
        "tags:",
        *(f"- {tag}" for tag in ("vipkit", "video-generation", "pruning", "distillation", facts.family)),
        "# license: set the license of the base model this was compressed from before publishing",
        "---",
    ]
    body = [f"# {facts.family}, compressed with vipkit", "", _summary(facts), "", METHOD, "", "## Use", "", facts.usage]
    if facts.samples:
        gif = next((s for s in facts.samples if s.endswith(".gif")), None)
        body += ["", "## Sample", ""]
        body += [f"![sample videos of the compressed model]({gif})"] if gif else []
        body += [f"[{s}]({s})" for s in facts.samples if s != gif]
    if facts.results is not None:
        body += [
            "",
            "## Stage by stage",
            "",
            "Scores of the run's reward on its evaluation prompts; s/video after a warm-up call on the run's machine.",
            "",
            markdown_table(*results_table(facts.results)),
        ]
    if facts.bench is not None:
        from vipkit.bench import bench_table

        body += [
            "",
            "## Held-out benchmark (`vipkit bench`)",
            "",
            markdown_table(*bench_table(facts.bench)),
        ]
    if facts.recipe_text:
        body += ["", "## Recipe", "", "```toml", facts.recipe_text.rstrip(), "```"]
    if facts.removed_blocks:
        body += ["", "## Removed blocks", "", *(f"- `{name}`" for name in facts.removed_blocks)]
    return "\n".join(front + [""] + body) + "\n"


def _summary(facts: CardFacts) -> str:
    results = facts.results
    if results is None:
        size = f" It has {facts.parameters:,} denoiser parameters" if facts.parameters else ""
        removed = f", {len(facts.removed_blocks)} blocks removed." if facts.removed_blocks else "."
        return f"A text-to-video model of the {facts.family} family, written by vipkit.{size}{removed if size else ''}"
    teacher, final = results["teacher"], results["final"]
    share = 100 * (1 - final["parameter_ratio"])
    return (
        f"A text-to-video model of the {facts.family} family with {final['parameters']:,} of its teacher's {teacher['parameters']:,} "
        f"denoiser parameters (−{share:.1f} %), generating a video {final['speedup']:.2f}× as fast as the teacher on the "
        f"machine that compressed it."
    )
