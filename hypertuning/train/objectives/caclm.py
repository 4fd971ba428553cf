"""Hyperpretraining: context-augmented conditional language modelling (CACLM)."""

from __future__ import annotations

from ...data.caclm import CaclmCorpus, CaclmEncoder, Segments, bigbench_prose, documents_from_files
from ...data.collections.toy import toy_documents
from ...errors import HypertuningError
from ..config import RunConfig
from .base import (
    OBJECTIVES,
    Objective,
    build_hypermodel,
    lm_collate,
)
from .hyper import HyperLM, save_hypermodel


@OBJECTIVES.register("caclm")
class Caclm(Objective):
    """Hyperpretraining (section 4.2): the hypermodel reads A and D, the frozen downstream model reads B and
    is trained to predict C through the generated phi."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        c = cfg.caclm
        if cfg.hypermodel.readout != "heads":
            raise HypertuningError(
                f"caclm hyperpretrains the paper's hypermodel (its <before>/<after> input format); the "
                f"{cfg.hypermodel.readout!r} readout reads examples with the downstream model itself and has "
                "no such input. Train it with mtf_hyper directly."
            )
        self.hypermodel = build_hypermodel(cfg, self.downstream)
        docs = self.documents()
        n_val = min(c.validation_documents, len(docs) // 10)
        seg = Segments(**c.segments)
        tok = self.downstream.tokenizer
        self.corpus = CaclmCorpus(docs[: len(docs) - n_val], tok, seg, cfg.seed)
        self.val_corpus = CaclmCorpus(docs[len(docs) - n_val :], tok, seg, cfg.seed + 1) if n_val else None
        self.encoder = CaclmEncoder(self.downstream, self.hypermodel)
        self.stream_fingerprint = self.corpus.fingerprint
        self.module = HyperLM(self.hypermodel, self.downstream, False)

    def documents(self) -> list[str]:
        c = self.cfg.caclm
        if c.source == "bigbench_prose":
            docs = bigbench_prose()
        elif c.source == "files":
            if not c.files:
                raise HypertuningError("caclm.source=files needs caclm.files: [paths]")
            docs = list(documents_from_files(c.files, c.text_field))
        elif c.source == "toy":
            docs = toy_documents(seed=self.cfg.seed)
        else:
            raise HypertuningError(f"caclm.source must be bigbench_prose, files or toy; got {c.source!r}")
        return docs[: c.max_documents] if c.max_documents else docs

    def collate(self, samples):
        return lm_collate(self.downstream, [self.encoder(s) for s in samples], self.pad)

    @property
    def pad(self):
        return self.hypermodel.tokenizer.pad_token_id or 0

    def batch(self, indices):
        return self.collate([self.corpus.sample(i) for i in indices])

    def validation(self, processes: int = 1):
        if self.val_corpus is None:
            return []
        b = self.cfg.train.batch_size
        n = min(self.cfg.eval.batches * processes, max(1, len(self.val_corpus) // b))
        return [
            self.collate([self.val_corpus.sample(i) for i in range(j * b, (j + 1) * b)]) for j in range(n)
        ]

    def checkpointable(self):
        return [*self.hypermodel.trainable_backbones(), self.downstream.model]

    def save_final(self, directory, step):
        save_hypermodel(self, directory, step)
