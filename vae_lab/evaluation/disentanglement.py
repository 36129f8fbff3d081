"""Whether single latent dimensions follow single factors of variation: MIG, DCI and SAP between
codes (N, D), a model's posterior means E_q[z|x] of N images, and factors (N, K) measured on the same
images (vae_lab.evaluation.morphometrics; the class), each a score in [0, 1], 1 where every factor has a latent
dimension of its own (docs/metrics.md).

Continuous factors and codes are discretized, where a metric needs it, into ``BINS`` bins of equal
count, so the scores do not change when a code or factor is stretched or bent monotonically; a
discrete factor (the class) keeps its values. DCI and SAP fit predictors on one half of the images
(a random half, from ``seed``) and judge them on the other.
"""
import numpy as np

from vae_lab.errors import VaeLabError

BINS = 20  # equal-count bins per continuous variable (as disentanglement_lib discretizes codes)
MIN_IMAGES = 1000  # 20 x 20 joint bins need this many for a mutual-information bias below 0.06 of log 20
# the morphometrics Castro et al. (2019, section 4) compare latents with; area is about length x thickness
FACTORS = ("thickness", "length", "slant", "width", "height")
CLASS = "class"


def bin_edges(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The bins - 1 inner edges that cut (N,) values into bins of equal count."""
    return np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])


def discretized(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(N,) values -> (N,) bin indices 0..bins-1 of equal count (ties share a bin)."""
    return np.searchsorted(bin_edges(values, bins), values, side="right")


def entropy(labels: np.ndarray) -> float:
    """H of the empirical distribution of integer labels (N,), in nats."""
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) of two integer label arrays (N,) from their joint histogram, in nats."""
    return entropy(a) + entropy(b) - entropy(a * (b.max() + 1) + b)


def as_labels(factors: np.ndarray, discrete: list[bool], bins: int = BINS) -> list[np.ndarray]:
    """Each column of factors (N, K) as integer labels: bins of equal count, or its own values if discrete."""
    return [np.unique(column, return_inverse=True)[1] if is_discrete else discretized(column, bins)
            for column, is_discrete in zip(factors.T, discrete)]


def normalized_mutual_information(codes: np.ndarray, factors: np.ndarray, discrete: list[bool],
                                  bins: int = BINS) -> np.ndarray:
    """(D, K): I(z_d; v_k) / H(v_k), the share of factor k's entropy that code dimension d carries
    (0 for a factor of one value)."""
    code_labels = [discretized(column, bins) for column in codes.T]
    matrix = np.zeros((codes.shape[1], factors.shape[1]))
    for k, factor in enumerate(as_labels(factors, discrete, bins)):
        h = entropy(factor)
        for d, code in enumerate(code_labels):
            matrix[d, k] = mutual_information(code, factor) / h if h > 0 else 0.0
    return matrix


def gaps(scores: np.ndarray) -> np.ndarray:
    """(D, K) -> (K,): per factor, the largest score over the code dimensions minus the second largest."""
    ranked = np.sort(scores, axis=0)[::-1]
    return ranked[0] - ranked[1] if len(ranked) > 1 else ranked[0]


def mig(codes: np.ndarray, factors: np.ndarray, discrete: list[bool], bins: int = BINS) -> float:
    """Mutual information gap (Chen, Li, Grosse & Duvenaud 2018, eq. 6):

        MIG = 1/K Σ_k (I(z_j(k); v_k) − max_{d ≠ j(k)} I(z_d; v_k)) / H(v_k),  j(k) = argmax_d I(z_d; v_k)

    the gap, in shares of each factor's entropy, between the code dimension that carries most of a
    factor and the next; 1 when each factor lives in one dimension alone, 0 when it is spread or absent."""
    return float(gaps(normalized_mutual_information(codes, factors, discrete, bins)).mean())


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random split of n indices into a training and a test half."""
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2:]


def dci(codes: np.ndarray, factors: np.ndarray, discrete: list[bool], seed: int = 0) -> dict:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018, section 3).

    A random forest per factor predicts it from all codes (regression; classification for a discrete
    factor); its impurity importances form R (D, K), each column summing to 1. With
    P_dk = R_dk / Σ_k R_dk and entropies in base K (over factors) or D (over code dimensions):

        disentanglement  D = Σ_d ρ_d (1 − H_K(P_d·)),  ρ_d = Σ_k R_dk / Σ_dk R_dk
        completeness     C = 1/K Σ_k (1 − H_D(R_·k / Σ_d R_dk))
        informativeness  I = 1/K Σ_k score_k on the held-out half: R² of a continuous factor
                         (1 − the normalized squared error), accuracy of a discrete one

    D is 1 when each code dimension predicts at most one factor, C when each factor is predicted by
    one dimension, I when the codes predict the factors fully. Returns those three floats under
    'disentanglement', 'completeness', 'informativeness' and 'importance', R as a (D, K) array.
    """
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor  # 0.6 s: only when measured

    n_codes, n_factors = codes.shape[1], factors.shape[1]
    train, test = halves(len(codes), seed)
    importance, scores = np.zeros((n_codes, n_factors)), []
    for k, is_discrete in enumerate(discrete):
        forest = (RandomForestClassifier if is_discrete else RandomForestRegressor)(
            n_estimators=20, max_depth=8, min_samples_leaf=5, max_features=None, random_state=seed)
        forest.fit(codes[train], factors[train, k])
        importance[:, k] = forest.feature_importances_
        scores.append(forest.score(codes[test], factors[test, k]))  # accuracy or R²
    totals = importance.sum(1)
    per_code = importance / np.maximum(totals[:, None], 1e-12)
    disentanglement = 1 - entropy_of_rows(per_code, n_factors)
    weights = totals / max(totals.sum(), 1e-12)
    per_factor = importance / np.maximum(importance.sum(0, keepdims=True), 1e-12)
    completeness = 1 - entropy_of_rows(per_factor.T, n_codes)
    return {"disentanglement": float((weights * disentanglement).sum()), "completeness": float(completeness.mean()),
            "informativeness": float(np.mean(scores)), "importance": importance}


def entropy_of_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy of each row of p (rows sum to 1, or to 0 for a row of nothing), in log base ``base``;
    a row of nothing counts as spread evenly (entropy 1), as it singles out nothing."""
    if base < 2:
        return np.zeros(len(p))
    logs = np.log(np.where(p > 0, p, 1.0))
    h = -(p * logs).sum(1) / np.log(base)
    return np.where(p.sum(1) > 0, h, 1.0)


