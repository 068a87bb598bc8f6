"""Quantisation-aware fine-tuning (QAT) of a trained checkpoint, for int8 that keeps the depth order.

``mobiledepth train --qat --model RUN/model.pt --data DIR --out QAT_RUN`` (docs/train.md):

1. the trained checkpoint's deployed graph (heads stripped; the export's exact rewrites when the
   caller passes them, so the fake quantisation sees the very graph that is converted; every
   ``ConvTranspose2d`` phase-split into a Conv2d and a pixel shuffle, which the converter keeps integer
   where it keeps a TRANSPOSE_CONV in float) is captured with ``torch.export`` (dynamic batch), its
   BatchNorms folded into the convolutions;
2. ``torchao.quantization.pt2e.prepare_qat_pt2e`` inserts fake quantisation with litert-torch's
   ``PT2EQuantizer`` symmetric config (SPEC §10): int8 per-channel symmetric weights, int8
   per-tensor activations — the scheme litert-torch lowers to full-integer TFLite;
3. the observers are calibrated on training images, then the graph is fine-tuned with the paper's
   ranking loss on the DIW pairs plus the paper's distillation RMSE to the frozen fp32 model (so the
   integer model keeps the fp32 model's order); the observers freeze for the last steps;
4. ``convert_pt2e`` gives the quantised program, stored (``torch.export`` bytes) in ``model.pt``
   beside the fp32 parent's weights: fp32 / fp16 exports of a QAT checkpoint are the parent's, and
   ``mobiledepth export --precision int8`` converts the stored program with litert-torch.

No resume and no torchrun for QAT runs (they are short); every check runs before the first step.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mobiledepth.errors import UserError
from mobiledepth.progress import Progress, ProgressFn, silent

from mobiledepth.arch.checkpoint import QAT_FORMAT

SCHEME = ("PT2E QAT, litert-torch PT2EQuantizer symmetric config: int8 per-channel symmetric weights, "
          "int8 per-tensor affine activations; BatchNorm folded before preparation; ConvTranspose2d phase-split "
          "into Conv2d + pixel shuffle")


@dataclass(frozen=True)
class QatSettings:
    """The ``qat`` config block (docs/train.md), typed."""

    min_images: int = 16          # training images needed to calibrate the observers before fine-tuning
    calibration_images: int = 32  # images run through the observers before the first step
    freeze_observers: float = 0.5  # fraction of the steps after which the quantisation ranges stay fixed
    distill: bool = True          # RMSE to the fp32 parent's depth (the paper's KD term, teacher = parent)

    @classmethod
    def from_config(cls, block: dict) -> "QatSettings":
        """From ``cfg['qat']`` (the keys other than ``enabled``), with the values checked."""
        settings = cls(**{k: v for k, v in block.items() if k != "enabled"})
        if int(settings.min_images) < 1 or int(settings.calibration_images) < 1:
            raise UserError("qat.min_images and qat.calibration_images must be at least 1")
        if not 0.0 <= float(settings.freeze_observers) <= 1.0:
            raise UserError(f"qat.freeze_observers must be a fraction in [0, 1], got {settings.freeze_observers}")
        return settings


@dataclass
class QatResult:
    run_dir: Path
    model_path: Path
    steps: int
    seconds: float
    val_whdr_fp32: float | None
    val_whdr_qat: float | None


def parent_checkpoint(ref, checkpoint=None) -> Path:
    """The trained checkpoint ``--qat`` fine-tunes: ``--model RUN/model.pt``, or ``--model module:factory
    --checkpoint C`` for your own model; an existing checkpoint file, not a QAT one."""
    from mobiledepth.arch.checkpoint import read_checkpoint

    path = Path(str(checkpoint if checkpoint is not None else ref))
    if not path.is_file():
        named = f"'{checkpoint}' (--checkpoint)" if checkpoint is not None else f"'{ref}'"
        raise UserError(f"--qat fine-tunes a trained checkpoint, and {named} is not one (a zoo name, spec or missing "
                        "file); train the model first and pass --model RUN/model.pt (your own model: --model "
                        "module:factory --checkpoint RUN/model.pt)")
    data = read_checkpoint(path)
    if data.get("spec") is None and checkpoint is None and not (data.get("meta") or {}).get("factory"):
        raise UserError(f"--qat: checkpoint {path} stores no spec (a bare state_dict); pass a checkpoint written "
                        "by 'mobiledepth train' (RUN/model.pt)")
    if (data.get("meta") or {}).get("qat"):
        raise UserError(f"--qat: {path} is already a quantisation-aware checkpoint; pass the fp32 checkpoint it "
                        f"was made from ({data['meta']['qat'].get('parent')})")
    return path


def quantizer():
    """litert-torch's PT2EQuantizer, symmetric per-channel QAT config (BatchNorm is folded beforehand, so the
    conv+BN QAT patterns, whose annotator does not run with torchao 0.18, are not needed), plus every residual
    add its own annotator misses (``annotate_residual_adds``)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    class ResidualAddQuantizer(PT2EQuantizer):
        def _annotate_all_static_patterns(self, model, quantization_config, filter_fn=None):
            model = super()._annotate_all_static_patterns(model, quantization_config, filter_fn)
            annotate_residual_adds(model, quantization_config, filter_fn)
            return model

    chosen = ResidualAddQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))
    chosen.STATIC_QAT_ONLY_OPS = []
    return chosen


