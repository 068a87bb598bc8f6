"""Graph passes on converted TFLite files.

onnx2tf keeps some concatenations in NCHW: it transposes each NHWC input to NCHW,
concatenates on axis 1 and transposes the result back. ``fold_transposed_concats``
replaces each such TRANSPOSE* → CONCATENATION(axis=1) → TRANSPOSE pattern with one
CONCATENATION on the channel axis of the original NHWC tensors. The result is checked for
parity like every artifact.
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
