"""gRPC over TLS and mutual TLS: ``perucast-model-server --ssl_config_file`` with the official
stubs and with `serving.client.ForecastClient`.

Certificates come from ``trustme`` (a test CA; a server certificate for localhost, 127.0.0.1
and perucast.internal; client certificates from that CA and from another one). Two servers for
the module, started together: TLS (no client certificate asked) and mutual TLS (``custom_ca``
and ``client_verify: true``).
"""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import trustme
from serving_harness import ServerProcess, model_config_text
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from test_serving_client import TOY, TOY_OFFSETS, export_forecast_toy, toy_features, toy_p50

from serving.client import ForecastClient, ModelSpec, ServingClientError, TLSOptions

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


class TLSServerProcess(ServerProcess):
    """`ServerProcess` whose readiness check speaks TLS (the harness's check is plaintext).

    Workaround in this test file: `serving_harness.ServerProcess.wait_ready` polls over
    ``grpc.insecure_channel`` and so never sees a TLS server ready.
    """

    def __init__(self, args, log_path, credentials: grpc.ChannelCredentials, ready_models=()):
        super().__init__(args, log_path, rest=False, ready_models=ready_models)
        self.credentials = credentials

    def wait_ready(self, models=(), timeout: float = 120.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        with grpc.secure_channel(self.target, self.credentials) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            pending = list(models)
            while pending:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"model server exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                request = get_model_status_pb2.GetModelStatusRequest()
                request.model_spec.name = pending[0]
                try:
                    response = stub.GetModelStatus(request, timeout=2)
                    if any(s.state == AVAILABLE for s in response.model_version_status):
                        pending.pop(0)
                        continue
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"model server not ready:\n{self.log_tail()}")
                time.sleep(0.2)


def quoted(pem: bytes) -> str:
    return '"' + pem.decode().replace("\n", "\\n") + '"'


@pytest.fixture(scope="module")
def pki():
    ca, other_ca = trustme.CA(), trustme.CA()
    return {
        "ca": ca,
        "server": ca.issue_cert("localhost", "127.0.0.1", "perucast.internal"),
        "client": ca.issue_cert("forecast-service@perucast.internal"),
        "stranger": other_ca.issue_cert("forecast-service@perucast.internal"),
        "other_ca": other_ca,
    }


def credentials(pki, client: str | None = None, ca: str = "ca") -> grpc.ChannelCredentials:
    cert = pki[client] if client else None
    return grpc.ssl_channel_credentials(
        root_certificates=pki[ca].cert_pem.bytes(),
        private_key=cert.private_key_pem.bytes() if cert else None,
        certificate_chain=cert.cert_chain_pems[0].bytes() if cert else None,
    )


def tls_options(pki, client: str | None = None, **kwargs) -> TLSOptions:
    cert = pki[client] if client else None
    return TLSOptions(
        root_ca=pki["ca"].cert_pem.bytes(),
        client_cert=cert.cert_chain_pems[0].bytes() if cert else None,
        client_key=cert.private_key_pem.bytes() if cert else None,
        **kwargs,
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory, pki):
    """{"tls": ..., "mtls": ...}: both servers, started in parallel."""
    root = tmp_path_factory.mktemp("tls")
    export_forecast_toy(root / TOY, 1, TOY_OFFSETS[1])
    config = root / "models.config"
    config.write_text(model_config_text({TOY: root / TOY}))
    server_cert = pki["server"]
    key = server_cert.private_key_pem.bytes()
    chain = b"".join(pem.bytes() for pem in server_cert.cert_chain_pems)
    (root / "tls.config").write_text(f"server_key: {quoted(key)}\nserver_cert: {quoted(chain)}\n")
    (root / "mtls.config").write_text(
        f"server_key: {quoted(key)}\nserver_cert: {quoted(chain)}\n"
        f"custom_ca: {quoted(pki['ca'].cert_pem.bytes())}\nclient_verify: true\n"
    )
    processes = {
        mode: TLSServerProcess(
            [f"--model_config_file={config}", f"--ssl_config_file={root / f'{mode}.config'}"],
            root / f"{mode}.log",
            credentials(pki, client="client" if mode == "mtls" else None),
            ready_models=(TOY,),
        )
        for mode in ("tls", "mtls")
    }
    errors = []

    def start(process):
        try:
            process.start()
        except Exception as exc:  # reported below, after both starts ended
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in processes.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        if errors:
            raise errors[0]
        yield processes
    finally:
        for process in processes.values():
            if process.process is not None:
                assert process.stop() == 0


def status_call(target: str, creds: grpc.ChannelCredentials | None, **options):
    """GetModelStatus of the toy model with the official stub; the response or the RpcError."""
    channel_options = list(options.items())
    channel = (
        grpc.secure_channel(target, creds, channel_options)
        if creds is not None
        else grpc.insecure_channel(target, channel_options)
    )
    with channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = TOY
        try:
            return stub.GetModelStatus(request, timeout=10)
        except grpc.RpcError as err:
            return err


