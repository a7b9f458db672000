"""Diffusion in the pore phase: tortuosity factor (steady state) and impedance (frequency domain).

Steady state (:func:`tortuosity`): diffusion in the pore voxels of a box: C = 1 on the
face at index 0 of ``axis``, C = 0 on the face at the far end, zero normal flux on the pore walls and on
the four side faces. Finite volumes on the voxel grid as in TauFactor (Cooper et al.,
SoftwareX 5 (2016) 203): each pair of face-adjacent pore voxels is joined by a
conductance D h, and a voxel on a Dirichlet face by 2 D h (its centre is half a voxel
from the face). With the total flux J through the box of N voxels along ``axis`` and a
cross-section of A voxels,

    D_eff / D = J N / (A * 1),        tau = eps D / D_eff,

where eps is the pore volume fraction of the whole box (TauFactor's ``VF``). Straight
channels give tau = 1 whatever their porosity.

Pores that do not connect the two faces through face-adjacent voxels carry no
steady flux. They are found by labelling (6-connectivity), reported
(``non_percolating_fraction``) and left out of the linear system, which would
otherwise be singular (an isolated cluster has no Dirichlet value to fix its level).

Solver: the graph Laplacian is assembled with scipy.sparse and solved by classical
(Ruge-Stueben) algebraic multigrid from pyamg as a preconditioner for conjugate
gradients (AMG_OPTIONS). On 100^3 random media this needs about 12 cycles to a
relative residual of 1e-6 and a fraction of TauFactor's CPU time
(benchmarks/bench_tomo_quantify.py); smoothed aggregation converges in as many cycles
but its setup costs several times more.
``solver="direct"`` (SuperLU) gives the over-converged reference used in the tests.

Frequency domain (:func:`impedance`, PHYSICS.md section 6): in the pore phase of a cuboid
of length L (along ``axis``) and face area A, solve

    del^2 C - (i omega / D) C = 0,    C = 1 at the inlet face, C = 0 at the outlet face,

with zero normal flux on the pore walls and the side faces. The impedance is the inverse
of the diffusive flux through the inlet, Z = 1 / J_in, normalised Z~ = Z A D / L. The
characteristic angular frequency is omega_c = D / L^2.

Discretisation: the finite-volume graph above (unit
conductances between face-adjacent pore voxels, 2 to a Dirichlet face), with a storage
term i omega h^2 / D on every voxel. With voxel size h and N voxels along the axis,
omega h^2 / D = (omega / omega_c) / N^2, so the normalised spectrum depends only on
omega / omega_c and the geometry. At omega -> 0, Z~ -> 1 / (D_eff / D) = tau / eps.

For straight channels of porosity eps the exact solution is C = sinh(k (L - x)) /
sinh(k L) with k = sqrt(i omega / D), so J_in = eps A D k coth(k L) and

    Z~ = tanh(k L) / (eps k L):

1/eps at low frequency, and the 45-degree Warburg line Z~ = 1 / (eps sqrt(i omega / omega_c))
at high frequency (:func:`straight_channel_impedance`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from ..errors import ConfigError

#: pyamg Ruge-Stueben options: direct interpolation halves the setup of the default
#: (classical) on random pore volumes for the same number of CG iterations (100^3: setup
#: 1.2 s against 2.6 s CPU, 11-12 iterations to rtol 1e-6); a forward then a backward
#: Gauss-Seidel sweep keep the V-cycle symmetric, as CG needs
AMG_OPTIONS = {"max_coarse": 500, "interpolation": "direct",
               "presmoother": ("gauss_seidel", {"sweep": "forward"}),
               "postsmoother": ("gauss_seidel", {"sweep": "backward"})}

#: 6-connectivity: diffusion passes through voxel faces only
FACE_CONNECTIVITY = ndi.generate_binary_structure(3, 1)


@dataclass
class TortuosityResult:
    """Tortuosity factor of a pore phase along one axis.

    Attributes
    ----------
    tau : float
        Tortuosity factor eps D / D_eff (inf when no pore path joins the two faces).
    d_eff : float
        Effective diffusivity D_eff = d_bulk eps / tau, in the units of ``d_bulk``.
    porosity : float
        eps, pore volume fraction of the box (all pores, as TauFactor's VF).
    axis : int
        Axis of the volume (z, y, x) along which the faces C = 1 and C = 0 lie.
    d_bulk : float
        Bulk diffusivity D the figures are scaled by.
    relative_diffusivity : float
        D_eff / D.
    percolating_porosity : float
        Volume fraction of the pores that join both faces (the solved domain).
    non_percolating_fraction : float
        Share of the pore volume that does not join both faces (excluded; carries no flux).
    flux_mismatch : float
        |J_in - J_out| / J, a check of convergence (0 for an exact solve).
    iterations : int
        Multigrid-preconditioned CG iterations (0 for the direct solver).
    solver : str
        "amg" or "direct".
    shape : tuple
        Shape of the volume (z, y, x).
    """

    tau: float
    d_eff: float
    porosity: float
    axis: int
    d_bulk: float
    relative_diffusivity: float
    percolating_porosity: float
    non_percolating_fraction: float
    flux_mismatch: float
    iterations: int
    solver: str
    shape: tuple

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def check_mask(mask, name="pore_mask") -> np.ndarray:
    """A 3-D boolean array from ``mask`` (bool or 0/1), or ConfigError naming what was found."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ConfigError(f"{name}: expected a 3-D array (z, y, x), found shape {mask.shape}")
    if mask.dtype != bool:
        if mask.dtype.kind not in "biu" or (mask.size and (mask.min() < 0 or mask.max() > 1)):
            raise ConfigError(f"{name}: expected a boolean or 0/1 array, found dtype {mask.dtype}")
        mask = mask.astype(bool)
    return mask


def check_axis(axis) -> int:
    if axis not in (0, 1, 2):
        raise ConfigError(f"axis: expected 0, 1 or 2 (z, y, x), found {axis!r}")
    return int(axis)


def percolating_pores(pore_mask, axis=0) -> np.ndarray:
    """Pore voxels connected (through faces) to both faces normal to ``axis``.

    Parameters
    ----------
    pore_mask : bool array (z, y, x)
    axis : int

    Returns
    -------
    bool array (z, y, x)
    """
    pore_mask = check_mask(pore_mask)
    axis = check_axis(axis)
    labels, n = ndi.label(pore_mask, structure=FACE_CONNECTIVITY)
    if n == 0:
        return np.zeros_like(pore_mask)
    first = np.take(labels, 0, axis=axis)
    last = np.take(labels, -1, axis=axis)
    both = np.intersect1d(np.unique(first[first > 0]), np.unique(last[last > 0]))
    keep = np.zeros(n + 1, dtype=bool)
    keep[both] = True
    return keep[labels]


def diffusion_system(domain, axis=0):
    """Graph Laplacian of the voxels of ``domain`` with Dirichlet faces across ``axis``.

    Parameters
    ----------
    domain : bool array (z, y, x)
        Voxels in the solved domain (percolating pores).
    axis : int

    Returns
    -------
    matrix : scipy.sparse.csr_matrix (n, n)
        sum_j (C_i - C_j) + 2 C_i [i on a face], unit conductances (D = h = 1).
    inlet, outlet : int arrays
        Unknown numbers of the domain voxels on the C = 1 and C = 0 faces.
    index : int array (z, y, x)
        Unknown number of each voxel, -1 outside the domain.
    """
    domain = np.ascontiguousarray(domain, dtype=bool)
    n = int(domain.sum())
    index = np.full(domain.shape, -1, dtype=np.int64)
    index[domain] = np.arange(n)
    rows, cols = [], []
    diag = np.zeros(n)
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax] = slice(0, -1)
        hi[ax] = slice(1, None)
        a, b = index[tuple(lo)], index[tuple(hi)]
        pair = (a >= 0) & (b >= 0)
        p, q = a[pair], b[pair]
        rows.append(p)
        cols.append(q)
        diag += np.bincount(p, minlength=n) + np.bincount(q, minlength=n)
    inlet = np.take(index, 0, axis=axis).ravel()
    outlet = np.take(index, -1, axis=axis).ravel()
    inlet, outlet = inlet[inlet >= 0], outlet[outlet >= 0]
    # a voxel on a Dirichlet face sees the face at half a voxel: conductance 2
    np.add.at(diag, inlet, 2.0)
    np.add.at(diag, outlet, 2.0)
    p = np.concatenate(rows)
    q = np.concatenate(cols)
    off = sp.csr_matrix((np.full(p.size, -1.0), (p, q)), shape=(n, n))
    matrix = (off + off.T + sp.diags(diag)).tocsr()
    return matrix, inlet, outlet, index


