package control

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"runtime"
	"strings"
	"testing"
)

func samples() []*Msg {
	key := bytes.Repeat([]byte{7}, 32)
	return []*Msg{
		{Type: TypeLogin, Login: &Login{Version: Version, Name: "a", Endpoints: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:4000")}}},
		{Type: TypeWelcome, Welcome: &Welcome{IPv4: netip.MustParseAddr("100.64.0.1"), IPv6: netip.MustParseAddr("fd7a:7761:7272::1"),
			Prefix4: netip.MustParsePrefix("100.64.0.0/10"), Prefix6: netip.MustParsePrefix("fd7a:7761:7272::/48"),
			Observed: netip.MustParseAddrPort("127.0.0.1:4000"), Networks: []string{"lan"}}},
		{Type: TypePeerMap, PeerMap: &PeerMap{Peers: []Peer{{Key: key, Name: "b", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}, Online: true, Networks: []string{"lan"}}}}},
		{Type: TypePeerDelta, PeerDelta: &PeerDelta{Remove: [][]byte{key}}},
		{Type: TypeRequest, Request: &Request{ID: 3, Op: OpJoin, Network: "lan", Password: "pw"}},
		{Type: TypeLogin, Login: &Login{Version: Version, Name: "ci-1", AuthKey: "warren-auth-0123456789ab-" + strings.Repeat("f", 64), Ephemeral: true}},
		{Type: TypeWelcome, Welcome: &Welcome{IPv4: netip.MustParseAddr("100.64.0.9"), IPv6: netip.MustParseAddr("fd7a:7761:7272::9"),
			Prefix4: netip.MustParsePrefix("100.64.0.0/10"), Prefix6: netip.MustParsePrefix("fd7a:7761:7272::/48"), Networks: []string{"ci"}, Ephemeral: true,
			Relays: []Relay{{Addr: netip.MustParseAddrPort("192.0.2.7:7401"), Key: "SHA256:" + strings.Repeat("x", 43)}}}},
		{Type: TypeRequest, Request: &Request{ID: 4, Op: OpLogout}},
		{Type: TypeReply, Reply: &Reply{Code: CodeAuthKey, Error: "auth key expired"}},
		{Type: TypeReply, Reply: &Reply{ID: 3, Code: CodeWrongPassword, Error: "wrong password"}},
		{Type: TypeReply, Reply: &Reply{Code: CodeBlocked, Error: "logins from this address are blocked"}},
		{Type: TypeReply, Reply: &Reply{Code: CodeRateLimited, Error: "too many logins"}},
		{Type: TypeEndpoints, Endpoints: &Endpoints{Endpoints: []netip.AddrPort{netip.MustParseAddrPort("[::1]:9")}}},
		{Type: TypeEndpoints, Endpoints: &Endpoints{Mapping: MappingDependent, Ports: &Ports{Delta: 1, Last: 30011}}},
		{Type: TypePeerDelta, PeerDelta: &PeerDelta{Upsert: []Peer{{Key: key, Name: "d", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.4")}, Networks: []string{"lan"},
			Mapping: MappingDependent, Ports: &Ports{Delta: -2, Last: 1}}}}},
		{Type: TypeRequest, Request: &Request{ID: 5, Op: OpKick, Network: "lan", Target: "bob"}},
		{Type: TypeRequest, Request: &Request{ID: 6, Op: OpCreate, Network: "lan", Approval: true}},
		{Type: TypeRequest, Request: &Request{ID: 7, Op: OpMembers, Network: "lan"}},
		{Type: TypeReply, Reply: &Reply{ID: 7, Members: []Member{{Name: "bob", Key: "SHA256:" + strings.Repeat("x", 43), IPs: []netip.Addr{netip.MustParseAddr("100.64.0.2")},
			Online: true, Owner: true, State: MemberActive}, {Name: "eve", State: MemberPending}}}},
		{Type: TypeReply, Reply: &Reply{ID: 8, Code: CodeNotOwner, Error: "not the owner"}},
		{Type: TypePeerDelta, PeerDelta: &PeerDelta{Remove: [][]byte{key}, Networks: &NetworkList{Names: []string{}}}},
		{Type: TypeRequest, Request: &Request{ID: 5, Op: OpACLSet, Network: "lan", Rules: []ACLRule{aclRule}}},
		{Type: TypeReply, Reply: &Reply{ID: 5, ACL: &ACL{Network: "lan", Rules: []ACLRule{aclRule}}}},
		{Type: TypePeerDelta, PeerDelta: &PeerDelta{ACLs: []ACL{{Network: "lan", Rules: []ACLRule{aclRule}}, {Network: "wan"}}}},
		{Type: TypePeerMap, PeerMap: &PeerMap{Peers: []Peer{{Key: key, Name: "c", Tag: "ci", IPs: []netip.Addr{netip.MustParseAddr("100.64.0.3")}, Networks: []string{"lan"}}},
			ACLs: []ACL{{Network: "lan", Rules: []ACLRule{aclRule}}}}},
	}
}

var aclRule = ACLRule{From: []string{"tag:ci", "laptop"}, To: []string{"db"}, Ports: []string{"5432/tcp", "icmp"}}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	for _, m := range samples() {
		if err := WriteMsg(&buf, m); err != nil {
			t.Fatalf("write %s: %v", m.Type, err)
		}
	}
	for _, want := range samples() {
		got, err := ReadMsg(&buf)
		if err != nil {
			t.Fatalf("read %s: %v", want.Type, err)
		}
		if got.Type != want.Type {
			t.Fatalf("got %s, want %s", got.Type, want.Type)
		}
	}
	if _, err := ReadMsg(&buf); err == nil {
		t.Fatal("read past end succeeded")
	}
}

