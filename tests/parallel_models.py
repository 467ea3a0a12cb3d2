"""Tiny models and their parallel plans, written with PyTorch's APIs directly, for the real
multi-process oracle (tests/parallel_oracle.py) and the tests that hold convprof to it.

Each ``CASES`` entry builds the model (seeded), one rank's input, the loss, and ``apply``,
which shards the model in the current process group as the plan says: FSDP2 over each block
then the root, and for tensor parallelism PyTorch's ColwiseParallel and RowwiseParallel
spelled out module by module, as torchtitan writes them. None of it is convprof's code: the
oracle must not share what it checks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class Block(nn.Module):
    """A residual MLP block: Linear(d, 4d), GELU, Linear(4d, d)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.gelu(self.up(x)))


class MLP(nn.Module):
    """Residual MLP blocks and a small head (the notes' MLP, smaller)."""

    def __init__(self, width: int = 256, depth: int = 4, classes: int = 16) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def mlp() -> nn.Module:
    return MLP()


def _llama(width: int, layers: int, heads: int, vocabulary: int) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=width,
        intermediate_size=width * 43 // 16,  # 344 at 128, 1376 at 512: about 8/3, rounded up
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        vocab_size=vocabulary,
        max_position_embeddings=max(256, width),
    )
    return LlamaForCausalLM(config)


def llama() -> nn.Module:
    """A tiny Llama: 2 layers of width 128, 4 heads over 2 key/value heads."""
    return _llama(128, 2, 4, 512)


def llama_wide() -> nn.Module:
    """A larger Llama for the docs' table: 4 layers of width 512."""
    return _llama(512, 4, 8, 2048)


def vit() -> nn.Module:
    import timm

    return timm.create_model("vit_tiny_patch16_224", num_classes=10)


def _router(kind: str) -> type:
    """A Mixtral router whose choices are set, so that a real run routes as a routing
    assumption says: ``balanced`` sends token t to experts (t k + j) mod E, j < k (each expert
    the same share); ``worst`` sends every token to experts 0..k-1 (all to rank 0's)."""
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    def forward(self: Any, hidden: torch.Tensor) -> Any:
        logits, scores, index = MixtralTopKRouter.forward(self, hidden)
        pairs = torch.arange(index.numel(), device=index.device).view(index.shape)
        index = pairs % self.num_experts if kind == "balanced" else pairs % self.top_k
        return logits, scores, index

    return type(f"{kind.title()}Router", (MixtralTopKRouter,), {"forward": forward})


_ROUTERS: dict[str, type] = {}


def mixtral(kind: str = "balanced") -> nn.Module:
    """A tiny Mixtral: 2 layers of width 64, 4 experts of width 128, 2 per token, routed as
    ``kind`` says (:func:`_router`)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=512,
    )
    model = MixtralForCausalLM(config)
    router = _ROUTERS.setdefault(kind, _router(kind))
    for layer in model.model.layers:
        layer.mlp.gate.__class__ = router
    return model


def mixtral_worst() -> nn.Module:
    return mixtral("worst")


def mixtral_bf16() -> nn.Module:
    """The tiny Mixtral in bf16 (its grouped products run in bf16 on the CPU), for plans
    without FSDP2's mixed precision."""
    return mixtral().to(torch.bfloat16)


