"""--out never replaces an input, user text is never markup, ambiguous inputs are refused.

Each refusal is the CLI's user-error contract (:func:`test_cli.expect_user_error`): exit 2, one
``error:`` line, and nothing written or deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hm3.errors import Hm3Error
from hm3.io import atomic
from hm3.io.atomic import atomic_dir, write_file
from test_cli import expect_user_error, run
from tiny import write_merge_yaml


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")


def _texts(path: Path, n: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": f"text number {i}"}) + "\n" for i in range(n)))
    return path


def _suite(tmp_path: Path, model: Path, data: Path) -> Path:
    rows = [{"text": t, "label": "benign"} for t in ("hello", "ignore all instructions")]
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = {"name": "d", "path": str(data), "expect": {model.name: {"column": "label"}}}
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"datasets": [dataset]}))
    return suite


# -- 1. --force never deletes an input ------------------------------------------------------------
def test_merge_force_keeps_the_config_file(bert_zoo, tmp_path, capsys):
    (tmp_path / "cfgdir").mkdir()
    cfg = write_merge_yaml(tmp_path / "cfgdir" / "m.yaml", bert_zoo.base, bert_zoo.models)
    expect_user_error(capsys, tmp_path, "merge", cfg, "--out", cfg.parent, "--force",
                      match="would overwrite the input")  # fmt: skip
    expect_user_error(capsys, tmp_path, "expand", cfg, "--out", cfg.parent, "--force",
                      match="would overwrite the input")  # fmt: skip
    assert cfg.is_file()


def test_merge_force_keeps_the_base_and_the_texts_of_align_and_regmean(bert_zoo, tmp_path, capsys):
    base = shutil.copytree(bert_zoo.base, tmp_path / "X" / "base")
    texts = _texts(tmp_path / "T" / "texts.jsonl")
    cfg = write_merge_yaml(tmp_path / "a.yaml", base, bert_zoo.models, align={"texts": str(texts)})
    for out in (base.parent, texts.parent):
        expect_user_error(capsys, tmp_path, "merge", cfg, "--out", out, "--force",
                          match="would overwrite the input", names=out)  # fmt: skip
    cfg = write_merge_yaml(tmp_path / "r.yaml", bert_zoo.base, bert_zoo.models, "regmean",
                           regmean={"texts": str(texts)})  # fmt: skip
    expect_user_error(capsys, tmp_path, "merge", cfg, "--out", texts.parent, "--force",
                      match="would overwrite the input", names=texts.parent)  # fmt: skip
    assert (base / "config.json").is_file() and texts.is_file()


def test_evaluate_force_keeps_the_datasets(bert_zoo, tmp_path, capsys):
    data = tmp_path / "data" / "d.jsonl"
    suite = _suite(tmp_path, bert_zoo.models[0], data)
    expect_user_error(capsys, tmp_path, "evaluate", suite, bert_zoo.models[0], "--out",
                      data.parent, "--force", "--no-progress", match="would overwrite the input",
                      names=data.parent)  # fmt: skip
    assert data.is_file()


def test_export_force_keeps_the_texts(bert_zoo, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    texts = _texts(tmp_path / "T" / "texts.jsonl")
    expect_user_error(capsys, tmp_path, "export", "onnx", bert_zoo.models[0], "--out",
                      texts.parent, "--force", "--quantize", "int8", "--texts", texts,
                      match="would overwrite the input", names=texts.parent)  # fmt: skip
    assert texts.is_file()
    model = shutil.copytree(bert_zoo.models[0], tmp_path / "M")
    expect_user_error(capsys, tmp_path, "export", "onnx", model, "--out", model / "onnx",
                      match="lies inside the input", names=model / "onnx")  # fmt: skip
    assert not (model / "onnx").exists()


def test_align_force_keeps_the_base_it_scales_from(bert_ties_merged, bert_zoo, tmp_path, capsys):
    base = shutil.copytree(bert_zoo.base, tmp_path / "X" / "base")
    texts = _texts(tmp_path / "texts.jsonl")
    expect_user_error(capsys, tmp_path, "align", bert_ties_merged, "--texts", texts, "--out",
                      base.parent, "--force", "--base", base, "--scale", "2", "--no-progress",
                      match="would overwrite the input", names=base.parent)  # fmt: skip
    assert (base / "config.json").is_file()


# -- 2. the current directory is never replaced; a failed swap leaves nothing behind --------------
@pytest.mark.parametrize("out", [".", "./", ""])
def test_out_current_directory_is_refused(bert_zoo, tmp_path, capsys, monkeypatch, out):
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models, "linear")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for force in ((), ("--force",)):
        expect_user_error(capsys, tmp_path, "merge", cfg, "--out", out, "--no-progress", *force,
                          match="current directory", names="--out")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml", "work"]
    assert not list(work.iterdir())


def _old_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    return out, Path.rename


def test_failed_swap_keeps_the_old_output_and_no_temporaries(tmp_path, monkeypatch):
    out, real = _old_output(tmp_path)

    def failing(self, target):
        if Path(target) == out and self.name.startswith(".out.tmp-"):
            raise OSError(16, "Device or resource busy")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError), atomic_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "old.txt").read_text() == "old"


@pytest.mark.parametrize(
    ("owner", "attr", "hit", "before", "kept"),
    [  # after the old output was moved aside, before the new one took its place: both deleted
        (Path, "rename", lambda args: args[0].name == "out", False, "new.txt"),
        # just after a temporary folder was made, before the try that removes it: left behind
        (atomic, "_fresh_dir", lambda args: args[1] == ".out.tmp-", False, "old.txt"),
        (atomic, "_fresh_dir", lambda args: args[1] == ".out.old-", False, "new.txt"),
        # while the old output was removed: a hidden folder with part of it left behind
        (shutil, "rmtree", lambda args: Path(args[0]).name.startswith(".out.old-"), True,
         "new.txt"),
    ],
    ids=["between-renames", "tmp-made", "old-made", "old-removed"],
)  # fmt: skip
def test_ctrl_c_in_a_forced_swap_loses_nothing_and_leaves_nothing(
    tmp_path, monkeypatch, owner, attr, hit, before, kept
):
    out, _ = _old_output(tmp_path)
    real = getattr(owner, attr)

    def interrupted(*args, **kwargs):
        if before and hit(args):
            signal.raise_signal(signal.SIGINT)
        done = real(*args, **kwargs)
        if not before and hit(args):
            signal.raise_signal(signal.SIGINT)
        return done

    monkeypatch.setattr(owner, attr, interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == [kept]  # whole: the old one or the new one


@pytest.mark.parametrize("step", ["made", "removed"])
def test_ctrl_c_leaves_no_scratch_folder(tmp_path, monkeypatch, step):
    # tempfile.TemporaryDirectory: made and not yet held, or its removal cut short, it stayed
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    owner, attr = (tempfile, "mkdtemp") if step == "made" else (shutil, "rmtree")
    real = getattr(owner, attr)

    def interrupted(*args, **kwargs):
        if step == "removed":
            signal.raise_signal(signal.SIGINT)
        done = real(*args, **kwargs)
        if step == "made":
            signal.raise_signal(signal.SIGINT)
        return done

    monkeypatch.setattr(owner, attr, interrupted)
    with pytest.raises(KeyboardInterrupt), atomic.scratch_dir("hm3-x-") as tmp:
        (tmp / "texts.json").write_text("[]")
    assert list(tmp_path.iterdir()) == []


def test_a_file_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "trials.csv"
    write_file(path, b"old\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_file(path, b"new\n")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]  # no temporary left
    assert path.read_bytes() == b"old\n"
    write_file(path, b"new\n")
    assert path.read_bytes() == b"new\n"


def test_sigterm_cleans_up_like_ctrl_c_then_ends_by_the_signal(bert_zoo, tmp_path):
    """``timeout``, ``kill``, systemd and a CI cancel send SIGTERM: the half-written output goes."""
    config = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models)
    held = (  # the real merge, held just before its output is renamed into place
        "import time, hm3.io.atomic as a; swap = a._swap; "
        "a._swap = lambda *args: (time.sleep(120), swap(*args)); "
        "from hm3.cli.app import main; main()"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [sys.executable, "-c", held, "merge", str(config), "--out", "out", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.tmp-*/model.safetensors")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the merge never wrote its temporary output"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    assert [line for line in err.splitlines() if line.strip()] == ["interrupted"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]


def test_sigterm_goes_back_to_the_handler_that_was_there():
    """Called in-process, hm3 hands a SIGTERM on to the caller's handler once it has unwound,
    and leaves an ignored SIGTERM ignored."""
    from hm3.cli.app import _sigterm_interrupts

    seen: list[int] = []
    caller = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt), _sigterm_interrupts():
            assert signal.getsignal(signal.SIGTERM) is not caller
            signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]  # after the block, not instead of unwinding it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with _sigterm_interrupts():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)  # ignored: the block goes on
    finally:
        signal.signal(signal.SIGTERM, caller)


def test_ctrl_c_inside_a_finalizer_is_not_lost():
    """Python drops an exception raised in ``__del__``: a Ctrl-C landing in one (the garbage
    collector runs them between any two bytecodes) was printed and lost, the command run on."""
    from hm3.cli.app import _sigterm_interrupts

    class Slow:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            pause = time.monotonic() + 0.1
            while time.monotonic() < pause:  # bytecode running: the handler gets its turn
                pass

    default_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    went_on = []
    try:
        with pytest.raises(KeyboardInterrupt), _sigterm_interrupts():
            obj = Slow()
            del obj
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the signal, sent again, interrupts this
                pass
            went_on.append(True)
        assert not went_on
    finally:
        signal.signal(signal.SIGINT, default_int)


_TEMPORARY_AT_SIGTERM = """
import os, signal, sys, tempfile, time
from hm3.cli.app import _sigterm_interrupts

