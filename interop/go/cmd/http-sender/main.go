// http-sender sends CloudEvents read as JSON (one event or an array) to a URL
// with the Go SDK's HTTP protocol binding, in binary, structured or batch mode.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"interop/internal/evio"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/", "target URL")
	mode := flag.String("mode", "binary", "binary, structured or batch")
	in := flag.String("in", "-", "file with one JSON event or an array of events (- for stdin)")
	timeout := flag.Duration("timeout", 10*time.Second, "request timeout")
	flag.Parse()

	events, err := evio.ReadEvents(*in)
	if err != nil {
		fail("read: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var reqs []*http.Request
	switch *mode {
	case "binary", "structured":
		for _, e := range events {
			c := binding.WithForceBinary(ctx)
			if *mode == "structured" {
				c = binding.WithForceStructured(ctx)
			}
			req, err := cehttp.NewHTTPRequestFromEvent(c, *url, e)
			if err != nil {
				fail("encode %s: %v", e.ID(), err)
			}
			reqs = append(reqs, req)
		}
	case "batch":
		req, err := cehttp.NewHTTPRequestFromEvents(ctx, *url, events)
		if err != nil {
			fail("encode batch: %v", err)
		}
		reqs = append(reqs, req)
	default:
		fail("unknown mode %q", *mode)
	}

	failed := false
	for _, req := range reqs {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fail("send: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s\n", resp.StatusCode, string(body))
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			failed = true
		}
	}
	_ = event.CloudEventsVersionV1
	if failed {
		os.Exit(1)
	}
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "http-sender: "+f+"\n", a...)
	os.Exit(2)
}
