"""Access control (``--auth-file``): SigV4 or bearer credentials, and model patterns.

``principals`` is the policy (the file, the patterns), ``sigv4`` verifies signatures (with
``canonical``, the botocore adapter, building what they sign), ``gate`` the one check the
routes call.
"""

from gateway.auth.gate import Authorizer
from gateway.auth.principals import AuthFileError, Principal, kserve_targets, sagemaker_targets

__all__ = ["AuthFileError", "Authorizer", "Principal", "kserve_targets", "sagemaker_targets"]
