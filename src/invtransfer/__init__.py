"""invtransfer: long-tailed image classification, per-class invariance (eKLD) and
Generative Invariance Transfer (GIT), after Zhou et al., ICLR 2022."""

__version__ = "0.1.0"

from invtransfer.errors import InvTransferError  # noqa: E402,F401
