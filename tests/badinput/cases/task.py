"""Bad-input cases: eval --task files."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403
from cases.cli import with_opt
from cases.sft import jsonl_value_mutation


# ---- eval --task TASK.jsonl (QA scored by EM, F1, ROUGE-L) -------------------------------------------

TASK_ARGV = ["eval", "--checkpoint", CK, "--task", "task.jsonl", "--retention", "1", "--batches", "1",
             "--max-new-tokens", "4", "--threads", "1"]


def task_cases(R: Registry) -> None:
    def add(name: str, desc: str, text=None, expect: str = "fail", line: Optional[int] = None,
            opts: tuple = (), prep: Optional[Callable] = None) -> None:
        def build(env: Env) -> Spec:
            env.run_copy()
            if text is not None:
                env.write("task.jsonl", text(env) if callable(text) else text)
            else:
                shutil.copy2(env.ctx.task, env.p("task.jsonl"))
            argv = list(TASK_ARGV)
            for flag, value in zip(opts[::2], opts[1::2]):
                argv = with_opt(argv, flag, value)
            if prep:
                prep(env)
            return Spec(cli_argv(env, argv), protect=["run"], mention=[f"task.jsonl:{line}"] if line else [])
        R.add("task", name, desc, expect, build)

    qa = '{"context": "the sun is red", "question": "what is red?", "answer": "the sun"}\n'
    add("bad-json", "line 2 cut inside an object", qa + '{"prompt": "a", \n', line=2)
    add("missing-answer", "context/question without an answer", qa + '{"context": "c", "question": "q"}\n', line=2)
    add("mixed", "prompt/response mixed with a question", qa + '{"prompt": "p", "response": "r", "question": "q"}\n', line=2)
    add("empty-response", "response \"\"", '{"prompt": "p", "response": ""}\n', line=1)
    add("answers-string", "answers is a string", qa + '{"context": "c", "question": "q", "answers": "a"}\n', line=2)
    add("answers-empty", "answers []", '{"context": "c", "question": "q", "answers": []}\n' + qa, line=1)
    add("answers-numbers", "answers [1, 2]", qa + '{"context": "c", "question": "q", "answers": [1, 2]}\n', line=2)
    add("answers-65", "65 answers (at most 64)", qa + json.dumps({"context": "c", "question": "q",
                                                                  "answers": ["a"] * 65}) + "\n", line=2)
    add("answers-with-prompt", "prompt with answers and no response (answer added: mixed layouts)",
        '{"prompt": "p", "answers": ["a"]}\n', line=1)
    add("blank-only", "only blank lines", "\n \n\t\n")
    add("late-bad-line", "line 41 of 41 not JSON", qa * 40 + "nope\n", line=41)
    add("fifo", "--task is a FIFO", opts=("--task", "{FIFO}"))
    for v, e in [("0", "fail2"), ("4097", "fail2"), ("nan", "fail2"), ("127", "fail")]:
        add(f"max-new-{v}", f"--max-new-tokens {v}" + (" (no room for a prompt in max_seq_len 128)" if e == "fail" else ""),
            expect=e, opts=("--max-new-tokens", v))
    add("task-seed-abc", "--task-seed abc", expect="fail2", opts=("--task-seed", "abc"))

    def big_vocab(env: Env) -> None:
        tok = env.hftok_copy()
        path = env.p(f"{tok}/tokenizer.json")
        tj = json.loads(path.read_text())
        tj["added_tokens"].append({"id": 100000, "content": "<|big|>", "special": True, "normalized": False})
        path.write_text(json.dumps(tj, ensure_ascii=False))
    add("tokenizer-bigger-vocab", "--tokenizer with an added token id 100000 (the model has 300) used by the prompt",
        '{"prompt": "the <|big|> sun", "response": " x"}\n', opts=("--tokenizer", "tok"), prep=big_vocab)


def task_random(env: Env) -> Spec:
    rng = env.rng
    env.run_copy()
    text = env.ctx.task.read_text()
    argv = list(TASK_ARGV)
    kind = rng.choice(["value", "value", "flip", "flag"])
    expect, line = "any", None
    if kind == "value":
        text, detail, line, ok = jsonl_value_mutation(rng, text, task=True)
        expect = "any" if ok else "fail"
    elif kind == "flip":
        b = bytearray(text.encode())
        i = rng.randrange(len(b))
        o, b[i] = b[i], rng.choice([x for x in range(256) if x != b[i]])
        text = bytes(b)
        detail = f"byte {i} 0x{o:02x} -> 0x{b[i]:02x}"
    else:
        flag, values = rng.choice([("--max-new-tokens", {"1": "any", "64": "any", "126": "any", "127": "fail",
                                                          "4096": "fail", "4097": "fail2", "0": "fail2", "-5": "fail2",
                                                          I64_MAX: "fail2", "inf": "fail2", "2.5": "fail"}),
                                   ("--task-seed", {"0": "any", I64_MAX: "any", "18446744073709551615": "any",
                                                    "x1": "fail2", "": "fail"})])
        value = rng.choice(sorted(values))
        argv = with_opt(argv, flag, None) + [f"{flag}={value}"]
        expect, detail = values[value], f"{flag}={value}"
    env.write("task.jsonl", text)
    return Spec(argv, protect=["run"], detail=detail, expect=expect,
                mention=[f"task.jsonl:{line}"] if line and expect == "fail" else [])
