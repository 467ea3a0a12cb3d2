"""Language models from the command line (issue 14, part 1): ``transformers:PATH`` specs built
from a saved configuration, typed and keyword inputs, ``--past`` and the per-token figures.

The oracles: FlopCounterMode on meta over a model the test builds itself from the same
configuration class (prefill), and closed forms written out below (decode after a cache,
non-embedding params, the rule of thumb). Every CLI test runs in a temporary directory that
holds nothing but the saved ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from convprof.cli import main
from convprof.models.inputs import Input, make, merge, parse

transformers = pytest.importorskip("transformers")

# A tiny Llama: hidden 32, 4 heads of 8, 2 key/value heads (k and v are 32 -> 16), MLP 64, vocab
# 100, 2 layers, untied head.
LLAMA = {
    "vocab_size": 100,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "architectures": ["LlamaForCausalLM"],
}
# Per token and layer: q 32x32 + k 32x16 + v 32x16 + o 32x32 + gate, up, down 3 x 32x64
LINEAR_PER_LAYER = 32 * 32 + 32 * 16 + 32 * 16 + 32 * 32 + 3 * 32 * 64  # 9,216
HEAD = 32 * 100  # lm_head, per token
EMBEDDING = 100 * 32  # embed_tokens: the only embedding table
# params: per layer the linear weights, two RMSNorm weights (32 each); a final norm; head; table
LLAMA_PARAMS = 2 * (LINEAR_PER_LAYER + 2 * 32) + 32 + HEAD + EMBEDDING  # 24,992


def attention(tokens: int, context: int) -> int:
    """Scores (q . k) and weighted sum (p . v) of 4 heads of size 8, per layer."""
    return 2 * 4 * tokens * context * 8


CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", LLAMA),
    "gpt2": (
        "GPT2Config",
        {"vocab_size": 100, "n_embd": 32, "n_layer": 2, "n_head": 4, "architectures": ["GPT2LMHeadModel"]},
    ),
    "bert": (
        "BertConfig",
        {
            "vocab_size": 100,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "architectures": ["BertModel"],
        },
    ),
    "t5": (
        "T5Config",
        {
            "vocab_size": 100,
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 64,
            "num_layers": 2,
            "num_heads": 4,
            "architectures": ["T5ForConditionalGeneration"],
        },
    ),
    "whisper": (
        "WhisperConfig",
        {
            "vocab_size": 100,
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "num_mel_bins": 16,
            "max_source_positions": 16,
            "max_target_positions": 16,
            "pad_token_id": 0,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "decoder_start_token_id": 0,
            "architectures": ["WhisperForConditionalGeneration"],
        },
    ),
    "videomae": (
        "VideoMAEConfig",
        {
            "image_size": 32,
            "patch_size": 16,
            "num_frames": 4,
            "tubelet_size": 2,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "architectures": ["VideoMAEModel"],
        },
    ),
    "ast": (
        "ASTConfig",
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_length": 32,
            "num_mel_bins": 16,
            "architectures": ["ASTModel"],
        },
    ),
}


def save(folder: Path, name: str) -> Any:
    cls, kwargs = CONFIGS[name]
    config = getattr(transformers, cls)(**kwargs)
    config.save_pretrained(folder / name)
    return config


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main([*argv, "--format", "json"]) == 0, capsys.readouterr().err
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def flop_counter_macs(config: Any, inputs: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> int:
    """FlopCounterMode's MACs over the architecture the config names, built on meta here."""
    with torch.device("meta"):
        model = getattr(transformers, config.architectures[0])(config).eval()
        feed = {name: torch.zeros(shape, dtype=dtype) for name, (shape, dtype) in inputs.items()}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**feed)
    return counter.get_total_flops() // 2


