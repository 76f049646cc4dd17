"""The static cluster definitions: KubeRay manifests against KubeRay's own CRD schemas,
the cluster-launcher config against Ray's schema, and the Dockerfile against the Ray
that warmtune is installed with.

A Kubernetes API server validates a custom resource against the CRD's OpenAPI v3
schema and silently prunes fields the schema does not declare; ``kubectl apply
--validate=strict`` rejects them instead. :func:`k8s_errors` does both: JSON-schema
validation (with Kubernetes' ``nullable``, ``x-kubernetes-int-or-string`` and
``int32``/``int64`` formats) and a walk that reports every undeclared field. CEL
rules (``x-kubernetes-validations``) are not evaluated; the CRDs here use them only
for immutability and ``managedBy``.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from packaging.specifiers import SpecifierSet

from warmtune.spec import load_job

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER = REPO_ROOT / "cluster"
KUBERAY_FILES = sorted((CLUSTER / "kuberay").glob("*.yaml"))
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
IMAGE = f"warmtune:{importlib.metadata.version('warmtune')}"

# ObjectMeta fields a client may set; the API server validates metadata itself.
_OBJECT_META = {"name", "namespace", "labels", "annotations", "generateName", "finalizers"}
_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# ---------------------------------------------------------------------------------------
# Kubernetes structural-schema validation
# ---------------------------------------------------------------------------------------
def _k8s_to_jsonschema(node: Any) -> Any:
    """The CRD schema as plain JSON Schema: ``nullable`` and int-or-string made explicit."""
    if isinstance(node, list):
        return [_k8s_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _k8s_to_jsonschema(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        # An integer, or a string (a quantity's string form checked by its
        # `pattern`, which JSON Schema applies to strings only). Never a float.
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if out.pop("nullable", False):
        return {"anyOf": [{"type": "null"}, out]}
    return out


_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("int32")
def _int32(value: Any) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_FORMATS.checks("int64")
def _int64(value: Any) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Fields of ``value`` that ``schema`` does not declare (what the API server would
    prune), plus duplicate keys in ``x-kubernetes-list-type: map/set`` lists."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if props is not None and key in props:
                yield from unknown_fields(item, props[key], where)
            elif isinstance(extra, dict):
                yield from unknown_fields(item, extra, where)
            elif props is not None or extra is False:
                yield f"{where}: unknown field (declared here: {', '.join(sorted(props or {}))})"
    elif isinstance(value, list):
        items = schema.get("items", {})
        for i, item in enumerate(value):
            yield from unknown_fields(item, items, f"{path}[{i}]")
        kind = schema.get("x-kubernetes-list-type")
        if kind == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
            for dup in sorted({k for k in seen if seen.count(k) > 1}, key=str):
                yield f"{path}: duplicate entry for {dict(zip(keys, dup, strict=True))}"
        elif kind == "set":
            dumped = [json.dumps(v, sort_keys=True) for v in value]
            for dup in sorted({d for d in dumped if dumped.count(d) > 1}):
                yield f"{path}: duplicate set entry {dup}"


def k8s_errors(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Everything the API server (with strict field validation) would reject in ``doc``."""
    validator = jsonschema.Draft7Validator(_k8s_to_jsonschema(schema), format_checker=_FORMATS)
    errors = [
        f"{_path(e.absolute_path)}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]
    errors += list(unknown_fields({k: v for k, v in doc.items() if k != "metadata"}, schema))
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        errors.append("metadata.name: required; give the resource a name")
    else:
        errors += [f"metadata.{k}: unknown field" for k in sorted(set(meta) - _OBJECT_META)]
        if not _DNS_1123_LABEL.match(str(meta["name"])) or len(str(meta["name"])) > 63:
            errors.append(f"metadata.name: {meta['name']!r} is not a DNS-1123 label")
    return errors


@pytest.fixture(scope="module")
def crd_schemas(need_data) -> dict[str, dict[str, Any]]:
    """Kind -> the served v1 openAPIV3Schema of KubeRay's CRD."""
    schemas = {}
    for kind, name in CRD_FILES.items():
        text = (need_data("kuberay-crds") / name).read_text()
        crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        assert crd["spec"]["names"]["kind"] == kind
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        assert v1["served"] and v1["storage"]
        schemas[kind] = v1["schema"]["openAPIV3Schema"]
    return schemas


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for path in KUBERAY_FILES for d in _docs(path) if d.get("kind") == kind]


