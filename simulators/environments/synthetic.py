"""The synthetic environments: a random linear-logistic truth (``LinearLogistic``) and the
documented tables of the email subject line (``Email``) and the artwork (``Artwork``)."""

from __future__ import annotations

import numpy as np

from bandit.errors import InvalidInputError
from simulators.environments.base import Environment, one_hot, sigmoid


class LinearLogistic(Environment):
    """Logistic clicks from a low-rank bilinear model of context and arm features.

    Each arm has features z_a (m,) = [1, N(0, I)]; a hidden matrix W (dim, m) gives the arm
    weights theta_a = W z_a, and the click probability is squeezed into a realistic band,
    p = P_MIN + (P_MAX - P_MIN) * sigmoid(theta_a . x). The logit is linear in x for every arm
    (the disjoint linear policies' model) and in the outer product x z_a^T (Hybrid LinUCB's
    shared part). Arms weigh the context differently, so the best arm changes from context to
    context. With drift, W moves to a second independent draw.

    >>> env = LinearLogistic(n_arms=4, dim=5, seed=1)
    >>> X = env.contexts(3, np.random.default_rng(0))
    >>> X.shape, env.expected_rewards(X).shape
    ((3, 5), (3, 4))
    """

    P_MIN, P_MAX = 0.02, 0.30
    N_ARM_FEATURES = 5
    # Mean and spread of the logit: a typical arm sits near 8% CTR, good matches near 25%.
    LOGIT_MEAN, ARM_BIAS_SD, CONTEXT_SD = -1.2, 0.3, 1.2

    def __init__(
        self,
        n_arms: int = 10,
        dim: int = 20,
        seed: int = 0,
        *,
        drift_steps: int | None = None,
        new_arm_at: int | None = None,
    ) -> None:
        if n_arms < 2 or dim < 2:
            raise InvalidInputError(f"need n_arms >= 2 and dim >= 2, got {n_arms} and {dim}")
        rng = np.random.default_rng(seed)
        m = self.N_ARM_FEATURES
        self.name = "linear"
        self.arm_names = tuple(f"arm{a}" for a in range(n_arms))
        self.dim = dim
        self.arm_features = np.ascontiguousarray(
            np.column_stack([np.ones(n_arms), rng.normal(size=(n_arms, m - 1))])
        )
        super().__init__(
            n_arms,
            self._draw_theta(rng),
            self._draw_theta(rng),
            drift_steps=drift_steps,
            new_arm_at=new_arm_at,
        )

    def _draw_theta(self, rng: np.random.Generator) -> np.ndarray:
        """theta (n_arms, dim) = (W z_a)_a, scaled so logits have the stated mean and spreads."""
        W = rng.normal(size=(self.dim, self.N_ARM_FEATURES))
        theta = self.arm_features @ W.T
        # Contexts are N(0, 1) per feature, so theta_a[1:] . x has sd |theta_a[1:]|; normalising
        # the average norm fixes how much the context matters whatever dim and m are.
        context_norm = np.sqrt(np.mean(np.sum(theta[:, 1:] ** 2, axis=1)))
        theta[:, 1:] *= self.CONTEXT_SD / context_norm
        bias = theta[:, 0]
        theta[:, 0] = self.LOGIT_MEAN + self.ARM_BIAS_SD * (bias - bias.mean()) / bias.std()
        return theta

    def contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        X = np.empty((n, self.dim))
        X[:, 0] = 1.0
        X[:, 1:] = rng.normal(size=(n, self.dim - 1))
        return X

    def _logits(self, X: np.ndarray, truth: np.ndarray) -> np.ndarray:
        return X @ truth.T

    def _link(self, logits: np.ndarray) -> np.ndarray:
        return self.P_MIN + (self.P_MAX - self.P_MIN) * sigmoid(logits)


