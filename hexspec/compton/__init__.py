"""Compton kinematics, pinhole geometry, Compton profiles J(p_z) and S-parameters.

Equation numbers refer to PHYSICS.md (section 2 for kinematics, profiles and the
S-parameter, section 3 for the pinhole geometry). One module per equation, each formula
written once and shared by the numpy and numba code:

- :mod:`.kinematics` -- eqs. (1)-(3): compton_energy, pz_from_energy, energy_from_pz,
  momentum transfer, impulse factor, theta from a peak centre, resolution in p_z;
- :mod:`.geometry` -- PinholeGeometry and theta maps (section 3);
- :mod:`.binning` -- energy bins in p_z: window weights, counts-to-J factors, per-bin
  backgrounds of peak fits;
- :mod:`.profiles` -- ComptonProfile, profile, region_profile, symmetrise, difference (eq. 3);
- :mod:`.windows` -- the per-pixel window table of eq. (4) and its named columns;
- :mod:`.sideband` -- the sideband background estimator;
- :mod:`.sparameter` -- s_parameter, SMap, s_parameter_map / _blocks / _region (eq. 4).

Conventions: energies in keV, momenta p_z in atomic units, angles in radians; maps are
(rows, cols) and cubes (rows, cols, energy).
"""

from .binning import FACTORS, bin_weights, rebin_matrix, window_weights
from .geometry import PinholeGeometry, theta_map_from_peaks
from .kinematics import (MC2_KEV, MC_AU, compton_energy, energy_from_pz, energy_from_pz_scalar, impulse_factor,
                         momentum_transfer_kev, pz_from_energy, pz_per_kev, pz_scalar,
                         resolution_in_pz, theta_from_peak_energy)
from .profiles import ATTENUATION_CORRECTION, ComptonProfile, difference, profile, region_profile, symmetrise
from .sideband import BACKGROUNDS, SIDEBAND_ELASTIC_MARGIN_KEV, SIDEBAND_PZ_AU, sideband_estimator
from .sparameter import SMap, s_parameter, s_parameter_blocks, s_parameter_map, s_parameter_region
from .windows import COLUMNS, N_COLUMNS

__all__ = [
    "MC2_KEV", "MC_AU", "compton_energy", "pz_from_energy", "energy_from_pz", "energy_from_pz_scalar", "pz_scalar",
    "momentum_transfer_kev", "impulse_factor", "pz_per_kev", "theta_from_peak_energy", "resolution_in_pz",
    "PinholeGeometry", "theta_map_from_peaks",
    "FACTORS", "bin_weights", "window_weights", "rebin_matrix",
    "ATTENUATION_CORRECTION", "ComptonProfile", "profile", "region_profile", "symmetrise", "difference",
    "BACKGROUNDS", "SIDEBAND_PZ_AU", "SIDEBAND_ELASTIC_MARGIN_KEV", "sideband_estimator",
    "SMap", "s_parameter", "s_parameter_map", "s_parameter_blocks", "s_parameter_region", "COLUMNS", "N_COLUMNS",
]
