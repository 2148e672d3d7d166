"""The bare FastAPI app the gateway benchmark compares against.

`/hello` is the benchmark's yardstick. `/sessions` has the candidate login's shape
(the same body and answer models, the same cookie) and does nothing else: no Redis,
no middleware, no token. What it serves next to `/hello` is the best `ratio` a
FastAPI login could reach on the machine, before any of the login's own work.
"""

import secrets
import time

from fastapi import FastAPI, Response

from api.models import Login, SessionOut

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.post("/sessions", status_code=201)
async def login_shaped(body: Login, response: Response) -> SessionOut:
    token = secrets.token_urlsafe(96)
    response.set_cookie(
        "examday_session", token, max_age=3600, httponly=True, samesite="strict", path="/"
    )
    return SessionOut(
        token=token,
        role="candidate",
        expires_at=time.time() + 3600,
        exam=body.exam_no,
        room="r0",
        candidate=secrets.token_hex(12),
    )