def _cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every RayCluster spec: the RayCluster's own and each RayJob's inline one."""
    specs = [(d["metadata"]["name"], d["spec"]) for d in _by_kind("RayCluster")]
    specs += [(d["metadata"]["name"], d["spec"]["rayClusterSpec"]) for d in _by_kind("RayJob")]
    return specs


def _containers(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    groups = [("head", spec["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    return [(name, c) for name, g in groups for c in g["template"]["spec"]["containers"]]


# ---------------------------------------------------------------------------------------
# KubeRay manifests
# ---------------------------------------------------------------------------------------
def test_both_kinds_are_defined():
    assert [p.name for p in KUBERAY_FILES] == ["raycluster.yaml", "rayjob.yaml"]
    assert len(_by_kind("RayCluster")) == 1 and len(_by_kind("RayJob")) == 1


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_every_ray_resource_is_valid_against_the_kuberay_crd(path, crd_schemas):
    docs = [d for d in _docs(path) if d.get("kind") in CRD_FILES]
    assert docs, f"{path.name} defines no RayCluster or RayJob"
    for doc in docs:
        assert doc["apiVersion"] == "ray.io/v1"
        assert k8s_errors(doc, crd_schemas[doc["kind"]]) == [], doc["kind"]


def test_every_document_is_a_known_kind():
    kinds = {(d["apiVersion"], d["kind"]) for p in KUBERAY_FILES for d in _docs(p)}
    assert kinds == {("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob"), ("v1", "ConfigMap")}


@pytest.mark.parametrize(
    "name,spec", _cluster_specs(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_clusters_run_the_installed_ray_with_token_auth_and_the_warmtune_image(name, spec):
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    for group, container in _containers(spec):
        assert container["image"] == IMAGE, (name, group)
        env = {e["name"] for e in container.get("env", [])}
        # KubeRay sets the token; a manifest that sets these itself could turn it off.
        assert not env & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, (name, group)
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits)
    head = spec["headGroupSpec"]["rayStartParams"]
    assert head["metrics-export-port"] == "8080"
    for group in spec["workerGroupSpecs"]:
        assert group["rayStartParams"]["metrics-export-port"] == "8080"
        assert 0 == group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]


def test_the_raycluster_autoscales_one_gpu_per_worker_on_gpu_nodes():
    (cluster,) = _by_kind("RayCluster")
    (gpu,) = cluster["spec"]["workerGroupSpecs"]
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (0, 8)
    pod = gpu["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    head = cluster["spec"]["headGroupSpec"]
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_the_rayjob_runs_the_job_file_from_its_configmap(tmp_path):
    (job,) = _by_kind("RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["metadata"]["warmtune-job"]
    command = spec["entrypoint"].split()
    assert command[:2] == ["warmtune", "run"]
    job_path = Path(command[2])
    (head,) = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m["name"] for m in head["volumeMounts"]}
    volumes = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    volume = {v["name"]: v for v in volumes}[mounts[str(job_path.parent)]]
    (config_map,) = [
        d for d in _by_kind("ConfigMap") if d["metadata"]["name"] == volume["configMap"]["name"]
    ]
    text = config_map["data"][job_path.name]
    # The shipped job file is one warmtune accepts (validated as `warmtune validate` does).
    local = tmp_path / job_path.name
    local.write_text(text)
    job_spec = load_job(local)
    assert job_spec.name == spec["metadata"]["warmtune-job"]
    assert job_spec.task.name == spec["metadata"]["warmtune-task"]


def _raycluster() -> dict[str, Any]:
    return copy.deepcopy(_by_kind("RayCluster")[0])


def test_a_misspelled_field_is_reported_with_its_path(crd_schemas):
    broken = _raycluster()
    group = broken["spec"]["workerGroupSpecs"][0]
    group["maxReplica"] = group.pop("maxReplicas")
    group["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    errors = k8s_errors(broken, crd_schemas["RayCluster"])
    assert "spec.workerGroupSpecs[0]: 'maxReplicas' is a required property" in errors
    assert any(e.startswith("spec.workerGroupSpecs[0].maxReplica: unknown field") for e in errors)
    assert any(
        e.startswith("spec.workerGroupSpecs[0].template.spec.containers[0].imagePullPolicyy:")
        for e in errors
    )


def test_wrong_types_are_reported(crd_schemas):
    broken = _raycluster()
    group = broken["spec"]["workerGroupSpecs"][0]
    group["maxReplicas"] = "8"
    group["rayStartParams"]["metrics-export-port"] = 8080  # rayStartParams are strings
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["cpu"] = 0.5  # int-or-string: a float is neither
    limits["memory"] = "28 gigs"  # a string must be a quantity
    broken["spec"]["authOptions"]["mode"] = "tokens"
    errors = k8s_errors(broken, crd_schemas["RayCluster"])
    expected = [
        "spec.workerGroupSpecs[0].maxReplicas: '8' is not of type 'integer'",
        "spec.workerGroupSpecs[0].rayStartParams.metrics-export-port: 8080 is not of type 'string'",
        "spec.workerGroupSpecs[0].template.spec.containers[0].resources.limits.cpu: "
        "0.5 is not of type 'integer', 'string'",
        "spec.authOptions.mode: 'tokens' is not one of ['disabled', 'token']",
    ]
    for line in expected:
        assert line in errors
    memory = "spec.workerGroupSpecs[0].template.spec.containers[0].resources.limits.memory"
    assert any(e.startswith(f"{memory}: '28 gigs' does not match") for e in errors)


def test_int_or_string_takes_integers_and_quantity_strings(crd_schemas):
    ok = _raycluster()
    limits = ok["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    limits["limits"].update({"cpu": 7, "memory": "28Gi", "nvidia.com/gpu": "1"})
    assert k8s_errors(ok, crd_schemas["RayCluster"]) == []


def test_int32_range_duplicate_list_keys_and_metadata_are_checked(crd_schemas):
    broken = _raycluster()
    broken["metadata"]["Name"] = broken["metadata"].pop("name")
    container = broken["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["ports"].append({"containerPort": 8080, "name": "metrics-again"})
    broken["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 2**31
    errors = k8s_errors(broken, crd_schemas["RayCluster"])
    assert "metadata.name: required; give the resource a name" in errors
    assert any(
        "containers[0].ports: duplicate entry for {'containerPort': 8080" in e for e in errors
    )
    assert "spec.workerGroupSpecs[0].maxReplicas: 2147483648 is not a 'int32'" in errors


def test_a_broken_rayjob_is_rejected(crd_schemas):
    (job,) = copy.deepcopy(_by_kind("RayJob"))
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    job["spec"]["ttlSecondsAfterFinished"] = "600"
    errors = k8s_errors(job, crd_schemas["RayJob"])
    assert any(e.startswith("spec.shutdownAfterJobFinish: unknown field") for e in errors)
    assert "spec.ttlSecondsAfterFinished: '600' is not of type 'integer'" in errors


# ---------------------------------------------------------------------------------------
# Cluster launcher
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_schema() -> dict[str, Any]:
    """The schema `ray up` validates cluster configs against, from the installed Ray."""
    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def launcher_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Ray's schema, plus what `ray up` checks beyond it: the head node type exists and
    worker minimums fit their maximums."""
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{_path(e.absolute_path)}: {e.message}" for e in validator.iter_errors(config)]
    types = config.get("available_node_types", {})
    if config.get("head_node_type") not in types:
        errors.append(f"head_node_type: {config.get('head_node_type')!r} is not a node type")
    for name, node in types.items():
        low, high = (
            node.get(k, 0) if isinstance(node, dict) else 0 for k in ("min_workers", "max_workers")
        )
        if isinstance(low, int) and isinstance(high, int) and low > high:
            errors.append(f"available_node_types.{name}: min_workers > max_workers")
    return errors


