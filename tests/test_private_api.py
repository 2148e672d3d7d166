"""Private parts of aiortc, aioice and Ray are named in one module each, and nowhere else.

An upgrade of those libraries may rename or drop anything that is not their
public API. examday's uses are listed in a registry (`PRIVATE_API` in
`actors.media.aiortc.private_api` and in `cluster.ray_private`) that is
checked against the installed versions; a use written anywhere else, tests and
load tests included, would escape that check and break only when it runs.

This test reads every Python file of the repository (`ast`, nothing is
imported) and reports, outside `actors/media/aiortc/` and
`cluster/ray_private.py` respectively:

- an attribute, an imported name or a string equal to a name in aiortc's
  registry (an object's own attributes in a class of ours excepted: `_ssrc`
  is also a `PublishedTrack`'s), or one that starts with `_` and is read from
  something imported from aiortc or aioice;
- an import of a module of Ray whose path has a part that starts with `_`
  (`ray._private`, `ray._raylet`, `ray.autoscaler._private.util`), an
  attribute that starts with `_` read from something imported from Ray, a
  string naming such a module, or a name Ray's registry lists
  (`_default_options`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.media.aiortc.private_api import PRIVATE_API as AIORTC_PRIVATE_API
from cluster.ray_private import PRIVATE_API as RAY_PRIVATE_API

ROOT = Path(__file__).resolve().parents[1]
AIORTC_HOME = "actors/media/aiortc/"
RAY_HOME = "cluster/ray_private.py"
AIORTC_PACKAGES = frozenset({"aiortc", "aioice"})
# Registry names that are also everyday Python names: reported only when read
# from something imported from aiortc or aioice.
EVERYDAY_NAMES = frozenset({"random", "data_received"})  # asyncio protocols have one too
AIORTC_NAMES = frozenset(AIORTC_PRIVATE_API.values()) - EVERYDAY_NAMES
RAY_NAMES = frozenset(
    part
    for value in RAY_PRIVATE_API.values()
    for part in re.split(r"[\s.,]+", value)
    if part.startswith("_")
)
RAY_PRIVATE_MODULE = re.compile(r"^ray(\.\w+)*\._\w*")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _library_bindings(tree: ast.Module) -> dict[str, str]:
    """Local name -> library ("aiortc", "aioice" or "ray") for the names imports bind."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in AIORTC_PACKAGES or top == "ray":
                    bound[alias.asname or top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in AIORTC_PACKAGES or top == "ray":
                for alias in node.names:
                    bound[alias.asname or alias.name] = top
    return bound


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _own_attributes(tree: ast.Module, bound: dict[str, str]) -> set[int]:
    """ids of `self.<name>` nodes in the methods of classes of ours (not aiortc's subclasses)."""
    own: set[int] = set()
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if any(_root_name(base) in bound for base in cls.bases):
            continue
        for method in cls.body:
            if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(method):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id in ("self", "cls")
                ):
                    own.add(id(node))
    return own


