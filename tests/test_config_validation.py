"""One validation layer: every out-of-range config value or CLI option is one `error:` line naming it, exit 2, before
any work; ranges are declared once beside the fields (malsori.config.bounded) and checked by from_dict."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from click.testing import CliRunner

from malsori.cli import main
from malsori.config import from_dict, to_dict
from malsori.errors import ConfigError, MalsoriError

NO_CUDA = not torch.cuda.is_available()

# (recipe override, what the one error line must name)
TRAIN_PROBES = [
    ("checkpoint_every=0", "checkpoint_every"), ("log_every=0", "log_every"), ("max_epochs=0", "max_epochs"),
    ("max_minutes=-1", "max_minutes"), ("max_minutes=nan", "max_minutes"), ("keep_last=-1", "keep_last"),
    ("average_last=0", "average_last"), ("threads=-1", "threads"), ("max_steps=-5", "max_steps"), ("seed=-1", "seed"),
    ("optim.lr=-1e-3", "optim.lr"), ("optim.lr=nan", "optim.lr"), ("optim.lr=inf", "optim.lr"), ("optim.lr=0", "optim.lr"),
    ("optim.accum_grad=0", "optim.accum_grad"), ("optim.warmup_steps=-1", "optim.warmup_steps"),
    ("optim.betas=[0.9,1.5]", "optim.betas[1]"), ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("optim.grad_clip=nan", "optim.grad_clip"), ("optim.min_lr=-1", "optim.min_lr"),
    ("data.max_valid_utts=0", "data.max_valid_utts"), ("data.vocab_size=0", "data.vocab_size"),
    ("data.cmvn_utts=0", "data.cmvn_utts"), ("data.sources=[{manifest: a.jsonl, weight: -1}]", "data.sources[0].weight"),
    ("model.conformer.d_model=0", "model.conformer.d_model"), ("model.conformer.d_model=-8", "model.conformer.d_model"),
    ("model.conformer.d_model=170", "model.conformer"), ("model.conformer.num_heads=0", "model.conformer.num_heads"),
    ("model.conformer.num_layers=0", "model.conformer.num_layers"), ("model.conformer.conv_kernel=14", "model.conformer.conv_kernel"),
    ("model.conformer.dropout=1.5", "model.conformer.dropout"), ("model.conformer.dropout=1", "model.conformer.dropout"),
    ("model.conformer.attention_dropout=-0.1", "model.conformer.attention_dropout"),
    ("model.conformer.subsampling_factor=5", "model.conformer.subsampling_factor"),
    ("model.conformer.ff_expansion=0", "model.conformer.ff_expansion"),
    ("model.conformer.chunk.chunk_size=-1", "model.conformer.chunk.chunk_size"),
    ("model.conformer.chunk.max_dynamic_chunk=0", "model.conformer.chunk.max_dynamic_chunk"),
    ("model.conformer.chunk.max_dynamic_left=-2", "model.conformer.chunk.max_dynamic_left"),
    ("model.transformer.num_heads=3", "model.transformer"), ("model.transformer.dropout=nan", "model.transformer.dropout"),
    ("model.lstm.hidden_size=0", "model.lstm.hidden_size"), ("model.lstm.dropout=-0.1", "model.lstm.dropout"),
    ("model.lstm.reduction_factor=0", "model.lstm.reduction_factor"), ("model.lstm.projection=-1", "model.lstm.projection"),
    ("model.lstm={reduction: pyramid, reduction_factor: 3}", "model.lstm"),
    ("model.attention.ctc_weight=2", "model.attention.ctc_weight"),
    ("model.attention.label_smoothing=1", "model.attention.label_smoothing"),
    ("model.attention.location_kernel=30", "model.attention.location_kernel"),
    ("model.attention.num_heads=3", "model.attention"), ("model.attention.max_len_ratio=0", "model.attention.max_len_ratio"),
    ("model.attention.mocha_chunk=0", "model.attention.mocha_chunk"),
    ("model.transducer.max_symbols_per_frame=0", "model.transducer.max_symbols_per_frame"),
    ("model.transducer.joiner_dim=0", "model.transducer.joiner_dim"),
    ("model.transducer.predictor.context=0", "model.transducer.predictor.context"),
    ("features.num_mel_bins=0", "features.num_mel_bins"), ("features.frame_shift_ms=0", "features.frame_shift_ms"),
    ("features.sample_rate=-16000", "features.sample_rate"), ("features.low_freq=9000", "features"),
    ("features.preemphasis=2", "features.preemphasis"), ("features.dither=nan", "features.dither"),
    ("specaug.max_time_fraction=2", "specaug.max_time_fraction"), ("specaug.num_time_masks=-1", "specaug.num_time_masks"),
    ("specaug.max_freq_width=-3", "specaug.max_freq_width"), ("specaug.time_warp=-1", "specaug.time_warp"),
    ("augment.speed_prob=nan", "augment.speed_prob"), ("augment.snr_db=[nan,10]", "augment.snr_db[0]"),
    ("augment.babble_utts=0", "augment.babble_utts"), ("augment.telephone_share=1.5", "augment.telephone_share"),
    ("batch.max_batch_size=0", "batch.max_batch_size"), ("batch.max_frames=0", "batch.max_frames"),
    ("batch.max_duration=0", "batch.max_duration"), ("batch.num_workers=-1", "batch.num_workers"),
    ("batch.num_buckets=0", "batch.num_buckets"), ("batch={min_duration: 5, max_duration: 1}", "batch"),
    ("device=gpu", "device"), ("optim.lrr=1", "optim.lrr"),
]
if NO_CUDA:
    TRAIN_PROBES.append(("device=cuda", "device"))

# (command line after `malsori`, what the one error line must name); MODEL and FILE do not exist, so any error that
# comes later than option checking names them instead and the probe fails.
CLI_PROBES = [
    ("eval MODEL m.jsonl --beam 0", "--beam"), ("eval MODEL m.jsonl --batch-size 0", "--batch-size"),
    ("eval MODEL m.jsonl --limit -1", "--limit"), ("eval MODEL m.jsonl --device gpu", "--device"),
    ("transcribe MODEL a.wav --beam 0", "--beam"), ("transcribe MODEL a.wav --beam -3", "--beam"),
    ("transcribe MODEL a.wav --batch-size 0", "--batch-size"), ("transcribe MODEL a.wav --batch-size -1", "--batch-size"),
    ("transcribe MODEL a.wav --device cuda:x", "--device"),
    ("stream MODEL a.wav --chunk-ms nan", "--chunk-ms"), ("stream MODEL a.wav --chunk-ms 0", "--chunk-ms"),
    ("stream MODEL a.wav --chunk-ms inf", "--chunk-ms"), ("stream MODEL a.wav --threads 0", "--threads"),
    ("stream MODEL a.wav --max-utterance 0", "--max-utterance"), ("stream MODEL a.wav --endpoint-silence -1", "--endpoint-silence"),
    ("stream MODEL a.wav --left-chunks -2", "--left-chunks"), ("stream MODEL a.wav --lookahead-ms -40", "--lookahead-ms"),
    ("stream MODEL a.wav --lookahead-ms nan", "--lookahead-ms"), ("stream MODEL a.wav --beam 0", "--beam"),
    ("stream MODEL a.wav --chunk-ms abc", "--chunk-ms"),
    ("data synth --out OUT --text missing.txt --num-train -1", "--num-train"),
    ("data synth --out OUT --text missing.txt --mix-prob nan", "--mix-prob"),
    ("data synth --out OUT --text missing.txt --hours -1", "--hours"),
    ("data synth --out OUT --text missing.txt --hours nan", "--hours"),
    ("data synth --out OUT --text missing.txt --noise-prob nan", "--noise-prob"),
    ("data synth --out OUT --text missing.txt --workers -1", "--workers"),
    ("data synth --out OUT --text missing.txt --rate 130 99999", "rate[1]"),
    ("data synth --out OUT --text missing.txt --dev-voices -1", "--dev-voices"),
    ("lm train-ngram a.txt --out lm.arpa --order 0", "--order"), ("lm train-ngram a.txt --out lm.arpa --digits 0", "--digits"),
    ("tokenizer train --kind bpe --vocab-size 0 --out TOK", "--vocab-size"),
    ("lm generate MODEL --temperature nan", "--temperature"), ("lm generate MODEL --temperature -1", "--temperature"),
    ("lm generate MODEL --top-k -1", "--top-k"), ("lm generate MODEL --top-p 0", "--top-p"),
    ("lm generate MODEL --top-p 1.5", "--top-p"), ("lm generate MODEL --max-tokens 0", "--max-tokens"),
    ("lm generate MODEL --num 0", "--num"), ("lm generate MODEL --seed -1", "--seed"),
    ("lm eval MODEL /etc/hostname --batch-size 0", "--batch-size"),
    ("demo --steps 0", "--steps"), ("demo --num-train -1", "--num-train"),
]


def _one_error_line(result, culprit: str) -> None:
    """Exit 2, one line on stderr, `error: ...` naming the culprit; never a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], result.stderr


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(f"data: {{train: {tmp_path / 'missing.jsonl'}}}\nmax_steps: 1\nprogress: false\n"
                    "model: {conformer: {d_model: 16, num_layers: 1, num_heads: 2}}\n")
    return path


