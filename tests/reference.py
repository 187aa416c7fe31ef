"""Slow, obvious NumPy twins of every kernel: explicit inverses, Python loops, SciPy quad.

Each twin follows the paper or the definition as literally as possible, so that a kernel that
agrees with it to 1e-9 is right rather than merely self-consistent.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special, stats


def sums(arms, X, rewards, n_arms, weights=None):
    """S_a = sum w x x^T, b_a = sum w r x, counts_a = sum w."""
    d = X.shape[1]
    w = np.ones(len(arms)) if weights is None else weights
    S, b, counts = np.zeros((n_arms, d, d)), np.zeros((n_arms, d)), np.zeros(n_arms)
    for a, x, r, wi in zip(arms, X, rewards, w, strict=True):
        S[a] += wi * np.outer(x, x)
        b[a] += wi * r * x
        counts[a] += wi
    return S, b, counts


def ridge(arms, X, rewards, n_arms, l2=1.0):
    """Per-arm theta = A^-1 b and A^-1, with A = l2 I + sum x x^T."""
    S, b, _ = sums(arms, X, rewards, n_arms)
    A_inv = np.array([np.linalg.inv(l2 * np.eye(X.shape[1]) + S[a]) for a in range(n_arms)])
    theta = np.array([A_inv[a] @ b[a] for a in range(n_arms)])
    return theta, A_inv


def mean_sums(arms, X, rewards, n_arms, weights=None):
    """Linear TS's extra sums: reward_sums_a = sum w r, x_sums_a = sum w x."""
    w = np.ones(len(arms)) if weights is None else weights
    reward_sums, x_sums = np.zeros(n_arms), np.zeros((n_arms, X.shape[1]))
    for a, x, r, wi in zip(arms, X, rewards, w, strict=True):
        reward_sums[a] += wi * r
        x_sums[a] += wi * x
    return reward_sums, x_sums


def centred_ridge(arms, X, rewards, n_arms, l2=1.0, weights=None):
    """Linear TS with its prior centred on the pooled mean reward m = sum w r / sum w (0 with
    no events): per-arm theta = A^-1 sum w (r - m) x, A^-1 and m; arm a's mean at x is
    m + theta_a . x."""
    w = np.ones(len(arms)) if weights is None else weights
    m = float(np.dot(w, rewards) / w.sum()) if len(arms) and w.sum() > 0 else 0.0
    S, b, _ = sums(arms, X, rewards - m, n_arms, w)
    A_inv = np.array([np.linalg.inv(l2 * np.eye(X.shape[1]) + S[a]) for a in range(n_arms)])
    theta = np.array([A_inv[a] @ b[a] for a in range(n_arms)])
    return theta, A_inv, m


def lints_means(arms, X, rewards, Q, n_arms, l2=1.0, weights=None):
    """Linear TS's mean m + theta_a . q per query and arm (``centred_ridge``)."""
    theta, _, m = centred_ridge(arms, X, rewards, n_arms, l2, weights)
    return np.array([[m + theta[a] @ q for a in range(n_arms)] for q in Q])


def linucb(arms, X, rewards, Q, n_arms, alpha, l2=1.0):
    """Li et al. 2010, Algorithm 1 scores theta_a.x + alpha sqrt(x^T A_a^-1 x) for queries Q."""
    theta, A_inv = ridge(arms, X, rewards, n_arms, l2)
    return np.array(
        [[theta[a] @ q + alpha * np.sqrt(q @ A_inv[a] @ q) for a in range(n_arms)] for q in Q]
    )


def moments(arms, X, rewards, Q, n_arms, l2=1.0):
    """Ridge mean and width sqrt(x^T A^-1 x) per query and arm."""
    theta, A_inv = ridge(arms, X, rewards, n_arms, l2)
    mean = np.array([[theta[a] @ q for a in range(n_arms)] for q in Q])
    sd = np.array([[np.sqrt(q @ A_inv[a] @ q) for a in range(n_arms)] for q in Q])
    return mean, sd


