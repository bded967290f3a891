package coord

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/coord/store"
)

// FuzzClusterDecode feeds the decoders of what other coords wrote to the shared database: event
// payloads and presence rows. Neither may panic; a presence yields at most MaxEndpoints endpoints.
func FuzzClusterDecode(f *testing.F) {
	f.Add("c1 "+strings.Repeat("ab", 32), `{"e":["192.0.2.1:7","[2001:db8::1]:9"],"m":"endpoint-independent"}`)
	f.Add("c2 ", `{}`)
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
	})
}
