"""Reports for a person to read: HTML pages, tables and PNG plots built from what stages wrote.

- ``html``      one table helper, value formatting, embedded images, a page, a word diff marked up
- ``plots``     the one PNG encoder (reproducible bytes) over matplotlib's Agg backend
- ``run``       ``pipelines run``'s report: ``report.json`` (every figure) and ``report.html``
- ``training``  a training run's loss and learning-rate curves from its ``log.jsonl``

Plain Python over files (:mod:`storage.io`) and dicts: no Ray, no ``pipelines`` import.
"""
