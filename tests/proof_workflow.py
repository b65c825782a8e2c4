"""A tiny workflow that checks approval proofs in an update handler, as DeployWorkflow will: it
proves domain.approval_proof runs inside Temporal's workflow sandbox (tests/test_approval_proof.py).

The import goes through imports_passed_through(): the verifier uses `cryptography`, whose native
module cannot be imported a second time inside the sandbox (re-importing it there fails with
"SystemError: ... bad argument to internal function").
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.allowed_signers import parse_allowed_signers
    from domain.approval_proof import ApprovalStatement, Proven, verify_approval


@workflow.defn(name="ApprovalProofProbe")
class ApprovalProofProbe:
    """Waits for one proven approval of its `deploy` stage; refused attempts are answered and kept."""

    @workflow.init
    def __init__(self, allowed_signers: str, fingerprint: str) -> None:
        self._signers = parse_allowed_signers(allowed_signers)
        self._fingerprint = fingerprint
        self._verdicts: list[dict] = []

    @workflow.run
    async def run(self, allowed_signers: str, fingerprint: str) -> list[dict]:
        await workflow.wait_condition(lambda: any(v["accepted"] for v in self._verdicts))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._verdicts

    @workflow.update(name="approve_update")
    def approve_update(self, payload: dict) -> dict:
        info = workflow.info()
        statement = ApprovalStatement(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            stage=str(payload.get("stage")),
            decision="approve",
            approver=str(payload.get("approver")),
            fingerprint=self._fingerprint,
        )
        verdict = verify_approval(payload.get("signature"), statement, self._signers, at=workflow.now(),
                                  claims=payload)
        answer = ({"accepted": True, "principal": verdict.principal, "key": verdict.key_fingerprint}
                  if isinstance(verdict, Proven) else {"accepted": False, "reason": verdict.reason})
        self._verdicts.append(answer)
        return answer
