import os

import jax

from repthesis.utils.logging import machine_description


def test_machine_description_names_the_device_cores_and_jax_version():
    line = machine_description()
    dev = jax.devices()[0]
    assert line.startswith(dev.device_kind)
    assert f"{os.cpu_count()} CPU cores" in line
    assert line.endswith(f"jax {jax.__version__}")


def test_machine_description_shows_a_device_kind_that_differs_from_its_platform():
    class Gpu:
        device_kind, platform = "NVIDIA H100 80GB HBM3", "gpu"

    assert machine_description(Gpu()).startswith("NVIDIA H100 80GB HBM3 (gpu), ")
