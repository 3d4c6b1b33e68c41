"""The pipeline every RPC of both servers goes through: one gRPC interceptor, its stages.

::

    pipeline/
    ├── interceptor.py    Pipeline: the one grpc.aio.ServerInterceptor; runs the stages below
    ├── stage.py          Layer (wraps a method's handler once) and Gate (refuses a call)
    ├── observability.py  Observability: RPC metrics and an audit line per admin action
    ├── error_status.py   ErrorStatus: the one place where exceptions become gRPC statuses
    └── authentication.py Authentication: the bearer token and the caller's role (a Gate)

Outermost first, as ``listener_core.server.build_pipeline`` orders them: observability, error
status, then the stages a server adds (authentication; the API server's limits and request
checks, ``api_server/limits.py`` and ``validation.py``). One stage per module; only
``Pipeline`` is a gRPC interceptor.
"""

from listener_core.pipeline.interceptor import Pipeline
from listener_core.pipeline.stage import Behavior, Gate, Layer, wrap_unary_response

__all__ = ["Behavior", "Gate", "Layer", "Pipeline", "wrap_unary_response"]
