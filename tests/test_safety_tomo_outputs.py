"""The tomography and correlation commands guard their outputs like every other command
(hexspec.io.outputs, issue 17 items 1 and 2): an existing output is refused without --force,
with the one message every command gives; an input named as an output (the same path or a
hard link) is refused even with --force. The checks run before any input is read, so the
inputs here are files of known bytes that must come out unchanged."""

import hashlib
import os

import pytest

from hexspec.cli import main


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def files(tmp_path):
    """Input files of distinct known contents (never valid: no command may get as far as reading them)."""
    made = {}
    for name in ("vol.h5", "seg.h5", "proj.h5", "xct.h5", "c0.h5"):
        path = tmp_path / name
        path.write_bytes(name.encode() * 100)
        made[name] = path
    return made


def commands(files, out):
    """Each command with ``out`` as its output."""
    return {
        "tomo segment": ["tomo", "segment", str(files["vol.h5"]), "-o", str(out)],
        "tomo quantify": ["tomo", "quantify", str(files["seg.h5"]), "-o", str(out)],
        "tomo reconstruct": ["tomo", "reconstruct", str(files["proj.h5"]), "-o", str(out), "--png",
                             str(out) + ".png"],
        "correlate": ["correlate", "--xct", str(files["xct.h5"]), "--compton", str(files["c0.h5"]),
                      "-o", str(out)],
    }


def existing_output(tmp_path, name):
    """The file each command would write first, already there with known contents."""
    out = tmp_path / "out"
    target = {"tomo segment": out, "tomo reconstruct": out, "tomo quantify": tmp_path / "out.csv",
              "correlate": out / "report.html"}[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("keep me")
    return out, target


@pytest.mark.parametrize("name", ["tomo segment", "tomo quantify", "tomo reconstruct", "correlate"])
def test_an_existing_output_is_refused_without_force_with_the_shared_message(files, tmp_path, capsys, name):
    out, target = existing_output(tmp_path, name)
    before = {k: digest(p) for k, p in files.items()}
    assert main(commands(files, out)[name]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].split(" error: ", 1)[1] == f"-o {target}: already exists; give --force (or --overwrite) to replace it"
    assert target.read_text() == "keep me"
    assert {k: digest(p) for k, p in files.items()} == before


@pytest.mark.parametrize("option", ["--force", "--overwrite"])
@pytest.mark.parametrize("name,input_name", [("tomo segment", "vol.h5"), ("tomo quantify", "seg.h5"),
                                             ("tomo reconstruct", "proj.h5")])
def test_an_input_given_as_output_through_a_hard_link_is_refused_even_with_force(files, tmp_path, capsys, name,
                                                                                 input_name, option):
    link = tmp_path / "link"
    if name == "tomo quantify":         # its -o is a prefix: the first file it writes is PREFIX.csv
        os.link(files[input_name], tmp_path / "link.csv")
    else:
        os.link(files[input_name], link)
    before = digest(files[input_name])
    assert main(commands(files, link)[name] + [option]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would overwrite the input" in err[0] and f"the same file as {files[input_name]}" in err[0]
    assert digest(files[input_name]) == before


def test_correlate_refuses_an_output_directory_holding_one_of_its_inputs_even_with_force(files, tmp_path, capsys):
    out = tmp_path / "corr"
    out.mkdir()
    os.link(files["c0.h5"], out / "correlation.h5")     # the Compton input, under an output's name
    before = digest(files["c0.h5"])
    assert main(commands(files, out)["correlate"] + ["--force"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would overwrite the input" in err[0]
    assert digest(files["c0.h5"]) == before
