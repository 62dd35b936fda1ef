"""The velocity heuristic: the article's rule-based baseline and slidr's day-zero model.

A click scores by how far its fastest velocity counter is past that counter's limit: exactly
at a limit it scores 0.5, twice the limit or more 1.0. The same formula runs inside Triton: the
Python backend reads ``heuristic.json`` (triton_repo/slidr/model.py), Triton's ONNX Runtime
backend runs ``heuristic_onnx``'s graph (``model.onnx``); tests check all three agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from slidr.features import FEATURE_HASH, INDEX, N_FEATURES

if TYPE_CHECKING:
    import onnx

#: Opset and IR version of every ``model.onnx``: what torch's exporter writes for opset 17, and
#: what the ONNX Runtime (1.19) of Triton 24.10 reads; onnx's helper would stamp its newest IR.
ONNX_OPSET = 17
ONNX_IR_VERSION = 8

#: Clicks in a window past which a click looks robotic.
VELOCITY_LIMITS: dict[str, float] = {
    "session_clicks_1m": 6.0,
    "session_clicks_1h": 40.0,
    "customer_clicks_1h": 60.0,
    "ip_clicks_1m": 30.0,
    "ip_clicks_1h": 400.0,
}


def heuristic_spec() -> dict[str, object]:
    """What ``heuristic.json`` holds: limits keyed by feature index, and the feature hash."""
    return {
        "feature_hash": FEATURE_HASH,
        "limits": {str(INDEX[name]): limit for name, limit in VELOCITY_LIMITS.items()},
        "names": list(VELOCITY_LIMITS),
    }


def limit_scores(
    spec: dict[str, object], features: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Scores in [0, 1] of a [n, N_FEATURES] matrix under the limits of a ``heuristic.json``."""
    limits = spec["limits"]
    assert isinstance(limits, dict)
    index = np.asarray([int(i) for i in limits], dtype=np.int64)
    limit = np.asarray(list(limits.values()), dtype=np.float32)
    ratio = (features[:, index] / limit).max(axis=1)
    scores: npt.NDArray[np.float32] = np.clip(ratio / 2.0, 0.0, 1.0).astype(np.float32)
    return scores


def velocity_score(features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scores of the day-zero limits (VELOCITY_LIMITS)."""
    return limit_scores(heuristic_spec(), features)


def heuristic_onnx(spec: dict[str, object]) -> onnx.ModelProto:
    """``limit_scores`` of ``spec`` as an ONNX graph: features [batch, N] -> score [batch, 1].

    Each step is the float32 operation numpy does (gather, divide, max, halve, clip), so the
    scores are the same numbers, not approximations of them.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    limits = spec["limits"]
    assert isinstance(limits, dict)
    index = np.asarray([int(i) for i in limits], dtype=np.int64)
    limit = np.asarray(list(limits.values()), dtype=np.float32)
    constants: dict[str, npt.NDArray[np.generic]] = {
        "index": index,
        "limit": limit,
        "two": np.asarray(2.0, dtype=np.float32),
        "zero": np.asarray(0.0, dtype=np.float32),
        "one": np.asarray(1.0, dtype=np.float32),
    }
    nodes = [
        helper.make_node("Gather", ["features", "index"], ["counters"], axis=1),
        helper.make_node("Div", ["counters", "limit"], ["ratios"]),
        # opset 17 takes the axes as an attribute (an input from 18 on)
        helper.make_node("ReduceMax", ["ratios"], ["ratio"], axes=[1], keepdims=1),
        helper.make_node("Div", ["ratio", "two"], ["half"]),
        helper.make_node("Clip", ["half", "zero", "one"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slidr_velocity_heuristic",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(v, name) for name, v in constants.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="slidr",
        doc_string=f"velocity heuristic, feature hash {spec.get('feature_hash')}",
    )
    onnx.checker.check_model(model, full_check=True)
    return model
