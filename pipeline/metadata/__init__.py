"""Metadata: every MongoDB query of the store, one repository per aggregate.

``model`` holds the domain types (file and chunk states, ``FileDoc``, ``ManifestPage``); ``mongo``
the client, the indexes and the rules that keep query shapes valid on MongoDB and on the stand-in;
``files`` (files and manifests), ``chunks`` (compare-and-set of chunk documents), ``namespace``
(buckets, names, uploads, parts), ``access`` (API keys, S3 credentials) and ``operations``
(events, samples, usage, node records) one repository each; ``repositories.Metadata`` holds them.

May import: the core (``pipeline.errors``, ``pipeline.backends``, ``pipeline.cache``, ``pipeline.timefmt``).
"""