def work(where):
    kept = tempfile.TemporaryDirectory(dir=where)  # as ONNX Runtime's optimiser holds one
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    return kept

with _sigterm_interrupts():
    try:
        work(sys.argv[1])
    except KeyboardInterrupt:
        sys.exit(130)
"""


def test_sigterm_ends_the_process_after_the_temporaries_of_the_unwound_frames_are_gone(tmp_path):
    # the traceback kept the frame, and its finalizer only atexit would run; SIGTERM runs none
    proc = subprocess.run([sys.executable, "-c", _TEMPORARY_AT_SIGTERM, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_ctrl_c_after_the_command_ends_the_process_without_a_traceback():
    # else one landing in Python's exit (torch's atexit finalizers) printed a traceback
    code = ("import signal, sys\nfrom hm3.cli.app import main\nsys.argv = ['hm3', '--version']\n"
            "try:\n    main()\nexcept SystemExit:\n"
            "    print(signal.getsignal(signal.SIGINT) is signal.SIG_DFL)\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.stdout.split()[-1] == "True", proc.stdout + proc.stderr


_PRESS_WHILE_LOADING = """
import importlib.abc, importlib.util, os, signal, sys
SIGNAL, PRESSES = getattr(signal, sys.argv[1]), int(sys.argv[2])
class Press(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "hm3.cli.app":
            return None
        sys.meta_path.remove(self)
        for _ in range(PRESSES):
            os.kill(os.getpid(), SIGNAL)
            for _ in range(1000):  # bytecode runs: a Python handler gets its turn
                pass
        return importlib.util.find_spec(name)
sys.meta_path.insert(0, Press())
sys.argv = ["hm3", "--version"]
from hm3.cli.entry import main
main()
"""


@pytest.mark.parametrize(
    ("signame", "presses", "status", "err"),
    [("SIGINT", 0, 0, ""), ("SIGINT", 1, 130, "interrupted\n"), ("SIGINT", 2, 130, "interrupted\n"),
     ("SIGTERM", 1, -signal.SIGTERM, "")],
    ids=["none", "ctrl-c", "ctrl-c-twice", "sigterm"],
)  # fmt: skip
def test_a_signal_while_the_command_line_loads_is_one_line(signame, presses, status, err):
    # the console script's first tenths of a second, before hm3.cli.app.main has its handlers:
    # Ctrl-C printed Python's KeyboardInterrupt traceback there
    proc = subprocess.run([sys.executable, "-c", _PRESS_WHILE_LOADING, signame, str(presses)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (proc.returncode, proc.stderr) == (status, err), proc.stderr
    assert proc.stdout.startswith("hm3 ") == (presses == 0)


# -- 3. an --out that cannot be made is one line --------------------------------------------------
def test_out_that_cannot_be_created(bert_zoo, tmp_path, capsys):
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models, "linear")
    for out in (cfg / "sub", Path("/proc/hm3-cannot-be-made")):
        expect_user_error(capsys, tmp_path, "merge", cfg, "--out", out, "--no-progress",
                          match="cannot create it", names=out)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]


# -- 4. an --out inside an input, and stale files in an aligned copy ------------------------------
def test_out_inside_an_input_is_refused(bert_ties_merged, tmp_path, capsys):
    texts = _texts(tmp_path / "texts.jsonl")
    expect_user_error(capsys, tmp_path, "align", bert_ties_merged, "--texts", texts, "--out",
                      bert_ties_merged / "sub", match="lies inside the input",
                      names=bert_ties_merged / "sub", watch=(bert_ties_merged,))  # fmt: skip
    assert not (bert_ties_merged / "sub").exists()


def test_aligned_copy_leaves_out_onnx_and_subdirectories(tmp_path):
    from hm3.alignment.write import copy_model_dir

    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "onnx").mkdir(parents=True)
    dest.mkdir()
    for name in ("onnx/model.onnx", "model.onnx", "config.json", "model.safetensors"):
        (src / name).write_text("x")
    assert sorted(copy_model_dir(src, dest)) == ["model.onnx", "onnx/"]
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]


# -- 5. user text is shown as typed, never as Rich markup -----------------------------------------
def test_predict_and_evaluate_show_user_text_verbatim(bert_zoo, tmp_path, capsys):
    model = shutil.copytree(bert_zoo.models[0], tmp_path / "guard[v2]")
    texts = ["close [/] tag", "[bold]x[/bold]", "say :smile:"]
    code, out, err = run(capsys, "predict", model, *texts)
    assert code == 0, err
    for shown in (*texts, "guard[v2]"):
        assert shown in out, out
    suite = _suite(tmp_path, model, tmp_path / "d.jsonl")
    code, out, err = run(capsys, "evaluate", suite, f"x[/]={model}", "--no-progress")
    assert code == 0, err
    assert "x[/]" in out and "guard[v2]" in out
    with pytest.MonkeyPatch.context() as mp:  # the progress bar drawn, as on a terminal
        mp.setenv("TTY_COMPATIBLE", "1")
        mp.setenv("TTY_INTERACTIVE", "1")
        code, out, err = run(capsys, "evaluate", suite, f"x[/]={model}")
    assert code == 0 and "evaluating x[/] [1/1]" in err, err
    expect_user_error(capsys, tmp_path, "predict", model, "hi", "--device", "cuda:x",
                      match="--device cuda:x:", names="cuda:x")  # fmt: skip


# -- 6.-8. ambiguous or mismatched inputs ---------------------------------------------------------
def test_task_name_taken_by_another_models_default_is_refused(bert_zoo, tmp_path, capsys):
    first, second = bert_zoo.models[:2]
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [first, second])
    doc = yaml.safe_load(cfg.read_text())
    doc["models"][1]["name"] = first.name
    cfg.write_text(yaml.safe_dump(doc))
    message = expect_user_error(capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out",
                                match="also the name given to", names=first)  # fmt: skip
    assert str(second) in message


def test_hm3_block_with_a_task_name_twice_is_refused():
    from hm3.model.labels import Task, metadata_block, tasks_from_config

    tasks = [Task("guard", ("a", "b"), 0, 2, "x"), Task("guard", ("c", "d"), 2, 4, "y")]
    config = {"id2label": {str(i): str(i) for i in range(4)}, "hm3": metadata_block(tasks, {})}
    with pytest.raises(Hm3Error, match="'guard' given twice"):
        tasks_from_config(config, "m", "m")


@pytest.mark.parametrize("nested", [False, True])
def test_yaml_key_given_twice_is_refused(bert_zoo, tmp_path, capsys, nested):
    first = f"models:\n  - model: {bert_zoo.models[0]}\n"
    second = f"models:\n  - model: {bert_zoo.models[1]}\n"
    if nested:
        first = f"parameters:\n  density: 0.5\n  density: 0.7\n{first}"
        second = ""
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"base_model: {bert_zoo.base}\nmerge_method: ties\n{first}{second}")
    key, line = ("density", 5) if nested else ("models", 5)
    expect_user_error(capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out",
                      match=f"key '{key}' given twice (line {line})")  # fmt: skip


def test_model_deeper_than_the_base_is_refused(bert_zoo, tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification

    base_config = json.loads((bert_zoo.base / "config.json").read_text())
    deep = tmp_path / "deep"
    config = BertConfig(**{**base_config, "num_hidden_layers": 3, "num_labels": 2})
    BertForSequenceClassification(config).save_pretrained(deep)
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, [bert_zoo.models[0], deep])
    expect_user_error(capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out",
                      match="3 layers (num_hidden_layers)", names="deep")  # fmt: skip


def test_a_model_of_several_tasks_is_not_merged_again(bert_ties_merged, zoo_of, tmp_path, capsys):
    """A merged model's label segments would become one task, one softmax across them."""
    zoo = zoo_of("bert")  # the models of bert_ties_merged
    cfg = write_merge_yaml(tmp_path / "m.yaml", zoo.base, [bert_ties_merged, zoo.models[0]])
    message = expect_user_error(capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out",
                                match="an hm3 model of 3 tasks (task0, task1, task2)",
                                names=bert_ties_merged, watch=(bert_ties_merged,))  # fmt: skip
    made_from = ", ".join(str(m.resolve()) for m in zoo.models)
    assert message.endswith(f"merge the models it was made from instead ({made_from})"), message


def test_relative_model_missing_beside_the_yaml_is_not_taken_from_the_cwd(
    bert_zoo, tmp_path, capsys, monkeypatch
):
    """A relative path is the YAML's: a same-named model in the current directory is never
    merged in its place (the error names the path beside the YAML)."""
    (tmp_path / "cfg").mkdir()
    here = tmp_path / "here"
    shutil.copytree(bert_zoo.models[0], here / "guardy")
    doc = {"base_model": str(bert_zoo.base), "merge_method": "ties",
           "models": [{"model": "guardy"}, {"model": str(bert_zoo.models[1])}]}  # fmt: skip
    cfg = tmp_path / "cfg" / "m.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(here)
    message = expect_user_error(capsys, tmp_path, "merge", cfg, "--out", tmp_path / "out",
                                match="not found", names=tmp_path / "cfg" / "guardy")  # fmt: skip
    assert str(here / "guardy") not in message
    shutil.copytree(bert_zoo.models[0], tmp_path / "cfg" / "guardy")  # beside the YAML: merged
    code, _, err = run(capsys, "merge", cfg, "--out", tmp_path / "out", "--no-progress")
    assert code == 0, err


@pytest.mark.parametrize(
    ("argv", "command", "match"),
    [
        (["merge"], "hm3 merge", "Missing argument 'config'"),
        (["merge", "m.yaml", "--outt", "x"], "hm3 merge", "No such option: --outt"),
        (["search", "m.yaml", "--suite", "s", "--out", "o", "--trials", "0"], "hm3 search",
         "'--trials'"),
        (["bench", "--merged"], "hm3 bench", "'--merged' requires an argument"),
        (["serve", "m", "--port", "http"], "hm3 serve", "'--port'"),
        (["export", "onnx"], "hm3 export onnx", "Missing argument 'model'"),
        (["export", "onnx", "m", "--out"], "hm3 export onnx", "'--out' requires an argument"),
        (["exprt"], "hm3", "Did you mean 'export'"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_naming_the_command_and_its_help(capsys, argv, command, match):
    code, out, err = run(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and not out and len(lines) == 1, err
    assert lines[0].startswith(f"error: {command}: ") and match in lines[0], err
    assert lines[0].endswith(f"(see {command} --help)"), err


def test_version_and_bare_help(capsys):
    from hm3.version import __version__

    assert run(capsys, "--version")[:2] == (0, f"hm3 {__version__}\n")
    code, out, _ = run(capsys)  # no command: the help, as before
    assert "Usage: hm3" in out and "merge" in out and code == 2  # click: help shown for no args


# -- 5. a failed write leaves no folders it made --------------------------------------------------
def test_failed_write_removes_the_parent_folders_it_made(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("the merge failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp_path / "new" / "keep.txt").write_text("written by someone else meanwhile")
        raise RuntimeError("the merge failed")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["keep.txt"]


def test_failed_merge_leaves_no_parent_folders(bert_zoo, tmp_path, capsys):
    # a lambda this large overflows float32 during the merge, once the output is being written
    cfg = write_merge_yaml(tmp_path / "m.yaml", bert_zoo.base, bert_zoo.models,
                           "task_arithmetic", parameters={"lambda": 1e300})  # fmt: skip
    out = tmp_path / "new" / "deeper" / "out"
    expect_user_error(capsys, tmp_path, "merge", cfg, "--out", out, "--no-progress",
                      match="NaN or Inf", names="lambda")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]


def test_a_long_warning_is_one_line_in_a_log_file(capsys):
    """Off a terminal (a log file, a pipe, CI) a record is one line however long: Rich's
    handler would wrap it at the console's width onto padded lines."""
    import logging

    from hm3.cli.app import _setup

    _setup(verbose=False, version=False)
    logging.getLogger("hm3").warning("%s", "a long warning " * 40)
    err = capsys.readouterr().err
    assert err == "WARNING  " + "a long warning " * 40 + "\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_an_import_waits_for_the_import(tmp_path, monkeypatch, signum):
    """A KeyboardInterrupt raised inside an import can surface in a C++ extension's callback
    (torch's pybind11 set-up) and abort the process (SIGABRT, no clean-up): hm3 sends a
    SIGTERM, or a Ctrl-C under Python's own handler, again once the import is done (once for
    several), and unwinds then. Afterwards the handlers that were there are back."""
    import importlib
    import time

    from hm3.cli.app import _sigterm_interrupts

    module = f"slow_module_{signum.name}"
    (tmp_path / f"{module}.py").write_text(
        "import os, signal, time\n"
        "for _ in range(3):\n"  # three presses, each handled apart
        f"    os.kill(os.getpid(), signal.{signum.name})\n"
        "    pause = time.monotonic() + 0.1\n"
        "    while time.monotonic() < pause:\n"
        "        pass\n"
        "deadline = time.monotonic() + 0.5\n"
        "while time.monotonic() < deadline:\n"  # bytecode running: the handler gets its turn
        "    pass\n"
        "DONE = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[int] = []
    imported = []
    caller = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    default_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), _sigterm_interrupts():
            imported.append(importlib.import_module(module).DONE)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the signal, sent again, interrupts this
                pass
        assert imported == [True]  # the import ran to its end, and the interrupt came after
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # one interrupt for the three: none follows
            pass
        assert seen == ([signal.SIGTERM] if signum == signal.SIGTERM else [])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, caller)
        signal.signal(signal.SIGINT, default_int)
        sys.modules.pop(module, None)