def floor_probabilities(values, mask, epsilon):
    """epsilon uniform over the eligible arms, the rest shared by the tied maxima."""
    n, k = values.shape
    out = np.zeros((n, k))
    for i in range(n):
        m = mask[i if mask.shape[0] > 1 else 0]
        elig = np.flatnonzero(m)
        best = values[i, elig].max()
        ties = elig[values[i, elig] == best]
        out[i, elig] += epsilon / len(elig)
        out[i, ties] += (1 - epsilon) / len(ties)
    return out


def choose_floor(values, mask, epsilon, U):
    """The arm choose_floor picks for uniforms U (n, 2): explore if U0 < epsilon, then U1
    indexes."""
    arms = []
    for i in range(values.shape[0]):
        m = mask[i if mask.shape[0] > 1 else 0]
        elig = np.flatnonzero(m)
        best = values[i, elig].max()
        pool = elig if U[i, 0] < epsilon else elig[values[i, elig] == best]
        arms.append(pool[int(U[i, 1] * len(pool))])
    return np.array(arms)


def normal_cdf(z):
    """Phi(z), SciPy's."""
    return special.ndtr(z)


def normal_pdf(z):
    """phi(z), SciPy's."""
    return stats.norm.pdf(z)


def mills_ratio(a):
    """R(a) = Phi(-a) / phi(a), from SciPy's scaled complementary error function."""
    return math.sqrt(math.pi / 2) * special.erfcx(np.asarray(a) / math.sqrt(2))


