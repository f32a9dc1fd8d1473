"""Layering: who may import whom, read from the source (the AST), so that a violation fails here.

``config/`` imports nothing of the project; ``pipeline/`` imports neither ``app`` nor ``workers``
nor Flask or Celery, and each of its subpackages imports only the subpackages its docstring allows
(``PIPELINE_ALLOWED``); ``workers/`` does not import ``app``; the S3 front end (``app/s3``) and the
``/api`` blueprints do not import each other. Gunicorn's master reads the web settings without
loading Flask or prometheus-client (its workers load those after the fork)."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

from app.serving import gunicorn_settings
from config.settings import Settings
from tests.stack import ROOT

PROJECT_PACKAGES = {"app", "pipeline", "workers", "tests", "bench"}


PIPELINE_CORE = {"errors", "backends", "cache", "timefmt"}  # pipeline/<name>.py: any subpackage may import them
PIPELINE_TOP = {"store"}  # pipeline/store.py wires the subpackages together: it may import any of them
# pipeline/<package>/ may import itself, the core and these (each package's docstring says the same)
PIPELINE_ALLOWED = {
    "storage": set(),
    "metadata": set(),
    "datapath": {"storage", "metadata"},
    "namespace": {"metadata"},
    "maintenance": {"storage", "metadata"},
    "access": {"metadata"},
}
API_BLUEPRINTS = {"app.api", "app.dashboard", "app.openapi", "app.metrics"}  # the /api front end's
FRAMEWORKS = {"flask", "celery"}  # and their extensions (flask_cors, ...)


def imported_modules(path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count); for ``from m
    import n`` both ``m`` and ``m.n`` (n may be a submodule). A relative import is ``.<level>``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources(root, package: str):
    return sorted((root / package).rglob("*.py"))


def pipeline_part(module: str) -> str | None:
    """The subpackage or top module of ``pipeline`` that a module belongs to (None: not pipeline's)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "pipeline" and len(parts) > 1 else None


def pipeline_may_import(own: str, in_package: bool) -> set[str]:
    """The parts of ``pipeline`` that its package or top module ``own`` may import."""
    if in_package:
        return {own} | PIPELINE_CORE | PIPELINE_ALLOWED.get(own, set())
    if own in PIPELINE_TOP:
        return PIPELINE_CORE | PIPELINE_TOP | set(PIPELINE_ALLOWED)
    return set(PIPELINE_CORE)


def layering_violations(root) -> dict[str, list[str]]:
    """``{file: [forbidden imports]}`` over ``pipeline/``, ``app/`` and ``workers/`` under ``root``."""
    found: dict[str, list[str]] = {}

    def check(path, allowed) -> None:
        bad = sorted(m for m in imported_modules(path) if not allowed(m))
        if bad:
            found[str(path.relative_to(root))] = bad

    for path in sources(root, "pipeline"):
        rel = path.relative_to(root / "pipeline").parts
        may = pipeline_may_import(rel[0].removesuffix(".py"), in_package=len(rel) > 1)
        check(path, lambda m, may=may: not m.startswith(".") and m.split(".")[0] not in {"app", "workers"}
              and m.split(".")[0].split("_")[0] not in FRAMEWORKS and pipeline_part(m) in may | {None})
    for path in sources(root, "workers"):
        check(path, lambda m: not m.startswith(".") and m.split(".")[0] != "app")
    for path in sources(root, "app/s3"):
        check(path, lambda m: not m.startswith(".") and ".".join(m.split(".")[:2]) not in API_BLUEPRINTS)
    for name in API_BLUEPRINTS:
        path = root / (name.replace(".", "/") + ".py")
        if path.exists():
            check(path, lambda m: not m.startswith(".") and ".".join(m.split(".")[:2]) != "app.s3")
    return found


def test_config_imports_nothing_of_the_project_but_config():
    offenders = {}
    for path in sorted((ROOT / "config").glob("*.py")):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in PROJECT_PACKAGES}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_every_package_imports_only_what_its_layer_allows():
    assert layering_violations(ROOT) == {}


