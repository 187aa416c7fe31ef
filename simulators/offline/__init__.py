"""Logged bandit feedback and what can be learned from it offline: the logs (``logs``: joined
events, DSJSON, and the ``LoggedBandit`` arrays every estimator reads), the Open Bandit Dataset
(``obd``) and the off-policy estimators (``ope``)."""
