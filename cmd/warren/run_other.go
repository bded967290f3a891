//go:build !linux

package main

import (
	"errors"
	"io"
)

func runInNamespace(state string, command []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("run: needs Linux (user and network namespaces)")
}

func cmdRunNS(args []string) error { return errors.New("run: needs Linux") }
