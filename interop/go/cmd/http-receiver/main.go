// http-receiver listens for CloudEvents over HTTP, decodes each request with
// the Go SDK's HTTP protocol binding (binary, structured or batch) and writes
// every event as one JSON line, then keeps going.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"interop/internal/evio"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8181", "listen address")
	out := flag.String("out", "-", "output file for JSON lines (- for stdout)")
	status := flag.Int("status", http.StatusAccepted, "status code answered to a valid event")
	flag.Parse()

	o, err := evio.OpenOutput(*out)
	if err != nil {
		fail("open output: %v", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Fprintf(os.Stderr, "http-receiver listening on %s\n", ln.Addr())

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		meta := map[string]any{"method": r.Method, "path": r.URL.Path, "content_type": r.Header.Get("Content-Type")}
		ce := map[string]string{}
		for k, v := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "ce-") {
				ce[strings.ToLower(k)] = strings.Join(v, ",")
			}
		}
		meta["ce_headers"] = ce
		var events []event.Event
		if cehttp.IsHTTPBatch(r.Header) {
			events, err = cehttp.NewEventsFromHTTPRequest(r)
		} else {
			var e *event.Event
			e, err = cehttp.NewEventFromHTTPRequest(r)
			if e != nil {
				events = []event.Event{*e}
			}
		}
		if err == nil {
			for i := range events {
				if verr := events[i].Validate(); verr != nil {
					err = verr
				}
			}
		}
		if err != nil {
			o.Write(evio.Line{Error: err.Error(), Meta: meta})
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for i := range events {
			evio.ForBase64(&events[i])
			o.Write(evio.Line{Event: &events[i], Meta: meta})
		}
		w.WriteHeader(*status)
	})
	if err := http.Serve(ln, h); err != nil {
		fail("serve: %v", err)
	}
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "http-receiver: "+f+"\n", a...)
	os.Exit(2)
}
