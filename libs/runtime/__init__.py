"""What every service process shares: configuration from flags/env/defaults, stderr logging, and
the ``PORT=<n>`` ready line."""

from libs.runtime.config import env_default, log_config, parse_node_list
from libs.runtime.grpc_engine import use_iomgr_engine
from libs.runtime.heap import freeze_heap, freeze_heap_forever
from libs.runtime.process import announce_port, setup_logging

__all__ = [
    "announce_port",
    "env_default",
    "freeze_heap",
    "freeze_heap_forever",
    "log_config",
    "parse_node_list",
    "setup_logging",
    "use_iomgr_engine",
]
