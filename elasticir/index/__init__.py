"""Indexes: the index kinds (flat, HNSW, SQ8, IVF-PQ, FAISS factory strings) and the embedding precisions.

Their registries (kinds, precisions) hold no built-ins of their own: the modules that implement them register
them, imported here, so `elasticir.index.kinds` and `elasticir.index.precisions` are filled whichever is imported
first, without either importing its implementations back (no import cycle).
"""

from elasticir.index import dense, quantized  # noqa: F401 - register the built-in index kinds and precisions