def _aws() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


def test_the_aws_config_is_valid_against_rays_schema(ray_schema):
    assert launcher_errors(_aws(), ray_schema) == []


def test_the_aws_cluster_has_a_cpu_head_and_gpu_workers_on_the_warmtune_image():
    config = _aws()
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    assert config["docker"]["image"] == IMAGE
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    instances = {t["node_config"]["InstanceType"] for t in workers.values()}
    assert {"g5.xlarge", "p4d.24xlarge"} <= instances
    for node in workers.values():
        assert node["resources"]["GPU"] >= 1 and node["min_workers"] == 0
        assert node["max_workers"] <= config["max_workers"]


def test_every_aws_node_starts_ray_with_token_auth_and_gets_the_token():
    config = _aws()
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts, key
        for command in starts:
            assert "RAY_AUTH_MODE=token ray start" in command
            assert "--metrics-export-port=8080" in command
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start


def test_a_broken_launcher_config_is_rejected(ray_schema):
    broken = _aws()
    broken["max_worker"] = broken.pop("max_workers")
    broken["available_node_types"]["gpu-g5"]["min_workers"] = "two"
    broken["available_node_types"]["gpu-g5"]["resources"]["GPU"] = 0.5
    broken["head_node_type"] = "cpu-head"
    errors = launcher_errors(broken, ray_schema)
    assert any("'max_worker' was unexpected" in e for e in errors)
    assert "available_node_types.gpu-g5.min_workers: 'two' is not of type 'integer'" in errors
    assert "available_node_types.gpu-g5.resources.GPU: 0.5 is not of type 'integer'" in errors
    assert "head_node_type: 'cpu-head' is not a node type" in errors


