"""MinAtar proxies of the thesis games (gymnax, no ROMs): App. 2.E hyper-parameters with a
MinAtar-sized MLP+LSTM network; MinAtar Freeway keeps the thesis's Freeway exceptions."""

from repthesis.configs import ch2_atari

GAMES = ("Breakout", "Asterix", "Freeway", "Seaquest", "SpaceInvaders")


def get_config(game: str) -> dict:
    if game not in GAMES:
        raise ValueError(f"unknown MinAtar game {game!r}; valid: {', '.join(GAMES)}")
    return {
        "env": f"{game}-MinAtar",
        **ch2_atari.freeway_exceptions(game == "Freeway"),
        "log_var": -6.0 if game in ("Seaquest", "Breakout") else -4.0,
    }
