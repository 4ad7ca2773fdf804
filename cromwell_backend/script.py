"""The `script` Cromwell writes for each call (StandardAsyncExecutionActor's command script), as
the harness writes it: the same shape and the same file-system needs.

- It runs the WDL command in a subshell whose stdout and stderr go through two FIFOs (`mkfifo`)
  to `tee`, into the files `stdout` and `stderr` in the execution directory — the same files the
  TES executor names as its own stdout/stderr.
- The command's exit status goes to `rc.tmp`, moved to `rc` at the very end: the executor itself
  usually exits 0, and Cromwell decides success from the uploaded `rc` file.
- Globs are resolved inside the container: every match is hard-linked (`ln`, falling back from
  `ln -L`) into `glob-<md5 of the pattern>/`, and the names listed in `glob-<md5>.list`; both are
  ordinary TES outputs (a DIRECTORY and a FILE). Cromwell never sends a wildcard to TES.
- An empty directory gets a `.file` so that directory outputs survive object stores.
"""

from __future__ import annotations

import hashlib
import secrets
import shlex
from collections.abc import Sequence

GLOB_CONTROL_FILE = "cromwell_glob_control_file"


def glob_name(pattern: str) -> str:
    """Cromwell's GlobFunctions.globName: `glob-` + the md5 of the pattern."""
    return "glob-" + hashlib.md5(pattern.encode()).hexdigest()


def _glob_block(pattern: str) -> str:
    name = glob_name(pattern)
    return (
        f"mkdir {name}\n"
        f"echo 'Keeps the glob directory non-empty; never listed.' > {name}/{GLOB_CONTROL_FILE}\n"
        f"( ln -L {pattern} {name} 2> /dev/null ) || ( ln {pattern} {name} )\n"
        f"ls -1 {name} | grep -v {GLOB_CONTROL_FILE} > {name}.list\n"
    )


def command_script(cwd: str, command: str, globs: Sequence[str] = ()) -> str:
    """The script for one call whose execution directory in the container is `cwd`."""
    tag = secrets.token_hex(3)
    q = shlex.quote
    stdout, stderr = f"{cwd}/stdout", f"{cwd}/stderr"
    glob_part = "".join(_glob_block(p) for p in globs)
    return f"""#!/bin/bash
# Written by tescape's Cromwell replay harness in the shape of Cromwell's command script.

cd {q(cwd)}
tmpDir=$(mkdir -p {q(cwd)}/tmp.{tag} && echo {q(cwd)}/tmp.{tag})
chmod 777 "$tmpDir"
export _JAVA_OPTIONS=-Djava.io.tmpdir="$tmpDir"
export TMPDIR="$tmpDir"
export HOME="$HOME"

out{tag}="${{tmpDir}}/out.$$" err{tag}="${{tmpDir}}/err.$$"
mkfifo "$out{tag}" "$err{tag}"
trap 'rm "$out{tag}" "$err{tag}"' EXIT
touch {q(stdout)} {q(stderr)}
tee {q(stdout)} < "$out{tag}" &
tee {q(stderr)} < "$err{tag}" >&2 &
(
cd {q(cwd)}
{command.strip()}
)  > "$out{tag}" 2> "$err{tag}"
echo $? > {q(cwd)}/rc.tmp
wait  # for the two tees (the harness waits; a container's PID 1 exiting would cut them off)
(
# a .file in every empty directory, so that directory outputs survive object stores
cd {q(cwd)}
find . -type d -empty -exec touch '{{}}/.file' \\;
)
(
cd {q(cwd)}
sync
{glob_part.rstrip()}
)
mv {q(cwd)}/rc.tmp {q(cwd)}/rc
"""
