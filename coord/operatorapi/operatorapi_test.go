package operatorapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecodeRequest(t *testing.T) {
	good := []string{
		`{"op":"nodes"}`,
		`{"op":"block.add","prefix":"10.0.0.0/8","comment":"spam – from ünïcode land"}`,
		`{"op":"authkey.create","network":"ci","reusable":true,"ephemeral":true,"expiry_seconds":3600,"tag":"ci"}`,
		`{"op":"audit","since":1700000000,"limit":100}` + "\n",
		`{"op":"node.remove","node":"SHA256:abc"}`,
	}
	for _, in := range good {
		r, err := DecodeRequest(strings.NewReader(in))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		// What decodes re-encodes to the same request.
		b, _ := json.Marshal(r)
		r2, err := DecodeRequest(bytes.NewReader(b))
		if err != nil || *r2 != *r {
			t.Errorf("round trip of %s: %+v, %v", in, r2, err)
		}
	}
	long := strings.Repeat("a", MaxField+1)
	bad := map[string]string{
		"empty":          ``,
		"not json":       `op=nodes`,
		"unknown op":     `{"op":"shutdown"}`,
		"no op":          `{}`,
		"unknown field":  `{"op":"nodes","admin":true}`,
		"trailing":       `{"op":"nodes"}{"op":"nodes"}`,
		"long field":     `{"op":"block.add","prefix":"` + long + `"}`,
		"newline":        `{"op":"block.add","prefix":"10.0.0.1","comment":"x\n10.9.0.0/16"}`,
		"nul":            `{"op":"node.remove","node":"a\u0000b"}`,
		"negative limit": `{"op":"audit","limit":-1}`,
		"huge limit":     `{"op":"audit","limit":100000000}`,
		"negative since": `{"op":"audit","since":-5}`,
		"bad expiry":     `{"op":"authkey.create","network":"ci","expiry_seconds":-1}`,
		"wrong type":     `{"op":"audit","limit":"ten"}`,
		"too large":      `{"op":"nodes","comment":"` + strings.Repeat(" ", MaxRequest) + `"}`,
	}
	for name, in := range bad {
		if r, err := DecodeRequest(strings.NewReader(in)); err == nil {
			t.Errorf("%s: accepted as %+v", name, r)
		}
	}
	// The size limit holds for a stream that never ends.
	if _, err := DecodeRequest(endless{}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("endless body: %v", err)
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{`{"op":"nodes"}`, `{"op":"block.add","prefix":"10.0.0.0/8","comment":"x"}`,
		`{"op":"audit","since":1,"limit":2}`, `{"op":"authkey.create","network":"ci","expiry_seconds":60}`, `[]`, `{"op":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(data) > MaxRequest || !knownOps[r.Op] || r.Validate() != nil {
			t.Fatalf("accepted %q as %+v", data, r)
		}
		for _, v := range []string{r.Node, r.Network, r.Prefix, r.Comment, r.ID, r.Tag} {
			if len(v) > MaxField || strings.ContainsAny(v, "\n\r\x00") {
				t.Fatalf("field %q passed", v)
			}
		}
	})
}

func TestClientNotRunning(t *testing.T) {
	dir := t.TempDir()
	c := NewClient(dir)
	ctx := context.Background()
	if ok, err := c.Running(ctx); ok || err != nil {
		t.Errorf("no socket: running %v, %v", ok, err)
	}
	if err := c.Do(ctx, &Request{Op: OpNodes}, nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no socket: %v", err)
	}
	// A stale socket: a file nobody listens on.
	ln, err := net.Listen("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(filepath.Join(dir, SocketName)); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Running(ctx); ok || err != nil {
		t.Errorf("stale socket: running %v, %v", ok, err)
	}
	if err := c.Do(ctx, &Request{Op: OpNodes}, nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("stale socket: %v", err)
	}
}
