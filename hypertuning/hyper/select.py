"""The key/value selection readout: the prefix is the downstream model's own keys and values at P positions
of the examples, chosen where each example ends (its output and the separator after it).

Why a readout of its own: the frozen model reading the examples in context is the one method that reads
them on must-read tasks (BENCHMARKS.md, "Reading the examples: where we start"), while hypermodels trained
to compress the examples into P learned slots (`kv.py`) or into LoRA (`outer.py`) have stayed near
zero-shot at our scale. In-context learning needs no compression to be learned: its key/values *are* an
adapter, only a long one. This readout keeps the part of that cache in-context learning leans on. The key
at an example's output token was computed after its input (previous-token and induction heads write the
input into it), and its value carries the label, so a query can find the example it resembles and copy
its label, which is what follows a permutation of the labels.

- With `slots` at least the examples' token count, every position is kept and the adapted model computes
  exactly what the frozen model computes reading the examples in context (tested).
- Selection, per example: the `keep` tokens before each separator and the separator itself; when those
  are more than P, the last examples' win; when fewer, the latest other positions fill the rest. The
  readout's batch output is P columns wide, whatever the examples; each task's adapter from `generate`
  keeps its real columns only (`Adapter.compact`), and a batch of adapters pads them again.
- Positions: the examples are read at positions -T..-1, so a kept key meets the query (positions 0..) at
  the rotary angle it would meet in context; keys are taken after rotary and any QK-norm, recorded by the
  attention wrapper (`ActivePhi.capture`), as in `kv.py`.
- Trainable: nothing by default (a fresh readout is a method, not a model); `lora_rank` adds a LoRA on the
  reading pass, which training can teach to write more of each example into its kept positions (gisting's
  idea, without learned slots).
- Examples shorter in all than P tokens leave columns to spare. phi says which columns are real
  (`"self.mask"`, read by the attention wrapper), so the spare ones take no attention mass; a compact
  adapter and its peft file hold the real columns only (peft attends to every virtual token). Unmasked, those
  zero columns cost 16-21 points on must-read tasks of 76-98 tokens at P128 (BENCHMARKS.md).

Known limits: sliding-window layers see every earlier token in the reading pass; decoder-only downstream
models with rotary (or no) positions only.
"""

from __future__ import annotations

import torch

from ..errors import HypertuningError
from ..models.base import Slot
from ..peft import TARGETS, ActivePhi, Phi
from ..peft.prefix import mask_key
from .kv import DownstreamReadout
from .model import READOUTS


def select_positions(ids: list[int], sep: list[int], keep: int, slots: int) -> list[int]:
    """The `slots` positions of `ids` (one task's examples, as `encode_ids` writes them) whose keys and
    values form the prefix, ascending: each separator and the `keep` tokens before it first, latest
    first, then the latest of the rest. Fewer when `ids` is shorter than `slots`."""
    n, m = len(ids), len(sep)
    tail = [False] * n
    for s in range(n - m + 1):
        if ids[s : s + m] == sep:
            for j in range(max(0, s - keep), s + m):
                tail[j] = True
    order = sorted(range(n), key=lambda j: (tail[j], j), reverse=True)
    return sorted(order[:slots])


@READOUTS.register("select")
class SelectReadout(DownstreamReadout):
    """Options (`readout_options`): `slots` (P, the prefix length), `keep` (tokens kept before each
    separator), `lora_rank` (0 = nothing trains), `lora_modules` (default: the family's LoRA modules) and
    `separator` (between examples)."""

    defaults = {"slots": 64, "keep": 3, "lora_rank": 0, "lora_modules": None, "separator": "\n"}
    target_name = "prefix"

    @classmethod
    def target_options(cls, downstream, opts):
        for key in ("slots", "keep", "lora_rank"):
            if not isinstance(opts[key], int) or isinstance(opts[key], bool):
                raise HypertuningError(f"select readout option {key} must be an integer, got {opts[key]!r}")
        if opts["slots"] < 1 or opts["keep"] < 0 or opts["lora_rank"] < 0:
            raise HypertuningError(
                "select readout: slots must be >= 1, keep and lora_rank >= 0; got "
                f"{opts['slots']}, {opts['keep']} and {opts['lora_rank']}"
            )
        return TARGETS.get("prefix")(downstream.spec, prefix_len=opts["slots"]).options

    def setup(self, downstream) -> None:
        if downstream.attention_base is None:
            raise HypertuningError(
                "The select readout reads keys and values through the 'sdpa' or 'eager' attention "
                f"implementation; this model uses {downstream.model.config._attn_implementation!r}"
            )
        positions = self.spec.kinds["self"].positions
        if positions not in ("rotary", "none"):
            raise HypertuningError(
                f"The select readout reads the examples at positions -T..-1 before the real tokens, which "
                f"only relative (rotary) positions allow; this {self.spec.model_type} model has {positions} "
                "positions. Use the heads readout (--readout heads) or the outer LoRA readout."
            )
        self.lora = None
        if int(self.opts["lora_rank"]):
            lora = TARGETS.get("lora")(
                self.spec, rank=int(self.opts["lora_rank"]), modules=self.opts["lora_modules"]
            )
            self._lora_target = lora
            self.lora = lora.trainable()  # peft's start: B zero, so a fresh readout is the plain model

    @property
    def device(self) -> torch.device:
        return self._downstream[0].device  # there may be no parameters of its own

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Phi:
        """Right-padded example ids [B, T] -> phi {"self": [B, L, 2, Hkv, P, D]}; differentiable in the
        readout's LoRA, if any."""
        model = self._downstream[0].model
        b, t = input_ids.shape
        p, dev = self.target.prefix_len, input_ids.device
        lengths = attention_mask.sum(1, keepdim=True)
        positions = torch.arange(t, device=dev)[None] - lengths  # the last real token at -1
        lora = self._lora_target.bind(self.lora()).lora if self.lora is not None else {}
        active = ActivePhi(lora=lora, capture={}, capture_last=1 << 30)
        model.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=False,
            hypertuning_phi=active,
        )
        index = torch.zeros(b, p, dtype=torch.long, device=dev)
        filled = torch.zeros(b, p, dtype=torch.bool, device=dev)
        for i in range(b):
            ids = input_ids[i, : int(lengths[i])].tolist()
            chosen = select_positions(ids, self._sep_ids, int(self.opts["keep"]), p)
            index[i, : len(chosen)] = torch.tensor(chosen, dtype=torch.long)
            filled[i, : len(chosen)] = True
        ks = self.spec.kinds["self"]
        layers = []
        for layer in range(ks.num_layers):
            k, v = active.capture[Slot("self", layer)]  # [B, Hkv, T, D]
            at = index[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[-1])
            keep = filled[:, None, :, None].to(k.dtype)
            layers.append(torch.stack([k.gather(2, at) * keep, v.gather(2, at) * keep], dim=1))
        # [B, L, 2, Hkv, P, D], and which of the P columns are real: attention never sees the others
        return {"self": torch.stack(layers, dim=1).float(), mask_key("self"): filled.float()}
