"""`styleflow batch`: grid and manifest forms, per-row overrides, bad rows, crash and resume."""

import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from conftest import assert_clean_error, call_cli, child, make_image, run_cli
from styleflow.batch.status import read_status

QUICK = ["--weights", "random", "--iter", "1", "--height", "24"]


@pytest.fixture
def pictures(tmp_path):
    """Contents in in/, styles in in/styles/ (a folder given as --contents holds only them)."""
    folder = tmp_path / "in"
    (folder / "styles").mkdir(parents=True)
    for i, size in enumerate([(48, 32), (32, 48)]):
        make_image(folder / f"c{i}.png", size, i)
    for i in range(2):
        make_image(folder / "styles" / f"s{i}.jpg", (40, 40), 10 + i)
    make_image(tmp_path / "c0.png", (48, 32), 7)  # a second c0, elsewhere
    return folder


@pytest.mark.slow
def test_grid_of_folders_and_globs(pictures, tmp_path):
    out = tmp_path / "out"
    proc = call_cli("styleflow", "batch", "--contents", pictures, "--styles",
                    str(pictures / "styles" / "s*.jpg"), "--out", out, *QUICK)
    assert proc.returncode == 0, proc.stderr
    made = sorted(p.name for p in out.glob("*.png"))
    assert made == ["c0_s0.png", "c0_s1.png", "c1_s0.png", "c1_s1.png"]
    assert Image.open(out / "c0_s1.png").size == (36, 24)
    assert Image.open(out / "c1_s0.png").size == (16, 24)
    records = read_status(out / "styleflow-status.jsonl")
    assert [r["status"] for r in records] == ["done"] * 4
    assert all(r["loss"] > 0 and r["seconds"] > 0 for r in records)
    assert proc.stdout.strip().splitlines()[-1].startswith("batch: 4 done, 0 skipped, 0 failed")


@pytest.mark.slow
def test_manifest_rows_override_options_and_a_bad_row_fails_alone(pictures, tmp_path):
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "content,style,output,height,iterations,style_weight\n"
        "in/c0.png,in/styles/s0.jpg,out/a.png,,,\n"
        "in/c0.png,in/styles/s0.jpg,out/b.png,16,2,\n"
        "in/missing.png,in/styles/s0.jpg,out/c.png,,,\n"
        "in/c0.png,in/styles/s1.jpg,out/d.png,,,abc\n"
        "in/c1.png,in/styles/s1.jpg,out/e.png,,,100\n")
    proc = call_cli("styleflow", "batch", "--manifest", manifest, *QUICK,
                    "--iteration-images")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    out = tmp_path / "out"
    assert Image.open(out / "a.png").size == (36, 24)
    assert Image.open(out / "b.png").size == (24, 16)  # height 16 for this row only
    assert sorted(p.name for p in out.glob("b_at_iteration_*")) == \
        ["b_at_iteration_00.png", "b_at_iteration_01.png"]  # 2 iterations for this row
    assert [p.name for p in out.glob("a_at_iteration_*")] == ["a_at_iteration_00.png"]
    assert not (out / "c.png").exists() and not (out / "d.png").exists()
    assert (out / "e.png").exists()  # the rows after the bad ones ran
    records = {r["output"].rsplit("/", 1)[-1]: r
               for r in read_status(tmp_path / "pairs.status.jsonl")}
    assert [records[k]["status"] for k in "abcde" for k in [f"{k}.png"]] == \
        ["done", "done", "failed", "failed", "done"]
    assert "missing.png': file not found" in records["c.png"]["error"]
    assert "row 5" in records["d.png"]["error"] and "'abc' is not a number" in \
        records["d.png"]["error"]
    # style_weight 100 on e raised its style term, hence its loss, far above a's.
    assert records["e.png"]["loss"] > 10 * records["a.png"]["loss"]
    assert "2 failed" in proc.stdout.strip().splitlines()[-1]
    # A failed pair is an error: said on stderr, the others' lines on stdout.
    assert [line.split()[4] for line in proc.stderr.splitlines()] == \
        [str(out / "c.png"), str(out / "d.png")]
    assert all(line.startswith("styleflow batch: [") and " failed " in line
               for line in proc.stderr.splitlines())
    assert not [line for line in proc.stdout.splitlines() if " failed " in line
                and line.startswith("[")]