def tortuosity(pore_mask, axis=0, d_bulk=1.0, *, rtol=1e-6, solver="amg", max_iterations=200) -> TortuosityResult:
    """Tortuosity factor and effective diffusivity of the pore phase along ``axis``.

    Parameters
    ----------
    pore_mask : bool array (z, y, x)
        True in the pores (the conducting phase). Voxels are taken as cubes; the figures
        are dimensionless ratios, so the voxel size does not enter.
    axis : int
        0, 1 or 2: the faces at both ends of this axis hold C = 1 and C = 0.
    d_bulk : float
        Bulk diffusivity D (any units; ``d_eff`` has the same).
    rtol : float
        Relative residual at which the multigrid-CG iteration stops. 1e-6 puts tau
        within about 1e-4 (relative) of the exact discrete solution on random media.
    solver : {"amg", "direct"}
        pyamg Ruge-Stueben multigrid with CG, or SuperLU (small volumes only: the
        over-converged reference).
    max_iterations : int

    Returns
    -------
    TortuosityResult
    """
    pore_mask = check_mask(pore_mask)
    axis = check_axis(axis)
    if solver not in ("amg", "direct"):
        raise ConfigError(f"solver: expected 'amg' or 'direct', found {solver!r}")
    if d_bulk <= 0:
        raise ConfigError(f"d_bulk: expected a positive diffusivity, found {d_bulk}")
    shape = pore_mask.shape
    length = shape[axis]
    area = pore_mask.size // length
    porosity = float(pore_mask.mean()) if pore_mask.size else 0.0
    domain = percolating_pores(pore_mask, axis)
    n_domain = int(domain.sum())
    n_pore = int(pore_mask.sum())
    non_perc = (n_pore - n_domain) / n_pore if n_pore else 0.0
    if n_domain == 0:
        return TortuosityResult(tau=float("inf"), d_eff=0.0, porosity=porosity, axis=axis, d_bulk=float(d_bulk),
                                relative_diffusivity=0.0, percolating_porosity=0.0,
                                non_percolating_fraction=float(non_perc), flux_mismatch=0.0, iterations=0,
                                solver=solver, shape=tuple(shape))
    matrix, inlet, outlet, index = diffusion_system(domain, axis)
    rhs = np.zeros(matrix.shape[0])
    rhs[inlet] = 2.0
    iterations = 0
    if solver == "direct":
        from scipy.sparse.linalg import spsolve
        conc = spsolve(matrix.tocsc(), rhs)
    else:
        import pyamg
        # start from the straight-channel profile: the flux is then right to within the
        # tortuosity's deviation from 1, and CG has less to remove
        pos = np.indices(shape, sparse=True)[axis]
        x0 = np.broadcast_to(1.0 - (pos + 0.5) / length, shape)[domain]
        ml = pyamg.ruge_stuben_solver(matrix, **AMG_OPTIONS)
        residuals = []
        conc = ml.solve(rhs, x0=x0, tol=rtol, maxiter=max_iterations, accel="cg", residuals=residuals)
        iterations = max(len(residuals) - 1, 0)
    flux_in = float(np.sum(2.0 * (1.0 - conc[inlet])))
    flux_out = float(np.sum(2.0 * conc[outlet]))
    flux = 0.5 * (flux_in + flux_out)
    rel = flux * length / area
    tau = porosity / rel if rel > 0 else float("inf")
    return TortuosityResult(tau=float(tau), d_eff=float(d_bulk * rel), porosity=porosity, axis=axis,
                            d_bulk=float(d_bulk), relative_diffusivity=float(rel),
                            percolating_porosity=n_domain / pore_mask.size,
                            non_percolating_fraction=float(non_perc),
                            flux_mismatch=abs(flux_in - flux_out) / flux if flux > 0 else 0.0,
                            iterations=iterations, solver=solver, shape=tuple(shape))


