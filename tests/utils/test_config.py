"""utils/config.py: every config mistake names the file, the key and what is known."""

import pytest
import torch

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.utils.config import check_keys, read_yaml, resolve_beside, resolve_device, resolve_dtype


def test_read_yaml_names_the_file_for_every_kind_of_mistake(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe a: 1")
    for name, message in [
        ("missing.yaml", "cannot read the decode config"),
        ("bad.yaml", "cannot read the decode config"),
        ("binary.yaml", "cannot read the decode config"),
        ("list.yaml", "a decode config is a YAML mapping of key: value, got list"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            read_yaml(tmp_path / name, "decode config")
        assert str(tmp_path / name) in str(err.value)


def test_check_keys_lists_the_unknown_and_the_known_keys():
    check_keys({"a": 1}, ["a", "b"], "x.yaml")
    with pytest.raises(ConfigError) as err:
        check_keys({"a": 1, "beam": 2}, ["b", "a"], "conf/decode.yaml")
    assert str(err.value) == "conf/decode.yaml: unknown key(s) ['beam']; known keys: ['a', 'b']"


def test_paths_are_resolved_beside_the_file_only_when_they_exist_there(tmp_path):
    (tmp_path / "clap").mkdir()
    assert resolve_beside(tmp_path, "clap") == str(tmp_path / "clap")
    assert resolve_beside(tmp_path, "recipe/conf/clap") == "recipe/conf/clap"
    assert resolve_beside(tmp_path, 3) == 3


def test_auto_device_and_dtype_follow_the_hardware():
    on_gpu = torch.cuda.is_available()
    assert resolve_device("auto") == ("cuda" if on_gpu else "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype must be one of"):
        resolve_dtype("fp16", "cpu")
    if not on_gpu:
        with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
            resolve_device("cuda:0")
