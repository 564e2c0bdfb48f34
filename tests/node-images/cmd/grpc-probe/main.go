// Command grpc-probe is the node tests' gRPC client: one
// grpc.health.v1.Health/Check call to ADDRESS, with each "-H name: value"
// sent as metadata, printing the server's "x-served-by" response header
// (which pod answered) and the health status:
//
//	grpc-probe -H 'baggage: detour-routing-key=feature-x' 10.96.0.20:9090
//	served-by reviews-feature-x-... status SERVING
//
// The same channel can make several calls (-n, -interval apart), as a
// long-lived gRPC client does; a failed call prints its status and the
// probe exits non-zero once all are made.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	var sent headers
	flag.Var(&sent, "H", "metadata to send, 'name: value' (repeatable)")
	calls := flag.Int("n", 1, "calls on one channel")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of each call")
	interval := flag.Duration("interval", 0, "pause between calls")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: grpc-probe [-H 'name: value'] [-n N] ADDRESS")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(flag.Arg(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	pairs := []string{}
	for _, h := range sent {
		name, value, _ := strings.Cut(h, ":")
		pairs = append(pairs, strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value))
	}
	client := healthpb.NewHealthClient(conn)
	failed := false
	for i := 0; i < *calls; i++ {
		if i > 0 {
			time.Sleep(*interval)
		}
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), metadata.Pairs(pairs...)), *timeout)
		var header metadata.MD
		reply, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&header))
		cancel()
		if err != nil {
			fmt.Printf("error %v\n", err)
			failed = true
			continue
		}
		fmt.Printf("served-by %s status %s\n", strings.Join(header.Get("x-served-by"), ","), reply.GetStatus())
	}
	if failed {
		os.Exit(1)
	}
}