def private_uses(source: str, path: str) -> list[Violation]:
    """The private aiortc/aioice and Ray names `source` (the file at `path`) uses."""
    tree = ast.parse(source, path)
    check_aiortc = not path.startswith(AIORTC_HOME)
    check_ray = path != RAY_HOME
    bound = _library_bindings(tree)
    own = _own_attributes(tree, bound)
    found: list[Violation] = []

    def report(node: ast.AST, what: str) -> None:
        found.append(Violation(path, getattr(node, "lineno", 0), what))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            library = bound.get(_root_name(node.value) or "")
            if check_aiortc and node.attr in AIORTC_NAMES and id(node) not in own:
                report(node, f"aiortc/aioice private name .{node.attr}")
            elif (
                check_aiortc
                and library in AIORTC_PACKAGES
                and (_is_private(node.attr) or node.attr in EVERYDAY_NAMES)
            ):
                report(node, f"{library} private attribute .{node.attr}")
            ray_name = node.attr in RAY_NAMES and id(node) not in own
            if check_ray and (ray_name or (library == "ray" and _is_private(node.attr))):
                report(node, f"Ray private attribute .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if check_aiortc and node.value in AIORTC_NAMES:
                report(node, f"aiortc/aioice private name {node.value!r}")
            if check_ray and (node.value in RAY_NAMES or RAY_PRIVATE_MODULE.match(node.value)):
                report(node, f"Ray private name {node.value!r}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [f"{node.module}.{alias.name}" for alias in node.names]
                if node.module and node.level == 0
                else []
            )
            for module in modules:
                parts = module.split(".")
                if check_ray and parts[0] == "ray" and any(map(_is_private, parts)):
                    report(node, f"import of Ray's private {module}")
                private = any(map(_is_private, parts)) or parts[-1] in AIORTC_NAMES
                if check_aiortc and parts[0] in AIORTC_PACKAGES and private:
                    report(node, f"import of {parts[0]}'s private {module}")
    return found


def python_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if not any(p.startswith(".") or p.endswith(".egg-info") or p == "build" for p in parts):
            yield path


def test_no_module_outside_the_registries_names_a_private_part() -> None:
    found = [
        str(violation)
        for path in python_files()
        for violation in private_uses(path.read_text(), path.relative_to(ROOT).as_posix())
    ]
    assert found == []


def test_the_repository_is_read() -> None:
    paths = {path.relative_to(ROOT).as_posix() for path in python_files()}
    assert {
        RAY_HOME,
        f"{AIORTC_HOME}rtc.py",
        "loadtests/webrtc.py",
        __name__.replace(".", "/") + ".py",
    } <= paths


# Planted violations: each source names a private part, so the checker must report it.
# Names are taken from the registries, so this file spells none of them out itself.
SEND_RTCP = AIORTC_PRIVATE_API["rtcp_send"]
KEYFRAME = AIORTC_PRIVATE_API["sender_keyframe_hook"]
ENCODER = AIORTC_PRIVATE_API["sender_encoder"]
DECODER_WORKER = AIORTC_PRIVATE_API["receiver_decoder_worker"]
RAY_INTERNALS = ".".join(RAY_PRIVATE_API["gcs_client"].split(".")[:2])  # Ray's private package
OPTIONS = sorted(RAY_NAMES - {RAY_INTERNALS.split(".")[1]})[0]


@pytest.mark.parametrize(
    "source",
    [
        f"def tap(sender):\n    sender.{SEND_RTCP} = print\n",
        f"async def go(sender):\n    await sender.{KEYFRAME}()\n",
        f"def go(sender):\n    return getattr(sender, {KEYFRAME!r})\n",
        f"def go(sender):\n    return sender.{ENCODER}\n",
        "import aiortc.rtcrtpsender\nrandom = aiortc.rtcrtpsender.random\n",
        "from aioice.ice import Connection\nConnection._unknown_to_the_registry = None\n",
        "import aioice.ice as ice\nprint(ice.Connection(ice_controlling=True)._local_candidates)\n",
        f"from aiortc.rtcrtpreceiver import {DECODER_WORKER}\n",
        f"def ufrag(c):\n    return c.{AIORTC_PRIVATE_API['ice_local_username']}\n",
        f"from aioice.ice import {AIORTC_PRIVATE_API['stun_protocol']}\n",
        "import aioice.ice\ndeliver = aioice.ice.Connection.data_received\n",
        "from aiortc.rtcrtpsender import _private_helper\n",
        "class Tapped:\n    def __init__(self, pc):\n"
        f"        pc.sender.{SEND_RTCP} = self.on_rtcp\n",
        f"from aiortc import RTCRtpSender\nclass Mine(RTCRtpSender):\n"
        f"    def go(self):\n        return self.{KEYFRAME}\n",
        f"import {RAY_INTERNALS}.state\n",
        f"from {RAY_INTERNALS} import worker\n",
        f"from ray.autoscaler import {RAY_INTERNALS.split('.')[1]}\n",
        f"import ray\nclient = ray.{RAY_INTERNALS.split('.')[1]}.worker.global_worker\n",
        f"import importlib\nstate = importlib.import_module({RAY_INTERNALS + '.state'!r})\n",
        f"def resources(cls):\n    return cls.{OPTIONS}['resources']\n",
    ],
)
def test_a_planted_private_use_is_reported(source: str) -> None:
    assert private_uses(source, "tests/planted.py") != []


@pytest.mark.parametrize(
    "source",
    [
        # Our own objects' private attributes may share a name with aiortc's.
        "class Track:\n    def __init__(self):\n"
        f"        self.{AIORTC_PRIVATE_API['sender_ssrc']} = None\n",
        "import random\nimport numpy as np\nx = random.random() + np.random.rand()\n",
        "class Reader:\n    def go(self, protocol):\n        protocol.data_received(b'')\n",
        "from aiortc import RTCPeerConnection\n"
        "pc = RTCPeerConnection()\npc.addTransceiver('video')\n",
        "import ray\nray.init(address='auto')\n",
    ],
)
def test_public_and_own_names_are_not_reported(source: str) -> None:
    assert private_uses(source, "tests/planted.py") == []


def test_the_registries_own_modules_may_use_private_parts() -> None:
    source = f"def tap(sender):\n    sender.{SEND_RTCP} = print\nimport {RAY_INTERNALS}.state\n"
    assert private_uses(source, f"{AIORTC_HOME}rtc.py") == [
        Violation(f"{AIORTC_HOME}rtc.py", 3, f"import of Ray's private {RAY_INTERNALS}.state")
    ]
    assert [v.line for v in private_uses(source, RAY_HOME)] == [2]
