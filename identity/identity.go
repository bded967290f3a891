// Package identity holds a node's or coordination server's long-term Ed25519 identity key: how it is
// stored on disk, how it is presented in TLS (a self-signed certificate carrying the key), how a
// remote key is read back out of a TLS handshake, how keys are shown to people (fingerprints), and
// the QUIC stateless reset keys derived from it.
//
// It does not decide which keys to trust; callers pass a verify function.
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KeySize is the length of a public key in bytes.
const KeySize = ed25519.PublicKeySize

// Key is a private Ed25519 identity key. It is safe for concurrent use.
type Key struct {
	priv ed25519.PrivateKey
}

// Generate returns a new random identity key.
func Generate() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	return &Key{priv: priv}, nil
}

// LoadOrCreate reads the key stored at path (PEM, PKCS#8) or, if the file does not exist, generates a
// key and writes it there with mode 0600. created reports whether a new key was made.
func LoadOrCreate(path string) (k *Key, created bool, err error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := parsePEM(data)
		if err != nil {
			return nil, false, fmt.Errorf("read identity key %s: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("read identity key: %w", err)
	}
	k, err = Generate()
	if err != nil {
		return nil, false, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, false, fmt.Errorf("encode identity key: %w", err)
	}
	if err := WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, false, fmt.Errorf("save identity key: %w", err)
	}
	return k, true, nil
}

// Load reads the key stored at path; unlike LoadOrCreate it never makes one.
func Load(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity key: %w", err)
	}
	k, err := parsePEM(data)
	if err != nil {
		return nil, fmt.Errorf("read identity key %s: %w", path, err)
	}
	return k, nil
}

func parsePEM(data []byte) (*Key, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM private key block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ed25519", k)
	}
	return &Key{priv: priv}, nil
}

// Public returns the public half of k.
func (k *Key) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// Sign signs msg with the key (Ed25519).
func (k *Key) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

// StatelessResetKey derives from k the key a QUIC transport makes its stateless reset tokens with
// (quic.Transport.StatelessResetKey): HKDF-SHA256 of the private key, with "warren stateless reset
// v1: " and use as the label. It stays the same across restarts of whoever holds k, and reveals
// neither the identity key nor anything else derived from it. A restarted server or node that
// answers packets of connections it no longer knows with a stateless reset makes its peers drop
// them at once instead of after their idle timeout (quic-go answers only packets over 42 bytes, so
// not a bare keep-alive).
//
// Every transport that could be sent another one's packets needs a use of its own: a transport
// answering a packet meant for a live connection of another that shares its key would hand out that
// connection's valid reset token (RFC 9000 section 21.11). A coord and a relay run with one key
// file, or a node's socket and its relay transport, are such pairs.
func (k *Key) StatelessResetKey(use string) [32]byte {
	b, err := hkdf.Key(sha256.New, k.priv.Seed(), nil, "warren stateless reset v1: "+use, 32)
	if err != nil {
		panic("identity: hkdf: " + err.Error()) // only for a length beyond 255 hashes
	}
	return [32]byte(b)
}

// Fingerprint returns the fingerprint of k's public key; see Fingerprint.
func (k *Key) Fingerprint() string { return Fingerprint(k.Public()) }

// Certificate returns a self-signed TLS certificate whose public key is k. The certificate carries no
// names: peers identify each other by key, never by a CA.
func (k *Key) Certificate() (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "warren"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k.priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k.priv}, nil
}

// Fingerprint renders a public key for people to compare and paste: "SHA256:" followed by the
// unpadded base64url SHA-256 of the key.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "SHA256:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// ShortID renders a public key compactly for logs (not for trust decisions).
func ShortID(pub []byte) string {
	if len(pub) < 6 {
		return fmt.Sprintf("%x", pub)
	}
	return base64.RawURLEncoding.EncodeToString(pub[:6])
}

// Label names a node in logs and the audit log: its name with its short key, "bob(BNuJKfiB)", so a
// line is readable and still says which key (names can change or, from older servers, repeat). An
// empty name gives the short key alone.
func Label(name string, pub []byte) string {
	if name == "" {
		return ShortID(pub)
	}
	return name + "(" + ShortID(pub) + ")"
}

// ParseFingerprint normalises a fingerprint given by a person (with or without the "SHA256:" prefix).
func ParseFingerprint(s string) (string, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "SHA256:")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) != sha256.Size {
		return "", fmt.Errorf("invalid key fingerprint %q: want SHA256:<43 base64url characters>", s)
	}
	return "SHA256:" + s, nil
}

// PinnedAddr joins a server address and its key fingerprint into one string, "HOST:PORT#SHA256:…", so
// that the key travels with the address (an invite, a config line) and first use needs no trust.
func PinnedAddr(addr, fingerprint string) string { return addr + "#" + fingerprint }

// SplitPinnedAddr splits "HOST:PORT#SHA256:…" into the address and the normalised fingerprint; an
// address without "#" has the fingerprint "".
func SplitPinnedAddr(s string) (addr, fingerprint string, err error) {
	addr, fp, found := strings.Cut(strings.TrimSpace(s), "#")
	if !found {
		return addr, "", nil
	}
	if fingerprint, err = ParseFingerprint(fp); err != nil {
		return "", "", fmt.Errorf("%q: %w", s, err)
	}
	return addr, fingerprint, nil
}

// PeerKey returns the Ed25519 key in the first certificate of a TLS peer's chain. TLS has already proved
// that the peer holds the private key (CertificateVerify), so the key is the peer's identity.
func PeerKey(rawCerts [][]byte) (ed25519.PublicKey, error) {
	if len(rawCerts) == 0 {
		return nil, errors.New("peer sent no certificate")
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("parse peer certificate: %w", err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("peer key is %T, want ed25519", cert.PublicKey)
	}
	return pub, nil
}

// TLSConfig returns a TLS 1.3 config for mutual authentication by identity key. Both sides present
// their certificate; verify decides whether the remote key is acceptable (it must not be nil).
// server selects the listener side (client certificates required).
func TLSConfig(k *Key, alpn string, server bool, verify func(remote ed25519.PublicKey) error) (*tls.Config, error) {
	cert, err := k.Certificate()
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{alpn},
		// Trust comes from the identity key, not from a CA: verification is done by the callback.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			pub, err := PeerKey(rawCerts)
			if err != nil {
				return err
			}
			return verify(pub)
		},
	}
	if server {
		conf.ClientAuth = tls.RequireAnyClientCert
		// No resumption: on a resumed session TLS skips VerifyPeerCertificate, so verify would not
		// see the client again (a peer removed since would then rest on later checks alone). No
		// client keeps a session cache anyway, and a ticket would cost every handshake a sealed copy
		// of the client's certificate, held in QUIC's crypto stream until acknowledged.
		conf.SessionTicketsDisabled = true
	}
	return conf, nil
}

// Equal reports whether two public keys are the same.
func Equal(a, b []byte) bool { return bytes.Equal(a, b) }

// WriteFileAtomic writes data to path via a temporary file in the same directory, fsync and rename,
// so readers see either the old or the new content, never a torn file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