def sap(codes: np.ndarray, factors: np.ndarray, discrete: list[bool], seed: int = 0) -> float:
    """Separated attribute predictability (Kumar, Sattigeri & Balakrishnan 2018, section 4):

        SAP = 1/K Σ_k (S_(1)k − S_(2)k)

    the gap between the best and the second-best code dimension at predicting factor k alone: S_dk
    is the R² of a straight line from z_d to a continuous v_k (the squared correlation), and for a
    discrete v_k the held-out accuracy of ``binned_accuracy``. 1 when each factor is predicted by
    one dimension, the others useless."""
    train, test = halves(len(codes), seed)
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for k, is_discrete in enumerate(discrete):
        for d in range(codes.shape[1]):
            z, v = codes[:, d], factors[:, k]
            if is_discrete:
                scores[d, k] = binned_accuracy(z, np.unique(v, return_inverse=True)[1], train, test)
            elif z.std() > 0 and v.std() > 0:
                scores[d, k] = np.corrcoef(z, v)[0, 1] ** 2
    return float(gaps(scores).mean())


def binned_accuracy(z: np.ndarray, classes: np.ndarray, train: np.ndarray, test: np.ndarray, bins: int = BINS) -> float:
    """How well one code dimension z (N,) tells integer classes (N,) apart: z is cut into ``bins``
    bins of equal count on the ``train`` images, each bin predicts its most common class there, and
    the share of ``test`` images predicted right is returned."""
    edges = bin_edges(z[train], bins)
    counts = np.zeros((bins, classes.max() + 1))
    np.add.at(counts, (np.searchsorted(edges, z[train], side="right"), classes[train]), 1)
    predicted = counts.argmax(1)[np.searchsorted(edges, z[test], side="right")]
    return float((predicted == classes[test]).mean())


def factor_table(morphometrics: dict[str, np.ndarray], labels: np.ndarray | None) -> tuple[list[str], np.ndarray, list[bool]]:
    """(names, values (N, K), discrete) of the factors: the morphometrics of ``FACTORS`` and, when
    every image has a label (>= 0) and there are two classes or more, the class."""
    names = list(FACTORS)
    columns = [np.asarray(morphometrics[name], dtype=np.float64) for name in names]
    if labels is not None and (labels >= 0).all() and len(np.unique(labels)) > 1:
        names.append(CLASS)
        columns.append(np.asarray(labels, dtype=np.float64))
    return names, np.stack(columns, 1), [name == CLASS for name in names]


def disentanglement_scores(codes: np.ndarray, morphometrics: dict[str, np.ndarray], labels: np.ndarray | None = None,
            seed: int = 0) -> dict:
    """MIG, DCI and SAP of codes (N, D) against the factors of ``factor_table``, for metrics.json:
    'mig', 'dci_disentanglement', 'dci_completeness', 'dci_informativeness', 'sap' (floats in [0, 1]),
    'factors' (the K names), 'factor_mi' (D x K: ``normalized_mutual_information``) and
    'factor_per_dim' (the factor each dimension carries most of; None for one that carries none,
    as a constant dimension). Images whose morphometrics are
    NaN (no stroke) are left out; VaeLabError when fewer than ``MIN_IMAGES`` remain."""
    names, factors, discrete = factor_table(morphometrics, labels)
    codes = np.asarray(codes, dtype=np.float64)
    if len(codes) != len(factors):
        raise VaeLabError(f"{len(codes)} codes for {len(factors)} images' factors; they must be of the same images")
    measured = np.isfinite(factors).all(1)
    codes, factors = codes[measured], factors[measured]
    if len(codes) < MIN_IMAGES:
        raise VaeLabError(f"at least {MIN_IMAGES} images with a stroke are needed, {len(codes)} given")
    shares = normalized_mutual_information(codes, factors, discrete)
    dci_result = dci(codes, factors, discrete, seed)
    return {"mig": float(gaps(shares).mean()), "dci_disentanglement": dci_result["disentanglement"],
            "dci_completeness": dci_result["completeness"], "dci_informativeness": dci_result["informativeness"],
            "sap": sap(codes, factors, discrete, seed), "factors": names, "factor_mi": shares.round(4).tolist(),
            "factor_per_dim": [names[k] if row.max() > 0 else None for k, row in zip(shares.argmax(1), shares)]}