func TestRejects(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrameSize+1)
	if _, err := ReadMsg(bytes.NewReader(hdr[:])); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized frame: got %v", err)
	}
	bad := []string{
		`{"type":"login"}`,
		`{"type":"login","login":{"name":""}}`,
		`{"type":"nope","login":{"name":"a"}}`,
		`{"type":"login","login":{"name":"a"},"reply":{}}`,
		`{"type":"request","request":{"op":"explode","network":"x"}}`,
		`{"type":"peerdelta","peerdelta":{"remove":["AAAA"]}}`,
		`{"type":"login","login":{"name":"` + strings.Repeat("x", 65) + `"}}`,
		`{"type":"login","login":{"name":"a","authkey":"` + strings.Repeat("k", MaxAuthKey+1) + `"}}`,
		`{"type":"request","request":{"op":"logout","network":"lan"}}`,
		`{"type":"request","request":{"op":"logout","password":"pw"}}`,
		`{"type":"request","request":{"op":"join"}}`,
		`{"type":"reply","reply":{"code":"Not A Code"}}`,
		`{"type":"reply","reply":{"code":"` + strings.Repeat("x", 33) + `"}}`,
		`[1,2,3]`,
		`{"type":"request","request":{"op":"kick","network":"lan"}}`,
		`{"type":"request","request":{"op":"join","network":"lan","target":"bob"}}`,
		`{"type":"request","request":{"op":"kick","network":"lan","target":"` + strings.Repeat("b", MaxTarget+1) + `"}}`,
		`{"type":"reply","reply":{"members":[{"name":"a","state":"king"}]}}`,
		`{"type":"peerdelta","peerdelta":{"networks":{"names":[""]}}}`,
		`{"type":"request","request":{"op":"acl_set","network":"lan"}}`,
		`{"type":"request","request":{"op":"acl_clear","network":"lan","rules":[{"from":["a"],"to":["b"],"ports":["*"]}]}}`,
		`{"type":"request","request":{"op":"acl_set","network":"lan","rules":[{"from":[""],"to":["b"],"ports":["*"]}]}}`,
		`{"type":"request","request":{"op":"acl_set","network":"lan","rules":[{"from":["` + strings.Repeat("a", MaxACLEntry+1) + `"],"to":["b"],"ports":["*"]}]}}`,
		`{"type":"request","request":{"op":"acl_set","network":"lan","rules":[` + strings.Repeat(`{"from":["a"],"to":["b"],"ports":["*"]},`, MaxACLRules) + `{"from":["a"],"to":["b"],"ports":["*"]}]}}`,
		`{"type":"request","request":{"op":"acl_set","network":"lan","rules":[{"from":["a"],"to":[` + strings.Repeat(`"b",`, MaxACLEntries) + `"b"],"ports":["*"]}]}}`,
		`{"type":"peerdelta","peerdelta":{"acls":[{"network":"","rules":[]}]}}`,
		`{"type":"reply","reply":{"acl":{"network":"` + strings.Repeat("x", 65) + `"}}}`,
		// Port patterns: only with an endpoint-dependent mapping, a small nonzero step, a real port.
		`{"type":"endpoints","endpoints":{"endpoints":[],"ports":{"delta":1,"last":30000}}}`,
		`{"type":"endpoints","endpoints":{"endpoints":[],"mapping":"endpoint-independent","ports":{"delta":1,"last":30000}}}`,
		`{"type":"endpoints","endpoints":{"endpoints":[],"mapping":"endpoint-dependent","ports":{"delta":0,"last":30000}}}`,
		`{"type":"endpoints","endpoints":{"endpoints":[],"mapping":"endpoint-dependent","ports":{"delta":17,"last":30000}}}`,
		`{"type":"endpoints","endpoints":{"endpoints":[],"mapping":"endpoint-dependent","ports":{"delta":-17,"last":30000}}}`,
		`{"type":"endpoints","endpoints":{"endpoints":[],"mapping":"endpoint-dependent","ports":{"delta":1,"last":0}}}`,
		`{"type":"endpoints","endpoints":{"endpoints":[],"mapping":"endpoint-dependent","ports":{"delta":1,"last":65536}}}`,
		`{"type":"endpoints","endpoints":{"endpoints":[],"mapping":"endpoint-dependent","ports":{"delta":9223372036854775808,"last":1}}}`,
		`{"type":"peerdelta","peerdelta":{"upsert":[{"key":"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)) + `","name":"d","ips":["100.64.0.4"],"online":true,"networks":["lan"],"ports":{"delta":1,"last":5}}]}}`,
	}
	for _, s := range bad {
		if _, err := Decode([]byte(s)); err == nil {
			t.Errorf("Decode(%s) succeeded", s)
		}
	}
	if _, err := Encode(&Msg{Type: TypeLogin}); err == nil {
		t.Error("Encode of invalid message succeeded")
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range samples() {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadMsg(bytes.NewReader(b))
		if err != nil {
			return
		}
		// Whatever decodes must re-encode.
		if _, err := Encode(m); err != nil {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
	})
}

