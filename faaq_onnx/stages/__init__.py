"""The compiler's stages, each the one home of its own state.

prepare ─► optimize weights ─► sensitivity ─► allocate ─► emit and verify

`faaq_onnx.pipeline.Compilation` runs them in that order and hands itself to the analyses,
optimizers and reports that read across stages (they take a `comp`); each stage keeps what it
computes and the Compilation reads it from there.
"""
