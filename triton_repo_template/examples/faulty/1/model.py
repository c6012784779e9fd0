"""Answers every request with an error response."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        error = pb_utils.TritonError("model failure: faulty always fails")
        return [pb_utils.InferenceResponse(error=error) for _ in requests]
