"""utils/fileio.py: outputs appear whole or not at all, and never over an input."""

import errno
import os
from pathlib import Path

import pytest

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.utils.fileio import atomic_output, refuse_overwrite, write_atomically, write_kaldi_text


def test_kaldi_text_is_written_whole_with_collapsed_white_space(tmp_path):
    write_kaldi_text(tmp_path / "sub" / "text", [("a", "a  dog\tbarks\n"), ("b", "  ")])
    assert (tmp_path / "sub" / "text").read_text() == "a a dog barks\nb\n"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["text"]


def test_a_failing_producer_leaves_the_old_file_and_no_sibling(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("before\n")

    def lines():
        yield "half"
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError):
        write_atomically(target, lines())
    assert target.read_text() == "before\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_an_input_error_inside_the_block_keeps_its_own_file_name(tmp_path):
    with pytest.raises(FileNotFoundError) as err, atomic_output(tmp_path / "out") as f:
        f.write("x")
        open(tmp_path / "missing-input")
    assert err.value.filename == str(tmp_path / "missing-input")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_names_the_output_and_leaves_nothing(full_dir):
    target = full_dir / "captions.tsv"
    with pytest.raises(OSError) as err:
        write_atomically(target, ["x" * 100_000])
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert "cannot write" in err.value.strerror
    assert sorted(p.name for p in full_dir.iterdir()) == ["filler"]


def test_a_read_only_folder_names_the_output_and_leaves_nothing(read_only_dir):
    with pytest.raises(OSError) as err:
        write_atomically(read_only_dir / "text", ["a b"])
    assert err.value.filename == str(read_only_dir / "text")
    assert list(read_only_dir.iterdir()) == []


def test_refuse_overwrite_catches_same_files_links_and_inputs_inside_replaced_folders(tmp_path):
    scp = tmp_path / "x.scp"
    scp.write_text("a a.wav\n")
    os.link(scp, tmp_path / "hard.scp")
    (tmp_path / "sym.scp").symlink_to(scp)
    for output in (scp, tmp_path / "hard.scp", tmp_path / "sym.scp", tmp_path / "." / "x.scp"):
        with pytest.raises(ConfigError, match="this output is also an input"):
            refuse_overwrite([output], [scp])
    with pytest.raises(ConfigError, match="replaced as a whole"):
        refuse_overwrite([], [tmp_path / "data" / "m.jsonl"], replaced_dirs=[tmp_path / "data"])
    refuse_overwrite([tmp_path / "x.ark", None], [scp, None], replaced_dirs=[tmp_path / "data2"])
    assert Path(scp).read_text() == "a a.wav\n"
