"""Reviewers of an exam, made and assigned as an organiser does: an examiner and a chief
proctor (shared by the review API tests and the review page's browser test)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from api.runtime import Runtime
from tests.support.factories import ExamWorld, new_staff


@dataclass
class Reviewers:
    examiner_name: str
    examiner: httpx.Headers
    chief_name: str
    chief: httpx.Headers


async def assigned_reviewers(
    client: httpx.AsyncClient, runtime: Runtime, world: ExamWorld
) -> Reviewers:
    examiner_name, examiner = await new_staff(client, runtime, "examiner", "exr")
    chief_name, chief = await new_staff(client, runtime, "chief-proctor", "chf")
    for username in (examiner_name, chief_name):
        url = f"/v1/exams/{world.exam_id}/staff/{username}"
        assigned = await client.put(url, headers=world.organiser)
        assert assigned.status_code == 204, assigned.text
    return Reviewers(examiner_name, examiner, chief_name, chief)