# --------------------------------------------------------------------------- impedance




@dataclass
class ImpedanceSpectrum:
    """Normalised diffusion impedance of a pore volume.

    Attributes
    ----------
    frequencies_hz : float array (n,)
    omega_rad_s : float array (n,)
        2 pi f.
    omega_ratio : float array (n,)
        omega / omega_c.
    z_norm : complex array (n,)
        Z~ = Z A D / L (dimensionless).
    omega_c_rad_s : float
        D / L^2.
    length_mm : float
        L, the box length along ``axis`` (N voxels times voxel size).
    d_bulk : float
        D in mm^2/s.
    axis : int
    porosity : float
        Pore volume fraction of the box.
    low_frequency_limit : float
        Re Z~ at the lowest frequency (tau / eps when omega / omega_c << 1).
    """

    frequencies_hz: np.ndarray
    omega_rad_s: np.ndarray
    omega_ratio: np.ndarray
    z_norm: np.ndarray
    omega_c_rad_s: float
    length_mm: float
    d_bulk: float
    axis: int
    porosity: float
    low_frequency_limit: float


def straight_channel_impedance(omega_ratio, porosity=1.0) -> np.ndarray:
    """Analytic Z~ = tanh(kL) / (eps kL), kL = sqrt(i omega / omega_c), of straight channels."""
    kl = np.sqrt(1j * np.asarray(omega_ratio, dtype=np.float64))
    return np.tanh(kl) / (porosity * kl)