@pytest.mark.parametrize("override,culprit", TRAIN_PROBES, ids=[p for p, _ in TRAIN_PROBES])
def test_train_refuses_bad_values_before_any_work(tmp_path, recipe, override: str, culprit: str) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(recipe), f"out={out}", override])
    _one_error_line(result, culprit)
    assert not out.exists()  # refused before the run folder was made


@pytest.mark.parametrize("override,culprit", [
    ("model.gpt.num_heads=3", "model.gpt"), ("model.gpt.context=0", "model.gpt.context"), ("model.gpt.dropout=nan", "model.gpt.dropout"),
    ("data.batch_size=0", "data.batch_size"), ("data.holdout_every=-1", "data.holdout_every"), ("valid_every=-1", "valid_every"),
])
def test_lm_train_refuses_bad_values_before_any_work(tmp_path, override: str, culprit: str) -> None:
    recipe = tmp_path / "lm.yaml"
    recipe.write_text(f"task: lm\ndata: {{train: [{tmp_path / 'missing.txt'}]}}\nprogress: false\n")
    out = tmp_path / "run"
    _one_error_line(CliRunner().invoke(main, ["train", str(recipe), f"out={out}", override]), culprit)
    assert not out.exists()


@pytest.mark.parametrize("option,value", [("--minutes", "-1"), ("--minutes", "nan"), ("--threads", "0"), ("--beam-size", "0"),
                                          ("--test-limit", "-1"), ("--long-max-concat", "0"), ("--device", "gpu")])