def mixtral_tensor_plan(model: nn.Module, mesh: Any) -> None:
    """transformers' plan for Mixtral with PyTorch's styles: the embeddings row-wise, q/k/v
    column-wise, o row-wise, the head column-wise with its output gathered; the experts are
    expert parallelism's."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    layout: dict[str, Any] = {
        "model.embed_tokens": RowwiseParallel(input_layouts=Replicate()),
        "lm_head": ColwiseParallel(output_layouts=Replicate()),
    }
    for index in range(len(model.model.layers)):  # type: ignore[union-attr, arg-type]
        for name in ("q_proj", "k_proj", "v_proj"):
            layout[f"model.layers.{index}.self_attn.{name}"] = ColwiseParallel()
        layout[f"model.layers.{index}.self_attn.o_proj"] = RowwiseParallel()
    parallelize_module(model, mesh, layout)


def expert_plan(model: nn.Module) -> dict[str, str]:
    """transformers' expert-parallel styles for the tiny Mixtral (or a stage of it), module by
    module: each experts module's weights split along the experts, the module reached by its
    dispatch."""
    plan = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "MixtralExperts":
            plan[f"{name}.gate_up_proj"] = "grouped_gemm"
            plan[f"{name}.down_proj"] = "grouped_gemm"
            plan[name] = "ep_dispatch_experts"
    return plan


def resnet() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


def mlp_tensor_plan(model: nn.Module, mesh: Any) -> None:
    """Each block's up projection column-wise, its down projection row-wise (one all-reduce
    per block forward, one per block backward); the head replicated."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    layout = {}
    for index in range(len(model.blocks)):  # type: ignore[arg-type]
        layout[f"blocks.{index}.up"] = ColwiseParallel()
        layout[f"blocks.{index}.down"] = RowwiseParallel()
    parallelize_module(model, mesh, layout)


def llama_tensor_plan(model: nn.Module, mesh: Any) -> None:
    """transformers' plan for Llama with PyTorch's styles: embeddings row-wise, q/k/v and
    gate/up column-wise, o/down row-wise, the head column-wise with its output gathered."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    layout: dict[str, Any] = {
        "model.embed_tokens": RowwiseParallel(input_layouts=Replicate()),
        "lm_head": ColwiseParallel(output_layouts=Replicate()),
    }
    for index in range(len(model.model.layers)):  # type: ignore[union-attr, arg-type]
        prefix = f"model.layers.{index}"
        for name in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
        ):
            layout[f"{prefix}.{name}"] = ColwiseParallel()
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            layout[f"{prefix}.{name}"] = RowwiseParallel()
    parallelize_module(model, mesh, layout)


def mlp_stage(model: nn.Module, index: int, count: int) -> nn.Module:
    """Pipeline stage ``index`` of ``count`` of the MLP: its share of the blocks (in order, the
    first stages one more when they do not divide), the head on the last stage only."""
    blocks = list(model.blocks)  # type: ignore[arg-type]
    size, extra = divmod(len(blocks), count)
    start = index * size + min(index, extra)
    model.blocks = nn.ModuleList(blocks[start : start + size + (index < extra)])
    if index < count - 1:
        model.head = nn.Identity()
    return model


class LlamaStage(nn.Module):
    """Pipeline stage ``index`` of ``count`` of a transformers Llama, written out as torchtitan
    writes its stages: the embeddings on the first, a share of the decoder layers (the first
    stages one more when they do not divide), the final norm and head on the last; the rotary
    embedding and causal attention (no mask) on every one."""

    def __init__(self, model: nn.Module, index: int, count: int) -> None:
        super().__init__()
        inner: Any = model.model
        layers = list(inner.layers)
        size, extra = divmod(len(layers), count)
        start = index * size + min(index, extra)
        self.layers = nn.ModuleList(layers[start : start + size + (index < extra)])
        self.embed = inner.embed_tokens if index == 0 else None
        self.rotary = inner.rotary_emb
        last = index == count - 1
        self.norm, self.head = (inner.norm, model.lm_head) if last else (None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(x) if self.embed is not None else x
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
        rope = self.rotary(hidden, positions)
        for layer in self.layers:
            hidden = layer(hidden, position_embeddings=rope, position_ids=positions)
        if self.head is not None and self.norm is not None:
            hidden = self.head(self.norm(hidden))
        return hidden


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The blocks each sharded as a unit (then the root), written out per family."""
    if isinstance(model, MLP) or type(model).__name__ == "VisionTransformer":
        return list(model.blocks)  # type: ignore[arg-type]
    if type(model).__name__ == "ResNet":
        return [block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(model, name)]
    if isinstance(model, LlamaStage):
        return list(model.layers)
    return list(model.model.layers)


