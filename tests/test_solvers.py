"""Each closed-form solver against an independently built least-squares / KKT solution."""

from __future__ import annotations

import pytest
import torch

from editprobe.editing.lte.solvers import (
    NumericalError,
    alphaedit_delta,
    emmet_delta,
    memit_delta,
    nullspace_projector,
    rome_delta,
)

D, D_FF, N, N_TOK = 6, 12, 4, 40


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _keys_and_c0(seed: int = 0, n_tok: int = N_TOK):
    g = _gen(seed)
    X = torch.randn(D_FF, n_tok, generator=g, dtype=torch.float64)  # preserved keys, as columns
    C0 = X @ X.T / n_tok
    K = torch.randn(D_FF, N, generator=g, dtype=torch.float64)
    R = torch.randn(D, N, generator=g, dtype=torch.float64)
    Kp = torch.randn(D_FF, 3, generator=g, dtype=torch.float64)
    return X, C0, K, R, Kp


def _lstsq_rows(blocks_a: list[torch.Tensor], blocks_b: list[torch.Tensor]) -> torch.Tensor:
    """Solve min ‖A Δᵀ − B‖ for Δ with A, B stacked from blocks (rows = constraints)."""
    A, B = torch.cat(blocks_a), torch.cat(blocks_b)
    return torch.linalg.lstsq(A, B, driver="gelsd").solution.T


def _low_rank_c0(rank: int, seed: int = 1):
    """C0 = Q diag(s) Qᵀ with D_FF − rank eigenvalues far below 2e-2: a known null space."""
    g = _gen(seed)
    Q, _ = torch.linalg.qr(torch.randn(D_FF, D_FF, generator=g, dtype=torch.float64))
    s = torch.cat([torch.rand(rank, generator=g, dtype=torch.float64) + 0.5,
                   torch.rand(D_FF - rank, generator=g, dtype=torch.float64) * 1e-4])
    return Q @ torch.diag(s) @ Q.T, Q[:, rank:], s


# ---------------------------------------------------------------- MEMIT


def test_memit_matches_stacked_least_squares():
    X, C0, K, R, Kp = _keys_and_c0()
    lam, alpha = 3.0, 0.5
    delta = memit_delta(R, K, C0, lam, Cp=Kp @ Kp.T, alpha=alpha)
    # ‖Δ C0^{1/2}‖² = ‖Δ X‖²/N_tok, so the preserved rows are √(λ/N_tok)·Xᵀ: no matrix root needed.
    expected = _lstsq_rows(
        [(lam / N_TOK) ** 0.5 * X.T, K.T, Kp.T, alpha**0.5 * torch.eye(D_FF, dtype=torch.float64)],
        [torch.zeros(N_TOK, D, dtype=torch.float64), R.T, torch.zeros(3, D, dtype=torch.float64),
         torch.zeros(D_FF, D, dtype=torch.float64)],
    )
    assert delta.dtype == torch.float32 and delta.shape == (D, D_FF)
    torch.testing.assert_close(delta.double(), expected, atol=1e-6, rtol=1e-5)


