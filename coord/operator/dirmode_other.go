//go:build !windows

package operator

// modeBits reports whether file mode bits say who may write a directory (CheckDir relies on them).
const modeBits = true
