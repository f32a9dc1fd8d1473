"""Access: API keys (``keys``), S3 credentials with their secrets encrypted at rest
(``credentials``), and who may do what (``permissions``: ACLs, bucket policies and anonymous
access, decided in one place; pure, it reads no database).

May import: the core, ``pipeline.metadata``.
"""
