"""Errors in the library's words, the command lines' flags in theirs: the library names
parameters as the API spells them; each command rewords the same message with its own flags,
so the command lines' messages stay exactly as they were (and name only flags they have)."""

from __future__ import annotations

import re

import pytest

from conftest import call_cli
from styleflow import Stylizer, StyleflowError
from styleflow.cli import style, transfer
from styleflow.errors import Note, check_choice, exhaustion, reword

TRANSFER = "neural_style_transfer.py"
STYLE = "neural_style.py"


def one_error_line(proc) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_reword_names_parameters_only_where_they_stand_as_words():
    names = {"max_memory": "--max-memory", "tile": "--tile", "width": "--width",
             "height": "--height", "weights": "--network"}
    text = ("tile: 64 px tiles do not fit; use tile=48 or less, a smaller width/height or a "
            "larger max_memory; VGG19 weights stay, or pass weights=PATH")
    params = ("tile", "tile=48", "width/height", "max_memory", "weights=PATH")
    assert reword(text, params, names) == (
        "--tile: 64 px tiles do not fit; use --tile 48 or less, a smaller --width/--height or a "
        "larger --max-memory; VGG19 weights stay, or pass --network PATH")
    # A command without --height names the part it has; unnamed parameters stay as they are.
    assert reword("a smaller width/height", ["width/height"], {"width": "--width"}) == \
        "a smaller --width"
    assert reword("a larger max_memory", ["max_memory"], {}) == "a larger max_memory"
    # Only the listed phrases: a parameter named in prose elsewhere is left alone.
    assert reword("tile: use tile=48", ["tile=48"], names) == "tile: use --tile 48"


def test_each_command_names_the_parameters_its_own_way():
    t, s = transfer.flag_names(), style.flag_names()
    assert t["iterations"] == "--iter" and s["iterations"] == "--iterations"
    assert t["weights"] == "--weights" and s["weights"] == "--network"
    assert t["content_weight"] == "--content_weight" and s["content_weight"] == "--content-weight"
    assert t["max_memory"] == s["max_memory"] == "--max-memory"
    assert "height" in t and "height" not in s


def test_choices_are_refused_in_the_library_s_words():
    for options, message in (
            (dict(pooling="mean"), "pooling must be 'max' or 'avg', not 'mean'"),
            (dict(jit="maybe"), "jit must be 'auto', 'on' or 'off', not 'maybe'"),
            (dict(precision="f16"), "precision must be 'auto', 'float32' or 'bfloat16', not "
                                    "'f16'")):
        with pytest.raises(StyleflowError) as caught:
            Stylizer("random", **options)
        assert str(caught.value) == message
    with pytest.raises(StyleflowError, match="^convolution must be 'a' or 'b', not 'c'$"):
        check_choice("convolution", "c", ("a", "b"))


def test_scales_too_many_library_and_command_words(tiny, tmp_path):
    base, ref = tiny
    said = ("the coarsest size, 1x1 px, is too small for the chosen layers (each side at least "
            "16 px); use fewer scales")
    with pytest.raises(StyleflowError) as caught:
        Stylizer("random").iter_transfer(base, ref, iterations=1, height=32, scales=9)
    assert str(caught.value) == f"scales=9: {said}"
    proc = call_cli(TRANSFER, base, ref, tmp_path / "p", "--iter", "1", "--weights", "random",
                    "--height", "32", "--scales", "9")
    assert one_error_line(proc) == f"{TRANSFER}: error: --scales 9: {said}"