class Email(Environment):
    """One email slot, the subject line, for subscribers with known traits.

    Subscriber traits and their context encoding (``dim`` = 12, in this column order):

    ========================  =====================================================  =======
    trait                     values (population share)                              columns
    ========================  =====================================================  =======
    intercept                 1.0                                                    1
    engagement style          deal_seeker .30, curious .25, busy .25, loyal .20      4 1-hot
    usual open hour           morning ~8h .40, lunch ~12h .20, evening ~20h .40      sin, cos
    price sensitivity         in [0, 1]; Beta(5, 2) for deal seekers, else Beta(2, 4)  1
    region (segment)          north .35, south .25, east .25, west .15               4 1-hot
    ========================  =====================================================  =======

    Arms are subject-line framings: urgency, curiosity, offer, personal, plain. Arm features
    (5, 9): one-hot framing, then one-hot tone among pushy (urgency, offer), playful
    (curiosity), warm (personal), neutral (plain).

    True click logit for style s, framing f, price sensitivity q, open hour h, region r:

        logit = -3.9 + STYLE_X_FRAMING[s, f] + PRICE_X_FRAMING[f] * (q - 0.5)
                + 0.35 * cos(2 pi (h - 9) / 24) + REGION[r]

    STYLE_X_FRAMING (rows: styles, columns: framings in arm order):

    ===========  =======  =========  =====  ========  =====
    style        urgency  curiosity  offer  personal  plain
    ===========  =======  =========  =====  ========  =====
    deal_seeker     0.5      -0.2     1.2      0.0     -0.3
    curious        -0.2       1.1    -0.1      0.3      0.0
    busy            0.4      -0.4    -0.2      0.0      0.9
    loyal          -0.3       0.2     0.1      1.0      0.4
    ===========  =======  =========  =====  ========  =====

    PRICE_X_FRAMING = (0.4, 0, 0.8, 0, 0): price-sensitive readers like offers and deadlines.
    The send goes out at 9h, so morning openers click more whatever the subject; REGION =
    (0, 0.1, -0.1, 0.05) shifts the base rate only. CTRs run from about 1% to 15%.

    With drift the style rows rotate by one (deal seekers end up with the loyal row, curious
    with the deal-seeker row, ...), so every style's best framing changes. With ``new_arm_at``
    the last arm, plain (the best for busy readers), arrives late.

    >>> env = Email()
    >>> X = env.contexts(4, np.random.default_rng(0))
    >>> X.shape, env.expected_rewards(X).shape
    ((4, 12), (4, 5))
    """

    slot = "subject_line"
    STYLES = ("deal_seeker", "curious", "busy", "loyal")
    FRAMINGS = ("urgency", "curiosity", "offer", "personal", "plain")
    TONES = ("pushy", "playful", "warm", "neutral")
    FRAMING_TONE = (0, 1, 0, 2, 3)
    REGIONS = ("north", "south", "east", "west")

    STYLE_SHARE = (0.30, 0.25, 0.25, 0.20)
    REGION_SHARE = (0.35, 0.25, 0.25, 0.15)
    # Open-hour habits: (share, mean hour, sd in hours).
    OPEN_HABITS = ((0.40, 8.0, 1.5), (0.20, 12.0, 1.0), (0.40, 20.0, 2.0))

    BASE_LOGIT = -3.9
    STYLE_X_FRAMING = np.array(
        [
            [0.5, -0.2, 1.2, 0.0, -0.3],
            [-0.2, 1.1, -0.1, 0.3, 0.0],
            [0.4, -0.4, -0.2, 0.0, 0.9],
            [-0.3, 0.2, 0.1, 1.0, 0.4],
        ]
    )
    PRICE_X_FRAMING = np.array([0.4, 0.0, 0.8, 0.0, 0.0])
    SEND_HOUR, HOUR_GAIN = 9.0, 0.35
    REGION_EFFECT = np.array([0.0, 0.1, -0.1, 0.05])

    # Column layout of the context vector.
    _STYLE = slice(1, 5)
    _HOUR_SIN, _HOUR_COS, _PRICE = 5, 6, 7
    _REGION = slice(8, 12)

    def __init__(self, *, drift_steps: int | None = None, new_arm_at: int | None = None) -> None:
        n_arms = len(self.FRAMINGS)
        self.name = "email"
        self.arm_names = self.FRAMINGS
        self.dim = 12
        self.arm_features = np.ascontiguousarray(
            np.hstack(
                [np.eye(n_arms), one_hot(np.array(self.FRAMING_TONE), len(self.TONES))]
            )
        )
        super().__init__(
            n_arms,
            self.STYLE_X_FRAMING,
            np.roll(self.STYLE_X_FRAMING, 1, axis=0),
            drift_steps=drift_steps,
            new_arm_at=new_arm_at,
        )

    def contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        style = rng.choice(len(self.STYLES), size=n, p=self.STYLE_SHARE)
        region = rng.choice(len(self.REGIONS), size=n, p=self.REGION_SHARE)
        share, mean, sd = (np.array(column) for column in zip(*self.OPEN_HABITS, strict=True))
        habit = rng.choice(len(share), size=n, p=share)
        hour = np.mod(rng.normal(mean[habit], sd[habit]), 24.0)
        deal_seeker = style == self.STYLES.index("deal_seeker")
        price = np.where(deal_seeker, rng.beta(5.0, 2.0, size=n), rng.beta(2.0, 4.0, size=n))

        X = np.empty((n, self.dim))
        X[:, 0] = 1.0
        X[:, self._STYLE] = one_hot(style, len(self.STYLES))
        # Hours on a circle: 23h and 1h are neighbours.
        X[:, self._HOUR_SIN] = np.sin(2.0 * np.pi * hour / 24.0)
        X[:, self._HOUR_COS] = np.cos(2.0 * np.pi * hour / 24.0)
        X[:, self._PRICE] = price
        X[:, self._REGION] = one_hot(region, len(self.REGIONS))
        return X

    def _logits(self, X: np.ndarray, truth: np.ndarray) -> np.ndarray:
        # cos(h - send) from the stored sin/cos of h: no need to recover the hour itself.
        send = 2.0 * np.pi * self.SEND_HOUR / 24.0
        hour_match = X[:, self._HOUR_COS] * np.cos(send) + X[:, self._HOUR_SIN] * np.sin(send)
        base = (
            self.BASE_LOGIT
            + self.HOUR_GAIN * hour_match
            + X[:, self._REGION] @ self.REGION_EFFECT
        )
        return (
            base[:, None]
            + X[:, self._STYLE] @ truth
            + np.outer(X[:, self._PRICE] - 0.5, self.PRICE_X_FRAMING)
        )


