"""Files and URIs for every package: local paths and object stores (s3://, gs://, abfs://) through
pyarrow/fsspec filesystems, and the one way to write an output so it is complete or absent.

``curation``, ``tokenizer``, ``training`` and ``pipelines`` all use :mod:`storage.io`; it imports none
of them.
"""
