"""Thesis presets, installed as ``repthesis.configs``; ``--preset=NAME`` applies one.

Each preset is (family, overrides of that family's config). Chapter 2 presets carry
App. 2.E's per-game hyper-parameters; see ``ch2_atari.py`` and ``ch2_minatar.py``.
"""

from repthesis.configs import ch2_atari, ch2_minatar

PRESETS: dict[str, tuple[str, dict]] = {
    **{f"atari-{g.lower()}": ("a3c", ch2_atari.get_config(g)) for g in ch2_atari.GAMES},
    **{f"minatar-{g.lower()}": ("a3c", ch2_minatar.get_config(g)) for g in ch2_minatar.GAMES},
}
