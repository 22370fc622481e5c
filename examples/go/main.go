// Dhow's Go example: the generated client (proto/gen/go, module
// github.com/dhow-authz/dhow/gen/go) against a live server.
//
// It writes a schema and a relationship, checks with the write's token, reads the proof of a
// denied check, reads the google.rpc.ErrorInfo of a refused call and follows a Watch stream
// until it sees a relationship written after the watch started. It exits 1 if any
// expectation fails (scripts/clients-check.sh runs it in CI).
//
// Usage: go run . [HOST:PORT]   (default: $DHOW_ADDR, else 127.0.0.1:50051)
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	dhowv1 "github.com/dhow-authz/dhow/gen/go/dhow/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const schema = `
definition user {}

definition document {
    relation viewer: user
    permission view = viewer
}
`

// timeout bounds every call and the wait for the Watch to deliver the change.
const timeout = 30 * time.Second

// checker prints each expectation and counts those that failed: a failed one does not stop
// the run (later steps still show what they can), but the exit status is 1.
type checker struct{ failed int }

func (c *checker) expect(ok bool, format string, args ...any) bool {
	what := fmt.Sprintf(format, args...)
	if ok {
		fmt.Println("ok:", what)
	} else {
		c.failed++
		fmt.Println("FAILED:", what)
	}
	return ok
}

func obj(objectType, id string) *dhowv1.ObjectReference {
	return &dhowv1.ObjectReference{ObjectType: objectType, ObjectId: id}
}

func user(name string) *dhowv1.SubjectReference {
	return &dhowv1.SubjectReference{Object: obj("user", name)}
}

func viewer(doc, name string) *dhowv1.Relationship {
	return &dhowv1.Relationship{Resource: obj("document", doc), Relation: "viewer", Subject: user(name)}
}

func touch(rel *dhowv1.Relationship) *dhowv1.WriteRequest {
	return &dhowv1.WriteRequest{Updates: []*dhowv1.RelationshipUpdate{{
		Operation: dhowv1.RelationshipUpdate_OPERATION_TOUCH, Relationship: rel,
	}}}
}

func run(c *checker, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	schemas := dhowv1.NewSchemaServiceClient(conn)
	relationships := dhowv1.NewRelationshipServiceClient(conn)
	permissions := dhowv1.NewPermissionServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// Unique objects per run: the server may hold other runs' relationships.
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		return err
	}
	doc := "go-" + hex.EncodeToString(suffix)

	// 1. A schema.
	written, err := schemas.WriteSchema(ctx, &dhowv1.WriteSchemaRequest{Schema: schema})
	if err != nil {
		return err
	}
	c.expect(written.GetWrittenAt().GetToken() != "", "WriteSchema returns a token")

	// 2. A relationship; its token says "at least as fresh as this write".
	write, err := relationships.Write(ctx, touch(viewer(doc, "alice")))
	if err != nil {
		return err
	}
	token := write.GetWrittenAt()
	c.expect(token.GetToken() != "", "Write of document:%s#viewer@user:alice returns token %s", doc, token.GetToken())

	// 3. A check at least as fresh as the write: allowed.
	fresh := &dhowv1.Consistency{Requirement: &dhowv1.Consistency_AtLeastAsFresh{AtLeastAsFresh: token}}
	allowed, err := permissions.Check(ctx, &dhowv1.CheckRequest{
		Consistency: fresh, Resource: obj("document", doc), Permission: "view", Subject: user("alice"),
	})
	if err != nil {
		return err
	}
	c.expect(allowed.GetPermissionship() == dhowv1.Permissionship_PERMISSIONSHIP_HAS_PERMISSION,
		"alice may view (Check with at_least_as_fresh = the write's token)")

	// 4. A denied check with its proof.
	denied, err := permissions.Check(ctx, &dhowv1.CheckRequest{
		Consistency: fresh, Resource: obj("document", doc), Permission: "view", Subject: user("bob"), Explain: true,
	})
	if err != nil {
		return err
	}
	proof := denied.GetProof()
	member := proof.GetMember()
	c.expect(denied.GetPermissionship() == dhowv1.Permissionship_PERMISSIONSHIP_NO_PERMISSION, "bob may not view")
	c.expect(proof != nil && !proof.GetAllowed(), "the denial carries a proof (allowed = false)")
	c.expect(member != nil, "the proof starts at a member step")
	c.expect(member.GetRelation() == "view" && member.GetResource().GetObjectId() == doc, "the proof is about document:%s#view", doc)
	text, err := protojson.MarshalOptions{Multiline: true}.Marshal(proof)
	if err != nil {
		return err
	}
	fmt.Printf("proof of the denial:\n%s\n", text)

	// 5. A refused call: the reason is in google.rpc.ErrorInfo in the status details.
	_, err = permissions.Check(ctx, &dhowv1.CheckRequest{
		Consistency: fresh, Resource: obj("document", doc), Permission: "no_such_relation", Subject: user("bob"),
	})
	if err == nil {
		return errors.New("a Check of an unknown relation was answered")
	}
	st := status.Convert(err)
	c.expect(st.Code() == codes.FailedPrecondition, "refused with FAILED_PRECONDITION (%s)", st.Code())
	var infos []*errdetails.ErrorInfo
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			infos = append(infos, info)
		}
	}
	if !c.expect(len(infos) == 1, "the details hold one google.rpc.ErrorInfo") {
		return fmt.Errorf("no ErrorInfo to read in %v", st.Details())
	}
	info := infos[0]
	// The reason is the name of a dhow.v1.ErrorReason value without its prefix.
	want := strings.TrimPrefix(dhowv1.ErrorReason_ERROR_REASON_UNKNOWN_RELATION.String(), "ERROR_REASON_")
	c.expect(info.GetDomain() == "dhow.dev", "ErrorInfo.domain is dhow.dev (%s)", info.GetDomain())
	c.expect(info.GetReason() == want, "ErrorInfo.reason is %s (%s)", want, info.GetReason())
	c.expect(info.GetMetadata()["relation"] == "no_such_relation", "ErrorInfo.metadata: %v", info.GetMetadata())

	// 6. Watch from the write's token: every later change arrives, none can slip past between
	// opening the stream and the next write.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	stream, err := relationships.Watch(watchCtx, &dhowv1.WatchRequest{
		OptionalObjectTypes: []string{"document"}, OptionalStartCursor: token,
	})
	if err != nil {
		return err
	}
	later := viewer(doc, "carol")
	after, err := relationships.Write(ctx, touch(later))
	if err != nil {
		return err
	}
	fmt.Printf("wrote document:%s#viewer@user:carol at %s after the watch started\n", doc, after.GetWrittenAt().GetToken())
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("the Watch stream ended before the later write arrived")
		}
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		for _, change := range response.GetChanges() {
			if proto.Equal(change.GetRelationship(), later) {
				c.expect(change.GetOperation() == dhowv1.RelationshipChange_OPERATION_TOUCH,
					"Watch delivered the later write (TOUCH, through %s)", response.GetChangesThrough().GetToken())
				return nil
			}
		}
	}
}

func main() {
	addr := os.Getenv("DHOW_ADDR")
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	c := &checker{}
	if err := run(c, addr); err != nil {
		fmt.Fprintln(os.Stderr, "FAILED:", err)
		os.Exit(1)
	}
	if c.failed > 0 {
		fmt.Fprintf(os.Stderr, "FAILED: %d expectations\n", c.failed)
		os.Exit(1)
	}
	fmt.Println("go example: all expectations met")
}
