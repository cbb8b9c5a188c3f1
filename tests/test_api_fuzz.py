"""Model-driven fuzzing of the API port (issue 9: no 500 on any input).

Requests for the nine operations trainforge serves are generated from botocore's SageMaker model:
valid values honouring min/max/enum/pattern, then (most of the time) one mutation: a constraint
broken once, a null, a wrong JSON type, an unknown member, a missing required member, deep
nesting, a body that is not JSON, wrong headers, methods or paths. One server answers them all.

Asserted on every answer: no 5xx; a non-2xx answer is AWS's JSON error shape (``__type`` and
``message``/``Message``, ``application/x-amz-json-1.1``); a rejected create stores nothing (the
name is not found afterwards, and at the end the account holds exactly the accepted jobs).

Valid creates must not run anything heavy: the server admits one instance at a time and a
``sleep`` job holds that slot for the whole test, so every fuzzed job only waits in the queue.

The seed is random unless ``TRAINFORGE_FUZZ_SEED`` is set, and printed on failure (Hypothesis
also prints a reproduction blob).
"""

from __future__ import annotations

import http.client
import json
import os
import random
from collections.abc import Iterator
from typing import Any

import model_samples
import pytest
from botocore.model import ListShape, MapShape, Shape, StructureShape
from conftest import ServerProcess, minimal_request, unique_name, wait_for_job
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from trainforge.awsmodel import SUPPORTED_OPERATIONS, operation

JSON_11 = "application/x-amz-json-1.1"
SEED = int(os.environ.get("TRAINFORGE_FUZZ_SEED") or random.randrange(2**32))
MAX_EXAMPLES = int(os.environ.get("TRAINFORGE_FUZZ_EXAMPLES") or 200)
# What the run saw, written as JSON to $TRAINFORGE_FUZZ_REPORT when set (bench/chaos.py's fuzz line).
TALLY = {"requests": 0, "server_errors": 0, "stored_while_rejected": 0}
AUTH = ("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sagemaker/aws4_request, "
        "SignedHeaders=host, Signature=00")
_JAVA_BOUNDS = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"


# ---- valid values, from the shapes: model_samples.valid(shape, rich=True) ----------------------
def valid(shape: Shape) -> st.SearchStrategy[Any]:
    return model_samples.valid(shape, rich=True)


# ---- mutations --------------------------------------------------------------------------------
Site = tuple[Any, Any, Shape]  # (parent container, key or index, shape of the value there)


def _sites(parent: Any, key: Any, shape: Shape) -> Iterator[Site]:
    """Every value of the request with its shape, the request itself first."""
    yield parent, key, shape
    value = parent[key]
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for name, member in shape.members.items():
            wire = member.serialization.get("name", name)
            if wire in value:
                yield from _sites(value, wire, member)
    elif isinstance(shape, ListShape) and isinstance(value, list):
        for i in range(len(value)):
            yield from _sites(value, i, shape.member)
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        for k in list(value):
            yield from _sites(value, k, shape.value)


def _breaking(shape: Shape, current: Any, draw: Any) -> list[Any]:
    """Values that break one constraint of ``shape`` each."""
    meta, kind, out = shape.metadata, shape.type_name, []
    if kind == "string":
        if meta.get("min", 0) > 0:
            out.append("")
        if meta.get("max", 10**9) < 100_000:
            out.append("x" * (int(meta["max"]) + 1))
        if meta.get("enum"):
            out.append("NotInTheEnumSet")
        if meta.get("pattern"):
            out.append(" \u00e9\t*/\\ no match \x00")
    elif kind in _JAVA_BOUNDS:
        out += [int(meta["min"]) - 1] if "min" in meta else []
        out += [int(meta["max"]) + 1] if "max" in meta else []
        out += [2**63, -(2**64), 2.5]
    elif kind in ("float", "double"):
        out += [float(meta["min"]) - 1] if "min" in meta else []
        out += [float(meta["max"]) + 1] if "max" in meta else []
    elif isinstance(shape, (ListShape, MapShape)):
        if meta.get("min", 0) > 0:
            out.append([] if isinstance(shape, ListShape) else {})
        if meta.get("max", 10**9) <= 300:
            n = int(meta["max"]) + 1
            if isinstance(shape, ListShape):
                one = current[0] if isinstance(current, list) and current else draw(valid(shape.member))
                out.append([one] * n)
            else:
                one = draw(valid(shape.value))
                out.append({f"k{i}": one for i in range(n)})
    return out


def _wrong_type(shape: Shape) -> list[Any]:
    if isinstance(shape, StructureShape):
        return ["text", 1, [], True]
    if isinstance(shape, ListShape):
        return ["text", {}, 1, False]
    if isinstance(shape, MapShape):
        return ["text", [], 1.5]
    if shape.type_name in ("string", "blob"):
        return [1, True, [], {}, 2.5]
    if shape.type_name == "boolean":
        return ["true", 0, [], {}]
    return ["12", True, [], {}, None if shape.type_name == "timestamp" else "NaN"]


