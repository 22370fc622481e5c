// grpcping makes N sequential gRPC health checks against a server with grpc-go, the client
// most microservices calling Dhow use, and prints how long they took in total, in
// milliseconds. Dhow's tests use it to catch a server that waits for the client's delayed
// ACK on every answer (no TCP_NODELAY): about 40 ms a call from grpc-go.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "the server's host:port")
	n := flag.Int("n", 100, "how many sequential calls")
	flag.Parse()
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The first call connects; it is not timed.
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		fmt.Fprintln(os.Stderr, "check:", err)
		os.Exit(1)
	}
	start := time.Now()
	for i := 0; i < *n; i++ {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			fmt.Fprintln(os.Stderr, "check:", err)
			os.Exit(1)
		}
	}
	fmt.Println(time.Since(start).Milliseconds())
}
