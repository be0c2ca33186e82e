"""A tiny random MarianMT pair (sentencepiece tokenizers trained on the spot) for back-translation tests."""

import io
import json
from pathlib import Path

import sentencepiece
import torch
from transformers import MarianConfig, MarianMTModel, MarianTokenizer


def train_spm(texts, vocab_size=60) -> bytes:
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=out,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="bpe",
        unk_id=0,
        bos_id=-1,
        eos_id=1,
        pad_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    return out.getvalue()


def build_tiny_marian(out_dir: Path, texts, seed: int) -> Path:
    """A random MarianMT model with a MarianTokenizer (sentencepiece models trained on ``texts``)."""
    tok_dir = out_dir / "tok"
    tok_dir.mkdir(parents=True)
    for name in ("source.spm", "target.spm"):
        (tok_dir / name).write_bytes(train_spm(texts))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tok_dir / "source.spm"))
    pieces = ["</s>", "<unk>"] + [sp.id_to_piece(i) for i in range(2, sp.get_piece_size())] + ["<pad>"]
    (tok_dir / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    tokenizer = MarianTokenizer(str(tok_dir / "source.spm"), str(tok_dir / "target.spm"), str(tok_dir / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(pieces),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=len(pieces) - 1,
        eos_token_id=0,
        decoder_start_token_id=len(pieces) - 1,
    )
    torch.manual_seed(seed)
    model_dir = out_dir / "model"
    MarianMTModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def write_config(path: Path, fwd: Path, bwd: Path) -> Path:
    path.write_text(
        "max_per_caption: 3\n"
        "backtranslation:\n"
        f"  chain:\n    - {{model: {fwd}, num_beams: 3, num_return_sequences: 2, max_new_tokens: 8}}\n"
        f"    - {{model: {bwd}, num_beams: 2, max_new_tokens: 8}}\n"
        "  batch_size: 64\n  device: cpu\n  seed: 0\n"
    )
    return path
