"""The workflow sandbox every worker and replayer of this project uses.

`cryptography` (approval signatures, domain/sshsig.py) is a native module that can be loaded only
once per process, and its Rust code imports Python modules lazily on first use: inside the sandbox
those imports would be re-executed and fail ("bad argument to internal function"). Passing the whole
package through makes the workflow use the worker's own, already loaded modules; they hold no
workflow state, so determinism is unaffected.
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSTHROUGH = ("cryptography",)


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))