def _piecewise_quad(f, lo, hi, points):
    """Adaptive quadrature of f over [lo, hi], split at every point inside it."""
    cuts = np.unique(np.clip(np.concatenate([[lo, hi], points]), lo, hi))
    return sum(integrate.quad(f, u, v, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
               for u, v in zip(cuts[:-1], cuts[1:], strict=True))


def gaussian_max_probabilities(mean, sd):
    """P(arm a has the largest of independent normal draws), by adaptive quadrature split at
    every arm's mean +- j sd, so a narrow arm's CDF step is never stepped over."""
    k = len(mean)
    out = np.zeros(k)
    points = np.concatenate([mean[b] + np.arange(-10, 11) * sd[b] for b in range(k)])
    for a in range(k):
        others = np.arange(k) != a

        # The normal density and CDFs written out (one vectorized CDF call per point, not one
        # scipy.stats call per arm): the same function, cheap enough for ten arms.
        def f(t, a=a, others=others):
            z = (t - mean[a]) / sd[a]
            return math.exp(-0.5 * z * z) / (sd[a] * math.sqrt(2 * math.pi)) * np.prod(
                special.ndtr((t - mean[others]) / sd[others]))

        out[a] = _piecewise_quad(f, mean[a] - 12 * sd[a], mean[a] + 12 * sd[a], points)
    return out


def beta_max_probabilities(alpha, beta):
    """P(arm a has the largest of independent Beta draws): in arm a's quantile u the integral
    int_0^1 prod_{b != a} I_{q_a(u)}(alpha_b, beta_b) du has a bounded integrand, whatever the
    skew or endpoint singularity of a's density."""
    k = len(alpha)
    out = np.zeros(k)
    for a in range(k):
        others = [b for b in range(k) if b != a]

        def g(u, a=a, others=others):
            t = special.betaincinv(alpha[a], beta[a], u)
            return np.prod([special.betainc(alpha[b], beta[b], t) for b in others])

        # The CDF of each other arm turns where a's quantile meets that arm's bulk.
        points = np.concatenate(
            [special.betainc(alpha[a], beta[a], stats.beta.ppf(np.linspace(0.001, 0.999, 41),
                                                               alpha[b], beta[b]))
             for b in others] or [[]]
        )
        out[a] = _piecewise_quad(g, 0.0, 1.0, points)
    return out


def betainc(a, b, x):
    """I_x(a, b) from its definition, int_0^x t^(a-1) (1-t)^(b-1) dt / B(a, b), by adaptive
    quadrature with the endpoint power as an algebraic weight (exact for a or b below 1). The
    side of the mean that x is on is integrated directly, the other as 1 minus its complement."""
    if x <= 0.0 or x >= 1.0:
        return float(x >= 1.0)
    scale = np.exp(-special.betaln(a, b))
    if x <= a / (a + b):
        return scale * integrate.quad(lambda t: (1.0 - t) ** (b - 1.0), 0.0, x, weight="alg",
                                      wvar=(a - 1.0, 0.0), epsabs=0.0, epsrel=1e-13)[0]
    return 1.0 - scale * integrate.quad(lambda t: t ** (a - 1.0), x, 1.0, weight="alg",
                                        wvar=(0.0, b - 1.0), epsabs=0.0, epsrel=1e-13)[0]


def hybrid_kron_sum(C, F):
    """sum_a M_a C_a M_a^T with M_a = kron(I_d, f_a) (p, d), as explicit matrices."""
    d = C.shape[1]
    return sum(_hybrid_m(d, f) @ c @ _hybrid_m(d, f).T for c, f in zip(C, F, strict=True))


def hybrid_kron_vector_sum(c, F):
    """sum_a M_a c_a."""
    return sum(_hybrid_m(len(v), f) @ v for v, f in zip(c, F, strict=True))


def hybrid_kron_vectors(v, F, d):
    """M_a^T v for every arm, (k, d)."""
    return np.array([_hybrid_m(d, f).T @ v for f in F])


def hybrid_kron_forms(P, F, d):
    """M_a^T P M_a for every arm, (k, d, d)."""
    return np.array([_hybrid_m(d, f).T @ P @ _hybrid_m(d, f) for f in F])


def _hybrid_m(d, f):
    """M (d * m, d) with M x = kron(x, f)."""
    return np.kron(np.eye(d), f[:, None])


def hybrid_linucb(arms, X, rewards, Q, F, alpha, l2=1.0):
    """Li et al. 2010, Algorithm 2, step by step with explicit inverses.

    The shared feature of (x, arm a) is z = kron(x, F[a]). Returns the scores of every arm for
    every query row in Q, after learning the events in order.
    """
    k, m = F.shape
    d = X.shape[1]
    p = d * m
    A0, b0 = l2 * np.eye(p), np.zeros(p)
    A = [l2 * np.eye(d) for _ in range(k)]
    B = [np.zeros((d, p)) for _ in range(k)]
    b = [np.zeros(d) for _ in range(k)]
    for a, x, r in zip(arms, X, rewards, strict=True):
        z = np.kron(x, F[a])
        Ai = np.linalg.inv(A[a])
        A0 += B[a].T @ Ai @ B[a]
        b0 += B[a].T @ Ai @ b[a]
        A[a] += np.outer(x, x)
        B[a] += np.outer(x, z)
        b[a] += r * x
        Ai = np.linalg.inv(A[a])
        A0 += np.outer(z, z) - B[a].T @ Ai @ B[a]
        b0 += r * z - B[a].T @ Ai @ b[a]
    A0i = np.linalg.inv(A0)
    beta = A0i @ b0
    out = np.zeros((len(Q), k))
    for i, x in enumerate(Q):
        for a in range(k):
            z = np.kron(x, F[a])
            Ai = np.linalg.inv(A[a])
            theta = Ai @ (b[a] - B[a] @ beta)
            s = (z @ A0i @ z - 2 * z @ A0i @ B[a].T @ Ai @ x + x @ Ai @ x
                 + x @ Ai @ B[a] @ A0i @ B[a].T @ Ai @ x)
            out[i, a] = z @ beta + x @ theta + alpha * np.sqrt(s)
    return out


def hybrid_factors(Sxx, bx, F, l2=1.0):
    """Every factor hybrid LinUCB derives from its per-arm sums, by explicit inverses and
    matrices: A_a^-1, A0^-1, N_a = M_a^T A0^-1 M_a, c_a = l2 A_a^-1 b_a, b0 = sum_a M_a c_a,
    beta = A0^-1 b0, M_a^T beta, theta_a = A_a^-1 (b_a + l2 M_a^T beta) and
    Q_a = A_a^-1 + l2^2 A_a^-1 N_a A_a^-1 (Algorithm 2 with B_a = Sxx_a M_a^T)."""
    k, d = bx.shape
    p = d * F.shape[1]
    M = [_hybrid_m(d, f) for f in F]
    A_inv = np.array([np.linalg.inv(Sxx[a] + l2 * np.eye(d)) for a in range(k)])
    A0, b0 = l2 * np.eye(p), np.zeros(p)
    for a in range(k):
        B = Sxx[a] @ M[a].T
        A0 += M[a] @ Sxx[a] @ M[a].T - B.T @ A_inv[a] @ B
        b0 += M[a] @ bx[a] - B.T @ A_inv[a] @ bx[a]
    A0_inv = np.linalg.inv(A0)
    beta = A0_inv @ b0
    N = np.array([M[a].T @ A0_inv @ M[a] for a in range(k)])
    c = np.array([l2 * A_inv[a] @ bx[a] for a in range(k)])
    Mbeta = np.array([M[a].T @ beta for a in range(k)])
    theta = np.array([A_inv[a] @ (bx[a] + l2 * Mbeta[a]) for a in range(k)])
    Q = np.array([A_inv[a] + l2**2 * A_inv[a] @ N[a] @ A_inv[a] for a in range(k)])
    return {"A_inv": A_inv, "A0_inv": A0_inv, "N": N, "c": c, "b0": b0, "beta": beta,
            "Mbeta": Mbeta, "theta": theta, "Q": Q}


def bart_sums(arms, X, rewards, F, weights):
    """BaRT's S = sum w phi phi^T and b = sum w r phi, phi = [x, f_a, kron(x, f_a)]."""
    Phi = np.array([np.concatenate([x, F[a], np.kron(x, F[a])]) for x, a in zip(X, arms,
                                                                                  strict=True)])
    return sum(w * np.outer(f, f) for f, w in zip(Phi, weights, strict=True)), (
        weights * rewards) @ Phi


def bart(arms, X, rewards, Q, F, l2=1.0):
    """One ridge regression over phi = [x, f_a, kron(x, f_a)]; its mean for every query and arm."""
    def phi(x, a):
        return np.concatenate([x, F[a], np.kron(x, F[a])])

    Phi = np.array([phi(x, a) for x, a in zip(X, arms, strict=True)]).reshape(len(arms), -1)
    p = X.shape[1] + F.shape[1] + X.shape[1] * F.shape[1]
    theta = np.linalg.inv(l2 * np.eye(p) + Phi.T @ Phi) @ (Phi.T @ rewards)
    return np.array([[phi(q, a) @ theta for a in range(len(F))] for q in Q])


def ope_values(pi, qhat, actions, rewards, propensities, clip=np.inf):
    """The four weighted estimators from their textbook formulas, one event at a time."""
    n = len(actions)
    w = np.array([min(pi[i, actions[i]] / propensities[i], clip) for i in range(n)])
    dm = np.array([sum(pi[i, a] * qhat[i, a] for a in range(pi.shape[1])) for i in range(n)])
    return {
        "ips": sum(w[i] * rewards[i] for i in range(n)) / n,
        "snips": sum(w[i] * rewards[i] for i in range(n)) / sum(w),
        "dm": sum(dm) / n,
        "dr": sum(dm[i] + w[i] * (rewards[i] - qhat[i, actions[i]]) for i in range(n)) / n,
    }


def dr_variant_values(pi, qhat, actions, rewards, propensities, clip=np.inf, tau=np.inf,
                      lam=np.inf):
    """SNDR, Switch-DR and DR-OS as Open Bandit Pipeline writes them (``_estimate_round_rewards``
    of SelfNormalizedDoublyRobust, SwitchDoublyRobust, DoublyRobustWithShrinkage), one event at a
    time: SNDR's weights clipped at clip, the other two read the raw weights."""
    n, k = len(actions), pi.shape[1]
    iw = [pi[i, actions[i]] / propensities[i] for i in range(n)]
    clipped = [min(w, clip) for w in iw]
    q_factual = [qhat[i, actions[i]] for i in range(n)]
    baseline = [sum(pi[i, a] * qhat[i, a] for a in range(k)) for i in range(n)]
    mean_iw = sum(clipped) / n
    sndr = [baseline[i] + clipped[i] * (rewards[i] - q_factual[i]) / mean_iw for i in range(n)]
    switch = [baseline[i] + (1 if iw[i] <= tau else 0) * iw[i] * (rewards[i] - q_factual[i])
              for i in range(n)]
    shrunk = [w if lam == np.inf else (0.0 if w == 0 else lam * w / (w**2 + lam)) for w in iw]
    os = [baseline[i] + shrunk[i] * (rewards[i] - q_factual[i]) for i in range(n)]
    return {"sndr": sum(sndr) / n, "switch-dr": sum(switch) / n, "dr-os": sum(os) / n}


def weighted_reward_model(arms, X, rewards, n_arms, fold, weights, l2=1.0):
    """Cross-fitted per-arm ridge of (reward - mean reward) on weighted events: an event of fold
    f is predicted by the arms' models fitted on the other folds (all events with one fold),
    each event weighing weights[i]; explicit inverses. Returns q_hat (n, n_arms)."""
    folds = int(fold.max()) + 1
    qhat = np.empty((len(arms), n_arms))
    for f in range(folds):
        train = fold != f if folds > 1 else fold == f
        w = weights[train]
        mean = (w * rewards[train]).sum() / w.sum()
        S, b, _ = sums(arms[train], X[train], rewards[train] - mean, n_arms, w)
        theta = [np.linalg.inv(l2 * np.eye(X.shape[1]) + S[a]) @ b[a] for a in range(n_arms)]
        for i in np.flatnonzero(fold == f):
            for a in range(n_arms):
                qhat[i, a] = X[i] @ theta[a] + mean
    return qhat


def bootstrap_ratios(U, V, idx):
    """Each resample's ratio of sums, by fancy indexing: (B, m)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        num = np.stack([U[row].sum(axis=0) for row in idx])
        den = np.stack([V[row].sum(axis=0) for row in idx])
        return np.where(den != 0, num / den, np.nan)


def resampled_ratios(U, V, rng, B):
    """The bootstrap of ``B`` resamples drawn all at once, (B, n) indices, then fancy indexing."""
    return bootstrap_ratios(U, V, rng.integers(0, U.shape[0], size=(B, U.shape[0])))


def first_bad_row(pi, tol):
    """The first row with an entry not finite or < 0, or a sum more than tol from 1; -1 if none."""
    bad = ~np.isfinite(pi).all(axis=1) | (pi < 0).any(axis=1) | (np.abs(pi.sum(axis=1) - 1) > tol)
    return int(np.flatnonzero(bad)[0]) if bad.any() else -1


def sample_actions(pi, u):
    """Inverse CDF with searchsorted over each row's cumulative probabilities."""
    return np.array([np.searchsorted(np.cumsum(p), ui * p.sum(), side="right") for p, ui in
                     zip(pi, u, strict=True)])


def replay(chosen, actions, rewards):
    """Li et al. 2011: the mean reward of the events where the target chose the logged action."""
    kept = [r for c, a, r in zip(chosen, actions, rewards, strict=True) if c == a]
    return sum(kept) / len(kept), len(kept)



def decide_batch_ndjson(engine, campaign, requests):
    """The NDJSON bytes of ``engine.decide_batch(campaign, requests)`` as the engine made them
    before its batch path went column-wise: ids, holdout hashes and eligibility a row at a time,
    one ``%`` template per decision for the text. It uses the engine's campaign, encoder, rule
    check and policies, and draws the ids from the engine's seeded id generator (``Engine(
    id_seed=...)``) with the consent bit as the engine does."""
    import hashlib

    import orjson

    from bandit.engine import _rule_holds, decision_draws

    def in_holdout(user_id, fraction):
        digest = hashlib.blake2b("\x1f".join(("holdout", campaign, user_id)).encode(),
                                 digest_size=8).digest()
        return (int.from_bytes(digest, "little") >> 11) * 2.0**-53 < fraction

    c = engine._get(campaign)
    n = len(requests)
    words = engine._id_rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64)
    consent = np.array([r.consent for r in requests], dtype=bool)
    words[:, 1] = words[:, 1] & ~np.uint64(1) | consent.astype(np.uint64)  # the consent bit
    ids = [f"{hi:016x}{lo:016x}" for hi, lo in words.tolist()]
    seeds = words[:, 0] ^ words[:, 1]
    holdout = np.array([in_holdout(r.user_id, c.spec.holdout) for r in requests], dtype=bool)
    base = np.zeros((n, c.context.dim))
    given = np.flatnonzero(consent)
    base[given] = c.context.encode([requests[i].context for i in given])
    chosen, slots = {}, []
    for s in c.slots:
        X = base
        if s.conditioned:
            blocks = [base]
            for prev, width in s.conditioned:
                onehot = np.zeros((n, width))
                onehot[np.arange(n), np.minimum(chosen[prev], width - 1)] = 1.0
                blocks.append(onehot)
            X = np.ascontiguousarray(np.hstack(blocks))
        k = len(s.arm_ids)
        arms, probs = np.full(n, s.default, dtype=np.int64), np.ones(n)
        mean, bonus = np.zeros(n), np.zeros(n)
        if not c.paused:
            eligible = None
            if s.spec.eligibility:
                eligible = np.ones((n, k), dtype=bool)
                for rule in s.spec.eligibility:
                    for i, r in enumerate(requests):
                        value = r.context.get(rule.feature, r.segments.get(rule.feature))
                        if not _rule_holds(rule, value):
                            eligible[i, s.arm_index[rule.arm]] = False
                eligible &= s.policy.active[None, :]
            live = ~holdout
            if eligible is not None:
                live &= eligible.any(axis=1)
            draws = decision_draws(seeds, s.index, 2 + k)
            for policy, rows, Xp in ((s.policy, live & consent, X),
                                     (s.fallback, live & ~consent, np.ones((n, 1)))):
                idx = np.flatnonzero(rows)
                if idx.size == 0:
                    continue
                Xp = Xp if policy.dim else Xp[:, :0]
                m = None if eligible is None else eligible[idx]
                a, p = policy.choose_many(Xp[idx], eligible=m, draws=draws[idx],
                                          with_propensities=True)
                arms[idx], probs[idx] = a, p
                mean[idx], bonus[idx] = policy.expectation(Xp[idx], a)
        explanations = [None] * n
        skip = holdout | ~consent
        ask = [i for i, r in enumerate(requests) if r.explain and not skip[i]]
        contributions = getattr(s.policy, "contributions", None)
        if ask and contributions is not None:
            for row, i in zip(contributions(X[ask], arms[ask]), ask, strict=True):
                top = np.argsort(-np.abs(row))[:3]
                explanations[i] = [{"feature": s.columns[j], "value": float(row[j])}
                                   for j in top if row[j]]
        chosen[s.spec.name] = arms
        slots.append((s.spec.name, list(s.arm_ids), arms, probs, mean, bonus, explanations))
    lines = []
    for i in range(n):
        lines.append(orjson.dumps({
            "decision_id": ids[i], "campaign": campaign, "user_id": requests[i].user_id,
            "holdout": bool(holdout[i]), "model_version": c.version,
            "slots": [{"slot": name, "arm": arm_ids[arms[i]], "propensity": float(p[i]),
                       "expected_reward": float(m[i]), "exploration_bonus": float(b[i]),
                       "explanation": ex[i]}
                      for name, arm_ids, arms, p, m, b, ex in slots]}))
    return b"".join(line + b"\n" for line in lines)