// TestReadMsgMax: a frame over the limit is refused on its header alone, and a sender that
// announces a large frame and stalls makes the reader hold no more than it sent.
func TestReadMsgMax(t *testing.T) {
	small, _ := Encode(&Msg{Type: TypeRequest, Request: &Request{ID: 1, Op: OpJoin, Network: "lan"}})
	if _, err := ReadMsgMax(bytes.NewReader(small), len(small)-4); err != nil {
		t.Fatalf("a frame at the limit: %v", err)
	}
	if _, err := ReadMsgMax(bytes.NewReader(small), len(small)-5); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("a frame over the limit: %v", err)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrameSize)
	stalled := io.MultiReader(bytes.NewReader(hdr[:]), bytes.NewReader(make([]byte, 100)))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadMsg(stalled)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a cut-off frame: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Fatalf("reading 100 bytes of an announced %d allocated %d bytes", MaxFrameSize, grew)
	}
}

// TestTimers: QUIC sends a keep-alive only after keepAlive without receiving, at most every half
// idle timeout (quic-go caps it there), and takes the smaller idle timeout of the two sides, so the
// idle timeout must leave room for a lost keep-alive and its probe-timeout retransmissions.
func TestTimers(t *testing.T) {
	for _, coords := range []int{1, 2, 3} {
		if idle, keepAlive := Timers(coords); keepAlive <= 0 || idle <= 2*keepAlive {
			t.Errorf("Timers(%d) = %v, %v: want an idle timeout over two keep-alives", coords, idle, keepAlive)
		}
	}
}
