"""neurodeploy: train robust spiking neural networks and deploy them to Loihi-class hardware."""

import os
import warnings

# Idle OpenMP threads otherwise spin; on a small shared machine (2 cores) a
# spinning second thread made training up to ~20x slower whenever another
# process ran. Must be set before torch starts OpenMP; respects a user's value.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Norse 1.1.0 calls torch.jit.script at import time, which current torch flags
# as deprecated on every run; the warning is Norse's, not the user's to act on.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

__version__ = "0.1.0"