# The inputs convprof makes by default, written out: 128 token ids (a decoder token for the
# encoder-decoders), Whisper's 2 x max_source_positions frames of its mel bins, VideoMAE's
# num_frames frames of its image size, AST's max_length frames of its mel bins.
DEFAULT_INPUTS: dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]] = {
    "llama": {"input_ids": ((1, 128), torch.int64)},
    "gpt2": {"input_ids": ((1, 128), torch.int64)},
    "bert": {"input_ids": ((1, 128), torch.int64)},
    "t5": {"input_ids": ((1, 128), torch.int64), "decoder_input_ids": ((1, 1), torch.int64)},
    "whisper": {"input_features": ((1, 16, 32), torch.float32), "decoder_input_ids": ((1, 1), torch.int64)},
    "videomae": {"pixel_values": ((1, 4, 3, 32, 32), torch.float32)},
    "ast": {"input_values": ((1, 32, 16), torch.float32)},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("mode", ["--no-compute", "--compute"])
def test_prefill_equals_flop_counter_on_meta(
    name: str, mode: str, here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = save(here, name)
    data = run_json(["profile", f"transformers:{name}", mode], capsys)
    assert data["complete"]
    assert data["total"]["macs"] == flop_counter_macs(config, DEFAULT_INPUTS[name]) > 0


def test_llama_prefill_closed_form_and_token_figures(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(here, "llama")
    data = run_json(["profile", "transformers:llama", "--input", "2,16:int64"], capsys)
    tokens = 2 * 16
    macs = 2 * (LINEAR_PER_LAYER * tokens + 2 * attention(16, 16)) + HEAD * tokens
    assert data["total"]["macs"] == macs
    assert data["total"]["params"] == LLAMA_PARAMS
    t = data["tokens"]
    assert (t["tokens"], t["context"], t["past"]) == (32, 16, 0)
    assert t["embedding_params"] == EMBEDDING
    assert t["non_embedding_params"] == LLAMA_PARAMS - EMBEDDING
    assert t["macs_per_token"] == macs / 32
    # the rule: N + n_layer x n_ctx x d_attn MACs per token, d_attn = 4 heads x 8
    assert t["rule_macs_per_token"] == (LLAMA_PARAMS - EMBEDDING) + 2 * 16 * 32


@pytest.mark.parametrize("mode", ["--no-compute", "--compute"])
def test_decode_after_a_cache_closed_form(mode: str, here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(here, "llama")
    data = run_json(["profile", "transformers:llama", "--past", "8", mode], capsys)
    # one new token attends to the 8 cached and itself
    assert data["total"]["macs"] == 2 * (LINEAR_PER_LAYER + attention(1, 9)) + HEAD == 22_784
    t = data["tokens"]
    assert (t["tokens"], t["context"], t["past"]) == (1, 9, 8)
    # the prefill of the 8 cached tokens, causal attention counted in full (8 x 8)
    assert t["prefill_macs"] == 2 * (LINEAR_PER_LAYER * 8 + attention(8, 8)) + HEAD * 8 == 181_248


def test_decode_batch_and_new_tokens(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(here, "llama")
    data = run_json(["profile", "transformers:llama", "--past", "5", "--input", "3,2:int64"], capsys)
    assert data["total"]["macs"] == 3 * (2 * (LINEAR_PER_LAYER * 2 + attention(2, 7)) + HEAD * 2)
    assert (data["tokens"]["tokens"], data["tokens"]["context"]) == (6, 7)


def test_keyword_input_by_name(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An attention mask given by name is ones (every position attended), so the count is the
    same as without it; the ids may be given by name too."""
    save(here, "llama")
    plain = run_json(["profile", "transformers:llama", "--input", "1,16:int64"], capsys)
    masked = run_json(
        ["profile", "transformers:llama", "--input", "input_ids=1,16", "--input", "attention_mask=1,16"],
        capsys,
    )
    assert masked["total"]["macs"] == plain["total"]["macs"]


def test_a_keyword_the_forward_does_not_name_gets_a_note(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save(here, "llama")
    assert main(["profile", "transformers:llama", "--input", "1,16", "--input", "atention_mask=1,16"]) == 0
    err = capsys.readouterr().err
    assert "LlamaForCausalLM.forward has no parameter 'atention_mask'" in err


def test_table_shows_token_lines(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(here, "llama")
    assert main(["profile", "transformers:llama", "--past", "8"]) == 0
    out = capsys.readouterr().out
    assert "Tokens:       1 (batch 1 x 1 new, after 8 cached; context 9)" in out
    assert f"Params:       {LLAMA_PARAMS - EMBEDDING:,} without embeddings" in out
    assert "Prefill:      8 cached tokens cost 181,248 MACs" in out
    # counted / rule: 22,784 / (21,792 + 2 x 9 x 32)
    assert f"counted {22_784 / (21_792 + 2 * 9 * 32):.3f}x" in out


def test_model_type_builds_the_default_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    """``transformers:gpt2`` is GPT2Config's defaults: GPT-2 small, 124,439,808 params (the
    published count of the 124M checkpoint, head tied to the token table)."""
    data = run_json(["profile", "transformers:gpt2", "--no-compute", "--input", "1,16:int64"], capsys)
    assert data["total"]["params"] == 124_439_808
    # embeddings: 50,257 x 768 tokens + 1,024 x 768 positions
    assert data["tokens"]["embedding_params"] == 50_257 * 768 + 1_024 * 768


@pytest.mark.parametrize(
    "argv,message",
    [
        (["profile", "transformers:bert", "--past", "4"], "--past needs a decoder-only language model"),
        (["profile", "transformers:llama", "--past", "0"], "--past must be 1 to 1,099,511,627,776 tokens"),
        (["profile", "transformers:./missing"], "not a directory with config.json"),
        (["profile", "transformers:empty"], "has no config.json"),
        (["profile", "transformers:llama", "--input", "1,16:float8"], "unknown dtype 'float8'"),
        (["profile", "transformers:llama", "--input", "1-mask=1,16"], "is not a keyword argument name"),
        # issue 35 #10: an architecture that is no model class was called and failed (exit 3)
        (
            ["profile", "transformers:pipeline"],
            "names 'TextGenerationPipeline', which is not a transformers model",
        ),
        (["profile", "transformers:trainer"], "names 'Trainer', which is not a transformers model class"),
    ],
)
def test_errors_are_one_line(
    argv: list[str], message: str, here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save(here, "llama")
    save(here, "bert")
    (here / "empty").mkdir()
    for folder, named in (("pipeline", "TextGenerationPipeline"), ("trainer", "Trainer")):
        config = save(here, "llama")
        config.architectures = [named]
        config.save_pretrained(here / folder)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects a malformed option itself
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_without_transformers_installed(
    here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    assert main(["profile", "transformers:llama"]) == 2
    assert "pip install 'convprof[transformers]'" in capsys.readouterr().err


# -- inputs, unit by unit ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1,3,8,8", Input((1, 3, 8, 8))),
        ("1x128:int64", Input((1, 128), "int64")),
        ("attention_mask=1,128:int64", Input((1, 128), "int64", "attention_mask")),
        ("pixel_values=1,3,4,4", Input((1, 3, 4, 4), None, "pixel_values")),
        ("1,4:bool", Input((1, 4), "bool")),
    ],
)
def test_parse(text: str, expected: Input) -> None:
    assert parse(text) == expected
    assert parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "1,0", "a,b", "1,2:int4", "=1,2", "x y=1,2", "1,2:"])
def test_parse_rejects(text: str) -> None:
    if text == "1,2:":  # an empty dtype is no dtype
        assert parse(text) == Input((1, 2))
        return
    with pytest.raises(ValueError, match="bad input"):
        parse(text)


def test_merge_keeps_the_defaults_the_user_did_not_replace() -> None:
    main_ids, decoder = Input((1, 128), "int64"), Input((1, 1), "int64", "decoder_input_ids")
    defaults = (main_ids, decoder)
    assert merge((), defaults) == defaults
    given = Input((1, 16), "int64")
    assert merge((given,), defaults) == (given, decoder)  # positional replaces positional
    named = Input((1, 16), "int64", "input_ids")
    assert merge((named,), defaults, "input_ids") == (named, decoder)  # naming the main input too
    mask = Input((1, 128), "int64", "attention_mask")
    assert merge((mask,), defaults, "input_ids") == (mask, main_ids, decoder)


def test_make_values() -> None:
    ids = Input((2, 50), "int64")
    mask = Input((2, 50), "int64", "attention_mask")
    flags = Input((3,), "bool", "flags")
    x = Input((2, 3))
    args, kwargs = make([ids, mask, flags, x], dtype="float16", compute=True, id_limit=7)
    assert args[0].dtype == torch.int64 and int(args[0].min()) >= 0 and int(args[0].max()) < 7
    assert len(set(args[0].flatten().tolist())) > 1  # ids drawn, not constant
    assert bool((kwargs["attention_mask"] == 1).all())
    assert bool(kwargs["flags"].all())
    assert args[1].dtype == torch.float16 and not args[1].is_meta
    args, kwargs = make([ids, x], compute=False)
    assert not args[0].is_meta and not bool(args[0].any())  # no vocabulary known: zeros, real
    assert args[1].is_meta  # floating inputs of a zero-compute pass cost nothing


def test_check_takes_typed_inputs_from_the_config(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(here, "llama")
    macs = 2 * (LINEAR_PER_LAYER * 16 + attention(16, 16)) + HEAD * 16
    (here / "pyproject.toml").write_text(
        "[[tool.convprof.models]]\n"
        'name = "tiny"\nmodel = "transformers:llama"\ninput = ["1,16:int64"]\n'
        f"max_macs = {macs}\n"
    )
    assert main(["check"]) == 0
    (here / "pyproject.toml").write_text(
        '[[tool.convprof.models]]\nname = "tiny"\nmodel = "transformers:llama"\ninput = ["1,16:int4"]\n'
    )
    assert main(["check"]) == 2
    assert "unknown dtype 'int4'" in capsys.readouterr().err


def test_spec_overrides_the_configuration(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(here, "llama")
    data = run_json(["profile", "transformers:llama(num_hidden_layers=1)", "--input", "1,16"], capsys)
    assert data["total"]["macs"] == LINEAR_PER_LAYER * 16 + attention(16, 16) + HEAD * 16  # one layer
    assert main(["profile", "transformers:llama(num_layers=1)"]) == 2
    assert "LlamaConfig has no setting 'num_layers'" in capsys.readouterr().err
