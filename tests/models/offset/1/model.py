"""OUTPUT0 = INPUT0 + OFFSET (a config parameter), after DELAY_S seconds if set."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.offset = float(params.get("OFFSET", {}).get("string_value", "0") or 0)
        self.delay = float(params.get("DELAY_S", {}).get("string_value", "0") or 0)

    def execute(self, requests):
        if self.delay:
            time.sleep(self.delay)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x + self.offset).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
