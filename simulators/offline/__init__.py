"""Logged bandit feedback and what can be learned from it offline: the logs (``logs``: joined
events, DSJSON, and the ``LoggedBandit`` arrays every estimator reads), the Open Bandit Dataset
(``obd``), the off-policy estimators (``ope``), target policies as trained on a log
(``targets``) and the estimators scored on simulated logs with known truth (``compare``)."""
