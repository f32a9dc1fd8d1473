"""Maintenance: the jobs that keep the store healthy and the figures that show it. Garbage
collection, stuck files and spool clean-up (``garbage``), heal (``heal``), scrub (``scrub``),
fsck (``fsck``), node operations: drain, rebalance, convert (``nodes``), figures (``stats``),
samples and each tenant's usage (``usage``), progress of long jobs (``progress``). Each job is a
class whose fields are the parts it uses; ``pipeline.store`` builds them, nothing here sees the store.

May import: the core, ``pipeline.storage``, ``pipeline.metadata``.
"""
