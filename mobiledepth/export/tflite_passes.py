"""Graph passes on converted TFLite files.

onnx2tf keeps some concatenations in NCHW: it transposes each NHWC input to NCHW,
concatenates on axis 1 and transposes the result back. ``fold_transposed_concats``
replaces each such TRANSPOSE* → CONCATENATION(axis=1) → TRANSPOSE pattern with one
CONCATENATION on the channel axis of the original NHWC tensors. The result is checked for
parity like every artifact. ``float_ops`` reads (does not change) a quantised file: which ops
still compute in float (the ``integer_ops`` of an int8 artifact's record).
"""

from __future__ import annotations

import numpy as np

NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]


def _builtin(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _const_ints(model, subgraph, tensor_index: int) -> list[int] | None:
    buffer = model.buffers[subgraph.tensors[tensor_index].buffer]
    if buffer is None or buffer.data is None or len(buffer.data) == 0:
        return None
    return np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.int32).tolist()


def fold_transposed_concats(data: bytes) -> tuple[bytes, int]:
    """Return the rewritten flatbuffer and how many concatenations were folded."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    ops_enum = schema.BuiltinOperator
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    folded = 0
    for subgraph in model.subgraphs:
        producer = {out: i for i, op in enumerate(subgraph.operators) for out in op.outputs}
        consumers: dict[int, list[int]] = {}
        for i, op in enumerate(subgraph.operators):
            for tensor in op.inputs:
                consumers.setdefault(int(tensor), []).append(i)
        graph_outputs = set(int(t) for t in subgraph.outputs)

        def transpose_with(op_index, perm) -> bool:
            op = subgraph.operators[op_index]
            return _builtin(model, op) == ops_enum.TRANSPOSE and _const_ints(model, subgraph, op.inputs[1]) == perm

        drop: set[int] = set()
        for i, op in enumerate(subgraph.operators):
            if _builtin(model, op) != ops_enum.CONCATENATION or op.builtinOptions.axis not in (1, -3):
                continue
            sources = [producer.get(int(t)) for t in op.inputs]
            users = consumers.get(int(op.outputs[0]), [])
            if any(s is None or not transpose_with(s, NHWC_TO_NCHW) for s in sources):
                continue
            if len(users) != 1 or not transpose_with(users[0], NCHW_TO_NHWC) or int(op.outputs[0]) in graph_outputs:
                continue
            back = subgraph.operators[users[0]]
            op.inputs = [subgraph.operators[s].inputs[0] for s in sources]
            op.outputs = list(back.outputs)
            op.builtinOptions.axis = 3
            drop.add(users[0])
            for s, tensor in zip(sources, [subgraph.operators[s].outputs[0] for s in sources]):
                if consumers.get(int(tensor), []) == [i] and int(tensor) not in graph_outputs:
                    drop.add(s)
            folded += 1
        subgraph.operators = [op for j, op in enumerate(subgraph.operators) if j not in drop]
    if not folded:
        return data, 0
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), folded


FLOAT_TYPES = ("FLOAT32", "FLOAT16")


def float_ops(data: bytes) -> dict:
    """Which ops of a quantised flatbuffer still compute in float (issue 16), by op name: ops other than
    QUANTIZE / DEQUANTIZE with a float input (a weight too) or output. ``float_ops``: those between the first
    quantisation and the last dequantisation, with the DEQUANTIZE and float→integer QUANTIZE ops around them
    (``dequantize_inside``, ``quantize_inside``); ``float_at_edges``: those that only prepare the float model
    input (e.g. the ImageNet normalisation before the input QUANTIZE) or finish the float output.
    ``full_integer``: nothing inside."""
    from collections import Counter

    from ai_edge_litert import schema_py_generated as schema

    op_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    type_names = {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    inside, edges, pairs = Counter(), Counter(), Counter()
    for subgraph in model.subgraphs:
        is_float = [type_names.get(t.type) in FLOAT_TYPES for t in subgraph.tensors]
        ops = [(op_names.get(_builtin(model, op), "CUSTOM"), [int(t) for t in op.inputs if t >= 0],
                [int(t) for t in op.outputs]) for op in subgraph.operators]
        head, tail = _float_edges(subgraph, ops)
        for name, reads, writes in ops:
            if name == "DEQUANTIZE":
                pairs["DEQUANTIZE"] += not tail.issuperset(writes)
            elif name == "QUANTIZE":
                pairs["QUANTIZE"] += any(is_float[t] for t in reads) and not head.issuperset(reads)
            elif any(is_float[t] for t in reads + writes):
                (edges if head.issuperset(writes) or tail.issuperset(reads) else inside)[name] += 1
    return {"full_integer": not inside and not sum(pairs.values()), "float_ops": dict(sorted(inside.items())),
            "dequantize_inside": pairs["DEQUANTIZE"], "quantize_inside": pairs["QUANTIZE"],
            "float_at_edges": dict(sorted(edges.items()))}


def _float_edges(subgraph, ops: list[tuple[str, list[int], list[int]]]) -> tuple[set[int], set[int]]:
    """Tensors computed from the model inputs and constants alone by ops other than QUANTIZE / DEQUANTIZE (the
    head), and tensors that reach only the model outputs through such ops (the tail); both hold the model's
    own inputs / outputs."""
    produced = {t for _, _, writes in ops for t in writes}
    consumers: dict[int, list[int]] = {}
    for index, (_, reads, _) in enumerate(ops):
        for tensor in reads:
            consumers.setdefault(tensor, []).append(index)
    head = {int(t) for t in subgraph.inputs} | {t for _, reads, _ in ops for t in reads if t not in produced}
    for name, reads, writes in ops:
        if name not in ("QUANTIZE", "DEQUANTIZE") and set(reads) <= head:
            head.update(writes)
    tail, tail_ops = {int(t) for t in subgraph.outputs}, set()
    for index in reversed(range(len(ops))):
        name, reads, writes = ops[index]
        if name not in ("QUANTIZE", "DEQUANTIZE") and set(writes) <= tail:
            tail_ops.add(index)
            tail.update(t for t in reads if set(consumers.get(t, [])) <= tail_ops)
    return head, tail
