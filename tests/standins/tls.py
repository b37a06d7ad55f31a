"""A throw-away certificate authority for the HTTPS stand-ins (built with trustme)."""

import ssl
from pathlib import Path

import trustme


class TestCA:
    """A CA plus one server certificate valid for 127.0.0.1 and localhost."""

    __test__ = False  # not a pytest test class

    def __init__(self):
        self._ca = trustme.CA()
        self._server_cert = self._ca.issue_cert("127.0.0.1", "localhost")

    def ca_bundle_path(self, directory) -> str:
        """Write the CA certificate (PEM) into ``directory``; return its path.

        This is the file tests set as ``ONCALL_CA_BUNDLE`` / pass as ``verify=``.
        """
        path = Path(directory) / "standin-ca.pem"
        self._ca.cert_pem.write_to_path(str(path))
        return str(path)

    def server_ssl_context(self) -> ssl.SSLContext:
        """A server-side context presenting the 127.0.0.1/localhost certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(ctx)
        return ctx
