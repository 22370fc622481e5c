# Re-checks docs/schema.md against a running server (called by scripts/docs-check.sh):
# every ```zed block is a whole schema, written with `dhow schema write`; a ```text block
# right after it that starts with `$ dhow schema write schema.zed` quotes what the server
# answers (the schema must then be refused with exactly that output), and without one the
# schema must be accepted. Any other ```text block whose lines start with `$ ` is run the
# same way (bash, `dhow` on the PATH, in the directory where schema.zed is the last zed
# block) and its output (stdout and stderr) must be what follows each command. With
# DOCS_CHECK_UPDATE=1 the quoted outputs are replaced by what the commands print (review
# the diff before committing).
#
# Usage: python3 scripts/docs-check-schema.py DOC WORKDIR   (DHOW_ENDPOINT and PATH set)
import os
import re
import subprocess
import sys

doc, work = sys.argv[1], sys.argv[2]
update = os.environ.get("DOCS_CHECK_UPDATE") == "1"
text = open(doc).read()
lines = text.split("\n")

# Fenced blocks: (language, first line index of the body, body lines).
blocks = []
i = 0
while i < len(lines):
    m = re.match(r"^```(\w*)\s*$", lines[i])
    if m:
        lang, start = m.group(1), i + 1
        j = start
        while j < len(lines) and lines[j] != "```":
            j += 1
        blocks.append((lang, start, lines[start:j]))
        i = j + 1
    else:
        i += 1


def run(command):
    p = subprocess.run(["bash", "-c", command], cwd=work, capture_output=True, text=True)
    # stdout then stderr: the commands quoted print on one of them.
    out = (p.stdout + p.stderr).rstrip("\n")
    return p.returncode, out


def commands(body):
    """The `$ command` lines of a block with the output lines quoted after each."""
    out = []
    for line in body:
        if line.startswith("$ "):
            out.append([line[2:], []])
        elif out:
            out[-1][1].append(line)
    return out


failures = 0
checked = 0
replacements = {}  # line index of a block body -> new body lines
for n, (lang, start, body) in enumerate(blocks):
    where = f"{doc}:{start}"
    if lang == "zed":
        with open(os.path.join(work, "schema.zed"), "w") as f:
            f.write("\n".join(body) + "\n")
        nxt = blocks[n + 1] if n + 1 < len(blocks) else None
        if nxt and nxt[0] == "text" and nxt[2] and nxt[2][0].startswith("$ dhow schema write schema.zed"):
            continue  # checked with its text block
        rc, out = run("dhow schema write schema.zed")
        checked += 1
        if rc != 0:
            failures += 1
            print(f"{where}: this schema should be accepted, but:\n{out}\n", file=sys.stderr)
    elif lang == "text" and body and body[0].startswith("$ "):
        new_body = []
        for command, expected in commands(body):
            rc, out = run(command)
            checked += 1
            want = "\n".join(expected).rstrip("\n")
            want_rc_nonzero = want.startswith("error:") or want.startswith("LOAD FAILED")
            new_body += ["$ " + command] + out.split("\n")
            if out != want or (rc != 0) != want_rc_nonzero:
                failures += 1
                print(
                    f"{where}: `{command}` (exit {rc}) printed:\n{out}\n--- but the doc says:\n{want}\n",
                    file=sys.stderr,
                )
        replacements[start] = (len(body), new_body)

if update and replacements:
    for start in sorted(replacements, reverse=True):
        length, new_body = replacements[start]
        lines[start : start + length] = new_body
    open(doc, "w").write("\n".join(lines))
    print(f"{doc}: quoted outputs updated", file=sys.stderr)

print(f"docs/schema.md: {checked} schemas and commands checked, {failures} wrong")
sys.exit(1 if failures and not update else 0)
