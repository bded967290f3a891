package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	k1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v %v", fi.Mode(), err)
	}
	k2, created, err := LoadOrCreate(path)
	if err != nil || created || !k1.Public().Equal(k2.Public()) {
		t.Fatalf("reload: created=%v err=%v same=%v", created, err, k1.Public().Equal(k2.Public()))
	}
	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, _, err := LoadOrCreate(path); err == nil {
		t.Error("garbage key file accepted")
	}
}

func TestFingerprint(t *testing.T) {
	k, _ := Generate()
	fp := k.Fingerprint()
	if !strings.HasPrefix(fp, "SHA256:") || len(fp) != 7+43 {
		t.Fatalf("fingerprint %q", fp)
	}
	for _, in := range []string{fp, strings.TrimPrefix(fp, "SHA256:"), " " + fp + "\n"} {
		if got, err := ParseFingerprint(in); err != nil || got != fp {
			t.Errorf("ParseFingerprint(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "SHA256:abc", "SHA256:" + strings.Repeat("!", 43)} {
		if _, err := ParseFingerprint(bad); err == nil {
			t.Errorf("ParseFingerprint(%q) accepted", bad)
		}
	}
}

// TestMutualTLS: each side learns the other's key from the handshake, and a verify callback can refuse.
func TestMutualTLS(t *testing.T) {
	server, _ := Generate()
	client, _ := Generate()
	sawClient := make(chan ed25519.PublicKey, 4)
	sconf, err := TLSConfig(server, "test", true, func(pub ed25519.PublicKey) error { sawClient <- pub; return nil })
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(verify func(ed25519.PublicKey) error) error {
		cconf, _ := TLSConfig(client, "test", false, verify)
		ln, err := tls.Listen("tcp", "127.0.0.1:0", sconf)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Read(make([]byte, 1)) // until the client goes away
			c.Close()
		}()
		c, err := tls.Dial("tcp", ln.Addr().String(), cconf)
		if err != nil {
			return err
		}
		c.Write([]byte("x")) // the server has processed the client's certificate once this is through
		c.Close()
		return nil
	}
	if err := handshake(func(pub ed25519.PublicKey) error {
		if !pub.Equal(server.Public()) {
			return errors.New("wrong server key")
		}
		return nil
	}); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if got := <-sawClient; !got.Equal(client.Public()) {
		t.Error("server did not see the client's key")
	}
	if err := handshake(func(ed25519.PublicKey) error { return errors.New("pinned key differs") }); err == nil || !strings.Contains(err.Error(), "pinned key differs") {
		t.Errorf("refusing verify: %v", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Errorf("got %q", b)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
}

// TestStatelessResetKey: the key is HKDF-SHA256 of the seed with the label (known answers, computed
// outside Go), the same after a reload, different for another use or identity, and not the identity
// key.
func TestStatelessResetKey(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	k := &Key{priv: ed25519.NewKeyFromSeed(seed)}
	for use, want := range map[string]string{
		"coord": "ce35e1b6e3d4b3fc14f0ba762372ff1597b6b5b4205ae67f216c02ad6971606f",
		"relay": "035f7c234e975006b98c5892e2d4141c9e649433b81629fee7bb3ca929021e87",
	} {
		if r := k.StatelessResetKey(use); hex.EncodeToString(r[:]) != want {
			t.Errorf("known answer for %q: got %x", use, r)
		}
	}

	path := filepath.Join(t.TempDir(), "key.pem")
	k1, _, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, _, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Generate()
	r1 := k1.StatelessResetKey("peer")
	if r1 != k2.StatelessResetKey("peer") {
		t.Error("the key changed across a reload")
	}
	if r1 == k1.StatelessResetKey("peer relay") {
		t.Error("two uses share a reset key")
	}
	if r1 == other.StatelessResetKey("peer") {
		t.Error("two identities share a reset key")
	}
	if bytes.Contains(k1.priv, r1[:]) || bytes.Contains(r1[:], k1.priv.Seed()[:8]) {
		t.Error("the reset key is (part of) the identity key")
	}
}

// TestNoResumption: a server never resumes a session, so its verify callback sees every client, even
// one that keeps a session cache (on a resumed session TLS would skip the callback).
func TestNoResumption(t *testing.T) {
	server, _ := Generate()
	client, _ := Generate()
	verified := make(chan struct{}, 4)
	sconf, err := TLSConfig(server, "test", true, func(ed25519.PublicKey) error { verified <- struct{}{}; return nil })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", sconf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
				c.Write([]byte("x")) // carries the session ticket, were there one
				c.Read(make([]byte, 1))
			}()
		}
	}()
	cconf, _ := TLSConfig(client, "test", false, func(ed25519.PublicKey) error { return nil })
	cconf.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		c, err := tls.Dial("tcp", ln.Addr().String(), cconf)
		if err != nil {
			t.Fatal(err)
		}
		c.Read(make([]byte, 1)) // the ticket, if any, arrives before this byte
		if c.ConnectionState().DidResume {
			t.Fatalf("handshake %d resumed a session", i+1)
		}
		c.Close()
		<-verified
	}
}
