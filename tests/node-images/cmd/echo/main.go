// Command echo is the node tests' server: it answers HTTP/1.1 (and h2c) on
// HTTP_PORT and gRPC on GRPC_PORT, naming the pod that served each request,
// so that a test sees whether a request reached a fork or its baseline.
//
// HTTP: "hello from <pod>; you are <peer address>; baggage <baggage>\n".
// gRPC: grpc.health.v1.Health/Check answers SERVING, with the pod's name in
// the response header "x-served-by" and the caller's address in
// "x-peer".
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
)

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func main() {
	name := env("SERVED_BY", env("POD_NAME", env("HOSTNAME", "unknown")))
	httpAddr := ":" + env("HTTP_PORT", "8080")
	grpcAddr := ":" + env("GRPC_PORT", "9090")

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-served-by", name)
		fmt.Fprintf(w, "hello from %s; you are %s; baggage %q\n", name, r.RemoteAddr, r.Header.Get("baggage"))
	})
	go func() {
		log.Fatal(http.ListenAndServe(httpAddr, h2c.NewHandler(handler, &http2.Server{})))
	}()

	listener, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		address := "unknown"
		if p, ok := peer.FromContext(ctx); ok {
			address = p.Addr.String()
		}
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-served-by", name, "x-peer", address))
		return next(ctx, req)
	}))
	healthpb.RegisterHealthServer(server, health.NewServer())
	reflection.Register(server)
	log.Printf("echo %s: HTTP on %s, gRPC on %s", name, httpAddr, grpcAddr)
	log.Fatal(server.Serve(listener))
}