def outcome_tallies(events, types):
    """The engine's outcome tallies of joined ``events`` (one campaign), one decision at a
    time: per slot {(arm, group): (n, reached, events)} and {(segment, value): ...}, and per
    group for the campaign, each dict in order of first appearance; ``types`` the outcome
    types in order. reached[k]: decisions with at least one event of types[k]."""
    groups = ("personalized", "holdout")

    def add(table, key, outcomes):
        n, reached, counts = table.get(key, (0, [0] * len(types), [0] * len(types)))
        table[key] = (n + 1, [r + (outcomes.get(t, 0) > 0)
                              for r, t in zip(reached, types, strict=True)],
                      [c + outcomes.get(t, 0) for c, t in zip(counts, types, strict=True)])

    slots, campaign = {}, {}
    for e in events:
        group = groups[int(e.holdout)]
        add(campaign, group, e.outcomes)
        for slot, choice in e.slots.items():
            mine = slots.setdefault(slot, ({}, {}))
            add(mine[0], (choice.arm, group), e.outcomes)
            for key in e.segments.items():
                add(mine[1], key, e.outcomes)
    return slots, campaign


def clustered_difference(groups, outcomes, clusters):
    """Rate of group 1 minus rate of group 0 (decision i: group ``groups[i]`` in {0, 1},
    outcome ``outcomes[i]``, cluster ``clusters[i]``) and its cluster-robust variance, one
    cluster at a time: G / (G - 1) * sum over clusters of the squared influence
    (sum over the cluster's group-1 decisions of (y - p1) / N1, minus the same for group 0)."""
    groups, outcomes, clusters = map(np.asarray, (groups, outcomes, clusters))
    big = [np.sum(groups == k) for k in (0, 1)]
    p = [outcomes[groups == k].sum() / big[k] for k in (0, 1)]
    total = 0.0
    labels = sorted(set(clusters.tolist()))
    for c in labels:
        u = 0.0
        for g, y in zip(groups[clusters == c], outcomes[clusters == c], strict=True):
            u += (y - p[g]) / big[g] * (1 if g == 1 else -1)
        total += u * u
    return p[1] - p[0], len(labels) / (len(labels) - 1) * total


