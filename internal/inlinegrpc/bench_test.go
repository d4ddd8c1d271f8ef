package inlinegrpc

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// The benchmarks run grpc-go's client against this server ("inline") and, for scale,
// against grpc-go's own server with equivalent handlers ("grpcgo"). Both sides run in
// the benchmark process, so ns/op and allocs/op include the client's share, which is the
// same in both sub-benchmarks: the difference is the server transport.

// grpcGoEcho is the grpc-go server counterpart of the inline test service's echo paths.
type grpcGoEcho struct {
	testgrpc.UnimplementedTestServiceServer
}

func (grpcGoEcho) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (grpcGoEcho) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// benchServer starts a server of kind "inline" or "grpcgo" and returns its address.
func benchServer(b *testing.B, kind string) string {
	b.Helper()
	if kind == "inline" {
		return startServer(b, Options{}).addr
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, grpcGoEcho{})
	go func() { _ = gs.Serve(lis) }()
	b.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// BenchmarkUnaryPingPong: one unary call (request and response of 64 bytes) per op.
func BenchmarkUnaryPingPong(b *testing.B) {
	for _, kind := range []string{"inline", "grpcgo"} {
		b.Run(kind, func(b *testing.B) {
			addr := benchServer(b, kind)
			_, client := dial(b, addr)
			req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: pattern(1, 64)}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.UnaryCall(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.GetPayload().GetBody()) != 64 {
					b.Fatal("short echo")
				}
			}
		})
	}
}

// BenchmarkBidiPingPong: one message each way on a long-lived stream per op.
func BenchmarkBidiPingPong(b *testing.B) {
	for _, kind := range []string{"inline", "grpcgo"} {
		b.Run(kind, func(b *testing.B) {
			addr := benchServer(b, kind)
			_, client := dial(b, addr)
			stream, err := client.FullDuplexCall(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			body := pattern(2, 64)
			req := &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}
			b.ReportAllocs()
			for b.Loop() {
				if err := stream.Send(req); err != nil {
					b.Fatal(err)
				}
				resp, err := stream.Recv()
				if err != nil {
					b.Fatal(err)
				}
				if !bytes.Equal(resp.GetPayload().GetBody(), body) {
					b.Fatal("echo differs")
				}
			}
			if err := stream.CloseSend(); err != nil {
				b.Fatal(err)
			}
			if _, err := stream.Recv(); err != io.EOF {
				b.Fatalf("end of stream: %v", err)
			}
		})
	}
}
