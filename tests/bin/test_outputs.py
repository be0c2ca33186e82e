"""Every tool's outputs: data alone on stdout, no network, never over an input, nothing half-written on a
read-only folder or a full disk, and an empty caption is a failure that names the clip."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from safetensors.torch import load_file, save_file

from espnet_slam_aac.bin import aac_inference, aac_score, caption, clap_refine, eat_features, pack, prepare_data

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "premove_packed"
MODEL, CLIPS = FIXTURE / "model", sorted((FIXTURE / "clips").glob("*.wav"))
FAST = ["--max_new_tokens", "5", "--device", "cpu", "--quiet"]
# Python's audit events for any network use: name resolution, connections, urllib requests
AUDITED = """
import sys
def hook(event, args):
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.connect", "urllib.Request"):
        sys.stderr.write(f"NETWORK ATTEMPT: {event} {args[:2]!r}\\n")
sys.addaudithook(hook)
from espnet_slam_aac.cli import main
main(sys.argv[1:])
"""


def run(main, argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def files_under(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "filler")


@pytest.fixture(scope="module")
def silent_model(tmp_path_factory) -> Path:
    """The fixture model with its LLM made to end every caption at once (EOS always wins): empty captions."""
    folder = tmp_path_factory.mktemp("silent") / "model"
    shutil.copytree(MODEL, folder)
    weights = folder / "sources" / "llm" / "model.safetensors"
    state = load_file(str(weights))
    state["model.embed_tokens.weight"][:, 0] = 10.0  # a residual dimension that stays positive ...
    for name, tensor in state.items():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            tensor[0] = 0.0  # ... as no layer writes to it
    state["model.norm.weight"].zero_()
    state["model.norm.weight"][0] = 1.0
    state["lm_head.weight"].zero_()
    state["lm_head.weight"][2, 0] = 1.0  # EOS (id 2) reads it: the only non-zero logit
    save_file(state, str(weights))
    return folder


def test_caption_stdout_holds_only_the_tsv_and_nothing_reaches_for_the_network(tmp_path):
    command = [sys.executable, "-c", AUDITED, "caption", "--model", str(MODEL), *map(str, CLIPS), "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [(r[0], len(r)) for r in rows] == [(str(c), 2) for c in CLIPS]
    expected = json.loads((FIXTURE / "captions.json").read_text(encoding="utf-8"))
    assert [r[1] for r in rows] == [" ".join(expected[c.name]["caption"].split()) for c in CLIPS]
    assert "NETWORK ATTEMPT" not in done.stderr
    assert "nltk_data" not in done.stderr and "Flash Attention" not in done.stderr


def test_quiet_silences_the_libraries_bars_and_warnings(tmp_path):
    command = [sys.executable, "-m", "espnet_slam_aac.cli", "caption", "--model", str(MODEL), str(CLIPS[0]), *FAST]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # no "Loading weights" bar, no FutureWarning, no progress bar


def test_empty_captions_fail_caption_and_decode_naming_the_clips(silent_model, tmp_path, capsys):
    good = tmp_path / "good.wav"
    shutil.copy(CLIPS[0], good)
    code, out, err = run(caption.main, ["--model", str(silent_model), str(good), *FAST], capsys)
    assert code == 1 and out == ""
    assert f"error: {good}: the caption is empty" in err and "1 clip(s) got an empty caption" in err

    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"k{i} {c}\n" for i, c in enumerate(CLIPS)))
    argv = ["--model", str(silent_model), "--wav_scp", str(scp), "--output_dir", str(tmp_path / "dec"), *FAST]
    code, out, err = run(aac_inference.main, argv, capsys)
    assert code == 1 and "2 of 2 clips got an empty caption (k0, k1)" in err
    assert (tmp_path / "dec" / "text").read_text() == "k0\nk1\n"  # written all the same, Kaldi style


def test_a_file_name_with_a_tab_is_refused_and_the_others_are_captioned(tmp_path, capsys):
    tabbed = tmp_path / "a\tb.wav"
    shutil.copy(CLIPS[0], tabbed)
    code, out, err = run(caption.main, ["--model", str(MODEL), str(tabbed), str(CLIPS[1]), *FAST], capsys)
    assert code == 1 and [line.split("\t")[0] for line in out.splitlines()] == [str(CLIPS[1])]
    assert "a file name with a tab or newline cannot be a TSV field" in err


def make_score_inputs(tmp_path: Path):
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "text_spk1").write_text("k0 a dog barks\nk1 rain falls\n")
    (tmp_path / "hyp").write_text("k0 a dog\nk1 rain\n")
    return ["--ref_dir", str(ref), "--metrics", "bleu_1", "--no_ptb_tokenize", "--cache_dir", str(tmp_path / "c")]


def test_no_tool_writes_over_one_of_its_inputs(tmp_path, capsys):
    scp = tmp_path / "X.scp"
    scp.write_text(f"k0 {CLIPS[0]}\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"k0 {CLIPS[0]}\n")
    (data / "text").write_text("k0 a reference\n")
    (data / "utt2spk").write_text("k0 k0\n")
    (tmp_path / "cands.jsonl").write_text(json.dumps({"key": "k0", "candidates": [{"text": "a"}]}) + "\n")
    manifest = data / "m.jsonl"
    manifest.write_text(json.dumps({"key": "k0", "source": str(CLIPS[0]), "target": "x"}) + "\n")
    hyp = tmp_path / "hyp"
    cases = [
        (eat_features.main, ["--checkpoint", "unused", "--wav_scp", str(scp), "--out", str(tmp_path / "X")]),
        (caption.main, ["--model", str(MODEL), str(CLIPS[0]), "--out", str(CLIPS[0])]),
        (aac_inference.main, ["--model", str(MODEL), "--wav_scp", str(data / "wav.scp"), "--output_dir", str(data)]),
        (clap_refine.main, ["--candidates", str(tmp_path / "cands.jsonl"), "--data_dir", str(data)]),
        (aac_score.main, make_score_inputs(tmp_path) + ["--hyp", str(hyp), "--results_md", str(hyp)]),
        (prepare_data.main, [str(manifest), str(data)]),
        (pack.main, ["--train_config", str(data / "text"), "--model_file", str(scp), "--out_dir", str(tmp_path)]),
    ]
    cases[3][1].extend(["--out_dir", str(data), "--clap", "unused"])
    before = {p: p.read_bytes() for p in [scp, hyp, *data.iterdir(), *CLIPS]}
    for main, argv in cases:
        code, out, err = run(main, argv, capsys)
        assert code == 1 and err.splitlines()[-1].startswith("error: "), (main.__module__, err)
        assert "output is also an input" in err or "replaced as a whole" in err, err
        assert {p: p.read_bytes() for p in before} == before, main.__module__
    assert not (tmp_path / "X.ark").exists()


@pytest.fixture(params=["read_only_dir", "full_dir"])
def unwritable(request) -> Path:
    return request.getfixturevalue(request.param)


def test_unwritable_outputs_are_one_error_line_and_leave_nothing(unwritable, tmp_path, tiny_eat, capsys):
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"k{i} {c}\n" for i, c in enumerate(CLIPS)))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"key": "k0", "source": str(CLIPS[0]), "target": "x"}) + "\n")
    cases = [
        (prepare_data.main, [str(manifest), str(unwritable / "data")]),
        (
            eat_features.main,
            ["--checkpoint", str(tiny_eat), "--wav_scp", str(scp), "--out", str(unwritable / "f"), "--quiet"],
        ),
        (caption.main, ["--model", str(MODEL), str(CLIPS[0]), "--out", str(unwritable / "c.tsv"), *FAST]),
        (aac_inference.main, ["--model", str(MODEL), "--wav_scp", str(scp), "--output_dir", str(unwritable), *FAST]),
        (aac_score.main, make_score_inputs(tmp_path) + ["--hyp", str(tmp_path / "hyp"), "--out_dir", str(unwritable)]),
    ]
    for main, argv in cases:
        code, _, err = run(main, argv, capsys)
        assert code == 1, (main.__module__, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {unwritable}/"), (main.__module__, err)
        assert "Read-only file system" in err or "No space left" in err or "Permission denied" in err, err
        assert files_under(unwritable) == [], (main.__module__, files_under(unwritable))


def test_eat_features_skip_invalid_goes_on_and_lists_the_skipped_keys(tmp_path, tiny_eat, capsys, caplog):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    soundfile.write(tmp_path / "short.wav", np.zeros(100), 16000)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a {CLIPS[0]}\nb {broken}\nc {tmp_path / 'short.wav'}\nd {CLIPS[1]}\n")
    argv = ["--checkpoint", str(tiny_eat), "--wav_scp", str(scp), "--out", str(tmp_path / "f"), "--device", "cpu"]
    code, _, err = run(eat_features.main, argv, capsys)
    assert code == 1 and "key 'b'" in err and not (tmp_path / "f.scp").exists()
    code, _, err = run(eat_features.main, [*argv, "--skip_invalid"], capsys)
    assert code == 0, err
    assert [line.split()[0] for line in (tmp_path / "f.scp").read_text().splitlines()] == ["a", "d"]
    skipped = (tmp_path / "f.skipped.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in skipped] == ["b", "c"]
    assert "2 of 4 clips skipped" in caplog.text
