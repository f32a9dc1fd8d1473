"""Storage: chunk bytes on nodes. Paths and atomic writes (``chunkstore``), the one module that
reads and writes chunk bytes, spool included (``chunkio``), one class per coding policy
(``layouts``), the Reed-Solomon codec (``erasure``) and round-robin placement (``placement``).

May import: the core (``pipeline.errors``, ``pipeline.backends``, ``pipeline.cache``, ``pipeline.timefmt``).
"""
