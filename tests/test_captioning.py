"""Report-captioning pre-training: the tokenizer and report cleaning, the decoder's causality and
key-value cache, greedy and beam decoding, the reports pool, the captioning loss on phantoms, the encoder
carried into classification, and the draft report of ``radsight predict``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import run_cli
from safetensors.torch import load_file

from radsight.config import DataConfig, SourceSpec, StageConfig
from radsight.data.assemble import DataSplits, build_splits
from radsight.data.sample import make_loader
from radsight.data.sources.iu_xray import IUXray, load_reports
from radsight.errors import ConfigError
from radsight.methods.base import DRAFT_NOTICE
from radsight.methods.captioning import Captioning
from radsight.methods.registry import load_method
from radsight.methods.supervised import SupervisedClassifier
from radsight.nn.backbones import create_backbone
from radsight.nn.caption_decoder import CaptionDecoder
from radsight.studies.curve import label_free_stages
from radsight.text.clean import clean_report, sections_of
from radsight.text.decoding import beam_search, greedy
from radsight.text.tokenizer import MIN_VOCABULARY, ReportTokenizer

BOS, EOS, PAD = ReportTokenizer.bos_id, ReportTokenizer.eos_id, ReportTokenizer.pad_id
REPORTS = [
    "The heart is normal in size. No pleural effusion or pneumothorax.",
    "XXXX-year-old XXXX. Mild cardiomegaly. Small left effusion.",
    "Lungs are clear. No focal airspace disease. XXXX sternotomy wires.",
] * 20
PHANTOMS = {"n": 96, "size": [48, 48], "seed": 1, "classes": ["nodule", "opacity"], "lesion_scale": 1.5}
MODEL = {
    "backbone": "tiny_cnn",
    "report": {"vocab_size": 320, "max_tokens": 24},
    "decoder": {"width": 32, "heads": 4, "layers": 1, "dropout": 0.0},
    "bidirectional": True,
}
RECIPE = {
    "name": "tiny_captioning",
    "method": "captioning",
    "seed": 0,
    "data": {
        "sources": [{"name": "phantom", "options": PHANTOMS}],
        "labels": ["nodule", "opacity"],
        "image_size": [48, 48],
        "split": [0.5, 0.2, 0.3],
        "batch_size": 16,
    },
    "model": MODEL,
    "stages": [{"name": "caption", "epochs": 3, "lr": 0.003}, {"name": "finetune", "epochs": 1}],
    "trainer": {"accelerator": "cpu", "progress_bar": False},
    "evaluation": {"n_boot": 50, "min_class_count": 2},
}


def decoder(layers: int = 2) -> CaptionDecoder:
    torch.manual_seed(0)
    return CaptionDecoder(16, 60, width=32, heads=4, layers=layers, max_tokens=20, dropout=0.0).eval()


def memory(net: CaptionDecoder, images: int = 4) -> torch.Tensor:
    return net.memory(torch.randn(images, 16, 3, 3, generator=torch.Generator().manual_seed(1)))


def sequence_score(net: CaptionDecoder, mem: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's tokens after the first, up to and including its end token."""
    logp = net(mem, tokens[:, :-1]).log_softmax(-1).gather(2, tokens[:, 1:, None])[..., 0]
    ended = (tokens[:, 1:] == EOS).long().cumsum(1)
    counted = (ended == 0) | ((ended == 1) & (tokens[:, 1:] == EOS))
    return (logp * counted).sum(1)


# ---------------------------------------------------------------- text


