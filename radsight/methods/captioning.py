"""Report-captioning pre-training: the image encoder learns by writing the radiology report, then
classifies with few labels; a trained model also writes a draft report beside its probabilities.

After Quigley et al., "RadTex: Learning Efficient Radiograph Representations from Text Reports" (REMIA,
MICCAI 2022) and the VirTex line: a registry CNN encoder, its last spatial feature map projected to the
width of a small transformer decoder (:mod:`radsight.nn.caption_decoder`) that models the report
left to right with teacher forcing and label smoothing; ``bidirectional`` adds a second decoder reading
it right to left (the group's later paper), both losses averaged, only the forward one writing.

Stages: ``caption`` (encoder and decoders) trains by default on the ``reports`` pool, every training
image with a report and nothing else, unaugmented (a mirrored film would contradict "right lower
lobe"); ``finetune`` (encoder and a linear head) on the labelled pool. The label-efficiency comparison
trains ``caption`` once and transfers the encoder through ``model.pretrained: run:PATH``
(:mod:`radsight.studies.curve`).

The report a model learns is :func:`radsight.text.clean.clean_report` of the source's report (the
recipe's sections, prior-study sentences stripped), tokenised by a BPE vocabulary learnt on the
training split's reports when the run plans its stages. The vocabulary travels inside the weights (its
JSON as a byte tensor, so a model folder needs nothing else) and as ``tokenizer.json`` in the run
folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import Dataset

from radsight.checkpoints import write_json
from radsight.config import StageConfig, StageData, Strict
from radsight.data.sample import Batch, make_loader
from radsight.errors import ConfigError
from radsight.methods.base import DRAFT_NOTICE, Method, Prediction
from radsight.nn.backbones import create_backbone
from radsight.nn.caption_decoder import CaptionDecoder
from radsight.nn.losses import classification_loss, probabilities
from radsight.run_folder import is_launching_process
from radsight.text.clean import Section, clean_report
from radsight.text.decoding import beam_search, greedy
from radsight.text.tokenizer import MIN_VOCABULARY, TOKENIZER_FILE, ReportTokenizer

if TYPE_CHECKING:
    from radsight.data.assemble import DataSplits

log = logging.getLogger(__name__)

CAPTION, FINETUNE = "caption", "finetune"
GENERATED_FILE = "generated_reports.json"
STRATEGIES = ("greedy", "beam")


class ReportOptions(Strict):
    sections: list[Section] = Field(
        default_factory=lambda: ["findings", "impression"], min_length=1, description="of headed reports"
    )
    strip_prior: bool = Field(True, description="drop sentences that compare with an earlier study")
    vocab_size: int = Field(
        10000,
        ge=MIN_VOCABULARY,
        description="BPE vocabulary, learnt on the training reports (the 256 bytes "
        "and 5 special tokens first)",
    )
    lowercase: bool = True
    max_tokens: int = Field(128, ge=4, description="longest report read or written, in tokens")


class DecoderOptions(Strict):
    width: int = Field(512, ge=8)
    heads: int = Field(8, ge=1)
    layers: int = Field(1, ge=1, le=4)
    dropout: float = Field(0.1, ge=0, lt=1)


class WritingOptions(Strict):
    """How ``predict`` writes the draft report; evaluation scores greedy and beam both."""

    strategy: Literal["greedy", "beam"] = "beam"
    beam_width: int = Field(3, ge=1)
    length_penalty: float = Field(
        1.0, ge=0, description="beam ranking by score / length^alpha: 0 favours short reports, 1 is per token"
    )


class CaptioningOptions(Strict):
    backbone: str = Field("efficientnet_lite0", description="any registry backbone name")
    pretrained: str | None = Field(
        None, description="encoder start: a weights file, 'imagenet', or run:PATH (an earlier run's encoder)"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="before the classification head")
    cam_stride: int | None = Field(None, description="output stride of the block Grad-CAM explains")
    report: ReportOptions = Field(default_factory=ReportOptions)
    decoder: DecoderOptions = Field(default_factory=DecoderOptions)
    bidirectional: bool = Field(False, description="a second decoder reads the report right to left")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    writing: WritingOptions = Field(default_factory=WritingOptions)


class StoredText(nn.Module):
    """A text (the tokenizer's JSON) kept as a byte buffer, so that it travels in the weights file; a
    load resizes the buffer to the stored text."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("data", torch.zeros(0, dtype=torch.uint8))

    @property
    def text(self) -> str:
        return bytes(self.data.cpu().numpy()).decode()

    @text.setter
    def text(self, value: str) -> None:
        self.data = torch.frombuffer(bytearray(value.encode()), dtype=torch.uint8).to(self.data.device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        stored = state_dict.get(f"{prefix}data")
        if stored is not None:
            self.data = torch.empty_like(stored, device=self.data.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


class Captioning(Method):
    """Encoder + report decoder(s) (stage ``caption``) + a linear classification head (``finetune``)."""

    stage_names = (CAPTION, FINETUNE)
    options_class = CaptioningOptions
    stage_data_defaults: ClassVar[dict[str, StageData]] = {CAPTION: StageData(pool="reports", augment=False)}

    def __init__(
        self, label_names: list[str], task: str, model: dict[str, Any], stages: Sequence[StageConfig]
    ) -> None:
        super().__init__(label_names, task, model, stages)
        opts = self.options
        self.backbone = create_backbone(opts.backbone, in_chans=1, pretrained=opts.pretrained)
        if opts.cam_stride is not None:
            self.backbone.explain_at_stride(opts.cam_stride)
        self.decoder = self._decoder()
        self.backward_decoder = self._decoder() if opts.bidirectional else None
        self.head = nn.Sequential(
            nn.Dropout(opts.dropout), nn.Linear(self.backbone.num_features, self.num_classes)
        )
        self.vocabulary = StoredText()
        self._tokenizer: ReportTokenizer | None = None

    def _decoder(self) -> CaptionDecoder:
        d, r = self.options.decoder, self.options.report
        return CaptionDecoder(
            self.backbone.num_features,
            r.vocab_size,
            width=d.width,
            heads=d.heads,
            layers=d.layers,
            max_tokens=r.max_tokens,
            dropout=d.dropout,
        )

    # --- text ------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> ReportTokenizer | None:
        """The run's vocabulary; None before one is learnt (or in a model that never captioned)."""
        if self._tokenizer is None and self.vocabulary.data.numel():
            self._tokenizer = ReportTokenizer.from_json(self.vocabulary.text)
        return self._tokenizer

    def set_tokenizer(self, tokenizer: ReportTokenizer) -> None:
        if tokenizer.vocab_size > self.options.report.vocab_size:
            raise ConfigError(
                f"model.report.vocab_size: {self.options.report.vocab_size} rows cannot hold the tokenizer's "
                f"{tokenizer.vocab_size} tokens"
            )
        self.vocabulary.text = tokenizer.to_json()
        self._tokenizer = tokenizer

    @property
    def writes_reports(self) -> bool:
        """Whether this model learnt to write: its recipe captioned and it holds a vocabulary."""
        return CAPTION in self.stages and self.tokenizer is not None

    def clean(self, report: str | None) -> str:
        r = self.options.report
        return clean_report(report, r.sections, r.strip_prior) if report else ""

    def token_batch(self, texts: Sequence[str], reverse: bool = False) -> Tensor:
        """B x L ids (begin, tokens, end; padded), the tokens reversed for the right-to-left decoder."""
        tokenizer = self.tokenizer
        assert tokenizer is not None
        rows = []
        for text in texts:
            ids = tokenizer.encode(text, self.options.report.max_tokens)
            rows.append(torch.tensor([ids[0], *ids[-2:0:-1], ids[-1]] if reverse else ids))
        return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_id)

    def write(self, images: Tensor, strategy: Literal["greedy", "beam"] | None = None) -> list[str]:
        """A report per image (``strategy`` default: the recipe's ``writing``)."""
        tokenizer, w = self.tokenizer, self.options.writing
        assert tokenizer is not None
        memory = self.decoder.memory(self.backbone.forward_features(images))
        ids = (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
        if (strategy or w.strategy) == "beam":
            tokens = beam_search(
                self.decoder, memory, *ids, width=w.beam_width, length_penalty=w.length_penalty
            )
        else:
            tokens = greedy(self.decoder, memory, *ids)
        return [tokenizer.decode(row.tolist()) for row in tokens]

    # --- network ---------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def predict(self, batch: Batch) -> Prediction:
        probs = probabilities(self.task, self(batch.images))
        return Prediction(probs=probs, text=self.write(batch.images) if self.writes_reports else None)

    def classifier(self) -> nn.Module:
        return self

    def onnx_obstacle(self) -> str | None:
        if self.writes_reports:
            return "the draft report is written token by token, a loop as long as the report, not one graph"
        return None

    # --- stages ------------------------------------------------------------------------------------
    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        yield from self.backbone.parameters()
        if stage == FINETUNE:
            yield from self.head.parameters()
            return
        yield from self.decoder.parameters()
        if self.backward_decoder is not None:
            yield from self.backward_decoder.parameters()

    def compute_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.stage == FINETUNE:
            if batch.labels is None:
                raise ValueError("the finetune stage needs labels, and this batch has none")
            return classification_loss(self.task, self(batch.images), batch.labels), {}
        return self.caption_loss(batch)

    def caption_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher-forced next-token cross-entropy with label smoothing over the batch's reports (images
        whose cleaned report is empty are left out; a batch with none gives a zero loss)."""
        texts = [self.clean(report) for report in batch.reports]
        rows = [i for i, text in enumerate(texts) if text]
        if not rows:
            return self.decoder.embed.weight.sum() * 0.0, {}
        features = self.backbone.forward_features(batch.images[rows])
        kept = [texts[i] for i in rows]
        parts = {"caption_forward": self._decoder_loss(self.decoder, features, self.token_batch(kept))}
        if self.backward_decoder is not None:
            reverse = self.token_batch(kept, reverse=True)
            parts["caption_backward"] = self._decoder_loss(self.backward_decoder, features, reverse)
        loss = torch.stack(list(parts.values())).mean()
        return loss, {name: value.detach() for name, value in parts.items()}

    def _decoder_loss(self, decoder: CaptionDecoder, features: Tensor, tokens: Tensor) -> Tensor:
        tokens = tokens.to(features.device)
        logits = decoder(decoder.memory(features), tokens[:, :-1])
        return F.cross_entropy(
            logits.flatten(0, 1).float(),
            tokens[:, 1:].flatten(),
            ignore_index=ReportTokenizer.pad_id,
            label_smoothing=self.options.label_smoothing,
        )

    def stage_plan(self, splits: DataSplits, out_dir: Path) -> list[StageConfig]:
        """Learn the vocabulary from the training split's reports before a ``caption`` stage (the same
        each time: a resumed run or another rank learns the same one)."""
        if CAPTION in self.stages:
            reports = splits.union.reports
            texts = [self.clean(reports[i]) for i in splits.train_split if reports[i]]
            r = self.options.report
            self.set_tokenizer(ReportTokenizer.train(texts, r.vocab_size, lowercase=r.lowercase))
            log.info(
                "report vocabulary: %d tokens from %d training reports", self.tokenizer.vocab_size, len(texts)
            )
            if is_launching_process():
                self.tokenizer.save(Path(out_dir) / TOKENIZER_FILE)
        return super().stage_plan(splits, out_dir)

    # --- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def text_evaluation(self, dataset: Dataset, batch_size: int, out_dir: Path) -> dict[str, Any] | None:
        """Greedy and beam reports of the images that have a report, scored against the cleaned
        reference by :func:`radsight.text.scores.report_scores` (``greedy_bleu4``, ``beam_rouge_l``...);
        every report is kept in ``generated_reports.json``. None when the model writes no reports or no
        image has one."""
        if not self.writes_reports:
            return None
        from radsight.text.scores import report_scores

        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        rows: list[dict[str, str]] = []
        for batch in make_loader(dataset, batch_size, shuffle=False):
            references = [self.clean(report) for report in batch.reports]
            keep = [i for i, text in enumerate(references) if text]
            if not keep:
                continue
            images = batch.images[keep].to(device)
            written = {strategy: self.write(images, strategy) for strategy in STRATEGIES}
            for k, i in enumerate(keep):
                rows.append(
                    {
                        "path": batch.meta[i].path,
                        "reference": references[i],
                        "greedy": written["greedy"][k],
                        "beam": written["beam"][k],
                    }
                )
        self.train(was_training)
        if not rows:
            return None
        write_json(Path(out_dir) / GENERATED_FILE, {"notice": DRAFT_NOTICE, "reports": rows})
        references = [row["reference"] for row in rows]
        scores = {
            f"{strategy}_{name}": value
            for strategy in STRATEGIES
            for name, value in report_scores([row[strategy] for row in rows], references).items()
        }
        return {"reports": len(rows), "beam_width": self.options.writing.beam_width, **scores}
