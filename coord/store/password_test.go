package store

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %q", h)
	}
	h2, _ := HashPassword("correct horse")
	if h == h2 {
		t.Error("two hashes of one password are equal: no salt")
	}
	tests := []struct {
		pw   string
		want bool
	}{
		{"correct horse", true},
		{"correct horse ", false},
		{"Correct horse", false},
		{"", false},
	}
	for _, tt := range tests {
		if ok, err := VerifyPassword(h, tt.pw); ok != tt.want || err != nil {
			t.Errorf("VerifyPassword(%q) = %v, %v; want %v", tt.pw, ok, err, tt.want)
		}
	}
}

// phc builds a hash string with the given parameters, for tests.
func phc(pw string, m, t uint32, p uint8) string {
	salt := []byte("saltsaltsaltsalt")
	sum := argon2.IDKey([]byte(pw), salt, t, m, p, 32)
	b := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, t, p, b.EncodeToString(salt), b.EncodeToString(sum))
}

func TestVerifyOtherParameters(t *testing.T) {
	for _, h := range []string{phc("pw", 8, 1, 1), phc("pw", 64, 3, 4), phc("pw", 1024, 1, 8)} {
		if ok, err := VerifyPassword(h, "pw"); !ok || err != nil {
			t.Errorf("VerifyPassword(%s) = %v, %v", h, ok, err)
		}
	}
}

func TestVerifyMalformed(t *testing.T) {
	const salt, sum = "c2FsdHNhbHQ", "aGFzaGhhc2hoYXNoaGFzaA" // 8 and 16 bytes
	good := "$argon2id$v=19$m=8,t=1,p=1$" + salt + "$" + sum
	if _, err := VerifyPassword(good, "x"); err != nil {
		t.Fatalf("baseline %q: %v", good, err)
	}
	tests := []struct{ name, enc string }{
		{"empty", ""},
		{"plain text", "hunter2"},
		{"truncated", "$argon2id$"},
		{"argon2i", "$argon2i$v=19$m=8,t=1,p=1$" + salt + "$" + sum},
		{"no leading $", "argon2id$v=19$m=8,t=1,p=1$" + salt + "$" + sum + "$"},
		{"extra field", good + "$x"},
		{"old version", "$argon2id$v=16$m=8,t=1,p=1$" + salt + "$" + sum},
		{"version garbage", "$argon2id$v=19x$m=8,t=1,p=1$" + salt + "$" + sum},
		{"no version", "$argon2id$m=8,t=1,p=1$" + salt + "$" + sum + "$"},
		{"huge memory", "$argon2id$v=19$m=99999999,t=1,p=1$" + salt + "$" + sum},
		{"memory just over", fmt.Sprintf("$argon2id$v=19$m=%d,t=1,p=1$", maxArgonMemory+1) + salt + "$" + sum},
		{"memory overflow", "$argon2id$v=19$m=18446744073709551616,t=1,p=1$" + salt + "$" + sum},
		{"memory below 8p", "$argon2id$v=19$m=8,t=1,p=2$" + salt + "$" + sum},
		{"zero time", "$argon2id$v=19$m=8,t=0,p=1$" + salt + "$" + sum},
		{"huge time", "$argon2id$v=19$m=8,t=1000,p=1$" + salt + "$" + sum},
		{"zero threads", "$argon2id$v=19$m=8,t=1,p=0$" + salt + "$" + sum},
		{"threads overflow uint8", "$argon2id$v=19$m=8,t=1,p=257$" + salt + "$" + sum},
		{"negative", "$argon2id$v=19$m=-8,t=1,p=1$" + salt + "$" + sum},
		{"plus sign", "$argon2id$v=19$m=+8,t=1,p=1$" + salt + "$" + sum},
		{"leading zero", "$argon2id$v=19$m=08,t=1,p=1$" + salt + "$" + sum},
		{"space", "$argon2id$v=19$m= 8,t=1,p=1$" + salt + "$" + sum},
		{"params reordered", "$argon2id$v=19$t=1,m=8,p=1$" + salt + "$" + sum},
		{"params missing", "$argon2id$v=19$m=8,t=1$" + salt + "$" + sum},
		{"params trailing", "$argon2id$v=19$m=8,t=1,p=1,x=2$" + salt + "$" + sum},
		{"salt not base64", "$argon2id$v=19$m=8,t=1,p=1$!!$" + sum},
		{"salt padded", "$argon2id$v=19$m=8,t=1,p=1$" + salt + "=$" + sum},
		{"salt short", "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$" + sum},
		{"salt with newline", "$argon2id$v=19$m=8,t=1,p=1$c2Fsd\nHNhbHQ$" + sum},
		{"hash short", "$argon2id$v=19$m=8,t=1,p=1$" + salt + "$aGFzaA"},
		{"hash empty", "$argon2id$v=19$m=8,t=1,p=1$" + salt + "$"},
		{"hash too long", "$argon2id$v=19$m=8,t=1,p=1$" + salt + "$" + strings.Repeat("A", 100)},
		{"very long", good + strings.Repeat("A", 1<<20)},
	}
	for _, tt := range tests {
		ok, err := VerifyPassword(tt.enc, "x")
		if ok || !errors.Is(err, ErrBadHash) {
			t.Errorf("%s: VerifyPassword = %v, %v; want ErrBadHash", tt.name, ok, err)
		}
	}
}

func FuzzVerifyPassword(f *testing.F) {
	h, err := HashPassword("pw")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(h, "pw")
	f.Add(h, "")
	f.Add(phc("pw", 8, 1, 1), "pw")
	f.Add("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "x")
	f.Add("$argon2id$v=19$m=65536,t=8,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "x")
	f.Add("$argon2id$v=19$m=4294967295,t=1,p=1$$", "")
	f.Fuzz(func(t *testing.T, encoded, pw string) {
		start := time.Now()
		ok, err := VerifyPassword(encoded, pw)
		if ok && err != nil {
			t.Fatalf("ok with error %v", err)
		}
		if err != nil && !errors.Is(err, ErrBadHash) {
			t.Fatalf("error %v does not wrap ErrBadHash", err)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Fatalf("took %v", d) // the parameter bounds should make this impossible
		}
	})
}

// BenchmarkVerifyPassword is what one password check costs the server (a join to a network with a
// password): the reason such checks are rate limited and bounded in concurrency (coord/passwords.go).
func BenchmarkVerifyPassword(b *testing.B) {
	h, err := HashPassword("correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		VerifyPassword(h, "a wrong guess")
	}
}
