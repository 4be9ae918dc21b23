"""A lab host's Redfish BMC: the subset of DMTF Redfish that fence_redfish and sushy use, over HTTPS.

One service per host, on the root namespace's loopback (like the IPMI BMC of lab/bmc.py), run by the
lab's keeper (`start(lab, host)` records it in the lab state, so `down` ends it):
  GET   /redfish, /redfish/v1/                 service root (no auth, as the standard has it)
  GET   /redfish/v1/Systems                    one member: /redfish/v1/Systems/1
  GET   /redfish/v1/Systems/1                  PowerState, Boot (override target/enabled and AllowableValues)
  PATCH /redfish/v1/Systems/1                  {"Boot": {"BootSourceOverrideTarget": "Pxe"|"Hdd"|"None",
                                                         "BootSourceOverrideEnabled": "Once"|"Continuous"|"Disabled"}}
  POST  /redfish/v1/Systems/1/Actions/ComputerSystem.Reset   {"ResetType": On|ForceOff|GracefulShutdown|
                                                                            ForceRestart|PowerCycle}
Basic auth on everything but the service root. Power goes through the same lab functions as the IPMI
BMC (lab/power.py: power_loss, boot); the next boot device and the power log are the host's files of
lab/bootdev.py, shared with the IPMI BMC (a once-override is consumed by the next power-on).
Semantics real BMCs have and clients must live with: ForceOff or GracefulShutdown of a system that is
already off answers 409 Conflict; a power-on answers at once and boots in the background (PowerState
is On from the request). A file `bmc-no-bootdev` in the host's directory makes the boot override go
unanswered (the client times out): the fault of a BMC that ignores boot-device requests.

  python -m lab.redfish --state STATE_JSON --host h1 --port-file FILE [--port P] [--cert C --key K]
"""
from __future__ import annotations

import base64
import hmac
import ssl
import sys
import threading
import time
import uuid as uuidlib
from pathlib import Path

from dataclasses import dataclass

from flask import Flask, Response, jsonify, request

from lab import bootdev, power
from lab.bmc import _host_from_state, announce_port, arguments, power_on_from_state
from lab.certs import CA

VIA = "redfish"
NO_BOOTDEV = "bmc-no-bootdev"  # the IPMI BMC's fault file too (Lab.refuse_bootdev)
SYSTEM = "/redfish/v1/Systems/1"
RESET = f"{SYSTEM}/Actions/ComputerSystem.Reset"
RESET_TYPES = ["On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"]
TARGETS = {"Pxe": "pxe", "Hdd": "disk", "None": None}  # Redfish -> lab/bootdev.py (None: no override)
ENABLED = ["Disabled", "Once", "Continuous"]
UNANSWERED_S = 60.0  # how long a request the BMC "ignores" is held before it gives up


def _error(status: int, message: str, code: str = "Base.1.0.GeneralError") -> Response:
    """A Redfish error body (what sushy parses into its exception's message)."""
    response = jsonify({"error": {"code": code, "message": message,
                                  "@Message.ExtendedInfo": [{"MessageId": code, "Message": message}]}})
    response.status_code = status
    return response


class HostPower:
    """The host's power as this BMC drives it: one request at a time, a power-on boots in the background."""

    def __init__(self, state_file: Path, host_name: str):
        self.state_file, self.host_name = state_file, host_name
        self._lock = threading.Lock()
        self._booting = threading.Event()

    def host(self):
        return _host_from_state(self.state_file, self.host_name)

    def is_on(self) -> bool:
        return self._booting.is_set() or power.is_on(self.host()[0])

    def off(self) -> None:
        with self._lock:
            power.power_loss(self.host()[0])

    def on(self) -> None:
        self._booting.set()
        threading.Thread(target=self._boot, daemon=True).start()

    def _boot(self) -> None:
        with self._lock:
            try:
                target = power_on_from_state(self.state_file, self.host_name)  # pxe: a reinstall
                print(f"redfish {self.host_name}: powered on (boot target {target})", flush=True)
            except (OSError, TimeoutError) as e:
                print(f"redfish {self.host_name}: power on failed: {e}", flush=True)
            finally:
                self._booting.clear()


