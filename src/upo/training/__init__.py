"""Training runs: the shared run skeleton, distributed helpers, and the MDM trainers."""
