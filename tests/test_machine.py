"""The machine's facts (model.machine): bfloat16 only where the hardware runs it natively, `auto`
in the styleflow command; oneDNN, its GEMM limit, and which convolutions run where."""

import pytest

from conftest import call_cli
from styleflow.model import machine
from styleflow.cli import style, transfer


@pytest.mark.parametrize("native", [True, False])
def test_auto_and_explicit_bfloat16_follow_the_hardware(monkeypatch, native):
    monkeypatch.setattr(machine, "native_bfloat16", lambda: (native, "because"))
    assert machine.resolve_precision("auto") == ("bfloat16" if native else "float32", None)
    precision, note = machine.resolve_precision("bfloat16")
    assert precision == "bfloat16"
    assert (note is None) == native
    if not native:
        assert "slow" in note and "float32" in note and "\n" not in note
    assert machine.resolve_precision("float32") == ("float32", None)


def test_cpu_without_bf16_flags_is_not_native(monkeypatch):
    monkeypatch.setattr(machine, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})
    assert machine.native_bfloat16()[0] is False
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert machine.native_bfloat16() == (True, "the CPU has AMX_BF16")
    monkeypatch.setattr(machine, "gpu_compute_capabilities", lambda: [(7, 5)])
    assert machine.native_bfloat16()[0] is False  # a Turing GPU: emulated there


def test_emulated_bfloat16_prints_one_note(monkeypatch, tiny, tmp_path):
    monkeypatch.setattr(machine, "native_bfloat16", lambda: (False, "no BF16 here"))
    base, ref = tiny
    proc = call_cli("neural_style_transfer.py", base, ref, tmp_path / "r", "--weights", "random",
                    "--iter", "1", "--height", "16", "--precision", "bfloat16")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("note: --precision bfloat16 will be slow here (no BF16 here;")
    assert "bfloat16" in proc.stdout.splitlines()[0]  # it ran in bfloat16 as asked


def test_defaults_float32_in_the_scripts_auto_in_styleflow():
    dummy = ["a", "b", "c"]
    assert transfer.parse(dummy).precision == "float32"
    assert transfer.parse(dummy, prog="styleflow transfer").precision == "auto"
    args = ["--content", "a", "--styles", "b", "--output", "c.png"]
    assert style.parse(args).precision == "float32"
    assert style.parse(args, prog="styleflow style").precision == "auto"


def test_onednn_is_asked_for_unless_the_user_chose_or_tensorflow_is_loaded(monkeypatch):
    import sys

    from styleflow.model import runtime

    monkeypatch.delenv(machine.ONEDNN_VARIABLE, raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert runtime.prefer_onednn() is True
    assert machine.os.environ[machine.ONEDNN_VARIABLE] == "1"
    monkeypatch.setenv(machine.ONEDNN_VARIABLE, "0")  # the user's choice stands
    assert runtime.prefer_onednn() is False
    assert machine.os.environ[machine.ONEDNN_VARIABLE] == "0"
    monkeypatch.delenv(machine.ONEDNN_VARIABLE)
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # too late to matter: say so
    assert runtime.prefer_onednn() is False
    assert machine.ONEDNN_VARIABLE not in machine.os.environ


def test_one_op_at_a_time_is_asked_for_unless_the_user_chose_or_tensorflow_is_loaded(
        monkeypatch):
    import sys

    from styleflow.model import runtime

    name = runtime.INTER_OP_VARIABLE
    monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert runtime.one_op_at_a_time() is True
    assert machine.os.environ[name] == "1"
    monkeypatch.setenv(name, "4")  # the user's choice stands
    assert runtime.one_op_at_a_time() is False
    assert machine.os.environ[name] == "4"
    monkeypatch.delenv(name)
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # too late to matter: say so
    assert runtime.one_op_at_a_time() is False
    assert name not in machine.os.environ


@pytest.mark.slow
@pytest.mark.parametrize("setting, expected", [(None, "True"), ("0", "False")])
def test_importing_styleflow_first_gives_tensorflow_onednn(setting, expected):
    """In a fresh process TensorFlow itself reports oneDNN on after `import styleflow`, on any
    CPU (TensorFlow's own default is off on AVX2-only CPUs), and off when the user said 0."""
    import subprocess
    import sys

    from conftest import ROOT, cli_env, default_signals

    env = cli_env(TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(machine.ONEDNN_VARIABLE, None)
    if setting is not None:
        env[machine.ONEDNN_VARIABLE] = setting
    code = ("import styleflow, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port as port\n"
            "print(port.IsMklEnabled())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          preexec_fn=default_signals)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == expected


def test_gemm_convolutions_below_avx512_on_x86(monkeypatch):
    for name in machine.ISA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "fma"})
    assert machine.onednn_convolves_by_gemm()
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})
    assert machine.onednn_convolves_by_gemm()  # AVX-512F alone is not oneDNN's avx512_core
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", *machine.AVX512_CORE_FLAGS})
    assert not machine.onednn_convolves_by_gemm()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN told to act as on AVX2
    assert machine.onednn_convolves_by_gemm()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert not machine.onednn_convolves_by_gemm()
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(machine, "cpu_flags", set)
    assert not machine.onednn_convolves_by_gemm()


def test_onednn_limit_only_where_it_convolves_by_gemm(monkeypatch):
    monkeypatch.undo()  # the suite's stand-in (conftest) would hide the real function
    monkeypatch.setattr(machine, "intra_op_threads", lambda: 4)
    monkeypatch.setattr(machine, "onednn_enabled", lambda: True)
    monkeypatch.setattr(machine, "onednn_convolves_by_gemm", lambda: True)
    # An x86 CPU without a GPU, whichever machine runs the test:
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(machine, "gpu_visible", lambda: False)
    # float32 convolves through oneDNN's brgemm kernels (frozen_conv): no limit.
    assert machine.transposed_convolutions("float32")
    assert machine.onednn_pass_pixels("float32") is None
    assert machine.onednn_pass_pixels("bfloat16") == machine.gemm_pass_pixels(4)
    monkeypatch.setattr(machine, "onednn_convolves_by_gemm", lambda: False)
    assert machine.onednn_pass_pixels("bfloat16") is None
    monkeypatch.setattr(machine, "onednn_convolves_by_gemm", lambda: True)
    monkeypatch.setattr(machine, "onednn_enabled", lambda: False)
    assert machine.onednn_pass_pixels("bfloat16") is None


@pytest.mark.slow
def test_run_above_the_gemm_limit_finishes(tmp_path):
    """With oneDNN acting as on an AVX2 CPU (ONEDNN_MAX_CPU_ISA) and 8 threads, a 1000x750 image
    is above the GEMM convolutions' limit (about 0.47 MP): through Keras' Conv2D its first
    convolution would crawl through oneDNN's reference loop for minutes; through frozen_conv's
    layers it runs in one pass in seconds."""
    from conftest import make_image, run_cli

    content = make_image(tmp_path / "content.png", (1000, 750), 1)
    style = make_image(tmp_path / "style.png", (200, 200), 2)
    out = tmp_path / "out.png"
    proc = run_cli("neural_style.py", "--content", content, "--styles", style, "--output", out,
                   "--iterations", "1", "--network", "lite", timeout=240,
                   ONEDNN_MAX_CPU_ISA="AVX2", TF_ENABLE_ONEDNN_OPTS="1",
                   TF_NUM_INTRAOP_THREADS="8")
    assert proc.returncode == 0, proc.stderr
    assert "memory: tiles" not in proc.stdout  # one pass, no tiles needed
    assert out.exists()
