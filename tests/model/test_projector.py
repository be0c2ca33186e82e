import pytest
import torch

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.model.projector import LinearProjector


def test_slam_aac_sizes_give_102_embeddings_and_upstream_parameter_count():
    projector = LinearProjector(input_size=768, output_size=4096)  # EAT-base -> Vicuna-7B, k = 5
    assert sum(p.numel() for p in projector.parameters()) == 16_259_072
    out, lengths = projector(torch.zeros(1, 513, 768), torch.tensor([513]))
    assert out.shape == (1, 102, 4096) and lengths.tolist() == [102]


def test_stacks_consecutive_tokens_and_drops_the_trailing_remainder():
    torch.manual_seed(0)
    projector = LinearProjector(input_size=3, output_size=4, downsample_rate=2, hidden_size=5)
    x = torch.randn(2, 7, 3)
    out, lengths = projector(x, torch.tensor([7, 5]))
    stacked = x[:, :6].reshape(2, 3, 6)  # token 6 dropped; group j = tokens 2j, 2j+1 side by side
    expected = projector.linear2(torch.relu(projector.linear1(stacked)))
    torch.testing.assert_close(out, expected)
    assert torch.equal(stacked[0, 1], torch.cat([x[0, 2], x[0, 3]]))
    assert lengths.tolist() == [3, 2]  # the group straddling row 1's end is not one of its embeddings


def test_parameter_names_are_upstreams():
    names = set(dict(LinearProjector(8, 4, hidden_size=6).named_parameters()))
    assert names == {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}


def test_too_few_tokens_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="stacks 5 tokens"):
        LinearProjector(4, 4)(torch.zeros(1, 3, 4), torch.tensor([3]))
    with pytest.raises(ConfigError, match="downsample_rate=0"):
        LinearProjector(4, 4, downsample_rate=0)
