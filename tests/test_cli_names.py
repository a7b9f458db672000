"""One CLI language: every --help parses, old spellings still work, every default is in the help."""

import argparse
import re

import pytest

from hexspec.cli import COMMANDS, build_parser, main


def _subparsers(parser, prefix=()):
    """(command words, parser) of every command and sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subparsers(sub, (*prefix, name))


ALL = list(_subparsers(build_parser()))


def test_every_command_is_reachable():
    assert {words[0] for words, _ in ALL} == set(COMMANDS) & {w[0] for w, _ in ALL}
    assert ("calibrate", "am241") in [w for w, _ in ALL]


@pytest.mark.parametrize("words", [w for w, _ in ALL], ids=" ".join)
def test_every_help_parses(words, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*words, "--help"])
    assert exc.value.code == 0
    assert "usage: hexspec " + " ".join(words) in capsys.readouterr().out


def _shown_default(action):
    d = action.default
    if d is None or d is argparse.SUPPRESS or action.help is argparse.SUPPRESS:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                           argparse._VersionAction)):
        return None
    return d


def test_every_option_with_a_default_shows_it_in_its_help():
    lacking = []
    for words, parser in ALL:
        for action in parser._actions:
            d = _shown_default(action)
            if d is None or not action.option_strings:
                continue
            text = action.help or ""
            m = re.search(r"default[:;]? ([^)]*)", text)
            shown = m.group(1) if m else ""
            if isinstance(d, (list, tuple)):
                if not d:
                    continue        # an empty list (append options): nothing to show
                values = {" ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in d)}
            else:
                values = {f"{d:g}"} if isinstance(d, float) else {str(d)}
            if isinstance(d, float) and d == int(d):
                values.add(str(int(d)))
            if not any(v in shown for v in values):
                lacking.append(f"hexspec {' '.join(words)} {action.option_strings[-1]}: default {d!r}, help {text!r}")
    assert lacking == []


#: options naming an optional input or output: without them nothing happens, no default to show
OPTIONAL_INPUTS = ("output", "png", "config", "calibration", "screenshot", "fits", "lithium_cal", "zmq", "serial",
                   "theta", "geometry", "energy_window", "fit_window", "keep", "save_lithium_cal")


def _required_in_group(parser, action):
    return any(g.required and action in g._group_actions for g in parser._mutually_exclusive_groups)


def test_options_without_a_stored_default_still_say_what_happens_by_default():
    # threshold, bins, charge sharing... default to values the config fills in: the help must say them
    lacking = []
    for words, parser in ALL:
        for action in parser._actions:
            if (not action.option_strings or action.help is argparse.SUPPRESS or action.default is not None
                    or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
                    or action.required or _required_in_group(parser, action) or action.dest in OPTIONAL_INPUTS):
                continue
            if "default" not in (action.help or ""):
                lacking.append(f"hexspec {' '.join(words)} {action.option_strings[-1]}: {action.help!r}")
    assert lacking == []


#: the one name per idea, and the old spellings that must keep working
NAMES = {
    "frames": ("--frames", ["--max-frames", "-n"]),
    "batch_size": ("--batch-size", ["--batch"]),
    "cluster_window": ("--cluster-window", ["--window"]),
    "energy_window_kev": ("--energy-window-kev", ["--window", "--fit-window"]),
}


def _parse(*argv):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("argv, dest, value", [
    (["process", "in.bin", "-o", "o.h5", "--frames", "7"], "max_frames", 7),
    (["process", "in.bin", "-o", "o.h5", "--max-frames", "7"], "max_frames", 7),
    (["process", "in.bin", "-o", "o.h5", "-n", "7"], "max_frames", 7),
    (["calibrate", "am241", "in.bin", "-o", "o.h5", "--frames", "7"], "max_frames", 7),
    (["calibrate", "am241", "in.bin", "-o", "o.h5", "--max-frames", "7"], "max_frames", 7),
    (["record", "sim://", "-o", "o.h5", "--frames", "7"], "frames", 7),
    (["record", "sim://", "-o", "o.h5", "--max-frames", "7"], "frames", 7),
    (["simulate", "-o", "o.h5", "-n", "7"], "frames", 7),
    (["simulate", "-o", "o.h5", "--frames", "7"], "frames", 7),
    (["serve-sim", "-n", "7"], "frames", 7),
    (["simulate", "-o", "o.h5", "-n", "1", "--batch-size", "9"], "batch", 9),
    (["simulate", "-o", "o.h5", "-n", "1", "--batch", "9"], "batch", 9),
    (["serve-sim", "--batch", "9"], "batch", 9),
    (["serve-sim", "--batch-size", "9"], "batch", 9),
    (["process", "in.bin", "-o", "o.h5", "--batch-size", "9"], "batch_size", 9),
    (["process", "in.bin", "-o", "o.h5", "--batch", "9"], "batch_size", 9),
    (["calibrate", "am241", "in.bin", "-o", "o.h5", "--batch", "9"], "batch_size", 9),
    (["process", "in.bin", "-o", "o.h5", "--cluster-window", "5"], "window", 5),
    (["process", "in.bin", "-o", "o.h5", "--window", "5"], "window", 5),
    (["record", "sim://", "-o", "o.h5", "--window", "5"], "window", 5),
    (["fit", "c.h5", "-o", "o.h5", "--energy-window-kev", "1", "2"], "window", [1.0, 2.0]),
    (["fit", "c.h5", "-o", "o.h5", "--window", "1", "2"], "window", [1.0, 2.0]),
    (["sparam", "c.h5", "-o", "o.h5", "--energy-window-kev", "1", "2"], "fit_window", [1.0, 2.0]),
    (["sparam", "c.h5", "-o", "o.h5", "--fit-window", "1", "2"], "fit_window", [1.0, 2.0]),
])
def test_new_names_and_old_spellings_give_the_same_option(argv, dest, value):
    assert getattr(_parse(*argv), dest) == value


def test_old_spellings_are_hidden_from_the_help(capsys):
    for words, hidden in ((["process"], ["--max-frames", "--batch ", "--window "]), (["fit"], ["--window "]),
                          (["sparam"], ["--fit-window"]), (["simulate"], ["--batch "]),
                          (["calibrate", "am241"], ["--max-frames"])):
        with pytest.raises(SystemExit):
            main([*words, "--help"])
        out = capsys.readouterr().out
        for h in hidden:
            assert h not in out, (words, h)


def test_fit_still_requires_its_energy_window(capsys):
    with pytest.raises(SystemExit) as exc:
        _parse("fit", "c.h5", "-o", "o.h5")
    assert exc.value.code == 2
    assert "--energy-window-kev" in capsys.readouterr().err


def test_defaults_are_the_values_the_commands_use():
    a = _parse("process", "in.bin", "-o", "o.h5")
    assert a.batch_size == 1000 and a.max_frames is None and a.window is None
    assert _parse("simulate", "-o", "o.h5", "-n", "1").batch == 1000
