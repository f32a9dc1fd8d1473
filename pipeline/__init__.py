"""The domain of the store, importable without Flask or Celery.

Subpackages, one concern each (their docstrings say what they own and may import):
``storage`` (chunk bytes on nodes), ``metadata`` (every MongoDB query), ``datapath`` (bytes in
and out of files), ``namespace`` (S3 names and their rules), ``maintenance`` (jobs that keep the
store healthy, and its figures), ``access`` (API keys, S3 credentials). ``store.ObjectStore``
wires storage, metadata and the data path into one facade for the front ends and workers.
The core modules here may be imported by every subpackage and import none of them:
``errors`` (domain errors), ``backends`` (backing-service failures as domain errors), ``cache``
(per-process caches of rarely changing records), ``timefmt``.
May import: nothing of ``app`` or ``workers``, neither Flask nor Celery.
"""
