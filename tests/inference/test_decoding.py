"""decoding.py: the shared-prefill n-best beam search gives exactly what transformers' generate gives."""

import collections

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.inference.decoding import DecodingOptions, decode, parse_beam_sizes
from espnet_slam_aac.inference.shared_prefix import SharedPrefixCache

EOS = 2
HIDDEN = 32
PREFIX_LENGTHS = [7, 12, 9, 12, 4, 10]


def peaky_llm(seed: int = 0, vocab: int = 48) -> LlamaForCausalLM:
    """A tiny random Llama whose next-token distributions are peaked and whose EOS is sometimes likely, so that
    hypotheses end at different lengths and different beam sizes disagree (a flat random model would not)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    llm = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        llm.lm_head.weight *= 8.0
        llm.lm_head.weight[EOS] *= 1.7
    return llm


def left_padded_prefix(lengths, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    embeds = torch.randn(len(lengths), width, HIDDEN, generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, width - n :] = 1
        embeds[i, : width - n] = 0.0
    return embeds, mask


def hf_reference(llm, embeds, mask, options: DecodingOptions, eos=EOS):
    """The reference's way: ``generate`` per clip (unpadded) per beam size. Returns clip -> [(tokens, score)]."""
    out = []
    for i in range(len(embeds)):
        keep = mask[i].bool()
        per_clip = []
        for beam in options.beam_sizes:
            gen = llm.generate(
                inputs_embeds=embeds[i : i + 1, keep],
                attention_mask=mask[i : i + 1, keep],
                num_beams=beam,
                num_return_sequences=options.nbest,
                max_new_tokens=options.max_new_tokens,
                min_new_tokens=options.min_new_tokens or None,
                min_length=1,
                do_sample=False,
                repetition_penalty=options.repetition_penalty,
                length_penalty=options.length_penalty,
                early_stopping=options.early_stopping,
                bos_token_id=1,
                eos_token_id=eos,
                pad_token_id=EOS,
                return_dict_in_generate=True,
                output_scores=True,
            )
            eos_ids = {eos} if isinstance(eos, int) else set(eos)
            scores = gen.sequences_scores.tolist() if beam > 1 else [None]  # num_beams=1 is greedy search
            for seq, score in zip(gen.sequences.tolist(), scores):
                per_clip.append(([t for t in seq if t not in eos_ids and t != EOS], score))
        out.append(per_clip)
    return out


def assert_same_as_hf(llm, options, lengths=PREFIX_LENGTHS, eos=EOS):
    embeds, mask = left_padded_prefix(lengths)
    ours = decode(llm, embeds, mask, options, eos)
    reference = hf_reference(llm, embeds, mask, options, eos)
    for clip, (mine, theirs) in enumerate(zip(ours, reference)):
        assert [h.tokens for h in mine] == [t for t, _ in theirs], f"clip {clip}"
        scored = [(h.score, s) for h, (_, s) in zip(mine, theirs) if s is not None]
        assert [a for a, _ in scored] == pytest.approx([b for _, b in scored], abs=1e-4), f"clip {clip}"
    return ours


@pytest.fixture(scope="module")
def llm():
    return peaky_llm()


def test_candidate_set_of_beams_2_to_8_equals_generate_per_clip_and_beam_size(llm):
    options = DecodingOptions(beam_sizes=parse_beam_sizes("2..8"), max_new_tokens=20)
    ours = assert_same_as_hf(llm, options)
    # the setup exercises what matters: EOS-ended and max-length hypotheses, beam sizes that disagree
    lengths = collections.Counter(h.length for clip in ours for h in clip)
    assert lengths[20] > 0 and sum(v for k, v in lengths.items() if k < 20) > 0
    assert max(len({tuple(h.tokens) for h in clip}) for clip in ours) >= 3
    for clip in ours:
        assert [h.beam_size for h in clip] == [2, 3, 4, 5, 6, 7, 8]
        for h in clip:
            assert h.score == pytest.approx(h.logprob / h.length, rel=1e-5)


def test_sequential_schedule_gives_the_combined_results(llm):
    embeds, mask = left_padded_prefix(PREFIX_LENGTHS)
    combined = decode(llm, embeds, mask, DecodingOptions(beam_sizes=(2, 4, 8), max_new_tokens=20), EOS)
    sequential = decode(
        llm, embeds, mask, DecodingOptions(beam_sizes=(2, 4, 8), max_new_tokens=20, schedule="sequential"), EOS
    )
    assert [[h.tokens for h in c] for c in combined] == [[h.tokens for h in c] for c in sequential]


