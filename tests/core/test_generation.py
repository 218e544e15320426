"""Generation: nlstudio.generate and `nlstudio generate` (subprocess): determinism, the state
path equal to one forward over prompt + generated tokens, prompts longer than seq_len, and
every bad input answered with exit code 2 and one line."""
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import nlstudio
from nlstudio import generation as gen
from nlstudio.build import build_model, build_task
from nlstudio.project import parse_project

NLSTUDIO = [sys.executable, "-m", "nlstudio"]
SEQ_LEN = 32


def tiny_doc(task: dict, levels=None, steps: int = 2) -> dict:
    """A small project whose model has every path the stream must keep: attention (mixes
    positions), a CMS level with the task objective (writes from the stream's next tokens)
    and a frozen MLP."""
    levels = levels or [
        {"id": "att", "kind": "attention", "period": None, "window": 8},
        {"id": "cms", "kind": "mlp", "period": 4, "objective": "task",
         "optimizer": {"name": "sgd", "eta": 0.05}},
        {"id": "ffn", "kind": "mlp", "period": None},
    ]
    ids = [lv["id"] for lv in levels]
    edges = [["input", ids[0]], *[[a, b] for a, b in zip(ids, ids[1:])], [ids[-1], "output"]]
    return {"format": "nlstudio.project", "version": 1, "name": f"tiny-{task['name']}",
            "model": {"d_model": 16, "heads": 2, "levels": levels, "edges": edges},
            "task": task,
            "train": {"steps": steps, "batch_size": 2, "seq_len": SEQ_LEN, "seed": 0,
                      "device": "cpu", "log_every": 1, "eval_every": 1000}}


