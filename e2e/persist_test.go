package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warren-net/warren/control"
	"github.com/warren-net/warren/identity"
)

// controlSession is a bare control connection, as a node would open it, for tests that need many
// identities quickly.
type controlSession struct {
	conn    *quic.Conn
	stream  *quic.Stream
	welcome *control.Welcome
}

// dialControl logs in to the coord at addr as key and reads Welcome and the peer map. The session
// ends with ctx: when ctx is done its connection is closed (what reads it fails at once).
func dialControl(ctx context.Context, addr string, key *identity.Key, l control.Login) (*controlSession, error) {
	tlsConf, err := identity.TLSConfig(key, control.ALPN, false, func(ed25519.PublicKey) error { return nil })
	if err != nil {
		return nil, err
	}
	conn, err := quic.DialAddr(ctx, addr, tlsConf, &quic.Config{HandshakeIdleTimeout: 30 * time.Second}) // ctx bounds it
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { conn.CloseWithError(0, "") })
	s := &controlSession{conn: conn}
	if err := s.login(ctx, l); err != nil {
		conn.CloseWithError(0, "")
		return nil, err
	}
	return s, nil
}

func (s *controlSession) login(ctx context.Context, l control.Login) error {
	var err error
	if s.stream, err = s.conn.OpenStreamSync(ctx); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		s.stream.SetDeadline(dl)
	}
	l.Version = control.Version
	if err := control.WriteMsg(s.stream, &control.Msg{Type: control.TypeLogin, Login: &l}); err != nil {
		return err
	}
	m, err := control.ReadMsg(s.stream)
	if err != nil {
		return err
	}
	if m.Type != control.TypeWelcome {
		return fmt.Errorf("login answered with %s: %+v", m.Type, m.Reply)
	}
	s.welcome = m.Welcome
	_, err = control.ReadMsg(s.stream) // the peer map
	return err
}

// request sends r and waits for its reply, skipping peer deltas.
func (s *controlSession) request(r control.Request) error {
	if err := control.WriteMsg(s.stream, &control.Msg{Type: control.TypeRequest, Request: &r}); err != nil {
		return err
	}
	for {
		m, err := control.ReadMsg(s.stream)
		if err != nil {
			return err
		}
		if m.Type == control.TypeReply && m.Reply.ID == r.ID {
			return m.Reply.Err()
		}
	}
}

func (s *controlSession) close() { s.conn.CloseWithError(0, "") }

// ackedJoin is a join the coord acknowledged: a Welcome listing the network after a login with an
// auth key, or the reply to a join request.
type ackedJoin struct {
	key     *identity.Key
	ipv4    netip.Addr
	network string
}

