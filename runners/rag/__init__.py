"""Runner ``rag``: the retrieval baseline (chunks, retrievers, the runner); see :mod:`.runner`."""
