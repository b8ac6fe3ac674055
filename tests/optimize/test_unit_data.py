"""optimize/unit_data.py: what reconstruction units are fed, unit after unit."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("mode", ["quantized", "weights", "float", "mixed"])
@pytest.mark.parametrize("units", ["layer", "block"])
def test_the_sequence_gives_each_unit_what_a_full_pass_would(
    foreign_cnn, tiny_cnn, cnn_calib, mode, units
):
    """Units asked in graph order, each one's weights re-rounded before the next is asked (as
    AdaRound/BRECQ do): inputs, float inputs and targets equal a full pass of both models
    made at the same moment."""
    import numpy as np

    from faaq_onnx.config import QuantConfig
    from faaq_onnx.optimize.unit_data import UnitData
    from faaq_onnx.optimize.units import block_units, layer_units
    from faaq_onnx.pipeline import Compilation

    model = foreign_cnn if units == "layer" else tiny_cnn  # tiny_cnn has residual blocks
    comp = Compilation(
        model, cnn_calib, QuantConfig(progress=False, scheme="w3a8"), target_opset=21
    )
    plan = comp.uniform("w3a8")
    found = (layer_units if units == "layer" else block_units)(comp.float_proto, comp.qgraph)
    tensors = sorted({t for u in found for t in [*u.inputs, u.output]})
    data = UnitData(comp, tensors, 12, batch_size=5)
    sequence = data.reconstruction_sequence(plan.choices, mode)
    assert len(found) >= 2
    for unit in found:
        x, xf, target = sequence(unit.inputs, unit.output)
        # the reference: whole passes of the float model and of the quantized one, now
        fl = data.float_tensors([*unit.inputs, unit.output])
        ref_xf, ref_target = fl, fl[unit.output]
        ref_x = fl if mode == "float" else data.unit_inputs(unit.inputs, plan.choices, mode)
        assert list(x) == unit.inputs and (xf is None) == (mode != "mixed")
        for n in unit.inputs:
            np.testing.assert_allclose(x[n], ref_x[n], rtol=1e-5, atol=1e-5)
            if xf is not None:
                np.testing.assert_allclose(xf[n], ref_xf[n], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(target, ref_target, rtol=1e-5, atol=1e-5)
        for w in unit.weights:  # "round" this unit differently before the next is asked
            q = comp.weights.get(w, 3)
            comp.weights.put(w, 3, q.with_codes(-q.q, "test"))


def test_float_batches_cover_every_sample_once_in_order(tiny_cnn, cnn_calib):
    """float_batches (GPTQ's float pass) yields batches that, joined, are the float values of
    every sample, in order: no batch repeated, dropped or cut short."""
    import numpy as np

    from faaq_onnx.config import QuantConfig
    from faaq_onnx.optimize.unit_data import UnitData
    from faaq_onnx.pipeline import Compilation

    comp = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)
    name = next(n.output[0] for n in comp.float_proto.graph.node if n.op_type == "Conv")
    data = UnitData(comp, [name], 20, batch_size=6)
    parts = list(data.float_batches([name]))
    assert [len(p[name]) for p in parts] == [6, 6, 6, 2]
    np.testing.assert_allclose(
        np.concatenate([p[name] for p in parts]), data.float_tensors([name])[name], atol=1e-6
    )