def _is_activation(arg) -> bool:
    """A graph value computed from the input (not a constant, a parameter or a Python number)."""
    return isinstance(arg, torch.fx.Node) and arg.op != "get_attr" and isinstance(arg.meta.get("val"), torch.Tensor)


def annotate_residual_adds(graph, quantization_config, filter_fn=None) -> int:
    """Annotate each ``aten.add.Tensor`` of two activations that no annotator claimed; returns how many.

    litert-torch's "add" annotator finds adds through ``get_source_partitions`` (``source_fn_stack`` metadata),
    which the non-strict ``torch.export`` capture does not record for a module's ``x + f(x)``: on the paper's
    model all 10 InvertedResidual adds stayed unannotated, so QAT fine-tuned them in float and the converter kept
    them float ADDs between DEQUANTIZE / QUANTIZE (issue 16). They get the quantizer's own add qspecs."""
    from litert_torch.quantize.pt2e_quantizer_utils import (_is_annotated, get_input_act_qspec,
                                                             get_output_act_qspec)
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    annotated = 0
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.add.Tensor or _is_annotated([node]):
            continue
        if not all(_is_activation(arg) for arg in node.args[:2]) or (filter_fn is not None and not filter_fn(node)):
            continue
        input_qspec = get_input_act_qspec(quantization_config)
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={arg: input_qspec for arg in node.args[:2]},
            output_qspec=get_output_act_qspec(quantization_config), _annotated=True)
        annotated += 1
    return annotated


def untie_conv_weights(captured) -> int:
    """Give every convolution its own weight attribute; returns how many were untied.

    The phase-split rewrite runs one projection conv (and its BatchNorm) on four phases, so the captured graph
    has four conv nodes reading one weight. torchao's ``_fuse_conv_bn_`` tracks folded weights by graph node,
    not by attribute, and folds the BatchNorm into that shared weight four times (measured on the paper's
    model: 0.34 of the output range off, ordinal agreement 0.83 before any quantisation). A copy per
    conv keeps the fold exact; each copy is then quantised (and fine-tuned) on its own."""
    seen: set[str] = set()
    untied = 0
    for node in list(captured.graph.nodes):
        if node.op != "call_function" or node.target not in (torch.ops.aten.conv2d.default,):
            continue
        weight = node.args[1]
        if getattr(weight, "op", None) != "get_attr":
            continue
        if weight.target not in seen:
            seen.add(weight.target)
            continue
        name = f"{weight.target.replace('.', '_')}_untied_{untied}"
        source = captured.get_parameter(weight.target) if weight.target in dict(captured.named_parameters()) \
            else captured.get_buffer(weight.target)
        captured.register_parameter(name, torch.nn.Parameter(source.detach().clone(), source.requires_grad))
        with captured.graph.inserting_before(node):
            copy_node = captured.graph.get_attr(name)
        copy_node.meta = dict(weight.meta)
        node.replace_input_with(weight, copy_node)
        untied += 1
    if untied:
        captured.recompile()
    return untied


