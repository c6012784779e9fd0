"""Skeleton of a Triton Python-backend model. Version folder `1/` holds this file.

Triton imports this module, creates one TritonPythonModel per instance (see
instance_group), calls initialize() once, execute() for every batch, finalize() on unload.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # args["model_config"] is the config.pbtxt as JSON (after the gateway's rewrites);
        # args["model_repository"] and args["model_version"] locate files shipped with it.
        self.config = json.loads(args["model_config"])
        params = self.config.get("parameters", {})
        self.setting = params.get("EXAMPLE_SETTING", {}).get("string_value", "")
        # Load weights here: a load that raises makes Triton report the model as failed.

    def execute(self, requests):
        # One call per batch that Triton's scheduler formed; answer every request, in order.
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            y = (x + 1).astype(np.float32)  # replace with the model's computation
            out = pb_utils.Tensor("OUTPUT0", y)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            # A failed request instead: pb_utils.InferenceResponse(error=pb_utils.TritonError("..."))
        return responses

    def finalize(self):
        # Release resources (files, threads) before the model is unloaded.
        pass
