"""Corpus curation: extraction, deduplication, filtering and remixing, as plain Python over
iterators of documents and Arrow tables. Nothing here imports Ray; ``pipelines`` maps it on."""