def remove_dropout(captured) -> int:
    """Take every dropout out of the captured graph (its input flows on); returns how many were removed.

    torchao's ``move_exported_model_to_train`` rewrites each dropout of an exported graph into a training-mode
    dropout of p = 0.5 whatever the model's p was (measured on MONAI's BasicUNet, whose 18 dropouts are p = 0:
    calibration and fine-tuning then ran with half the activations dropped, and the fake-quantised graph kept
    0.94 of the pixel-pair order instead of 0.993). The deployed graph has no dropout, and QAT is a short
    distillation of it, so none is kept."""
    removed = 0
    for node in list(captured.graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.dropout.default:  # what eval capture gives
            node.replace_all_uses_with(node.args[0])
            captured.graph.erase_node(node)
            removed += 1
    if removed:
        captured.graph.eliminate_dead_code()
        captured.recompile()
    return removed


# ``phase_split_transposed_convs`` (issue 16): litert-torch's PT2E path keeps a quantised ConvTranspose2d in
# float (the LiteRT converter, litert-converter 0.5, folds its dequantised weight into a float TRANSPOSE_CONV
# with a DEQUANTIZE / QUANTIZE pair around it, per-channel or per-tensor alike; docs/export.md, "int8 bars and
# QAT"). A transposed convolution of stride s is s x s ordinary convolutions of its input, one per output phase,
# interleaved: output row t = s * q + r (before cropping the padding) sums input rows q - m with kernel row
# r + s * m. So one Conv2d of s * s * cout channels (kernel ceil(k / s), the taps flipped) and a pixel shuffle
# compute it exactly, and litert-torch lowers both to integer kernels (CONV_2D; RESHAPE / TRANSPOSE). QAT splits
# the graph it fake-quantises (``prepare_graph``), so the int8 program fine-tunes and deploys the split form; the
# fp32 / fp16 exports keep the TRANSPOSE_CONV.
class PhaseSplitConvTranspose2d(torch.nn.Module):
    """The int8 form of a ``ConvTranspose2d`` (groups 1, dilation 1): pad → conv → pixel shuffle → crop."""

    def __init__(self, tconv: torch.nn.ConvTranspose2d):
        super().__init__()
        if tconv.groups != 1 or tconv.dilation != (1, 1) or tconv.padding_mode != "zeros":
            raise ValueError("phase splitting needs an ungrouped, undilated, zero-padded transposed convolution")
        self.stride, self.padding, self.kernel = tconv.stride, tconv.padding, tconv.kernel_size
        self.output_padding = tconv.output_padding
        taps = [-(-k // s) for k, s in zip(self.kernel, self.stride)]  # ceil(k / s) per dimension
        # pad left/top by taps - 1; right/bottom so that every output row the crop keeps is computed
        extra = [max(t - 1, -(-(k + o - p) // s) - 1) for t, k, o, p, s
                 in zip(taps, self.kernel, self.output_padding, self.padding, self.stride)]
        self.pads = (taps[1] - 1, extra[1], taps[0] - 1, extra[0])
        self.conv = torch.nn.Conv2d(tconv.in_channels, tconv.out_channels * self.stride[0] * self.stride[1], taps,
                                    bias=tconv.bias is not None)
        self.conv.weight.data.copy_(self._phase_weight(tconv.weight.detach(), taps))
        if tconv.bias is not None:  # pixel_shuffle's channel order: c * s * s + row_phase * s + col_phase
            self.conv.bias.data.copy_(tconv.bias.detach().repeat_interleave(self.stride[0] * self.stride[1]))

    def _phase_weight(self, weight: torch.Tensor, taps: list[int]) -> torch.Tensor:
        """(cin, cout, kh, kw) transposed kernel → (cout * sh * sw, cin, taps_h, taps_w) phase kernels."""
        (sh, sw), (kh, kw) = self.stride, self.kernel
        cin, cout = weight.shape[:2]
        split = weight.new_zeros(cout, sh, sw, cin, *taps)
        for row in range(kh):
            for col in range(kw):  # tap (row, col) = phase (row % s) + s * m, read at flipped index taps - 1 - m
                split[:, row % sh, col % sw, :, taps[0] - 1 - row // sh, taps[1] - 1 - col // sw] = \
                    weight[:, :, row, col].t()
        return split.reshape(cout * sh * sw, cin, *taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        out_h = (height - 1) * self.stride[0] - 2 * self.padding[0] + self.kernel[0] + self.output_padding[0]
        out_w = (width - 1) * self.stride[1] - 2 * self.padding[1] + self.kernel[1] + self.output_padding[1]
        phases = self.conv(torch.nn.functional.pad(x, self.pads) if any(self.pads) else x)
        full = torch.nn.functional.pixel_shuffle(phases, self.stride[0]) if self.stride[0] == self.stride[1] \
            else _shuffle(phases, self.stride)
        top, left = self.padding
        if top == 0 and left == 0 and full.shape[-2:] == (out_h, out_w):
            return full
        return full[..., top:top + out_h, left:left + out_w]


def _shuffle(phases: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Pixel shuffle with a different stride per dimension (channel order c * sh * sw + row * sw + col)."""
    n, channels, height, width = phases.shape
    sh, sw = stride
    grid = phases.reshape(n, channels // (sh * sw), sh, sw, height, width).permute(0, 1, 4, 2, 5, 3)
    return grid.reshape(n, channels // (sh * sw), height * sh, width * sw)


def phase_split_transposed_convs(model: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """A copy of ``model`` with every ungrouped, undilated ``torch.nn.ConvTranspose2d`` in its phase-split form
    (:class:`PhaseSplitConvTranspose2d`); and how many were rewritten (others stay as they are)."""
    import copy

    rewritten = copy.deepcopy(model)
    count = 0
    for parent in rewritten.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.ConvTranspose2d) and child.groups == 1 and child.dilation == (1, 1) \
                    and child.padding_mode == "zeros":
                setattr(parent, name, PhaseSplitConvTranspose2d(child))
                count += 1
    return rewritten, count


def prepare_graph(model: torch.nn.Module, input_size: tuple[int, int], rewrite: Callable | None = None):
    """The deployed graph with fake quantisation (training mode): export, fold BN, ``prepare_qat_pt2e``."""
    import copy

    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    graph = copy.deepcopy(model).eval().requires_grad_(True)  # the parent may be frozen (the teacher)
    if rewrite is not None:
        graph, _ = rewrite(graph)
    graph, _ = phase_split_transposed_convs(graph)  # int8 CONV_2D + pixel shuffle, not a float TRANSPOSE_CONV
    sample = torch.rand(2, 3, *input_size)
    batch = torch.export.Dim("batch", max=4096)
    captured = torch.export.export(graph.eval(), (sample,), dynamic_shapes=({0: batch},), strict=False).module()
    untie_conv_weights(captured)
    remove_dropout(captured)
    _fuse_conv_bn_(captured)
    prepared = prepare_qat_pt2e(captured, quantizer())
    move_exported_model_to_train(prepared)
    allow_exported_model_train_eval(prepared)  # validation switches modes (no BN or dropout left to care)
    return prepared


def quantised_program(prepared, input_size: tuple[int, int]) -> torch.Tensor:
    """``convert_pt2e`` of the fine-tuned graph, exported for batch 1 and serialised as a uint8 tensor."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared, fold_quantize=False)
    program = torch.export.export(converted, (torch.rand(1, 3, *input_size),), strict=False)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).clone()


def set_observers(prepared, enabled: bool) -> None:
    """Let the fake-quantise modules keep updating their ranges, or freeze them."""
    from torchao.quantization.pt2e import disable_observer, enable_observer

    prepared.apply(enable_observer if enabled else disable_observer)


@dataclass
class QatSetup:
    """A QAT run checked and ready: config, run directory, data, the fp32 parent and its fake-quantised graph."""

    cfg: dict
    settings: QatSettings
    run_dir: Path
    data: str
    parent: Path
    train_data: object
    val_data: object | None
    fp32: torch.nn.Module   # the parent, heads stripped, eval mode: the teacher and the reference
    resolved: object        # mobiledepth.arch.resolve.ResolvedModel of the parent (its spec, or its factory)
    prepared: object        # the fake-quantised GraphModule being fine-tuned
    rewritten: bool


def prepare_qat(cfg: dict, data: str, out: str, rewrite: Callable | None = None) -> QatSetup:
    """Every check before the first step: the parent checkpoint, the run directory, enough images, the graph."""
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.io import check_writable
    from mobiledepth.train.trainer import _load_split

    settings = QatSettings.from_config(cfg["qat"])
    parent = parent_checkpoint(cfg["model"], cfg.get("init_checkpoint"))
    # the one resolver: a spec checkpoint, or --model module:factory --checkpoint C; a checkpoint of another
    # model (or a factory checkpoint without its --model) fails here, one line
    resolved = resolve_model(None if cfg.get("init_checkpoint") is None else cfg["model"], parent, with_heads=False)
    fp32 = resolved.model
    run_dir = check_writable(out, "--out", folder=True)
    if (run_dir / "model.pt").exists() or (run_dir / "checkpoints" / "last.pt").exists():
        raise UserError(f"{run_dir} already holds a run; choose another --out")
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    data_cfg = cfg["data"]
    train_data = _load_split(data, data_cfg["train_split"], data_cfg["skip_bad"], required=True)
    if len(train_data.samples) < settings.min_images:
        raise UserError(f"--qat needs at least {settings.min_images} training images to calibrate the quantisation "
                        f"ranges; {data} has {len(train_data.samples)}; add images (or lower qat.min_images)")
    val_data = None
    if data_cfg["val_split"] and not Path(data).is_file() and data_cfg["val_split"] != data_cfg["train_split"]:
        val_data = _load_split(data, data_cfg["val_split"], data_cfg["skip_bad"], required=False,
                               limit=int(data_cfg["val_limit"]) if data_cfg["val_limit"] else None)
    fp32.eval().requires_grad_(False)
    torch.manual_seed(int(cfg["seed"]))
    prepared = prepare_graph(fp32, tuple(cfg["input_size"]), rewrite)
    return QatSetup(cfg, settings, run_dir, data, parent, train_data, val_data, fp32, resolved, prepared,
                    rewrite is not None)


def _batches(setup: QatSetup):
    """An endless iterator of (epoch, batch) over the training split, in the trainer's seeded order."""
    from mobiledepth.compute.distributed import SINGLE
    from mobiledepth.data.dataset import DiwDataset
    from mobiledepth.train.loader import EpochBatches, LoaderSettings, make_loader

    cfg = setup.cfg
    dataset = DiwDataset(setup.train_data, tuple(cfg["input_size"]), draft=True, cache=True)
    batches = EpochBatches(len(dataset), int(cfg["batch_size"]), int(cfg["seed"]), SINGLE)
    loader = make_loader(dataset, batches, LoaderSettings(0, 2, False))
    epoch = 0
    while True:
        batches.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1


def calibrate(setup: QatSetup) -> None:
    """Run training images through the observers (no gradients) so that the ranges start from data."""
    from mobiledepth.data.dataset import DiwDataset

    dataset = DiwDataset(setup.train_data, tuple(setup.cfg["input_size"]), draft=True, cache=True)
    count = min(setup.settings.calibration_images, len(dataset))
    with torch.no_grad():
        for start in range(0, count, 8):
            images = torch.stack([torch.as_tensor(dataset[i]["image"]) for i in range(start, min(start + 8, count))])
            setup.prepared(images)


def qat_terms(setup: QatSetup, batch: dict) -> dict[str, torch.Tensor]:
    """The paper's ranking loss on the fake-quantised depth, and the RMSE to the fp32 parent's depth."""
    from mobiledepth.train.losses import ranking_loss, rmse_loss

    depth = setup.prepared(batch["image"])
    terms = {"ranking": ranking_loss(depth, batch["points"], batch["rel"], batch["mask"])}
    if setup.settings.distill:
        with torch.no_grad():
            reference = setup.fp32(batch["image"])
        terms["rmse"] = rmse_loss(depth, reference)
    return terms


def total_steps(setup: QatSetup) -> int:
    """``max_steps`` when given, else ``epochs`` over the training split."""
    import math

    cfg = setup.cfg
    per_epoch = math.ceil(len(setup.train_data.samples) / int(cfg["batch_size"]))
    return int(cfg["max_steps"]) if cfg["max_steps"] else per_epoch * int(cfg["epochs"])


def run_qat(setup: QatSetup, progress: ProgressFn | None = None) -> QatResult:
    """Calibrate, fine-tune with the observers frozen for the last steps, validate, convert and save."""
    from mobiledepth.train.trainer import fixed_weights, make_optimizer

    progress = progress or silent
    setup.run_dir.mkdir(parents=True, exist_ok=True)
    metrics = setup.run_dir / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    calibrate(setup)
    names = ["rmse", "ranking"] if setup.settings.distill else ["ranking"]
    weights = fixed_weights({**setup.cfg, "teacher": "fp32-parent" if setup.settings.distill else None,
                             "loss": {**setup.cfg["loss"], "pairwise": False, "rmse": setup.settings.distill}})
    optimizer = make_optimizer(setup.prepared.parameters(), setup.cfg)
    stop, freeze_at = total_steps(setup), int(round(total_steps(setup) * setup.settings.freeze_observers))
    budget = float(setup.cfg["max_minutes"]) * 60 if setup.cfg["max_minutes"] else None
    started, step = time.perf_counter(), 0
    for epoch, batch in _batches(setup):
        if step >= stop or (budget is not None and time.perf_counter() - started > budget):
            break
        if step == freeze_at:
            set_observers(setup.prepared, False)
        terms = qat_terms(setup, batch)
        loss = sum(weights[name] * terms[name] for name in names)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        event = {"event": "step", "step": step, "epoch": epoch + 1, "total_steps": stop, "lr": optimizer.param_groups[0]["lr"],
                 "loss": {n: float(terms[n].detach()) for n in names}, "weights": weights, "total": float(loss.detach())}
        if step % int(setup.cfg["log_every"]) == 0 or step == 1:
            with open(metrics, "a") as handle:
                handle.write(json.dumps(event) + "\n")
        progress(Progress("train", "step", done=step, total=stop, info=event))
    return _finish(setup, step, time.perf_counter() - started)


def _val_whdr(setup: QatSetup, model) -> float | None:
    """WHDR on the validation split (the trainer's loop), or None without one."""
    from mobiledepth.train.trainer import validation_whdr

    if setup.val_data is None:
        return None
    return validation_whdr(model, setup.val_data, tuple(setup.cfg["input_size"]), batch_size=16).value


def _finish(setup: QatSetup, steps: int, seconds: float) -> QatResult:
    """Validate fp32 and fake-quantised, convert, write ``model.pt`` (parent weights + program) and ``train.json``."""
    from types import SimpleNamespace

    from torchao.quantization.pt2e import move_exported_model_to_eval

    from mobiledepth.arch import save_checkpoint
    from mobiledepth.arch.checkpoint import read_checkpoint
    from mobiledepth.io import sha256_file, write_json_atomic
    from mobiledepth.records import new_record

    cfg, size = setup.cfg, tuple(setup.cfg["input_size"])
    whdr_fp32 = _val_whdr(setup, setup.fp32)
    set_observers(setup.prepared, False)  # the ranges are final: validation must not move them
    move_exported_model_to_eval(setup.prepared)
    whdr_qat = _val_whdr(setup, setup.prepared)
    program = quantised_program(setup.prepared, size)
    parent = read_checkpoint(setup.parent)
    data = Path(setup.data).resolve()
    qat = {"format": QAT_FORMAT, "scheme": SCHEME, "parent": str(setup.parent.resolve()),
           "parent_sha256": sha256_file(setup.parent), "input_size": list(size), "steps": steps,
           "rewrites": "phase_split_upsampling" if setup.rewritten else "none",
           "val_whdr_fp32": whdr_fp32, "val_whdr_qat": whdr_qat, "data_path": str(data),
           "val_split": cfg["data"]["val_split"], "torch": str(torch.__version__)}
    model_path = setup.run_dir / "model.pt"
    save_checkpoint(model_path, SimpleNamespace(state_dict=lambda: parent["state_dict"]), setup.resolved.spec,
                    input_size=list(size), steps=steps, val_whdr=whdr_fp32, qat=qat, qat_program=program,
                    **setup.resolved.checkpoint_meta())
    write_json_atomic(setup.run_dir / "train.json", {
        **new_record("train"), "model": setup.resolved.name, "teacher": None, "steps": steps, "total_steps": steps,
        "stopped": "done", "seconds": round(seconds, 2), "val_whdr": whdr_qat, "qat": qat,
        "model_path": str(model_path)})
    return QatResult(setup.run_dir, model_path, steps, seconds, whdr_fp32, whdr_qat)
