"""Metadata: every MongoDB query of the store, one repository per aggregate.

``model`` holds the domain types (file and chunk states, ``FileDoc``, ``ManifestPage``); ``mongo``
the client, the indexes and the rules that keep query shapes valid on MongoDB and on the stand-in;
``files``, ``chunks``, ``namespace``, ``access`` and ``operations`` one repository each;
``repositories.Metadata`` holds them. Imports: ``pipeline.errors`` and ``pipeline.timefmt`` only.
"""