@pytest.mark.slow
def test_a_folder_at_an_output_fails_its_pair_and_an_empty_file_is_redone(pictures, tmp_path):
    out = tmp_path / "out"
    (out / "c0_s0.png").mkdir(parents=True)  # not a picture: fails, without running
    (out / "c0_s1.png").write_bytes(b"")  # what a crash might leave: done again
    proc = call_cli("styleflow", "batch", "--contents", pictures / "c0.png", "--styles",
                    pictures / "styles", "--out", out, *QUICK)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    records = {r["output"].rsplit("/", 1)[-1]: r
               for r in read_status(out / "styleflow-status.jsonl")}
    assert records["c0_s0.png"]["status"] == "failed"
    assert "is a directory, not a file" in records["c0_s0.png"]["error"]
    assert records["c0_s0.png"]["seconds"] < 1  # refused up front
    assert records["c0_s1.png"]["status"] == "done"
    assert Image.open(out / "c0_s1.png").size == (36, 24)
    assert (out / "c0_s0.png").is_dir()


def test_adam_method_takes_style_options(pictures, tmp_path):
    out = tmp_path / "out"
    proc = call_cli("styleflow", "batch", "--method", "adam", "--contents", pictures / "c0.png",
                    "--styles", pictures / "styles" / "s0.jpg", "--out", out, "--network", "random",
                    "--iterations", "3", "--width", "24", "--preserve-colors")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out / "c0_s0.png").size == (24, 16)


@pytest.mark.parametrize("args,needles", [
    (["--manifest", "{m}", "--out", "x"], ["--manifest", "either"]),
    (["--contents", "{c}", "--out", "x"], ["--contents", "all three"]),
    (["--manifest", "{m}", "--log", "x.csv"], ["--log", "not available in a batch"]),
    (["--manifest", "{bad}"], ["unknown column 'stlye_weight'"]),
    (["--manifest", "{whole}"], ["column 'weights' applies to the whole batch"]),
    (["--manifest", "{m}", "--iter", "0"], ["--iter", "greater than zero"]),
    (["--contents", "{c}", "{c2}", "--styles", "{c}", "--out", "{out}"], ["two pairs write"]),
    (["--manifest", "{header}"], ["--manifest", "has a header but no rows"]),
    (["--manifest", "{columns}"], ["--manifest", "(missing: style)"]),
])
def test_batch_usage_errors_are_one_line(args, needles, pictures, tmp_path):
    (tmp_path / "m.csv").write_text("content,style,output\nin/c0.png,in/styles/s0.jpg,o.png\n")
    (tmp_path / "bad.csv").write_text("content,style,output,stlye_weight\na,b,c,1\n")
    (tmp_path / "whole.csv").write_text("content,style,output,weights\na,b,c,lite\n")
    (tmp_path / "header.csv").write_text("content,style,output\n")
    (tmp_path / "columns.csv").write_text("content,output\na,c\n")
    values = dict(m=tmp_path / "m.csv", bad=tmp_path / "bad.csv", whole=tmp_path / "whole.csv",
                  header=tmp_path / "header.csv", columns=tmp_path / "columns.csv",
                  c=pictures / "c0.png", c2=tmp_path / "c0.png", out=tmp_path / "out")
    proc = call_cli("styleflow", "batch", *[a.format(**values) for a in args])
    assert_clean_error(proc, *needles)
    assert not (tmp_path / "o.png").exists()


def batch_command(pictures, out, iterations="40"):
    return [sys.executable, "-m", "styleflow", "batch", "--contents", str(pictures),
            "--styles", str(pictures / "styles" / "s0.jpg"), "--out", str(out), "--weights",
            "random", "--iter", iterations, "--height", "32", "--seed", "1"]