def test_the_comparison_refuses_bad_options_before_any_work(tmp_path, option: str, value: str) -> None:
    from experiments.compare.run import main as compare

    result = CliRunner().invoke(compare, ["--corpus", str(tmp_path / "c"), "--out", str(tmp_path / "o"), option, value])
    assert result.exit_code == 2 and option in result.output and not (tmp_path / "c").exists(), result.output


def test_train_refuses_an_out_that_is_a_file(tmp_path, recipe) -> None:
    out = tmp_path / "a_file"
    out.write_text("x")
    _one_error_line(CliRunner().invoke(main, ["train", str(recipe), f"out={out}"]), "out")


@pytest.mark.parametrize("line,culprit", CLI_PROBES, ids=[c for c, _ in CLI_PROBES])
def test_cli_options_out_of_range_are_one_line(tmp_path, monkeypatch, line: str, culprit: str) -> None:
    monkeypatch.chdir(tmp_path)  # `demo` writes into exp/demo
    (tmp_path / "CORPUS").mkdir()
    (tmp_path / "CORPUS" / "train.jsonl").write_text("")  # else `compare` would synthesize a corpus first
    args = [a.replace("OUT", str(tmp_path / "out")).replace("CORPUS", str(tmp_path / "CORPUS"))
            .replace("TOK", str(tmp_path / "tok")).replace("MODEL", str(tmp_path / "no_model")) for a in line.split()]
    result = CliRunner().invoke(main, args)
    _one_error_line(result, culprit)
    assert not (tmp_path / "out").exists()


def test_click_usage_errors_are_one_line_too() -> None:
    _one_error_line(CliRunner().invoke(main, ["eval", "only_a_model"]), "MANIFEST")
    _one_error_line(CliRunner().invoke(main, ["transcribe", "m", "a.wav", "--no-such-option"]), "--no-such-option")
    _one_error_line(CliRunner().invoke(main, ["tokenizer", "train", "--out", "tk"]), "--kind")  # click lists the choices on lines