def gamma_draw(shape, normals, uniforms):
    """Marsaglia and Tsang (2000), as written in the paper, reading the iterators ``normals``
    and ``uniforms``: (g, e) with the draw g * exp(e) (e = log(U) / shape for shape < 1)."""
    boost = shape < 1
    d = (shape + 1 if boost else shape) - 1 / 3
    c = 1 / math.sqrt(9 * d)
    while True:
        x = next(normals)
        v = (1 + c * x) ** 3
        if v <= 0:
            continue
        u = next(uniforms)
        if u < 1 - 0.0331 * x**4 or math.log(u) < 0.5 * x**2 + d * (1 - v + math.log(v)):
            break
    return d * v, (math.log(next(uniforms)) / shape if boost else 0.0)


def thompson_pick(successes, failures, alpha, beta, now, mask, normals, uniforms):
    """Beta TS's arm: the eligible arm with the largest logit log(X / Y) of a Beta draw; returns
    the arm and how many normals and uniforms it read."""
    normals, uniforms = list(normals), list(uniforms)
    it_n, it_u = iter(normals), iter(uniforms)
    best, arm = -np.inf, -1
    for i in np.flatnonzero(mask):
        gx, ex = gamma_draw(alpha + now * successes[i], it_n, it_u)
        gy, ey = gamma_draw(beta + now * failures[i], it_n, it_u)
        y = math.log(gx / gy) + ex - ey
        if arm < 0 or y > best:
            best, arm = y, int(i)
    return arm, len(normals) - len(list(it_n)), len(uniforms) - len(list(it_u))