@pytest.mark.slow
def test_kill_9_then_rerun_finishes_only_what_is_missing(pictures, tmp_path):
    # A quick first pair and a slow second one: kill -9 lands while the second runs.
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("content,style,output,iterations\n"
                        "in/c0.png,in/styles/s0.jpg,out/a.png,1\n"
                        "in/c1.png,in/styles/s0.jpg,out/b.png,8\n"
                        "in/c0.png,in/styles/s1.jpg,out/c.png,1\n")
    out = tmp_path / "out"
    status = tmp_path / "pairs.status.jsonl"
    command = ["batch", "--manifest", str(manifest), "--weights", "random", "--height", "32",
               "--seed", "1"]

    def first_recorded():  # the image is renamed into place first, then its record written
        return status.exists() and '"done"' in status.read_text()

    with child([sys.executable, "-m", "styleflow", *command], stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL) as proc:
        deadline = time.time() + 180
        while not first_recorded() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert first_recorded() and proc.poll() is None, "killed too late"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    first = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.png")}
    assert list(first) == ["a.png"]
    rerun = run_cli("styleflow", *command)
    assert rerun.returncode == 0, rerun.stderr
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["a.png", "b.png", "c.png"]
    for name in names:
        with Image.open(out / name) as img:
            img.load()  # every output is a whole, valid image
    for name, (data, mtime) in first.items():  # finished before the kill: not redone
        assert (out / name).read_bytes() == data and (out / name).stat().st_mtime_ns == mtime
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    records = read_status(status)
    assert [r["status"] for r in records] == ["done", "skipped", "done", "done"]
    assert all(set(r) >= {"content", "style", "output", "status", "seconds", "loss", "error"}
               for r in records)


