"""The namespace: S3 buckets and object names pointing at files (``objects``), the rules a name
must follow (``names``), the pace of listings that roll names up (``paging``), and bucket
lifecycle rules (``lifecycle``).

May import: the core, ``pipeline.metadata``.
"""
