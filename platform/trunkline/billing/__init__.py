"""Rating, the price book, billing periods, FinOps FOCUS exports and invoices.

Pure cores (``pricebook``, ``rating``, ``sla``, ``periods``, ``focus``, ``invoice``) over plain
data; ``lines`` and ``statements`` read rollups from the database, ``capacity`` dedicated GPUs;
``pricebook_store`` keeps the price book there. What the CLI, the API and the worker call:
``pricebook_store`` to read and change the prices, ``closing`` to close periods, ``exports`` to
export them (``controllers`` over HTTP).
"""
