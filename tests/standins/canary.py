"""A canary: an HTTP server that nothing should ever reach.

Hostile-input tests point attacker-controlled URLs at it and assert that its
`requests` stay empty. It answers every request (any method, any path) with a
body that would be worth stealing, so a test also sees what a leak would carry.
"""

from tests.standins._server import Reply, Request, StandIn

SECRET_BODY = {"AccessKeyId": "CANARY-ACCESS-KEY", "SecretAccessKey": "canary-secret"}


class CanaryServer(StandIn):
    """Records every request it receives; `status` sets what it answers."""

    def __init__(self, status: int = 200):
        super().__init__()
        self.status = status

    def url(self, path: str = "/latest/meta-data/iam/security-credentials/") -> str:
        return f"{self.origin}{path}"

    def route(self, req: Request) -> Reply:
        return Reply(self.status, SECRET_BODY)

    def fault_reply(self, fault, req: Request) -> Reply:
        return Reply(fault.status, SECRET_BODY)
