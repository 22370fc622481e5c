// Dhow's TypeScript example: the generated client (proto/gen/ts, by protoc-gen-es) called
// over gRPC with Connect-ES (@connectrpc/connect-node's gRPC transport) against a live server.
//
// It writes a schema and a relationship, checks with the write's token, reads the proof of a
// denied check, reads the google.rpc.ErrorInfo of a refused call and follows a Watch stream
// until it sees a relationship written after the watch started. It exits 1 if any
// expectation fails (scripts/clients-check.sh runs it in CI).
//
// Usage: npx tsx main.ts [HOST:PORT]   (default: $DHOW_ADDR, else 127.0.0.1:50051)
import { randomBytes } from "node:crypto";
import { create, equals, toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  ConsistencySchema,
  type Relationship,
  RelationshipSchema,
  RelationshipUpdate_Operation,
} from "./gen/dhow/v1/core_pb.js";
import { ErrorReason } from "./gen/dhow/v1/error_reason_pb.js";
import {
  PermissionService,
  Permissionship,
  ProofSchema,
} from "./gen/dhow/v1/permission_service_pb.js";
import {
  RelationshipChange_Operation,
  RelationshipService,
  type WriteRequest,
  WriteRequestSchema,
} from "./gen/dhow/v1/relationship_service_pb.js";
import { SchemaService } from "./gen/dhow/v1/schema_service_pb.js";
import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

const schema = `
definition user {}

definition document {
    relation viewer: user
    permission view = viewer
}
`;

// Bounds every call and the wait for the Watch to deliver the change.
const timeoutMs = 30_000;

let failed = 0;

// Prints an expectation; a failed one is counted (the exit status is then 1) and the run goes on.
function expect(ok: boolean, what: string): boolean {
  if (ok) {
    console.log(`ok: ${what}`);
  } else {
    failed++;
    console.log(`FAILED: ${what}`);
  }
  return ok;
}

const obj = (objectType: string, objectId: string) => ({ objectType, objectId });
const user = (name: string) => ({ object: obj("user", name) });
const viewer = (doc: string, name: string): Relationship =>
  create(RelationshipSchema, { resource: obj("document", doc), relation: "viewer", subject: user(name) });
const touch = (relationship: Relationship): WriteRequest =>
  create(WriteRequestSchema, { updates: [{ operation: RelationshipUpdate_Operation.TOUCH, relationship }] });

async function run(addr: string): Promise<void> {
  const transport = createGrpcTransport({ baseUrl: `http://${addr}`, defaultTimeoutMs: timeoutMs });
  const schemas = createClient(SchemaService, transport);
  const relationships = createClient(RelationshipService, transport);
  const permissions = createClient(PermissionService, transport);
  // Unique objects per run: the server may hold other runs' relationships.
  const doc = `ts-${randomBytes(6).toString("hex")}`;

  // 1. A schema.
  const written = await schemas.writeSchema({ schema });
  expect((written.writtenAt?.token ?? "") !== "", "WriteSchema returns a token");

  // 2. A relationship; its token says "at least as fresh as this write".
  const write = await relationships.write(touch(viewer(doc, "alice")));
  const token = write.writtenAt;
  if (!expect(token !== undefined && token.token !== "", `Write of document:${doc}#viewer@user:alice returns token ${token?.token}`)) {
    return;
  }

  // 3. A check at least as fresh as the write: allowed.
  const fresh = create(ConsistencySchema, { requirement: { case: "atLeastAsFresh", value: token! } });
  const allowed = await permissions.check({
    consistency: fresh,
    resource: obj("document", doc),
    permission: "view",
    subject: user("alice"),
  });
  expect(
    allowed.permissionship === Permissionship.HAS_PERMISSION,
    "alice may view (Check with at_least_as_fresh = the write's token)",
  );

  // 4. A denied check with its proof.
  const denied = await permissions.check({
    consistency: fresh,
    resource: obj("document", doc),
    permission: "view",
    subject: user("bob"),
    explain: true,
  });
  const proof = denied.proof;
  expect(denied.permissionship === Permissionship.NO_PERMISSION, "bob may not view");
  expect(proof !== undefined && !proof.allowed, "the denial carries a proof (allowed = false)");
  const step = proof?.step;
  expect(step?.case === "member", "the proof starts at a member step");
  expect(
    step?.case === "member" && step.value.relation === "view" && step.value.resource?.objectId === doc,
    `the proof is about document:${doc}#view`,
  );
  if (proof) {
    console.log(`proof of the denial:\n${toJsonString(ProofSchema, proof, { prettySpaces: 2 })}`);
  }

  // 5. A refused call: the reason is in google.rpc.ErrorInfo in the status details.
  try {
    await permissions.check({
      consistency: fresh,
      resource: obj("document", doc),
      permission: "no_such_relation",
      subject: user("bob"),
    });
    expect(false, "a Check of an unknown relation is refused");
  } catch (e) {
    const err = ConnectError.from(e);
    expect(err.code === Code.FailedPrecondition, `refused with FAILED_PRECONDITION (${Code[err.code]})`);
    const infos = err.findDetails(ErrorInfoSchema);
    if (!expect(infos.length === 1, "the details hold one google.rpc.ErrorInfo")) {
      return;
    }
    const info = infos[0];
    // The reason is the name of a dhow.v1.ErrorReason value without its prefix, which is the
    // name protoc-gen-es gives the TypeScript enum member.
    const want = ErrorReason[ErrorReason.UNKNOWN_RELATION];
    expect(info.domain === "dhow.dev", `ErrorInfo.domain is dhow.dev (${info.domain})`);
    expect(info.reason === want, `ErrorInfo.reason is ${want} (${info.reason})`);
    expect(info.metadata["relation"] === "no_such_relation", `ErrorInfo.metadata: ${JSON.stringify(info.metadata)}`);
  }

  // 6. Watch from the write's token: every later change arrives, none can slip past between
  // opening the stream and the next write.
  const later = viewer(doc, "carol");
  const stop = new AbortController();
  const delivered = (async () => {
    const stream = relationships.watch(
      { optionalObjectTypes: ["document"], optionalStartCursor: token },
      { signal: stop.signal },
    );
    for await (const response of stream) {
      for (const change of response.changes) {
        if (change.relationship && equals(RelationshipSchema, change.relationship, later)) {
          return { change, through: response.changesThrough?.token };
        }
      }
    }
    throw new Error("the Watch stream ended before the later write arrived");
  })();
  try {
    const after = await relationships.write(touch(later));
    console.log(`wrote document:${doc}#viewer@user:carol at ${after.writtenAt?.token} after the watch started`);
    const { change, through } = await delivered;
    expect(
      change.operation === RelationshipChange_Operation.TOUCH,
      `Watch delivered the later write (TOUCH, through ${through})`,
    );
  } finally {
    stop.abort();
    await delivered.catch(() => undefined);
  }
}

const addr = process.argv[2] ?? process.env.DHOW_ADDR ?? "127.0.0.1:50051";
try {
  await run(addr);
} catch (e) {
  failed++;
  console.error(`FAILED: ${e instanceof Error ? e.message : String(e)}`);
}
if (failed > 0) {
  console.error(`FAILED: ${failed} expectations`);
  process.exit(1);
}
console.log("ts example: all expectations met");
