//go:build !linux

package main

import "os/exec"

// dieWithParent does nothing where the kernel has no parent-death signal: there the command outlives
// a warren that is killed outright.
func dieWithParent(cmd *exec.Cmd) {}
