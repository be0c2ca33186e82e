"""Checkpoints written the way SLAM-LLM writes them import into models that compute the same thing."""

from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM

from espnet_slam_aac.bin.import_slam_checkpoint import import_checkpoint, main
from espnet_slam_aac.errors import CheckpointError
from espnet_slam_aac.inference.speech2caption import Speech2Caption
from espnet_slam_aac.model.eat_checkpoint import load_eat_model
from espnet_slam_aac.tasks.aac import AACTask


class UpstreamProjector(nn.Module):
    """SLAM-LLM's ``EncoderProjectorConcat`` as slam_aac.md describes it (k stacked tokens, 2048 hidden)."""

    def __init__(self, k: int, encoder_dim: int, llm_dim: int):
        super().__init__()
        self.k = k
        self.linear1 = nn.Linear(encoder_dim * k, 2048)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(2048, llm_dim)

    def forward(self, x):
        B, T, D = x.shape
        x = x[:, : T - T % self.k].contiguous().view(B, T // self.k, D * self.k)
        return self.linear2(self.relu(self.linear1(x)))


class UpstreamSlamModel(nn.Module):
    """``slam_model``'s attribute layout: ``encoder``, ``llm`` (a PeftModel), ``encoder_projector``."""

    def __init__(self, tiny_eat, tiny_llm, lora_alpha: int):
        super().__init__()
        self.encoder = load_eat_model(str(tiny_eat)).requires_grad_(False)
        llm = AutoModelForCausalLM.from_pretrained(tiny_llm)
        lora = LoraConfig(
            r=8,
            lora_alpha=lora_alpha,
            lora_dropout=0.05,
            target_modules=["q_proj", "v_proj"],
            bias="none",
            task_type="CAUSAL_LM",
        )
        self.llm = get_peft_model(llm, lora)
        self.encoder_projector = UpstreamProjector(5, self.encoder.config.embed_dim, llm.config.hidden_size)
        with torch.no_grad():  # a trained LoRA: B is no longer zero
            for name, p in self.llm.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.05)

    def trainable_state(self):
        """What ``save_model_checkpoint_peft`` writes: the parameters that require grad."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}


@pytest.fixture
def config(tmp_path, tiny_eat, tiny_llm):
    path = tmp_path / "train.yaml"
    conf = dict(encoder_conf=dict(checkpoint=str(tiny_eat)), decoder_conf=dict(model_name_or_path=str(tiny_llm)))
    path.write_text(yaml.safe_dump(conf), encoding="utf-8")
    return path


def assert_same_model(ours, upstream):
    ours.eval(), upstream.eval()
    tokens = torch.randn(2, 513, upstream.encoder.config.embed_dim)
    ours_out, lengths = ours.projector(tokens, torch.tensor([513, 513]))
    torch.testing.assert_close(ours_out, upstream.encoder_projector(tokens))
    embeds = torch.randn(2, 7, ours.decoder.hidden_size)
    mask = torch.ones(2, 7, dtype=torch.long)
    upstream_logits = upstream.llm(inputs_embeds=embeds, attention_mask=mask).logits
    torch.testing.assert_close(ours.decoder(embeds, mask), upstream_logits)


def test_model_pt_with_projector_and_lora_imports_to_the_same_model(tmp_path, config, tiny_eat, tiny_llm):
    upstream = UpstreamSlamModel(tiny_eat, tiny_llm, lora_alpha=32)
    state = upstream.trainable_state()
    assert "llm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" in state
    assert {k for k in state if not k.startswith("llm.")} == {
        f"encoder_projector.linear{i}.{w}" for i in (1, 2) for w in ("weight", "bias")
    }
    torch.save(state, tmp_path / "model.pt")
    out = import_checkpoint(tmp_path / "model.pt", config, tmp_path / "out")
    ours, _ = AACTask.build_model_from_file(out / "config.yaml", out / "model.pth")
    assert_same_model(ours, upstream)
    assert set(torch.load(out / "model.pth", weights_only=True)) == set(ours.state_dict())
    assert_same_model(Speech2Caption.from_pretrained(out).model, upstream)  # the import decodes as it is


def test_old_format_with_peft_folder_takes_lora_and_alpha_from_it(tmp_path, config, tiny_eat, tiny_llm):
    upstream = UpstreamSlamModel(tiny_eat, tiny_llm, lora_alpha=16)
    upstream.llm.save_pretrained(tmp_path / "peft")  # adapter_config.json + adapter_model.safetensors
    projector_only = {k: v for k, v in upstream.trainable_state().items() if k.startswith("encoder_projector.")}
    torch.save(projector_only, tmp_path / "model.pt")
    out = import_checkpoint(tmp_path / "model.pt", config, tmp_path / "out", peft_dir=tmp_path / "peft")
    ours, args = AACTask.build_model_from_file(out / "config.yaml", out / "model.pth")
    assert args.decoder_conf["lora"]["alpha"] == 16
    assert_same_model(ours, upstream)


def test_checkpoint_of_another_shape_or_with_foreign_tensors_is_refused(tmp_path, config, tiny_eat, tiny_llm):
    state = UpstreamSlamModel(tiny_eat, tiny_llm, lora_alpha=32).trainable_state()
    state["encoder_projector.linear2.weight"] = torch.zeros(4096, 2048)  # a Vicuna-7B projector
    state["encoder_projector.linear2.bias"] = torch.zeros(4096)
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"linear2.weight: \(4096, 2048\) vs \(64, 2048\)"):
        import_checkpoint(tmp_path / "model.pt", config, tmp_path / "out")
    torch.save({**state, "llm.base_model.model.lm_head.weight": torch.zeros(3, 3)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not SLAM-AAC's projector or LoRA.*lm_head"):
        import_checkpoint(tmp_path / "model.pt", config, tmp_path / "out")


def test_command_reports_a_bad_file_and_exits_1(tmp_path, config, capsys):
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as e:
        main(["--model_pt", str(tmp_path / "model.pt"), "--config", str(config), "--out", str(tmp_path / "out")])
    assert e.value.code == 1
    assert "model.pt: not a readable torch checkpoint" in capsys.readouterr().err and not (tmp_path / "out").exists()


class Payload:
    """Unpickling this would touch ``marker``: what a malicious checkpoint's code could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_command_refuses_a_pickle_carrying_code_and_never_runs_it(tmp_path, config, capsys):
    marker = tmp_path / "pwned"
    torch.save({"encoder_projector.linear1.weight": torch.zeros(1), "x": Payload(marker)}, tmp_path / "model.pt")
    with pytest.raises(SystemExit) as e:
        main(["--model_pt", str(tmp_path / "model.pt"), "--config", str(config), "--out", str(tmp_path / "out")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "model.pt: refused to unpickle" in err and "pathlib" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()
