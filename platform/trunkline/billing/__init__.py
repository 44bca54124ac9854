"""Rating, the price book, billing periods, FinOps FOCUS exports and invoices.

Pure cores (``pricebook``, ``rating``, ``sla``, ``periods``, ``focus``, ``invoice``) over plain
data; ``lines`` and ``statements`` read rollups from the database; ``service`` is what the
CLI, the API and the worker call.
"""
