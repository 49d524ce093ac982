"""Analyses of the long-form table: pure pandas, no torch, no hooks (the leaves beside ``store`` and ``plots``).

``rows`` (row selections everything shares), ``sanity`` (is a model broken or untrained?),
``comparability`` (can two models be compared cell by cell, and which cells pair), ``summary`` (the
symptom table, cell-by-cell and run-by-run comparisons; public as ``dardiag.summary``).

Nothing is imported here, so that ``runs`` can read ``sanity`` while ``summary`` reads ``runs``.
"""
