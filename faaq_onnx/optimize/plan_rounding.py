"""Which rounding a plan is built with.

Rounding optimization (AdaRound/BRECQ/GPTQ) fits each layer to the inputs one plan feeds it.
The passes over uniform plans (every candidate weight width, seed 003 §3.5; GPTQ's in one
pass per activation width, shared_contexts) fill the shared weight cache: sensitivity reads it and a stitched mixed plan is built from it. A pass over an
allocated mixed plan (the re-round) is that plan's own: its weights and learned activation
steps are kept apart and put in place only while that plan is built, so a later plan (a
repaired one, the extreme one) never ships weights fit to another plan's inputs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from faaq_onnx.plan import BitPlan, choices_key


@dataclass
class OwnRounding:
    """A plan's re-rounded weights ((name, bits) -> QuantizedWeight), learned activation
    steps ((activation, bits) -> scale) and the pass's report."""

    weights: dict
    learned: dict
    report: dict


class PlanRounding:
    def __init__(self, comp) -> None:
        self.comp = comp
        self.shared: dict = {}  # pass name ("w4a8", ...) -> report, for passes that fill the cache
        self._done: set = set()  # choices keys of the plans rounded in their own context
        self._own: dict[tuple, OwnRounding] = {}
        self.biases: dict[tuple, dict] = {}  # plan key -> biases corrected during its pass

    def _run(
        self,
        plan: BitPlan,
        learn_activations: bool,
        also_bits: tuple[int, ...] = (),
        fit_float: bool | None = None,
    ) -> dict:
        from faaq_onnx.optimize.reconstruct import SCALE_LR, ReconSettings
        from faaq_onnx.optimize.rounding import optimize_rounding

        cfg = self.comp.config
        settings = ReconSettings(
            iters=cfg.optimize_iters,
            drop=cfg.qdrop,
            seed=cfg.seed,
            scale_lr=SCALE_LR if cfg.optimize_scales else 0.0,
            sampled_positions=cfg.optimize_positions == "sampled",
            holdout=cfg.optimize_holdout,
            patience=cfg.optimize_patience or 0,
        )
        with self.comp.stage("optimize_weights"):
            report = optimize_rounding(
                self.comp,
                plan,
                cfg.rounding,
                settings,
                cfg.optimize_inputs,
                cfg.optimize_samples,
                learn_activations=learn_activations,
                progress=cfg.progress,
                start=cfg.rounding_start or "nearest",
                also_bits=also_bits,
                fit_float=fit_float,
            )
        biases = report.pop("bias_corrections", None)
        if biases is not None:
            self.biases[choices_key(plan.choices)] = biases
        return report

    def optimize(self, plans: list[BitPlan], context_bits: float | None = None) -> dict:
        """Round each plan's weights below 8 bits into the shared cache (once per plan; GPTQ's
        uniform plans in one pass per activation width: shared_contexts)."""
        if self.comp.config.rounding is None:
            return {}
        todo = [p for p in plans if choices_key(p.choices) not in self._done]
        self._done |= {choices_key(p.choices) for p in todo}
        passes = (
            shared_contexts(todo, context_bits)
            if self.comp.config.rounding == "gptq"
            else [(p, ()) for p in todo]
        )
        for plan, also in passes:
            name = ",".join(sorted({f"w{c.w}a{c.a}" for c in plan.choices.values()}))
            name += "".join(f",w{b}" for b in also)
            self.shared[name] = self._run(plan, learn_activations=len(plans) == 1, also_bits=also)
        return self.shared

    def reround(self, plan: BitPlan) -> None:
        """Round `plan` again in its own context, keeping the result as that plan's alone. This
        plan ships, so GPTQ fits each layer to the float output here unless the user turned that
        off (stages.effort.fit_gptq_to_float_output leaves it unset for a budget's candidates):
        EfficientNet-Lite0 `avg-bits=4` 80.84 % (KL to float 0.058) against 79.98 (0.071) with
        the candidates' weights stitched, ResNet-56 `wide` r = 0.25 83.43 against 82.95
        (benchmarks/out/reround_fit.md)."""
        comp = self.comp
        key = choices_key(plan.choices)
        # a uniform plan the candidates' passes rounded is in its own context already, unless
        # GPTQ rounded it there plain (a budget's candidates are not fit to the float output)
        plain = comp.config.rounding == "gptq" and not comp.config.gptq_asymmetric
        if not comp.config.rerounds or key in self._own or (key in self._done and not plain):
            return
        self._done.add(key)
        fit = comp.config.gptq_asymmetric is not False if plain else None
        with self._scratch() as (weights, learned):
            report = self._run(plan, learn_activations=True, fit_float=fit)
            own_learned = {
                k: v for k, v in comp.calibration.learned.items() if learned.get(k) is not v
            }
            self._own[key] = OwnRounding(comp.weights.changed_since(weights), own_learned, report)

    @contextmanager
    def applied(self, plan: BitPlan):
        """`plan`'s own rounding in place while it is built (nothing to do for other plans)."""
        own = self._own.get(choices_key(plan.choices))
        if own is None:
            yield
            return
        with self._scratch(own.weights, own.learned):
            yield

    @contextmanager
    def _scratch(self, weights: dict | None = None, learned: dict | None = None):
        """The weight cache and learned activation steps, with `weights`/`learned` laid over
        them, until the block ends; then they are as they were, whatever was written meanwhile.
        Yields what they were."""
        comp = self.comp
        saved_weights, saved_learned = comp.weights.snapshot(), dict(comp.calibration.learned)
        comp.weights.restore({**saved_weights, **(weights or {})})
        comp.calibration.learned = {**saved_learned, **(learned or {})}
        self._steps_changed()
        try:
            yield saved_weights, saved_learned
        finally:
            comp.weights.restore(saved_weights)
            comp.calibration.learned = saved_learned
            self._steps_changed()

    def _steps_changed(self) -> None:
        """Cached activation parameters are stale once learned steps change."""
        self.comp.feeds.reset_act_cache()
        if self.comp._prober is not None:
            self.comp._prober.reset_act_cache()

    def report(self, plan: BitPlan) -> dict:
        """The passes a plan's weights came from: the shared ones, and its own re-round if any."""
        own = self._own.get(choices_key(plan.choices))
        return {**self.shared, **({"emitted plan": own.report} if own is not None else {})}