def impedance(pore_mask, axis=0, frequencies_hz=None, d_bulk=1.0, voxel_size_mm=1.0, *, rtol=1e-8,
              n_frequencies=41) -> ImpedanceSpectrum:
    """Diffusion impedance spectrum of the pore phase between the faces normal to ``axis``.

    Parameters
    ----------
    pore_mask : bool array (z, y, x)
    axis : int
        The inlet (C = 1) is the face at index 0 of this axis, the outlet (C = 0) the far face.
    frequencies_hz : array, optional
        Frequencies f (omega = 2 pi f). Default: ``n_frequencies`` values with
        omega / omega_c log-spaced from 1e-2 to (N/4)^2 (N voxels along ``axis``), where
        the diffusion length sqrt(D/omega) is still 4 voxels or more, so that the
        voxel discretisation stays within about 1% of the continuum (the straight
        channel solution shows it: 0.8% at |k| h = 0.25).
    d_bulk : float
        Bulk diffusivity D in mm^2/s.
    voxel_size_mm : float
        Voxel edge h (cubic voxels), which sets L = N h and so omega_c.
    rtol : float
        Relative residual for the iterative solve of large volumes.
    n_frequencies : int

    Returns
    -------
    ImpedanceSpectrum
    """
    pore_mask = check_mask(pore_mask)
    axis = check_axis(axis)
    if d_bulk <= 0 or voxel_size_mm <= 0:
        raise ConfigError(f"d_bulk and voxel_size_mm: expected positive values, found {d_bulk}, {voxel_size_mm}")
    n_len = pore_mask.shape[axis]
    area_vox = pore_mask.size // n_len
    length_mm = n_len * float(voxel_size_mm)
    omega_c = d_bulk / length_mm ** 2
    if frequencies_hz is None:
        ratio = np.logspace(-2, np.log10(max((n_len / 4) ** 2, 1.0)), int(n_frequencies))
        frequencies_hz = ratio * omega_c / (2 * np.pi)
    frequencies_hz = np.atleast_1d(np.asarray(frequencies_hz, dtype=np.float64))
    if np.any(frequencies_hz <= 0):
        raise ConfigError("frequencies_hz: expected positive frequencies")
    omega = 2 * np.pi * frequencies_hz
    ratio = omega / omega_c
    domain = percolating_pores(pore_mask, axis)
    if not domain.any():
        raise ConfigError(f"pore_mask: no pore path joins the two faces along axis {axis}; the impedance is infinite")
    matrix, inlet, outlet, _ = diffusion_system(domain, axis)
    n = matrix.shape[0]
    rhs = np.zeros(n, dtype=np.complex128)
    rhs[inlet] = 2.0
    shift = ratio / n_len ** 2                     # omega h^2 / D per voxel
    z_norm = np.empty(ratio.size, dtype=np.complex128)
    solve = _direct if n <= 8_000 else _iterative(matrix, rtol)
    for i, s in enumerate(shift):
        conc = solve(matrix, s, rhs)
        flux_in = np.sum(2.0 * (1.0 - conc[inlet]))     # in units of D h (C in units of the inlet value)
        # Z~ = Z A D / L with Z = 1 / (D h flux_in), A = area_vox h^2, L = n_len h
        z_norm[i] = area_vox / (n_len * flux_in)
    return ImpedanceSpectrum(frequencies_hz=frequencies_hz, omega_rad_s=omega, omega_ratio=ratio, z_norm=z_norm,
                             omega_c_rad_s=float(omega_c), length_mm=float(length_mm), d_bulk=float(d_bulk),
                             axis=axis, porosity=float(pore_mask.mean()),
                             low_frequency_limit=float(z_norm[np.argmin(ratio)].real))