def _kept(func: Any) -> bool:
    """Whether torchtitan's op-level selective checkpointing keeps an operator's output:
    matrix products and attention kernels (every second ``mm`` aside, counted by the caller)."""
    aten = torch.ops.aten
    return func in (
        aten.mm.default,
        aten._scaled_dot_product_flash_attention_for_cpu.default,
        aten._scaled_dot_product_efficient_attention.default,
        aten._scaled_dot_product_flash_attention.default,
    )


def _checkpointed(model: nn.Module, how: str) -> None:
    """Non-reentrant checkpointing, as transformers' own turns the cache off: of every block
    (``blocks``), every block with torchtitan's op policy (``selective``), or the blocks' MLPs
    (``model.layers.*.mlp``, the one pattern the cases use)."""
    from functools import partial

    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    if hasattr(model, "config"):
        model.config.use_cache = False
    units = [layer.mlp for layer in model.model.layers] if how.endswith(".mlp") else fsdp_units(model)  # type: ignore[union-attr]

    def contexts() -> Any:
        counts = {False: 0, True: 0}  # mm calls in this block's forward, and in its recompute

        def policy(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            if func is torch.ops.aten.mm.default:
                counts[ctx.is_recompute] += 1
                if counts[ctx.is_recompute] % 2 == 0:
                    return CheckpointPolicy.PREFER_RECOMPUTE
            return CheckpointPolicy.MUST_SAVE if _kept(func) else CheckpointPolicy.PREFER_RECOMPUTE

        return create_selective_checkpoint_contexts(policy)

    options: dict[str, Any] = {"use_reentrant": False}
    if how == "selective":
        options["context_fn"] = contexts
    for unit in units:
        forward = unit.forward
        unit.forward = partial(checkpoint, forward, **options)  # type: ignore[method-assign]


def _expert_parallel(
    model: nn.Module, case: Case, groups: dict[str, str], dense: Any
) -> tuple[list[nn.Module], Any]:
    """transformers' own expert parallelism over ``ep`` (its all-to-all dispatch), on a mesh
    of the same ranks as the dense one (``efsdp`` x ``ep``, ``efsdp = fsdp / ep``): the
    experts modules and their FSDP2 mesh. A group of the same ranks as a dense one is the
    same process group, named by both dimensions."""
    from torch.distributed.device_mesh import init_device_mesh
    from transformers.distributed.expert_parallel import apply_expert_parallelism

    ep, fsdp, pp = (
        int(case.parallel["ep"]),
        int(case.parallel.get("fsdp", 1)),
        int(case.parallel.get("pp", 1)),
    )
    tp = int(case.parallel.get("tp", 1))
    layout = (("pp", pp), ("efsdp", fsdp * tp // ep), ("ep", ep))
    names = tuple(name for name, size in layout if size > 1 or name != "pp")
    experts_mesh = init_device_mesh("cpu", tuple(dict(layout)[n] for n in names), mesh_dim_names=names)
    # the ranks that share a batch: the tensor-parallel group, or one rank each
    single = init_device_mesh("cpu", (pp * fsdp, 1), mesh_dim_names=("rest", "tp"))["tp"]
    one = dense["tp"] if tp > 1 else single
    plan = expert_plan(model)
    apply_expert_parallelism(model, experts_mesh["ep"], one, plan, ep_implementation="all_to_all")
    for name in ("efsdp", "ep"):
        key = str(experts_mesh.get_group(name).group_name)
        groups[key] = f"{groups[key]}/{name}" if key in groups and groups[key] != name else name
    experts = [m for n, m in model.named_modules() if plan.get(n) == "ep_dispatch_experts"]
    return experts, experts_mesh["efsdp"]


@dataclass(frozen=True)
class Case:
    """A model, one rank's micro-batch, the plan (convprof's ``parallel=`` dict: dimensions,
    ``accum``, ``param_dtype``), the loss, and a tensor-parallel plan where ``tp`` > 1."""

    build: Callable[[], nn.Module]
    input: Callable[[], torch.Tensor]
    parallel: dict[str, Any]
    loss: Callable[[Any], torch.Tensor]
    tensor_plan: Callable[[nn.Module, Any], None] | None = None
    pp_split: Callable[[nn.Module, int, int], nn.Module] | None = None

    def profile_options(self) -> dict[str, Any]:
        """convprof.profile's options for this case's training step (its caller adds the rest):
        a transformers decoder is cut into stages by convprof itself, as the real run cuts it
        its own way (LlamaStage), so ``pp_split`` goes to the other models only."""
        decoder = self.build in (llama, mixtral)
        return {
            "backward": True,
            "memory": "cpu",
            "optimizer": "adamw",
            "parallel": self.parallel,
            "loss": self.loss,
            # a Mixtral's own plan, which convprof maps (the real run writes it out)
            "tp_plan": None if self.build in (mixtral, mixtral_bf16) else self.tensor_plan,
            "pp_split": None if decoder else self.pp_split,
        }

    @property
    def world(self) -> int:
        return (
            int(self.parallel.get("dp", 1))
            * int(self.parallel.get("fsdp", 1))
            * int(self.parallel.get("tp", 1))
            * int(self.parallel.get("pp", 1))
        )


def _mlp_input() -> torch.Tensor:
    return torch.randn(64, 256)


def _ids() -> torch.Tensor:
    return torch.randint(0, 512, (2, 64))


def _sum(out: Any) -> torch.Tensor:
    return out.sum()


def _logits(out: Any) -> torch.Tensor:
    return out.logits.sum()


def _wide_ids() -> torch.Tensor:
    return torch.randint(0, 2048, (2, 256))


def _images() -> torch.Tensor:
    return torch.randn(8, 3, 224, 224)


def _small_images() -> torch.Tensor:
    return torch.randn(8, 3, 64, 64)


MIXED_BF16 = {"param_dtype": "bfloat16", "reduce_dtype": "float32"}  # _grouped_mm computes in bf16 on the CPU

CASES: dict[str, Case] = {
    "mlp-fsdp": Case(mlp, _mlp_input, {"fsdp": 2}, _sum),
    "mlp-tp": Case(mlp, _mlp_input, {"tp": 2}, _sum, mlp_tensor_plan),
    "llama-fsdp": Case(llama, _ids, {"fsdp": 2}, _logits),
    "llama-tp": Case(llama, _ids, {"tp": 2}, _logits, llama_tensor_plan),
    "llama-fsdp-tp": Case(llama, _ids, {"fsdp": 2, "tp": 2}, _logits, llama_tensor_plan),
    "mlp-fsdp-accum": Case(mlp, _mlp_input, {"fsdp": 2, "accum": 2}, _sum),
    "mlp-dp": Case(mlp, _mlp_input, {"dp": 2}, _sum),
    "mlp-pp-1f1b": Case(mlp, _mlp_input, {"pp": 2, "microbatches": 4}, _sum, pp_split=mlp_stage),
    "mlp-pp-gpipe": Case(
        mlp, _mlp_input, {"pp": 2, "microbatches": 4, "schedule": "gpipe"}, _sum, pp_split=mlp_stage
    ),
    "llama-pp": Case(llama, _ids, {"pp": 2, "microbatches": 2}, _logits, pp_split=LlamaStage),
    "mlp-pp-interleaved": Case(
        mlp, _mlp_input, {"pp": 2, "microbatches": 4, "schedule": "interleaved1f1b"}, _sum, pp_split=mlp_stage
    ),
    "mlp-pp-loopedbfs": Case(
        mlp, _mlp_input, {"pp": 2, "microbatches": 4, "schedule": "loopedbfs"}, _sum, pp_split=mlp_stage
    ),
    "mlp-pp-zero-bubble": Case(
        mlp, _mlp_input, {"pp": 2, "microbatches": 4, "schedule": "interleavedzb"}, _sum, pp_split=mlp_stage
    ),
    "mlp-pp-fsdp": Case(mlp, _mlp_input, {"pp": 2, "fsdp": 2, "microbatches": 4}, _sum, pp_split=mlp_stage),
    "mlp-hsdp": Case(mlp, _mlp_input, {"dp": 2, "fsdp": 2}, _sum),
    "mlp-fsdp-checkpoint": Case(mlp, _mlp_input, {"fsdp": 2, "checkpoint": "blocks"}, _sum),
    "llama-fsdp-selective": Case(llama, _ids, {"fsdp": 2, "checkpoint": "selective"}, _logits),
    "llama-fsdp-checkpoint-mlp": Case(llama, _ids, {"fsdp": 2, "checkpoint": "model.layers.*.mlp"}, _logits),
    "llama-fsdp-units-mlp": Case(llama, _ids, {"fsdp": 2, "units": "model.layers.*.mlp"}, _logits),
    "llama-tp-checkpoint": Case(llama, _ids, {"tp": 2, "checkpoint": "blocks"}, _logits, llama_tensor_plan),
    # larger, for the docs' table (benchmarks/parallel_oracle.py); world 2 and 4
    "mlp-fsdp4": Case(mlp, _mlp_input, {"fsdp": 4}, _sum),
    "mlp-tp4": Case(mlp, _mlp_input, {"tp": 4}, _sum, mlp_tensor_plan),
    "wide-fsdp": Case(llama_wide, _wide_ids, {"fsdp": 2}, _logits),
    "wide-fsdp4": Case(llama_wide, _wide_ids, {"fsdp": 4}, _logits),
    "wide-tp": Case(llama_wide, _wide_ids, {"tp": 2}, _logits, llama_tensor_plan),
    "wide-tp4": Case(llama_wide, _wide_ids, {"tp": 4}, _logits, llama_tensor_plan),
    "wide-fsdp-tp": Case(llama_wide, _wide_ids, {"fsdp": 2, "tp": 2}, _logits, llama_tensor_plan),
    "wide-fsdp-checkpoint": Case(llama_wide, _wide_ids, {"fsdp": 2, "checkpoint": "blocks"}, _logits),
    "wide-fsdp-bf16": Case(
        llama_wide, _wide_ids, {"fsdp": 2, "param_dtype": "bfloat16", "reduce_dtype": "float32"}, _logits
    ),
    "wide-fsdp-accum": Case(llama_wide, _wide_ids, {"fsdp": 2, "accum": 4}, _logits),
    "vit-fsdp": Case(vit, _images, {"fsdp": 2}, _sum),
    "vit-fsdp4": Case(vit, _images, {"fsdp": 4}, _sum),
    "resnet-fsdp": Case(resnet, _small_images, {"fsdp": 2}, _sum),
    "mlp-pp-fsdp-bf16": Case(
        mlp, _mlp_input, {"pp": 2, "fsdp": 2, "microbatches": 4, **MIXED_BF16}, _sum, pp_split=mlp_stage
    ),
    "mixtral-ep": Case(mixtral, _ids, {"fsdp": 2, "ep": 2, "routing": "balanced", **MIXED_BF16}, _logits),
    "mixtral-ep4": Case(mixtral, _ids, {"fsdp": 4, "ep": 2, "routing": "balanced", **MIXED_BF16}, _logits),
    "mixtral-pp-ep": Case(
        mixtral,
        _ids,
        {"pp": 2, "fsdp": 2, "ep": 2, "routing": "balanced", "microbatches": 2, **MIXED_BF16},
        _logits,
        pp_split=LlamaStage,
    ),
    "mixtral-tp-ep": Case(
        mixtral_bf16, _ids, {"tp": 2, "ep": 2, "routing": "balanced"}, _logits, mixtral_tensor_plan
    ),
    "mixtral-ep-worst": Case(
        mixtral_worst, _ids, {"fsdp": 2, "ep": 2, "routing": "worst", **MIXED_BF16}, _logits
    ),
    "llama-fsdp-bf16": Case(
        llama, _ids, {"fsdp": 2, "param_dtype": "bfloat16", "reduce_dtype": "float32"}, _logits
    ),
}


def apply(case: Case, model: nn.Module, rank: int) -> tuple[nn.Module, dict[str, str], Any]:
    """Shard ``model`` in the current process group as ``case.parallel`` says: the module this
    rank runs (a pipeline's stage, cut with ``case.pp_split``, or the model), the mesh
    dimension of each process group by the group's name, and the mesh."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    pp = case.parallel.get("pp", 1)
    dp, fsdp, tp = case.parallel.get("dp", 1), case.parallel.get("fsdp", 1), case.parallel.get("tp", 1)
    # the pipeline's stages, HSDP's replicate dimension, then the shard dimension (of 1 rank
    # for plain replication)
    layout = (("pp", pp), ("dp_replicate", dp), ("dp_shard", fsdp), ("tp", tp))
    names = tuple(n for n, size in layout if size > 1 or (n == "dp_shard" and dp > 1))
    sizes = tuple(size for n, size in layout if n in names)
    mesh = init_device_mesh("cpu", sizes, mesh_dim_names=names)
    if pp > 1:
        assert case.pp_split is not None
        place = mesh["pp"].get_local_rank()
        if case.parallel.get("schedule") in (
            "interleaved1f1b",
            "loopedbfs",
            "interleavedzb",
        ):  # stages place, place + pp, ...
            virtual = int(case.parallel.get("stages", 2))
            model = nn.ModuleList(
                case.pp_split(copy.deepcopy(model), place + k * pp, pp * virtual) for k in range(virtual)
            )
        else:
            model = case.pp_split(model, place, pp)
    if tp > 1:
        assert case.tensor_plan is not None
        case.tensor_plan(model, mesh["tp"])
    if case.parallel.get("checkpoint"):  # each checkpointed module keeps its input only
        _checkpointed(model, str(case.parallel["checkpoint"]))
    groups = {str(mesh.get_group(name).group_name): name for name in names}
    experts, experts_mesh = (
        _expert_parallel(model, case, groups, mesh) if "ep" in case.parallel else ([], None)
    )
    if fsdp > 1 or dp > 1:
        data = mesh["dp_replicate", "dp_shard"] if dp > 1 else mesh["dp_shard"]
        dtypes = {
            key: getattr(torch, case.parallel[key])
            for key in ("param_dtype", "reduce_dtype")
            if key in case.parallel
        }
        policy = MixedPrecisionPolicy(**dtypes)
        for module in experts:  # as transformers shards them: on their own mesh, averaged over fsdp
            fully_shard(module, mesh=experts_mesh, mp_policy=policy)
            module.set_gradient_divide_factor(float(fsdp))
            if fsdp * tp // int(case.parallel["ep"]) > 1:  # gloo has no PREMUL_SUM: sum, then divide
                module.set_force_sum_reduction_for_comms(True)
        units = fsdp_units(model)
        if case.parallel.get("units") == "model.layers.*.mlp":  # the one pattern the cases use
            units = [layer.mlp for layer in model.model.layers]  # type: ignore[union-attr]
        for unit in units:
            fully_shard(unit, mesh=data, mp_policy=policy)
        fully_shard(model, mesh=data, mp_policy=policy)
    return model, groups, mesh