def shared_contexts(
    plans: list[BitPlan], context_bits: float | None = None
) -> list[tuple[BitPlan, tuple[int, ...]]]:
    """GPTQ's passes over uniform candidate plans: one per activation width, in the context of
    one plan (context_width: from an avg-bits budget's value, else the middle width), whose
    Hessians round every other width too.

    A layer's Hessian is summed over what the model feeds it in a pass, and that pass is most of
    GPTQ's cost; a mixed plan stitched from several passes feeds every layer inputs none of them
    saw anyway. EfficientNet-Lite0 `--budget avg-bits=4` (W2..W6 and W8 at 8-bit activations):
    one pass in the W4A8 context 103 s, top-1 79.50 % (KL to float 0.0745), five passes 281 s,
    79.79 % (0.0690); ResNet-56 34 s, 83.00 % (0.0246) against 65 s, 82.93 % (0.0270)
    (benchmarks/bench_shared_context.py). The context matters: EfficientNet-Lite0 in the W6A8
    context fell to 79.12 % (0.139), its W4 layers rounded on inputs they never see.
    Seed 003's expanded set keeps a pass per activation width (W4 weights under W4A6, W6 under
    W6A8: rounding_plans)."""
    by_act: dict[tuple, list[BitPlan]] = {}
    for i, plan in enumerate(plans):
        uniform = len({c.w for c in plan.choices.values()}) == 1
        acts = tuple(sorted({c.a for c in plan.choices.values()}))
        by_act.setdefault(acts if uniform else ("own", i), []).append(plan)
    out: list[tuple[BitPlan, tuple[int, ...]]] = []
    for group in by_act.values():
        if len(group) == 1:
            out.append((group[0], ()))
            continue
        widths = [next(iter(p.choices.values())).w for p in group]
        context = context_width(widths, context_bits)
        main = group[widths.index(context)]
        out.append((main, tuple(sorted(w for w in widths if w != context))))
    return out


def context_width(widths: list[int], target: float | None = None) -> int:
    """The widest width not above `target` (below an average-bits budget the allocator keeps
    most layers at one width and lifts the sensitive ones to 8 bits: EfficientNet-Lite0
    avg-bits=4, 28 groups at W4 and 19 at W8), the narrowest if none is; without a target the
    middle width (of two middle ones, the wider)."""
    ordered = sorted(widths)
    if target is None:
        return ordered[len(ordered) // 2]
    return max((w for w in ordered if w <= target), default=ordered[0])
