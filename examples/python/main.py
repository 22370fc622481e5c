"""Dhow's Python example: the generated client (proto/gen/python) against a live server.

Writes a schema and a relationship, checks with the write's token, reads the proof of a
denied check, reads the google.rpc.ErrorInfo of a refused call and follows a Watch stream
until it sees a relationship written after the watch started. Exits 1 if any expectation
fails (scripts/clients-check.sh runs it in CI).

Usage: python main.py [HOST:PORT]   (default: $DHOW_ADDR, else 127.0.0.1:50051)
Needs proto/gen/python on the import path (the default) or in $DHOW_GEN_PYTHON.
"""

import os
import queue
import sys
import threading
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(
    0, os.environ.get("DHOW_GEN_PYTHON", os.path.join(HERE, "..", "..", "proto", "gen", "python"))
)

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from dhow.v1 import (  # noqa: E402
    core_pb2,
    error_reason_pb2,
    permission_service_pb2,
    permission_service_pb2_grpc,
    relationship_service_pb2,
    relationship_service_pb2_grpc,
    schema_service_pb2,
    schema_service_pb2_grpc,
)

SCHEMA = """
definition user {}

definition document {
    relation viewer: user
    permission view = viewer
}
"""

TIMEOUT = 30.0  # seconds, for every call and for the Watch to deliver the change


class ExpectationFailed(Exception):
    pass


def expect(condition, what):
    if not condition:
        raise ExpectationFailed(what)
    print(f"ok: {what}")


def obj(object_type, object_id):
    return core_pb2.ObjectReference(object_type=object_type, object_id=object_id)


def user(name):
    return core_pb2.SubjectReference(object=obj("user", name))


def viewer(doc, name):
    return core_pb2.Relationship(resource=obj("document", doc), relation="viewer", subject=user(name))


def touch(rel):
    return core_pb2.RelationshipUpdate(operation=core_pb2.RelationshipUpdate.OPERATION_TOUCH, relationship=rel)


def run(addr):
    # Unique objects per run: the server may hold other runs' relationships.
    doc = f"py-{uuid.uuid4().hex[:12]}"
    with grpc.insecure_channel(addr) as channel:
        schemas = schema_service_pb2_grpc.SchemaServiceStub(channel)
        relationships = relationship_service_pb2_grpc.RelationshipServiceStub(channel)
        permissions = permission_service_pb2_grpc.PermissionServiceStub(channel)

        # 1. A schema.
        written = schemas.WriteSchema(schema_service_pb2.WriteSchemaRequest(schema=SCHEMA), timeout=TIMEOUT)
        expect(written.written_at.token != "", "WriteSchema returns a token")

        # 2. A relationship; its token says "at least as fresh as this write".
        write = relationships.Write(
            relationship_service_pb2.WriteRequest(updates=[touch(viewer(doc, "alice"))]), timeout=TIMEOUT
        )
        token = write.written_at
        expect(token.token != "", f"Write of document:{doc}#viewer@user:alice returns token {token.token}")

        # 3. A check at least as fresh as the write: allowed.
        fresh = core_pb2.Consistency(at_least_as_fresh=token)
        allowed = permissions.Check(
            permission_service_pb2.CheckRequest(
                consistency=fresh, resource=obj("document", doc), permission="view", subject=user("alice")
            ),
            timeout=TIMEOUT,
        )
        expect(
            allowed.permissionship == permission_service_pb2.PERMISSIONSHIP_HAS_PERMISSION,
            "alice may view (Check with at_least_as_fresh = the write's token)",
        )

        # 4. A denied check with its proof.
        denied = permissions.Check(
            permission_service_pb2.CheckRequest(
                consistency=fresh,
                resource=obj("document", doc),
                permission="view",
                subject=user("bob"),
                explain=True,
            ),
            timeout=TIMEOUT,
        )
        expect(denied.permissionship == permission_service_pb2.PERMISSIONSHIP_NO_PERMISSION, "bob may not view")
        expect(denied.HasField("proof") and not denied.proof.allowed, "the denial carries a proof (allowed = false)")
        expect(denied.proof.WhichOneof("step") == "member", "the proof starts at a member step")
        expect(
            denied.proof.member.relation == "view" and denied.proof.member.resource.object_id == doc,
            f"the proof is about document:{doc}#view",
        )
        print("proof of the denial:")
        print(json_format.MessageToJson(denied.proof, indent=2))

        # 5. A refused call: the reason is in google.rpc.ErrorInfo in the status details.
        try:
            permissions.Check(
                permission_service_pb2.CheckRequest(
                    consistency=fresh, resource=obj("document", doc), permission="no_such_relation", subject=user("bob")
                ),
                timeout=TIMEOUT,
            )
            raise ExpectationFailed("a Check of an unknown relation was answered")
        except grpc.RpcError as err:
            expect(err.code() == grpc.StatusCode.FAILED_PRECONDITION, f"refused with FAILED_PRECONDITION ({err.code()})")
            status = rpc_status.from_call(err)
            expect(status is not None, "the error carries google.rpc.Status details")
            infos = []
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    infos.append(info)
            expect(len(infos) == 1, "the details hold one google.rpc.ErrorInfo")
            info = infos[0]
            # The reason is the name of a dhow.v1.ErrorReason value without its prefix.
            want = error_reason_pb2.ErrorReason.Name(error_reason_pb2.ERROR_REASON_UNKNOWN_RELATION)
            want = want.removeprefix("ERROR_REASON_")
            expect(info.domain == "dhow.dev", f"ErrorInfo.domain is dhow.dev ({info.domain})")
            expect(info.reason == want, f"ErrorInfo.reason is {want} ({info.reason})")
            expect(info.metadata.get("relation") == "no_such_relation", f"ErrorInfo.metadata: {dict(info.metadata)}")

        # 6. Watch from the write's token: every later change arrives, none can slip past
        # between opening the stream and the next write.
        stream = relationships.Watch(
            relationship_service_pb2.WatchRequest(optional_object_types=["document"], optional_start_cursor=token),
            timeout=TIMEOUT,
        )
        seen = queue.Queue()

        def follow():
            try:
                for response in stream:
                    for change in response.changes:
                        seen.put(("change", change, response.changes_through.token))
            except grpc.RpcError as err:
                seen.put(("error", err, None))

        threading.Thread(target=follow, daemon=True).start()
        later = viewer(doc, "carol")
        after = relationships.Write(relationship_service_pb2.WriteRequest(updates=[touch(later)]), timeout=TIMEOUT)
        print(f"wrote document:{doc}#viewer@user:carol at {after.written_at.token} after the watch started")
        while True:
            try:
                kind, item, through = seen.get(timeout=TIMEOUT)
            except queue.Empty:
                raise ExpectationFailed("Watch did not deliver the later write in time") from None
            if kind == "error":
                if item.code() == grpc.StatusCode.CANCELLED:
                    continue
                raise ExpectationFailed(f"Watch failed: {item.code()} {item.details()}")
            if item.relationship == later:
                expect(
                    item.operation == relationship_service_pb2.RelationshipChange.OPERATION_TOUCH,
                    f"Watch delivered the later write (TOUCH, through {through})",
                )
                break
        stream.cancel()


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DHOW_ADDR", "127.0.0.1:50051")
    try:
        run(addr)
    except ExpectationFailed as failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        print(f"FAILED: unexpected error {err.code()}: {err.details()}", file=sys.stderr)
        return 1
    print("python example: all expectations met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
