"""A sample-quality score in the spirit of Table 5.1's inception score (Salimans et al., 2016):

    score = exp( E_x KL( p(y | x) ‖ p(y) ) ),  p(y) = E_x p(y | x),

computed over ``splits`` disjoint parts of the samples (mean ± std over parts, as is customary),
with p(y | x) from a small classifier trained in-project on the labelled training split of the
same data (MNIST digits: 10 classes; the shapes set: disc / square / triangle). It is NOT the
ImageNet Inception score and its numbers are not comparable with the thesis's (which used VGG11
fine-tuned on birds and faces): it ranges from 1 to the number of classes, and the real test
images' score, reported next to it, is the reference ceiling.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from repthesis.nn.vae import Encoder


class Classifier(nn.Module):
    """Conv trunk (the VAE encoder's layout, width 16), a 128-unit hidden layer, class logits;
    ``features`` is the trunk's map (stage 2's perceptual features)."""

    classes: int

    def setup(self):
        self.trunk = Encoder(16)
        self.hidden = nn.Dense(128)
        self.head = nn.Dense(self.classes)

    def features(self, x):
        return self.trunk(x)  # [B, S/8, S/8, 64]

    def __call__(self, x):
        h = self.trunk(x)
        return self.head(nn.relu(self.hidden(h.reshape(h.shape[0], -1))))


def score_from_probs(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over ``splits`` parts of exp(mean_x KL(p(y|x) ‖ p(y))) for probs [N, classes]."""
    probs = np.asarray(probs, np.float64)
    if splits < 1 or len(probs) < splits:
        raise ValueError(f"splits={splits} must be in 1..{len(probs)} (the number of samples)")
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(0, keepdims=True)
        kl = np.sum(part * (np.log(part + 1e-12) - np.log(marginal + 1e-12)), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def train_classifier(images: np.ndarray, labels: np.ndarray, classes: int, steps: int = 1500,
                     batch: int = 128, seed: int = 0):
    """(predict, params): ``predict(params, x)`` gives class probabilities [B, classes]."""
    net = Classifier(classes)
    params = net.init(jax.random.PRNGKey(seed), jnp.zeros((1,) + images.shape[1:], jnp.float32))
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    data, targets = jnp.asarray(images), jnp.asarray(labels)

    @jax.jit
    def step(params, opt_state, key, data, targets):  # the data as arguments, not baked-in constants
        idx = jax.random.randint(key, (batch,), 0, data.shape[0])

        def loss(p):
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(net.apply(p, data[idx]), targets[idx]))

        grads = jax.grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    key = jax.random.PRNGKey(seed + 1)
    for i in range(steps):  # one program per step: XLA:CPU is slow at conv gradients inside loops
        params, opt_state = step(params, opt_state, jax.random.fold_in(key, i), data, targets)

    @jax.jit
    def predict(params, x):
        return jax.nn.softmax(net.apply(params, x))

    return predict, params


def probabilities(predict, params, images: np.ndarray, batch: int = 500) -> np.ndarray:
    return np.concatenate([np.asarray(predict(params, jnp.asarray(images[i:i + batch])))
                           for i in range(0, len(images), batch)])
