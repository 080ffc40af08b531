"""Type-checking cases: checked by mypy and pyright (``make typecheck``), never run.

Each ``# type: ignore[code]`` marks an error the checkers must report on that line (as in
typeshed's test cases): mypy's ``warn_unused_ignores`` and pyright's
``reportUnnecessaryTypeIgnoreComment`` fail the check when the error is missing.
"""