def test_each_pipeline_package_states_in_its_docstring_what_it_may_import():
    packages = {p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")}
    assert packages == set(PIPELINE_ALLOWED), "a new package of pipeline/ needs its row in PIPELINE_ALLOWED"
    modules = {p.stem for p in (ROOT / "pipeline").glob("*.py")} - {"__init__"}
    assert modules == PIPELINE_CORE | PIPELINE_TOP, "a new module of pipeline/ belongs in a package"
    for name, allowed in PIPELINE_ALLOWED.items():
        doc = ast.get_docstring(ast.parse((ROOT / "pipeline" / name / "__init__.py").read_text())) or ""
        line = next((part for part in doc.split("\n\n") if part.startswith("May import:")), "")
        stated = {m.split(".")[1] for m in re.findall(r"``(pipeline\.[a-z_]+)``", line)} - PIPELINE_CORE
        assert stated == allowed, f"pipeline/{name}/__init__.py: {line!r}"


def test_the_layering_check_fails_on_a_forbidden_import(tmp_path):
    files = {
        "pipeline/__init__.py": "",
        "pipeline/errors.py": "",
        "pipeline/storage/__init__.py": "",
        "pipeline/storage/chunkstore.py": "from pipeline.errors import NotFound\nfrom pipeline.storage import layouts\n",
        "pipeline/storage/bad.py": "def f():\n    from pipeline.datapath.ingest import Ingestor\n",
        "pipeline/metadata/bad.py": "import flask\nfrom workers.celery import celery_app\nfrom . import model\n",
        "pipeline/errors_bad.py": "import pipeline.storage\n",
        "workers/tasks.py": "from app.api import api\n",
        "app/api.py": "from app.s3.errors import S3Error\n",
        "app/s3/routes.py": "import app.dashboard\nfrom app import errors\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert layering_violations(tmp_path) == {
        "pipeline/storage/bad.py": ["pipeline.datapath.ingest", "pipeline.datapath.ingest.Ingestor"],
        "pipeline/metadata/bad.py": [".", "flask", "workers.celery", "workers.celery.celery_app"],
        "pipeline/errors_bad.py": ["pipeline.storage"],
        "workers/tasks.py": ["app.api", "app.api.api"],
        "app/api.py": ["app.s3.errors", "app.s3.errors.S3Error"],
        "app/s3/routes.py": ["app.dashboard"],
    }


def test_gunicorn_reads_the_web_settings_without_loading_flask_or_prometheus(tmp_path):
    code = ("import json, sys, app.gunicorn_conf as c; "
            "print(json.dumps({'bind': c.bind, 'workers': c.workers, 'worker_class': c.worker_class, "
            "'loaded': sorted(m for m in ('flask', 'prometheus_client', 'celery') if m in sys.modules)}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIS3_", "PROMETHEUS_"))}
    env.update(PYTHONPATH=str(ROOT), MINIS3_AUTH="required", MINIS3_HOST="0.0.0.0", MINIS3_PORT="3999",
               MINIS3_WEB_WORKERS="3", MINIS3_VAR_DIR=str(tmp_path / "var"))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"bind": "0.0.0.0:3999", "workers": 3, "worker_class": "gthread",
                                       "loaded": []}
    assert (tmp_path / "var/metrics").is_dir()  # named for the workers before they import prometheus


def test_the_gunicorn_settings_serve_any_front_end_from_its_bind():
    settings = Settings().with_overrides(web_workers=4, web_threads=6)
    api, s3 = gunicorn_settings(settings, "127.0.0.1:3000"), gunicorn_settings(settings, "127.0.0.1:9000")
    assert api["bind"] == "127.0.0.1:3000" and s3["bind"] == "127.0.0.1:9000"
    assert {k: v for k, v in api.items() if k != "bind"} == {k: v for k, v in s3.items() if k != "bind"}
    assert api["workers"] == 4 and api["threads"] == 6 and api["worker_class"] == "gthread"
