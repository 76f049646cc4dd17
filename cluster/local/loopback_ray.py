"""Ray's own CLI (``ray start ...``), with the node on the loopback address 127.0.0.1.

Ray binds a node's servers (the GCS, the raylet, the agents, the metrics exporter, the
workers) to loopback only when the node's IP is 127.0.0.1, and to every interface
otherwise. But ``ray start`` replaces a loopback ``--node-ip-address`` (and a loopback
``--address``) by this machine's network address
(``ray._private.services.resolve_ip_for_localhost``, Ray 2.60), so a cluster started
with Ray's CLI always listens beyond the machine. ``cluster/local/start.sh`` runs
``ray start`` through this file instead, which keeps loopback addresses as given.

Every process the node starts inherits ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's
switch for a loopback-only node (it makes ``ray.util.get_node_ip_address()`` answer
127.0.0.1), so the job drivers on the head connect to the loopback GCS as well.
Clients on this machine need the same: warmtune sets it for itself when the cluster
address is a loopback one, Ray's CLI needs the variable exported.
"""

import os
import sys

import ray
import ray._private.ray_constants as ray_constants
import ray._private.services as services
from ray.scripts.scripts import main

if not hasattr(services, "resolve_ip_for_localhost") or not hasattr(
    ray_constants, "ENABLE_RAY_CLUSTER"
):
    sys.exit(
        f"loopback_ray.py: Ray {ray.__version__} has no resolve_ip_for_localhost or "
        "ENABLE_RAY_CLUSTER (written for Ray 2.60); start the cluster with --bind network"
    )
_resolve = services.resolve_ip_for_localhost


def _keep_loopback(host: str) -> str:
    return host if services.is_localhost(host) else _resolve(host)


services.resolve_ip_for_localhost = _keep_loopback
# This process starts a node of a multi-node cluster, whatever the shell exported
# (`ray start --address` refuses to when the switch below is on); the processes it
# starts get the switch, which Ray reads when it is imported.
ray_constants.ENABLE_RAY_CLUSTER = True
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
sys.argv[0] = "ray"
sys.exit(main())
