"""``harness view``: a local web app for browsing run folders of any size, finished or in progress.

``index`` keeps a DuckDB index of a run folder's JSONL logs in the user cache, grown incrementally;
``queries`` asks it for one page, the filter values or one case; ``server`` serves the JSON API and
the static page in ``assets/`` with aiohttp. It reads the run folder and never writes it.
"""
