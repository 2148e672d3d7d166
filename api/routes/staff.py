"""Staff accounts: admins create every role, organisers the staff of their exams.

An organiser who could create organisers or admins could hand out more power than
they hold themselves (any exam's organiser, the release of any hold); so only an
admin does, and the first admin comes from the operator's `examday staff add`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import RuntimeDep
from api.models import StaffCreate
from api.security import AccountMakerDep, StaffMemberDep, check_may_create

router = APIRouter(prefix="/v1/staff", tags=["staff"])


@router.post("", status_code=201)
async def create_staff(
    body: StaffCreate, maker: AccountMakerDep, runtime: RuntimeDep
) -> dict[str, str]:
    check_may_create(maker, body.role)
    await runtime.staff.create(body.username, body.password, body.role, maker.name)
    return {"username": body.username, "role": body.role}


@router.get("/me")
async def whoami(staff: StaffMemberDep, runtime: RuntimeDep) -> dict[str, Any]:
    exam_wide = ("organiser", "chief-proctor", "examiner")
    exams = await runtime.exams.staff_exams(staff.name) if staff.role in exam_wide else []
    rooms = await runtime.exams.proctor_rooms(staff.name) if staff.role == "proctor" else []
    return {"username": staff.name, "role": staff.role, "exams": exams, "rooms": rooms}
