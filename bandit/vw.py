"""Where ``VWPolicy`` and ``VWFormat`` were imported from before ``bandit.policies.vw``: a
re-export, so that importing this module loads vowpalwabbit, as it always did."""

from bandit.policies.vw import EXPLORATIONS, VWFormat, VWPolicy

__all__ = ["EXPLORATIONS", "VWFormat", "VWPolicy"]
