"""add_one holding ALLOCATE_MB of resident memory; execute waits EXECUTE_DELAY_S."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(args, key, default):
    params = json.loads(args["model_config"]).get("parameters", {})
    return float(params.get(key, {}).get("string_value", default) or default)


class TritonPythonModel:
    def initialize(self, args):
        size = int(_param(args, "ALLOCATE_MB", 64) * 1024 * 1024)
        self.ballast = np.ones(size, dtype=np.uint8)  # ones, not zeros: pages are touched
        self.delay = _param(args, "EXECUTE_DELAY_S", 0)

    def execute(self, requests):
        if self.delay:
            time.sleep(self.delay)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x + 1).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
