"""The S3 wire protocol: errors, SigV4, request bodies, checksums and XML, without routes.

The S3 routes call these modules; none of them touches MongoDB or the chunk store directly.
"""
