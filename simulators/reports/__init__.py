"""The report folders of ``cmab simulate``, ``cmab replay`` and ``cmab demo``: one module per
report (``simulation``, ``replay``, ``demo``), each writing results.json, report.md,
report.html and its PNGs through the one page writer (``page``)."""