DEEP = "@@nested@@"  # stands for the deep value in the request; the body gets its JSON text


def _nested(depth: int, as_dict: bool) -> bytes:
    """JSON text nested ``depth`` deep (deeper than Python's json module would write)."""
    return (b'{"n": ' * depth + b'"deep"' + b"}" * depth) if as_dict else b"[" * depth + b"1" + b"]" * depth


MUTATIONS = ["none", "constraint", "null", "null_element", "wrong_type", "unknown_member", "drop_required", "deep"]


def _mutate(holder: dict[str, Any], shape: StructureShape, kind: str, draw: Any) -> tuple[str, bytes]:
    """Apply one mutation of ``kind`` to the request ``holder["root"]`` (which it may replace): what
    was done (for the failure report), and the JSON text of the value DEEP stands for."""
    sites = list(_sites(holder, "root", shape))
    inner = sites[1:] or sites
    if kind == "constraint":
        choices = [(s, v) for s in inner for v in _breaking(s[2], s[0][s[1]], draw)]
        if choices:
            (parent, key, _), value = draw(st.sampled_from(choices))
            parent[key] = value
            return f"broke {key!r} with {str(value)[:60]!r}", b""
        kind = "wrong_type"
    collections = [(p, k) for p, k, s in sites if isinstance(s, (ListShape, MapShape))
                   and isinstance(p[k], list if isinstance(s, ListShape) else dict)]
    if kind == "null_element" and collections:
        parent, key = draw(st.sampled_from(collections))
        container = parent[key]
        if container and draw(st.booleans()):
            at = draw(st.sampled_from(list(range(len(container)) if isinstance(container, list) else container)))
            container[at] = None
        elif isinstance(container, list):
            container.append(None)
        else:
            container["nullValue"] = None
        return f"null element in {key!r}", b""
    if kind in ("null", "null_element"):
        parent, key, _ = draw(st.sampled_from(inner))
        parent[key] = None
        return f"null at {key!r}", b""
    if kind == "wrong_type":
        parent, key, s = draw(st.sampled_from(sites))
        parent[key] = draw(st.sampled_from(_wrong_type(s)))
        return f"wrong type at {key!r}", b""
    structs = [site for site in sites if isinstance(site[2], StructureShape) and isinstance(site[0][site[1]], dict)]
    if kind == "unknown_member" and structs:
        parent, key, _ = draw(st.sampled_from(structs))
        parent[key][draw(st.sampled_from(["Unknown", "trainingJobName", "__type", ""]))] = draw(
            st.sampled_from([1, "x", None, [], {"a": [1]}]))
        return f"unknown member in {key!r}", b""
    if kind == "drop_required":
        req = [(p, k, m) for p, k, s in structs for m in s.required_members
               if s.members[m].serialization.get("name", m) in p[k]]
        if req:
            parent, key, member = draw(st.sampled_from(req))
            del parent[key][member]
            return f"dropped {member}", b""
    if kind == "deep":
        parent, key, _ = draw(st.sampled_from(sites[1:] if len(sites) > 1 else structs))
        depth = draw(st.sampled_from([50, 98, 99, 100, 101, 324, 1100]))
        if parent is holder:
            parent[key]["Deep"] = DEEP
        else:
            parent[key] = DEEP
        return f"nested {depth} at {key!r}", _nested(depth, draw(st.booleans()))
    return "none", b""


