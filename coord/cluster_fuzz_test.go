package coord

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// FuzzClusterDecode feeds the decoders of what other coords wrote to the shared database: event
// payloads and presence rows. Neither may panic; a presence yields at most MaxEndpoints endpoints, and a
// port pattern only if it is valid and goes with an endpoint-dependent mapping.
func FuzzClusterDecode(f *testing.F) {
	f.Add("c1 "+strings.Repeat("ab", 32), `{"e":["192.0.2.1:7","[2001:db8::1]:9"],"m":"endpoint-independent"}`)
	f.Add("c2 ", `{}`)
	f.Add("c3 ", `{"e":["192.0.2.1:7"],"m":"endpoint-dependent","p":{"delta":1,"last":30000}}`)
	f.Add("c3 ", `{"m":"endpoint-independent","p":{"delta":99,"last":0}}`)
	f.Add("", `{"e":[1]}`)
	f.Fuzz(func(t *testing.T, payload, endpoints string) {
		origin, key, ok := parsePayload(payload)
		if ok && !strings.HasSuffix(strings.ToLower(payload), hex.EncodeToString(key[:])) {
			t.Fatalf("key %x not from payload %q", key, payload)
		}
		if !strings.HasPrefix(payload, origin) {
			t.Fatalf("origin %q not from payload %q", origin, payload)
		}
		r := decodeRemote(store.Presence{Coord: "c", Endpoints: endpoints})
		if len(r.endpoints) > control.MaxEndpoints {
			t.Fatalf("%d endpoints", len(r.endpoints))
		}
		if r.ports != nil && (r.mapping != control.MappingDependent || !r.ports.Valid()) {
			t.Fatalf("port pattern %+v with mapping %q", *r.ports, r.mapping)
		}
	})
}
