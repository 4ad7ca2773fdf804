"""The scripts the harness writes into each task's work dir, shaped like Nextflow's own for a TES
task (BashWrapperBuilder with nf-ga4gh's TesFileCopyStrategy and `NXF_CHDIR=/work`):

    .command.sh    the process script, run as `/bin/bash -ue .command.sh`
    .command.run   the wrapper: cd /work; put the remote bin scripts on PATH; run .command.sh with
                   its stdout and stderr both shown and saved to .command.out / .command.err;
                   write the exit status to .exitcode on the way out (an EXIT trap), so it is
                   there even when the script fails

The TES executor runs `bash -o pipefail -c "bash /work/.command.run 2>&1 | tee /work/.command.log"`,
so the executor's exit code is the script's. Staging is TES's job: the wrapper copies nothing.
"""

from __future__ import annotations

import shlex

WORK_DIR = "/work"
CMD_SCRIPT = ".command.sh"
CMD_RUN = ".command.run"
CMD_OUT = ".command.out"
CMD_ERR = ".command.err"
CMD_LOG = ".command.log"
CMD_EXIT = ".exitcode"
CMD_IN = ".command.in"


def command_script(script: str) -> str:
    body = script.strip("\n")
    return f"#!/bin/bash -ue\n{body}\n"


def executor_command() -> list[str]:
    """The one executor's command, as nf-ga4gh builds it."""
    return [
        "bash",
        "-o",
        "pipefail",
        "-c",
        f"bash {WORK_DIR}/{CMD_RUN} 2>&1 | tee {WORK_DIR}/{CMD_LOG}",
    ]


def command_run(task_name: str, remote_bin_dir: str | None, has_stdin: bool = False) -> str:
    """The `.command.run` wrapper for one task."""
    bin_setup = ""
    if remote_bin_dir:
        src = shlex.quote(remote_bin_dir)
        bin_setup = (
            'mkdir -p "$PWD/nextflow-bin/"\n'
            f'    cp -r {src}/* "$PWD/nextflow-bin/"\n'
            '    chmod +x "$PWD"/nextflow-bin/* || true\n'
            '    export PATH="$PWD/nextflow-bin:$PATH"\n'
        )
    stdin = f" < {CMD_IN}" if has_stdin else ""
    return f"""#!/bin/bash
# NEXTFLOW TASK: {task_name}
# (written by tescape's nf-ga4gh replay harness in the shape of Nextflow's .command.run)
set -e
set -u
NXF_DEBUG=${{NXF_DEBUG:=0}}; [[ $NXF_DEBUG > 1 ]] && set -x
NXF_ENTRY=${{1:-nxf_main}}
NXF_CHDIR={WORK_DIR}

nxf_record_exit() {{
    exit_status=${{nxf_main_ret:=$?}}
    printf -- "$exit_status" > {CMD_EXIT}
    set +u
    exit "$exit_status"
}}

nxf_forward_term() {{
    set +e
    [[ "${{nxf_pid:-}}" ]] && kill "$nxf_pid" 2>/dev/null
}}

nxf_launch() {{
    /bin/bash -ue {CMD_SCRIPT}{stdin}
}}

nxf_main() {{
    trap nxf_record_exit EXIT
    trap nxf_forward_term TERM INT USR2
    [[ "${{NXF_CHDIR:-}}" ]] && cd "$NXF_CHDIR"
    {bin_setup.rstrip()}
    touch .command.begin
    set +e
    # stdout → .command.out and the task log, stderr → .command.err and the task log
    (set -o pipefail; (nxf_launch | tee {CMD_OUT}) 3>&1 1>&2 2>&3 | tee {CMD_ERR}) &
    nxf_pid=$!
    wait "$nxf_pid" || nxf_main_ret=$?
}}

$NXF_ENTRY
"""
