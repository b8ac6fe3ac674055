"""Everything that touches ONNX Runtime lives in this package."""

from faaq_onnx.runtime.session import available_eps, make_session, resolve_ep

__all__ = ["available_eps", "make_session", "resolve_ep"]
