"""The seed scheme: pinned, because every stored run, bench and shapes-world table depends on these numbers."""

from vipkit import seeds, training
from vipkit.seeds import MAX_SEED, stage_seed, video_seeds


def test_video_seeds_are_the_recipe_seed_plus_the_role_offset_plus_the_index():
    assert video_seeds(7, "eval", 3) == [7, 8, 9]
    assert video_seeds(7, "train", 2) == [100_007, 100_008]
    assert video_seeds(7, "probe", 2) == [200_007, 200_008]
    assert video_seeds(7, "probe", 0) == []


def test_roles_stay_disjoint_for_100_000_videos_each_and_far_from_int64():
    roles = [set(video_seeds(MAX_SEED, role, 100_000)) for role in ("eval", "train", "probe")]
    assert sum(map(len, roles)) == len(set.union(*roles))
    assert max(map(max, roles)) < 2**63 and stage_seed(MAX_SEED, 999) < 2**63


def test_stage_seed_and_derive_seed_are_the_ones_runs_used():
    assert stage_seed(7, 2) == 7_002
    assert training.derive_seed is seeds.derive_seed  # still importable from vipkit.training