def create_app(state_file: Path, host_name: str, user: str, password: str) -> Flask:
    app = Flask(__name__)
    hp = HostPower(state_file, host_name)
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    system_uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"lab-redfish:{state_file}:{host_name}"))

    @app.before_request
    def authenticate():
        if request.path.rstrip("/") in ("/redfish", "/redfish/v1"):
            return None
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            response = _error(401, "authentication required", "Base.1.0.NoValidSession")
            response.headers["WWW-Authenticate"] = 'Basic realm="lab BMC"'
            return response
        return None

    @app.get("/redfish")
    @app.get("/redfish/")
    def versions():
        return jsonify({"v1": "/redfish/v1/"})

    @app.get("/redfish/v1")
    @app.get("/redfish/v1/")
    def root():
        return jsonify({"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
                        "Id": "RootService", "Name": "Lab BMC of " + host_name, "RedfishVersion": "1.6.0",
                        "UUID": system_uuid, "Systems": {"@odata.id": "/redfish/v1/Systems"}})

    @app.get("/redfish/v1/Systems")
    def systems():
        return jsonify({"@odata.id": "/redfish/v1/Systems",
                        "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                        "Name": "Computer System Collection", "Members@odata.count": 1,
                        "Members": [{"@odata.id": SYSTEM}]})

    def system_view() -> dict:
        host_dir = hp.host()[0].dir
        override = (Path(host_dir) / bootdev.NEXT_BOOT).exists()
        device = bootdev.read(host_dir)
        target = {"pxe": "Pxe", "disk": "Hdd"}[device.target] if override else "None"
        enabled = ("Once" if device.once else "Continuous") if override else "Disabled"
        return {"@odata.id": SYSTEM, "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem", "Id": "1",
                "Name": host_name, "UUID": system_uuid, "SystemType": "Physical",
                "PowerState": "On" if hp.is_on() else "Off",
                "Status": {"State": "Enabled", "Health": "OK"},
                "Boot": {"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": enabled,
                         "BootSourceOverrideTarget@Redfish.AllowableValues": list(TARGETS),
                         "BootSourceOverrideEnabled@Redfish.AllowableValues": ENABLED},
                "Actions": {"#ComputerSystem.Reset": {"target": RESET,
                                                      "ResetType@Redfish.AllowableValues": RESET_TYPES}}}

    @app.get(SYSTEM)
    def system():
        return jsonify(system_view())

    @app.patch(SYSTEM)
    def patch_system():
        host_dir = hp.host()[0].dir
        if (Path(host_dir) / NO_BOOTDEV).exists():
            time.sleep(UNANSWERED_S)  # the client's timeout ends it first
            return _error(503, "the BMC did not handle the request")
        boot = (request.get_json(silent=True) or {}).get("Boot")
        if not isinstance(boot, dict) or not boot:
            return _error(400, "PATCH takes {\"Boot\": {...}}", "Base.1.0.PropertyMissing")
        current = system_view()["Boot"]
        target = boot.get("BootSourceOverrideTarget", current["BootSourceOverrideTarget"])
        enabled = boot.get("BootSourceOverrideEnabled", current["BootSourceOverrideEnabled"])
        if target not in TARGETS or enabled not in ENABLED:
            return _error(400, f"BootSourceOverrideTarget must be one of {list(TARGETS)}, "
                          f"BootSourceOverrideEnabled one of {ENABLED}", "Base.1.0.PropertyValueNotInList")
        if "BootSourceOverrideTarget" in boot and target != "None" and enabled == "Disabled":
            enabled = "Once"  # a target set with the override disabled: BMCs take it as a one-time override
        if TARGETS[target] is None or enabled == "Disabled":
            (Path(host_dir) / bootdev.NEXT_BOOT).unlink(missing_ok=True)
            bootdev.log_power(host_dir, VIA, "bootdev-disk")
        else:
            bootdev.write(host_dir, TARGETS[target], once=enabled == "Once")
            bootdev.log_power(host_dir, VIA, f"bootdev-{TARGETS[target]}")
        return jsonify(system_view())

    @app.post(RESET)
    def reset():
        kind = (request.get_json(silent=True) or {}).get("ResetType")
        if kind not in RESET_TYPES:
            return _error(400, f"ResetType must be one of {RESET_TYPES}", "Base.1.0.ActionParameterNotSupported")
        host_dir = hp.host()[0].dir
        on = hp.is_on()
        if kind in ("ForceOff", "GracefulShutdown"):
            if not on:  # what real BMCs do; the remediator counts it as off once status says off
                return _error(409, "the system is already powered off", "Base.1.0.ResourceInStandby")
            bootdev.log_power(host_dir, VIA, "off")
            hp.off()  # no guest agent to ask: a graceful shutdown is a hard off in the lab
        elif kind == "On":
            if not on:
                bootdev.log_power(host_dir, VIA, "on")
                hp.on()
        else:  # ForceRestart, PowerCycle: off (if on) then on, like the IPMI BMC's lenient cycle
            bootdev.log_power(host_dir, VIA, "cycle" if kind == "PowerCycle" else "reset")
            hp.off()
            hp.on()
        return Response(status=204)

    return app