# -- from_dict directly ---------------------------------------------------------------------------------------------
def _config_classes() -> list[type]:
    from experiments.compare.config import CompareConfig
    from malsori.data.synth import SynthConfig
    from malsori.decode.options import DecodeOptions
    from malsori.streaming import StreamConfig
    from malsori.tasks.lm import LMTrainConfig
    from malsori.train import TrainConfig

    return [TrainConfig, LMTrainConfig, SynthConfig, CompareConfig, StreamConfig, DecodeOptions]


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_default_is_inside_its_declared_range(cls) -> None:
    data = to_dict(cls())
    if cls.__name__ == "StreamConfig":  # DecodeOptions inside: scorers are objects, not config data
        data["decode"] = {k: v for k, v in data["decode"].items() if k != "scorers"}
    if cls.__name__ == "DecodeOptions":
        data.pop("scorers")
    assert to_dict(from_dict(cls, data)) == to_dict(cls())


def test_every_numeric_field_of_the_configs_declares_a_range() -> None:
    """A new numeric config field without `bounded(...)` fails here: the range belongs beside its comment."""
    import typing

    from malsori.config import RANGE

    unbounded = []
    seen: set[type] = set()

    def walk(cls: type, where: str) -> None:
        if cls in seen or cls.__name__ == "WeightedScorer":  # an object with a weight, not config data
            return
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            args = [a for a in (typing.get_args(tp) or (tp,)) if a is not type(None)]
            inner = [a for arg in args for a in (typing.get_args(arg) or (arg,))]
            for a in inner:
                if dataclasses.is_dataclass(a):
                    walk(a, f"{where}{f.name}.")
            if any(a in (int, float) for a in inner) and RANGE not in f.metadata:
                unbounded.append(f"{cls.__name__}.{f.name}")

    for cls in _config_classes():
        walk(cls, "")
    assert unbounded == []


def test_range_messages_name_the_dotted_path_and_the_value() -> None:
    from malsori.train import TrainConfig

    with pytest.raises(ConfigError, match=r"^optim\.lr must be > 0, got nan$"):
        from_dict(TrainConfig, {"optim": {"lr": "nan"}})
    with pytest.raises(ConfigError, match=r"^model\.conformer\.dropout must be in \[0, 1\), got 1\.5$"):
        from_dict(TrainConfig, {"model": {"conformer": {"dropout": 1.5}}})
    with pytest.raises(ConfigError, match=r"^model\.conformer\.conv_kernel must be an odd integer >= 1, got 14$"):
        from_dict(TrainConfig, {"model": {"conformer": {"conv_kernel": 14}}})
    with pytest.raises(ConfigError, match=r"^model\.conformer\.num_heads 3 must divide d_model 16"):
        from_dict(TrainConfig, {"model": {"conformer": {"d_model": 16, "num_heads": 3}}})
    with pytest.raises(ConfigError, match=r"^max_minutes must be >= 0, got inf$"):
        from_dict(TrainConfig, {"max_minutes": float("inf")})
    cfg = from_dict(TrainConfig, {"optim": {"lr": 1e-3}, "max_minutes": 0, "keep_last": 0})
    assert cfg.optim.lr == 1e-3 and cfg.keep_last == 0


def test_python_api_configs_check_their_ranges_on_construction() -> None:
    from malsori.data.augment import AugmentConfig
    from malsori.decode.options import DecodeOptions
    from malsori.streaming import StreamConfig

    for make, field in ((lambda: DecodeOptions(beam_size=0), "beam_size"), (lambda: StreamConfig(chunk_ms=math.nan), "chunk_ms"),
                        (lambda: StreamConfig(max_utterance_s=0), "max_utterance_s"),
                        (lambda: AugmentConfig(gain_prob=-0.5), "gain_prob")):
        with pytest.raises(ConfigError, match=f"^{field} must be"):
            make()


