"""MinAtar proxies of the thesis games (gymnax, no ROMs): App. 2.E hyper-parameters with a
MinAtar-sized MLP+LSTM network; MinAtar Freeway keeps the thesis's Freeway exceptions."""

GAMES = ("Breakout", "Asterix", "Freeway", "Seaquest", "SpaceInvaders")


def get_config(game: str) -> dict:
    if game not in GAMES:
        raise ValueError(f"unknown MinAtar game {game!r}; valid: {', '.join(GAMES)}")
    freeway = game == "Freeway"
    return {
        "env": f"{game}-MinAtar",
        "value_loss_coef": 0.5 if freeway else 5.0,
        "rollout_len": 30 if freeway else 20,
        "gae_tau": 0.92 if freeway else 1.0,
        "reward_clip": not freeway,
        "log_var": -6.0 if game in ("Seaquest", "Breakout") else -4.0,
    }
