"""add_one that records each load: one line (the pid) in the file named by LOAD_LOG."""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        log_path = params.get("LOAD_LOG", {}).get("string_value", "")
        if log_path:
            with open(log_path, "a") as log:
                log.write(f"{os.getpid()}\n")

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x + 1).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