// TestCoordKillDuringJoins: SIGKILL the coord binary in the middle of a burst of joins — half by
// auth key at login, half by join request — while `warren-coord authkey create` runs against the
// same database; restart it: every acknowledged join is there with its address, and every key the
// CLI printed is listed. The CLI never fails on a locked database.
func TestCoordKillDuringJoins(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "coord")
	addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	coord := startProc(t, "warren-coord", "--listen", addr, "--data", data)
	coord.line(t, "warren-coord listening on")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ownerKey, _ := identity.Generate()
	owner, err := dialControl(ctx, addr, ownerKey, control.Login{Name: "owner"})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"bykey", "byrequest"} {
		if err := owner.request(control.Request{ID: uint64(i + 1), Op: control.OpCreate, Network: n, Open: true}); err != nil {
			t.Fatal(err)
		}
	}
	cancel() // closes the session
	out, err := sh(t, tmp, "warren-coord authkey create --data "+data+" --network bykey --reusable --tag burst | tail -1")
	authKey := strings.TrimSpace(out)
	if err != nil || !strings.HasPrefix(authKey, "warren-auth-") {
		t.Fatalf("authkey create: %v %q", err, out)
	}

	var (
		mu       sync.Mutex
		acked    []ackedJoin
		sixty    = make(chan struct{}) // closed at the 60th acknowledged join
		attempts atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		// Each join may take 30 s while the database is written concurrently (a safety net); the
		// ones in flight when the coord is killed end with the burst.
		burst, endBurst = context.WithCancel(context.Background())
	)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, _ := identity.Generate()
				name := fmt.Sprintf("w%d-%d", w, i)
				attempts.Add(1)
				ctx, cancel := context.WithTimeout(burst, 30*time.Second)
				join := ackedJoin{key: key}
				var s *controlSession
				var err error
				if w%2 == 0 {
					join.network = "bykey"
					s, err = dialControl(ctx, addr, key, control.Login{Name: name, AuthKey: authKey})
					if err == nil && !slices.Contains(s.welcome.Networks, "bykey") {
						err = fmt.Errorf("welcome without the key's network: %v", s.welcome.Networks)
					}
				} else {
					join.network = "byrequest"
					if s, err = dialControl(ctx, addr, key, control.Login{Name: name}); err == nil {
						err = s.request(control.Request{ID: 1, Op: control.OpJoin, Network: "byrequest"})
					}
				}
				cancel()
				if s != nil {
					join.ipv4 = s.welcome.IPv4
					s.close()
				}
				if err != nil {
					select {
					case <-stop: // the coord is gone: expected
						return
					default:
						t.Errorf("join %s before the kill: %v", name, err)
						return
					}
				}
				mu.Lock()
				if acked = append(acked, join); len(acked) == 60 {
					close(sixty)
				}
				mu.Unlock()
			}
		}()
	}
	// The operator creates keys while the burst runs.
	var cliKeys []string
	for range 4 {
		out, err := sh(t, tmp, "warren-coord authkey create --data "+data+" --network bykey | tail -1")
		if err != nil {
			t.Errorf("authkey create during the burst: %v", err)
			continue
		}
		cliKeys = append(cliKeys, strings.TrimSpace(out))
	}
	select {
	case <-sixty:
	case <-time.After(30 * time.Second): // a slow machine: kill with what there is (10 at least, below)
	}
	close(stop)
	coord.kill()
	endBurst()
	wg.Wait()
	mu.Lock()
	joins := slices.Clone(acked)
	mu.Unlock()
	if len(joins) < 10 {
		t.Fatalf("only %d joins acknowledged before the kill", len(joins))
	}
	t.Logf("SIGKILL after %d acknowledged joins of %d attempted (%d in flight or refused by the kill)",
		len(joins), attempts.Load(), attempts.Load()-int64(len(joins)))

	coord = startProc(t, "warren-coord", "--listen", addr, "--data", data)
	coord.line(t, "warren-coord listening on")
	lost := 0
	for _, j := range joins {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := dialControl(ctx, addr, j.key, control.Login{Name: "check"})
		cancel()
		if err != nil {
			t.Fatalf("login after the restart: %v", err)
		}
		if s.welcome.IPv4 != j.ipv4 || !slices.Contains(s.welcome.Networks, j.network) {
			lost++
			t.Errorf("acknowledged join lost: had %v in %s, now %v in %v", j.ipv4, j.network, s.welcome.IPv4, s.welcome.Networks)
		}
		s.close()
	}
	t.Logf("after the restart: %d of %d acknowledged joins present with their addresses", len(joins)-lost, len(joins))

	var listed []struct{ ID string }
	out, err = sh(t, tmp, "warren-coord authkey list --json --data "+data)
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil {
		t.Fatalf("authkey list: %v %s", err, out)
	}
	for _, k := range append(cliKeys, authKey) {
		if !slices.ContainsFunc(listed, func(l struct{ ID string }) bool { return strings.Contains(k, "-"+l.ID+"-") }) {
			t.Errorf("key %s... printed by the CLI is not listed after the restart", k[:24])
		}
	}
}
