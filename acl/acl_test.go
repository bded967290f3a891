package acl

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/warren-net/warren/control"
)

const example = `{"rules": [
  {"from": ["tag:ci", "laptop"], "to": ["db"], "ports": ["5432/tcp", "8000-8100/tcp", "53/udp", "icmp"]},
  {"from": ["*"], "to": ["web"], "ports": ["443", "80/tcp"]},
  {"from": ["admin"], "to": ["*"], "ports": ["*"]}
]}`

func TestParseAndGrant(t *testing.T) {
	f, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(f.Rules)
	if err != nil {
		t.Fatal(err)
	}
	ci := Member{Name: "ci-7", Tag: "ci"}
	laptop := Member{Name: "laptop"}
	db := Member{Name: "db"}
	web := Member{Name: "web", Tag: "ci"}
	admin := Member{Name: "admin"}
	stranger := Member{Name: "stranger", Tag: "dev"}
	type check struct {
		from, to Member
		proto    Proto
		port     uint16
		want     bool
	}
	for _, c := range []check{
		{ci, db, TCP, 5432, true},
		{ci, db, TCP, 5433, false},
		{ci, db, UDP, 5432, false},
		{ci, db, TCP, 8000, true},
		{ci, db, TCP, 8100, true},
		{ci, db, TCP, 8101, false},
		{ci, db, TCP, 7999, false},
		{ci, db, UDP, 53, true},
		{ci, db, TCP, 53, false},
		{ci, db, ICMP, 0, true},
		{laptop, db, TCP, 5432, true},
		{stranger, db, TCP, 5432, false},
		{stranger, db, ICMP, 0, false},
		{db, ci, TCP, 5432, false}, // rules are directed
		{stranger, web, TCP, 443, true},
		{stranger, web, UDP, 443, true},
		{stranger, web, UDP, 80, false},
		{stranger, web, ICMP, 0, false},
		{ci, web, TCP, 80, true}, // web's tag does not matter as a target of "web"
		{admin, db, UDP, 1, true},
		{admin, db, TCP, 65535, true},
		{admin, db, ICMP, 0, true},
		{admin, db, Proto(47), 0, false}, // GRE: never
	} {
		g := p.Grant(c.from, c.to)
		if got := g.Allows(c.proto, c.port); got != c.want {
			t.Errorf("%s → %s %d/%d: got %v, want %v (grant %s)", c.from.Name, c.to.Name, c.port, c.proto, got, c.want, g)
		}
	}
	if g := p.Grant(stranger, db); !g.Empty() {
		t.Errorf("stranger → db: grant %s, want empty", g)
	}
	if got := p.Grant(ci, db).String(); got != "5432/tcp 8000-8100/tcp 53/udp icmp" {
		t.Errorf("ci → db grant %q", got)
	}
	if got := (&Policy{}).Grant(admin, db); !got.Empty() {
		t.Errorf("zero policy grants %s", got)
	}
}

