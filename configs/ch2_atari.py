"""App. 2.E hyper-parameters for the seven thesis Atari games (A3C family)."""

GAMES = ("Seaquest", "BeamRider", "MsPacman", "Boxing", "Breakout", "Qbert", "Freeway")
SLIM_CNN_GAMES = ("Boxing", "Breakout", "Freeway")  # Table 2.G.2 "slimmer" encoder
LOW_VARIANCE_GAMES = ("Seaquest", "MsPacman", "Breakout")  # log σ² = −6, else −4


def freeway_exceptions(freeway: bool) -> dict:
    """The App. 2.E fields where Freeway (sparse reward) differs from the other games."""
    return {
        "value_loss_coef": 0.5 if freeway else 5.0,  # λ
        "rollout_len": 30 if freeway else 20,  # t_max
        "gae_tau": 0.92 if freeway else 1.0,  # τ
        "reward_clip": not freeway,  # rewards clipped to [−1, 1] except Freeway
    }


def get_config(game: str) -> dict:
    if game not in GAMES:
        raise ValueError(f"unknown thesis game {game!r}; valid: {', '.join(GAMES)}")
    return {
        "env": f"atari:{game}",
        "num_envs": 64,  # 64 synchronous agents
        "learning_rate": 5e-4,  # Adam
        "adam_eps": 1e-3,
        "max_grad_norm": 40.0,  # gradients over 40 clipped to 40
        "gamma": 0.95,
        "entropy_coef": 0.01,  # β
        **freeway_exceptions(game == "Freeway"),
        "log_var": -6.0 if game in LOW_VARIANCE_GAMES else -4.0,  # SA/FSA σ² and HPA3C prior
        "kl_coef": 1e-4,  # ψ
        "torso": "cnn_slim" if game in SLIM_CNN_GAMES else "cnn",
        "core_size": 512,  # LSTM 512
        "fc_size": 512,  # [FC1, FC2] = 1024
    }
