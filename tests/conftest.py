import os

# Tests run on CPU with float32 matmuls at full precision so equality checks are meaningful.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