def test_budget_refusal_library_and_command_words(tiny, tmp_path):
    base, ref = tiny
    need = r"a 6750x4500 image needs about [0-9.]+ GB of memory even in the smallest tiles"
    fits = r"use at most about [0-9]+x[0-9]+"
    with pytest.raises(StyleflowError) as caught:
        Stylizer("random").iter_transfer(base, ref, iterations=1, height=4500, max_memory=2)
    assert re.fullmatch(rf"output size: {need} but the budget is 2\.0 GB \(max_memory\); {fits} "
                        r"\(width/height\) or a larger max_memory", str(caught.value))
    with pytest.raises(StyleflowError, match=r"but the budget is 0\.05 GB \(max_memory\)"):
        Stylizer("random").iter_transfer(base, ref, iterations=1, max_memory=0.05)
    proc = call_cli(TRANSFER, base, ref, tmp_path / "p", "--iter", "1", "--weights", "random",
                    "--height", "4500", "--max-memory", "2")
    assert re.fullmatch(rf"{TRANSFER}: error: output size: {need} but the budget is 2\.0 GB "
                        rf"\(--max-memory\); {fits} \(--width/--height\) or a larger "
                        r"--max-memory", one_error_line(proc))
    # neural_style.py has --width only, and says so.
    proc = call_cli(STYLE, "--content", base, "--styles", ref, "--output", tmp_path / "s.png",
                    "--network", "random", "--width", "6000", "--max-memory", "2")
    assert re.search(r"use at most about [0-9]+x[0-9]+ \(--width\) or a larger --max-memory$",
                     one_error_line(proc))


def test_the_size_a_refusal_suggests_is_accepted():
    from styleflow.defaults import FULL_CONTENT_LAYER, FULL_STYLE_LAYERS
    from styleflow.plan import budget

    layers = [FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS]
    for optimiser in ("lbfgs", "adam"):
        with pytest.raises(StyleflowError) as caught:
            budget.choose((30000, 40000), layers, [FULL_CONTENT_LAYER], "float32", optimiser,
                          max_memory=4)
        w, h = map(int, re.search(r"at most about (\d+)x(\d+)", str(caught.value)).groups())
        assert abs(w / h - 4 / 3) < 0.01
        assert budget.choose((h, w), layers, [FULL_CONTENT_LAYER], "float32", optimiser,
                             max_memory=4).need <= 4 * 2**30
        with pytest.raises(StyleflowError):  # and it is the largest: a little more is not
            budget.choose((int(h * 1.02), int(w * 1.02)), layers, [FULL_CONTENT_LAYER],
                          "float32", optimiser, max_memory=4)
    with pytest.raises(StyleflowError, match="no size fits: use a larger max_memory$"):
        budget.choose((3000, 4000), layers, [FULL_CONTENT_LAYER], "float32", "adam",
                      max_memory=0.5)


def test_style_options_library_and_command_words(tiny, tmp_path):
    base, ref = tiny
    stylizer = Stylizer("random")
    for options, words, flags in (
            (dict(style_blend_weights=[0]),
             "style_blend_weights: at least one weight must be above zero",
             "--style-blend-weights: at least one weight must be above zero"),
            (dict(style_scales=[1, 2]), "style_scales: 2 values given for 1 styles",
             "--style-scales: 2 values given for 1 styles")):
        with pytest.raises(StyleflowError) as caught:
            stylizer.iter_stylize(base, [ref], iterations=1, **options)
        assert str(caught.value) == words
        argv = [f"--{k.replace('_', '-')}" if i == 0 else str(v) for k, values in options.items()
                for i, v in enumerate([None, *values])]
        proc = call_cli(STYLE, "--content", base, "--styles", ref, "--output",
                        tmp_path / "s.png", "--network", "random", "--iterations", "1", *argv)
        assert one_error_line(proc) == f"{STYLE}: error: {flags}"


def test_bit_depth_library_and_command_words(tiny, tmp_path):
    base, ref = tiny
    result = Stylizer("random").transfer(base, ref, iterations=1, height=16)
    with pytest.raises(StyleflowError) as caught:
        result.save(tmp_path / "r.jpg", bit_depth=16)
    assert str(caught.value) == (f"output '{tmp_path / 'r.jpg'}': bit_depth=16 needs a .png or "
                                 ".tif file, not '.jpg'")
    proc = call_cli(STYLE, "--content", base, "--styles", ref, "--output", tmp_path / "s.jpg",
                    "--network", "random", "--bit-depth", "16")
    assert one_error_line(proc) == (f"{STYLE}: error: output '{tmp_path / 's.jpg'}': --bit-depth "
                                    "16 needs a .png or .tif file, not '.jpg'")


