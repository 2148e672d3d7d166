"""The bare FastAPI app the gateway benchmark compares against.

`/hello` is the benchmark's yardstick. `/sessions` has the candidate login's shape
(the same body and answer models, the same cookie) and does nothing else: no Redis,
no middleware, no token. What it serves next to `/hello` is the best `ratio` a
FastAPI login could reach on the machine, before any of the login's own work.
`/sessions-redis` adds the one thing no login with revocable sessions and attempt
budgets in Redis can skip: one Redis script call (through redis-py, as the gateway
makes it), to the Redis named by `EXAMDAY_REDIS_URL`.
"""

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from api.models import Login, SessionOut
from infra import redis as redis_conn
from infra.settings import Settings

# Budget and session in one round trip, as the login script does (far less work in it).
_LOGIN_SHAPED_SCRIPT = """
local attempts = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 60)
redis.call('SET', KEYS[2], ARGV[1], 'EX', 3600)
return attempts
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    redis = redis_conn.connect(Settings())
    app.state.login_script = redis.register_script(_LOGIN_SHAPED_SCRIPT)
    try:
        yield
    finally:
        await redis.aclose()


app = FastAPI(lifespan=_lifespan)


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.post("/sessions", status_code=201)
async def login_shaped(body: Login, response: Response) -> SessionOut:
    return _session(body, response, secrets.token_urlsafe(96))


@app.post("/sessions-redis", status_code=201)
async def login_shaped_redis(body: Login, request: Request, response: Response) -> SessionOut:
    token = secrets.token_urlsafe(96)
    await request.app.state.login_script(
        keys=[f"bench:attempts:{body.exam_no}", f"bench:session:{body.candidate_no}"],
        args=[token[:16]],
    )
    return _session(body, response, token)


def _session(body: Login, response: Response, token: str) -> SessionOut:
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
