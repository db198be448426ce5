"""Indexes: the index kinds (flat, HNSW, SQ8, IVF-PQ, streamed, FAISS factory strings) and the precisions.

Their registries (kinds, precisions) hold no built-ins of their own: the modules that implement them (dense,
streamed, quantized) register them, imported here, so `elasticir.index.kinds` and `elasticir.index.precisions`
are filled whichever is imported first, without either importing its implementations back (no import cycle).
"""

# the built-in index kinds and precisions register themselves; streamed after the dense kinds (list order)
from elasticir.index import dense, quantized, streamed  # noqa: F401