def test_memit_without_c0_is_the_no_k0_variant():
    _, _, K, R, Kp = _keys_and_c0()
    delta = memit_delta(R, K, None, lam=1e4, Cp=Kp @ Kp.T, alpha=10.0)
    expected = _lstsq_rows(
        [K.T, Kp.T, 10.0**0.5 * torch.eye(D_FF, dtype=torch.float64)],
        [R.T, torch.zeros(3, D, dtype=torch.float64), torch.zeros(D_FF, D, dtype=torch.float64)],
    )
    torch.testing.assert_close(delta.double(), expected, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- EMMET


def _kkt_solution(C: torch.Tensor, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """min tr(Δ C Δᵀ) s.t. Δ K = R, from the KKT system [[C, K], [Kᵀ, 0]] [Δᵀ; Λ] = [0; Rᵀ]."""
    n = K.shape[1]
    kkt = torch.cat([torch.cat([C, K], 1), torch.cat([K.T, torch.zeros(n, n, dtype=C.dtype)], 1)])
    rhs = torch.cat([torch.zeros(C.shape[0], R.shape[0], dtype=C.dtype), R.T])
    return torch.linalg.solve(kkt, rhs)[: C.shape[0]].T


def test_emmet_with_zero_mu_is_the_constrained_minimum():
    _, C0, K, R, Kp = _keys_and_c0()
    lam, nu = 2.0, 0.3
    Cp = Kp @ Kp.T
    delta = emmet_delta(R, K, C0, lam, Cp=Cp, mu=0.0, nu=nu)
    expected = _kkt_solution(lam * C0 + Cp + nu * torch.eye(D_FF, dtype=torch.float64), K, R)
    torch.testing.assert_close(delta.double(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(delta.double() @ K, R, atol=1e-5, rtol=1e-5)


def test_emmet_constraint_error_shrinks_with_mu():
    _, C0, K, R, _ = _keys_and_c0()
    errors = [float(torch.linalg.norm(emmet_delta(R, K, C0, 1.0, mu=mu).double() @ K - R)) for mu in (1.0, 0.1, 0.01, 0.001)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 1e-2 and errors[-1] < errors[0] / 100


def test_emmet_mu_is_a_penalty_equal_to_memit_with_lam_times_mu():
    _, C0, K, R, _ = _keys_and_c0()
    torch.testing.assert_close(emmet_delta(R, K, C0, 5.0, mu=0.1), memit_delta(R, K, C0, 0.5), atol=1e-6, rtol=1e-5)


def test_emmet_single_edit_ignores_mu_and_meets_the_constraint():
    _, C0, K, R, _ = _keys_and_c0()
    delta = emmet_delta(R[:, :1], K[:, :1], C0, 1.0, mu=10.0)
    torch.testing.assert_close(delta.double() @ K[:, :1], R[:, :1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(delta.double(), _kkt_solution(C0, K[:, :1], R[:, :1]), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- AlphaEdit and the projector


def test_nullspace_projector_finds_the_known_null_space():
    C0, U_null, s = _low_rank_c0(rank=8)
    P, info = nullspace_projector(C0, threshold=2e-2)
    torch.testing.assert_close(P.double(), U_null @ U_null.T, atol=1e-6, rtol=0)
    assert info.dim == D_FF - 8 and info.mode == "absolute" and info.threshold == 2e-2
    assert info.energy_fraction == pytest.approx(float(s[8:].sum() / s.sum()), rel=1e-6)


def test_nullspace_modes_relative_and_energy():
    s = torch.tensor([10.0, 5.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=_gen(3), dtype=torch.float64))
    C0 = Q @ torch.diag(s) @ Q.T
    _, rel = nullspace_projector(C0, threshold=0.06, mode="relative")  # < 0.6: {0.5, 0.2, 0.1}
    assert rel.dim == 3
    # energy share of the smallest: 0.1/16.8, 0.3/16.8, 0.8/16.8 = 0.0476 -> two fit under 3%.
    P, en = nullspace_projector(C0, threshold=0.03, mode="energy")
    assert en.dim == 2 and en.energy_fraction == pytest.approx(0.3 / 16.8)
    torch.testing.assert_close(P.double(), Q[:, 4:] @ Q[:, 4:].T, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="mode"):
        nullspace_projector(C0, mode="bogus")


def test_alphaedit_matches_least_squares_restricted_to_the_null_space():
    C0, U_null, _ = _low_rank_c0(rank=8)
    _, _, K, R, Kp = _keys_and_c0()
    P, _ = nullspace_projector(C0)
    alpha = 10.0
    delta = alphaedit_delta(R, K, P, Cp=Kp @ Kp.T, alpha=alpha)
    # Δ = G Ûᵀ with G minimising ‖G ÛᵀK − R‖² + ‖G ÛᵀKp‖² + α‖G‖².
    r = U_null.shape[1]
    G = _lstsq_rows(
        [K.T @ U_null, Kp.T @ U_null, alpha**0.5 * torch.eye(r, dtype=torch.float64)],
        [R.T, torch.zeros(3, D, dtype=torch.float64), torch.zeros(r, D, dtype=torch.float64)],
    )
    torch.testing.assert_close(delta.double(), G @ U_null.T, atol=1e-5, rtol=1e-4)
    # The update leaves the preserved keys alone.
    rel = torch.linalg.norm(delta.double() @ C0) / (torch.linalg.norm(delta.double()) * torch.linalg.norm(C0))
    assert rel < 1e-4
    assert torch.linalg.norm(delta) > 1e-3  # and it is not trivially zero


def test_alphaedit_rejects_nonpositive_alpha():
    _, C0, K, R, _ = _keys_and_c0()
    with pytest.raises(ValueError, match="alpha"):
        alphaedit_delta(R, K, torch.eye(D_FF), alpha=0.0)


# ---------------------------------------------------------------- ROME


def test_rome_is_rank_one_and_maps_the_key_to_the_residual():
    g = _gen(5)
    k_mean, k_plain = torch.randn(D_FF, generator=g), torch.randn(D_FF, generator=g)
    v_star, m_plain = torch.randn(D, generator=g), torch.randn(D, generator=g)
    _, C0, *_ = _keys_and_c0()
    delta = rome_delta(k_mean, k_plain, v_star, m_plain, C=C0)
    sv = torch.linalg.svdvals(delta.double())
    assert sv[1] < 1e-6 * sv[0]
    torch.testing.assert_close(delta @ k_plain, v_star - m_plain, atol=1e-5, rtol=1e-5)
    # The paper's form: (v* − m)(C⁻¹k̄)ᵀ / (kᵀ C⁻¹ k̄), with C⁻¹k̄ from least squares.
    cinv_k = torch.linalg.lstsq(C0, k_mean.double().unsqueeze(1)).solution.squeeze(1)
    paper = torch.outer((v_star - m_plain).double(), cinv_k) / (k_plain.double() @ cinv_k)
    torch.testing.assert_close(delta.double(), paper, atol=1e-6, rtol=1e-5)


def test_rome_without_c_uses_the_mean_key_direction():
    g = _gen(6)
    k_mean, k_plain = torch.randn(D_FF, generator=g), torch.randn(D_FF, generator=g)
    v_star, m_plain = torch.randn(D, generator=g), torch.randn(D, generator=g)
    delta = rome_delta(k_mean, k_plain, v_star, m_plain)
    expected = torch.outer(v_star - m_plain, k_mean) / (k_plain @ k_mean)
    torch.testing.assert_close(delta, expected, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- numerics


def _calls(C0, K, R):
    k, v = K[:, 0], R[:, 0]
    return {
        "memit": lambda **kw: memit_delta(R, K, C0, 1.0, **kw),
        "emmet": lambda **kw: emmet_delta(R, K, C0, 1.0, **kw),
        "alphaedit": lambda **kw: alphaedit_delta(R, K, torch.eye(D_FF, dtype=C0.dtype), **kw),
        "rome": lambda **kw: rome_delta(k, k, v, v * 0.5, C=C0, **kw),
    }


@pytest.mark.parametrize("name", ["memit", "emmet", "alphaedit", "rome"])
def test_nan_input_raises_naming_the_layer(name):
    _, C0, K, R, _ = _keys_and_c0()
    K = K.clone()
    K[3, 0] = float("nan")
    with pytest.raises(NumericalError, match="layer 7"):
        _calls(C0, K, R)[name](layer=7)


def test_inf_in_c0_and_in_the_result_raise():
    _, C0, K, R, _ = _keys_and_c0()
    bad = C0.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(NumericalError, match="layer 2: C0"):
        memit_delta(R, K, bad, 1.0, layer=2)
    with pytest.raises(NumericalError, match="layer 4: C0"):
        nullspace_projector(bad, layer=4)
    # Finite float64 inputs whose update overflows float32: the result check must catch it.
    with pytest.raises(NumericalError, match="layer 5: the update"):
        memit_delta(R * 1e300, K, C0, 1.0, layer=5)


def test_singular_system_raises_numerical_error():
    _, _, K, R, _ = _keys_and_c0()
    K = K.clone()
    K[0] = 0.0  # a key coordinate no key uses: with no C0 and no ridge the system is exactly singular
    with pytest.raises(NumericalError, match="layer 1: the MEMIT system is singular"):
        memit_delta(R, K, None, 1.0, layer=1)


@pytest.mark.parametrize("name", ["memit", "emmet", "alphaedit", "rome"])
def test_float32_and_float64_solves_agree(name):
    _, C0, K, R, _ = _keys_and_c0()
    calls = _calls(C0.float(), K.float(), R.float())
    d64 = calls[name](solve_dtype=torch.float64)
    d32 = calls[name](solve_dtype=torch.float32)
    assert d64.dtype == d32.dtype == torch.float32
    torch.testing.assert_close(d32, d64, atol=1e-4, rtol=1e-3)
    assert not torch.equal(d32, d64) or name == "rome"  # the dtype really changed the arithmetic


def test_shape_errors_are_clear():
    _, C0, K, R, _ = _keys_and_c0()
    with pytest.raises(ValueError, match="same n"):
        memit_delta(R[:, :2], K, C0, 1.0)
    with pytest.raises(ValueError, match="C0 must be"):
        memit_delta(R, K, C0[:5, :5], 1.0)


def test_default_solve_dtype_is_float64_where_the_device_has_it():
    from editprobe.editing.lte.solvers import default_solve_dtype

    assert default_solve_dtype("cpu") == default_solve_dtype("cuda") == torch.float64
    assert default_solve_dtype("mps") == torch.float32
