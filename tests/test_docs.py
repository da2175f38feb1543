"""The commands the documentation gives a student must run: every `--flag` written after `python <script>.py` in
README.md, EARLIER_RUNS.md, data/README.md, the Makefile and the scripts' docstrings is one that script's argparse
defines. Flags are read from the scripts' `add_argument` calls (and model.stage_args' shared ones), so the test
needs no torch and takes milliseconds."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["data/world.py", "pretrain.py", "sft.py", "reward.py", "ppo.py", "evaluate.py", "bench.py", "chat.py"]
DOCS = ["README.md", "EARLIER_RUNS.md", "data/README.md", "Makefile"] + SCRIPTS
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND = re.compile(r"(?:python|\$\(PY\))\s+((?:data/)?[a-z_]+\.py)\b")


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def argparse_flags(src):
    return set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", src))


def defined_flags(script, shared):
    """The flags `script` defines, plus `shared` (model.stage_args' flags) if it builds its parser with stage_args."""
    src = read(script)
    return argparse_flags(src) | {"--help"} | (shared if "stage_args(" in src else set())


def command_chunks(path, text):
    """(line number, text) of each place a command can be written: a line of a fenced block, of the Makefile or of a
    .py file (a trailing # comment cut off), or an inline `code span` of markdown prose (which may wrap a line)."""
    if not path.endswith(".md"):
        return [(i + 1, line.split(" # ")[0]) for i, line in enumerate(text.splitlines())]
    chunks, fenced = [], False
    for i, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            chunks.append((i + 1, line.split(" # ")[0]))
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for m in re.finditer(r"`([^`]+)`", prose):
        chunks.append((prose.count("\n", 0, m.start()) + 1, m.group(1)))
    return chunks


def undefined_flags(docs):
    """docs: {path: text}. Returns (commands found, 'path:line: script --flag' for each flag the script lacks)."""
    shared = argparse_flags(read("model.py"))
    flags = {s: defined_flags(s, shared) for s in SCRIPTS}
    by_name = {os.path.basename(s): s for s in SCRIPTS}
    found, bad = 0, []
    for doc, text in docs.items():
        for line, chunk in command_chunks(doc, text):
            for m in COMMAND.finditer(chunk):
                script = by_name.get(os.path.basename(m.group(1)))
                if script is None:
                    continue
                rest = re.split(r"&&|;|\||\)|\bthen\b", chunk[m.end():])[0]  # this command's own arguments
                found += 1
                bad += [f"{doc}:{line}: {script} {f}" for f in FLAG.findall(rest) if f not in flags[script]]
    return found, bad


def test_every_flag_the_documentation_gives_a_script_is_one_it_defines():
    found, bad = undefined_flags({d: read(d) for d in DOCS})
    assert found > 100, f"only {found} commands found: the extraction is broken"
    assert not bad, "flags no script defines:\n" + "\n".join(bad)


def test_a_misspelt_flag_is_caught_in_prose_blocks_and_docstrings():
    doc = ("Run `python ppo.py --preset cpu --kl-coeff 0\n--out x` first.\n"  # a code span across a line
           "```bash\npython sft.py --epochs 8 && python reward.py --k-min 2 --kmax 2  # --fine\n```\n")
    found, bad = undefined_flags({"x.md": doc, "y.py": "    python data/world.py --preset cpu --reading 0.06\n"})
    assert found == 4
    assert bad == ["x.md:4: reward.py --kmax", "x.md:1: ppo.py --kl-coeff", "y.py:1: data/world.py --reading"]
