"""Staff accounts: organisers create proctors (and fellow organisers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import RuntimeDep
from api.models import StaffCreate
from api.security import OrganiserDep, StaffDep

router = APIRouter(prefix="/v1/staff", tags=["staff"])


@router.post("", status_code=201)
async def create_staff(
    body: StaffCreate, organiser: OrganiserDep, runtime: RuntimeDep
) -> dict[str, str]:
    await runtime.staff.create(body.username, body.password, body.role, organiser.name)
    return {"username": body.username, "role": body.role}


@router.get("/me")
async def whoami(staff: StaffDep, runtime: RuntimeDep) -> dict[str, Any]:
    exams = await runtime.exams.organiser_exams(staff.name) if staff.role == "organiser" else []
    rooms = await runtime.exams.proctor_rooms(staff.name) if staff.role == "proctor" else []
    return {"username": staff.name, "role": staff.role, "exams": exams, "rooms": rooms}