def serve(app: Flask, port: int, cert: Path | None, key: Path | None):
    """cheroot's WSGI server on 127.0.0.1 (port 0: a free one), HTTPS when given a certificate."""
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    server = wsgi.Server(("127.0.0.1", port), app, numthreads=4)
    if cert is not None:
        adapter = BuiltinSSLAdapter(str(cert), str(key))
        adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
        server.ssl_adapter = adapter
    server.prepare()
    return server


@dataclass(frozen=True)
class Endpoint:
    """How a client reaches a host's Redfish BMC (fence_redfish: --ip 127.0.0.1 --ipport PORT --ssl-insecure)."""

    host: str
    port: int
    user: str
    password: str
    tls: bool
    ca_cert: str | None  # the lab CA that signed the service's certificate (verify against it, or skip)
    address: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}:{self.port}"


def endpoint(lab, host) -> Endpoint | None:
    """The host's Redfish BMC from the lab's state (None when it has none)."""
    name = lab.host(host).name
    for d in lab.daemons:
        if d["name"] == f"redfish-{name}" and "redfish" in d:
            return Endpoint(**d["redfish"])
    return None


def start(lab, host, *, tls: bool = True, timeout: float = 10.0) -> Endpoint:
    """Start the host's Redfish BMC through the lab's keeper (a lab daemon: `down` ends it); its port is
    recorded in the lab state. TLS by default: fence_redfish speaks only HTTPS."""
    h = lab.host(host)
    found = endpoint(lab, h)
    if found is not None and lab.daemon_alive(f"redfish-{h.name}"):
        return found
    run_dir = lab.state_file.parent
    port_file = run_dir / f"{h.name}.redfish-port"
    port_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "lab.redfish", "--state", str(lab.state_file), "--host", h.name,
            "--port-file", str(port_file), "--user", h.bmc_user, "--password", h.bmc_password]
    ca_cert = None
    if tls:  # one certificate for 127.0.0.1 serves every host's BMC of the lab
        ca_dir = run_dir / "redfish-ca"
        cert, key = ca_dir / "redfish.crt", ca_dir / "redfish.key"
        if not cert.exists():
            CA(ca_dir, "lab Redfish CA").issue("redfish", ips=["127.0.0.1"])
        argv += ["--cert", str(cert), "--key", str(key)]
        ca_cert = str(ca_dir / "ca.crt")
    pid = lab.spawn_daemon(f"redfish-{h.name}", argv)
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if not lab.daemon_alive(f"redfish-{h.name}") or time.monotonic() > deadline:
            log = run_dir / f"redfish-{h.name}.log"
            raise RuntimeError(f"Redfish BMC of {h.name} did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.02)
    found = Endpoint(h.name, int(port_file.read_text()), h.bmc_user, h.bmc_password, tls, ca_cert)
    record = next(d for d in lab.daemons if d["pid"] == pid)
    record["redfish"] = {k: getattr(found, k) for k in ("host", "port", "user", "password", "tls", "ca_cert")}
    lab._save()
    return found


def main() -> None:
    ap = arguments("python -m lab.redfish")
    ap.add_argument("--cert", type=Path)
    ap.add_argument("--key", type=Path)
    args = ap.parse_args()
    server = serve(create_app(args.state, args.host, args.user, args.password), args.port, args.cert, args.key)
    port = server.bind_addr[1]
    announce_port(args.port_file, port)
    print(f"redfish {args.host} listening on {'https' if args.cert else 'http'}://127.0.0.1:{port}", flush=True)
    try:
        server.serve()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