CHARLM = {"name": "charlm"}
MQAR = {"name": "mqar", "num_pairs": 4, "key_vocab": 8, "value_vocab": 8}
DIGITS = {"name": "digits_stream"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained (2 steps) run folders: a byte-level task, a token task, a feature task."""
    root = tmp_path_factory.mktemp("gen-runs")
    out = {}
    for name, task in (("charlm", CHARLM), ("mqar", MQAR), ("digits", DIGITS)):
        result = nlstudio.train(tiny_doc(task), out=root / name, evaluate=False)
        assert result.reason == "completed", result.message
        out[name] = root / name
    return out


def run_cli(*args, cwd, timeout=120):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([*NLSTUDIO, "generate", *map(str, args), "--threads", "1"], cwd=cwd,
                          env=env, capture_output=True, timeout=timeout)


def one_line(stderr: bytes, *needles: str) -> str:
    text = stderr.decode("utf-8", "replace")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---- the API ----------------------------------------------------------------------------------
def test_same_seed_same_tokens_and_seeds_differ(runs):
    loaded = gen.load_model(runs["charlm"])
    a = list(nlstudio.generate(loaded, "def f(", tokens=40, seed=7))
    b = list(nlstudio.generate(runs["charlm"], "def f(", tokens=40, seed=7))
    c = list(nlstudio.generate(loaded, "def f(", tokens=40, seed=8))
    assert a == b and len(a) == 40 and all(0 <= t < 256 for t in a)
    assert a != c


def _model(task: dict, seed: int = 0):
    torch.manual_seed(seed)
    project = parse_project(tiny_doc(task))
    task_obj = build_task(project)
    return build_model(project, task_obj).eval(), task_obj


@pytest.mark.parametrize("chunk", [256, 5])
def test_state_path_equals_one_forward_over_prompt_and_generated(monkeypatch, chunk):
    """Each step's logits (prompt read as a stream in calls of ``chunk`` tokens, then one token
    per call) equal the logits of ONE call over prompt + generated tokens: the in-context
    levels learn while generating exactly as they would reading the whole text. The prompt is
    three times the training seq_len (state, not a window)."""
    monkeypatch.setattr(gen, "PROMPT_CHUNK", chunk)
    model, task = _model(CHARLM)
    prompt = gen.encode_prompt(task, "x = 1\n" * 17)  # 102 bytes > 3 x SEQ_LEN
    steps = list(gen.stream_steps(model, prompt, tokens=24, temperature=1.0, seed=3))
    tokens = [s.token for s in steps]
    with torch.no_grad():
        full, _ = model(torch.tensor([prompt + tokens[:-1]]))
    for i, step in enumerate(steps):
        expected = full[0, len(prompt) - 1 + i]
        assert torch.allclose(step.logits, expected, rtol=1e-5, atol=1e-5), i


def test_greedy_and_top_k_one_take_the_argmax():
    model, task = _model(CHARLM)
    prompt = gen.encode_prompt(task, "import os\n")
    greedy = list(gen.stream_steps(model, prompt, tokens=12, temperature=0.0))
    assert all(s.token == int(s.logits.argmax()) for s in greedy)
    top1 = list(gen.stream_steps(model, prompt, tokens=12, temperature=1.5, top_k=1, seed=9))
    assert [s.token for s in top1] == [s.token for s in greedy]


def test_top_k_never_samples_outside_the_k_most_likely():
    logits = torch.linspace(-1, 1, 50)
    g = torch.Generator().manual_seed(0)
    drawn = {gen.sample_token(logits, 5.0, 3, g) for _ in range(300)}
    assert drawn == {47, 48, 49}


def test_stop_ends_the_stream():
    model, task = _model(CHARLM)
    calls = []
    steps = gen.stream_steps(model, [65, 66], tokens=50, stop=lambda: len(calls) >= 4)
    for step in steps:
        calls.append(step.token)
    assert len(calls) == 4


def test_prompts_are_encoded_by_what_the_task_says():
    _, byte_task = _model(CHARLM)
    _, token_task = _model(MQAR)
    assert gen.encode_prompt(byte_task, "é") == [0xC3, 0xA9]
    assert gen.encode_prompt(token_task, "3, 5 7") == [3, 5, 7]
    for task, prompt, needle in ((byte_task, "", "empty"), (token_task, "  ", "empty"),
                                 (token_task, "3 99", "outside"), (token_task, "a b", "not a "
                                                                   "token id")):
        with pytest.raises(gen.GenerationError, match=needle):
            gen.encode_prompt(task, prompt)
    _, digits = _model(DIGITS)
    with pytest.raises(gen.GenerationError, match="feature vectors"):
        gen.encode_prompt(digits, "1 2")


@pytest.mark.parametrize("options, needle", [
    ({"tokens": 0}, "at least 1"), ({"tokens": -3}, "at least 1"),
    ({"temperature": -0.5}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top-k")])
def test_bad_options_are_refused_before_the_first_token(runs, options, needle):
    with pytest.raises(gen.GenerationError, match=needle):
        nlstudio.generate(runs["charlm"], "a", **options)


def test_utf8_stream_decodes_split_and_invalid_bytes():
    d = gen.Utf8Stream()
    out = [d.feed(b) for b in "aé€".encode()]
    assert out == ["a", "", "é", "", "", "€"]
    d = gen.Utf8Stream()
    assert "".join(d.feed(b) for b in b"\xff\xc3") + d.flush() == "\ufffd\ufffd"


def test_prompt_file_checks(tmp_path):
    ok = tmp_path / "p.txt"
    ok.write_bytes(b"hello")
    assert gen.read_prompt_file(ok) == b"hello"
    with pytest.raises(gen.GenerationError, match="too large"):
        gen.read_prompt_file(ok, limit=4)
    with pytest.raises(gen.GenerationError, match="a folder, not a regular file"):
        gen.read_prompt_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(gen.GenerationError, match="FIFO"):
        gen.read_prompt_file(fifo)  # never blocks waiting for a writer
    with pytest.raises(gen.GenerationError, match="cannot read"):
        gen.read_prompt_file(tmp_path / "missing.txt")


def test_an_exported_model_folder_generates_like_its_run(runs, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    for name in ("model.safetensors", "project.nlproj"):  # what Export Model writes
        shutil.copy(runs["charlm"] / name, export / name)
    loaded = gen.load_model(export)
    assert loaded.step is None and loaded.byte_level
    assert list(nlstudio.generate(loaded, "if ", tokens=16, seed=2)) == \
        list(nlstudio.generate(runs["charlm"], "if ", tokens=16, seed=2))


def test_load_model_errors_name_the_folder(tmp_path):
    with pytest.raises(gen.GenerationError, match=str(tmp_path)):
        gen.load_model(tmp_path)


# ---- the command line ---------------------------------------------------------------------------
def test_cli_streams_text_deterministically_with_a_seed(runs, tmp_path):
    args = (runs["charlm"], "--prompt", "def ", "--tokens", "30", "--seed", "5",
            "--temperature", "0.9", "--top-k", "20")
    first, second = run_cli(*args, cwd=tmp_path), run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stderr == b""
    tokens = list(nlstudio.generate(runs["charlm"], "def ", tokens=30, seed=5,
                                    temperature=0.9, top_k=20))
    assert first.stdout.decode("utf-8") == bytes(tokens).decode("utf-8", "replace") + "\n"
    other = run_cli(*args[:-6], "--seed", "6", cwd=tmp_path)
    assert other.returncode == 0 and other.stdout != first.stdout


def test_cli_prints_token_ids_for_token_tasks(runs, tmp_path):
    prompt = tmp_path / "ids.txt"
    prompt.write_text("1 10 2 11\n")
    result = run_cli(runs["mqar"], "--prompt-file", prompt, "--tokens", "7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ids = [int(w) for w in result.stdout.split()]
    assert len(ids) == 7 and all(0 <= i < 17 for i in ids)


def bad_inputs(runs, tmp_path) -> list[tuple[tuple, str]]:
    """(arguments, what the one line must name) for every kind of bad input."""
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(gen.MAX_PROMPT_BYTES + 1)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    broken = tmp_path / "broken"
    shutil.copytree(runs["charlm"], broken)
    for weights in broken.rglob("model.safetensors"):  # the checkpoint's and the top copy
        weights.write_bytes(b"\x00not safetensors")
    return [
        ((broken, "--prompt", "a"), "model.safetensors"),
        ((tmp_path / "nope", "--prompt", "a"), "nope"),
        ((runs["digits"], "--prompt", "1"), "feature vectors"),
        ((runs["charlm"], "--prompt", ""), "empty"),
        ((runs["charlm"],), "give a prompt"),
        ((runs["charlm"], "--prompt", "a", "--tokens", "0"), "--tokens"),
        ((runs["charlm"], "--prompt", "a", "--top-k", "0"), "--top-k"),
        ((runs["charlm"], "--prompt-file", fifo), str(fifo)),
        ((runs["charlm"], "--prompt-file", big), str(big)),
        ((runs["charlm"], "--prompt-file", tmp_path / "missing"), "missing"),
        ((runs["mqar"], "--prompt", "1 99"), "outside"),
    ]


def test_cli_bad_input_exits_2_with_one_line(runs, tmp_path, capsys):
    """Every case through the CLI's entry point in this process (the same code path as the
    command; a few of them again through real subprocesses below)."""
    from nlstudio.cli import main

    for args, needle in bad_inputs(runs, tmp_path):
        code = main(["generate", *map(str, args), "--threads", "1"])
        out, err = capsys.readouterr()
        assert code == 2, (args, err)
        one_line(err.encode(), needle)
        assert out == ""


def test_cli_bad_input_through_the_command(runs, tmp_path):
    cases = bad_inputs(runs, tmp_path)
    for args, needle in (cases[0], cases[2], cases[7]):  # damaged weights, features, a FIFO
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        one_line(result.stderr, needle)
        assert result.stdout == b""


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_cli_unreadable_prompt_file_exits_2(runs, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("abc")
    secret.chmod(0)
    result = run_cli(runs["charlm"], "--prompt-file", secret, cwd=tmp_path)
    assert result.returncode == 2
    one_line(result.stderr, str(secret))


def test_cli_ctrl_c_exits_130_cleanly(runs, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([*NLSTUDIO, "generate", str(runs["mqar"]), "--prompt", "1 2",
                             "--tokens", "1000000", "--threads", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.read(1)  # it is generating
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    one_line(err, "interrupted")