def states(response) -> dict[int, int]:
    assert not isinstance(response, grpc.RpcError), response
    return {s.version: s.state for s in response.model_version_status}


# --- TLS -----------------------------------------------------------------------------------------


def test_tls_official_stub_with_the_ca_works(servers, pki):
    assert states(status_call(servers["tls"].target, credentials(pki))) == {1: AVAILABLE}
    # By name, as services usually connect.
    localhost = f"localhost:{servers['tls'].grpc_port}"
    assert states(status_call(localhost, credentials(pki))) == {1: AVAILABLE}


def test_tls_refuses_plaintext_and_untrusted_servers(servers, pki):
    plaintext = status_call(servers["tls"].target, None)
    assert isinstance(plaintext, grpc.RpcError)
    assert plaintext.code() == grpc.StatusCode.UNAVAILABLE
    # A client trusting another CA rejects the server's certificate.
    untrusted = status_call(servers["tls"].target, credentials(pki, ca="other_ca"))
    assert isinstance(untrusted, grpc.RpcError)
    assert untrusted.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_server_name_override(servers, pki):
    target = servers["tls"].target
    ok = status_call(
        target, credentials(pki), **{"grpc.ssl_target_name_override": "perucast.internal"}
    )
    assert states(ok) == {1: AVAILABLE}
    wrong = status_call(
        target, credentials(pki), **{"grpc.ssl_target_name_override": "evil.example"}
    )
    assert isinstance(wrong, grpc.RpcError) and wrong.code() == grpc.StatusCode.UNAVAILABLE


def test_forecast_client_over_tls(servers, pki):
    features = toy_features()
    with ForecastClient(servers["tls"].target, model_name=TOY, tls=tls_options(pki)) as client:
        forecast = client.predict(features)
        assert client.status() == [(1, "AVAILABLE", "")]
    assert forecast.model_spec == ModelSpec(TOY, 1, "serving_default")
    np.testing.assert_allclose(forecast.p50, toy_p50(features, TOY_OFFSETS[1]))

    named = tls_options(pki, server_name="perucast.internal")
    with ForecastClient(servers["tls"].target, model_name=TOY, tls=named) as client:
        assert client.status() == [(1, "AVAILABLE", "")]
    wrong = tls_options(pki, server_name="evil.example")
    with (
        ForecastClient(servers["tls"].target, model_name=TOY, tls=wrong, retries=0) as client,
        pytest.raises(ServingClientError) as info,
    ):
        client.status()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    with (
        ForecastClient(servers["tls"].target, model_name=TOY, retries=0) as client,
        pytest.raises(ServingClientError) as info,
    ):
        client.status()  # plaintext against TLS
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


# --- mutual TLS ----------------------------------------------------------------------------------


def test_mtls_needs_a_client_certificate_signed_by_the_custom_ca(servers, pki):
    target = servers["mtls"].target
    assert states(status_call(target, credentials(pki, client="client"))) == {1: AVAILABLE}
    for refused in (
        status_call(target, credentials(pki)),  # no client certificate
        status_call(target, credentials(pki, client="stranger")),  # another CA's certificate
        status_call(target, None),  # plaintext
    ):
        assert isinstance(refused, grpc.RpcError)
        assert refused.code() == grpc.StatusCode.UNAVAILABLE


def test_forecast_client_over_mutual_tls(servers, pki, tmp_path):
    target = servers["mtls"].target
    features = toy_features(6)
    with ForecastClient(target, model_name=TOY, tls=tls_options(pki, client="client")) as client:
        forecast = client.predict(features)
    np.testing.assert_allclose(forecast.p50, toy_p50(features, TOY_OFFSETS[1]))

    # The same from PEM files.
    paths = {
        "ca.pem": pki["ca"].cert_pem,
        "client.pem": pki["client"].cert_chain_pems[0],
        "client.key": pki["client"].private_key_pem,
    }
    for name, blob in paths.items():
        blob.write_to_path(str(tmp_path / name))
    from_files = TLSOptions.from_files(
        tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    )
    with ForecastClient(target, model_name=TOY, tls=from_files) as client:
        assert client.status() == [(1, "AVAILABLE", "")]

    with (
        ForecastClient(target, model_name=TOY, tls=tls_options(pki), retries=0) as client,
        pytest.raises(ServingClientError) as info,
    ):
        client.predict(features)  # no client certificate
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_tls_options_are_checked():
    with pytest.raises(ValueError, match="go together"):
        TLSOptions(root_ca=None, client_cert=b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="not PEM"):
        TLSOptions(root_ca="/etc/ssl/ca.pem")