def test_a_state_dict_of_another_architecture_is_named_in_one_line(tmp_path) -> None:
    from malsori.checkpoint import load_checkpoint, save_checkpoint
    from malsori.models.registry import ModelConfig, build_model
    from malsori.nn.conformer import ConformerConfig

    def model(d: int) -> torch.nn.Module:
        return build_model(ModelConfig(conformer=ConformerConfig(d_model=d, num_layers=1, num_heads=2, subsampling_channels=4)), 20, 7)

    small = model(16)
    ckpt = save_checkpoint(tmp_path, 1, small, torch.optim.AdamW(small.parameters()), {"epoch": 0, "pos": 0})
    with pytest.raises(MalsoriError) as err:
        load_checkpoint(ckpt, model(32))
    msg = str(err.value)
    assert "\n" not in msg and str(ckpt) in msg and "shapes" in msg and "[16]" in msg and "[32]" in msg
    other = build_model(ModelConfig(encoder="lstm", lstm=dict_lstm()), 20, 7)
    with pytest.raises(MalsoriError, match="missing keys") as err:
        load_checkpoint(ckpt, other)
    assert "\n" not in str(err.value) and "unknown keys" in str(err.value)
    assert load_checkpoint(ckpt, model(16))["step"] == 1


def dict_lstm():
    from malsori.nn.lstm import LSTMConfig

    return LSTMConfig(hidden_size=8, num_layers=1)


# -- leftovers: a device the machine lacks, `out=` a file, the LM and hotword options --------------------------------
@pytest.fixture
def no_cuda(monkeypatch):
    """A CPU-only machine, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_loading_onto_a_missing_device_is_one_error(no_cuda, tmp_path, monkeypatch) -> None:
    import malsori
    from malsori.pretrained import Recognizer

    for load in (lambda: malsori.load(tmp_path / "no_model", "cuda"), lambda: Recognizer.load(tmp_path / "no_model", device="cuda:1")):
        with pytest.raises(ConfigError, match="device: cuda.*(no CUDA|no CUDA GPU)"):
            load()  # refused before the (missing) folder is read
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.wav").write_bytes(b"")
    _one_error_line(CliRunner().invoke(main, ["transcribe", str(tmp_path / "no_model"), "a.wav", "--device", "cuda"]), "--device")


def test_train_itself_refuses_a_missing_device_and_an_out_that_is_a_file(no_cuda, tmp_path) -> None:
    from malsori.tasks import load_train_config
    from malsori.train import train

    out = tmp_path / "a_file"
    out.write_text("x")
    with pytest.raises(MalsoriError, match=f"out={out}: is a file"):
        train(load_train_config(None, ["task=lm", f"out={out}", f"data.train=[{tmp_path / 't.txt'}]"]))
    assert out.read_text() == "x"
    (tmp_path / "t.txt").write_text("hello world\n" * 20)
    with pytest.raises(ConfigError, match="device: cuda"):
        train(load_train_config(None, ["task=lm", f"out={tmp_path / 'run'}", f"data.train=[{tmp_path / 't.txt'}]", "device=cuda"]))


LM_OPTION_PROBES = [
    ("--lm-weight", "-1"), ("--lm-weight", "nan"), ("--lm-weight", "inf"), ("--word-bonus", "nan"), ("--word-bonus", "-inf"),
    ("--unk-logprob", "1"), ("--unk-logprob", "nan"), ("--hotwords-score", "nan"), ("--hotwords-score", "inf"),
]


@pytest.mark.parametrize("command", ["transcribe MODEL a.wav", "eval MODEL m.jsonl"])
@pytest.mark.parametrize("option,value", LM_OPTION_PROBES)
def test_lm_and_hotword_options_out_of_range_are_one_line(tmp_path, command: str, option: str, value: str) -> None:
    args = [a.replace("MODEL", str(tmp_path / "no_model")) for a in command.split()] + ["--lm", "lm.arpa", option, value]
    _one_error_line(CliRunner().invoke(main, args), option)


def test_lm_and_hotword_options_in_range_pass_option_checking(tmp_path) -> None:
    args = ["transcribe", str(tmp_path / "no_model"), "a.wav", "--lm", "lm.arpa", "--hotwords", "h.txt", "--lm-weight", "0", "--word-bonus", "-2", "--unk-logprob", "-10",
            "--hotwords-score", "-1"]
    _one_error_line(CliRunner().invoke(main, args), "no_model")  # got past the options to the missing model
