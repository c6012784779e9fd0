"""OUTPUT0 = INPUT0 + OFFSET (a config parameter), after DELAY_S seconds if set.
DIE_AFTER_S (if set): the stub SIGKILLs itself that long after each load, as a model that
keeps crashing does. LEAK_MB (if set): the model starts a process holding that much memory,
which outlives the model's unload (it stays in Triton's process group)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(params, key):
    return float(params.get(key, {}).get("string_value", "0") or 0)


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.offset = _param(params, "OFFSET")
        self.delay = _param(params, "DELAY_S")
        die_after = _param(params, "DIE_AFTER_S")
        if die_after:
            threading.Timer(die_after, os.kill, (os.getpid(), signal.SIGKILL)).start()
        leak_mb = int(_param(params, "LEAK_MB"))
        if leak_mb:
            code = (
                f"ballast = b'x' * ({leak_mb} << 20); print('held', flush=True); "
                "import time; time.sleep(600)  # mme-leftover"
            )
            python = shutil.which("python3") or sys.executable
            self.leftover = subprocess.Popen([python, "-c", code], stdout=subprocess.PIPE)
            self.leftover.stdout.readline()  # its memory is touched before the load ends

    def execute(self, requests):
        if self.delay:
            time.sleep(self.delay)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x + self.offset).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
