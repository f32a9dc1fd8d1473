"""Where prometheus-client keeps its per-process files, so that ``GET /metrics`` adds up every
gunicorn worker and every celery pool process.

prometheus-client reads ``PROMETHEUS_MULTIPROC_DIR`` when it is first imported, so entry points
(gunicorn's config, the celery app module) call ``prepare_metrics_dir`` before anything imports
it. Only a supervisor of all processes (``minis3 run``, the test stack) may clean the directory:
a process that wiped it would drop the live counters of its siblings.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import MutableMapping

from config.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(settings: Settings, environ: MutableMapping[str, str] | None = None,
                        clean: bool = False, force_default: bool = False) -> Path:
    """Create (and with ``clean``, empty) the directory and name it in ``environ``.

    An operator's own ``PROMETHEUS_MULTIPROC_DIR`` wins unless ``force_default``.
    """
    environ = os.environ if environ is None else environ
    configured = None if force_default else environ.get(MULTIPROC_ENV)
    path = Path(configured or settings.var_dir / "metrics").resolve()
    if clean:
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    environ[MULTIPROC_ENV] = str(path)
    return path
