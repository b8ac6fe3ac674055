"""The compiler's passes, one module each, in pipeline order (see DESIGN.md)."""
