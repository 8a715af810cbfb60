"""The teacher architectures ``train_teacher`` can train, by the name checkpoints store."""

from __future__ import annotations

from vipkit_shapes.teacher_animatediff import AnimateDiffTeacher
from vipkit_shapes.teacher_kind import TeacherKind
from vipkit_shapes.teacher_wan import WanTeacher

TEACHERS: dict[str, TeacherKind] = {
    "shipped": AnimateDiffTeacher("shipped"),  # models/shapes-teacher
    "fast": AnimateDiffTeacher("fast"),  # models/shapes-teacher-fast
    "wan": WanTeacher(),  # not trained yet (benchmarks/RESULTS.md §14)
}
