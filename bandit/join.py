"""The attribution join lives in ``bandit.engine.join``; this module re-exports the names that
``bandit.settings``, ``streams.worker`` and ``tests/test_limits.py`` import from here."""

from bandit.engine.join import ERASED, MAX_PENDING, OVER_CAPACITY, Joiner, subject_key

__all__ = ["ERASED", "MAX_PENDING", "OVER_CAPACITY", "Joiner", "subject_key"]
