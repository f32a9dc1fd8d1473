"""The namespace: S3 buckets and object names pointing at files (``objects``), the rules a name
must follow (``names``), and bucket lifecycle rules (``lifecycle``).

May import: the core, ``pipeline.metadata``.
"""
