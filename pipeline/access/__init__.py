"""Access: API keys (``keys``) and S3 credentials with their secrets encrypted at rest
(``credentials``).

May import: the core, ``pipeline.metadata``.
"""
