"""Dataset readers for the papers' real datasets and the procedural generators used by tests and demos.

Import the module you need (``fourfold.data.digits``, ``fourfold.data.agd20k``...); this package
re-exports nothing so that importing one reader never pulls in another's dependencies.
"""
