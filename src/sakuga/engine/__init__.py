"""The embedded engine: a CPU stand-in that speaks ComfyUI's HTTP + websocket protocol.

It renders deterministic procedural pictures (it is not a diffusion model and says so in
``/system_stats``). ``EngineServer`` serves it in-process; ``sakuga engine`` runs it alone.
"""

from sakuga.engine.options import EngineOptions, Faults
from sakuga.engine.server import EngineServer, create_app, run_engine

__all__ = ["EngineOptions", "EngineServer", "Faults", "create_app", "run_engine"]
