"""Reference line energies in keV (PHYSICS.md sections 5 and 1).

The Am-241 lines calibrate the energy scale; the detector-fluorescence, pinhole and
shielding lines are the features that appear in XCS-I spectra (PHYSICS.md 1) and are
listed so that plots and checks name them the same way everywhere.
"""

from __future__ import annotations

from typing import NamedTuple


class Line(NamedTuple):
    """A reference line.

    Attributes
    ----------
    name : str
        Short label used in plots and files ("Am-241 gamma", "Np L-alpha").
    energy_kev : float
        Line energy in keV.
    """

    name: str
    energy_kev: float


# ---------------------------------------------------------------- Am-241 (PHYSICS.md 5)
AM241_GAMMA_KEV = 59.5409        # the strongest gamma line: the calibration anchor
AM241_GAMMA_26_KEV = 26.3446     # weaker gamma line
NP_L_ALPHA_KEV = 13.9            # Np L X-rays after the alpha decay
NP_L_BETA_KEV = 17.75
NP_L_GAMMA_KEV = 20.8

#: Escape of Cd / Te K-alpha fluorescence from the detector after a 59.54 keV absorption.
CD_K_ALPHA_ESCAPE_KEV = 23.17
TE_K_ALPHA_ESCAPE_KEV = 27.47
AM241_CD_ESCAPE_KEV = AM241_GAMMA_KEV - CD_K_ALPHA_ESCAPE_KEV   # 36.37 keV
AM241_TE_ESCAPE_KEV = AM241_GAMMA_KEV - TE_K_ALPHA_ESCAPE_KEV   # 32.07 keV

#: Lines used for energy calibration, the photopeak first.
AM241_CALIBRATION_LINES = (
    Line("Am-241 gamma", AM241_GAMMA_KEV),
    Line("Am-241 26 keV", AM241_GAMMA_26_KEV),
    Line("Np L-gamma", NP_L_GAMMA_KEV),
    Line("Np L-beta", NP_L_BETA_KEV),
    Line("Np L-alpha", NP_L_ALPHA_KEV),
)

#: Features of an Am-241 spectrum in CdTe/CdZnTe that are not calibration points.
AM241_ESCAPE_LINES = (
    Line("Cd K-alpha escape", AM241_CD_ESCAPE_KEV),
    Line("Te K-alpha escape", AM241_TE_ESCAPE_KEV),
)

# ---------------------------------------------------------------- XCS-I spectra (PHYSICS.md 1)
COMPTON_115_90_KEV = 93.8738     # Compton peak of 115 keV at 90 degrees, eq. (1)
CD_K_ALPHA_KEV = 22.9
CD_K_BETA_KEV = 26.1
TE_K_ALPHA_KEV = 27.2
TE_K_BETA_KEV = 31.0
W_K_ALPHA1_KEV = 59.3
W_K_ALPHA2_KEV = 58.0
W_K_BETA_KEV = 67.2
PB_K_ALPHA1_KEV = 75.0
PB_K_ALPHA2_KEV = 72.8
PB_K_BETA_KEV = 84.9

XCSI_LINES = (
    Line("Cd K-alpha", CD_K_ALPHA_KEV),
    Line("Cd K-beta", CD_K_BETA_KEV),
    Line("Te K-alpha", TE_K_ALPHA_KEV),
    Line("Te K-beta", TE_K_BETA_KEV),
    Line("W K-alpha2", W_K_ALPHA2_KEV),
    Line("W K-alpha1", W_K_ALPHA1_KEV),
    Line("W K-beta", W_K_BETA_KEV),
    Line("Pb K-alpha2", PB_K_ALPHA2_KEV),
    Line("Pb K-alpha1", PB_K_ALPHA1_KEV),
    Line("Pb K-beta", PB_K_BETA_KEV),
    Line("Compton 115 keV at 90 deg", COMPTON_115_90_KEV),
)