# ---------------------------------------------------------------------------------------
# Docker image
# ---------------------------------------------------------------------------------------
def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in joined.splitlines()]
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "")
        for ln in lines
        if ln and not ln.startswith("#")
    ]


def test_the_image_is_rays_gpu_image_of_the_installed_ray_plus_the_warmtune_wheel():
    steps = _instructions((CLUSTER / "Dockerfile").read_text())
    (base,) = [arg for op, arg in steps if op == "FROM"]
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    # The image's Python (3.11) is one the package supports.
    requires = importlib.metadata.metadata("warmtune")["Requires-Python"]
    assert SpecifierSet(requires).contains("3.11")
    copies = [arg for op, arg in steps if op == "COPY"]
    assert any("dist/*.whl" in c for c in copies)
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    assert "pip install --no-cache-dir /tmp/wheels/*.whl" in runs
    # Built once; nothing fetched when a node starts.
    assert not [op for op, _ in steps if op in ("ENTRYPOINT", "CMD")]
    assert ("ENV", "RAY_AUTH_MODE=token") in steps


# ---------------------------------------------------------------------------------------
# Grafana dashboard
# ---------------------------------------------------------------------------------------
def _dashboard() -> dict[str, Any]:
    return json.loads((CLUSTER / "grafana" / "warmtune-dashboard.json").read_text())


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_the_dashboard_queries_exactly_the_metrics_warmtune_exports():
    from warmtune.cluster import metrics

    exported = {
        f"ray_{name}" for name in (metrics.TRIALS, metrics.BEST_OBJECTIVE, metrics.KB_TOP_WEIGHT)
    }
    exported |= {f"ray_{metrics.SUGGEST_LATENCY}_{s}" for s in ("bucket", "sum", "count")}
    queried = {m for e in _exprs(_dashboard()) for m in re.findall(r"\bray_warmtune_\w+", e)}
    assert queried <= exported, f"not exported by warmtune.cluster.metrics: {queried - exported}"
    for name in (metrics.TRIALS, metrics.BEST_OBJECTIVE, metrics.KB_TOP_WEIGHT):
        assert f"ray_{name}" in queried
    assert f"ray_{metrics.SUGGEST_LATENCY}_bucket" in queried


def test_the_dashboard_takes_its_datasource_and_job_label_as_variables():
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # Prometheus renames the exported `job` tag to `exported_job` unless honor_labels is set.
    assert variables["job_label"]["current"]["value"] == "exported_job"
    assert {o["value"] for o in variables["job_label"]["options"]} == {"exported_job", "job"}
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert '${job_label}=~"$job"' in t["expr"], t["expr"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
