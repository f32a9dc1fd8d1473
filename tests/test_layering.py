"""Layering: ``config/`` imports nothing of the project, and gunicorn's master reads the web
settings without loading Flask or prometheus-client (its workers load those after the fork)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

from app.serving import gunicorn_settings
from config.settings import Settings
from tests.stack import ROOT

PROJECT_PACKAGES = {"app", "pipeline", "workers", "tests", "bench"}


def imported_modules(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_config_imports_nothing_of_the_project_but_config():
    offenders = {}
    for path in sorted((ROOT / "config").glob("*.py")):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in PROJECT_PACKAGES}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


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