def _direct(matrix, shift, rhs):
    from scipy.sparse.linalg import spsolve
    a = (matrix + 1j * shift * sp.identity(matrix.shape[0], format="csr")).tocsc()
    return spsolve(a, rhs)


def _iterative(matrix, rtol):
    """GMRES on the complex shifted system, preconditioned by multigrid on the real Laplacian.

    The storage term only adds to the diagonal, so the real operator's hierarchy (built
    once, pyamg Ruge-Stueben) stays a good preconditioner at every frequency, and at high
    frequency the system becomes diagonally dominant anyway.
    """
    import pyamg
    from scipy.sparse.linalg import LinearOperator, gmres

    ml = pyamg.ruge_stuben_solver(matrix.tocsr(), **AMG_OPTIONS)
    n = matrix.shape[0]

    def prec(v):
        return ml.solve(v.real, tol=1e-12, maxiter=1, cycle="V") + 1j * ml.solve(v.imag, tol=1e-12, maxiter=1, cycle="V")

    m_op = LinearOperator((n, n), matvec=prec, dtype=np.complex128)

    def solve(matrix, shift, rhs):
        a = (matrix + 1j * shift * sp.identity(n, format="csr")).tocsr()
        x, info = gmres(a, rhs, M=m_op, rtol=rtol, restart=50, maxiter=20)
        if info != 0:
            raise ConfigError(f"impedance: the iterative solve did not converge at omega h^2/D = {shift:g}")
        return x

    return solve


def save_nyquist_png(spectrum: ImpedanceSpectrum, path, title="") -> None:
    """Nyquist plot (-Im Z~ against Re Z~) with the 45-degree reference line, as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = spectrum.z_norm
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=110)
    ax.plot(z.real, -z.imag, "o-", ms=3, label="simulated")
    # the Warburg asymptote Z~ = 1 / (eps sqrt(i omega / omega_c)) runs at 45 degrees into the origin
    top = float(z.real.max())
    ax.plot([0, top], [0, top], "k--", lw=1, label="45 degrees")
    ax.set_xlabel("Re Z~ = Re(Z) A D / L")
    ax.set_ylabel("-Im Z~")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper left")
    ax.set_title(title or f"diffusion impedance, omega_c = D/L^2 = {spectrum.omega_c_rad_s:.3g} rad/s")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
