"""The data path: bytes into and out of files. Cutting a stream into chunks (``chunking``),
receiving an upload into the spool with its manifest (``upload``), ingest of spooled chunks onto
nodes (``ingest``), verified read-back (``readback``), a file's chunks as a person inspects
them (``chunkmap``) and the per-process thread pools of placement and read-ahead (``pools``).

May import: the core, ``pipeline.storage``, ``pipeline.metadata``.
"""
