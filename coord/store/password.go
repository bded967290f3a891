package store

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Parameters for new hashes: OWASP's minimum recommendation for argon2id (19 MiB, 2 passes, 1 lane),
// about 20-40 ms on one core, modest enough for tests and for a coord that verifies on every join.
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// Bounds on parameters read back from a stored hash, so that a corrupt or hostile row cannot make a
// verification allocate gigabytes or run for minutes: at worst 64 MiB and 8 passes.
const (
	maxArgonMemory  = 64 * 1024 // KiB
	maxArgonTime    = 8
	maxArgonThreads = 8
	maxEncodedLen   = 256 // bytes of the whole string; ours are about 100
)

// ErrBadHash is returned (wrapped, with the reason) by VerifyPassword for a stored hash it cannot
// parse or whose parameters are out of bounds.
var ErrBadHash = errors.New("malformed password hash")

// HashPassword returns an argon2id hash of pw with a fresh random 16-byte salt, in PHC string form:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// with salt and 32-byte hash in unpadded standard base64. Callers decide what an empty pw means.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	sum := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(sum)), nil
}

// VerifyPassword reports whether pw matches encoded, a hash from HashPassword (any parameters within
// bounds are accepted, so they can be raised later). The comparison is constant-time. A malformed
// encoded string gives false and an error wrapping ErrBadHash.
func VerifyPassword(encoded, pw string) (bool, error) {
	h, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(pw), h.salt, h.time, h.memory, h.threads, uint32(len(h.sum)))
	return subtle.ConstantTimeCompare(got, h.sum) == 1, nil
}

type argonHash struct {
	memory, time uint32
	threads      uint8
	salt, sum    []byte
}

func badHash(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadHash, fmt.Sprintf(format, args...))
}

// parseHash parses and bounds-checks a PHC argon2id string, strictly: no spaces, signs, leading
// zeros, padding or trailing data.
func parseHash(encoded string) (argonHash, error) {
	if len(encoded) > maxEncodedLen {
		return argonHash{}, badHash("%d bytes long", len(encoded))
	}
	if strings.ContainsAny(encoded, "\r\n") { // base64 decoding would skip them
		return argonHash{}, badHash("contains a line break")
	}
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" {
		return argonHash{}, badHash("want $argon2id$v=..$m=..,t=..,p=..$salt$hash")
	}
	if parts[1] != "argon2id" {
		return argonHash{}, badHash("algorithm %q, want argon2id", parts[1])
	}
	v, ok := strings.CutPrefix(parts[2], "v=")
	if version, err := parseUint(v, 255); !ok || err != nil || version != argon2.Version {
		return argonHash{}, badHash("version %q, want v=%d", parts[2], argon2.Version)
	}
	var h argonHash
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return argonHash{}, badHash("parameters %q, want m=..,t=..,p=..", parts[3])
	}
	for i, p := range []struct {
		name     string
		min, max uint64
		set      func(uint64)
	}{
		{"m", 8, maxArgonMemory, func(x uint64) { h.memory = uint32(x) }},
		{"t", 1, maxArgonTime, func(x uint64) { h.time = uint32(x) }},
		{"p", 1, maxArgonThreads, func(x uint64) { h.threads = uint8(x) }},
	} {
		s, ok := strings.CutPrefix(params[i], p.name+"=")
		if !ok {
			return argonHash{}, badHash("parameters %q, want m=..,t=..,p=..", parts[3])
		}
		x, err := parseUint(s, p.max)
		if err != nil || x < p.min {
			return argonHash{}, badHash("parameter %s=%s out of range [%d, %d]", p.name, s, p.min, p.max)
		}
		p.set(x)
	}
	if uint64(h.memory) < 8*uint64(h.threads) {
		return argonHash{}, badHash("m=%d below 8*p", h.memory)
	}
	var err error
	b64 := base64.RawStdEncoding.Strict()
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 || len(h.salt) > 64 {
		return argonHash{}, badHash("salt must be 8-64 bytes of unpadded base64")
	}
	if h.sum, err = b64.DecodeString(parts[5]); err != nil || len(h.sum) < 16 || len(h.sum) > 64 {
		return argonHash{}, badHash("hash must be 16-64 bytes of unpadded base64")
	}
	return h, nil
}

// parseUint parses a canonical decimal number (no sign, no leading zeros) of at most max.
func parseUint(s string, max uint64) (uint64, error) {
	if s == "" || len(s) > 1 && s[0] == '0' || s[0] < '0' || s[0] > '9' {
		return 0, strconv.ErrSyntax
	}
	x, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if x > max {
		return 0, strconv.ErrRange
	}
	return x, nil
}