def test_the_tokenizer_round_trips_and_keeps_the_deidentification_mask_whole(tmp_path: Path) -> None:
    exact = ReportTokenizer.train(REPORTS, 400, lowercase=False)
    for text in [*REPORTS[:3], "Unseen wörds: 3.5 cm XXXX, opacity!"]:
        assert exact.decode(exact.encode(text)) == text
    ids = exact.encode("Mild XXXX.")
    assert ids[0] == BOS and ids[-1] == EOS and 4 in ids and exact.tokenizer.id_to_token(4) == "XXXX"
    lowered = ReportTokenizer.train(REPORTS, 400)
    assert lowered.decode(lowered.encode("Mild XXXX Effusion")) == "mild XXXX effusion"
    lowered.save(tmp_path / "tokenizer.json")
    json.loads((tmp_path / "tokenizer.json").read_text())  # plain JSON, not a pickle
    again = ReportTokenizer.load(tmp_path / "tokenizer.json")
    assert again.encode(REPORTS[1]) == lowered.encode(REPORTS[1])
    assert len(exact.encode(REPORTS[0] * 5, max_tokens=10)) == 10
    with pytest.raises(ConfigError, match="below the byte alphabet"):
        ReportTokenizer.train(REPORTS, MIN_VOCABULARY - 1)


def test_real_iu_reports_round_trip_through_a_vocabulary_learnt_on_them(data_root: Path) -> None:
    reports = [text for text in load_reports(data_root / "iu-xray-reports") if text]
    tokenizer = ReportTokenizer.train(reports[:3000], 2000, lowercase=False)
    for text in reports[3000:3200]:  # reports the vocabulary never saw
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text and ReportTokenizer.unk_id not in ids
    masked = next(text for text in reports[3000:] if "XXXX" in text)
    assert tokenizer.encode(masked).count(4) == masked.count("XXXX")


def test_headed_iu_reports_give_each_section_to_the_cleaning(data_root: Path) -> None:
    root = data_root / "iu-xray-reports"
    headed = IUXray(root, section_headers=True)
    table = pd.read_csv(root / "indiana_reports.csv").set_index("uid")
    for record in headed.records:
        row = table.loc[int(record.patient_id)]
        for section in ("findings", "impression"):
            expected = " ".join(str(row[section]).split()) if isinstance(row[section], str) else ""
            assert clean_report(record.report, [section], strip_prior=False) == expected
    assert [r.report.replace("FINDINGS: ", "").replace("IMPRESSION: ", "") for r in headed.records] == [
        r.report for r in IUXray(root).records
    ]


def test_cleaning_keeps_the_chosen_sections_and_drops_prior_study_sentences() -> None:
    report = (
        "INDICATION: cough. FINDINGS: Heart size is normal. Compared with the prior study, the effusion "
        "is smaller. IMPRESSION: Small effusion, unchanged from XXXX. No pneumothorax."
    )
    assert set(sections_of(report)) == {"findings", "impression"}
    assert clean_report(report, ["findings"], strip_prior=False) == (
        "Heart size is normal. Compared with the prior study, the effusion is smaller."
    )
    assert clean_report(report, ["impression", "findings"], strip_prior=True) == (
        "No pneumothorax. Heart size is normal."
    )
    unheaded = "Fever and cough for 3 days.  Interval increase in opacities. Stable heart size."
    assert (
        clean_report(unheaded, ["findings"], strip_prior=True)
        == "Fever and cough for 3 days. Stable heart size."
    )


# ---------------------------------------------------------------- decoder and decoding


def test_the_decoder_is_causal() -> None:
    net, tokens = decoder(), torch.randint(5, 60, (4, 12), generator=torch.Generator().manual_seed(2))
    mem = memory(net)
    changed = tokens.clone()
    changed[:, 7:] = torch.randint(5, 60, (4, 5), generator=torch.Generator().manual_seed(3))
    before, after = net(mem, tokens), net(mem, changed)
    torch.testing.assert_close(before[:, :7], after[:, :7], rtol=0, atol=0)
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_cached_steps_give_the_logits_of_the_full_sequence() -> None:
    net = decoder()
    mem, tokens = memory(net), torch.randint(5, 60, (4, 10), generator=torch.Generator().manual_seed(4))
    cache = net.start(mem)
    stepped = torch.stack([net.step(tokens[:, i], cache) for i in range(tokens.shape[1])], dim=1)
    torch.testing.assert_close(stepped, net(mem, tokens), rtol=1e-4, atol=1e-5)
    assert torch.equal(greedy(net, mem, BOS, EOS, PAD), greedy(net, mem, BOS, EOS, PAD, cached=False))
    assert torch.equal(
        beam_search(net, mem, BOS, EOS, PAD, width=3),
        beam_search(net, mem, BOS, EOS, PAD, width=3, cached=False),
    )