def test_jit_on_with_a_seed_library_words(tiny):
    from tensorflow.python.framework import config

    base, ref = tiny
    was = config.is_op_determinism_enabled()
    try:
        with pytest.raises(StyleflowError) as caught:
            Stylizer("random", seed=1, jit="on", deterministic=True).iter_transfer(
                base, ref, iterations=1, height=16)
    finally:
        if not was:
            config.disable_op_determinism()
    assert str(caught.value) == ("jit=on: XLA has no deterministic max-pooling gradient, and "
                                 "seed asks for deterministic kernels; use jit=off or auto")


@pytest.mark.parametrize("script, flag", [(TRANSFER, "--weights"), (STYLE, "--network")])
def test_weights_advice_names_the_command_s_own_option(tiny, tmp_path, script, flag):
    base, ref = tiny
    common = ["--weights" if script == TRANSFER else "--network"]
    if script == TRANSFER:
        args = [base, ref, tmp_path / "p", "--iter", "1", "--height", "16"]
    else:
        args = ["--content", base, "--styles", ref, "--output", tmp_path / "s.png",
                "--iterations", "1", "--width", "16"]
    line = one_error_line(call_cli(script, *args, *common, "imagenet"))
    assert line.endswith(f"or use {flag} PATH or {flag} lite") and "weights=" not in line
    proc = call_cli(script, *args, *common, "auto")  # offline: falls back, with a note
    assert proc.returncode == 0, proc.stderr
    note = proc.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].endswith(f"or pass {flag} PATH")


def test_notes_are_strings_that_carry_their_parameters(monkeypatch):
    from styleflow.model import machine

    monkeypatch.setattr(machine, "native_bfloat16", lambda: (False, "no BF16 here"))
    precision, note = machine.resolve_precision("bfloat16")
    assert isinstance(note, Note) and note.startswith("note: precision=bfloat16 will be slow ")
    assert reword(note, note.params, transfer.flag_names()).startswith(
        "note: --precision bfloat16 will be slow here (no BF16 here;")


def test_out_of_memory_is_one_line_in_each_command_s_words(capsys):
    from styleflow.cli import common

    def exhausted():
        raise MemoryError()

    assert common.run_cli("neural_style_transfer.py", exhausted, transfer.flag_names()) == 1
    assert capsys.readouterr().err == ("neural_style_transfer.py: error: out of memory; try a "
                                       "smaller --height/--width\n")
    assert common.run_cli("neural_style.py", exhausted, style.flag_names()) == 1
    assert capsys.readouterr().err == "neural_style.py: error: out of memory; try a smaller " \
                                      "--width\n"
    assert exhaustion(ValueError()) is None

    class ResourceExhaustedError(Exception):
        pass

    def accelerator():
        raise ResourceExhaustedError("OOM when allocating tensor")

    assert str(exhaustion(ResourceExhaustedError())) == (
        "the accelerator ran out of memory; try a smaller height/width or precision=bfloat16")
    assert common.run_cli("neural_style_transfer.py", accelerator, transfer.flag_names()) == 1
    assert capsys.readouterr().err == (
        "neural_style_transfer.py: error: the accelerator ran out of memory; try a smaller "
        "--height/--width or --precision bfloat16\n")


def test_a_failed_batch_pair_names_the_method_s_flags(tiny, tmp_path):
    from styleflow.batch.jobs import Pair
    from styleflow.batch.worker import PairWorker, Settings

    base, ref = tiny
    pair = Pair(str(base), str(ref), str(tmp_path / "o.png"), {"height": 60000})
    names = tuple(transfer.flag_names().items())
    rec = PairWorker(Settings(weights="random", names=names)).run(pair)
    assert rec["status"] == "failed"
    assert rec["error"].endswith("(--width/--height)")
    rec = PairWorker(Settings(weights="random")).run(pair)  # no names: the library's words
    assert rec["error"].endswith("(width/height)")
