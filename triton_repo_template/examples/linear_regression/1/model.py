"""prediction = features @ [0.5, -1.0, 2.0] + 0.25, one row per batch item."""

import numpy as np
import triton_python_backend_utils as pb_utils

WEIGHTS = np.array([[0.5], [-1.0], [2.0]], dtype=np.float32)
BIAS = np.float32(0.25)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            features = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
            prediction = (features @ WEIGHTS + BIAS).astype(np.float32)  # shape [batch, 1]
            out = pb_utils.Tensor("prediction", prediction)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