func TestGrantMerge(t *testing.T) {
	p, err := Compile([]control.ACLRule{
		{From: []string{"*"}, To: []string{"*"}, Ports: []string{"10-20/tcp", "15-30/tcp", "31/tcp", "40/tcp", "5/tcp"}},
		{From: []string{"*"}, To: []string{"*"}, Ports: []string{"*/udp", "33-35/tcp"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := p.Grant(Member{Name: "a"}, Member{Name: "b"})
	if got := g.String(); got != "5/tcp 10-31/tcp 33-35/tcp 40/tcp */udp" {
		t.Errorf("merged grant %q", got)
	}
	for port, want := range map[uint16]bool{4: false, 5: true, 6: false, 10: true, 31: true, 32: false, 34: true, 40: true, 41: false} {
		if g.Allows(TCP, port) != want {
			t.Errorf("tcp %d: want %v", port, want)
		}
	}
}

// TestParseErrors: every refusal names what is wrong, and where.
func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"rules": [`, "line 1"},
		{"{\"rules\": [\n  {\"from\": [\"a\"], \"to\": [\"b\"], \"ports\": [\"22/tcp\"]},\n  {\"from\": [\"a\"], \"to\": [\"b\"], \"ports\": [\"22/sctp\"]}\n]}", `rule 2 (line 3): ports: bad protocol in "22/sctp"`},
		{"{\"rules\": [\n\n  {\"from\": [\"Laptop\"], \"to\": [\"b\"], \"ports\": [\"22\"]}]}", `rule 1 (line 3): from: bad member "Laptop"`},
		{`{"rules": [{"from": ["tag:"], "to": ["b"], "ports": ["22"]}]}`, `bad tag "tag:"`},
		{`{"rules": [{"from": ["a"], "to": [], "ports": ["22"]}]}`, `"to" is missing or empty`},
		{`{"rules": [{"from": ["a"], "ports": ["22"]}]}`, `"to" is missing or empty`},
		{`{"rules": [{"from": ["a"], "to": ["b"], "ports": ["0"]}]}`, "out of range"},
		{`{"rules": [{"from": ["a"], "to": ["b"], "ports": ["65536/tcp"]}]}`, "out of range"},
		{`{"rules": [{"from": ["a"], "to": ["b"], "ports": ["30-20"]}]}`, "range ends before it starts"},
		{`{"rules": [{"from": ["a"], "to": ["b"], "ports": ["ssh"]}]}`, `"ssh" is not a port`},
		{`{"rules": [{"from": ["a"], "to": ["b"], "ports": ["-5"]}]}`, "is not a port"},
		{`{"rules": [{"from": ["a"], "to": ["b"], "port": ["22"]}]}`, `unknown field "port"`},
		{"{\"rules\": [\n{\"from\": \"a\", \"to\": [\"b\"], \"ports\": [\"22\"]}]}", `line 2: "rules.from" must be []string`},
		{`{"rules": []}`, "no rules"},
		{`{}`, "no rules"},
		{`{"rules": [{"from": ["a"], "to": ["b"], "ports": ["22"]}]} {}`, "unexpected data"},
		{`{"rules": [` + strings.Repeat(`{"from":["a"],"to":["b"],"ports":["1"]},`, control.MaxACLRules) + `{"from":["a"],"to":["b"],"ports":["1"]}]}`, "at most 64"},
		{`{"rules": [{"from": ["a"], "to": ["b"], "ports": [` + strings.Repeat(`"1",`, control.MaxACLEntries) + `"2"]}]}`, "at most 32"},
		{strings.Repeat(" ", MaxFileSize+1), "at most"},
	} {
		_, err := Parse([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%.60q): %v, want an error containing %q", c.in, err, c.want)
		}
	}
}

func TestParseNetworkField(t *testing.T) {
	f, err := Parse([]byte(`{"network": "lan", "rules": [{"from": ["a"], "to": ["b"], "ports": ["*/tcp"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Network != "lan" || len(f.Rules) != 1 {
		t.Errorf("got %+v", f)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(`{"network":"x","rules":[{"from":["*"],"to":["tag:a"],"ports":["*","1-2/udp","icmp"]}]}`))
	f.Add([]byte(`{"rules":[{"from":["a"],"to":["b"],"ports":["99999"]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Parse(b)
		if err != nil {
			return
		}
		// What parses compiles, survives the wire, and gives consistent answers.
		msg := &control.Msg{Type: control.TypeRequest, Request: &control.Request{ID: 1, Op: control.OpACLSet, Network: "n", Rules: file.Rules}}
		if _, err := control.Encode(msg); err != nil {
			t.Fatalf("parsed rules do not fit the control protocol: %v", err)
		}
		p, err := Compile(file.Rules)
		if err != nil {
			t.Fatalf("parsed rules do not compile: %v", err)
		}
		b2, _ := json.Marshal(file)
		if _, err := Parse(b2); err != nil {
			t.Fatalf("re-encoded file does not parse: %v", err)
		}
		g := p.Grant(Member{Name: "a", Tag: "a"}, Member{Name: "b", Tag: "b"})
		for _, port := range []uint16{1, 22, 65535} {
			g.Allows(TCP, port)
			g.Allows(UDP, port)
		}
	})
}