@pytest.mark.parametrize(
    "changes",
    [
        {"length_penalty": 0.5},
        {"length_penalty": 2.0, "early_stopping": "never"},
        {"early_stopping": True},
        {"repetition_penalty": 1.5},
        {"min_new_tokens": 4},
        {"nbest": 2, "beam_sizes": (3, 4, 5)},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_options_keep_generate_semantics(llm, changes):
    options = DecodingOptions(beam_sizes=(2, 4, 6), max_new_tokens=16).replace(**changes)
    assert_same_as_hf(llm, options)


def test_several_eos_ids_stop_hypotheses_like_generate(llm):
    assert_same_as_hf(llm, DecodingOptions(beam_sizes=(2, 5), max_new_tokens=12), eos=[EOS, 7])


def test_unpadded_batch_and_single_clip_work(llm):
    assert_same_as_hf(llm, DecodingOptions(beam_sizes=(3,), max_new_tokens=10), lengths=[5, 5])
    assert_same_as_hf(llm, DecodingOptions(beam_sizes=(2, 4), max_new_tokens=10), lengths=[8])


@pytest.mark.parametrize("changes", [{}, {"repetition_penalty": 1.5}, {"min_new_tokens": 3}])
def test_beam_size_1_is_greedy_search_like_generate(llm, changes):
    assert_same_as_hf(llm, DecodingOptions(beam_sizes=(1, 3), max_new_tokens=12).replace(**changes))


def test_hypothesis_lengths_count_eos_and_cap_at_max_new_tokens(llm):
    embeds, mask = left_padded_prefix(PREFIX_LENGTHS)
    for clip in decode(llm, embeds, mask, DecodingOptions(beam_sizes=(2, 8), max_new_tokens=20), EOS):
        for h in clip:
            assert h.length == len(h.tokens) + 1 or (h.length == 20 and len(h.tokens) == 20)
            assert EOS not in h.tokens


def test_options_are_validated_with_messages_that_say_what_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="text_beam_size 4 is not one of"):
        DecodingOptions(beam_sizes=(2, 3), text_beam_size=4)
    assert DecodingOptions(beam_sizes=(2, 3)).text_beam_size == 2
    assert DecodingOptions(beam_sizes=(2, 4, 8)).text_beam_size == 4
    with pytest.raises(ConfigError, match="nbest"):
        DecodingOptions(beam_sizes=(2, 4), nbest=3)
    with pytest.raises(ConfigError, match="distinct"):
        DecodingOptions(beam_sizes=(4, 4))
    with pytest.raises(ConfigError, match="early_stopping"):
        DecodingOptions(early_stopping="sometimes")
    with pytest.raises(ConfigError, match="stop_rule"):
        DecodingOptions(stop_rule="hf4")
    with pytest.raises(ConfigError, match="step must be one of"):
        DecodingOptions(step="graph")
    with pytest.raises(ConfigError, match="2..8"):
        parse_beam_sizes("two")
    bad = tmp_path / "decode.yaml"
    bad.write_text("beam_size: 4\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['beam_size'\]"):
        DecodingOptions.from_yaml(bad)


def test_decode_yaml_of_the_template_is_the_reference_setting():
    from pathlib import Path

    conf = Path(__file__).resolve().parents[2] / "egs2/TEMPLATE/aac1/conf/decode.yaml"
    options = DecodingOptions.from_yaml(conf)
    assert options.beam_sizes == (2, 3, 4, 5, 6, 7, 8)
    assert (options.text_beam_size, options.nbest, options.max_new_tokens) == (4, 1, 200)
    assert (options.length_penalty, options.repetition_penalty, options.early_stopping) == (1.0, 1.0, False)
    assert options.stop_rule == "slam_aac"  # the reference's beam search (transformers 4.35.2)
    assert DecodingOptions().stop_rule == "transformers"
    assert DecodingOptions.from_yaml(conf, beam_sizes="4").beam_sizes == (4,)


@pytest.mark.parametrize("schedule", ["combined", "sequential"])
@pytest.mark.parametrize("stop_rule", ["transformers", "slam_aac"])
def test_shared_prefix_gives_the_captions_of_the_copied_prefix_cache(llm, stop_rule, schedule):
    embeds, mask = left_padded_prefix(PREFIX_LENGTHS)
    options = DecodingOptions(
        beam_sizes=(1, 2, 5, 8), max_new_tokens=16, stop_rule=stop_rule, schedule=schedule, repetition_penalty=1.2
    )
    shared = decode(llm, embeds, mask, options, EOS, prefix="shared")
    copied = decode(llm, embeds, mask, options, EOS, prefix="copied")
    assert [[h.tokens for h in c] for c in shared] == [[h.tokens for h in c] for c in copied]
    got, want = [h.score for c in shared for h in c], [h.score for c in copied for h in c]
    assert got == pytest.approx(want, abs=1e-5)


def test_shared_prefix_cache_holds_one_prefix_per_clip_and_only_generated_tokens_per_row(llm):
    embeds, mask = left_padded_prefix(PREFIX_LENGTHS)
    cache = SharedPrefixCache(llm)
    cache.prefill(embeds, mask)
    rows = torch.arange(len(PREFIX_LENGTHS)).repeat_interleave(35)  # beams 2..8 of every clip
    cache.fork(rows, max_new_tokens=20)
    cache.step(torch.full((len(rows),), 5))
    for (keys, values), layer in zip(cache.prefix, cache.cache.layers):
        assert keys.shape[0] == values.shape[0] == len(PREFIX_LENGTHS)  # one prefix per clip
        assert keys.shape[2] == max(PREFIX_LENGTHS)
        assert layer.keys.shape[0] == len(rows) and layer.keys.shape[2] == 20  # rows hold generated tokens only


@pytest.mark.parametrize(
    "changes",
    [{}, {"early_stopping": True, "repetition_penalty": 1.3}, {"early_stopping": "never", "min_new_tokens": 3}],
    ids=["default", "early_stopping=True", "never"],
)
@pytest.mark.parametrize("stop_rule", ["transformers", "slam_aac"])
def test_host_checks_every_few_steps_give_the_same_hypotheses(llm, stop_rule, changes):
    """Finished clips frozen on the device until the next host check end exactly as if dropped at once."""
    embeds, mask = left_padded_prefix(PREFIX_LENGTHS)
    options = DecodingOptions(beam_sizes=(1, 3, 6), max_new_tokens=14, stop_rule=stop_rule).replace(**changes)
    every_step = decode(llm, embeds, mask, options, EOS, sync_every=1)
    every_third = decode(llm, embeds, mask, options, EOS, sync_every=3)
    assert [[(h.tokens, h.length) for h in c] for c in every_third] == [
        [(h.tokens, h.length) for h in c] for c in every_step
    ]
    assert [h.score for c in every_third for h in c] == pytest.approx(
        [h.score for c in every_step for h in c], abs=1e-6
    )


@pytest.mark.parametrize("schedule", ["combined", "sequential"])
@pytest.mark.parametrize("stop_rule", ["transformers", "slam_aac"])
def test_static_cache_gives_the_captions_of_the_growing_one(llm, stop_rule, schedule):
    """Every row kept to the end in a full-capacity cache (the shapes a CUDA graph needs): the same results."""
    embeds, mask = left_padded_prefix(PREFIX_LENGTHS)
    options = DecodingOptions(beam_sizes=(1, 3, 6), max_new_tokens=14, stop_rule=stop_rule, schedule=schedule)
    options = options.replace(repetition_penalty=1.2, min_new_tokens=2)
    growing = decode(llm, embeds, mask, options, EOS)
    static = decode(llm, embeds, mask, options.replace(step="static"), EOS)
    assert [[(h.tokens, h.length) for h in c] for c in static] == [[(h.tokens, h.length) for h in c] for c in growing]
    assert [h.score for c in static for h in c] == pytest.approx([h.score for c in growing for h in c], abs=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled (CUDA graph) step is a GPU path")
def test_compiled_step_on_the_gpu_gives_the_captions_of_the_eager_one(llm):
    embeds, mask = left_padded_prefix(PREFIX_LENGTHS)
    gpu = peaky_llm().cuda()
    options = DecodingOptions(beam_sizes=(2, 4), max_new_tokens=12, stop_rule="slam_aac")
    eager = decode(gpu, embeds.cuda(), mask.cuda(), options, EOS)
    compiled = decode(gpu, embeds.cuda(), mask.cuda(), options.replace(step="compiled"), EOS)
    assert [[h.tokens for h in c] for c in compiled] == [[h.tokens for h in c] for c in eager]
