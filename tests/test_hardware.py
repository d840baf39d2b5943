"""bfloat16 only where the hardware runs it natively; `auto` in the styleflow command."""

import pytest

from conftest import call_cli
from styleflow import hardware
from styleflow.cli import style, transfer


@pytest.mark.parametrize("native", [True, False])
def test_auto_and_explicit_bfloat16_follow_the_hardware(monkeypatch, native):
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: (native, "because"))
    assert hardware.resolve_precision("auto") == ("bfloat16" if native else "float32", None)
    precision, note = hardware.resolve_precision("bfloat16")
    assert precision == "bfloat16"
    assert (note is None) == native
    if not native:
        assert "slow" in note and "float32" in note and "\n" not in note
    assert hardware.resolve_precision("float32") == ("float32", None)


def test_cpu_without_bf16_flags_is_not_native(monkeypatch):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})
    assert hardware.native_bfloat16()[0] is False
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert hardware.native_bfloat16() == (True, "the CPU has AMX_BF16")
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [(7, 5)])
    assert hardware.native_bfloat16()[0] is False  # a Turing GPU: emulated there


def test_emulated_bfloat16_prints_one_note(monkeypatch, tiny, tmp_path):
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: (False, "no BF16 here"))
    base, ref = tiny
    proc = call_cli("neural_style_transfer.py", base, ref, tmp_path / "r", "--weights", "random",
                    "--iter", "1", "--height", "16", "--precision", "bfloat16")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bfloat16 will be slow here (no BF16 here" in lines[0]
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

    monkeypatch.delenv(hardware.ONEDNN_VARIABLE, raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert hardware.prefer_onednn() is True
    assert hardware.os.environ[hardware.ONEDNN_VARIABLE] == "1"
    monkeypatch.setenv(hardware.ONEDNN_VARIABLE, "0")  # the user's choice stands
    assert hardware.prefer_onednn() is False
    assert hardware.os.environ[hardware.ONEDNN_VARIABLE] == "0"
    monkeypatch.delenv(hardware.ONEDNN_VARIABLE)
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # too late to matter: say so
    assert hardware.prefer_onednn() is False
    assert hardware.ONEDNN_VARIABLE not in hardware.os.environ


@pytest.mark.parametrize("setting, expected", [(None, "True"), ("0", "False")])
def test_importing_styleflow_first_gives_tensorflow_onednn(setting, expected):
    """In a fresh process TensorFlow itself reports oneDNN on after `import styleflow`, on any
    CPU (TensorFlow's own default is off on AVX2-only CPUs), and off when the user said 0."""
    import subprocess
    import sys

    from conftest import ROOT, cli_env, default_signals

    env = cli_env(TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(hardware.ONEDNN_VARIABLE, None)
    if setting is not None:
        env[hardware.ONEDNN_VARIABLE] = setting
    code = ("import styleflow, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port as port\n"
            "print(port.IsMklEnabled())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          preexec_fn=default_signals)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == expected
