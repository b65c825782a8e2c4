"""The workflow sandbox every worker and replayer of this project uses.

`cryptography` (approval signatures, domain/sshsig.py) is a native module that can be loaded only
once per process, and its Rust code imports Python modules lazily on first use: inside the sandbox
those imports would be re-executed and fail ("bad argument to internal function"). Passing the whole
package through makes the workflow use the worker's own, already loaded modules; they hold no
workflow state, so determinism is unaffected.

The worker also passes this project's own modules through (`strict=False`): the sandbox would
otherwise import the workflow's module afresh for every run it starts (its class definitions, the
`@workflow.defn` processing: ~15 ms of the worker's CPU per run, which a fleet of databases
multiplies). Those modules hold constants and classes only, no state between runs; what that
costs is the sandbox's runtime check of calls made *in* them (`datetime.now()` in workflow code
would no longer be refused). So tests run workflows with `strict=True` (every module reloaded,
every call checked) and replay the recorded histories under both.
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSTHROUGH = ("cryptography",)
# Imported by the workflows inside `imports_passed_through()` already, and the workflows themselves.
OWN_MODULES = ("workflows", "domain", "activities", "runtime")


def workflow_runner(*, strict: bool = False) -> SandboxedWorkflowRunner:
    modules = PASSTHROUGH if strict else (*PASSTHROUGH, *OWN_MODULES)
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules))