def group_counts(codes, size):
    """Rows per group and each group's first row (len(codes) where none), one row at a time."""
    counts, first = [0] * size, [len(codes)] * size
    for i, k in enumerate(codes):
        first[k] = min(first[k], i)
        counts[k] += 1
    return counts, first


def group_reward_sums(codes, rewards, total, squares):
    """total[k] + r and squares[k] + r * r, row after row, as Python floats."""
    total, squares = [float(t) for t in total], [float(q) for q in squares]
    for k, r in zip(codes, rewards, strict=True):
        total[k] += float(r)
        squares[k] += float(r) * float(r)
    return total, squares


def group_outcome_sums(codes, outcomes, size, K):
    """Per group and each of K outcome types: rows with a nonzero count, and the counts' sum."""
    reached, events = [[0] * K for _ in range(size)], [[0] * K for _ in range(size)]
    for k, row in zip(codes, outcomes, strict=True):
        for t, c in enumerate(row):
            reached[k][t] += c != 0
            events[k][t] += int(c)
    return reached, events


def first_equal(data, starts, ends):
    """Per text data[starts[i]:ends[i]], the first text equal to it (a dict of the bytes)."""
    first: dict[bytes, int] = {}
    blob = bytes(data)
    return np.array([first.setdefault(blob[a:b], i)
                     for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True))],
                    dtype=np.int64)
