// Package testnet holds network helpers shared by the tests of several
// packages (a test package cannot import another's _test.go files).
package testnet