@pytest.mark.slow
def test_sigint_abandons_the_pair_in_progress_and_resumes(pictures, tmp_path):
    out = tmp_path / "out"
    with child(batch_command(pictures, out, iterations="1000"), stdout=subprocess.PIPE,
               stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.time() + 120
        while not (out / "styleflow-status.jsonl").exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # the first pair is optimising
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "abandoned (no file written)" in err and "Traceback" not in err
    assert not list(out.glob("*.png")) and not [p for p in out.iterdir()
                                                if p.name.startswith(".")]


def test_the_bar_runs_over_pairs_with_the_current_pair_s_progress(monkeypatch, capsys):
    from styleflow.batch.jobs import Pair
    from styleflow.cli import batch, recorder

    monkeypatch.setattr(recorder, "choose_mode", lambda quiet, stream: recorder.BAR)
    report = batch.Report(2, quiet=False)
    pair = Pair("c.png", "s.png", "out/c_s.png")
    report.start(pair)
    report.progress(3, 10)
    report.bar.refresh()
    report.done(pair, {"status": "done", "seconds": 1.5, "loss": 2.0, "error": None})
    report.finish(report.summary())
    out = capsys.readouterr().out
    assert "c_s.png 3/10" in out  # the current pair's iterations, beside the bar
    assert "1/2 pairs" in out and "[1/2] done out/c_s.png (1.5s, loss 2.0000e+00)" in out
    assert out.strip().splitlines()[-1].startswith("batch: 1 done, 0 skipped, 0 failed of 2")


def _manifest(path, *rows):
    path.write_text("content,style,output\n" + "".join(f"{row}\n" for row in rows))
    return path


def test_the_status_log_is_never_the_manifest_an_input_or_an_output(pictures, tmp_path):
    manifest = _manifest(tmp_path / "m.csv", "in/c0.png,in/styles/s0.jpg,out/a.png")
    before = manifest.read_bytes()
    for status, needle in ((manifest, "is the manifest"),
                           (pictures / "c0.png", "is an input of row 2"),
                           (tmp_path / "out" / "a.png", "is an output of row 2")):
        proc = call_cli("styleflow", "batch", "--manifest", manifest, "--status", status, *QUICK)
        assert_clean_error(proc, "--status", needle)
    assert manifest.read_bytes() == before and not (tmp_path / "out").exists()
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(bytes(range(128, 256)))
    proc = call_cli("styleflow", "batch", "--manifest", manifest, "--status", junk, *QUICK)
    assert_clean_error(proc, "--status", "not a status log")
    # Text that is not a status log (a note, another manifest, /etc/hostname) is not appended
    # to: it was, a record per pair.
    for text in ("vm\n", "content,style,output\n", '{"time": "x"}\n[1, 2]\n'):
        other = tmp_path / "other.txt"
        other.write_text(text)
        proc = call_cli("styleflow", "batch", "--manifest", manifest, "--status", other, *QUICK)
        assert_clean_error(proc, "--status", "not a status log (line ")
        assert other.read_text() == text
    proc = call_cli("styleflow", "batch", "--manifest", manifest, "--weights", tmp_path / "no.h5",
                    "--iter", "1", "--height", "24")
    assert_clean_error(proc, "no.h5")  # once, before any pair


@pytest.mark.slow
def test_rows_that_cannot_run_fail_even_where_their_output_exists(pictures, tmp_path):
    (tmp_path / "out").mkdir()
    make_image(tmp_path / "out" / "b.png", (24, 24), 3)  # a finished-looking output
    manifest = tmp_path / "m.csv"
    manifest.write_text("content,style,output,iterations\n"
                        "in/c0.png,in/styles/s0.jpg,in/c0.png,\n"  # the output is the input
                        "in/c0.png,in/styles/s0.jpg,out/b.png,2.5\n"  # bad row, output exists
                        "in/c0.png,in/styles/s0.jpg,,\n"
                        "in/c1.png,in/styles/s0.jpg,,\n"  # two empty outputs: each fails
                        "\n"
                        'in/c1.png,in/styles/s1.jpg,"out/n\x00.png",\n'
                        "in/c1.png,in/styles/s1.jpg,out/ok.png,\n")
    before = (pictures / "c0.png").read_bytes()
    proc = call_cli("styleflow", "batch", "--manifest", manifest, *QUICK)
    assert proc.returncode == 1
    records = read_status(tmp_path / "m.status.jsonl")
    statuses = [r["status"] for r in records]
    assert statuses.count("failed") == 5 and statuses.count("done") == 1, records
    assert (pictures / "c0.png").read_bytes() == before
    errors = " | ".join(r["error"] or "" for r in read_status(tmp_path / "m.status.jsonl"))
    assert "is the input file" in errors and "row 3: column 'iterations' (--iter)" in errors
    # Numbered by the file's lines: the blank line 6 counts.
    assert "row 7: the 'output' cell holds a line break or a NUL" in errors


def test_iteration_images_never_replace_an_input_or_another_pairs_file(pictures, tmp_path):
    (tmp_path / "it").mkdir()
    (tmp_path / "it" / "v_at_iteration_00.png").write_bytes((pictures / "c0.png").read_bytes())
    manifest = _manifest(tmp_path / "m.csv", "it/v_at_iteration_00.png,in/styles/s0.jpg,it/v.png")
    proc = call_cli("styleflow", "batch", "--manifest", manifest, "--iteration-images", *QUICK)
    assert proc.returncode == 1
    [rec] = read_status(tmp_path / "m.status.jsonl")
    assert rec["status"] == "failed" and "is the input file" in rec["error"]
    assert (tmp_path / "it" / "v_at_iteration_00.png").read_bytes() == \
        (pictures / "c0.png").read_bytes()
    manifest = _manifest(tmp_path / "k.csv", "in/c0.png,in/styles/s0.jpg,k/k.png",
                         "in/c1.png,in/styles/s0.jpg,k/k_at_iteration_00.png")
    proc = call_cli("styleflow", "batch", "--manifest", manifest, "--iteration-images", *QUICK)
    assert_clean_error(proc, "two pairs write", "k_at_iteration_00.png")


@pytest.mark.slow
def test_columns_override_the_command_line_both_ways(pictures, tmp_path):
    """A false switch column turns the command line's switch off for its row; a photo row's
    height replaces the command line's width (the two exclude each other); batch-wide
    settings are refused as columns; OUT among the contents is no input on a rerun."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("content,style,output,faithful\nin/c0.png,in/styles/s0.jpg,a.png,no\n")
    proc = call_cli("styleflow", "batch", "--manifest", manifest, "--faithful", *QUICK)
    assert proc.returncode == 0, proc.stderr
    [rec] = read_status(tmp_path / "m.status.jsonl")
    assert rec["options"]["faithful"] is False
    manifest.write_text("content,style,output,height\nin/c0.png,in/styles/s0.jpg,p.png,40\n")
    proc = call_cli("styleflow", "batch", "--manifest", manifest, "--method", "photo",
                    "--width", "32", "--iterations", "1", "--weights", "random")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "p.png").size[1] == 40
    manifest.write_text("content,style,output,bit_depth\nin/c0.png,in/styles/s0.jpg,b.png,16\n")
    proc = call_cli("styleflow", "batch", "--manifest", manifest, *QUICK)
    assert_clean_error(proc, "column 'bit_depth' applies to the whole batch")
    for _ in range(2):
        proc = call_cli("styleflow", "batch", "--contents", pictures, "--styles",
                        pictures / "styles" / "s0.jpg", "--out", pictures, *QUICK)
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in pictures.glob("*_s0.png")) == ["c0_s0.png", "c1_s0.png"]


def test_a_failed_rows_line_names_its_row_and_headers_may_be_spaced(pictures, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("content, style , output\nin/missing.png,in/styles/s0.jpg,a.png\n")
    proc = call_cli("styleflow", "batch", "--manifest", manifest, *QUICK)
    assert proc.returncode == 1
    assert "(row 2: base image '" in proc.stderr and "missing.png': file not found" in \
        proc.stderr, proc.stderr


def test_a_rows_bad_value_names_its_column_and_an_open_quote_the_lines_it_took(tmp_path):
    from styleflow.batch.jobs import manifest_pairs
    from styleflow.cli.batch import row_parser

    columns_known, options = row_parser("lbfgs", [])
    manifest = tmp_path / "m.csv"
    manifest.write_text("content,style,output,iterations,style_weight\n"
                        "a.png,s.png,o1.png,2.5,\n"
                        "a.png,s.png,o2.png,,abc\n"
                        "a.png,s.png,o3.png,3,2\n"
                        "\n"
                        '"a.png,s.png,o4.png,,\n'
                        "b.png,s.png,o5.png,,\n")
    errors = [pair.error for pair in manifest_pairs(str(manifest), {}, options, columns_known)]
    assert errors[0].startswith("row 2: column 'iterations' (--iter): ") and "'2.5'" in errors[0]
    assert errors[1].startswith("row 3: column 'style_weight' (--style_weight): ")
    assert errors[2] is None
    # Python's csv reads an unclosed quote to the file's end, as one cell: said so.
    assert len(errors) == 4 and errors[3].startswith(
        "row 7: the 'content' cell holds a line break"), errors
    assert "a quote left open after line 4 takes in every line to the file's end, line 7" \
        in errors[3]


def test_a_status_log_with_lines_torn_by_killed_runs_is_read_and_extended(tmp_path):
    """A run killed mid-record leaves a torn line, which the next run ends before appending
    (StatusLog): mid-file or last, it is skipped, and the log is still a status log."""
    from styleflow.batch.status import StatusLog

    log = tmp_path / "s.jsonl"
    status = StatusLog(log, run="first")
    status.write({"output": "a.png", "status": "done"})
    status.close()
    log.write_text(log.read_text() + '{"time": "2026-12-06T10:00:00Z", "run": "sec')  # killed
    status = StatusLog(log, run="third")
    status.write({"output": "b.png", "status": "failed"})
    status.close()
    log.write_text(log.read_text() + '{"time": "2026')  # killed again
    assert [(r["run"], r["output"], r["status"]) for r in read_status(log)] == [
        ("first", "a.png", "done"), ("third", "b.png", "failed")]
    assert len(log.read_text().splitlines()) == 4