def test_a_beam_of_one_is_greedy_and_a_wider_beam_scores_at_least_as_high() -> None:
    net = decoder(layers=1)
    mem = memory(net, images=6)
    written = greedy(net, mem, BOS, EOS, PAD)
    assert torch.equal(beam_search(net, mem, BOS, EOS, PAD, width=1), written)
    assert (written[:, 0] == BOS).all()
    assert torch.equal(beam_search(net, mem, BOS, EOS, PAD, width=1, length_penalty=0.0), written)
    for shortest in (1, 2):  # the begin token alone, then one written token
        assert torch.equal(
            beam_search(net, mem, BOS, EOS, PAD, width=1, max_tokens=shortest),
            greedy(net, mem, BOS, EOS, PAD, max_tokens=shortest),
        )
    wide = beam_search(net, mem, BOS, EOS, PAD, width=4, length_penalty=0.0)
    assert (sequence_score(net, mem, wide) >= sequence_score(net, mem, written) - 1e-5).all()


class MarkovWriter(torch.nn.Module):
    """A decoder whose next token depends on the last one only, by a fixed table of probabilities."""

    max_tokens = 8

    def __init__(self, table: dict[int, dict[int, float]], vocab: int = 8) -> None:
        super().__init__()
        self.logits = torch.full((vocab, vocab), -1e4)
        for last, following in table.items():
            for token, p in following.items():
                self.logits[last, token] = math.log(p)

    def forward(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits[tokens]


def test_the_length_penalty_keeps_the_beam_from_settling_on_the_shortest_report() -> None:
    """From the start, the end token (a one-token report) is likelier than any longer report as a whole,
    though greedy decoding writes the longer one: the plain sum picks the short one, alpha 1 does not."""
    a, b, c = 5, 6, 7
    writer = MarkovWriter({BOS: {EOS: 0.45, a: 0.55}, a: {b: 0.5, c: 0.5}, b: {EOS: 1.0}, c: {EOS: 1.0}})
    mem = torch.zeros(2, 1, 1)
    written = greedy(writer, mem, BOS, EOS, PAD, cached=False)
    assert written[0].tolist() == [BOS, a, b, EOS]
    plain = beam_search(writer, mem, BOS, EOS, PAD, width=3, length_penalty=0.0, cached=False)
    assert plain[:, :2].tolist() == [[BOS, EOS]] * 2 and (plain[:, 2:] == PAD).all()
    per_token = beam_search(writer, mem, BOS, EOS, PAD, width=3, length_penalty=1.0, cached=False)
    assert per_token[:, 1].tolist() == [a, a] and per_token[:, 3].tolist() == [EOS, EOS]


# ---------------------------------------------------------------- data and training


def phantom_splits() -> tuple[DataSplits, Captioning]:
    data = DataConfig(
        sources=[SourceSpec(name="phantom", options=PHANTOMS)],
        labels=["nodule", "opacity"],
        image_size=(48, 48),
        split=(0.5, 0.2, 0.3),
        batch_size=16,
    )
    stages = [StageConfig(name="caption", lr=0.003), StageConfig(name="finetune")]
    return build_splits(data, seed=0), Captioning(["nodule", "opacity"], "multilabel", MODEL, stages)


def test_the_reports_pool_shows_the_report_and_nothing_else() -> None:
    splits, method = phantom_splits()
    pool = splits.pool(method.stage_data("caption").pool, augment=False)
    assert len(pool) == len(splits.train_split)
    sample = pool[0]
    assert sample.report and sample.labels is None and sample.masks is None and sample.boxes is None
    recipe = yaml.safe_load(yaml.safe_dump(RECIPE))
    from radsight.config import Recipe

    assert label_free_stages(Recipe.model_validate(recipe)) == ["caption"]


def test_the_captioning_loss_falls_on_phantoms(tmp_path: Path) -> None:
    torch.manual_seed(0)
    splits, method = phantom_splits()
    method.stage_plan(splits, tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and method.tokenizer.vocab_size <= 320
    method.set_stage("caption")
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=0.003)
    loader = make_loader(splits.pool("reports", augment=False), 16, shuffle=True)
    held = next(iter(make_loader(splits.val, 16, shuffle=False)))

    def held_loss() -> float:
        method.eval()
        with torch.no_grad():
            return float(method.compute_loss(held)[0])

    forward, backward = method.token_batch(["left lung"]), method.token_batch(["left lung"], reverse=True)
    assert backward[0, 0] == BOS and backward[0, -1] == EOS
    assert backward[0, 1:-1].tolist() == forward[0, 1:-1].flip(0).tolist()
    start = held_loss()
    for _ in range(6):
        method.train()
        for batch in loader:
            loss, parts = method.compute_loss(batch)
            assert set(parts) == {"caption_forward", "caption_backward"}
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert held_loss() < 0.7 * start  # from about ln(vocabulary), the loss of a uniform guess


# ---------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def captioning_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("captioning")
    (folder / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    run_cli("train", folder / "recipe.yaml", "--out", folder / "run")
    return folder / "run"


@pytest.mark.slow
def test_a_captioning_run_scores_its_reports_and_reloads_with_its_vocabulary(captioning_run: Path) -> None:
    metrics = json.loads((captioning_run / "metrics.json").read_text())
    section = metrics["captioning"]
    assert section["reports"] == len(json.loads((captioning_run / "splits.json").read_text())["test"])
    for key in ("greedy_bleu4", "greedy_rouge_l", "beam_bleu4", "beam_rouge_l"):
        assert 0 <= section[key] <= 1
    written = json.loads((captioning_run / "generated_reports.json").read_text())
    assert written["notice"] == DRAFT_NOTICE and len(written["reports"]) == section["reports"]
    assert "Machine-generated draft reports of the" in (captioning_run / "report.md").read_text()
    method, _ = load_method(captioning_run)
    saved = ReportTokenizer.load(captioning_run / "tokenizer.json")
    assert method.tokenizer.to_json() == saved.to_json() and method.writes_reports


@pytest.mark.slow
def test_the_encoder_transfers_into_classification_with_its_weights(captioning_run: Path) -> None:
    trained = {  # weights and batch-norm statistics (the loader leaves the step counters alone)
        k.removeprefix("backbone.model."): v
        for k, v in load_file(captioning_run / "model.safetensors").items()
        if k.startswith("backbone.model.") and v.is_floating_point()
    }
    started = create_backbone("tiny_cnn", pretrained=f"run:{captioning_run}").model.state_dict()
    assert trained and trained.keys() <= started.keys()
    for name, value in trained.items():
        assert torch.equal(started[name], value), name
    options = {**MODEL, "pretrained": f"run:{captioning_run}"}
    transferred = Captioning(["nodule", "opacity"], "multilabel", options, [StageConfig(name="finetune")])
    assert not transferred.writes_reports  # its decoder never learnt: no report is written
    supervised = SupervisedClassifier(
        ["opacity"],
        "multilabel",
        {"backbone": "tiny_cnn", "pretrained": f"run:{captioning_run}"},
        [StageConfig(name="classify")],
    )
    for encoder in (transferred.backbone, supervised.backbone):
        for name, value in trained.items():
            assert torch.equal(encoder.model.state_dict()[name], value), name


@pytest.mark.slow
def test_predict_and_serve_write_a_draft_report_marked_as_machine_generated(
    captioning_run: Path, tmp_path: Path
) -> None:
    from PIL import Image

    from radsight.data.sources.phantoms import PhantomChestXray

    image = PhantomChestXray(1, size=(48, 48), seed=9)[0].image[0].numpy()
    Image.fromarray((image * 255).astype("uint8")).save(tmp_path / "scan.png")
    printed = run_cli(
        "predict", "--model", captioning_run, tmp_path / "scan.png", "--out", tmp_path / "out"
    ).output
    row = json.loads((tmp_path / "out" / "predictions.json").read_text())["files"][0]
    draft = row["draft_report"]
    assert (
        draft["notice"] == DRAFT_NOTICE
        and draft["text"]
        and set(row["probabilities"]) == {"nodule", "opacity"}
    )
    assert (tmp_path / "out" / draft["file"]).read_text() == f"{DRAFT_NOTICE}\n\n{draft['text']}\n"
    assert "draft report:" in printed and "not for diagnosis" in printed
    from fastapi.testclient import TestClient

    from radsight.infer import LoadedModel
    from radsight.serve.app import create_app

    served = TestClient(create_app(LoadedModel.load(captioning_run)))
    answer = served.post(
        "/predict", files={"file": ("scan.png", (tmp_path / "scan.png").read_bytes())}
    ).json()
    assert answer["text"] == draft["text"]  # the viewer's report panel shows the same draft


def tiny_curve(folder: Path, pretrain_recipe: str = "supervised.yaml") -> Path:
    (folder / "captioning.yaml").write_text(yaml.safe_dump(RECIPE))
    other = {**RECIPE, "name": "tiny_supervised", "method": "supervised", "model": {"backbone": "tiny_cnn"}}
    other["data"] = {**RECIPE["data"], "labels": ["opacity"], "split": [0.8, 0.2, 0.0]}
    other["stages"] = [{"name": "classify", "epochs": 1}]
    (folder / "supervised.yaml").write_text(yaml.safe_dump(other))
    curve = {
        "budgets": [4],
        "seeds": 1,
        "n_boot": 50,
        "arms": [
            {"name": "scratch", "recipe": "captioning.yaml", "stages": ["finetune"]},
            {
                "name": "in_domain",
                "recipe": "captioning.yaml",
                "stages": ["finetune"],
                "pretrain_recipe": pretrain_recipe,
            },
            {"name": "captioning", "recipe": "captioning.yaml"},
        ],
    }
    (folder / "curve.yaml").write_text(yaml.safe_dump(curve))
    return folder / "curve.yaml"


def test_a_missing_pretraining_recipe_is_one_line(tmp_path: Path) -> None:
    path = tiny_curve(tmp_path, pretrain_recipe="nowhere.yaml")
    printed = run_cli("curve", path, "--out", tmp_path / "out", expect=2).output
    assert (
        printed == f"error: {path}: arm 'in_domain': pretrain_recipe {tmp_path / 'nowhere.yaml'} not found\n"
    )


@pytest.mark.slow
def test_a_curve_pretrains_by_captioning_and_by_another_recipe_once_each(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cli("curve", tiny_curve(tmp_path), "--out", out, "--set", "trainer.progress_bar=false")
    payload = json.loads((out / "curve.json").read_text())
    assert set(payload["arms"]) == {"scratch", "in_domain", "captioning"}
    for arm, first_stage in (("in_domain", "classify"), ("captioning", "caption")):
        pretrain = (out / arm / "pretrain").resolve()
        assert json.loads((pretrain / "train_log.jsonl").read_text().splitlines()[0])["stage"] == first_stage
        recipe = yaml.safe_load((out / arm / "b4-s0" / "recipe.yaml").read_text())
        assert recipe["model"]["pretrained"] == f"run:{pretrain}"
        assert [s["name"] for s in recipe["stages"]] == ["finetune"]
    assert (out / "captioning" / "pretrain" / "tokenizer.json").is_file()
    # the fine-tuned runs never captioned: they write no reports and score none
    assert "captioning" not in json.loads((out / "captioning" / "b4-s0" / "metrics.json").read_text())