class Artwork(Environment):
    """Which artwork to show for a title, by the viewer's viewing history (Netflix-style artwork
    personalization), one slot.

    Context (``dim`` = 7): intercept, the viewer's recent viewing shares over five genres
    (action, comedy, drama, romance, documentary; Dirichlet(0.3): most viewers lean to one or
    two genres), and engagement in [0, 1] (Beta(2, 3)). Arms are scene types: action_shot,
    comedic_moment, dramatic_close_up, romantic_moment, ensemble_cast, landscape; arm features
    (6, 8): one-hot scene, then faces (a person fills the frame) and intensity.

    True play logit for genre shares g (5,), scene a and engagement e:

        logit = -4.1 + SCENE_BIAS[a] + g . GENRE_X_SCENE[:, a] + 0.8 * e

    GENRE_X_SCENE (rows genres, columns scenes in arm order):

    ===========  ======  =======  ========  ========  ========  =========
    genre        action  comedic  dramatic  romantic  ensemble  landscape
    ===========  ======  =======  ========  ========  ========  =========
    action         1.8    -0.3      0.3      -0.75      0.45      0.3
    comedy        -0.3     1.8     -0.45      0.3       0.9      -0.3
    drama          0.0    -0.3      1.65      0.6       0.3       0.15
    romance       -0.75    0.45     0.6       1.95      0.15      0.3
    documentary    0.15   -0.45     0.3      -0.45      0.0       1.5
    ===========  ======  =======  ========  ========  ========  =========

    SCENE_BIAS = (0, 0, 0.1, 0, 0.15, -0.1): ensembles and close-ups do a little better for
    everyone. Play rates run from about 1% to 20% (mean 3.6%; the oracle's 6.9%, the best
    single scene's 4.3%). With drift the genre rows rotate by one
    (action fans end up with the comedy row, ...); with ``new_arm_at`` the last scene,
    landscape (the documentary fans' favourite), arrives late.

    >>> env = Artwork()
    >>> X = env.contexts(4, np.random.default_rng(0))
    >>> X.shape, env.expected_rewards(X).shape
    ((4, 7), (4, 6))
    """

    slot = "artwork"
    GENRES = ("action", "comedy", "drama", "romance", "documentary")
    SCENES = ("action_shot", "comedic_moment", "dramatic_close_up", "romantic_moment",
              "ensemble_cast", "landscape")
    # faces, intensity per scene
    SCENE_TRAITS = ((0.0, 1.0), (1.0, 0.5), (1.0, 0.7), (1.0, 0.3), (1.0, 0.4), (0.0, 0.1))
    BASE_LOGIT, ENGAGEMENT_GAIN, HISTORY_CONCENTRATION = -4.1, 0.8, 0.3
    SCENE_BIAS = np.array([0.0, 0.0, 0.1, 0.0, 0.15, -0.1])
    GENRE_X_SCENE = np.array(
        [
            [1.8, -0.3, 0.3, -0.75, 0.45, 0.3],
            [-0.3, 1.8, -0.45, 0.3, 0.9, -0.3],
            [0.0, -0.3, 1.65, 0.6, 0.3, 0.15],
            [-0.75, 0.45, 0.6, 1.95, 0.15, 0.3],
            [0.15, -0.45, 0.3, -0.45, 0.0, 1.5],
        ]
    )
    _GENRES = slice(1, 6)
    _ENGAGEMENT = 6

    def __init__(self, *, drift_steps: int | None = None, new_arm_at: int | None = None) -> None:
        n_arms = len(self.SCENES)
        self.name = "artwork"
        self.arm_names = self.SCENES
        self.dim = 7
        self.arm_features = np.ascontiguousarray(
            np.hstack([np.eye(n_arms), np.array(self.SCENE_TRAITS)])
        )
        super().__init__(
            n_arms,
            self.GENRE_X_SCENE,
            np.roll(self.GENRE_X_SCENE, 1, axis=0),
            drift_steps=drift_steps,
            new_arm_at=new_arm_at,
        )

    def contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        X = np.empty((n, self.dim))
        X[:, 0] = 1.0
        concentration = np.full(len(self.GENRES), self.HISTORY_CONCENTRATION)
        X[:, self._GENRES] = rng.dirichlet(concentration, size=n)
        X[:, self._ENGAGEMENT] = rng.beta(2.0, 3.0, size=n)
        return X

    def _logits(self, X: np.ndarray, truth: np.ndarray) -> np.ndarray:
        base = self.BASE_LOGIT + self.ENGAGEMENT_GAIN * X[:, self._ENGAGEMENT]
        return base[:, None] + self.SCENE_BIAS + X[:, self._GENRES] @ truth
