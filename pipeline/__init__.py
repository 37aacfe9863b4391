"""Archive Capture: scanned paper archives to validated, searchable PDF/A items."""

__version__ = "0.1.0"

# OpenVINO's model-conversion tools, imported with it, write a client id and usage counts to
# ~/intel and try to send them at import time. Nothing of ours may be written outside
# CAPTURE_HOME, and nothing is sent: when its telemetry package cannot be imported, OpenVINO
# uses its own no-op stub (openvino/tools/ovc/telemetry_stub.py).
import sys as _sys

_sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