# ---- the wire ---------------------------------------------------------------------------------
def _send(port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


def _check_answer(status: int, content_type: str, payload: bytes, what: str) -> Any:
    assert status < 500, f"{status} for {what}: {payload[:500]!r}"
    assert content_type == JSON_11, f"content type {content_type!r} ({status}) for {what}"
    answer = json.loads(payload)
    assert isinstance(answer, dict), f"{answer!r} for {what}"
    if status >= 300:
        message = answer.get("message", answer.get("Message"))
        assert isinstance(answer.get("__type"), str) and answer["__type"], f"no __type: {answer} for {what}"
        assert isinstance(message, str) and message, f"no message: {answer} for {what}"
    return answer


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """The server, and a few queued jobs (name -> ARN) for the operations on existing jobs."""
    srv = ServerProcess(tmp_path_factory.mktemp("tf-fuzz"), {"max_concurrent_instances": 1}).start()
    try:
        sm = srv.client()
        blocker = unique_name("fuzz-blocker")
        req = minimal_request(blocker)
        req["AlgorithmSpecification"]["ContainerArguments"] = ["sleep 900"]
        sm.create_training_job(**req)
        wait_for_job(sm, blocker, "Downloading", "Training", secondary=True, timeout=120)  # it holds the slot
        jobs = {}
        for i in range(3):
            name = f"fuzz-existing-{i}"
            jobs[name] = sm.create_training_job(**minimal_request(name, Tags=[{"Key": "k", "Value": str(i)}]))[
                "TrainingJobArn"]
        yield srv, jobs
    finally:
        srv.stop()
        srv.kill_agents()


def test_fuzz_the_api(fuzz_server: tuple[ServerProcess, dict[str, str]]) -> None:
    srv, existing_jobs = fuzz_server
    port = srv.port
    accepted = dict(existing_jobs)  # name -> ARN of every job a create made (and no delete removed)

    @seed(SEED)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(op=st.sampled_from(SUPPORTED_OPERATIONS), data=st.data())
    def run(op: str, data: st.DataObject) -> None:
        shape = operation(op).input_shape
        request = data.draw(valid(shape), label="valid request")
        if op == "CreateTrainingJob" and data.draw(st.booleans(), label="runnable base"):
            request = {**request, **{k: v for k, v in minimal_request(request["TrainingJobName"]).items()
                                     if k != "TrainingJobName"}}
        # Drawn whatever the state, so that replaying an example draws the same way.
        existing = data.draw(st.booleans(), label="use an existing job")
        index = data.draw(st.integers(0, 999), label="which one")
        if existing and accepted:
            name = sorted(accepted)[index % len(accepted)]
            for key, value in (("TrainingJobName", name), ("ResourceArn", accepted[name])):
                if key in request:
                    request[key] = value
        kind = data.draw(st.sampled_from([*MUTATIONS, "bad_json", "wire"]), label="mutation")
        holder = {"root": request}
        done, deep = _mutate(holder, shape, kind, data.draw) if kind in MUTATIONS else (kind, b"")
        request = holder["root"]
        body = json.dumps(request).encode()
        if deep:
            body = body.replace(json.dumps(DEEP).encode(), deep, 1)
        method, path = "POST", "/"
        headers = {"Content-Type": JSON_11, "X-Amz-Target": f"SageMaker.{op}", "Authorization": AUTH}
        if kind == "bad_json":
            body = data.draw(st.sampled_from([body[: len(body) // 2], body + b"}", b"\xff\xfe" + body, b"[" + body,
                                              b"null", b"1e999999", b'{"a": NaN}']))
        elif kind == "wire":
            change = data.draw(st.sampled_from(["content_type", "target", "method", "path"]))
            if change == "content_type":
                headers["Content-Type"] = data.draw(st.sampled_from(["text/plain", "", "application/xml",
                                                                     "multipart/form-data; boundary=x"]))
            elif change == "target":
                headers["X-Amz-Target"] = data.draw(st.sampled_from(
                    ["", "SageMaker.", op, f"sagemaker.{op}", f"SageMaker.{op}X", "Logs_20140328.GetLogEvents",
                     "SageMaker.ListEndpoints", f"SageMaker.{op}.Extra", "\u00e9"]))
            elif change == "method":
                method = data.draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]))
            else:
                path = data.draw(st.sampled_from(["/x", "/_trainforge/agent/v1/report",
                                                  "/_trainforge/agent/v1/credentials", "//", "/?a=b"]))
            done = f"wire: {change}"
        what = f"{method} {path} {op} ({done}): {body[:300]!r}"
        status, content_type, payload = _send(port, method, path, headers, body)
        TALLY["requests"] += 1
        TALLY["server_errors"] += status >= 500
        answer = _check_answer(status, content_type, payload, what)
        name = request.get("TrainingJobName") if isinstance(request, dict) else None
        if not isinstance(name, str):
            return
        served = status == 200 and headers["X-Amz-Target"] == f"SageMaker.{op}"  # "/?a=b" is "/" too
        if op == "CreateTrainingJob" and served:
            accepted[name] = answer["TrainingJobArn"]
        elif op == "DeleteTrainingJob" and served:
            accepted.pop(name, None)
        elif op == "CreateTrainingJob" and status != 200 and name not in accepted:
            got = _send(port, "POST", "/", {"X-Amz-Target": "SageMaker.DescribeTrainingJob", "Authorization": AUTH},
                        json.dumps({"TrainingJobName": name}).encode())
            TALLY["stored_while_rejected"] += got[0] != 400
            assert got[0] == 400, f"a rejected create was stored: {what} -> {answer}"

    try:
        run()
        listed = {s["TrainingJobName"] for page in srv.client().get_paginator("list_training_jobs")
                  .paginate() for s in page["TrainingJobSummaries"]}
        assert {n for n in listed if not n.startswith("fuzz-blocker")} == set(accepted)
    except BaseException:
        print(f"reproduce with TRAINFORGE_FUZZ_SEED={SEED}")
        raise
    finally:
        if os.environ.get("TRAINFORGE_FUZZ_REPORT"):
            with open(os.environ["TRAINFORGE_FUZZ_REPORT"], "w", encoding="utf-8") as f:
                json.dump(TALLY, f)
